"""varfx.personal: cohort genotypes -> each sample's haplotype windows and two-hot pair codes.

The windows are checked against an independent builder written here on plain strings: it applies
docs/personal.md's genotype rules record by record and splices each copy's alleles into the reference
text, then cuts the window around the focal variant.  Nothing expected here is read back from
varfx.personal.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pytest
import torch

from varfx.encoding import decode, encode, one_hot, revcomp_codes, revcomp_hot, two_hot_pairs
from varfx.errors import OptionError
from varfx.genome import Genome
from varfx.personal import COUNTS, Block, Cohort, Focal, Haplotypes, pair_codes, parse_samples, span_margin

from cohort import random_records, write_cohort
from conftest import write_fasta

ACGT = "ACGT"


# -- the independent model -------------------------------------------------------------------------

def clean(seq: str) -> str:
    """FASTA text as varfx reads it: upper case, anything but ACGT is N."""
    return "".join(c if c in ACGT else "N" for c in seq.upper())


def parse_gt(text: str) -> tuple[list[int | None], bool, bool]:
    """A GT string -> ([allele copy 1, allele copy 2] with None for '.', phased, haploid)."""
    if "|" in text:
        parts, phased = text.split("|"), True
    elif "/" in text:
        parts, phased = text.split("/"), False
    else:
        parts, phased = [text], True
    vals = [None if x == "." else int(x) for x in parts]
    if len(vals) == 1:
        return [vals[0], vals[0]], phased, True
    return vals, phased, False


@dataclass
class Rec:
    contig: str
    pos0: int
    ref: str
    alts: list[str]
    usable: list[bool]  # per allele index (0 = REF)
    hap: list[int]  # per haplotype h = 2·sample + copy, after every rule
    raw: list[int]  # per haplotype, as called (missing -> 0, haploid doubled)
    flags: dict[str, list[bool]] = field(default_factory=dict)  # per sample

    @property
    def end(self) -> int:
        return self.pos0 + len(self.ref)

    def allele(self, a: int) -> str:
        return self.ref if a == 0 else self.alts[a - 1]


class Model:
    """docs/personal.md's rules applied record by record, and haplotypes spliced as text."""

    def __init__(self, seqs: dict[str, str], records, gts, two_hot: bool, names: dict[str, str] | None = None):
        self.seqs = {c: clean(s) for c, s in seqs.items()}
        self.recs: list[Rec] = []
        self.ref_mismatch = 0
        s_n = len(gts[0]) if gts else 0
        self.s_n = s_n
        last_end: dict[str, list[int]] = {}
        for (chrom, pos, ref, alts), row in zip(records, gts):
            contig = (names or {}).get(chrom, chrom)
            if contig not in self.seqs:
                continue
            seq = self.seqs[contig]
            p, ref = pos - 1, ref.upper()
            if p + len(ref) > len(seq) or any(r != "N" and r != f for r, f in zip(ref, seq[p:p + len(ref)])):
                self.ref_mismatch += 1
                continue
            alts = [a.upper() for a in alts if a != "."]
            usable = [True] + [bool(a) and all(c in "ACGTN" for c in a) for a in alts]
            ends = last_end.setdefault(contig, [0] * (2 * s_n))
            rec = Rec(contig, p, ref, alts, usable, [], [], {k: [] for k in [*COUNTS, "unphased_het"]})
            for s, text in enumerate(row):
                vals, phased, haploid = parse_gt(text)
                missing = any(v is None for v in vals)
                copies = [0 if v is None else v for v in vals]
                rec.raw += copies
                rec.flags["missing"].append(missing)
                rec.flags["haploid"].append(haploid and not missing)
                bad = [a > 0 and not usable[a] for a in copies]
                rec.flags["symbolic"].append(any(bad))
                copies = [0 if b else a for a, b in zip(copies, bad)]
                het = copies[0] != copies[1]
                indel = any(a > 0 and len(rec.allele(a)) != len(ref) for a in copies)
                drop = two_hot and het and indel and not phased
                rec.flags["unphased_indel"].append(drop)
                rec.flags["unphased_het"].append(het and not phased)
                if drop:
                    copies = [0, 0]
                clash = False
                for k in range(2):
                    h = 2 * s + k
                    if copies[k] > 0:
                        if p < ends[h]:
                            copies[k] = 0
                            clash = True
                        else:
                            ends[h] = max(ends[h], p + len(ref))
                rec.flags["overlap"].append(clash)
                rec.hap += copies
            self.recs.append(rec)

    def on(self, contig: str) -> list[Rec]:
        return [r for r in self.recs if r.contig == contig]

    def carries(self, contig: str, p: int, ref: str, alt: str) -> tuple[list[bool], bool]:
        """Copies carrying this ALT as called (missing reads as REF), and whether the cohort has it."""
        for r in self.on(contig):
            if r.pos0 == p and r.ref == ref and alt in r.alts:
                idx = r.alts.index(alt) + 1
                return [a == idx for a in r.raw], True
        return [False] * (2 * self.s_n), False

    def background_over(self, contig: str, h: int, p: int, rl: int) -> list[Rec]:
        """Records whose allele on copy h is applied and overlaps the focal REF [p, p + rl)."""
        return [r for r in self.on(contig) if r.hap[h] > 0 and r.pos0 < p + rl and r.end > p]

    def window(self, contig: str, h: int, p: int, fref: str, allele: str, length: int, center: int) -> str:
        """Copy h's sequence with its alleles applied (those over the focal REF left out, the focal
        allele put in), cut to ``length`` bases with the focal's first base at ``center``."""
        seq = self.seqs[contig]
        events = [(r.pos0, len(r.ref), r.allele(r.hap[h]), False) for r in self.on(contig)
                  if r.hap[h] > 0 and not (r.pos0 < p + len(fref) and r.end > p)]
        events.append((p, len(fref), allele, True))
        events.sort(key=lambda e: e[0])
        pad = length + 16
        out, i, anchor = ["N" * pad], 0, None
        for pos0, rl, text, focal in events:
            assert pos0 >= i, "overlapping alleles reached the builder"
            out.append(seq[i:pos0])
            if focal:
                anchor = sum(map(len, out))
            out.append(text)
            i = pos0 + rl
        out.append(seq[i:])
        out.append("N" * pad)
        full = "".join(out)
        win = full[anchor - center:anchor - center + length]
        assert len(win) == length
        return win


# -- random cohorts --------------------------------------------------------------------------------

def random_gt(rng: random.Random, n_alts: int, phased_frac: float = 0.7) -> str:
    if n_alts == 0:
        return rng.choice(["0|0", "0/0", "0", "."])
    pick = lambda: 0 if rng.random() < 0.55 else rng.randint(1, n_alts)
    u = rng.random()
    if u < 0.08:
        return rng.choice(["./.", ".", ".|.", "0/.", "0|.", f"./{rng.randint(1, n_alts)}",
                           f"{rng.randint(1, n_alts)}|."])
    if u < 0.15:
        return str(pick())
    sep = "|" if rng.random() < phased_frac else "/"
    return f"{pick()}{sep}{pick()}"


