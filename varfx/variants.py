"""Reading variants from VCF/BCF (cyvcf2): one site per record, ALTs split and classified.

Each record becomes a :class:`Site`.  Its ALT alleles are either kept for scoring
or listed in ``Site.skipped`` with a reason from :data:`SKIP_REASONS`; nothing is
dropped silently.  Contig names are matched to the genome through a resolver
(``chr1`` ↔ ``1``, ``chrM`` ↔ ``MT``).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError, OptionError, VarfxError

#: Why an ALT allele was not scored.
SKIP_REASONS = {
    "missing_alt": "ALT is '.' (no alternate allele)",
    "star_allele": "ALT is '*' (an allele deleted by an upstream variant)",
    "symbolic_allele": "ALT is symbolic, e.g. <DEL> or <*>",
    "breakend": "ALT is a breakend (contains [ or ], or starts/ends with '.')",
    "invalid_allele": "REF or ALT has characters other than A, C, G, T, N",
    "same_as_ref": "ALT equals REF",
    "unknown_contig": "the contig is not in the FASTA (after trying chr/no-chr and M/MT aliases)",
    "outside_contig": "REF runs past the end of the contig",
    "ref_mismatch": "REF does not match the FASTA",
    "allele_too_long": "REF or ALT does not fit in the model's window",
    "short_contig": "the contig is shorter than the model's window (--short-contigs skip)",
    # spliceai only
    "no_gene": "spliceai: no annotated transcript contains the variant",
    "spliceai_mnv": "spliceai: REF and ALT are both longer than 1 bp (the package does not score these)",
    "spliceai_ref_too_long": "spliceai: REF is longer than 2 × --distance (the package's limit)",
}

_VALID = re.compile(r"^[ACGTN]+$")
_BASES = frozenset("ACGTN")
_PLAIN = "ACGTN"  # for str.strip: a string of these alone strips to ""


@dataclass(slots=True)
class Site:
    """One VCF record: the ALTs to score and the ALTs skipped with a reason."""

    record: int  # 0-based index of the record in the input (after --region)
    chrom: str  # contig as written in the VCF
    contig: str | None  # the FASTA's name for it (None when unknown)
    pos: int  # 1-based VCF POS
    id: str  # VCF ID or '.'
    ref: str  # upper case
    alts: list[tuple[int, str]] = field(default_factory=list)  # (alt_index, ALT) to score
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (alt_index, ALT, reason)

    def skip_all(self, reason: str) -> None:
        """Move every ALT still to be scored into ``skipped`` with ``reason``."""
        self.skipped.extend((i, a, reason) for i, a in self.alts)
        self.alts = []
        self.skipped.sort()


def variant_kind(ref: str, alt: str) -> str:
    """'snv', 'mnv', 'insertion', 'deletion' or 'complex' for a REF/ALT pair."""
    if len(ref) == len(alt):
        return "snv" if len(ref) == 1 else "mnv"
    if len(alt) > len(ref) and alt.startswith(ref):
        return "insertion"
    if len(ref) > len(alt) and ref.startswith(alt):
        return "deletion"
    return "complex"


def variant_name(chrom: str, pos: int, ref: str, alt: str) -> str:
    return f"{chrom}:{pos}:{ref}:{alt}"


def classify_alt(ref: str, alt: str) -> str | None:
    """The skip reason for an ALT allele, or None if it can be scored."""
    if alt in _BASES and ref in _BASES:  # the common SNV, decided without a regex
        return None if alt != ref else "same_as_ref"
    if alt in (".", ""):
        return "missing_alt"
    if alt == "*":
        return "star_allele"
    if alt.startswith("<"):
        return "symbolic_allele"
    if "[" in alt or "]" in alt or alt.startswith(".") or alt.endswith("."):
        return "breakend"
    if not _VALID.match(alt) or not _VALID.match(ref):
        return "invalid_allele"
    if alt == ref:
        return "same_as_ref"
    return None


_BRACED = re.compile(r"\{([^{}]+)\}(?::([\d,]+)(?:-([\d,]+))?)?")
_REGION = re.compile(r"([^\s{}]+?)(?::([\d,]+)(?:-([\d,]+))?)?")


def parse_region(text: str, known: Callable[[str], bool] | None = None) -> tuple[str, int | None, int | None]:
    """'chr1:1000-2000' / 'chr1:1,000-2,000' / 'chr1' -> (contig, start, end), 1-based inclusive.

    A contig whose name has ':' (``HLA-A*01:01:01:01``) is found whole when ``known(name)`` says it
    exists, and with a range as ``NAME:START-END`` (the last ':' splits) or, as htslib writes it,
    ``{NAME}:START-END``."""
    s = text.strip()
    m = _BRACED.fullmatch(s)
    if m is None:
        if s and known is not None and known(s) and not any(c.isspace() for c in s):
            return s, None, None
        m = _REGION.fullmatch(s)
        if m is not None and m.group(2) is None and ":" in m.group(1):
            m = None
    if not m:
        raise OptionError(f"--region {text!r} is not of the form CHROM:START-END (e.g. chr1:1000000-2000000; "
                          "a contig whose name has ':' can be written {NAME}:START-END)")
    chrom, start, end = m.group(1), m.group(2), m.group(3)
    start_i = int(start.replace(",", "")) if start else None
    end_i = int(end.replace(",", "")) if end else None
    if start_i is not None and end_i is not None and end_i < start_i:
        raise OptionError(f"--region {text!r}: the end is before the start")
    return chrom, start_i, end_i


def region_query(chrom: str, start: int | None = None, end: int | None = None) -> str:
    """The htslib region string: a contig name with ':' in braces, so that htslib reads it whole."""
    name = f"{{{chrom}}}" if ":" in chrom else chrom
    if start is None:
        return name
    return f"{name}:{start}-{end}" if end is not None else f"{name}:{start}"


def _query_span(query: str) -> tuple[str, int, float]:
    """(contig, 0-based start, end) of a string made by :func:`region_query`; no end: the contig's end."""
    m = _BRACED.fullmatch(query) or re.fullmatch(r"([^:]+)(?::(\d+)(?:-(\d+))?)?", query)
    return m.group(1), int(m.group(2)) - 1 if m.group(2) else 0, int(m.group(3)) if m.group(3) else float("inf")


