"""The layers of :mod:`varfx.backends.keras`: one small ``torch.nn.Module`` per Keras layer, and per layer class
a converter that reads its config.

Tensors stay in Keras's layout, ``(batch, length, channels)`` for sequences.  Convolutions and pooling see them
through a zero-copy ``(batch, channels, 1, length)`` view, torch's channels-last 2-D layout (oneDNN's fast path on
the CPU), so nothing is ever transposed.

Two kinds of layer can be computed over part of the sequence (the model then computes only the positions that
reach its outputs, see ``KerasModel``):

* ``pointwise`` ones (activations, BatchNormalization, merges, Dense, Concatenate on channels): output position
  ``i`` reads input position ``i``;
* :class:`_Windowed` ones (Conv1D, pooling, Cropping1D, ZeroPadding1D): output position ``i`` reads input positions
  ``i * stride - left`` … ``i * stride - left + span - 1``, with a fill value (zero, or −∞ for max pooling) where
  those fall outside the input.  :meth:`_Windowed.valid` computes the layer on an input to which the fill has
  been added only where the caller says, so a part of the output costs only its own input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError

Shape = tuple  # a Keras shape without the batch axis; None where unknown


@dataclass(frozen=True)
class Layer:
    """One layer of the Keras graph: its name, class, config and the layers it reads."""

    name: str
    cls: str
    config: dict
    inputs: tuple[str, ...]


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


def _out_length(length, span: int, stride: int, mode: str, layer: Layer):
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
# Modules.  ``elementwise`` modules take ``inplace`` (the plan sets it where nothing else reads the input);
# ``makes_view`` ones return a view of their input, which must then not be overwritten.


class _Windowed(torch.nn.Module):
    """A layer whose output position i reads input positions i * stride - left … i * stride - left + span - 1."""

    span = 1
    stride = 1

    def pads(self, length: int) -> tuple[int, int]:
        """Fill positions added on the left and right of a ``length``-long input (negative: positions dropped)."""
        raise NotImplementedError

    def out_length(self, length: int) -> int:
        left, right = self.pads(length)
        return (length + left + right - self.span) // self.stride + 1

    def reads(self, start: int, stop: int, length: int) -> tuple[int, int]:
        """The input positions [lo, hi) that output positions [start, stop) read (outside 0…length: fill)."""
        left = self.pads(length)[0]
        return start * self.stride - left, (stop - 1) * self.stride - left + self.span

    def valid(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """The layer without padding on ``x`` with ``left`` and ``right`` fill positions added."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.valid(x, *self.pads(x.shape[1]))


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
    elementwise = pointwise = True

    def __init__(self, name: str):
        super().__init__()
        self.name, self.function = name, self.FUNCTIONS[name]

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        return self.function(x, inplace)

    def extra_repr(self) -> str:
        return self.name


class _Conv1d(_Windowed):
    """Conv1D with TensorFlow's padding, run as a channels-last 2-D convolution; a BatchNorm can be folded in."""

    def __init__(self, kernel: torch.Tensor, bias, stride: int, dilation: int, groups: int, padding: str, activation):
        super().__init__()
        # Keras (k, in, out) -> torch (out, in, 1, k), stored channels-last like the activations
        weight = kernel.permute(2, 1, 0).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.dilation, self.groups, self.padding = stride, dilation, groups, padding
        self.span = dilation * (kernel.shape[0] - 1) + 1
        self.matmul = self.span == 1 and stride == 1 and groups == 1
        self.activation = activation

    def pads(self, length: int) -> tuple[int, int]:
        return _padding(self.padding, length, self.span, self.stride)

    def valid(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        if self.matmul:  # a matrix product over (batch * length) rows: faster than any convolution path
            y = F.linear(x, self.weight[:, :, 0, 0], self.bias)
        else:
            if left != right:
                x, left = _pad_length(x, left, right), 0
            elif not x.is_contiguous():  # a part of a longer sequence: oneDNN wants it channels-last contiguous
                x = x.contiguous()
            y = _nlc(F.conv2d(_nchw(x), self.weight, self.bias, (1, self.stride), (0, left), (1, self.dilation),
                              self.groups))
        return y if self.activation is None else self.activation(y, inplace=True)

    def fold(self, affine: "_Affine") -> None:
        """Absorb a per-channel ``y * scale + shift`` that follows this (linear) convolution."""
        self.weight = self.weight * affine.scale[:, None, None, None]
        self.bias = affine.shift if self.bias is None else self.bias * affine.scale + affine.shift


class _Dense(torch.nn.Module):
    """Dense on the last axis, whatever the rank."""

    pointwise = True

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

    elementwise = pointwise = True

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
    elementwise = pointwise = True

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
        self.pointwise = axis == 2  # on the channels of (batch, length, channels); the model checks the rank

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class _Pool(_Windowed):
    """MaxPooling1D / AveragePooling1D; 'same' average pooling leaves the padding out of the mean (as TF)."""

    def __init__(self, kind: str, size: int, stride: int, padding: str):
        super().__init__()
        self.kind, self.span, self.stride, self.padding = kind, size, stride, padding

    def pads(self, length: int) -> tuple[int, int]:
        return _padding(self.padding, length, self.span, self.stride)

    def valid(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        window, stride = (1, self.span), (1, self.stride)
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


class _Crop(_Windowed):
    makes_view = True

    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def pads(self, length: int) -> tuple[int, int]:
        return -self.left, -self.right

    def valid(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        return x[:, -left:x.shape[1] + right]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.left:x.shape[1] - self.right]


class _ZeroPad(_Windowed):
    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def pads(self, length: int) -> tuple[int, int]:
        return self.left, self.right

    def valid(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        return F.pad(x, (0, 0, left, right))


class _Reshape(torch.nn.Module):
    """Flatten and Reshape (Keras's layout is torch's row-major one)."""

    makes_view = True

    def __init__(self, target: tuple):
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0],) + self.target)


