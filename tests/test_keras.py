"""The Keras converter and the keras backend, against outputs that Keras itself computed.

The golden models and outputs in keras_goldens/ were made once with TensorFlow 2.15
by keras_goldens/make_goldens.py; these tests need neither TensorFlow nor Keras.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from varfx.backends import BUILTIN, backend_class
from keras_files import write_keras_h5
from varfx.backends.keras import KerasBackend, _Affine, load_keras_h5, weight_shapes
from varfx.errors import InputError, ModelError, OptionError

GOLDENS = Path(__file__).parent / "keras_goldens"
SMALL = ["conv", "activations", "merge_pool", "batch_norm", "dense_reshape", "sequential", "sequential_built",
         "spliceai_like", "clipnet_fold1", "clipnet_fold2", "clipnet_fold3"]
SPLICEAI_MODELS = Path(importlib.util.find_spec("spliceai").submodule_search_locations[0]) / "models"
TOLERANCE = 1e-5


def relative_error(ours: np.ndarray, keras: np.ndarray) -> float:
    """max |ours - keras| / max |keras| over one output: the error on the scale of that output."""
    return float(np.abs(ours - keras).max() / np.abs(keras).max())


def golden_cases(name: str) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """(inputs, Keras's outputs) for each input case of keras_goldens/NAME.npz."""
    with np.load(GOLDENS / f"{name}.npz") as g:
        keys = set(g.files)
        cases, j = [], 0
        while f"x{j}_0" in keys:
            xs = [g[f"x{j}_{i}"] for i in range(len(keys)) if f"x{j}_{i}" in keys]
            ys = [g[f"y{j}_{k}"] for k in range(len(keys)) if f"y{j}_{k}" in keys]
            cases.append((xs, ys))
            j += 1
    return cases


def run(model, xs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        return [y.numpy() for y in model(*[torch.from_numpy(x) for x in xs])]


# -- the converter matches Keras ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMALL)
def test_golden_model_matches_keras(name):
    model = load_keras_h5(GOLDENS / f"{name}.h5")
    assert not model.training
    for xs, want in golden_cases(name):
        before = [x.copy() for x in xs]
        got = run(model, xs)
        assert len(got) == len(want) == len(model.output_names)
        for out_name, a, b in zip(model.output_names, got, want):
            assert a.shape == b.shape, out_name
            assert relative_error(a, b) <= TOLERANCE, out_name
        assert all(np.array_equal(x, x0) for x, x0 in zip(xs, before)), "the model overwrote its input"


@pytest.mark.parametrize("index", range(5))
def test_real_spliceai_model_matches_keras(index):
    """The published models: Keras 2.0.5 files, any input length, cropped output, softmax."""
    (xs, _), = golden_cases("spliceai_real")
    model = load_keras_h5(SPLICEAI_MODELS / f"spliceai{index + 1}.h5")
    assert model.input_shapes == [(None, 4)] and model.output_shapes == [(None, 3)]
    got, = run(model, xs)
    with np.load(GOLDENS / "spliceai_real.npz") as g:
        assert got.shape == (2, 101, 3) and relative_error(got, g[f"y{index}_0"]) <= TOLERANCE


# -- computing only the positions that reach an output ----------------------------------------------------------------

def trim_config() -> dict:
    """A functional model whose outputs are cropped, through every layer that can compute part of a sequence."""
    layers = [{"class_name": "InputLayer", "name": "a", "inbound_nodes": [],
               "config": {"name": "a", "batch_input_shape": [None, None, 4]}}]

    def add(cls, name, inputs, **config):
        layers.append({"class_name": cls, "name": name, "config": {"name": name, **config},
                       "inbound_nodes": [[[n, 0, 0, {}] for n in inputs]]})

    conv = dict(strides=1, dilation_rate=1, padding="same", activation="linear", use_bias=True)
    add("Conv1D", "c1", ["a"], **{**conv, "filters": 6, "kernel_size": 5, "activation": "relu"})
    add("Conv1D", "c2", ["c1"], **{**conv, "filters": 6, "kernel_size": 4, "strides": 2})  # asymmetric 'same'
    add("Conv1D", "c3", ["c2"], **{**conv, "filters": 6, "kernel_size": 3, "dilation_rate": 2, "padding": "causal"})
    add("MaxPooling1D", "p1", ["c3"], pool_size=2, strides=2, padding="same")
    add("AveragePooling1D", "p2", ["p1"], pool_size=3, strides=1, padding="same")
    add("ZeroPadding1D", "zp", ["p2"], padding=[2, 3])
    add("Conv1D", "c4", ["zp"], **{**conv, "filters": 5, "kernel_size": 3, "dilation_rate": 3, "padding": "valid"})
    add("BatchNormalization", "bn", ["c4"], axis=-1)
    add("Activation", "act", ["bn"], activation="tanh")
    add("Dense", "d1", ["act"], units=5, activation="linear", use_bias=True)
    add("Multiply", "mul", ["act", "d1"])
    add("Concatenate", "cat", ["mul", "bn"], axis=-1)
    add("Conv1D", "c5", ["cat"], **{**conv, "filters": 3, "kernel_size": 1})
    add("Cropping1D", "crop", ["c5"], cropping=[7, 6])
    add("Activation", "soft", ["crop"], activation="softmax")
    add("Cropping1D", "crop2", ["c1"], cropping=[30, 31])  # a second output: the union of what c1 must hold
    add("AveragePooling1D", "p3", ["c3"], pool_size=3, strides=1, padding="same")  # cropped on the right only:
    add("Conv1D", "c6", ["p3"], **{**conv, "filters": 2, "kernel_size": 5})  # padding on the left, none right
    add("Cropping1D", "crop3", ["c6"], cropping=[0, 9])
    add("Conv1D", "c7", ["c2"], **{**conv, "filters": 2, "kernel_size": 4})  # and the other way round
    add("Cropping1D", "crop4", ["c7"], cropping=[9, 0])
    outputs = [["soft", 0, 0], ["crop2", 0, 0], ["crop3", 0, 0], ["crop4", 0, 0]]
    return {"class_name": "Functional",
            "config": {"name": "trim", "layers": layers, "input_layers": [["a", 0, 0]], "output_layers": outputs}}


def cut_steps(model, length: int) -> int:
    """How many steps compute part of a sequence for inputs of ``length`` (0: every layer computes all of it)."""
    cuts = model._cut_plans.get((length,))
    return 0 if cuts is None else sum(cut is not None for cut in cuts)


@pytest.mark.parametrize("length", [70, 71, 96, 103])
def test_trimmed_model_computes_what_the_whole_computation_does(tmp_path, length):
    """Strided 'same' (padding that depends on the length), causal and dilated valid convolutions, 'same' max and
    average pooling, zero padding, element-wise layers, Dense, Concatenate and two cropped outputs, computed over
    part of the sequence, against the same layers over all of it (which the goldens check against Keras; this
    model itself matched TensorFlow 2.15 to 2e-7 when it was written)."""
    model = load_keras_h5(write_keras_h5(tmp_path / "trim.h5", trim_config()))
    x = np.random.default_rng(length).normal(size=(3, length, 4)).astype("float32")
    trimmed = run(model, [x])
    assert cut_steps(model, length) >= 7
    model.trim = False
    whole = run(model, [x])
    for a, b in zip(trimmed, whole):
        assert a.shape == b.shape and relative_error(a, b) <= 1e-6


@pytest.mark.parametrize("name", ["spliceai_like", "clipnet_fold1"])
def test_untrimmed_models_match_keras(name):
    model = load_keras_h5(GOLDENS / f"{name}.h5")
    model.trim = False
    for xs, want in golden_cases(name):
        for a, b in zip(run(model, xs), want):
            assert relative_error(a, b) <= TOLERANCE


def test_real_spliceai_model_is_trimmed_and_untrimmed_agrees():
    (xs, _), = golden_cases("spliceai_real")
    model = load_keras_h5(SPLICEAI_MODELS / "spliceai1.h5")
    got, = run(model, xs)
    assert cut_steps(model, 10_101) > 50  # the skip connections and the last residual units, at least
    model.trim = False
    whole, = run(model, xs)
    with np.load(GOLDENS / "spliceai_real.npz") as g:
        assert relative_error(whole, g["y0_0"]) <= TOLERANCE
    assert relative_error(got, whole) <= 1e-6


def test_trimmed_gradients_match_the_whole_computation():
    model = load_keras_h5(GOLDENS / "spliceai_like.h5")
    (xs, _), _ = golden_cases("spliceai_like")
    grads = []
    for trim in (True, False):
        model.trim = trim
        x = torch.from_numpy(xs[0]).requires_grad_()
        model(x)[0][..., 1].sum().backward()
        grads.append(x.grad)
    assert cut_steps(model, xs[0].shape[1]) > 0
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-6) and grads[0].abs().max() > 0


def test_names_and_shapes_follow_the_config():
    model = load_keras_h5(GOLDENS / "merge_pool.h5")
    assert model.input_names == ["a", "b"] and model.input_shapes == [(None, 4), (None, 4)]
    assert model.output_names[:3] == ["add3", "sub", "mul"]
    assert model.output_shapes[model.output_names.index("cat_last")] == (None, 8)
    assert model.output_shapes[model.output_names.index("gap_keep")] == (1, 4)
    clipnet = load_keras_h5(GOLDENS / "clipnet_fold1.h5")
    assert clipnet.output_names == ["shape", "sum"] and clipnet.output_shapes == [(1000,), (1,)]


def test_batch_norm_after_a_linear_conv_is_folded_and_no_other():
    model = load_keras_h5(GOLDENS / "batch_norm.h5")
    # 6 BatchNormalization layers: the one after c1 and the one after c4 -> Dropout are folded into the
    # convolution; not those after c2 (also an output) and c3 (relu), nor those that follow no convolution.
    assert sum(isinstance(m, _Affine) for m in model.layers) == 4


@pytest.mark.parametrize("name", ["clipnet_fold1", "merge_pool", "activations"])
def test_gradients_flow_and_outputs_agree_under_autograd(name):
    """With autograd on (saliency maps) nothing may be overwritten that autograd still needs."""
    model = load_keras_h5(GOLDENS / f"{name}.h5")
    xs, want = golden_cases(name)[0]
    inputs = [torch.from_numpy(x).requires_grad_() for x in xs]
    outputs = model(*inputs)
    for out_name, a, b in zip(model.output_names, outputs, want):
        assert relative_error(a.detach().numpy(), b) <= TOLERANCE, out_name
    sum(y.sum() for y in outputs).backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().max() > 0 for x in inputs)