def extra_records(seqs: dict[str, str], rng: random.Random, used: set, per_contig: int = 2):
    """Records random_records does not make: MNVs, multi-allelic and complex indels, symbolic
    alleles, '*', overlapping alleles, a second record at a position, REF mismatches, lower case."""
    out = []
    for contig, raw in seqs.items():
        seq = clean(raw)

        def free(width: int):
            for _ in range(1000):
                p = rng.randrange(12, len(seq) - width - 12)
                if all((contig, q) not in used for q in range(p - 8, p + width + 8)) and \
                        all(c in ACGT for c in seq[p:p + width + 1]):
                    used.update((contig, q) for q in range(p, p + width))
                    return p
            raise RuntimeError("no room")

        def other(b):
            return rng.choice([c for c in ACGT if c != b])

        for _ in range(per_contig if len(seq) >= 1000 else 1):
            p = free(3)  # MNV
            k = rng.randint(2, 3)
            ref = seq[p:p + k]
            alt = "".join(other(c) if rng.random() < 0.6 or i == 0 else c for i, c in enumerate(ref))
            out.append((contig, p + 1, ref, [alt]))
            p = free(4)  # multi-allelic: deletion, insertion and SNV
            ref = seq[p:p + 3]
            out.append((contig, p + 1, ref, [ref[0], ref + "GA", other(ref[0]) + ref[1:]]))
            p = free(3)  # complex replacement
            out.append((contig, p + 1, seq[p:p + 2], [other(seq[p]) + "TTG"]))
            p = free(6)  # overlapping records: a deletion, an SNV inside it, an insertion after it
            ref = seq[p:p + 5]
            out.append((contig, p + 1, ref, [ref[0]]))
            out.append((contig, p + 3, seq[p + 2], [other(seq[p + 2])]))
            out.append((contig, p + 5, seq[p + 4], [seq[p + 4] + "CC"]))
            p = free(2)  # two records at one position: an insertion and an SNV
            out.append((contig, p + 1, seq[p], [seq[p] + "AT"]))
            out.append((contig, p + 1, seq[p], [other(seq[p])]))
        p = free(1)
        out.append((contig, p + 1, seq[p], ["<DEL>"]))
        p = free(1)
        out.append((contig, p + 1, seq[p], [other(seq[p]), "*"]))
        p = free(1)
        out.append((contig, p + 1, other(seq[p]), [seq[p]]))  # REF disagrees with the FASTA
        p = free(1)
        out.append((contig, p + 1, seq[p].lower(), [other(seq[p]).lower()]))
        p = free(2)
        out.append((contig, p + 1, "N", [other(seq[p])]))  # an N REF matches any base
    return out


def make_cohort(tmp_path, seqs, rng, n_samples=5, n_random=40, phased_frac=0.7, name="cohort.vcf",
                vcf_names: dict[str, str] | None = None):
    """A random cohort VCF; returns (path, samples, records as FASTA contigs, genotypes)."""
    used: set = set()
    records = extra_records(seqs, rng, used)
    records += [r for r in random_records(seqs, n_random, rng, indel_rate=0.35)
                if not any((r[0], r[1] - 1 + d) in used for d in range(-1, 8))]
    order = {c: i for i, c in enumerate(seqs)}
    records.sort(key=lambda r: (order[r[0]], r[1]))
    samples = [f"S{i}" for i in range(n_samples)]
    gts = []
    for r in records:
        if r[0] == list(seqs)[-1] and r[1] % 3 == 0:  # some records where every call is haploid
            gts.append([rng.choice(["0", "1", "."]) if len(r[3]) else "0" for _ in samples])
        else:
            gts.append([random_gt(rng, len(r[3]), phased_frac) for _ in samples])
    names = vcf_names or {}
    written = [(names.get(c, c), p, ref, alts) for c, p, ref, alts in records]
    contigs = {names.get(c, c): len(s) for c, s in seqs.items()}
    path = write_cohort(tmp_path / name, written, samples, gts, contigs=contigs)
    return path, samples, records, gts


def random_foci(model: Model, contig: str, rng: random.Random, n_novel: int):
    """Focal variants (pos0, REF, ALT): every cohort allele on the contig, plus novel SNVs, MNVs,
    insertions and deletions, half of them on or next to cohort records."""
    seq = model.seqs[contig]
    foci = []
    for r in model.on(contig):
        for a, ok in zip(r.alts, r.usable[1:]):
            if ok and "N" not in r.ref:
                foci.append((r.pos0, r.ref, a))
    recs = model.on(contig)
    while n_novel > 0:
        if recs and rng.random() < 0.6:
            r = rng.choice(recs)
            p = r.pos0 + rng.randint(-3, len(r.ref) + 1)
        else:
            p = rng.randrange(0, len(seq) - 8)
        p = min(max(p, 0), len(seq) - 8)
        kind = rng.choice(["snv", "snv", "mnv", "del", "ins"])
        if kind == "snv":
            ref = seq[p]
            alt = rng.choice([c for c in ACGT if c != ref])
        elif kind == "mnv":
            ref = seq[p:p + rng.randint(2, 3)]
            alt = "".join(rng.choice([c for c in ACGT if c != b]) for b in ref)
        elif kind == "del":
            ref = seq[p:p + rng.randint(2, 7)]
            alt = ref[0]
        else:
            ref = seq[p]
            alt = ref + "".join(rng.choice(ACGT) for _ in range(rng.randint(1, 6)))
        foci.append((p, ref, alt))
        n_novel -= 1
    return foci


def make_focal(blk: Block, foci) -> Focal:
    """A Focal as the run builds one: ALT carriage from the block's calls as written."""
    carries, found = [], []
    for p, ref, alt in foci:
        hit = blk.find(p, ref, alt)
        found.append(hit is not None)
        carries.append(blk.raw[hit[0]] == hit[1] if hit is not None else np.zeros(blk.hap.shape[1], bool))
    return Focal(np.array([f[0] for f in foci], dtype=np.int64), [encode(f[1]) for f in foci],
                 [encode(f[2]) for f in foci], np.stack(carries), np.array(found))


def local_span(cohort: Cohort, contig: str, lo: int, hi: int):
    """Records and span for windows covering [lo, hi), widened until the deletions inside cannot pull
    bases from outside it.  Blocks hold only records that lie inside the span, so the span starts wider
    than any deletion here: a deletion that begins before the span and ends inside it is not in the
    block, yet it moves the bases the window starts with."""
    extra = 8
    for _ in range(8):
        blk = cohort.block(contig, lo - extra, hi + extra)
        need = span_margin(blk)
        if need <= extra:
            return lo - extra, hi + extra, blk
        extra = need + 16
    raise AssertionError("span did not settle")


def expected(model: Model, contig: str, focus, h: int, which: int, length: int, center: int) -> str:
    p, ref, alt = focus
    if which == 2:
        carries, _ = model.carries(contig, p, ref, alt)
        use_alt = carries[h]
    else:
        use_alt = which == 1
    return model.window(contig, h, p, ref, alt if use_alt else ref, length, center)


@pytest.fixture
def seqs(genome_seqs):
    """conftest's genome (soft-masked stretch, N and IUPAC codes) and one more contig."""
    rng = random.Random(11)
    return {**genome_seqs, "chr3": "".join(rng.choice(ACGT) for _ in range(700))}


# -- 1. windows against the independent builder ----------------------------------------------------

