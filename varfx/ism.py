"""``varfx ism``: in-silico saturation mutagenesis of a region (docs/ism.md).

Every base of a region (1-based, inclusive, as in a VCF) is changed to each of the three other
bases, and each of those SNVs is scored exactly as ``varfx score`` scores an SNV, in one window:

* **window**: the model's input window with the region's centre base at the window's centre index
  ``c = L // 2``.  The centre base is the region's middle base, the right of the two middle ones for
  an even length (the convention of the window itself): ``centre = start + n // 2`` for ``n`` bases.
  The window (and every shifted one, ``--shifts``) must hold the whole region, so ``n ≤ L − 2·max|shift|``.
* **bins**: ``--bins`` as in ``varfx score``, read around the window centre: ``variant:M`` sums
  the bins overlapping ``[c − M, c + 1 + M)``, the bins ``varfx score`` sums for an SNV at the centre
  base; every mutation of the region is summed over those same bins (so the values compare).
* **statistics**: ``varfx.scores`` (``--stat``), REF against ALT, through :class:`varfx.run.ModelRun`.

The REF window is predicted once; ALT windows go through the predictor in chunks, with their
changed spans so that a backend's incremental ALT pass (Enformer) is used (it keeps the REF
window's conv tower, which it splices ALT changes into, from the first chunk to the last).  A REF
base that is not A, C, G or T (N, IUPAC codes) is not mutated: its four entries stay NaN and it is
listed in ``skipped`` with the reason ``ref_not_acgt``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from . import __version__
from .backends import Backend, backend_class
from .encoding import ALPHABET, N_CODE, decode
from .errors import InputError, OptionError
from .genome import Genome
from .results import open_complete, strings
from .run import ModelRun, check_out, sha256, work_unit
from .variants import parse_region
from .windows import BinSelection, align_bins
from .writers import STR, _attr_value, atomic_path, begin_h5, format_values

OUTPUT_KIND = "ism"
SKIP_REASON = "ref_not_acgt"


@dataclass
class IsmRegion:
    """A region placed in a window: 1-based inclusive [start, end] on ``contig``, centre base ``center``."""

    chrom: str  # as given
    contig: str  # the FASTA's name
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def center(self) -> int:
        """1-based position of the base put at the window centre index."""
        return self.start + self.length // 2

    def describe(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"


@dataclass
class IsmResult:
    """An ISM file read back: ``stats[name]`` is (L, 4, T) (profile statistics: (L, 4)), bases A, C, G, T,
    NaN at each REF base and at skipped positions."""

    chrom: str
    start: int
    end: int
    ref: str
    positions: np.ndarray
    stats: dict[str, np.ndarray]
    track_ids: list[str]
    track_labels: list[str]
    skipped: dict[str, np.ndarray]
    settings: dict


@dataclass
class IsmSummary:
    region: str = ""
    positions: int = 0
    mutations: int = 0
    skipped: dict = field(default_factory=dict)
    ref_passes: int = 0
    outputs: list = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"region {self.region}: {self.positions:,} positions",
                 f"mutations scored: {self.mutations:,}",
                 f"positions skipped: {sum(self.skipped.values()):,}"]
        for reason, n in self.skipped.items():
            lines.append(f"  {reason}: {n:,} (REF is not A, C, G or T; their values are NaN)")
        lines.append("wrote: " + ", ".join(str(p) for p in self.outputs))
        return "\n".join(lines)


def resolve_region(text: str, genome: Genome) -> IsmRegion:
    """``chr:start-end`` (or ``chr:pos``) -> an :class:`IsmRegion` checked against the FASTA."""
    chrom, start, end = parse_region(text, known=lambda name: genome.resolve(name) is not None)
    if start is None:
        raise OptionError(f"--region {text!r} needs positions: CHROM:START-END (1-based, inclusive), e.g. chr1:1000-1020")
    end = start if end is None else end
    if start < 1:
        raise OptionError(f"--region {text!r}: positions are 1-based (the first base is 1)")
    contig = genome.resolve(chrom)
    if contig is None:
        shown = ", ".join(genome.names[:5]) + (", …" if len(genome.names) > 5 else "")
        raise InputError(f"--region {text!r}: contig {chrom} is not in {genome.path} (it has {shown})")
    clen = genome.length(contig)
    if end > clen:
        raise InputError(f"--region {text!r} runs past the end of {chrom} ({clen:,} bp)")
    return IsmRegion(chrom, contig, start, end)


def window_layout(region: IsmRegion, geom, margin: int) -> tuple[int, int]:
    """(i0, window start): the region's first base at window index i0; the unshifted window's first
    base at 0-based genome position ``window start``.  A one-line error when the region does not fit."""
    L, c = geom.input_length, geom.center
    n = region.length
    i0 = c - n // 2
    i1 = i0 + n - 1
    if i0 < margin or i1 > L - 1 - margin:
        most = L - 2 * margin
        shifts = f" less 2 × max|shift| ({margin})" if margin else ""
        raise OptionError(f"--region {region.describe()} ({n:,} bp) does not fit in the model's {L:,}-bp window"
                          f"{shifts}: give at most {most:,} bp")
    return i0, region.center - 1 - c


def mutations(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For region base codes, the (position index, ALT base code) of every SNV, bases in A, C, G, T order;
    positions whose REF is N get none."""
    k = np.repeat(np.arange(codes.size), 4)
    b = np.tile(np.arange(4), codes.size)
    keep = (codes[k] != b) & (codes[k] < N_CODE)
    return k[keep], b[keep].astype(np.uint8)