def test_float64_and_odd_input_dtypes():
    model = load_keras_h5(GOLDENS / "spliceai_like.h5").to(torch.float64)
    (xs, want), _ = golden_cases("spliceai_like")
    with torch.inference_mode():
        y, = model(torch.from_numpy(xs[0]).to(torch.uint8))  # cast to the model's dtype, as Keras does
    assert y.dtype == torch.float64 and relative_error(y.numpy(), want[0]) <= TOLERANCE


def test_runs_under_bf16_autocast():
    """varfx's --precision bf16 runs models under autocast: mixed dtypes and in-place ops must still work."""
    model = load_keras_h5(GOLDENS / "clipnet_fold1.h5")
    (xs, want), = golden_cases("clipnet_fold1")
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        profile, _ = model(torch.from_numpy(xs[0]))
    assert relative_error(profile.float().numpy(), want[0]) < 0.05


def test_weight_shapes_match_the_files():
    for name in ("sequential", "clipnet_fold1"):
        with h5py.File(GOLDENS / f"{name}.h5", "r") as f:
            expected = weight_shapes(json.loads(f.attrs["model_config"]))
            group = f["model_weights"]
            for layer, tensors in expected.items():
                names = [n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs["weight_names"]]
                assert [group[layer][n].shape for n in names] == [shape for _, shape in tensors]
    assert [role for role, _ in expected["profile_bn"]] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert [("kernel", (984, 1000)), ("bias", (1000,))] in expected.values()  # the profile head: 123 x 8 flattened


