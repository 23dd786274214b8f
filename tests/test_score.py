"""`varfx score` end to end, checked against the independent reference in reference.py."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import varfx
from varfx.errors import OptionError
from varfx.cli import cli

import reference as R
from conftest import write_vcf
from toy_models import save_toy


def other(b):
    return "A" if b.upper() != "A" else "C"


@pytest.fixture
def case(tmp_path, fasta, genome_seqs):
    """A VCF covering the variant kinds and the skip reasons, and a toy model."""
    s1, s2 = genome_seqs["chr1"].upper(), genome_seqs["chr2"].upper()
    recs = [
        ("chr1", 5, "near_start", s1[4], other(s1[4])),
        ("chr1", 100, "snv", s1[99], other(s1[99])),
        ("1", 200, "multi", s1[199], ",".join(b for b in "ACGT" if b != s1[199])),
        ("chr1", 300, "mnv", s1[299:302], "".join(other(b) for b in s1[299:302])),
        ("chr1", 400, "ins", s1[399], s1[399] + "GATTACA"),
        ("chr1", 500, "del", s1[499:509], s1[499]),
        ("chr1", 600, "complex", s1[599:602], "TT" if s1[599:602] != "TT" else "AA"),
        ("chr1", 700, "big_ins", s1[699], s1[699] + "ACGTACGTAC"),
        ("chr1", 800, "sym", s1[799], "<DEL>"),
        ("chr1", 900, "star", s1[899], other(s1[899]) + ",*"),
        ("chr1", 1000, "mismatch", other(s1[999]), "G" if other(s1[999]) != "G" else "T"),
        ("chr1", 1100, "bnd", s1[1099], s1[1099] + "[chr2:10["),
        ("chr1", 1200, "missing", s1[1199], "."),
        ("chr2", 495, "near_end", s2[494], other(s2[494])),
        ("chr9", 10, "nocontig", "A", "C"),
    ]
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 2000, "1": 2000, "chr2": 500, "chr9": 100})
    weights, model = save_toy(tmp_path)
    return {"vcf": vcf, "fasta": fasta, "weights": weights, "model": model, "seqs": genome_seqs,
            "tmp": tmp_path, "recs": recs}


def run_cli(args):
    r = CliRunner().invoke(cli, args)
    return r


def test_score_end_to_end_values_and_accounting(case):
    t = case["tmp"]
    r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(case["weights"]), "--out", str(t / "o.h5"), "--tsv", str(t / "o.tsv"),
                 "--tsv-long", str(t / "l.tsv"), "--stat", "SAD,logSED", "--stat", "D1,D2",
                 "--bins", "variant:4", "--float32", "-q"])
    assert r.exit_code == 0, r.output
    assert "records read: 15" in r.output
    assert "variants (ALT alleles): 18" in r.output
    assert "variants scored: 12" in r.output
    assert "variants skipped: 6" in r.output
    for reason in ("symbolic_allele: 1", "star_allele: 1", "ref_mismatch: 1", "breakend: 1", "missing_alt: 1",
                   "unknown_contig: 1"):
        assert reason in r.output

    res = varfx.read_scores(t / "o.h5")
    v = res.variants
    assert list(v["id"]) == ["near_start", "snv", "multi", "multi", "multi", "mnv", "ins", "del", "complex",
                             "big_ins", "star", "near_end"]
    assert len(res.skipped) == 6
    assert sorted(res.skipped["reason"]) == sorted(["symbolic_allele", "star_allele", "ref_mismatch", "breakend",
                                                    "missing_alt", "unknown_contig"])
    skipped_alt = dict(zip(res.skipped["reason"], res.skipped["alt"]))
    assert skipped_alt["breakend"] == case["recs"][11][4]  # as written: the mate contig keeps its case
    assert skipped_alt["symbolic_allele"] == "<DEL>"
    # the multi-allelic record: three ALTs, one REF pass, chrom kept as written in the VCF
    multi = v[v["id"] == "multi"]
    assert len(multi) == 3 and set(multi["chrom"]) == {"1"} and list(multi["alt_index"]) == [0, 1, 2]
    assert (v["record"].diff().dropna() >= 0).all()  # input order

    seqs = {"chr1": case["seqs"]["chr1"], "1": case["seqs"]["chr1"], "chr2": case["seqs"]["chr2"]}
    tsv = pd.read_csv(t / "o.tsv", sep="\t")
    assert list(tsv.columns[:5]) == ["chrom", "pos", "id", "ref", "alt"]
    assert len(tsv) == 12
    long = pd.read_csv(t / "l.tsv", sep="\t")
    assert len(long) == 12 * 3 * 4
    for row in v.itertuples():
        rp, ap = R.ensemble(case["model"], seqs[row.chrom], row.pos, row.ref, row.alt, 64, 4)
        want = R.stats(rp, ap, len(row.ref), len(row.alt), 64, 8, 4, 16, margin=4)
        for stat in ("SAD", "logSED", "D1", "D2"):
            got = res.stats[stat][row.Index]
            np.testing.assert_allclose(got, want[stat].numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{row.id} {row.alt} {stat}")
            got_tsv = tsv.loc[row.Index, [f"{stat}:t{i}" for i in range(3)]].to_numpy(float)
            np.testing.assert_allclose(got_tsv, want[stat].numpy(), rtol=1e-5, atol=1e-6)
        sub = long[(long["id"] == row.id) & (long["alt"] == row.alt) & (long["stat"] == "D2")]
        np.testing.assert_allclose(sub["value"].to_numpy(), want["D2"].numpy(), rtol=1e-5, atol=1e-6)
    # indels really were aligned: the 10-bp insertion shifts right-side bins by round(10/4) = 3
    big = v.index[v["id"] == "big_ins"][0]
    assert res.stats["D1"][big].max() > 0


def test_hdf5_layout_and_metadata(case):
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "o.h5",
                    rc=True, shifts="-1,0,1")
    with h5py.File(t / "o.h5") as f:
        for name in ("snp", "chr", "pos", "ref_allele", "alt_allele", "target_ids", "target_labels", "SAD", "logSED"):
            assert name in f
        assert f["pos"].dtype == np.int64
        assert f["SAD"].dtype == np.float16 and f["SAD"].shape == (12, 3)
        assert [x.decode() for x in f["target_ids"][:]] == ["t0", "t1", "t2"]
        assert f["snp"][0].decode() == "near_start"
        a = f.attrs
        assert a["complete"] and a["backend"] == "torchscript" and a["window_length"] == 64
        assert a["rc"] and list(__import__("json").loads(a["shifts"])) == [-1, 0, 1]
        assert a["indel_alignment"] == "left-anchored-bin-shift-shared" and a["ref_mismatch"] == "skip"
        assert len(__import__("json").loads(a["weights_sha256"])[0]) == 64
        assert a["varfx_version"] == varfx.__version__
        assert set(f["skipped"].keys()) >= {"chr", "pos", "id", "ref_allele", "alt_allele", "reason", "record"}
    assert not (t / "o.h5.partial").exists()


def test_positions_past_uint32_are_kept(case):
    """POS is int64: a position past 2**32 (contigs over 4.29 Gb exist) is stored as written, not wrapped."""
    t = case["tmp"]
    big = 2**32 + 5_000_001
    vcf = write_vcf(t / "big.vcf", [("chr1", 100, "snv", case["seqs"]["chr1"][99].upper(), "A"),
                                    ("chr1", big, "far", "A", "C")])
    varfx.score_vcf(vcf, case["fasta"], "torchscript", [str(case["weights"])], t / "b.h5", tsv=t / "b.tsv",
                    skipped_tsv=t / "b.skipped.tsv")
    with h5py.File(t / "b.h5") as f:
        assert f["skipped/pos"][:].tolist() == [big]
        assert [r.decode() for r in f["skipped/reason"][:]] == ["outside_contig"]
    assert pd.read_csv(t / "b.skipped.tsv", sep="\t")["pos"].tolist() == [big]


def test_rc_and_shift_ensembles_match_reference(case):
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "o.h5",
                    rc=True, shifts="-2,0,3", bins="all", stats="SAD,D2", float32=True)
    res = varfx.read_scores(t / "o.h5")
    seqs = {"chr1": case["seqs"]["chr1"], "1": case["seqs"]["chr1"], "chr2": case["seqs"]["chr2"]}
    for row in res.variants.itertuples():
        rp, ap = R.ensemble(case["model"], seqs[row.chrom], row.pos, row.ref, row.alt, 64, 4,
                            shifts=(-2, 0, 3), rc=True)
        want = R.stats(rp, ap, len(row.ref), len(row.alt), 64, 8, 4, 16)
        np.testing.assert_allclose(res.stats["SAD"][row.Index], want["SAD"].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(res.stats["D2"][row.Index], want["D2"].numpy(), rtol=1e-5, atol=1e-5)


def test_track_selection_writes_only_selected(case):
    t = case["tmp"]
    full = t / "full.h5"
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], full, rc=True, float32=True)
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "sel.h5", rc=True,
                    tracks="1", float32=True)
    a, b = varfx.read_scores(full), varfx.read_scores(t / "sel.h5")
    assert list(b.tracks["id"]) == ["t1"]
    np.testing.assert_allclose(b.stats["SAD"][:, 0], a.stats["SAD"][:, 1], rtol=1e-6)
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "re.h5",
                    tracks="track [02]$", float32=True)
    assert list(varfx.read_scores(t / "re.h5").tracks["id"]) == ["t0", "t2"]


def test_track_selections_that_select_nothing_or_are_mistyped(case, tmp_path):
    """Each is a one-line error before any output exists: an identifier file naming no track (it crashed in
    h5py), a backwards range, index-list typos that would otherwise be read as regular expressions (``-1``
    matched descriptions containing "-1"), and a file name that does not exist."""
    from varfx.tracks import select_tracks
    table = pd.DataFrame({"id": [f"t{i}" for i in range(6)], "description": ["a-1", "b,c", "x", "y", "z", "w"]})
    assert select_tracks(table, "0,2-3,3") == [0, 2, 3]
    empty = tmp_path / "ids.txt"
    empty.write_text("# none chosen\n\n")
    for spec, message in ((str(empty), "names no track identifier"), ("3-1", "the range 3-1 runs backwards"),
                          ("-1", "is not an index list"), (",", "is not an index list"),
                          ("1,,2", "is not an index list"), ("ids/missing.txt", "as a file of identifiers, it does "
                                                                               "not exist")):
        with pytest.raises(OptionError, match=message):
            select_tracks(table, spec)
    code, msg = _err(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                      "--weights", str(case["weights"]), "--tracks", str(empty), "--out", str(tmp_path / "e.h5")])
    assert code == 2 and "names no track identifier" in msg and not list(tmp_path.glob("e.h5*"))


@pytest.mark.parametrize("batch", [1, 2, 7, 1000])
def test_results_do_not_depend_on_batch_size(case, batch):
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "a.h5",
                    batch_size=64, float32=True, rc=True)
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "b.h5",
                    batch_size=batch, float32=True, rc=True)
    a, b = varfx.read_scores(t / "a.h5"), varfx.read_scores(t / "b.h5")
    pd.testing.assert_frame_equal(a.variants, b.variants)
    # float32 convolutions may round differently for different batch shapes: equal to float32 precision
    for s in a.stats:
        np.testing.assert_allclose(a.stats[s], b.stats[s], rtol=1e-5, atol=1e-6)


def test_bf16_is_close_to_fp32(case):
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "a.h5", float32=True,
                    bins="all")
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "b.h5", float32=True,
                    bins="all", precision="bf16")
    a, b = varfx.read_scores(t / "a.h5"), varfx.read_scores(t / "b.h5")
    assert not np.array_equal(a.stats["SAD"], b.stats["SAD"])  # bf16 really ran
    np.testing.assert_allclose(a.stats["SAD"], b.stats["SAD"], atol=0.15)


def test_empty_vcf_writes_valid_empty_output(case):
    t = case["tmp"]
    vcf = write_vcf(t / "empty.vcf", [])
    r = run_cli(["score", str(vcf), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(case["weights"]), "--out", str(t / "e.h5"), "--tsv", str(t / "e.tsv")])
    assert r.exit_code == 0, r.output
    assert "no records" in r.output
    res = varfx.read_scores(t / "e.h5")
    assert len(res.variants) == 0 and res.stats["SAD"].shape == (0, 3)
    assert open(t / "e.tsv").read().startswith("chrom\tpos\tid\tref\talt\tSAD:t0")


def test_ref_mismatch_error_policy(case):
    t = case["tmp"]
    r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(case["weights"]), "--out", str(t / "o.h5"), "--ref-mismatch", "error"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    # the progress bar (not -q) is closed first: the error is a line of its own
    error = r.output.splitlines()[-1]
    assert error.startswith("varfx: error: ") and r.output.count("varfx: error") == 1
    assert "chr1:1000 REF" in error and "--ref-mismatch skip" in error
    assert not (t / "o.h5").exists() and not (t / "o.h5.partial").exists() and not (t / "o.h5.parts").exists()


def _err(args):
    r = run_cli(args)
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    # a progress bar (without -q) is closed before the error, which is a line of its own
    lines = [line for line in r.output.splitlines() if line.strip() and " variants [" not in line]
    assert len(lines) == 1 and lines[0].startswith("varfx: error: "), r.output
    return r.exit_code, lines[0]


def test_user_errors_are_one_line(case):
    t = case["tmp"]
    base = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
            "--weights", str(case["weights"]), "--out", str(t / "o.h5")]
    code, msg = _err(["score", str(t / "missing.vcf")] + base[2:])
    assert "VCF file not found" in msg and code == 1
    code, msg = _err(base[:3] + [str(t / "nope.fa")] + base[4:])
    assert "FASTA file not found" in msg
    code, msg = _err(base[:5] + ["enformerx"] + base[6:])
    assert "unknown backend 'enformerx'; known backends:" in msg and "torchscript" in msg and code == 2
    code, msg = _err(base + ["--bins", "middle"])
    assert "--bins 'middle'" in msg
    code, msg = _err(base + ["--stat", "SAD,XYZ"])
    assert "--stat 'XYZ'" in msg
    code, msg = _err(base + ["--shifts", "a,b"])
    assert "--shifts" in msg
    code, msg = _err(base + ["--bins", "center:9"])  # the toy has 8 bins: it was clamped silently
    assert code == 2 and "--bins center:9: the model has 8 output bins" in msg
    code, msg = _err(base + ["--shifts", "0,-16"])  # the toy's output spans 8 bins of 4 bp: at most 15 bp
    assert code == 2 and "a shift of 16 bp moves the window by half its output or more (at most 15 bp" in msg
    # a model whose output is one base: no shift is the only one that fits (it was refused too)
    (t / "one").mkdir()
    one = save_toy(t / "one", length=64, bins=1, bin_size=1, offset=32, tracks=1, strand_pairs=())[0]
    ok = run_cli(base[:7] + [str(one)] + base[8:] + ["--out", str(t / "one.h5")])
    assert ok.exit_code == 0 and "variants scored: 12" in ok.output, ok.output
    code, msg = _err(base[:7] + [str(one)] + base[8:] + ["--shifts", "-1,0,1"])
    assert code == 2 and "this model's output is too short to shift: leave --shifts out" in msg
    code, msg = _err(base + ["--tracks", "0,9"])
    assert "outside 0..2" in msg
    code, msg = _err(base + ["--device", "cuda:3"])
    assert "--device" in msg
    code, msg = _err(base + ["--precision", "fp8"])
    assert "fp8" in msg and code == 2
    code, msg = _err(base[:-1] + [str(t / "no" / "dir" / "o.h5")])
    assert "does not exist" in msg
    code, msg = _err(base + ["--region", "chr1:1-100"])
    assert "bcftools index" in msg
    code, msg = _err(base[:2] + base[4:])
    assert "Missing option '--fasta'" in msg and code == 2
    code, msg = _err(base + ["--tsv", str(t / "o.h5")])
    assert "different files" in msg


def test_weights_that_do_not_fit_the_spec(case):
    import json
    t = case["tmp"]
    spec = json.loads(case["weights"].with_suffix(".json").read_text())
    spec["tracks"] = ["a", "b", "c", "d"]
    case["weights"].with_suffix(".json").write_text(json.dumps(spec))
    code, msg = _err(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                      "--weights", str(case["weights"]), "--out", str(t / "o.h5")])
    assert "returns (1, 8, 3) but the spec says (batch, bins, tracks) = (1, 8, 4)" in msg


def test_short_contig_error_then_skip(case, genome_seqs, tmp_path):
    weights, _ = save_toy(tmp_path, length=1024, bins=8, bin_size=4, offset=496, name="wide")
    vcf = write_vcf(tmp_path / "m.vcf", [("chrM", 10, "m", genome_seqs["chrM"][9].upper(), "N")])
    args = ["score", str(vcf), "--fasta", str(case["fasta"]), "--backend", "torchscript", "--weights",
            str(weights), "--out", str(tmp_path / "m.h5")]
    code, msg = _err(args)
    assert "contig chrM (300 bp) is shorter than the model's 1,024-bp window" in msg
    r = run_cli(args + ["--short-contigs", "skip", "-q"])
    assert r.exit_code == 0 and "short_contig: 1" in r.output
    r = run_cli(args + ["--short-contigs", "pad", "-q"])
    assert r.exit_code == 0 and "variants scored: 1" in r.output


@pytest.mark.parametrize("layout", ["declared", "undeclared", "indexed"])
def test_short_contig_refused_before_any_variant(layout, genome_seqs, tmp_path, fasta, monkeypatch):
    """A sorted VCF whose short contig comes last is refused before the first site is checked (not hours
    into the run), whether the header declares its contigs, does not (a scan), or the file is indexed; a
    declared short contig without records, or one outside --region, is no reason to refuse."""
    import varfx.run
    from varfx.windows import check_sites

    weights, _ = save_toy(tmp_path, length=1024, bins=8, bin_size=4, offset=496, name="wide")
    s1 = genome_seqs["chr1"].upper()
    chr1 = [("chr1", p, f"v{p}", s1[p - 1], other(s1[p - 1])) for p in range(600, 1400, 40)]
    mito = [("chrM", 10, "m", genome_seqs["chrM"][9].upper(), "N")]
    contigs = None if layout == "undeclared" else {"chr1": 2000, "chrM": 300}

    def vcf_of(name, recs):
        path = write_vcf(tmp_path / f"{name}.vcf", recs, contigs=contigs)
        if layout == "indexed":
            pysam = pytest.importorskip("pysam")
            pysam.tabix_index(str(path), preset="vcf", force=True)
            return Path(str(path) + ".gz")
        return path

    checked = []
    monkeypatch.setattr(varfx.run, "check_sites", lambda *a, **k: checked.append(len(a[1])) or check_sites(*a, **k))
    base = ["--fasta", str(fasta), "--backend", "torchscript", "--weights", str(weights), "-q"]
    code, msg = _err(["score", str(vcf_of("late", chr1 + mito))] + base + ["--out", str(tmp_path / "late.h5")])
    assert code == 2 and "contig chrM (300 bp) is shorter than the model's 1,024-bp window" in msg
    assert checked == [] and not list(tmp_path.glob("late.h5*"))
    r = run_cli(["score", str(vcf_of("none", chr1))] + base + ["--out", str(tmp_path / "none.h5")])
    assert r.exit_code == 0 and f"variants scored: {len(chr1)}" in r.output, r.output
    if layout == "indexed":
        r = run_cli(["score", str(vcf_of("late", chr1 + mito))] + base + ["--region", "chr1",
                                                                           "--out", str(tmp_path / "r.h5")])
        assert r.exit_code == 0 and f"variants scored: {len(chr1)}" in r.output, r.output
        code, msg = _err(["score", str(vcf_of("late", chr1 + mito))] + base + ["--region", "chr1:600-700",
                                                                                "--region", "MT",
                                                                                "--out", str(tmp_path / "m.h5")])
        assert "contig chrM (300 bp) is shorter" in msg  # the VCF's name for the region's MT


def test_outputs_may_not_name_an_input(case, tmp_path):
    """The final rename would replace the input: an output naming the VCF, the FASTA or the weights is refused
    before anything is written, and the input is left as it was."""
    t = case["tmp"]
    base = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
            "--weights", str(case["weights"])]
    from varfx.genome import build_index
    build_index(case["fasta"])
    spec, fai = case["weights"].with_suffix(".json"), Path(str(case["fasta"]) + ".fai")
    assert spec.is_file() and fai.is_file()  # read beside the weights and the FASTA
    before = {p: p.read_bytes() for p in (case["vcf"], case["fasta"], case["weights"], spec, fai)}
    for flag, target, label in (("--out", case["vcf"], "its vcf"), ("--tsv", case["fasta"], "its fasta"),
                                ("--tsv-long", case["weights"], "its weights"), ("--out", spec, "its weights"),
                                ("--skipped-tsv", fai, "its fasta")):
        extra = [] if flag == "--out" else ["--out", str(t / "o.h5")]
        code, msg = _err(base + extra + [flag, str(target)])
        assert code == 2 and f"{flag} {target} is also an input of this command ({label})" in msg
    assert {p: p.read_bytes() for p in before} == before and not (t / "o.h5").exists()


def test_help_and_version_everywhere():
    for args in (["-h"], ["score", "-h"], ["backends", "-h"], ["tracks", "-h"]):
        r = run_cli(args)
        assert r.exit_code == 0 and "Usage:" in r.output
    r = run_cli(["--version"])
    assert r.exit_code == 0 and varfx.__version__ in r.output


def test_backends_and_tracks_commands(case):
    r = run_cli(["backends"])
    assert r.exit_code == 0 and "torchscript" in r.output and "needs:" in r.output
    r = run_cli(["tracks", "--backend", "torchscript", "--weights", str(case["weights"])])
    assert r.exit_code == 0
    assert r.output.splitlines() == ["index\tid\tdescription", "0\tt0\ttoy track 0", "1\tt1\ttoy track 1",
                                     "2\tt2\ttoy track 2"]
    r = run_cli(["tracks", "--backend", "torchscript", "--weights", str(case["weights"]), "--tracks", "2$"])
    assert r.output.splitlines()[1:] == ["2\tt2\ttoy track 2"]


def test_progress_bar_on_stderr_unless_quiet(case):
    t = case["tmp"]
    args = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript", "--weights",
            str(case["weights"]), "--out", str(t / "o.h5")]
    r = CliRunner().invoke(cli, args)
    assert "variants/s" in r.stderr or " variants" in r.stderr
    r = CliRunner().invoke(cli, args + ["-q"])
    assert "variants/s" not in r.stderr and "it/s" not in r.stderr


def test_tsv_only_lists_skipped_beside_it(case):
    t = case["tmp"]
    r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(case["weights"]), "--tsv", str(t / "only.tsv"), "-q"])
    assert r.exit_code == 0, r.output
    sk = pd.read_csv(t / "only.skipped.tsv", sep="\t")
    assert sorted(sk["reason"]) == sorted(["symbolic_allele", "star_allele", "ref_mismatch", "breakend",
                                           "missing_alt", "unknown_contig"])
    assert sk.loc[sk["reason"] == "ref_mismatch", "id"].item() == "mismatch"
    assert len(pd.read_csv(t / "only.tsv", sep="\t")) == 12


def test_a_model_that_fails_past_its_load_check_is_a_one_line_error(case):
    """The model is run on one window when loaded; one that fails on a batch (written for a batch of 1), or
    whose output shape changes with the batch, stopped the run with a traceback."""
    import json
    import torch
    t = case["tmp"]

    class BatchOfOne(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 64, 4) -> (B, 8, 3)
            assert x.shape[0] == 1, "written for one sequence at a time"
            return x[:, 16:48, :3].reshape(x.shape[0], 8, 4, 3).sum(2)

    class Shrinks(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # 8 bins for one window, 7 for more
            y = x[:, 16:48, :3].reshape(x.shape[0], 8, 4, 3).sum(2)
            return y if x.shape[0] == 1 else y[:, 1:]

    spec = json.loads(case["weights"].with_suffix(".json").read_text())
    base = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript", "--out",
            str(t / "x.h5")]
    for module, words in ((BatchOfOne(), ["the model failed on a batch of", "written for one sequence at a time",
                                          "--batch-size 1"]),
                          (Shrinks(), ["the model returned (", ", 7, 3) for a batch of", "depends on the batch size"])):
        path = t / f"{type(module).__name__}.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        path.with_suffix(".json").write_text(json.dumps(spec))
        code, msg = _err(base + ["--weights", str(path)])
        assert code == 1 and all(w in msg for w in words), msg
        assert not (t / "x.h5").exists() and not (t / "x.h5.parts").exists()
    r = run_cli(base + ["--weights", str(t / "BatchOfOne.pt"), "--batch-size", "1", "-q"])
    assert r.exit_code == 0 and "variants scored: 12" in r.output, r.output


def test_variant_bins_that_no_output_bin_reaches_are_an_option_error(case, tmp_path):
    """A model whose output covers only the left of its window: --bins variant:M that cannot reach an
    output bin scored every variant NaN (and reported them scored)."""
    import json
    import torch

    class Left(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # bins of 4 bp over the first 16 of 64
            return x[:, :16, :].reshape(x.shape[0], 4, 4, 4).sum(2)

    path = tmp_path / "left.pt"
    torch.jit.save(torch.jit.script(Left()), str(path))
    path.with_suffix(".json").write_text(json.dumps({"input_length": 64, "output_bins": 4, "bin_size": 4,
                                                     "bin_offset": 0, "tracks": ["A", "C", "G", "T"]}))
    base = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
            "--weights", str(path), "--out", str(tmp_path / "l.h5")]
    code, msg = _err(base + ["--bins", "variant:8"])
    assert code == 2 and "--bins variant:8: this model's output bins cover [0, 16) of its 64-bp window" in msg
    r = run_cli(base + ["--bins", "variant:17", "-q"])  # reaches bin 3 ([12, 16)) from the centre at 32
    assert r.exit_code == 0, r.output
    assert np.isfinite(varfx.read_scores(tmp_path / "l.h5").stats["SAD"]).any()


def test_total_compares_whole_outputs_unpaired(tmp_path):
    """TOTAL and logTOTAL sum each window's whole output: with a per-base model (1-bp bins, output = A or
    not) a deletion of an A run scores SAD 0 (the paired statistics compare shared bases only) but TOTAL =
    the A count of the ALT window minus that of the REF window, counted here on the sequences by hand."""
    import json
    import random
    import torch
    from conftest import write_fasta, write_vcf

    class IsA(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 64, 4) -> (B, 64 bins, 1 track)
            return x[:, :, 0:1]

    path = tmp_path / "isa.pt"
    torch.jit.save(torch.jit.script(IsA()), str(path))
    path.with_suffix(".json").write_text(json.dumps({"input_length": 64, "output_bins": 64, "bin_size": 1,
                                                     "bin_offset": 0, "tracks": ["A"]}))
    rng = random.Random(5)
    seq = "".join(rng.choice("CGT") for _ in range(400))
    seq = seq[:200] + "A" * 12 + seq[212:]  # an A run at 0-based 200..211
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    recs = [("chr1", 200, "del_run", seq[199:212], seq[199]),  # deletes the run
            ("chr1", 150, "ins_a", seq[149], seq[149] + "AAAA"),  # inserts 4 A
            ("chr1", 300, "snv", seq[299], "A")]
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 400})
    r = run_cli(["score", str(vcf), "--fasta", str(fasta), "--backend", "torchscript", "--weights", str(path),
                 "--stat", "SAD,TOTAL,logTOTAL", "--bins", "all", "--float32", "--out", str(tmp_path / "t.h5"), "-q"])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(tmp_path / "t.h5")
    for i, (_, pos, _, ref, alt) in enumerate(recs):
        start = pos - 1 - 32  # the window: POS at index 32 of 64
        ref_w = seq[start:start + 64]
        alt_w = (seq[:pos - 1] + alt + seq[pos - 1 + len(ref):])[start:start + 64]
        want = alt_w.count("A") - ref_w.count("A")
        assert res.stats["TOTAL"][i, 0] == want, (recs[i], res.stats["TOTAL"][i, 0], want)
        assert np.isclose(res.stats["logTOTAL"][i, 0], np.log2(alt_w.count("A") + 1) - np.log2(ref_w.count("A") + 1))
    assert res.stats["TOTAL"][0, 0] == -12 and res.stats["SAD"][0, 0] == 0  # the run is gone; no shared base changed
    assert res.stats["SAD"][2, 0] == res.stats["TOTAL"][2, 0] == 1  # an SNV: the two agree


def test_score_help_names_every_statistic():
    from varfx.scores import PROFILE_STATS, STATS
    text = " ".join(run_cli(["score", "--help"]).output.split())
    stat_help = text[text.index("--stat"):][:200]
    assert all(s in stat_help for s in (*STATS, *PROFILE_STATS)), stat_help


def test_the_library_refuses_outputs_that_name_its_inputs(case, monkeypatch):
    """varfx.score_vcf, like the command line, refuses an output that would replace an input or a file read
    beside one (here the VCF, the FASTA's index, the model's spec), and refuses it before scoring (an
    --out-vcf naming the VCF used to be refused only after the whole run)."""
    import varfx.run
    t, vcf, fasta, weights = case["tmp"], case["vcf"], case["fasta"], case["weights"]
    varfx.score_vcf(vcf, fasta, "torchscript", [str(weights)], t / "first.h5")  # makes the FASTA's .fai
    fai = Path(str(fasta) + ".fai")
    before = {p: p.read_bytes() for p in (vcf, fai, weights.with_suffix(".json"))}

    def no_model(*a, **k):
        raise AssertionError("the model was loaded: the check came too late")

    monkeypatch.setattr(varfx.run, "ModelRun", no_model)
    for kwargs, what in (({"tsv": vcf}, "--tsv"), ({"out": fai}, "--out"),
                         ({"tsv": weights.with_suffix(".json")}, "--tsv"), ({"out_vcf": vcf}, "--out-vcf")):
        with pytest.raises(varfx.VarfxError, match=f"^{what} .* is also an input of this command"):
            varfx.score_vcf(vcf, fasta, "torchscript", [str(weights)], kwargs.pop("out", None), **kwargs)
    assert all(p.read_bytes() == b for p, b in before.items())


def test_top_ranks_by_max_abs_over_tracks(case):
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "o.h5", float32=True)
    res = varfx.read_scores(t / "o.h5")
    from varfx.results import top_variants
    top = top_variants(t / "o.h5", "SAD", n=4, chunk=5)  # several chunks
    best = np.abs(res.stats["SAD"]).max(1)
    order = np.argsort(-best, kind="stable")[:4]
    assert list(top["id"]) == list(res.variants["id"].iloc[order])
    assert list(top["alt"]) == list(res.variants["alt"].iloc[order])
    np.testing.assert_allclose(np.abs(top["SAD"]), best[order], rtol=1e-6)
    r = run_cli(["top", str(t / "o.h5"), "-n", "3", "--stat", "logSED"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 4
    code, msg = _err(["top", str(t / "o.h5"), "--stat", "D2"])
    assert "has no statistic 'D2'" in msg
    assert list(top_variants(t / "o.h5", "sad", n=4)["id"]) == list(top["id"])  # any case, as score --stat
    with h5py.File(t / "o.h5", "r+") as f:  # a NaN track is never the largest, even against zeros
        f["SAD"][...] = 0
        f["SAD"][0] = [np.nan, 0, -0.5]
        f["SAD"][1] = [np.nan, 0, 0]
        f["SAD"][2] = [np.nan] * 3
    top = top_variants(t / "o.h5", "SAD", n=1000)
    assert list(zip(top["id"], top["SAD"], top["track"]))[:2] == [("near_start", -0.5, "t2"), ("snv", 0.0, "t1")]
    nan_rows = top[top["SAD"].isna()]  # all tracks NaN: ranked last, with no track (as export's max_track)
    assert len(nan_rows) == 1 and nan_rows.index[0] == len(top) - 1 and nan_rows["track"].tolist() == ["."]
    from varfx.scores import track_summaries
    summ = track_summaries(np.array([[np.nan, 0, -0.5], [np.nan, 0, 0], [np.nan] * 3]), ["a", "b", "c"])
    assert list(summ["maxtrack"]) == ["c", "b", "."] and summ["maxabs"][:2].tolist() == [-0.5, 0.0]
    cal = t / "cal.h5"
    with h5py.File(cal, "w") as f:
        f.attrs["varfx_calibration"] = 1
        f.attrs["complete"] = True
    code, msg = _err(["top", str(cal)])
    assert "is a calibration file (varfx calibrate), not scores" in msg


def test_float16_overflow_is_counted_and_reported(case, tmp_path):
    import json
    import torch

    class Huge(torch.nn.Module):
        def forward(self, x):  # (B, 64, 4) -> (B, 8, 2): 65,510 and 1e5 × (number of A in each 8-bp bin)
            a = x[:, :, 0].reshape(x.shape[0], 8, 8).sum(-1, keepdim=True)
            return torch.cat([a * 65510.0, a * 1e5], dim=-1)

    path = tmp_path / "huge.pt"
    torch.jit.save(torch.jit.script(Huge()), str(path))
    path.with_suffix(".json").write_text(json.dumps({"input_length": 64, "output_bins": 8, "bin_size": 8,
                                                     "bin_offset": 0, "tracks": ["a", "b"]}))
    t = case["tmp"]
    r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(path), "--out", str(t / "h.h5"), "--bins", "all", "-q"])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(t / "h.h5")
    n_inf = int(np.isinf(res.stats["SAD"]).sum())
    assert n_inf > 0  # SNVs that remove or add an A change SAD by 1e5 > 65,504
    # track a: an SNV's ±65,510 rounds to the largest float16, ±65,504, and is not counted as inf
    assert (np.abs(res.stats["SAD"][:, 0]) == 65504).sum() > 0
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(path)], t / "f32.h5", bins="all",
                    float32=True)
    exact = varfx.read_scores(t / "f32.h5").stats["SAD"]
    assert n_inf == int((np.abs(exact) >= 65520).sum()) < int((np.abs(exact) > 65504).sum())
    assert f"values beyond float16 range (stored as inf; rerun with --float32 to keep them): SAD {n_inf}" in r.output
    with h5py.File(t / "h.h5") as f:
        assert json.loads(f.attrs["float16_overflow"])["SAD"] == n_inf
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(path)], t / "h32.h5", bins="all", float32=True)
    assert np.isfinite(varfx.read_scores(t / "h32.h5").stats["SAD"]).all()


def test_unreadable_vcf(case, monkeypatch):
    import os
    import varfx.variants
    real = os.access
    monkeypatch.setattr(varfx.variants.os, "access",
                        lambda p, mode: False if str(p) == str(case["vcf"]) and mode == os.R_OK else real(p, mode))
    code, msg = _err(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                      "--weights", str(case["weights"]), "--out", str(case["tmp"] / "o.h5")])
    assert "is not readable" in msg
    from varfx.errors import InputError
    with pytest.raises(InputError, match="VCF file is not readable"):  # the library's own check
        varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], case["tmp"] / "o.h5")


def test_options_a_backend_does_not_take(case):
    base = ["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
            "--weights", str(case["weights"]), "--out", str(case["tmp"] / "o.h5")]
    code, msg = _err(base + ["--annotation", "grch37", "--distance", "10"])
    assert "the torchscript backend does not take --annotation, --distance" in msg and code == 2
    # the enformer options, shared by every command that loads a model, are refused likewise
    for extra, name in ((["--compile"], "--compile"), (["--head", "mouse"], "--head"),
                        (["--no-incremental"], "--no-incremental")):
        code, msg = _err(base + extra)
        assert f"the torchscript backend does not take {name}" in msg and code == 2, msg
    # --out-vcf works with every backend: tests/test_annotate.py


def test_profile_statistics_qtl_and_jsd(case):
    t = case["tmp"]
    r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                 "--weights", str(case["weights"]), "--out", str(t / "p.h5"), "--tsv", str(t / "p.tsv"),
                 "--tsv-long", str(t / "pl.tsv"), "--stat", "SAD,QTL,JSD", "--tracks", "0,2", "-q"])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(t / "p.h5")
    assert res.stats["QTL"].shape == (12,) and res.stats["SAD"].shape == (12, 2)
    assert res.settings["profile_tracks"] == ["t0", "t2"]
    seqs = {"chr1": case["seqs"]["chr1"], "1": case["seqs"]["chr1"], "chr2": case["seqs"]["chr2"]}
    tsv = pd.read_csv(t / "p.tsv", sep="\t")
    long = pd.read_csv(t / "pl.tsv", sep="\t")
    for row in res.variants.itertuples():
        rp, ap = R.ensemble(case["model"], seqs[row.chrom], row.pos, row.ref, row.alt, 64, 4)
        want = R.profile_stats(rp, ap, len(row.ref), len(row.alt), 64, 8, 4, 16, tracks=[0, 2])
        for s in ("QTL", "JSD"):
            np.testing.assert_allclose(res.stats[s][row.Index], want[s], rtol=1e-4, atol=1e-6, err_msg=s)
            np.testing.assert_allclose(tsv.loc[row.Index, s], want[s], rtol=1e-4, atol=1e-6)
        assert 0 <= res.stats["JSD"][row.Index] <= 1
    assert set(long.loc[long["stat"] == "QTL", "track"]) == {"*"}
    from varfx.results import top_variants
    top = top_variants(t / "p.h5", "QTL", n=3)
    assert list(top["track"]) == ["*"] * 3
    np.testing.assert_allclose(top["QTL"], np.sort(res.stats["QTL"])[::-1][:3], rtol=1e-6)


def test_a_backend_handed_in_is_left_as_it_was(case):
    from varfx.backends import load_backend
    import torch
    b = load_backend("torchscript", [str(case["weights"])])
    varfx.score_vcf(case["vcf"], case["fasta"], b, out=case["tmp"] / "o.h5", tracks="1")
    assert b.predict(torch.zeros(1, 64, 4)).shape == (1, 8, 3)  # all tracks again


def test_threads_option_sets_torch_threads(case):
    import torch

    before = torch.get_num_threads()
    try:
        r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                     "--weights", str(case["weights"]), "--out", str(case["tmp"] / "th.h5"), "--threads", "1", "-q"])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
        r = run_cli(["score", str(case["vcf"]), "--fasta", str(case["fasta"]), "--backend", "torchscript",
                     "--weights", str(case["weights"]), "--out", str(case["tmp"] / "th.h5"), "--threads", "0"])
        assert r.exit_code == 2 and "--threads" in r.output
    finally:
        torch.set_num_threads(before)


def test_jsd_is_exact_for_nearly_identical_profiles():
    """JSD of profiles that differ by ~1e-3 (JSD ~ 1e-4): the KL terms cancel, so it is computed in float64;
    float32 arithmetic was off by up to several per cent here."""
    import torch

    from varfx.scores import Aligned, profile_stats
    rng = np.random.default_rng(0)
    ref = rng.gamma(2.0, 1.0, size=(4, 500, 2)).astype(np.float32)
    alt = (ref * (1 + 1e-3 * rng.standard_normal(ref.shape))).astype(np.float32)
    bins = torch.arange(500).repeat(4, 1)
    al = Aligned(torch.arange(4), bins, bins, torch.ones(4, 500, dtype=torch.bool))
    got = profile_stats(torch.from_numpy(ref), torch.from_numpy(alt), al, torch.tensor([0, 1]), ("JSD",))["JSD"]
    for v in range(4):
        r, a = ref[v].astype(np.float64).ravel() + 1e-10, alt[v].astype(np.float64).ravel() + 1e-10
        p, q = r / r.sum(), a / a.sum()
        m = (p + q) / 2
        want = np.sqrt(0.5 * (p * np.log2(p / m)).sum() + 0.5 * (q * np.log2(q / m)).sum())
        assert 1e-5 < want < 1e-3
        np.testing.assert_allclose(float(got[v]), want, rtol=1e-5)
