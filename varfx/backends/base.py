"""The small interface every model family implements."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..errors import ModelError, OptionError
from ..windows import Geometry

ENCODINGS = ("one-hot", "two-hot")


class Backend:
    """A model behind varfx's interface.

    Subclasses set ``encoding``, ``geometry``, ``tracks`` (a DataFrame with at
    least ``id`` and ``description``), ``strand_pairs`` and ``weight_files``, and
    implement :meth:`forward`.  The pipeline calls :meth:`predict` on encoded
    input that is already on the device.
    """

    name: str = "?"
    #: one line for `varfx backends`
    summary: str = ""
    #: what --weights (and other options) must be, for `varfx backends`
    needs: str = ""

    #: A backend whose scoring is not "REF vs ALT windows through one model" (SpliceAI: per-gene
    #: strands and masks, its own delta scores) sets this to a function with the keyword
    #: signature of :func:`varfx.run.score_vcf`; ``varfx score`` then hands the whole run to it.
    score_vcf = None
    #: the --bins default when the user gives none
    default_bins: str = "variant"
    #: the --short-contigs default when the user gives none
    default_short_contigs: str = "error"
    #: the --stat default when the user gives none (None: SAD,logSED)
    default_stats: tuple[str, ...] | None = None
    #: tracks compared by the profile statistics QTL and JSD (None: the selected tracks)
    profile_tracks: list[int] | None = None

    #: True when the backend implements ``predict_ref_alt(ref_x, alt_x, ref_row, lo, hi, batch_size)``
    #: and may use it (an incremental ALT pass); the predictor then hands it REF and ALT together
    incremental: bool = False

    encoding: str = "one-hot"
    geometry: Geometry
    tracks: pd.DataFrame
    strand_pairs: list[tuple[int, int]]
    weight_files: list[Path]

    def __init__(self):
        self._computed: torch.Tensor | None = None  # indices into tracks, or None for all

    # -- to implement ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, L, 4) float on the device -> (batch, bins, tracks) for every track."""
        raise NotImplementedError

    def to(self, device: torch.device) -> "Backend":
        raise NotImplementedError

    # -- provided -------------------------------------------------------------
    @classmethod
    def track_table(cls, weights: list[str], **options) -> pd.DataFrame:
        """The model's tracks; backends whose tracks are known without weights override this."""
        return cls(weights=weights, **options).tracks

    def compute_tracks(self, indices: list[int] | None) -> None:
        """Restrict what :meth:`predict` returns to ``indices`` (None: all tracks).

        Backends that can skip the work for other tracks override this.
        """
        self._computed = None if indices is None else torch.as_tensor(list(indices), dtype=torch.long)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        y = self.forward(x)
        if self._computed is not None:
            y = y.index_select(-1, self._computed.to(y.device))
        return y

    def settings(self) -> dict:
        """Backend-specific settings recorded in the output's metadata."""
        return {}

    def describe(self) -> dict:
        g = self.geometry
        return {
            "backend": self.name,
            "encoding": self.encoding,
            "input_length": g.input_length,
            "output_bins": g.output_bins,
            "bin_size": g.bin_size,
            "bin_offset": g.bin_offset,
            "tracks": len(self.tracks),
        }


def tracks_table(tracks) -> pd.DataFrame:
    """Track names or dicts (from a spec) -> a DataFrame with ``id`` and ``description``."""
    rows = []
    for t in tracks:
        if isinstance(t, str):
            rows.append({"id": t, "description": t})
        elif isinstance(t, dict) and "id" in t:
            rows.append({"description": t.get("id"), **t})
        else:
            raise ModelError(f"a track must be a name or an object with an 'id', got {t!r}")
    table = pd.DataFrame(rows)
    table["id"] = table["id"].astype(str)
    table["description"] = table["description"].astype(str)
    return table


def load_state_dict_checked(module: torch.nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into ``module``; name the first tensor that is missing, extra or misshapen.

    BatchNorm's ``num_batches_tracked`` counters play no part in inference and may be absent.
    """
    def counter(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    own = {k: v for k, v in module.state_dict().items() if not counter(k)}
    state = {k: v for k, v in state.items() if not counter(k)}
    for key, value in own.items():
        if key not in state:
            raise ModelError(f"{source}: tensor {key} (shape {tuple(value.shape)}) is missing from the weights")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelError(f"{source}: tensor {key} has shape {tuple(state[key].shape)} in the weights "
                             f"but the model expects {tuple(value.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise ModelError(f"{source}: the weights have a tensor the model does not: {extra[0]} "
                         f"(shape {tuple(state[extra[0]].shape)})")
    module.load_state_dict(state, strict=False)


def error_text(exc: BaseException) -> str:
    """An exception in one line: its first line and, when the cause is further down (TorchScript puts
    "The following operation failed…" first and the reason last), its last line too."""
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()] or [type(exc).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"


def check_output(fn, geometry: Geometry, n_tracks: int, path, what: str, fix: str,
                 layout: tuple[bool, bool] = (False, False)) -> None:
    """Run ``fn`` once on a zero (1, L, 4) input; a one-line ModelError if it fails or its output is
    not (1, bins, tracks). ``what`` names the output with its verb ("returns", "output 'x' is");
    ``layout`` says whether ``fn`` hands the model (batch, 4, L) input (NCL) and takes its output as
    (batch, tracks, bins) (NTB), so that the shapes named are the model's own."""
    g = geometry
    ncl, ntb = layout
    shown = f"(1, 4, {g.input_length})" if ncl else f"(1, {g.input_length}, 4)"
    try:
        with torch.inference_mode():
            y = fn(torch.zeros(1, g.input_length, 4))
    except Exception as exc:  # a user's model: anything can go wrong
        raise ModelError(f"{path} fails on a {shown} input as the spec describes: {error_text(exc)}")
    want = (1, g.output_bins, n_tracks)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        if ntb:  # name the model's own (batch, tracks, bins)
            got = (got[0], got[2], got[1]) if isinstance(got, tuple) and len(got) == 3 else got
            raise ModelError(f"{path} {what} {got} but the spec says (batch, tracks, bins) = "
                             f"{(1, n_tracks, g.output_bins)}: {fix}")
        raise ModelError(f"{path} {what} {got} but the spec says (batch, bins, tracks) = {want}: {fix}")


def reject_options(backend: str, options: dict) -> None:
    """A one-line error for options this backend does not take (rather than ignoring them)."""
    given = {k: v for k, v in options.items() if v is not None}
    if given:
        flag = {"incremental": "no-incremental"}  # options whose flag is not their name
        names = ", ".join("--" + flag.get(k, k.replace("_", "-")) for k in sorted(given))
        raise OptionError(f"the {backend} backend does not take {names}")
