import os

import numpy as np
import pytest

from varfx.encoding import decode, encode
from varfx.errors import InputError
from varfx.genome import Genome, contig_aliases

from conftest import write_fasta


def test_builds_missing_fai_and_reads_contigs(fasta, genome_seqs):
    assert not os.path.exists(str(fasta) + ".fai")
    g = Genome(fasta)
    assert os.path.exists(str(fasta) + ".fai")
    assert g.names == ["chr1", "chr2", "chrM"]
    for name, seq in genome_seqs.items():
        assert g.length(name) == len(seq)
        # soft-masked reads as upper case; IUPAC reads as N
        want = "".join(b if b in "ACGT" else "N" for b in seq.upper())
        assert decode(g.codes(name)) == want


@pytest.mark.parametrize("stale", [False, True])
def test_index_is_built_under_another_name_and_renamed(tmp_path, genome_seqs, monkeypatch, stale):
    """Shards starting together on an unindexed FASTA: no process writes FASTA.fai in place, so none
    can read another's half-written index.  A stale index (older than the FASTA) is rebuilt the same way."""
    import pyfaidx

    fa = write_fasta(tmp_path / "g.fa", genome_seqs)
    fai = tmp_path / "g.fa.fai"
    if stale:
        fai.write_text("chr1\t1\t6\t60\t61\n")  # wrong, and older than the FASTA
        os.utime(fai, (1, 1))
    built, real = [], pyfaidx.Faidx.build_index

    def spy(self):
        built.append(os.path.basename(self.indexname))
        assert not stale or fai.read_text().startswith("chr1\t1\t"), "the old index was removed too early"
        return real(self)

    monkeypatch.setattr(pyfaidx.Faidx, "build_index", spy)
    g = Genome(fa)
    assert built == [f"g.fa.fai.tmp{os.getpid()}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.fa", "g.fa.fai"]  # no temporary left
    assert g.names == ["chr1", "chr2", "chrM"] and g.length("chr1") == len(genome_seqs["chr1"])
    monkeypatch.setattr(pyfaidx.Faidx, "build_index", real)
    pyfaidx.Faidx(str(fa), indexname=str(tmp_path / "want.fai")).close()
    assert fai.read_bytes() == (tmp_path / "want.fai").read_bytes()  # the index pyfaidx itself writes
    built.clear()
    monkeypatch.setattr(pyfaidx.Faidx, "build_index", spy)
    Genome(fa)  # fresh now: not rebuilt
    assert built == []


def test_windows_pad_with_n_past_both_ends(fasta, genome_seqs):
    g = Genome(fasta)
    seq = genome_seqs["chrM"].upper()
    for length in (10, 5000):  # fancy-indexing path and row-by-row path
        starts = np.array([-3, 0, 295, 290 - length, -length - 2])
        w = g.windows("chrM", starts, length)
        for row, s in enumerate(starts):
            want = "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(s, s + length))
            assert decode(w[row]) == want


def test_fetch_interior(fasta, genome_seqs):
    g = Genome(fasta)
    assert decode(g.fetch("chr1", 295, 345)) == genome_seqs["chr1"][295:345].upper()


def test_aliases(fasta):
    g = Genome(fasta)
    assert g.resolve("1") == "chr1"
    assert g.resolve("chr1") == "chr1"
    assert g.resolve("MT") == "chrM"
    assert g.resolve("M") == "chrM"
    assert g.resolve("chr9") is None
    assert "chrMT" in contig_aliases("MT")


def test_alias_from_chr_to_bare(tmp_path):
    fa = write_fasta(tmp_path / "bare.fa", {"1": "ACGT" * 10, "MT": "ACGT" * 5})
    g = Genome(fa)
    assert g.resolve("chr1") == "1"
    assert g.resolve("chrM") == "MT"


def test_alias_to_fasta_names_with_other_case(tmp_path):
    """Plant assemblies (TAIR10) name contigs Chr1 and Mt: VCF names chr1, 1, MT and chrM find them."""
    fa = write_fasta(tmp_path / "tair.fa", {"Chr1": "ACGT" * 10, "Chr2": "ACGT" * 10, "Mt": "ACGT" * 5})
    g = Genome(fa)
    assert [g.resolve(n) for n in ("Chr1", "chr1", "1", "2", "MT", "chrM", "Mt")] == \
        ["Chr1", "Chr1", "Chr1", "Chr2", "Mt", "Mt", "Mt"]
    assert g.resolve("chr3") is None and g.resolve("3") is None


def test_missing_fasta_is_one_line_error(tmp_path):
    with pytest.raises(InputError, match="FASTA file not found"):
        Genome(tmp_path / "nope.fa")


