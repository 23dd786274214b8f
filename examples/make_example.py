#!/usr/bin/env python
"""Regenerate the varfx worked example.

Running ``python examples/make_example.py`` (re)writes, next to this script:

* ``genome.fa``      synthetic genome (chr1, chr2, chrM) with planted motifs;
* ``model.pt``       TorchScript CNN predicting motif-driven signal;
* ``model.json``     the model's metadata (input/output contract);
* ``variants.vcf``   ~300 VCFv4.2 records of many kinds (SNVs, indels, MNVs, ...);
* ``truth.tsv``      the class of every (record, ALT) pair.

It finishes with a self-check that scores the motif-breaking and neutral SNVs
with the exported model.  Everything is seeded: the genome, VCF and truth table
are produced by numpy alone and are bit-for-bit reproducible; the model is
trained with a fixed torch seed, a fixed thread count and deterministic
algorithms.  See ``docs/example.md`` for a description.
"""

from __future__ import annotations

import os

# Pin every thread pool to one thread *before* numpy/torch load: results then do
# not depend on the machine's core count (BLAS/OpenMP reduction order).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OUT_DIR = Path(__file__).resolve().parent
SEED = 20240521
NUM_THREADS = 1  # fixed (and single) thread count: reproducible and robust on shared CPUs

# --- genome -----------------------------------------------------------------
CONTIG_LENGTHS = {"chr1": 60_000, "chr2": 40_000, "chrM": 16_569}
MISSING_CONTIG = ("chr9", 138_394_717)  # declared in the VCF, absent from FASTA
FASTA_LINE_WIDTH = 60
COPIES_PER_10KB = 40  # planted copies of each motif per 10 kb
N_RUN = ("chr2", 25_000, 60)  # (contig, 0-based start, length) of an N run
IUPAC_SITE = ("chr1", 45_000, "R")  # (contig, 0-based position, code)

# --- motifs and tracks ------------------------------------------------------
MOTIF_A = "TGATAAGG"
MOTIF_A_RC = "CCTTATCA"
MOTIF_B = "CACGTG"  # palindromic
TRACK_MOTIFS = (MOTIF_A, MOTIF_A_RC, MOTIF_B)  # track index -> motif scanned
TRACKS = [
    {"id": "motifA_plus", "description": "planted motif A (TGATAAGG), + strand"},
    {"id": "motifA_minus", "description": "planted motif A, - strand"},
    {"id": "motifB", "description": "planted motif B (CACGTG), unstranded"},
]

# --- model contract ---------------------------------------------------------
INPUT_LENGTH = 1024
BIN_SIZE = 32
N_BINS = 16
BIN_OFFSET = 256
KERNEL_SIGMA = 16.0  # bp, width of the Gaussian spreading an occurrence over bins
SIGNAL_SCALE = 5.0  # target of a bin whose centre coincides with an occurrence

# --- training ---------------------------------------------------------------
TRAIN_STEPS = 1000
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
N_HELDOUT = 2000

# --- variants ---------------------------------------------------------------
N_MOTIF_BREAKING = 40
N_NEUTRAL = 200
N_INSERTIONS = 15
N_DELETIONS = 15
MNV_LENGTHS = (2, 2, 3, 3, 2)
MIN_EDGE_DISTANCE = 600  # bp from a contig end for motif-breaking/neutral SNVs
NEUTRAL_MOTIF_DISTANCE = 40  # bp from every motif copy for neutral SNVs
VARIANT_SPACING = 30  # minimum gap between any two records

