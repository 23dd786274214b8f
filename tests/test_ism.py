"""`varfx ism`: saturation mutagenesis checked against `varfx score`, hand-built windows and a linear model."""

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import varfx
from varfx.cli import cli
from varfx.ism import read_ism

import reference as R
from conftest import EXAMPLES, write_fasta, write_vcf
from toy_models import LinearConv, one_hot_text, save_module, save_toy

LENGTH, BINS, BIN_SIZE, OFFSET = 64, 8, 4, 16  # save_toy's geometry
STATS = ["SAD", "logSED", "D1", "D2"]


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def ism_args(fasta, weights, region, out, *extra):
    return ["ism", "--region", region, "--fasta", fasta, "--backend", "torchscript", "--weights", weights,
            "--out", out, "-q", *extra]


def hand_ensemble(model, seq, center, pos, base, shifts=(0,), rc=False, length=LENGTH, bin_size=BIN_SIZE):
    """REF and ALT predictions of one mutation, the window centred on ``center`` (1-based) and built by
    string slicing; shifts realigned by round(s / bin_size) bins and strands averaged (docs/windows.md)."""
    c = length // 2
    preds_r, preds_a = [], []
    for s in shifts:
        k = R.shift_bins(s, bin_size)
        start = center - 1 - c + s
        ref_w = R.text_window(seq, start, length)
        i = pos - 1 - start
        alt_w = ref_w[:i] + base + ref_w[i + 1:]
        for strand in ([False, True] if rc else [False]):
            preds_r.append((k, R.predict(model, ref_w, strand)))
            preds_a.append((k, R.predict(model, alt_w, strand)))
    return R.average_realigned(preds_r), R.average_realigned(preds_a)


@pytest.fixture
def toy(tmp_path):
    weights, model = save_toy(tmp_path)
    return weights, model


def test_one_base_region_equals_varfx_score(tmp_path, fasta, genome_seqs, toy):
    """A 1-bp region's window is centred on that base: its ISM values are `varfx score`'s for the 3 SNVs."""
    weights, _ = toy
    opts = ["--stat", "SAD,logSED,D1,D2", "--bins", "variant:6", "--rc", "--shifts", "-1,0,2"]
    seq = genome_seqs["chr1"]
    for pos in (5, 310, 1000):  # near the contig start (N-padded), soft-masked, plain
        ref = seq[pos - 1].upper()
        alts = [b for b in "ACGT" if b != ref]
        vcf = write_vcf(tmp_path / f"v{pos}.vcf", [("chr1", pos, f"s{i}", ref, a) for i, a in enumerate(alts)])
        r = run(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights,
                 "--out", tmp_path / f"s{pos}.h5", "--float32", "-q", *opts])
        assert r.exit_code == 0, r.output
        r = run(ism_args(fasta, weights, f"chr1:{pos}-{pos}", tmp_path / f"i{pos}.h5", *opts))
        assert r.exit_code == 0, r.output
        sc, im = varfx.read_scores(tmp_path / f"s{pos}.h5"), read_ism(tmp_path / f"i{pos}.h5")
        assert im.ref == ref and list(im.positions) == [pos]
        for s in STATS:
            got = im.stats[s][0]  # (4, T)
            for i, a in enumerate(alts):
                np.testing.assert_allclose(got["ACGT".index(a)], sc.stats[s][i], rtol=1e-6, atol=1e-7)
            assert np.isnan(got["ACGT".index(ref)]).all()


