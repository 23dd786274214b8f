"""varfx perturb: CREME's tests on toy models whose answers are known in closed form, the sequences
the tests build, the example data through the CLI, and bad inputs."""

from __future__ import annotations

import math
import random
from collections import Counter

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import EXAMPLES, random_seq, write_fasta
from toy_models import save_module
from varfx.cli import cli
from varfx.perturb import COLUMNS, count_sequences, read_perturb, run_tests, tile_grid, tss_bins
from varfx.windows import Geometry

L, TILE = 1024, 64
TSS = 1501  # 1-based; the window is genome [988, 2012)
WSTART = TSS - 1 - L // 2
# CREME's layout by hand: the TSS tile [480, 544), then whole 64-bp tiles outwards
STARTS = [32 + 64 * j for j in range(7)] + [544 + 64 * j for j in range(7)]
TILE_A, OFF_A = 2, 20  # motif A sits 20 bp into tile 2 (window 180)
TILE_B, OFF_B = 9, 30  # motif B 30 bp into tile 9 (window 702)
K = 16
LAM = 300.0
B0 = 2.0


def kernel(window_pos: int) -> float:
    """The toy model's distance kernel for a motif starting at ``window_pos``."""
    return math.exp(-abs(window_pos + K / 2 - L // 2) / LAM)


class MotifPair(torch.nn.Module):
    """Two exact-match motif detectors feeding one output bin over the TSS:

    track 0 = b0 + alpha·Σ_A kernel(pos) + beta·Σ_B kernel(pos) + gamma·n_A·n_B, track 1 = 3 × track 0,
    where the sums run over full matches of motif A / B and n_A, n_B count them."""

    def __init__(self, motif_a: str, motif_b: str, alpha: float, beta: float, gamma: float, b0: float):
        super().__init__()
        w = torch.zeros(2, 4, K)
        for m, motif in enumerate((motif_a, motif_b)):
            for j, base in enumerate(motif):
                w[m, "ACGT".index(base), j] = 1.0
        self.register_buffer("w", w)
        self.register_buffer("kern", torch.tensor([kernel(i) for i in range(L - K + 1)], dtype=torch.float32))
        self.alpha, self.beta, self.gamma, self.b0 = alpha, beta, gamma, b0
        self.cut = float(K - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.relu(F.conv1d(x.transpose(1, 2), self.w) - self.cut)  # 1 at a full match, else 0
        near = (d * self.kern).sum(-1)
        n = d.sum(-1)
        y = self.b0 + self.alpha * near[:, 0] + self.beta * near[:, 1] + self.gamma * n[:, 0] * n[:, 1]
        return torch.stack([y, 3.0 * y], -1).unsqueeze(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    t = tmp_path_factory.mktemp("perturb")
    rng = random.Random(3)
    motif_a, motif_b = random_seq(K, rng), random_seq(K, rng)
    seq = list(random_seq(3000, rng))
    for motif, tile, off in ((motif_a, TILE_A, OFF_A), (motif_b, TILE_B, OFF_B)):
        p = WSTART + STARTS[tile] + off
        seq[p:p + K] = motif
    seq = "".join(seq)
    assert seq.count(motif_a) == 1 and seq.count(motif_b) == 1
    fasta = write_fasta(t / "genome.fa", {"chr1": seq, "chr2": random_seq(400, rng)})
    return {"tmp": t, "fasta": fasta, "a": motif_a, "b": motif_b, "seq": seq}


def model(world, name, alpha, beta, gamma, b0=B0):
    return save_module(world["tmp"], MotifPair(world["a"], world["b"], alpha, beta, gamma, b0), name,
                       length=L, bins=1, bin_size=32, offset=496, tracks=2)


def run(world, weights, *args, tss=f"chr1:{TSS}", name="p"):
    out, tsv = world["tmp"] / f"{name}.h5", world["tmp"] / f"{name}.tsv"
    r = CliRunner().invoke(cli, ["perturb", "--tss", tss, "--fasta", str(world["fasta"]), "--backend", "torchscript",
                                 "--weights", str(weights), "--tile-size", str(TILE), "--out", str(out),
                                 "--tsv", str(tsv), "-q", *map(str, args)])
    assert r.exit_code == 0, r.output
    return pd.read_csv(tsv, sep="\t", dtype={"tile": str, "source_tile": str}), out, r.output


def rows(table, test):
    part = table[table.test == test]
    return part.set_index(part.tile)


def test_additive_model_values(world):
    """Necessity, sufficiency, context and distance against the closed form; no interaction."""
    alpha, beta = 10.0, 6.0
    w = model(world, "additive", alpha, beta, 0.0)
    table, out, report = run(world, w, "--tracks", "0", "--top-k", 2, name="additive")
    ka, kb = kernel(STARTS[TILE_A] + OFF_A), kernel(STARTS[TILE_B] + OFF_B)
    wt = B0 + alpha * ka + beta * kb
    assert list(table.columns) == list(COLUMNS)
    assert table[table.test == "wild_type"].activity.iloc[0] == pytest.approx(wt, rel=1e-6)

    ctx = table[table.test == "context"].iloc[0]  # every motif outside the TSS tile is shuffled away
    assert ctx.activity == pytest.approx(B0, rel=1e-6) and ctx.sd == pytest.approx(0, abs=1e-6)
    assert ctx.effect == pytest.approx((wt - B0) / wt, rel=1e-5)
    assert ctx["class"] == "other"  # 0.95 ≥ effect > 0.05

    nec = rows(table, "necessity")
    want = np.zeros(14)
    want[TILE_A], want[TILE_B] = alpha * ka / wt, beta * kb / wt
    np.testing.assert_allclose(nec.effect.to_numpy(), want, atol=1e-6)
    np.testing.assert_allclose(nec.activity.to_numpy(), wt - want * wt, rtol=1e-6)

    suf = rows(table, "sufficiency")
    want = np.zeros(14)
    want[TILE_A], want[TILE_B] = alpha * ka / wt, beta * kb / wt
    np.testing.assert_allclose(suf.effect.to_numpy(), want, atol=1e-6)
    assert (suf.baseline.to_numpy() == pytest.approx(B0, rel=1e-6))

    # distance: the most sufficient tile (A) moved to every position follows the kernel
    dist = rows(table, "distance")
    assert set(dist.source_tile) == {str(TILE_A)}
    want = np.array([alpha * kernel(s + OFF_A) / wt for s in STARTS])
    np.testing.assert_allclose(dist.effect.to_numpy(), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dist.activity.to_numpy(), B0 + want * wt, rtol=1e-6)

    # interaction: the top-2 necessary tiles are A's and B's; an additive model has no interaction term
    inter = table[table.test.str.startswith("interaction")]
    assert list(inter.tile) == [f"{TILE_A}+{TILE_B}"] and list(inter.test) == ["interaction_pair"]
    assert inter.activity.iloc[0] == pytest.approx(B0, rel=1e-6)
    assert inter.expected.iloc[0] == pytest.approx(B0, rel=1e-5)
    assert inter.interaction.iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert "wrote:" in report


def test_tile_coordinates_and_distances(world):
    w = model(world, "coords", 1.0, 1.0, 0.0)
    table, _, _ = run(world, w, "--tests", "necessity", "--shuffles", 1, name="coords")
    nec = rows(table, "necessity")
    assert list(nec.index) == [str(i) for i in range(14)]
    assert list(nec.start) == [WSTART + s for s in STARTS]
    assert list(nec.end) == [WSTART + s + TILE for s in STARTS]
    assert list(nec.distance_to_tss) == [s + TILE / 2 - L // 2 for s in STARTS]
    wt = table[table.test == "wild_type"].iloc[0]
    assert (wt.start, wt.end, wt.distance_to_tss) == (WSTART, WSTART + L, 0)
    assert set(table.test) == {"wild_type", "necessity"}  # only what was asked


@pytest.mark.parametrize("alpha,beta,gamma", [(0.0, 0.0, 5.0), (8.0, 8.0, -2.0), (10.0, 6.0, 0.0)])
def test_interaction_term_is_the_multiplicative_part(world, alpha, beta, gamma):
    """AND (gamma > 0: each motif needs the other), partial redundancy (gamma < 0) and additive models:
    interaction = (activity with both shuffled − additive expectation) / WT = gamma / WT."""
    w = model(world, f"inter{gamma}", alpha, beta, gamma)
    table, out, _ = run(world, w, "--tracks", "0", "--tests", "necessity,interaction", "--top-k", 2,
                        "--shuffles", 3, name=f"inter{gamma}")
    ka, kb = kernel(STARTS[TILE_A] + OFF_A), kernel(STARTS[TILE_B] + OFF_B)
    wt = B0 + alpha * ka + beta * kb + gamma
    nec = rows(table, "necessity")
    assert nec.effect[str(TILE_A)] == pytest.approx((alpha * ka + gamma) / wt, rel=1e-5)
    assert nec.effect[str(TILE_B)] == pytest.approx((beta * kb + gamma) / wt, rel=1e-5)
    pair = table[table.test == "interaction_pair"].iloc[0]
    assert pair.tile == f"{TILE_A}+{TILE_B}"
    assert pair.activity == pytest.approx(B0, rel=1e-6)
    assert pair.expected == pytest.approx(B0 - gamma, rel=1e-5, abs=1e-6)
    assert pair.interaction == pytest.approx(gamma / wt, rel=1e-5, abs=1e-6)
    assert np.sign(round(pair.interaction, 6)) == np.sign(gamma)
    with h5py.File(out) as f:  # read back with h5py: the same numbers
        assert f["interaction/sets"][0].tolist() == [TILE_A, TILE_B]
        assert f["interaction/interaction"][0] == pytest.approx(gamma / wt, rel=1e-5, abs=1e-6)
        assert f["necessity/activity"].shape == (14, 3, 1)


@pytest.mark.parametrize("b0,alpha,want", [(0.1, 10.0, "enhancing"), (8.0, 0.0, "neutral"), (10.0, -20.0, "silencing")])
def test_context_classes(world, b0, alpha, want):
    """(WT − context) / WT above 0.95 is an enhancing context, within ±0.05 neutral, at or below −0.3 silencing."""
    w = model(world, f"ctx{b0}", alpha, 0.0, 0.0, b0=b0)
    table, _, _ = run(world, w, "--tracks", "0", "--tests", "context", "--shuffles", 2, name=f"ctx{b0}")
    wt = b0 + alpha * kernel(STARTS[TILE_A] + OFF_A)
    ctx = table[table.test == "context"].iloc[0]
    assert ctx.effect == pytest.approx((wt - b0) / wt, rel=1e-5, abs=1e-7)
    assert ctx["class"] == want


def test_tracks_are_summed(world):
    """Without --tracks the activity sums both tracks (track 1 = 3 × track 0): 4× the activity, same effects."""
    w = model(world, "tracks", 10.0, 6.0, 0.0)
    one, _, _ = run(world, w, "--tracks", "0", "--tests", "context,necessity", "--shuffles", 2, name="t1")
    both, out, _ = run(world, w, "--tests", "context,necessity", "--shuffles", 2, name="t2")
    np.testing.assert_allclose(both.activity.to_numpy(), 4 * one.activity.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(both.effect.fillna(0).to_numpy(), one.effect.fillna(0).to_numpy(), atol=1e-6)
    with h5py.File(out) as f:
        assert [x.decode() for x in f["target_ids"][:]] == ["t0", "t1"]
        act = f["necessity/activity"][:]
        np.testing.assert_allclose(act[..., 1], 3 * act[..., 0], rtol=1e-6)


def test_window_past_the_contig_start_is_n_padded(world):
    """TSS at position 200: the window starts 313 bp before the contig; tiles wholly in the padding
    change nothing when shuffled (Ns stay Ns)."""
    w = model(world, "edge", 10.0, 6.0, 0.0)
    table, _, _ = run(world, w, "--tracks", "0", "--tests", "necessity,context", "--shuffles", 2, tss="chr1:200",
                      name="edge")
    nec = rows(table, "necessity")
    padded = nec[nec.end <= 0]
    assert len(padded) == 4  # window 32..288 lies before the contig
    np.testing.assert_allclose(padded.effect.to_numpy(), 0, atol=1e-7)
    assert nec.start.iloc[0] == 199 - 512 + 32


def test_enformer_layout_matches_creme():
    """Enformer's window with CREME's 5-kb tiles: 19 tiles each side of [95804, 100804) (CREME's
    set_tile_range), 804 bp left over at each edge, and the activity on bins 447 and 448."""
    grid = tile_grid(196_608, 5000)
    assert grid.tss == (95_804, 100_804)
    assert grid.n == 38
    assert grid.starts[0] == 804 and grid.starts[18] == 90_804 and grid.starts[19] == 100_804
    assert grid.ends[-1] == 195_804
    assert tss_bins(Geometry(196_608, 896, 128, 40_960), 1) == (447, 449)
    assert tss_bins(Geometry(196_608, 896, 128, 40_960), 129) == (446, 450)
    assert tss_bins(Geometry(1024, 16, 32, 256), 1) == (7, 9)


# -- the sequences the tests build (a recording activity function, no model) --------------------------


def _pairs(codes) -> Counter:
    return Counter(zip(codes[:-1].tolist(), codes[1:].tolist()))


def test_sequences_built_by_each_test():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 4, L).astype(np.uint8)
    frame[40:70] = 4  # an N run inside tile 0 ([32, 96))
    grid = tile_grid(L, TILE)
    seen = []

    def activity(frames):
        seen.append(frames.copy())
        return frames[:, :3].astype(np.float64)  # anything of shape (N, tracks)

    S = 3
    five = ("context", "necessity", "sufficiency", "distance", "interaction")  # the greedy search: below
    res = run_tests(activity, frame, 0, grid, shuffles=S, seed=5, top_k=3, distance_tile=4, unit=7, tests=five)
    x = np.concatenate(seen)
    assert len(x) == count_sequences(grid.n, S, ("context", "necessity", "sufficiency", "distance",
                                                   "interaction"), 3)
    assert np.array_equal(x[0], frame)
    bg, x = x[1:1 + S], x[1 + S:]
    nec, suf, dist, inter = (x[:14 * S].reshape(14, S, L), x[14 * S:28 * S].reshape(14, S, L),
                             x[28 * S:42 * S].reshape(14, S, L), x[42 * S:])
    n_pos = frame == 4
    for b in bg:  # context: TSS tile native, Ns in place, the rest rearranged
        assert np.array_equal(b[480:544], frame[480:544])
        assert np.array_equal(b == 4, n_pos)
        assert (b != frame).mean() > 0.5
    for t, s in enumerate(STARTS):
        inside = np.zeros(L, bool)
        inside[s:s + TILE] = True
        for k in range(S):
            # necessity: only the tile differs, rearranged with its dinucleotides
            assert np.array_equal(nec[t, k][~inside], frame[~inside])
            assert _pairs(nec[t, k][inside]) == _pairs(frame[inside])
            # sufficiency: background k with the tile put back
            assert np.array_equal(suf[t, k][inside], frame[inside])
            assert np.array_equal(suf[t, k][~inside], bg[k][~inside])
            # distance: background k with tile 4's native sequence at position t
            assert np.array_equal(dist[t, k][inside], frame[STARTS[4]:STARTS[4] + TILE])
            assert np.array_equal(dist[t, k][~inside], bg[k][~inside])
    # interaction: the same tile shuffles as in the necessity test, several tiles at once
    assert len(inter) == len(res.sets) * S
    for i, tiles in enumerate(res.sets):
        for k in range(S):
            want = frame.copy()
            for t in tiles:
                want[STARTS[t]:STARTS[t] + TILE] = nec[t, k][STARTS[t]:STARTS[t] + TILE]
            assert np.array_equal(inter[i * S + k], want)
    assert res.sets == [tuple(sorted(p)) for p in [res.top[:2], [res.top[0], res.top[2]], res.top[1:]]] \
        + [tuple(sorted(res.top))]


def test_seed_and_batching():
    frame = np.random.default_rng(1).integers(0, 4, L).astype(np.uint8)
    grid = tile_grid(L, TILE)

    def activity(frames):  # depends on the exact sequence: a weighted sum of codes
        return (frames * np.arange(L) % 7).sum(1, keepdims=True).astype(np.float64)

    a = run_tests(activity, frame, 0, grid, shuffles=2, seed=1, unit=1)
    b = run_tests(activity, frame, 0, grid, shuffles=2, seed=1, unit=1000)
    c = run_tests(activity, frame, 0, grid, shuffles=2, seed=2, unit=64)
    for name in ("context", "necessity", "sufficiency", "distance", "interaction", "greedy"):
        assert np.array_equal(getattr(a, name).activity, getattr(b, name).activity)
    assert a.greedy.tiles == b.greedy.tiles
    alone = run_tests(activity, frame, 0, grid, shuffles=2, seed=1, unit=5, tests=("greedy",))
    assert alone.greedy.tiles == a.greedy.tiles  # its first round computed, or taken from the necessity test
    assert np.array_equal(alone.greedy.activity, a.greedy.activity)
    assert not np.array_equal(a.necessity.activity, c.necessity.activity)
    assert not np.array_equal(a.context.activity, c.context.activity)


# -- the greedy search (CREME's higher-order interaction test) ---------------------------------------


@pytest.mark.parametrize("gamma", [5.0, 0.0])
def test_greedy_search_against_the_closed_form(world, gamma):
    """Round 1 takes the tile whose shuffle lowers the activity most (A: alpha·kA + gamma), round 2 the
    other motif's tile; the trace ends at b0 and exceeds the additive expectation by gamma / WT."""
    alpha, beta = 10.0, 6.0
    w = model(world, f"greedy{gamma}", alpha, beta, gamma)
    table, out, report = run(world, w, "--tracks", "0", "--tests", "greedy", "--top-k", 3, "--shuffles", 2,
                             name=f"greedy{gamma}")
    ka, kb = kernel(STARTS[TILE_A] + OFF_A), kernel(STARTS[TILE_B] + OFF_B)
    wt = B0 + alpha * ka + beta * kb + gamma
    g = table[table.test == "greedy"]
    assert list(g["round"]) == [1, 2, 3]
    assert list(g.tile)[:2] == [str(TILE_A), str(TILE_B)]
    assert list(g.tile)[2] == "0"  # nothing left to lower: the first of the tied tiles
    after = [wt - alpha * ka - gamma, B0, B0]
    np.testing.assert_allclose(g.activity, after, rtol=1e-5)
    np.testing.assert_allclose(g.baseline, [wt] + after[:2], rtol=1e-5)
    np.testing.assert_allclose(g.effect, [(wt - a) / wt for a in after], rtol=1e-5)
    expected = [wt - alpha * ka - gamma, wt - alpha * ka - beta * kb - 2 * gamma]
    np.testing.assert_allclose(g.expected[:2], expected, rtol=1e-5)
    assert g.interaction.iloc[1] == pytest.approx(gamma / wt, rel=1e-5, abs=1e-6)
    assert "greedy search (enhancers): tiles 2, 9, 0" in report
    with h5py.File(out) as f:
        assert f["greedy/tiles"][:].tolist() == [TILE_A, TILE_B, 0]
        cand = f["greedy/candidates"][:]
        assert cand.shape == (3, 14) and np.isnan(cand[1, TILE_A]) and np.isnan(cand[2, [TILE_A, TILE_B]]).all()
        assert cand[0, TILE_A] == pytest.approx(after[0], rel=1e-5)  # round 1's candidates: single tiles
        assert f["greedy"].attrs["find"] == "enhancers"
    # silencers: the largest rise; this model has none, so the first tile whose shuffle changes nothing
    table, _, _ = run(world, w, "--tracks", "0", "--tests", "greedy", "--top-k", 1, "--greedy-find", "silencers",
                      name=f"greedy_s{gamma}")
    g = table[table.test == "greedy"]
    assert list(g.tile) == ["0"] and g.activity.iloc[0] == pytest.approx(wt, rel=1e-6)


def test_greedy_search_builds_its_sequences_round_by_round():
    """Each round shuffles every tile left in the sequence the earlier rounds left behind, and keeps the
    taken tile's shuffle whose activity is closest to the round's mean (checked from the recorded frames)."""
    frame = np.random.default_rng(4).integers(0, 4, L).astype(np.uint8)
    grid = tile_grid(L, TILE)
    seen = []
    weights = np.random.default_rng(5).normal(size=(L, 4))

    def activity(frames):
        seen.append(frames.copy())
        return weights[np.arange(L), frames].sum(1, keepdims=True)

    S, R = 3, 3
    res = run_tests(activity, frame, 0, grid, shuffles=S, seed=2, top_k=R, tests=("greedy",), unit=5)
    x = np.concatenate(seen)
    assert len(x) == 1 + (14 + 13 + 12) * S == count_sequences(14, S, ("greedy",), R)
    x = x[1:]
    current, left, taken = frame.copy(), list(range(14)), []
    for r in range(R):
        block = x[:len(left) * S].reshape(len(left), S, L)
        x = x[len(left) * S:]
        totals = weights[np.arange(L), block].sum(-1)  # (left, S)
        for i, t in enumerate(left):  # only tile t differs from the current sequence
            outside = np.ones(L, bool)
            outside[STARTS[t]:STARTS[t] + TILE] = False
            assert all(np.array_equal(block[i, k][outside], current[outside]) for k in range(S))
        i = int(np.argmin(totals.mean(1)))
        k = int(np.argmin(np.abs(totals[i] - totals[i].mean())))
        taken.append(left.pop(i))
        current = block[i, k].copy()
    assert res.greedy.tiles == taken
    np.testing.assert_allclose(res.greedy.activity.sum(-1).mean(-1)[-1],
                               weights[np.arange(L), block[i]].sum(-1).mean())


# -- the bundled example through the CLI --------------------------------------------------------------


def test_example_data_cli(tmp_path):
    out, tsv = tmp_path / "p.h5", tmp_path / "p.tsv"
    r = CliRunner().invoke(cli, ["perturb", "--tss", "chr1:32126", "--fasta", str(EXAMPLES / "genome.fa"),
                                 "--backend", "torchscript", "--weights", str(EXAMPLES / "model.pt"),
                                 "--tile-size", "64", "--out", str(out), "--tsv", str(tsv), "-q"])
    assert r.exit_code == 0, r.output
    assert "context: activity" in r.output and "wrote:" in r.output
    table = pd.read_csv(tsv, sep="\t", dtype={"tile": str, "source_tile": str})
    counts = table.test.value_counts().to_dict()
    assert counts == {"wild_type": 1, "context": 1, "necessity": 14, "sufficiency": 14, "distance": 14,
                      "interaction_pair": 3, "interaction_set": 1, "greedy": 3}
    # the CNN sees about ±75 bp around its bins: tiles far from the TSS bins change nothing
    nec = rows(table, "necessity")
    far = nec[(nec.distance_to_tss.abs() >= 192)]
    assert len(far) == 10
    np.testing.assert_allclose(far.effect.to_numpy(), 0, atol=1e-5)
    # the planted motifs next to the TSS tile (tiles 6 and 7) carry the activity
    assert set(nec.effect.nlargest(2).index) == {"6", "7"}
    # the moved tile at its own position is the sufficiency row of that tile (same backgrounds)
    dist, suf = rows(table, "distance"), rows(table, "sufficiency")
    src = dist.source_tile.iloc[0]
    assert src == suf.effect.idxmax()
    assert dist.activity[src] == pytest.approx(suf.activity[src], rel=1e-6)
    # the HDF5 holds the same table, and the raw per-shuffle activities behind it
    back, settings = read_perturb(out)
    assert settings["tile_size"] == 64 and settings["tss"] == "chr1:32126" and settings["shuffles"] == 10
    np.testing.assert_allclose(back.activity.to_numpy(), table.activity.to_numpy(), rtol=1e-6)
    with h5py.File(out) as f:
        act = f["necessity/activity"][:]
        assert act.shape == (14, 10, 3)
        np.testing.assert_allclose(act.sum(-1).mean(-1), nec.activity.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(act.sum(-1).std(-1), nec.sd.to_numpy(), rtol=1e-5, atol=1e-7)
        assert f.attrs["complete"] and list(f["tiles/start"][:]) == list(nec.start)
    assert not list(tmp_path.glob("*.partial"))


def test_example_with_rc_and_shifts(tmp_path):
    tsv = tmp_path / "rc.tsv"
    r = CliRunner().invoke(cli, ["perturb", "--tss", "chr1:32126", "--fasta", str(EXAMPLES / "genome.fa"),
                                 "--backend", "torchscript", "--weights", str(EXAMPLES / "model.pt"),
                                 "--tile-size", "64", "--tsv", str(tsv), "--rc", "--shifts", "-1,0,1",
                                 "--tests", "context,necessity", "--shuffles", "2", "--tracks", "motif A", "-q"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tsv, sep="\t")
    assert table.activity.notna().all() and len(table) == 16
    nec = table[table.test == "necessity"]
    np.testing.assert_allclose(nec[nec.distance_to_tss.abs() >= 192].effect.to_numpy(), 0, atol=1e-5)


def test_zero_wild_type_activity_reports_nan_effects(world):
    """A model whose activity is 0 everywhere: the effects are NaN, the report says why, the run succeeds
    (the report used to crash on the all-NaN interactions)."""
    table, out, output = run(world, model(world, "zero", 0.0, 0.0, 0.0, b0=0.0), name="zero")
    assert "the wild-type activity is 0: normalised effects are undefined (NaN)" in output
    assert (table.activity == 0).all() and table.effect.isna().all()
    assert "largest interaction" not in output and out.exists()


# -- bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,code,message", [
    (["--tss", "chr9:100"], 1, "contig chr9 is not in"),
    (["--tss", "chr1:3001"], 1, "position 3,001 is outside chr1 (1..3,000)"),
    (["--tss", "chr1:0"], 1, "is outside chr1"),
    (["--tss", "chr1-100"], 2, "is not of the form CHROM:POS"),
    (["--tile-size", "5000"], 2, "--tile-size 5,000 is larger than the model's 1,024-bp window"),
    (["--tile-size", "600"], 2, "leaves no tile beside the TSS tile"),
    (["--tile-size", "1"], 2, "at least 2 bp"),
    (["--top-k", "15"], 2, "--top-k 15 is larger than the number of tiles (14)"),
    (["--top-k", "1"], 2, "needs at least 2 tiles"),
    (["--distance-tile", "14"], 2, "--distance-tile 14 is not a tile index (0..13)"),
    (["--tests", "necessity,bogus"], 2, "choose from context, necessity"),
    (["--tests", "distance"], 2, "add sufficiency to --tests"),
    (["--tests", "interaction"], 2, "add necessity to --tests"),
    (["--tests", "greedy", "--top-k", "0"], 2, "--top-k 0: the greedy search needs at least 1 round"),
    (["--tests", "greedy", "--top-k", "15"], 2, "--top-k 15 is larger than the number of tiles (14)"),
    (["--greedy-find", "promoters"], 2, "'promoters' is not one of 'enhancers', 'silencers'"),
    (["--shuffles", "0"], 2, "--shuffles 0"),
    (["--tss-margin", "0"], 2, "--tss-margin 0"),
    (["--no-out"], 2, "nothing to write"),
    (["--tss", "chr1:,"], 2, "is not of the form CHROM:POS"),
    (["--seed", "-1"], 2, "-1 is not in the range x>=0"),
])
def test_bad_inputs(world, args, code, message):
    w = model(world, "bad", 1.0, 1.0, 0.0)
    base = {"--tss": f"chr1:{TSS}", "--tile-size": "64"}
    outs = ["--tsv", str(world["tmp"] / "bad.tsv")]
    rest = []
    for flag, value in zip(args[::2], args[1::2] + [None]):
        if flag == "--no-out":
            outs = []
        elif flag in base:
            base[flag] = value
        else:
            rest += [flag, value]
    cmd = ["perturb", "--fasta", str(world["fasta"]), "--backend", "torchscript", "--weights", str(w), "-q", *outs,
           *[x for kv in base.items() for x in kv], *rest]
    r = CliRunner().invoke(cli, cmd)
    assert r.exit_code == code, r.output
    assert message in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not (world["tmp"] / "bad.tsv").exists()