def _check_contig_windows(model, cohort, genome, contig, foci, length, center, whole: bool, stats):
    """All (focal, haplotype, which) windows of a contig, compared base by base."""
    h_n = 2 * cohort.n_samples
    n = len(model.seqs[contig])
    bad = []
    if whole:  # one span over the whole contig (N past both ends), every focal in one call
        start, end, blk = local_span(cohort, contig, -length - 8, n + length + 8)
        haps = Haplotypes.build(genome, contig, start, end, blk)
        focal = make_focal(blk, foci)
        for i, (p, ref, alt) in enumerate(foci):  # dosage and in_cohort from the calls as written
            carries, found = model.carries(contig, p, ref, alt)
            assert focal.carries[i].tolist() == carries and bool(focal.in_cohort[i]) == found
        v = np.repeat(np.arange(len(foci)), 3 * h_n)
        rows = np.tile(np.repeat(np.arange(h_n), 3), len(foci))
        which = np.tile(np.array([0, 1, 2]), len(foci) * h_n)
        got = haps.windows(focal, v, rows, which, length, center)
        groups = [(haps, focal, v, v, rows, which, got)]
    else:  # one span per focal, about as tight as the run makes them
        groups = []
        for i, (p, ref, alt) in enumerate(foci):
            hi_need = max(len(ref), len(alt))
            start, end, blk = local_span(cohort, contig, p - center - 4, p + hi_need + length - center + 4)
            haps = Haplotypes.build(genome, contig, start, end, blk)
            focal = make_focal(blk, [(p, ref, alt)])
            v = np.zeros(3 * h_n, dtype=np.int64)
            rows = np.repeat(np.arange(h_n), 3)
            which = np.tile(np.array([0, 1, 2]), h_n)
            got = haps.windows(focal, v, rows, which, length, center)
            groups.append((haps, focal, np.full(v.size, i), v, rows, which, got))
    for haps, focal, fi, v, rows, which, got in groups:
        assert got.shape == (v.size, length) and got.dtype == np.uint8
        for j in range(v.size):
            focus = foci[int(fi[j])]
            h, w = int(rows[j]), int(which[j])
            want = expected(model, contig, focus, h, w, length, center)
            if decode(got[j]) != want:
                bad.append((contig, focus, h, w, length, center, decode(got[j]), want))
            over = model.background_over(contig, h, focus[0], len(focus[1]))
            if over:
                inside = all(r.pos0 >= focus[0] and r.end <= focus[0] + len(focus[1])
                             and len(r.allele(r.hap[h])) == len(r.ref) for r in over)
                stats["overwrite" if inside else "piecewise"] += 1
            else:
                stats["plain"] += 1
            if w == 2:
                stats["genotype_alt"] += bool(focal.carries[int(v[j]), h])
    return bad


@pytest.mark.parametrize("two_hot", [True, False])
@pytest.mark.parametrize("seed", [1, 2])
def test_windows_match_independent_builder(tmp_path, seqs, two_hot, seed):
    rng = random.Random(seed)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=4, n_random=30)
    model = Model(seqs, records, gts, two_hot)
    genome = Genome(fa)
    if seed == 2:  # the same through an index, read by region with a small chunk
        pysam = pytest.importorskip("pysam")
        path = pysam.tabix_index(str(path), preset="vcf", force=True)
    cohort = Cohort(path, genome, two_hot=two_hot, chunk=100)
    assert cohort.indexed == (seed == 2)
    stats = {"plain": 0, "overwrite": 0, "piecewise": 0, "genotype_alt": 0}
    bad = []
    for contig in seqs:
        foci = random_foci(model, contig, rng, n_novel=12)
        for length, center, whole in [(31, 15, True), (64, 32, False), (64, 32, True), (31, 15, False)]:
            bad += _check_contig_windows(model, cohort, genome, contig, foci, length, center, whole, stats)
    cohort.close()
    genome.close()
    assert not bad, f"{len(bad)} windows differ; first: {bad[0]}"
    # the cases the test is for were reached
    assert min(stats["piecewise"], stats["overwrite"], stats["genotype_alt"]) >= 200, stats


def test_windows_off_center_and_mixed_pairs(tmp_path, seqs):
    """Any centre (0, L − 1, others), pairs in any order and subset, one call for many foci."""
    rng = random.Random(5)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=3, n_random=25)
    model = Model(seqs, records, gts, two_hot=True)
    genome = Genome(fa)
    cohort = Cohort(path, genome)
    h_n = 6
    for contig in ["chr1", "chr3"]:
        n = len(model.seqs[contig])
        foci = random_foci(model, contig, rng, n_novel=10)
        for length, center in [(33, 0), (33, 32), (40, 7), (17, 12)]:
            start, end, blk = local_span(cohort, contig, -length - 8, n + length + 8)
            haps = Haplotypes.build(genome, contig, start, end, blk)
            focal = make_focal(blk, foci)
            m = 300
            v = np.array([rng.randrange(len(foci)) for _ in range(m)])
            rows = np.array([rng.randrange(h_n) for _ in range(m)])
            which = np.array([rng.randrange(3) for _ in range(m)], dtype=np.int8)
            got = haps.windows(focal, v, rows, which, length, center)
            for j in range(m):
                want = expected(model, contig, foci[v[j]], int(rows[j]), int(which[j]), length, center)
                assert decode(got[j]) == want, (contig, foci[v[j]], rows[j], which[j], length, center)
    assert haps.windows(focal, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8), 9, 4).shape \
        == (0, 9)
    cohort.close()


def _toy(tmp_path, seq: str, rows: list[tuple[int, str, list[str], list[str]]], samples=None, two_hot=True,
         name="t.vcf", extra_contigs=None):
    """A one-contig genome and a cohort of hand-written records (1-based pos, REF, ALTs, GTs)."""
    fa = write_fasta(tmp_path / f"{name}.fa", {"chr1": seq, **(extra_contigs or {})})
    samples = samples or [f"S{i}" for i in range(len(rows[0][3]))]
    recs = [("chr1", p, ref, alts) for p, ref, alts, _ in rows]
    path = write_cohort(tmp_path / name, recs, samples, [r[3] for r in rows],
                        contigs={"chr1": len(seq), **{k: len(v) for k, v in (extra_contigs or {}).items()}})
    genome = Genome(fa)
    return genome, Cohort(path, genome, two_hot=two_hot)


def _one(genome, cohort, seq, focus, h, which, length=21, center=10):
    p, ref, alt = focus
    start, end, blk = local_span(cohort, "chr1", p - center - 4, p + length + 8)
    haps = Haplotypes.build(genome, "chr1", start, end, blk)
    focal = make_focal(blk, [focus])
    return decode(haps.windows(focal, np.array([0]), np.array([h]), np.array([which]), length, center)[0])


