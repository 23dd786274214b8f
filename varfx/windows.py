"""REF and ALT windows around variants, REF checks, and the REF↔ALT bin alignment.

Conventions (docs/windows.md has the pictures):

* A window of length L puts the variant's first REF base (VCF POS) at index
  ``c = L // 2`` (0-based): the exact centre for odd L, the right of the two
  central bases for even L.  A shift ``s`` moves the window ``s`` bp to the
  right, so the variant sits at ``c - s``.
* The ALT window keeps the REF window's left part, puts the ALT allele in place
  of the REF allele, and fills up to L with the genome that follows the REF
  allele: an insertion pushes sequence out on the right, a deletion pulls more
  genome in on the right.
* Bin alignment for indels ("left-anchored bin shift"): REF bins that start at
  or before the variant are compared with the same ALT bin; REF bins that start
  after it are compared with ALT bin ``j + k``, ``k = round(d / bin_size)``
  (``d = len(ALT) - len(REF)``, halves away from zero).  Pairs whose ALT bin
  falls outside the output, and a deletion's REF bins made only of deleted
  bases (which ALT lacks), are left out of both sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from .encoding import encode
from .errors import OptionError, RefMismatchError
from .variants import Site

INDEL_ALIGNMENT = "left-anchored-bin-shift-shared"
_POS, _REF, _ALTS = attrgetter("pos"), attrgetter("ref"), attrgetter("alts")
_BASE_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}


@dataclass(frozen=True)
class Geometry:
    """Where a model's input and output sit: input length, output bins and their offset."""

    input_length: int
    output_bins: int
    bin_size: int
    bin_offset: int  # bp from the window start to the start of bin 0

    @property
    def center(self) -> int:
        return self.input_length // 2

    def rc_bin_shift(self) -> int:
        """e such that reverse-complement bin j aligns with forward bin (bins-1-j)+e."""
        span = self.input_length - 2 * self.bin_offset - self.output_bins * self.bin_size
        if span % self.bin_size:
            raise OptionError("--rc needs output bins placed symmetrically (to a whole bin) in the input window; "
                              "this model's are not")
        return span // self.bin_size


def round_away(x: np.ndarray) -> np.ndarray:
    """Round halves away from zero (so that +d and -d shift by mirrored amounts)."""
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


@dataclass
class BinSelection:
    """Which bins to sum, as ``mode`` ('variant', 'all' or 'center') and a size."""

    mode: str = "variant"
    margin: int = 128  # bp each side of the REF allele, for mode 'variant'
    count: int = 0  # K for mode 'center'

    @classmethod
    def parse(cls, text: str | None) -> "BinSelection":
        text = (text or "variant").strip()
        try:
            if text == "all":
                return cls("all")
            if text == "variant":
                return cls("variant")
            if text.startswith("variant:"):
                margin = int(text.split(":", 1)[1])
                if margin < 0:
                    raise ValueError
                return cls("variant", margin=margin)
            if text.startswith("center:"):
                k = int(text.split(":", 1)[1])
                if k < 1:
                    raise ValueError
                return cls("center", count=k)
        except ValueError:
            pass
        raise OptionError(f"--bins {text!r} is not one of: variant, variant:MARGIN_BP, all, center:K "
                          "(e.g. --bins center:10)")

    def check(self, geom: "Geometry") -> None:
        """``center:K`` asks for at most the model's output bins (it would be clamped silently);
        ``variant:M`` must reach an output bin from the window centre (every score would be NaN)."""
        if self.mode == "center" and self.count > geom.output_bins:
            raise OptionError(f"--bins center:{self.count}: the model has {geom.output_bins:,} output bins "
                              "(--bins all sums all of them)")
        if self.mode == "variant":
            lo, hi = geom.bin_offset, geom.bin_offset + geom.output_bins * geom.bin_size
            c, m = geom.center, self.margin
            if c + 1 + m <= lo or c - m >= hi:
                raise OptionError(f"--bins variant:{m}: this model's output bins cover [{lo:,}, {hi:,}) of its "
                                  f"{geom.input_length:,}-bp window, which does not reach the variant at {c:,} "
                                  f"± {m:,} bp: use --bins all, --bins center:K or a larger variant:MARGIN")

    def describe(self) -> str:
        if self.mode == "variant":
            return f"variant:{self.margin}"
        if self.mode == "center":
            return f"center:{self.count}"
        return "all"


