"""Annotated VCF output: the input VCF, header and records in order, with INFO fields added.

:class:`AnnotatedVCFWriter` reads the input VCF a second time (with its samples, so
genotype columns are copied unchanged) in step with the scoring run's
:class:`~varfx.variants.VariantReader`, and writes every record it reads: the
values a run gives for a record are set as INFO fields, a record without values is
copied as it is.  The ``spliceai`` backend's run uses it, and so does
:mod:`varfx.annotate`, which annotates from a finished scores file (any other backend).

* The output is ``.vcf``, bgzipped ``.vcf.gz`` (or ``.vcf.bgz``) or ``.bcf``, chosen by
  the file name; it is written as ``NAME.partial`` and renamed when complete.
* Each field is declared in the header (``##INFO=<ID=…,Number=…,Type=…,Description=…>``).
  A field the input already declares keeps its declaration (it must declare the same
  Number and Type), and its old values are removed from every record, so that no
  record carries a stale value.
* Per-ALT values (``Number=A`` fields) are handed over as text, one entry per ALT (``.``
  for a missing one); a field whose values are all missing is left out of the record,
  and a record without ALT alleles (ALT ``.``) takes none.  A record with one ALT gets
  them set in place; a record with several is re-parsed from its text with them added
  (cyvcf2 sets no list of floats), so that a BCF stores them with their declared type.
* Contigs, INFO and FORMAT tags that the records of a text VCF use without declaring them
  are declared in the output's header as htslib's reader declares them (it reads the
  records once more first), so that every record can be written, to a BCF too.
* With ``--region`` only the records in the regions are written, as they are scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, OptionError
from .variants import is_bcf, open_vcf, parsed, query_records
from .writers import partial_path

#: file name ending -> cyvcf2 Writer mode
MODES = {".vcf": "w", ".vcf.gz": "wz", ".vcf.bgz": "wz", ".bcf": "wb"}
BCF_MAX_POS = (1 << 31) - 1  # BCF stores 0-based positions as int32


@dataclass(frozen=True)
class InfoField:
    """An INFO field as declared in a VCF header."""

    id: str
    number: str  # "1", "A", "R", "G" or "."
    type: str  # "Integer", "Float", "Flag", "Character" or "String"
    description: str

    def header(self) -> dict:
        return {"ID": self.id, "Number": self.number, "Type": self.type, "Description": self.description}


def vcf_mode(path: Path, flag: str = "--out-vcf") -> str:
    """The cyvcf2 Writer mode for an output file name; a one-line error for other endings."""
    name = path.name.lower()
    for ending, mode in MODES.items():
        if name.endswith(ending):
            return mode
    raise OptionError(f"{flag} {path}: the name must end in .vcf, .vcf.gz or .bcf (that sets the format)")


def declared(vcf, field: InfoField) -> bool:
    """Whether the open cyvcf2 ``vcf`` declares ``field`` already; a one-line error if it declares
    it with another Number or Type."""
    try:
        old = vcf.get_header_type(field.id)
    except KeyError:
        return False
    if (old.get("Number"), old.get("Type")) != (field.number, field.type):
        raise InputError(f"the input VCF already declares INFO/{field.id} as Number={old.get('Number')},"
                         f"Type={old.get('Type')} (varfx writes Number={field.number},Type={field.type}): "
                         f"remove it first (bcftools annotate -x INFO/{field.id})")
    return True


def _record_error(source, exc: Exception) -> InputError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(f"{source}: a record could not be read with its sample columns ({msg}); "
                      f"fix or remove it (bcftools view {source} reports the line)")


def undeclared_lines(source: str | os.PathLike, queries: list[str] | None = None) -> list[str]:
    """Header lines for the contigs, INFO and FORMAT tags that the records of a text VCF use without
    declaring them: htslib's reader declares them as it meets them, but a writer (a BCF above all)
    needs them before its first record.  Found by reading the records once; none for a BCF."""
    if is_bcf(Path(source)):
        return []
    vcf = open_vcf(source, samples=True)
    try:
        before = set(vcf.raw_header.splitlines())
        for _ in query_records(vcf, queries):
            pass
        return [line for line in vcf.raw_header.splitlines() if line not in before and line.startswith("##")]
    except Exception as exc:  # cyvcf2 raises bare exceptions for records it cannot parse
        raise _record_error(source, exc) from None
    finally:
        vcf.close()


def check_header(source: str | os.PathLike, fields: list[InfoField]) -> None:
    """Refuse, before a run, an input VCF that declares one of ``fields`` otherwise."""
    vcf = open_vcf(source)
    try:
        for field in fields:
            declared(vcf, field)
    finally:
        vcf.close()


class AnnotatedVCFWriter:
    """Copy the records of ``source`` to ``path`` one by one, adding INFO values.

    ``queries`` are the region strings the run's reader queries (``VariantReader``
    after ``--region``), in its order; None reads the whole file.  Call :meth:`write`
    once per record, in the reader's order, then :meth:`finish` (or :meth:`abort`).
    """

    def __init__(self, source: str | os.PathLike, path: str | os.PathLike, fields: list[InfoField],
                 queries: list[str] | None = None):
        from cyvcf2 import Writer

        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.fields = list(fields)
        mode = vcf_mode(self.path)
        self.source = source
        extra = undeclared_lines(source, queries)
        self._vcf = open_vcf(source, samples=True)
        try:
            for line in extra:
                self._vcf.add_to_header(line)
            self._replaced = [f.id for f in self.fields if self._declared(f)]
            for field in self.fields:
                self._vcf.add_info_to_header(field.header())
            self._records = parsed(query_records(self._vcf, queries))  # blank lines are no records
            self._writer = Writer(str(self.tmp), self._vcf, mode=mode)
        except BaseException:
            self._vcf.close()
            raise
        self._per_alt = [f for f in self.fields if f.number == "A"]
        self._ours = {f.id for f in self.fields}
        self._types = {f.id: f.type for f in self.fields}
        self._bcf = mode == "wb"
        self.records_written = 0

    def _declared(self, field: InfoField) -> bool:
        return declared(self._vcf, field)

    def write(self, chrom: str, pos: int, info: dict[str, str] | None = None,
              alleles: dict[int, tuple[str, ...]] | None = None) -> None:
        """Write the next record with ``info`` (field id -> value) set.

        ``alleles`` maps an ALT's 0-based index to its values of the ``Number=A`` fields, as
        text in the order of ``fields`` (``.`` for missing); ALTs not in it get ``.``.
        ``chrom`` and ``pos`` are the caller's view of that record; they must match
        (the writer and the reader read the same file in the same order).
        """
        try:
            rec = next(self._records)
        except StopIteration:
            raise AssertionError("the annotated VCF ran out of records before the run did") from None
        except Exception as exc:  # cyvcf2 raises bare exceptions for records it cannot parse
            raise _record_error(self.source, exc) from None
        if rec.CHROM != chrom or rec.start + 1 != pos:
            raise AssertionError(f"the annotated VCF is out of step: record {rec.CHROM}:{rec.start + 1}, "
                                 f"scores for {chrom}:{pos}")
        for field_id in self._replaced:
            if rec.INFO.get(field_id) is not None:
                del rec.INFO[field_id]
        for field_id, value in (info or {}).items():  # a callable value is made from the record (its ALTs)
            rec.INFO[field_id] = value(rec) if callable(value) else value
        entries = self._per_alt_entries(rec, alleles) if alleles else None
        if entries and len(rec.ALT) == 1:  # one value per field: set in place, every other value untouched
            for field_id, value in entries:
                rec.INFO[field_id] = float(value) if self._types[field_id] == "Float" else value
        elif entries:
            rec = self._with_info(rec, entries)
        if self._bcf and rec.start >= BCF_MAX_POS:  # rec.start: cyvcf2's POS is an int32
            raise InputError(f"{self.path.name}: a BCF cannot hold position {rec.CHROM}:{rec.start + 1} (beyond "
                             f"{BCF_MAX_POS:,}); write a .vcf.gz instead")
        try:
            self._writer.write_record(rec)
        except Exception as exc:  # htslib refuses a record it could not parse fully
            raise InputError(f"{self.source}: record {rec.CHROM}:{rec.start + 1} cannot be written to {self.path.name} "
                             f"({str(exc).splitlines()[0]}); check it with `bcftools view`") from None
        self.records_written += 1

    def _per_alt_entries(self, rec, alleles: dict[int, tuple[str, ...]]) -> list[tuple[str, str]]:
        """(ID, ``v1,v2,…``) for each Number=A field with a value on this record."""
        n = len(rec.ALT)
        if max(alleles) >= max(n, 1):
            raise AssertionError(f"the annotated VCF is out of step at {rec.CHROM}:{rec.start + 1}: "
                                 f"{n} ALT allele(s), values for ALT {max(alleles) + 1}")
        entries = []
        missing = (".",) * len(self._per_alt)
        rows = [alleles.get(i, missing) for i in range(n)]
        for k, field in enumerate(self._per_alt):
            values = [row[k] for row in rows]
            if any(v != "." for v in values):
                entries.append((field.id, ",".join(values)))
        return entries

    def _with_info(self, rec, entries: list[tuple[str, str]]):
        """The record with ``entries`` added to its INFO, as text re-parsed by htslib against the output
        header (cyvcf2 sets no list of floats; parsing types the values as declared, so a BCF stores
        floats).  The record's other values pass through htslib's text form: its floats keep 6
        significant digits, as in any VCF that htslib writes."""
        cols = str(rec).rstrip("\n").split("\t", 8)
        kept = [e for e in cols[7].split(";") if e != "." and e.split("=", 1)[0] not in self._ours]
        cols[7] = ";".join(kept + [f"{k}={v}" for k, v in entries])
        return self._writer.variant_from_string("\t".join(cols))

    def finish(self, summary: dict | None = None) -> None:
        """Close and rename to the final name (every record must have been written)."""
        if next(self._records, None) is not None:
            raise AssertionError("the run ended before the annotated VCF had written every record")
        self._writer.close()
        self._vcf.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._vcf.close()
        finally:
            self.tmp.unlink(missing_ok=True)