# -- errors ------------------------------------------------------------------------------------------------------------

def edited_copy(tmp_path: Path, name: str, edit_config=None, edit_file=None) -> Path:
    """A copy of golden NAME.h5 with its model_config and/or file changed."""
    path = tmp_path / f"{name}.h5"
    shutil.copy(GOLDENS / f"{name}.h5", path)
    with h5py.File(path, "r+") as f:
        if edit_config:
            config = json.loads(f.attrs["model_config"])
            edit_config(config)
            f.attrs["model_config"] = json.dumps(config)
        if edit_file:
            edit_file(f)
    return path


def layer_config(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer.get("name", layer["config"].get("name")) == name)


def set_class(layer: str, cls: str):
    return lambda config: layer_config(config, layer).update(class_name=cls)


def set_option(layer: str, **options):
    return lambda config: layer_config(config, layer)["config"].update(options)


@pytest.mark.parametrize("name,edit,message", [
    ("sequential", set_class("activation", "Lambda"),
     r"layer 'activation' is a Lambda, which the keras backend cannot convert \(supported: Activation, Add, "
     r"Average, AveragePooling1D, .*ZeroPadding1D\)"),
    ("conv", set_class("same_k5", "MyAttention"), "layer 'same_k5' is a MyAttention, which the keras backend"),
    ("batch_norm", set_option("bn_input", axis=1), r"layer 'bn_input' \(BatchNormalization\): normalises axis 1; "
                                                   "only the last"),
    ("conv", set_option("same_k5", data_format="channels_first"), "only data_format='channels_last'"),
    ("activations", set_option("act_relu", activation="hard_sigmoid"), "uses activation 'hard_sigmoid'; supported"),
    ("conv", lambda c: layer_config(c, "same_k5")["inbound_nodes"].append([["input_1", 0, 0, {}]]),
     r"layer 'same_k5' \(Conv1D\) is called 2 times \(a shared layer\)"),
    ("conv", lambda c: layer_config(c, "same_k5").update(inbound_nodes=[[["nowhere", 0, 0, {}]]]),
     "layer 'same_k5' reads 'nowhere', which is not in the model"),
    ("conv", set_class("same_k5", "Functional"), "layer 'same_k5' is a nested Functional model, which the keras "
                                                 "backend cannot convert"),
    # TFOpLambda (tf.nn.* called on a tensor) writes its inbound node one level shallower than other layers
    ("conv", lambda c: layer_config(c, "same_k5").update(class_name="TFOpLambda", inbound_nodes=[["input_1", 0, 0, {}]]),
     "layer 'same_k5' is a TFOpLambda, which the keras backend cannot convert"),
])
def test_unconvertible_config_names_layer_and_class(tmp_path, name, edit, message):
    path = edited_copy(tmp_path, name, edit_config=edit)
    with pytest.raises(ModelError, match=message) as err:
        load_keras_h5(path)
    assert "\n" not in str(err.value)


