"""Variant-effect statistics, as device-agnostic tensor functions.

For a variant and a track, with ``ref_b`` and ``alt_b`` the predictions in the
selected REF bins and their aligned ALT bins (windows.align_bins), summed over
the bins b where the pair is valid:

* ``SAD``    = Σ alt_b − Σ ref_b                                  (sum of alt minus ref)
* ``logSED`` = log2(Σ alt_b + c) − log2(Σ ref_b + c)              (c = --pseudocount, default 1)
* ``D1``     = Σ |alt_b − ref_b|                                  (L1 distance)
* ``D2``     = √ Σ (alt_b − ref_b)²                               (L2 distance)

All are computed in float32 whatever the model's precision.

Profile statistics compare whole predicted profiles: one value per variant, over
every output bin (aligned as above) and a set of tracks (a backend's
``profile_tracks``, e.g. CLIPNET's two strands; otherwise the selected tracks).
With ``r`` and ``a`` the REF and ALT values over all those bins and tracks:

* ``QTL`` = √ Σ (a − r)²                          (CLIPNET's QTL score: L2 distance of the tracks)
* ``JSD`` = √ JS(p ‖ q), p = (r + ε)/Σ(r + ε), q likewise for a, ε = 1e-10, log base 2
          (Jensen–Shannon distance of the profiles' shapes, in [0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import OptionError

STATS = ("SAD", "logSED", "D1", "D2", "TOTAL", "logTOTAL")
#: per-track statistics of each window's whole output, unpaired (no bin alignment, whatever --bins says)
WHOLE_STATS = ("TOTAL", "logTOTAL")
PROFILE_STATS = ("QTL", "JSD")
DEFAULT_STATS = ("SAD", "logSED")
JSD_EPS = 1e-10


def parse_stats(text: str | list[str] | tuple[str, ...] | None, default=DEFAULT_STATS) -> tuple[str, ...]:
    if text is None:
        return tuple(default)
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    known = STATS + PROFILE_STATS
    lookup = {s.lower(): s for s in known}
    out = []
    for s in items:
        if s.lower() not in lookup:
            raise OptionError(f"--stat {s!r} is not one of {', '.join(known)}")
        if lookup[s.lower()] not in out:
            out.append(lookup[s.lower()])
    if not out:
        raise OptionError(f"--stat needs at least one of {', '.join(STATS)}")
    return tuple(out)


def _vector_maths(x: torch.Tensor, np_fn, torch_fn) -> torch.Tensor:
    """``log2``/``sqrt`` of a statistic's values; on the CPU through numpy.  torch's CPU ``log2`` and
    ``sqrt`` go through MKL's vector maths, split across threads, and the first such call in a process was
    seen to return one thread's share off by up to ~100 ulp in about one run in fifteen (2 threads;
    docs/design.md, "Reproducibility"); numpy's run in this thread and give the same values in every run."""
    if x.device.type != "cpu":
        return torch_fn(x)
    with np.errstate(divide="ignore", invalid="ignore"):  # -inf and NaN as torch gives them, without a warning
        return torch.from_numpy(np_fn(x.numpy()))


def _log2(x: torch.Tensor) -> torch.Tensor:
    return _vector_maths(x, np.log2, torch.log2)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    return _vector_maths(x, np.sqrt, torch.sqrt)


@dataclass
class Aligned:
    """Per-variant bin pairs: REF rows and bins, ALT bins, and which pairs count."""

    ref_row: torch.Tensor  # (V,) long: which REF prediction each variant is compared with
    ref_bins: torch.Tensor  # (V, K) long
    alt_bins: torch.Tensor  # (V, K) long
    mask: torch.Tensor  # (V, K) bool
    alt_row: torch.Tensor | None = None  # (V,) long: which ALT prediction (default: row v for variant v)


