import pytest

from varfx.errors import InputError, OptionError
from varfx.genome import Genome
from varfx.variants import VariantReader, classify_alt, parse_region, variant_kind

from conftest import EXAMPLES, write_vcf


@pytest.mark.parametrize("ref,alt,reason", [
    ("A", "C", None), ("AC", "GT", None), ("A", "ATT", None), ("ATT", "A", None), ("ACG", "TT", None),
    ("A", "N", None),
    ("A", ".", "missing_alt"), ("A", "*", "star_allele"), ("A", "<DEL>", "symbolic_allele"),
    ("A", "<*>", "symbolic_allele"), ("A", "<NON_REF>", "symbolic_allele"),
    ("A", "A[chr2:100[", "breakend"), ("A", "]chr2:100]A", "breakend"), ("A", ".A", "breakend"),
    ("A", "A.", "breakend"), ("A", "R", "invalid_allele"), ("R", "A", "invalid_allele"),
    ("A", "A", "same_as_ref"),
])
def test_classify(ref, alt, reason):
    assert classify_alt(ref, alt) == reason


@pytest.mark.parametrize("ref,alt,kind", [
    ("A", "C", "snv"), ("AC", "GT", "mnv"), ("A", "AT", "insertion"), ("AT", "A", "deletion"),
    ("ACG", "TT", "complex"),
])
def test_kind(ref, alt, kind):
    assert variant_kind(ref, alt) == kind


def test_parse_region():
    assert parse_region("chr1:1,000-2,000") == ("chr1", 1000, 2000)
    assert parse_region("chrX") == ("chrX", None, None)
    with pytest.raises(OptionError, match="CHROM:START-END"):
        parse_region("chr1:abc")
    with pytest.raises(OptionError, match="before the start"):
        parse_region("chr1:200-100")


def test_parse_region_contig_names_with_colons():
    """GRCh38's HLA contigs have ':' in their names: a known name is taken whole, the last ':' splits a
    range off, and htslib's {NAME} form is read too."""
    hla = "HLA-A*01:01:01:01"
    known = {hla, "chr1"}.__contains__
    assert parse_region(hla, known) == (hla, None, None)
    assert parse_region(hla + ":100-2,000", known) == (hla, 100, 2000)
    assert parse_region("{" + hla + "}:5", known) == (hla, 5, None)
    assert parse_region("{" + hla + "}", known) == (hla, None, None)
    assert parse_region("chr1:7-9", known) == ("chr1", 7, 9)
    # an unknown name is read as htslib reads it: digits after the last ':' are a start
    assert parse_region("HLA-B*07:02:01", known) == ("HLA-B*07:02", 1, None)
    with pytest.raises(OptionError, match="CHROM:START-END"):
        parse_region("HLA-B*07:02:01N", known)


def test_region_on_a_contig_named_with_colons(tmp_path):
    """Records of a contig whose name has ':' are found by --region in each of its spellings, and only
    those inside the range; the region's records are the same with the {NAME} form."""
    from conftest import random_seq, write_fasta
    import random
    hla = "HLA-A*01:01:01:01"
    rng = random.Random(3)
    seqs = {hla: random_seq(1000, rng), "chr1": random_seq(1000, rng)}
    fasta = write_fasta(tmp_path / "g.fa", seqs)
    recs = [(hla, p, f"h{p}", seqs[hla][p - 1], "A" if seqs[hla][p - 1] != "A" else "C") for p in (100, 400, 900)]
    recs.append(("chr1", 400, "c400", seqs["chr1"][399], "A" if seqs["chr1"][399] != "A" else "C"))
    gz = _bgzip_index(write_vcf(tmp_path / "v.vcf", recs, contigs={hla: 1000, "chr1": 1000}))
    resolve = Genome(fasta).resolve
    assert [s.id for s in VariantReader(gz, resolve, regions=[hla])] == ["h100", "h400", "h900"]
    for region in (hla + ":50-450", "{" + hla + "}:50-450"):
        sites = list(VariantReader(gz, resolve, regions=[region, "chr1:400"]))
        assert [s.id for s in sites] == ["h100", "h400", "c400"]
        assert sites[0].contig == hla and sites[0].ref == seqs[hla][99]