def test_windows_by_hand(tmp_path):
    """A few windows written out by hand: an SNV at the focal site, an indel over it, indels before it."""
    s = "ACGTACGTAC" * 8  # 80 bp
    other = lambda b, not_=(): next(c for c in "GTAC" if c != b and c not in not_)
    b29 = other(s[29])
    rows = [(20, s[19], [s[19] + "GG"], ["1|0", "0|0"]),  # insertion of GG after 0-based 19
            (30, s[29], [b29], ["1|1", "0|1"]),  # SNV at 0-based 29
            (33, s[32:36], [s[32]], ["0|0", "1|0"])]  # deletion of 0-based 33..35
    genome, cohort = _toy(tmp_path, s, rows)
    # focal SNV at 0-based 29 to a third base; h 0 carries the insertion and the cohort SNV at 29
    x29 = other(s[29], (b29,))
    copy0 = s[:20] + "GG" + s[20:]
    anchor = 29 + 2
    assert _one(genome, cohort, s, (29, s[29], x29), 0, 0) == copy0[anchor - 10:anchor + 11]
    copy0_alt = s[:20] + "GG" + s[20:29] + x29 + s[30:]
    assert _one(genome, cohort, s, (29, s[29], x29), 0, 1) == copy0_alt[anchor - 10:anchor + 11]
    # which = 2: the cohort has s[29]>b29 at 29, not >x29: REF on every copy
    assert _one(genome, cohort, s, (29, s[29], x29), 0, 2) == copy0[anchor - 10:anchor + 11]
    # the cohort's own SNV, genotype: sample 1 copy 1 (h 3) carries it, copy 0 (h 2) does not but
    # has the deletion at 33..35
    assert _one(genome, cohort, s, (29, s[29], b29), 3, 2) == (s[:29] + b29 + s[30:])[19:40]
    assert _one(genome, cohort, s, (29, s[29], b29), 2, 2) == (s[:33] + s[36:])[19:40]
    assert _one(genome, cohort, s, (29, s[29], b29), 0, 2) == (s[:20] + "GG" + s[20:29] + b29 + s[30:])[21:42]
    assert _one(genome, cohort, s, (29, s[29], b29), 1, 2) == (s[:29] + b29 + s[30:])[19:40]
    # focal deletion of 0-based 32..34: h 2's deletion at 33..35 overlaps it and is left out
    focus = (31, s[31:35], s[31])
    assert _one(genome, cohort, s, focus, 2, 1) == (s[:32] + s[35:])[21:42]
    assert _one(genome, cohort, s, focus, 2, 0) == s[21:42]
    # a focal SNV after the deletion: h 2 reads 3 bases further on
    focus = (45, s[45], other(s[45]))
    assert _one(genome, cohort, s, focus, 2, 0) == (s[:33] + s[36:])[45 - 3 - 10:45 - 3 + 11]
    assert _one(genome, cohort, s, focus, 2, 1) == (s[:33] + s[36:45] + focus[2] + s[46:])[32:53]
    assert _one(genome, cohort, s, focus, 3, 0) == (s[:29] + b29 + s[30:])[35:56]
    cohort.close()


# -- 2. genotype rules --------------------------------------------------------------------------------

def _flags_equal(model: Model, blk: Block, contig: str):
    recs = model.on(contig)
    assert blk.pos0.tolist() == [r.pos0 for r in recs]
    assert [k[0] for k in blk.keys] == [r.ref for r in recs]
    assert blk.hap.tolist() == [r.hap for r in recs]
    assert blk.raw.tolist() == [r.raw for r in recs]
    for k in [*COUNTS, "unphased_het"]:
        assert blk.flags[k].tolist() == [r.flags[k] for r in recs], k


@pytest.mark.parametrize("two_hot", [True, False])
def test_random_cohort_rules(tmp_path, seqs, two_hot):
    rng = random.Random(21)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    # the VCF names chr1 '1' and chrM 'MT' (aliases of the FASTA's names), and has a contig the FASTA lacks
    names = {"chr1": "1", "chrM": "MT"}
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=6, n_random=40, phased_frac=0.5,
                                              vcf_names=names)
    text = path.read_text().rstrip("\n") + "\nchr9\t5\tx\tA\tC\t.\tPASS\t.\tGT" + "\t1|1" * 6 + "\n"
    path.write_text(text.replace("##contig=<ID=1,", "##contig=<ID=chr9,length=100>\n##contig=<ID=1,"))
    model = Model(seqs, records, gts, two_hot)
    genome = Genome(fa)
    cohort = Cohort(path, genome, two_hot=two_hot)
    want = {k: np.zeros(6, np.int64) for k in COUNTS}
    for contig in seqs:
        n = len(seqs[contig])
        blk = cohort.block(contig, 0, n)
        _flags_equal(model, blk, contig)
        cohort.count(contig, np.array([0]), np.array([n]))
        for r in model.on(contig):
            for k in COUNTS:
                want[k] += np.array(r.flags[k])
    for k in COUNTS:
        assert cohort.counts[k].tolist() == want[k].tolist(), k
    # every rule fired somewhere, so the comparison above means something
    for k in COUNTS:
        if k != "unphased_indel" or two_hot:
            assert want[k].sum() > 0, k
    assert cohort.ref_mismatch == model.ref_mismatch == len(seqs)
    cohort.close()


def test_rules_by_hand(tmp_path):
    s = "ACGTACGTAC" * 6
    snv = lambda b: "A" if b != "A" else "C"
    rows = [  # 1-based pos, REF, ALTs, GTs of samples a, b, c, d
        (3, s[2], [snv(s[2])], ["./.", ".", "0/.", "1"]),  # missing ×3 ('.' is missing, not haploid); haploid
        (6, s[5:8], [s[5]], ["0/1", "1/1", "1|0", "0|."]),  # a: unphased het deletion, left out (two-hot)
        (12, s[11], [snv(s[11])], ["0/1", "1", "./1", "1|1"]),  # unphased het SNVs are kept
        (15, s[14], ["<DEL>", snv(s[14])], ["1|0", "2|1", "0|0", "1/2"]),  # symbolic left out
        (20, s[19:24], [s[19]], ["1|0", "0|0", "1|1", "0|0"]),  # deletion of 0-based 20..23
        (22, s[21], ["*", snv(s[21])], ["1|1", "2|2", "2|0", "1|2"]),  # '*'; SNV inside the deletion
        (30, snv(s[29]), [s[29]], ["1|1", "1|1", "1|1", "1|1"]),  # REF disagrees with the FASTA
        (33, s[32], [s[32] + "AA"], ["1", "0", ".", "1|1"]),  # haploid insertion and REF; '.' missing
    ]
    genome, cohort = _toy(tmp_path, s, rows, samples=list("abcd"))
    blk = cohort.block("chr1", 0, len(s))
    assert blk.pos0.tolist() == [2, 5, 11, 14, 19, 21, 32]  # the mismatching record is left out
    assert cohort.ref_mismatch == 1
    assert blk.hap.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1],
                                [0, 0, 1, 1, 1, 0, 0, 0],  # a's 0/1 deletion left out
                                [0, 1, 1, 1, 0, 1, 1, 1],
                                [0, 0, 2, 0, 0, 0, 0, 2],  # <DEL> (1) left out, the SNV (2) kept
                                [1, 0, 0, 0, 1, 1, 0, 0],
                                [0, 0, 2, 2, 0, 0, 0, 2],  # '*' left out; c's SNV overlaps its deletion
                                [1, 1, 0, 0, 0, 0, 1, 1]]
    assert blk.raw.tolist()[3] == [1, 0, 2, 1, 0, 0, 1, 2]  # as called
    assert blk.raw.tolist()[1] == [0, 1, 1, 1, 1, 0, 0, 0]
    f = {k: v.astype(int).tolist() for k, v in blk.flags.items()}
    z = [0] * 4
    assert f["missing"] == [[1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0], z, z, z, [0, 0, 1, 0]]
    assert f["haploid"] == [[0, 0, 0, 1], z, [0, 1, 0, 0], z, z, z, [1, 1, 0, 0]]
    assert f["unphased_indel"] == [z, [1, 0, 0, 0], z, z, z, z, z]
    assert f["unphased_het"] == [z, [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], z, z, z]
    assert f["symbolic"] == [z, z, z, [1, 1, 0, 1], z, [1, 0, 0, 1], z]
    assert f["overlap"] == [z, z, z, z, z, [0, 0, 1, 0], z]
    cohort.count("chr1", np.array([0]), np.array([len(s)]))
    c = {k: v.tolist() for k, v in cohort.counts.items()}
    assert c == {"missing": [1, 1, 3, 1], "haploid": [1, 2, 0, 1], "unphased_indel": [1, 0, 0, 0],
                 "overlap": [0, 0, 1, 0], "symbolic": [2, 1, 0, 2]}
    # the genotype contrast reads the calls as written: a carries the deletion on copy 2
    assert make_focal(blk, [(5, s[5:8], s[5])]).carries[0].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]
    cohort.close()

    # one-hot mode keeps the unphased het deletion as written (the run refuses unphased hets there)
    genome2, cohort2 = _toy(tmp_path, s, rows, samples=list("abcd"), two_hot=False, name="u.vcf")
    blk2 = cohort2.block("chr1", 0, len(s))
    assert blk2.hap.tolist()[1] == [0, 1, 1, 1, 1, 0, 0, 0]
    assert not blk2.flags["unphased_indel"].any()
    assert blk2.flags["unphased_het"].astype(int).tolist() == f["unphased_het"]
    cohort2.close()