def _open_bytes(path: Path):
    """A VCF/BCF's bytes, decompressed when it is gzip or BGZF (a BGZF file is a series of gzip members)."""
    import gzip

    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def is_bcf(path: Path) -> bool:
    with _open_bytes(path) as fh:
        return fh.read(3) == b"BCF"


def _first_matching(chroms, match: Callable[[str], bool]) -> str | None:
    """The first of ``chroms`` (str, or bytes of a VCF's text) that ``match`` accepts, asking once per run of
    equal names."""
    last = None
    for chrom in chroms:
        if chrom != last:
            name = chrom.decode() if isinstance(chrom, bytes) else chrom
            if match(name):
                return name
            last = chrom
    return None


def _has_index(path: Path) -> bool:
    return any(Path(str(path) + ext).exists() for ext in (".tbi", ".csi"))


def open_vcf(path: str | os.PathLike, samples: bool | list[str] = False):
    """Open a VCF/VCF.gz/BCF with cyvcf2; a one-line error if it cannot be parsed.

    With ``samples=False`` genotype columns are not parsed at all (faster, and
    tolerant of FORMAT fields htslib cannot read).
    """
    from cyvcf2 import VCF

    path = Path(path)
    if not path.is_file():
        raise InputError(f"VCF file not found: {path}")
    if not os.access(path, os.R_OK):
        raise InputError(f"VCF file is not readable: {path} (check its permissions)")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty: a VCF needs at least a ##fileformat line and a #CHROM header")
    from .bgzf import missing_eof
    if missing_eof(path):
        raise InputError(f"{path} is truncated: it lacks the BGZF end-of-file marker that bgzip and htslib write "
                         "(an interrupted copy or download?); copy or write it again")
    kwargs = {}
    if samples is False:
        kwargs["samples"] = []
    elif isinstance(samples, list):
        kwargs["samples"] = samples
    try:
        return VCF(str(path), **kwargs)
    except Exception as exc:  # cyvcf2 raises bare Exception/OSError for bad headers
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot parse {path} as VCF/BCF ({msg}): check its header with `bcftools view -h {path}`")


