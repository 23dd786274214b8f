"""``keras``: a Keras 2 ``.h5`` model (``model.save``) converted to PyTorch, plus a JSON spec.

:func:`load_keras_h5` reads the file with h5py alone (no TensorFlow) and returns a
:class:`KerasModel`, a ``torch.nn.Module`` that computes what the Keras model
computes.  It reads files from Keras 2.0 (the published SpliceAI models) to
tf.keras 2.15, functional and Sequential.  docs/keras.md lists the layers.

How the conversion works:

1. ``model_config`` (JSON) becomes a graph of layers in topological order; each
   layer's output shape (without the batch axis, ``None`` where unknown) follows
   from its inputs' shapes and its config.
2. Each layer becomes a small module (:mod:`varfx.backends.keras_layers`).  The
   weights it needs follow from its config and input shape; the file's tensors for
   the layer are matched to them in the order of the group's ``weight_names``
   attribute, and a tensor of the wrong shape is named with both shapes.
3. A plan for the forward pass: identity layers (Dropout, linear Activation) are
   dropped, a BatchNormalization right after a Conv1D is folded into the
   convolution, tensors are freed after their last use, and element-wise layers
   overwrite an input that nothing else reads (when autograd is off).
4. Per input length, the positions each layer must compute: walking back from the
   outputs, each layer needs the positions its readers read (a convolution reads a
   margin around its output, a crop an offset of it).  Layers that map positions
   to positions (convolutions, pooling, cropping, zero padding, element-wise
   layers) then compute only those, with zero padding only at the true ends of the
   sequence, so a model that crops its output (SpliceAI: 101 of 10,101 positions)
   skips the work that the crop would throw away.

Tensors stay in Keras's layout, ``(batch, length, channels)``, throughout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from ..errors import InputError, ModelError
from ..windows import Geometry
from .base import Backend, check_output, reject_options, tracks_table
from .keras_layers import (SUPPORTED_LAYERS, Layer, Shape, _Affine, _Conv1d, _Windowed, check_supported, convert,
                           make_module)
from .torchscript import read_spec

__all__ = ["KerasBackend", "KerasModel", "SUPPORTED_LAYERS", "load_keras_h5", "weight_shapes"]

# ---------------------------------------------------------------------------------------------------------------------
# Reading the file


@dataclass(frozen=True)
class _Graph:
    layers: list[Layer]  # topological order, input layers excluded
    inputs: dict[str, Shape]  # input layer name -> shape
    outputs: list[str]


def _read_h5(path: Path) -> tuple[dict, dict[str, list[tuple[str, np.ndarray]]]]:
    """The model config and, per layer, its weight tensors in ``weight_names`` order."""
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if not h5py.is_hdf5(path):
        raise ModelError(f"{path} is not an HDF5 file: save the Keras model with model.save(PATH, "
                         "save_format='h5') (a .keras archive or SavedModel folder cannot be read)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:  # a truncated or damaged file passes is_hdf5 (its signature is intact)
        raise ModelError(f"{path} cannot be read as HDF5 ({str(exc).splitlines()[0]}): the file is damaged or "
                         "cut short; copy or save it again") from None
    with f:
        if "model_config" not in f.attrs:
            raise ModelError(f"{path} has no model_config, so it is not a whole Keras model: weights only "
                             "(model.save_weights; save the whole model with model.save(PATH, save_format='h5')) "
                             "or another kind of HDF5 file")
        version, backend = _text(f.attrs.get("keras_version", "")), _text(f.attrs.get("backend", ""))
        if version.startswith("3"):
            raise ModelError(f"{path} was written by Keras {version}; only Keras 2 files (keras or tf.keras "
                             "≤ 2.15) can be read: save it with tf.keras 2.x")
        if backend == "theano":
            raise ModelError(f"{path} was saved with the Theano backend, whose kernels are flipped; "
                             "load and re-save it with TensorFlow Keras first")
        try:
            config = json.loads(_text(f.attrs["model_config"]))
        except ValueError as exc:
            raise ModelError(f"{path}: its model_config attribute is not valid JSON ({exc}); save the model "
                             "again with model.save(PATH, save_format='h5')") from None
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
        layer = Layer(entry["config"]["name"], entry["class_name"], entry["config"], (previous,))
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
        check_supported(name, cls, source)  # before its nodes, which some classes (TFOpLambda) nest otherwise
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1:
            raise ModelError(f"{source}: layer {name!r} ({cls}) is called {len(nodes)} times (a shared layer); "
                             "the keras backend converts layers that are called once")
        layers.append(Layer(name, cls, cfg, tuple(_inbound_name(ref, name, source) for ref in nodes[0])))
    # the model's inputs in Keras's order (input_layers), which need not be the order the layers were made in
    order = [_inbound_name(ref, "the model's inputs", source) for ref in _nested(config.get("input_layers") or [])]
    if sorted(order) == sorted(inputs):
        inputs = {name: inputs[name] for name in order}
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


def _topological(layers: list[Layer], sources: set[str], source: str) -> list[Layer]:
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


def weight_shapes(model_config: dict) -> dict[str, list[tuple[str, tuple]]]:
    """The weight tensors each layer of a Keras ``model_config`` needs, as (role, shape) in Keras's order."""
    graph = _parse_config(model_config, "model_config")
    return {layer.name: list(built.weights) for layer, built in convert(graph.layers, graph.inputs, "model_config")}


