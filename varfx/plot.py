"""``varfx plot``: pictures of one variant's predicted effect and of a saturation mutagenesis (docs/plot.md).

matplotlib is an optional extra (``pip install 'varfx[plot]'``), imported only when a plot is drawn;
figures are built with matplotlib's object interface (no pyplot state) and written atomically.

* :func:`plot_variant` re-predicts REF and ALT for one variant of a scores file from the run's recorded
  settings (backend, weights, FASTA, --rc, --shifts, --precision, tracks), after checking that the
  weights and the FASTA index still have the sha256 the run recorded, and draws per track the REF and
  ALT tracks over the output window and ALT − REF, with the variant and the genes' TSSs marked.
* :func:`plot_ism` draws a ``varfx ism`` output: a heat map (bases × positions) of the mutation effects
  and above it a sequence logo of the REF bases, each as tall as minus the mean effect of mutating it away.

Both return what they drew (:class:`VariantPlot`, :class:`IsmPlot`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError, OptionError, VarfxError
from .results import open_complete, strings

MISSING_MATPLOTLIB = "varfx plot needs matplotlib: pip install 'varfx[plot]'"
#: tracks drawn by default: the run's, or this many of them with the largest |score| for the variant
DEFAULT_TRACKS = 6
MAX_TRACKS = 24
FORMATS = ("png", "pdf", "svg")
BASE_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}
REF_COLOR, ALT_COLOR = "#4C4C4C", "#C0392B"
VARIANT_WIDTH_IN, VARIANT_HEADER_IN, VARIANT_TRACK_IN = 10.0, 0.6, 2.4
ISM_HEIGHT_IN = 4.5


def ism_width_in(n: int) -> float:
    """Width of an ISM figure (inches) for ``n`` positions: 2 + 0.22 in per position, within [6, 30]."""
    return float(min(30.0, max(6.0, 2.0 + 0.22 * n)))


def variant_height_in(n_tracks: int) -> float:
    return VARIANT_HEADER_IN + VARIANT_TRACK_IN * n_tracks


def _matplotlib():
    """matplotlib's Figure class and the pieces the plots use; a one-line error without matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.font_manager import FontProperties
        from matplotlib.patches import PathPatch
        from matplotlib.textpath import TextPath
        from matplotlib.transforms import Affine2D
    except ImportError:
        raise VarfxError(MISSING_MATPLOTLIB)
    return Figure, FontProperties, PathPatch, TextPath, Affine2D


def _check_out(out) -> tuple[Path, str]:
    from .run import check_out

    out = check_out(Path(out), "--out")
    fmt = out.suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise OptionError(f"--out {out}: write .png, .pdf or .svg")
    return out, fmt


def _save(fig, out: Path, fmt: str, dpi: int) -> None:
    tmp = out.with_name(out.name + ".partial")
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- one variant ---------------------------------------------------------------------------------------


@dataclass
class VariantPlot:
    """What :func:`plot_variant` drew.  Arrays are (bins, tracks) over the REF window's output bins;
    ``alt`` holds, for each REF bin, the ALT bin aligned with it (the same bin for SNVs and MNVs; NaN
    where an indel leaves none), and ``diff = alt − ref``."""

    path: Path
    variant: dict
    track_ids: list[str]
    track_labels: list[str]
    bin_start: np.ndarray  # (B,) 1-based genome position of each REF bin's first base
    bin_size: int
    ref: np.ndarray
    alt: np.ndarray
    diff: np.ndarray
    summed: np.ndarray  # (B,) bool: the REF bins the run's statistics summed (--bins)
    tss: pd.DataFrame  # genes with a TSS in the output window (empty without --genes)
    width_px: int
    height_px: int


