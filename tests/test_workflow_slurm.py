"""examples/workflow/ on a real SLURM cluster: the Snakemake workflow through the SLURM executor plugin with
the unchanged profile in profiles/slurm, and the job-array script under a real `sbatch` (with one array task
requeued while it runs).  Both merge into files equal to one unsharded `varfx score` run, and SLURM's own
accounting shows that each job was given what the profile or the script asked for.

These tests need a cluster with the profile's partitions (`cpu`, `gpu`, a GPU as gres) and account
(`my_account`); `tests/slurm/cluster.sh start` makes one on this machine (root, Debian).  Without one they skip.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from test_workflow import (BLOCK, SHARDS, VARFX, WORKFLOW, _copy_inputs, _env, _run, assert_same_h5,
                           assert_sharded, unsharded)  # noqa: F401  (unsharded is a fixture)

PROFILE = WORKFLOW / "profiles" / "slurm"
ENSEMBLE = "--rc --shifts -2,-1,0,1,2"


def _cluster_problem() -> str | None:
    """Why the tests cannot run here (None when a suitable cluster answers)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no SLURM commands on PATH"
    try:
        parts = subprocess.run(["sinfo", "-h", "-o", "%R %T"], capture_output=True, text=True, timeout=20)
        accounts = subprocess.run(["sacctmgr", "-n", "-P", "-s", "list", "user", getpass.getuser(),
                                   "format=account"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"SLURM does not answer ({e})"
    up = {p for p, state in (line.split() for line in parts.stdout.splitlines() if line.strip())
          if state in ("idle", "mixed", "allocated")}
    if parts.returncode or not {"cpu", "gpu"} <= up:
        return "no SLURM partitions 'cpu' and 'gpu' with a node up"
    if "my_account" not in accounts.stdout.split():
        return f"SLURM user {getpass.getuser()} is not in account my_account"
    return None


PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROBLEM is not None,
                                 reason=f"{PROBLEM}: start a test cluster with `tests/slurm/cluster.sh start`")]


def _sacct(job_ids) -> dict[str, dict[str, str]]:
    """SLURM's accounting record of each job (allocation-level lines only)."""
    fields = "JobID,JobName,Partition,Account,State,ExitCode,AllocTRES,Timelimit"
    r = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", fields],
                       capture_output=True, text=True, check=True)
    rows = [dict(zip(fields.split(","), line.split("|"))) for line in r.stdout.splitlines() if line]
    return {row["JobID"]: row for row in rows}


def _tres(row) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in row["AllocTRES"].split(",") if kv)