def test_longer_region_equals_hand_built_windows(tmp_path, fasta, genome_seqs, toy, monkeypatch):
    """A 10-bp region: every mutation scored in the one window centred on the region's centre base, over
    the bins around the window centre, equals the model run on windows built by string slicing; the
    values do not depend on how the ALT windows are chunked."""
    weights, model = toy
    seq = genome_seqs["chr1"]
    start, end = 200, 209
    center = start + 10 // 2  # the right of the two middle bases
    opts = ["--stat", "SAD,logSED,D1,D2", "--bins", "variant:5", "--rc", "--shifts", "-1,0,1"]
    r = run(ism_args(fasta, weights, f"chr1:{start}-{end}", tmp_path / "a.h5", *opts, "--tsv", tmp_path / "a.tsv"))
    assert r.exit_code == 0, r.output
    assert "mutations scored: 30" in r.output and "positions skipped: 0" in r.output
    res = read_ism(tmp_path / "a.h5")
    assert res.ref == seq[start - 1:end].upper()
    assert res.settings["center"] == center and res.settings["window_start"] == center - 1 - LENGTH // 2
    for k, pos in enumerate(range(start, end + 1)):
        ref = seq[pos - 1].upper()
        for b, base in enumerate("ACGT"):
            if base == ref:
                assert all(np.isnan(res.stats[s][k, b]).all() for s in STATS)
                continue
            rp, ap = hand_ensemble(model, seq, center, pos, base, shifts=(-1, 0, 1), rc=True)
            want = R.stats(rp, ap, 1, 1, LENGTH, BINS, BIN_SIZE, OFFSET, margin=5)
            for s in STATS:
                np.testing.assert_allclose(res.stats[s][k, b], want[s].numpy(), rtol=2e-5, atol=2e-6)
    # the long TSV holds the same numbers (7 significant digits), one row per mutation, statistic and track
    tsv = pd.read_csv(tmp_path / "a.tsv", sep="\t")
    assert list(tsv.columns) == ["chrom", "pos", "ref", "alt", "track", "stat", "value"]
    assert len(tsv) == 30 * 4 * 3
    for row in tsv.sample(40, random_state=0).itertuples():
        k, b, t = row.pos - start, "ACGT".index(row.alt), res.track_ids.index(row.track)
        assert row.ref == seq[row.pos - 1].upper()
        assert row.value == pytest.approx(float(res.stats[row.stat][k, b, t]), rel=1e-6, abs=1e-9)
    # ALT windows in chunks of 4 (REF predicted once): the same values
    monkeypatch.setattr("varfx.ism.work_unit", lambda batch, length: 4)
    summary = varfx.ism.saturation_mutagenesis(f"chr1:{start}-{end}", fasta, "torchscript", [str(weights)],
                                               tmp_path / "b.h5", stats=STATS, bins="variant:5", rc=True,
                                               shifts="-1,0,1")
    assert summary.ref_passes == 1 and summary.mutations == 30
    chunked = read_ism(tmp_path / "b.h5")
    for s in STATS:
        np.testing.assert_allclose(chunked.stats[s], res.stats[s], rtol=1e-5, atol=1e-6)  # batch composition


def test_hdf5_layout(tmp_path, fasta, genome_seqs, toy):
    weights, _ = toy
    r = run(ism_args(fasta, weights, "chr1:1,001-1,005", tmp_path / "o.h5", "--stat", "SAD,JSD", "--tracks", "0,2"))
    assert r.exit_code == 0, r.output
    assert not list(tmp_path.glob("*.partial"))
    seq = genome_seqs["chr1"]
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert f.attrs["complete"] and f.attrs["varfx_output"] == "ism"
        assert f["ref"][()].decode() == seq[1000:1005].upper()
        assert list(f["positions"][:]) == [1001, 1002, 1003, 1004, 1005]
        assert [x.decode() for x in f["target_ids"][:]] == ["t0", "t2"]
        assert f["SAD"].shape == (5, 4, 2) and f["SAD"].dtype == np.float32
        assert f["JSD"].shape == (5, 4)  # a profile statistic: one value per mutation
        ref_idx = ["ACGT".index(b) for b in seq[1000:1005].upper()]
        assert list(f["ref_code"][:]) == ref_idx
        sad = f["SAD"][:]
        for k, b in enumerate(ref_idx):
            assert np.isnan(sad[k, b]).all()
            assert np.isfinite(np.delete(sad[k], b, axis=0)).all()
        settings = json.loads(f.attrs["settings"])
        assert settings["region"] == "chr1:1001-1005" and settings["center"] == 1003
        assert settings["bins"] == "variant:128" and f.attrs["mutations_scored"] == 15
        assert f["skipped/pos"].shape == (0,)


