"""``varfx predict``: each sample's predicted tracks over BED regions (docs/personal.md, docs/formats.md).

A region's window is the model's input window centred on the region's midpoint (on each haplotype,
anchored at that reference position); the region must lie inside the window's output bins.  Per
region, sample (and copy with ``--haplotypes both``) and selected track, the run stores the sum of the
predicted track over the bins that overlap the region (``sum``), over all output bins (``total``),
and with ``--profile`` every bin (``profile``).  Without ``--genotypes`` the one "sample" is the
reference genome.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .errors import InputError, OptionError
from .genome import Genome
from .personal import Cohort, Haplotypes, parse_samples
from .personal_run import (CLUSTER_BYTES, HAPLOTYPE_MODES, PersonalSetup, _check_phase, _cluster_span,
                           _counts_report, _window_stretches, unique_rows)
from .prefetch import prefetch
from .run import ModelRun, check_out, sha256, work_unit
from .writers import STR, TextTable, _attr_value, append_rows, begin_h5, format_values, partial_path

REGION_SKIPS = {
    "unknown_contig": "the contig is not in the FASTA (after trying chr/no-chr and M/MT aliases)",
    "outside_contig": "the region runs past the end of the contig (a BED of another assembly?)",
    "region_outside_output": "the region does not fit inside the output bins of a window centred on it",
}


@dataclass
class Region:
    index: int  # 0-based line order among the BED's regions
    chrom: str
    contig: str | None
    start: int  # 0-based
    end: int
    name: str
    reason: str | None = None
    bins: tuple[int, int] = (0, 0)  # [first, last) output bins overlapping the region


def read_bed(path, resolve) -> list[Region]:
    """BED3+ (tab or space separated; ``track``/``browser``/``#`` lines skipped) -> regions."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"BED file not found: {path}")
    out = []
    opener = open
    if path.suffix == ".gz":
        import gzip
        opener = gzip.open
    with opener(path, "rt") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            parts = line.split()
            try:
                start, end = int(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                raise InputError(f"{path}:{n}: not a BED line (CHROM START END [NAME]): {line.strip()[:60]!r}")
            if start < 0 or end <= start:
                raise InputError(f"{path}:{n}: END must be greater than START (0-based, half-open): {start} {end}")
            name = parts[3] if len(parts) > 3 else f"{parts[0]}:{start}-{end}"
            out.append(Region(len(out), parts[0], resolve(parts[0]), start, end, name))
    return out


def place(regions: list[Region], geom, genome) -> None:
    """Mark each region's output bins, or why it cannot be predicted."""
    c, nb, bs, off = geom.center, geom.output_bins, geom.bin_size, geom.bin_offset
    for r in regions:
        if r.contig is None:
            r.reason = "unknown_contig"
            continue
        if r.end > genome.length(r.contig):  # BED: 0-based, end exclusive
            r.reason = "outside_contig"
            continue
        ws = (r.start + r.end) // 2 - c
        first = (r.start - ws - off) // bs
        last = -((-(r.end - ws - off)) // bs)
        if first < 0 or last > nb:
            r.reason = "region_outside_output"
            continue
        r.bins = (int(first), int(last))


@dataclass
class _RBatch:
    regions: list[Region]
    codes: np.ndarray | None = None


def _groups(todo: list[Region], span: int, size: int):
    """Consecutive regions (BED order) on one contig whose midpoints lie within ``span`` bp, at most ``size``."""
    i = 0
    while i < len(todo):
        first = todo[i]
        mid0 = (first.start + first.end) // 2
        j = i + 1
        while (j < len(todo) and j - i < size and todo[j].contig == first.contig
               and abs((todo[j].start + todo[j].end) // 2 - mid0) <= span):
            j += 1
        yield todo[i:j]
        i = j


def _prepare_regions(regions, genome, cohort, setup, geom, margin, unit):
    """Regions in BED order -> batches of windows (reference, or every sample's, built per cluster)."""
    L, c = geom.input_length, geom.center
    lx, cx = L + 2 * margin, c + margin
    todo = [r for r in regions if r.reason is None]
    if cohort is None:
        for part in _groups(todo, 1 << 62, unit):
            mids = np.array([(r.start + r.end) // 2 for r in part], dtype=np.int64)
            yield _RBatch(part, genome.windows(part[0].contig, mids - cx, lx))
        return
    h_n = 2 * len(setup.samples)
    budget = max(lx, CLUSTER_BYTES // max(1, h_n) - lx)
    per = max(1, unit // (setup.copies * len(setup.samples)))
    for cluster in _groups(todo, budget, 1 << 62):
        contig = cluster[0].contig
        mids = np.array([(r.start + r.end) // 2 for r in cluster], dtype=np.int64)
        start, end, blk = _cluster_span(cohort, contig, int(mids.min()) - cx, int(mids.max()) + lx - cx)
        near = cohort.count(contig, *_window_stretches(blk, mids, np.ones_like(mids), cx, lx))
        if setup.haplotypes is not None:
            _check_phase(near, setup.samples, contig)
        haps = Haplotypes.build(genome, contig, start, end, blk)
        for k in range(0, len(cluster), per):
            part = cluster[k:k + per]
            x = np.repeat(mids[k:k + per], h_n)
            rows = np.tile(np.arange(h_n), len(part))
            yield _RBatch(part, setup.combine(haps.cut(x, rows, lx, cx)))


class RegionH5Writer:
    """HDF5 for ``varfx predict`` (docs/formats.md): region identifiers, ``samples``, ``sum``, ``total``,
    optionally ``profile``, ``skipped/``, ``sample_counts/``; written under ``.partial``."""

    def __init__(self, path, track_ids, track_labels, samples, inner, bins, attrs, profile: bool, float32: bool):
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        self.f = f = h5py.File(self.tmp, "w")
        begin_h5(f, attrs, track_ids, track_labels)
        for name in ("chr", "name"):
            f.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(1024,))
        for name in ("start", "end", "region"):
            f.create_dataset(name, (0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        f.create_dataset("samples", data=np.array(samples, dtype=object), dtype=STR)
        t = len(track_ids)
        shape = (*inner, t)
        per = max(1, int(np.prod(shape)))
        rows = max(1, min(1024, (4 << 20) // (4 * per)))
        for name in ("sum", "total"):
            f.create_dataset(name, (0, *shape), maxshape=(None, *shape), dtype=np.float32, chunks=(rows, *shape))
        self.profile = profile
        if profile:
            pshape = (*inner, bins, t)
            prow = max(1, (4 << 20) // (2 * max(1, int(np.prod(pshape)))))
            f.create_dataset("profile", (0, *pshape), maxshape=(None, *pshape),
                             dtype=np.float32 if float32 else np.float16, chunks=(prow, *pshape))
        g = f.create_group("skipped")
        for name in ("chr", "name", "reason"):
            g.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(1024,))
        for name in ("start", "end", "region"):
            g.create_dataset(name, (0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))

    def write(self, regions: list[Region], block: dict):
        f = self.f
        append_rows(f["chr"], [r.chrom for r in regions])
        append_rows(f["name"], [r.name for r in regions])
        append_rows(f["start"], np.array([r.start for r in regions], dtype=np.int64))
        append_rows(f["end"], np.array([r.end for r in regions], dtype=np.int64))
        append_rows(f["region"], np.array([r.index for r in regions], dtype=np.int64))
        append_rows(f["sum"], block["sum"])
        append_rows(f["total"], block["total"])
        if self.profile:
            with np.errstate(over="ignore"):
                append_rows(f["profile"], block["profile"].astype(f["profile"].dtype))

    def write_skipped(self, regions: list[Region]):
        g = self.f["skipped"]
        append_rows(g["chr"], [r.chrom for r in regions])
        append_rows(g["name"], [r.name for r in regions])
        append_rows(g["reason"], [r.reason for r in regions])
        append_rows(g["start"], np.array([r.start for r in regions], dtype=np.int64))
        append_rows(g["end"], np.array([r.end for r in regions], dtype=np.int64))
        append_rows(g["region"], np.array([r.index for r in regions], dtype=np.int64))

    def finish(self, summary: dict, cohort: Cohort | None):
        if cohort is not None:
            from .personal import COUNTS
            g = self.f.create_group("sample_counts")
            for k, what in COUNTS.items():
                g.create_dataset(k, data=cohort.counts[k])
                g[k].attrs["description"] = what
            self.f.attrs["ref_mismatch_records"] = cohort.ref_mismatch
        for k, v in summary.items():
            self.f.attrs[k] = _attr_value(v)
        self.f.attrs["complete"] = True
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        try:
            self.f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class RegionTSVWriter(TextTable):
    """One row per (region, sample[, haplotype]): chrom start end name sample [haplotype], then
    ``sum:TRACK`` and ``total:TRACK`` columns."""

    def __init__(self, path, track_ids, samples, both: bool):
        self.samples, self.both = samples, both
        hap = ["haplotype"] if both else []
        super().__init__(path, ["chrom", "start", "end", "name", "sample", *hap,
                                *[f"sum:{t}" for t in track_ids], *[f"total:{t}" for t in track_ids]])

    def write(self, regions, block):
        t = block["sum"].shape[-1]
        vals = format_values(np.concatenate([block["sum"].reshape(-1, t), block["total"].reshape(-1, t)], 1))
        k = 2 if self.both else 1
        lines, i = [], 0
        for r in regions:
            for s in self.samples:
                for h in range(k):
                    hap = f"\t{h + 1}" if self.both else ""
                    lines.append(f"{r.chrom}\t{r.start}\t{r.end}\t{r.name}\t{s}{hap}\t" + "\t".join(vals[i]))
                    i += 1
        if lines:
            self.fh.write("\n".join(lines) + "\n")

    def write_skipped(self, regions):
        pass

    def finish(self, summary=None, cohort=None):
        super().finish(summary)


class RegionSkippedTSV(TextTable):
    """The regions not predicted, one row each: chrom start end name reason."""

    def __init__(self, path):
        super().__init__(path, ["chrom", "start", "end", "name", "reason"])

    def write_skipped(self, regions):
        self.fh.write("".join(f"{r.chrom}\t{r.start}\t{r.end}\t{r.name}\t{r.reason}\n" for r in regions))

    def write(self, regions, block):
        pass

    def finish(self, summary=None, cohort=None):
        super().finish(summary)


class RegionCountsTSV:
    """``NAME.samples.tsv`` beside a TSV without ``--out``: the per-sample genotype counts, written whole
    when the run finishes."""

    def __init__(self, path):
        self.path = Path(path)

    def write_skipped(self, regions):
        pass

    def write(self, regions, block):
        pass

    def finish(self, summary=None, cohort=None):
        from .personal import sample_counts_text
        tmp = partial_path(self.path)
        tmp.write_text(sample_counts_text(cohort.samples, cohort.counts))
        os.replace(tmp, self.path)

    def abort(self):
        pass


@dataclass
class PredictSummary:
    regions: int = 0
    predicted: int = 0
    skipped: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"regions read: {self.regions:,}", f"regions predicted: {self.predicted:,}",
                 f"regions skipped: {sum(self.skipped.values()):,}"]
        lines += [f"  {k}: {v:,}" for k, v in sorted(self.skipped.items())]
        lines += self.extra
        lines.append("wrote: " + ", ".join(str(p) for p in self.outputs))
        return "\n".join(lines)


def predict_regions(bed, fasta, backend, weights=None, out=None, tsv=None, *, genotypes=None, samples=None,
                    haplotypes: str | None = None, profile: bool = False, rc: bool = False, shifts=None,
                    tracks: str | None = None, batch_size: int = 64, device: str = "auto", precision: str = "fp32",
                    float32: bool = False, quiet: bool = True, **backend_options) -> PredictSummary:
    """Predicted tracks over BED regions, per sample of a cohort (or for the reference)."""
    t0 = time.perf_counter()
    if out is None and tsv is None:
        raise OptionError("nothing to write: give --out predictions.h5 (and/or --tsv)")
    if genotypes is None and (samples is not None or haplotypes is not None):
        raise OptionError(f"{'--samples' if samples is not None else '--haplotypes'} needs --genotypes COHORT.vcf.gz")
    if haplotypes is not None and haplotypes not in HAPLOTYPE_MODES:
        raise OptionError(f"--haplotypes {haplotypes!r} is not one of {', '.join(HAPLOTYPE_MODES)}")
    out, tsv = check_out(out, "--out"), check_out(tsv, "--tsv")
    if out is not None and tsv is not None and out.resolve() == tsv.resolve():
        raise OptionError("--out and --tsv must be different files")
    sample_list = parse_samples(samples)
    genome = Genome(fasta)
    mr = cohort = None
    writers = []
    ahead = None
    summary = PredictSummary()
    try:
        mr = ModelRun(backend, weights, backend_options, None, tracks, rc, shifts, precision, batch_size, device, 1.0)
        two_hot = mr.model.encoding == "two-hot"
        if two_hot and haplotypes is not None:
            raise OptionError(f"--haplotypes is for one-hot backends; {mr.model.name} reads both copies at once "
                              "(two-hot)")
        setup = None
        if genotypes is not None:
            cohort = Cohort(genotypes, genome, sample_list, two_hot=two_hot)
            setup = PersonalSetup(cohort, two_hot, haplotypes, False)
            mr.predictor.paired = two_hot
            names = cohort.samples
        else:
            names = ["reference"]
        geom = mr.geom
        regions = read_bed(bed, genome.resolve)
        place(regions, geom, genome)
        both = setup is not None and setup.haplotypes == "both"
        inner = (len(names), 2) if both else (len(names),)
        attrs = {"varfx_version": __version__, **mr.attrs(), "bed": str(bed), "bed_sha256": sha256(Path(bed)),
                 "fasta": str(genome.path), "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")),
                 "anchor": "region midpoint (start + end) // 2 at the window centre index",
                 "samples": names}
        if cohort is not None:
            attrs.update({"genotypes": str(genotypes), "genotypes_sha256": sha256(Path(genotypes)),
                          "haplotypes": setup.haplotypes or "two-hot"})
        if out is not None:
            writers.append(RegionH5Writer(out, mr.track_ids, mr.track_labels, names, inner, geom.output_bins, attrs,
                                          profile, float32))
        if tsv is not None:
            writers.append(RegionTSVWriter(tsv, mr.track_ids, names, both))
            if out is None:  # skipped regions and genotype counts are written somewhere
                writers.append(RegionSkippedTSV(tsv.with_name(tsv.name.removesuffix(".tsv") + ".skipped.tsv")))
                if cohort is not None:
                    writers.append(RegionCountsTSV(tsv.with_name(tsv.name.removesuffix(".tsv") + ".samples.tsv")))
        skipped = [r for r in regions if r.reason is not None]
        for r in skipped:
            summary.skipped[r.reason] = summary.skipped.get(r.reason, 0) + 1
        for w in writers:
            if skipped:
                w.write_skipped(skipped)
        summary.regions = len(regions)
        pred = mr.predictor
        copies = setup.copies if setup is not None else 1
        unit = max(work_unit(batch_size, geom.input_length) // pred.members_per_window, copies * len(names))
        ahead = prefetch(_prepare_regions(regions, genome, cohort, setup, geom, pred.margin, unit), depth=2)
        bar = tqdm(unit=" regions", disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        nb = geom.output_bins
        for batch in ahead:
            if cohort is None:  # reference windows of distinct regions: nothing to share
                y = pred.predict_windows(batch.codes)
            else:  # samples with the same alleles nearby share a window: predicted once
                uniq, inv = unique_rows(batch.codes)
                y = pred.predict_windows(uniq)[torch.as_tensor(inv, device=mr.device)]
            if mr.slice_out:
                y = y.index_select(2, mr.out_cols)
            y = y.reshape(len(batch.regions), len(names), copies, *y.shape[1:])  # (R, S, copies, B, T)
            if setup is not None and setup.haplotypes == "mean":
                y = y.mean(2, keepdim=True)
            if not both:
                y = y[:, :, 0]
            sel = torch.zeros(len(batch.regions), nb, device=y.device)
            for i, r in enumerate(batch.regions):
                sel[i, r.bins[0]:r.bins[1]] = 1
            shape = (len(batch.regions),) + (1,) * (y.dim() - 3) + (nb, 1)
            block = {"sum": (y * sel.view(shape)).sum(-2).cpu().numpy(), "total": y.sum(-2).cpu().numpy()}
            if profile:
                block["profile"] = y.cpu().numpy()
            for w in writers:
                w.write(batch.regions, block)
            bar.update(len(batch.regions))
        bar.close()
        done = [r for r in regions if r.reason is None]
        summary.predicted = len(done)
        summary.seconds = time.perf_counter() - t0
        final = {"regions": summary.regions, "regions_predicted": summary.predicted,
                 "regions_skipped_by_reason": summary.skipped, "seconds": round(summary.seconds, 3)}
        if cohort is not None:  # records left out for a REF mismatch, among those the windows read
            cohort.ref_mismatch = cohort.ref_mismatch_counted
        for w in writers:
            w.finish(final, cohort)
            summary.outputs.append(w.path)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        if ahead is not None:
            ahead.close()
        for part in (cohort, genome, mr):
            if part is not None:
                part.close()
    if cohort is not None:
        summary.extra.extend(_counts_report(cohort))
    return summary