def test_reader_splits_and_classifies(tmp_path, fasta):
    vcf = write_vcf(tmp_path / "v.vcf", [
        ("chr1", 10, "m", "A", "C,G,*"),
        ("1", 20, "alias", "A", "T"),
        ("MT", 5, "mito", "C", "<DEL>"),
        ("chr9", 5, "gone", "A", "C"),
        ("chr1", 30, ".", "a", "t"),
        ("chr1", 40, "none", "A", "."),
    ], contigs={"chr1": 2000, "1": 2000, "MT": 300, "chr9": 100})
    g = Genome(fasta)
    sites = list(VariantReader(vcf, g.resolve))
    assert [s.record for s in sites] == [0, 1, 2, 3, 4, 5]
    assert sites[0].alts == [(0, "C"), (1, "G")] and sites[0].skipped == [(2, "*", "star_allele")]
    assert sites[1].contig == "chr1" and sites[1].alts == [(0, "T")]
    assert sites[2].contig == "chrM" and sites[2].skipped == [(0, "<DEL>", "symbolic_allele")]
    assert sites[3].contig is None and sites[3].skipped == [(0, "C", "unknown_contig")]
    assert sites[4].ref == "A" and sites[4].alts == [(0, "T")] and sites[4].id == "."
    assert sites[5].skipped == [(0, ".", "missing_alt")]


def _bgzip_index(vcf_path):
    pysam = pytest.importorskip("pysam")
    gz = str(vcf_path) + ".gz"
    pysam.tabix_compress(str(vcf_path), gz, force=True)
    pysam.tabix_index(gz, preset="vcf", force=True)
    return gz


def test_region_uses_index(tmp_path, fasta):
    recs = [("chr1", p, f"v{p}", "A", "C") for p in (100, 200, 300, 400)] + [("chr2", 50, "w", "A", "C")]
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 2000, "chr2": 500})
    gz = _bgzip_index(vcf)
    g = Genome(fasta)
    sites = list(VariantReader(gz, g.resolve, regions=["chr1:150-350"]))
    assert [s.id for s in sites] == ["v200", "v300"]
    # the region's contig may be written with the other naming convention
    sites = list(VariantReader(gz, g.resolve, regions=["2"]))
    assert [s.id for s in sites] == ["w"]


def test_regions_read_each_record_once(tmp_path, fasta):
    """Overlapping regions, and a deletion reaching from one region into the next, give each record once,
    with the first region that holds it; the expected list is found by brute force with pysam."""
    pysam = pytest.importorskip("pysam")
    recs = [("chr1", 100, "a", "A", "C"), ("chr1", 195, "del", "ACGTACGTACGT", "A"),
            ("chr1", 250, "b", "A", "G"), ("chr1", 250, "b_dup", "A", "G"), ("chr1", 320, "c", "A", "T"),
            ("chr1", 600, "d", "A", "T"), ("chr2", 50, "w", "A", "C")]
    gz = _bgzip_index(write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 2000, "chr2": 500}))
    regions = ["chr1:240-330", "2", "chr1:200-260", "chr1:150-199", "chr1:300-700"]
    spans = [("chr1", 239, 330), ("chr2", 0, 500), ("chr1", 199, 260), ("chr1", 149, 199), ("chr1", 299, 700)]
    order = []
    for r in pysam.VariantFile(str(gz)):
        first = next(i for i, (c, lo, hi) in enumerate(spans + [(r.chrom, -1, 10**9)])
                     if c == r.chrom and r.start < hi and r.stop > lo)
        order.append((first, r.id))
    want = [vid for first, vid in sorted(order, key=lambda x: x[0]) if first < len(spans)]
    assert want == ["b", "b_dup", "c", "w", "del", "d"]  # "a" is in no region
    reader = VariantReader(gz, Genome(fasta).resolve, regions=regions)
    assert [s.id for s in reader] == want and reader.records_read == len(want)