def test_linear_model_gives_the_analytic_per_base_weights(tmp_path, fasta, genome_seqs):
    """LinearConv is linear in its input: changing base r to b at window index i changes output position q
    by W[t, b, i − q + p] − W[t, r, i − q + p] (p = kernel // 2), and a bin is the mean of its positions.
    So SAD over the summed bins is (1 / bin_size) Σ over their positions q of that difference; near the
    edge of the summed bins only part of the kernel counts, which this region straddles."""
    model = LinearConv(BINS, BIN_SIZE, OFFSET, tracks=2, kernel=9, seed=3)
    weights = save_module(tmp_path, model, "lin", length=LENGTH, bins=BINS, bin_size=BIN_SIZE, offset=OFFSET,
                          tracks=2)
    start, end = 410, 429  # 20 bp: centre 420 at index 32; bases at window indices 22..41
    r = run(ism_args(fasta, weights, f"chr1:{start}-{end}", tmp_path / "lin.h5", "--stat", "SAD,D2",
                     "--bins", "center:2"))
    assert r.exit_code == 0, r.output
    res = read_ism(tmp_path / "lin.h5")
    W = model.conv.weight.detach().numpy().astype(np.float64)  # (T, 4, K)
    K, p = W.shape[2], W.shape[2] // 2
    first = (BINS - 2) // 2  # center:2 -> bins 3, 4
    positions = np.arange(OFFSET + first * BIN_SIZE, OFFSET + (first + 2) * BIN_SIZE)
    seq = genome_seqs["chr1"]
    i0 = LENGTH // 2 - (end - start + 1) // 2
    for k in range(end - start + 1):
        i = i0 + k
        rb = "ACGT".index(seq[start - 1 + k].upper())
        for b in range(4):
            if b == rb:
                continue
            delta = np.zeros((W.shape[0], LENGTH))  # change of each conv output position
            for q in range(LENGTH):
                j = i - q + p
                if 0 <= j < K:
                    delta[:, q] = W[:, b, j] - W[:, rb, j]
            per_bin = np.stack([delta[:, positions[n * BIN_SIZE:(n + 1) * BIN_SIZE]].mean(1) for n in range(2)])
            np.testing.assert_allclose(res.stats["SAD"][k, b], per_bin.sum(0), rtol=0, atol=1e-5)
            np.testing.assert_allclose(res.stats["D2"][k, b], np.sqrt((per_bin ** 2).sum(0)), rtol=0, atol=1e-5)
    # bases far from the summed bins (kernel out of reach) have no effect at all
    assert np.nanmax(np.abs(res.stats["SAD"][0])) == 0  # index 22: 22 + 4 < 28