def test_overlap_rule(tmp_path):
    seq = "ACGTACGTAC" * 6
    s = seq
    rows = [
        (10, s[9:15], [s[9]], ["1|0", "0|1", "1|1"]),  # deletion over 10..15 (0-based 9..14)
        (12, s[11], ["A" if s[11] != "A" else "C"], ["1|1", "1|1", "0|0"]),  # inside: left out on copies with it
        (15, s[14], [s[14] + "G"], ["1|0", "0|0", "0|1"]),  # last REF base of the deletion: overlaps too
        (16, s[15], ["A" if s[15] != "A" else "C"], ["1|1", "1|1", "1|1"]),  # after it: kept
        (16, s[15], [s[15] + "T"], ["0|1", "0|0", "0|0"]),  # same position again: overlaps the SNV
    ]
    genome, cohort = _toy(tmp_path, seq, rows)
    blk = cohort.block("chr1", 0, len(seq))
    assert blk.hap.tolist() == [[1, 0, 0, 1, 1, 1],
                                [0, 1, 1, 0, 0, 0],
                                [0, 0, 0, 0, 0, 0],
                                [1, 1, 1, 1, 1, 1],
                                [0, 0, 0, 0, 0, 0]]
    assert blk.flags["overlap"].astype(int).tolist() == [[0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0]]
    cohort.count("chr1", np.array([0]), np.array([len(seq)]))
    assert cohort.counts["overlap"].tolist() == [3, 1, 1]
    # the sequence of sample 0 copy 0: the deletion, then the SNV at 16; copy 1: the SNV at 12
    h0 = _one(genome, cohort, seq, (39, s[39], "A" if s[39] != "A" else "C"), 0, 0, length=41, center=30)
    b16 = "A" if s[15] != "A" else "C"
    b12 = "A" if s[11] != "A" else "C"
    text = s[:10] + b16 + s[16:]  # 0-based 9 keeps its base, 10..14 deleted
    anchor = 39 - 5
    assert h0 == text[anchor - 30:anchor + 11]
    h1 = _one(genome, cohort, seq, (39, s[39], "A" if s[39] != "A" else "C"), 1, 0, length=41, center=30)
    text = s[:11] + b12 + s[12:15] + b16 + s[16:]
    assert h1 == text[39 - 30:39 + 11]
    cohort.close()


def test_counts_not_doubled(tmp_path):
    rng = random.Random(3)
    seq = "".join(rng.choice(ACGT) for _ in range(400))
    rows = [(p, seq[p - 1], ["A" if seq[p - 1] != "A" else "C"], ["./.", "1", "0|1"]) for p in range(20, 380, 20)]
    rows.append((98, seq[97:103], [seq[97]], [".", "0|0", "0|0"]))  # a deletion over 97..102 (0-based)
    rows.sort(key=lambda r: r[0])
    genome, cohort = _toy(tmp_path, seq, rows)
    n_in = lambda a, b: sum(1 for p, ref, _, _ in rows if a <= p - 1 < b)  # records starting in [a, b)
    cohort.count("chr1", np.array([0]), np.array([100]))
    first = n_in(0, 100)
    assert cohort.counts["missing"].tolist() == [first, 0, 0]
    cohort.count("chr1", np.array([0]), np.array([100]))  # the same stretch again
    cohort.count("chr1", np.array([40]), np.array([90]))  # a stretch inside it
    assert cohort.counts["missing"].tolist() == [first, 0, 0]
    # an overlapping stretch adds only the records starting in its new part (the deletion at 97 that
    # crosses 100 was counted with the first stretch, which it starts in)
    cohort.count("chr1", np.array([90]), np.array([250]))
    total = len([r for r in rows if r[0] - 1 + len(r[1]) <= 250])
    assert cohort.counts["missing"].tolist() == [total, 0, 0]
    assert cohort.counts["haploid"].tolist() == [0, total - 1, 0]
    cohort.count("chr1", np.array([300]), np.array([400]))
    cohort.count("chr1", np.array([0]), np.array([400]))
    assert cohort.counts["missing"].tolist() == [len(rows), 0, 0]
    assert cohort.counts["haploid"].tolist() == [0, len(rows) - 1, 0]
    cohort.close()


def test_bad_files(tmp_path):
    from varfx.errors import InputError
    s = "ACGTACGTAC" * 6
    with pytest.raises(InputError, match=r"sample S1 at chr1:12 calls allele 3"):
        genome, cohort = _toy(tmp_path, s, [(12, s[11], ["A"], ["0|1", "0|3"])])
        cohort.block("chr1", 0, 60)
    with pytest.raises(InputError, match="not sorted"):
        genome, cohort = _toy(tmp_path, s, [(20, s[19], ["A"], ["0|1"]), (12, s[11], ["A"], ["0|1"])],
                              name="u.vcf")
        cohort.block("chr1", 0, 60)


def _cohort_text(tmp_path, name: str, lines: list[str], contigs=("chr1",), seq_len=60):
    header = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
              '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">',
              *(f"##contig=<ID={c},length={seq_len}>" for c in contigs),
              "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", "a", "b"])]
    path = tmp_path / name
    path.write_text("\n".join(header + ["\t".join(x.split()) for x in lines]) + "\n")
    return path


