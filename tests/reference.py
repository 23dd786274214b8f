"""An independent, slow, text-based implementation of varfx's documented scoring rules.

It builds windows by string slicing, encodes with the test's own one-hot, runs the
eager toy model one sequence at a time and applies the formulas of docs/scores.md.
"""

from __future__ import annotations

import math

import torch

from toy_models import one_hot_text


def text_window(seq: str, start: int, length: int) -> str:
    return "".join(seq[p].upper() if 0 <= p < len(seq) and seq[p].upper() in "ACGT" else "N"
                   for p in range(start, start + length))


def windows(seq, pos, ref, alt, length, shift=0):
    c = length // 2
    start = pos - 1 - c + shift
    ref_w = text_window(seq, start, length)
    left = text_window(seq, start, pos - 1 - start)
    alt_w = (left + alt + text_window(seq, pos - 1 + len(ref), length))[:length]
    return ref_w, alt_w


def rc_text(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


def predict(model, seq_text: str, rc=False, strand_pairs=((0, 1),)):
    x = one_hot_text(rc_text(seq_text) if rc else seq_text)[None]
    with torch.no_grad():
        y = model(x)[0]  # (bins, tracks)
    if rc:
        y = y.flip(0)
        perm = list(range(y.shape[1]))
        for a, b in strand_pairs:
            perm[a], perm[b] = b, a
        y = y[:, perm]
    return y


def shift_bins(s: int, bin_size: int) -> int:
    """A shift of s bp realigns by round(s / bin_size) bins, halves away from zero."""
    return int(math.copysign(math.floor(abs(s) / bin_size + 0.5), s))


def average_realigned(items) -> torch.Tensor:
    """[(k, (bins, tracks) prediction)] -> their mean, each moved back by k bins; a bin counts only the
    predictions that cover it."""
    nb = items[0][1].shape[0]
    tot = torch.zeros_like(items[0][1])
    cnt = torch.zeros(nb, 1)
    for k, p in items:
        for j in range(nb):
            if 0 <= j - k < nb:
                tot[j] += p[j - k]
                cnt[j] += 1
    return tot / cnt.clamp(min=1)


def ensemble(model, seq, pos, ref, alt, length, bin_size, shifts=(0,), rc=False):
    """Average predictions over shifts (realigned by round(s/bin_size) bins) and strands."""
    preds_r, preds_a = [], []
    for s in shifts:
        k = shift_bins(s, bin_size)
        for strand in ([False, True] if rc else [False]):
            rw, aw = windows(seq, pos, ref, alt, length, s)
            pr, pa = predict(model, rw, strand), predict(model, aw, strand)
            preds_r.append((k, pr))
            preds_a.append((k, pa))
    return average_realigned(preds_r), average_realigned(preds_a)


def aligned_pairs(sel, k: int, c: int, bins: int, bin_size: int, offset: int, ref_len: int = 1,
                  alt_len: int = 1) -> list[tuple[int, int]]:
    """(REF bin, ALT bin) pairs as windows.md defines them: a bin that starts right of the variant (window
    index c) moves by k bins; a pair is kept when its ALT bin is in the output and its REF bin is not made
    only of a deletion's deleted bases, window positions [c + alt_len, c + ref_len)."""
    pairs = []
    for j in sel:
        start = offset + j * bin_size
        ja = j + k if start > c else j
        deleted = alt_len < ref_len and start >= c + alt_len and start + bin_size <= c + ref_len
        if 0 <= ja < bins and not deleted:
            pairs.append((j, ja))
    return pairs


def stats(ref_pred, alt_pred, ref_len, alt_len, length, bins, bin_size, offset, margin=None, pseudocount=1.0):
    """The documented statistics with the documented bin selection and indel alignment."""
    c = length // 2
    if margin is None:
        sel = list(range(bins))
    else:
        lo, hi = c - margin, c + ref_len + margin
        sel = [j for j in range(bins) if offset + j * bin_size < hi and offset + (j + 1) * bin_size > lo]
    d = alt_len - ref_len
    k = shift_bins(d, bin_size)
    pairs = aligned_pairs(sel, k, c, bins, bin_size, offset, ref_len, alt_len)
    r = torch.stack([ref_pred[j] for j, _ in pairs]).double()
    a = torch.stack([alt_pred[ja] for _, ja in pairs]).double()
    return {
        "SAD": (a.sum(0) - r.sum(0)),
        "logSED": torch.log2(a.sum(0) + pseudocount) - torch.log2(r.sum(0) + pseudocount),
        "D1": (a - r).abs().sum(0),
        "D2": (a - r).square().sum(0).sqrt(),
    }


def profile_stats(ref_pred, alt_pred, ref_len, alt_len, length, bins, bin_size, offset, tracks):
    """QTL (L2) and JSD (base-2 Jensen–Shannon distance) over all aligned bins of ``tracks``, in numpy."""
    import numpy as np

    c = length // 2
    d = alt_len - ref_len
    k = shift_bins(d, bin_size)
    pairs = aligned_pairs(range(bins), k, c, bins, bin_size, offset, ref_len, alt_len)
    r = np.array([[float(ref_pred[j, t]) for t in tracks] for j, _ in pairs]).ravel()
    a = np.array([[float(alt_pred[ja, t]) for t in tracks] for _, ja in pairs]).ravel()
    qtl = np.sqrt(((a - r) ** 2).sum())
    p = (np.clip(r, 0, None) + 1e-10) / (np.clip(r, 0, None) + 1e-10).sum()
    q = (np.clip(a, 0, None) + 1e-10) / (np.clip(a, 0, None) + 1e-10).sum()
    m = (p + q) / 2
    js = 0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q * np.log2(q / m)).sum()
    return {"QTL": qtl, "JSD": np.sqrt(max(js, 0.0))}
