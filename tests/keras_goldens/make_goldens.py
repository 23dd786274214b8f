"""Make the golden Keras models and outputs that tests/test_keras.py checks varfx's converter against.

Run once, with TensorFlow 2.15 (never a dependency of varfx or its tests)::

    /work/scratch/tf/bin/python tests/keras_goldens/make_goldens.py

For each model NAME it writes, next to this script:

* ``NAME.h5``: the model, random weights (BatchNormalization with random gamma,
  beta and moving statistics), saved with ``model.save(path, save_format="h5")``;
  its datasets are then rewritten with gzip so that the folder stays small.
* ``NAME.npz``: for each input case ``j``, the inputs ``x{j}_{i}`` and what Keras
  computes from the saved file (``load_model(path, compile=False)``), ``y{j}_{k}``
  in the model's output order.

``spliceai_real.npz`` holds the outputs of the five published SpliceAI models
(from the spliceai package; not copied) on ``x0_0``, a (2, 10101, 4) one-hot
input with a few N positions: ``y0_0`` from spliceai1.h5 ... ``y4_0`` from spliceai5.h5.

Together the models use every layer and option the converter supports.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import h5py
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402

L = keras.layers
HERE = Path(__file__).resolve().parent
ACTIVATIONS = ["relu", "elu", "selu", "sigmoid", "softmax", "softplus", "tanh", "exponential", "linear",
               "swish", "silu", "gelu"]


# -- weights and inputs ------------------------------------------------------------------------------------------------

def randomize(model: keras.Model, seed: int, coarse: bool = False) -> None:
    """Random weights; BatchNormalization gets non-trivial gamma, beta and moving statistics.

    ``coarse`` rounds large kernels to multiples of 1/8 (most become 0) so that the saved file compresses.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for w in layer.weights:
            role, shape = w.name.split("/")[-1].split(":")[0], tuple(w.shape)
            if role == "kernel":
                fan_in = int(np.prod(shape[:-1]))
                v = rng.normal(0, 1.2 / np.sqrt(fan_in), shape)
                if coarse and v.size > 10000:
                    v = np.round(v * 8) / 8
            elif role == "bias":
                v = rng.normal(0, 0.2, shape)
            elif role == "gamma":
                v = rng.uniform(0.5, 1.5, shape)
            elif role == "beta":
                v = rng.normal(0, 0.3, shape)
            elif role == "moving_mean":
                v = rng.normal(0, 0.5, shape)
            elif role == "moving_variance":
                v = rng.uniform(0.3, 2.0, shape)
            else:
                raise ValueError(f"no rule for weight {w.name}")
            values.append(v.astype("float32"))
        layer.set_weights(values)


def normal(seed: int, *shape) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype("float32")


def one_hot(seed: int, batch: int, length: int, n_fraction: float = 0.01) -> np.ndarray:
    """Random one-hot sequence; a few positions are N (all zero)."""
    rng = np.random.default_rng(seed)
    x = np.eye(4, dtype="float32")[rng.integers(0, 4, (batch, length))]
    x[rng.random((batch, length)) < n_fraction] = 0
    return x


def two_hot(seed: int, batch: int, length: int) -> np.ndarray:
    """CLIPNET's encoding: homozygous bases count 2, heterozygous positions 1 + 1, N is 0."""
    rng = np.random.default_rng(seed)
    x = 2 * np.eye(4, dtype="float32")[rng.integers(0, 4, (batch, length))]
    het = rng.random((batch, length)) < 0.05
    x[het] = np.eye(4, dtype="float32")[rng.integers(0, 4, het.sum())] + np.eye(4, dtype="float32")[
        rng.integers(0, 4, het.sum())]
    x[rng.random((batch, length)) < 0.01] = 0
    return x


# -- saving ------------------------------------------------------------------------------------------------------------

def compress(path: Path) -> None:
    """Rewrite the larger datasets of an HDF5 file with gzip (same content, attributes and layout)."""
    tmp = path.with_suffix(".tmp.h5")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        def copy(s, d):
            d.attrs.update(s.attrs)
            for key, item in s.items():
                if isinstance(item, h5py.Group):
                    copy(item, d.create_group(key))
                else:
                    big = dict(compression="gzip", compression_opts=9, shuffle=True) if item.nbytes > 4096 else {}
                    d.create_dataset(key, data=item[()], **big).attrs.update(item.attrs)
        copy(src, dst)
    tmp.replace(path)


def outputs_of(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    ys = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]


