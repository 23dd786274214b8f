"""``clipnet``: CLIPNET (He & Danko) transcription-initiation models from their Keras fold files.

CLIPNET reads 1,000 bp of two-hot diploid sequence and predicts, for the central
500 bp, a profile of 1,000 values (500 plus-strand positions, then 500
minus-strand positions, both left to right in genome order) and a quantity (the
total initiation on both strands). The predicted track of a strand is
``profile / Σ profile × quantity``. The published model is a 9-fold ensemble:
varfx averages the folds' profiles and quantities (as CLIPNET's own ensemble
does), then scales.

Tracks: 0 = plus-strand initiation, 1 = minus-strand initiation (a strand pair:
reverse complement flips positions and swaps them), 2 = both strands (plus +
minus at each position; summed over all positions it is the quantity).
Defaults: all bins, statistics SAD, logSED (over paired bases), TOTAL, logTOTAL
(on track 2 the change of quantity and its log2 fold change, indels included),
QTL and JSD over the two strands.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..errors import InputError, ModelError
from ..windows import Geometry
from .base import Backend, reject_options

INPUT_LENGTH = 1000
OUTPUT_LENGTH = 500
TRACKS = pd.DataFrame({
    "id": ["plus", "minus", "both"],
    "description": ["CLIPNET: PRO-cap initiation, + strand", "CLIPNET: PRO-cap initiation, - strand",
                    "CLIPNET: PRO-cap initiation, both strands (sums to the quantity)"],
})


def fold_files(weights: list[str]) -> list[Path]:
    """--weights values -> fold files: files as given, folders expanded to their *.h5 and *.hdf5 files
    (sorted); a fold named twice (a folder and one of its files, say) is an error, not counted twice."""
    if not weights:
        raise InputError("the clipnet backend needs --weights: the fold_*.h5 files or their folder")
    paths: list[Path] = []
    for w in weights:
        p = Path(w)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".hdf5") and q.is_file())
            if not found:
                raise InputError(f"--weights {p}: the folder has no .h5 or .hdf5 files (CLIPNET's are fold_1.h5 … "
                                 "fold_9.h5)")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif p.exists():
            raise InputError(f"--weights {p} is neither a fold file nor a folder of them")
        else:
            raise InputError(f"weights file not found: {p}")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"--weights names the fold {p} twice: each fold counts once in the ensemble's "
                             "average; give it once")
        seen[key] = p
    return paths


class ClipnetBackend(Backend):
    name = "clipnet"
    summary = "CLIPNET transcription initiation: 1 kb two-hot diploid input, folds averaged"
    needs = "--weights fold_1.h5 --weights fold_2.h5 … or --weights DIR (CLIPNET's Keras fold files)"
    encoding = "two-hot"
    default_bins = "all"
    default_stats = ("SAD", "logSED", "TOTAL", "logTOTAL", "QTL", "JSD")
    profile_tracks = [0, 1]

    def __init__(self, weights: list[str], **options):
        super().__init__()
        reject_options(self.name, options)
        from .keras import load_keras_h5

        self.weight_files = fold_files(weights)
        self.folds = [load_keras_h5(p) for p in self.weight_files]
        self.geometry = Geometry(INPUT_LENGTH, OUTPUT_LENGTH, 1, (INPUT_LENGTH - OUTPUT_LENGTH) // 2)
        self.tracks = TRACKS.copy()
        self.strand_pairs = [(0, 1)]
        self._outputs = [self._output_order(m, p) for m, p in zip(self.folds, self.weight_files)]

    @staticmethod
    def _output_order(model, path: Path) -> tuple[int, int]:
        """Indices of the profile and quantity outputs, checked on a dry run."""
        try:
            with torch.inference_mode():
                outs = model(torch.zeros(1, INPUT_LENGTH, 4))
        except Exception as exc:  # any model can be handed in: say why it is not a CLIPNET fold
            raise ModelError(f"{path} is not a CLIPNET fold: it fails on a (1, {INPUT_LENGTH}, 4) input "
                             f"({str(exc).strip().splitlines()[0]})")
        shapes = [tuple(o.shape) for o in outs]
        names = list(getattr(model, "output_names", []))
        if len(outs) != 2:
            raise ModelError(f"{path}: a CLIPNET fold has 2 outputs (profile, quantity), this one has {len(outs)}")
        if "shape" in names and "sum" in names:
            order = (names.index("shape"), names.index("sum"))
        else:
            order = (0, 1) if shapes[0][-1] == 2 * OUTPUT_LENGTH else (1, 0)
        if shapes[order[0]] != (1, 2 * OUTPUT_LENGTH) or shapes[order[1]] != (1, 1):
            raise ModelError(f"{path}: outputs {shapes} are not CLIPNET's (1, {2 * OUTPUT_LENGTH}) profile "
                             "and (1, 1) quantity for a (1, 1000, 4) input")
        return order

    @classmethod
    def track_table(cls, weights: list[str], **options) -> pd.DataFrame:
        return TRACKS.copy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        profile = quantity = None
        for model, (ip, iq) in zip(self.folds, self._outputs):
            outs = model(x)
            p, q = outs[ip].float(), outs[iq].float()
            profile = p if profile is None else profile + p
            quantity = q if quantity is None else quantity + q
        k = len(self.folds)
        profile, quantity = profile / k, quantity / k
        scaled = profile / profile.sum(1, keepdim=True).clamp(min=torch.finfo(profile.dtype).tiny) * quantity
        plus, minus = scaled[:, :OUTPUT_LENGTH], scaled[:, OUTPUT_LENGTH:]
        return torch.stack([plus, minus, plus + minus], dim=-1)

    def to(self, device):
        for m in self.folds:
            m.to(device)
        return self

    def settings(self) -> dict:
        return {"folds": len(self.folds)}
