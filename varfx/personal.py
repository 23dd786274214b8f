"""Personal genomes: a cohort's genotypes -> each sample's haplotypes, or its two-hot diploid windows.

Three steps (docs/personal.md has the rules and the pictures):

1. :class:`Cohort` reads genotype records (cyvcf2) for the chosen samples, a stretch of a contig
   at a time, and turns each call into two *haplotype allele indices* (rules for missing, haploid,
   unphased, symbolic and overlapping calls in :func:`_normalise` and :func:`_leave_out_overlaps`).
2. :class:`Haplotypes` applies every sample's alleles to the reference over a span once — one
   base-code row per haplotype, SNVs written for all rows in one scatter, rows with indels spliced
   in one concatenation each — and remembers where each haplotype's coordinates moved.
3. :meth:`Haplotypes.windows` cuts the windows of many (focal variant, haplotype) pairs out of those
   rows with one strided gather, with the focal site set to REF, to ALT, or to the sample's own
   genotype.  Pairs where the haplotype carries an indel over the focal site are built piece by piece.

Two-hot windows travel as *pair codes*, ``5·a + b`` for the two haplotypes' base codes a and b, one
byte per position like base codes; :func:`varfx.encoding.two_hot_pairs` encodes them on the device.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .encoding import N_CODE, encode
from .errors import InputError, OptionError
from .variants import _has_index, open_vcf, parsed, region_query, region_records

#: Per-sample counts kept for the run (HDF5 group ``sample_counts``; docs/personal.md).
COUNTS = {
    "missing": "calls with a missing allele (./., ., 0/.): the missing allele reads as REF",
    "haploid": "haploid calls (e.g. chrX in males): the one allele is used on both copies",
    "unphased_indel": "unphased heterozygous indels in two-hot mode: left out (phase decides where they go)",
    "overlap": "alleles overlapping an earlier allele on the same haplotype: left out",
    "symbolic": "symbolic, breakend or '*' alleles (and REF/ALT with non-ACGTN characters): left out",
}
PAIR_BASE = 5
_ROW_KEY = np.int64(1 << 40)  # coord(): row · 2⁴⁰ + position keys (positions < 2⁴⁰)


def pair_codes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two haplotypes' base codes -> pair codes ``5·a + b`` (uint8, 0..24)."""
    return (a * PAIR_BASE + b).astype(np.uint8)


