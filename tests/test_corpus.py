"""Every file of the real-world VCF corpus: read without a traceback, every ALT scored or skipped."""

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

import varfx
from varfx.cli import cli

from conftest import CORPUS, write_fasta
from toy_models import save_toy

FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file() and not p.name.endswith((".tbi", ".csi")))
UNPARSEABLE = {"empty.vcf": "is empty", "test-invalid-header.vcf": "cannot parse"}
MAX_CONTIG = 200_000


def corpus_fasta(vcf: Path, folder: Path) -> tuple[Path, int, int]:
    """A FASTA that fits the file: random contigs carrying each record's REF (the first one wins),
    one contig left out when there are several; returns (path, records, ALT alleles)."""
    from cyvcf2 import VCF

    rng = random.Random(0)
    contigs: dict[str, list[str]] = {}
    records = alleles = 0
    for rec in VCF(str(vcf), samples=[]):
        records += 1
        alleles += max(1, len(rec.ALT))
        seq = contigs.setdefault(rec.CHROM, [])
        end = rec.POS - 1 + len(rec.REF)
        if end > MAX_CONTIG:
            continue  # beyond the contig we build: scored as outside_contig
        if len(seq) < end + 500:
            seq.extend(rng.choice("ACGT") for _ in range(end + 500 - len(seq)))
        ref = rec.REF.upper()
        if all(b in "ACGTN" for b in ref):
            for i, b in enumerate(ref):
                seq[rec.POS - 1 + i] = b if b != "N" else "A"
    names = list(contigs)
    keep = names[:-1] if len(names) > 1 else names
    seqs = {n: "".join(contigs[n]) or "A" * 100 for n in keep} or {"unused": "ACGT" * 100}
    fa = write_fasta(folder / "corpus.fa", seqs)
    return fa, records, alleles


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path, _ = save_toy(tmp_path_factory.mktemp("toy"))
    return path


@pytest.mark.parametrize("vcf", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_file(vcf, toy, tmp_path):
    if vcf.name in UNPARSEABLE:
        fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 100})
        r = CliRunner().invoke(cli, ["score", str(vcf), "--fasta", str(fa), "--backend", "torchscript",
                                     "--weights", str(toy), "--out", str(tmp_path / "o.h5")])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert UNPARSEABLE[vcf.name] in r.output
        assert len([x for x in r.output.splitlines() if x.startswith("varfx: error")]) == 1
        return
    fa, records, alleles = corpus_fasta(vcf, tmp_path)
    r = CliRunner().invoke(cli, ["score", str(vcf), "--fasta", str(fa), "--backend", "torchscript",
                                 "--weights", str(toy), "--out", str(tmp_path / "o.h5"), "-q",
                                 "--short-contigs", "pad"])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(tmp_path / "o.h5")
    assert res.settings["records_read"] == records
    assert len(res.variants) + len(res.skipped) == alleles
    covered = set(res.variants["record"]) | set(res.skipped["record"])
    assert covered == set(range(records))
    pairs = list(zip(res.variants["record"], res.variants["alt_index"])) + \
        list(zip(res.skipped["record"], res.skipped["alt_index"]))
    assert len(set(pairs)) == len(pairs)  # no allele twice
    assert f"records read: {records:,}" in r.output


def test_corpus_has_the_odd_corners():
    """The corpus exercises what the issue promises: symbolic, star, MNP, BCF, unknown contigs."""
    names = {p.name for p in FILES}
    assert {"test.mnp.vcf", "multi-contig.bcf", "test-multiallelic-homozygous-alt.vcf.gz", "empty.vcf"} <= names
