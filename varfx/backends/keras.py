"""``keras``: a Keras 2 ``.h5`` model (``model.save``) converted to PyTorch, plus a JSON spec.

:func:`load_keras_h5` reads the file with h5py alone (no TensorFlow) and returns a
:class:`KerasModel`, a ``torch.nn.Module`` that computes what the Keras model
computes.  It reads files from Keras 2.0 (the published SpliceAI models) to
tf.keras 2.15, functional and Sequential.  docs/keras.md lists the layers.

How the conversion works:

1. ``model_config`` (JSON) becomes a graph of layers in topological order; each
   layer's output shape (without the batch axis, ``None`` where unknown) follows
   from its inputs' shapes and its config.
2. Each layer becomes a small module.  The weights it needs follow from its
   config and input shape; the file's tensors for the layer are matched to them
   in the order of the group's ``weight_names`` attribute, and a tensor of the
   wrong shape is named with both shapes.
3. A plan for the forward pass: identity layers (Dropout, linear Activation) are
   dropped, a BatchNormalization right after a Conv1D is folded into the
   convolution, tensors are freed after their last use, and element-wise layers
   overwrite an input that nothing else reads (when autograd is off).

Tensors stay in Keras's layout, ``(batch, length, channels)``, throughout.
Convolutions and pooling see them through a zero-copy ``(batch, channels, 1,
length)`` view, which is torch's channels-last 2-D layout: oneDNN's fast path on
the CPU (2-9x faster than ``conv1d`` on channels-first tensors here, see
docs/keras.md), so nothing is ever transposed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, ModelError
from ..windows import Geometry
from .base import Backend, reject_options, tracks_table
from .torchscript import read_spec

Shape = tuple  # a Keras shape without the batch axis; None where unknown

# ---------------------------------------------------------------------------------------------------------------------
# Reading the file


@dataclass(frozen=True)
class _Layer:
    """One layer of the Keras graph: its name, class, config and the layers it reads."""

    name: str
    cls: str
    config: dict
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class _Graph:
    layers: list[_Layer]  # topological order, input layers excluded
    inputs: dict[str, Shape]  # input layer name -> shape
    outputs: list[str]


def _read_h5(path: Path) -> tuple[dict, dict[str, list[tuple[str, np.ndarray]]]]:
    """The model config and, per layer, its weight tensors in ``weight_names`` order."""
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if not h5py.is_hdf5(path):
        raise ModelError(f"{path} is not an HDF5 file: save the Keras model with model.save(PATH, "
                         "save_format='h5') (a .keras archive or SavedModel folder cannot be read)")
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise ModelError(f"{path} has no model_config: it holds weights only (model.save_weights); "
                             "save the whole model with model.save(PATH, save_format='h5')")
        version, backend = _text(f.attrs.get("keras_version", "")), _text(f.attrs.get("backend", ""))
        if version.startswith("3"):
            raise ModelError(f"{path} was written by Keras {version}; only Keras 2 files (keras or tf.keras "
                             "≤ 2.15) can be read: save it with tf.keras 2.x")
        if backend == "theano":
            raise ModelError(f"{path} was saved with the Theano backend, whose kernels are flipped; "
                             "load and re-save it with TensorFlow Keras first")
        config = json.loads(_text(f.attrs["model_config"]))
        group = f["model_weights"] if "model_weights" in f else f
        weights = {name: _layer_tensors(group[name], path) for name in group if "weight_names" in group[name].attrs}
    return config, weights


def _layer_tensors(group: h5py.Group, path: Path) -> list[tuple[str, np.ndarray]]:
    """A layer's weight tensors, named and ordered by its ``weight_names`` attribute."""
    names = [_text(n) for n in group.attrs["weight_names"]]
    missing = [n for n in names if n not in group]
    if missing:
        raise ModelError(f"{path}: tensor {missing[0]} is listed in weight_names of {group.name} but is not in "
                         "the file")
    return [(n, np.asarray(group[n])) for n in names]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_config(config: dict, source: str) -> _Graph:
    """``model_config`` -> a graph: Sequential (a list of layers) or functional (layers with inbound nodes)."""
    cls = config.get("class_name")
    if cls not in ("Sequential", "Model", "Functional"):
        raise ModelError(f"{source}: the top-level model is a {cls!r}; only Sequential and functional (Model) "
                         "models can be read")
    try:
        return (_parse_sequential if cls == "Sequential" else _parse_functional)(config["config"], source)
    except (KeyError, TypeError, IndexError) as exc:
        raise ModelError(f"{source}: model_config is not a Keras 2 {cls} config that can be read "
                         f"({type(exc).__name__}: {exc})") from None


