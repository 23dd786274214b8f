"""`varfx predict`: predicted tracks over BED regions, for the reference and per sample."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from varfx.cli import cli
from varfx.regions_run import predict_regions

from cohort import write_cohort
from toy_models import one_hot_text, save_toy

L, BINS, BS, OFF = 64, 8, 4, 16  # output covers window positions [16, 48)


@pytest.fixture
def toy(tmp_path):
    return save_toy(tmp_path, length=L, bins=BINS, bin_size=BS, offset=OFF)


@pytest.fixture
def toy2(tmp_path):
    return save_toy(tmp_path, length=L, bins=BINS, bin_size=BS, offset=OFF, encoding="two-hot", name="toy2", seed=3)


def model_out(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x[None])[0].numpy()


def window_text(seq: str, mid: int) -> str:
    return seq[mid - L // 2: mid - L // 2 + L]


def region_sum(pred: np.ndarray, start: int, end: int, mid: int) -> np.ndarray:
    """Sum over the bins overlapping [start, end), computed from positions (the test's own rule)."""
    ws = mid - L // 2
    keep = [j for j in range(BINS) if ws + OFF + j * BS < end and ws + OFF + (j + 1) * BS > start]
    return pred[keep].sum(0)


def write_bed(path, rows):
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def test_reference_prediction_matches_the_model(tmp_path, fasta, genome_seqs, toy):
    path, model = toy
    rows = [("chr1", 500, 510, "a"), ("chr1", 1203, 1220, "b"), ("chr2", 200, 201, "c")]
    bed = write_bed(tmp_path / "r.bed", rows)
    s = predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "p.h5", tsv=tmp_path / "p.tsv")
    assert (s.regions, s.predicted) == (3, 3)
    with h5py.File(tmp_path / "p.h5") as f:
        assert f.attrs["complete"]
        assert [x.decode() for x in f["samples"][:]] == ["reference"]
        assert [x.decode() for x in f["name"][:]] == ["a", "b", "c"]
        for i, (chrom, start, end, _) in enumerate(rows):
            mid = (start + end) // 2
            pred = model_out(model, one_hot_text(window_text(genome_seqs[chrom], mid)))
            np.testing.assert_allclose(f["sum"][i, 0], region_sum(pred, start, end, mid), rtol=1e-5)
            np.testing.assert_allclose(f["total"][i, 0], pred.sum(0), rtol=1e-5)
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:5] == ["chrom", "start", "end", "name", "sample"]
    assert len(lines) == 4 and lines[2].split("\t")[:5] == ["chr1", "1203", "1220", "b", "reference"]


def test_regions_not_predicted_are_listed(tmp_path, fasta, toy):
    path, _ = toy
    # chr2 is 500 bp: a region running past its end, or wholly beyond it (a BED of another assembly), was
    # predicted on N (sums of exactly 0); the last base is fine
    bed = write_bed(tmp_path / "r.bed", [("chr1", 500, 540, "wide"), ("chrZ", 5, 9, "nowhere"),
                                         ("chr1", 700, 701, "ok"), ("chr2", 495, 505, "over_end"),
                                         ("chr2", 600, 610, "beyond"), ("chr2", 499, 500, "last_base")])
    s = predict_regions(bed, fasta, "torchscript", [str(path)], tsv=tmp_path / "p.tsv")
    assert s.skipped == {"region_outside_output": 1, "unknown_contig": 1, "outside_contig": 2}
    skipped = (tmp_path / "p.skipped.tsv").read_text().splitlines()
    assert skipped[1:] == ["chr1\t500\t540\twide\tregion_outside_output", "chrZ\t5\t9\tnowhere\tunknown_contig",
                           "chr2\t495\t505\tover_end\toutside_contig", "chr2\t600\t610\tbeyond\toutside_contig"]
    assert len((tmp_path / "p.tsv").read_text().splitlines()) == 3