def save_golden(name: str, model: keras.Model, cases: list[list[np.ndarray]]) -> None:
    """Save NAME.h5 and NAME.npz (outputs computed by Keras from the saved, compressed file)."""
    path = HERE / f"{name}.h5"
    model.save(path, save_format="h5")
    compress(path)
    loaded = keras.models.load_model(path, compile=False)
    arrays = {}
    for j, inputs in enumerate(cases):
        ys = outputs_of(loaded, inputs)
        for i, x in enumerate(inputs):
            arrays[f"x{j}_{i}"] = x
        for k, (y, y_before) in enumerate(zip(ys, outputs_of(model, inputs))):
            assert np.array_equal(y, y_before), f"{name}: the saved model differs from the one in memory"
            assert np.isfinite(y).all() and np.abs(y).max() > 0, f"{name}: output {k} is degenerate"
            arrays[f"y{j}_{k}"] = y
    np.savez_compressed(HERE / f"{name}.npz", **arrays)
    print(f"{name}: {len(model.layers)} layers, {len(cases)} cases, outputs "
          f"{[tuple(v.shape) for k, v in arrays.items() if k.startswith('y0_')]}")


# -- the small models --------------------------------------------------------------------------------------------------

def conv_model() -> keras.Model:
    """Conv1D: valid/same/causal padding, odd and even kernels, dilations, strides, groups, no bias."""
    inp = L.Input((None, 5))
    wide = L.Conv1D(6, 1, name="to6")(inp)
    outs = [
        L.Conv1D(3, 5, padding="same", activation="relu", name="same_k5")(inp),
        L.Conv1D(3, 4, padding="same", activation="elu", name="same_k4")(inp),
        L.Conv1D(3, 4, padding="same", dilation_rate=3, name="same_k4_d3")(inp),
        L.Conv1D(3, 3, padding="same", dilation_rate=2, name="same_k3_d2")(inp),
        L.Conv1D(3, 6, padding="valid", dilation_rate=2, name="valid_k6_d2")(inp),
        L.Conv1D(3, 3, strides=2, padding="same", name="same_k3_s2")(inp),
        L.Conv1D(3, 4, strides=2, padding="same", name="same_k4_s2")(inp),
        L.Conv1D(3, 4, strides=3, padding="valid", name="valid_k4_s3")(inp),
        L.Conv1D(3, 3, padding="causal", dilation_rate=2, name="causal_k3_d2")(inp),
        L.Conv1D(4, 3, padding="same", groups=2, name="groups2")(wide),
        L.Conv1D(3, 2, use_bias=False, activation="sigmoid", name="no_bias")(inp),
    ]
    return keras.Model(inp, outs)


def activation_model() -> keras.Model:
    """Every activation as a layer (3-D), as a Conv1D's activation and as a Dense's (2-D)."""
    inp = L.Input((None, 4))
    base = L.Conv1D(6, 3, padding="same", name="base")(inp)
    pooled = L.GlobalAveragePooling1D(name="pooled")(base)
    outs = []
    for act in ACTIVATIONS:
        outs += [L.Activation(act, name=f"act_{act}")(base),
                 L.Conv1D(4, 3, activation=act, name=f"conv_{act}")(inp),
                 L.Dense(5, activation=act, name=f"dense_{act}")(pooled)]
    return keras.Model(inp, outs)


def merge_pool_model() -> keras.Model:
    """Two inputs; merges, concatenation on every axis, pooling, cropping, padding, dropout."""
    a, b = L.Input((None, 4), name="a"), L.Input((None, 4), name="b")
    c = L.Conv1D(4, 1, name="c")(a)
    outs = [
        L.Add(name="add3")([a, b, c]), L.Subtract(name="sub")([a, b]), L.Multiply(name="mul")([a, b, c]),
        L.Average(name="avg")([a, b, c]), L.Maximum(name="max")([a, b]), L.Minimum(name="min")([b, c]),
        L.Concatenate(name="cat_last")([a, c]), L.Concatenate(axis=1, name="cat_len")([a, b]),
        L.Concatenate(axis=-2, name="cat_neg2")([b, c]),
        L.MaxPooling1D(2, name="maxpool2")(a), L.MaxPooling1D(3, strides=2, padding="same", name="maxpool3s2_same")(a),
        L.MaxPooling1D(4, padding="same", name="maxpool4_same")(c),
        L.AveragePooling1D(3, strides=1, name="avgpool3s1")(a),
        L.AveragePooling1D(3, strides=2, padding="same", name="avgpool3s2_same")(a),
        L.AveragePooling1D(4, padding="same", name="avgpool4_same")(c),
        L.GlobalAveragePooling1D(name="gap")(c), L.GlobalMaxPooling1D(name="gmp")(c),
        L.GlobalAveragePooling1D(keepdims=True, name="gap_keep")(a),
        L.GlobalMaxPooling1D(keepdims=True, name="gmp_keep")(b),
        L.Cropping1D((2, 3), name="crop")(c), L.ZeroPadding1D((1, 2), name="pad12")(a),
        L.ZeroPadding1D(2, name="pad2")(c),
        L.Conv1D(2, 3, name="after_dropout")(L.SpatialDropout1D(0.3, name="sdrop")(L.Dropout(0.5, name="drop")(c))),
    ]
    # an element-wise chain on a cropped view and on a tensor that is read twice
    crop = L.Cropping1D((1, 1), name="crop11")(c)
    outs.append(L.Activation("relu", name="relu_of_crop")(crop))
    outs.append(L.Add(name="crop_plus_c")([crop, L.Cropping1D((1, 1), name="crop11b")(c)]))
    return keras.Model([a, b], outs)