def variant_stats(ref_pred: torch.Tensor, alt_pred: torch.Tensor, al: Aligned,
                  stats: tuple[str, ...], pseudocount: float = 1.0) -> dict[str, torch.Tensor]:
    """(R, B, T) REF and (A, B, T) ALT predictions -> {stat: (V, T) float32} (V = A unless al.alt_row)."""
    alt_row = al.alt_row if al.alt_row is not None else torch.arange(alt_pred.shape[0], device=alt_pred.device)
    ref_sel = ref_pred[al.ref_row[:, None], al.ref_bins].float()  # (V, K, T)
    alt_sel = alt_pred[alt_row[:, None], al.alt_bins].float()
    w = al.mask[..., None].to(ref_sel.dtype)
    out = {}
    if "SAD" in stats or "logSED" in stats:
        ref_sum = (ref_sel * w).sum(1)
        alt_sum = (alt_sel * w).sum(1)
        if "SAD" in stats:
            out["SAD"] = alt_sum - ref_sum
        if "logSED" in stats:
            out["logSED"] = _log2(alt_sum + pseudocount) - _log2(ref_sum + pseudocount)
    if "D1" in stats or "D2" in stats:
        diff = (alt_sel - ref_sel) * w
        if "D1" in stats:
            out["D1"] = diff.abs().sum(1)
        if "D2" in stats:
            out["D2"] = _sqrt(diff.square().sum(1))
    # no (REF, ALT) bin pair left (an indel moved every ALT bin off the output): NaN, not 0; masked_fill
    # without first asking whether any row is empty, which would make the host wait for the GPU
    empty = ~al.mask.any(1, keepdim=True)
    out = {s: v.masked_fill(empty, float("nan")) for s, v in out.items()}
    if "TOTAL" in stats or "logTOTAL" in stats:  # each window's whole output: for indels, bases paired or not
        ref_all = ref_pred[al.ref_row].float().sum(1)
        alt_all = alt_pred[alt_row].float().sum(1)
        if "TOTAL" in stats:
            out["TOTAL"] = alt_all - ref_all
        if "logTOTAL" in stats:
            out["logTOTAL"] = _log2(alt_all + pseudocount) - _log2(ref_all + pseudocount)
    return {s: out[s] for s in stats}


def profile_stats(ref_pred: torch.Tensor, alt_pred: torch.Tensor, al: Aligned, tracks: torch.Tensor,
                  stats: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """(R, B, T) REF and (V, B, T) ALT predictions, all-bin alignment -> {stat: (V,) float32}."""
    v = alt_pred.shape[0]
    ref_sel = ref_pred[al.ref_row[:, None], al.ref_bins][..., tracks].float()  # (V, K, P)
    alt_sel = alt_pred[torch.arange(v, device=alt_pred.device)[:, None], al.alt_bins][..., tracks].float()
    w = al.mask[..., None].to(ref_sel.dtype)
    r = (ref_sel * w).reshape(v, -1)
    a = (alt_sel * w).reshape(v, -1)
    out = {}
    if "QTL" in stats:
        out["QTL"] = _sqrt((a - r).square().sum(1))
    if "JSD" in stats:
        # in float64: for near-identical profiles the two KL terms cancel, which float32 gets wrong by
        # up to several per cent below JSD ~ 1e-3
        wf = w.expand_as(ref_sel).reshape(v, -1).double()
        p = (r.double().clamp(min=0) + JSD_EPS) * wf
        q = (a.double().clamp(min=0) + JSD_EPS) * wf
        p = p / p.sum(1, keepdim=True)
        q = q / q.sum(1, keepdim=True)
        m = (p + q) / 2
        kl = lambda x: torch.where(x > 0, x * _log2(x / m.clamp(min=1e-300)), torch.zeros_like(x)).sum(1)
        out["JSD"] = _sqrt((0.5 * kl(p) + 0.5 * kl(q)).clamp(min=0)).float()
    return {s: out[s] for s in stats if s in out}


SUMMARIES = ("maxabs", "maxtrack", "l2")


def track_summaries(values, track_ids: list[str]) -> dict:
    """Per-variant summaries of a (V, T) score matrix across its tracks (numpy, NaN-safe).

    * ``maxabs``   = the signed score of largest absolute value, max_t |s_t| keeping s's sign
    * ``maxtrack`` = the identifier of that track (the first one on ties)
    * ``l2``       = √ Σ_t s_t²  (the L2 norm over tracks)

    NaN scores are ignored; a row with no score gives NaN, NaN and ``.``.
    """
    import numpy as np

    s = np.asarray(values, dtype=np.float32)
    if s.ndim == 1:
        s = s[:, None]
    finite = ~np.isnan(s)  # inf (a float16 overflow) counts as a value
    filled = np.where(finite, s, 0.0)
    if s.shape[1] == 0:
        empty = np.full(s.shape[0], np.nan, dtype=np.float32)
        return {"maxabs": empty, "maxtrack": np.full(s.shape[0], ".", dtype=object), "l2": empty.copy()}
    idx = np.argmax(np.where(finite, np.abs(s), -1.0), axis=1)  # a NaN track is never the largest
    rows = np.arange(s.shape[0])
    any_value = finite.any(axis=1)
    maxabs = np.where(any_value, filled[rows, idx], np.nan).astype(np.float32)
    ids = np.asarray(list(track_ids) if s.shape[1] == len(track_ids) else ["*"] * s.shape[1], dtype=object)
    maxtrack = np.where(any_value, ids[idx], ".")
    with np.errstate(over="ignore"):
        l2 = np.sqrt(np.square(filled.astype(np.float64)).sum(axis=1)).astype(np.float32)
    l2 = np.where(any_value, l2, np.nan).astype(np.float32)
    return {"maxabs": maxabs, "maxtrack": maxtrack, "l2": l2}
