"""Variant-effect statistics, as device-agnostic tensor functions.

For a variant and a track, with ``ref_b`` and ``alt_b`` the predictions in the
selected REF bins and their aligned ALT bins (windows.align_bins), summed over
the bins b where the pair is valid:

* ``SAD``    = Σ alt_b − Σ ref_b                                  (sum of alt minus ref)
* ``logSED`` = log2(Σ alt_b + c) − log2(Σ ref_b + c)              (c = --pseudocount, default 1)
* ``D1``     = Σ |alt_b − ref_b|                                  (L1 distance)
* ``D2``     = √ Σ (alt_b − ref_b)²                               (L2 distance)

All are computed in float32 whatever the model's precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import OptionError

STATS = ("SAD", "logSED", "D1", "D2")
DEFAULT_STATS = ("SAD", "logSED")


def parse_stats(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if text is None:
        return DEFAULT_STATS
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    lookup = {s.lower(): s for s in STATS}
    out = []
    for s in items:
        if s.lower() not in lookup:
            raise OptionError(f"--stat {s!r} is not one of {', '.join(STATS)}")
        if lookup[s.lower()] not in out:
            out.append(lookup[s.lower()])
    if not out:
        raise OptionError(f"--stat needs at least one of {', '.join(STATS)}")
    return tuple(out)


@dataclass
class Aligned:
    """Per-variant bin pairs: REF rows and bins, ALT bins, and which pairs count."""

    ref_row: torch.Tensor  # (V,) long: which REF prediction each variant is compared with
    ref_bins: torch.Tensor  # (V, K) long
    alt_bins: torch.Tensor  # (V, K) long
    mask: torch.Tensor  # (V, K) bool


def variant_stats(ref_pred: torch.Tensor, alt_pred: torch.Tensor, al: Aligned,
                  stats: tuple[str, ...], pseudocount: float = 1.0) -> dict[str, torch.Tensor]:
    """(R, B, T) REF and (V, B, T) ALT predictions -> {stat: (V, T) float32}."""
    v = alt_pred.shape[0]
    ref_sel = ref_pred[al.ref_row[:, None], al.ref_bins].float()  # (V, K, T)
    alt_sel = alt_pred[torch.arange(v, device=alt_pred.device)[:, None], al.alt_bins].float()
    w = al.mask[..., None].to(ref_sel.dtype)
    out = {}
    if "SAD" in stats or "logSED" in stats:
        ref_sum = (ref_sel * w).sum(1)
        alt_sum = (alt_sel * w).sum(1)
        if "SAD" in stats:
            out["SAD"] = alt_sum - ref_sum
        if "logSED" in stats:
            out["logSED"] = torch.log2(alt_sum + pseudocount) - torch.log2(ref_sum + pseudocount)
    if "D1" in stats or "D2" in stats:
        diff = (alt_sel - ref_sel) * w
        if "D1" in stats:
            out["D1"] = diff.abs().sum(1)
        if "D2" in stats:
            out["D2"] = diff.square().sum(1).sqrt()
    return {s: out[s] for s in stats}
