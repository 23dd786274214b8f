"""Wiring one scoring run: reader → checks → windows → batches → model → statistics → writers."""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .backends import Backend, backend_class, load_backend
from .errors import OptionError, VarfxError
from .genome import Genome
from .predict import Predictor, parse_shifts, resolve_device
from .scores import (DEFAULT_STATS, PROFILE_STATS, STATS, WHOLE_STATS, Aligned, parse_stats, profile_stats,
                     variant_stats)
from .tracks import select_tracks, strand_permutation, with_strand_partners
from .variants import Site, VariantReader
from .prefetch import WorkerInfo, prefetch, worker_batches
from .windows import (INDEL_ALIGNMENT, BinSelection, WindowBatch, align_bins, build_windows, check_short_contigs,
                      check_sites)
from .blocks import (BLOCK_LINE, BLOCK_RECORDS, END_LINE, PARTS, VOLATILE, Staging, finished_run, parse_shard,
                     shard_line)
from .writers import (GeneTSVWriter, H5Writer, SkippedTSVWriter, TSVWriter, VariantRows, check_not_inputs,
                      check_out)

REF_POLICIES = ("skip", "error")
_RECORD, _ALTS = attrgetter("record"), attrgetter("alts")
SHORT_CONTIG_POLICIES = ("error", "skip", "pad")


@dataclass
class RunSummary:
    """What a run read, scored and skipped."""

    records_read: int = 0
    variants: int = 0
    scored: int = 0
    skipped: Counter = field(default_factory=Counter)
    float16_overflow: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    seconds: float = 0.0
    extra: list = field(default_factory=list)  # more report lines (e.g. genotype counts)
    kept: bool = False  # --resume found the outputs of a finished run of the same command: nothing scored

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def report(self) -> str:
        lines = [f"records read: {self.records_read:,}",
                 f"variants (ALT alleles): {self.variants:,}",
                 f"variants scored: {self.scored:,}",
                 f"variants skipped: {self.skipped_total:,}"]
        for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason}: {n:,}")
        over = {s: n for s, n in self.float16_overflow.items() if n}
        if over:
            lines.append("values beyond float16 range (stored as inf; rerun with --float32 to keep them): "
                         + ", ".join(f"{s} {n:,}" for s, n in over.items()))
        if self.records_read == 0:
            lines.append("the VCF has no records: the outputs are valid but empty")
        lines.extend(self.extra)
        if self.kept:
            lines.append("already complete: the outputs hold a finished run of this command (same settings and "
                         "inputs); nothing was scored, they are left as they are: " + ", ".join(map(str, self.outputs)))
        else:
            lines.append("wrote: " + ", ".join(str(p) for p in self.outputs))
        return "\n".join(lines)


def sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


class RowBuffer:
    """Accumulates variant identifiers (and scores) until written in a chunk."""

    def __init__(self):
        self.clear()

    def clear(self):
        self.record, self.alt_index, self.chrom, self.pos, self.id, self.ref, self.alt = ([] for _ in range(7))
        self.reason, self.scores = [], []

    def add(self, site: Site, alt_index: int, alt: str, reason: str | None = None):
        self.record.append(site.record)
        self.alt_index.append(alt_index)
        self.chrom.append(site.chrom)
        self.pos.append(site.pos)
        self.id.append(site.id)
        self.ref.append(site.ref)
        self.alt.append(alt)
        if reason is not None:
            self.reason.append(reason)

    def __len__(self):
        return len(self.chrom)

    def rows(self) -> VariantRows:
        return VariantRows(np.asarray(self.record, dtype=np.int64), np.asarray(self.alt_index, dtype=np.int32),
                           self.chrom, np.asarray(self.pos, dtype=np.int64), self.id, self.ref, self.alt)


@dataclass
class _Batch:
    """Sites in input order (some fully skipped) and, if any ALT is to be scored, their windows."""

    sites: list[Site]
    block: int = 0  # the block of records the sites belong to (varfx.blocks)
    windows: WindowBatch | None = None
    bins: tuple | None = None  # (ref_bins, alt_bins, mask) from align_bins
    all_bins: tuple | None = None  # the same over every bin, for profile statistics