def _cohort(tmp_path, seqs):
    """Three phased samples: S0 has nothing near 1000, S1 is hom-ALT at an SNV, S2 het at it and at an insertion."""
    snv_pos = 1000  # 1-based
    ref_b = seqs["chr1"][snv_pos - 1]
    alt_b = "A" if ref_b != "A" else "C"
    ins_pos = 990
    ins_ref = seqs["chr1"][ins_pos - 1]
    records = [("chr1", ins_pos, ins_ref, [ins_ref + "GGG"]), ("chr1", snv_pos, ref_b, [alt_b])]
    gts = [["0|0", "0|0", "1|0"], ["0|0", "1|1", "0|1"]]
    vcf = write_cohort(tmp_path / "cohort.vcf", records, ["S0", "S1", "S2"], gts)
    return vcf, (snv_pos, alt_b), (ins_pos, "GGG")


def _apply(seq: str, edits: list[tuple[int, str, str]]) -> tuple[str, int]:
    """Apply (1-based pos, REF, ALT) edits to text; return the text and the shift of positions after them."""
    out, shift = seq, 0
    for pos, ref, alt in sorted(edits, reverse=True):
        out = out[:pos - 1] + alt + out[pos - 1 + len(ref):]
        shift += len(alt) - len(ref)
    return out, shift


def test_samples_predicted_on_their_own_haplotypes(tmp_path, fasta, genome_seqs, toy):
    path, model = toy
    seq = genome_seqs["chr1"]
    vcf, (snv, alt_b), (ins, extra) = _cohort(tmp_path, genome_seqs)
    start, end = 1000, 1004
    mid = (start + end) // 2
    bed = write_bed(tmp_path / "r.bed", [("chr1", start, end, "x")])
    predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "b.h5", genotypes=vcf,
                    haplotypes="both", profile=True, float32=True)
    predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "m.h5", genotypes=vcf, float32=True)
    predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "r.h5")

    def hap_pred(edits):
        text, _ = _apply(seq, edits)
        shift = sum(len(a) - len(r) for p, r, a in edits if p + len(r) - 1 < mid + 1)
        return model_out(model, one_hot_text(window_text(text, mid + shift)))

    snv_edit = (snv, seq[snv - 1], alt_b)
    ins_edit = (ins, seq[ins - 1], seq[ins - 1] + extra)
    want = {  # (sample, copy) -> edits
        (0, 0): [], (0, 1): [],
        (1, 0): [snv_edit], (1, 1): [snv_edit],
        (2, 0): [ins_edit], (2, 1): [snv_edit],
    }
    with h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "m.h5") as m, h5py.File(tmp_path / "r.h5") as r:
        assert b["sum"].shape == (1, 3, 2, 3) and b["profile"].shape == (1, 3, 2, BINS, 3)
        for (s, k), edits in want.items():
            pred = hap_pred(edits)
            np.testing.assert_allclose(b["profile"][0, s, k], pred, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b["sum"][0, s, k], region_sum(pred, start, end, mid), rtol=1e-5)
        np.testing.assert_allclose(m["sum"][0], b["sum"][0].mean(1), rtol=1e-5)
        # a sample without variants in the window predicts the reference (to float32 rounding: the
        # forward batches differ)
        np.testing.assert_allclose(m["sum"][0, 0], r["sum"][0, 0], rtol=1e-6)
        assert list(b["sample_counts/missing"][:]) == [0, 0, 0]


