"""Calibration: percentiles of variant scores against a background of random SNVs (docs/calibration.md).

``varfx calibrate`` draws a background (random SNVs from the genome, optionally matched on
transition/transversion and flank-GC to a query VCF) or takes one as given, scores it through
:func:`varfx.run.score_vcf` with the same model options a run uses, pools the rows of one or more
finished background score files and stores, per statistic and track, quantiles of |score| in
``cal.h5``.  ``varfx score --calibration cal.h5`` then adds ``STAT_pct = sign(s) · 100 · F(|s|)``.

Quantile rule.  With ``b_(1) ≤ … ≤ b_(n)`` a track's sorted |background scores| (NaN left out) and
``Q = min(--quantiles, background size)``, the file stores ``q_i = b_(⌈i·n/Q⌉)``, i = 1…Q.  A run's
percentile is ``F(x) = #{i : q_i ≤ x} / Q``, which equals ``⌊Q · #{b ≤ x} / n⌋ / Q``: the empirical
CDF (ties counted as "at or below") rounded down to a multiple of 1/Q, exact when n ≤ Q.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .background import Background, background_features, draw_background, read_recipe, ti_tv, write_background_vcf
from .errors import InputError, OptionError
from .genome import Genome
from .writers import STR, partial_path

FORMAT = 1  # the cal.h5 layout version (attribute varfx_calibration)
DEFAULT_QUANTILES = 1000  # percentiles to 0.1
#: run settings a calibration and a scoring run must share (besides backend_* settings, stats and tracks)
MATCHED = ("backend", "weights_sha256", "encoding", "window_length", "window_center_index", "output_bins",
           "bin_size", "bin_offset", "bins", "rc", "shifts", "precision", "pseudocount", "profile_tracks")


# -- cal.h5: pooled quantiles ----------------------------------------------------------------------------------------


def _plain(v):
    return json.loads(json.dumps(v, default=str))


def matched_settings(settings: dict) -> dict:
    """The settings of a scores file that its percentiles depend on."""
    out = {k: settings.get(k) for k in MATCHED}
    out.update({k: v for k, v in settings.items() if k.startswith("backend_")})
    return _plain(out)


def _string_list(ds) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in ds[()]]


def _open_scores(path, stack: ExitStack):
    from .results import open_complete, require_variant_scores

    path = Path(path)
    if path.is_file() and h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if "varfx_calibration" in f.attrs:
                raise InputError(f"{path} is a calibration, not background scores: give the score files of the "
                                 "background runs")
    f = stack.enter_context(open_complete(path))
    require_variant_scores(f, path, "a calibration")
    settings = json.loads(f.attrs["settings"])
    if "samples" in f:
        raise InputError(f"{path} holds per-sample scores (--genotypes): calibrate from runs without --genotypes")
    return f, settings


def _check_sources(files: list[tuple[Path, h5py.File, dict]]) -> None:
    """Background score files pooled together: scored the same way; shards of one run complete, none twice."""
    p0, f0, s0 = files[0]
    want = (matched_settings(s0), s0["stats"], _string_list(f0["target_ids"]))
    groups: dict[tuple, list] = {}
    for p, f, s in files:
        got = (matched_settings(s), s["stats"], _string_list(f["target_ids"]))
        if got != want:
            key = next((k for k in want[0] if want[0][k] != got[0].get(k)), None) or (
                "stats" if got[1] != want[1] else "tracks")
            raise InputError(f"{p} and {p0} were scored with different settings ({key}): pool background runs "
                             "made with the same model options")
        shard = f.attrs.get("shard", "")
        shard = shard.decode() if isinstance(shard, bytes) else str(shard)
        groups.setdefault((s.get("vcf_sha256"), json.dumps(s.get("region"))), []).append((p, shard))
    from .blocks import parse_shard

    for members in groups.values():
        plain = [p for p, sh in members if not sh]
        shards = [(p, parse_shard(sh)) for p, sh in members if sh]
        if len(plain) > 1 or (plain and shards):
            other = (plain + [p for p, _ in shards])[1]
            raise InputError(f"{plain[0]} and {other} score the same background VCF: give each background once "
                             "(its unsharded run or all of its shards)")
        if shards:
            n = shards[0][1][1]
            seen: dict[int, Path] = {}
            for p, (k, m) in shards:
                if m != n:
                    raise InputError(f"{p} is a shard of {m} but {shards[0][0]} of {n}: give the shards of one run")
                if k in seen:
                    raise InputError(f"shard {k}/{n} of one background is given twice ({seen[k]}, {p})")
                seen[k] = p
            missing = [k for k in range(1, n + 1) if k not in seen]
            if missing:
                raise InputError(f"shard {missing[0]}/{n} of the background scored in {shards[0][0]} is missing: "
                                 f"give all {n} shards")


def _slabs(datasets: list, budget: int):
    """(first track, last track + 1, (rows, tracks) float32 values of every dataset's rows) in slabs of tracks.

    Everything at once when it fits in ``budget`` bytes; otherwise the rows are read once, block by block,
    into a track-major scratch file (beside the system's temporary files) that the slabs are cut from."""
    rows = sum(ds.shape[0] for ds in datasets)
    if datasets[0].ndim == 1 or rows * datasets[0].shape[1] * 4 <= budget:
        vals = np.concatenate([ds[()].astype(np.float32) for ds in datasets])
        yield 0, (1 if vals.ndim == 1 else vals.shape[1]), (vals[:, None] if vals.ndim == 1 else vals)
        return
    tracks = datasets[0].shape[1]
    with tempfile.TemporaryFile() as fh:
        mm = np.memmap(fh, dtype=np.float32, mode="w+", shape=(tracks, rows))
        at = 0
        for ds in datasets:
            step = max(1, budget // (8 * tracks))
            for lo in range(0, ds.shape[0], step):
                block = ds[lo:lo + step].astype(np.float32)
                mm[:, at:at + block.shape[0]] = block.T
                at += block.shape[0]
        step = max(1, budget // (4 * rows))
        for a in range(0, tracks, step):
            b = min(tracks, a + step)
            yield a, b, np.array(mm[a:b]).T
        del mm


def pooled_quantiles(datasets: list, q_max: int, budget: int = 1 << 30) -> tuple[np.ndarray, np.ndarray, int]:
    """Quantiles of |values| over the rows of all ``datasets`` pooled: ((Q, T) or (Q,) float32, finite counts, Q).

    q_i = the ⌈i·n_t/Q⌉-th smallest |value| of the track (n_t its non-NaN values), i = 1…Q,
    Q = min(q_max, rows).  Independent of the order of the datasets and of their rows."""
    rows = sum(ds.shape[0] for ds in datasets)
    q = min(q_max, rows)
    profile = datasets[0].ndim == 1
    tracks = 1 if profile else datasets[0].shape[1]
    out = np.full((q, tracks), np.nan, dtype=np.float32)
    finite = np.zeros(tracks, dtype=np.int64)
    i = np.arange(1, q + 1, dtype=np.int64)[:, None]
    for a, b, vals in _slabs(datasets, budget):
        vals = np.sort(np.abs(vals), axis=0)  # NaN last
        n_t = (~np.isnan(vals)).sum(0)
        idx = np.maximum((i * n_t[None, :] + q - 1) // q - 1, 0)
        got = np.take_along_axis(vals, idx, axis=0)
        got[:, n_t == 0] = np.nan
        out[:, a:b], finite[a:b] = got, n_t
    return (out[:, 0] if profile else out), (finite[0] if profile else finite), q


def build_calibration(sources, out, quantiles: int = DEFAULT_QUANTILES, fasta=None) -> dict:
    """Pool the rows of finished background score files and write ``out`` (cal.h5); return its attributes."""
    from .run import check_out, sha256

    if not sources:
        raise OptionError("--from needs the background score files (the --out/--scores of background runs)")
    if quantiles < 1:
        raise OptionError(f"--quantiles {quantiles}: store at least 1 quantile per track")
    out = check_out(Path(out), "--out")
    sources = [Path(p) for p in sources]
    if out.resolve() in {p.resolve() for p in sources}:
        raise OptionError("--out must not be one of the background score files")
    with ExitStack() as stack:
        files = []
        for p in sources:
            f, s = _open_scores(p, stack)
            files.append((p, f, s))
        _check_sources(files)
        p0, f0, s0 = files[0]
        stats = list(s0["stats"])
        n = sum(f["snp"].shape[0] for _, f, _ in files)
        if n == 0:
            raise InputError(f"the background ({', '.join(map(str, sources))}) has no scored variant")
        genome = None
        fa = Path(fasta) if fasta is not None else Path(s0.get("fasta", ""))
        if fa.is_file() and Path(str(fa) + ".fai").is_file() and (
                fasta is not None or sha256(Path(str(fa) + ".fai")) == s0.get("fasta_fai_sha256")):
            genome = stack.enter_context(Genome(fa))
        strings = lambda key: [x for _, f, _ in files for x in _string_list(f[key])]
        realized = background_features(strings("chr"), np.concatenate([f["pos"][()] for _, f, _ in files]),
                                       strings("ref_allele"), strings("alt_allele"), genome)
        recipes = {}
        for p, f, s in files:
            vcf = Path(s.get("vcf", ""))
            if s.get("vcf_sha256") not in recipes and vcf.is_file() and sha256(vcf) == s.get("vcf_sha256"):
                recipes[s["vcf_sha256"]] = read_recipe(vcf)
        tmp = partial_path(out)
        try:
            with h5py.File(tmp, "w") as g:
                g.attrs["complete"] = False
                q = None
                for stat in stats:
                    vals, finite, q = pooled_quantiles([f[stat] for _, f, _ in files], quantiles)
                    g.create_dataset(f"quantiles/{stat}", data=vals)
                    g.create_dataset(f"n_finite/{stat}", data=finite)
                g.create_dataset("levels", data=np.arange(1, q + 1) / q)
                g.create_dataset("target_ids", data=np.array(_string_list(f0["target_ids"]), dtype=object), dtype=STR)
                g.create_dataset("target_labels", data=np.array(_string_list(f0["target_labels"]), dtype=object),
                                 dtype=STR)
                attrs = {
                    "varfx_calibration": FORMAT, "varfx_version": __version__, "background_size": n,
                    "background_skipped": sum(int(f.attrs.get("variants_skipped", 0)) for _, f, _ in files),
                    "quantile_count": q, "stats": stats,
                    "calibration_settings": {**matched_settings(s0), "stats": stats,
                                             "track_ids": _string_list(f0["target_ids"])},
                    "features": {"drawn_with": [r for r in recipes.values()], "background": realized},
                    "sources": [{"path": str(p), "sha256": sha256(p), "vcf": s.get("vcf"),
                                 "vcf_sha256": s.get("vcf_sha256"), "shard": str(f.attrs.get("shard", "")),
                                 "variants_scored": int(f.attrs.get("variants_scored", 0)),
                                 "dtype": str(f[stats[0]].dtype)} for p, f, s in files],
                    "background_settings": _plain(s0),
                    "percentile_rule": "pct = sign(s) * 100 * #{i: q_i <= |s|} / Q, q_i = ceil(i*n/Q)-th smallest |b|",
                }
                for k, v in attrs.items():
                    g.attrs[k] = json.dumps(_plain(v), ensure_ascii=False) if isinstance(v, (dict, list)) else v
                g.attrs["complete"] = True
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return attrs


# -- percentiles in a scoring run -------------------------------------------------------------------------------------


def percentiles(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """sign(s) · 100 · #{i : q_i ≤ |s|} / Q for (V, T) values against (Q, T) quantiles, or (V,) against (Q,).

    Tracks without background values (all-NaN quantiles) and NaN scores give NaN."""
    qs = np.asarray(quantiles, dtype=np.float32)
    return _percentiles(values, np.ascontiguousarray(qs.T) if qs.ndim == 2 else qs)


def _percentiles(values, tq: np.ndarray) -> np.ndarray:
    """:func:`percentiles` with the quantiles track-major: (T, Q) contiguous, or (Q,)."""
    import torch

    v = np.asarray(values, dtype=np.float32)
    q = tq.shape[-1]
    empty = np.isnan(tq).all(-1) if q else np.ones(tq.shape[:-1], bool)
    if v.ndim == 1:
        count = np.searchsorted(tq, np.abs(v), side="right") if not empty else np.zeros(v.shape, np.int64)
    else:
        count = torch.searchsorted(torch.from_numpy(tq), torch.from_numpy(np.ascontiguousarray(np.abs(v).T)),
                                   right=True).numpy().T
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.sign(v) * (100.0 * count / max(q, 1))
    return np.where(empty, np.nan, pct).astype(np.float32)


@dataclass
class Calibration:
    """A cal.h5 file: its settings, size and quantiles (read lazily per statistic)."""

    path: Path
    settings: dict
    stats: list[str]
    track_ids: list[str]
    size: int
    q: int
    sha256: str

    def quantiles(self, stat: str) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return f[f"quantiles/{stat}"][()]


def open_calibration(path) -> Calibration:
    from .run import sha256

    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration file not found: {path} (make one with `varfx calibrate`)")
    try:
        with h5py.File(path, "r") as f:
            if "varfx_calibration" not in f.attrs:
                hint = (f": it is a scores file; make a calibration from it with `varfx calibrate --from {path} "
                        "--out cal.h5`" if "settings" in f.attrs and "snp" in f
                        else ": it is another kind of varfx output" if "settings" in f.attrs
                        else " (made by `varfx calibrate`)")
                raise InputError(f"{path} is not a varfx calibration file{hint}")
            if int(f.attrs["varfx_calibration"]) != FORMAT or not bool(f.attrs.get("complete", False)):
                raise InputError(f"{path} is an unfinished calibration or of another varfx version: make it again")
            settings = json.loads(f.attrs["calibration_settings"])
            cal = Calibration(path, settings, list(settings["stats"]), list(settings["track_ids"]),
                              int(f.attrs["background_size"]), int(f.attrs["quantile_count"]), "")
    except OSError as exc:
        raise InputError(f"{path} is not an HDF5 file ({exc}): give a calibration made by `varfx calibrate`")
    cal.sha256 = sha256(path)
    return cal


def _describe(key: str, v) -> str:
    if key == "rc":
        return "--rc" if v else "no --rc"
    if key == "shifts":
        return "--shifts " + ",".join(str(x) for x in (v or [0]))
    if key in ("backend", "bins", "precision"):
        return f"--{key} {v}"
    if key == "pseudocount":
        return f"--pseudocount {v:g}" if isinstance(v, (int, float)) else f"--pseudocount {v}"
    if key == "weights_sha256":
        return "weights/spec with sha256 " + ", ".join(str(x)[:12] for x in (v or []))
    if key == "profile_tracks":
        return "profile tracks " + (",".join(v) if v else "(none)")
    if key.startswith("backend_"):
        return f"backend setting {key[8:]}={v}"
    return f"{key} {v}"


@dataclass
class BoundCalibration:
    """A calibration checked against a run and cut to the run's tracks: adds ``STAT_pct`` to its scores."""

    cal: Calibration
    track_stats: tuple[str, ...]
    profile_stats: tuple[str, ...]
    quantiles: dict = field(default_factory=dict)  # stat -> (T_run, Q) contiguous, or (Q,)
    n_tracks: int = 0

    @property
    def track_names(self) -> tuple[str, ...]:
        return tuple(f"{s}_pct" for s in self.track_stats)

    @property
    def profile_names(self) -> tuple[str, ...]:
        return tuple(f"{s}_pct" for s in self.profile_stats)

    def datasets(self) -> dict:
        """The extra HDF5 datasets (H5Writer ``extra``): name -> (trailing shape, dtype)."""
        return {**{n: ((self.n_tracks,), np.float32) for n in self.track_names},
                **{n: ((), np.float32) for n in self.profile_names}}

    def percentiles(self, scores: dict) -> dict:
        return {f"{s}_pct": _percentiles(scores[s], self.quantiles[s]) for s in self.track_stats + self.profile_stats}

    def attrs(self) -> dict:
        return {"calibration": str(self.cal.path), "calibration_sha256": self.cal.sha256,
                "calibration_background_size": self.cal.size, "calibration_quantiles": self.cal.q}


def bind_calibration(cal: Calibration | str | os.PathLike, attrs: dict, track_ids: list[str],
                     track_stats: tuple[str, ...], profile_stats: tuple[str, ...]) -> BoundCalibration:
    """Check that a run (its output attributes) matches a calibration; map its tracks by id."""
    if not isinstance(cal, Calibration):
        cal = open_calibration(cal)
    name = cal.path.name
    mine, theirs = matched_settings(attrs), cal.settings
    stats = list(track_stats) + list(profile_stats)
    skip = set()
    if "logSED" not in stats and "logTOTAL" not in stats:
        skip.add("pseudocount")
    if not profile_stats:
        skip.add("profile_tracks")
    keys = [k for k in MATCHED if k not in skip]
    keys += sorted(k for k in set(mine) | set(theirs) if k.startswith("backend_"))
    for k in keys:
        if mine.get(k) != theirs.get(k):
            raise OptionError(f"{name} was made with {_describe(k, theirs.get(k))}, this run has "
                              f"{_describe(k, mine.get(k))}: score with the calibration's settings or calibrate "
                              "with the run's")
    for s in stats:
        if s not in cal.stats:
            raise OptionError(f"{name} has no statistic {s} (it has {', '.join(cal.stats)}): calibrate with "
                              f"--stat {','.join(stats)}")
    index = {t: i for i, t in enumerate(cal.track_ids)}
    missing = [t for t in track_ids if t not in index]
    if missing:
        raise OptionError(f"{name} has no track {missing[0]} ({len(missing)} of this run's tracks are not in it): "
                          "calibrate with these tracks, or choose a subset of the calibration's with --tracks")
    cols = [index[t] for t in track_ids]
    bound = BoundCalibration(cal, tuple(track_stats), tuple(profile_stats), n_tracks=len(track_ids))
    for s in track_stats:
        bound.quantiles[s] = np.ascontiguousarray(cal.quantiles(s)[:, cols].T.astype(np.float32))
    for s in profile_stats:
        bound.quantiles[s] = cal.quantiles(s).astype(np.float32)
    return bound


# -- varfx calibrate --------------------------------------------------------------------------------------------------


@dataclass
class CalibrationSummary:
    lines: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    run: object = None  # the background run's RunSummary
    background: Background | None = None

    def report(self) -> str:
        return "\n".join(self.lines + (["wrote: " + ", ".join(map(str, self.outputs))] if self.outputs else []))


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name.removesuffix(".h5").removesuffix(".hdf5") + suffix)


def calibrate(out=None, *, fasta=None, backend=None, weights=None, random: int | None = None, seed: int = 0,
              match=None, background=None, write_background=None, contigs=None, scores=None,
              keep_scores: bool = False, from_scores=None, quantiles: int = DEFAULT_QUANTILES, shard=None,
              resume: bool = False, block_records: int | None = None, workers: int = 0, bins=None, stats=None,
              pseudocount: float = 1.0, rc: bool = False, shifts=None, tracks=None, batch_size: int = 64,
              device: str = "auto", precision: str = "fp32", quiet: bool = True,
              **backend_options) -> CalibrationSummary:
    """``varfx calibrate``: draw or take a background, score it, store pooled |score| quantiles (cal.h5).

    ``from_scores``: pool finished background score files instead (e.g. the shards of a job array).
    With ``shard`` only that shard's scores are written (``scores``); pool them with ``from_scores``.
    """
    from .backends import backend_class, load_backend
    from .run import check_out, score_vcf

    t0 = time.perf_counter()
    summary = CalibrationSummary()
    if quantiles < 1:
        raise OptionError(f"--quantiles {quantiles}: store at least 1 quantile per track")
    if from_scores is not None:
        given = {"--random": random, "--background": background, "--match": match, "--shard": shard,
                 "--scores": scores, "--keep-scores": keep_scores or None, "--backend": backend,
                 "--write-background": write_background}
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise OptionError(f"--from pools finished background scores: drop {extra[0]}")
        if out is None:
            raise OptionError("--from needs --out cal.h5 (the calibration to write)")
        attrs = build_calibration(from_scores, out, quantiles, fasta)
        summary.lines.append(f"calibration: {attrs['background_size']:,} background variants pooled from "
                             f"{len(from_scores)} file(s), {attrs['quantile_count']:,} quantiles per track")
        summary.outputs.append(out)
        return summary
    if fasta is None:
        raise OptionError("--fasta is needed to score a background (or pool finished scores with --from)")
    if backend is None:
        raise OptionError("--backend is needed to score a background (or pool finished scores with --from)")
    if (random is None) == (background is None):
        raise OptionError("give one background: --random N (SNVs drawn from --fasta) or --background VCF"
                          if random is None else "--random and --background exclude each other: give one")
    if random is not None and random < 1:
        raise OptionError(f"--random {random}: draw at least 1 SNV")
    if random is None and (match is not None or contigs or write_background is not None):
        raise OptionError("--match, --contigs and --write-background apply to --random (a drawn background)")
    if isinstance(backend, str) and backend_class(backend).score_vcf is not None:
        raise OptionError(f"varfx calibrate does not support --backend {backend} (its runs score genes, not "
                          "tracks): its scores are not calibrated")
    out, scores = check_out(out, "--out"), check_out(scores, "--scores")
    write_background = check_out(write_background, "--write-background")
    if shard is not None:
        if scores is None:
            raise OptionError("--shard writes the shard's background scores: give --scores bgK.h5, then pool the "
                              "shards with `varfx calibrate --from …`")
        if out is not None:
            raise OptionError("--shard makes no calibration (that needs every shard): drop --out and pool the "
                              "shards' --scores files with `varfx calibrate --from … --out cal.h5`")
    if out is None and scores is None and not (random is not None and write_background is not None):
        raise OptionError("nothing to write: give --out cal.h5 (or --scores with --shard)")
    if scores is None and keep_scores and out is not None:
        scores = _beside(out, ".scores.h5")
    if resume and scores is None:
        raise OptionError("--resume continues a background run whose scores are kept: add --keep-scores")
    model = backend
    bg_vcf = Path(background) if background is not None else None
    if random is not None:
        genome = Genome(fasta)
        try:
            model = load_backend(backend, weights, **backend_options) if isinstance(backend, str) else backend
            if model.score_vcf is not None:
                raise OptionError(f"varfx calibrate does not support --backend {model.name}")
            bg = draw_background(genome, random, seed, model.geometry.input_length, match, contigs)
            bg_vcf = write_background or _beside(out or scores, ".background.vcf")
            write_background_vcf(bg_vcf, bg, genome)
        finally:
            genome.close()
        summary.background = bg
        f = bg.features
        what = (f"matched to {match} (Ti/Tv {f['ti_tv']} vs query {ti_tv(np.array(f['query']['cells']))['ti_tv']})"
                if match is not None else f"uniform, Ti/Tv {f['ti_tv']}")
        summary.lines.append(f"background: {len(bg):,} SNVs drawn (seed {seed}, {what}) -> {bg_vcf}")
        summary.outputs.append(bg_vcf)
        if out is None and scores is None:
            return summary
    elif not bg_vcf.is_file():
        raise InputError(f"background VCF not found: {bg_vcf}")
    tmpdir = None
    try:
        target = scores
        if target is None:
            tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            target = tmpdir / "background.h5"
        run = score_vcf(bg_vcf, fasta, model, weights, out=target, bins=bins, stats=stats, pseudocount=pseudocount,
                        rc=rc, shifts=shifts, tracks=tracks, batch_size=batch_size, device=device,
                        precision=precision, float32=True, quiet=quiet, shard=shard, resume=resume,
                        block_records=block_records, workers=workers, **backend_options)
        summary.run = run
        summary.lines.append(run.report().rsplit("\nwrote: ", 1)[0])
        if scores is not None:
            summary.outputs.append(scores)
        if out is not None:
            attrs = build_calibration([target], out, quantiles, fasta)
            summary.lines.append(f"calibration: {attrs['background_size']:,} background variants, "
                                 f"{attrs['quantile_count']:,} quantiles per track, statistics "
                                 f"{', '.join(attrs['stats'])}")
            summary.outputs.append(out)
        elif shard is not None:
            summary.lines.append(f"shard {shard} scored: when every shard is done, pool them with "
                                 "`varfx calibrate --from SHARD1.h5 … --out cal.h5`")
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    summary.lines.append(f"seconds: {time.perf_counter() - t0:.1f}")
    return summary

