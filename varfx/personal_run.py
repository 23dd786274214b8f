"""Runs on personal genomes: ``varfx score --genotypes`` and ``varfx predict``.

Both wire the same parts as :mod:`varfx.run` (reader, checks, model, statistics, writers) around
:mod:`varfx.personal`, which turns a cohort's genotypes into each sample's windows.  Variants are
taken in clusters of nearby sites; each cluster's haplotypes are built once and every window of
every site in it is cut from them.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .errors import InputError, OptionError
from .genome import Genome
from .personal import (COUNTS, Block, Cohort, Focal, Haplotypes, pair_codes, parse_samples, sample_counts_text,
                       span_margin)
from .prefetch import WorkerInfo, prefetch, worker_batches
from .blocks import BLOCK_RECORDS, parse_shard, shard_line
from .blocks import block_records as records_per_block
from .run import (INDEL_ALIGNMENT, BlockOutputs, ModelRun, RunSummary, check_block_records, check_out,
                  check_run_options, fewer_collections, run_manifest, sha256,
                  window_recipe, work_unit, worker_reader)
from .encoding import encode
from .variants import Site, VariantReader
from .windows import BinSelection, align_bins, check_short_contigs, check_sites
from .writers import H5Writer, SkippedTSVWriter, TextTable, VariantRows, format_values

HAPLOTYPE_MODES = ("mean", "both")
SUMMARIES = ("mean", "sd", "min", "max")
#: bytes of haplotype rows a cluster may hold (all samples × 2 copies × span)
CLUSTER_BYTES = 64 << 20


def unique_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a uint8 matrix and, per row, the index of its distinct row.

    Rows are grouped by two random projections and every row is then compared with its group's
    representative, so a collision can only cost speed (it falls back to all rows), never a wrong row.
    The projections use integer weights below 2**20 in float64: every partial sum is an integer
    below 2**53 (for rows up to 2**25 wide), so equal rows project equally whatever order BLAS adds
    in (float32 projections of equal rows can differ in the last bit, leaving duplicates).
    """
    n = codes.shape[0]
    if n < 2:
        return codes, np.arange(n)
    rng = np.random.default_rng(0x5EED)
    weights = rng.integers(0, 1 << 20, size=(codes.shape[1], 2)).astype(np.float64)
    proj = np.empty((n, 2), dtype=np.float64)
    step = max(1, (32 << 20) // (8 * max(1, codes.shape[1])))  # rows per ~32 MB float64 block
    for i in range(0, n, step):
        proj[i:i + step] = codes[i:i + step].astype(np.float64) @ weights
    _, first, inverse = np.unique(proj, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(codes, codes[first[inverse]]):
        return codes, np.arange(n)
    return codes[first], inverse


class PersonalSetup:
    """What a personal run needs besides the model: samples, copies per sample, contrast."""

    def __init__(self, cohort: Cohort, two_hot: bool, haplotypes: str | None, contrast: bool):
        self.cohort = cohort
        self.two_hot = two_hot
        self.haplotypes = None if two_hot else (haplotypes or "mean")
        self.contrast = contrast
        self.samples = cohort.samples
        self.copies = 1 if two_hot else 2  # sequences per sample and focal allele

    @property
    def inner(self) -> tuple[int, ...]:
        s = len(self.samples)
        return (s, 2) if self.haplotypes == "both" else (s,)

    def combine(self, w: np.ndarray) -> np.ndarray:
        """Windows of rows h = 2·sample + copy -> the sequences the model reads (pairs for two-hot)."""
        if not self.two_hot:
            return w
        w = w.reshape(-1, 2, w.shape[-1])
        return pair_codes(w[:, 0], w[:, 1])


def _cluster_span(cohort: Cohort, contig: str, lo: int, hi: int, n_iter: int = 8):
    """Records and reference span for windows covering [lo, hi): widened until the deletions
    inside can no longer pull bases from outside it.  The span may reach past either end of the
    contig (``lo`` < 0 near its start): the haplotypes are N there, as reference windows are."""
    extra = 0
    for _ in range(n_iter):
        start = lo - extra
        if start > 0:  # never begin inside a record: a deletion crossing the start would be lost
            start = cohort.reach_back(contig, start)
        blk = cohort.block(contig, max(0, start), hi + extra)
        need = span_margin(blk)
        if need <= extra:
            return start, hi + extra, blk
        extra = need + 64
    raise InputError(f"--genotypes: deletions near {contig}:{lo + 1}-{hi} are too long to build haplotypes")


def _check_phase(blk: Block, samples: list[str], contig: str):
    bad = blk.flags["unphased_het"]
    if bad.any():
        r, s = map(int, np.argwhere(bad)[0])
        raise OptionError(
            f"sample {samples[s]} has an unphased heterozygous genotype at {contig}:{int(blk.pos0[r]) + 1}: "
            "one-hot backends read each haplotype, so they need phased genotypes (phase the VCF, e.g. with "
            "SHAPEIT5, Eagle or Beagle), or use a two-hot backend such as clipnet")


def _window_stretches(blk: Block, p: np.ndarray, ref_len: np.ndarray, cx: int, lx: int) -> tuple[np.ndarray, np.ndarray]:
    """The stretches of reference that the sites' windows read, as disjoint sorted [start, end)
    ranges of record starts: each site's reference window [pos − cx, pos − cx + lx) (and its REF),
    widened on both sides by the deletions inside it (they pull further bases in), and on the left by
    the longest REF in ``blk`` (a record starting there can reach into the window)."""
    lo0 = p - cx
    hi0 = np.maximum(p + ref_len, lo0 + lx)
    reach = int(blk.ref_len.max()) - 1 if len(blk) else 0
    lo, hi = lo0 - reach, hi0
    if len(blk):
        shrink = np.array([max([int(blk.ref_len[r]) - a.shape[0] for a in blk.alleles[r][1:] if a is not None] + [0])
                           for r in range(len(blk))], dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum(shrink)])
        for _ in range(16):
            pull = cum[np.searchsorted(blk.pos0, hi)] - cum[np.searchsorted(blk.pos0, lo)]
            new_lo, new_hi = lo0 - reach - pull, hi0 + pull
            if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
                break
            lo, hi = new_lo, new_hi
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    first = np.concatenate([[True], lo[1:] > np.maximum.accumulate(hi)[:-1]])
    return lo[first], np.maximum.reduceat(hi, np.flatnonzero(first))


@dataclass
class _PBatch:
    sites: list[Site]
    block: int = 0
    counts: dict | None = None  # per-sample genotype counts added while building this batch
    ref: np.ndarray | None = None  # (sites × samples × copies, Lx)
    alt: np.ndarray | None = None  # (ALTs × samples × copies [× 2 with the contrast], Lx)
    ref_row: np.ndarray | None = None
    change: tuple | None = None
    ref_len: np.ndarray | None = None  # (ALTs,)
    delta: np.ndarray | None = None  # (ALTs,) len(ALT) − len(REF)
    carries: np.ndarray | None = None  # (ALTs, 2 × samples) bool
    geom: object = None
    sel: object = None
    want_all_bins: bool = False
    dosage: np.ndarray | None = None  # (ALTs, samples) int8
    in_cohort: np.ndarray | None = None  # (ALTs,) bool


def _focal(sites: list[Site], blk: Block) -> tuple[Focal, list[int]]:
    pos0, ref, alt, carries, found, first = [], [], [], [], [], []
    for site in sites:
        first.append(len(pos0))
        rc = encode(site.ref)
        for _, a in site.alts:
            pos0.append(site.pos - 1)
            ref.append(rc)
            alt.append(encode(a))
            hit = blk.find(site.pos - 1, site.ref, a)
            found.append(hit is not None)
            carries.append(blk.raw[hit[0]] == hit[1] if hit is not None else np.zeros(blk.hap.shape[1], bool))
    return Focal(np.asarray(pos0, dtype=np.int64), ref, alt, np.stack(carries), np.asarray(found)), first


def _prepare_personal(reader, genome, cohort: Cohort, setup: PersonalSetup, geom, sel, margin: int, members: int,
                      unit: int, ref_policy: str, short_contigs: str, all_bins: bool, block: int = BLOCK_RECORDS):
    """Sites -> batches of personal windows, haplotypes built once per cluster of nearby sites.

    Clusters never span two blocks of ``block`` records; genotype counts are kept per block (each
    record counted once within a block) and travel with the batches, so that a block's counts are
    the same in every run, shard or resume it belongs to."""
    L, c = geom.input_length, geom.center
    lx, cx = L + 2 * margin, c + margin
    h_n = 2 * len(setup.samples)
    budget = max(lx, CLUSTER_BYTES // max(1, h_n) - lx)
    per_seq = setup.copies * len(setup.samples) * members
    cluster: list[Site] = []

    def batches(sites: list[Site]):
        check_sites(genome, sites, geom, margin, ref_policy, short_contigs)  # the cluster's sites at once
        scorable = [s for s in sites if s.alts]
        bid = sites[0].record // block
        if not scorable:
            yield _PBatch(sites, bid)
            return
        contig = scorable[0].contig
        lo = min(s.pos - 1 for s in scorable) - cx
        hi = max(s.pos - 1 + len(s.ref) for s in scorable) + (lx - cx)
        start, end, blk = _cluster_span(cohort, contig, lo, hi)
        # counts and the phase check cover the records the windows read, not the whole cluster span
        # (which depends on how many samples share the memory budget)
        before = {k: v.copy() for k, v in cohort.counts.items()}
        before_bad = cohort.ref_mismatch_counted
        near = cohort.count(contig, *_window_stretches(
            blk, np.array([x.pos - 1 for x in scorable], dtype=np.int64),
            np.array([len(x.ref) for x in scorable], dtype=np.int64), cx, lx))
        delta = {k: cohort.counts[k] - before[k] for k in before}
        delta["ref_mismatch_records"] = np.array([cohort.ref_mismatch_counted - before_bad])
        if setup.haplotypes is not None:
            _check_phase(near, setup.samples, contig)
        haps = Haplotypes.build(genome, contig, start, end, blk)
        part: list[Site] = []
        seqs = 0

        def cut():
            nonlocal delta
            b = _cut(part, haps, blk, setup, geom, sel, margin, all_bins)
            b.block, b.counts, delta = bid, delta, None
            return b

        for site in sites:
            need = per_seq * (1 + len(site.alts) * (2 if setup.contrast else 1)) if site.alts else 0
            if part and seqs + need > unit:
                yield cut()
                part, seqs = [], 0
            part.append(site)
            seqs += need
        if part:
            yield cut()

    current = None
    for site in reader:
        bid = site.record // block
        if bid != current:
            if cluster:
                yield from batches(cluster)
                cluster = []
            cohort.reset_counted()  # counts are per block
            current = bid
        if site.alts and cluster:
            first = next((s for s in cluster if s.alts), None)
            if first is not None and (first.contig != site.contig or site.pos - first.pos > budget):
                yield from batches(cluster)
                cluster = []
        cluster.append(site)
    if cluster:
        yield from batches(cluster)


def _cut(sites: list[Site], haps: Haplotypes, blk: Block, setup: PersonalSetup, geom, sel, margin: int,
         all_bins: bool) -> _PBatch:
    batch = _PBatch(sites)
    scorable = [s for s in sites if s.alts]
    if not scorable:
        return batch
    L, c = geom.input_length, geom.center
    lx, cx = L + 2 * margin, c + margin
    focal, first = _focal(scorable, blk)
    v_n, s_n, k = len(focal.ref), len(setup.samples), setup.copies
    h_n = 2 * s_n
    hap = np.arange(h_n)
    ref_w = haps.windows(focal, np.repeat(np.asarray(first), h_n), np.tile(hap, len(first)),
                         np.zeros(len(first) * h_n, np.int8), lx, cx)
    alt_v = np.repeat(np.arange(v_n), h_n)
    alt_w = haps.windows(focal, alt_v, np.tile(hap, v_n), np.ones(v_n * h_n, np.int8), lx, cx)
    parts = [setup.combine(alt_w)]
    if setup.contrast:
        geno = haps.windows(focal, alt_v, np.tile(hap, v_n), np.full(v_n * h_n, 2, np.int8), lx, cx)
        parts.append(setup.combine(geno))
    batch.ref = setup.combine(ref_w)
    batch.alt = np.concatenate(parts) if len(parts) > 1 else parts[0]
    site_of = np.repeat(np.arange(len(scorable)), [len(s.alts) for s in scorable])
    per = s_n * k  # sequences per focal allele
    ref_row = (site_of[:, None] * per + np.arange(per)[None, :]).reshape(-1)
    batch.ref_row = np.tile(ref_row, len(parts))
    ref_len = np.array([f.shape[0] for f in focal.ref], dtype=np.int64)
    delta = np.array([a.shape[0] for a in focal.alt], dtype=np.int64) - ref_len
    same = delta == 0
    lo = np.where(same, c, -1)
    hi = np.where(same, c + ref_len, -1)
    batch.change = (np.tile(np.repeat(lo, per), len(parts)), np.tile(np.repeat(hi, per), len(parts)))
    batch.ref_len, batch.delta, batch.carries = ref_len, delta, focal.carries
    batch.geom, batch.sel, batch.want_all_bins = geom, sel, all_bins
    batch.dosage = focal.carries.reshape(v_n, s_n, 2).sum(-1).astype(np.int8)
    batch.in_cohort = focal.in_cohort
    return batch


def _stat_blocks(mr: ModelRun, setup: PersonalSetup, ref_pred, alt_pred, batch: _PBatch) -> dict[str, np.ndarray]:
    """Predictions -> {name: array} for the writers: per-sample statistics, summaries, dosage."""
    v_n = batch.dosage.shape[0]
    s_n = len(setup.samples)
    k = setup.copies
    ref_row = batch.ref_row
    if setup.haplotypes == "mean":  # average the two haplotypes' predictions, then compare
        ref_pred = ref_pred.view(-1, 2, *ref_pred.shape[1:]).mean(1)
        alt_pred = alt_pred.view(-1, 2, *alt_pred.shape[1:]).mean(1)
        ref_row = ref_row[::2] // 2
        k = 1
    per = s_n * k
    n_parts = alt_pred.shape[0] // (v_n * per)
    # bins: aligned as for the ALT allele, except genotype-contrast rows that do not carry it (their
    # sequence is the REF one, so they are compared bin for bin and score exactly 0)
    delta = np.repeat(batch.delta, per)
    deltas = [delta]
    if n_parts == 2:
        carried = batch.carries if k == 2 else batch.carries.reshape(v_n, s_n, 2).any(-1)
        deltas.append(np.where(carried.reshape(-1), delta, 0))
    ref_len = np.tile(np.repeat(batch.ref_len, per), n_parts)
    delta = np.concatenate(deltas)
    bins = align_bins(batch.geom, batch.sel, ref_len, delta)
    all_bins = align_bins(batch.geom, BinSelection("all"), ref_len, delta) if batch.want_all_bins else None
    res = mr.scores(ref_pred, alt_pred, ref_row, bins, all_bins)
    out = {}
    shape = (v_n, *setup.inner)
    for p, prefix in enumerate(["", "genotype/"][:n_parts]):
        for name, vals in res.items():
            block = vals[p * v_n * per:(p + 1) * v_n * per]
            block = block.reshape(*shape, *block.shape[1:])
            out[prefix + name] = block
            flat = block.reshape(v_n, -1, *block.shape[len(shape):])  # samples (× haplotypes) pooled
            wide = flat.astype(np.float64)  # so that identical values have sd 0, not float32 rounding
            out[f"{prefix}summary/{name}/mean"] = wide.mean(1).astype(np.float32)
            out[f"{prefix}summary/{name}/sd"] = wide.std(1).astype(np.float32)
            out[f"{prefix}summary/{name}/min"] = flat.min(1)
            out[f"{prefix}summary/{name}/max"] = flat.max(1)
    out["dosage"] = batch.dosage
    out["in_cohort"] = batch.in_cohort.astype(np.uint8)
    return out


class PersonalTSVWriter(TextTable):
    """One row per (variant, sample[, haplotype]): identifiers, sample, dosage, then STAT:TRACK columns
    (``genotype.STAT:TRACK`` for the genotype contrast)."""

    def __init__(self, path, track_ids, stats, profile_stats, setup: PersonalSetup):
        self.track_ids, self.stats, self.profile_stats, self.setup = track_ids, stats, profile_stats, setup
        self.prefixes = ["", "genotype/"] if setup.contrast else [""]
        cols = []
        for pre in self.prefixes:
            tag = pre.replace("/", ".")
            cols += [f"{tag}{s}:{t}" for s in stats for t in track_ids] + [f"{tag}{s}" for s in profile_stats]
        hap = ["haplotype"] if setup.haplotypes == "both" else []
        super().__init__(path, ["chrom", "pos", "id", "ref", "alt", "sample", *hap, "dosage", *cols])

    def write(self, rows: VariantRows, scores: dict[str, np.ndarray]) -> None:
        if not len(rows):
            return
        s_n = len(self.setup.samples)
        k = 2 if self.setup.haplotypes == "both" else 1
        blocks = []
        for pre in self.prefixes:
            for s in self.stats:
                v = scores[pre + s]
                blocks.append(v.reshape(len(rows) * s_n * k, -1))
            for s in self.profile_stats:
                blocks.append(scores[pre + s].reshape(-1, 1))
        txt = format_values(np.concatenate(blocks, 1)) if blocks else None
        lines = []
        i = 0
        for c, p, vid, r, a, dos in zip(rows.chrom, rows.pos.tolist(), rows.id, rows.ref, rows.alt,
                                         scores["dosage"].tolist()):
            key = f"{c}\t{p}\t{vid}\t{r}\t{a}"
            for si, name in enumerate(self.setup.samples):
                for h in range(k):
                    hap = f"\t{h + 1}" if k == 2 else ""
                    vals = "\t" + "\t".join(txt[i]) if txt is not None else ""
                    lines.append(f"{key}\t{name}{hap}\t{dos[si]}{vals}")
                    i += 1
        self.fh.write("\n".join(lines) + "\n")


def _consume(ahead, blocks: BlockOutputs, predictor, mr: ModelRun, setup: PersonalSetup, bar, incremental: bool,
             dedupe: bool) -> None:
    """The model and statistics on each batch of personal windows; rows to the block outputs."""
    for batch in ahead:
        blocks.begin(batch.block)
        if batch.counts is not None:
            blocks.add_counts(batch.counts)
        n_done = sum(blocks.add_site(site) for site in batch.sites)
        if batch.ref is not None:
            if incremental or not dedupe:
                ref_pred, alt_pred = predictor(batch.ref, batch.alt, batch.ref_row, batch.change)
            else:  # identical windows (samples with the same alleles nearby) through the model once
                uniq, inv = unique_rows(np.concatenate([batch.ref, batch.alt]))
                y = predictor.predict_windows(uniq)[torch.as_tensor(inv, device=mr.device)]
                ref_pred, alt_pred = y[:batch.ref.shape[0]], y[batch.ref.shape[0]:]
            n_done += blocks.add_scored(batch.sites, _stat_blocks(mr, setup, ref_pred, alt_pred, batch))
        bar.update(n_done)


def _personal_attrs(cohort: Cohort, setup: PersonalSetup, genotypes: Path) -> dict:
    return {"genotypes": str(genotypes), "genotypes_sha256": sha256(genotypes), "samples": list(cohort.samples),
            "haplotypes": setup.haplotypes or "two-hot", "contrast": "hom-alt,genotype" if setup.contrast else "hom-alt"}


def _counts_report(cohort: Cohort) -> list[str]:
    lines = []
    for k, what in COUNTS.items():
        n = cohort.counts[k]
        if n.sum():
            worst = int(np.argmax(n))
            lines.append(f"  {k}: {int(n.sum()):,} over {int((n > 0).sum())} sample(s) "
                         f"(most: {cohort.samples[worst]}, {int(n[worst]):,}) — {what}")
    if cohort.ref_mismatch:
        lines.append(f"  genotype records whose REF disagrees with the FASTA, left out: {cohort.ref_mismatch:,}")
    return (["genotype calls (per sample in the outputs' sample counts):"] + lines) if lines else []


def _personal_producer(recipe: dict, w: int, workers: int):
    """In worker process ``w`` of ``workers`` (``--workers``): the personal batches of the blocks it owns,
    from its own readers of the VCF, the genotypes and the FASTA.  Genotype counts travel with the
    batches, per block, so they add up as in one process."""
    genome = Genome(recipe["fasta"])
    reader = worker_reader(recipe, genome, w, workers)
    cohort = Cohort(recipe["genotypes"], genome, recipe["samples"], two_hot=recipe["two_hot"])
    setup = PersonalSetup(cohort, recipe["two_hot"], recipe["haplotypes"], recipe["contrast"])
    gen = _prepare_personal(reader, genome, cohort, setup, recipe["geom"], recipe["sel"], recipe["margin"],
                            recipe["per_window"], recipe["unit"], recipe["ref_policy"], recipe["short_contigs"],
                            recipe["all_bins"], recipe["block"])
    return gen, reader


def score_personal(vcf, fasta, backend, weights=None, out=None, tsv=None, *, genotypes, samples=None,
                   haplotypes: str | None = None, contrast: bool = False, skipped_tsv=None, region=None,
                   ref_mismatch: str = "skip", short_contigs: str = "error", bins: str | None = None, stats=None,
                   pseudocount: float = 1.0, rc: bool = False, shifts=None, tracks: str | None = None,
                   batch_size: int = 64, device: str = "auto", precision: str = "fp32", float32: bool = False,
                   quiet: bool = True, prefetch_depth: int = 2, dedupe: bool = True,
                   shard=None, resume: bool = False, block_records: int | None = None, workers: int = 0,
                   **backend_options) -> RunSummary:
    """Score every ALT of ``vcf`` on each sample's own background (docs/personal.md)."""
    t0 = time.perf_counter()
    bins = check_run_options(backend, bins, ref_mismatch, short_contigs, pseudocount)
    if haplotypes is not None and haplotypes not in HAPLOTYPE_MODES:
        raise OptionError(f"--haplotypes {haplotypes!r} is not one of {', '.join(HAPLOTYPE_MODES)}")
    if out is None and tsv is None:
        raise OptionError("nothing to write: give --out scores.h5 (and/or --tsv)")
    out, tsv = check_out(out, "--out"), check_out(tsv, "--tsv")
    if skipped_tsv is None and out is None:
        skipped_tsv = tsv.with_name(tsv.name.removesuffix(".tsv") + ".skipped.tsv")
    skipped_tsv = check_out(skipped_tsv, "--skipped-tsv")
    counts_tsv = tsv.with_name(tsv.name.removesuffix(".tsv") + ".samples.tsv") if out is None else None
    named = [p.resolve() for p in (out, tsv, skipped_tsv, counts_tsv) if p is not None]
    if len(set(named)) != len(named):
        raise OptionError("--out, --tsv and --skipped-tsv must be different files")
    sel = BinSelection.parse(bins)
    shard = parse_shard(shard)
    vcf, genotypes = Path(vcf), Path(genotypes)
    sample_list = parse_samples(samples)

    genome = Genome(fasta)
    mr = cohort = reader = blocks = None
    ahead = None
    summary = RunSummary()
    try:
        mr = ModelRun(backend, weights, backend_options, stats, tracks, rc, shifts, precision, batch_size, device,
                      pseudocount)
        two_hot = mr.model.encoding == "two-hot"
        if two_hot and haplotypes is not None:
            raise OptionError(f"--haplotypes is for one-hot backends; {mr.model.name} reads both copies at once "
                              "(two-hot)")
        cohort = Cohort(genotypes, genome, sample_list, two_hot=two_hot)
        setup = PersonalSetup(cohort, two_hot, haplotypes, contrast)
        reader = VariantReader(vcf, genome.resolve, regions=[region] if isinstance(region, str) else region)
        predictor, geom = mr.predictor, mr.geom
        sel.check(geom)
        check_short_contigs(reader, genome, geom, short_contigs)
        predictor.paired = two_hot
        attrs = {"varfx_version": __version__, **mr.attrs(), "vcf": str(vcf), "vcf_sha256": sha256(vcf),
                 "region": list(reader.regions), "fasta": str(genome.path),
                 "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")), "bins": sel.describe(),
                 "ref_mismatch": ref_mismatch, "short_contigs": short_contigs, "indel_alignment": INDEL_ALIGNMENT,
                 **_personal_attrs(cohort, setup, genotypes)}
        s_inner = setup.inner
        t_n = len(mr.track_ids)
        prefixes = ["", "genotype/"] if contrast else [""]
        extra = {}
        for pre in prefixes:
            if pre:
                extra.update({pre + s: ((*s_inner, t_n), "score") for s in mr.track_stats})
                extra.update({pre + s: (s_inner, np.float32) for s in mr.prof_stats})
            for s in mr.track_stats:
                extra.update({f"{pre}summary/{s}/{m}": ((t_n,), np.float32) for m in SUMMARIES})
            for s in mr.prof_stats:
                extra.update({f"{pre}summary/{s}/{m}": ((), np.float32) for m in SUMMARIES})
        extra["dosage"] = ((len(cohort.samples),), np.int8)
        extra["in_cohort"] = ((), np.uint8)
        # records per block (held in memory, then saved as one fragment): about 64 MB of float32 scores
        per_variant = int(np.prod(s_inner)) * max(1, t_n) * len(mr.stats) * len(prefixes) * 4
        bsize = check_block_records(block_records) or records_per_block(per_variant)
        attrs["block_records"] = bsize
        finals = {"out": out, "tsv": tsv, "skipped_tsv": skipped_tsv}

        def make(paths):
            made = []
            try:
                if paths.get("out") is not None:
                    made.append(PersonalH5Writer(paths["out"], mr.track_ids, mr.track_labels, mr.track_stats, attrs,
                                                 float32=float32, profile_stats=mr.prof_stats, inner=s_inner,
                                                 extra=extra, cohort=cohort))
                if paths.get("tsv") is not None:
                    made.append(PersonalTSVWriter(paths["tsv"], mr.track_ids, mr.track_stats, mr.prof_stats, setup))
                if paths.get("skipped_tsv") is not None:
                    made.append(SkippedTSVWriter(paths["skipped_tsv"]))
            except BaseException:
                for w in made:
                    w.abort()
                raise
            return made

        blocks = BlockOutputs(finals, make, run_manifest(attrs, finals, shard), resume, shard)
        if blocks.report_finished(summary):
            return summary
        blocks.counts = {k: np.zeros(len(cohort.samples), dtype=np.int64) for k in COUNTS}
        blocks.counts["ref_mismatch_records"] = np.zeros(1, dtype=np.int64)
        done = blocks.done
        k_sh, n_sh = shard or (1, 1)
        reader.keep = lambda rec: (rec // bsize) % n_sh == k_sh - 1 and (rec // bsize) not in done
        bar = tqdm(unit=" variants", disable=quiet, file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5)
        per_site = setup.copies * len(cohort.samples)
        unit = max(work_unit(batch_size, geom.input_length), per_site * 3)
        source = reader
        if workers:  # each worker process reads the VCF and the genotypes itself, for the blocks it owns
            recipe = {**window_recipe(vcf, reader, genome, predictor, geom, sel, unit, ref_mismatch, short_contigs,
                                      bool(mr.prof_stats), bsize, (k_sh, n_sh), done),
                      "genotypes": genotypes, "samples": sample_list, "two_hot": two_hot, "haplotypes": haplotypes,
                      "contrast": contrast}
            source = WorkerInfo()
            ahead = worker_batches(functools.partial(_personal_producer, recipe), workers, source,
                                   depth=prefetch_depth)
        else:
            batches = _prepare_personal(reader, genome, cohort, setup, geom, sel, predictor.margin,
                                        predictor.members_per_window, unit, ref_mismatch, short_contigs,
                                        all_bins=bool(mr.prof_stats), block=bsize)
            ahead = prefetch(batches, depth=prefetch_depth)
        incremental = getattr(mr.model, "incremental", False)
        with fewer_collections():
            _consume(ahead, blocks, predictor, mr, setup, bar, incremental, dedupe)
        bar.close()
        blocks.end()
        counts = {k: np.zeros(len(cohort.samples), dtype=np.int64) for k in COUNTS}
        bad = 0
        for info in blocks.totals(summary):
            for k, v in info.get("sample_counts", {}).items():
                if k == "ref_mismatch_records":
                    bad += int(v[0])
                else:
                    counts[k] += np.asarray(v, dtype=np.int64)
        cohort.counts = counts  # the whole run's, resumed blocks included (for the report)
        cohort.ref_mismatch = bad
        groups = {f"sample_counts/{k}": (v, {"description": COUNTS[k]}) for k, v in counts.items()}
        texts = {}
        if counts_tsv is not None:
            # in a shard, the shard line lets `varfx merge` check the set and add the counts up
            line = shard_line(shard, source.records_read, attrs) if shard else ""
            texts[counts_tsv] = sample_counts_text(cohort.samples, counts, line)
        blocks.assemble(summary, source, t0, attrs, groups=groups, texts=texts,
                        counts={"ref_mismatch_records": bad})
    except BaseException as exc:
        if blocks is not None:
            blocks.abort(exc)
        raise
    finally:
        if ahead is not None:
            ahead.close()
        for part in (reader, cohort, genome, mr):
            if part is not None:
                part.close()
    summary.extra[:0] = _counts_report(cohort)  # before the "resumed:" line of a resumed run
    return summary


class PersonalH5Writer(H5Writer):
    """The HDF5 layout of docs/formats.md for personal genomes: (variants, samples[, 2], tracks) per
    statistic, ``samples``, ``summary/``, ``genotype/``, ``dosage``, ``in_cohort`` and ``sample_counts/``."""

    def __init__(self, path, *args, cohort: Cohort, **kwargs):
        super().__init__(path, *args, **kwargs)
        self.cohort = cohort
        from .writers import STR
        self.f.create_dataset("samples", data=np.array(cohort.samples, dtype=object), dtype=STR)
