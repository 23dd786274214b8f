"""Writing Keras 2 .h5 files without Keras: a model config plus random weights of a plausible scale.

Used by the tests (models built in the test) and by benchmarks/keras_bench.py (full-width CLIPNET).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from varfx.backends.keras import weight_shapes


def random_weight(role: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Kernels ~ N(0, 1/fan_in), BatchNorm near identity with a positive beta, small biases."""
    if role == "kernel":
        return rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
    return {"bias": lambda: rng.normal(0, 0.1, shape), "gamma": lambda: rng.uniform(0.8, 1.2, shape),
            "beta": lambda: rng.uniform(0, 0.3, shape), "moving_mean": lambda: rng.normal(0, 0.1, shape),
            "moving_variance": lambda: rng.uniform(0.8, 1.2, shape)}[role]()


def write_keras_h5(path: Path, config: dict, seed: int = 0) -> Path:
    """A Keras 2 model file (as ``model.save`` writes it) with random weights for ``config``."""
    rng = np.random.default_rng(seed)
    shapes = weight_shapes(config)
    names = [layer["name"] for layer in config["config"]["layers"]]
    with h5py.File(path, "w") as f:
        f.attrs.update({"keras_version": "2.15.0", "backend": "tensorflow", "model_config": json.dumps(config)})
        group = f.create_group("model_weights")
        group.attrs.update({"keras_version": "2.15.0", "backend": "tensorflow",
                            "layer_names": np.array(names, dtype="S")})
        for name in names:
            layer = group.create_group(name)
            tensors = shapes.get(name, [])
            layer.attrs["weight_names"] = np.array([f"{name}/{role}:0" for role, _ in tensors], dtype="S")
            for role, shape in tensors:
                layer.create_dataset(f"{name}/{role}:0", data=random_weight(role, shape, rng).astype("float32"))
    return path