def test_records_varfx_used_to_crash_on(tmp_path):
    """Records that gave a traceback or a wrong window: a FORMAT without GT (cyvcf2 raises: its calls are
    missing), an IUPAC REF (left out and counted as symbolic, as docs/personal.md says, not applied),
    POS 0 (left out as a REF that does not fit, not counted as an overlap), a blank line (no record)."""
    import warnings
    s = "ACGTACGTAC" * 6
    fa = write_fasta(tmp_path / "g.fa", {"chr1": s})
    genome = Genome(fa)
    alt = lambda b: "A" if b != "A" else "C"
    path = _cohort_text(tmp_path, "c.vcf", [
        f"chr1 0 . N {alt(s[0])} . PASS . GT 1|1 1|1",
        f"chr1 5 . {s[4]} {alt(s[4])} . PASS . GT 1|0 0|1",
        f"chr1 10 . {s[9]} {alt(s[9])} . PASS . DP 5 7",
        "",
        f"chr1 20 . R {alt(s[19])} . PASS . GT 1|1 0|1",
        f"chr1 30 . {s[29]} {alt(s[29])} . PASS . GT 0|1 1|1",
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no Python warning either
        cohort = Cohort(path, genome)
        blk = cohort.block("chr1", 0, len(s))
    assert blk.pos0.tolist() == [4, 9, 19, 29]
    assert blk.hap.tolist() == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]]
    assert blk.flags["missing"].tolist() == [[False, False], [True, True], [False, False], [False, False]]
    assert blk.flags["symbolic"].tolist() == [[False, False], [False, False], [True, True], [False, False]]
    assert not blk.flags["overlap"].any()
    assert cohort.ref_mismatch == 1  # POS 0
    cohort.close()


def test_unparsable_records_are_one_line_errors_indexed_or_not(tmp_path):
    pysam = pytest.importorskip("pysam")
    from varfx.errors import InputError
    s = "ACGTACGTAC" * 6
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": s}))
    path = _cohort_text(tmp_path, "bad.vcf", [f"chr1 5 . {s[4]} A . PASS . GT 1|0 0|1", "chr1 8 . G"])
    shutil.copy(path, tmp_path / "bad2.vcf")
    gz = pysam.tabix_index(str(tmp_path / "bad2.vcf"), preset="vcf", force=True)
    for p in (path, gz):
        cohort = Cohort(p, genome)
        with pytest.raises(InputError, match=r"a record could not be parsed"):
            cohort.block("chr1", 0, len(s))
        cohort.close()


def test_an_indexed_cohort_naming_a_contig_twice_reads_the_name_with_records(tmp_path):
    """A header with both 1 and chr1 (records on chr1): indexed reads used to query 1 and find nothing,
    silently giving every sample the reference; records under both names are an error."""
    import warnings
    pysam = pytest.importorskip("pysam")
    from varfx.errors import InputError
    s = "ACGTACGTAC" * 6
    genome = Genome(write_fasta(tmp_path / "g.fa", {"chr1": s}))
    rows = [f"chr1 5 . {s[4]} A . PASS . GT 1|0 0|1", f"chr1 30 . {s[29]} A . PASS . GT 1|1 0|0"]
    blocks = []
    for name, lines in (("one.vcf", rows), ("two.vcf", rows + [f"1 40 . {s[39]} A . PASS . GT 1|1 0|0"])):
        plain = _cohort_text(tmp_path, name, lines, contigs=("1", "chr1"))
        shutil.copy(plain, tmp_path / ("x" + name))
        gz = pysam.tabix_index(str(tmp_path / ("x" + name)), preset="vcf", force=True)
        if name == "one.vcf":
            for p in (plain, gz):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # cyvcf2's "no intervals found" (for 1) is not shown
                    cohort = Cohort(p, genome)
                    blocks.append(cohort.block("chr1", 0, len(s)))
                cohort.close()
        else:
            with pytest.raises(InputError, match=r"records of FASTA contig chr1 under 2 names \(1, chr1\)"):
                Cohort(gz, genome)
    _same_block(*blocks)
    assert blocks[1].pos0.tolist() == [4, 29] and blocks[1].hap.tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]


def test_span_margin_and_coordinates(tmp_path):
    s = "ACGTACGTAC" * 6
    rows = [(5, s[4:10], [s[4]], ["1|0"]),  # deletes 5 bases (0-based 5..9)
            (20, s[19:22], [s[19], s[19:22] + "TT", "<DEL>"], ["2|1"]),  # deletes 2, inserts 2
            (30, s[29], ["A" if s[29] != "A" else "C"], ["1|1"]),
            (40, s[39:41], [s[39:41] + "G"], ["0|1"])]  # inserts 1
    genome, cohort = _toy(tmp_path, s, rows)
    blk = cohort.block("chr1", 0, 60)
    assert span_margin(blk) == 5 + 2
    assert span_margin(cohort.block("chr1", 15, 60)) == 2
    assert span_margin(cohort.block("chr1", 25, 60)) == 0
    haps = Haplotypes.build(genome, "chr1", -3, 63, blk)
    x = np.array([0, 4, 10, 19, 22, 25, 41, 50] * 2)
    h = np.repeat([0, 1], 8)
    # copy 0: −5 from 10 on, +2 from 22 on; copy 1: −2 from 22 on, +1 from 41 on; both +3 for start −3
    want = [3, 7, 8, 17, 22, 25, 41, 50, 3, 7, 13, 22, 23, 26, 43, 52]
    assert haps.coord(x, h).tolist() == want
    rows0 = decode(haps.seq[0])
    assert rows0[:3] == "NNN" and rows0[3:3 + 8] == s[:5] + s[10:13]
    cohort.close()


# -- 3. samples ------------------------------------------------------------------------------------

def test_parse_samples(tmp_path):
    assert parse_samples(None) is None
    assert parse_samples("S2, S0,S1") == ["S2", "S0", "S1"]
    assert parse_samples("S1,,S0,") == ["S1", "S0"]
    assert parse_samples(["b", " a "]) == ["b", "a"]
    f = tmp_path / "samples.txt"
    f.write_text("# header\nS3\n\nS1\textra column\n  \nS2\n")
    assert parse_samples(str(f)) == ["S3", "S1", "S2"]
    with pytest.raises(OptionError, match="S1 twice"):
        parse_samples("S1,S2,S1")
    dup = tmp_path / "dup.txt"
    dup.write_text("x\ny\nx\n")
    with pytest.raises(OptionError, match="x twice"):
        parse_samples(str(dup))
    with pytest.raises(OptionError, match="names no samples"):
        parse_samples(" , ,")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(OptionError, match="names no samples"):
        parse_samples(str(empty))


def test_cohort_sample_order(tmp_path, seqs):
    rng = random.Random(8)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=5, n_random=20)
    genome = Genome(fa)
    full = Cohort(path, genome)
    assert full.samples == samples
    pick = ["S3", "S0", "S4"]
    sub = Cohort(path, genome, samples=pick)
    assert sub.samples == pick and sub.n_samples == 3
    cols = [samples.index(s) for s in pick]
    hcols = [2 * c + k for c in cols for k in range(2)]
    for contig in seqs:
        a, b = full.block(contig, 0, 2000), sub.block(contig, 0, 2000)
        assert a.pos0.tolist() == b.pos0.tolist()
        assert b.hap.tolist() == a.hap[:, hcols].tolist()
        assert b.raw.tolist() == a.raw[:, hcols].tolist()
        for k in COUNTS:
            assert b.flags[k].tolist() == a.flags[k][:, cols].tolist()
        # and both agree with the calls as written, in the requested order
        model = Model(seqs, records, [[row[c] for c in cols] for row in gts], two_hot=True)
        _flags_equal(model, b, contig)
    with pytest.raises(OptionError) as exc:
        Cohort(path, genome, samples=["S1", "NOPE"])
    assert "NOPE" in str(exc.value) and "S1" not in str(exc.value).split("NOPE")[0]
    with pytest.raises(OptionError, match="and 1 more"):
        Cohort(path, genome, samples=["X1", "X2"])
    full.close()
    sub.close()