def test_genotype_counts_cover_the_windows_read_and_go_beside_a_tsv(tmp_path, fasta, genome_seqs, toy):
    """A missing call inside the window counts; a REF-mismatched record on another contig, which no window
    reads, does not count (the file is read whole: it has no index). Without --out the counts go to
    NAME.samples.tsv, as for `varfx score`."""
    path, _ = toy
    s1, s2 = genome_seqs["chr1"], genome_seqs["chr2"]
    wrong = "A" if s2[199].upper() != "A" else "C"
    records = [("chr1", 1000, s1[999], ["A" if s1[999] != "A" else "C"]), ("chr2", 200, wrong, ["G"])]
    vcf = write_cohort(tmp_path / "c.vcf", records, ["S0", "S1"], [["./.", "0|1"], ["0|1", "1|1"]])
    bed = write_bed(tmp_path / "r.bed", [("chr1", 996, 1004, "x")])
    predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "p.h5", genotypes=vcf)
    with h5py.File(tmp_path / "p.h5") as f:
        assert f.attrs["ref_mismatch_records"] == 0
        assert list(f["sample_counts/missing"][:]) == [1, 0]
    predict_regions(bed, fasta, "torchscript", [str(path)], tsv=tmp_path / "t.tsv", genotypes=vcf)
    assert sorted(p.name for p in tmp_path.glob("t.*")) == ["t.samples.tsv", "t.skipped.tsv", "t.tsv"]
    counts = pd.read_csv(tmp_path / "t.samples.tsv", sep="\t")
    assert list(counts["sample"]) == ["S0", "S1"] and list(counts["missing"]) == [1, 0]


def test_two_hot_backend_sums_the_copies(tmp_path, fasta, genome_seqs, toy2):
    path, model = toy2
    seq = genome_seqs["chr1"]
    vcf, (snv, alt_b), _ = _cohort(tmp_path, genome_seqs)
    start, end = 996, 1004
    mid = (start + end) // 2
    bed = write_bed(tmp_path / "r.bed", [("chr1", start, end, "x")])
    predict_regions(bed, fasta, "torchscript", [str(path)], out=tmp_path / "t.h5", genotypes=vcf, samples="S1,S0")
    ref_text = window_text(seq, mid)
    alt_text, _ = _apply(seq, [(snv, seq[snv - 1], alt_b)])
    with h5py.File(tmp_path / "t.h5") as f:
        assert [x.decode() for x in f["samples"][:]] == ["S1", "S0"]
        hom_alt = model_out(model, 2 * one_hot_text(window_text(alt_text, mid)))
        hom_ref = model_out(model, 2 * one_hot_text(ref_text))
        np.testing.assert_allclose(f["total"][0, 0], hom_alt.sum(0), rtol=1e-5)
        np.testing.assert_allclose(f["total"][0, 1], hom_ref.sum(0), rtol=1e-5)


def test_cli_errors(tmp_path, fasta, toy, toy2):
    path, _ = toy
    bed = write_bed(tmp_path / "r.bed", [("chr1", 500, 510)])
    runner = CliRunner()
    base = ["predict", "--bed", str(bed), "--fasta", str(fasta), "--backend", "torchscript", "--weights", str(path)]
    res = runner.invoke(cli, base)
    assert res.exit_code == 2 and res.output.strip() == "varfx: error: nothing to write: give --out predictions.h5 (and/or --tsv)"
    res = runner.invoke(cli, base + ["--out", str(tmp_path / "o.h5"), "--samples", "S0"])
    assert res.exit_code == 2 and "--samples needs --genotypes" in res.output
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t10\n")
    res = runner.invoke(cli, ["predict", "--bed", str(bad), *base[3:], "--out", str(tmp_path / "o.h5")])
    assert res.exit_code == 1 and f"{bad}:1: not a BED line" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.partial").exists()
    rev = tmp_path / "rev.bed"
    rev.write_text("chr1\t10\t5\n")
    res = runner.invoke(cli, ["predict", "--bed", str(rev), *base[3:], "--out", str(tmp_path / "o.h5")])
    assert res.exit_code == 1 and "END must be greater than START" in res.output
    vcf, _, _ = _cohort(tmp_path, {"chr1": "A" * 2000})
    res = runner.invoke(cli, ["predict", "--bed", str(bed), "--fasta", str(fasta), "--backend", "torchscript",
                              "--weights", str(toy2[0]), "--genotypes", str(vcf), "--haplotypes", "both",
                              "--out", str(tmp_path / "o.h5")])
    assert res.exit_code == 2 and "--haplotypes is for one-hot backends" in res.output