def parse_samples(text: str | list[str] | None) -> list[str] | None:
    """``--samples``: None (all), a comma list, or a file with one sample per line ('#' lines ignored)."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        names = [str(s).strip() for s in text]
    elif os.path.isfile(text):
        with open(text) as fh:
            names = [ln.split()[0] for ln in fh if ln.strip() and not ln.startswith("#")]
    else:
        names = [s.strip() for s in str(text).split(",")]
    names = [s for s in names if s]
    if not names:
        raise OptionError(f"--samples {text!r} names no samples: give a comma list or a file, one per line")
    seen = set()
    dup = [s for s in names if s in seen or seen.add(s)]
    if dup:
        raise OptionError(f"--samples names {dup[0]} twice")
    return names


@dataclass
class Block:
    """Genotype records of one contig stretch, sorted by position, ready to apply.

    ``hap[r, h]`` is the allele index of record r on haplotype h (h = 2·sample + copy) after every
    rule of docs/personal.md; 0 means the reference.  ``raw`` keeps the calls as read (missing → 0,
    haploid doubled) for the focal genotype.  ``flags`` holds, per counted reason, (R, S) booleans.
    """

    pos0: np.ndarray  # (R,) int64, 0-based start of REF
    ref_len: np.ndarray  # (R,) int64
    alleles: list[list[np.ndarray | None]]  # per record, per allele index: base codes (None: unusable)
    keys: list[tuple[str, tuple[str, ...]]]  # per record: (REF, ALTs) as written
    hap: np.ndarray  # (R, H) int16
    raw: np.ndarray  # (R, H) int16
    phased: np.ndarray  # (R, S) bool
    flags: dict[str, np.ndarray]

    def __len__(self):
        return self.pos0.shape[0]

    @property
    def end(self) -> np.ndarray:
        return self.pos0 + self.ref_len

    def take(self, rows: np.ndarray) -> "Block":
        rows = np.asarray(rows, dtype=np.int64)
        return Block(self.pos0[rows], self.ref_len[rows], [self.alleles[i] for i in rows.tolist()],
                     [self.keys[i] for i in rows.tolist()], self.hap[rows], self.raw[rows], self.phased[rows],
                     {k: v[rows] for k, v in self.flags.items()})

    @staticmethod
    def concat(blocks: list["Block"], n_samples: int) -> "Block":
        blocks = [b for b in blocks if b is not None]
        if not blocks:
            return Block.empty(n_samples)
        if len(blocks) == 1:
            return blocks[0]
        return Block(np.concatenate([b.pos0 for b in blocks]), np.concatenate([b.ref_len for b in blocks]),
                     [a for b in blocks for a in b.alleles], [k for b in blocks for k in b.keys],
                     np.concatenate([b.hap for b in blocks]), np.concatenate([b.raw for b in blocks]),
                     np.concatenate([b.phased for b in blocks]),
                     {k: np.concatenate([b.flags[k] for b in blocks]) for k in blocks[0].flags})

    @staticmethod
    def empty(n_samples: int) -> "Block":
        h = 2 * n_samples
        return Block(np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], np.zeros((0, h), np.int16),
                     np.zeros((0, h), np.int16), np.zeros((0, n_samples), bool),
                     {k: np.zeros((0, n_samples), bool) for k in (*COUNTS, "unphased_het")})

    def find(self, pos0: int, ref: str, alt: str) -> tuple[int, int] | None:
        """(row, allele index) of the record at ``pos0`` with this REF carrying ``alt``, if any."""
        lo, hi = np.searchsorted(self.pos0, [pos0, pos0 + 1])
        for r in range(int(lo), int(hi)):
            rref, ralts = self.keys[r]
            if rref == ref and alt in ralts:
                return r, ralts.index(alt) + 1
        return None


def _normalise(gt: np.ndarray, ref_len: np.ndarray, alleles, two_hot: bool):
    """cyvcf2 genotype arrays (R, S, 3) -> (hap, raw, phased, flags) as in :class:`Block`."""
    g = gt[..., :2].astype(np.int16)
    r_n, s_n = g.shape[:2]
    haploid = g[..., 1] == -2
    # a haploid call has no phase to lose (cyvcf2's phase bit is not reliable for them)
    phased = gt[..., 2].astype(bool) | haploid
    g[..., 1] = np.where(haploid, g[..., 0], g[..., 1])
    missing = (g < 0).any(-1)
    flags = {"missing": missing, "haploid": haploid & ~missing}  # '.' is a missing call, not a haploid one
    g[g < 0] = 0
    raw = g.reshape(r_n, 2 * s_n).copy()
    # allele properties per record: usable, and length change
    n_all = max((len(a) for a in alleles), default=1)
    usable = np.zeros((r_n, n_all), dtype=bool)
    changes_len = np.zeros((r_n, n_all), dtype=bool)
    for r, alls in enumerate(alleles):
        for i, codes in enumerate(alls):
            usable[r, i] = codes is not None
            changes_len[r, i] = codes is not None and codes.shape[0] != ref_len[r]
    gi = np.clip(g, 0, n_all - 1).astype(np.int64)
    rows = np.arange(r_n)[:, None, None]
    bad = ~usable[rows, gi] & (g > 0)
    flags["symbolic"] = bad.any(-1)
    g[bad] = 0
    het = g[..., 0] != g[..., 1]
    indel = (changes_len[rows, gi] & (g > 0)).any(-1)
    drop = het & indel & ~phased if two_hot else np.zeros_like(het)
    flags["unphased_indel"] = drop
    g[drop] = 0
    flags["unphased_het"] = het & ~phased  # an error in haplotype mode, where it is used
    return g.reshape(r_n, 2 * s_n), raw, phased, flags


def _leave_out_overlaps(hap: np.ndarray, pos0: np.ndarray, end: np.ndarray, last_end: np.ndarray) -> np.ndarray:
    """Leave out (set to REF) alleles that start before an earlier allele ends on the same haplotype.

    One pass over the records in position order, vectorised over haplotypes; ``last_end`` (H,) carries
    the state between stretches.  Returns the (R, H) mask of alleles left out.
    """
    out = np.zeros(hap.shape, dtype=bool)
    for r in range(hap.shape[0]):
        carried = hap[r] > 0
        if not carried.any():
            continue
        clash = carried & (pos0[r] < last_end)
        if clash.any():
            hap[r, clash] = 0
            out[r] = clash
            carried &= ~clash
        last_end[carried] = np.maximum(last_end[carried], end[r])
    return out


def sample_counts_text(samples: list[str], counts: dict[str, np.ndarray], after_header: str = "") -> str:
    """``NAME.samples.tsv``: a row per sample with its :data:`COUNTS` (the genotype calls left out or
    changed), the table written beside a TSV when a run has no HDF5 output."""
    return "sample\t" + "\t".join(COUNTS) + "\n" + after_header + "".join(
        f"{name}\t" + "\t".join(str(int(counts[k][i])) for k in COUNTS) + "\n" for i, name in enumerate(samples))


class Cohort:
    """The genotypes of chosen samples in a VCF/BCF, read a contig stretch at a time.

    With an index (.tbi/.csi) stretches are read by region queries as the variants reach them;
    without one the whole file is read once (fine for small cohorts; docs/personal.md).
    """

    def __init__(self, path, genome, samples: list[str] | None = None, two_hot: bool = True,
                 chunk: int = 1 << 20):
        self.path = Path(path)
        self.genome = genome
        self.two_hot = two_hot
        self.chunk = chunk
        vcf = open_vcf(self.path, samples=True)
        available = list(vcf.samples)
        if not available:
            raise InputError(f"--genotypes {self.path} has no sample columns: give a VCF/BCF with GT for each sample")
        wanted = available if samples is None else samples
        missing = [s for s in wanted if s not in set(available)]
        if missing:
            raise OptionError(f"--samples: {missing[0]} is not in {self.path.name}"
                              f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; "
                              f"its samples begin {', '.join(available[:5])}")
        if samples is not None:
            vcf.close()
            vcf = open_vcf(self.path, samples=list(wanted))
        self.vcf = vcf
        file_order = list(vcf.samples)  # cyvcf2 keeps the file's order
        self.samples = list(wanted)
        where = {s: i for i, s in enumerate(file_order)}
        self._order = np.array([where[s] for s in self.samples], dtype=np.int64)
        self.indexed = _has_index(self.path)
        self._names: dict[str, str] = {}  # FASTA contig -> VCF contig (indexed reads query it)
        aliases: dict[str, list[str]] = {}
        for name in vcf.seqnames:
            fasta = genome.resolve(name)
            if fasta is not None:
                aliases.setdefault(fasta, []).append(name)
        for fasta, names in aliases.items():
            if len(names) > 1 and self.indexed:  # e.g. both 1 and chr1 in the header: the one with records
                held = [n for n in names if self._has_records(n)]
                if len(held) > 1:
                    raise InputError(f"--genotypes {self.path} has records of FASTA contig {fasta} under "
                                     f"{len(held)} names ({', '.join(held)}): give each contig one name "
                                     "(bcftools annotate --rename-chrs)")
                names = held or names
            self._names[fasta] = names[0]
        self._loaded: dict[str, tuple[int, int, Block, np.ndarray]] = {}  # contig -> (lo, hi, block, last_end)
        self._all: dict[str, Block] | None = None
        self.counts = {k: np.zeros(len(self.samples), dtype=np.int64) for k in COUNTS}
        self.ref_mismatch = 0  # records whose REF disagrees with the FASTA, left out: each once, however often read
        self._mismatched: set[tuple[str, int, str, str]] = set()
        self._mismatch_pos: dict[str, list[int]] = {}  # their starts per contig, sorted
        self.ref_mismatch_counted = 0  # of those, the ones inside counted stretches (per block, like COUNTS)
        self._counted: dict[str, tuple[list[int], list[int]]] = {}  # per contig: counted stretches

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    def close(self):
        self.vcf.close()

    def _query(self, region: str):
        """The records of ``region`` (an indexed read), each line checked (variants.parsed)."""
        try:
            yield from parsed(region_records(self.vcf, region))
        except Exception as exc:
            raise InputError(f"--genotypes {self.path}: a record could not be parsed "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); fix or remove it")

    def _has_records(self, name: str) -> bool:
        return next(iter(self._query(region_query(name))), None) is not None

    # -- reading -------------------------------------------------------------------------------
    def _read(self, records, contig: str, last_end: np.ndarray, start: int | None = None) -> Block:
        seq = self.genome.codes(contig)
        pos0, ref_len, alleles, keys, gts = [], [], [], [], []
        s_n = len(self.samples)
        for rec in records:
            p = rec.start
            if start is not None and p < start:
                continue  # read with the previous stretch
            ref = rec.REF.upper()
            alts = tuple(rec.ALT or ())
            ref_codes = encode(ref)
            if p < 0 or p + len(ref) > seq.size or \
                    not np.all((seq[p:p + len(ref)] == ref_codes) | (ref_codes == N_CODE)):
                key = (contig, p, ref, ",".join(alts))
                if key not in self._mismatched:
                    self._mismatched.add(key)
                    self.ref_mismatch += 1
                    bisect.insort(self._mismatch_pos.setdefault(contig, []), p)
                continue
            alls: list[np.ndarray | None] = [ref_codes]
            plain_ref = all(ch in "ACGTN" for ch in ref)  # an IUPAC REF: the record is left out (as symbolic)
            for a in alts:
                au = a.upper()
                ok = plain_ref and bool(au) and not au.startswith("<") and all(ch in "ACGTN" for ch in au)
                alls.append(encode(au) if ok else None)
            try:
                g = rec.genotype
            except Exception:  # no GT in the record's FORMAT (cyvcf2 raises): every call missing
                g = None
            if g is None:
                arr = np.full((s_n, 3), -1, dtype=np.int16)
                arr[:, 2] = 0
            else:
                arr = g.array()
                if arr.shape[1] < 3:  # every call haploid: cyvcf2 gives (S, 2)
                    arr = np.stack([arr[:, 0], np.full(s_n, -2, np.int16), arr[:, 1]], 1)
                elif arr.shape[1] > 3:  # some call has more than two alleles (allele columns, then phase)
                    extra = np.flatnonzero((arr[self._order][:, 2:-1] != -2).any(1))
                    if extra.size:
                        s = self.samples[int(extra[0])]
                        raise InputError(f"--genotypes {self.path}: sample {s} at {rec.CHROM}:{rec.start + 1} has a "
                                         f"call with {arr.shape[1] - 1} alleles; varfx reads diploid (and haploid) "
                                         "genomes: leave the sample out with --samples or recode its calls")
                    arr = arr[:, [0, 1, -1]]
                top = int(arr[:, :2].max(initial=0))
                if top > len(alts):
                    s = self.vcf.samples[int(np.argwhere(arr[:, :2] == top)[0][0])]
                    raise InputError(f"--genotypes {self.path}: sample {s} at {rec.CHROM}:{rec.start + 1} calls allele "
                                     f"{top}, but the record has {len(alts)} ALT allele(s)")
            pos0.append(p)
            ref_len.append(len(ref))
            alleles.append(alls)
            keys.append((ref, tuple(a.upper() for a in alts)))
            gts.append(arr[self._order][:, :3])
        if not pos0:
            return Block.empty(s_n)
        pos0_a = np.asarray(pos0, dtype=np.int64)
        order = np.argsort(pos0_a, kind="stable")
        if (order != np.arange(order.size)).any():
            raise InputError(f"--genotypes {self.path}: records of {contig} are not sorted by position; "
                             f"sort it with `bcftools sort`")
        ref_len_a = np.asarray(ref_len, dtype=np.int64)
        hap, raw, phased, flags = _normalise(np.stack(gts), ref_len_a, alleles, self.two_hot)
        over = _leave_out_overlaps(hap, pos0_a, pos0_a + ref_len_a, last_end)
        flags["overlap"] = over.reshape(over.shape[0], s_n, 2).any(-1)
        return Block(pos0_a, ref_len_a, alleles, keys, hap, raw, phased, flags)

    def _records(self, contig: str, start: int, end: int):
        name = self._names.get(contig)
        if name is None or end <= 0:
            return iter(())
        return self._query(f"{name}:{max(start, 0) + 1}-{end}")  # spans may begin before the contig

    def _settled_start(self, contig: str, start: int) -> int:
        """Where to start reading afresh so that the records from ``start`` on are left out for overlaps
        exactly as when the whole contig is read: back over records that reach across the start, and
        over those that reach across theirs."""
        q = start
        while q > 0:
            m = min((rec.start for rec in self._records(contig, q, q + 1)), default=q)
            if m >= q:
                break
            q = m
        return q

    def _read_all(self):
        self._all = {}
        by_contig: dict[str, list] = {}
        fasta_of: dict[str, str | None] = {}
        try:
            for rec in parsed(self.vcf):
                chrom = rec.CHROM
                if chrom not in fasta_of:
                    fasta_of[chrom] = self.genome.resolve(chrom)
                contig = fasta_of[chrom]
                if contig is not None:
                    by_contig.setdefault(contig, []).append(rec)
        except Exception as exc:
            raise InputError(f"--genotypes {self.path}: a record could not be parsed ({str(exc).splitlines()[0]})")
        for contig, recs in by_contig.items():
            self._all[contig] = self._read(recs, contig, np.zeros(2 * self.n_samples, dtype=np.int64))

    def block(self, contig: str, start: int, end: int, starting: bool = False) -> Block:
        """Records whose REF lies inside [start, end) (0-based) — with ``starting``, records that start
        there, wherever they end — in position order."""
        if not self.indexed:
            if self._all is None:
                self._read_all()
            blk = self._all.get(contig)
        else:
            lo, hi, blk, last_end = self._loaded.get(contig, (0, 0, None, None))
            if blk is None or start < lo or start > hi:  # a new contig or a jump: read afresh
                lo = hi = self._settled_start(contig, start)
                blk = Block.empty(self.n_samples)
                last_end = np.zeros(2 * self.n_samples, dtype=np.int64)
            if end > hi:
                new_hi = max(end, hi + self.chunk)
                more = self._read(self._records(contig, hi, new_hi), contig, last_end, start=hi if hi > lo else None)
                keep = blk.take(np.flatnonzero(blk.end > start - self.chunk)) if len(blk) else blk
                if len(keep) != len(blk):  # records before start − chunk dropped: a block there reads afresh
                    lo = max(lo, start - self.chunk)
                blk = Block.concat([keep, more], self.n_samples)
                hi = new_hi
            self._loaded[contig] = (lo, hi, blk, last_end)
        if blk is None or not len(blk):
            return Block.empty(self.n_samples)
        a, b = np.searchsorted(blk.pos0, [start, end])
        rows = np.arange(int(a), int(b))
        if not starting:
            rows = rows[blk.end[rows] <= end]
        return blk.take(rows)

    def reach_back(self, contig: str, start: int) -> int:
        """The leftmost start of the records that cross ``start`` (begin before it, end after it); ``start``
        if none.  A haplotype span must not begin inside a record, or that record would be left out."""
        self.block(contig, start, start + 1)  # reads the stretch (and, indexed, the records crossing it)
        blk = self._all.get(contig) if not self.indexed else self._loaded.get(contig, (0, 0, None, None))[2]
        if blk is None or not len(blk):
            return start
        cross = (blk.pos0 < start) & (blk.end > start)
        return int(blk.pos0[cross].min()) if cross.any() else start

    def reset_counted(self) -> None:
        """Forget which records were counted: what follows counts them again (counts are per block)."""
        self._counted = {}

    def count(self, contig: str, starts: np.ndarray, ends: np.ndarray) -> Block:
        """Count (per sample, :data:`COUNTS`) the records that start inside the stretches [starts, ends)
        — disjoint and sorted, the stretches that windows read — and were not counted before; return
        every record starting inside them.  Each record is counted once however sites fall into clusters."""
        if not len(starts):
            return Block.empty(self.n_samples)
        blk = self.block(contig, int(starts[0]), int(ends[-1]), starting=True)
        done_lo, done_hi = self._counted.setdefault(contig, ([], []))
        near = np.zeros(len(blk), dtype=bool)
        fresh = np.zeros(len(blk), dtype=bool)
        bad = np.asarray(self._mismatch_pos.get(contig, ()), dtype=np.int64)  # left out of blk, counted here
        inside = lambda x, y: int(np.searchsorted(bad, y) - np.searchsorted(bad, x)) if bad.size else 0
        for a, b in zip(np.asarray(starts).tolist(), np.asarray(ends).tolist()):
            r0, r1 = (int(x) for x in np.searchsorted(blk.pos0, [a, b]))
            near[r0:r1] = True
            seg = np.ones(r1 - r0, dtype=bool)
            new_bad = inside(a, b)
            i = j = bisect.bisect_right(done_hi, a)  # the first counted stretch ending after a
            while j < len(done_lo) and done_lo[j] < b:
                k0, k1 = np.searchsorted(blk.pos0[r0:r1], [done_lo[j], done_hi[j]])
                seg[k0:k1] = False
                new_bad -= inside(max(a, done_lo[j]), min(b, done_hi[j]))
                j += 1
            self.ref_mismatch_counted += new_bad
            fresh[r0:r1] |= seg
            if j > i:
                a, b = min(a, done_lo[i]), max(b, done_hi[j - 1])
            done_lo[i:j] = [a]
            done_hi[i:j] = [b]
        for k in COUNTS:
            self.counts[k] += blk.flags[k][fresh].sum(0)
        return blk.take(np.flatnonzero(near))


@dataclass
class Focal:
    """Variants whose windows are cut together: 0-based starts, REF/ALT codes, and per-haplotype
    ALT carriage (for the genotype contrast)."""

    pos0: np.ndarray  # (V,) int64
    ref: list[np.ndarray]
    alt: list[np.ndarray]
    carries: np.ndarray | None = None  # (V, H) bool: haplotype carries this ALT in the cohort
    in_cohort: np.ndarray | None = None  # (V,) bool


def _copy_rows(out: np.ndarray, dst: np.ndarray, seq: np.ndarray, rows: np.ndarray, starts: np.ndarray, n: int,
               col: int = 0) -> None:
    """``out[dst[i], col:col + n] = seq[rows[i], starts[i]:starts[i] + n]`` for every i: one strided
    gather for short pieces, one slice copy (a memcpy) per row for long ones (196-kb windows), which
    avoids a gather's per-element work and its temporary."""
    if n < 4096:
        out[dst, col:col + n] = np.lib.stride_tricks.sliding_window_view(seq, n, axis=1)[rows, starts]
        return
    for i, r, a in zip(dst.tolist(), rows.tolist(), starts.tolist()):
        out[i, col:col + n] = seq[r, a:a + n]


