"""Blocks of records: `varfx score --shard K/N`, `--resume`, `--block-records` and `varfx merge`
(varfx/blocks.py).

The promise checked here is the one in blocks.py's docstring: a block is scored the same way in
whatever run, shard or resume it belongs to, so merged shards and resumed runs equal one
uninterrupted, unsharded run with the same block size bit for bit — every HDF5 dataset (scores,
identifiers, ``skipped/…``, ``sample_counts/…``), their attributes, the file's attributes other than
the timing, and every byte of the text outputs.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cohort import random_genotypes, random_records, write_cohort
from conftest import ok, one_line_error, random_seq, run_cli, write_fasta, write_vcf
from toy_models import ToyConv, save_module, save_toy

B = 8  # records per block in most tests (--block-records)
STATS = "SAD,logSED,JSD"  # track statistics and a profile statistic (one value per variant)
KINDS = {"out": ".h5", "tsv": ".tsv", "tsv-long": ".long.tsv", "skipped-tsv": ".skipped.tsv"}
#: attributes allowed to differ between equal results: timing, and where a merged file came from
TIMING = {"seconds", "merged_from"}


def other(b: str) -> str:
    return "A" if b.upper() != "A" else "C"




# -- comparing outputs -------------------------------------------------------------------------------------------


def _attrs(obj) -> dict:
    out = {}
    for k, v in obj.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, str) and v[:1] in ("{", "["):
            v = json.loads(v)  # dicts compare whatever the order their keys were added in
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def h5_contents(path: Path) -> tuple[dict, dict, dict]:
    """(datasets name -> array, dataset attributes name -> dict, file attributes)."""
    data, dattrs = {}, {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data[name] = obj[()]
            dattrs[name] = _attrs(obj)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        return data, dattrs, _attrs(f)


def assert_same_array(x: np.ndarray, y: np.ndarray, what: str) -> None:
    assert x.dtype == y.dtype and x.shape == y.shape, (what, x.dtype, y.dtype, x.shape, y.shape)
    assert np.array_equal(x, y), what
    if x.dtype.kind in "fiub":  # bit for bit: also -0.0 vs 0.0 and NaN payloads
        assert x.tobytes() == y.tobytes(), what


def assert_h5_identical(got: Path, want: Path, ignore_attrs=TIMING) -> dict:
    """Every dataset equal bit for bit, dataset attributes equal, file attributes equal but timing."""
    gd, ga, gf = h5_contents(got)
    wd, wa, wf = h5_contents(want)
    assert sorted(gd) == sorted(wd)
    for name in wd:
        assert_same_array(gd[name], wd[name], name)
        assert ga[name] == wa[name], f"attributes of {name}: {ga[name]} != {wa[name]}"
    gk, wk = set(gf) - set(ignore_attrs), set(wf) - set(ignore_attrs)
    assert gk == wk, (gk ^ wk)
    diff = {k: (gf[k], wf[k]) for k in wk if gf[k] != wf[k]}
    assert not diff, diff
    assert gf["complete"] is True or gf["complete"] == 1
    return wd


def assert_outputs_identical(got: dict, want: dict) -> None:
    for kind, path in want.items():
        assert got[kind].is_file(), kind
        if kind == "out":
            assert_h5_identical(got[kind], path)
        else:
            assert got[kind].read_bytes() == path.read_bytes(), kind


def outputs(folder: Path, stem: str, kinds=KINDS) -> dict[str, Path]:
    return {k: folder / f"{stem}{KINDS[k]}" for k in kinds}


def out_args(paths: dict[str, Path]) -> list:
    return [x for k, p in paths.items() for x in (f"--{k}", p)]


def leftovers(folder: Path, paths: dict[str, Path]) -> list[str]:
    """What a run left beside its outputs: NAME.parts/ and NAME.partial files."""
    names = {p.name for p in paths.values()}
    return sorted(p.name for p in folder.iterdir()
                  if any(p.name.startswith(n) and p.name != n for n in names))


# -- the input ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A random two-contig genome; a VCF of 169 records (SNVs, 1-5 bp indels, multi-allelic sites, and
    ALTs skipped for the common reasons, including a run of 19 records on a contig missing from the
    FASTA, so that whole blocks have nothing to score); two toy models."""
    t = tmp_path_factory.mktemp("blocks")
    rng = random.Random(1357)
    seqs = {"chr1": random_seq(6000, rng), "chr2": random_seq(3000, rng)}
    fasta = write_fasta(t / "genome.fa", seqs)
    rows = []
    for i, (chrom, pos, ref, alts) in enumerate(random_records(seqs, 150, rng, indel_rate=0.2, margin=40)):
        alt = ",".join(alts)
        if i % 23 == 5:
            alt = "<DEL>"
        elif i % 23 == 11:
            alt += ",*"
        elif i % 23 == 17 and len(ref) == 1:
            ref = other(ref) if other(ref) not in alts else "G" if "G" not in alts + [ref] else "T"
        elif i % 29 == 3:
            alt = "."
        rows.append((chrom, pos, f"v{i}", ref, alt))
        if i == 60:  # 19 records on a contig the FASTA lacks: two whole blocks of 8 with nothing to score
            rows += [("chr9", 10 + j, f"u{j}", "A", "C") for j in range(2 * B + 3)]
    contigs = {"chr1": 6000, "chr2": 3000, "chr9": 100}
    vcf = write_vcf(t / "variants.vcf", rows, contigs=contigs)
    weights, _ = save_toy(t, seed=3)
    other_dir = t / "other"
    other_dir.mkdir()
    weights2, _ = save_toy(other_dir, seed=4)
    return {"t": t, "fasta": fasta, "vcf": vcf, "rows": rows, "contigs": contigs, "weights": weights,
            "weights2": weights2, "cache": {}}


def base(w, vcf=None, block=B, weights=None, stats=STATS) -> list:
    return ["score", vcf or w["vcf"], "--fasta", w["fasta"], "--backend", "torchscript",
            "--weights", weights or w["weights"], "--block-records", block, "--stat", stats, "--float32", "-q"]


def reference(w) -> dict[str, Path]:
    """One uninterrupted, unsharded run with every output."""
    if "ref" not in w["cache"]:
        d = w["t"] / "ref"
        d.mkdir()
        paths = outputs(d, "all")
        r = ok(run_cli(base(w) + out_args(paths)))
        assert "records read: 169" in r.output
        w["cache"]["ref"] = paths
    return w["cache"]["ref"]


def shard_runs(w, n: int) -> list[dict[str, Path]]:
    """``--shard k/n`` for k = 1 … n, every output, in a folder of their own."""
    key = ("shards", n)
    if key not in w["cache"]:
        d = w["t"] / f"n{n}"
        d.mkdir()
        runs = []
        for k in range(1, n + 1):
            paths = outputs(d, f"s{k}")
            ok(run_cli(base(w) + out_args(paths) + ["--shard", f"{k}/{n}"]))
            runs.append(paths)
        w["cache"][key] = runs
    return w["cache"][key]


def shard_line(path: Path) -> dict:
    """The ``#varfx-shard`` line of a shard table (one of its first two lines, beside the header)."""
    lines = path.read_text().splitlines()[:2]
    found = [x for x in lines if x.startswith("#varfx-shard\t")]
    assert len(found) == 1, lines
    return json.loads(found[0].split("\t", 1)[1])