def region_records(vcf, region: str):
    """The records of one region query of an open cyvcf2 ``vcf``.  cyvcf2 warns "no intervals found" for
    a region without records; for varfx (a contig or stretch without variants or genotypes) that is an
    answer, not a problem, so the warning is not shown."""
    it = iter(vcf(region))
    with warnings.catch_warnings():  # cyvcf2 warns when the query runs: at the first record
        warnings.filterwarnings("ignore", message="no intervals found")
        first = next(it, None)
    if first is not None:
        yield first
        yield from it


def has_no_alleles(rec) -> bool:
    """A line htslib could not split into alleles (fewer than eight tab-separated columns, a POS below 1):
    it hands it over as a record with no REF bases (``end <= start``) and no REF in its text, whose REF
    cyvcf2 would crash reading.  ``end <= start`` alone is cheap; the text is looked at only then."""
    return rec.end <= rec.start and str(rec).split("\t")[3:4] in ([], [""], ["."])


def no_alleles(rec) -> ValueError:
    """The error for a record :func:`has_no_alleles` finds; the readers turn it into their one-line error."""
    return ValueError(f"the line beginning {str(rec).split(chr(9), 1)[0][:40]!r} has no REF: fewer than 8 "
                      "tab-separated columns, or a POS below 1?")


def parsed(records):
    """The records htslib could read, for readers that do not go through :class:`VariantReader` (which
    does the same inline).  A blank line, which htslib reads as a record with no CHROM and no alleles, is
    passed over: it holds no variant and is no record.  A line without alleles raises :func:`no_alleles`."""
    for rec in records:
        if not rec.CHROM:
            continue
        if has_no_alleles(rec):
            raise no_alleles(rec)
        yield rec


def query_records(vcf, queries: list[str] | None):
    """The records of an open cyvcf2 ``vcf``: all of them, or those of the region ``queries`` in their
    order, each record once.  A record that overlaps several regions (overlapping regions, or a
    deletion reaching from one into the next) comes with the first of them only, as ``bcftools view
    -r`` gives it once; overlap is htslib's: ``[start, end)`` of the record meets the region."""
    if not queries:
        yield from vcf
        return
    spans: dict[str, list[tuple[int, float]]] = {}  # regions already read, 0-based half-open
    for q in queries:
        chrom, lo, hi = _query_span(q)
        earlier = spans.setdefault(chrom, [])
        for rec in region_records(vcf, q):
            if earlier and any(rec.start < e and rec.end > s for s, e in earlier):
                continue
            yield rec
        earlier.append((lo, hi))