@dataclass
class Haplotypes:
    """Every haplotype of a cohort over the reference span [start, end), one row each.

    Row h holds haplotype h's sequence from reference position ``start`` on; rows are N-padded to
    a common width.  ``shift_ends[h]``/``shift_cum[h]`` (only for rows with indels) give, for the
    applied length-changing alleles in order, their REF ends and the running total of their length
    changes: the row coordinate of a reference position x not inside an applied allele is
    ``x − start + Σ changes of alleles ending at or before x``.
    """

    start: int
    end: int
    seq: np.ndarray  # (H, W) uint8
    ref: np.ndarray  # (end − start,) uint8, the reference over the span
    block: Block
    shift_ends: dict[int, np.ndarray] = field(default_factory=dict)
    shift_cum: dict[int, np.ndarray] = field(default_factory=dict)
    _keys: tuple | None = None  # coord()'s lookup table, made on first use

    @classmethod
    def build(cls, genome, contig: str, start: int, end: int, blk: Block) -> "Haplotypes":
        ref = genome.fetch(contig, start, end)
        h_n = blk.hap.shape[1]
        span = end - start
        # length changes per applied allele, and the widest row
        delta = np.zeros(blk.hap.shape, dtype=np.int64)
        same_rows, same_cols, same_codes = [], [], []
        indel_rows: dict[int, list[int]] = {}
        for r in range(len(blk)):
            row = blk.hap[r]
            if not row.any():
                continue
            p = int(blk.pos0[r]) - start
            rl = int(blk.ref_len[r])
            for a in np.unique(row[row > 0]).tolist():
                codes = blk.alleles[r][a]
                carriers = np.flatnonzero(row == a)
                if codes.shape[0] == rl:
                    diff = np.flatnonzero(codes != ref[p:p + rl])
                    if diff.size:
                        same_rows.append(np.repeat(carriers, diff.size))
                        same_cols.append(np.tile(p + diff, carriers.size))
                        same_codes.append(np.tile(codes[diff], carriers.size))
                else:
                    delta[r, carriers] = codes.shape[0] - rl
                    for h in carriers.tolist():
                        indel_rows.setdefault(h, []).append(r)
        grow = int(np.clip(delta, 0, None).sum(0).max(initial=0))
        seq = np.empty((h_n, span + grow), dtype=np.uint8)
        seq[:, :span] = ref
        seq[:, span:] = N_CODE
        if same_rows:
            seq[np.concatenate(same_rows), np.concatenate(same_cols)] = np.concatenate(same_codes)
        ends, cums = {}, {}
        for h, recs in indel_rows.items():
            row = seq[h, :span]
            pieces, prev = [], 0
            for r in recs:
                p = int(blk.pos0[r]) - start
                pieces.append(row[prev:p])
                pieces.append(blk.alleles[r][int(blk.hap[r, h])])
                prev = p + int(blk.ref_len[r])
            pieces.append(row[prev:])
            new = np.concatenate(pieces)
            seq[h, :new.size] = new
            seq[h, new.size:] = N_CODE
            rr = np.asarray(recs)
            ends[h] = blk.pos0[rr] + blk.ref_len[rr]
            cums[h] = np.cumsum(delta[rr, h])
        return cls(start, end, seq, ref, blk, ends, cums)

    def coord(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Row coordinates of reference positions ``x`` on haplotypes ``rows`` (equal-length arrays).

        Vectorised over pairs: the rows' indel ends live in one sorted key array (row · 2⁴⁰ + end)
        with their running length changes, so two ``searchsorted`` calls serve every pair."""
        x = np.asarray(x, dtype=np.int64)
        out = x - self.start
        if not self.shift_ends:
            return out
        if self._keys is None:
            hs = sorted(self.shift_ends)
            self._keys = (np.concatenate([np.int64(h) * _ROW_KEY + self.shift_ends[h] for h in hs]),
                          np.concatenate([self.shift_cum[h] for h in hs]))
        keys, cums = self._keys
        rows = np.asarray(rows, dtype=np.int64)
        k = np.searchsorted(keys, rows * _ROW_KEY + x, side="right")  # past the row's ends ≤ x
        first = np.searchsorted(keys, rows * _ROW_KEY, side="left")  # the row's first end
        return out + np.where(k > first, cums[np.maximum(k - 1, 0)], 0)

    def cut(self, x: np.ndarray, rows: np.ndarray, length: int, center: int) -> np.ndarray:
        """Windows of haplotypes ``rows`` with reference position ``x`` (per pair) at index ``center``:
        the samples' own sequences, every allele applied (``varfx predict``)."""
        starts = self.coord(x, rows) - center
        if (starts < 0).any() or (starts + length > self.seq.shape[1]).any():
            raise AssertionError("haplotype span too short for a window")
        out = np.empty((len(rows), length), dtype=np.uint8)
        _copy_rows(out, np.arange(len(rows)), self.seq, np.asarray(rows), starts, length)
        return out

    def _over_focal(self, lo: int, hi: int, rows: np.ndarray):
        """Applied alleles on ``rows`` overlapping [lo, hi): per row, the list of block rows."""
        blk = self.block
        cand = np.flatnonzero((blk.pos0 < hi) & (blk.end > lo))
        if not cand.size:
            return None
        carried = blk.hap[cand][:, rows] > 0  # (C, N)
        if not carried.any():
            return None
        return cand, carried

    def windows(self, focal: Focal, v: np.ndarray, rows: np.ndarray, which: np.ndarray, length: int,
                center: int) -> np.ndarray:
        """Windows for pairs (focal variant ``v[i]``, haplotype ``rows[i]``), the focal site set to
        REF (``which`` 0), ALT (1) or, with the genotype contrast, ALT where the haplotype carries it (2).

        The window has ``length`` positions with the focal variant's first REF base at ``center``;
        background alleles overlapping the focal REF are left out (that site is the focal one).
        """
        n = v.shape[0]
        out = np.empty((n, length), dtype=np.uint8)
        if n == 0:
            return out
        w = self.seq.shape[1]
        p = focal.pos0[v]
        anchor = self.coord(p, rows)
        use_alt = (which == 1) | ((which == 2) & focal.carries[v, rows]) if focal.carries is not None else which == 1
        # pairs whose haplotype carries an applied allele over the focal REF that changes length or
        # reaches outside it are built piece by piece; the rest are cut in bulk
        slow = np.zeros(n, dtype=bool)
        blk = self.block
        for vi in np.unique(v).tolist():
            pairs = np.flatnonzero(v == vi)
            lo, hi = int(focal.pos0[vi]), int(focal.pos0[vi] + focal.ref[vi].shape[0])
            found = self._over_focal(lo, hi, rows[pairs])
            if found is None:
                continue
            cand, carried = found
            for k, r in enumerate(cand.tolist()):
                hit = pairs[carried[k]]
                if blk.pos0[r] == lo and blk.end[r] == hi:
                    continue  # an allele of the focal site itself: the focal allele replaces it whole below
                inside = blk.pos0[r] >= lo and blk.end[r] <= hi
                if inside and all(blk.alleles[r][a].shape[0] == blk.ref_len[r]
                                  for a in np.unique(blk.hap[r, rows[hit]]).tolist()):
                    continue  # an SNV/MNV inside the focal REF: the focal allele overwrites it below
                slow[hit] = True
        fast = np.flatnonzero(~slow)
        if fast.size:
            starts = anchor[fast] - center
            if (starts < 0).any() or (starts + length > w).any():
                raise AssertionError("haplotype span too short for a window")  # spans carry margins
            _copy_rows(out, fast, self.seq, rows[fast], starts, length)
            # where the row continues after the focal REF (past an allele of the focal site it carries)
            ref_len = np.array([a.shape[0] for a in focal.ref], dtype=np.int64)
            after = self.coord(p[fast] + ref_len[v[fast]], rows[fast])
            moved = after != anchor[fast] + ref_len[v[fast]]
            # the focal allele: written in place; the rest of the window refilled from the row when the
            # allele changes length or the row moved
            for vi in np.unique(v[fast]).tolist():
                at = np.flatnonzero(v[fast] == vi)
                sel = fast[at]
                rl = int(ref_len[vi])
                for is_alt in (False, True):
                    pick = use_alt[sel] == is_alt
                    part = sel[pick]
                    if not part.size:
                        continue
                    codes = focal.alt[vi] if is_alt else focal.ref[vi]
                    al = codes.shape[0]
                    keep = min(center + al, length)
                    out[part, center:keep] = codes[:keep - center]
                    tail = length - keep
                    refill = np.ones(part.size, bool) if al != rl else moved[at][pick]
                    if tail and refill.any():
                        src = after[at][pick][refill]
                        if (src + tail > w).any():
                            raise AssertionError("haplotype span too short for a window")
                        _copy_rows(out, part[refill], self.seq, rows[part[refill]], src, tail, col=keep)
        for i in np.flatnonzero(slow).tolist():
            out[i] = self._piecewise(focal, int(v[i]), int(rows[i]), bool(use_alt[i]), length, center)
        return out

    def _piecewise(self, focal: Focal, vi: int, h: int, is_alt: bool, length: int, center: int) -> np.ndarray:
        """One window built from pieces: row before the excluded alleles, reference up to the focal
        site, the focal allele, reference to the end of the excluded alleles, row after."""
        blk = self.block
        p = int(focal.pos0[vi])
        rl = focal.ref[vi].shape[0]
        over = np.flatnonzero((blk.pos0 < p + rl) & (blk.end > p) & (blk.hap[:, h] > 0))
        e0 = min([p] + blk.pos0[over].tolist())
        e1 = max([p + rl] + blk.end[over].tolist())
        s = self.start
        row = self.seq[h]
        a0, a1 = self.coord(np.array([e0, e1]), np.array([h, h])).tolist()
        # coord(e1) counts the excluded alleles' length changes: row[a1:] is what follows them
        allele = focal.alt[vi] if is_alt else focal.ref[vi]
        if a0 < center:
            raise AssertionError("haplotype span too short for a window")
        left = np.concatenate([row[a0 - center:a0], self.ref[e0 - s:p - s]])[-center:] if center else row[:0]
        right = np.concatenate([allele, self.ref[p + rl - s:e1 - s], row[a1:a1 + length]])[:length - center]
        if right.shape[0] != length - center:
            raise AssertionError("haplotype span too short for a window")
        return np.concatenate([left, right])


def span_margin(blk: Block) -> int:
    """Reference bases that deletions in ``blk`` can pull into a window: their total length."""
    if not len(blk):
        return 0
    shrink = 0
    for r in range(len(blk)):
        rl = int(blk.ref_len[r])
        m = max((rl - a.shape[0] for a in blk.alleles[r][1:] if a is not None), default=0)
        shrink += max(m, 0)
    return shrink