def merge(shards: list, out: Path):
    return run_cli(["merge", *shards, "--out", out])


def assert_merge_equals(shards: list[dict], want: dict, folder: Path, kinds=tuple(KINDS)) -> None:
    """`varfx merge` the shards' outputs of each kind (in the order given) into ``folder``; each merged
    file must equal ``want``'s (HDF5 datasets and attributes, text byte for byte)."""
    merged = outputs(folder, "merged", kinds)
    for kind, got in merged.items():
        ok(merge([s[kind] for s in shards], got))
    assert_outputs_identical(merged, {k: want[k] for k in merged})


# -- 1. shards merge into the unsharded run ----------------------------------------------------------------------


def test_reference_run_is_plausible(world):
    """The reference itself: every record accounted for, whole skipped blocks, rows in input order."""
    ref = reference(world)
    d, _, a = h5_contents(ref["out"])
    n_rec = len(world["rows"])
    assert a["records_read"] == n_rec and a["block_records"] == B and a["shard"] == ""
    present = np.union1d(d["record"], d["skipped/record"])
    assert np.array_equal(present, np.arange(n_rec))
    assert np.all(np.diff(d["record"]) >= 0) and np.all(np.diff(d["skipped/record"]) >= 0)
    assert d["SAD"].shape == (a["variants_scored"], 3) and d["JSD"].shape == (a["variants_scored"],)
    assert a["variants_scored"] + a["variants_skipped"] == a["variants"]
    reasons = {x.decode() for x in d["skipped/reason"]}
    assert {"unknown_contig", "symbolic_allele", "star_allele", "ref_mismatch", "missing_alt"} <= reasons
    blocks_scored = set((d["record"] // B).tolist())
    assert len(blocks_scored) < -(-n_rec // B)  # some blocks have nothing to score
    assert not any(p.name.endswith((".parts", ".partial")) for p in ref["out"].parent.iterdir())


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_merged_shards_equal_the_unsharded_run(world, n):
    ref = reference(world)
    runs = shard_runs(world, n)
    n_rec = len(world["rows"])
    n_blocks = -(-n_rec // B)
    for k, paths in enumerate(runs, 1):
        d, _, a = h5_contents(paths["out"])
        assert a["shard"] == f"{k}/{n}" and a["complete"] and a["records_read"] == n_rec
        mine = np.union1d(d["record"], d["skipped/record"])
        want = np.arange(n_rec)
        assert np.array_equal(mine, want[(want // B) % n == k - 1])  # exactly the records of its blocks
        info = shard_line(paths["tsv"])
        assert info["shard"] == f"{k}/{n}" and info["n_blocks"] == n_blocks
        assert not (paths["out"].parent / (paths["out"].name + ".parts")).exists()
    rng = random.Random(n)
    d = world["t"] / f"n{n}"
    for kind in KINDS:
        order = [r[kind] for r in runs]
        rng.shuffle(order)  # shards in any order
        got = d / f"merged{KINDS[kind]}"
        r = ok(merge(order, got))
        assert f"merged {n} shards" in r.output
        if kind == "out":
            data = assert_h5_identical(got, ref["out"])
            assert data["SAD"].shape[0] > 50
            with h5py.File(got) as f:
                assert json.loads(f.attrs["merged_from"]) == [str(x[kind]) for x in runs]
        else:
            assert got.read_bytes() == ref[kind].read_bytes(), kind
        assert not (d / (got.name + ".partial")).exists()


# -- 2. kill -9 and --resume ----------------------------------------------------------------------------------------

#: run in a subprocess: `varfx` that kills itself with SIGKILL just before or just after the HDF5 output
#: (VARFX_TEST_FINAL) gets its final name, i.e. during the final assembly, whatever writes it
KILLER = r'''
import os, signal, sys
mode, final = os.environ.get("VARFX_TEST_KILL", ""), os.environ.get("VARFX_TEST_FINAL", "")
real_replace = os.replace
def replace(src, dst, *a, **k):
    if mode and os.path.abspath(str(dst)) == final:
        if mode == "before-rename":  # NAME.partial written, not renamed
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)  # after-rename: the other outputs not yet renamed
    return real_replace(src, dst, *a, **k)
os.replace = replace
from varfx.cli import main
sys.argv[0] = "varfx"
main()
'''

KB = 4  # records per block in the kill tests: 43 blocks of a few tens of ms each (SlowConv)


class SlowConv(torch.nn.Module):
    """The toy model's conv, plus busy work (a few 640 × 640 matmuls per forward pass, whatever the batch)
    whose result is added times 0: the outputs are exact, a block takes tens of ms, and a run lasts long
    enough to be killed at a chosen moment."""

    def __init__(self, work: int = 640, rounds: int = 3, seed: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv1d(4, 3, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g) * 0.1)
        self.register_buffer("busy", torch.randn(work, work, generator=g) / work ** 0.5)
        self.rounds = rounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.softplus(self.conv(x.transpose(1, 2)))[:, :, 16:48]
        y = F.avg_pool1d(y, 4).transpose(1, 2)
        h = self.busy
        for _ in range(self.rounds):
            h = torch.tanh(h @ self.busy)
        return y + 0.0 * h.mean()


@pytest.fixture(scope="module")
def kill_world(world):
    w = world
    d = w["t"] / "kill"
    d.mkdir()
    (d / "killer.py").write_text(KILLER)
    weights = save_module(d, SlowConv(), "slow", length=64, bins=8, bin_size=4, offset=16, tracks=3,
                          strand_pairs=((0, 1),))
    ref = outputs(d, "ref")
    kw = {"d": d, "ref": ref, "n_blocks": -(-len(w["rows"]) // KB), "weights": weights}
    ok(run_cli(kbase(w, kw) + out_args(ref)))
    return kw


def kbase(w, kw) -> list:
    """The command line of the kill tests: small blocks, the slow model."""
    return base(w, block=KB, weights=kw["weights"])


def complete_blocks(parts: Path) -> set[int]:
    """The blocks of NAME.parts/ that are complete: a ``b<block>.ok`` marker or a ``b<block>.npz`` fragment
    (renamed into place when finished)."""
    if not parts.is_dir():
        return set()
    return {int(p.name[1:].split(".")[0]) for p in parts.iterdir() if p.name.endswith((".ok", ".npz"))}


def spawn(args, env_mode: str = "", script: Path | None = None, final: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, VARFX_TEST_KILL=env_mode, VARFX_TEST_FINAL=str(Path(final).absolute()) if final else "")
    cmd = [sys.executable, str(script)] if script else [sys.executable, "-m", "varfx.cli"]
    return subprocess.Popen(cmd + [str(a) for a in args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_after(p: subprocess.Popen, parts: Path, blocks: int, delay: float, timeout: float = 120) -> int:
    """SIGKILL ``p`` ``delay`` s after ``blocks`` blocks are complete (``blocks`` < 0: as soon as the
    folder of fragments exists); return how many blocks were complete."""
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < timeout:
        if parts.is_dir() if blocks < 0 else len(complete_blocks(parts)) >= blocks:
            break
        time.sleep(0.002)
    time.sleep(delay)
    assert p.poll() is None, f"the run ended before it could be killed: {p.stderr.read().decode()[-2000:]}"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    return len(complete_blocks(parts))


def resume_in_process(w, args, monkeypatch) -> tuple[set[int], object]:
    """`--resume` in this process, recording which blocks it scored."""
    from varfx import run as run_mod
    begun = set()
    real = run_mod.BlockOutputs.begin

    def spy(self, block):
        begun.add(block)
        return real(self, block)

    with monkeypatch.context() as m:
        m.setattr(run_mod.BlockOutputs, "begin", spy)
        r = ok(run_cli(args + ["--resume"]))
    return begun, r


def kill_and_resume(w, kw, trial: int, monkeypatch):
    d, n_blocks = kw["d"], kw["n_blocks"]
    rng = random.Random(9000 + trial)
    target = rng.randrange(0, n_blocks * 3 // 4)  # complete blocks before the kill …
    delay = rng.uniform(0.0, 0.04)  # … and a random moment after (inside a block, a commit, a write)
    if trial < 0:  # as soon as NAME.parts/ appears
        target, delay = -1, 0.0
    sub = d / f"trial{trial}"
    sub.mkdir()
    paths = outputs(sub, "k")
    parts = sub / "k.h5.parts"
    args = kbase(w, kw) + out_args(paths)
    done = kill_after(spawn(args), parts, target, delay)
    # interrupted: no output at its final name, only the fragments (and maybe NAME.partial files)
    assert not any(p.exists() for p in paths.values())
    assert set(leftovers(sub, paths)) <= ({"k.h5.parts", "k.h5.parts.tmp"} |
                                          {p.name + ".partial" for p in paths.values()})
    assert done >= target
    committed = complete_blocks(parts)
    if parts.is_dir():  # never a folder without its manifest
        assert (parts / "manifest.json").is_file()
    assert all(0 <= b < n_blocks for b in committed)
    # starting again without --resume is refused, and the fragments stay
    if parts.is_dir():
        msg = one_line_error(run_cli(args), 2)
        assert "--resume" in msg and "delete" in msg and str(parts) in msg
        assert complete_blocks(parts) == committed
    begun, r = resume_in_process(w, args, monkeypatch)
    # the resume scored exactly the blocks that were not complete
    assert begun == set(range(n_blocks)) - committed, (sorted(begun), sorted(committed))
    said = f"resumed: {len(committed):,} of {n_blocks:,} blocks kept from the interrupted run"
    assert (said in r.output) == bool(committed), r.output
    assert_outputs_identical(paths, kw["ref"])
    assert leftovers(sub, paths) == []


@pytest.mark.parametrize("trial", [0, -1])
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted(world, kill_world, trial, monkeypatch):
    kill_and_resume(world, kill_world, trial, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(1, 8))
def test_kill_9_more_random_moments(world, kill_world, trial, monkeypatch):
    kill_and_resume(world, kill_world, trial, monkeypatch)


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), None)
            if ppid == str(pid):
                kids.append(int(d.name))
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_kill_9_with_worker_processes_then_resume(world, kill_world, tmp_path, monkeypatch):
    """--workers 2: the run killed mid-way, resumed (with --workers 2 again), equals the uninterrupted run.
    The worker processes should not outlive the killed run (they block on a full queue otherwise)."""
    w, kw = world, kill_world
    _needs_workers()
    paths = outputs(tmp_path, "k")
    parts = tmp_path / "k.h5.parts"
    args = kbase(w, kw) + out_args(paths) + ["--workers", 2]
    p = spawn(args)
    t0 = time.monotonic()
    while p.poll() is None and len(complete_blocks(parts)) < 8 and time.monotonic() - t0 < 120:
        time.sleep(0.002)
    kids = _children(p.pid)
    done = kill_after(p, parts, 8, 0.01)
    assert done >= 8 and not any(x.exists() for x in paths.values())
    time.sleep(3)
    orphans = [k for k in kids if Path(f"/proc/{k}").exists()]
    for k in orphans:  # ours: do not leave them behind
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    committed = complete_blocks(parts)
    begun, _ = resume_in_process(w, args, monkeypatch)
    assert begun == set(range(kill_world["n_blocks"])) - committed
    assert_outputs_identical(paths, kill_world["ref"])
    if orphans:
        pytest.xfail(f"{len(orphans)} of the killed run's {len(kids)} child processes (window-building workers, "
                     "multiprocessing's resource tracker) were still alive 3 s after it was killed")


def test_kill_9_during_the_final_assembly_then_resume(world, kill_world, monkeypatch):
    """Killed with the HDF5 output written as NAME.partial but not renamed, then (resuming) again right
    after its rename, before the text outputs': each time a --resume finishes the same outputs."""
    w, kw, d = world, kill_world, kill_world["d"]
    sub = d / "assembly"
    sub.mkdir()
    paths = outputs(sub, "k")
    parts = sub / "k.h5.parts"
    args = kbase(w, kw) + out_args(paths)
    p = spawn(args, "before-rename", d / "killer.py", paths["out"])
    p.wait(timeout=120)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL, err
    assert not any(x.exists() for x in paths.values())
    assert (sub / "k.h5.partial").exists()  # it died inside the assembly
    n_ok = len(complete_blocks(parts))
    assert n_ok == kill_world["n_blocks"]  # every block was complete
    # a resume that dies after renaming the HDF5 output: that file is whole, the text outputs missing
    p = spawn(args + ["--resume"], "after-rename", d / "killer.py", paths["out"])
    p.wait(timeout=120)
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    assert len(complete_blocks(parts)) == n_ok
    assert not paths["tsv"].exists() and not paths["tsv-long"].exists()
    if paths["out"].exists():  # each output is renamed when written (not all together): complete on its own
        assert_h5_identical(paths["out"], kill_world["ref"]["out"])
    begun, r = resume_in_process(w, args, monkeypatch)
    assert begun == set()  # nothing left to score: only the assembly
    assert_outputs_identical(paths, kill_world["ref"])
    assert leftovers(sub, paths) == []


def test_a_second_run_is_kept_out_while_the_first_runs(world, kill_world):
    """A retry (--resume, or not) started while the first run still writes its fragments is refused with
    a one-line error; the first run finishes undisturbed."""
    w, kw, d = world, kill_world, kill_world["d"]
    sub = d / "concurrent"
    sub.mkdir()
    paths = outputs(sub, "k")
    parts = sub / "k.h5.parts"
    args = kbase(w, kw) + out_args(paths)
    p = spawn(args)
    try:
        t0 = time.monotonic()
        while p.poll() is None and len(complete_blocks(parts)) < 3 and time.monotonic() - t0 < 120:
            time.sleep(0.002)
        assert p.poll() is None, "the first run ended too soon"
        msg = one_line_error(run_cli(args), 2)
        assert str(parts) in msg
        r = run_cli(args + ["--resume"])
        still_running = p.poll() is None
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert p.returncode == 0
    assert still_running, "the first run ended before the --resume was tried"
    msg = one_line_error(r, 2)
    assert "another varfx run" in msg and str(parts) in msg, msg
    assert_outputs_identical(paths, kill_world["ref"])
    assert leftovers(sub, paths) == []


# -- 3. --resume refuses other settings ----------------------------------------------------------------------------


def interrupt_after(monkeypatch, n_commits: int):
    """Make the next run stop (KeyboardInterrupt, as Ctrl-C) right after its n-th block is complete."""
    from varfx import blocks as blocks_mod
    real = blocks_mod.Staging.commit
    count = [0]

    def commit(self, *args, **kwargs):
        real(self, *args, **kwargs)
        count[0] += 1
        if count[0] == n_commits:
            raise KeyboardInterrupt

    monkeypatch.setattr(blocks_mod.Staging, "commit", commit)


def test_resume_with_other_settings_is_refused_and_keeps_the_fragments(world, tmp_path, monkeypatch):
    """Stopped after 5 blocks; every --resume with other settings, inputs or outputs is refused (exit 2,
    one line naming what differs) and leaves the fragments alone; starting afresh is refused too; the
    same settings — the model named by another path, same contents — finish the run."""
    w = world
    ref = reference(w)
    model = tmp_path / "model"  # the interrupted run reads a copy of the model
    model.mkdir()
    for src in (w["weights"], w["weights"].with_suffix(".json")):
        shutil.copy(src, model / src.name)
    paths = outputs(tmp_path, "r")
    args = base(w, weights=model / w["weights"].name) + out_args(paths)
    parts = tmp_path / "r.h5.parts"
    with monkeypatch.context() as m:
        interrupt_after(m, 5)
        r = run_cli(args)
    assert r.exit_code == 130 and r.output.strip().splitlines()[-1].startswith("varfx: error: "), r.output
    assert not any(p.exists() for p in paths.values())
    assert len(complete_blocks(parts)) == 5

    def listing():  # the folder's files (a lock file, if the run keeps one, may come and go)
        return sorted(p.name for p in parts.iterdir() if p.name != "lock")

    snapshot = listing()

    def refused(a, *words):
        msg = one_line_error(run_cli(a + ["--resume"]), 2)
        assert "--resume" in msg and str(parts) in msg, msg
        for word in words:
            assert word in msg, (word, msg)
        assert listing() == snapshot  # nothing removed
        assert not any(p.exists() for p in paths.values())
        return msg

    # another statistic
    refused(base(w, stats="SAD", weights=model / w["weights"].name) + out_args(paths), "stats")
    # another model file
    refused(base(w, weights=w["weights2"]) + out_args(paths), "weights_sha256")
    # the same model path with other contents
    shutil.copy(w["weights2"], model / w["weights"].name)
    msg = refused(args, "weights_sha256")
    assert "stats" not in msg and "vcf" not in msg
    shutil.copy(w["weights"], model / w["weights"].name)
    # another block size, a shard, another set of outputs
    refused(args[:args.index("--block-records") + 1] + [16] + args[args.index("--block-records") + 2:],
            "block_records")
    refused(args + ["--shard", "1/2"], "shard")
    refused(base(w, weights=model / w["weights"].name) + out_args({k: v for k, v in paths.items()
                                                                    if k != "tsv-long"}), "outputs")
    # starting again without --resume
    msg = one_line_error(run_cli(args), 2)
    assert "--resume" in msg and "delete" in msg and str(parts) in msg
    assert listing() == snapshot
    # the same settings and inputs — the model by another path (the reference's), compared by its hash:
    # finished, equal to the uninterrupted run
    begun, _ = resume_in_process(w, base(w) + out_args(paths), monkeypatch)
    assert len(begun) == -(-len(w["rows"]) // B) - 5
    assert_outputs_identical(paths, ref)
    assert not parts.exists()


def test_unreadable_fragments_are_scored_again_on_resume(world, tmp_path, monkeypatch):
    """A node crash can leave a fragment empty or cut short under its final name (its data never reached the
    disk): --resume scores those blocks again, says so, and ends equal to the uninterrupted run."""
    w = world
    ref = reference(w)
    paths = outputs(tmp_path, "u")
    args = base(w) + out_args(paths)
    parts = tmp_path / "u.h5.parts"
    with monkeypatch.context() as m:
        interrupt_after(m, 4)
        assert run_cli(args).exit_code == 130
    frags = sorted(parts.glob("b*.npz"))
    assert len(frags) == 4
    frags[0].write_bytes(b"")
    frags[2].write_bytes(frags[2].read_bytes()[:100])
    begun, r = resume_in_process(w, args, monkeypatch)
    damaged = {int(frags[0].stem[1:]), int(frags[2].stem[1:])}
    assert damaged <= begun and not begun & {int(f.stem[1:]) for f in (frags[1], frags[3])}
    assert "resumed: 2 of" in r.output and "(2 unreadable, scored again)" in r.output, r.output
    assert_outputs_identical(paths, ref)


def test_resume_of_an_edited_vcf_is_refused(world, tmp_path, monkeypatch):
    w = world
    vcf = tmp_path / "v.vcf"
    shutil.copy(w["vcf"], vcf)
    paths = outputs(tmp_path, "e", kinds=("out",))
    args = base(w, vcf=vcf) + out_args(paths)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert run_cli(args).exit_code == 130
    text = vcf.read_text().replace("\tv10\t", "\tedited\t")
    assert text != vcf.read_text()
    vcf.write_text(text)
    msg = one_line_error(run_cli(args + ["--resume"]), 2)
    assert "vcf_sha256" in msg
    assert len(complete_blocks(tmp_path / "e.h5.parts")) == 2


def test_a_run_stopped_before_its_manifest_is_written_can_start_again(world, tmp_path, monkeypatch):
    """Killed between creating NAME.parts/ and writing its manifest: no folder that neither a new run nor
    --resume can use is left behind."""
    from varfx import blocks as blocks_mod
    w = world
    paths = outputs(tmp_path, "m", kinds=("out",))
    args = base(w) + out_args(paths)
    real = blocks_mod._write_atomic

    def write_atomic(path, text):
        if path.name == "manifest.json":
            raise KeyboardInterrupt
        return real(path, text)

    with monkeypatch.context() as m:
        m.setattr(blocks_mod, "_write_atomic", write_atomic)
        assert run_cli(args).exit_code == 130
    ok(run_cli(args))
    assert_h5_identical(paths["out"], reference(w)["out"])


# -- 4. varfx merge refuses what it cannot merge -------------------------------------------------------------------


def test_merge_refusals(world, tmp_path):
    w = world
    two, three = shard_runs(w, 2), shard_runs(w, 3)
    out_h5, out_tsv = tmp_path / "m.h5", tmp_path / "m.tsv"

    def refused(shards, *words, out=out_h5):
        before = out.read_bytes() if out.exists() else None
        msg = one_line_error(merge(shards, out))
        for word in words:
            assert word in msg, (word, msg)
        assert not Path(str(out) + ".partial").exists()
        if before is None:
            assert not out.exists()
        else:  # --out is one of the shards: left as it was
            assert out.read_bytes() == before
        return msg

    h = lambda runs: [r["out"] for r in runs]  # noqa: E731
    tx = lambda runs: [r["tsv"] for r in runs]  # noqa: E731
    # a missing shard
    refused([three[0]["out"], three[2]["out"]], "shard 2/3 is missing")
    refused([three[1]["out"]], "shards 1/3, 3/3 are missing")
    refused([three[0]["tsv"], three[2]["tsv"]], "shard 2/3 is missing", out=out_tsv)
    refused([tmp_path / "gone.h5", two[1]["out"]], "not found")
    # a shard twice (the same file, or a copy)
    refused(h(two) + [two[0]["out"]], "shard 1/2 is given twice")
    copy = tmp_path / "copy.h5"
    shutil.copy(two[1]["out"], copy)
    refused(h(two) + [copy], "shard 2/2 is given twice")
    refused(tx(two) + [two[1]["tsv"]], "shard 2/2 is given twice", out=out_tsv)
    # shards of different N
    refused([two[0]["out"], three[1]["out"], three[2]["out"]], "2/3", "1/2")
    refused([two[0]["tsv"], three[1]["tsv"], three[2]["tsv"]], "of one run", out=out_tsv)
    # shards of other settings: another statistic, another block size
    for extra, name in ((["--stat", "SAD"], "stat"), (["--block-records", "16"], "blk")):
        d = tmp_path / name
        d.mkdir()
        p = outputs(d, "s2")
        a = base(w) + out_args(p) + ["--shard", "2/2"]
        i = a.index(extra[0])
        a[i + 1] = extra[1]
        ok(run_cli(a))
        refused([two[0]["out"], p["out"]], "different settings")
        refused([two[0]["tsv"], p["tsv"]], "different settings", out=out_tsv)
        refused([two[0]["skipped-tsv"], p["skipped-tsv"]], "different settings", out=tmp_path / "m.sk.tsv")
    # scores stored as float16 in one shard and float32 (--float32) in the other
    d = tmp_path / "f16"
    d.mkdir()
    p = outputs(d, "s2")
    a = base(w) + out_args(p) + ["--shard", "2/2"]
    a.remove("--float32")
    ok(run_cli(a))
    refused([two[0]["out"], p["out"]], "different settings", "float16", "float32")
    # a file that is no shard: an unsharded run, and a merged one
    ref = reference(w)
    refused([ref["out"], two[1]["out"]], "not a shard output")
    refused([ref["tsv"], two[1]["tsv"]], "not a shard table", out=out_tsv)
    refused([two[0]["out"], two[1]["tsv"]], "mix HDF5 and text")
    refused([two[0]["out"], two[1]["out"]], "is also an input of this command", out=two[0]["out"])
    assert two[0]["out"].exists()
    # an incomplete file: the attribute, and a file cut short
    bad = tmp_path / "incomplete.h5"
    shutil.copy(two[1]["out"], bad)
    with h5py.File(bad, "a") as f:
        f.attrs["complete"] = False
    refused([two[0]["out"], bad], "not complete")
    cut = tmp_path / "cut.h5"
    cut.write_bytes(two[1]["out"].read_bytes()[:4096])
    refused([two[0]["out"], cut], str(cut))
    cut_tsv = tmp_path / "cut.tsv"
    lines = two[1]["tsv"].read_text().splitlines(keepends=True)
    last_block = max(i for i, line in enumerate(lines) if line.startswith("#varfx-block"))
    cut_tsv.write_text("".join(lines[:last_block]))
    refused([two[0]["tsv"], cut_tsv], "is cut short", "#varfx-end", out=out_tsv)
    # rows lost at the end, or a row cut in the middle: no #varfx-end line
    assert lines[-1].startswith("#varfx-end\t")
    cut_tsv.write_text("".join(lines[:-4]))
    refused([two[0]["tsv"], cut_tsv], str(cut_tsv), "is cut short", out=out_tsv)
    cut_tsv.write_text("".join(lines)[:-len(lines[-1]) - 9])
    refused([two[0]["tsv"], cut_tsv], "is cut short", out=out_tsv)
    # a block's line without its #varfx-end line but the end line of a copy after it: lines after the end
    cut_tsv.write_text("".join(lines) + lines[-2])
    refused([two[0]["tsv"], cut_tsv], "lines after its #varfx-end", out=out_tsv)
    # a compressed shard, and a damaged #varfx-shard line
    gz = tmp_path / "s2.tsv.gz"
    gz.write_bytes(gzip.compress(two[1]["tsv"].read_bytes()))
    refused([two[0]["tsv"], gz], "is not a shard table (not plain text", out=out_tsv)
    cut_tsv.write_text(lines[0] + lines[1][:40] + "\n" + "".join(lines[2:]))
    refused([two[0]["tsv"], cut_tsv], "its #varfx-shard line is damaged", out=out_tsv)
    # rows tampered with: a record of another shard's block, a record missing, rows out of order
    for name, edit in (("other", lambda r: np.where(np.arange(r.size) == 3, r[3] + B, r)),
                       ("missing", lambda r: np.where(r == r[0], r[0] + 1, r)),
                       ("order", lambda r: np.concatenate([r[r.size // 2:], r[:r.size // 2]]))):
        bad = tmp_path / f"tampered_{name}.h5"
        shutil.copy(two[0]["out"], bad)
        with h5py.File(bad, "a") as f:
            rec = f["record"][()]
            new = edit(rec)
            assert not np.array_equal(new, rec)
            f["record"][...] = new
        refused([bad, two[1]["out"]], str(bad))
    # a text shard with a block of another shard
    moved = tmp_path / "moved.tsv"
    moved.write_text(two[0]["tsv"].read_text().replace("#varfx-block\t0\n", "#varfx-block\t1\n", 1))
    refused([moved, two[1]["tsv"]], "belongs to another shard", out=out_tsv)
    # and after all that, the shards still merge
    ok(merge(h(two), out_h5))
    assert_h5_identical(out_h5, ref["out"])


def test_shards_may_name_the_inputs_differently(world, tmp_path, monkeypatch):
    """docs/hpc.md: inputs are compared by their hashes; "the paths as written may differ, e.g. relative
    in one job and absolute in another"."""
    w = world
    ref = reference(w)
    one = outputs(tmp_path, "s1", ("out", "tsv"))
    ok(run_cli(base(w) + out_args(one) + ["--shard", "1/2"]))  # absolute paths, as the reference
    monkeypatch.chdir(w["t"])
    two = outputs(tmp_path, "s2", ("out", "tsv"))
    rel = base(w, vcf=Path("variants.vcf"), weights=Path(w["weights"].name))
    rel[rel.index("--fasta") + 1] = Path("genome.fa")
    ok(run_cli(rel + out_args(two) + ["--shard", "2/2"]))
    assert_merge_equals([one, two], ref, tmp_path, kinds=("out", "tsv"))


def test_shard_and_block_options_are_checked(world, tmp_path):
    paths = outputs(tmp_path, "o", kinds=("out",))
    for bad, words in ((["--shard", "0/3"], "between 1 and N"), (["--shard", "4/3"], "between 1 and N"),
                       (["--shard", "2"], "K/N"), (["--shard", "a/b"], "K/N"),
                       (["--block-records", "0"], "--block-records")):
        args = base(world) + out_args(paths)
        if bad[0] == "--block-records":
            args[args.index("--block-records") + 1] = bad[1]
        else:
            args += bad
        msg = one_line_error(run_cli(args), 2)
        assert words in msg, msg
    assert not list(tmp_path.iterdir())
    msg = one_line_error(run_cli(["merge", "--out", tmp_path / "m.h5"]), 2)
    assert "Missing argument" in msg


def test_an_interrupted_shard_resumed_then_merged(world, tmp_path, monkeypatch):
    """--shard 2/3 stopped after two of its blocks, resumed (with --shard 2/3 again), merged with the
    other shards: the unsharded run."""
    w = world
    three = shard_runs(w, 3)
    paths = outputs(tmp_path, "s2")
    args = base(w) + out_args(paths) + ["--shard", "2/3"]
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert run_cli(args).exit_code == 130
    assert complete_blocks(tmp_path / "s2.h5.parts") == {1, 4}  # blocks b with b mod 3 = 1
    msg = one_line_error(run_cli(base(w) + out_args(paths) + ["--shard", "3/3", "--resume"]), 2)
    assert "shard" in msg
    begun, _ = resume_in_process(w, args, monkeypatch)
    n_blocks = -(-len(w["rows"]) // B)
    assert begun == {b for b in range(n_blocks) if b % 3 == 1} - {1, 4}
    assert_outputs_identical(paths, three[1])  # the same as the uninterrupted shard
    ref = reference(w)
    assert_merge_equals([three[0], paths, three[2]], ref, tmp_path)


def _copy_outputs(paths: dict, folder: Path, stem: str) -> dict[str, Path]:
    """The outputs of a finished run, copied under ``folder`` with old times (to see whether they are rewritten)."""
    copied = {}
    for kind, p in paths.items():
        copied[kind] = folder / f"{stem}{KINDS[kind]}"
        shutil.copyfile(p, copied[kind])
        os.utime(copied[kind], (1e9, 1e9))
    return copied


def _untouched(paths: dict, want: dict) -> bool:
    return all(p.stat().st_mtime == 1e9 and p.read_bytes() == want[k].read_bytes() for k, p in paths.items())


def test_resume_after_a_finished_run_of_the_same_command_scores_nothing(world, tmp_path):
    """--resume where the outputs of the same command already stand complete (a job array submitted
    again whole): nothing is scored, the outputs stay as they are, and the report gives the run's
    counts. Anything that does not show the same finished run is scored again: other settings, a
    shard table cut short, another shard, and a plain (unsharded) table, which records no settings."""
    w = world
    shard = shard_runs(w, 3)[1]
    paths = _copy_outputs(shard, tmp_path, "s2")
    args = base(w) + out_args(paths) + ["--shard", "2/3", "--resume"]
    r = ok(run_cli(args))
    assert "already complete" in r.output and "wrote:" not in r.output
    with h5py.File(shard["out"]) as f:
        assert f"variants scored: {int(f.attrs['variants_scored']):,}" in r.output
        assert f"records read: {int(f.attrs['records_read']):,}" in r.output
    assert _untouched(paths, shard)
    assert leftovers(tmp_path, paths) == []

    # a shard table cut short (its end line gone): scored again, equal to the uninterrupted shard
    text = paths["tsv"].read_text().splitlines(keepends=True)
    assert text[-1].startswith("#varfx-end\t")
    paths["tsv"].write_text("".join(text[:-1]))
    r = ok(run_cli(args))
    assert "wrote:" in r.output and "already complete" not in r.output
    assert_outputs_identical(paths, shard)

    # other settings: the same outputs written again with them (as without --resume)
    paths = _copy_outputs(shard, tmp_path, "t2")
    r = ok(run_cli(base(w, stats="SAD") + out_args(paths) + ["--shard", "2/3", "--resume"]))
    assert "wrote:" in r.output
    with h5py.File(paths["out"]) as f:
        assert json.loads(f.attrs["stats"]) == ["SAD"]

    # another shard's outputs under this shard's names
    paths = _copy_outputs(shard, tmp_path, "u3")
    r = ok(run_cli(base(w) + out_args(paths) + ["--shard", "3/3", "--resume"]))
    assert "wrote:" in r.output
    with h5py.File(paths["out"]) as f:
        assert f.attrs["shard"] == "3/3"

    # unsharded: with the HDF5 alone the run is known finished; with a plain table beside it, it is not
    ref = reference(w)
    only_h5 = _copy_outputs({"out": ref["out"]}, tmp_path, "all")
    assert "already complete" in ok(run_cli(base(w) + out_args(only_h5) + ["--resume"])).output
    assert _untouched(only_h5, ref)
    with_tsv = _copy_outputs(ref, tmp_path, "full")
    assert "wrote:" in ok(run_cli(base(w) + out_args(with_tsv) + ["--resume"])).output
    assert_outputs_identical(with_tsv, ref)


def test_text_only_shards_merge(world, tmp_path):
    """Without --out: the fragments sit beside the TSV, the skipped variants go to NAME.skipped.tsv;
    merged, both equal the unsharded run's."""
    w = world
    ok(run_cli(base(w) + ["--tsv", tmp_path / "full.tsv"]))
    assert (tmp_path / "full.skipped.tsv").is_file()
    for k in (1, 2):
        ok(run_cli(base(w) + ["--tsv", tmp_path / f"s{k}.tsv", "--shard", f"{k}/2"]))
    for name in ("tsv", "skipped.tsv"):
        got = tmp_path / f"merged.{name}"
        ok(merge([tmp_path / f"s2.{name}", tmp_path / f"s1.{name}"], got))
        assert got.read_bytes() == (tmp_path / f"full.{name}").read_bytes(), name
    assert not any(p.name.endswith((".parts", ".partial")) for p in tmp_path.iterdir())


def test_shards_of_a_region(world, tmp_path):
    """Blocks are counted after --region: shards of a region merge into the unsharded run of it."""
    pysam = pytest.importorskip("pysam")
    w = world
    order = {c: i for i, c in enumerate(w["contigs"])}
    rows = sorted(w["rows"], key=lambda r: (order[r[0]], r[1]))
    vcf = write_vcf(tmp_path / "sorted.vcf", rows, contigs=w["contigs"])
    gz = tmp_path / "variants.vcf.gz"
    pysam.tabix_compress(str(vcf), str(gz))
    pysam.tabix_index(str(gz), preset="vcf")
    region = ["--region", "chr1:1000-4000", "--region", "chr9"]
    full = outputs(tmp_path, "full", ("out", "tsv"))
    ok(run_cli(base(w, vcf=gz) + out_args(full) + region))
    data, _, attrs = h5_contents(full["out"])
    n = attrs["records_read"]
    assert 20 < n < len(w["rows"]) and np.array_equal(np.union1d(data["record"], data["skipped/record"]),
                                                      np.arange(n))
    shards = []
    for k in (1, 2):
        p = outputs(tmp_path, f"s{k}", ("out", "tsv"))
        ok(run_cli(base(w, vcf=gz) + out_args(p) + region + ["--shard", f"{k}/2"]))
        shards.append(p)
    assert_merge_equals(shards, full, tmp_path, kinds=("out", "tsv"))


# -- 5. batch sizes and workers -----------------------------------------------------------------------------------


def test_batch_size_does_not_change_results(world, tmp_path):
    """--batch-size 1 vs 64 (unsharded), and shards run with different batch sizes merged.

    The rows are identical; scores agree closely, not bit for bit: a float32 convolution may round the
    last bit differently for another batch composition (other BLAS/oneDNN kernel blocking), and the
    batch size is deliberately not a setting that shards or resumes must share.  Measured here, the
    predictions differ by about one float32 ulp, and so does every statistic relative to its own
    magnitude (rtol 1e-6) — except near zero: SAD is a difference of sums over bins and JSD of
    entropies, so one ulp of a sum (~1e-7 of the sum) is all of a near-zero difference.  Hence the
    absolute tolerance, 1e-5 of each dataset's largest |value| (measured: up to 3e-6)."""
    w = world
    small = write_vcf(tmp_path / "small.vcf", w["rows"][:32], contigs=w["contigs"])
    runs = {}
    for bs in (1, 64):
        p = outputs(tmp_path, f"bs{bs}", kinds=("out", "tsv"))
        ok(run_cli(base(w, vcf=small) + out_args(p) + ["--batch-size", bs]))
        runs[bs] = p
    shards = []
    for k, bs in ((1, 1), (2, 64)):
        p = outputs(tmp_path, f"sh{k}", kinds=("out",))
        ok(run_cli(base(w, vcf=small) + out_args(p) + ["--batch-size", bs, "--shard", f"{k}/2"]))
        shards.append(p["out"])
    ok(merge(shards, tmp_path / "merged.h5"))
    a, _, fa = h5_contents(runs[64]["out"])
    assert a["SAD"].shape[0] > 20
    for other_file in (runs[1]["out"], tmp_path / "merged.h5"):
        b, _, fb = h5_contents(other_file)
        assert sorted(a) == sorted(b)
        for name in a:
            if a[name].dtype.kind == "f":
                assert a[name].shape == b[name].shape
                scale = float(np.abs(a[name]).max())
                np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-5 * scale, err_msg=name)
            else:
                assert_same_array(b[name], a[name], name)
        assert fb["variants_scored"] == fa["variants_scored"]


def _needs_workers():
    r = run_cli(["score", "--help"])
    assert r.exit_code == 0
    if "--workers" not in r.output:
        pytest.skip("`varfx score` has no --workers option yet")


def test_worker_counts_give_identical_outputs(world, tmp_path):
    """--workers 0 (a thread builds the windows) and 2 (worker processes, merged by block): the same
    outputs bit for bit (48 records, 6 blocks: 3 per worker)."""
    _needs_workers()
    w = world
    small = write_vcf(tmp_path / "small.vcf", w["rows"][:48], contigs=w["contigs"])
    runs = []
    for n in (0, 2):
        p = outputs(tmp_path, f"w{n}")
        ok(run_cli(base(w, vcf=small) + out_args(p) + ["--workers", n]))
        runs.append(p)
    assert_outputs_identical(runs[1], runs[0])


@pytest.mark.slow
def test_more_worker_counts_and_a_shard_built_by_workers(world, tmp_path):
    """--workers 1 and 3 on the whole input equal --workers 0; a shard built by 3 workers equals the
    shard built by none."""
    _needs_workers()
    w = world
    ref = reference(w)  # --workers 0, the default
    for n in (1, 3):
        p = outputs(tmp_path, f"w{n}")
        ok(run_cli(base(w) + out_args(p) + ["--workers", n]))
        assert_outputs_identical(p, ref)
    p = outputs(tmp_path, "shard2")
    ok(run_cli(base(w) + out_args(p) + ["--workers", 3, "--shard", "2/3"]))
    assert_outputs_identical(p, shard_runs(w, 3)[1])


# -- 6. personal genomes --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort_world(tmp_path_factory):
    """A cohort of 6 samples at 30 sites (phased, some missing calls, one record whose REF disagrees with
    the FASTA), scored on itself with a one-hot toy model."""
    t = tmp_path_factory.mktemp("cohort")
    rng = random.Random(4242)
    seqs = {"chr1": random_seq(1500, rng), "chr2": random_seq(800, rng)}
    fasta = write_fasta(t / "genome.fa", seqs)
    recs = random_records(seqs, 30, rng, indel_rate=0.25, margin=40)
    # a genotype record whose REF disagrees with the FASTA, inside the 64-bp window of the site before it
    # (records are counted where windows read them)
    i = next(i for i in range(3, 30) if len(recs[i][2]) == len(recs[i][3][0]) == 1
             and recs[i][0] == recs[i - 1][0] and 0 < recs[i][1] - recs[i - 1][1] < 28)
    chrom, pos, ref, alts = recs[i]
    recs[i] = (chrom, pos, next(b for b in "ACGT" if b != ref and b not in alts), alts)
    samples = [f"S{i}" for i in range(6)]
    gts = random_genotypes(recs, samples, rng, freq=0.3, missing=0.1)
    cohort = write_cohort(t / "cohort.vcf", recs, samples, gts, contigs={"chr1": 1500, "chr2": 800})
    weights = save_module(t, ToyConv(64, 8, 4, 16, 3, kernel=15, seed=1), "one", length=64, bins=8, bin_size=4,
                          offset=16, tracks=3, strand_pairs=((0, 1),))
    return {"t": t, "fasta": fasta, "cohort": cohort, "weights": weights, "n": len(recs)}


def personal_args(c, vcf=None) -> list:
    return ["score", vcf or c["cohort"], "--fasta", c["fasta"], "--backend", "torchscript", "--weights",
            c["weights"], "--genotypes", c["cohort"], "--contrast", "--block-records", B, "-q"]


@pytest.mark.parametrize("n", [2, 5])
def test_personal_shards_merge_into_the_unsharded_run(cohort_world, n, tmp_path):
    """--genotypes runs: shards 1/n … n/n merged equal the unsharded run bit for bit, sample_counts/*
    included (30 records in 4 blocks: with n = 5 the fifth shard gets no block)."""
    c = cohort_world
    kinds = ("out", "tsv", "skipped-tsv")
    full = outputs(tmp_path, "full", kinds)
    r = ok(run_cli(personal_args(c) + out_args(full)))
    assert "variants skipped: " in r.output
    shards = []
    for k in range(1, n + 1):
        p = outputs(tmp_path, f"s{k}", kinds)
        ok(run_cli(personal_args(c) + out_args(p) + ["--shard", f"{k}/{n}"]))
        shards.append(p)
    data, _, attrs = h5_contents(full["out"])
    assert attrs["records_read"] == c["n"] and attrs["ref_mismatch_records"] == 1
    assert "ref_mismatch" in attrs["skipped_by_reason"]
    assert any(k.startswith("sample_counts/") for k in data) and data["sample_counts/missing"].sum() > 0
    assert data["SAD"].shape[1:] == (6, 3) and "genotype/SAD" in data
    with h5py.File(shards[-1]["out"]) as f:
        assert f["record"].shape == (0,) if n > 4 else f["record"].shape[0] > 0
    assert_merge_equals(shards[::-1], full, tmp_path, kinds=kinds)


def test_resume_after_a_finished_personal_shard_scores_nothing(cohort_world, tmp_path):
    c = cohort_world
    p = outputs(tmp_path, "s1", ("out",))
    args = personal_args(c) + out_args(p) + ["--shard", "1/2", "--resume"]
    assert "wrote:" in ok(run_cli(args)).output
    want = p["out"].read_bytes()
    os.utime(p["out"], (1e9, 1e9))
    r = ok(run_cli(args))
    assert "already complete" in r.output and p["out"].stat().st_mtime == 1e9 and p["out"].read_bytes() == want


@pytest.fixture(scope="module")
def indexed_cohort(cohort_world):
    pysam = pytest.importorskip("pysam")
    gz = cohort_world["t"] / "cohort.vcf.gz"
    if not gz.exists():
        pysam.tabix_compress(str(cohort_world["cohort"]), str(gz))
        pysam.tabix_index(str(gz), preset="vcf")
    return gz


def test_personal_shards_of_an_indexed_cohort_merge(cohort_world, indexed_cohort, tmp_path):
    """The shards count different REF-mismatching genotype records (``ref_mismatch_records``, per block):
    merge must not take that for different settings (it did: "different settings or inputs
    (ref_mismatch_records)"), and adds them up."""
    c = cohort_world
    kinds = ("out", "tsv")
    args = personal_args(c)
    args[args.index("--genotypes") + 1] = indexed_cohort
    full = outputs(tmp_path, "full", kinds)
    ok(run_cli(args + out_args(full)))
    shards = []
    for k in (1, 2):
        p = outputs(tmp_path, f"s{k}", kinds)
        ok(run_cli(args + out_args(p) + ["--shard", f"{k}/2"]))
        shards.append(p)
    counts = [h5_contents(p["out"])[2]["ref_mismatch_records"] for p in shards]
    assert sorted(counts) == [0, 1]  # the mismatching record (block 0) is read by shard 1 only
    assert_merge_equals(shards, full, tmp_path, kinds=kinds)


def test_resumed_personal_run_counts_ref_mismatch_records_of_all_blocks(cohort_world, indexed_cohort, tmp_path,
                                                                        monkeypatch):
    """``ref_mismatch_records`` is counted per block, like ``sample_counts`` (it was per run: a resumed
    run counted only what its own blocks read)."""
    c = cohort_world
    args = personal_args(c)
    args[args.index("--genotypes") + 1] = indexed_cohort
    full = outputs(tmp_path, "full", ("out",))
    ok(run_cli(args + out_args(full)))
    paths = outputs(tmp_path, "r", ("out",))
    with monkeypatch.context() as m:
        interrupt_after(m, 1)  # block 0, which reads the mismatching record, is complete
        assert run_cli(args + out_args(paths)).exit_code == 130
    ok(run_cli(args + out_args(paths) + ["--resume"]))
    assert h5_contents(full["out"])[2]["ref_mismatch_records"] == 1
    assert h5_contents(paths["out"])[2]["ref_mismatch_records"] == 1


def test_personal_run_killed_then_resumed_equals_uninterrupted(cohort_world, tmp_path, monkeypatch):
    c = cohort_world
    full = outputs(tmp_path, "full", ("out", "tsv"))
    ok(run_cli(personal_args(c) + out_args(full)))
    paths = outputs(tmp_path, "r", ("out", "tsv"))
    args = personal_args(c) + out_args(paths)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        assert run_cli(args).exit_code == 130
    begun, r = resume_in_process(None, args, monkeypatch)
    assert_outputs_identical(paths, full)
    # the report keeps both the run's genotype counts and what the resume kept
    kept = re.search(r"resumed: (\d+) of (\d+) blocks kept from the interrupted run", r.output)
    assert kept and int(kept.group(1)) == int(kept.group(2)) - len(begun) >= 1, r.output
    assert ok(run_cli(personal_args(c) + out_args(outputs(tmp_path, "again", ("out",))))).output.count(
        "genotype calls") == r.output.count("genotype calls") == 1


@pytest.mark.parametrize("indexed", [False, True])
def test_personal_run_built_by_workers(cohort_world, indexed_cohort, tmp_path, indexed):
    """--workers with --genotypes: each worker process reads the VCF, the genotypes (the whole file, or by
    region queries with an index) and the FASTA for the blocks it owns.  The outputs equal --workers 0 bit
    for bit, sample_counts/* and ref_mismatch_records included, and so does a shard built by 2 workers."""
    c = cohort_world
    args = personal_args(c)
    args[args.index("--genotypes") + 1] = indexed_cohort if indexed else c["cohort"]
    kinds = ("out", "tsv", "skipped-tsv")
    full = outputs(tmp_path, "full", kinds)
    r0 = ok(run_cli(args + out_args(full)))
    for n in (2, 3):  # 4 blocks: 2 each; 2, 1 and 1
        p = outputs(tmp_path, f"w{n}", kinds)
        r = ok(run_cli(args + out_args(p) + ["--workers", n]))
        assert_outputs_identical(p, full)
        report = [x for x in r.output.splitlines() if x.startswith("  ")]  # skip reasons and genotype counts
        assert report == [x for x in r0.output.splitlines() if x.startswith("  ")] and report
    assert h5_contents(full["out"])[2]["ref_mismatch_records"] == 1
    one, two = outputs(tmp_path, "s0", kinds), outputs(tmp_path, "s2", kinds)
    ok(run_cli(args + out_args(one) + ["--shard", "2/2"]))
    ok(run_cli(args + out_args(two) + ["--shard", "2/2", "--workers", 2]))
    assert_outputs_identical(two, one)


# -- 7. empty inputs and empty shards -------------------------------------------------------------------------------


def test_empty_vcf_sharded_and_merged(world, tmp_path):
    w = world
    empty = write_vcf(tmp_path / "empty.vcf", [], contigs=w["contigs"])
    full = outputs(tmp_path, "full")
    r = ok(run_cli(base(w, vcf=empty) + out_args(full)))
    assert "no records" in r.output
    shards = []
    for k in (1, 2):
        p = outputs(tmp_path, f"s{k}")
        ok(run_cli(base(w, vcf=empty) + out_args(p) + ["--shard", f"{k}/2"]))
        shards.append(p)
        d, _, a = h5_contents(p["out"])
        assert a["complete"] and a["records_read"] == 0 and a["shard"] == f"{k}/2"
        assert d["SAD"].shape == (0, 3) and d["JSD"].shape == (0,) and d["skipped/record"].shape == (0,)
        assert [x.decode() for x in d["target_ids"]] == ["t0", "t1", "t2"]
        head = p["tsv"].read_text().splitlines()
        assert len(head) == 3 and shard_line(p["tsv"])["n_blocks"] == 0 and head[2] == "#varfx-end\t0"
        assert [x for x in head if x.startswith("chrom\tpos\tid\tref\talt\tSAD:t0")]
    assert_merge_equals(shards, full, tmp_path)
    assert not any(p.name.endswith((".parts", ".partial")) for p in tmp_path.iterdir())


def test_a_shard_without_blocks_is_valid_and_merges(world, tmp_path):
    w = world
    vcf = write_vcf(tmp_path / "twelve.vcf", w["rows"][:12], contigs=w["contigs"])  # blocks 0 and 1
    full = outputs(tmp_path, "full")
    ok(run_cli(base(w, vcf=vcf) + out_args(full)))
    shards = []
    for k in (1, 2, 3):
        p = outputs(tmp_path, f"s{k}")
        r = ok(run_cli(base(w, vcf=vcf) + out_args(p) + ["--shard", f"{k}/3"]))
        shards.append(p)
    assert "variants (ALT alleles): 0" in r.output
    d, _, a = h5_contents(shards[2]["out"])
    assert a["complete"] and a["records_read"] == 12 and a["variants"] == 0 and a["shard"] == "3/3"
    assert d["SAD"].shape == (0, 3) and d["record"].shape == (0,) and d["skipped/record"].shape == (0,)
    text = shards[2]["tsv"].read_text().splitlines()
    assert len(text) == 3 and shard_line(shards[2]["tsv"])["shard"] == "3/3" and text[2] == "#varfx-end\t0"
    assert [x for x in text if x.startswith("chrom\t")]
    assert_merge_equals(shards[::-1], full, tmp_path)