def test_inputs_come_in_the_order_of_input_layers(tmp_path):
    """A two-input model whose InputLayers are listed in the other order than the model's inputs (Keras's
    input_layers) takes its inputs in input_layers order, as Keras does."""
    def input_b_first(config):
        layers = config["config"]["layers"]
        b = next(i for i, layer in enumerate(layers) if layer["name"] == "b")
        layers.insert(0, layers.pop(b))
        assert [ref[0] for ref in config["config"]["input_layers"]] == ["a", "b"]

    model = load_keras_h5(edited_copy(tmp_path, "merge_pool", edit_config=input_b_first))
    assert model.input_names == ["a", "b"]
    for xs, want in golden_cases("merge_pool"):
        for ours, keras in zip(run(model, xs), want):
            assert relative_error(ours, keras) <= 1e-5


def test_misshapen_tensor_named_with_both_shapes(tmp_path):
    def shorter_kernel(f):
        group = f["model_weights/same_k5"]
        del group["same_k5/kernel:0"]
        group.create_dataset("same_k5/kernel:0", data=np.zeros((4, 5, 3), "float32"))

    path = edited_copy(tmp_path, "conv", edit_file=shorter_kernel)
    with pytest.raises(ModelError, match=r"tensor same_k5/kernel:0 has shape \(4, 5, 3\) in the file but layer "
                                         r"'same_k5' \(Conv1D\) needs kernel of shape \(5, 5, 3\) from its config"):
        load_keras_h5(path)