BASES = "ACGT"
_CODE = np.full(256, 4, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _i
    _CODE[ord(_b.lower())] = _i


# =============================================================================
# sequence helpers
# =============================================================================
def encode(seq: str) -> np.ndarray:
    """Return integer codes (A=0, C=1, G=2, T=3, anything else=4) for ``seq``."""
    return _CODE[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]


def decode(codes: np.ndarray) -> str:
    """Inverse of :func:`encode` (code 4 becomes ``N``)."""
    return "".join("ACGTN"[c] for c in codes)


def one_hot(codes: np.ndarray) -> np.ndarray:
    """One-hot encode integer codes to float32 ``(..., 4)``; N is all zeros."""
    table = np.vstack([np.eye(4, dtype=np.float32), np.zeros((1, 4), np.float32)])
    return table[codes]


def find_occurrences(seq: str, motif: str) -> list[int]:
    """0-based starts of all (possibly overlapping) exact matches, case-insensitive."""
    return [m.start() for m in re.finditer(f"(?={motif})", seq.upper())]


def count_motifs(seq: str) -> int:
    """Total number of occurrences of the track motifs in ``seq``."""
    return sum(len(find_occurrences(seq, m)) for m in TRACK_MOTIFS)


# =============================================================================
# targets: motif occurrences -> binned signal
# =============================================================================
def _bin_kernel(motif_length: int, length: int = INPUT_LENGTH) -> np.ndarray:
    """Matrix (start positions x bins) with the Gaussian weight of an occurrence
    starting at each position for each output bin (distance of centres)."""
    centres = np.arange(length - motif_length + 1) + motif_length / 2.0
    bin_centres = BIN_OFFSET + BIN_SIZE * (np.arange(N_BINS) + 0.5)
    dist = centres[:, None] - bin_centres[None, :]
    return (SIGNAL_SCALE * np.exp(-0.5 * (dist / KERNEL_SIGMA) ** 2)).astype(np.float32)


_KERNELS = {len(m): _bin_kernel(len(m)) for m in TRACK_MOTIFS}


def motif_match_matrix(codes: np.ndarray, motif: str) -> np.ndarray:
    """Boolean ``(n, L - k + 1)``: does ``motif`` start at each position?"""
    k = len(motif)
    width = codes.shape[1] - k + 1
    hit = np.ones((codes.shape[0], width), dtype=bool)
    for i, base in enumerate(encode(motif)):
        hit &= codes[:, i : i + width] == base
    return hit


def motif_targets(codes: np.ndarray) -> np.ndarray:
    """Training target ``(n, N_BINS, 3)`` for integer-coded windows of INPUT_LENGTH.

    Each exact occurrence of a track's motif adds a Gaussian (sigma KERNEL_SIGMA)
    of the distance between its centre and the bin centre.  Because the motif of
    track 1 is the reverse complement of that of track 0 (and motif B is
    palindromic), reverse-complementing a window swaps tracks 0/1 and flips bins.
    """
    out = np.empty((codes.shape[0], N_BINS, len(TRACK_MOTIFS)), dtype=np.float32)
    for t, motif in enumerate(TRACK_MOTIFS):
        out[:, :, t] = motif_match_matrix(codes, motif).astype(np.float32) @ _KERNELS[len(motif)]
    return out


# =============================================================================
# synthetic training sequences
# =============================================================================
def _plant(rng: np.random.Generator, codes: np.ndarray, motif: np.ndarray,
           counts: np.ndarray, mutate: bool = False) -> None:
    """Write ``counts[i]`` copies of ``motif`` at random places of ``codes[i]``.

    With ``mutate`` every copy gets one substitution (a near-miss decoy).
    """
    k = len(motif)
    rows = np.repeat(np.arange(codes.shape[0]), counts)
    if rows.size == 0:
        return
    starts = rng.integers(0, codes.shape[1] - k + 1, size=rows.size)
    copies = np.tile(motif, (rows.size, 1))
    if mutate:
        j = rng.integers(0, k, size=rows.size)
        shift = rng.integers(1, 4, size=rows.size)
        copies[np.arange(rows.size), j] = (copies[np.arange(rows.size), j] + shift) % 4
    codes[rows[:, None], starts[:, None] + np.arange(k)] = copies


def sample_sequences(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` integer-coded sequences the way the genome is drawn.

    Uniform random background, motif A on either strand and motif B planted at
    0-2x the genome density, single-mismatch decoys of every motif, and
    occasionally N runs / N padding (as seen at contig ends).
    """
    length = INPUT_LENGTH
    codes = rng.integers(0, 4, size=(n, length), dtype=np.uint8)
    expected = rng.uniform(0.0, 2.0, size=n) * COPIES_PER_10KB * length / 10_000
    for motif in TRACK_MOTIFS:
        _plant(rng, codes, encode(motif), rng.poisson(1.0, size=n), mutate=True)
    for motif, share in ((MOTIF_A, 0.5), (MOTIF_A_RC, 0.5), (MOTIF_B, 1.0)):
        _plant(rng, codes, encode(motif), rng.poisson(expected * share))
    for i in np.flatnonzero(rng.random(n) < 0.1):  # internal N run
        start, run = rng.integers(0, length), rng.integers(1, 100)
        codes[i, start : start + run] = 4
    for i in np.flatnonzero(rng.random(n) < 0.1):  # contig-end padding
        cut = rng.integers(0, 500)
        if rng.random() < 0.5:
            codes[i, :cut] = 4
        else:
            codes[i, length - cut :] = 4
    return codes


# =============================================================================
# genome
# =============================================================================
@dataclass
class Genome:
    """Synthetic genome: sequences (soft-masked, may contain N/IUPAC) + planted copies."""

    seqs: dict[str, str]
    planted: dict[str, list[tuple[int, str]]]  # contig -> [(0-based start, motif)]
    excluded: dict[str, list[tuple[int, int]]]  # contig -> [(start, end)] N/IUPAC spans

    def upper(self, chrom: str) -> str:
        """Upper-cased sequence of ``chrom``."""
        return self.seqs[chrom].upper()


def _plant_contig(rng: np.random.Generator, codes: np.ndarray, blocked: np.ndarray,
                  n_copies: int) -> list[tuple[int, str]]:
    """Plant non-overlapping copies of motif A (random strand) and motif B."""
    planted = []
    jobs = [MOTIF_B] * n_copies + [None] * n_copies  # None: motif A, strand drawn below
    rng.shuffle(jobs)
    for job in jobs:
        motif = job or (MOTIF_A if rng.random() < 0.5 else MOTIF_A_RC)
        k = len(motif)
        while True:
            start = int(rng.integers(0, len(codes) - k + 1))
            if not blocked[max(0, start - 2) : start + k + 2].any():
                break
        codes[start : start + k] = encode(motif)
        blocked[start : start + k] = True
        planted.append((start, motif))
    return sorted(planted)


def make_genome(rng: np.random.Generator) -> Genome:
    """Random background, planted motifs, soft-masked stretches, one N run, one IUPAC base."""
    seqs, planted, excluded = {}, {}, {}
    for chrom, length in CONTIG_LENGTHS.items():
        codes = rng.integers(0, 4, size=length, dtype=np.uint8)
        blocked = np.zeros(length, dtype=bool)
        special = []  # (start, end, character) of non-ACGT stretches
        if chrom == N_RUN[0]:
            special.append((N_RUN[1], N_RUN[1] + N_RUN[2], "N"))
        if chrom == IUPAC_SITE[0]:
            special.append((IUPAC_SITE[1], IUPAC_SITE[1] + 1, IUPAC_SITE[2]))
        for start, end, _ in special:
            blocked[start - 50 : end + 50] = True
        n_copies = round(length / 10_000 * COPIES_PER_10KB)
        planted[chrom] = _plant_contig(rng, codes, blocked, n_copies)
        chars = np.array(list(decode(codes)))
        for start, end, char in special:
            chars[start:end] = char
        for _ in range(max(1, length // 15_000)):  # soft-masked (lower-case) stretches
            start = int(rng.integers(0, length - 2000))
            end = start + int(rng.integers(200, 2000))
            chars[start:end] = np.char.lower(chars[start:end])
        seqs[chrom] = "".join(chars)
        excluded[chrom] = [(start, end) for start, end, _ in special]
    return Genome(seqs, planted, excluded)


def write_fasta(genome: Genome, path: Path) -> None:
    """Write the genome as FASTA (line width 60); remove any stale .fai."""
    with open(path, "w") as fh:
        for chrom, seq in genome.seqs.items():
            fh.write(f">{chrom}\n")
            for i in range(0, len(seq), FASTA_LINE_WIDTH):
                fh.write(seq[i : i + FASTA_LINE_WIDTH] + "\n")
    Path(str(path) + ".fai").unlink(missing_ok=True)


# =============================================================================
# model
# =============================================================================
class MotifCNN(nn.Module):
    """Small CNN: one-hot (batch, 1024, 4) -> signal (batch, 16, 3).

    stem conv (k=15) -> max-pool 4 -> 4 residual dilated convs (k=3, dilation
    1, 2, 4, 8) -> average-pool 8 (32-bp bins) -> crop -> conv over bins
    (k=3, valid) -> softplus.  Only the central 768 bp of the input are used,
    which still leaves >= 100 bp of context on each side of the output region.
    """

    def __init__(self, channels: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.stem = nn.Conv1d(4, channels, kernel_size=15, padding=7)
        self.blocks = nn.ModuleList(
            [nn.Conv1d(channels, channels, kernel_size=3, padding=d, dilation=d) for d in dilations]
        )
        self.head = nn.Conv1d(channels, len(TRACK_MOTIFS), kernel_size=3)
        # input positions kept: 4 bins of context on each side of the output region
        self.crop_start = BIN_OFFSET - 4 * BIN_SIZE  # 128
        self.crop_end = BIN_OFFSET + (N_BINS + 4) * BIN_SIZE  # 896
        self.n_bins = N_BINS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, 4) -> (B, 4, L), keep input positions 128..896 (24 bins of 32 bp)
        h = x.transpose(1, 2)[:, :, self.crop_start : self.crop_end]
        h = F.max_pool1d(F.relu(self.stem(h)), 4)  # 192 positions at 4 bp
        for conv in self.blocks:
            h = h + F.relu(conv(h))
        h = F.avg_pool1d(h, 8)  # 24 bins of 32 bp; bin 4 starts at input 256
        h = h[:, :, 3 : 3 + self.n_bins + 2]  # 18 bins; the valid k=3 head gives 16
        y = F.softplus(self.head(h))
        return y.transpose(1, 2).float()


def count_multiply_adds(model: nn.Module) -> int:
    """Multiply-adds of all Conv1d layers for one input sequence."""
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        total += out.shape[-1] * mod.out_channels * (mod.in_channels // mod.groups) * mod.kernel_size[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv1d)]
    with torch.no_grad():
        model(torch.zeros(1, INPUT_LENGTH, 4))
    for h in handles:
        h.remove()
    return total


def pearson_per_track(pred: np.ndarray, target: np.ndarray) -> list[float]:
    """Pearson r between prediction and target for each track, over sequences x bins."""
    return [float(np.corrcoef(pred[..., t].ravel(), target[..., t].ravel())[0, 1])
            for t in range(pred.shape[-1])]


def predict(model, codes: np.ndarray, batch: int = 512) -> np.ndarray:
    """Run ``model`` on integer-coded windows and return numpy (n, bins, tracks)."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(codes), batch):
            outs.append(model(torch.from_numpy(one_hot(codes[i : i + batch]))).numpy())
    return np.concatenate(outs)


def train_model(rng: np.random.Generator, heldout: np.ndarray) -> MotifCNN:
    """Train MotifCNN on freshly sampled sequences (MSE loss, AdamW, cosine LR)."""
    model = MotifCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=TRAIN_STEPS,
                                                pct_start=0.1)
    heldout_y = motif_targets(heldout)
    t0 = time.time()
    for step in range(1, TRAIN_STEPS + 1):
        codes = sample_sequences(rng, BATCH_SIZE)
        x = torch.from_numpy(one_hot(codes))
        y = torch.from_numpy(motif_targets(codes))
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == TRAIN_STEPS:
            model.eval()
            r = pearson_per_track(predict(model, heldout), heldout_y)
            model.train()
            print(f"  step {step:5d}  loss {loss.item():.4f}  held-out r "
                  + " ".join(f"{v:.4f}" for v in r) + f"  ({time.time() - t0:.0f}s)")
    model.eval()
    return model


def export_model(model: MotifCNN, pt_path: Path, json_path: Path) -> torch.jit.ScriptModule:
    """Save as TorchScript + metadata JSON; reload and check fp32 and bf16 autocast."""
    scripted = torch.jit.script(model)
    scripted.save(str(pt_path))
    meta = {
        "input_length": INPUT_LENGTH,
        "encoding": "one-hot",
        "input_layout": "NLC",
        "output_bins": N_BINS,
        "bin_size": BIN_SIZE,
        "bin_offset": BIN_OFFSET,
        "tracks": TRACKS,
        "strand_pairs": [[0, 1]],
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")

    loaded = torch.jit.load(str(pt_path), map_location="cpu")
    x = torch.from_numpy(one_hot(sample_sequences(np.random.default_rng(0), 8)))
    with torch.no_grad():
        ref = loaded(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = loaded(x)
    assert ref.shape == (8, N_BINS, len(TRACKS)) and ref.dtype == torch.float32
    assert bool((ref >= 0).all()) and bool(torch.isfinite(low).all())
    print(f"  reloaded OK; bf16 autocast output dtype {low.dtype}, "
          f"max |bf16 - fp32| = {(low.float() - ref).abs().max().item():.3f}")
    return loaded


def reverse_complement_check(model, codes: np.ndarray) -> float:
    """Max |f(rc(x)) - swap/flip(f(x))| relative to the max output: RC consistency."""
    rc = np.where(codes == 4, 4, 3 - codes)[:, ::-1].copy()
    fwd, rev = predict(model, codes), predict(model, rc)
    mapped = rev[:, ::-1, :][:, :, [1, 0, 2]]
    return float(np.abs(fwd - mapped).max() / fwd.max())


# =============================================================================
# variants
# =============================================================================
@dataclass
class Record:
    """One VCF record; ``classes`` holds the truth class of each ALT."""

    chrom: str
    pos: int  # 1-based
    ref: str
    alts: list[str]
    classes: list[str]
    info: dict[str, object] = field(default_factory=dict)
    id: str = "."

    def vcf_line(self) -> str:
        info = ";".join(f"{k}={v}" for k, v in self.info.items()) or "."
        return "\t".join([self.chrom, str(self.pos), self.id, self.ref, ",".join(self.alts),
                          ".", "PASS", info])


class VariantDesigner:
    """Draws VCF records against a :class:`Genome`, keeping records apart."""

    def __init__(self, genome: Genome, rng: np.random.Generator):
        self.genome = genome
        self.rng = rng
        self.upper = {c: genome.upper(c) for c in genome.seqs}
        self.records: list[Record] = []
        self.taken = {c: np.zeros(len(s), dtype=bool) for c, s in genome.seqs.items()}
        self.near_motif = {}
        for chrom, seq in self.upper.items():
            near = np.zeros(len(seq), dtype=bool)
            for motif in TRACK_MOTIFS:
                for s in find_occurrences(seq, motif):
                    near[max(0, s - NEUTRAL_MOTIF_DISTANCE) : s + len(motif) + NEUTRAL_MOTIF_DISTANCE] = True
            self.near_motif[chrom] = near
            for start, end in genome.excluded[chrom]:  # keep variants away from N / IUPAC
                self.taken[chrom][max(0, start - MIN_EDGE_DISTANCE) : end + MIN_EDGE_DISTANCE] = True

    # ---- bookkeeping -------------------------------------------------------
    def _free(self, chrom: str, start: int, end: int) -> bool:
        """Is the 0-based span [start, end) at least VARIANT_SPACING from other records?"""
        lo, hi = start - VARIANT_SPACING, end + VARIANT_SPACING
        return lo >= 0 and hi <= len(self.upper[chrom]) and not self.taken[chrom][lo:hi].any()

    def _add(self, chrom: str, pos: int, ref: str, alts: list[str], classes: list[str],
             info: dict | None = None, span: int | None = None) -> None:
        start = pos - 1
        self.taken[chrom][start : start + (span or len(ref))] = True
        self.records.append(Record(chrom, pos, ref, alts, classes, info or {}))

    def _random_start(self, chrom: str, length: int, edge: int = 100) -> int:
        """Random free 0-based start of a span of ``length`` ACGT bases, ``edge`` from ends."""
        seq = self.upper[chrom]
        while True:
            start = int(self.rng.integers(edge, len(seq) - edge - length))
            if self._free(chrom, start, start + length) and set(seq[start : start + length]) <= set(BASES):
                return start

    def _other_base(self, base: str) -> str:
        return str(self.rng.choice([b for b in BASES if b != base]))

    def _pick_contig(self, contigs=("chr1", "chr2")) -> str:
        lengths = np.array([CONTIG_LENGTHS[c] for c in contigs], dtype=float)
        return str(self.rng.choice(contigs, p=lengths / lengths.sum()))

    def _motif_delta(self, chrom: str, start: int, alt: str) -> int:
        """Change in motif count caused by substituting ``alt`` at 0-based ``start``."""
        seq = self.upper[chrom]
        lo, hi = max(0, start - 10), start + len(alt) + 10
        local = seq[lo:hi]
        mutated = local[: start - lo] + alt + local[start - lo + len(alt) :]
        return count_motifs(mutated) - count_motifs(local)

    # ---- record kinds ------------------------------------------------------
    def add_motif_breaking(self, n: int, chrom_m: int = 1) -> None:
        """SNVs destroying a planted copy (>= 600 bp from contig ends), none created."""
        pools = {}
        for chrom, copies in self.genome.planted.items():
            seq = self.upper[chrom]
            pools[chrom] = [(s, m) for s, m in copies
                            if seq[s : s + len(m)] == m
                            and MIN_EDGE_DISTANCE <= s and s + len(m) <= len(seq) - MIN_EDGE_DISTANCE]
        wanted = ["chrM"] * chrom_m + [self._pick_contig() for _ in range(n - chrom_m)]
        motifs = [TRACK_MOTIFS[i % 3] for i in range(n)]
        for chrom, motif in zip(wanted, motifs):
            pool = [c for c in pools[chrom] if c[1] == motif] or pools[chrom]
            while True:
                start, m = pool[int(self.rng.integers(len(pool)))]
                p = start + int(self.rng.integers(len(m)))
                alt = self._other_base(self.upper[chrom][p])
                if self._free(chrom, start, start + len(m)) and self._motif_delta(chrom, p, alt) == -1:
                    break
            self._add(chrom, p + 1, self.upper[chrom][p], [alt], ["motif_breaking"], span=1)
            self.taken[chrom][start : start + len(m)] = True

    def add_neutral(self, n: int, chrom_m: int = 2) -> None:
        """SNVs >= 40 bp from every motif copy, >= 600 bp from contig ends, none created."""
        wanted = ["chrM"] * chrom_m + [self._pick_contig() for _ in range(n - chrom_m)]
        for chrom in wanted:
            while True:
                p = self._random_start(chrom, 1, edge=MIN_EDGE_DISTANCE)
                alt = self._other_base(self.upper[chrom][p])
                if not self.near_motif[chrom][p] and self._motif_delta(chrom, p, alt) == 0:
                    break
            self._add(chrom, p + 1, self.upper[chrom][p], [alt], ["neutral"])

    def add_indels(self, n_ins: int, n_del: int) -> None:
        """Insertions and deletions of 1-20 bp in VCF style (with the padding base)."""
        for i in range(n_ins + n_del):
            chrom = "chrM" if i in (0, n_ins) else self._pick_contig()
            size = int(self.rng.integers(1, 21))
            if i < n_ins:
                p = self._random_start(chrom, 1)
                pad = self.upper[chrom][p]
                ins = "".join(self.rng.choice(list(BASES), size=size))
                self._add(chrom, p + 1, pad, [pad + ins], ["other"])
            else:
                p = self._random_start(chrom, size + 1)
                ref = self.upper[chrom][p : p + size + 1]
                self._add(chrom, p + 1, ref, [ref[0]], ["other"])

    def add_mnvs_and_complex(self) -> None:
        """MNVs (every base changed) and two complex REF/ALT pairs."""
        for k in MNV_LENGTHS:
            chrom = self._pick_contig()
            p = self._random_start(chrom, k)
            ref = self.upper[chrom][p : p + k]
            self._add(chrom, p + 1, ref, ["".join(self._other_base(b) for b in ref)], ["other"])
        for ref_len, alt_len in ((3, 2), (2, 4)):
            chrom = self._pick_contig()
            p = self._random_start(chrom, ref_len)
            ref = self.upper[chrom][p : p + ref_len]
            alt = self._other_base(ref[0]) + "".join(self.rng.choice(list(BASES), size=alt_len - 1))
            self._add(chrom, p + 1, ref, [alt], ["other"])

    def add_special(self) -> None:
        """Multi-allelic, symbolic, star, edge, missing-contig and REF-mismatch records."""
        up = self.upper
        # multi-allelic with 2 ALTs: two SNV alleles
        p = self._random_start("chr1", 1)
        alts = [b for b in BASES if b != up["chr1"][p]][:2]
        self._add("chr1", p + 1, up["chr1"][p], alts, ["other"] * 2)
        # multi-allelic with 3 ALTs: two SNVs and a 1-bp deletion sharing a 2-bp REF
        p = self._random_start("chr2", 2)
        ref = up["chr2"][p : p + 2]
        alts = [b + ref[1] for b in BASES if b != ref[0]][:2] + [ref[0]]
        self._add("chr2", p + 1, ref, alts, ["other"] * 3)
        # symbolic deletion of 300 bp
        p = self._random_start("chr1", 301)
        self._add("chr1", p + 1, up["chr1"][p], ["<DEL>"], ["other"],
                  info={"SVTYPE": "DEL", "END": p + 1 + 300, "SVLEN": -300}, span=301)
        # a real ALT together with the spanning-deletion allele '*'
        p = self._random_start("chr2", 1)
        self._add("chr2", p + 1, up["chr2"][p], [self._other_base(up["chr2"][p]), "*"], ["other"] * 2)
        # SNVs whose 1024-bp windows run past a contig end
        p = int(self.rng.integers(10, 90))
        self._add("chr1", p + 1, up["chr1"][p], [self._other_base(up["chr1"][p])], ["other"])
        p = len(up["chr2"]) - int(self.rng.integers(10, 90))
        self._add("chr2", p + 1, up["chr2"][p], [self._other_base(up["chr2"][p])], ["other"])
        # record on a contig that is not in the FASTA
        self.records.append(Record(MISSING_CONTIG[0], 10_000, "A", ["G"], ["other"]))
        # REF deliberately different from the FASTA
        p = self._random_start("chr1", 1)
        wrong = self._other_base(up["chr1"][p])
        alt = str(self.rng.choice([b for b in BASES if b not in (wrong, up["chr1"][p])]))
        self._add("chr1", p + 1, wrong, [alt], ["other"])
        self.ref_mismatch = ("chr1", p + 1)

    def finish(self) -> list[Record]:
        """Sort records (contig order as in the header, then position) and assign IDs."""
        order = {c: i for i, c in enumerate([*CONTIG_LENGTHS, MISSING_CONTIG[0]])}
        self.records.sort(key=lambda r: (order[r.chrom], r.pos))
        for i, rec in enumerate(self.records, start=1):
            rec.id = f"v{i:04d}"
        return self.records


def design_variants(genome: Genome, rng: np.random.Generator) -> tuple[list[Record], tuple[str, int]]:
    """Draw all VCF records; return them sorted plus the (chrom, pos) of the REF mismatch."""
    d = VariantDesigner(genome, rng)
    d.add_special()  # first: these have the tightest placement constraints
    d.add_motif_breaking(N_MOTIF_BREAKING)
    d.add_neutral(N_NEUTRAL)
    d.add_indels(N_INSERTIONS, N_DELETIONS)
    d.add_mnvs_and_complex()
    return d.finish(), d.ref_mismatch


def write_vcf(records: list[Record], path: Path) -> None:
    """Write a VCFv4.2 file without samples."""
    header = [
        "##fileformat=VCFv4.2",
        "##source=varfx examples/make_example.py",
        "##reference=genome.fa",
        *(f"##contig=<ID={c},length={n}>" for c, n in [*CONTIG_LENGTHS.items(), MISSING_CONTIG]),
        '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type of structural variant">',
        '##INFO=<ID=END,Number=1,Type=Integer,Description="End position of the variant described in this record">',
        '##INFO=<ID=SVLEN,Number=.,Type=Integer,Description="Difference in length between REF and ALT alleles">',
        '##ALT=<ID=DEL,Description="Deletion">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(header) + "\n")
        for rec in records:
            fh.write(rec.vcf_line() + "\n")


def write_truth(records: list[Record], path: Path) -> None:
    """Write truth.tsv: one row per (record, ALT)."""
    with open(path, "w") as fh:
        fh.write("id\tchrom\tpos\tref\talt\tclass\n")
        for rec in records:
            for alt, cls in zip(rec.alts, rec.classes):
                fh.write(f"{rec.id}\t{rec.chrom}\t{rec.pos}\t{rec.ref}\t{alt}\t{cls}\n")


def verify_vcf(vcf_path: Path, fasta_path: Path, records: list[Record],
               ref_mismatch: tuple[str, int]) -> None:
    """Read the VCF back with cyvcf2 and check every REF against the FASTA with pyfaidx.

    pyfaidx writes a .fai next to the FASTA, so the check runs on a temporary copy.
    """
    from cyvcf2 import VCF
    from pyfaidx import Fasta

    with tempfile.TemporaryDirectory() as tmp:
        fa_copy = Path(tmp) / "genome.fa"
        shutil.copy(fasta_path, fa_copy)
        fasta = Fasta(str(fa_copy), sequence_always_upper=True)
        vcf = VCF(str(vcf_path))
        seen = []
        for v, rec in zip(vcf, records, strict=True):
            assert (v.CHROM, v.POS, v.ID, v.REF, v.ALT) == (rec.chrom, rec.pos, rec.id, rec.ref, rec.alts)
            if v.CHROM not in fasta:
                assert v.CHROM == MISSING_CONTIG[0]
            else:
                fa_ref = fasta[v.CHROM][v.POS - 1 : v.POS - 1 + len(v.REF)].seq
                assert (fa_ref == v.REF) != ((v.CHROM, v.POS) == ref_mismatch), (v.CHROM, v.POS)
            seen.append(v.ID)
        vcf.close()
        fasta.close()
    assert len(set(seen)) == len(seen) == len(records)
    print(f"  {vcf_path.name}: {len(records)} records read back with cyvcf2; REFs match the FASTA "
          f"(except the deliberate mismatch at {ref_mismatch[0]}:{ref_mismatch[1]})")


# =============================================================================
# self-check
# =============================================================================
def snv_windows(genome: Genome, records: list[Record]) -> tuple[np.ndarray, np.ndarray]:
    """REF and ALT windows (n, 1024) for SNVs; the variant base sits at index 512.

    0-based window start = (POS - 1) - 512; positions past contig ends are N.
    """
    contig_codes = {chrom: encode(seq) for chrom, seq in genome.seqs.items()}
    refs = np.full((len(records), INPUT_LENGTH), 4, dtype=np.uint8)
    for i, rec in enumerate(records):
        codes = contig_codes[rec.chrom]
        start = rec.pos - 1 - INPUT_LENGTH // 2
        lo, hi = max(0, start), min(len(codes), start + INPUT_LENGTH)
        refs[i, lo - start : hi - start] = codes[lo:hi]
    alts = refs.copy()
    alts[:, INPUT_LENGTH // 2] = [encode(r.alts[0])[0] for r in records]
    return refs, alts


def self_check(model, genome: Genome, records: list[Record]) -> dict:
    """Score motif-breaking vs neutral SNVs by max_track |sum_bins(alt) - sum_bins(ref)|."""
    groups = {cls: [r for r in records if r.classes == [cls]] for cls in ("motif_breaking", "neutral")}
    scores = {}
    for cls, recs in groups.items():
        ref, alt = snv_windows(genome, recs)
        diff = predict(model, alt).sum(axis=1) - predict(model, ref).sum(axis=1)
        scores[cls] = np.abs(diff).max(axis=1)
    mb, ne = scores["motif_breaking"], scores["neutral"]
    ranked = np.argsort(-np.concatenate([mb, ne]), kind="stable")
    in_top = int((ranked[: len(mb)] < len(mb)).sum())
    result = {
        "mean_motif_breaking": float(mb.mean()),
        "mean_neutral": float(ne.mean()),
        "min_motif_breaking": float(mb.min()),
        "max_neutral": float(ne.max()),
        "frac_above_all_neutral": float((mb > ne.max()).mean()),
        "motif_breaking_in_top_n": in_top,
        "n_motif_breaking": len(mb),
        "n_neutral": len(ne),
    }
    print(f"  motif_breaking (n={len(mb)}): mean score {result['mean_motif_breaking']:.3f}, "
          f"min {result['min_motif_breaking']:.3f}")
    print(f"  neutral        (n={len(ne)}): mean score {result['mean_neutral']:.4f}, "
          f"max {result['max_neutral']:.4f}")
    print(f"  fraction of motif-breaking SNVs above every neutral SNV: "
          f"{result['frac_above_all_neutral']:.3f}")
    print(f"  motif-breaking SNVs among the top {len(mb)} scores: {in_top}/{len(mb)}")
    return result


def genome_pearson(model, genome: Genome) -> list[float]:
    """Pearson r per track on windows tiling chr1 and chr2 (central 512 bp abutting)."""
    windows = []
    for chrom in ("chr1", "chr2"):
        codes = encode(genome.seqs[chrom])
        for start in range(0, len(codes) - INPUT_LENGTH + 1, N_BINS * BIN_SIZE):
            windows.append(codes[start : start + INPUT_LENGTH])
    windows = np.stack(windows)
    return pearson_per_track(predict(model, windows), motif_targets(windows))


# =============================================================================
# main
# =============================================================================
def configure_torch() -> None:
    """Seed torch and make it deterministic with a fixed thread count."""
    torch.manual_seed(SEED)
    torch.set_num_threads(NUM_THREADS)
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)


def main() -> None:
    t_start = time.time()
    configure_torch()
    genome_rng, train_rng, heldout_rng, variant_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(4)
    )

    print("genome")
    genome = make_genome(genome_rng)
    write_fasta(genome, OUT_DIR / "genome.fa")
    for chrom, seq in genome.seqs.items():
        counts = [len(find_occurrences(seq, m)) for m in TRACK_MOTIFS]
        print(f"  {chrom}: {len(seq)} bp, occurrences A+/A-/B = {counts}")

    print("variants")
    records, ref_mismatch = design_variants(genome, variant_rng)
    write_vcf(records, OUT_DIR / "variants.vcf")
    write_truth(records, OUT_DIR / "truth.tsv")
    verify_vcf(OUT_DIR / "variants.vcf", OUT_DIR / "genome.fa", records, ref_mismatch)

    print("model")
    heldout = sample_sequences(heldout_rng, N_HELDOUT)
    t0 = time.time()
    model = train_model(train_rng, heldout)
    print(f"  trained in {time.time() - t0:.0f}s; {count_multiply_adds(model):,} multiply-adds per sequence")
    loaded = export_model(model, OUT_DIR / "model.pt", OUT_DIR / "model.json")
    r_heldout = pearson_per_track(predict(loaded, heldout), motif_targets(heldout))
    r_genome = genome_pearson(loaded, genome)
    names = [t["id"] for t in TRACKS]
    print("  held-out synthetic r: " + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, r_heldout)))
    print("  genome windows     r: " + ", ".join(f"{n} {v:.4f}" for n, v in zip(names, r_genome)))
    print(f"  reverse-complement consistency: max deviation {reverse_complement_check(loaded, heldout):.3f}"
          " of max output")

    print("self-check")
    self_check(loaded, genome, records)
    print(f"done in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
