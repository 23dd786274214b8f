"""examples/workflow/: the Snakemake workflow and the plain SLURM job-array script, run locally on the
bundled example in 3 shards, merge into files equal to one unsharded `varfx score` run (docs/hpc.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import EXAMPLES

pytestmark = pytest.mark.slow  # each test starts varfx 4-6 times (a few seconds each)

WORKFLOW = EXAMPLES / "workflow"
INPUTS = ("genome.fa", "variants.vcf", "model.pt", "model.json")
SHARDS, BLOCK = 3, 16  # 285 records -> 18 blocks of 16: 6 per shard
VARFX = Path(sys.executable).parent / "varfx"
#: attributes that differ between a merged file and an unsharded run's by design
TIMING = {"seconds", "merged_from"}


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VARFX.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(cmd, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or _env(), capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _copy_inputs(d: Path) -> Path:
    """The example's inputs, without a FASTA index, so that every run uses the same relative paths."""
    d.mkdir(parents=True, exist_ok=True)
    for name in INPUTS:
        shutil.copy(EXAMPLES / name, d / name)
    return d


def _datasets(f: h5py.File) -> list[str]:
    names = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return sorted(names)


def _attr(v):
    v = v.decode() if isinstance(v, bytes) else v
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return json.loads(v)  # JSON dicts compare without regard to key order
        except ValueError:
            pass
    return v.tolist() if hasattr(v, "tolist") else v


def assert_same_h5(merged: Path, want: Path) -> None:
    with h5py.File(merged, "r") as a, h5py.File(want, "r") as b:
        assert _datasets(a) == _datasets(b)
        for n in _datasets(b):
            assert a[n].dtype == b[n].dtype and a[n].shape == b[n].shape, n
            assert np.array_equal(a[n][()], b[n][()]), f"dataset {n} differs"
        keys = (set(a.attrs) | set(b.attrs)) - TIMING
        diff = [k for k in sorted(keys) if _attr(a.attrs.get(k)) != _attr(b.attrs.get(k))]
        assert not diff, f"attributes differ: {diff}"
        assert a["SAD"].shape[0] > 0 and a["skipped/record"].shape[0] > 0


def assert_sharded(paths: list[Path], block: int = BLOCK) -> None:
    """Every shard holds its own third of the records (the work was really split)."""
    seen = []
    for k, p in enumerate(paths, 1):
        with h5py.File(p, "r") as f:
            assert _attr(f.attrs["shard"]) == f"{k}/{SHARDS}"
            recs = np.union1d(f["record"][()], f["skipped/record"][()])
        assert recs.size and np.all((recs // block) % SHARDS == k - 1)
        seen.append(recs)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(285))


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory) -> Path:
    """One unsharded run of the example (same block size), in a folder of its own."""
    d = _copy_inputs(tmp_path_factory.mktemp("unsharded"))
    _run([VARFX, "score", "variants.vcf", "--fasta", "genome.fa", "--backend", "torchscript", "--weights",
          "model.pt", "--block-records", BLOCK, "--device", "cpu", "--out", "scores.h5", "--tsv", "scores.tsv",
          "-q"], cwd=d)
    return d


@pytest.mark.skipif(importlib.util.find_spec("snakemake") is None,
                    reason="needs Snakemake (pip install -e '.[test]' installs it on Python >= 3.11)")
def test_snakemake_workflow_equals_unsharded_run(tmp_path, unsharded):
    d = _copy_inputs(tmp_path / "run")
    assert not (d / "genome.fa.fai").exists()
    config = {"varfx": str(VARFX), "vcf": "variants.vcf", "fasta": "genome.fa", "weights": ["model.pt"],
              "shards": SHARDS, "block_records": BLOCK, "device": "cpu", "threads": 1, "gpus": 0, "tsv": True,
              "outdir": "results", "name": "scores"}
    (tmp_path / "test.yaml").write_text(json.dumps(config))  # JSON is YAML
    _run([sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", WORKFLOW / "Snakefile",
          "--directory", d, "--configfile", tmp_path / "test.yaml"], cwd=tmp_path)
    out = d / "results"
    assert (d / "genome.fa.fai").read_bytes() == (unsharded / "genome.fa.fai").read_bytes()
    assert_sharded([out / "shards" / f"scores.{k}-of-{SHARDS}.h5" for k in range(1, SHARDS + 1)])
    assert_same_h5(out / "scores.h5", unsharded / "scores.h5")
    assert (out / "scores.tsv").read_bytes() == (unsharded / "scores.tsv").read_bytes()
    assert not list(out.rglob("*.parts")) and not list(out.rglob("*.partial"))
    # done: a second invocation has nothing to do
    r = _run([sys.executable, "-m", "snakemake", "--cores", "2", "--snakefile", WORKFLOW / "Snakefile",
              "--directory", d, "--configfile", tmp_path / "test.yaml", "--dry-run"], cwd=tmp_path)
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_slurm_array_script_equals_unsharded_run(tmp_path, unsharded):
    """varfx_array.sbatch run by hand as array tasks 1..3 (SLURM_ARRAY_TASK_ID set as SLURM would)."""
    d = _copy_inputs(tmp_path / "run")
    env = {**_env(), "SHARDS": str(SHARDS), "VARFX": str(VARFX), "VCF": "variants.vcf", "FASTA": "genome.fa",
           "WEIGHTS": "model.pt", "BLOCK_RECORDS": str(BLOCK), "EXTRA": "--device cpu", "SLURM_CPUS_PER_TASK": "1"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    script = WORKFLOW / "varfx_array.sbatch"
    r = subprocess.run(["bash", str(script)], cwd=d, env={**env, "SLURM_ARRAY_TASK_ID": "1"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "genome.fa.fai is missing" in r.stderr  # the FASTA must be indexed first
    shutil.copy(unsharded / "genome.fa.fai", d / "genome.fa.fai")
    os.utime(d / "genome.fa.fai")  # newer than the FASTA
    r = subprocess.run(["bash", str(script)], cwd=d, env={**env, "SLURM_ARRAY_TASK_ID": "4"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "outside 1..3" in r.stderr
    for k in range(1, SHARDS + 1):
        _run(["bash", script], cwd=d, env={**env, "SLURM_ARRAY_TASK_ID": str(k)})
    shards = d / "scores" / "shards"
    assert_sharded([shards / f"scores.{k}-of-{SHARDS}.h5" for k in range(1, SHARDS + 1)])
    _run([VARFX, "merge", *sorted(shards.glob("scores.*.h5")), "--out", d / "scores.h5"], cwd=d)
    _run([VARFX, "merge", *sorted(shards.glob("scores.*.tsv")), "--out", d / "scores.tsv"], cwd=d)
    assert_same_h5(d / "scores.h5", unsharded / "scores.h5")
    assert (d / "scores.tsv").read_bytes() == (unsharded / "scores.tsv").read_bytes()