def find_variant(f, variant_id: str, path) -> int:
    """The row of ``variant_id`` in a scores file: its ``snp`` name (VCF ID, or chrom:pos:ref:alt when the ID
    is '.'), else chrom:pos:ref:alt.  One-line errors when none or several rows match."""
    snp = np.array(strings(f["snp"]), dtype=object)
    hits = np.flatnonzero(snp == variant_id)
    if hits.size == 0:
        keys = [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(strings(f["chr"]), f["pos"][:].tolist(),
                                                          strings(f["ref_allele"]), strings(f["alt_allele"]))]
        hits = np.flatnonzero(np.array(keys, dtype=object) == variant_id)
    if hits.size == 0:
        raise InputError(f"--variant {variant_id!r} is not among the {snp.size:,} scored variants of {path} "
                         "(give its VCF ID or CHROM:POS:REF:ALT; `varfx top` lists some)")
    if hits.size > 1:
        names = [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(np.array(strings(f["chr"]))[hits], f["pos"][:][hits],
                                                           np.array(strings(f["ref_allele"]))[hits],
                                                           np.array(strings(f["alt_allele"]))[hits])]
        shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        raise InputError(f"--variant {variant_id!r} matches {hits.size} variants of {path}: {shown}; "
                         "give one of them as CHROM:POS:REF:ALT")
    return int(hits[0])


def check_recorded_inputs(settings: dict, path) -> None:
    """The run's weight files and FASTA index must exist and have the sha256 it recorded."""
    from .run import sha256

    for w, digest in zip(settings.get("weights", []), settings.get("weights_sha256", [])):
        p = Path(w)
        if not p.is_file():
            raise InputError(f"the run's weights file {p} is missing: varfx plot re-predicts with the run's own "
                             f"inputs (restore it, or run from the folder {path} was made in)")
        if sha256(p) != digest:
            raise InputError(f"{p} has changed since {path} was made (its sha256 differs from the recorded one): "
                             "restore the file the run used, or score the variant again")
    fasta = Path(settings.get("fasta", ""))
    if not fasta.is_file():
        raise InputError(f"the run's FASTA {fasta} is missing: varfx plot re-predicts with the run's own inputs")
    fai = Path(str(fasta) + ".fai")
    if not fai.is_file():
        from .genome import Genome

        Genome(fasta).close()  # builds the index, as the run did
    digest = settings.get("fasta_fai_sha256")
    if digest and sha256(fai) != digest:
        raise InputError(f"{fasta} is not the FASTA {path} was made with (its .fai index differs from the "
                         "recorded one): use the run's genome")


def reload_options(settings: dict) -> tuple[list[str], dict]:
    """The --weights and backend options that rebuild a run's model from its recorded settings."""
    backend, files = settings["backend"], list(settings.get("weights", []))
    if backend == "torchscript":  # [model, spec, (state_dict named in the spec)]
        return files[:1], {"spec": files[1]} if len(files) > 1 else {}
    if backend == "keras":  # [model.h5 …, spec]
        return files[:-1], {"spec": files[-1]}
    if backend == "enformer":  # [state dict, (config.json beside it)]
        opts = {"head": settings.get("backend_head", "human")}
        if "backend_incremental_alt_pass" in settings:
            opts["incremental"] = bool(settings["backend_incremental_alt_pass"])
        return files[:1], opts
    return files, {}


def _default_tracks(f, settings: dict, row: int) -> str:
    """The run's tracks (model indices), or the DEFAULT_TRACKS with the largest |first statistic| here."""
    indices = list(settings.get("track_indices", []))
    if len(indices) <= DEFAULT_TRACKS:
        return ",".join(map(str, indices)) if indices else None
    stat = next((s for s in settings.get("stats", []) if s in f and f[s].ndim == 2), None)
    if stat is None:
        chosen = indices[:DEFAULT_TRACKS]
    else:
        vals = np.abs(np.nan_to_num(f[stat][row].astype(np.float32)))
        top = np.argsort(-vals, kind="stable")[:DEFAULT_TRACKS]
        chosen = sorted(indices[i] for i in top)
    return ",".join(map(str, chosen))