# ---------------------------------------------------------------------------------------------------------------------
# The plan


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


# ---------------------------------------------------------------------------------------------------------------------
# Computing only the positions that reach an output


class _Cut(NamedTuple):
    """How a step computes part of its output: the part of each input it reads and the fill it adds."""

    inputs: tuple  # per input: (first, count) positions of the tensor held, or None for all of it
    pads: tuple[int, int] | None  # a windowed layer: fill positions to add left and right; None: a pointwise one


def _partial_nodes(nodes: list[_Node], shapes: dict[str, Shape], input_names: list[str]) -> set[str]:
    """Nodes that can compute part of a sequence: windowed or pointwise layers on (batch, length, channels)
    tensors all of whose inputs are model inputs or such nodes (so their lengths follow from the inputs')."""
    ok = {name for name in input_names if len(shapes[name]) == 2}
    for node in nodes:
        kind = isinstance(node.module, _Windowed) or getattr(node.module, "pointwise", False)
        if kind and len(shapes[node.name]) == 2 and all(n in ok for n in node.inputs):
            ok.add(node.name)
    return ok - set(input_names)


def _cuts(nodes: list[_Node], outputs: list[str], partial: set[str], lengths: dict[str, int]) -> list | None:
    """Per node, the :class:`_Cut` that computes only the positions the outputs depend on (None: all of them);
    None when that would compute everything anyway or the lengths do not allow it (torch then says why)."""
    length = dict(lengths)
    for node in nodes:
        if node.name in partial:
            ins = {length[n] for n in node.inputs}
            if len(ins) != 1 or None in ins:
                return None
            n = ins.pop()
            n = node.module.out_length(n) if isinstance(node.module, _Windowed) else n
            if n < 1:
                return None
            length[node.name] = n
    need: dict[str, tuple[int, int]] = {}

    def want(name: str, lo: int, hi: int) -> None:
        if name in partial:
            held = need.get(name, (lo, hi))
            need[name] = (min(held[0], lo), max(held[1], hi))

    for name in outputs:
        want(name, 0, length.get(name, 0))
    cuts: list = [None] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if node.name not in partial:
            for n in node.inputs:
                want(n, 0, length.get(n, 0))
            continue
        start, stop = need.setdefault(node.name, (0, length[node.name]))  # read by nothing: computed, as before
        module, size = node.module, length[node.inputs[0]]
        if isinstance(module, _Windowed):
            lo, hi = module.reads(start, stop, size)
            first, last = max(lo, 0), min(hi, size)
            if first >= last:  # it reads only fill: too odd to bother
                return None
            pads = (first - lo, hi - last)
        else:
            first, last, pads = start, stop, None
        for n in node.inputs:
            want(n, first, last)
        cuts[i] = (first, last, pads)
    if all(need[name] == (0, length[name]) for name in partial):
        return None
    for i, node in enumerate(nodes):  # positions within the tensors actually held
        if cuts[i] is not None:
            first, last, pads = cuts[i]
            held = [need.get(n, (0, length[n])) for n in node.inputs]
            parts = tuple(None if (first, last) == h else (first - h[0], last - first) for h in held)
            size = length[node.inputs[0]]
            # a windowed layer runs as a whole only on its whole input: 'same' padding can depend on the length
            whole = pads is None or (first, last) == (0, size) and pads == node.module.pads(size)
            cuts[i] = None if whole and all(p is None for p in parts) else _Cut(parts, pads)
    return cuts