def test_missing_tensor_is_counted(tmp_path):
    def drop_bias(f):
        f["model_weights/same_k5"].attrs["weight_names"] = np.array([b"same_k5/kernel:0"])

    path = edited_copy(tmp_path, "conv", edit_file=drop_bias)
    with pytest.raises(ModelError, match=r"layer 'same_k5' \(Conv1D\) has 1 weight tensors in the file "
                                         r"\(same_k5/kernel:0\) but its config needs 2 \(kernel, bias\)"):
        load_keras_h5(path)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="weights file not found"):
        load_keras_h5(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ModelError, match=r"junk.h5 is not an HDF5 file: save the Keras model with model.save"):
        load_keras_h5(tmp_path / "junk.h5")
    weights_only = edited_copy(tmp_path, "sequential", edit_file=lambda f: f.attrs.__delitem__("model_config"))
    with pytest.raises(ModelError, match=r"has no model_config, so it is not a whole Keras model: weights only "
                                         r"\(model.save_weights"):
        load_keras_h5(weights_only)
    keras3 = edited_copy(tmp_path, "conv", edit_file=lambda f: f.attrs.__setitem__("keras_version", "3.3.3"))
    with pytest.raises(ModelError, match="written by Keras 3.3.3; only Keras 2 files"):
        load_keras_h5(keras3)
    bad_json = edited_copy(tmp_path, "conv", edit_file=lambda f: f.attrs.__setitem__("model_config", '{"class'))
    with pytest.raises(ModelError, match="its model_config attribute is not valid JSON"):
        load_keras_h5(bad_json)
    whole = (GOLDENS / "conv.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ModelError, match=r"cut.h5 cannot be read as HDF5 \(.*\): the file is damaged or cut short"):
        load_keras_h5(tmp_path / "cut.h5")
    unlisted = edited_copy(tmp_path, "conv", edit_file=lambda f: f["model_weights/same_k5"].__delitem__(
        "same_k5/bias:0"))
    with pytest.raises(ModelError, match="tensor same_k5/bias:0 is listed in weight_names of "
                                         "/model_weights/same_k5 but is not in the file"):
        load_keras_h5(unlisted)


# -- the backend -------------------------------------------------------------------------------------------------------

def spliceai_like_spec(tmp_path, **change) -> Path:
    """The spliceai_like golden beside a spec: 301 bp in, 101 positions x 3 classes out."""
    path = tmp_path / "spliceai_like.h5"
    shutil.copy(GOLDENS / "spliceai_like.h5", path)
    spec = {"input_length": 301, "output_bins": 101, "bin_size": 1, "bin_offset": 100,
            "tracks": ["neither", "acceptor", "donor"], **change}
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))
    return path


def clipnet_folds(tmp_path, **spec) -> list[str]:
    paths = []
    for fold in (1, 2, 3):
        paths.append(str(tmp_path / f"fold{fold}.h5"))
        shutil.copy(GOLDENS / f"clipnet_fold{fold}.h5", paths[-1])
    full = {"input_length": 1000, "encoding": "two-hot", "output_bins": 1, "bin_size": 1000, "bin_offset": 0,
            "tracks": [f"p{i}" for i in range(1000)], "output": "shape", **spec}
    (tmp_path / "fold1.json").write_text(json.dumps(full))
    return paths


def test_backend_predicts_the_spec_output(tmp_path):
    backend = KerasBackend([str(spliceai_like_spec(tmp_path))])
    (xs, want), _ = golden_cases("spliceai_like")
    assert backend.geometry.output_bins == 101 and list(backend.tracks["id"]) == ["neither", "acceptor", "donor"]
    with torch.inference_mode():
        y = backend.predict(torch.from_numpy(xs[0]))
    assert relative_error(y.numpy(), want[0]) <= TOLERANCE
    assert backend.weight_files[-1].name == "spliceai_like.json"