def _parse_sequential(config, source: str) -> _Graph:
    """Keras 2.0-2.2 store a Sequential's layers as a list; later versions as {"layers": [...]}."""
    entries = config if isinstance(config, list) else config["layers"]
    if entries and entries[0]["class_name"] == "InputLayer":
        first, entries = entries[0]["config"], entries[1:]
        input_name = first["name"]
    else:
        first = entries[0]["config"]
        input_name = f"{first['name']}_input"  # as Keras names it
    shape = first.get("batch_input_shape") or (None if isinstance(config, list) else config.get("build_input_shape"))
    if shape is None:
        raise ModelError(f"{source}: the Sequential model's input shape is not in the file; "
                         "build it with an Input layer before saving")
    layers, previous = [], input_name
    for entry in entries:
        layer = _Layer(entry["config"]["name"], entry["class_name"], entry["config"], (previous,))
        layers.append(layer)
        previous = layer.name
    return _Graph(layers, {input_name: tuple(shape[1:])}, [previous])


def _parse_functional(config: dict, source: str) -> _Graph:
    """A functional model: each layer lists the layers it reads in ``inbound_nodes``."""
    inputs, layers = {}, []
    for entry in config["layers"]:
        name, cls, cfg = entry["name"], entry["class_name"], entry["config"]
        if cls == "InputLayer":
            inputs[name] = tuple((cfg.get("batch_input_shape") or cfg["batch_shape"])[1:])
            continue
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1:
            raise ModelError(f"{source}: layer {name!r} ({cls}) is called {len(nodes)} times (a shared layer); "
                             "the keras backend converts layers that are called once")
        layers.append(_Layer(name, cls, cfg, tuple(_inbound_name(ref, name, source) for ref in nodes[0])))
    return _Graph(_topological(layers, set(inputs), source), inputs,
                  [_inbound_name(ref, "the model's outputs", source) for ref in _nested(config["output_layers"])])


def _nested(refs: list) -> list:
    """tf.keras writes a single input or output as [name, 0, 0] rather than [[name, 0, 0]]."""
    return [refs] if refs and isinstance(refs[0], str) else refs


def _inbound_name(ref: list, user: str, source: str) -> str:
    """[layer name, node index, tensor index, (kwargs)] -> the layer name; every layer has one node, one output."""
    if ref[1] != 0 or ref[2] != 0:
        raise ModelError(f"{source}: {user} reads output {ref[2]} of call {ref[1]} of layer {ref[0]!r}; "
                         "the keras backend converts layers that are called once and have one output")
    return ref[0]


def _topological(layers: list[_Layer], sources: set[str], source: str) -> list[_Layer]:
    """Layers ordered so that each comes after those it reads (file order among the ready ones)."""
    known = sources | {layer.name for layer in layers}
    for layer in layers:
        for name in layer.inputs:
            if name not in known:
                raise ModelError(f"{source}: layer {layer.name!r} reads {name!r}, which is not in the model")
    done, order, pending = set(sources), [], list(layers)
    while pending:
        deferred = []
        for layer in pending:
            if all(name in done for name in layer.inputs):
                order.append(layer)
                done.add(layer.name)
            else:
                deferred.append(layer)
        if len(deferred) == len(pending):
            raise ModelError(f"{source}: the layers {[layer.name for layer in pending]} form a cycle")
        pending = deferred
    return order


# ---------------------------------------------------------------------------------------------------------------------
# Geometry helpers