def batch_norm_model() -> keras.Model:
    """BatchNormalization: folded into a convolution or not, without scale/center, custom epsilon, 2-D."""
    inp = L.Input((None, 4))
    c1 = L.Conv1D(5, 3, padding="same", name="c1")(inp)
    c2 = L.Conv1D(5, 3, name="c2")(inp)
    c3 = L.Conv1D(5, 3, activation="relu", name="c3")(inp)
    c4 = L.Conv1D(5, 2, name="c4")(inp)
    outs = [
        L.BatchNormalization(name="bn_after_conv")(c1),
        L.BatchNormalization(center=False, name="bn_no_center")(c2), c2,
        L.BatchNormalization(scale=False, epsilon=1e-5, name="bn_input")(inp),
        L.BatchNormalization(name="bn_after_relu_conv")(c3),
        L.BatchNormalization(name="bn_after_dropout")(L.Dropout(0.2, name="drop")(c4)),
        L.BatchNormalization(name="bn_2d")(L.Dense(6, name="dense")(L.GlobalAveragePooling1D(name="gap")(c3))),
    ]
    return keras.Model(inp, outs)


def dense_reshape_model() -> keras.Model:
    """A fixed-length input: Flatten, Dense on 2-, 3- and 4-D tensors, Reshape, 4-D BatchNorm/softmax/concat."""
    inp = L.Input((12, 4))
    h = L.Dense(7, activation="relu", name="d7")(L.Flatten(name="flat")(inp))
    r3 = L.Reshape((6, 8), name="to_6x8")(inp)
    r4 = L.Reshape((3, 4, 4), name="to_3x4x4")(inp)
    d4 = L.Dense(2, name="dense4d")(r4)
    outs = [
        L.Dense(3, activation="softmax", name="head")(L.BatchNormalization(name="bn")(h)),
        L.Dense(5, activation="tanh", name="dense3d")(inp),
        L.Flatten(name="flat_conv")(L.Conv1D(3, 3, padding="same", name="conv_6x8")(r3)),
        L.Reshape((-1,), name="flat4d")(
            L.Activation("softmax", name="softmax4d")(L.BatchNormalization(name="bn4d")(d4))),
        L.Flatten(name="flatten4d")(r4),
        L.Conv1D(2, 3, name="conv_any")(L.Reshape((-1, 6), name="to_any_x6")(inp)),
        L.Concatenate(axis=2, name="cat4d")([r4, r4]),
        L.Flatten(name="flat_2d")(h),
    ]
    return keras.Model(inp, outs)


def sequential_model() -> keras.Model:
    return keras.Sequential([
        L.Input((20, 4)), L.Conv1D(6, 5, activation="relu"), L.BatchNormalization(), L.Activation("elu"),
        L.MaxPooling1D(2), L.Dropout(0.3), L.Flatten(), L.Dense(3, activation="softmax"),
    ], name="seq")


def sequential_built_model() -> keras.Model:
    """A Sequential built with model.build(): its input shape is only in build_input_shape."""
    model = keras.Sequential([L.Conv1D(4, 3, padding="same"), L.BatchNormalization(), L.GlobalAveragePooling1D()])
    model.build((None, None, 4))
    return model


# -- the two architectures ---------------------------------------------------------------------------------------------

