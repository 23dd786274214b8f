"""The spliceai backend against the official ``spliceai`` 1.3.1 command (tests/spliceai_golden).

The golden outputs were made once by ``tests/spliceai_golden/make_golden.py`` with
TensorFlow.  These tests need only the files of the installed spliceai package (its
five .h5 models and grch37 table), never its code or TensorFlow.

The five models on 10,101-bp windows cost about 0.4 s per window on two CPU cores, so
the runs share one set of loaded models, and a run that predicts exactly the batches of
an earlier one (the ``--mask`` runs) reuses its predictions (:class:`_Remembered`).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from cyvcf2 import VCF

import varfx
from varfx.backends import spliceai as S
from varfx.cli import cli
from varfx.vcfout import AnnotatedVCFWriter, InfoField

GOLDEN = Path(__file__).parent / "spliceai_golden"
CUSTOM_TABLE = GOLDEN / "custom_genes.txt"
needs_package = pytest.mark.skipif(S.package_dir() is None,
                                   reason="needs the spliceai package's model files: pip install spliceai")
slow = pytest.mark.slow  # the five models on ~10-kb windows: ~0.2 s per window on two CPU cores

#: golden run -> (VCF, varfx options); the official outputs are official/<run>.vcf and .padded.vcf
RUNS = {
    "main_D50": ("main.vcf", ["--annotation", "grch37", "--batch-size", "8"]),
    "main_D50_M1": ("main.vcf", ["--annotation", "grch37", "--batch-size", "8", "--mask"]),
    "distance_D200": ("distance.vcf", ["--annotation", "grch37", "--distance", "200", "--batch-size", "8"]),
    "custom_D50": ("custom.vcf", ["--annotation", str(CUSTOM_TABLE), "--batch-size", "3"]),
    "custom_D50_M1": ("custom.vcf", ["--annotation", str(CUSTOM_TABLE), "--batch-size", "3", "--mask"]),
}
#: records the package skips because their window runs past the contig end; varfx pads with N
NEAR_END = {"main_D50": {"near_end_cryptic"}, "main_D50_M1": {"near_end_cryptic"},
            "distance_D200": {"near_end_at_200"}, "custom_D50": {"M_near_end_donor"},
            "custom_D50_M1": {"M_near_end_donor"}}
#: record ID -> skip reason of its ALTs (main.vcf; the star record's second ALT)
MAIN_SKIPPED = {
    "far_upstream": "no_gene", "before_OR4F5": "no_gene", "after_OR4F5": "no_gene", "intergenic": "no_gene",
    "mnv": "spliceai_mnv", "complex": "spliceai_mnv", "long_deletion": "spliceai_ref_too_long",
    "ref_mismatch": "ref_mismatch", "symbolic": "symbolic_allele", "star": "star_allele",
    "missing_alt": "missing_alt", "outside_contig": "outside_contig", "unknown_contig": "unknown_contig",
}
CUSTOM_SKIPPED = {"chr1_not_in_table": "no_gene", "before_genes": "no_gene", "after_genes": "no_gene"}


class _Remembered(torch.nn.Module):
    """A model that remembers its outputs by input, so that a batch predicted before is not predicted again."""

    def __init__(self, model: torch.nn.Module, memory: dict):
        super().__init__()
        self.model, self.memory = model, memory

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        key = (tuple(x.shape), hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in self.memory:
            self.memory[key] = self.model(x)
        return self.memory[key]


@pytest.fixture(scope="module")
def models():
    """The package's models, loaded once for the module and remembering their predictions."""
    loaded = [_Remembered(m, {}) for m in S.load_models(S.model_files(None))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "load_models", lambda paths: loaded)
        yield loaded


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a copy of the golden genome (its .fai index is made there, not in the repository)."""
    path = tmp_path_factory.mktemp("spliceai")
    shutil.copy(GOLDEN / "genome.fa", path / "genome.fa")
    return path


def score(vcf: Path, fasta: Path, *args) -> "click.testing.Result":  # noqa: F821
    return CliRunner().invoke(cli, ["score", str(vcf), "--fasta", str(fasta), "--backend", "spliceai", *args])


@pytest.fixture(scope="module")
def runs(models, work):
    """Every golden run through the CLI: name -> (CLI result, output paths)."""
    done = {}
    for name, (vcf, options) in RUNS.items():
        paths = {"out": work / f"{name}.h5", "tsv": work / f"{name}.tsv",
                 "vcf": work / (f"{name}.vcf.gz" if name.endswith("D50") else f"{name}.vcf")}
        result = score(GOLDEN / vcf, work / "genome.fa", *options, "--out", str(paths["out"]),
                       "--tsv", str(paths["tsv"]), "--out-vcf", str(paths["vcf"]), "-q")
        assert result.exit_code == 0, result.output
        done[name] = (result, paths)
    return done


# ---------------------------------------------------------------------------------------------------------------------
# Reading the golden and varfx's outputs


def spliceai_entries(path: Path) -> dict[str, list[str]]:
    """Record ID -> its SpliceAI INFO entries (empty when it has none), in file order."""
    out = {}
    for rec in VCF(str(path)):
        value = rec.INFO.get("SpliceAI")
        out[rec.ID] = value.split(",") if value else []
    return out


def official(name: str) -> tuple[dict[str, list[str]], set[str]]:
    """The package's entries per record ID, near-end records taken from the N-padded run; and
    the IDs of those records."""
    real = spliceai_entries(GOLDEN / "official" / f"{name}.vcf")
    padded = spliceai_entries(GOLDEN / "official" / f"{name}.padded.vcf")
    near_end = {i for i in real if not real[i] and padded[i]}
    assert all(real[i] == padded[i] for i in real if i not in near_end)  # padding changes nothing else
    return {i: real[i] or padded[i] for i in real}, near_end


def parse_entry(entry: str) -> tuple[str, str, list[float] | None, list[int] | None]:
    fields = entry.split("|")
    if fields[2] == ".":
        return fields[0], fields[1], None, None
    return fields[0], fields[1], [float(v) for v in fields[2:6]], [int(v) for v in fields[6:10]]


# ---------------------------------------------------------------------------------------------------------------------
# Against the golden


@slow
@needs_package
@pytest.mark.parametrize("name", list(RUNS))
def test_out_vcf_carries_the_official_spliceai_entries(runs, name):
    want, near_end = official(name)
    got = spliceai_entries(runs[name][1]["vcf"])
    assert list(got) == list(want)  # every record, in input order
    assert near_end == NEAR_END[name]
    for rid in want:
        assert got[rid] == want[rid], rid


@needs_package
def test_lower_case_alt_is_written_as_in_the_record(models, work, tmp_path):
    """The package copies the ALT into ALLELE as written: a lower-case ALT keeps its case there (the scores
    are those of the upper-case ALT)."""
    lines = (GOLDEN / "main.vcf").read_text().splitlines()
    body = [line.split("\t") for line in lines if not line.startswith("#")]
    rec = next(f for f in body if f[2] == "decoy_donor")
    rec[4] = rec[4].lower()
    (tmp_path / "lc.vcf").write_text("\n".join([x for x in lines if x.startswith("#")] + ["\t".join(rec)]) + "\n")
    r = score(tmp_path / "lc.vcf", work / "genome.fa", "--annotation", "grch37", "--out-vcf", str(tmp_path / "o.vcf"),
              "-q")
    assert r.exit_code == 0, r.output
    want = official("main_D50")[0]["decoy_donor"]
    assert want and all(e.startswith(rec[4].upper() + "|") for e in want)
    assert spliceai_entries(tmp_path / "o.vcf")["decoy_donor"] == [rec[4] + e[1:] for e in want]


@needs_package
def test_golden_exercises_masking_and_multiple_genes():
    """The goldens differ with and without -M 1, and some records hold entries for two genes."""
    for plain, masked in (("main_D50", "main_D50_M1"), ("custom_D50", "custom_D50_M1")):
        assert official(plain)[0] != official(masked)[0]
    entries, _ = official("custom_D50")
    assert {len({parse_entry(e)[1] for e in v}) for v in entries.values()} >= {0, 1, 2}


@slow
@needs_package
@pytest.mark.parametrize("name", list(RUNS))
def test_h5_and_tsv_hold_unrounded_official_scores(runs, name):
    want, _ = official(name)
    paths = runs[name][1]
    res = S.read_spliceai(paths["out"])
    table = res.scores
    expected = {}
    for rid, entries in want.items():
        for e in entries:
            alt, gene, ds, dp = parse_entry(e)
            if ds is not None:
                expected[(rid, alt, gene)] = (ds, dp)
    assert sorted(zip(table["id"], table["alt"], table["gene"])) == sorted(expected)
    for row in table.itertuples():
        ds, dp = expected[(row.id, row.alt, row.gene)]
        got = [getattr(row, c) for c in S.SCORES]
        assert np.all(np.abs(np.array(got) - ds) <= 0.005 + 1e-6), (row.id, got, ds)
        assert [getattr(row, c) for c in S.POSITIONS] == dp, row.id
        assert table["DS_AG"].dtype == np.float32 and table["DP_AG"].dtype == np.int32
    tsv = pd.read_csv(paths["tsv"], sep="\t", dtype={"chrom": str})
    assert list(tsv.columns) == ["chrom", "pos", "id", "ref", "alt", *S.COLUMNS]
    assert list(tsv["id"]) == list(table["id"]) and list(tsv["gene"]) == list(table["gene"])
    for c in S.SCORES:
        np.testing.assert_allclose(tsv[c].to_numpy(), table[c].to_numpy(), rtol=1e-6, atol=1e-12)
    for c in S.POSITIONS:
        assert list(tsv[c]) == list(table[c])


@slow
@needs_package
def test_accounting_and_summary(runs):
    result, paths = runs["main_D50"]
    res = S.read_spliceai(paths["out"])
    skipped = dict(zip(res.skipped["id"], res.skipped["reason"]))
    assert skipped == MAIN_SKIPPED
    star = res.skipped[res.skipped["id"] == "star"]
    assert list(star["alt_index"]) == [1] and "star" in set(res.scores["id"])
    n_alts = sum(len(rec.ALT) or 1 for rec in VCF(str(GOLDEN / "main.vcf")))
    scored_alts = len(set(zip(res.scores["record"], res.scores["alt_index"])))
    assert scored_alts + len(res.skipped) == n_alts
    s = res.settings
    assert (s["variants"], s["variants_scored"], s["variants_skipped"]) == (n_alts, scored_alts, len(MAIN_SKIPPED))
    assert (s["distance"], s["mask"], s["annotation"], s["backend"]) == (50, False, "grch37", "spliceai")
    assert f"variants scored: {scored_alts}" in result.output
    assert "no_gene: 4" in result.output and "spliceai_mnv: 2" in result.output
    custom = S.read_spliceai(runs["custom_D50"][1]["out"])
    assert dict(zip(custom.skipped["id"], custom.skipped["reason"])) == CUSTOM_SKIPPED
    assert set(custom.scores["strand"]) == {"+", "-"}
    assert varfx.read_scores(paths["out"]).settings["variants_scored"] == scored_alts  # the generic reader works too


@slow
@needs_package
def test_out_vcf_copies_the_input(runs):
    """Header lines, samples, genotypes and other INFO fields are kept; unscored records are unchanged."""
    out = VCF(str(runs["main_D50"][1]["vcf"]))
    src = VCF(str(GOLDEN / "main.vcf"))
    assert out.samples == src.samples == ["S1"]
    assert 'Format: ALLELE|SYMBOL|DS_AG|DS_AL|DS_DG|DS_DL|DP_AG|DP_AL|DP_DG|DP_DL' in out.raw_header
    ours = next(line for line in out.raw_header.splitlines() if line.startswith("##INFO=<ID=SpliceAI"))
    theirs = next(line for line in VCF(str(GOLDEN / "official" / "main_D50.vcf")).raw_header.splitlines()
                  if line.startswith("##INFO=<ID=SpliceAI"))
    assert ours == theirs
    for a, b in zip(out, src, strict=True):
        assert (a.CHROM, a.POS, a.ID, a.REF, a.ALT, a.INFO.get("DP")) == (b.CHROM, b.POS, b.ID, b.REF, b.ALT,
                                                                            b.INFO.get("DP"))
        assert a.genotypes == b.genotypes
        if a.INFO.get("SpliceAI") is None:
            assert str(a) == str(b)


@slow
@needs_package
def test_region_and_a_stale_spliceai_field(models, work, tmp_path):
    """--region scores and writes only its records, the annotated VCF in step; SpliceAI values
    already in the input are replaced, or removed where the run has none."""
    pysam = pytest.importorskip("pysam")
    lines = (GOLDEN / "main.vcf").read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    header.insert(1, '##INFO=<ID=SpliceAI,Number=.,Type=String,Description="an older run">')
    body = [line.replace("\tGT\t", ";SpliceAI=stale\tGT\t") for line in lines if not line.startswith("#")]
    (tmp_path / "stale.vcf").write_text("\n".join(header + body) + "\n")
    vcf = tmp_path / "stale.vcf.gz"
    pysam.tabix_compress(str(tmp_path / "stale.vcf"), str(vcf))
    pysam.tabix_index(str(vcf), preset="vcf")
    out = tmp_path / "r.vcf"
    r = score(vcf, work / "genome.fa", "--annotation", "grch37", "--region", "chr1:69850-69870",
              "--out-vcf", str(out), "-q")
    assert r.exit_code == 0, r.output
    # the 121-bp deletion at 69,750 overlaps the region too
    assert "records read: 4" in r.output and "variants scored: 1" in r.output
    want, _ = official("main_D50")
    assert spliceai_entries(out) == {rid: want[rid] for rid in ("long_deletion", "symbolic", "star", "missing_alt")}
    assert (tmp_path / "r.skipped.tsv").read_text().count("\n") == 1 + 4  # header + four skipped ALTs


def test_short_contig_padded_by_default_or_refused_before_any_variant(models, tmp_path, monkeypatch):
    """A contig shorter than SpliceAI's 10,101-bp window is padded by default (outside a transcript the window
    is N anyway); with --short-contigs error it is refused before any site is read, though reached last."""
    text = (GOLDEN / "genome.fa").read_text() + ">chrS\n" + "ACGT" * 100 + "\n"
    (tmp_path / "g.fa").write_text(text)
    lines = (GOLDEN / "custom.vcf").read_text().splitlines()
    (tmp_path / "v.vcf").write_text("\n".join(lines + ["chrS\t50\tshort\tC\tA\t50\tPASS\tDP=9\tGT\t0/1"]) + "\n")
    r = score(tmp_path / "v.vcf", tmp_path / "g.fa", "--annotation", "grch37", "--out", str(tmp_path / "p.h5"),
              "--skipped-tsv", str(tmp_path / "p.skipped.tsv"), "-q")
    assert r.exit_code == 0, r.output
    skipped = pd.read_csv(tmp_path / "p.skipped.tsv", sep="\t")
    assert skipped.loc[skipped["id"] == "short", "reason"].tolist() == ["no_gene"]  # not a short contig
    checked = []
    monkeypatch.setattr(S, "check_sites", lambda *a, **k: checked.append(a))
    r = score(tmp_path / "v.vcf", tmp_path / "g.fa", "--annotation", "grch37", "--out", str(tmp_path / "o.h5"),
              "--short-contigs", "error", "-q")
    fails(r, 2, "varfx: error: contig chrS (400 bp) is shorter than the model's 10,101-bp window")
    assert checked == [] and not list(tmp_path.glob("o.h5*"))


# ---------------------------------------------------------------------------------------------------------------------
# Errors (no model is loaded)


@pytest.fixture
def small(tmp_path):
    shutil.copy(GOLDEN / "genome.fa", tmp_path / "genome.fa")
    return tmp_path


def fails(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert text in result.output, result.output


def test_annotation_is_required(small):
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--out", str(small / "o.h5")), 2,
          "varfx: error: the spliceai backend needs --annotation: grch37, grch38")


@pytest.mark.parametrize("text, message", [
    ("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\n", "has no column EXON_END"),
    ("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\nG\tchr2\t*\t10\t20\t10,\t20,\n",
     "line 2: STRAND must be + or -, got '*'"),
    ("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\nG\tchr2\t+\tten\t20\t10,\t20,\n",
     "line 2: TX_START must be an integer, got 'ten'"),
    ("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\nG\tchr2\t+\t10\t20\t10,15,\t20,\n",
     "line 2: EXON_START and EXON_END must list the same number"),
    # one field too many: pandas took column 1 as the index and the error named the wrong column
    ("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\nG\tchr2\t+\t10\t20\t10,\t20,\tx\n",
     "has a row with more fields than its header line"),
])
def test_bad_annotation_file(small, text, message):
    (small / "genes.txt").write_text(text)
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(small / "genes.txt"),
                "--out", str(small / "o.h5")), 1, message)


def test_missing_annotation_file(small):
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(small / "nope.txt"),
                "--out", str(small / "o.h5")), 1, "no such file (give grch37, grch38 or a gene table)")


def test_models_not_found(small, monkeypatch):
    monkeypatch.setattr(S, "package_dir", lambda: None)
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(CUSTOM_TABLE),
                "--out", str(small / "o.h5")), 1,
          "the SpliceAI models were not found: run `pip install spliceai`")
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", "grch37", "--out", str(small / "o.h5")),
          1, "--annotation grch37: the table comes with the spliceai package: run `pip install spliceai`")
    assert not list(small.glob("o.h5*"))


def test_weights_folder_without_models(small):
    (small / "empty").mkdir()
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(CUSTOM_TABLE), "--weights",
                str(small / "empty"), "--out", str(small / "o.h5")), 1, "the folder has no .h5 files")


@pytest.mark.parametrize("args, message", [
    (["--tsv-long", "l.tsv"], "the spliceai backend does not take --tsv-long"),
    (["--rc"], "the spliceai backend does not take --rc"),
    (["--stat", "SAD"], "the spliceai backend does not take --stat"),
    (["--distance", "5000"], "--distance 5000: give a number of bp from 0 to 4999"),
    (["--out-vcf", "x.txt"], "the name must end in .vcf, .vcf.gz or .bcf"),
    (["--workers", "2"], "--workers is not available with --backend spliceai"),
    (["--block-records", "64"], "--block-records is not available with --backend spliceai"),
])
def test_options_that_do_not_fit(small, args, message):
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(CUSTOM_TABLE),
                "--out", str(small / "o.h5"), *args), 2, message)


def test_nothing_to_write(small):
    fails(score(GOLDEN / "custom.vcf", small / "genome.fa", "--annotation", str(CUSTOM_TABLE)), 2,
          "nothing to write: give --out scores.h5, --tsv scores.tsv and/or --out-vcf")


def test_tracks_without_loading_models(monkeypatch):
    monkeypatch.setattr(S, "load_models", lambda paths: pytest.fail("models loaded"))
    r = CliRunner().invoke(cli, ["tracks", "--backend", "spliceai"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1:] == ["0\tneither\tneither", "1\tacceptor\tacceptor", "2\tdonor\tdonor"]


# ---------------------------------------------------------------------------------------------------------------------
# The pieces, on small arrays


def test_align_alt():
    y = np.arange(3 * 9, dtype=np.float32).reshape(9, 3)  # D = 3: 7 REF positions
    deletion = S.align_alt(y[:5], ref_len=3, alt_len=1, distance=3)  # 2 bases deleted after D + 1
    assert deletion.shape == (7, 3)
    np.testing.assert_array_equal(deletion[:4], y[:4])
    np.testing.assert_array_equal(deletion[4:6], 0)
    np.testing.assert_array_equal(deletion[6], y[4])
    insertion = S.align_alt(y, ref_len=1, alt_len=3, distance=3)  # positions 3, 4, 5 -> their maximum
    assert insertion.shape == (7, 3)
    np.testing.assert_array_equal(insertion[3], y[5])
    np.testing.assert_array_equal(insertion[4:], y[6:])
    assert S.align_alt(y, 1, 1, 4) is y


def test_delta_scores_and_mask():
    ref = np.zeros((5, 3), dtype=np.float32)  # D = 2
    alt = ref.copy()
    alt[1, 1] = 0.5  # acceptor gain at -1
    ref[3, 2] = 0.25  # donor loss at +1
    d = S.delta_scores(ref, alt, 2, nearest_boundary=-1, mask=False)
    assert d.ds.tolist() == [0.5, 0.0, 0.0, 0.25] and d.dp.tolist() == [-1, -2, -2, 1]
    assert d.info("A", "G") == "A|G|0.50|0.00|0.00|0.25|-1|-2|-2|1"
    masked = S.delta_scores(ref, alt, 2, nearest_boundary=-1, mask=True)  # gain at the site, loss elsewhere
    assert masked.info("A", "G") == "A|G|0.00|0.00|0.00|0.00|-1|-2|-2|1"
    kept = S.delta_scores(ref, alt, 2, nearest_boundary=1, mask=True)  # gain elsewhere, loss at the site
    assert kept.info("A", "G") == "A|G|0.50|0.00|0.00|0.25|-1|-2|-2|1"
    minus = S.delta_scores(ref, ref - 0.001, 2, 0, mask=False)  # every gain negative: the package prints -0.00
    assert minus.info("A", "G").split("|")[2] == "-0.00"


def test_true_float32_on_cuda_is_restored():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with S._ieee_fp32(torch.device("cuda"), "fp32"):
        assert conv.fp32_precision == "ieee"
    with S._ieee_fp32(torch.device("cuda"), "bf16"), S._ieee_fp32(torch.device("cpu"), "fp32"):
        assert conv.fp32_precision == before
    assert conv.fp32_precision == before


def test_gene_table_lookup_and_windows(tmp_path):
    table = S.GeneTable(CUSTOM_TABLE)
    site = varfx.variants.Site(0, "2", "chr2", 13_300, ".", "C")
    assert [table.names[r] for r in table.genes_at(site)] == ["GENEP", "GENEM"]
    assert table.genes_at(varfx.variants.Site(0, "chr2", "chr2", 14_001, ".", "C")) == [1]
    assert table.genes_at(varfx.variants.Site(0, "9", None, 14_001, ".", "C")) == []
    (tmp_path / "tie.txt").write_text("#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END\n"
                                      "T\t1\t-\t99\t200\t99,150,\t120,200,\n")  # boundaries 100 120 151 200
    tie = S.GeneTable(tmp_path / "tie.txt")
    assert tie.nearest_boundary(0, 110) == -10 and tie.nearest_boundary(0, 140) == 11  # a tie goes upstream
    codes = np.arange(11, dtype=np.uint8) % 4  # a window centred on pos 100
    masked = S.gene_window(codes, pos=100, tx_start=98, tx_end=101)
    assert masked.tolist() == [4, 4, 4, 3, 0, 1, 2, 4, 4, 4, 4]


# ---------------------------------------------------------------------------------------------------------------------
# The annotated-VCF writer (generic, used here by spliceai)


FIELD = InfoField("SCORE", "1", "String", "a test score")


@pytest.mark.parametrize("name", ["a.vcf", "a.vcf.gz", "a.bcf"])
def test_annotated_vcf_writer(tmp_path, name):
    src = GOLDEN / "custom.vcf"
    records = [(r.CHROM, r.POS) for r in VCF(str(src))]
    w = AnnotatedVCFWriter(src, tmp_path / name, [FIELD])
    assert w.tmp.name == name + ".partial" and w.tmp.exists()
    for k, (chrom, pos) in enumerate(records):
        w.write(chrom, pos, {"SCORE": f"v{k}"} if k % 2 else None)
    w.finish()
    assert not w.tmp.exists()
    out = list(VCF(str(tmp_path / name)))
    assert [(r.CHROM, r.POS) for r in out] == records
    assert [r.INFO.get("SCORE") for r in out] == [f"v{k}" if k % 2 else None for k in range(len(records))]
    assert [r.INFO.get("DP") for r in out] == [r.INFO.get("DP") for r in VCF(str(src))]


def test_annotated_vcf_writer_checks_step_and_cleans_up(tmp_path):
    w = AnnotatedVCFWriter(GOLDEN / "custom.vcf", tmp_path / "a.vcf", [FIELD])
    with pytest.raises(AssertionError, match="out of step"):
        w.write("2", 12345)
    w.abort()
    assert not list(tmp_path.iterdir())
    w = AnnotatedVCFWriter(GOLDEN / "custom.vcf", tmp_path / "a.vcf", [FIELD])
    with pytest.raises(AssertionError, match="before the annotated VCF had written every record"):
        w.finish()
    w.abort()
    with pytest.raises(varfx.errors.OptionError, match="must end in .vcf, .vcf.gz or .bcf"):
        AnnotatedVCFWriter(GOLDEN / "custom.vcf", tmp_path / "a.txt", [FIELD])
