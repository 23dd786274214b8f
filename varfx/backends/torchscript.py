"""``torchscript``: a user's own PyTorch model as a TorchScript file plus a JSON spec.

The model file is either TorchScript (``torch.jit.save``) or, since TorchScript is
deprecated from torch 2.9 on, an exported program (``torch.export.save``, suffix
``.pt2``; export it with a dynamic batch dimension).

The spec (``model.json`` next to ``model.pt`` unless ``--spec`` says otherwise)::

    {"input_length": 1024, "encoding": "one-hot", "input_layout": "NLC",
     "output_bins": 16, "bin_size": 32, "bin_offset": 256,
     "tracks": [{"id": "t0", "description": "..."}, "t1", ...],
     "strand_pairs": [[0, 1]],
     "state_dict": "optional/weights.pt"}

``input_layout`` is ``NLC`` (batch, length, 4) or ``NCL`` (batch, 4, length);
``output_layout`` is ``NBT`` (batch, bins, tracks; the default) or ``NTB``.
"""

from __future__ import annotations

import difflib
import json
import warnings
from pathlib import Path

import torch

from ..errors import InputError, ModelError
from ..windows import Geometry
from .base import ENCODINGS, Backend, check_output, load_state_dict_checked, reject_options, tracks_table

_REQUIRED = {"input_length": int, "output_bins": int, "bin_size": int, "bin_offset": int, "tracks": list}
_OPTIONAL = ("encoding", "input_layout", "output_layout", "strand_pairs", "state_dict")


def read_spec(path: Path, extra_keys: tuple[str, ...] = ()) -> dict:
    """A model spec (the module docstring), checked: each mistake is a one-line error naming the key.
    Keys other than these (and ``extra_keys``) are refused, so that a misspelt one (``strand_pair``) is
    not silently ignored; keys starting with ``_`` are free for notes."""
    if not path.is_file():
        raise InputError(f"model spec not found: {path} (write one as described in docs/backends.md, "
                         "or pass --spec PATH)")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}")
    if not isinstance(spec, dict):
        raise InputError(f"{path}: the spec must be a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in spec:
            raise ModelError(f"{path}: the spec has no {key!r} (needed: {', '.join(_REQUIRED)})")
        if not isinstance(spec[key], typ) or isinstance(spec[key], bool):
            raise ModelError(f"{path}: {key!r} must be {typ.__name__}, got {spec[key]!r}")
    if spec["input_length"] < 1 or spec["output_bins"] < 1 or spec["bin_size"] < 1 or spec["bin_offset"] < 0:
        raise ModelError(f"{path}: input_length, output_bins and bin_size must be positive and bin_offset ≥ 0")
    if spec["bin_offset"] + spec["output_bins"] * spec["bin_size"] > spec["input_length"]:
        raise ModelError(f"{path}: the output bins (offset {spec['bin_offset']} + {spec['output_bins']} × "
                         f"{spec['bin_size']} bp) run past the {spec['input_length']}-bp input")
    if spec.get("encoding", "one-hot") not in ENCODINGS:
        raise ModelError(f"{path}: encoding must be one of {', '.join(ENCODINGS)}, got {spec['encoding']!r}")
    if spec.get("input_layout", "NLC") not in ("NLC", "NCL"):
        raise ModelError(f"{path}: input_layout must be NLC or NCL, got {spec['input_layout']!r}")
    if spec.get("output_layout", "NBT") not in ("NBT", "NTB"):
        raise ModelError(f"{path}: output_layout must be NBT or NTB, got {spec['output_layout']!r}")
    known = (*_REQUIRED, *_OPTIONAL, *extra_keys)
    for key in spec:
        if key not in known and not key.startswith("_"):
            near = difflib.get_close_matches(key, known, n=1)
            raise ModelError(f"{path}: unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                             + f"; a spec has {', '.join(known)} (keys starting with _ are free for notes)")
    n = len(spec["tracks"])
    pairs = spec.get("strand_pairs", [])
    if not isinstance(pairs, list):
        raise ModelError(f"{path}: strand_pairs must be a list of [plus, minus] track index pairs, got {pairs!r}")
    paired: set[int] = set()
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(i, int) for i in pair)
                or not all(0 <= i < n for i in pair) or pair[0] == pair[1]):
            raise ModelError(f"{path}: strand pair {pair!r} must be two different track indices in 0..{n - 1}")
        if paired & set(pair):
            raise ModelError(f"{path}: track {sorted(paired & set(pair))[0]} is in two strand pairs; each track has "
                             "at most one partner on the other strand")
        paired.update(pair)
    if "state_dict" in spec and (not isinstance(spec["state_dict"], str) or not spec["state_dict"].strip()):
        raise ModelError(f"{path}: state_dict must be a file name (relative to the spec's folder), "
                         f"got {spec['state_dict']!r}")
    ids = [t["id"] if isinstance(t, dict) else t for t in spec["tracks"]]
    texts = [str(x) for t in spec["tracks"] for x in ((t.get("id"), t.get("description")) if isinstance(t, dict)
                                                       else (t,)) if x is not None]
    bad = next((x for x in texts if any(ch in x for ch in "\t\n\r")), None)
    if bad is not None:
        raise ModelError(f"{path}: track {bad!r} has a tab or a line break, which the output tables cannot hold")
    seen: set = set()
    dup = next((str(i) for i in ids if (str(i) in seen or seen.add(str(i)))), None)
    if dup is not None:
        raise ModelError(f"{path}: track id {dup!r} is given twice; track ids name the output columns and must "
                         "differ")
    return spec