def clipnet_model(widths=(8, 16, 8)) -> keras.Model:
    """CLIPNET (rnn_v10, He & Danko) at reduced width: input (1000, 4) two-hot -> profile (1000,) and sum (1,)."""
    w1, w2, w3 = widths
    inp = L.Input((1000, 4))
    x = L.BatchNormalization()(inp)
    x = L.MaxPooling1D(2)(L.Activation("elu")(L.BatchNormalization()(L.Conv1D(w1, 8, padding="valid")(x))))
    x = L.MaxPooling1D(2)(L.Activation("relu")(L.BatchNormalization()(L.Conv1D(w2, 4, padding="valid")(x))))
    x = L.Conv1D(w3, 1)(x)
    for i in range(9):
        y = L.Activation("relu")(L.BatchNormalization()(L.Conv1D(w3, 3, padding="same", dilation_rate=2 ** i)(x)))
        x = L.Activation("relu")(L.BatchNormalization()(L.Add()([y, x])))
    x = L.MaxPooling1D(2)(x)
    profile = L.Activation("relu")(L.BatchNormalization(name="profile_bn")(L.Dense(1000)(L.Flatten()(x))))
    quantity = L.Activation("relu")(L.BatchNormalization(name="sum_bn")(L.Dense(1)(L.GlobalAveragePooling1D()(x))))
    return keras.Model(inp, [L.Dropout(0.3, name="shape")(profile), L.Dropout(0.3, name="sum")(quantity)])


def positive_head(model: keras.Model) -> None:
    """A positive beta on the heads' last BatchNormalization so that relu leaves the outputs non-zero."""
    for name in ("profile_bn", "sum_bn"):
        gamma, beta, mean, var = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([gamma, np.abs(beta) + 0.5, mean, var])


def spliceai_like_model(width=8, windows=(11, 11), rates=(1, 4), per_group=2) -> keras.Model:
    """SpliceAI's residual dilated CNN at reduced width and depth; any input length, output cropped."""
    inp = L.Input((None, 4))
    x = L.Conv1D(width, 1)(inp)
    skip = L.Conv1D(width, 1)(x)
    for w, r in zip(windows, rates):
        for _ in range(per_group):
            y = L.Conv1D(width, w, dilation_rate=r, padding="same")(L.Activation("relu")(L.BatchNormalization()(x)))
            y = L.Conv1D(width, w, dilation_rate=r, padding="same")(L.Activation("relu")(L.BatchNormalization()(y)))
            x = L.Add()([x, y])
        skip = L.Add()([skip, L.Conv1D(width, 1)(x)])
    context = 2 * sum(per_group * r * (w - 1) for w, r in zip(windows, rates))
    x = L.Cropping1D((context // 2, context // 2))(skip)
    return keras.Model(inp, L.Conv1D(3, 1, activation="softmax")(x))


# -- the published SpliceAI models -------------------------------------------------------------------------------------

def spliceai_real() -> None:
    folder = Path(importlib.util.find_spec("spliceai").submodule_search_locations[0]) / "models"
    x = one_hot(2024, 2, 10101, n_fraction=0.002)
    arrays = {"x0_0": x}
    for i in range(5):
        model = keras.models.load_model(folder / f"spliceai{i + 1}.h5", compile=False)
        arrays[f"y{i}_0"] = outputs_of(model, [x])[0]
    np.savez_compressed(HERE / "spliceai_real.npz", **arrays)
    print("spliceai_real:", {k: v.shape for k, v in arrays.items()})


def random_model(build, seed: int) -> keras.Model:
    model = build()
    randomize(model, seed)
    return model


def clipnet_fold(fold: int) -> keras.Model:
    model = clipnet_model()
    randomize(model, 100 + fold, coarse=True)
    positive_head(model)
    return model


def main() -> None:
    tf.keras.utils.set_random_seed(0)
    save_golden("conv", random_model(conv_model, 11), [[normal(1, 3, 23, 5)], [normal(2, 2, 30, 5)]])
    save_golden("activations", random_model(activation_model, 12), [[normal(3, 3, 17, 4)], [normal(4, 2, 9, 4)]])
    save_golden("merge_pool", random_model(merge_pool_model, 13), [[normal(5, 3, 23, 4), normal(6, 3, 23, 4)],
                                                                   [normal(7, 2, 30, 4), normal(8, 2, 30, 4)]])
    save_golden("batch_norm", random_model(batch_norm_model, 14), [[normal(9, 3, 19, 4)]])
    save_golden("dense_reshape", random_model(dense_reshape_model, 15), [[normal(10, 4, 12, 4)]])
    save_golden("sequential", random_model(sequential_model, 16), [[normal(11, 3, 20, 4)]])
    save_golden("sequential_built", random_model(sequential_built_model, 17), [[normal(12, 3, 15, 4)]])
    for fold in (1, 2, 3):
        save_golden(f"clipnet_fold{fold}", clipnet_fold(fold), [[two_hot(200, 3, 1000)]])  # one input for all
    save_golden("spliceai_like", random_model(spliceai_like_model, 18), [[one_hot(20, 2, 301)], [one_hot(21, 1, 260)]])
    spliceai_real()


if __name__ == "__main__":
    main()
