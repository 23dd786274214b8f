"""Throughput of Keras models run by varfx's converter, and of the same files in TensorFlow.

    python benchmarks/keras_bench.py [--tf-python /path/to/tf/bin/python] [--threads 2] [--repeats 5]

Models:

* ``spliceai``: the published SpliceAI model spliceai1.h5 (from the installed
  spliceai package) on 10,101-bp one-hot inputs, the length varfx's spliceai
  backend feeds it with its default --distance 50 (10,000 bp of context + 101
  scored positions).
* ``clipnet``: CLIPNET's architecture at full width (64/128/64 filters, a
  1,000-unit profile head; 8.4 M weights), random weights, 1,000-bp two-hot
  inputs.  This script writes it as a Keras 2 .h5 file: the config of the
  reduced-width golden tests/keras_goldens/clipnet_fold1.h5 with the widths
  restored, weights drawn for the shapes :func:`varfx.backends.keras.weight_shapes`
  gives.

Both frameworks get the same file, batch, input and number of threads (torch's
intra-op threads; TensorFlow's intra-op threads, one inter-op thread).  Each
model is called once to warm up, then --repeats calls are timed, in wall-clock
and in process CPU time; the table gives sequences per second of the fastest
call of each kind.  CPU time is the steadier measure on a shared machine (other
processes take wall time, not CPU time); with several threads it also counts
time spent waiting in a spin.
With --tf-python, TensorFlow runs in a subprocess under that interpreter (varfx
never imports it), in graph mode (``tf.function``), and its outputs are compared
with varfx's: max |varfx - TF| / max |TF| over all outputs.  Prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))

from keras_files import write_keras_h5  # noqa: E402
from varfx.backends.keras import load_keras_h5  # noqa: E402

CLIPNET_WIDTHS = {8: 64, 16: 128}  # golden filters -> CLIPNET's

TF_SCRIPT = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
model_path, input_path, output_path, threads, repeats = sys.argv[1:6]
tf.config.threading.set_intra_op_parallelism_threads(int(threads))
tf.config.threading.set_inter_op_parallelism_threads(1)
model = tf.keras.models.load_model(model_path, compile=False)
x = np.load(input_path)["x"]
call = tf.function(lambda x: model(x, training=False))
ys = call(x)
seconds = []
for _ in range(int(repeats)):
    t, c = time.perf_counter(), time.process_time()
    call(x)
    seconds.append((time.perf_counter() - t, time.process_time() - c))
ys = ys if isinstance(ys, (list, tuple)) else [ys]
np.savez(output_path, *[np.asarray(y) for y in ys])
print(json.dumps({"seconds": seconds, "version": tf.__version__}))
"""


# -- models and inputs -------------------------------------------------------------------------------------------------

def spliceai_model() -> Path:
    folder = Path(importlib.util.find_spec("spliceai").submodule_search_locations[0])
    return folder / "models" / "spliceai1.h5"


def clipnet_model(folder: Path) -> Path:
    """Full-width CLIPNET: the golden's config with CLIPNET's filter counts, random weights."""
    with h5py.File(ROOT / "tests" / "keras_goldens" / "clipnet_fold1.h5", "r") as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Conv1D":
            layer["config"]["filters"] = CLIPNET_WIDTHS[layer["config"]["filters"]]
    return write_keras_h5(folder / "clipnet_full.h5", config)


def sequence_input(batch: int, length: int, hot: int, seed: int = 0) -> np.ndarray:
    """Random one-hot (hot=1) or homozygous two-hot (hot=2) sequence."""
    codes = np.random.default_rng(seed).integers(0, 4, (batch, length))
    return (hot * np.eye(4, dtype="float32"))[codes]


# -- timing ------------------------------------------------------------------------------------------------------------