def test_unwritable_folder_without_fai(tmp_path, genome_seqs, monkeypatch):
    write_fasta(tmp_path / "g.fa", genome_seqs)
    # CI runs as root, who can write anywhere: make the folder look read-only instead
    import varfx.genome
    monkeypatch.setattr(varfx.genome.os, "access", lambda path, mode: mode != os.W_OK)
    with pytest.raises(InputError, match="samtools faidx"):
        Genome(tmp_path / "g.fa")


def test_not_a_fasta(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text("this is not a fasta\n")
    with pytest.raises(InputError):
        Genome(p)


def test_compressed_fasta_refused(tmp_path):
    p = tmp_path / "x.fa.gz"
    p.write_bytes(b"\x1f\x8b")
    with pytest.raises(InputError, match="gunzip"):
        Genome(p)


def test_encode_of_window_matches(fasta, genome_seqs):
    g = Genome(fasta)
    assert np.array_equal(g.fetch("chr2", 0, 500), encode(genome_seqs["chr2"]))


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_contig_codes_with_any_line_width_and_line_end(tmp_path, newline):
    """A contig's codes are its bases whatever the line width (a last line short or full) and line end;
    lower case reads as upper case, IUPAC codes as N, and the cached array cannot be written to."""
    import random
    rng = random.Random(3)
    seqs = {"a": "".join(rng.choice("ACGTNacgtnRYK") for _ in range(250)), "b": "ACGT" * 15, "c": "T"}
    path = tmp_path / "g.fa"
    with open(path, "wb") as fh:
        for name, seq in seqs.items():
            fh.write(b">" + name.encode() + b" some description" + newline)
            for i in range(0, len(seq), 60):
                fh.write(seq[i:i + 60].encode() + newline)
    g = Genome(path)
    for name, seq in seqs.items():
        want = seq.upper().translate(str.maketrans("RYK", "NNN"))
        assert decode(g.codes(name)) == want, name
    with pytest.raises(ValueError):
        g.codes("a")[0] = 2


def test_contig_codes_when_line_ends_hold_other_bytes(tmp_path):
    """An index whose line length counts bytes other than the line end (here a ';' before each newline)
    drops exactly those bytes from each line, as the .fai says."""
    path = tmp_path / "odd.fa"
    path.write_bytes(b">x\nACGTA;\nCCGGT;\nAC\n")
    (tmp_path / "odd.fa.fai").write_text("x\t12\t3\t5\t7\n")
    assert decode(Genome(path).codes("x")) == "ACGTACCGGTAC"


@pytest.mark.parametrize("body,fai,want", [
    (b">x\nACGTA\nCCGGT", "x\t10\t3\t5\t6\n", "ACGTACCGGT"),  # the last line full, no final newline
    (b">x\nACGTA\r\nCCGGT", "x\t10\t3\t5\t7\n", "ACGTACCGGT"),  # the same with CRLF
    (b">x\nACGTA;\nCCGGT;", "x\t10\t3\t5\t7\n", "ACGTACCGGT"),  # other bytes at line ends, no final newline
])
def test_contig_codes_without_a_final_newline(tmp_path, body, fai, want):
    path = tmp_path / "g.fa"
    path.write_bytes(body)
    (tmp_path / "g.fa.fai").write_text(fai)
    assert decode(Genome(path).codes("x")) == want


def test_truncated_fasta_is_one_line_error(tmp_path):
    """A FASTA cut short after its .fai was made: the contig cannot be read as the index says; a one-line
    error names the contig and the fix, whatever the bytes at its line ends."""
    for body, fai in ((b">x\nACGTA\nCC", "x\t10\t3\t5\t6\n"), (b">x\nACGTA;\nCC", "x\t10\t3\t5\t7\n")):
        path = tmp_path / "g.fa"
        path.write_bytes(body)
        (tmp_path / "g.fa.fai").write_text(fai)
        with pytest.raises(InputError, match=r"contig x does not hold the 10 bases its \.fai says \([78] read"):
            Genome(path).codes("x")


def test_truncated_fasta_refused_by_score_in_one_line(tmp_path):
    """`varfx score` on a FASTA cut short after its index was made: exit 1, one line naming the fix."""
    from conftest import one_line_error, run_cli, write_vcf
    from toy_models import save_toy

    path = tmp_path / "g.fa"
    path.write_bytes(b">chr1\n" + b"ACGTACGTAC\n" * 30)
    (tmp_path / "g.fa.fai").write_text("chr1\t400\t6\t10\t11\n")  # says 400 bases; the file holds 300
    weights, _ = save_toy(tmp_path)
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 100, "v", "C", "A")], contigs={"chr1": 400})
    r = run_cli(["score", vcf, "--fasta", path, "--backend", "torchscript", "--weights", weights,
                 "--out", tmp_path / "o.h5", "-q"])
    line = one_line_error(r, code=1)
    assert "contig chr1 does not hold the 400 bases its .fai says" in line and "delete" in line, line
    assert not list(tmp_path.glob("o.h5*"))