def test_region_without_index_is_clear_error(tmp_path, fasta):
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 100, "a", "A", "C")])
    with pytest.raises(InputError, match="bcftools index"):
        VariantReader(vcf, Genome(fasta).resolve, regions=["chr1:1-200"])


def test_region_unknown_contig(tmp_path, fasta):
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 100, "a", "A", "C")], contigs={"chr1": 2000})
    gz = _bgzip_index(vcf)
    with pytest.raises(OptionError, match="contig chr7 is not in"):
        VariantReader(gz, Genome(fasta).resolve, regions=["chr7:1-10"])


def test_unparseable_files(tmp_path, fasta):
    empty = tmp_path / "empty.vcf"
    empty.write_text("")
    with pytest.raises(InputError, match="is empty"):
        VariantReader(empty, Genome(fasta).resolve)
    junk = tmp_path / "junk.vcf"
    junk.write_text("hello\nworld\n")
    with pytest.raises(InputError, match="cannot parse"):
        VariantReader(junk, Genome(fasta).resolve)
    with pytest.raises(InputError, match="not found"):
        VariantReader(tmp_path / "missing.vcf", Genome(fasta).resolve)


def test_bgzf_file_cut_at_a_block_boundary_is_refused(tmp_path, fasta):
    """htslib reads a BGZF file cut between blocks to the cut with only a warning; varfx refuses it."""
    import gzip

    from click.testing import CliRunner

    from varfx.cli import cli
    pysam = pytest.importorskip("pysam")
    recs = [("chr1", p, f"v{p}", "A", "C") for p in range(100, 1900, 3)]
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 2000})
    gz = tmp_path / "v.vcf.gz"
    pysam.tabix_compress(str(vcf), str(gz))
    g = Genome(fasta)
    assert len(list(VariantReader(gz, g.resolve))) == len(recs)  # intact
    plain = tmp_path / "plain.vcf.gz"  # plain gzip (not BGZF) has no such marker and is read as is
    plain.write_bytes(gzip.compress(vcf.read_bytes()))
    assert len(list(VariantReader(plain, g.resolve))) == len(recs)
    cut = tmp_path / "cut.vcf.gz"
    cut.write_bytes(gz.read_bytes()[:-28])  # the last 28 bytes are the end-of-file block
    with pytest.raises(InputError, match=r"cut.vcf.gz is truncated: it lacks the BGZF end-of-file marker"):
        VariantReader(cut, g.resolve)
    r = CliRunner().invoke(cli, ["score", str(cut), "--fasta", str(fasta), "--backend", "torchscript",
                                 "--weights", str(EXAMPLES / "model.pt"), "--out", str(tmp_path / "o.h5")])
    assert r.exit_code != 0 and "is truncated" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o.h5").exists()


# lines that made cyvcf2 crash the process (a segmentation fault) when varfx read their REF; run in a child
# process so that a return of the crash fails this test instead of killing the test session
_READ_LINES = r"""
import sys
from varfx.errors import InputError
from varfx.genome import Genome
from varfx.variants import VariantReader
genome = Genome(sys.argv[1])
for path in sys.argv[2:]:
    reader = VariantReader(path, genome.resolve)
    try:
        sites = list(reader)
        print(path, "ok", reader.records_read, [(s.pos, s.ref, [a for _, a in s.alts]) for s in sites])
    except InputError as exc:
        print(path, "error", exc)
"""


