"""examples/workflow/ on a real SLURM cluster: the Snakemake workflow through the SLURM executor plugin with
the unchanged profile in profiles/slurm (one shard killed by SLURM at its time limit, resubmitted by the
executor and resumed), and the job-array script under a real `sbatch` (one task requeued while it runs).
Both merge into files equal to one unsharded `varfx score` run, and SLURM's own accounting shows that each
job was given what the profile or the script asked for.

These tests need a cluster with the profile's partitions (`cpu`, `gpu`, a GPU as gres) and account
(`my_account`); `tests/slurm/cluster.sh start` makes one on this machine (root, Debian).  Without one they skip.

Both runs use blocks of one record and a 10-member ensemble (--rc and 5 shifts), so that a shard (95 blocks)
runs for a few seconds: long enough to be interrupted after it has committed some blocks and before its end.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_workflow import SHARDS, VARFX, WORKFLOW, _copy_inputs, _env, _run, assert_same_h5, assert_sharded

PROFILE = WORKFLOW / "profiles" / "slurm"
ENSEMBLE = "--rc --shifts -2,-1,0,1,2"
BLOCK = 1
SHARD_BLOCKS = 95  # 285 records in blocks of 1: 95 per shard


def _slurm_env() -> dict:
    """The environment of the submitting process, which sbatch passes on to the jobs.  The profile and the
    array script give each shard 8 threads, here on a 2-core machine: passive OpenMP waiting keeps two
    such shards running side by side from slowing each other down ~20-fold (docs/performance.md)."""
    return {**_env(), "OMP_WAIT_POLICY": "PASSIVE"}


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One unsharded run with the same settings as the SLURM runs."""
    d = _copy_inputs(tmp_path_factory.mktemp("reference"))
    _run([VARFX, "score", "variants.vcf", "--fasta", "genome.fa", "--backend", "torchscript", "--weights",
          "model.pt", "--block-records", BLOCK, "--device", "cpu", *ENSEMBLE.split(), "--out", "scores.h5",
          "--tsv", "scores.tsv", "-q"], cwd=d)
    return d


def _sacct(job_ids, duplicates=False) -> list[dict[str, str]]:
    """SLURM's accounting records of the jobs (allocation lines; with ``duplicates``, every run of a
    requeued job)."""
    fields = "JobID,JobName,Partition,Account,State,ExitCode,AllocTRES,Timelimit"
    cmd = ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", fields] + (["--duplicates"] * duplicates)
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [dict(zip(fields.split(","), line.split("|"))) for line in r.stdout.splitlines() if line]


def _tres(row) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in row["AllocTRES"].split(",") if kv)


def _minutes(limit: str) -> int:
    h, m, _ = (int(v) for v in limit.split(":"))
    return 60 * h + m


