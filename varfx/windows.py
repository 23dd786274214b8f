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
from itertools import chain
from operator import attrgetter, itemgetter

import numpy as np

from .encoding import encode
from .errors import OptionError, RefMismatchError
from .variants import Site

INDEL_ALIGNMENT = "left-anchored-bin-shift-shared"
_POS, _REF, _ALTS, _CONTIG = attrgetter("pos"), attrgetter("ref"), attrgetter("alts"), attrgetter("contig")
_SECOND = itemgetter(1)
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


def div_round_away(n, d: int):
    """``n / d`` rounded to the nearest whole number, halves away from zero (so that +n and -n shift by
    mirrored amounts), in integer arithmetic; ``n``: an int or an integer array, ``d`` > 0."""
    return np.where(n > 0, (2 * n + d) // (2 * d), -((d - 2 * n) // (2 * d)))


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
    are padding or pairs whose ALT bin is outside the output.  (Integer arithmetic and few array
    operations: this runs once per work unit, and a unit may hold one site.)
    """
    nb, bs, off, c = geom.output_bins, geom.bin_size, geom.bin_offset, geom.center
    v = ref_len.shape[0]
    if sel.mode == "all":
        bins, base_mask = np.arange(nb, dtype=np.int64), None
    elif sel.mode == "center":
        k = min(sel.count, nb)
        first = min(nb // 2 - k // 2, nb - k)  # centred on bin nb // 2 (the centre base's, for a centred output)
        bins, base_mask = np.arange(first, first + k, dtype=np.int64), None
    else:  # the bins that overlap [c - margin, c + len(REF) + margin)
        first = min(max((c - sel.margin - off) // bs, 0), nb)  # the same for every variant
        last = np.minimum(np.maximum((ref_len + (c + sel.margin - off + bs - 1)) // bs, 0), nb)  # exclusive: ceil
        width = max(int(last.max(initial=0)) - first, 0) or 1
        bins = np.arange(first, first + width, dtype=np.int64)
        base_mask = bins < last[:, None]
        bins = np.minimum(bins, nb - 1)
    ref_bins = np.broadcast_to(bins, (v, bins.size)).copy()
    if base_mask is None:
        base_mask = np.ones((v, bins.size), dtype=bool)
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
    indel = np.flatnonzero(delta)
    if not indel.size:  # SNVs and MNVs: every bin is its own counterpart
        return ref_bins.copy(), base_mask.copy()
    d = delta[indel]
    k_shift = div_round_away(d, bs)
    rb = ref_bins[indel]
    start = off + rb * bs
    moved = rb + np.where(start > c, k_shift[:, None], 0)
    rl = ref_len[indel][:, None]
    deleted = (d < 0)[:, None] & (start >= c + rl + d[:, None]) & (start + bs <= c + rl)
    alt_bins = ref_bins.copy()
    alt_bins[indel] = np.minimum(np.maximum(moved, 0), nb - 1)
    mask = base_mask.copy()
    mask[indel] &= (moved >= 0) & (moved < nb) & ~deleted
    return alt_bins, mask


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


class SiteColumns:
    """The columns of a list of sites that :func:`check_sites` and :func:`build_windows` read: one pass over
    the sites per column, made once and shared by both (per-site attribute reads are most of the input
    path's cost).  Only the ALTs still to be scored (``Site.alts``) are in the ALT columns."""

    __slots__ = ("sites", "contigs", "one_contig", "pos", "ref", "rlen", "counts", "alts", "alen", "_codes")

    def __init__(self, sites: list[Site]):
        n = len(sites)
        self.sites = sites
        self.contigs = list(map(_CONTIG, sites))
        self.one_contig = n == 0 or self.contigs.count(self.contigs[0]) == n
        self.pos = np.fromiter(map(_POS, sites), dtype=np.int64, count=n)  # 1-based
        self.ref = list(map(_REF, sites))
        self.rlen = np.fromiter(map(len, self.ref), dtype=np.int64, count=n)
        pairs = list(map(_ALTS, sites))
        self.counts = np.fromiter(map(len, pairs), dtype=np.int64, count=n)
        self.alts = list(map(_SECOND, chain.from_iterable(pairs)))
        self.alen = np.fromiter(map(len, self.alts), dtype=np.int64, count=len(self.alts))
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def by_contig(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``rows`` (site indices) grouped by contig, in order of first appearance: for each contig, the
        positions in ``rows`` of its sites."""
        if self.one_contig:
            return {self.contigs[0]: np.arange(rows.size)} if rows.size else {}
        groups: dict[str, list[int]] = {}
        contigs = self.contigs
        for k, r in enumerate(rows.tolist()):
            groups.setdefault(contigs[r], []).append(k)
        return {c: np.asarray(g, dtype=np.int64) for c, g in groups.items()}

    def ref_codes(self, rows: np.ndarray) -> np.ndarray:
        """The REF alleles of sites ``rows`` (ascending, distinct), as base codes, concatenated."""
        return self._gather("ref", self.ref, self.rlen, rows)

    def alt_codes(self, rows: np.ndarray) -> np.ndarray:
        """The ALT alleles ``rows`` (indices into ``alts``, ascending, distinct), as base codes, concatenated."""
        return self._gather("alt", self.alts, self.alen, rows)

    def _gather(self, kind: str, texts: list[str], lens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if kind not in self._codes:  # all the alleles encoded at once, the first time any is asked for
            self._codes[kind] = (encode("".join(texts)), np.cumsum(lens) - lens)
        codes, first = self._codes[kind]
        return codes if rows.size == lens.size else codes[ragged_index(first[rows], lens[rows])]  # all: in order


def ragged_index(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The indices of the runs ``[starts[k], starts[k] + lens[k])``, concatenated."""
    if (lens == 1).all():  # single bases (SNVs): the starts themselves
        return starts
    ends = np.cumsum(lens)
    return np.repeat(starts - (ends - lens), lens) + np.arange(int(ends[-1]) if ends.size else 0)


def check_sites(genome, sites: list[Site], geom: Geometry, max_shift: int,
                ref_policy: str = "skip", short_contigs: str = "error") -> SiteColumns:
    """REF against the FASTA, alleles that fit, short contigs: move failing ALTs to ``skipped``.

    Vectorised over the sites of each contig (one comparison for all their REF bases).  Returns the
    :class:`SiteColumns` of the sites left with ALTs to score, in input order, for :func:`build_windows`."""
    room = geom.input_length - geom.center - max_shift  # bases from the variant to the window end
    cols = SiteColumns(sites)
    active = np.flatnonzero(cols.counts > 0)
    changed = active.size != len(sites)  # whether the columns must be made again for the sites left
    bad_first = None  # the first REF mismatch in input order, for --ref-mismatch error
    for contig, where in cols.by_contig(active).items():
        rows = active[where]
        clen = genome.length(contig)
        if clen < geom.input_length:
            if short_contigs == "skip":
                for r in rows.tolist():
                    sites[r].skip_all("short_contig")
                changed = True
                continue
            if short_contigs == "error":
                raise short_contig_error(sites[int(rows[0])].chrom, clen, geom)
        seq = genome.codes(contig)
        pos0 = cols.pos[rows] - 1
        rlen = cols.rlen[rows]
        inside = (pos0 >= 0) & (pos0 + rlen <= clen)
        ok = inside.copy()
        ins = np.flatnonzero(inside)
        if ins.size:  # every REF inside the contig: one comparison over their concatenated bases
            lens = rlen[ins]
            vcf = cols.ref_codes(rows[ins])
            good = (seq[ragged_index(pos0[ins], lens)] == vcf) | (vcf == 4)
            ok[ins] = good if good.size == ins.size else np.logical_and.reduceat(good, np.cumsum(lens) - lens)
        for i in np.flatnonzero(~ok).tolist():
            site = sites[int(rows[i])]
            if not inside[i]:
                site.skip_all("outside_contig")
                changed = True
            elif ref_policy == "error":
                if bad_first is None or site.record < bad_first[0].record:
                    bad_first = (site, seq[pos0[i]:pos0[i] + rlen[i]])
            else:
                site.skip_all("ref_mismatch")
                changed = True
    if bad_first is not None:
        from .encoding import decode
        site, fasta = bad_first
        raise RefMismatchError(
            f"{site.chrom}:{site.pos} REF {site.ref} does not match the FASTA ({decode(fasta)}): "
            "check that the FASTA is the genome the VCF was called against, "
            "or pass --ref-mismatch skip to list such variants as skipped")
    too_long = cols.rlen > room
    if cols.alen.size and int(cols.alen.max()) > room:  # longest ALT per site
        longest = np.zeros(len(sites), dtype=np.int64)
        np.maximum.at(longest, np.repeat(np.arange(len(sites)), cols.counts), cols.alen)
        too_long |= longest > room
    for r in np.flatnonzero(too_long).tolist():
        site = sites[r]
        if not site.alts:  # skipped above
            continue
        keep = [(j, a) for j, a in site.alts if max(len(site.ref), len(a)) <= room]
        site.skipped.extend((j, a, "allele_too_long") for j, a in site.alts if max(len(site.ref), len(a)) > room)
        site.alts = keep
        site.skipped.sort()
        changed = True
    return SiteColumns([s for s in sites if s.alts]) if changed else cols


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


def build_windows(genome, sites: "list[Site] | SiteColumns", geom: Geometry, max_shift: int = 0) -> WindowBatch:
    """Cut REF windows and splice ALT alleles in, for every scorable ALT of ``sites`` (or of the
    :class:`SiteColumns` that :func:`check_sites` returned for them).

    Sites must have passed :func:`check_sites` and share nothing but the genome.
    """
    cols = sites if isinstance(sites, SiteColumns) else SiteColumns(sites)
    L, c, m = geom.input_length, geom.center, max_shift
    lx = L + 2 * m
    s_n = len(cols.sites)
    starts = cols.pos - (1 + c + m)
    if cols.one_contig and s_n:  # the usual case: one contig
        ref = genome.windows(cols.contigs[0], starts, lx)
    else:
        ref = np.empty((s_n, lx), dtype=np.uint8)
        for contig, rows in cols.by_contig(np.arange(s_n)).items():
            ref[rows] = genome.windows(contig, starts[rows], lx)

    ref_row_a = np.repeat(np.arange(s_n, dtype=np.int64), cols.counts)
    ref_len_a = cols.rlen[ref_row_a]
    alt_len_a = cols.alen
    alt = ref[ref_row_a]  # a copy: fancy indexing
    col = c + m  # index of the variant in the extended frame
    same = ref_len_a == alt_len_a
    if same.any():  # SNVs and MNVs: overwrite the REF bases in place, all at once
        idx = np.flatnonzero(same)
        lens = alt_len_a[idx]
        alt[np.repeat(idx, lens), ragged_index(np.full(idx.size, col), lens)] = cols.alt_codes(idx)
    diff = np.flatnonzero(~same)
    if diff.size:  # indels and complex pairs: the ALT allele, then the genome after the REF allele
        w = lx - col  # from the variant to the window's end
        fit = np.minimum(alt_len_a[diff], w)  # the allele's bases that fit in the window
        # the genome after the REF allele, cut from ``fit`` bases early: those are then the allele's
        start = starts[ref_row_a[diff]] + col + ref_len_a[diff] - fit
        right = np.empty((diff.size, w), dtype=np.uint8)
        for contig, where in cols.by_contig(ref_row_a[diff]).items():
            right[where] = genome.windows(contig, start[where], w)
        first = np.cumsum(alt_len_a[diff]) - alt_len_a[diff]
        right[np.repeat(np.arange(diff.size), fit), ragged_index(np.zeros_like(fit), fit)] = \
            cols.alt_codes(diff)[ragged_index(first, fit)]
        alt[diff, col:] = right
    return WindowBatch(ref, alt, ref_row_a, ref_len_a, alt_len_a - ref_len_a, m)
