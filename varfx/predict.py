"""One batched, device-agnostic inference loop with reverse-complement and shift ensembles.

Windows arrive as uint8 base codes in an extended frame (L + 2·max|shift|); each
ensemble member (a shift, forward or reverse complement) is cut, encoded and
reverse-complemented on the device, the model runs in chunks of ``batch_size``
under inference mode (and autocast for bf16/fp16), and each member's output is
mapped back onto the forward, unshifted bins before averaging:

* shift ``s``: output bin j of the shifted window covers forward bin ``j + round(s / bin_size)``;
* reverse complement: bin j covers forward bin ``bins − 1 − j + e`` (e = 0 when the output is centred)
  and each track of a strand pair is read from its partner.

Forward bins that a member does not cover (only when |s| ≥ bin_size / 2) are
averaged over the members that cover them.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .encoding import one_hot, revcomp_hot, two_hot_pairs
from .backends.base import error_text
from .errors import ModelError, OptionError, VarfxError
from .windows import div_round_away

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(text: str) -> torch.device:
    text = (text or "auto").strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise OptionError(f"--device {text!r} is not one of auto, cpu, cuda, cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {text}: no CUDA device is visible; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise OptionError(f"--device {text!r} is not one of auto, cpu, cuda, cuda:N")
    return dev


def parse_shifts(text: str | list[int] | None) -> tuple[int, ...]:
    if text is None or text == "":
        return (0,)
    if isinstance(text, (list, tuple)):
        vals = [int(v) for v in text]
    else:
        try:
            vals = [int(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            raise OptionError(f"--shifts {text!r} must be a comma list of integers, e.g. -1,0,1")
    if not vals:
        raise OptionError("--shifts needs at least one integer, e.g. 0")
    return tuple(dict.fromkeys(vals))


class Predictor:
    """Runs a backend on base-code windows and returns ensemble-averaged predictions."""

    def __init__(self, backend, device: torch.device, precision: str = "fp32", batch_size: int = 64,
                 rc: bool = False, shifts: tuple[int, ...] = (0,), strand_perm: list[int] | None = None):
        if precision not in PRECISIONS:
            raise OptionError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise OptionError("--batch-size must be at least 1")
        self.backend = backend
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.batch_size = batch_size
        self.geom = backend.geometry
        self.shifts = shifts
        self.margin = max(abs(s) for s in shifts)
        limit = min(self.geom.input_length, self.geom.output_bins * self.geom.bin_size) // 2
        if self.margin and self.margin >= limit:  # no shift (0) always fits, even a one-base output
            raise OptionError(f"--shifts: a shift of {self.margin:,} bp moves the window by half its output or more "
                              + (f"(at most {limit - 1:,} bp for this model); shifts are a few bp, e.g. -1,0,1"
                                 if limit > 1 else "(this model's output is too short to shift: leave --shifts out)"))
        self.members = [(s, False) for s in shifts] + ([(s, True) for s in shifts] if rc else [])
        self.two_hot = backend.encoding == "two-hot"
        self.paired = False  # windows hold pair codes of two haplotypes (personal genomes, two-hot backends)
        if self.dtype is not None:
            try:
                with torch.autocast(device.type, dtype=self.dtype):
                    pass
            except RuntimeError as exc:
                raise OptionError(f"--precision {precision} is not supported on {device}: {exc}")
        nb = self.geom.output_bins
        e = self.geom.rc_bin_shift() if rc else 0
        self._maps = []
        j = np.arange(nb)
        for s, is_rc in self.members:
            ks = int(div_round_away(s, self.geom.bin_size))
            src = (nb - 1 - (j - ks - e)) if is_rc else (j - ks)
            valid = (src >= 0) & (src < nb)
            self._maps.append((torch.as_tensor(np.clip(src, 0, nb - 1), device=device),
                               torch.as_tensor(valid, device=device)))
        self._perm = torch.as_tensor(strand_perm, device=device) if (rc and strand_perm is not None) else None
        self.members_per_window = len(self.members)

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _encode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.paired:
            return two_hot_pairs(codes)
        x = one_hot(codes)
        return x * 2 if self.two_hot else x

    def _members(self, t: torch.Tensor):
        """Yield (k, is_rc, shift, encoded input) for each ensemble member of base codes ``t``."""
        L, m = self.geom.input_length, self.margin
        for k, (s, is_rc) in enumerate(self.members):
            x = self._encode(t[:, m + s: m + s + L])
            yield k, s, is_rc, (revcomp_hot(x) if is_rc else x)

    def _to_device(self, codes: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(codes)
        if self.device.type == "cuda":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The backend on ``x`` in forward passes of at most ``batch_size`` sequences."""
        parts = [self._forward(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(parts, 0) if len(parts) > 1 else parts[0]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass, as float32.  The model was run once on one window when it was loaded; a model
        that fails later (one exported for a batch of 1, say), or returns another shape, is a one-line
        error naming the batch, not a traceback."""
        n = x.shape[0]
        try:
            y = self.backend.predict(x)
        except VarfxError:
            raise
        except torch.cuda.OutOfMemoryError:
            raise ModelError(f"out of GPU memory in a forward pass of {n} windows: lower --batch-size") from None
        except Exception as exc:  # a user's model: anything can go wrong
            hint = (": a model written or exported for a fixed batch of 1 fails on more (export it with a dynamic "
                    "batch dimension, or pass --batch-size 1)") if n > 1 else ""
            raise ModelError(f"the model failed on a batch of {n} windows ({error_text(exc)}){hint}") from None
        g = self.geom
        if not isinstance(y, torch.Tensor) or y.ndim != 3 or y.shape[0] != n or y.shape[1] != g.output_bins:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ModelError(f"the model returned {got} for a batch of {n} windows, not (batch, bins, tracks) = "
                             f"({n}, {g.output_bins}, tracks) as it did on one window when loaded: its output "
                             "depends on the batch size")
        return y.float()

    @torch.inference_mode()
    def __call__(self, ref: np.ndarray, alt: np.ndarray, ref_row: np.ndarray | None = None,
                 change: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """REF (R, L + 2·margin) and ALT (V, L + 2·margin) uint8 windows -> ensemble-averaged
        (R, bins, tracks) and (V, bins, tracks) float32 predictions on the device.

        ``change`` gives, per ALT row, the [lo, hi) window positions where it differs from its REF
        row ``ref_row`` (lo = −1 for indels); backends with an incremental pass use it.
        """
        r = ref.shape[0]
        incremental = change is not None and getattr(self.backend, "incremental", False)
        with self._autocast():
            if incremental:
                tr, ta = self._to_device(ref), self._to_device(alt)
                rows = torch.as_tensor(ref_row, device=self.device)
                outs_r, outs_a = [], []
                for (k, s, is_rc, xr), (_, _, _, xa) in zip(self._members(tr), self._members(ta)):
                    lo, hi = self._member_span(change, s, is_rc)
                    pr, pa = self.backend.predict_ref_alt(xr, xa, rows, lo, hi, self.batch_size)
                    outs_r.append(pr.float())
                    outs_a.append(pa.float())
                return self._combine(outs_r), self._combine(outs_a)
            y = self.predict_windows(np.concatenate([ref, alt], 0))
        return y[:r], y[r:]

    @torch.inference_mode()
    def predict_windows(self, codes: np.ndarray) -> torch.Tensor:
        """(N, L + 2·margin) uint8 windows -> ensemble-averaged (N, bins, tracks) float32 on the device."""
        t = self._to_device(codes)
        with self._autocast():
            outs = [self._run(x) for _, _, _, x in self._members(t)]
        return self._combine(outs)

    def _member_span(self, change, s: int, is_rc: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The changed positions [lo, hi) in the frame of member (shift s, strand); −1 stays −1."""
        lo = torch.as_tensor(change[0], device=self.device)
        hi = torch.as_tensor(change[1], device=self.device)
        indel = lo < 0
        lo, hi = lo - s, hi - s
        if is_rc:
            L = self.geom.input_length
            lo, hi = L - hi, L - lo
        return torch.where(indel, -1, lo), torch.where(indel, -1, hi)

    def _combine(self, outs: list[torch.Tensor]) -> torch.Tensor:
        """Map each member's bins (and strands) back to the forward frame and average."""
        if len(self.members) == 1 and not self.members[0][1] and self.members[0][0] == 0:
            return outs[0]
        total = None
        count = None
        for k, (s, is_rc) in enumerate(self.members):
            src, valid = self._maps[k]
            part = outs[k][:, src]
            if is_rc and self._perm is not None:
                part = part[..., self._perm]
            w = valid.to(part.dtype)[None, :, None]
            total = part * w if total is None else total + part * w
            count = w if count is None else count + w
        return total / count.clamp(min=1)