def align_bins(geom: Geometry, sel: BinSelection, ref_len: np.ndarray, delta: np.ndarray):
    """Per variant, the REF bins to sum, their ALT counterparts and a validity mask.

    Returns ``(ref_bins, alt_bins, mask)``, each (V, K); entries with mask False
    are padding or pairs whose ALT bin is outside the output.
    """
    nb, bs, off, c = geom.output_bins, geom.bin_size, geom.bin_offset, geom.center
    v = ref_len.shape[0]
    bins = np.arange(nb, dtype=np.int64)
    if sel.mode == "all":
        ref_bins = np.broadcast_to(bins, (v, nb)).copy()
        base_mask = np.ones((v, nb), dtype=bool)
    elif sel.mode == "center":
        k = min(sel.count, nb)
        first = min(nb // 2 - k // 2, nb - k)  # centred on bin nb // 2 (the centre base's, for a centred output)
        ref_bins = np.broadcast_to(bins[first:first + k], (v, k)).copy()
        base_mask = np.ones((v, k), dtype=bool)
    else:
        lo = np.full(v, c - sel.margin, dtype=np.int64)
        hi = c + ref_len + sel.margin  # exclusive, per variant
        first = np.clip((lo - off) // bs, 0, nb)
        last = np.clip(-((-(hi - off)) // bs), 0, nb)  # ceil
        width = int((last - first).max(initial=0)) or 1
        ref_bins = first[:, None] + np.arange(width)[None, :]
        base_mask = ref_bins < last[:, None]
        ref_bins = np.minimum(ref_bins, nb - 1)
    return (ref_bins, *alt_counterparts(geom, ref_bins, base_mask, delta, ref_len))


def alt_counterparts(geom: Geometry, ref_bins: np.ndarray, base_mask: np.ndarray, delta: np.ndarray,
                     ref_len: np.ndarray):
    """The ALT bins aligned with (V, K) REF bins: bins right of the variant move by the indel's length
    in whole bins (``delta`` = len(ALT) − len(REF), divided by the bin size and rounded to the nearest
    whole number, halves away from zero: docs/windows.md).  Returns ``(alt_bins, mask)``; masked:
    pairs whose ALT bin falls outside the output, and a deletion's REF bins made only of deleted bases
    (window ``[c + len(ALT), c + len(REF))``), which ALT lacks; no REF bin points to an insertion's
    inserted bases either."""
    nb, bs, off, c = geom.output_bins, geom.bin_size, geom.bin_offset, geom.center
    k_shift = round_away(delta / bs)
    start = off + ref_bins * bs
    right = start > c
    alt_bins = ref_bins + np.where(right, k_shift[:, None], 0)
    alt_len = (ref_len + delta)[:, None]
    deleted = (delta < 0)[:, None] & (start >= c + alt_len) & (start + bs <= c + ref_len[:, None])
    mask = base_mask & (alt_bins >= 0) & (alt_bins < nb) & ~deleted
    return np.clip(alt_bins, 0, nb - 1), mask


def short_contig_error(chrom: str, length: int, geom: Geometry) -> OptionError:
    return OptionError(
        f"contig {chrom} ({length:,} bp) is shorter than the model's {geom.input_length:,}-bp window and the VCF "
        "has variants on it: pass --short-contigs skip to list them as skipped, or --short-contigs pad to "
        "score them on N-padded windows")


def check_short_contigs(reader, genome, geom: Geometry, short_contigs: str) -> None:
    """Before a run: with ``--short-contigs error``, refuse at once a VCF with records on a contig shorter
    than the window, rather than hours later when the run reaches it (sorted VCFs end with such contigs:
    chrEBV, chrUn_*, *_random).  :func:`check_sites` still checks every site as it is read."""
    if short_contigs != "error" or not any(genome.length(c) < geom.input_length for c in genome.names):
        return
    cache: dict[str, bool] = {}

    def short(chrom: str) -> bool:
        if chrom not in cache:
            contig = genome.resolve(chrom)
            cache[chrom] = contig is not None and genome.length(contig) < geom.input_length
        return cache[chrom]

    chrom = reader.first_contig(short)
    if chrom is not None:
        raise short_contig_error(chrom, genome.length(genome.resolve(chrom)), geom)


def check_sites(genome, sites: list[Site], geom: Geometry, max_shift: int,
                ref_policy: str = "skip", short_contigs: str = "error") -> None:
    """REF against the FASTA, alleles that fit, short contigs: move failing ALTs to ``skipped``.

    Vectorised over the sites of each contig (one comparison for all single-base REFs)."""
    room = geom.input_length - geom.center - max_shift  # bases from the variant to the window end
    by_contig: dict[str, list[Site]] = {}
    for site in sites:
        if site.alts:
            by_contig.setdefault(site.contig, []).append(site)
    bad_first = None  # the first REF mismatch in input order, for --ref-mismatch error
    for contig, group in by_contig.items():
        clen = genome.length(contig)
        if clen < geom.input_length:
            if short_contigs == "skip":
                for site in group:
                    site.skip_all("short_contig")
                continue
            if short_contigs == "error":
                raise short_contig_error(group[0].chrom, clen, geom)
        seq = genome.codes(contig)
        n = len(group)
        pos0 = np.fromiter(map(_POS, group), dtype=np.int64, count=n) - 1
        rlen = np.fromiter(map(len, map(_REF, group)), dtype=np.int64, count=n)
        inside = (pos0 >= 0) & (pos0 + rlen <= clen)
        ok = inside.copy()
        single = np.flatnonzero(inside & (rlen == 1))
        if single.size:
            codes = encode("".join([group[i].ref for i in single.tolist()]))
            ok[single] = (seq[pos0[single]] == codes) | (codes == 4)
        multi = np.flatnonzero(inside & (rlen > 1))
        if multi.size:  # longer REFs: one comparison over their concatenated bases
            lens = rlen[multi]
            vcf = encode("".join([group[i].ref for i in multi.tolist()]))
            at = np.repeat(pos0[multi], lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
            good = (seq[at] == vcf) | (vcf == 4)
            ok[multi] = np.logical_and.reduceat(good, np.cumsum(lens) - lens)
        for i in np.flatnonzero(~ok).tolist():
            site = group[i]
            if not inside[i]:
                site.skip_all("outside_contig")
            elif ref_policy == "error":
                if bad_first is None or site.record < bad_first[0].record:
                    bad_first = (site, seq[pos0[i]:pos0[i] + rlen[i]])
            else:
                site.skip_all("ref_mismatch")
        counts = np.fromiter(map(len, map(_ALTS, group)), dtype=np.int64, count=n)
        alen = np.fromiter(map(len, [a for site in group for _, a in site.alts]), dtype=np.int64,
                           count=int(counts.sum()))
        too_long = rlen > room
        if alen.size and int(alen.max()) > room:  # longest ALT per site (sites emptied above have none)
            longest = np.zeros(n, dtype=np.int64)
            np.maximum.at(longest, np.repeat(np.arange(n), counts), alen)
            too_long |= longest > room
        for i in np.flatnonzero(too_long & ok).tolist():
            site = group[i]
            keep = [(j, a) for j, a in site.alts if max(len(site.ref), len(a)) <= room]
            site.skipped.extend((j, a, "allele_too_long") for j, a in site.alts if max(len(site.ref), len(a)) > room)
            site.alts = keep
            site.skipped.sort()
    if bad_first is not None:
        from .encoding import decode
        site, fasta = bad_first
        raise RefMismatchError(
            f"{site.chrom}:{site.pos} REF {site.ref} does not match the FASTA ({decode(fasta)}): "
            "check that the FASTA is the genome the VCF was called against, "
            "or pass --ref-mismatch skip to list such variants as skipped")


@dataclass
class WindowBatch:
    """Base-code windows for a batch of sites, in the extended frame (L + 2·max|shift|).

    ``ref`` is (S, Lx) for the sites, ``alt`` is (V, Lx) for their ALT alleles;
    ``ref_row[v]`` is the row of ``ref`` that variant ``v`` is compared with.
    """

    ref: np.ndarray
    alt: np.ndarray
    ref_row: np.ndarray
    ref_len: np.ndarray
    delta: np.ndarray
    margin: int  # max |shift|: window for shift s is columns [margin + s, margin + s + L)


def build_windows(genome, sites: list[Site], geom: Geometry, max_shift: int = 0) -> WindowBatch:
    """Cut REF windows and splice ALT alleles in, for every scorable ALT of ``sites``.

    Sites must have passed :func:`check_sites` and share nothing but the genome.
    """
    L, c, m = geom.input_length, geom.center, max_shift
    lx = L + 2 * m
    s_n = len(sites)
    ref = np.empty((s_n, lx), dtype=np.uint8)
    starts = np.fromiter(map(_POS, sites), dtype=np.int64, count=s_n) - (1 + c + m)
    contigs = [site.contig for site in sites]
    if contigs.count(contigs[0]) == s_n:  # the usual case: one contig
        ref[:] = genome.windows(contigs[0], starts, lx)
    else:
        by_contig: dict[str, list[int]] = {}
        for row, contig in enumerate(contigs):
            by_contig.setdefault(contig, []).append(row)
        for contig, rows in by_contig.items():
            rows_a = np.asarray(rows)
            ref[rows_a] = genome.windows(contig, starts[rows_a], lx)

    counts = [len(site.alts) for site in sites]
    alts = [a for site in sites for _, a in site.alts]
    ref_row_a = np.repeat(np.arange(s_n, dtype=np.int64), counts)
    ref_len_a = np.fromiter(map(len, map(_REF, sites)), dtype=np.int64, count=s_n)[ref_row_a]
    alt_len_a = np.fromiter(map(len, alts), dtype=np.int64, count=len(alts))
    alt = ref[ref_row_a]  # a copy: fancy indexing
    col = c + m  # index of the variant in the extended frame
    same = ref_len_a == alt_len_a
    if same.any():  # SNVs and MNVs: overwrite the REF bases in place, all at once
        idx = np.flatnonzero(same)
        codes = encode("".join([alts[i] for i in idx]))
        lens = alt_len_a[idx]
        rows = np.repeat(idx, lens)
        offs = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
        alt[rows, col + offs] = codes
    diff = np.flatnonzero(~same)
    if diff.size:  # indels and complex pairs: splice, and refill on the right from after the REF allele
        tail_start = starts[ref_row_a[diff]] + col + ref_len_a[diff]
        tails = np.empty((diff.size, lx - col), dtype=np.uint8)
        for contig in set(contigs[r] for r in ref_row_a[diff].tolist()):
            rows = np.array([k for k, r in enumerate(ref_row_a[diff].tolist()) if contigs[r] == contig])
            tails[rows] = genome.windows(contig, tail_start[rows], lx - col)
        codes = encode("".join([alts[i] for i in diff.tolist()]))  # all their alleles, encoded at once
        ends = np.cumsum(alt_len_a[diff]).tolist()
        for k, i in enumerate(diff.tolist()):
            a = codes[ends[k] - int(alt_len_a[i]):ends[k]][: lx - col]
            alt[i, col:col + a.size] = a
            alt[i, col + a.size:] = tails[k, : lx - col - a.size]
    return WindowBatch(ref, alt, ref_row_a, ref_len_a, alt_len_a - ref_len_a, m)
