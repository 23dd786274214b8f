"""The bundled example: the planted-motif model ranks motif-breaking variants first."""

import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import varfx
from varfx.cli import cli

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def example_scores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    for name in ("genome.fa", "variants.vcf", "model.pt", "model.json"):
        shutil.copy(EXAMPLES / name, tmp / name)  # the .fai is built in tmp, not in the repo
    r = CliRunner().invoke(cli, ["score", str(tmp / "variants.vcf"), "--fasta", str(tmp / "genome.fa"),
                                 "--backend", "torchscript", "--weights", str(tmp / "model.pt"),
                                 "--out", str(tmp / "s.h5"), "--tsv", str(tmp / "s.tsv"), "-q", "--rc"])
    assert r.exit_code == 0, r.output
    return varfx.read_scores(tmp / "s.h5"), r.output


def test_example_accounting(example_scores):
    res, output = example_scores
    truth = pd.read_csv(EXAMPLES / "truth.tsv", sep="\t")
    assert len(res.variants) + len(res.skipped) == len(truth)
    assert set(res.skipped["reason"]) >= {"symbolic_allele", "unknown_contig", "ref_mismatch", "star_allele"}
    assert f"variants (ALT alleles): {len(truth)}" in output


def test_motif_breaking_variants_rank_first(example_scores):
    res, _ = example_scores
    truth = pd.read_csv(EXAMPLES / "truth.tsv", sep="\t")
    v = res.variants.merge(truth, on=["id", "chrom", "pos", "ref", "alt"], how="left")
    assert v["class"].notna().all()
    effect = np.abs(res.stats["SAD"].astype(np.float32)).max(1)
    breaking = effect[(v["class"] == "motif_breaking").to_numpy()]
    neutral = effect[(v["class"] == "neutral").to_numpy()]
    assert len(breaking) == 40 and len(neutral) == 200
    # every motif-breaking SNV scores above the 95th percentile of the neutral ones,
    # and they fill the top of the SNV ranking
    assert breaking.min() > np.quantile(neutral, 0.95)
    snv = (v["class"].isin(["motif_breaking", "neutral"])).to_numpy()
    order = np.argsort(-effect[snv])
    top = v[snv].iloc[order[:40]]
    assert (top["class"] == "motif_breaking").mean() >= 0.9
    # breaking a motif lowers the signal
    assert np.median(res.stats["SAD"][(v["class"] == "motif_breaking").to_numpy()].min(1)) < 0


@pytest.mark.slow
def test_spliceai_on_the_example_genome(tmp_path):
    """`varfx score` runs the real SpliceAI models on the bundled example (its own gene table)."""
    import cyvcf2
    from varfx.backends import spliceai as S

    for name in ("genome.fa", "variants.vcf", "genes_spliceai.txt"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "variants.vcf"), "--fasta", str(tmp_path / "genome.fa"),
                                 "--backend", "spliceai", "--annotation", str(tmp_path / "genes_spliceai.txt"),
                                 "--out", str(tmp_path / "s.h5"), "--out-vcf", str(tmp_path / "s.vcf.gz"), "-q"])
    assert r.exit_code == 0, r.output
    rows = S.read_spliceai(tmp_path / "s.h5")
    assert set(rows.scores["gene"]) == {"EXPLUS", "EXMINUS"}
    assert set(rows.scores.loc[rows.scores["gene"] == "EXMINUS", "strand"]) == {"-"}
    assert set(rows.skipped["reason"]) >= {"no_gene"}
    annotated = [v for v in cyvcf2.VCF(str(tmp_path / "s.vcf.gz")) if v.INFO.get("SpliceAI")]
    inside = [v for v in cyvcf2.VCF(str(EXAMPLES / "variants.vcf"))
              if (v.CHROM == "chr1" and 20001 <= v.POS <= 26000) or (v.CHROM == "chr2" and 8001 <= v.POS <= 14000)]
    assert len(annotated) == len([v for v in inside if not any(a.startswith("<") for a in v.ALT)])
    assert all(str(v.INFO["SpliceAI"]).split("|")[1] in ("EXPLUS", "EXMINUS") for v in annotated)
    assert "no_gene" in r.output