class VariantReader:
    """Iterate the sites of a VCF/BCF, optionally restricted to regions.

    ``resolve_contig`` maps the VCF's contig names to the FASTA's (None for unknown).
    After iteration ``records_read`` holds the number of records seen.
    """

    def __init__(self, path, resolve_contig: Callable[[str], str | None],
                 regions: list[str] | None = None, keep: Callable[[int], bool] | None = None):
        """``keep(record_index)``: yield only the records it accepts (the rest are counted, not parsed
        further: shards and resumed runs)."""
        self.path = Path(path)
        self.keep = keep
        self.resolve_contig = resolve_contig
        self.regions = list(regions or [])
        self.records_read = 0
        self._vcf = open_vcf(self.path)
        if self.regions and not _has_index(self.path):
            raise InputError(
                f"--region needs an index next to {self.path}: run `bcftools index {self.path}` "
                f"(or `tabix -p vcf {self.path}` for a bgzipped VCF)")
        self._queries = [self._region_query(r) for r in self.regions]

    @property
    def queries(self) -> list[str]:
        """The region strings handed to htslib (contig names as in the VCF); empty: whole file."""
        return list(self._queries)

    def _region_query(self, text: str) -> str:
        from .genome import contig_aliases
        names = set(self._vcf.seqnames)

        def in_vcf(chrom: str) -> str | None:
            return chrom if chrom in names else next((a for a in contig_aliases(chrom) if a in names), None)

        chrom, start, end = parse_region(text, known=lambda c: in_vcf(c) is not None)
        found = in_vcf(chrom)
        if found is None:
            raise OptionError(f"--region {text!r}: contig {chrom} is not in {self.path.name} "
                              f"(its contigs: {', '.join(sorted(names)[:10])})")
        return region_query(found, start, end)

    def _records(self):
        # without regions, cyvcf2's own iterator: a generator around it costs ~5% of the input path
        return query_records(self._vcf, self._queries) if self._queries else iter(self._vcf)

    def first_contig(self, match: Callable[[str], bool]) -> str | None:
        """The name of a contig that ``match`` accepts and that has a record the run reads (in the regions,
        if any), or None; read on a handle of its own before the run.  With an index, one query per
        contig that the header (or, without ##contig lines, the index) names and ``match`` accepts; without
        one, a scan of the CHROM column (about 0.5 s per million records of text)."""
        vcf = open_vcf(self.path)
        try:
            if self._queries:
                return next((_query_span(q)[0] for q in self._queries
                             if match(_query_span(q)[0]) and next(region_records(vcf, q), None) is not None), None)
            if _has_index(self.path):
                return next((c for c in vcf.seqnames if match(c)
                             and next(region_records(vcf, region_query(c)), None) is not None), None)
            if is_bcf(self.path):
                return _first_matching((rec.CHROM for rec in vcf), match)
            with _open_bytes(self.path) as fh:  # the text's CHROM column: 2-4x faster than htslib
                lines = (line for line in fh if line[:1] != b"#")
                return _first_matching((line[:line.find(b"\t")] for line in lines), match)
        except VarfxError:
            raise
        except Exception:  # a record htslib cannot parse: the run itself reports it, with its place
            return None
        finally:
            vcf.close()

    def __iter__(self) -> Iterator[Site]:
        resolve = self.resolve_contig
        keep = self.keep
        cache: dict[str, str | None] = {}
        records = self._records()
        n = self.records_read
        bases, plain = _BASES, _PLAIN
        last: str | None = None  # the CHROM of the record before, and its contig
        contig = None
        try:
            for rec in records:  # a record htslib cannot parse raises here, turned into one line below
                # positions come from rec.start (int64): cyvcf2's rec.POS is an int32 and wraps past 2**32
                chrom = rec.CHROM
                if chrom != last:
                    if not chrom:  # a blank line, which htslib reads as a record without CHROM or alleles
                        continue
                    contig = cache.get(chrom, False)
                    if contig is False:
                        contig = cache[chrom] = resolve(chrom)
                    last = chrom
                index = n
                n += 1
                if keep is not None and not keep(index):
                    continue
                alts = rec.ALT
                if len(alts) == 1:  # REF and one ALT: the common case
                    ref = rec.REF
                    alt = alts[0]
                    # scorable as written: SNVs first, then other upper-case A/C/G/T/N alleles (str.strip in C)
                    if alt != ref and contig is not None and ((alt in bases and ref in bases) or (
                            ref and alt and not ref.strip(plain) and not alt.strip(plain))):
                        yield Site(index, chrom, contig, rec.start + 1, rec.ID or ".", ref, [(0, alt)], [])
                        continue
                elif has_no_alleles(rec):  # only records without exactly one ALT get here
                    raise no_alleles(rec)
                else:
                    ref = rec.REF
                ref = ref.upper()
                site = Site(index, chrom, contig, rec.start + 1, rec.ID or ".", ref, [], [])
                for i, alt in enumerate(alts or ["."]):
                    if not (alt.startswith("<") or "[" in alt or "]" in alt):  # symbolic and breakend ALTs as written
                        alt = alt.upper()
                    reason = classify_alt(ref, alt)
                    if reason is None and contig is None:
                        reason = "unknown_contig"
                    if reason is None:
                        site.alts.append((i, alt))
                    else:
                        site.skipped.append((i, alt, reason))
                yield site
        except VarfxError:
            raise
        except Exception as exc:
            self.records_read = n
            raise InputError(f"{self.path}: record {n + 1} could not be parsed "
                             f"({str(exc).splitlines()[0]}); fix or remove it (bcftools view reports the line; "
                             "a blank line?)")
        finally:
            self.records_read = n

    def close(self):
        self._vcf.close()