@contextlib.contextmanager
def fewer_collections(threshold: int = 20000):
    """Python's cyclic garbage collector, tuned for a scoring loop and restored afterwards.

    A run allocates a few small objects per variant (sites, tuples) and frees them a unit later;
    with the default threshold (700) the collector runs every few hundred variants and scans the
    large heap that torch and pandas leave behind.  Freezing what exists before the loop and
    collecting the youngest generation every ``threshold`` allocations made the input path ~40%
    faster (docs/performance.md); nothing in the loop makes reference cycles worth collecting sooner.
    """
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def work_unit(batch_size: int, input_length: int) -> int:
    """Sequences prepared and reduced together: whole forward batches, about 1 Mbp of windows
    (1,024 1-kb windows; for 196-kb windows just one forward batch)."""
    per = max(1, (1 << 20) // input_length)
    return max(1, -(-per // batch_size)) * batch_size


def unit_end(records: np.ndarray, need: np.ndarray, unit: int, block: int) -> int | None:
    """Where the first work unit of a run of sites ends (exclusive), or None if it may take more sites.

    ``records``: the sites' record indices (ascending); ``need``: the sequences each needs (0: nothing to
    score).  A unit takes sites in order while their sequences stay within ``unit`` (a site that needs
    more than ``unit`` alone is a unit of its own), holds at most ``unit`` sites, and stays in the block
    of ``block`` records of its first site.  Only the sites the unit can reach are looked at."""
    n = records.size
    other = int(np.searchsorted(records, (int(records[0]) // block + 1) * block))  # the next block's first
    limit = min(n, unit, other)
    cum = np.cumsum(need[:limit])
    full = int(np.searchsorted(cum, unit))  # the first site at which the unit holds ``unit`` sequences
    if full < limit:  # it ends after that site, or before it if that site overflows a unit with sequences in it
        return full if cum[full] > unit and cum[full] > need[full] else full + 1
    return limit if limit == unit or limit < n else None


def _prepare(reader, genome, geom, sel, margin, per_window, unit, ref_policy, short_contigs, all_bins=False,
             block: int = BLOCK_RECORDS):
    """Read, check and cut windows: work units of whole sites holding at most ``unit``
    sequences, counting ensemble members (a site alone may hold more), never spanning two blocks
    of ``block`` records (:func:`unit_end`).  Runs ahead of the model in the prefetch thread.

    Sites are read ``unit`` at a time and cut into units with array operations: per site, only its
    record index and ALT count are read here."""

    def emit(sites: list[Site]) -> _Batch:
        cols = check_sites(genome, sites, geom, margin, ref_policy, short_contigs)  # all the unit's sites at once
        batch = _Batch(sites, sites[0].record // block)
        if cols.sites:
            wb = build_windows(genome, cols, geom, margin)
            batch.windows = wb
            batch.bins = align_bins(geom, sel, wb.ref_len, wb.delta)
            if all_bins:
                batch.all_bins = align_bins(geom, BinSelection("all"), wb.ref_len, wb.delta)
        return batch

    it = iter(reader)
    sites: list[Site] = []  # read, not yet in a unit: from ``at`` on
    records = need = np.zeros(0, dtype=np.int64)
    at = 0
    more = True
    failed: VarfxError | None = None  # a record that cannot be read: first the units complete before it
    while True:
        while at < len(sites):  # the units complete among the sites read
            end = unit_end(records[at:], need[at:], unit, block)
            if end is None:
                if more:
                    break  # the unit may take sites not read yet
                if failed is not None:
                    raise failed  # the unit the unreadable record interrupts is not handed on
                end = len(sites) - at  # the input's last unit
            yield emit(sites[at:at + end])
            at += end
        if failed is not None:
            raise failed
        if not more:
            return
        new: list[Site] = []
        try:
            new.extend(itertools.islice(it, unit))  # keeps the sites read before an exception
        except VarfxError as exc:
            failed = exc
        more = failed is None and len(new) == unit
        counts = np.fromiter(map(len, map(_ALTS, new)), dtype=np.int64, count=len(new))
        sites = sites[at:] + new
        records = np.concatenate([records[at:], np.fromiter(map(_RECORD, new), dtype=np.int64, count=len(new))])
        need = np.concatenate([need[at:], np.where(counts > 0, (1 + counts) * per_window, 0)])
        at = 0


def worker_reader(recipe: dict, genome: Genome, w: int, workers: int) -> VariantReader:
    """In worker process ``w`` of ``workers``: the VCF reader that keeps the records of the blocks it
    owns — those of the run's shard (``recipe["shard"]``) not done before a resume, dealt round-robin."""
    block, (k, n), done = recipe["block"], recipe["shard"], recipe["done"]

    def keep(rec: int) -> bool:
        b = rec // block
        return b % n == k - 1 and b not in done and (b // n) % workers == w

    return VariantReader(recipe["vcf"], genome.resolve, regions=recipe["regions"], keep=keep)


def window_recipe(vcf, reader, genome, predictor, geom, sel, unit: int, ref_policy: str, short_contigs: str,
                  all_bins: bool, block: int, shard: tuple[int, int], done) -> dict:
    """What a window-building worker process needs (``--workers``; picklable): inputs, window layout,
    policies, and which blocks are the run's (``worker_reader``)."""
    return {"vcf": vcf, "regions": list(reader.regions), "fasta": genome.path, "geom": geom, "sel": sel,
            "margin": predictor.margin, "per_window": predictor.members_per_window, "unit": unit,
            "ref_policy": ref_policy, "short_contigs": short_contigs, "all_bins": all_bins, "block": block,
            "shard": shard, "done": set(done)}


def _producer(recipe: dict, w: int, workers: int):
    """In worker process ``w`` of ``workers``: the batches of the blocks it owns (``--workers``)."""
    genome = Genome(recipe["fasta"])
    reader = worker_reader(recipe, genome, w, workers)
    gen = _prepare(reader, genome, recipe["geom"], recipe["sel"], recipe["margin"], recipe["per_window"],
                   recipe["unit"], recipe["ref_policy"], recipe["short_contigs"], recipe["all_bins"], recipe["block"])
    return gen, reader


def check_block_records(n: int | None) -> int | None:
    if n is not None and n < 1:
        raise OptionError("--block-records must be at least 1")
    return n


def run_manifest(attrs: dict, finals: dict, shard) -> dict:
    """What a resumed run must share with the interrupted one: settings, inputs (by their hashes), outputs."""
    return {"settings": json.loads(json.dumps({k: v for k, v in attrs.items() if k not in VOLATILE}, default=str)),
            "outputs": {k: str(Path(p).resolve()) for k, p in finals.items() if p is not None},
            "shard": f"{shard[0]}/{shard[1]}" if shard else ""}


def finish_run(writers, summary: RunSummary, reader, t0: float) -> None:
    """Close a run: check the accounting, store the counts in every output and give each its final name."""
    summary.records_read = reader.records_read
    summary.seconds = time.perf_counter() - t0
    if summary.scored + summary.skipped_total != summary.variants:  # an internal invariant, not user input
        raise AssertionError("variant accounting does not add up")
    final = {"records_read": summary.records_read, "variants": summary.variants,
             "variants_scored": summary.scored, "variants_skipped": summary.skipped_total,
             "skipped_by_reason": dict(summary.skipped), "float16_overflow": summary.float16_overflow,
             "seconds": round(summary.seconds, 3)}
    for w in writers:
        w.finish(final)
        summary.outputs.append(w.path)


def write_scored(writers, rows: "RowBuffer") -> None:
    if rows.scores:
        block = {s: np.concatenate([b[s] for b in rows.scores]) for s in rows.scores[0]}
        chunk = rows.rows()
        for w in writers:
            w.write(chunk, block)
    rows.clear()


def write_skipped(writers, rows: "RowBuffer") -> None:
    if len(rows):
        chunk = rows.rows()
        for w in writers:
            w.write_skipped(chunk, rows.reason)
    rows.clear()


class BlockOutputs:
    """A run's results kept block by block (varfx.blocks), then written through the final writers.

    Each block's rows and scores are saved as one fragment (``NAME.parts/b….npz``, written under a
    temporary name and renamed: a block is complete when its fragment exists).  At the end the
    fragments are fed, in block order, to the writers of the final outputs, exactly as one
    uninterrupted run would feed them.  ``finals`` maps output kinds to final paths (or None);
    ``make(paths)`` returns the writers, the HDF5 one ('out') first.
    """

    def __init__(self, finals: dict, make, manifest: dict, resume: bool, shard):
        self.finals = {k: p for k, p in finals.items() if p is not None}
        self.make = make
        self.shard = shard
        first = next(iter(self.finals.values()))
        #: with --resume, an earlier run of this command that finished (its counts; see finished_run)
        self.finished = finished_run(self.finals, manifest) \
            if resume and not first.with_name(first.name + PARTS).exists() else None
        if self.finished is not None:
            return
        self.staging = Staging(first, manifest, resume)
        self.resumed = len(self.staging.done)  # blocks kept from an interrupted run (--resume)
        self.block: int | None = None
        self.scored, self.skipped = RowBuffer(), RowBuffer()
        self.info: dict = {}
        self.counts: dict[str, np.ndarray] | None = None  # per-sample counts of the block (personal runs)
        self.genes: list[dict] = []  # the block's (variant, gene) rows, batch by batch (score --genes)

    @property
    def done(self) -> set[int]:
        return set(self.staging.done)

    def report_finished(self, summary: "RunSummary") -> bool:
        """With --resume after a run of this command that finished: its counts into ``summary``, and True
        (nothing is scored; the outputs stay as they are)."""
        if self.finished is None:
            return False
        summary.records_read = self.finished["records_read"]
        summary.variants = self.finished["variants"]
        summary.scored = self.finished["variants_scored"]
        summary.skipped = Counter(self.finished["skipped_by_reason"])
        summary.outputs = list(self.finals.values())
        summary.kept = True
        return True

    def begin(self, block: int) -> None:
        """Route what follows to ``block`` (committing the block before it)."""
        if block == self.block:
            return
        self.end()
        self.block = block
        self.info = {"variants": 0, "scored": 0, "skipped": {}}

    def add_counts(self, delta: dict[str, np.ndarray]) -> None:
        for k, v in delta.items():
            self.counts[k] += v

    def add_site(self, site: Site) -> int:
        """Count a site's ALTs and list its skipped ones; returns how many were skipped."""
        for i, alt, reason in site.skipped:
            self.skipped.add(site, i, alt, reason)
            self.info["skipped"][reason] = self.info["skipped"].get(reason, 0) + 1
        self.info["variants"] += len(site.alts) + len(site.skipped)
        return len(site.skipped)

    def add_genes(self, rows, index, scores: dict) -> None:
        """A batch's (variant, gene) rows (varfx.genes.GeneRows, GeneIndex): call before :meth:`add_scored`
        of the same batch (rows point at its ALTs)."""
        if len(rows):
            g = rows.gene
            self.genes.append({"row": rows.variant + len(self.scored),
                               "gene_id": np.array(index.ids, dtype=object)[g].astype(str),
                               "gene_name": np.array(index.names, dtype=object)[g].astype(str),
                               "strand": np.array(index.strands, dtype=object)[g].astype(str),
                               "tss": rows.tss, "tss_distance": rows.tss_distance, "n_tss": rows.n_tss,
                               **{"v." + k: v for k, v in scores.items()}})

    def add_scored(self, sites: list[Site], scores: dict) -> int:
        n = 0
        self.scored.scores.append(scores)
        for site in sites:
            for i, alt in site.alts:
                self.scored.add(site, i, alt)
                n += 1
        self.info["scored"] += n
        return n

    def end(self) -> None:
        """Save the current block's fragment (committing it)."""
        if self.block is None:
            return
        if self.counts is not None:
            self.info["sample_counts"] = {k: v.tolist() for k, v in self.counts.items()}
            self.counts = {k: np.zeros_like(v) for k, v in self.counts.items()}
        data = {}
        for prefix, buf in (("s.", self.scored), ("k.", self.skipped)):
            rows = buf.rows()
            data.update({prefix + "record": rows.record, prefix + "alt_index": rows.alt_index,
                         prefix + "pos": rows.pos, prefix + "chrom": np.array(rows.chrom, dtype=str),
                         prefix + "id": np.array(rows.id, dtype=str), prefix + "ref": np.array(rows.ref, dtype=str),
                         prefix + "alt": np.array(rows.alt, dtype=str)})
        data["k.reason"] = np.array(self.skipped.reason, dtype=str)
        if self.genes:
            data.update({"g." + k: np.concatenate([b[k] for b in self.genes]) for k in self.genes[0]})
        if self.scored.scores:
            for name in self.scored.scores[0]:
                data["v." + name] = np.concatenate([b[name] for b in self.scored.scores])
        self.staging.commit(self.block, self.info, data)
        self.scored.clear()
        self.skipped.clear()
        self.genes = []
        self.block = None

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the current block.  Committed blocks stay for --resume after an interruption or a crash;
        after an error in the input or options (which a resume would meet again) or when nothing was
        committed, the whole folder goes."""
        self.scored.clear()
        self.skipped.clear()
        self.genes = []
        self.block = None
        if isinstance(exc, VarfxError) or not self.staging.done:
            self.staging.remove()
        else:
            self.staging.release()

    def totals(self, summary: "RunSummary") -> list[dict]:
        """Add up the committed blocks into ``summary``; return their infos in block order."""
        infos = [self.staging.done[b] for b in self.staging.blocks()]
        summary.variants = sum(i["variants"] for i in infos)
        summary.scored = sum(i["scored"] for i in infos)
        summary.skipped = Counter()
        for i in infos:
            summary.skipped.update(i["skipped"])
        return infos

    def assemble(self, summary: "RunSummary", reader, t0: float, attrs: dict, groups: dict | None = None,
                 texts: dict | None = None, counts: dict | None = None) -> None:
        """Feed every committed block, in order, to the final writers; finish them; drop the fragments."""
        self.end()
        summary.records_read = reader.records_read
        blocks = self.staging.blocks()
        self.totals(summary)
        if self.resumed or self.staging.damaged:
            summary.extra.append(f"resumed: {self.resumed:,} of {len(blocks):,} blocks kept from the interrupted run"
                                 + (f" ({self.staging.damaged:,} unreadable, scored again)" if self.staging.damaged
                                    else ""))
        if summary.scored + summary.skipped_total != summary.variants:  # an internal invariant
            raise AssertionError("variant accounting does not add up")
        shard = f"{self.shard[0]}/{self.shard[1]}" if self.shard else ""
        writers = self.make(self.finals)
        try:
            texts_out = [w for w in writers if hasattr(w, "fh")]
            if self.shard:  # merge needs the shard's settings and where each block starts
                line = shard_line(self.shard, summary.records_read, attrs)
                for w in texts_out:
                    w.fh.write(line)
            for b in blocks:
                for w in texts_out if self.shard else ():
                    w.fh.write(f"{BLOCK_LINE}\t{b}\n")
                with np.load(self.staging.path(b, ".npz")) as z:
                    scores = {k[2:]: z[k] for k in z.files if k.startswith("v.")}
                    rows = [VariantRows(z[p + "record"], z[p + "alt_index"], z[p + "chrom"].tolist(), z[p + "pos"],
                                        z[p + "id"].tolist(), z[p + "ref"].tolist(), z[p + "alt"].tolist())
                            for p in ("s.", "k.")]
                    reasons = z["k.reason"].tolist()
                    genes = {k[2:]: z[k] for k in z.files if k.startswith("g.")}
                for w in writers:
                    if len(rows[0]):
                        w.write(rows[0], scores)
                    if len(rows[1]):
                        w.write_skipped(rows[1], reasons)
                    if genes and hasattr(w, "write_genes"):
                        w.write_genes(rows[0].take(genes["row"]), genes,
                                      {k[2:]: v for k, v in genes.items() if k.startswith("v.")})
            for w in texts_out if self.shard else ():  # merge refuses a table without it: cut short
                w.fh.write(f"{END_LINE}\t{len(blocks)}\n")
            if "out" in self.finals:
                summary.float16_overflow = {k: int(v) for k, v in writers[0].overflow.items()}
                for name, v in (groups or {}).items():  # name -> array, or (array, attributes)
                    data, extra = v if isinstance(v, tuple) else (v, {})
                    ds = writers[0].f.create_dataset(name, data=data)
                    for k, x in extra.items():
                        ds.attrs[k] = x
            summary.seconds = time.perf_counter() - t0
            final = {"records_read": summary.records_read, "variants": summary.variants,
                     "variants_scored": summary.scored, "variants_skipped": summary.skipped_total,
                     "skipped_by_reason": dict(sorted(summary.skipped.items())),
                     "float16_overflow": summary.float16_overflow,
                     "seconds": round(summary.seconds, 3), "shard": shard, **(counts or {})}
            for w in writers:
                w.finish(final)
                summary.outputs.append(w.path)
        except BaseException:
            for w in writers:
                w.abort()
            raise
        for path, text in (texts or {}).items():
            tmp = Path(str(path) + ".partial")
            tmp.write_text(text)
            os.replace(tmp, path)
            summary.outputs.append(path)
        self.staging.remove()


class ModelRun:
    """A loaded model with everything a run needs around it: statistics, tracks (and the strand
    partners that --rc needs), the predictor, the metadata for outputs, and the writers."""

    def __init__(self, backend, weights, backend_options, stats, tracks, rc, shifts, precision, batch_size,
                 device, pseudocount):
        shifts = parse_shifts(shifts)
        self.device = dev = resolve_device(device)
        model = load_backend(backend, weights, **backend_options) if isinstance(backend, str) else backend
        self.model = model
        self.pseudocount = pseudocount
        self.stats = stats = parse_stats(stats, model.default_stats or DEFAULT_STATS)
        self.track_stats = tuple(x for x in stats if x not in PROFILE_STATS)
        self.prof_stats = tuple(x for x in stats if x in PROFILE_STATS)
        self.chosen = chosen = select_tracks(model.tracks, tracks)
        self.tracks_selected = tracks or "all"
        self.prof_tracks = list(model.profile_tracks) if model.profile_tracks is not None else chosen
        computed = with_strand_partners(chosen, model.strand_pairs) if rc else chosen
        if self.prof_stats:
            computed = sorted(set(computed) | set(with_strand_partners(self.prof_tracks, model.strand_pairs) if rc
                                                  else self.prof_tracks))
        model.compute_tracks(None if len(computed) == len(model.tracks) else computed)
        self.out_cols = torch.as_tensor([computed.index(t) for t in chosen], device=dev)
        self.prof_cols = torch.as_tensor([computed.index(t) for t in self.prof_tracks], device=dev)
        self.slice_out = len(chosen) != len(computed)
        model.to(dev)
        self.predictor = Predictor(model, dev, precision, batch_size, rc, shifts,
                                   strand_permutation(computed, model.strand_pairs) if rc else None)
        self.geom = model.geometry
        self.track_ids = [str(model.tracks["id"].iloc[i]) for i in chosen]
        self.track_labels = [str(model.tracks["description"].iloc[i]) for i in chosen]
        self.rc, self.shifts, self.precision = rc, shifts, precision
        self.calibration = None  # varfx.calibrate.BoundCalibration: adds STAT_pct (score --calibration)

    def attrs(self) -> dict:
        model, geom = self.model, self.geom
        return {
            "backend": model.name,
            **{f"backend_{k}": v for k, v in model.settings().items()},
            "weights": [str(p) for p in model.weight_files],
            "weights_sha256": [sha256(p) for p in model.weight_files],
            "encoding": model.encoding,
            "window_length": geom.input_length,
            "window_center_index": geom.center,
            "output_bins": geom.output_bins,
            "bin_size": geom.bin_size,
            "bin_offset": geom.bin_offset,
            "stats": list(self.stats),
            "profile_tracks": ([str(model.tracks["id"].iloc[i]) for i in self.prof_tracks]
                               if self.prof_stats else []),
            "pseudocount": self.pseudocount,
            "rc": self.rc,
            "shifts": list(self.shifts),
            "tracks_selected": self.tracks_selected,
            "track_indices": self.chosen,
            "precision": self.precision,
            "device": str(self.device),
            "torch_version": torch.__version__,
        }

    def writers(self, out, tsv, tsv_long, skipped_tsv, attrs, float32, writer=H5Writer, genes_tsv=None,
                **h5) -> list:
        """The run's output writers (HDF5 first when there is one); on failure, none is left open.
        With ``h5['genes']`` (score --genes) the HDF5 file gets a ``genes/`` group and ``genes_tsv``
        a table of (variant, gene) rows."""
        track_stats, prof_stats = self.track_stats, self.prof_stats  # the tables' columns
        if self.calibration is not None:  # STAT_pct: float32 datasets in HDF5, more statistics in the tables
            h5["extra"] = {**(h5.get("extra") or {}), **self.calibration.datasets()}
            track_stats += self.calibration.track_names
            prof_stats += self.calibration.profile_names
        made = []
        try:
            if out is not None:
                made.append(writer(out, self.track_ids, self.track_labels, self.track_stats, attrs, float32=float32,
                                   profile_stats=self.prof_stats, **h5))
            if genes_tsv is not None:
                made.append(GeneTSVWriter(genes_tsv, self.track_ids, self.gene_stats))
            if tsv is not None:
                made.append(TSVWriter(tsv, self.track_ids, track_stats, profile_stats=prof_stats))
            if tsv_long is not None:
                made.append(TSVWriter(tsv_long, self.track_ids, track_stats, long=True, profile_stats=prof_stats))
            if skipped_tsv is not None:
                made.append(SkippedTSVWriter(skipped_tsv))
        except BaseException:
            for w in made:
                w.abort()
            raise
        return made

    def scores(self, ref_pred, alt_pred, ref_row, bins, all_bins) -> dict[str, np.ndarray]:
        """Statistics of ALT rows against their REF rows -> {stat: (V, T) or (V,)} numpy arrays."""
        dev = self.device
        ref_row = torch.as_tensor(ref_row, device=dev)
        res = {}
        if self.track_stats:
            al = Aligned(ref_row, *(torch.as_tensor(a, device=dev) for a in bins))
            res = variant_stats(ref_pred, alt_pred, al, self.track_stats, self.pseudocount)
            if self.slice_out:
                res = {s: v.index_select(1, self.out_cols) for s, v in res.items()}
        if self.prof_stats:
            al = Aligned(ref_row, *(torch.as_tensor(a, device=dev) for a in all_bins))
            res.update(profile_stats(ref_pred, alt_pred, al, self.prof_cols, self.prof_stats))
        res = {s: v.cpu().numpy() for s, v in res.items()}
        if self.calibration is not None:
            res.update(self.calibration.percentiles(res))
        return res

    @property
    def gene_stats(self) -> tuple[str, ...]:
        """The statistics of (variant, gene) rows: the per-track ones (profile statistics are per variant)."""
        return tuple(s for s in self.track_stats if s in STATS and s not in WHOLE_STATS)  # TSS bins, not windows

    def gene_scores(self, ref_pred, alt_pred, ref_row, rows) -> dict[str, np.ndarray]:
        """Per-track statistics of (variant, gene) pairs (varfx.genes.GeneRows) -> {stat: (G, T)}."""
        dev = self.device
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        al = Aligned(t(ref_row)[t(rows.variant)], t(rows.ref_bins), t(rows.alt_bins), t(rows.mask),
                     alt_row=t(rows.variant))
        res = variant_stats(ref_pred, alt_pred, al, self.gene_stats, self.pseudocount)
        if self.slice_out:
            res = {s: v.index_select(1, self.out_cols) for s, v in res.items()}
        return {s: v.cpu().numpy() for s, v in res.items()}

    def close(self):
        self.model.compute_tracks(None)  # a Backend the caller handed in is left computing all its tracks


def check_run_options(backend: str | Backend, bins: str | None, ref_mismatch: str, short_contigs: str,
                      pseudocount: float) -> str:
    """The options every scoring run checks before it reads anything (plain and personal runs);
    returns ``bins`` with the backend's default applied (e.g. ``all`` for CLIPNET)."""
    if ref_mismatch not in REF_POLICIES:
        raise OptionError(f"--ref-mismatch {ref_mismatch!r} is not one of {', '.join(REF_POLICIES)}")
    if short_contigs not in SHORT_CONTIG_POLICIES:
        raise OptionError(f"--short-contigs {short_contigs!r} is not one of {', '.join(SHORT_CONTIG_POLICIES)}")
    if pseudocount < 0:
        raise OptionError("--pseudocount must be ≥ 0")
    if bins is None:
        bins = (backend_class(backend) if isinstance(backend, str) else backend).default_bins
    return bins


def score_vcf(vcf, fasta, backend: str | Backend, weights=None, out=None, tsv=None, tsv_long=None, *,
              skipped_tsv=None, out_vcf=None, region=None, ref_mismatch: str = "skip", short_contigs: str | None = None,
              vcf_stats=None, vcf_tracks=None, bins: str | None = None,
              stats=None, pseudocount: float = 1.0, rc: bool = False, shifts=None, tracks: str | None = None,
              batch_size: int = 64, device: str = "auto", precision: str = "fp32", float32: bool = False,
              quiet: bool = True, prefetch_depth: int = 2,
              genotypes=None, samples=None, haplotypes: str | None = None, contrast: bool = False,
              shard=None, resume: bool = False, block_records: int | None = None, workers: int = 0,
              genes=None, genes_tsv=None, tss_margin: int | None = None, calibration=None,
              **backend_options) -> RunSummary:
    """Score every ALT allele of a VCF with a model; write HDF5 (and TSV) outputs.

    With ``genotypes`` (a cohort VCF/BCF), score each variant on each sample's own background
    (:func:`varfx.personal_run.score_personal`).  Returns a :class:`RunSummary`.  See
    ``varfx score --help`` for the options.
    """
    check_not_inputs({"--out": out, "--tsv": tsv, "--tsv-long": tsv_long, "--skipped-tsv": skipped_tsv,
                      "--out-vcf": out_vcf, "--genes-tsv": genes_tsv},
                     {"vcf": vcf, "fasta": fasta, "weights": weights, "genotypes": genotypes, "samples": samples,
                      "genes": genes, "calibration": calibration, "tracks": tracks})
    if (shard is not None or resume) and isinstance(backend, str) and backend_class(backend).score_vcf is not None:
        raise OptionError(f"--shard and --resume are not available with --backend {backend} yet: "
                          "split the VCF by region instead (--region)")
    if (workers or block_records is not None) and isinstance(backend, str) \
            and backend_class(backend).score_vcf is not None:
        raise OptionError(f"{'--workers' if workers else '--block-records'} is not available with --backend "
                          f"{backend}: its windows are built in the scoring process")
    if workers < 0:
        raise OptionError("--workers must be 0 (a thread builds windows) or more (worker processes)")
    if short_contigs is None:
        short_contigs = backend_class(backend).default_short_contigs if isinstance(backend, str) \
            else backend.default_short_contigs
    if genes is not None and out is None and tsv is None and genes_tsv is None:
        raise OptionError("--genes writes its (variant, gene) rows to --out (HDF5) or --genes-tsv: give one of them")
    from .annotate import for_run  # --out-vcf: the input VCF annotated from the finished HDF5 (varfx.annotate)
    annotation = for_run(out_vcf, vcf_stats, vcf_tracks, backend, genotypes, shard, out, tsv, tsv_long, skipped_tsv)
    if annotation is not None:  # without --out, the HDF5 is a temporary file beside the VCF
        out, skipped_tsv = annotation.out, annotation.skipped_tsv
    if genes is None and (genes_tsv is not None or tss_margin is not None):
        raise OptionError(f"{'--genes-tsv' if genes_tsv is not None else '--tss-margin'} needs --genes "
                          "annotation.gtf (the genes whose TSSs are scored)")
    if genes is not None and (genotypes is not None or (isinstance(backend, str)
                                                         and backend_class(backend).score_vcf is not None)):
        raise OptionError("--genes is not available with " + ("--genotypes" if genotypes is not None
                                                              else f"--backend {backend}"))
    if calibration is not None:  # STAT_pct against a background (varfx.calibrate); the file is read before the model
        if genotypes is not None or (isinstance(backend, str) and backend_class(backend).score_vcf is not None):
            raise OptionError("--calibration is not available with " + ("--genotypes yet: score without it"
                              if genotypes is not None else f"--backend {backend}"))
        from .calibrate import open_calibration
        calibration = open_calibration(calibration)
    if genotypes is None:
        for flag, value in (("--samples", samples), ("--haplotypes", haplotypes), ("--contrast", contrast or None)):
            if value is not None:
                raise OptionError(f"{flag} needs --genotypes COHORT.vcf.gz (the samples' genotypes)")
    else:
        if tsv_long is not None or out_vcf is not None:
            raise OptionError("with --genotypes, write --out (HDF5) and/or --tsv (one row per variant and sample)")
        if isinstance(backend, str) and backend_class(backend).score_vcf is not None:
            raise OptionError(f"--genotypes does not apply to --backend {backend}")
        from .personal_run import score_personal
        return score_personal(vcf, fasta, backend, weights, out, tsv, genotypes=genotypes, samples=samples,
                              haplotypes=haplotypes, contrast=contrast, skipped_tsv=skipped_tsv, region=region,
                              ref_mismatch=ref_mismatch, short_contigs=short_contigs, bins=bins, stats=stats,
                              pseudocount=pseudocount, rc=rc, shifts=shifts, tracks=tracks, batch_size=batch_size,
                              device=device, precision=precision, float32=float32, quiet=quiet,
                              prefetch_depth=prefetch_depth, shard=shard, resume=resume,
                              block_records=block_records, workers=workers, **backend_options)
    if isinstance(backend, str):
        cls = backend_class(backend)
        if cls.score_vcf is not None:  # a backend with its own kind of run (e.g. spliceai)
            return cls.score_vcf(vcf, fasta, weights=weights, out=out, tsv=tsv, tsv_long=tsv_long,
                                 skipped_tsv=skipped_tsv, region=region, ref_mismatch=ref_mismatch,
                                 short_contigs=short_contigs, bins=bins, stats=stats, pseudocount=pseudocount,
                                 rc=rc, shifts=shifts, tracks=tracks, batch_size=batch_size, device=device,
                                 precision=precision, float32=float32, quiet=quiet, out_vcf=out_vcf,
                                 **backend_options)
    t0 = time.perf_counter()
    bins = check_run_options(backend, bins, ref_mismatch, short_contigs, pseudocount)
    if out is None and tsv is None and tsv_long is None:
        raise OptionError("nothing to write: give --out scores.h5 (and/or --tsv / --tsv-long)")
    out, tsv, tsv_long = check_out(out, "--out"), check_out(tsv, "--tsv"), check_out(tsv_long, "--tsv-long")
    if genes is not None and genes_tsv is None and tsv is not None:  # gene rows beside the variant table
        genes_tsv = tsv.with_name(tsv.name.removesuffix(".tsv") + ".genes.tsv")
    genes_tsv = check_out(genes_tsv, "--genes-tsv")
    if skipped_tsv is None and out is None:  # without HDF5, skipped variants still get listed somewhere
        table = tsv or tsv_long
        skipped_tsv = table.with_name(table.name.removesuffix(".tsv") + ".skipped.tsv")
    skipped_tsv = check_out(skipped_tsv, "--skipped-tsv")
    named = [p.resolve() for p in (out, tsv, tsv_long, skipped_tsv, genes_tsv) if p is not None]
    if len(set(named)) != len(named):
        raise OptionError("--out, --tsv, --tsv-long, --skipped-tsv and --genes-tsv must be different files")
    sel = BinSelection.parse(bins)
    shard = parse_shard(shard)
    vcf = Path(vcf)

    genome = Genome(fasta)
    mr = ModelRun(backend, weights, backend_options, stats, tracks, rc, shifts, precision, batch_size, device,
                  pseudocount)
    predictor, geom = mr.predictor, mr.geom
    sel.check(geom)
    reader = VariantReader(vcf, genome.resolve, regions=[region] if isinstance(region, str) else region)
    check_short_contigs(reader, genome, geom, short_contigs)
    prof_stats = mr.prof_stats
    attrs = {
        "varfx_version": __version__,
        **mr.attrs(),
        "vcf": str(vcf),
        "vcf_sha256": sha256(vcf),
        "region": list(reader.regions),
        "fasta": str(genome.path),
        "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")),
        "bins": sel.describe(),
        "ref_mismatch": ref_mismatch,
        "short_contigs": short_contigs,
        "indel_alignment": INDEL_ALIGNMENT,
    }
    index = None
    if genes is not None:
        from .genes import GeneIndex
        index = GeneIndex(genes, genome.resolve, geom.bin_size if tss_margin is None else tss_margin)
        attrs.update({"genes": str(index.path), "genes_sha256": sha256(index.path), "tss_margin": index.tss_margin})
    bsize = check_block_records(block_records) or BLOCK_RECORDS
    attrs["block_records"] = bsize
    blocks = None
    ahead = None
    summary = RunSummary()
    try:
        if annotation is not None:  # --vcf-stats and --vcf-tracks must fit the run before it scores anything
            annotation.check(vcf, mr.stats, mr.track_ids, mr.track_labels)
        if calibration is not None:  # the run's settings must be the calibration's; its tracks a subset
            from .calibrate import bind_calibration
            mr.calibration = bind_calibration(calibration, attrs, mr.track_ids, mr.track_stats, mr.prof_stats)
            attrs.update(mr.calibration.attrs())
        finals = {"out": out, "tsv": tsv, "tsv_long": tsv_long, "skipped_tsv": skipped_tsv, "genes_tsv": genes_tsv}
        blocks = BlockOutputs(finals, lambda paths: mr.writers(paths.get("out"), paths.get("tsv"),
                                                               paths.get("tsv_long"), paths.get("skipped_tsv"),
                                                               attrs, float32, genes_tsv=paths.get("genes_tsv"),
                                                               genes=mr.gene_stats if index else ()),
                              run_manifest(attrs, finals, shard), resume, shard)
        if blocks.report_finished(summary):
            return summary
        done = blocks.done
        k, n = shard or (1, 1)
        reader.keep = lambda rec: (rec // bsize) % n == k - 1 and (rec // bsize) not in done
        bar = tqdm(unit=" variants", disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        unit = work_unit(batch_size, geom.input_length)
        source = reader
        if workers:
            recipe = window_recipe(vcf, reader, genome, predictor, geom, sel, unit, ref_mismatch, short_contigs,
                                   bool(prof_stats), bsize, (k, n), done)
            source = WorkerInfo()
            ahead = worker_batches(functools.partial(_producer, recipe), workers, source, depth=prefetch_depth)
        else:
            batches = _prepare(reader, genome, geom, sel, predictor.margin, predictor.members_per_window,
                               unit, ref_mismatch, short_contigs, all_bins=bool(prof_stats), block=bsize)
            ahead = prefetch(batches, depth=prefetch_depth)
        with fewer_collections():
            for batch in ahead:
                blocks.begin(batch.block)
                n_done = sum(blocks.add_site(site) for site in batch.sites)
                if batch.windows is not None:
                    wb = batch.windows
                    same = wb.delta == 0  # SNVs and MNVs: REF and ALT differ only in [c, c + len(REF))
                    lo = np.where(same, geom.center, -1)
                    ref_pred, alt_pred = predictor(wb.ref, wb.alt, wb.ref_row,
                                                   (lo, np.where(same, lo + wb.ref_len, -1)))
                    res = mr.scores(ref_pred, alt_pred, wb.ref_row, batch.bins, batch.all_bins)
                    if index is not None:  # (variant, gene) rows: the genes with a TSS in the output window
                        alts = [s for s in batch.sites for _ in s.alts]
                        gr = index.rows([s.contig for s in alts], np.fromiter((s.pos for s in alts), np.int64,
                                                                              len(alts)), geom, wb.ref_len, wb.delta)
                        blocks.add_genes(gr, index, mr.gene_scores(ref_pred, alt_pred, wb.ref_row, gr))
                    n_done += blocks.add_scored(batch.sites, res)
                bar.update(n_done)
        bar.close()
        blocks.assemble(summary, source, t0, attrs)
    except BaseException as exc:
        if blocks is not None:
            blocks.abort(exc)
        raise
    finally:
        if ahead is not None:
            ahead.close()  # stops and joins the prefetch thread before the genome and reader close
        reader.close()
        genome.close()
        mr.close()
    if annotation is not None:
        annotation.write(summary, vcf)
    return summary