# -- 4. pair codes ---------------------------------------------------------------------------------

def test_pair_codes_two_hot_all_combinations():
    a, b = np.array(list(product(range(5), repeat=2)), dtype=np.uint8).T
    pairs = pair_codes(a, b)
    assert pairs.dtype == np.uint8 and sorted(pairs.tolist()) == list(range(25))
    x = two_hot_pairs(torch.as_tensor(pairs))
    for i in range(25):
        want = [0.0] * 4
        for code in (int(a[i]), int(b[i])):
            if code < 4:
                want[code] += 1
        assert x[i].tolist() == want, (a[i], b[i])
    np.testing.assert_array_equal(x.numpy(), (one_hot(a) + one_hot(b)).numpy())
    # homozygous bases are 2, N contributes nothing
    assert x[int(np.flatnonzero((a == 2) & (b == 2))[0])].tolist() == [0, 0, 2, 0]
    assert x[int(np.flatnonzero((a == 4) & (b == 4))[0])].tolist() == [0, 0, 0, 0]


def test_pair_codes_reverse_complement():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 5, size=(6, 40)).astype(np.uint8)
    b = rng.integers(0, 5, size=(6, 40)).astype(np.uint8)
    x = two_hot_pairs(pair_codes(a, b))
    rc = two_hot_pairs(pair_codes(revcomp_codes(a).copy(), revcomp_codes(b).copy()))
    np.testing.assert_array_equal(revcomp_hot(x).numpy(), rc.numpy())
    # heterozygous A/T stays A+T and C/G stays C+G; A/C becomes G+T
    win = pair_codes(encode("AACN"), encode("TGAC"))  # A/T, A/G, C/A, N/C
    y = revcomp_hot(two_hot_pairs(win)).tolist()
    assert y == [[0, 0, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 1]]  # N/G, G/T, T/C, T/A


def test_two_hot_windows_from_haplotypes(tmp_path, seqs):
    """A sample's two copies -> pair codes -> two-hot equals the sum of the copies' one-hots from the
    independent builder, and its reverse complement is that of the reverse-complemented copies."""
    rng = random.Random(9)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=4, n_random=30)
    model = Model(seqs, records, gts, two_hot=True)
    genome = Genome(fa)
    cohort = Cohort(path, genome)
    contig, length, center = "chr1", 48, 24
    n = len(seqs[contig])
    foci = random_foci(model, contig, rng, n_novel=10)
    start, end, blk = local_span(cohort, contig, -length, n + length)
    haps = Haplotypes.build(genome, contig, start, end, blk)
    focal = make_focal(blk, foci)
    h_n = 8
    for which in (0, 1, 2):
        v = np.repeat(np.arange(len(foci)), h_n)
        w = haps.windows(focal, v, np.tile(np.arange(h_n), len(foci)), np.full(v.size, which), length, center)
        w = w.reshape(-1, 2, length)
        x = two_hot_pairs(pair_codes(w[:, 0], w[:, 1]))
        for i in range(len(foci)):
            for s in range(4):
                c0 = expected(model, contig, foci[i], 2 * s, which, length, center)
                c1 = expected(model, contig, foci[i], 2 * s + 1, which, length, center)
                want = one_hot(encode(c0)) + one_hot(encode(c1))
                got = x[i * 4 + s]
                assert torch.equal(got, want)
                rc0, rc1 = (revcomp_codes(encode(c)).copy() for c in (c0, c1))
                assert torch.equal(revcomp_hot(got), one_hot(rc0) + one_hot(rc1))
    cohort.close()


# -- 6. the bulk path equals the piecewise one -------------------------------------------------------

@pytest.mark.parametrize("seed", [31, 32])
def test_fast_path_equals_piecewise(tmp_path, seqs, seed):
    """Every pair, whichever path windows() takes for it, equals the window built piece by piece."""
    rng = random.Random(seed)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=4, n_random=40, phased_frac=0.9)
    model = Model(seqs, records, gts, two_hot=False)
    genome = Genome(fa)
    cohort = Cohort(path, genome, two_hot=False)
    h_n = 8
    carried_over = 0
    for contig in seqs:
        n = len(seqs[contig])
        foci = random_foci(model, contig, rng, n_novel=15)
        for length, center in [(31, 15), (64, 32), (20, 3)]:
            start, end, blk = local_span(cohort, contig, -length - 8, n + length + 8)
            haps = Haplotypes.build(genome, contig, start, end, blk)
            focal = make_focal(blk, foci)
            v = np.repeat(np.arange(len(foci)), 3 * h_n)
            rows = np.tile(np.repeat(np.arange(h_n), 3), len(foci))
            which = np.tile(np.array([0, 1, 2]), len(foci) * h_n)
            got = haps.windows(focal, v, rows, which, length, center)
            for j in range(v.size):
                vi, h, w = int(v[j]), int(rows[j]), int(which[j])
                use_alt = w == 1 or (w == 2 and bool(focal.carries[vi, h]))
                slow = haps._piecewise(focal, vi, h, use_alt, length, center)
                assert slow.dtype == np.uint8 and slow.shape == (length,)
                assert decode(got[j]) == decode(slow), (contig, foci[vi], h, w, length, center)
                carried_over += bool(model.background_over(contig, h, foci[vi][0], len(foci[vi][1])))
    assert carried_over >= 20
    cohort.close()


def test_piecewise_by_hand(tmp_path):
    """Piecewise windows for copies with an insertion, a deletion and an MNV over the focal REF."""
    s = "ACGTTGCAAC" * 8
    other = lambda b: "A" if b != "A" else "C"
    rows = [(10, s[9], [s[9] + "CCC"], ["1|0", "0|0", "0|0"]),  # insertion before the focal site
            (40, s[39], [s[39] + "TT"], ["1|0", "0|0", "0|0"]),  # insertion at the focal site
            (39, s[38:43], [s[38]], ["0|0", "1|0", "0|0"]),  # deletion 0-based 39..42, over it
            (40, s[39:41], [other(s[39]) + other(s[40])], ["0|0", "0|0", "1|0"])]  # MNV from it
    rows.sort(key=lambda r: r[0])
    genome, cohort = _toy(tmp_path, s, rows)
    focus = (39, s[39:41], s[39])  # deletion of 0-based 40
    n, c = 25, 12
    start, end, blk = local_span(cohort, "chr1", 0, len(s))
    haps = Haplotypes.build(genome, "chr1", start, end, blk)
    focal = make_focal(blk, [focus])
    for h, before in [(0, s[:10] + "CCC" + s[10:39]), (2, s[:39]), (4, s[:39])]:
        # every record over the focal REF is left out; the copy's insertion before it stays
        for is_alt in (False, True):
            text = before + (s[39] if is_alt else s[39:41]) + s[41:]
            want = text[len(before) - c:len(before) - c + n]
            assert decode(haps._piecewise(focal, 0, h, is_alt, n, c)) == want, (h, is_alt)
            got = haps.windows(focal, np.array([0]), np.array([h]), np.array([int(is_alt)]), n, c)
            assert decode(got[0]) == want
    cohort.close()