def _padding(mode: str, length: int, span: int, stride: int) -> tuple[int, int]:
    """Left and right padding as TensorFlow does it: 'same' puts the odd one on the right."""
    if mode == "valid":
        return 0, 0
    if mode == "causal":
        return span - 1, 0
    total = max((-(-length // stride) - 1) * stride + span - length, 0)
    return total // 2, total - total // 2


def _out_length(length, span: int, stride: int, mode: str, layer: _Layer):
    if length is None:
        return None
    n = (length - span) // stride + 1 if mode == "valid" else -(-length // stride)
    if n < 1:
        raise ModelError(f"layer {layer.name!r} ({layer.cls}): its {span}-long window does not fit the "
                         f"{length}-long input")
    return n


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """(batch, length, channels) -> a (batch, channels, 1, length) view: channels-last 2-D, oneDNN's fast layout."""
    return x.unsqueeze(1).permute(0, 3, 1, 2)


def _nlc(y: torch.Tensor) -> torch.Tensor:
    """The inverse view of :func:`_nchw`."""
    return y.permute(0, 2, 3, 1).squeeze(1)


def _pad_length(x: torch.Tensor, left: int, right: int, value: float = 0.0) -> torch.Tensor:
    return F.pad(x, (0, 0, left, right), value=value) if left or right else x


# ---------------------------------------------------------------------------------------------------------------------
# Modules: tensors are in Keras's layout, (batch, length, channels) for sequences.  ``elementwise`` modules take
# ``inplace`` (the plan sets it where nothing else reads the input); ``makes_view`` ones return a view of their input,
# which must then not be overwritten.


class _Activation(torch.nn.Module):
    """A Keras activation; softmax runs over the last axis, as in Keras."""

    FUNCTIONS: dict[str, Callable] = {
        "relu": lambda x, inplace: F.relu(x, inplace=inplace),
        "elu": lambda x, inplace: F.elu(x, inplace=inplace),
        "selu": lambda x, inplace: F.selu(x, inplace=inplace),
        "sigmoid": lambda x, inplace: x.sigmoid_() if inplace else x.sigmoid(),
        "tanh": lambda x, inplace: x.tanh_() if inplace else x.tanh(),
        "exponential": lambda x, inplace: x.exp_() if inplace else x.exp(),
        "softplus": lambda x, inplace: F.softplus(x),
        "softmax": lambda x, inplace: F.softmax(x, dim=-1),
        "swish": lambda x, inplace: F.silu(x, inplace=inplace),
        "silu": lambda x, inplace: F.silu(x, inplace=inplace),
        "gelu": lambda x, inplace: F.gelu(x),
    }
    elementwise = True

    def __init__(self, name: str):
        super().__init__()
        self.name, self.function = name, self.FUNCTIONS[name]

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return self.function(x, inplace)

    def extra_repr(self) -> str:
        return self.name


class _Conv1d(torch.nn.Module):
    """Conv1D with TensorFlow's padding, run as a channels-last 2-D convolution; a BatchNorm can be folded in."""

    def __init__(self, kernel: torch.Tensor, bias, stride: int, dilation: int, groups: int, padding: str, activation):
        super().__init__()
        # Keras (k, in, out) -> torch (out, in, 1, k), stored channels-last like the activations
        weight = kernel.permute(2, 1, 0).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.dilation, self.groups, self.padding = stride, dilation, groups, padding
        self.span = dilation * (kernel.shape[0] - 1) + 1
        self.pointwise = self.span == 1 and stride == 1 and groups == 1
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise:  # a matrix product over (batch * length) rows: faster than any convolution path
            y = F.linear(x, self.weight[:, :, 0, 0], self.bias)
        else:
            left, right = _padding(self.padding, x.shape[1], self.span, self.stride)
            if left != right:
                x, left = _pad_length(x, left, right), 0
            y = _nlc(F.conv2d(_nchw(x), self.weight, self.bias, (1, self.stride), (0, left), (1, self.dilation),
                              self.groups))
        return y if self.activation is None else self.activation(y, inplace=True)

    def fold(self, affine: "_Affine") -> None:
        """Absorb a per-channel ``y * scale + shift`` that follows this (linear) convolution."""
        self.weight = self.weight * affine.scale[:, None, None, None]
        self.bias = affine.shift if self.bias is None else self.bias * affine.scale + affine.shift


class _Dense(torch.nn.Module):
    """Dense on the last axis, whatever the rank."""

    def __init__(self, kernel: torch.Tensor, bias, activation):
        super().__init__()
        self.register_buffer("weight", kernel.T.contiguous())
        self.register_buffer("bias", bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else self.activation(y, inplace=True)


class _Affine(torch.nn.Module):
    """BatchNormalization at inference: ``x * scale + shift`` on the last axis."""

    elementwise = True

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        if x.requires_grad:  # autograd does not follow out=
            return torch.addcmul(self.shift, x, self.scale)
        # with an explicit output torch runs the broadcast vectorised: 4x faster on (batch, length, channels)
        return torch.addcmul(self.shift, x, self.scale, out=x if inplace else torch.empty_like(x))


class _Merge(torch.nn.Module):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: folded left to right like Keras."""

    OPS = {"Add": torch.add, "Subtract": torch.sub, "Multiply": torch.mul, "Average": torch.add,
           "Maximum": torch.maximum, "Minimum": torch.minimum}
    elementwise = True

    def __init__(self, cls: str):
        super().__init__()
        self.cls, self.op = cls, self.OPS[cls]

    def forward(self, *xs: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        out = self.op(xs[0], xs[1], out=xs[0]) if inplace else self.op(xs[0], xs[1])
        for x in xs[2:]:  # ``out`` is ours now; reuse it unless autograd tracks it (it does not follow out=)
            out = self.op(out, x) if out.requires_grad else self.op(out, x, out=out)
        return out.div_(len(xs)) if self.cls == "Average" else out

    def extra_repr(self) -> str:
        return self.cls


class _Concatenate(torch.nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class _Pool(torch.nn.Module):
    """MaxPooling1D / AveragePooling1D; 'same' average pooling leaves the padding out of the mean (as TF)."""

    def __init__(self, kind: str, size: int, stride: int, padding: str):
        super().__init__()
        self.kind, self.size, self.stride, self.padding = kind, size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = _padding(self.padding, x.shape[1], self.size, self.stride)
        window, stride = (1, self.size), (1, self.stride)
        if self.kind == "max":
            return _nlc(F.max_pool2d(_nchw(_pad_length(x, left, right, -math.inf)), window, stride))
        mean = _nlc(F.avg_pool2d(_nchw(_pad_length(x, left, right)), window, stride))
        if not (left or right):
            return mean
        share = F.avg_pool2d(_nchw(_pad_length(x.new_ones(1, x.shape[1], 1), left, right)), window, stride)
        return mean / _nlc(share)  # (sum / size) / (inside / size)


class _GlobalPool(torch.nn.Module):
    def __init__(self, kind: str, keepdims: bool):
        super().__init__()
        self.kind, self.keepdims = kind, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return x.amax(dim=1, keepdim=self.keepdims)
        return x.mean(dim=1, keepdim=self.keepdims)


class _Crop(torch.nn.Module):
    makes_view = True

    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.left:x.shape[1] - self.right]


class _ZeroPad(torch.nn.Module):
    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, self.left, self.right))


class _Reshape(torch.nn.Module):
    """Flatten and Reshape (Keras's layout is torch's row-major one)."""

    makes_view = True

    def __init__(self, target: tuple):
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0],) + self.target)


def _activation(name, layer: _Layer) -> _Activation | None:
    """The module for an ``activation`` config value; None for linear."""
    if not isinstance(name, str) or name not in _Activation.FUNCTIONS and name != "linear":
        raise ModelError(f"layer {layer.name!r} ({layer.cls}) uses activation {name!r}; supported: linear, "
                         f"{', '.join(sorted(_Activation.FUNCTIONS))}")
    return None if name == "linear" else _Activation(name)


# ---------------------------------------------------------------------------------------------------------------------
# Converters: (layer, input shapes) -> output shape, the weights the layer needs, and a maker of its module.


class _Built(NamedTuple):
    shape: Shape
    weights: tuple = ()  # (role, Keras shape) in Keras's weight order
    make: Callable | None = None  # tensors by role -> module; None: the layer is the identity


def _one(value) -> int:
    """Keras writes kernel sizes, strides etc. as an int or a one-element list."""
    return value[0] if isinstance(value, (list, tuple)) else value


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _require(ok: bool, layer: _Layer, what: str) -> None:
    if not ok:
        raise ModelError(f"layer {layer.name!r} ({layer.cls}): {what}")


def _weights(kernel: tuple, units: int, use_bias: bool) -> tuple:
    return (("kernel", kernel),) + ((("bias", (units,)),) if use_bias else ())


def _sequence_input(layer: _Layer, shapes: list[Shape]) -> Shape:
    """The one (length, channels) input shape of a 1-D layer, in channels_last format."""
    _require(len(shapes) == 1 and len(shapes[0]) == 2, layer,
             f"needs one (length, channels) input, got {', '.join(map(str, shapes))}")
    _require(layer.config.get("data_format", "channels_last") == "channels_last", layer,
             "only data_format='channels_last' is supported")
    return shapes[0]


def _conv1d(layer: _Layer, shapes: list[Shape]) -> _Built:
    (length, channels), c = _sequence_input(layer, shapes), layer.config
    k, stride, dilation = _one(c["kernel_size"]), _one(c["strides"]), _one(c["dilation_rate"])
    groups = c.get("groups", 1)
    _require(c["padding"] in ("valid", "same", "causal"), layer, f"unknown padding {c['padding']!r}")
    _require(channels is not None and channels % groups == 0, layer, f"{channels} channels in {groups} groups")
    activation = _activation(c.get("activation", "linear"), layer)
    length = _out_length(length, dilation * (k - 1) + 1, stride, c["padding"], layer)
    return _Built((length, c["filters"]), _weights((k, channels // groups, c["filters"]), c["filters"], c["use_bias"]),
                  lambda w: _Conv1d(w["kernel"], w.get("bias"), stride, dilation, groups, c["padding"], activation))


def _dense(layer: _Layer, shapes: list[Shape]) -> _Built:
    _require(len(shapes) == 1 and shapes[0][-1] is not None, layer,
             f"needs one input with known channels, got {shapes}")
    c, shape = layer.config, shapes[0]
    activation = _activation(c.get("activation", "linear"), layer)
    return _Built(shape[:-1] + (c["units"],), _weights((shape[-1], c["units"]), c["units"], c["use_bias"]),
                  lambda w: _Dense(w["kernel"], w.get("bias"), activation))


def _batch_norm(layer: _Layer, shapes: list[Shape]) -> _Built:
    c, shape = layer.config, shapes[0]
    axes = c.get("axis", -1)
    axes = axes if isinstance(axes, list) else [axes]
    _require(len(axes) == 1 and axes[0] % (len(shape) + 1) == len(shape), layer,
             f"normalises axis {c.get('axis')}; only the last (channel) axis is supported")
    n, eps = shape[-1], c.get("epsilon", 1e-3)
    roles = (["gamma"] if c.get("scale", True) else []) + (["beta"] if c.get("center", True) else [])

    def make(w):
        w = {role: t.double() for role, t in w.items()}
        scale = w.get("gamma", torch.ones(n, dtype=torch.float64)) / torch.sqrt(w["moving_variance"] + eps)
        shift = w.get("beta", torch.zeros(n, dtype=torch.float64)) - w["moving_mean"] * scale
        return _Affine(scale.float(), shift.float())
    return _Built(shape, tuple((role, (n,)) for role in roles + ["moving_mean", "moving_variance"]), make)


def _activation_layer(layer: _Layer, shapes: list[Shape]) -> _Built:
    module = _activation(layer.config["activation"], layer)
    return _Built(shapes[0], (), None if module is None else (lambda w: module))


def _merge(layer: _Layer, shapes: list[Shape]) -> _Built:
    _require(len(shapes) >= 2 and (layer.cls != "Subtract" or len(shapes) == 2), layer,
             f"got {len(shapes)} inputs")
    shape = shapes[0]
    for other in shapes[1:]:
        _require(len(other) == len(shape) and all(a is None or b is None or a == b for a, b in zip(shape, other)),
                 layer, f"inputs of shapes {shapes} differ (broadcasting is not supported)")
        shape = tuple(a if a is not None else b for a, b in zip(shape, other))
    return _Built(shape, (), lambda w: _Merge(layer.cls))


def _concatenate(layer: _Layer, shapes: list[Shape]) -> _Built:
    rank = len(shapes[0]) + 1
    axis = layer.config.get("axis", -1) % rank
    _require(axis > 0 and all(len(s) + 1 == rank for s in shapes), layer, f"cannot join {shapes} on axis {axis}")
    sizes = [s[axis - 1] for s in shapes]
    shape = list(shapes[0])
    shape[axis - 1] = None if None in sizes else sum(sizes)
    return _Built(tuple(shape), (), lambda w: _Concatenate(axis))


def _pooling(layer: _Layer, shapes: list[Shape]) -> _Built:
    (length, channels), c = _sequence_input(layer, shapes), layer.config
    size = _one(c["pool_size"])
    stride = _one(c.get("strides") or size)
    _require(c["padding"] in ("valid", "same"), layer, f"unknown padding {c['padding']!r}")
    kind = "max" if layer.cls == "MaxPooling1D" else "avg"
    return _Built((_out_length(length, size, stride, c["padding"], layer), channels), (),
                  lambda w: _Pool(kind, size, stride, c["padding"]))


def _global_pooling(layer: _Layer, shapes: list[Shape]) -> _Built:
    _, channels = _sequence_input(layer, shapes)
    keepdims = layer.config.get("keepdims", False)
    kind = "max" if layer.cls == "GlobalMaxPooling1D" else "avg"
    return _Built((1, channels) if keepdims else (channels,), (), lambda w: _GlobalPool(kind, keepdims))


def _cropping(layer: _Layer, shapes: list[Shape]) -> _Built:
    length, channels = _sequence_input(layer, shapes)
    left, right = _pair(layer.config["cropping"])
    return _Built((None if length is None else length - left - right, channels), (), lambda w: _Crop(left, right))


def _zero_padding(layer: _Layer, shapes: list[Shape]) -> _Built:
    length, channels = _sequence_input(layer, shapes)
    left, right = _pair(layer.config["padding"])
    return _Built((None if length is None else length + left + right, channels), (), lambda w: _ZeroPad(left, right))


def _flatten(layer: _Layer, shapes: list[Shape]) -> _Built:
    shape = shapes[0]
    _require(layer.config.get("data_format", "channels_last") == "channels_last", layer,
             "only data_format='channels_last' is supported")
    if len(shape) == 1:
        return _Built(shape)
    return _Built((None if None in shape else math.prod(shape),), (), lambda w: _Reshape((-1,)))


def _reshape(layer: _Layer, shapes: list[Shape]) -> _Built:
    target, shape = tuple(layer.config["target_shape"]), shapes[0]
    if -1 in target and None not in shape:
        known = math.prod(d for d in target if d != -1)
        target_shape = tuple(math.prod(shape) // known if d == -1 else d for d in target)
    else:
        target_shape = tuple(None if d == -1 else d for d in target)
    return _Built(target_shape, (), lambda w: _Reshape(target))


def _identity(layer: _Layer, shapes: list[Shape]) -> _Built:
    return _Built(shapes[0])


_CONVERTERS: dict[str, Callable[[_Layer, list[Shape]], _Built]] = {
    "Conv1D": _conv1d, "Dense": _dense, "BatchNormalization": _batch_norm, "Activation": _activation_layer,
    **{cls: _merge for cls in _Merge.OPS}, "Concatenate": _concatenate,
    "MaxPooling1D": _pooling, "AveragePooling1D": _pooling,
    "GlobalMaxPooling1D": _global_pooling, "GlobalAveragePooling1D": _global_pooling,
    "Cropping1D": _cropping, "ZeroPadding1D": _zero_padding, "Flatten": _flatten, "Reshape": _reshape,
    "Dropout": _identity, "SpatialDropout1D": _identity,
}
#: Keras layer classes the converter reads (InputLayer too), for docs and error messages
SUPPORTED_LAYERS = tuple(sorted(["InputLayer", *_CONVERTERS]))


def _convert(graph: _Graph, source: str):
    """Each layer of ``graph`` (in order) with what its converter makes of it and its input shapes."""
    shapes: dict[str, Shape] = dict(graph.inputs)
    for layer in graph.layers:
        if layer.cls not in _CONVERTERS:
            raise ModelError(f"{source}: layer {layer.name!r} is a {layer.cls}, which the keras backend cannot "
                             f"convert (supported: {', '.join(SUPPORTED_LAYERS)})")
        try:
            built = _CONVERTERS[layer.cls](layer, [shapes[n] for n in layer.inputs])
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{source}: layer {layer.name!r} ({layer.cls}) has a config the keras backend cannot "
                             f"read ({type(exc).__name__}: {exc})") from None
        shapes[layer.name] = built.shape
        yield layer, built


def _module(layer: _Layer, built: _Built, tensors: list[tuple[str, np.ndarray]], source: str):
    """The layer's module (None for the identity) from its file tensors, checked against what its config needs."""
    if len(tensors) != len(built.weights):
        raise ModelError(f"{source}: layer {layer.name!r} ({layer.cls}) has {len(tensors)} weight tensors in the "
                         f"file ({', '.join(n for n, _ in tensors) or 'none'}) but its config needs "
                         f"{len(built.weights)} ({', '.join(r for r, _ in built.weights) or 'none'})")
    for (name, array), (role, shape) in zip(tensors, built.weights):
        if array.shape != shape:
            raise ModelError(f"{source}: tensor {name} has shape {array.shape} in the file but layer {layer.name!r} "
                             f"({layer.cls}) needs {role} of shape {shape} from its config")
    arrays = {role: torch.from_numpy(np.asarray(array, dtype=np.float32))
              for (_, array), (role, _) in zip(tensors, built.weights)}
    return None if built.make is None else built.make(arrays)


def weight_shapes(model_config: dict) -> dict[str, list[tuple[str, tuple]]]:
    """The weight tensors each layer of a Keras ``model_config`` needs, as (role, shape) in Keras's order."""
    graph = _parse_config(model_config, "model_config")
    return {layer.name: list(built.weights) for layer, built in _convert(graph, "model_config")}


# ---------------------------------------------------------------------------------------------------------------------
# The plan and the model


@dataclass
class _Node:
    name: str
    module: torch.nn.Module | None  # None: passes its input through
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class _Step:
    output: str
    inputs: tuple[str, ...]
    free: tuple[str, ...]  # tensors not needed after this step
    inplace: bool  # may overwrite inputs[0]


def _drop_identities(nodes: list[_Node], outputs: list[str]) -> tuple[list[_Node], list[str]]:
    """Remove pass-through nodes; whatever read one reads its input instead."""
    alias: dict[str, str] = {}
    kept = []
    for node in nodes:
        inputs = tuple(alias.get(n, n) for n in node.inputs)
        if node.module is None:
            alias[node.name] = inputs[0]
        else:
            kept.append(_Node(node.name, node.module, inputs))
    return kept, [alias.get(n, n) for n in outputs]


def _readers(nodes: list[_Node], outputs: list[str]) -> dict[str, int]:
    """How many times each tensor is read (a model output counts as a read)."""
    count: dict[str, int] = {}
    for name in [n for node in nodes for n in node.inputs] + outputs:
        count[name] = count.get(name, 0) + 1
    return count


def _fold_batch_norms(nodes: list[_Node], outputs: list[str]) -> None:
    """A BatchNormalization whose input is a linear Conv1D read by nothing else goes into the convolution."""
    producer = {node.name: node for node in nodes}
    readers = _readers(nodes, outputs)
    for node in nodes:
        conv = producer.get(node.inputs[0]) if isinstance(node.module, _Affine) else None
        if conv is not None and isinstance(conv.module, _Conv1d) and conv.module.activation is None \
                and readers[conv.name] == 1:
            conv.module.fold(node.module)
            node.module = None


def _plan(nodes: list[_Node], outputs: list[str]) -> list[_Step]:
    """Steps that free each tensor after its last read and compute in place where that is safe."""
    readers = _readers(nodes, outputs)
    last_read = {name: i for i, node in enumerate(nodes) for name in node.inputs}
    fresh = {node.name for node in nodes if not getattr(node.module, "makes_view", False)}  # not model inputs
    steps = []
    for i, node in enumerate(nodes):
        first = node.inputs[0]
        inplace = getattr(node.module, "elementwise", False) and readers[first] == 1 and first in fresh
        free = tuple(n for n in dict.fromkeys(node.inputs) if last_read[n] == i and n not in outputs)
        steps.append(_Step(node.name, node.inputs, free, inplace))
    return steps


class KerasModel(torch.nn.Module):
    """A converted Keras model: inputs in Keras's layout in, a list of outputs in Keras's layout and order out.

    Attributes: ``input_names``, ``input_shapes`` and ``output_names``, ``output_shapes``
    (Keras shapes without the batch axis, ``None`` where any length goes).
    """

    def __init__(self, graph: _Graph, nodes: list[_Node], shapes: dict[str, Shape]):
        super().__init__()
        self.input_names, self.output_names = list(graph.inputs), list(graph.outputs)
        self.input_shapes = [graph.inputs[n] for n in self.input_names]
        self.output_shapes = [shapes[n] for n in self.output_names]
        nodes, outputs = _drop_identities(nodes, graph.outputs)
        _fold_batch_norms(nodes, outputs)
        nodes, self._outputs = _drop_identities(nodes, outputs)
        self.layers = torch.nn.ModuleList(node.module for node in nodes)
        self._plan = _plan(nodes, self._outputs)

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        dtype = next((b.dtype for b in self.buffers()), torch.float32)
        env = {name: x.to(dtype) for name, x in zip(self.input_names, inputs)}
        overwrite = not torch.is_grad_enabled()  # in-place ops would break autograd's saved tensors
        for module, step in zip(self.layers, self._plan):
            args = [env[n] for n in step.inputs]
            env[step.output] = module(*args, inplace=True) if step.inplace and overwrite else module(*args)
            for name in step.free:
                del env[name]
        return [env[name] for name in self._outputs]


def load_keras_h5(path) -> KerasModel:
    """A Keras 2 ``.h5`` model file -> a :class:`KerasModel` in eval mode (see the module docstring)."""
    path = Path(path)
    config, tensors = _read_h5(path)
    graph = _parse_config(config, str(path))
    nodes, shapes = [], dict(graph.inputs)
    for layer, built in _convert(graph, str(path)):
        nodes.append(_Node(layer.name, _module(layer, built, tensors.get(layer.name, []), str(path)), layer.inputs))
        shapes[layer.name] = built.shape
    return KerasModel(graph, nodes, shapes).eval()


# ---------------------------------------------------------------------------------------------------------------------
# The backend


class KerasBackend(Backend):
    name = "keras"
    summary = "a Keras 2 .h5 model (model.save) converted to PyTorch, plus a JSON spec"
    needs = ("--weights MODEL.h5 (several with the same outputs: an ensemble, averaged); "
             "spec MODEL.json beside the first or --spec PATH")

    def __init__(self, weights: list[str], spec: str | None = None, **options):
        super().__init__()
        reject_options(self.name, options)
        if not weights:
            raise ModelError("the keras backend needs --weights MODEL.h5 (one or more)")
        paths = [Path(w) for w in weights]
        spec_path = Path(spec) if spec else paths[0].with_suffix(".json")
        self.spec = _read_keras_spec(spec_path)
        self.models = [load_keras_h5(p) for p in paths]
        self.weight_files = paths + [spec_path]
        s = self.spec
        self.encoding = s.get("encoding", "one-hot")
        self.geometry = Geometry(s["input_length"], s["output_bins"], s["bin_size"], s["bin_offset"])
        self.tracks = tracks_table(s["tracks"])
        self.strand_pairs = [tuple(p) for p in s.get("strand_pairs", [])]
        self._outputs = [self._check(model, path) for model, path in zip(self.models, paths)]

    def _check(self, model: KerasModel, path: Path) -> int:
        """The index of the spec's output in ``model``, after a dry run shows it has the spec's shape."""
        g, chosen = self.geometry, self.spec.get("output", 0)
        if len(model.input_shapes) != 1 or model.input_shapes[0][0] not in (None, g.input_length) \
                or model.input_shapes[0][1] != 4:
            raise ModelError(f"{path} takes inputs of shape {', '.join(map(str, model.input_shapes))} but the keras "
                             f"backend needs one ({g.input_length}, 4) input (the spec's input_length)")
        if isinstance(chosen, str) and chosen in model.output_names:
            index = model.output_names.index(chosen)
        elif isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(model.output_names):
            index = chosen
        else:
            raise ModelError(f"{path} has no output {chosen!r}: the spec's 'output' must be an index "
                             f"0..{len(model.output_names) - 1} or a name ({', '.join(model.output_names)})")
        try:
            with torch.inference_mode():
                y = self._select(model, index, torch.zeros(1, g.input_length, 4))
        except Exception as exc:  # the model's own shapes do not fit: say so in one line
            raise ModelError(f"{path} fails on a (1, {g.input_length}, 4) input as the spec describes: "
                             f"{str(exc).strip().splitlines()[0]}")
        want = (1, g.output_bins, len(self.tracks))
        if tuple(y.shape) != want:
            raise ModelError(f"{path} output {model.output_names[index]!r} is {tuple(y.shape)} but the spec says "
                             f"(batch, bins, tracks) = {want}: fix output_bins/tracks/output in the spec")
        return index

    @staticmethod
    def _select(model: KerasModel, index: int, x: torch.Tensor) -> torch.Tensor:
        y = model(x)[index]
        return y.unsqueeze(1) if y.dim() == 2 else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The chosen output as (batch, bins, tracks), averaged over the models of an ensemble."""
        total = None
        for model, index in zip(self.models, self._outputs):
            y = self._select(model, index, x)
            total = y if total is None else total + y
        return total if len(self.models) == 1 else total / len(self.models)

    def to(self, device):
        for model in self.models:
            model.to(device)
        return self

    def settings(self) -> dict:
        return {"models": len(self.models), "output": self.spec.get("output", 0)}


def _read_keras_spec(path: Path) -> dict:
    """The torchscript spec format; a Keras model is channels-last and carries its own weights."""
    spec = read_spec(path)
    if spec.get("input_layout", "NLC") != "NLC" or spec.get("output_layout", "NBT") != "NBT":
        raise ModelError(f"{path}: a Keras model is channels-last; drop input_layout/output_layout from the spec")
    if "state_dict" in spec:
        raise ModelError(f"{path}: the keras backend takes its weights from the .h5 file; drop 'state_dict'")
    return spec
