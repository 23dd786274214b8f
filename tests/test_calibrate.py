"""`varfx calibrate` and `varfx score --calibration` (varfx/calibrate.py, docs/calibration.md).

What is checked, each against values computed here from the files with numpy or plain Python:
the background draws (deterministic per seed, REF = the FASTA's base, no mostly-N window, Ti/Tv and
flank-GC matched to a query), percentiles (the background's own are uniform, the sign follows the
score, every value equals sign(s) · 100 · #{b ≤ |s|} / n on the stored background scores, in HDF5 and
TSV), pooling (shards pooled = the unsharded run bit for bit, ≠ averaging per-file quantiles), sharded
scoring with --calibration merges to the unsharded run, and the refusals.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import ok, one_line_error, random_seq, run_cli, write_fasta, write_vcf
from toy_models import save_toy

N_BG = 200  # background SNVs of the shared calibration
STATS = "SAD,logSED,D1,JSD"  # signed, signed, non-negative, a profile statistic
WINDOW = 64  # the toy model's input length
FLANK = 50




def gc_rich(n: int, rng: random.Random, gc: float) -> str:
    return "".join(rng.choice("GC") if rng.random() < gc else rng.choice("AT") for _ in range(n))


# -- the world: a genome with GC-poor, GC-rich and N stretches, a toy model, a query VCF ---------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibrate")
    rng = random.Random(11)
    seqs = {
        "chr1": gc_rich(3000, rng, 0.35) + gc_rich(3000, rng, 0.75),
        "chr2": random_seq(1200, rng) + "N" * 1500 + random_seq(1200, rng),
        "chr3": random_seq(40, rng),  # shorter than the window: never drawn
    }
    fasta = write_fasta(d / "genome.fa", seqs)
    weights, _ = save_toy(d, length=WINDOW, bins=8, bin_size=4, offset=16, tracks=3, seed=3)
    other, _ = save_toy(d, length=WINDOW, bins=8, bin_size=4, offset=16, tracks=3, seed=4, name="other")
    # the query: SNVs mostly in the GC-rich half, three transversions for each transition
    recs = []
    for i, p0 in enumerate(sorted(rng.sample(range(3100, 5900), 60)) + sorted(rng.sample(range(100, 2900), 20))):
        ref = seqs["chr1"][p0]
        alt = ({"A": "G", "G": "A", "C": "T", "T": "C"}[ref] if i % 4 == 0
               else rng.choice({"A": "CT", "G": "CT", "C": "AG", "T": "AG"}[ref]))
        recs.append(("chr1", p0 + 1, f"q{i}", ref, alt))
    recs.append(("chr1", 200, "indel", seqs["chr1"][199], seqs["chr1"][199] + "A"))  # not an SNV: not counted
    query = write_vcf(d / "query.vcf", sorted(recs, key=lambda r: r[1]))
    model = ["--backend", "torchscript", "--weights", weights]
    cal = d / "cal.h5"
    ok(run_cli(["calibrate", "--random", N_BG, "--seed", 5, "--fasta", fasta, *model, "--stat", STATS,
                "--out", cal, "--keep-scores", "-q"]))
    return {"dir": d, "seqs": seqs, "fasta": fasta, "weights": weights, "other": other, "query": query,
            "model": model, "cal": cal, "bg_vcf": d / "cal.background.vcf", "bg_scores": d / "cal.scores.h5"}


def read_vcf_rows(path: Path) -> list[tuple[str, int, str, str]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#"):
            c, p, _, r, a = line.split("\t")[:5]
            rows.append((c, int(p), r, a))
    return rows


def flank_gc(seq: str, p0: int) -> tuple[int, int]:
    """G+C and A+C+G+T in the 50 bp either side of a 0-based site, the site excluded (plain Python)."""
    text = seq[max(0, p0 - FLANK):p0] + seq[p0 + 1:p0 + 1 + FLANK]
    return sum(b in "GC" for b in text), sum(b in "ACGT" for b in text)


def cell(seq: str, p0: int, ref: str, alt: str) -> tuple[int, int]:
    g, n = flank_gc(seq, p0)
    ti = {ref, alt} in ({"A", "G"}, {"C", "T"})
    return min(10 * g // n, 9), 0 if ti else 1


# -- drawing the background ---------------------------------------------------------------------------------------


def test_draws_are_deterministic_and_valid(world, tmp_path):
    args = ["calibrate", "--random", 300, "--fasta", world["fasta"], *world["model"]]
    a, b, c = tmp_path / "a.vcf", tmp_path / "b.vcf", tmp_path / "c.vcf"
    ok(run_cli([*args, "--seed", 1, "--write-background", a]))
    ok(run_cli([*args, "--seed", 1, "--write-background", b]))
    ok(run_cli([*args, "--seed", 2, "--write-background", c]))
    assert a.read_bytes() == b.read_bytes()
    rows = read_vcf_rows(a)
    assert rows != read_vcf_rows(c)
    assert len(rows) == 300 and len({(ch, p) for ch, p, _, _ in rows}) == 300  # distinct sites
    seqs = world["seqs"]
    for ch, p, ref, alt in rows:
        s = seqs[ch]
        p0 = p - 1
        assert ref == s[p0].upper() and ref in "ACGT" and alt in "ACGT" and alt != ref
        lo = p0 - WINDOW // 2
        assert lo >= 0 and lo + WINDOW <= len(s)  # the window lies inside the contig …
        assert s[lo:lo + WINDOW].count("N") <= 0.1 * WINDOW  # … and is not mostly N
    assert {ch for ch, *_ in rows} <= {"chr1", "chr2"}
    import cyvcf2  # another reader agrees on the records

    assert [(v.CHROM, v.POS, v.REF, v.ALT[0]) for v in cyvcf2.VCF(str(a))] == rows


def test_candidate_sites_match_a_brute_force_scan_whatever_the_chunk(world, monkeypatch):
    from varfx import background as C
    from varfx.genome import Genome

    seqs = world["seqs"]
    want = {}
    for ch, s in seqs.items():
        for p0 in range(WINDOW // 2, len(s) - WINDOW + WINDOW // 2 + 1):
            g, n = flank_gc(s, p0)
            if s[p0] in "ACGT" and n and s[p0 - WINDOW // 2: p0 - WINDOW // 2 + WINDOW].count("N") <= 6:
                want[(ch, p0)] = min(10 * g // n, 9)
    with Genome(world["fasta"]) as genome:
        default = C.draw_background(genome, 150, 4, WINDOW)
        monkeypatch.setattr(C, "SCAN_CHUNK", 97)  # many chunks, boundaries everywhere
        got = {(ch, int(p)): int(b) for ch, pos, bins in C._candidates(genome, list(seqs), WINDOW)
               for p, b in zip(pos, bins)}
        chunked = C.draw_background(genome, 150, 4, WINDOW)
    assert got == want
    assert chunked.chrom == default.chrom and np.array_equal(chunked.pos, default.pos) and chunked.alt == default.alt


def test_uniform_draws_have_ti_tv_two(world, tmp_path):
    out = tmp_path / "u.vcf"
    ok(run_cli(["calibrate", "--random", 900, "--seed", 3, "--fasta", world["fasta"], *world["model"],
                "--write-background", out]))
    rows = read_vcf_rows(out)
    ti = np.mean([{r, a} in ({"A", "G"}, {"C", "T"}) for _, _, r, a in rows])
    assert abs(ti - 2 / 3) < 4 * np.sqrt(2 / 9 / len(rows))  # P(transition) = 2/3, within 4 sd
    recipe = json.loads(next(line for line in out.read_text().splitlines()
                             if line.startswith("##varfx_background="))[len("##varfx_background="):])
    assert recipe["mode"] == "uniform" and recipe["seed"] == 3 and recipe["flank_bp"] == FLANK


def test_matched_draws_follow_the_query(world, tmp_path):
    seqs = world["seqs"]
    q = [(c, p, r, a) for c, p, r, a in read_vcf_rows(world["query"]) if len(r) == len(a) == 1]
    want = np.zeros((10, 2))
    for c, p, r, a in q:
        want[cell(seqs[c], p - 1, r, a)] += 1
    want /= want.sum()
    n = 240
    out = tmp_path / "m.vcf"
    ok(run_cli(["calibrate", "--random", n, "--seed", 9, "--match", world["query"], "--fasta", world["fasta"],
                *world["model"], "--write-background", out]))
    got = np.zeros((10, 2))
    for c, p, r, a in read_vcf_rows(out):
        got[cell(seqs[c], p - 1, r, a)] += 1
    assert got.sum() == n
    assert np.abs(got - n * want).max() < 1  # every (GC bin, Ti/Tv) cell within rounding of the query's share
    q_ti = want[:, 0].sum() / want[:, 1].sum()
    assert abs(got[:, 0].sum() / got[:, 1].sum() - q_ti) < 0.05
    # a uniform draw from this genome looks different (so matching did something)
    uni = tmp_path / "u.vcf"
    ok(run_cli(["calibrate", "--random", n, "--seed", 9, "--fasta", world["fasta"], *world["model"],
                "--write-background", uni]))
    ugot = np.zeros((10, 2))
    for c, p, r, a in read_vcf_rows(uni):
        ugot[cell(seqs[c], p - 1, r, a)] += 1
    assert np.abs(ugot - n * want).max() > 10


# -- percentiles ----------------------------------------------------------------------------------------------------


def background(world, stat: str) -> np.ndarray:
    with h5py.File(world["bg_scores"], "r") as f:
        return f[stat][()].astype(np.float32)


def expected_pct(values: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """sign(s) · 100 · (share of the background's |scores| ≤ |s|), track by track (numpy)."""
    v = values.astype(np.float64)
    b = np.abs(bg.astype(np.float64))
    if v.ndim == 1:
        return np.sign(v) * 100 * (b[None, :] <= np.abs(v)[:, None]).mean(1)
    return np.stack([np.sign(v[:, t]) * 100 * (b[None, :, t] <= np.abs(v[:, t])[:, None]).mean(1)
                     for t in range(v.shape[1])], axis=1)


def test_calibration_file_holds_the_sorted_background(world):
    with h5py.File(world["cal"], "r") as f:
        assert int(f.attrs["background_size"]) == N_BG and int(f.attrs["quantile_count"]) == N_BG
        settings = json.loads(f.attrs["calibration_settings"])
        assert settings["stats"] == STATS.split(",") and settings["track_ids"] == ["t0", "t1", "t2"]
        assert settings["rc"] is False and settings["shifts"] == [0] and settings["backend"] == "torchscript"
        features = json.loads(f.attrs["features"])
        for s in STATS.split(","):
            np.testing.assert_array_equal(f[f"quantiles/{s}"][()], np.sort(np.abs(background(world, s)), axis=0))
    rows = read_vcf_rows(world["bg_vcf"])
    assert features["background"]["transitions"] == sum({r, a} in ({"A", "G"}, {"C", "T"}) for *_, r, a in rows)
    assert features["drawn_with"][0]["seed"] == 5


def test_the_background_percentiles_of_itself_are_uniform(world, tmp_path):
    own = tmp_path / "own.h5"
    ok(run_cli(["score", world["bg_vcf"], "--fasta", world["fasta"], *world["model"], "--stat", STATS, "--float32",
                "--calibration", world["cal"], "--out", own, "-q"]))
    with h5py.File(own, "r") as f:
        for s in STATS.split(","):
            bg = background(world, s)
            np.testing.assert_array_equal(f[s][()], bg)  # the same scores as the calibration's run
            pct = f[f"{s}_pct"][()]
            assert pct.dtype == np.float32 and pct.shape == bg.shape
            cols = pct[:, None] if pct.ndim == 1 else pct
            for t in range(cols.shape[1]):
                a = np.sort(np.abs(cols[:, t]))
                levels = 100 * np.arange(1, N_BG + 1) / N_BG
                ties = N_BG - np.unique(np.abs(bg if bg.ndim == 1 else bg[:, t])).size
                assert np.abs(a - levels).max() <= 100 * (ties + 1e-6) / N_BG + 1e-3
                assert np.abs(np.quantile(a, [0.1, 0.5, 0.9]) - [10, 50, 90]).max() < 1.5


def test_hand_computed_percentiles_in_h5_and_tsv(world, tmp_path):
    out, tsv, long = tmp_path / "q.h5", tmp_path / "q.tsv", tmp_path / "q.long.tsv"
    ok(run_cli(["score", world["query"], "--fasta", world["fasta"], *world["model"], "--stat", STATS, "--float32",
                "--calibration", world["cal"], "--out", out, "--tsv", tsv, "--tsv-long", long, "-q"]))
    table = pd.read_csv(tsv, sep="\t")
    longt = pd.read_csv(long, sep="\t")
    with h5py.File(out, "r") as f:
        assert f.attrs["calibration_sha256"] and int(f.attrs["calibration_background_size"]) == N_BG
        for s in STATS.split(","):
            vals, pct = f[s][()], f[f"{s}_pct"][()]
            want = expected_pct(vals, background(world, s))
            np.testing.assert_allclose(pct, want, rtol=1e-6, atol=1e-4)
            if s in ("SAD", "logSED"):  # signed: the sign follows the score
                nz = pct != 0  # 0: |s| below every background value (or s = 0)
                assert np.array_equal(np.sign(pct[nz]), np.sign(vals[nz])) and (pct < 0).any() and (pct > 0).any()
                assert (np.abs(vals[~nz]) < np.abs(background(world, s)).min(0)[np.nonzero(~nz)[1]]).all()
            else:
                assert (pct >= 0).all()
            if pct.ndim == 1:
                np.testing.assert_allclose(table[f"{s}_pct"], want, rtol=1e-6, atol=1e-4)
                rows = longt[longt["stat"] == f"{s}_pct"]
                assert (rows["track"] == "*").all()
                np.testing.assert_allclose(rows["value"], want, rtol=1e-6, atol=1e-4)
            else:
                for t, tid in enumerate(["t0", "t1", "t2"]):
                    np.testing.assert_allclose(table[f"{s}_pct:{tid}"], want[:, t], rtol=1e-6, atol=1e-4)
                    rows = longt[(longt["stat"] == f"{s}_pct") & (longt["track"] == tid)]
                    np.testing.assert_allclose(rows["value"], want[:, t], rtol=1e-6, atol=1e-4)


def test_fewer_quantiles_than_background_values_round_down_to_one_over_q(world, tmp_path):
    q = 40
    cal = tmp_path / "cal40.h5"
    ok(run_cli(["calibrate", "--from", world["bg_scores"], "--out", cal, "--quantiles", q]))
    out = tmp_path / "q.h5"
    ok(run_cli(["score", world["query"], "--fasta", world["fasta"], *world["model"], "--stat", "SAD", "--float32",
                "--calibration", cal, "--out", out, "-q"]))
    with h5py.File(out, "r") as f:
        vals, pct = f["SAD"][()], f["SAD_pct"][()].astype(np.float64)
    exact = np.abs(expected_pct(vals, background(world, "SAD")))
    got = np.abs(pct)
    assert (got <= exact + 1e-4).all() and (exact - got < 100 / q).all()  # exact to 100/Q, rounded down
    np.testing.assert_allclose(got * q / 100, np.round(got * q / 100), atol=1e-4)  # multiples of 100/Q
    assert not np.allclose(got, exact)  # the rounding is visible here


def test_track_subset_maps_by_id(world, tmp_path):
    out = tmp_path / "sub.h5"
    ok(run_cli(["score", world["query"], "--fasta", world["fasta"], *world["model"], "--stat", "SAD", "--float32",
                "--tracks", "2", "--calibration", world["cal"], "--out", out, "-q"]))
    with h5py.File(out, "r") as f:
        assert [x.decode() for x in f["target_ids"][()]] == ["t2"]
        want = expected_pct(f["SAD"][()], background(world, "SAD")[:, 2:3])
        np.testing.assert_allclose(f["SAD_pct"][()], want, rtol=1e-6, atol=1e-4)


# -- pooling ---------------------------------------------------------------------------------------------------------


def _datasets(path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def test_pooled_shards_equal_the_unsharded_run_and_not_averaged_quantiles(world, tmp_path):
    base = ["calibrate", "--background", world["bg_vcf"], "--fasta", world["fasta"], *world["model"],
            "--stat", STATS, "--block-records", 16, "-q"]
    whole = tmp_path / "whole.h5"
    ok(run_cli([*base, "--out", whole, "--quantiles", 50]))
    shards = [tmp_path / f"s{k}.h5" for k in (1, 2, 3)]
    for k, p in enumerate(shards, 1):
        ok(run_cli([*base, "--shard", f"{k}/3", "--scores", p]))
    pooled = tmp_path / "pooled.h5"
    ok(run_cli(["calibrate", "--from", *shards[::-1], "--out", pooled, "--quantiles", 50]))
    a, b = _datasets(whole), _datasets(pooled)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    with h5py.File(whole) as f, h5py.File(pooled) as g:
        assert f.attrs["background_size"] == g.attrs["background_size"] == N_BG
    # the pooled quantiles are the order statistics of all rows together (numpy on the three shards' scores)
    rows = np.concatenate([h5py.File(p)["SAD"][()] for p in shards])
    srt = np.sort(np.abs(rows), axis=0)
    np.testing.assert_array_equal(b["quantiles/SAD"], srt[np.ceil(np.arange(1, 51) * N_BG / 50).astype(int) - 1])

    # a skewed split: a second, small background scored the same way
    small = tmp_path / "small.h5"
    ok(run_cli(["calibrate", "--random", 25, "--seed", 77, "--contigs", "chr1", "--fasta", world["fasta"],
                *world["model"], "--stat", STATS, "--scores", small, "--write-background", tmp_path / "small.vcf",
                "-q"]))
    both, one, two = tmp_path / "both.h5", tmp_path / "one.h5", tmp_path / "two.h5"
    ok(run_cli(["calibrate", "--from", world["bg_scores"], small, "--out", both, "--quantiles", 20]))
    ok(run_cli(["calibrate", "--from", world["bg_scores"], "--out", one, "--quantiles", 20]))
    ok(run_cli(["calibrate", "--from", small, "--out", two, "--quantiles", 20]))
    pooled_q = _datasets(both)["quantiles/SAD"]
    averaged = (_datasets(one)["quantiles/SAD"] + _datasets(two)["quantiles/SAD"]) / 2
    allrows = np.sort(np.abs(np.concatenate([background(world, "SAD"), h5py.File(small)["SAD"][()]])), axis=0)
    n = allrows.shape[0]
    np.testing.assert_array_equal(pooled_q, allrows[np.ceil(np.arange(1, 21) * n / 20).astype(int) - 1])
    assert not np.allclose(pooled_q, averaged, rtol=1e-3)


def test_pooled_quantiles_with_nan_inf_and_a_small_memory_budget(tmp_path):
    from varfx.calibrate import percentiles, pooled_quantiles

    rng = np.random.default_rng(0)
    a = rng.normal(size=(37, 5)).astype(np.float32)
    b = rng.normal(scale=3, size=(23, 5)).astype(np.float32)
    a[::4, 1] = np.nan  # a track with missing values
    a[:, 4] = np.nan  # a track with none
    b[:, 4] = np.nan
    b[3, 2] = np.inf  # a float16 overflow
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"], f["b"] = a, b
        ds = [f["a"], f["b"]]
        q1, n1, q = pooled_quantiles(ds, 16)
        q2, n2, _ = pooled_quantiles(ds, 16, budget=200)  # a track-major scratch file, slabs of one track
    assert q == 16
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(n1, n2)
    allv = np.abs(np.concatenate([a, b]))
    for t in range(4):
        col = np.sort(allv[~np.isnan(allv[:, t]), t])
        assert n1[t] == col.size
        np.testing.assert_array_equal(q1[:, t], col[np.ceil(np.arange(1, 17) * col.size / 16).astype(int) - 1])
    assert n1[4] == 0 and np.isnan(q1[:, 4]).all()
    s = np.array([[0.5, -0.5, np.inf, np.nan, 1.0], [0.0, 1e9, -2.0, 1.0, 1.0]], dtype=np.float32)
    pct = percentiles(s, q1)
    assert pct[1, 1] == 100 and pct[0, 2] == 100 and pct[1, 0] == 0  # above everything, zero
    assert np.isnan(pct[0, 3]) and np.isnan(pct[:, 4]).all()  # a NaN score, a track without background
    col = np.sort(allv[:, 2][~np.isnan(allv[:, 2])])
    assert pct[1, 2] == -100 * np.floor(16 * (col <= 2.0).sum() / col.size) / 16


def test_sharded_score_with_calibration_merges_to_the_unsharded_run(world, tmp_path):
    base = ["score", world["query"], "--fasta", world["fasta"], *world["model"], "--stat", STATS,
            "--calibration", world["cal"], "--block-records", 8, "-q"]
    ok(run_cli([*base, "--out", tmp_path / "all.h5", "--tsv", tmp_path / "all.tsv"]))
    for k in (1, 2):
        ok(run_cli([*base, "--shard", f"{k}/2", "--out", tmp_path / f"p{k}.h5", "--tsv", tmp_path / f"p{k}.tsv"]))
    ok(run_cli(["merge", tmp_path / "p2.h5", tmp_path / "p1.h5", "--out", tmp_path / "m.h5"]))
    ok(run_cli(["merge", tmp_path / "p1.tsv", tmp_path / "p2.tsv", "--out", tmp_path / "m.tsv"]))
    a, b = _datasets(tmp_path / "all.h5"), _datasets(tmp_path / "m.h5")
    assert a.keys() == b.keys() and "SAD_pct" in a and "JSD_pct" in a
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    assert (tmp_path / "all.tsv").read_bytes() == (tmp_path / "m.tsv").read_bytes()


# -- refusals ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cals(world):
    """Calibrations made with --rc, and with two of the three tracks."""
    d = world["dir"]
    args = ["calibrate", "--background", world["bg_vcf"], "--fasta", world["fasta"], *world["model"], "-q"]
    ok(run_cli([*args, "--rc", "--out", d / "rc.h5"]))
    ok(run_cli([*args, "--tracks", "0,1", "--out", d / "two.h5"]))
    return {"rc": d / "rc.h5", "two": d / "two.h5"}


def test_mismatched_runs_are_refused(world, small_cals, tmp_path):
    base = ["score", world["query"], "--fasta", world["fasta"], "--out", tmp_path / "x.h5", "-q"]
    cal = ["--calibration", world["cal"]]
    model = world["model"]
    msg = one_line_error(run_cli([*base, *model, *cal, "--rc"]), 2)
    assert "cal.h5 was made with no --rc, this run has --rc" in msg
    msg = one_line_error(run_cli([*base, *model, "--calibration", small_cals["rc"]]), 2)
    assert "rc.h5 was made with --rc, this run has no --rc" in msg
    msg = one_line_error(run_cli([*base, *model, *cal, "--shifts", "-1,0,1"]), 2)
    assert "was made with --shifts 0, this run has --shifts -1,0,1" in msg
    msg = one_line_error(run_cli([*base, *model, *cal, "--bins", "all"]), 2)
    assert "was made with --bins variant:128, this run has --bins all" in msg
    msg = one_line_error(run_cli([*base, *model, *cal, "--stat", "logSED", "--pseudocount", "0.5"]), 2)
    assert "was made with --pseudocount 1, this run has --pseudocount 0.5" in msg
    msg = one_line_error(run_cli([*base, *model, *cal, "--stat", "SAD,D2"]), 2)
    assert "cal.h5 has no statistic D2" in msg
    msg = one_line_error(run_cli([*base, "--backend", "torchscript", "--weights", world["other"], *cal]), 2)
    assert "was made with weights/spec with sha256" in msg
    msg = one_line_error(run_cli([*base, *model, "--calibration", small_cals["two"]]), 2)
    assert "two.h5 has no track t2" in msg
    ok(run_cli([*base, *model, "--tracks", "0,1", "--stat", "SAD,logSED", "--calibration", small_cals["two"]]))
    msg = one_line_error(run_cli([*base, *model, *cal, "--genotypes", world["query"]]), 2)
    assert "--calibration is not available with --genotypes" in msg
    assert not (tmp_path / "x.h5.parts").exists()


def test_other_varfx_outputs_are_refused_as_backgrounds(world, tmp_path):
    """An ISM output given to calibrate --from (a KeyError traceback) or to score --calibration (whose message
    told the user to calibrate from it) is named for what it is; --seed is not negative."""
    fa, model = world["fasta"], world["model"]
    ism = tmp_path / "ism.h5"
    r = run_cli(["ism", "--region", "chr1:1000-1001", "--fasta", fa, *model, "--out", ism, "-q"])
    assert r.exit_code == 0, r.output
    msg = one_line_error(run_cli(["calibrate", "--from", ism, "--out", tmp_path / "c.h5"]), 1)
    assert "holds in silico mutagenesis (varfx ism), not variant scores: a calibration reads" in msg
    msg = one_line_error(run_cli(["score", world["query"], "--fasta", fa, *model, "--calibration", ism,
                                  "--out", tmp_path / "s.h5"]), 1)
    assert "is not a varfx calibration file: it is another kind of varfx output" in msg
    msg = one_line_error(run_cli(["calibrate", "--random", 10, "--seed", -1, "--fasta", fa, *model,
                                  "--out", tmp_path / "c.h5"]), 2)
    assert "-1 is not in the range x>=0" in msg
    assert not list(tmp_path.glob("c.h5*")) and not list(tmp_path.glob("s.h5*"))


def test_bad_inputs(world, tmp_path):
    fa, model = world["fasta"], world["model"]
    msg = one_line_error(run_cli(["calibrate", "--random", 0, "--fasta", fa, *model, "--out", tmp_path / "c.h5"]), 2)
    assert "--random 0: draw at least 1 SNV" in msg
    msg = one_line_error(run_cli(["calibrate", "--random", 10, "--contigs", "chrZ", "--fasta", fa, *model,
                                  "--out", tmp_path / "c.h5"]), 2)
    assert "--contigs: chrZ is not in genome.fa (its contigs: " in msg
    msg = one_line_error(run_cli(["calibrate", "--from", world["bg_scores"], "--out", tmp_path / "c.h5",
                                  "--quantiles", 0]), 2)
    assert "--quantiles 0: store at least 1 quantile per track" in msg
    assert not list(tmp_path.glob("c.h5*"))
    msg = one_line_error(run_cli(["calibrate", "--background", tmp_path / "no.vcf", "--fasta", fa, *model,
                                  "--out", tmp_path / "c.h5"]), 1)
    assert "background VCF not found" in msg
    msg = one_line_error(run_cli(["calibrate", "--fasta", fa, *model, "--out", tmp_path / "c.h5"]), 2)
    assert "give one background" in msg
    msg = one_line_error(run_cli(["calibrate", "--background", world["bg_vcf"], "--fasta", fa, *model,
                                  "--shard", "1/2", "--out", tmp_path / "c.h5"]), 2)
    assert "--shard writes the shard's background scores: give --scores" in msg
    msg = one_line_error(run_cli(["calibrate", "--background", world["bg_vcf"], "--match", world["query"],
                                  "--fasta", fa, *model, "--out", tmp_path / "c.h5"]), 2)
    assert "apply to --random" in msg
    msg = one_line_error(run_cli(["calibrate", "--random", 100000, "--fasta", fa, *model,
                                  "--out", tmp_path / "c.h5"]), 1)
    assert "candidate sites" in msg and "lower --random" in msg
    indels = write_vcf(tmp_path / "indels.vcf", [("chr1", 200, ".", "A", "AT")])
    msg = one_line_error(run_cli(["calibrate", "--random", 10, "--match", indels, "--fasta", fa, *model,
                                  "--out", tmp_path / "c.h5"]), 1)
    assert "no SNV" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", tmp_path / "none.h5", "--out", tmp_path / "c.h5"]), 1)
    assert "scores file not found" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", world["cal"], "--out", tmp_path / "c.h5"]), 1)
    assert "is a calibration, not background scores" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", "--out", tmp_path / "c.h5"]), 2)
    assert "--from needs the background score files" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", world["bg_scores"], "--random", 5,
                                  "--out", tmp_path / "c.h5"]), 2)
    assert "drop --random" in msg
    msg = one_line_error(run_cli(["calibrate", "--random", 10, "--fasta", fa, "--backend", "spliceai",
                                  "--out", tmp_path / "c.h5"]), 2)
    assert "does not support --backend spliceai" in msg
    msg = one_line_error(run_cli(["calibrate", "--random", 10, "--fasta", fa, *model, "--out", tmp_path / "c.h5",
                                  "--resume"]), 2)
    assert "add --keep-scores" in msg
    assert not (tmp_path / "c.h5").exists()

    query = ["score", world["query"], "--fasta", fa, *model, "--out", tmp_path / "x.h5", "-q"]
    msg = one_line_error(run_cli([*query, "--calibration", tmp_path / "missing.h5"]), 1)
    assert "calibration file not found" in msg
    msg = one_line_error(run_cli([*query, "--calibration", world["bg_scores"]]), 1)
    assert "is not a varfx calibration file: it is a scores file" in msg
    text = tmp_path / "text.h5"
    text.write_text("not hdf5\n")
    msg = one_line_error(run_cli([*query, "--calibration", text]), 1)
    assert "is not an HDF5 file" in msg
    msg = one_line_error(run_cli(["score", world["query"], "--fasta", fa, "--backend", "spliceai",
                                  "--calibration", world["cal"], "--out", tmp_path / "x.h5"]), 2)
    assert "--calibration is not available with --backend spliceai" in msg
    assert not (tmp_path / "x.h5").exists()