# -- 5. indexed and unindexed files ----------------------------------------------------------------

def _same_block(a: Block, b: Block):
    assert a.pos0.tolist() == b.pos0.tolist()
    assert a.ref_len.tolist() == b.ref_len.tolist()
    assert a.keys == b.keys
    assert a.hap.tolist() == b.hap.tolist()
    assert a.raw.tolist() == b.raw.tolist()
    assert a.phased.tolist() == b.phased.tolist()
    for k in a.flags:
        assert a.flags[k].tolist() == b.flags[k].tolist(), k
    for x, y in zip(a.alleles, b.alleles):
        assert [None if c is None else c.tolist() for c in x] == [None if c is None else c.tolist() for c in y]


def _inside(model: Model, contig: str, start: int, end: int) -> list[int]:
    return [r.pos0 for r in model.on(contig) if r.pos0 >= start and r.end <= end]


def test_indexed_and_unindexed_blocks_agree(tmp_path, seqs):
    pysam = pytest.importorskip("pysam")
    rng = random.Random(12)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=4, n_random=50)
    model = Model(seqs, records, gts, two_hot=True)
    plain = tmp_path / "plain.vcf"
    shutil.copy(path, plain)
    gz = pysam.tabix_index(str(path), preset="vcf", force=True)
    genome = Genome(fa)
    flat = Cohort(plain, genome)
    assert not flat.indexed
    for chunk in (37, 150, 1 << 20):
        idx = Cohort(gz, genome, chunk=chunk)
        assert idx.indexed
        requests = []
        for contig in seqs:
            n = len(seqs[contig])
            requests += [(contig, a, min(a + w, n)) for a, w in [(0, 60), (20, 100), (90, 45), (200, 180),
                                                                 (210, 30), (500, 200), (900, 400)] if a < n]
        requests += [("chr1", 30, 400), ("chr1", 5, 1800), ("chr1", 1000, 1100), ("chr1", 50, 120),
                     ("chr3", 600, 700), ("chr1", 1500, 2000), ("chr3", 0, 300), ("chr3", 150, 700),
                     ("chrM", 0, 300), ("chr2", 0, 500), ("chr1", -30, 100), ("chrM", -5, 40), ("chr3", -50, -1)]
        for contig, a, b in requests:
            x, y = flat.block(contig, a, b), idx.block(contig, a, b)
            _same_block(x, y)
            assert y.pos0.tolist() == _inside(model, contig, a, b), (chunk, contig, a, b)
        # each record whose REF disagrees with the FASTA is reported once, however often it was read
        assert idx.ref_mismatch == flat.ref_mismatch == model.ref_mismatch == len(seqs)
        idx.close()
    flat.close()


def test_blocks_across_chunk_boundaries(tmp_path, seqs):
    """Blocks that cross the loaded stretch's end hold exactly the records inside [start, end)."""
    pysam = pytest.importorskip("pysam")
    rng = random.Random(13)
    fa = write_fasta(tmp_path / "g.fa", seqs)
    path, samples, records, gts = make_cohort(tmp_path, seqs, rng, n_samples=3, n_random=60)
    model = Model(seqs, records, gts, two_hot=True)
    gz = pysam.tabix_index(str(path), preset="vcf", force=True)
    genome = Genome(fa)
    for chunk in (10, 64):
        cohort = Cohort(gz, genome, chunk=chunk)
        for contig in ("chr1", "chr3"):
            n = len(seqs[contig])
            a = 0
            while a < n:  # overlapping steps forward, each starting inside the last
                b = min(a + rng.randint(5, 90), n)
                blk = cohort.block(contig, a, b)
                assert blk.pos0.tolist() == _inside(model, contig, a, b), (chunk, contig, a, b)
                want = [r for r in model.on(contig) if r.pos0 >= a and r.end <= b]
                assert blk.hap.tolist() == [r.hap for r in want]
                a = rng.randint(min(a + 10, b), b)
                if rng.random() < 0.1:  # a jump back
                    a = max(0, a - rng.randint(50, 400))
        cohort.close()


def test_indexed_reads_afresh_with_the_same_overlaps(tmp_path):
    """A jump reads afresh; alleles left out for overlapping earlier ones stay as with the whole file,
    also when the records that decide it lie before the jump's start."""
    pysam = pytest.importorskip("pysam")
    rng = random.Random(1)
    s = "".join(rng.choice(ACGT) for _ in range(300))
    o = lambda b: "A" if b != "A" else "C"
    rows = [(11, s[10:20], [s[10]], ["1|0", "0|1"]),  # deletion of 0-based 11..19
            (16, s[15:25], [s[15]], ["1|0", "1|1"]),  # overlaps it: left out on S0 copy 1, S1 copy 2
            (23, s[22], [o(s[22])], ["1|0", "1|0"]),  # so this stays on S0 copy 1; S1 copy 1 has 16..24
            (200, s[199], [o(s[199])], ["1|1", "0|1"])]
    genome, flat = _toy(tmp_path, s, rows)
    gz = pysam.tabix_index(str(tmp_path / "t.vcf"), preset="vcf", force=True)
    idx = Cohort(gz, genome, chunk=20)
    want = [[1, 0, 0, 0]]
    for a, b in [(21, 40), (190, 210), (22, 30), (-10, 60), (21, 40)]:
        x, y = flat.block("chr1", a, b), idx.block("chr1", a, b)
        _same_block(x, y)
        if (a, b) == (21, 40):
            assert y.hap.tolist() == want
    assert idx.block("chr1", -10, 60).pos0.tolist() == [10, 15, 22]
    flat.close()
    idx.close()


def test_cluster_span_never_begins_inside_a_deletion(tmp_path, fasta, genome_seqs):
    """A deletion that begins left of the span the windows need and ends inside it is part of the span
    (otherwise that copy's window would hold bases the sample has deleted)."""
    from varfx.personal_run import _cluster_span
    from cohort import write_cohort

    seq = genome_seqs["chr1"]
    ref = seq[1199:1320].upper()  # 0-based 1199..1319: a 120-bp deletion after base 1199
    vcf = write_cohort(tmp_path / "c.vcf", [("chr1", 1200, ref, [ref[0]])], ["A", "B"], [["0|1", "0|0"]])
    genome = Genome(fasta)
    cohort = Cohort(vcf, genome, two_hot=False)
    start, end, blk = _cluster_span(cohort, "chr1", 1300, 1400)  # the deletion crosses 1300
    assert start <= 1199 and end >= 1400
    assert list(blk.pos0) == [1199]
    haps = Haplotypes.build(genome, "chr1", start, end, blk)
    # copy 2 of sample A lacks the deleted bases: reference position 1350 sits 120 bases earlier on it
    assert haps.coord(np.array([1350, 1350]), np.array([0, 1])).tolist() == [1350 - start, 1350 - start - 120]
    genome.close()