#: operators of an exported graph that behave as in training when this argument is True
_TRAINING_ARG = {"aten.dropout.default": 2, "aten.native_dropout.default": 2, "aten.feature_dropout.default": 2,
                 "aten.alpha_dropout.default": 2, "aten.feature_alpha_dropout.default": 2,
                 "aten.batch_norm.default": 5, "aten.native_batch_norm.default": 5,
                 "aten._native_batch_norm_legit.default": 5, "aten._native_batch_norm_legit_functional.default": 5}


def _training_op(module) -> str | None:
    """An operator of an exported program that runs as in training (dropout on, batch statistics), or None.
    An exported program keeps the mode the model was in when exported, and cannot be put in eval mode."""
    for node in module.graph.nodes:
        i = _TRAINING_ARG.get(str(node.target))
        if node.op == "call_function" and i is not None and len(node.args) > i and node.args[i] is True:
            return str(node.target)
    return None


def _load_module(path: Path) -> torch.nn.Module:
    """A TorchScript archive, or an exported program when the suffix is .pt2."""
    if path.suffix == ".pt2":
        try:
            module = torch.export.load(str(path)).module()
        except Exception as exc:  # torch raises many kinds here
            raise ModelError(f"{path} is not a torch.export program ({str(exc).strip().splitlines()[0]}): "
                             "save it with torch.export.save(torch.export.export(model, ...), PATH)")
        op = _training_op(module)
        if op is not None:
            raise ModelError(f"{path} was exported in training mode ({op} runs as in training: random or "
                             "batch-dependent outputs): call model.eval() before torch.export.export")
        return module
    try:
        with warnings.catch_warnings():  # torch ≥ 2.9 marks TorchScript deprecated; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"{path} is not a TorchScript file ({str(exc).splitlines()[0]}): "
                         "save the model with torch.jit.save(torch.jit.script(model), PATH), "
                         "or torch.export.save(...) to a .pt2 file")


class TorchScriptBackend(Backend):
    name = "torchscript"
    summary = "your own PyTorch model: a TorchScript file plus a JSON spec"
    needs = ("--weights MODEL.pt (torch.jit.save) or MODEL.pt2 (torch.export.save); "
             "spec MODEL.json beside it or --spec PATH")

    def __init__(self, weights: list[str], spec: str | None = None, **options):
        super().__init__()
        reject_options(self.name, options)
        if len(weights) != 1:
            raise ModelError("the torchscript backend takes exactly one --weights file (the TorchScript model)")
        path = Path(weights[0])
        if not path.is_file():
            raise InputError(f"weights file not found: {path}")
        spec_path = Path(spec) if spec else path.with_suffix(".json")
        self.spec = read_spec(spec_path)
        self.weight_files = [path, spec_path]
        self.module = _load_module(path)
        if "state_dict" in self.spec:
            sd_path = (spec_path.parent / self.spec["state_dict"])
            if not sd_path.is_file():
                raise InputError(f"state_dict file named in {spec_path} not found: {sd_path}")
            self.weight_files.append(sd_path)
            try:
                state = torch.load(sd_path, map_location="cpu", weights_only=True)
            except Exception as exc:  # not a torch file, or one holding more than tensors (a training checkpoint)
                raise ModelError(f"{sd_path} is not a state_dict of tensors ({str(exc).strip().splitlines()[0]}): "
                                 "save it with torch.save(model.state_dict(), PATH)") from None
            if not isinstance(state, dict):
                raise ModelError(f"{sd_path} holds a {type(state).__name__}, not a state_dict: "
                                 "save it with torch.save(model.state_dict(), PATH)")
            load_state_dict_checked(self.module, state, str(sd_path))
        if hasattr(self.module, "eval") and not isinstance(self.module, torch.fx.GraphModule):
            self.module.eval()
        s = self.spec
        self.encoding = s.get("encoding", "one-hot")
        self.geometry = Geometry(s["input_length"], s["output_bins"], s["bin_size"], s["bin_offset"])
        self.tracks = tracks_table(s["tracks"])
        self.strand_pairs = [tuple(p) for p in s.get("strand_pairs", [])]
        self._ncl = s.get("input_layout", "NLC") == "NCL"
        self._ntb = s.get("output_layout", "NBT") == "NTB"
        check_output(self.forward, self.geometry, len(self.tracks), path, "returns",
                     "fix output_bins/tracks in the spec or the model's output",
                     layout=(self._ncl, self._ntb))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._ncl:
            x = x.transpose(1, 2)
        y = self.module(x)
        if self._ntb:
            y = y.transpose(1, 2)
        return y

    def to(self, device):
        self.module.to(device)
        return self