def test_shard_sets_given_to_from_must_be_complete(world, tmp_path):
    base = ["calibrate", "--background", world["bg_vcf"], "--fasta", world["fasta"], *world["model"],
            "--stat", STATS, "--block-records", 16, "-q"]
    shards = [tmp_path / f"s{k}.h5" for k in (1, 2, 3)]
    for k, p in enumerate(shards, 1):
        if k < 3:
            ok(run_cli([*base, "--shard", f"{k}/3", "--scores", p]))
    msg = one_line_error(run_cli(["calibrate", "--from", *shards[:2], "--out", tmp_path / "c.h5"]), 1)
    assert "shard 3/3" in msg and "is missing" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", shards[0], shards[0], shards[1],
                                  "--out", tmp_path / "c.h5"]), 1)
    assert "given twice" in msg
    msg = one_line_error(run_cli(["calibrate", "--from", world["bg_scores"], shards[0], shards[1],
                                  "--out", tmp_path / "c.h5"]), 1)
    assert "give each background once" in msg
    other = tmp_path / "rc.h5"
    ok(run_cli(["calibrate", "--background", world["bg_vcf"], "--fasta", world["fasta"], *world["model"],
                "--stat", STATS, "--rc", "--scores", other, "--shard", "1/1", "-q"]))
    msg = one_line_error(run_cli(["calibrate", "--from", world["bg_scores"], other, "--out", tmp_path / "c.h5"]), 1)
    assert "different settings (rc)" in msg