@pytest.mark.slow  # imports enformer-pytorch (~8 s); the test itself takes ~3 s
def test_enformer_incremental_pass_matches_full_predictions(tmp_path, monkeypatch):
    """With the Enformer backend the ALT windows take the incremental pass (REF conv tower reused); the
    values equal the full model run on hand-built windows."""
    pytest.importorskip("enformer_pytorch")
    from test_enformer import MID, MID_LENGTH, make_checkpoint
    from varfx.backends import load_backend

    _, ckpt = make_checkpoint(tmp_path / "mid", monkeypatch, MID, MID_LENGTH, seed=7)
    shutil.copy(EXAMPLES / "genome.fa", tmp_path / "genome.fa")
    b = load_backend("enformer", [str(ckpt)])
    calls, towers = [], []
    inner, tower = b.predict_ref_alt, b.model.conv_tower
    monkeypatch.setattr(b, "predict_ref_alt", lambda *a: calls.append(a[1].shape[0]) or inner(*a))
    monkeypatch.setattr(b.model, "conv_tower", lambda x: towers.append(x.shape[0]) or tower(x))
    monkeypatch.setattr("varfx.ism.work_unit", lambda batch, length: 4)  # 9 mutations in chunks of 4, 4 and 1
    tracks = "0,7,100"
    summary = varfx.ism.saturation_mutagenesis("chr1:20000-20002", tmp_path / "genome.fa", b, out=tmp_path / "e.h5",
                                               stats=["SAD", "D1"], bins="center:4", tracks=tracks)
    assert calls == [4, 4, 1] and summary.mutations == 9
    # the REF window's conv tower once (it was run again with each chunk), then each chunk's ALT patches
    assert towers == [1, 4, 4, 1], towers
    res = read_ism(tmp_path / "e.h5")
    seq = "".join(x.strip() for x in (tmp_path / "genome.fa").read_text().split(">chr2")[0].splitlines()[1:])
    c = MID_LENGTH // 2
    center = 20001
    start = center - 1 - c
    ref_w = seq[start:start + MID_LENGTH].upper()
    full = load_backend("enformer", [str(ckpt)], incremental=False)
    cols = [0, 7, 100]
    muts = [(k, pos - 1 - start, bi, base) for k, pos in enumerate((20000, 20001, 20002))
            for bi, base in enumerate("ACGT") if base != ref_w[pos - 1 - start]]
    alt_ws = [ref_w[:i] + base + ref_w[i + 1:] for _, i, _, base in muts]
    with torch.no_grad():
        y = full.predict(torch.stack([one_hot_text(w) for w in [ref_w] + alt_ws]))[:, :, cols].double()
    nb = y.shape[1]
    sel = list(range((nb - 4) // 2, (nb - 4) // 2 + 4))  # center:4
    for n, (k, _, bi, _) in enumerate(muts):
        d = y[1 + n, sel] - y[0, sel]
        np.testing.assert_allclose(res.stats["SAD"][k, bi], d.sum(0).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(res.stats["D1"][k, bi], d.abs().sum(0).numpy(), rtol=1e-4, atol=1e-5)
    assert np.nanmax(np.abs(res.stats["D1"])) > 0


def test_ref_with_n_is_skipped_and_counted(tmp_path, fasta, genome_seqs, toy):
    """chr2 holds NNNNRYK at 101..107: those positions are not mutated, stay NaN and are listed."""
    weights, _ = toy
    r = run(ism_args(fasta, weights, "chr2:95-112", tmp_path / "n.h5", "--tsv", tmp_path / "n.tsv"))
    assert r.exit_code == 0, r.output
    assert "positions skipped: 7" in r.output and "ref_not_acgt: 7" in r.output
    assert "mutations scored: 33" in r.output  # (18 − 7) × 3
    res = read_ism(tmp_path / "n.h5")
    assert res.ref == genome_seqs["chr2"][94:112].upper().replace("R", "N").replace("Y", "N").replace("K", "N")
    assert list(res.skipped["pos"]) == list(range(101, 108))
    assert set(res.skipped["reason"]) == {"ref_not_acgt"}
    sad = res.stats["SAD"]
    assert np.isnan(sad[6:13]).all()
    assert np.isfinite(sad[:6]).sum() == 6 * 3 * 3 and np.isfinite(sad[13:]).sum() == 5 * 3 * 3
    with h5py.File(tmp_path / "n.h5", "r") as f:
        assert f.attrs["positions_skipped"] == 7
    tsv = pd.read_csv(tmp_path / "n.tsv", sep="\t")
    assert len(tsv) == 33 * 2 * 3 and not tsv["pos"].between(101, 107).any()


@pytest.mark.parametrize("region, extra, code, message", [
    ("chr2:490-510", [], 1, "--region 'chr2:490-510' runs past the end of chr2 (500 bp)"),
    ("chr9:10-20", [], 1, "contig chr9 is not in"),
    ("chr1:100-164", [], 2, "--region chr1:100-164 (65 bp) does not fit in the model's 64-bp window: give at most 64 bp"),
    ("chr1:100-163", ["--shifts", "-1,0,1"], 2, "less 2 × max|shift| (1): give at most 62 bp"),
    ("chr1:0-5", [], 2, "positions are 1-based"),
    ("chr1", [], 2, "needs positions: CHROM:START-END"),
    ("chr1:x-5", [], 2, "is not of the form CHROM:START-END"),
    ("chr1:20-10", [], 2, "the end is before the start"),
    ("chr1:100-101", ["--bins", "center:100"], 2, "--bins center:100: the model has 8 output bins"),
])
def test_bad_regions_are_one_line_errors(tmp_path, fasta, toy, region, extra, code, message):
    weights, _ = toy
    r = run(ism_args(fasta, weights, region, tmp_path / "x.h5", *extra))
    assert r.exit_code == code, r.output
    assert message in r.output
    assert r.output.startswith("varfx: error:") and r.output.count("\n") == 1
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob("*.partial"))


def test_a_region_of_the_window_length_fits(tmp_path, fasta, toy):
    weights, _ = toy
    r = run(ism_args(fasta, weights, "chr1:100-163", tmp_path / "w.h5"))
    assert r.exit_code == 0, r.output
    assert read_ism(tmp_path / "w.h5").stats["SAD"].shape == (64, 4, 3)


def test_short_contig_refused_or_padded(tmp_path, toy):
    weights, model = toy
    seq = "ACGTTGCAAC" * 4  # 40 bp, shorter than the 64-bp window
    fa = write_fasta(tmp_path / "short.fa", {"tiny": seq})
    r = run(ism_args(fa, weights, "tiny:20-21", tmp_path / "s.h5"))
    assert r.exit_code == 2 and "contig tiny (40 bp) is shorter than the model's 64-bp window" in r.output
    r = run(ism_args(fa, weights, "tiny:20-21", tmp_path / "s.h5", "--short-contigs", "pad", "--bins", "all"))
    assert r.exit_code == 0, r.output
    res = read_ism(tmp_path / "s.h5")
    rp, ap = hand_ensemble(model, seq, 21, 20, "A" if seq[19] != "A" else "C")
    want = R.stats(rp, ap, 1, 1, LENGTH, BINS, BIN_SIZE, OFFSET)
    b = "ACGT".index("A" if seq[19] != "A" else "C")
    np.testing.assert_allclose(res.stats["SAD"][0, b], want["SAD"].numpy(), rtol=1e-5, atol=1e-6)


def test_options_that_do_not_apply(tmp_path, fasta, toy):
    weights, _ = toy
    r = run(ism_args(fasta, weights, "chr1:10-12", tmp_path / "x.h5", "--tsv", tmp_path / "x.h5"))
    assert r.exit_code == 2 and "--out and --tsv must be different files" in r.output
    r = run(["ism", "--region", "chr1:10-12", "--fasta", fasta, "--backend", "spliceai", "--out", tmp_path / "y.h5"])
    assert r.exit_code == 2 and "varfx ism does not work with --backend spliceai" in r.output
    r = run(ism_args(fasta, weights, "chr1:10-12", tmp_path / "nofolder" / "x.h5"))
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run(ism_args(fasta, weights, "chr1:10-12", tmp_path / "x.h5", "--bins", "middle"))
    assert r.exit_code == 2 and "--bins 'middle' is not one of" in r.output
    r = run(ism_args(fasta, weights, "chr1:10-12", tmp_path / "x.h5", "--stat", "NOPE"))
    assert r.exit_code == 2 and r.output == ("varfx: error: --stat 'NOPE' is not one of SAD, logSED, D1, D2, TOTAL, "
                                             "logTOTAL, QTL, JSD\n")
    assert not list(tmp_path.glob("x.h5*"))