# ---------------------------------------------------------------------------------------------------------------------
# The model


class KerasModel(torch.nn.Module):
    """A converted Keras model: inputs in Keras's layout in, a list of outputs in Keras's layout and order out.

    Attributes: ``input_names``, ``input_shapes`` and ``output_names``, ``output_shapes``
    (Keras shapes without the batch axis, ``None`` where any length goes); ``trim`` (default True):
    compute only the positions that reach an output (False: every layer over its whole length).
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
        self._nodes = nodes
        self._partial = _partial_nodes(nodes, shapes, self.input_names)
        self._cut_plans: dict[tuple, list | None] = {}
        self.trim = True

    def _cuts(self, inputs: list[torch.Tensor]) -> list | None:
        """The cuts for inputs of these lengths (worked out once per lengths)."""
        if not self._partial or not self.trim:
            return None
        key = tuple(x.shape[1] if x.dim() == 3 else None for x in inputs)
        if key not in self._cut_plans:
            self._cut_plans[key] = _cuts(self._nodes, self._outputs, self._partial, dict(zip(self.input_names, key)))
        return self._cut_plans[key]

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the model takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(inputs)}")
        dtype = next((b.dtype for b in self.buffers()), torch.float32)
        env = {name: x.to(dtype) for name, x in zip(self.input_names, inputs)}
        overwrite = not torch.is_grad_enabled()  # in-place ops would break autograd's saved tensors
        cuts = self._cuts(inputs) or [None] * len(self._plan)
        for module, step, cut in zip(self.layers, self._plan, cuts):
            args = [env[n] for n in step.inputs]
            if cut is not None:
                args = [x if part is None else x.narrow(1, *part) for x, part in zip(args, cut.inputs)]
            if cut is not None and cut.pads is not None:
                env[step.output] = module.valid(args[0], *cut.pads)
            elif step.inplace and overwrite:
                env[step.output] = module(*args, inplace=True)
            else:
                env[step.output] = module(*args)
            for name in step.free:
                del env[name]
        return [env[name] for name in self._outputs]


def load_keras_h5(path) -> KerasModel:
    """A Keras 2 ``.h5`` model file -> a :class:`KerasModel` in eval mode (see the module docstring)."""
    path = Path(path)
    config, tensors = _read_h5(path)
    graph = _parse_config(config, str(path))
    nodes, shapes = [], dict(graph.inputs)
    for layer, built in convert(graph.layers, graph.inputs, str(path)):
        nodes.append(_Node(layer.name, make_module(layer, built, tensors.get(layer.name, []), str(path)),
                           layer.inputs))
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
        check_output(lambda x: self._select(model, index, x), g, len(self.tracks), path,
                     f"output {model.output_names[index]!r} is", "fix output_bins/tracks/output in the spec")
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
    spec = read_spec(path, extra_keys=("output",))
    if spec.get("input_layout", "NLC") != "NLC" or spec.get("output_layout", "NBT") != "NBT":
        raise ModelError(f"{path}: a Keras model is channels-last; drop input_layout/output_layout from the spec")
    if "state_dict" in spec:
        raise ModelError(f"{path}: the keras backend takes its weights from the .h5 file; drop 'state_dict'")
    return spec