def _activation(name, layer: Layer) -> _Activation | None:
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


def _require(ok: bool, layer: Layer, what: str) -> None:
    if not ok:
        raise ModelError(f"layer {layer.name!r} ({layer.cls}): {what}")


def _weights(kernel: tuple, units: int, use_bias: bool) -> tuple:
    return (("kernel", kernel),) + ((("bias", (units,)),) if use_bias else ())


def _sequence_input(layer: Layer, shapes: list[Shape]) -> Shape:
    """The one (length, channels) input shape of a 1-D layer, in channels_last format."""
    _require(len(shapes) == 1 and len(shapes[0]) == 2, layer,
             f"needs one (length, channels) input, got {', '.join(map(str, shapes))}")
    _require(layer.config.get("data_format", "channels_last") == "channels_last", layer,
             "only data_format='channels_last' is supported")
    return shapes[0]


def _conv1d(layer: Layer, shapes: list[Shape]) -> _Built:
    (length, channels), c = _sequence_input(layer, shapes), layer.config
    k, stride, dilation = _one(c["kernel_size"]), _one(c["strides"]), _one(c["dilation_rate"])
    groups = c.get("groups", 1)
    _require(c["padding"] in ("valid", "same", "causal"), layer, f"unknown padding {c['padding']!r}")
    _require(channels is not None and channels % groups == 0, layer, f"{channels} channels in {groups} groups")
    activation = _activation(c.get("activation", "linear"), layer)
    length = _out_length(length, dilation * (k - 1) + 1, stride, c["padding"], layer)
    return _Built((length, c["filters"]), _weights((k, channels // groups, c["filters"]), c["filters"], c["use_bias"]),
                  lambda w: _Conv1d(w["kernel"], w.get("bias"), stride, dilation, groups, c["padding"], activation))


def _dense(layer: Layer, shapes: list[Shape]) -> _Built:
    _require(len(shapes) == 1 and shapes[0][-1] is not None, layer,
             f"needs one input with known channels, got {shapes}")
    c, shape = layer.config, shapes[0]
    activation = _activation(c.get("activation", "linear"), layer)
    return _Built(shape[:-1] + (c["units"],), _weights((shape[-1], c["units"]), c["units"], c["use_bias"]),
                  lambda w: _Dense(w["kernel"], w.get("bias"), activation))


def _batch_norm(layer: Layer, shapes: list[Shape]) -> _Built:
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


def _activation_layer(layer: Layer, shapes: list[Shape]) -> _Built:
    module = _activation(layer.config["activation"], layer)
    return _Built(shapes[0], (), None if module is None else (lambda w: module))


def _merge(layer: Layer, shapes: list[Shape]) -> _Built:
    _require(len(shapes) >= 2 and (layer.cls != "Subtract" or len(shapes) == 2), layer,
             f"got {len(shapes)} inputs")
    shape = shapes[0]
    for other in shapes[1:]:
        _require(len(other) == len(shape) and all(a is None or b is None or a == b for a, b in zip(shape, other)),
                 layer, f"inputs of shapes {shapes} differ (broadcasting is not supported)")
        shape = tuple(a if a is not None else b for a, b in zip(shape, other))
    return _Built(shape, (), lambda w: _Merge(layer.cls))


def _concatenate(layer: Layer, shapes: list[Shape]) -> _Built:
    rank = len(shapes[0]) + 1
    axis = layer.config.get("axis", -1) % rank
    _require(axis > 0 and all(len(s) + 1 == rank for s in shapes), layer, f"cannot join {shapes} on axis {axis}")
    sizes = [s[axis - 1] for s in shapes]
    shape = list(shapes[0])
    shape[axis - 1] = None if None in sizes else sum(sizes)
    return _Built(tuple(shape), (), lambda w: _Concatenate(axis))


def _pooling(layer: Layer, shapes: list[Shape]) -> _Built:
    (length, channels), c = _sequence_input(layer, shapes), layer.config
    size = _one(c["pool_size"])
    stride = _one(c.get("strides") or size)
    _require(c["padding"] in ("valid", "same"), layer, f"unknown padding {c['padding']!r}")
    kind = "max" if layer.cls == "MaxPooling1D" else "avg"
    return _Built((_out_length(length, size, stride, c["padding"], layer), channels), (),
                  lambda w: _Pool(kind, size, stride, c["padding"]))


def _global_pooling(layer: Layer, shapes: list[Shape]) -> _Built:
    _, channels = _sequence_input(layer, shapes)
    keepdims = layer.config.get("keepdims", False)
    kind = "max" if layer.cls == "GlobalMaxPooling1D" else "avg"
    return _Built((1, channels) if keepdims else (channels,), (), lambda w: _GlobalPool(kind, keepdims))


def _cropping(layer: Layer, shapes: list[Shape]) -> _Built:
    length, channels = _sequence_input(layer, shapes)
    left, right = _pair(layer.config["cropping"])
    return _Built((None if length is None else length - left - right, channels), (), lambda w: _Crop(left, right))


def _zero_padding(layer: Layer, shapes: list[Shape]) -> _Built:
    length, channels = _sequence_input(layer, shapes)
    left, right = _pair(layer.config["padding"])
    return _Built((None if length is None else length + left + right, channels), (), lambda w: _ZeroPad(left, right))


def _flatten(layer: Layer, shapes: list[Shape]) -> _Built:
    shape = shapes[0]
    _require(layer.config.get("data_format", "channels_last") == "channels_last", layer,
             "only data_format='channels_last' is supported")
    if len(shape) == 1:
        return _Built(shape)
    return _Built((None if None in shape else math.prod(shape),), (), lambda w: _Reshape((-1,)))


def _reshape(layer: Layer, shapes: list[Shape]) -> _Built:
    target, shape = tuple(layer.config["target_shape"]), shapes[0]
    if -1 in target and None not in shape:
        known = math.prod(d for d in target if d != -1)
        target_shape = tuple(math.prod(shape) // known if d == -1 else d for d in target)
    else:
        target_shape = tuple(None if d == -1 else d for d in target)
    return _Built(target_shape, (), lambda w: _Reshape(target))


def _identity(layer: Layer, shapes: list[Shape]) -> _Built:
    return _Built(shapes[0])


CONVERTERS: dict[str, Callable[[Layer, list[Shape]], _Built]] = {
    "Conv1D": _conv1d, "Dense": _dense, "BatchNormalization": _batch_norm, "Activation": _activation_layer,
    **{cls: _merge for cls in _Merge.OPS}, "Concatenate": _concatenate,
    "MaxPooling1D": _pooling, "AveragePooling1D": _pooling,
    "GlobalMaxPooling1D": _global_pooling, "GlobalAveragePooling1D": _global_pooling,
    "Cropping1D": _cropping, "ZeroPadding1D": _zero_padding, "Flatten": _flatten, "Reshape": _reshape,
    "Dropout": _identity, "SpatialDropout1D": _identity,
}
#: Keras layer classes the converter reads (InputLayer too), for docs and error messages
SUPPORTED_LAYERS = tuple(sorted(["InputLayer", *CONVERTERS]))


def check_supported(name: str, cls: str, source: str) -> None:
    """A one-line error for a layer class the converter does not know (a model nested as a layer included)."""
    if cls in ("Functional", "Model", "Sequential"):
        raise ModelError(f"{source}: layer {name!r} is a nested {cls} model, which the keras backend cannot "
                         "convert: rebuild the model with the nested model's layers called directly")
    if cls not in CONVERTERS:
        raise ModelError(f"{source}: layer {name!r} is a {cls}, which the keras backend cannot "
                         f"convert (supported: {', '.join(SUPPORTED_LAYERS)})")


def convert(layers: list[Layer], inputs: dict[str, Shape], source: str):
    """Each layer (in order) with what its converter makes of it; ``inputs`` are the model's input shapes."""
    shapes: dict[str, Shape] = dict(inputs)
    for layer in layers:
        check_supported(layer.name, layer.cls, source)
        try:
            built = CONVERTERS[layer.cls](layer, [shapes[n] for n in layer.inputs])
        except ModelError as exc:
            raise ModelError(f"{source}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelError(f"{source}: layer {layer.name!r} ({layer.cls}) has a config the keras backend cannot "
                             f"read ({type(exc).__name__}: {exc})") from None
        shapes[layer.name] = built.shape
        yield layer, built


def make_module(layer: Layer, built: _Built, tensors: list[tuple[str, np.ndarray]], source: str):
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