def saturation_mutagenesis(region: str, fasta, backend: str | Backend, weights=None, out=None, tsv=None, *,
                           stats=None, bins: str | None = None, tracks: str | None = None, rc: bool = False,
                           shifts=None, pseudocount: float = 1.0, batch_size: int = 64, device: str = "auto",
                           precision: str = "fp32", quiet: bool = True, short_contigs: str = "error",
                           **backend_options) -> IsmSummary:
    """Score every SNV of ``region`` with a model; write ``out`` (HDF5) and optionally ``tsv`` (long).

    See the module docstring and docs/ism.md."""
    t0 = time.perf_counter()
    if isinstance(backend, str):
        cls = backend_class(backend)
        if cls.score_vcf is not None:
            raise OptionError(f"varfx ism does not work with --backend {backend} (it scores variants its own "
                              "way): run `varfx score` on a VCF of the SNVs instead")
        bins = bins or cls.default_bins
    elif bins is None:
        bins = backend.default_bins
    if out is None:
        raise OptionError("give --out ism.h5 (the TSV is optional)")
    if pseudocount < 0:
        raise OptionError("--pseudocount must be ≥ 0")
    if short_contigs not in ("error", "pad"):
        raise OptionError(f"--short-contigs {short_contigs!r} is not one of error, pad")
    out, tsv = check_out(out, "--out"), check_out(tsv, "--tsv")
    if tsv is not None and out.resolve() == tsv.resolve():
        raise OptionError("--out and --tsv must be different files")
    sel = BinSelection.parse(bins)
    genome = Genome(fasta)
    mr = None
    try:
        reg = resolve_region(region, genome)
        mr = ModelRun(backend, weights, backend_options, stats, tracks, rc, shifts, precision, batch_size, device,
                      pseudocount)
        geom, predictor = mr.geom, mr.predictor
        sel.check(geom)
        clen = genome.length(reg.contig)
        if clen < geom.input_length and short_contigs == "error":
            raise OptionError(f"contig {reg.chrom} ({clen:,} bp) is shorter than the model's {geom.input_length:,}-bp "
                              "window: pass --short-contigs pad to score on an N-padded window")
        m = predictor.margin
        i0, wstart = window_layout(reg, geom, m)
        lx = geom.input_length + 2 * m
        ref = genome.windows(reg.contig, np.array([wstart - m], dtype=np.int64), lx)  # (1, Lx)
        n = reg.length
        codes = ref[0, m + i0: m + i0 + n].copy()
        pos_k, alt_b = mutations(codes)
        skipped_pos = np.flatnonzero(codes >= N_CODE)
        values = _score_all(mr, ref, i0, pos_k, alt_b, sel, n, quiet)

        attrs = {
            "varfx_version": __version__,
            "varfx_output": OUTPUT_KIND,
            **mr.attrs(),
            "fasta": str(genome.path),
            "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")),
            "region": reg.describe(),
            "chrom": reg.chrom,
            "contig": reg.contig,
            "start": reg.start,
            "end": reg.end,
            "center": reg.center,
            "window_start": int(wstart),
            "bins": sel.describe(),
            "bins_anchor": "window centre index (the region's centre base)",
            "alphabet": ALPHABET,
            "short_contigs": short_contigs,
        }
        summary = IsmSummary(region=reg.describe(), positions=n, mutations=int(pos_k.size),
                             skipped={SKIP_REASON: int(skipped_pos.size)} if skipped_pos.size else {})
        summary.ref_passes = values.pop("_ref_passes")
        final = {"positions": n, "mutations_scored": summary.mutations, "positions_skipped": int(skipped_pos.size),
                 "seconds": round(time.perf_counter() - t0, 3)}
        write_ism_h5(out, reg, codes, values, mr, attrs, final, skipped_pos)
        summary.outputs.append(out)
        if tsv is not None:
            write_ism_tsv(tsv, reg, codes, values, mr, pos_k, alt_b)
            summary.outputs.append(tsv)
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        genome.close()
        if mr is not None:
            mr.close()