def variant_prediction(scores, variant_id: str, tracks: str | None = None, device: str = "auto"):
    """Re-predict REF and ALT for one variant of a scores file.  Returns (info, ModelRun pieces) as a dict:
    ``variant``, ``track_ids``, ``track_labels``, ``bin_start``, ``bin_size``, ``ref``, ``alt``, ``diff``,
    ``summed``, ``contig``, ``window`` (1-based first and last base of the output bins)."""
    from .genome import Genome
    from .run import ModelRun
    from .variants import Site
    from .windows import BinSelection, align_bins, build_windows, check_sites

    with open_complete(scores) as f:
        settings = json.loads(f.attrs["settings"])
        if settings.get("varfx_output") == "ism":
            raise OptionError(f"{scores} is a `varfx ism` output: draw it with `varfx plot --ism {scores} --out FIG.png`")
        if "snp" not in f or "backend" not in settings:
            raise InputError(f"{scores} is not a `varfx score` output (no 'snp' dataset)")
        if settings.get("genotypes"):
            raise OptionError(f"{scores} comes from a --genotypes run: varfx plot draws reference-background "
                              "runs (score the variant without --genotypes to plot it)")
        if settings["backend"] == "spliceai":
            raise OptionError("varfx plot cannot redraw spliceai runs (their scores are per gene, not tracks)")
        row = find_variant(f, variant_id, scores)
        variant = {"snp": strings(f["snp"][row:row + 1])[0], "chrom": strings(f["chr"][row:row + 1])[0],
                   "pos": int(f["pos"][row]), "id": strings(f["id"][row:row + 1])[0],
                   "ref": strings(f["ref_allele"][row:row + 1])[0], "alt": strings(f["alt_allele"][row:row + 1])[0]}
        if tracks is None:
            tracks = _default_tracks(f, settings, row)
    check_recorded_inputs(settings, scores)
    weights, options = reload_options(settings)
    mr = ModelRun(settings["backend"], weights, options, None, tracks, bool(settings.get("rc", False)),
                  settings.get("shifts") or None, settings.get("precision", "fp32"), 64, device,
                  float(settings.get("pseudocount", 1.0)))
    genome = Genome(settings["fasta"])
    try:
        if len(mr.chosen) > MAX_TRACKS:
            raise OptionError(f"--tracks chooses {len(mr.chosen)} tracks; a figure holds at most {MAX_TRACKS}")
        geom, predictor = mr.geom, mr.predictor
        site = Site(0, variant["chrom"], genome.resolve(variant["chrom"]), variant["pos"], variant["id"],
                    variant["ref"], alts=[(0, variant["alt"])])
        if site.contig is None:
            raise InputError(f"contig {site.chrom} is not in {genome.path}")
        check_sites(genome, [site], geom, predictor.margin, "skip", settings.get("short_contigs", "error"))
        if site.skipped:
            raise InputError(f"{variant['snp']} cannot be predicted on {genome.path}: {site.skipped[0][2]}")
        wb = build_windows(genome, [site], geom, predictor.margin)
        same = wb.delta == 0
        lo = np.where(same, geom.center, -1)
        ref_pred, alt_pred = predictor(wb.ref, wb.alt, wb.ref_row, (lo, np.where(same, lo + wb.ref_len, -1)))
        if mr.slice_out:
            ref_pred, alt_pred = ref_pred.index_select(-1, mr.out_cols), alt_pred.index_select(-1, mr.out_cols)
        ref = ref_pred[0].float().cpu().numpy()
        alt_raw = alt_pred[0].float().cpu().numpy()
        _, ab, mask = align_bins(geom, BinSelection("all"), wb.ref_len, wb.delta)
        alt = np.where(mask[0][:, None], alt_raw[ab[0]], np.nan).astype(np.float32)  # REF bins 0..B-1 in order
        srb, _, smask = align_bins(geom, BinSelection.parse(settings.get("bins", "variant")), wb.ref_len, wb.delta)
        summed = np.zeros(geom.output_bins, dtype=bool)
        summed[srb[0][smask[0]]] = True
        ws = variant["pos"] - 1 - geom.center  # 0-based first base of the unshifted window
        bin_start = ws + geom.bin_offset + geom.bin_size * np.arange(geom.output_bins) + 1
        return {"variant": variant, "track_ids": mr.track_ids, "track_labels": mr.track_labels,
                "bin_start": bin_start.astype(np.int64), "bin_size": geom.bin_size, "ref": ref, "alt": alt,
                "diff": alt - ref, "summed": summed, "contig": site.contig,
                "window": (int(bin_start[0]), int(bin_start[-1] + geom.bin_size - 1)), "resolve": genome.resolve}
    finally:
        genome.close()
        mr.close()


