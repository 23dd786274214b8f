"""`varfx plot`: the figures exist and the numbers they draw are right (checked without varfx's own code)."""

import json
import os
import shutil
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from varfx.cli import cli

import reference as R
from conftest import ROOT, write_vcf
from toy_models import save_toy

pytest.importorskip("matplotlib", reason="matplotlib is the 'plot' extra (also in the 'test' extra)")
from varfx import plot as P  # noqa: E402

LENGTH, BINS, BIN_SIZE, OFFSET = 64, 8, 4, 16  # save_toy's geometry
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def other(b):
    return "A" if b != "A" else "C"


@pytest.fixture
def scored(tmp_path, fasta, genome_seqs, monkeypatch):
    """A scored VCF (SNV, deletion, a two-ALT record, an SNV without ID) made in tmp_path, the run's cwd."""
    monkeypatch.chdir(tmp_path)
    weights, model = save_toy(tmp_path)
    s1 = genome_seqs["chr1"].upper()
    recs = [("chr1", 500, "snv1", s1[499], other(s1[499])),
            ("chr1", 700, "del1", s1[699:705], s1[699]),
            ("chr1", 900, "multi", s1[899], ",".join(b for b in "ACGT" if b != s1[899])[:3]),
            ("chr1", 1100, ".", s1[1099], other(s1[1099]))]
    vcf = write_vcf(tmp_path / "v.vcf", recs)
    r = run(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights, "--out",
             tmp_path / "s.h5", "--rc", "--shifts", "-1,0,1", "--bins", "variant:8", "--float32", "-q"])
    assert r.exit_code == 0, r.output
    return {"h5": tmp_path / "s.h5", "model": model, "seq": genome_seqs["chr1"], "tmp": tmp_path,
            "weights": weights, "fasta": fasta}


