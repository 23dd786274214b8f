import random
from pathlib import Path

import pytest
from click.testing import CliRunner

HERE = Path(__file__).parent
ROOT = HERE.parent
CORPUS = HERE / "data" / "vcf-corpus"  # copied from the shared folder (see its README)
EXAMPLES = ROOT / "examples"


def random_seq(n: int, rng: random.Random) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def write_fasta(path: Path, contigs: dict[str, str], width: int = 60) -> Path:
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name} test contig\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + "\n")
    return path


def write_vcf(path: Path, records: list[tuple], contigs: dict[str, int] | None = None) -> Path:
    """records: (chrom, pos, id, ref, alt) tuples."""
    lines = ["##fileformat=VCFv4.2"]
    for name, length in (contigs or {}).items():
        lines.append(f"##contig=<ID={name},length={length}>")
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    for chrom, pos, vid, ref, alt in records:
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\t.")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def genome_seqs():
    rng = random.Random(7)
    chr1 = random_seq(2000, rng)
    chr1 = chr1[:300] + chr1[300:340].lower() + chr1[340:]  # soft-masked stretch
    chr2 = random_seq(500, rng)
    chr2 = chr2[:100] + "NNNNRYK" + chr2[107:]  # N and IUPAC codes
    return {"chr1": chr1, "chr2": chr2, "chrM": random_seq(300, rng)}


@pytest.fixture
def fasta(tmp_path, genome_seqs):
    return write_fasta(tmp_path / "genome.fa", genome_seqs)


# -- the command line, as the tests drive it ---------------------------------------------------------------------

def run_cli(args):
    from varfx.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, r.output
    return r


def one_line_error(r, code: int | None = None) -> str:
    """A refused command: non-zero exit (``code`` if given), one line ``varfx: error: …``, no traceback."""
    assert r.exit_code != 0, r.output
    if code is not None:
        assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("varfx: error: "), r.output
    return lines[0]