def test_blank_lines_are_passed_over_and_lines_without_alleles_are_errors(tmp_path, fasta, genome_seqs):
    import subprocess
    import sys
    pysam = pytest.importorskip("pysam")
    head = "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=2000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    seq = genome_seqs["chr1"].upper()
    rec = lambda pos: f"chr1\t{pos}\t.\t{seq[pos - 1]}\t{'A' if seq[pos - 1] != 'A' else 'C'}\t.\tPASS\t.\n"
    bare = head.replace("##contig=<ID=chr1,length=2000>\n", "")
    files = {"blank_end.vcf": rec(100) + rec(110) + "\n", "blank_mid.vcf": rec(100) + "\n" + rec(110),
             "blank_twice.vcf": rec(100) + "\n\n" + rec(110), "blank_mid_contigs.vcf": rec(100) + "\n" + rec(110),
             # first in the file, on a contig htslib has not met: it hands them over without alleles
             "one_col.vcf": "chr1\n" + rec(100), "three_cols.vcf": "chr1\t120\t.\n" + rec(130),
             "spaces.vcf": rec(120).replace("\t", " ") + rec(130),
             "negative_pos.vcf": rec(100).replace("\t100\t", "\t-5\t") + rec(130)}
    paths = []
    for name, body in files.items():
        # without ##contig lines htslib hands these lines over as records without alleles (the crash)
        (tmp_path / name).write_text((head if name == "blank_mid_contigs.vcf" else bare) + body)
        paths.append(tmp_path / name)
    pysam.tabix_compress(str(tmp_path / "blank_end.vcf"), str(tmp_path / "blank_end.vcf.gz"), force=True)
    paths.append(tmp_path / "blank_end.vcf.gz")
    r = subprocess.run([sys.executable, "-c", _READ_LINES, fasta, *paths], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {line.split(" ", 1)[0].rsplit("/", 1)[-1]: line.split(" ", 1)[1] for line in r.stdout.splitlines()}
    two = [(100, seq[99], ["A" if seq[99] != "A" else "C"]), (110, seq[109], ["A" if seq[109] != "A" else "C"])]
    for name in ("blank_end.vcf", "blank_mid.vcf", "blank_end.vcf.gz"):
        assert got[name] == f"ok 2 {two}", (name, got[name])  # 2 records read: the blank lines are none
    # htslib reads the first blank line as an empty record and refuses a second one (its message, one line)
    assert got["blank_mid_contigs.vcf"] == f"ok 2 {two}"
    assert got["blank_twice.vcf"].startswith("error ") and "could not be parsed" in got["blank_twice.vcf"] \
        and "blank line" in got["blank_twice.vcf"]
    for name in ("one_col.vcf", "three_cols.vcf", "spaces.vcf", "negative_pos.vcf"):
        assert got[name].startswith("error ") and "could not be parsed" in got[name] and "has no REF" in got[name], \
            (name, got[name])


def test_reader_fast_paths_agree_with_the_general_classification(tmp_path, fasta):
    """The reader takes REF/one-ALT records of plain upper-case bases (SNVs, indels, MNVs) on a shortcut;
    every record, shortcut or not, holds what classify_alt and the contig resolver say, and contig changes
    (sorted or not, aliases, unknown contigs) are resolved for each record."""
    import random

    from varfx.variants import Site, classify_alt

    rng = random.Random(7)
    forms = ["A", "C", "G", "T", "N", "a", "c", "AC", "ACGTN", "acg", "AcG", "NNN", "R", "AR", "*", ".",
             "<DEL>", "<*>", "A[chr2:5[", ".A", "A.", "GATTACA"]
    contigs = ["chr1", "1", "chr2", "chrM", "MT", "chr9"]
    recs = []
    for i in range(400):
        ref = rng.choice([f for f in forms if f not in ("*", ".", "<DEL>", "<*>", "A[chr2:5[", ".A", "A.")])
        alts = ",".join(rng.choice(forms) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        recs.append((rng.choice(contigs) if rng.random() < 0.3 else "chr1", 10 + i, f"r{i}", ref, alts))
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={c: 5000 for c in contigs})
    g = Genome(fasta)
    sites = list(VariantReader(vcf, g.resolve))
    assert len(sites) == len(recs)
    for site, (chrom, pos, vid, ref, alts) in zip(sites, recs):
        want = Site(site.record, chrom, g.resolve(chrom), pos, vid, ref.upper())
        for i, alt in enumerate(alts.split(",")):
            alt = alt if alt.startswith("<") or "[" in alt else alt.upper()
            reason = classify_alt(ref.upper(), alt) or (None if want.contig else "unknown_contig")
            (want.alts.append((i, alt)) if reason is None else want.skipped.append((i, alt, reason)))
        assert site == want, (site, want)
