"""The clipnet backend on reduced-width CLIPNET folds whose outputs Keras recorded (tests/keras_goldens)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import varfx
from varfx.backends import load_backend
from varfx.backends.keras import load_keras_h5
from varfx.cli import cli
from varfx.encoding import revcomp_hot
from varfx.errors import InputError, ModelError

import reference as R
from conftest import EXAMPLES
from toy_models import one_hot_text

GOLD = Path(__file__).parent / "keras_goldens"
FOLDS = [GOLD / f"clipnet_fold{i}.h5" for i in (1, 2, 3)]


def expected_tracks(profile, quantity):
    """CLIPNET's documented rule, in numpy: profile / Σ profile × quantity, split by strand."""
    scaled = profile / profile.sum(1, keepdims=True) * quantity
    plus, minus = scaled[:, :500], scaled[:, 500:]
    return np.stack([plus, minus, plus + minus], -1)


def test_folds_averaged_and_scaled_like_keras():
    gold = [np.load(str(p).replace(".h5", ".npz")) for p in FOLDS]
    x = gold[0]["x0_0"]
    assert all(np.array_equal(g["x0_0"], x) for g in gold)
    want = expected_tracks(np.mean([g["y0_0"] for g in gold], 0), np.mean([g["y0_1"] for g in gold], 0))
    b = load_backend("clipnet", [str(p) for p in FOLDS])
    assert b.encoding == "two-hot" and b.geometry.input_length == 1000
    assert (b.geometry.output_bins, b.geometry.bin_size, b.geometry.bin_offset) == (500, 1, 250)
    assert list(b.tracks["id"]) == ["plus", "minus", "both"] and b.strand_pairs == [(0, 1)]
    with torch.no_grad():
        got = b.predict(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-5
    assert want[..., 2].sum(1) == pytest.approx(np.mean([g["y0_1"] for g in gold], 0)[:, 0], rel=1e-5)


def test_weights_folder_equals_listed_folds(tmp_path):
    for p in FOLDS:
        shutil.copy(p, tmp_path / p.name)
    x = torch.from_numpy(np.load(GOLD / "clipnet_fold1.npz")["x0_0"])
    a = load_backend("clipnet", [str(tmp_path)])
    b = load_backend("clipnet", [str(p) for p in FOLDS])
    assert len(a.folds) == 3
    with torch.no_grad():
        torch.testing.assert_close(a.predict(x), b.predict(x))


def test_bad_weights():
    with pytest.raises(InputError, match="needs --weights"):
        load_backend("clipnet", [])
    with pytest.raises(ModelError, match="is not a CLIPNET fold|2 outputs|not CLIPNET's"):
        load_backend("clipnet", [str(GOLD / "conv.h5")])


def test_empty_weights_folder(tmp_path):
    with pytest.raises(InputError, match="no .h5 or .hdf5 files"):
        load_backend("clipnet", [str(tmp_path)])


def test_folders_of_hdf5_folds_and_a_fold_named_twice(tmp_path):
    """CLIPNET's own loader also takes fold_*.hdf5; a fold named twice was averaged in twice."""
    for p in FOLDS:
        shutil.copy(p, tmp_path / (p.stem + ".hdf5"))
    (tmp_path / "sub.h5").mkdir()  # a folder named like a fold is not one
    assert len(load_backend("clipnet", [str(tmp_path)]).folds) == 3
    with pytest.raises(InputError, match=r"names the fold .* twice: each fold counts once"):
        load_backend("clipnet", [str(tmp_path), str(tmp_path / (FOLDS[0].stem + ".hdf5"))])
    with pytest.raises(InputError, match=r"sub.h5 is neither a fold file nor a folder of them|folder has no"):
        load_backend("clipnet", [str(tmp_path / "sub.h5")])


def _windows(seq, pos, ref, alt):
    return R.windows(seq, pos, ref, alt, 1000)


def test_score_example_genome_and_statistics(tmp_path):
    shutil.copy(EXAMPLES / "genome.fa", tmp_path / "genome.fa")
    lines = (EXAMPLES / "variants.vcf").read_text().splitlines()
    keep = [x for x in lines if x.startswith("#")] + [x for x in lines if not x.startswith("#")][::6]
    (tmp_path / "v.vcf").write_text("\n".join(keep) + "\n")
    args = ["score", str(tmp_path / "v.vcf"), "--fasta", str(tmp_path / "genome.fa"), "--backend", "clipnet",
            "--out", str(tmp_path / "c.h5"), "--float32", "-q"]
    for p in FOLDS:
        args += ["--weights", str(p)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(tmp_path / "c.h5")
    assert res.settings["stats"] == ["SAD", "logSED", "TOTAL", "logTOTAL", "QTL", "JSD"] and res.settings["bins"] == "all"
    assert res.stats["SAD"].shape == (len(res.variants), 3) and res.stats["QTL"].shape == (len(res.variants),)
    # an independent computation for the SNVs: windows from text, hom two-hot, the folds through the converter
    folds = [load_keras_h5(p) for p in FOLDS]
    seqs = {}
    from varfx.genome import Genome
    from varfx.encoding import decode
    g = Genome(tmp_path / "genome.fa")
    checked = 0
    for row in res.variants.itertuples():
        if len(row.ref) != 1 or len(row.alt) != 1:
            continue
        seq = seqs.setdefault(row.chrom, decode(g.codes(g.resolve(row.chrom))))
        rw, aw = _windows(seq, row.pos, row.ref, row.alt)
        x = torch.stack([one_hot_text(rw), one_hot_text(aw)]) * 2
        with torch.no_grad():
            outs = [f(x) for f in folds]
        prof = torch.stack([o[0] for o in outs]).mean(0).numpy()
        quant = torch.stack([o[1] for o in outs]).mean(0).numpy()
        tr = expected_tracks(prof, quant)
        # SAD on "both" is a difference of two near-equal quantities: float32 rounding of each (different
        # batch compositions) is ~1e-6 of the quantity, so the absolute tolerance scales with it
        tol = 2e-5 * max(1.0, abs(float(quant[0, 0])))
        np.testing.assert_allclose(res.stats["SAD"][row.Index, 2], quant[1, 0] - quant[0, 0], rtol=1e-4, atol=tol)
        np.testing.assert_allclose(res.stats["logSED"][row.Index, 2],
                                   np.log2(quant[1, 0] + 1) - np.log2(quant[0, 0] + 1), rtol=1e-4, atol=tol)
        np.testing.assert_allclose(res.stats["QTL"][row.Index], np.sqrt(((tr[1, :, :2] - tr[0, :, :2]) ** 2).sum()),
                                   rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked >= 20
    # a personal run takes the backend's default bins too (all): a hom-REF sample scores as the reference
    cohort = [x + "\tFORMAT\tR" if x.startswith("#CHROM") else x if x.startswith("#") else x + "\tGT\t0|0"
              for x in keep]
    (tmp_path / "cohort.vcf").write_text("\n".join(cohort) + "\n")
    personal = [str(tmp_path / "p.h5") if a == str(tmp_path / "c.h5") else a for a in args]
    r = CliRunner().invoke(cli, personal + ["--genotypes", str(tmp_path / "cohort.vcf")])
    assert r.exit_code == 0, r.output
    import h5py
    import json
    with h5py.File(tmp_path / "p.h5") as f:
        assert json.loads(f.attrs["settings"])["bins"] == "all"
        assert f["SAD"].shape == (len(res.variants), 1, 3)
        for stat in ("SAD", "logSED"):
            np.testing.assert_allclose(f[stat][:, 0], res.stats[stat], rtol=1e-4, atol=1e-4)  # float32 noise


def test_rc_flips_positions_and_swaps_strands():
    b = load_backend("clipnet", [str(p) for p in FOLDS])
    from varfx.predict import Predictor
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (2, 1000)).astype(np.uint8)
    pred_rc = Predictor(b, torch.device("cpu"), rc=True, strand_perm=[1, 0, 2])
    pred_fwd = Predictor(b, torch.device("cpu"))
    with torch.no_grad():
        got = pred_rc.predict_windows(a)
        fwd = pred_fwd.predict_windows(a)
        x = torch.nn.functional.one_hot(torch.from_numpy(a).long(), 4).float() * 2
        rev = b.predict(revcomp_hot(x)).flip(1)[..., [1, 0, 2]]
    torch.testing.assert_close(got, (fwd + rev) / 2, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(fwd, rev, atol=1e-4)  # the model is not already symmetric
