"""Reading state dicts from local files without unpickling arbitrary objects.

* ``.safetensors``: parsed here (an 8-byte little-endian header length, a JSON
  header of name -> dtype, shape, byte offsets, then the raw tensor bytes), so
  varfx needs no extra package for it;
* anything else (``.bin``, ``.pt``, ``.pth``): ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from ..errors import InputError, ModelError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ModelError(f"{path} is not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ModelError(f"{path} is cut short or not a safetensors file (its header would end at byte {8 + n:,} "
                         f"of {len(data):,})")
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path} is not a safetensors file (bad header)")
    if not isinstance(header, dict):
        raise ModelError(f"{path} is not a safetensors file (its header is not a JSON object)")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (lo, hi) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ModelError(f"{path}: the header entry of tensor {name} lacks dtype, shape or data_offsets "
                             "(a damaged file?)") from None
        dtype = _DTYPES.get(dtype_name)
        if dtype is None:
            raise ModelError(f"{path}: tensor {name} has dtype {dtype_name}, which varfx cannot read")
        size = dtype.itemsize * math.prod(shape)
        if not (0 <= lo <= hi <= len(body)) or hi - lo != size:
            raise ModelError(f"{path}: tensor {name} should take bytes {lo:,}-{hi:,} ({size:,} for shape "
                             f"{tuple(shape)}) but the file holds {len(body):,} after its header: it is cut short "
                             "or damaged")
        t = torch.frombuffer(bytearray(body[lo:hi]), dtype=dtype) if hi > lo else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape)
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a weights file, never unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe objects; an empty file's message is empty
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} is not a PyTorch state dict that loads with weights_only=True ({why})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a flat dict of tensors (a state dict)")
    return state