def genes_in_window(path, resolve, contig: str, first: int, last: int) -> pd.DataFrame:
    """The (gene, TSS) rows of a GTF (varfx.genes.read_gtf) on ``contig`` with first ≤ tss ≤ last."""
    from .genes import read_gtf

    table = read_gtf(path)
    on = table["chrom"].map(lambda c: resolve(c) == contig)
    table = table[on.astype(bool) & (table["tss"] >= first) & (table["tss"] <= last)]
    return table.reset_index(drop=True)


def plot_variant(scores, variant_id: str, out, tracks: str | None = None, genes=None, device: str = "auto",
                 dpi: int = 100) -> VariantPlot:
    """Draw REF, ALT and ALT − REF for one variant of a scores file (see the module docstring)."""
    Figure, *_ = _matplotlib()
    out, fmt = _check_out(out)
    p = variant_prediction(scores, variant_id, tracks, device)
    tss = (genes_in_window(genes, p["resolve"], p["contig"], *p["window"]) if genes is not None
           else pd.DataFrame(columns=["gene_id", "gene_name", "chrom", "strand", "tss"]))
    v, bs = p["variant"], p["bin_size"]
    n = len(p["track_ids"])
    centers = p["bin_start"] + (bs - 1) / 2
    edges = np.append(p["bin_start"], p["bin_start"][-1] + bs) - 0.5  # bin j spans its bases' ±0.5 bp
    fig = Figure(figsize=(VARIANT_WIDTH_IN, variant_height_in(n)), dpi=dpi)
    top = 1 - VARIANT_HEADER_IN / variant_height_in(n)
    axes = fig.subplots(2 * n, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [1.6, 1.0] * n, "hspace": 0.35, "top": top,
                                     "bottom": 0.45 / variant_height_in(n), "left": 0.09, "right": 0.98})[:, 0]
    fig.suptitle(f"{v['snp']}  {v['chrom']}:{v['pos']:,} {v['ref']}>{v['alt']}", fontsize=11)
    var_x = v["pos"] + (len(v["ref"]) - 1) / 2
    lo_x, hi_x = p["window"][0] - 0.5, p["window"][1] + 0.5
    for t in range(n):
        a1, a2 = axes[2 * t], axes[2 * t + 1]
        a1.stairs(p["ref"][:, t], edges, color=REF_COLOR, lw=1.2, label="REF")
        a1.stairs(p["alt"][:, t], edges, color=ALT_COLOR, lw=1.2, label="ALT", alpha=0.85)
        a1.set_title(f"{p['track_ids'][t]}: {p['track_labels'][t]}", fontsize=8, loc="left")
        a1.set_ylabel("prediction", fontsize=8)
        d = p["diff"][:, t]
        a2.bar(centers, np.nan_to_num(d), width=bs * 0.9, color=np.where(d >= 0, ALT_COLOR, "#2E86C1"))
        a2.axhline(0, color="black", lw=0.5)
        a2.set_ylabel("ALT − REF", fontsize=8)
        if t == 0:
            a1.legend(fontsize=7, loc="upper right", frameon=False)
        for ax in (a1, a2):
            ax.tick_params(labelsize=7)
            ax.axvline(var_x, color="black", lw=0.8, ls="--")
            if p["summed"].any():
                first, last = p["bin_start"][p["summed"]][[0, -1]]
                ax.axvspan(first - 0.5, last + bs - 0.5, color="#F4D03F", alpha=0.15, lw=0)
            for _, g in tss.iterrows():
                ax.axvline(g["tss"], color="#7D3C98", lw=0.8, ls=":")
        for _, g in tss.iterrows():
            arrow = "→" if g["strand"] == "+" else "←"
            a1.annotate(f"{g['gene_name']} {arrow}", (g["tss"], 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color="#7D3C98", ha="left", va="top")
    axes[-1].set_xlim(lo_x, hi_x)
    axes[-1].set_xlabel(f"{v['chrom']} position (bp; bins of {bs} bp, shaded: bins the run's statistics sum; "
                        "dashed: variant; dotted: TSS)", fontsize=8)
    _save(fig, out, fmt, dpi)
    return VariantPlot(out, v, p["track_ids"], p["track_labels"], p["bin_start"], bs, p["ref"], p["alt"],
                       p["diff"], p["summed"], tss, int(round(VARIANT_WIDTH_IN * dpi)),
                       int(round(variant_height_in(n) * dpi)))


# -- saturation mutagenesis -------------------------------------------------------------------------------


@dataclass
class IsmPlot:
    """What :func:`plot_ism` drew: ``heat`` (4, L), bases A, C, G, T by positions (NaN at REF bases and
    skipped positions); ``logo`` (L,) the letter heights, −mean over the three ALT bases of ``heat``."""

    path: Path
    stat: str
    track: str  # a track id, or 'mean' (the mean over the file's tracks)
    positions: np.ndarray
    ref: str
    heat: np.ndarray
    logo: np.ndarray
    width_px: int
    height_px: int


def ism_matrix(res, stat: str | None = None, track: str | None = None) -> tuple[str, str, np.ndarray]:
    """(stat, track, (L, 4) effects) from an IsmResult: one track (id or index) or the mean over tracks."""
    stat = stat or next(iter(res.stats), None)
    if stat not in res.stats:
        raise OptionError(f"--stat {stat!r}: the file has {', '.join(res.stats)}")
    arr = res.stats[stat].astype(np.float32)
    if arr.ndim == 2:  # a profile statistic: no track axis
        if track is not None:
            raise OptionError(f"--track: {stat} is one value per mutation over the profile tracks (no track axis)")
        return stat, "*", arr
    if track is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (REF, skipped) stay NaN
            return stat, "mean", np.nanmean(arr, axis=2)
    if track in res.track_ids:
        return stat, track, arr[:, :, res.track_ids.index(track)]
    if track.isdigit() and int(track) < len(res.track_ids):
        return stat, res.track_ids[int(track)], arr[:, :, int(track)]
    shown = ", ".join(res.track_ids[:8]) + (", …" if len(res.track_ids) > 8 else "")
    raise OptionError(f"--track {track!r} is not among the file's tracks ({shown}); give an id or an index")


def logo_heights(mat: np.ndarray) -> np.ndarray:
    """(L, 4) effects with NaN at REF -> (L,) −mean of the ALT effects (0 where nothing was scored)."""
    scored = ~np.isnan(mat)
    count = scored.sum(1)
    total = np.where(scored, mat, 0).sum(1)
    return np.where(count > 0, -total / np.maximum(count, 1), 0.0).astype(np.float32)


def draw_logo(ax, letters: str, heights: np.ndarray, width: float = 0.9) -> None:
    """Letters at x = 0, 1, …, each ``width`` wide and ``heights[i]`` tall from the baseline (below it,
    upside down, for a negative height); drawn as glyph outlines (TextPath + PathPatch)."""
    _, FontProperties, PathPatch, TextPath, Affine2D = _matplotlib()
    font = FontProperties(family="DejaVu Sans", weight="bold")
    glyphs = {}
    for i, (ch, h) in enumerate(zip(letters, heights.tolist())):
        if ch not in BASE_COLORS or h == 0 or not np.isfinite(h):
            continue
        if ch not in glyphs:
            glyphs[ch] = TextPath((0, 0), ch, size=1, prop=font)
        path = glyphs[ch]
        bb = path.get_extents()
        tr = (Affine2D().translate(-bb.x0, -bb.y0).scale(width / bb.width, h / bb.height)
              .translate(i - width / 2, 0))
        ax.add_patch(PathPatch(tr.transform_path(path), facecolor=BASE_COLORS[ch], edgecolor="none"))


def plot_ism(path, out, track: str | None = None, stat: str | None = None, dpi: int = 100) -> IsmPlot:
    """Heat map of an ISM file's effects (one track, or the mean over tracks) with a logo above it."""
    Figure, *_ = _matplotlib()
    import matplotlib

    from .ism import read_ism

    out, fmt = _check_out(out)
    res = read_ism(path)
    stat, track_name, mat = ism_matrix(res, stat, track)
    heat = mat.T.copy()  # (4, L)
    logo = logo_heights(mat)
    n = mat.shape[0]
    fig = Figure(figsize=(ism_width_in(n), ISM_HEIGHT_IN), dpi=dpi)
    ax_logo, ax_heat = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.1], "hspace": 0.08,
                                                                     "left": 0.08, "right": 0.9, "bottom": 0.14})
    draw_logo(ax_logo, res.ref, logo)
    span = float(np.nanmax(np.abs(logo))) if n else 0.0
    span = span or 1.0
    ax_logo.set_ylim(min(0.0, float(logo.min())) - 0.05 * span, max(0.0, float(logo.max())) + 0.05 * span)
    ax_logo.axhline(0, color="black", lw=0.5)
    ax_logo.set_ylabel(f"−mean {stat}", fontsize=8)
    what = "mean over tracks" if track_name == "mean" else ("profile tracks" if track_name == "*" else track_name)
    ax_logo.set_title(f"{res.chrom}:{res.start:,}-{res.end:,}  {stat}, {what}", fontsize=10, loc="left")
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#E5E5E5")
    lim = float(np.nanmax(np.abs(heat))) if np.isfinite(heat).any() else 1.0
    lim = lim or 1.0
    im = ax_heat.imshow(np.ma.masked_invalid(heat), aspect="auto", cmap=cmap, vmin=-lim, vmax=lim,
                        interpolation="nearest", extent=(-0.5, n - 0.5, 3.5, -0.5))
    ref_rows = [("ACGT".index(b) if b in "ACGT" else None) for b in res.ref]
    xs = [i for i, r in enumerate(ref_rows) if r is not None]
    ax_heat.scatter(xs, [ref_rows[i] for i in xs], s=6, color="#333333", marker="o", lw=0)
    ax_heat.set_yticks(range(4), list("ACGT"), fontsize=8)
    step = max(1, int(np.ceil(n / 25)))
    ticks = list(range(0, n, step))
    ax_heat.set_xticks(ticks, [f"{int(res.positions[i]):,}" for i in ticks], fontsize=7, rotation=90)
    ax_heat.set_xlim(-0.5, n - 0.5)
    ax_heat.set_xlabel(f"{res.chrom} position (dot: REF base; grey: not scored)", fontsize=8)
    cax = fig.add_axes((0.92, 0.14, 0.015, 0.33))
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=7)
    cax.set_title(stat, fontsize=7)
    _save(fig, out, fmt, dpi)
    return IsmPlot(out, stat, track_name, res.positions, res.ref, heat, logo,
                   int(round(ism_width_in(n) * dpi)), int(round(ISM_HEIGHT_IN * dpi)))