def _wait(job_ids, timeout=600) -> dict[str, dict[str, str]]:
    """Wait until SLURM has finished every job (arrays: every task) and return their accounting."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = {r["JobID"]: r for r in _sacct(job_ids)}
        if rows and all(r["State"] not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING")
                        for r in rows.values()):
            return rows
        time.sleep(2)
    pytest.fail(f"SLURM jobs {job_ids} did not finish within {timeout} s: {_sacct(job_ids)}")


def _first_block(parts, what: str, alive=lambda: True, timeout=300) -> None:
    """Wait until ``parts`` (a run's NAME.parts/ folder) holds a committed block."""
    end = time.monotonic() + timeout
    while not list(parts.glob("b*.npz")):
        if time.monotonic() > end or not alive():
            pytest.fail(f"{what} committed no block within {timeout} s")
        time.sleep(0.05)


def _kept(log: str) -> int:
    """Blocks a resumed run kept, from its summary."""
    m = re.search(r"resumed: (\d+) of (\d+) blocks kept from the interrupted run", log)
    assert m and int(m.group(2)) == SHARD_BLOCKS, log
    return int(m.group(1))


def _assert_same_as(out, want) -> None:
    assert_sharded([out / "shards" / f"scores.{k}-of-{SHARDS}.h5" for k in range(1, SHARDS + 1)], block=BLOCK)
    assert_same_h5(out / "scores.h5", want / "scores.h5")
    assert (out / "scores.tsv").read_bytes() == (want / "scores.tsv").read_bytes()
    assert not list(out.rglob("*.parts")) and not list(out.rglob("*.partial"))


def test_snakemake_slurm_executor_with_the_profile_and_a_time_limit_kill(tmp_path, reference):
    """The workflow with the profile as shipped.  Shard 1 is frozen (SIGSTOP) once it has committed a
    block and its time limit is cut to one minute: SLURM kills it at the limit (TIMEOUT), the executor
    submits it again (the profile's `retries`), and the new job resumes from the blocks kept."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("needs snakemake-executor-plugin-slurm (a test extra)")
    import yaml  # Snakemake's own dependency

    d = _copy_inputs(tmp_path / "run")
    config = {"varfx": str(VARFX), "vcf": "variants.vcf", "fasta": "genome.fa", "weights": ["model.pt"],
              "shards": SHARDS, "block_records": BLOCK, "extra": ENSEMBLE, "tsv": True, "outdir": "results",
              "name": "scores"}
    (tmp_path / "test.yaml").write_text(json.dumps(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", WORKFLOW / "Snakefile", "--profile", PROFILE,
           "--directory", d, "--configfile", tmp_path / "test.yaml"]
    with open(tmp_path / "snakemake.log", "w") as log_fh:
        sm = subprocess.Popen([str(c) for c in cmd], cwd=tmp_path, env=_slurm_env(), stdout=log_fh,
                              stderr=subprocess.STDOUT)
        try:
            # freeze shard 1 mid-run, then let SLURM's time limit kill it
            _first_block(d / "results" / "shards" / f"scores.1-of-{SHARDS}.h5.parts", "shard 1",
                         alive=lambda: sm.poll() is None)
            pids = subprocess.run(["pgrep", "-f", "--", f"--shard 1/{SHARDS} --resume"], capture_output=True,
                                  text=True).stdout.split()
            assert pids, "no process of shard 1"
            for pid in pids:
                os.kill(int(pid), signal.SIGSTOP)
            env = dict(kv.split("=", 1) for kv in
                       open(f"/proc/{pids[-1]}/environ").read().split("\0") if "=" in kv)
            frozen = env["SLURM_JOB_ID"]
            subprocess.run(["scontrol", "update", f"JobId={frozen}", "TimeLimit=1"], check=True,
                           capture_output=True)
            assert sm.wait(timeout=900) == 0, (tmp_path / "snakemake.log").read_text()[-4000:]
        finally:
            if sm.poll() is None:
                sm.kill()
    log = (tmp_path / "snakemake.log").read_text()
    out = d / "results"
    _assert_same_as(out, reference)
    assert _kept((out / "logs" / f"score_shard.1-of-{SHARDS}.log").read_text()) >= 1

    # every job went through sbatch, the frozen one was killed at its limit and submitted again, and each
    # got what the profile asks for
    rule_of = {m.group(2): m.group(1) for m in re.finditer(r"rule (\w+):.*?jobid: (\d+)", log, re.S)}
    submitted = {m.group(2): rule_of[m.group(1)]
                 for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)}
    assert frozen in submitted
    assert sorted(submitted.values()) == ["merge_h5", "merge_table"] + ["score_shard"] * (SHARDS + 1)
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    rows = {r["JobID"]: r for r in _sacct(submitted)}
    for job, rule in submitted.items():
        row, tres = rows[job], _tres(rows[job])
        want = {**profile["default-resources"], **profile["set-resources"][rule]}
        if job == frozen:
            assert row["State"] == "TIMEOUT" and _minutes(row["Timelimit"]) == 1, row
        else:
            assert row["State"] == "COMPLETED" and row["ExitCode"] == "0:0", row
            assert _minutes(row["Timelimit"]) == want["runtime"], row
        assert row["Account"] == want["slurm_account"] and row["Partition"] == want["slurm_partition"], row
        assert tres["mem"] == f"{want['mem_mb']}M", row
        if rule == "score_shard":
            assert tres["gres/gpu"] == str(want["gpu"]) and tres["cpu"] == str(profile["set-threads"][rule]), row
        else:
            assert "gres/gpu" not in tres and tres["cpu"] == "1", row


def test_job_array_under_sbatch_with_a_requeue(tmp_path, reference):
    """The commands of docs/hpc.md ("SLURM without Snakemake"): an array of SHARDS tasks, then the merge
    with an afterok dependency.  Task 1 is requeued (as on a preemption) once it has committed a block:
    SLURM kills it and starts it again, and it resumes (--resume) from the blocks it kept."""
    d = _copy_inputs(tmp_path / "run")
    shutil.copy(reference / "genome.fa.fai", d / "genome.fa.fai")
    (d / "genome.fa.fai").touch()  # newer than the FASTA
    (d / "logs").mkdir()
    env = {**_slurm_env(), "SHARDS": str(SHARDS), "VARFX": str(VARFX), "VCF": "variants.vcf", "FASTA": "genome.fa",
           "WEIGHTS": "model.pt", "BLOCK_RECORDS": str(BLOCK), "EXTRA": f"--device auto {ENSEMBLE}"}
    submit = subprocess.run(["sbatch", "--parsable", f"--array=1-{SHARDS}", "--account=my_account",
                             "--partition=gpu", str(WORKFLOW / "varfx_array.sbatch")],
                            cwd=d, env=env, capture_output=True, text=True, check=True)
    array = submit.stdout.strip().split(";")[0]
    merge_cmd = (f"{VARFX} merge scores/shards/scores.*-of-{SHARDS}.h5 --out scores/scores.h5 && "
                 f"{VARFX} merge scores/shards/scores.*-of-{SHARDS}.tsv --out scores/scores.tsv")
    merge = subprocess.run(["sbatch", "--parsable", f"--dependency=afterok:{array}", "--account=my_account",
                            "--mem=4G", "--time=2:00:00", "--output=logs/merge_%j.log", "--wrap", merge_cmd],
                           cwd=d, env=env, capture_output=True, text=True, check=True).stdout.strip()

    task1 = f"{array}_1"
    _first_block(d / "scores" / "shards" / f"scores.1-of-{SHARDS}.h5.parts", f"array task {task1}")
    subprocess.run(["scontrol", "requeue", task1], check=True, capture_output=True)

    rows = _wait([array, merge])
    assert all(r["State"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in rows.values()), rows
    tasks = {k: v for k, v in rows.items() if k.startswith(f"{array}_")}
    assert sorted(tasks) == [f"{array}_{k}" for k in range(1, SHARDS + 1)]
    for row in tasks.values():  # the script's #SBATCH lines
        tres = _tres(row)
        assert tres["gres/gpu"] == "1" and tres["cpu"] == "8" and tres["mem"] == "32G", row
        assert row["Timelimit"] == "12:00:00" and row["Account"] == "my_account", row
    runs = [r["State"] for r in _sacct([task1], duplicates=True)]
    assert runs == ["REQUEUED", "COMPLETED"], runs  # SLURM's record of the two runs of task 1
    log1 = (d / "logs" / f"varfx_{array}_1.log").read_text()  # --open-mode=append: both runs are in it
    assert "restart 0" in log1 and "DUE TO JOB REQUEUE" in log1 and "restart 1" in log1, log1
    assert _kept(log1) >= 1
    _assert_same_as(d / "scores", reference)
