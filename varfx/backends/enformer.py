"""``enformer``: Enformer from local weights in the layout of the widely shared PyTorch port.

``--weights`` is either a folder with ``config.json`` and ``model.safetensors`` or
``pytorch_model.bin`` (what ``save_pretrained`` writes), or a bare state-dict
file (then the standard configuration is assumed, or a ``config.json`` beside it
is read). The port's duplicated ``_trunk.*`` keys are accepted. Tensors are
translated to varfx's own module names and checked one by one: the first that is
missing or of the wrong shape is named with both shapes.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd
import torch

from ..errors import InputError, ModelError, OptionError
from ..windows import Geometry
from .base import Backend, load_state_dict_checked, reject_options
from .enformer_model import SEQUENCE_LENGTH, Enformer, EnformerConfig, patch_tower
from .weights import read_state_dict

HEADS = ("human", "mouse")

#: port key prefix -> varfx key prefix, tried in order (after _trunk.N aliases are resolved)
_RENAMES = [
    (r"^stem\.0\.", "stem.conv."),
    (r"^stem\.1\.fn\.0\.", "stem.res.bn."),
    (r"^stem\.1\.fn\.2\.", "stem.res.conv."),
    (r"^stem\.2\.to_attn_logits\.", "stem.pool.logits."),
    (r"^conv_tower\.(\d+)\.0\.0\.", r"tower.\1.block.bn."),
    (r"^conv_tower\.(\d+)\.0\.2\.", r"tower.\1.block.conv."),
    (r"^conv_tower\.(\d+)\.1\.fn\.0\.", r"tower.\1.res.bn."),
    (r"^conv_tower\.(\d+)\.1\.fn\.2\.", r"tower.\1.res.conv."),
    (r"^conv_tower\.(\d+)\.2\.to_attn_logits\.", r"tower.\1.pool.logits."),
    (r"^transformer\.(\d+)\.0\.fn\.0\.", r"layers.\1.attn_norm."),
    (r"^transformer\.(\d+)\.0\.fn\.1\.rel_content_bias$", r"layers.\1.attn.content_bias"),
    (r"^transformer\.(\d+)\.0\.fn\.1\.rel_pos_bias$", r"layers.\1.attn.pos_bias"),
    (r"^transformer\.(\d+)\.0\.fn\.1\.", r"layers.\1.attn."),
    (r"^transformer\.(\d+)\.1\.fn\.0\.", r"layers.\1.ff_norm."),
    (r"^transformer\.(\d+)\.1\.fn\.1\.", r"layers.\1.ff_in."),
    (r"^transformer\.(\d+)\.1\.fn\.4\.", r"layers.\1.ff_out."),
    (r"^final_pointwise\.1\.0\.", "final.bn."),
    (r"^final_pointwise\.1\.2\.", "final.conv."),
    (r"^_heads\.(\w+)\.0\.", r"heads.\1."),
]
_TRUNK = {"1": "stem", "2": "conv_tower", "4": "transformer", "6": "final_pointwise"}


def translate_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The port's state dict -> varfx's names (num_batches_tracked dropped; _trunk duplicates merged)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"^(?:enformer\.)?", "", key)  # a prefix some wrappers add
        m = re.match(r"^_trunk\.(\d+)\.(.*)$", key)
        if m:
            if m.group(1) not in _TRUNK:
                continue
            key = f"{_TRUNK[m.group(1)]}.{m.group(2)}"
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        else:
            if not key.startswith(("stem.", "tower.", "layers.", "final.", "heads.")):
                raise ModelError(f"the weights have a tensor varfx's Enformer does not know: {key} "
                                 f"(shape {tuple(value.shape)})")
        if key in out and not torch.equal(out[key], value):
            raise ModelError(f"the weights hold two different tensors for {key} (a _trunk alias disagrees)")
        out[key] = value
    return out


def locate(weights: list[str]) -> tuple[Path, dict]:
    """--weights -> (state-dict file, config dict)."""
    if len(weights) != 1:
        raise OptionError("the enformer backend takes one --weights: a folder (config.json + model.safetensors "
                          "or pytorch_model.bin) or a state-dict file")
    p = Path(weights[0])
    folder = p if p.is_dir() else p.parent
    cfg_path = folder / "config.json"
    config = {}
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{cfg_path} is not valid JSON: {exc}")
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                return p / name, config
        raise InputError(f"--weights {p}: the folder has neither model.safetensors nor pytorch_model.bin")
    if not p.is_file():
        raise InputError(f"weights not found: {p}")
    return p, config


def checked_config(config, path: Path) -> tuple[EnformerConfig, int]:
    """A config.json's settings checked (one-line errors naming the key) -> (config, sequence length).

    The input length must be a whole number of bins (2^num_downsamples bp: every attention pooling halves
    an even length), and the crop to target_length bins must take the same number of bins from each end,
    as the output's geometry assumes; target_length -1 (enformer-pytorch's "no crop") keeps every bin."""
    where = f"{Path(path).parent / 'config.json'}"
    if not isinstance(config, dict):
        raise ModelError(f"{where} must hold a JSON object of settings, not a {type(config).__name__}")
    for key in ("dim", "depth", "heads", "attn_dim_key", "num_downsamples", "dim_divisible_by", "sequence_length"):
        v = config.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ModelError(f"{where}: {key} must be a positive whole number, not {v!r}")
    t = config.get("target_length")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or (t < 1 and t != -1)):
        raise ModelError(f"{where}: target_length must be a positive whole number or -1 (no crop), not {t!r}")
    heads = config.get("output_heads")
    if heads is not None and (not isinstance(heads, dict) or not heads or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0 for k, v in heads.items())):
        raise ModelError(f"{where}: output_heads must map head names to track counts, e.g. "
                         '{"human": 5313, "mouse": 1643}')
    cfg = EnformerConfig.from_dict(config)
    length = config.get("sequence_length", SEQUENCE_LENGTH)
    bs = 2 ** cfg.num_downsamples
    if length % bs:
        raise ModelError(f"{where}: sequence_length {length:,} is not a whole number of {bs}-bp bins "
                         f"(the conv tower halves the length {cfg.num_downsamples} times)")
    n = length // bs
    if cfg.target_length == -1:
        cfg.target_length = n
    if cfg.target_length > n or (n - cfg.target_length) % 2:
        raise ModelError(f"{where}: target_length {cfg.target_length} does not fit the {n} bins of a "
                         f"{length:,}-bp input with as many bins cropped from each end")
    return cfg, length


def targets(head: str) -> pd.DataFrame:
    """The shipped track table of a head: id (ENCODE/FANTOM accession), description, and the rest."""
    with resources.files("varfx").joinpath(f"data/enformer/targets_{head}.txt").open() as fh:
        table = pd.read_csv(fh, sep="\t")
    return table.rename(columns={"identifier": "id"})[["id", "description", "index", "file", "clip", "scale",
                                                       "sum_stat"]].astype({"id": str, "description": str})


class EnformerBackend(Backend):
    name = "enformer"
    summary = "Enformer (196,608 bp → 896 × 128-bp bins; human 5,313 / mouse 1,643 tracks)"
    needs = ("--weights DIR (config.json + model.safetensors or pytorch_model.bin, as enformer-pytorch "
             "saves) or a state-dict file; --head human|mouse")

    def __init__(self, weights: list[str], head: str = "human", incremental: bool = True, compile: bool = False,
                 **options):
        super().__init__()
        reject_options(self.name, options)
        path, config = locate(weights)
        cfg, length = checked_config(config, path)
        if head not in cfg.output_heads:
            raise OptionError(f"--head {head!r}: the model's heads are {', '.join(cfg.output_heads)}")
        self.head_name = head
        self.incremental = incremental
        self.model = Enformer(cfg).eval()
        load_state_dict_checked(self.model, translate_keys(read_state_dict(path)), str(path))
        self.weight_files = [path] + ([path.parent / "config.json"] if (path.parent / "config.json").is_file() else [])
        bs = self.model.bin_size
        self.geometry = Geometry(length, cfg.target_length, bs, (length - cfg.target_length * bs) // 2)
        self.tracks = self.track_table_for(head, cfg.output_heads[head])
        self.strand_pairs = []
        self._rows = None
        #: the REF windows of recent single-window calls, with their conv tower output and prediction
        #: (varfx ism: one REF window, its mutations in many chunks); see _ref_pass
        self._ref_cache: list[tuple] = []
        self.compiled = bool(compile)
        if compile:
            self._compile()

    def _compile(self) -> None:
        """torch.compile the two heavy parts, the conv tower and the trunk (transformer, crop, pointwise).

        Each compiles on its first call for a new input shape (the incremental pass's tower slices are one
        more shape); dynamic shapes let the last, smaller batch of a run reuse the compiled code."""
        m = self.model
        m.conv_tower = torch.compile(m.conv_tower, dynamic=None)
        m.trunk_from_tower = torch.compile(m.trunk_from_tower, dynamic=None)

    @staticmethod
    def track_table_for(head: str, n: int) -> pd.DataFrame:
        if head in HEADS:
            table = targets(head)
            if len(table) == n:
                return table
        return pd.DataFrame({"id": [f"{head}_{i}" for i in range(n)],
                             "description": [f"{head} track {i}" for i in range(n)]})

    @classmethod
    def track_table(cls, weights: list[str], head: str = "human", **options) -> pd.DataFrame:
        """The head's tracks: the shipped tables, or (with --weights) those of the checkpoint's config.json,
        whose head may have another size (tracks then named ``human_0…``, as a run names them)."""
        if weights:
            path, config = locate(weights)
            cfg, _ = checked_config(config, path)
            if head not in cfg.output_heads:
                raise OptionError(f"--head {head!r}: the model's heads are {', '.join(cfg.output_heads)}")
            return cls.track_table_for(head, cfg.output_heads[head])
        if head not in HEADS:
            raise OptionError(f"--head {head!r} is not one of {', '.join(HEADS)}")
        return targets(head)

    def compute_tracks(self, indices):
        """Unselected tracks are not computed: the head's final layer is sliced."""
        self._rows = None if indices is None else torch.as_tensor(list(indices), dtype=torch.long)

    def to(self, device):
        if self.compiled and torch.device(device).type == "cpu" and not any(
                shutil.which(c) for c in ("c++", "g++", "clang++")):
            raise OptionError("--compile on the CPU needs a C++ compiler (g++ or clang++): install one, or run "
                              "without --compile")
        self.model.to(device)
        if self._rows is not None:
            self._rows = self._rows.to(device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.model.trunk_from_tower(self.model.conv_tower(x))
        return self.model.head(emb, self.head_name, self._rows)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def predict_ref_alt(self, ref_x, alt_x, ref_row, lo, hi, batch_size: int):
        """REF and ALT predictions with the incremental ALT pass.

        The conv tower is local: an ALT row that differs from its REF row only in [lo, hi)
        (SNVs, MNVs) reuses the REF tower output and recomputes it only near the change
        (``patch_tower``); then only the transformer and head run for it. Rows with lo = −1
        (indels) take the full pass.
        """
        m = self.model

        def chunks(n):
            return range(0, n, batch_size)

        towers, ref_pred = self._ref_pass(ref_x, batch_size)
        alt_pred = torch.empty((alt_x.shape[0], *ref_pred.shape[1:]), dtype=ref_pred.dtype, device=ref_pred.device)
        local = lo >= 0
        for idx in (torch.nonzero(local).flatten(), torch.nonzero(~local).flatten()):
            for i in chunks(idx.numel()):
                part = idx[i:i + batch_size]
                if local[part[0]]:
                    t = patch_tower(m, towers[ref_row[part]], alt_x[part], lo[part], hi[part])
                else:
                    t = m.conv_tower(alt_x[part])
                alt_pred[part] = m.head(m.trunk_from_tower(t), self.head_name, self._rows).to(alt_pred.dtype)
        return ref_pred, alt_pred

    def _ref_pass(self, ref_x: torch.Tensor, batch_size: int):
        """The REF windows' conv tower output and predictions.  A single REF window met again (varfx ism
        hands the same REF window with each chunk of its mutations, once per ensemble member) reuses
        them, as long as the tracks and the autocast setting are the same: the tower and trunk run once
        per REF window and member instead of once per chunk."""
        m = self.model
        amp = None
        if ref_x.shape[0] == 1:
            amp = (torch.is_autocast_enabled(ref_x.device.type), torch.get_autocast_dtype(ref_x.device.type))
            for x, rows, mode, towers, pred in self._ref_cache:
                if rows is self._rows and mode == amp and x.shape == ref_x.shape and torch.equal(x, ref_x):
                    return towers, pred
        towers = torch.cat([m.conv_tower(ref_x[i:i + batch_size]) for i in range(0, ref_x.shape[0], batch_size)])
        ref_pred = torch.cat([m.head(m.trunk_from_tower(towers[i:i + batch_size]), self.head_name, self._rows)
                              for i in range(0, towers.shape[0], batch_size)])
        if amp is not None:  # the 8 most recent (ensemble members: --shifts and --rc)
            self._ref_cache = [(ref_x.clone(), self._rows, amp, towers, ref_pred), *self._ref_cache[:7]]
        return towers, ref_pred

    def settings(self) -> dict:
        return {"head": self.head_name, "incremental_alt_pass": self.incremental, "compile": self.compiled,
                "config": vars(self.model.cfg)}
