"""Reading varfx outputs back (for notebooks and tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .errors import InputError


@dataclass
class Scores:
    """A scores file read back: variants, per-statistic (variants, tracks) arrays, tracks, skipped, settings."""

    variants: pd.DataFrame
    stats: dict[str, np.ndarray]
    tracks: pd.DataFrame
    skipped: pd.DataFrame
    settings: dict


def strings(ds) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in ds[:]]


def open_complete(path, whole: str | None = None) -> h5py.File:
    """Open a varfx HDF5 output for reading; refuse missing, foreign and unfinished files, and with
    ``whole`` (what the command makes, e.g. "a fine-mapping table") the shard of a run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scores file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path} is not an HDF5 file ({exc})")
    if "varfx_calibration" in f.attrs:
        f.close()
        raise InputError(f"{path} is a calibration file (varfx calibrate), not scores: "
                         "give it to `varfx score --calibration`")
    if not f.attrs.get("complete", False) or "settings" not in f.attrs:
        f.close()
        raise InputError(f"{path} is not a finished varfx output (no attribute complete=True)")
    if whole is not None and str(f.attrs.get("shard", "") or ""):
        shard = f.attrs["shard"]
        f.close()
        raise InputError(f"{path} is shard {shard} of a run, which holds a part of its variants: merge the shards "
                         f"first (varfx merge … --out scores.h5) and make {whole} from the merged file")
    return f


def require_variant_scores(f: h5py.File, path, what: str, spliceai: bool = False) -> None:
    """A one-line error when a finished varfx file is not the output of ``varfx score`` (variant scores), or
    (unless ``spliceai``) holds SpliceAI's (variant, gene) rows."""
    if "snp" in f and "DS_AG" in f and not spliceai:
        raise InputError(f"{path} holds SpliceAI scores (a row per variant and gene: DS_AG … DP_DL), not scores "
                         f"per track: {what} reads the output of `varfx score` with a track model; read the DS_* "
                         "datasets, or the run's --tsv / --out-vcf, instead")
    if "snp" in f:
        return
    kind = ("in silico mutagenesis (varfx ism)" if "positions" in f and "ref_code" in f
            else "perturbation (varfx perturb)" if "tiles" in f and "wild_type" in f
            else "region predictions (varfx predict)")
    raise InputError(f"{path} holds {kind}, not variant scores: {what} reads the output of `varfx score`")


def stat_source(f: h5py.File, stat: str) -> str:
    """The dataset holding one value (per track) of ``stat`` per variant: the statistic itself, or in
    personal-genome scores, which hold one per sample, its mean over the samples (summary/STAT/mean)."""
    return f"summary/{stat}/mean" if "samples" in f else stat


def read_scores(path) -> Scores:
    with open_complete(path) as f:
        require_variant_scores(f, path, "read_scores()", spliceai=True)  # its identifiers (docs/spliceai.md)
        settings = json.loads(f.attrs["settings"])
        variants = pd.DataFrame({
            "snp": strings(f["snp"]), "chrom": strings(f["chr"]), "pos": f["pos"][:].astype(np.int64),
            "id": strings(f["id"]), "ref": strings(f["ref_allele"]), "alt": strings(f["alt_allele"]),
            "record": f["record"][:], "alt_index": f["alt_index"][:],
        })
        stats = {s: f[s][:] for s in settings["stats"]}
        tracks = pd.DataFrame({"id": strings(f["target_ids"]), "description": strings(f["target_labels"])})
        g = f["skipped"]
        skipped = pd.DataFrame({
            "chrom": strings(g["chr"]), "pos": g["pos"][:].astype(np.int64), "id": strings(g["id"]),
            "ref": strings(g["ref_allele"]), "alt": strings(g["alt_allele"]), "record": g["record"][:],
            "alt_index": g["alt_index"][:], "reason": strings(g["reason"]),
        })
        for k in ("records_read", "variants", "variants_scored", "variants_skipped"):
            settings[k] = int(f.attrs[k])
    return Scores(variants, stats, tracks, skipped, settings)


def top_variants(path, stat: str | None = None, n: int = 10, chunk: int = 65536) -> pd.DataFrame:
    """The ``n`` variants with the largest max |stat| over tracks (read in chunks: any file size).

    Columns: chrom, pos, id, ref, alt, the statistic's value at its largest track, and that track.
    """
    with open_complete(path, whole="the ranking") as f:
        require_variant_scores(f, path, "`varfx top`")
        stats = json.loads(f.attrs["settings"])["stats"]
        stat = stat or stats[0]
        stat = {x.lower(): x for x in stats}.get(stat.lower(), stat)  # any case, as `score --stat`
        if stat not in stats:
            raise InputError(f"{path} has no statistic {stat!r}; it has {', '.join(stats)}")
        source = stat_source(f, stat)
        if source not in f:
            raise InputError(f"{path} lists the statistic {stat} but has no dataset {source!r}; score it again")
        ds = f[source]
        note = (f"personal-genome scores: ranked by {source}, the mean over {f['samples'].shape[0]} samples' "
                "backgrounds") if source != stat else ""
        best_val = np.zeros(0, dtype=np.float32)
        best_row = np.zeros(0, dtype=np.int64)
        best_trk = np.zeros(0, dtype=np.int64)
        for lo in range(0, ds.shape[0], chunk):
            block = ds[lo:lo + chunk].astype(np.float32)
            if block.ndim == 1:  # a profile statistic: one value per variant
                block = block[:, None]
            if block.shape[1] == 0:
                break
            trk = np.argmax(np.where(np.isnan(block), -1.0, np.abs(block)), axis=1)  # NaN tracks last
            val = block[np.arange(block.shape[0]), trk]
            best_val = np.concatenate([best_val, val])
            best_row = np.concatenate([best_row, np.arange(lo, lo + block.shape[0])])
            best_trk = np.concatenate([best_trk, trk])
            keep = np.argsort(-np.abs(best_val), kind="stable")[:n]
            best_val, best_row, best_trk = best_val[keep], best_row[keep], best_trk[keep]
        rows = np.sort(best_row)
        order = {r: i for i, r in enumerate(best_row)}
        table = pd.DataFrame({
            "chrom": [x.decode() for x in f["chr"][rows]] if len(rows) else [],
            "pos": f["pos"][rows].astype(np.int64) if len(rows) else [],
            "id": [x.decode() for x in f["id"][rows]] if len(rows) else [],
            "ref": [x.decode() for x in f["ref_allele"][rows]] if len(rows) else [],
            "alt": [x.decode() for x in f["alt_allele"][rows]] if len(rows) else [],
        })
        ids = [x.decode() for x in f["target_ids"][:]] if ds.ndim == 2 else ["*"]
        table[stat] = [best_val[order[r]] for r in rows]
        table["track"] = [ids[best_trk[order[r]]] if not np.isnan(best_val[order[r]]) else "." for r in rows]
    table = table.reindex(table[stat].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    table.attrs["note"] = note
    return table
