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


def _strs(ds) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in ds[:]]


def read_scores(path) -> Scores:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"scores file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path} is not an HDF5 file ({exc})")
    with f:
        if not f.attrs.get("complete", False):
            raise InputError(f"{path} is an unfinished run's output (attribute complete=False)")
        settings = json.loads(f.attrs["settings"])
        variants = pd.DataFrame({
            "snp": _strs(f["snp"]), "chrom": _strs(f["chr"]), "pos": f["pos"][:].astype(np.int64),
            "id": _strs(f["id"]), "ref": _strs(f["ref_allele"]), "alt": _strs(f["alt_allele"]),
            "record": f["record"][:], "alt_index": f["alt_index"][:],
        })
        stats = {s: f[s][:] for s in settings["stats"]}
        tracks = pd.DataFrame({"id": _strs(f["target_ids"]), "description": _strs(f["target_labels"])})
        g = f["skipped"]
        skipped = pd.DataFrame({
            "chrom": _strs(g["chr"]), "pos": g["pos"][:].astype(np.int64), "id": _strs(g["id"]),
            "ref": _strs(g["ref_allele"]), "alt": _strs(g["alt_allele"]), "record": g["record"][:],
            "alt_index": g["alt_index"][:], "reason": _strs(g["reason"]),
        })
        for k in ("records_read", "variants", "variants_scored", "variants_skipped"):
            settings[k] = int(f.attrs[k])
    return Scores(variants, stats, tracks, skipped, settings)