def _score_all(mr: ModelRun, ref: np.ndarray, i0: int, pos_k: np.ndarray, alt_b: np.ndarray, sel: BinSelection,
               n: int, quiet: bool) -> dict[str, np.ndarray]:
    """Every mutation's statistics -> {stat: (n, 4, T) or (n, 4)} float32, NaN where not scored."""
    geom, predictor = mr.geom, mr.predictor
    m = predictor.margin
    one = np.ones(1, dtype=np.int64)
    zero = np.zeros(1, dtype=np.int64)
    bins1 = align_bins(geom, sel, one, zero)  # an SNV at the window centre: the same bins for every mutation
    all1 = align_bins(geom, BinSelection("all"), one, zero) if mr.prof_stats else None
    n_tracks = len(mr.chosen)
    values = {s: np.full((n, 4, n_tracks), np.nan, dtype=np.float32) for s in mr.track_stats}
    values.update({s: np.full((n, 4), np.nan, dtype=np.float32) for s in mr.prof_stats})
    per = max(1, work_unit(predictor.batch_size, geom.input_length) // predictor.members_per_window)
    incremental = getattr(mr.model, "incremental", False)
    ref_pred = None
    passes = 0
    bar = tqdm(total=int(pos_k.size), unit=" mutations", disable=quiet, file=sys.stderr, dynamic_ncols=True,
               mininterval=0.5)
    for a in range(0, pos_k.size, per):
        k, b = pos_k[a:a + per], alt_b[a:a + per]
        v = k.size
        alt = np.repeat(ref, v, axis=0)
        alt[np.arange(v), m + i0 + k] = b
        lo = (i0 + k).astype(np.int64)  # changed span in the unshifted window, as score_vcf gives it
        rows = np.zeros(v, dtype=np.int64)
        if ref_pred is None or incremental:
            rp, alt_pred = predictor(ref, alt, rows, (lo, lo + 1))
            passes += 1
            if ref_pred is None:
                ref_pred = rp
        else:
            alt_pred = predictor.predict_windows(alt)
        rep = lambda t: None if t is None else tuple(np.repeat(x, v, axis=0) for x in t)  # noqa: E731
        res = mr.scores(ref_pred, alt_pred, rows, rep(bins1), rep(all1))
        for s, val in res.items():
            values[s][k, b] = val
        bar.update(v)
    bar.close()
    values["_ref_passes"] = passes
    return values


def write_ism_h5(path: Path, reg: IsmRegion, codes: np.ndarray, values: dict, mr: ModelRun, attrs: dict,
                 final: dict, skipped_pos: np.ndarray) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        begin_h5(f, attrs, mr.track_ids, mr.track_labels)
        f.create_dataset("ref", data=decode(codes), dtype=STR)
        f.create_dataset("ref_code", data=codes.astype(np.uint8))
        f.create_dataset("positions", data=np.arange(reg.start, reg.end + 1, dtype=np.int64))
        for s, val in values.items():
            ds = f.create_dataset(s, data=val)
            ds.attrs["axes"] = "position, base (A C G T), track" if val.ndim == 3 else "position, base (A C G T)"
        g = f.create_group("skipped")
        g.create_dataset("pos", data=(reg.start + skipped_pos).astype(np.int64))
        g.create_dataset("reason", data=np.array([SKIP_REASON] * skipped_pos.size, dtype=object), dtype=STR)
        for k, v in final.items():
            f.attrs[k] = _attr_value(v)
        f.attrs["complete"] = True


def write_ism_tsv(path: Path, reg: IsmRegion, codes: np.ndarray, values: dict, mr: ModelRun,
                  pos_k: np.ndarray, alt_b: np.ndarray) -> None:
    """Long format: ``chrom pos ref alt track stat value``, one row per scored mutation, statistic and track
    (profile statistics: track ``*``), in position, ALT (A, C, G, T), statistic, track order."""
    text = {s: format_values(v[pos_k, alt_b]) for s, v in values.items()}
    with atomic_path(path) as tmp, open(tmp, "w", newline="\n") as fh:
        fh.write("chrom\tpos\tref\talt\ttrack\tstat\tvalue\n")
        for j, (k, b) in enumerate(zip(pos_k.tolist(), alt_b.tolist())):
            key = f"{reg.chrom}\t{reg.start + k}\t{ALPHABET[codes[k]]}\t{ALPHABET[b]}"
            lines = []
            for s, txt in text.items():
                if txt.ndim == 2:
                    lines.extend(f"{key}\t{t}\t{s}\t{x}" for t, x in zip(mr.track_ids, txt[j]))
                else:
                    lines.append(f"{key}\t*\t{s}\t{txt[j]}")
            fh.write("\n".join(lines) + "\n")


def read_ism(path) -> IsmResult:
    """Read an ``varfx ism`` output back."""
    with open_complete(path) as f:
        if f.attrs.get("varfx_output", "") != OUTPUT_KIND:
            raise InputError(f"{path} is not a `varfx ism` output (no attribute varfx_output=ism)")
        settings = json.loads(f.attrs["settings"])
        stats = {s: f[s][:] for s in settings["stats"] if s in f}
        ref = f["ref"][()]
        return IsmResult(chrom=settings["chrom"], start=int(settings["start"]), end=int(settings["end"]),
                         ref=ref.decode() if isinstance(ref, bytes) else str(ref),
                         positions=f["positions"][:], stats=stats, track_ids=strings(f["target_ids"]),
                         track_labels=strings(f["target_labels"]),
                         skipped={"pos": f["skipped/pos"][:], "reason": np.array(strings(f["skipped/reason"]))},
                         settings=settings)