def aligned(alt_pred, d):
    """For each REF bin, the ALT bin the statistics compare it with (docs/windows.md), NaN where none."""
    k = R.shift_bins(d, BIN_SIZE)
    out = np.full(alt_pred.shape, np.nan, dtype=np.float32)
    for j, ja in R.aligned_pairs(range(BINS), k, LENGTH // 2, BINS, BIN_SIZE, OFFSET, 1 - min(d, 0), 1 + max(d, 0)):
        out[j] = alt_pred[ja]
    return out


@pytest.mark.parametrize("vid, pos, ref_len, alt_len", [("snv1", 500, 1, 1), ("del1", 700, 6, 1),
                                                         ("chr1:1100:{r}:{a}", 1100, 1, 1)])
def test_variant_plot_draws_an_independent_prediction(scored, vid, pos, ref_len, alt_len):
    seq = scored["seq"]
    ref = seq[pos - 1:pos - 1 + ref_len].upper()
    alt = ref[0] if alt_len < ref_len else other(ref)
    vid = vid.format(r=ref, a=alt)
    out = scored["tmp"] / "fig.png"
    r = run(["plot", scored["h5"], "--variant", vid, "--out", out])
    assert r.exit_code == 0, r.output
    assert png_size(out) == (1000, round(100 * (0.6 + 2.4 * 3))) and out.stat().st_size > 10_000
    res = P.plot_variant(scored["h5"], vid, scored["tmp"] / "fig2.png")
    rp, ap = R.ensemble(scored["model"], seq, pos, ref, alt, LENGTH, BIN_SIZE, shifts=(-1, 0, 1), rc=True)
    want_alt = aligned(ap.numpy(), alt_len - ref_len)
    np.testing.assert_allclose(res.ref, rp.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.alt, want_alt, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.diff, want_alt - rp.numpy(), rtol=1e-5, atol=1e-5)
    assert res.track_ids == ["t0", "t1", "t2"]
    # bin j of the REF window starts at genome position pos − L/2 + offset + j·bin_size (1-based)
    assert list(res.bin_start) == [pos - LENGTH // 2 + OFFSET + j * BIN_SIZE for j in range(BINS)]
    lo, hi = LENGTH // 2 - 8, LENGTH // 2 + ref_len + 8  # --bins variant:8 in window coordinates
    paired = dict(R.aligned_pairs(range(BINS), R.shift_bins(alt_len - ref_len, BIN_SIZE), LENGTH // 2, BINS,
                                  BIN_SIZE, OFFSET, ref_len, alt_len))  # bins of deleted bases only: no ALT bin
    summed = [OFFSET + j * BIN_SIZE < hi and OFFSET + (j + 1) * BIN_SIZE > lo and j in paired for j in range(BINS)]
    assert sum(summed) >= 3
    assert list(res.summed) == summed
    # what the run stored is the sum of the plotted difference over the summed bins
    with h5py.File(scored["h5"], "r") as f:
        row = [i for i, (s, p) in enumerate(zip(f["snp"].asstr()[:], f["pos"][:])) if p == pos][0]
        np.testing.assert_allclose(f["SAD"][row], np.nansum(res.diff[res.summed], 0), rtol=1e-4, atol=1e-5)


def test_track_choice_and_genes(scored):
    gtf = scored["tmp"] / "genes.gtf"
    lines = [  # TSS: + strand at the start, − strand at the end; '1' is chr1 under another name
        'chr1\tt\ttranscript\t490\t900\t.\t+\t.\tgene_id "G1"; gene_name "NEAR"; transcript_id "a";',
        'chr1\tt\ttranscript\t200\t505\t.\t-\t.\tgene_id "G2"; gene_name "MINUS"; transcript_id "b";',
        '1\tt\ttranscript\t510\t600\t.\t+\t.\tgene_id "G3"; gene_name "ALIAS"; transcript_id "c";',
        'chr1\tt\ttranscript\t600\t900\t.\t+\t.\tgene_id "G4"; gene_name "FAR"; transcript_id "d";',
        'chr2\tt\ttranscript\t480\t499\t.\t+\t.\tgene_id "G5"; gene_name "OTHER"; transcript_id "e";',
    ]
    gtf.write_text("\n".join(lines) + "\n")
    out = scored["tmp"] / "g.png"
    res = P.plot_variant(scored["h5"], "snv1", out, tracks="2", genes=gtf)
    assert png_size(out) == (1000, round(100 * (0.6 + 2.4)))
    # output window of the SNV at 500: bins cover 500 − 32 + 16 … + 32 − 1 = 484..515
    assert sorted(zip(res.tss["gene_name"], res.tss["tss"])) == [("ALIAS", 510), ("MINUS", 505), ("NEAR", 490)]
    assert res.track_ids == ["t2"] and res.ref.shape == (BINS, 1)
    rp, _ = R.ensemble(scored["model"], scored["seq"], 500, scored["seq"][499].upper(),
                       other(scored["seq"][499].upper()), LENGTH, BIN_SIZE, shifts=(-1, 0, 1), rc=True)
    np.testing.assert_allclose(res.ref[:, 0], rp.numpy()[:, 2], rtol=1e-5, atol=1e-6)


def test_variant_ids_unknown_and_ambiguous(scored):
    r = run(["plot", scored["h5"], "--variant", "nope", "--out", scored["tmp"] / "x.png"])
    assert r.exit_code == 1 and "--variant 'nope' is not among the 5 scored variants" in r.output
    r = run(["plot", scored["h5"], "--variant", "multi", "--out", scored["tmp"] / "x.png"])
    s = scored["seq"][899].upper()
    alts = [b for b in "ACGT" if b != s][:2]
    assert r.exit_code == 1 and "--variant 'multi' matches 2 variants" in r.output
    assert f"chr1:900:{s}:{alts[0]}, chr1:900:{s}:{alts[1]}" in r.output and r.output.count("\n") == 1
    r = run(["plot", scored["h5"], "--variant", f"chr1:900:{s}:{alts[1]}", "--out", scored["tmp"] / "x.png"])
    assert r.exit_code == 0, r.output
    assert not (scored["tmp"] / "x.png.partial").exists()


def test_changed_or_missing_inputs_are_refused(scored):
    tmp, h5 = scored["tmp"], scored["h5"]
    spec = scored["weights"].with_suffix(".json")
    text = spec.read_text()
    spec.write_text(text + "\n")
    r = run(["plot", h5, "--variant", "snv1", "--out", tmp / "x.png"])
    assert r.exit_code == 1 and f"{spec} has changed since {h5} was made" in r.output
    spec.write_text(text)
    shutil.move(scored["weights"], tmp / "moved.pt")
    r = run(["plot", h5, "--variant", "snv1", "--out", tmp / "x.png"])
    assert r.exit_code == 1 and f"the run's weights file {scored['weights']} is missing" in r.output
    shutil.move(tmp / "moved.pt", scored["weights"])
    fai = tmp / "genome.fa.fai"
    fai.write_text(fai.read_text().replace("chrM", "chrX"))  # another genome's index
    r = run(["plot", h5, "--variant", "snv1", "--out", tmp / "x.png"])
    assert r.exit_code == 1 and "is not the FASTA" in r.output
    os.remove(fai)  # rebuilt from the FASTA: the run's index again
    r = run(["plot", h5, "--variant", "snv1", "--out", tmp / "x.png"])
    assert r.exit_code == 0, r.output
    assert not list(tmp.glob("*.partial"))


def test_ism_heat_map_is_the_file(tmp_path, fasta, genome_seqs):
    weights, _ = save_toy(tmp_path)
    r = run(["ism", "--region", "chr1:600-611", "--fasta", fasta, "--backend", "torchscript", "--weights", weights,
             "--out", tmp_path / "i.h5", "--stat", "SAD,D2", "-q"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "i.h5", "r") as f:
        sad, d2 = f["SAD"][:], f["D2"][:]
    ref = genome_seqs["chr1"][599:611].upper()
    out = tmp_path / "ism.png"
    r = run(["plot", "--ism", tmp_path / "i.h5", "--out", out])
    assert r.exit_code == 0, r.output
    assert png_size(out) == (round(100 * max(6, 2 + 0.22 * 12)), 450) and out.stat().st_size > 10_000
    res = P.plot_ism(tmp_path / "i.h5", tmp_path / "m.png")
    mean = np.full((12, 4), np.nan)
    for k in range(12):
        for b in range(4):
            if "ACGT"[b] != ref[k]:
                mean[k, b] = sum(float(x) for x in sad[k, b]) / 3
    assert res.stat == "SAD" and res.track == "mean"
    np.testing.assert_allclose(res.heat, mean.T, rtol=1e-6, atol=1e-7)  # NaN in the same places
    logo = [-sum(mean[k, b] for b in range(4) if "ACGT"[b] != ref[k]) / 3 for k in range(12)]
    np.testing.assert_allclose(res.logo, logo, rtol=1e-6, atol=1e-7)
    one = P.plot_ism(tmp_path / "i.h5", tmp_path / "t1.png", track="t1", stat="D2")
    np.testing.assert_array_equal(one.heat, d2[:, :, 1].T)
    assert one.track == "t1" and one.ref == ref
    r = run(["plot", "--ism", tmp_path / "i.h5", "--out", tmp_path / "y.png", "--track", "t9"])
    assert r.exit_code == 2 and "--track 't9' is not among the file's tracks (t0, t1, t2)" in r.output
    r = run(["plot", "--ism", tmp_path / "i.h5", "--out", tmp_path / "z.png", "--stat", "NOPE"])
    assert r.exit_code == 2 and r.output == "varfx: error: --stat 'NOPE': the file has SAD, D2\n"
    assert not list(tmp_path.glob("z.png*"))


def test_logo_letters_are_glyph_outlines(tmp_path):
    """draw_logo scales each glyph's outline to the cell: x over [i − 0.45, i + 0.45], y over [0, h]
    (or [h, 0] below the baseline)."""
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    P.draw_logo(ax, "ACGN", np.array([2.0, -1.5, 0.5, 3.0], dtype=np.float32))
    patches = ax.patches
    assert len(patches) == 3  # N gets no letter
    for p, (i, h) in zip(patches, [(0, 2.0), (1, -1.5), (2, 0.5)]):
        bb = p.get_path().get_extents()  # of the outline's curves (their control points may lie outside)
        assert (bb.x0, bb.x1) == (pytest.approx(i - 0.45), pytest.approx(i + 0.45))
        assert (bb.y0, bb.y1) == (pytest.approx(min(0, h), abs=1e-9), pytest.approx(max(0, h), abs=1e-9))


def test_option_errors(scored):
    tmp, h5 = scored["tmp"], scored["h5"]
    cases = [
        (["plot", "--out", tmp / "x.png"], 2, "give SCORES.h5 --variant ID (a variant's tracks) or --ism ism.h5"),
        (["plot", h5, "--out", tmp / "x.png"], 2, "give SCORES.h5 --variant ID"),
        (["plot", "--ism", h5, "--variant", "snv1", "--out", tmp / "x.png"], 2, "--ism draws an ISM file alone"),
        (["plot", h5, "--variant", "snv1", "--track", "t0", "--out", tmp / "x.png"], 2, "--track and --stat go with --ism"),
        (["plot", h5, "--variant", "snv1", "--out", tmp / "x.jpg"], 2, "write .png, .pdf or .svg"),
        (["plot", "--ism", h5, "--out", tmp / "x.png"], 1, "is not a `varfx ism` output"),
        (["plot", h5, "--variant", "snv1", "--tracks", "7", "--out", tmp / "x.png"], 2, "outside 0..2"),
        (["plot", h5, "--variant", "snv1", "--dpi", "0", "--out", tmp / "x.png"], 2,
         "Invalid value for '--dpi': 0 is not in the range 20<=x<=600"),
    ]
    for args, code, message in cases:
        r = run(args)
        assert r.exit_code == code and message in r.output, (args, r.output)
        assert r.output.startswith("varfx: error:") and r.output.count("\n") == 1
    r = run(["ism", "--region", "chr1:600-602", "--fasta", scored["fasta"], "--backend", "torchscript",
             "--weights", scored["weights"], "--out", tmp / "i.h5", "-q"])
    r = run(["plot", tmp / "i.h5", "--variant", "x", "--out", tmp / "x.png"])
    assert r.exit_code == 2 and "is a `varfx ism` output: draw it with `varfx plot --ism" in r.output
    with h5py.File(h5, "a") as f:  # a personal-genome run is drawn on no single background
        settings = json.loads(f.attrs["settings"])
        f.attrs["settings"] = json.dumps({**settings, "genotypes": "cohort.vcf.gz"})
    r = run(["plot", h5, "--variant", "snv1", "--out", tmp / "x.png"])
    assert r.exit_code == 2 and "comes from a --genotypes run" in r.output


def test_without_matplotlib_one_line(tmp_path):
    """matplotlib hidden from the interpreter: `varfx plot` says how to install it, in one line."""
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['varfx'] + sys.argv[1:]; "
            "from varfx.cli import main; main()")
    for args in (["plot", "--ism", str(tmp_path / "i.h5"), "--out", str(tmp_path / "x.png")],
                 ["plot", str(tmp_path / "s.h5"), "--variant", "v", "--out", str(tmp_path / "x.png")]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.returncode == 1
        assert p.stderr == "varfx: error: varfx plot needs matplotlib: pip install 'varfx[plot]'\n"
        assert not (tmp_path / "x.png").exists()
