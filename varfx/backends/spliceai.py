"""``spliceai``: SpliceAI's delta scores (Jaganathan et al. 2019) with the published Keras
models run in PyTorch.

It computes what ``spliceai`` 1.3.1 computes (docs/spliceai.md has the details):

* every gene of the annotation whose transcript contains POS gets its own pair of
  windows: 10,000 + 2·D + 1 bp centred on POS, positions outside the transcript set to N,
  the ALT window the REF window with ALT in place of REF (its length changes with indels);
* − strand genes are reverse-complemented and their outputs flipped back;
* the output is the mean of the 5 models' (neither, acceptor, donor) probabilities; for
  a deletion zeros are inserted into the ALT output after ``D + len(ALT)``, for an
  insertion the inserted positions are reduced to their maximum;
* DS_AG/DS_AL/DS_DG/DS_DL are the largest acceptor/donor gain/loss within ±D bp and
  DP_* their positions relative to POS; ``--mask`` zeroes gains at the annotated splice
  site nearest to the variant and losses anywhere else, like ``spliceai -M 1``.

``varfx score --backend spliceai`` hands the whole run to :func:`score_spliceai`
(``Backend.score_vcf``): one row per (ALT, gene) in HDF5 (:func:`read_spliceai`) and TSV,
and the input VCF with the package's ``SpliceAI`` INFO field (``--out-vcf``).

The gene table (reading it, the genes at a site, the nearest exon boundary, the window masked
to a transcript) is in :mod:`varfx.backends.spliceai_genes`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .. import __version__
from ..encoding import encode, revcomp_codes
from ..errors import InputError, ModelError, OptionError
from ..genome import Genome
from ..predict import PRECISIONS, Predictor, resolve_device
from ..results import strings, open_complete, read_scores
from ..run import (REF_POLICIES, SHORT_CONTIG_POLICIES, RowBuffer, RunSummary, check_out, finish_run, sha256,
                   work_unit, write_scored, write_skipped)
from ..variants import Site, VariantReader
from ..vcfout import AnnotatedVCFWriter, InfoField, vcf_mode
from ..windows import Geometry, check_short_contigs, check_sites
from ..writers import H5Writer, STR, SkippedTSVWriter, VariantRows, append_rows, format_values, TextTable
from .base import Backend, reject_options, tracks_table
from .spliceai_genes import TABLE_COLUMNS, GeneTable, gene_window  # noqa: F401  (TABLE_COLUMNS: still importable here)

CONTEXT = 10_000  # bp of flank the models need: output length = input length - 10,000
DEFAULT_DISTANCE = 50
MAX_DISTANCE = 4_999  # the package accepts -D 0..4999
MODEL_FILES = [f"spliceai{i}.h5" for i in range(1, 6)]
ANNOTATIONS = ("grch37", "grch38")
TRACKS = ["neither", "acceptor", "donor"]

SCORES = ("DS_AG", "DS_AL", "DS_DG", "DS_DL")
POSITIONS = ("DP_AG", "DP_AL", "DP_DG", "DP_DL")
COLUMNS = ("gene", "strand", *SCORES, *POSITIONS)
INFO = InfoField(
    "SpliceAI", ".", "String",
    "SpliceAIv1.3.1 variant annotation. These include delta scores (DS) and delta positions (DP) for acceptor "
    "gain (AG), acceptor loss (AL), donor gain (DG), and donor loss (DL). "
    "Format: ALLELE|SYMBOL|DS_AG|DS_AL|DS_DG|DS_DL|DP_AG|DP_AL|DP_DG|DP_DL")
_INSTALL = "run `pip install spliceai` (varfx reads its files and never imports it)"


# ---------------------------------------------------------------------------------------------------------------------
# Finding the package's files


def package_dir() -> Path | None:
    """The installed ``spliceai`` package's folder, found without importing it (it imports Keras)."""
    spec = importlib.util.find_spec("spliceai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def model_files(weights: list[str] | None) -> list[Path]:
    """``--weights`` (files, or folders of .h5 files) or else the package's five models."""
    if weights:
        paths = []
        for w in map(Path, weights):
            if w.is_dir():
                found = sorted(w.glob("*.h5"))
                if not found:
                    raise InputError(f"--weights {w}: the folder has no .h5 files (SpliceAI's are spliceai1.h5 … "
                                     "spliceai5.h5)")
                paths += found
            elif w.is_file():
                paths.append(w)
            else:
                raise InputError(f"--weights {w}: no such file or folder")
        return paths
    folder = package_dir()
    paths = [folder / "models" / name for name in MODEL_FILES] if folder else []
    if not paths or not all(p.is_file() for p in paths):
        raise ModelError(f"the SpliceAI models were not found: {_INSTALL}, or pass --weights FOLDER "
                         "holding spliceai1.h5 … spliceai5.h5")
    return paths


def annotation_file(annotation: str | None) -> Path:
    """``--annotation grch37|grch38`` (the package's tables) or the path of a table in their format."""
    if not annotation:
        raise OptionError("the spliceai backend needs --annotation: grch37, grch38 (the tables that come with "
                          "the spliceai package) or a gene table in the same format")
    if annotation.lower() in ANNOTATIONS:
        folder = package_dir()
        path = folder / "annotations" / f"{annotation.lower()}.txt" if folder else None
        if path is None or not path.is_file():
            raise InputError(f"--annotation {annotation}: the table comes with the spliceai package: {_INSTALL}, "
                             "or pass --annotation PATH")
        return path
    path = Path(annotation)
    if not path.is_file():
        raise InputError(f"--annotation {annotation}: no such file (give grch37, grch38 or a gene table)")
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The backend


class SpliceAIBackend(Backend):
    """The SpliceAI ensemble: (batch, L, 4) -> (batch, L - 10,000, 3), the mean of the models."""

    name = "spliceai"
    summary = "SpliceAI delta scores (the 5 published models, run in PyTorch) per variant and gene"
    needs = ("--annotation grch37|grch38|GENES.txt (models: the installed spliceai package, or --weights "
             "FOLDER|H5…); --distance D [50], --mask, --out-vcf")
    encoding = "one-hot"
    strand_pairs: list = []
    #: every position outside the gene's transcript is N in SpliceAI's window anyway (docs/spliceai.md)
    default_short_contigs = "pad"

    def __init__(self, weights: list[str] | None = None, distance: int = DEFAULT_DISTANCE, **options):
        super().__init__()
        reject_options(self.name, options)
        self.weight_files = model_files(weights)
        self.models = load_models(self.weight_files)
        self.tracks = tracks_table(TRACKS)
        self.geometry = _geometry(CONTEXT + 2 * check_distance(distance) + 1)

    @classmethod
    def track_table(cls, weights: list[str], spec: str | None = None, **options) -> pd.DataFrame:
        reject_options(cls.name, {"spec": spec, **options})
        return tracks_table(TRACKS)

    def sized(self, length: int) -> "SpliceAIBackend":
        """The same models for inputs of ``length`` bp (ALT windows of indels differ in length)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.geometry = _geometry(length)
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for model in self.models:
            y = model(x)[0]
            total = y if total is None else total + y
        return total / len(self.models)

    def to(self, device) -> "SpliceAIBackend":
        for model in self.models:
            model.to(device)
        return self

    def settings(self) -> dict:
        return {"models": len(self.models)}


def load_models(paths: list[Path]) -> list[torch.nn.Module]:
    """The Keras models converted to PyTorch (varfx.backends.keras), in eval mode; each must map
    (length, 4) to (length − 10,000, 3) as SpliceAI's do."""
    from .keras import load_keras_h5

    models = [load_keras_h5(p) for p in paths]
    for path, model in zip(paths, models):
        if model.input_shapes != [(None, 4)] or model.output_shapes[:1] != [(None, 3)]:
            raise ModelError(f"{path} is not a SpliceAI model: it maps {model.input_shapes} to "
                             f"{model.output_shapes}, SpliceAI's map (any length, 4) to (length − 10,000, 3)")
    return [model.eval() for model in models]


def _geometry(length: int) -> Geometry:
    return Geometry(length, length - CONTEXT, 1, CONTEXT // 2)


def check_distance(distance: int | None) -> int:
    distance = DEFAULT_DISTANCE if distance is None else distance
    if not 0 <= distance <= MAX_DISTANCE:
        raise OptionError(f"--distance {distance}: give a number of bp from 0 to {MAX_DISTANCE} (SpliceAI's range)")
    return distance


# ---------------------------------------------------------------------------------------------------------------------
# Delta scores


@dataclass(frozen=True)
class DeltaScores:
    """One (ALT, gene): the four delta scores (unrounded) and their positions relative to POS."""

    ds: np.ndarray  # float32 (4,): AG, AL, DG, DL
    dp: np.ndarray  # int32 (4,)

    def info(self, alt: str, gene: str) -> str:
        """The package's text: ``ALT|GENE|DS_AG|DS_AL|DS_DG|DS_DL|DP_AG|DP_AL|DP_DG|DP_DL``, DS to 2 decimals."""
        return "|".join([alt, gene, *(f"{float(v):.2f}" for v in self.ds), *(str(int(p)) for p in self.dp)])


def unscored_info(alt: str, gene: str) -> str:
    """What the package writes for an ALT it does not score in a gene (REF and ALT both > 1 bp)."""
    return f"{alt}|{gene}|.|.|.|.|.|.|.|."


def align_alt(y_alt: np.ndarray, ref_len: int, alt_len: int, distance: int) -> np.ndarray:
    """ALT output (2D + 1 + len(ALT) − len(REF), 3) -> (2D + 1, 3) aligned with the REF output.

    Deletion: zeros for the deleted bases after D + len(ALT); insertion: the inserted
    positions D … D + len(ALT) − 1 reduced to their maximum.
    """
    if ref_len > 1 and alt_len == 1:
        zeros = np.zeros((ref_len - alt_len, y_alt.shape[1]), dtype=y_alt.dtype)
        cut = distance + alt_len
        return np.concatenate([y_alt[:cut], zeros, y_alt[cut:]])
    if ref_len == 1 and alt_len > 1:
        return np.concatenate([y_alt[:distance], y_alt[distance:distance + alt_len].max(0, keepdims=True),
                               y_alt[distance + alt_len:]])
    return y_alt


def delta_scores(y_ref: np.ndarray, y_alt: np.ndarray, distance: int, nearest_boundary: int,
                 mask: bool) -> DeltaScores:
    """Largest acceptor/donor gain and loss within ±D of the variant (REF and aligned ALT outputs,
    (2D + 1, 3) each), masked as ``spliceai -M 1`` does when ``mask``."""
    changes = np.stack([y_alt[:, 1] - y_ref[:, 1], y_ref[:, 1] - y_alt[:, 1],
                        y_alt[:, 2] - y_ref[:, 2], y_ref[:, 2] - y_alt[:, 2]])
    idx = changes.argmax(1)
    dp = (idx - distance).astype(np.int32)
    at_site = dp == nearest_boundary
    masked = np.array([at_site[0], ~at_site[1], at_site[2], ~at_site[3]]) & mask
    ds = changes[np.arange(4), idx] * (1 - masked).astype(changes.dtype)  # keeps the sign of a masked −0.00
    return DeltaScores(ds.astype(np.float32), dp)


# ---------------------------------------------------------------------------------------------------------------------
# Windows and predictions


def alt_window(ref: np.ndarray, ref_allele: str, alt: str) -> np.ndarray:
    """The (masked) REF window with ALT in place of REF: longer or shorter for indels, nothing refilled."""
    c = ref.shape[0] // 2
    return np.concatenate([ref[:c], encode(alt), ref[c + len(ref_allele):]])


def predict(backend: SpliceAIBackend, seqs: list[np.ndarray], minus: list[bool], device: torch.device,
            precision: str, batch_size: int) -> list[np.ndarray]:
    """Forward-strand (len − 10,000, 3) predictions for base-code sequences of any lengths; those
    of − strand genes are run on the reverse complement and flipped back."""
    out: list[np.ndarray | None] = [None] * len(seqs)
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(seqs):
        by_length.setdefault(s.shape[0], []).append(i)
    for length, rows in by_length.items():
        codes = np.stack([revcomp_codes(seqs[i]) if minus[i] else seqs[i] for i in rows])
        predictor = Predictor(backend.sized(length), device, precision, batch_size)
        with _ieee_fp32(device, precision):
            y = predictor.predict_windows(codes).cpu().numpy()  # windows of one length, REF and ALT alike
        for k, i in enumerate(rows):
            out[i] = y[k, ::-1] if minus[i] else y[k]
    return out


@contextlib.contextmanager
def _ieee_fp32(device: torch.device, precision: str):
    """With --precision fp32 on CUDA, convolutions in true float32 (cuDNN's default is TF32, whose
    10-bit mantissa moves delta scores by ~1e-3); the setting is restored afterwards."""
    if device.type != "cuda" or precision != "fp32":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    owner, name, value = ((conv, "fp32_precision", "ieee") if hasattr(conv, "fp32_precision")
                          else (torch.backends.cudnn, "allow_tf32", False))  # torch < 2.9
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@dataclass(frozen=True)
class Settings:
    """What a run was asked for (besides its files)."""

    distance: int = DEFAULT_DISTANCE
    mask: bool = False
    ref_mismatch: str = "skip"
    short_contigs: str = "error"
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    batch_size: int = 64

    @property
    def window(self) -> int:
        return CONTEXT + 2 * self.distance + 1


class _Scorer:
    """Checks sites and scores their ALTs in every gene containing them, a batch of sites at a time."""

    def __init__(self, backend: SpliceAIBackend, genome: Genome, table: GeneTable, settings: Settings):
        self.backend, self.genome, self.table, self.settings = backend, genome, table, settings
        self.distance, self.mask = settings.distance, settings.mask
        self.geometry = _geometry(settings.window)

    def prepare(self, site: Site) -> list[int]:
        """Apply the checks (moving failing ALTs to ``site.skipped``); the genes that get an INFO entry."""
        check_sites(self.genome, [site], self.geometry, 0, self.settings.ref_mismatch, self.settings.short_contigs)
        if not site.alts:
            return []
        genes = self.table.genes_at(site)
        if not genes:
            site.skip_all("no_gene")
        elif len(site.ref) > 2 * self.distance:
            site.skip_all("spliceai_ref_too_long")
            genes = []
        elif len(site.ref) > 1:
            site.skipped.extend((i, a, "spliceai_mnv") for i, a in site.alts if len(a) > 1)
            site.alts = [(i, a) for i, a in site.alts if len(a) == 1]
            site.skipped.sort()
        return genes

    def score(self, sites: list[tuple[Site, list[int]]]) -> list[dict[int, list[DeltaScores]]]:
        """Per site: ALT index -> one :class:`DeltaScores` per gene (in ``genes`` order)."""
        seqs, minus, plan = [], [], []
        wid = self.geometry.input_length
        for site, genes in sites:
            if not site.alts:
                plan.append([])
                continue
            start = np.array([site.pos - 1 - wid // 2])
            codes = self.genome.windows(site.contig, start, wid)[0]
            pairs = []
            for row in genes:
                ref = gene_window(codes, site.pos, int(self.table.tx_start[row]), int(self.table.tx_end[row]))
                pairs.append((row, len(seqs)))
                seqs += [ref] + [alt_window(ref, site.ref, alt) for _, alt in site.alts]
                minus += [self.table.strands[row] == "-"] * (1 + len(site.alts))
            plan.append(pairs)
        opt = self.settings
        preds = predict(self.backend, seqs, minus, opt.device, opt.precision, opt.batch_size) if seqs else []
        results = []
        for (site, _), pairs in zip(sites, plan):
            per_alt: dict[int, list[DeltaScores]] = {i: [] for i, _ in site.alts}
            for row, first in pairs:
                boundary = self.table.nearest_boundary(row, site.pos)
                for k, (i, alt) in enumerate(site.alts):
                    y_alt = align_alt(preds[first + 1 + k], len(site.ref), len(alt), self.distance)
                    per_alt[i].append(delta_scores(preds[first], y_alt, self.distance, boundary, self.mask))
            results.append(per_alt)
        return results


# ---------------------------------------------------------------------------------------------------------------------
# Outputs


class SpliceAIH5Writer(H5Writer):
    """varfx's HDF5 layout (variant identifiers, ``skipped`` group, run metadata) with one row per
    (ALT, gene): ``gene``, ``strand``, ``DS_*`` (float32) and ``DP_*`` (int32) instead of tracks."""

    def __init__(self, path, attrs: dict):
        super().__init__(path, [], [], (), attrs, float32=True)
        for name in ("gene", "strand"):
            self.f.create_dataset(name, (0,), maxshape=(None,), dtype=STR, chunks=(4096,))
        for name in SCORES:
            self.f.create_dataset(name, (0,), maxshape=(None,), dtype=np.float32, chunks=(4096,))
        for name in POSITIONS:
            self.f.create_dataset(name, (0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))

    def write(self, rows: VariantRows, block: dict) -> None:
        super().write(rows, {})
        for name in COLUMNS:
            append_rows(self.f[name], list(block[name]) if name in ("gene", "strand") else block[name])


class SpliceAITSVWriter(TextTable):
    """One row per (ALT, gene): chrom pos id ref alt gene strand DS_AG … DS_DL DP_AG … DP_DL."""

    def __init__(self, path):
        super().__init__(path, ["chrom", "pos", "id", "ref", "alt", *COLUMNS])

    def write(self, rows: VariantRows, block: dict) -> None:
        if not len(rows):
            return
        ds = format_values(np.stack([block[s] for s in SCORES], 1))
        dp = np.stack([block[p] for p in POSITIONS], 1).astype(str)
        self.fh.writelines(
            "\t".join([c, str(p), i, r, a, g, s, *d, *q]) + "\n"
            for c, p, i, r, a, g, s, d, q in zip(rows.chrom, rows.pos.tolist(), rows.id, rows.ref, rows.alt,
                                                 block["gene"], block["strand"], ds, dp))


@dataclass
class SpliceAIScores:
    """A spliceai scores file read back: one row per (ALT, gene), the skipped ALTs, the settings."""

    scores: pd.DataFrame  # snp chrom pos id ref alt record alt_index gene strand DS_* DP_*
    skipped: pd.DataFrame
    settings: dict


def read_spliceai(path) -> SpliceAIScores:
    """Read ``varfx score --backend spliceai --out`` back (``varfx.read_scores`` reads the same
    file but knows no genes or delta scores)."""
    base = read_scores(path)
    table = base.variants
    with open_complete(path) as f:
        for name in COLUMNS:
            table[name] = strings(f[name]) if name in ("gene", "strand") else f[name][:]
    return SpliceAIScores(table, base.skipped, base.settings)


# ---------------------------------------------------------------------------------------------------------------------
# The run


def _reject_generic(bins, stats, pseudocount, rc, shifts, tracks, tsv_long, options) -> None:
    """Options of `varfx score` that mean nothing here: a one-line error when set."""
    given = {"bins": bins, "stat": stats or None, "tracks": tracks, "tsv_long": tsv_long,
             "rc": rc or None, "pseudocount": None if pseudocount == 1.0 else pseudocount,
             "shifts": None if shifts in (None, "", "0", 0, (0,), [0]) else shifts, **options}
    reject_options("spliceai", given)


def _outputs(out, tsv, skipped_tsv, out_vcf):
    """Checked output paths; the skipped-variant TSV defaults to beside --tsv or --out-vcf without --out."""
    if out is None and tsv is None and out_vcf is None:
        raise OptionError("nothing to write: give --out scores.h5, --tsv scores.tsv and/or --out-vcf scored.vcf.gz")
    out, tsv, out_vcf = check_out(out, "--out"), check_out(tsv, "--tsv"), check_out(out_vcf, "--out-vcf")
    if out_vcf is not None:
        vcf_mode(out_vcf)
    if skipped_tsv is None and out is None:
        table = tsv or out_vcf
        stem = re.sub(r"(\.tsv|\.vcf(\.gz|\.bgz)?|\.bcf)$", "", table.name)
        skipped_tsv = table.with_name(stem + ".skipped.tsv")
    skipped_tsv = check_out(skipped_tsv, "--skipped-tsv")
    named = [p.resolve() for p in (out, tsv, out_vcf, skipped_tsv) if p is not None]
    if len(set(named)) != len(named):
        raise OptionError("--out, --tsv, --out-vcf and --skipped-tsv must be different files")
    return out, tsv, skipped_tsv, out_vcf


def _info(site: Site, genes: list[int], table: GeneTable, scored: dict[int, list[DeltaScores]]) -> dict:
    """The record's SpliceAI INFO value: ALT-major, genes in table order; none when it has no entry."""
    entries = []  # (ALT index, gene, delta scores or None)
    mnv = {i for i, _, reason in site.skipped if reason == "spliceai_mnv"}
    for i, _ in sorted([*site.alts, *((i, a) for i, a, _ in site.skipped if i in mnv)]):
        for k, row in enumerate(genes):
            entries.append((i, str(table.names[row]), scored[i][k] if i in scored else None))
    if not entries:
        return {}

    def text(rec) -> str:  # the ALT as the record writes it (the package copies it, lower case included)
        return ",".join(unscored_info(rec.ALT[i], name) if ds is None else ds.info(rec.ALT[i], name)
                        for i, name, ds in entries)
    return {INFO.id: text}


def score_spliceai(vcf, fasta, *, weights=None, out=None, tsv=None, tsv_long=None, skipped_tsv=None, out_vcf=None,
                   region=None, ref_mismatch: str = "skip", short_contigs: str = "error", bins=None, stats=None,
                   pseudocount: float = 1.0, rc: bool = False, shifts=None, tracks=None, batch_size: int = 64,
                   device: str = "auto", precision: str = "fp32", float32: bool = False, quiet: bool = True,
                   annotation: str | None = None, distance: int | None = None, mask: bool | None = None,
                   write_chunk: int = 4096, **options):
    """Score every ALT of a VCF with SpliceAI in each gene that contains it; see the module docstring.

    Returns a :class:`varfx.run.RunSummary`.  DS values are always stored as float32
    (``float32`` is accepted and changes nothing).
    """
    t0 = time.perf_counter()
    _reject_generic(bins, stats, pseudocount, rc, shifts, tracks, tsv_long, options)
    if precision not in PRECISIONS:
        raise OptionError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise OptionError("--batch-size must be at least 1")
    if ref_mismatch not in REF_POLICIES:
        raise OptionError(f"--ref-mismatch {ref_mismatch!r} is not one of {', '.join(REF_POLICIES)}")
    if short_contigs not in SHORT_CONTIG_POLICIES:
        raise OptionError(f"--short-contigs {short_contigs!r} is not one of {', '.join(SHORT_CONTIG_POLICIES)}")
    settings = Settings(check_distance(distance), bool(mask), ref_mismatch, short_contigs, resolve_device(device),
                        precision, batch_size)
    ann = annotation_file(annotation)
    outputs = _outputs(out, tsv, skipped_tsv, out_vcf)
    table = GeneTable(ann)
    genome = Genome(fasta)
    try:
        reader = VariantReader(Path(vcf), genome.resolve, regions=[region] if isinstance(region, str) else region)
    except BaseException:
        genome.close()
        raise
    try:
        backend = SpliceAIBackend(weights, settings.distance).to(settings.device)
        scorer = _Scorer(backend, genome, table, settings)
        check_short_contigs(reader, genome, scorer.geometry, settings.short_contigs)
        attrs = _metadata(reader, genome, backend, settings, annotation, ann)
        return _run(reader, scorer, outputs, attrs, quiet, write_chunk, t0)
    finally:
        reader.close()
        genome.close()


def _metadata(reader: VariantReader, genome: Genome, backend: SpliceAIBackend, settings: Settings,
              annotation: str, ann: Path) -> dict:
    """The run's settings and input hashes, stored as HDF5 attributes."""
    return {
        "varfx_version": __version__, "backend": backend.name, "weights": [str(p) for p in backend.weight_files],
        "weights_sha256": [sha256(p) for p in backend.weight_files], "vcf": str(reader.path),
        "vcf_sha256": sha256(reader.path), "region": list(reader.regions), "fasta": str(genome.path),
        "fasta_fai_sha256": sha256(Path(str(genome.path) + ".fai")), "annotation": annotation,
        "annotation_file": str(ann), "annotation_sha256": sha256(ann), "distance": settings.distance,
        "mask": settings.mask, "window_length": settings.window, "ref_mismatch": settings.ref_mismatch,
        "short_contigs": settings.short_contigs, "stats": [], "columns": list(COLUMNS),
        "precision": settings.precision, "device": str(settings.device), "torch_version": torch.__version__,
    }


def _run(reader: VariantReader, scorer: _Scorer, outputs: tuple, attrs: dict, quiet: bool, write_chunk: int,
         t0: float):
    """Read, check and score sites a work unit at a time; write rows, skipped ALTs and VCF records."""
    out, tsv, skipped_tsv, out_vcf = outputs
    summary = RunSummary()
    writers = []
    try:
        if out is not None:
            writers.append(SpliceAIH5Writer(out, attrs))
        if tsv is not None:
            writers.append(SpliceAITSVWriter(tsv))
        if skipped_tsv is not None:
            writers.append(SkippedTSVWriter(skipped_tsv))
        annotated = None
        if out_vcf is not None:
            annotated = AnnotatedVCFWriter(reader.path, out_vcf, [INFO], reader.queries)
            writers.append(annotated)
        scored, skipped = RowBuffer(), RowBuffer()
        tables = [w for w in writers if w is not annotated]
        bar = tqdm(unit=" variants", disable=quiet, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        for batch in _work_units(reader, scorer, work_unit(scorer.settings.batch_size, scorer.settings.window)):
            for (site, genes), per_alt in zip(batch, scorer.score(batch)):
                _add_rows(site, genes, per_alt, scorer.table, scored, skipped, summary)
                if annotated is not None:
                    annotated.write(site.chrom, site.pos, _info(site, genes, scorer.table, per_alt))
                bar.update(len(site.alts) + len(site.skipped))
            if len(scored) >= write_chunk:
                write_scored(tables, scored)
            if len(skipped) >= write_chunk:
                write_skipped(tables, skipped)
        write_scored(tables, scored)
        write_skipped(tables, skipped)
        bar.close()
        finish_run(writers, summary, reader, t0)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return summary


def _work_units(reader: VariantReader, scorer: _Scorer, unit: int):
    """Checked sites with their genes, in input order, in lists of about ``unit`` sequences to predict."""
    batch, seqs = [], 0
    for site in reader:
        genes = scorer.prepare(site) if site.alts else []
        batch.append((site, genes))
        seqs += len(genes) * (1 + len(site.alts)) if site.alts else 0
        if seqs >= unit or len(batch) >= unit:
            yield batch
            batch, seqs = [], 0
    if batch:
        yield batch


def _add_rows(site: Site, genes: list[int], per_alt: dict[int, list[DeltaScores]], table: GeneTable,
              scored, skipped, summary) -> None:
    """A site's rows: one per (scored ALT, gene) in ``scored``, one per skipped ALT in ``skipped``; counted."""
    for i, alt, reason in site.skipped:
        skipped.add(site, i, alt, reason)
        summary.skipped[reason] += 1
    summary.variants += len(site.alts) + len(site.skipped)
    summary.scored += len(site.alts)
    if not site.alts:
        return
    pairs = [(alt, row, res) for i, alt in site.alts for row, res in zip(genes, per_alt[i])]
    for i, alt in site.alts:
        for _ in genes:
            scored.add(site, i, alt)
    ds = np.stack([res.ds for _, _, res in pairs])
    dp = np.stack([res.dp for _, _, res in pairs])
    scored.scores.append({"gene": np.array([str(table.names[r]) for _, r, _ in pairs], dtype=object),
                          "strand": np.array([str(table.strands[r]) for _, r, _ in pairs], dtype=object),
                          **{name: ds[:, k] for k, name in enumerate(SCORES)},
                          **{name: dp[:, k] for k, name in enumerate(POSITIONS)}})


SpliceAIBackend.score_vcf = staticmethod(score_spliceai)