def test_ensemble_is_the_mean_of_the_folds(tmp_path):
    paths = clipnet_folds(tmp_path)
    backend = KerasBackend(paths)
    assert backend.encoding == "two-hot" and backend.settings() == {"models": 3, "output": "shape"}
    x = torch.from_numpy(golden_cases("clipnet_fold1")[0][0][0])
    with torch.inference_mode():
        y = backend.predict(x)
        singles = [load_keras_h5(p)(x)[0] for p in paths]
    assert y.shape == (3, 1, 1000)
    assert torch.allclose(y[:, 0], sum(singles) / 3, rtol=0, atol=1e-6)
    keras_mean = sum(golden_cases(f"clipnet_fold{k}")[0][1][0] for k in (1, 2, 3)) / 3
    assert relative_error(y[:, 0].numpy(), keras_mean) <= TOLERANCE
    assert not torch.allclose(singles[0], singles[1])  # the folds differ, so the mean means something


def test_output_by_index_and_two_dimensional_output_is_one_bin(tmp_path):
    paths = clipnet_folds(tmp_path, output=1, bin_size=1, bin_offset=500, tracks=["sum"])
    backend = KerasBackend(paths[:1])
    x = torch.from_numpy(golden_cases("clipnet_fold1")[0][0][0])
    with torch.inference_mode():
        assert relative_error(backend.predict(x).numpy()[:, 0], golden_cases("clipnet_fold1")[0][1][1]) <= TOLERANCE


@pytest.mark.parametrize("change,message", [
    ({"output": "profile"}, r"has no output 'profile': the spec's 'output' must be an index 0..1 or a name "
                            r"\(shape, sum\)"),
    ({"output": 2}, "has no output 2"),
    ({"tracks": ["a", "b"]}, r"output 'shape' is \(1, 1, 1000\) but the spec says \(batch, bins, tracks\) = "
                             r"\(1, 1, 2\)"),
    ({"input_length": 1200, "bin_size": 1200}, r"takes inputs of shape \(1000, 4\) but the keras backend needs "
                                               r"one \(1200, 4\) input"),
    ({"input_layout": "NCL"}, "a Keras model is channels-last"),
    ({"state_dict": "w.pt"}, "drop 'state_dict'"),
])
def test_backend_spec_errors(tmp_path, change, message):
    paths = clipnet_folds(tmp_path, **change)
    with pytest.raises(ModelError, match=message):
        KerasBackend(paths[:1])


def test_backend_fails_on_a_model_whose_shapes_do_not_fit(tmp_path):
    path = spliceai_like_spec(tmp_path, input_length=150, output_bins=100, bin_offset=25)  # shorter than its context
    with pytest.raises(ModelError, match=r"spliceai_like.h5 output '\w+' is \(1, 0, 3\) but the spec says"):
        KerasBackend([str(path)])


def test_ensemble_members_must_agree(tmp_path):
    paths = clipnet_folds(tmp_path)
    shutil.copy(GOLDENS / "sequential.h5", tmp_path / "other.h5")
    with pytest.raises(ModelError, match=r"other.h5 takes inputs of shape \(20, 4\)"):
        KerasBackend([paths[0], str(tmp_path / "other.h5")])


def test_backend_options(tmp_path):
    with pytest.raises(OptionError, match="the keras backend does not take --distance"):
        KerasBackend([str(spliceai_like_spec(tmp_path))], distance=50)
    with pytest.raises(InputError, match="model spec not found"):
        KerasBackend([str(GOLDENS / "conv.h5")], spec=str(tmp_path / "none.json"))
    with pytest.raises(ModelError, match="needs --weights MODEL.h5"):
        KerasBackend([])


@pytest.mark.skipif("keras" not in BUILTIN, reason="the keras backend is not in varfx.backends.BUILTIN yet")
def test_registered_as_keras():
    assert backend_class("keras") is KerasBackend
