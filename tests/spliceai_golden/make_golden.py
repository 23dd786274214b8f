"""Build the SpliceAI golden data: a synthetic genome, VCFs, a custom gene table, and the
official ``spliceai`` command's outputs for them.

Run once, with a Python that has TensorFlow/Keras 2 and the ``spliceai`` package (never
varfx's environment):

    /work/scratch/tf/bin/python tests/spliceai_golden/make_golden.py

It writes, next to itself:

* ``genome.fa`` — ``chr1`` (143,000 bp) holding the two GRCh37 genes at the start of
  chromosome 1 (OR4F5, + strand, 69,091–70,008; AL627309.1, − strand, 134,901–139,379)
  and ``chr2`` (30,000 bp) holding the two genes of ``custom_genes.txt``; random
  background with planted splice sites (see :func:`plant_gene`): OR4F5, one exon in the
  annotation, gets an intron (sites the annotation does not list, for ``-M 1``),
  AL627309.1 a weak donor (variants towards the consensus gain at an annotated site),
  and a few decoys one base away from a donor;
* ``custom_genes.txt`` — a gene table in SpliceAI's format: GENEP (+) and GENEM (−),
  overlapping on chr2;
* ``main.vcf`` (scored with ``-A grch37``), ``distance.vcf`` (``-A grch37 -D 200``),
  ``custom.vcf`` (``-A custom_genes.txt``);
* ``official/*.vcf`` — the package's outputs.  Each run is made twice: against
  ``genome.fa`` (``NAME.vcf``) and against a copy whose contigs are extended by 10 kb of
  N (``NAME.padded.vcf``, the copy is not kept).  The package skips variants whose
  window runs past a contig end; varfx pads such windows with N and scores them.  The
  padded run shows what the package computes for them when the genome has N there.

The VCFs use contig names without ``chr`` (as GRCh37 does) while the FASTA and the
custom table use ``chr``: both tools have to match names through aliases.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611
CHR1_LENGTH = 143_000
CHR2_LENGTH = 30_000
PADDING = 10_000

# Genes, 1-based inclusive, exons in genomic order.  The chr1 ones are GRCh37's (the
# package's grch37.txt); the chr2 ones are written to custom_genes.txt.
GRCH37_GENES = {
    "OR4F5": ("chr1", "+", [(69091, 70008)]),
    "AL627309.1": ("chr1", "-", [(134901, 135802), (137621, 139379)]),
}
CUSTOM_GENES = {
    "GENEP": ("chr2", "+", [(6001, 6300), (8001, 8120), (10001, 10150), (13801, 14000)]),
    "GENEM": ("chr2", "-", [(12001, 12400), (13301, 13420), (20001, 20140), (27301, 27500)]),
}
# Splice sites the annotation does not list (OR4F5 is one exon; its sequence gets an
# intron anyway so that the model sees sites there, which -M 1 treats as unannotated).
HIDDEN_EXONS = {"OR4F5": [(69091, 69400), (69701, 70008)]}
SOFT_MASKED = [(69950, 70050), (137000, 137100)]  # lower-case stretches of chr1 (1-based, inclusive)

COMPLEMENT = str.maketrans("ACGTacgtN", "TGCAtgcaN")


def revcomp(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def random_seq(rng: random.Random, n: int, gc: float) -> str:
    at = (1 - gc) / 2
    return "".join(rng.choices("ACGT", weights=(at, gc / 2, gc / 2, at), k=n))


# Splice signals in transcript orientation.
DONOR = "CAG" + "GTAAGT"  # last 3 exon bases, first 6 intron bases
ACCEPTOR = "TACTAAC" + "AT" + "TTCCTTTTTTCTTCCCTCTCAG"  # branch point, polypyrimidine tract, AG (intron end)
WEAK_DONOR = "CAG" + "GTATGT"  # a weaker donor: SNVs towards the consensus make gains at the annotated site
# Decoys: one base away from a strong site (an SNV completes them).  (gene, genomic position of
# the decoy's first base in transcript orientation, motif in transcript orientation)
DECOY_DONOR = "CAG" + "CTAAGT"  # C at intron +1: C>G makes a donor
DECOY_ACCEPTOR = "TTCCTTTTTTCTTCCCTCTCAC"  # C where the AG's G belongs: C>G makes an acceptor
DECOYS = [("OR4F5", 69358, DECOY_DONOR), ("OR4F5", 69639, DECOY_ACCEPTOR),
          ("AL627309.1", 137662, DECOY_DONOR), ("GENEP", 6252, DECOY_DONOR)]


def plant_gene(seq: list[str], claimed: list[bool], rng: random.Random, exons: list[tuple[int, int]],
               weak_donors: bool = False) -> None:
    """Plant a gene into ``seq``, a transcript-orientation list of bases (index 0 = the
    transcript's first base): exonic composition in exons (GC 52%), intronic in introns
    (GC 38%) where no earlier gene claimed the base, a consensus donor at every exon end
    but the last, a branch point + polypyrimidine tract + AG before every exon start but
    the first.  ``exons`` are 0-based half-open intervals in transcript order.
    """
    for (s, e), (s2, _) in zip(exons, exons[1:] + [(None, None)]):
        for lo, hi, gc in ((s, e, 0.52), (e, s2, 0.38)) if s2 is not None else ((s, e, 0.52),):
            fill = random_seq(rng, hi - lo, gc)
            for i in range(lo, hi):
                if not claimed[i]:
                    seq[i] = fill[i - lo]
    for (_, e), (s, _) in zip(exons, exons[1:]):
        seq[e - 3:e + 6] = WEAK_DONOR if weak_donors else DONOR
        seq[s - len(ACCEPTOR):s] = ACCEPTOR
        seq[s] = "G"
    for i in range(exons[0][0], exons[-1][1]):
        claimed[i] = True


def place_gene(genome: list[str], claimed: list[bool], rng: random.Random, name: str, strand: str,
               exons: list[tuple[int, int]], weak_donors: bool = False) -> None:
    """Plant gene ``name`` (1-based genomic exons in genomic order) and its decoys into ``genome``
    (index 0 = position 1); a − strand gene is planted on the reverse complement."""
    first, last = exons[0][0], exons[-1][1]
    if strand == "+":
        to_tx = lambda p: p - first  # noqa: E731 (genomic 1-based -> transcript 0-based)
        tx_exons = [(s - first, e - first + 1) for s, e in exons]
    else:
        to_tx = lambda p: last - p  # noqa: E731
        tx_exons = [(last - e, last - s + 1) for s, e in reversed(exons)]
    span = slice(first - 1, last)
    tx = genome[span] if strand == "+" else list(revcomp("".join(genome[span])))
    owned = claimed[span] if strand == "+" else claimed[span][::-1]
    plant_gene(tx, owned, rng, tx_exons, weak_donors)
    for gene, pos, motif in DECOYS:
        if gene == name:
            tx[to_tx(pos):to_tx(pos) + len(motif)] = motif
    genome[span] = tx if strand == "+" else list(revcomp("".join(tx)))
    claimed[span] = owned if strand == "+" else owned[::-1]


def build_genome(rng: random.Random) -> dict[str, str]:
    contigs = {}
    for contig, length, genes in (("chr1", CHR1_LENGTH, {"OR4F5": ("chr1", "+", HIDDEN_EXONS["OR4F5"]),
                                                         "AL627309.1": GRCH37_GENES["AL627309.1"]}),
                                  ("chr2", CHR2_LENGTH, CUSTOM_GENES)):
        seq = list(random_seq(rng, length, 0.42))
        claimed = [False] * length
        for name, (_, strand, exons) in genes.items():
            place_gene(seq, claimed, rng, name, strand, exons, weak_donors=name == "AL627309.1")
        contigs[contig] = seq
    for lo, hi in SOFT_MASKED:
        contigs["chr1"][lo - 1:hi] = [b.lower() for b in contigs["chr1"][lo - 1:hi]]
    return {name: "".join(seq) for name, seq in contigs.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Variants.  Each is (contig as in the VCF, POS, ID, REF, ALT); REF comes from the genome unless given.

OTHER = {"A": "C", "C": "G", "G": "T", "T": "A"}


class Variants:
    """Build VCF records against a genome: REF read from it, ALT given or derived."""

    def __init__(self, genome: dict[str, str], vcf_contig: dict[str, str]):
        self.genome, self.vcf_contig = genome, vcf_contig  # FASTA name -> name written in the VCF
        self.records: list[tuple[str, int, str, str, str]] = []

    def ref(self, contig: str, pos: int, n: int = 1) -> str:
        return self.genome[contig][pos - 1:pos - 1 + n].upper()

    def add(self, contig: str, pos: int, vid: str, ref: str, alt: str) -> None:
        self.records.append((self.vcf_contig.get(contig, contig), pos, vid, ref, alt))

    def snv(self, contig: str, pos: int, vid: str, alt: str | None = None) -> None:
        ref = self.ref(contig, pos)
        alt = alt or OTHER[ref]
        assert alt != ref, (vid, ref, alt)
        self.add(contig, pos, vid, ref, alt)

    def insertion(self, contig: str, pos: int, vid: str, inserted: str) -> None:
        ref = self.ref(contig, pos)
        self.add(contig, pos, vid, ref, ref + inserted)

    def deletion(self, contig: str, pos: int, vid: str, n: int) -> None:
        ref = self.ref(contig, pos, n + 1)
        self.add(contig, pos, vid, ref, ref[0])


def main_variants(genome: dict[str, str]) -> list[tuple]:
    """Scored with -A grch37 (-D 50, with and without -M 1)."""
    v = Variants(genome, {"chr1": "1", "chr2": "2"})
    c = "chr1"
    # OR4F5 (+): hidden donor at 69,400 (GT at 69,401-2), acceptor at 69,701 (AG at 69,699-700),
    # decoy donor (C>G at 69,361; a decoy acceptor at 69,639-69,660 is not used)
    v.snv(c, 10_000, "far_upstream")
    v.snv(c, 69_090, "before_OR4F5")
    v.snv(c, 69_091, "OR4F5_first_base")
    v.snv(c, 69_401, "donor_plus1", "A")
    v.snv(c, 69_361, "decoy_donor", "G")
    v.snv(c, 69_699, "acceptor_A", "C")
    v.insertion(c, 69_690, "ppt_insertion", "AAGAAG")
    v.deletion(c, 69_397, "donor_deletion", 5)
    ref = v.ref(c, 69_500)
    v.add(c, 69_500, "multiallelic", ref, ",".join(b for b in "ACGT" if b != ref)[:3])
    v.add(c, 69_401, "mnv", v.ref(c, 69_401, 2), "CA")
    v.add(c, 69_600, "complex", v.ref(c, 69_600, 3), "AC" if v.ref(c, 69_600, 2) != "AC" else "GG")
    v.deletion(c, 69_750, "long_deletion", 120)
    v.add(c, 69_800, "ref_mismatch", OTHER[v.ref(c, 69_800)], v.ref(c, 69_800))
    v.add(c, 69_850, "symbolic", v.ref(c, 69_850), "<DEL>")
    v.add(c, 69_860, "star", v.ref(c, 69_860), OTHER[v.ref(c, 69_860)] + ",*")
    v.add(c, 69_870, "missing_alt", v.ref(c, 69_870), ".")
    v.snv(c, 69_960, "soft_masked")
    v.snv(c, 70_009, "after_OR4F5")
    v.snv(c, 100_000, "intergenic")
    # AL627309.1 (−): annotated donor at 137,621 (intron +1 at 137,620, a weak GTATGT whose
    # +4 is 137,617), annotated acceptor at 135,802 (AG's G at 135,803), decoy donor (137,659)
    v.snv(c, 135_803, "minus_acceptor_G", "A")
    v.deletion(c, 135_806, "minus_ppt_deletion", 8)
    v.snv(c, 137_617, "minus_donor_plus4", "T")
    v.snv(c, 137_659, "minus_decoy_donor", "C")
    v.insertion(c, 137_630, "minus_insertion", "ACTTAC")
    v.snv(c, 139_295, "near_end_cryptic")  # within 5,050 bp of the contig end
    v.add(c, CHR1_LENGTH + 10, "outside_contig", "A", "C")
    v.records.append(("3", 1_000, "unknown_contig", "A", "G"))  # a contig the FASTA lacks
    return v.records


def distance_variants(genome: dict[str, str]) -> list[tuple]:
    """Scored with -A grch37 -D 200."""
    v = Variants(genome, {"chr1": "1"})
    c = "chr1"
    v.snv(c, 69_550, "intron_middle")  # 150 bp from both OR4F5 sites
    v.insertion(c, 69_420, "long_insertion", "ACGTTGCAACGTTGCAACGTTGCAACGTTG")
    v.deletion(c, 69_750, "long_deletion", 120)
    v.snv(c, 137_850, "near_end_at_200")  # within 5,200 bp of the contig end
    return v.records


def custom_variants(genome: dict[str, str]) -> list[tuple]:
    """Scored with -A custom_genes.txt (GENEP + and GENEM − overlap on 12,001-14,000)."""
    v = Variants(genome, {"chr1": "1", "chr2": "2"})
    c = "chr2"
    v.snv("chr1", 69_401, "chr1_not_in_table", "A")
    v.snv(c, 1_000, "before_genes")
    v.snv(c, 6_301, "P_donor_plus1", "A")
    v.add(c, 12_500, "overlap_multiallelic", v.ref(c, 12_500), ",".join(b for b in "ACGT" if b != v.ref(c, 12_500))[:3])
    v.snv(c, 13_300, "overlap_M_donor", "T")
    v.snv(c, 13_799, "overlap_P_acceptor", "G")
    v.snv(c, 20_000, "M_donor", "T")
    v.snv(c, 27_300, "M_near_end_donor", "G")  # within 5,050 bp of the contig end
    v.snv(c, 29_990, "after_genes")
    return v.records


# ---------------------------------------------------------------------------------------------------------------------
# Files


def write_fasta(path: Path, contigs: dict[str, str], width: int = 60) -> None:
    with open(path, "w") as fh:
        for name, seq in contigs.items():
            fh.write(f">{name}\n")
            fh.writelines(seq[i:i + width] + "\n" for i in range(0, len(seq), width))


def write_vcf(path: Path, records: list[tuple], contigs: dict[str, int]) -> None:
    """A sorted VCF with one sample and an INFO field, so that copying them through is tested too."""
    order = {name: i for i, name in enumerate(contigs)}
    records = sorted(records, key=lambda r: (order[r[0]], r[1]))
    lines = ["##fileformat=VCFv4.2", '##INFO=<ID=DP,Number=1,Type=Integer,Description="Read depth">',
             # htslib adds END for symbolic alleles; without it declared the package cannot write them
             '##INFO=<ID=END,Number=1,Type=Integer,Description="End position">',
             '##ALT=<ID=DEL,Description="Deletion">',
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">']
    lines += [f"##contig=<ID={name},length={length}>" for name, length in contigs.items()]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1")
    for k, (chrom, pos, vid, ref, alt) in enumerate(records):
        lines.append(f"{chrom}\t{pos}\t{vid}\t{ref}\t{alt}\t50\tPASS\tDP={10 + k}\tGT\t0/1")
    path.write_text("\n".join(lines) + "\n")


def write_gene_table(path: Path, genes: dict[str, tuple]) -> None:
    """SpliceAI's format: 0-based TX_START and exon starts, 1-based ends, comma-terminated lists."""
    lines = ["#NAME\tCHROM\tSTRAND\tTX_START\tTX_END\tEXON_START\tEXON_END"]
    for name, (chrom, strand, exons) in genes.items():
        starts = "".join(f"{s - 1}," for s, _ in exons)
        ends = "".join(f"{e}," for _, e in exons)
        lines.append(f"{name}\t{chrom}\t{strand}\t{exons[0][0] - 1}\t{exons[-1][1]}\t{starts}\t{ends}")
    path.write_text("\n".join(lines) + "\n")


RUNS = [  # output name, VCF, annotation, extra arguments
    ("main_D50", "main.vcf", "grch37", ["-D", "50"]),
    ("main_D50_M1", "main.vcf", "grch37", ["-D", "50", "-M", "1"]),
    ("distance_D200", "distance.vcf", "grch37", ["-D", "200"]),
    ("custom_D50", "custom.vcf", "custom_genes.txt", ["-D", "50"]),
    ("custom_D50_M1", "custom.vcf", "custom_genes.txt", ["-D", "50", "-M", "1"]),
]


def run_official(spliceai: Path, fasta: Path, out_dir: Path, suffix: str) -> None:
    for name, vcf, annotation, extra in RUNS:
        ann = annotation if annotation.startswith("grch") else str(HERE / annotation)
        out = out_dir / f"{name}{suffix}.vcf"
        cmd = [str(spliceai), "-I", str(HERE / vcf), "-O", str(out), "-R", str(fasta), "-A", ann, *extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)


def main() -> None:
    import os
    import tempfile

    spliceai = Path(sys.executable).with_name("spliceai")
    genome = build_genome(random.Random(SEED))
    write_fasta(HERE / "genome.fa", genome)
    write_gene_table(HERE / "custom_genes.txt", CUSTOM_GENES)
    contigs = {"1": CHR1_LENGTH, "2": CHR2_LENGTH, "3": 1_000_000}
    write_vcf(HERE / "main.vcf", main_variants(genome), contigs)
    write_vcf(HERE / "distance.vcf", distance_variants(genome), {"1": CHR1_LENGTH})
    write_vcf(HERE / "custom.vcf", custom_variants(genome), {"1": CHR1_LENGTH, "2": CHR2_LENGTH})
    out_dir = HERE / "official"
    out_dir.mkdir(exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "genome.fa"
        write_fasta(fasta, genome)  # the package indexes it; keep the .fai out of the repository
        run_official(spliceai, fasta, out_dir, "")
        padded = Path(tmp) / "padded.fa"
        write_fasta(padded, {name: seq + "N" * PADDING for name, seq in genome.items()})
        run_official(spliceai, padded, out_dir, ".padded")


if __name__ == "__main__":
    main()