def time_varfx(path: Path, x: np.ndarray, threads: int, repeats: int, trim: bool = True,
               device: str = "cpu", precision: str = "fp32"):
    """(wall, CPU) seconds of each timed call, and the outputs (float32, on the CPU).

    On a GPU each timed call ends with a synchronisation, so that wall time covers the kernels;
    ``precision="bf16"`` runs under bf16 autocast.
    """
    import contextlib

    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = load_keras_h5(path).to(dev)
    model.trim = trim
    xt = torch.from_numpy(x).to(dev)
    cast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    seconds = []
    with torch.inference_mode(), cast:
        ys = model(xt)
        sync()
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model(xt)
            sync()
            seconds.append((time.perf_counter() - t, time.process_time() - c))
    return seconds, [y.float().cpu().numpy() for y in ys]


def time_tensorflow(tf_python: str, path: Path, x: np.ndarray, threads: int, repeats: int, folder: Path):
    """Run TF_SCRIPT under ``tf_python``: its call times, outputs and version."""
    script, inputs, outputs = folder / "tf_time.py", folder / "x.npz", folder / "tf_out.npz"
    script.write_text(TF_SCRIPT)
    np.savez(inputs, x=x)
    run = subprocess.run([tf_python, str(script), str(path), str(inputs), str(outputs), str(threads), str(repeats)],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"TensorFlow run failed:\n{run.stderr[-3000:]}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    with np.load(outputs) as out:
        ys = [out[f"arr_{i}"] for i in range(len(out.files))]
    return report["seconds"], ys, report["version"]


def rates(seconds: list[tuple], batch: int) -> tuple[float, float]:
    """Sequences per second of wall time and of CPU time, from the fastest call of each kind."""
    return batch / min(w for w, _ in seconds), batch / min(c for _, c in seconds)


def relative_error(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tf-python", help="a Python with TensorFlow 2.x to time the same models in")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--spliceai-batch", type=int, default=8)
    parser.add_argument("--clipnet-batch", type=int, default=64)
    parser.add_argument("--models", default="spliceai,clipnet")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (TensorFlow always runs on the CPU)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="varfx's precision (autocast)")
    parser.add_argument("--no-trim", action="store_true", help="varfx computes every layer over its whole length "
                        "(KerasModel.trim = False), as before it computed only the positions an output needs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {"spliceai": ("SpliceAI (spliceai1.h5)", spliceai_model, 10_101, 1, args.spliceai_batch),
                 "clipnet": ("CLIPNET architecture, full width", lambda: clipnet_model(folder), 1_000, 2,
                             args.clipnet_batch)}
        rows, tf_version = [], None
        for key in args.models.split(","):
            label, make, length, hot, batch = cases[key]
            path, x = make(), sequence_input(batch, length, hot)
            seconds, ys = time_varfx(path, x, args.threads, args.repeats, not args.no_trim, args.device,
                                     args.precision)
            wall, cpu = rates(seconds, batch)
            row = [label, f"{length:,}", str(batch), str(args.threads), f"{wall:.1f}", f"{cpu:.1f}"]
            if args.tf_python:
                tf_seconds, tf_ys, tf_version = time_tensorflow(args.tf_python, path, x, args.threads, args.repeats,
                                                                folder)
                tf_wall, tf_cpu = rates(tf_seconds, batch)
                row += [f"{tf_wall:.1f}", f"{tf_cpu:.1f}", f"{wall / tf_wall:.2f}", f"{cpu / tf_cpu:.2f}",
                        f"{relative_error(ys, tf_ys):.1e}"]
            rows.append(row)

    header = ["model", "input bp", "batch", "threads", "varfx seq/s", "varfx seq/CPU-s"]
    if args.tf_python:
        header += [f"TF {tf_version} seq/s", "TF seq/CPU-s", "varfx / TF (wall)", "varfx / TF (CPU)",
                   "max rel. error"]
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    where = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
             else f"{cpu_name()}, {torch.get_num_threads()} threads")
    print(f"{where}; varfx at {args.precision}; torch {torch.__version__}; fastest of "
          f"{args.repeats} calls after a warm-up; load average {load} at the end"
          f"{'; varfx with trim off' if args.no_trim else ''}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