def _wait(job_ids, timeout=600) -> dict[str, dict[str, str]]:
    """Wait until SLURM has finished every job (arrays: every task) and return their accounting."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = _sacct(job_ids)
        if rows and all(r["State"] not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING")
                        for r in rows.values()):
            return rows
        time.sleep(2)
    pytest.fail(f"SLURM jobs {job_ids} did not finish within {timeout} s: {_sacct(job_ids)}")


def test_snakemake_slurm_executor_with_the_profile(tmp_path, unsharded):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("needs snakemake-executor-plugin-slurm (a test extra)")
    import yaml  # Snakemake's own dependency

    d = _copy_inputs(tmp_path / "run")
    config = {"varfx": str(VARFX), "vcf": "variants.vcf", "fasta": "genome.fa", "weights": ["model.pt"],
              "shards": SHARDS, "block_records": BLOCK, "tsv": True, "outdir": "results", "name": "scores"}
    (tmp_path / "test.yaml").write_text(json.dumps(config))
    r = _run([sys.executable, "-m", "snakemake", "--snakefile", WORKFLOW / "Snakefile", "--profile", PROFILE,
              "--directory", d, "--configfile", tmp_path / "test.yaml"], cwd=tmp_path, timeout=900)
    log = r.stdout + r.stderr
    out = d / "results"
    assert_sharded([out / "shards" / f"scores.{k}-of-{SHARDS}.h5" for k in range(1, SHARDS + 1)])
    assert_same_h5(out / "scores.h5", unsharded / "scores.h5")
    assert (out / "scores.tsv").read_bytes() == (unsharded / "scores.tsv").read_bytes()

    # every job went through sbatch, and got what the profile asks for
    rule_of = {}
    for m in re.finditer(r"rule (\w+):.*?jobid: (\d+)", log, re.S):
        rule_of[m.group(2)] = m.group(1)
    submitted = {m.group(2): rule_of[m.group(1)]
                 for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)}
    assert sorted(submitted.values()) == ["merge_h5", "merge_table"] + ["score_shard"] * SHARDS
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    rows = _sacct(submitted)
    for job, rule in submitted.items():
        row, tres = rows[job], _tres(rows[job])
        want = {**profile["default-resources"], **profile["set-resources"][rule]}
        assert row["State"] == "COMPLETED" and row["ExitCode"] == "0:0", row
        assert row["Account"] == want["slurm_account"] and row["Partition"] == want["slurm_partition"], row
        assert tres["mem"] == f"{want['mem_mb']}M", row
        assert int(row["Timelimit"].split(":")[0]) * 60 + int(row["Timelimit"].split(":")[1]) == want["runtime"], row
        if rule == "score_shard":
            assert tres["gres/gpu"] == str(want["gpu"]) and tres["cpu"] == str(profile["set-threads"][rule]), row
        else:
            assert "gres/gpu" not in tres and tres["cpu"] == "1", row


def test_job_array_under_sbatch_with_a_requeue(tmp_path):
    """The commands of docs/hpc.md ("SLURM without Snakemake"): an array of SHARDS tasks, then the merge
    with an afterok dependency.  Task 1 is requeued (as on a preemption) once it has finished some of its
    blocks: SLURM kills it and starts it again, and it resumes (--resume) from the blocks it kept.  Blocks
    of one record and a 10-member ensemble (--rc, 5 shifts) make each task long enough (95 blocks, a few
    seconds) for the requeue to land mid-run."""
    d = _copy_inputs(tmp_path / "run")
    want = _copy_inputs(tmp_path / "unsharded")
    _run([VARFX, "score", "variants.vcf", "--fasta", "genome.fa", "--backend", "torchscript", "--weights",
          "model.pt", "--block-records", 1, *ENSEMBLE.split(), "--out", "scores.h5", "--tsv", "scores.tsv",
          "-q"], cwd=want)
    shutil.copy(want / "genome.fa.fai", d / "genome.fa.fai")
    (d / "genome.fa.fai").touch()  # newer than the FASTA
    (d / "logs").mkdir()
    env = {**_env(), "SHARDS": str(SHARDS), "VARFX": str(VARFX), "VCF": "variants.vcf", "FASTA": "genome.fa",
           "WEIGHTS": "model.pt", "BLOCK_RECORDS": "1", "EXTRA": f"--device auto {ENSEMBLE}"}
    submit = subprocess.run(["sbatch", "--parsable", f"--array=1-{SHARDS}", "--account=my_account",
                             "--partition=gpu", str(WORKFLOW / "varfx_array.sbatch")],
                            cwd=d, env=env, capture_output=True, text=True, check=True)
    array = submit.stdout.strip().split(";")[0]
    merge_cmd = (f"{VARFX} merge scores/shards/scores.*-of-{SHARDS}.h5 --out scores/scores.h5 && "
                 f"{VARFX} merge scores/shards/scores.*-of-{SHARDS}.tsv --out scores/scores.tsv")
    merge = subprocess.run(["sbatch", "--parsable", f"--dependency=afterok:{array}", "--account=my_account",
                            "--mem=4G", "--time=2:00:00", "--output=logs/merge_%j.log", "--wrap", merge_cmd],
                           cwd=d, env=env, capture_output=True, text=True, check=True).stdout.strip()

    # requeue task 1 once it has committed a block
    task1, parts = f"{array}_1", d / "scores" / "shards" / f"scores.1-of-{SHARDS}.h5.parts"
    end = time.monotonic() + 300
    while not list(parts.glob("b*.npz")):
        if time.monotonic() > end:
            pytest.fail(f"array task {task1} wrote no block within 300 s: {_sacct([array])}")
        time.sleep(0.05)
    subprocess.run(["scontrol", "requeue", task1], check=True, capture_output=True)

    rows = _wait([array, merge])
    assert all(r["State"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in rows.values()), rows
    tasks = {k: v for k, v in rows.items() if k.startswith(f"{array}_")}
    assert sorted(tasks) == [f"{array}_{k}" for k in range(1, SHARDS + 1)]
    for row in tasks.values():  # the script's #SBATCH lines
        tres = _tres(row)
        assert tres["gres/gpu"] == "1" and tres["cpu"] == "8" and tres["mem"] == "32G", row
        assert row["Timelimit"] == "12:00:00" and row["Account"] == "my_account", row
    runs = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-j", task1, "-o", "State"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert runs == ["REQUEUED", "COMPLETED"], runs  # SLURM's record of the two runs of task 1
    log1 = (d / "logs" / f"varfx_{array}_1.log").read_text()  # --open-mode=append: both runs are in it
    assert "restart 0" in log1 and "DUE TO JOB REQUEUE" in log1 and "restart 1" in log1, log1
    kept = re.search(r"resumed: (\d+) of (\d+) blocks kept", log1)
    assert kept and 1 <= int(kept.group(1)) < int(kept.group(2)) == 95, log1

    shards = d / "scores" / "shards"
    assert not parts.exists()
    assert_same_h5(d / "scores" / "scores.h5", want / "scores.h5")
    assert (d / "scores" / "scores.tsv").read_bytes() == (want / "scores.tsv").read_bytes()
    for k in range(1, SHARDS + 1):
        assert (shards / f"scores.{k}-of-{SHARDS}.h5").is_file()
