"""VCF annotation (`varfx score --out-vcf`, `varfx annotate`): every value read back with cyvcf2 and pysam
and checked against varfx.read_scores of the same run; the summaries are recomputed here with numpy."""

import gzip
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cyvcf2 import VCF

import varfx
from varfx.annotate import encode_value, info_keys
from varfx.cli import cli

from conftest import CORPUS, EXAMPLES, write_fasta, write_vcf
from toy_models import save_toy

pysam = pytest.importorskip("pysam")

MODEL = ["--backend", "torchscript", "--weights", str(EXAMPLES / "model.pt")]
VCF_KEY = re.compile(r"^[A-Za-z_][0-9A-Za-z_.]*$")  # the VCF specification's INFO key
SUMMARY = ("MAXABS", "MAXTRACK", "L2")


def run(args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def fails(args):
    """A one-line error: (exit code, the line)."""
    r = CliRunner().invoke(cli, [str(a) for a in args])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert len(lines) == 1 and lines[0].startswith("varfx: error: "), r.output
    return r.exit_code, lines[0]


def score_example(folder: Path, *extra):
    return run(["score", EXAMPLES / "variants.vcf", "--fasta", EXAMPLES / "genome.fa", *MODEL, "-q", *extra])


# -- what a file should hold, computed from read_scores with numpy ---------------------------------------------------


def expected(h5: Path, tracks: list[int]) -> tuple[dict, dict]:
    """{(record, alt_index): {field: value}} for scored ALTs and {(record, alt_index): reason} for skipped ones."""
    res = varfx.read_scores(h5)
    ids = list(res.tracks["id"])
    rows = list(zip(res.variants["record"], res.variants["alt_index"]))
    want = {r: {} for r in rows}
    for stat, values in res.stats.items():
        v = np.asarray(values, dtype=np.float32)
        if v.ndim == 1:  # a profile statistic
            for r, x in zip(rows, v):
                want[r][f"VARFX_{stat}"] = float(x)
            continue
        best = np.argmax(np.abs(v), axis=1)  # the first track on ties
        maxabs = v[np.arange(len(v)), best]
        l2 = np.sqrt(np.square(v.astype(np.float64)).sum(axis=1)).astype(np.float32)
        for i, r in enumerate(rows):
            want[r][f"VARFX_{stat}_MAXABS"] = float(maxabs[i])
            want[r][f"VARFX_{stat}_MAXTRACK"] = ids[best[i]]
            want[r][f"VARFX_{stat}_L2"] = float(l2[i])
            for t in tracks:
                want[r][f"VARFX_{stat}_{re.sub(r'[^A-Za-z0-9_]', '_', ids[t])}"] = float(v[i, t])
    skipped = dict(zip(zip(res.skipped["record"], res.skipped["alt_index"]), res.skipped["reason"]))
    return want, skipped


def per_alt(value, n: int) -> list:
    """A Number=A value as read by cyvcf2 or pysam -> a list of n entries (None for missing)."""
    if value is None:
        return [None] * n
    if isinstance(value, str):
        value = tuple(value.split(","))
    if not isinstance(value, (tuple, list)):
        value = (value,)
    out = [None if x is None or x == "." else x for x in value]
    assert len(out) == n
    return out


def check_file(out: Path, h5: Path, source: Path, tracks: list[int], rtol: float, regions=None):
    """Every record of ``source`` (in ``regions``) once, in order, and every value as read_scores says."""
    want, skipped = expected(h5, tracks)
    fields = {k for v in want.values() for k in v} | {"VARFX_SKIP"}
    src = VCF(str(source))
    if regions:  # each record once, with the first region that holds it (the example has no duplicates)
        seen, src_recs = set(), []
        for r in (r for q in regions for r in src(q)):
            key = (r.CHROM, r.POS, r.ID, r.REF, tuple(r.ALT))
            if key not in seen:
                seen.add(key)
                src_recs.append(r)
    else:
        src_recs = list(src)
    ours = list(VCF(str(out)))
    theirs = list(pysam.VariantFile(str(out)))
    assert len(ours) == len(theirs) == len(src_recs) == varfx.read_scores(h5).settings["records_read"]
    header = pysam.VariantFile(str(out)).header.info
    for f in fields:  # every field declared, one value per ALT
        assert f in header and header[f].number == "A", f
        assert header[f].type == ("String" if f.endswith("MAXTRACK") or f == "VARFX_SKIP" else "Float")
    declared = {k for k in header if k.startswith("VARFX_")}
    assert declared == fields
    n_values = 0
    for i, (a, b, s) in enumerate(zip(ours, theirs, src_recs)):
        assert (a.CHROM, a.POS, a.ID, a.REF, a.ALT) == (s.CHROM, s.POS, s.ID, s.REF, s.ALT)
        assert (b.chrom, b.pos, b.ref, list(b.alts or ())) == (s.CHROM, s.POS, s.REF, s.ALT)
        n = len(s.ALT)
        for f in fields:
            got_a = per_alt(a.INFO.get(f), n)
            got_b = per_alt(b.info.get(f), n)
            for j in range(n):
                key = (i, j)
                if f == "VARFX_SKIP":
                    reason = skipped.get(key)
                    assert got_a[j] == got_b[j] == reason, (i, j, got_a, reason)
                elif key in want:
                    x = want[key][f]
                    for got in (got_a[j], got_b[j]):
                        if isinstance(x, str):
                            assert urllib.parse.unquote(got) == x
                        else:
                            np.testing.assert_allclose(got, x, rtol=rtol, atol=0)
                    n_values += 1
                else:
                    assert key in skipped
                    assert got_a[j] is None and got_b[j] is None
        if n == 0:  # ALT '.': no Number=A values at all, the record as it was
            assert not any(k.startswith("VARFX_") for k in b.info)
            assert str(a) == str(s)
    assert n_values == len(want) * (len(fields) - 1)  # every scored ALT's every value was checked
    return ours


# -- the bundled example ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """One run of the example with an HDF5 file, a bgzipped annotated VCF, statistics with and without tracks."""
    t = tmp_path_factory.mktemp("example")
    score_example(t, "--out", t / "s.h5", "--out-vcf", t / "a.vcf.gz", "--stat", "SAD,D2,QTL", "--vcf-tracks", "0,2")
    return t


def test_example_values_read_back_with_cyvcf2_and_pysam(example):
    check_file(example / "a.vcf.gz", example / "s.h5", EXAMPLES / "variants.vcf", [0, 2], rtol=1e-5)


def test_example_annotation_is_bgzip_and_tabix_indexes(example, tmp_path):
    raw = (example / "a.vcf.gz").read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x04" and raw[12:14] == b"BC"  # a BGZF block header
    assert raw.endswith(bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000"))  # EOF block
    copy = tmp_path / "a.vcf.gz"
    shutil.copy(example / "a.vcf.gz", copy)
    pysam.tabix_index(str(copy), preset="vcf")
    with pysam.VariantFile(str(copy)) as v:
        got = [(r.pos, r.id) for r in v.fetch("chr2", 10_000, 20_000)]
    src = [(r.POS, r.ID) for r in VCF(str(EXAMPLES / "variants.vcf")) if r.CHROM == "chr2" and 10_000 < r.POS <= 20_000]
    assert got == src and len(got) > 5


def test_example_header_names_model_statistic_and_track(example):
    header = pysam.VariantFile(str(example / "a.vcf.gz")).header.info
    d = header["VARFX_SAD_motifB"].description
    assert "SAD" in d and "motifB" in d and "unstranded" in d and "model.pt" in d
    assert "L2 norm of D2 over the 3 tracks" in header["VARFX_D2_L2"].description
    assert "QTL" in header["VARFX_QTL"].description
    assert "VARFX_SAD_motifA_minus" not in header  # a track not chosen


def test_annotate_to_bcf_stores_typed_values(example, tmp_path):
    """`varfx annotate` from the same HDF5: a BCF holds float32 values equal to the file's, and strings."""
    out = tmp_path / "a.bcf"
    r = run(["annotate", example / "s.h5", "--vcf", EXAMPLES / "variants.vcf", "--out-vcf", out,
             "--vcf-tracks", "motif B"])  # a regular expression on the descriptions: track 2
    assert "ALTs skipped (VARFX_SKIP): 4" in r.output
    assert out.read_bytes()[:3] == b"\x1f\x8b\x08"  # BGZF-compressed BCF
    check_file(out, example / "s.h5", EXAMPLES / "variants.vcf", [2], rtol=0)
    with pysam.VariantFile(str(out)) as v:
        assert v.header.info["VARFX_SAD_MAXABS"].type == "Float"


def test_without_out_no_hdf5_is_left(example, tmp_path):
    """Only --out-vcf: the HDF5 is a temporary file, removed; the VCF equals the one made beside --out."""
    r = score_example(tmp_path, "--out-vcf", tmp_path / "only.vcf.gz", "--stat", "SAD,D2,QTL", "--vcf-tracks", "0,2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.skipped.tsv", "only.vcf.gz"]
    assert "wrote: " in r.output and "only.vcf.gz" in r.output and ".h5" not in r.output
    with gzip.open(tmp_path / "only.vcf.gz", "rt") as a, gzip.open(example / "a.vcf.gz", "rt") as b:
        assert a.read() == b.read()
    assert (tmp_path / "only.skipped.tsv").read_text().count("\n") == 1 + 4


@pytest.mark.slow
def test_merged_shards_annotate_like_one_run(tmp_path):
    """`varfx annotate` on a merged sharded run writes the VCF that `score --out-vcf` writes unsharded."""
    common = ["--block-records", "32", "--vcf-tracks", "all"]
    score_example(tmp_path, "--out-vcf", tmp_path / "one.vcf.gz", *common)
    for k in (1, 2, 3):
        score_example(tmp_path, "--out", tmp_path / f"s{k}.h5", "--shard", f"{k}/3", "--block-records", "32")
    run(["merge", *(tmp_path / f"s{k}.h5" for k in (3, 1, 2)), "--out", tmp_path / "merged.h5"])
    run(["annotate", tmp_path / "merged.h5", "--vcf", EXAMPLES / "variants.vcf", "--out-vcf", tmp_path / "m.vcf.gz",
         "--vcf-tracks", "all"])
    with gzip.open(tmp_path / "one.vcf.gz", "rt") as a, gzip.open(tmp_path / "m.vcf.gz", "rt") as b:
        one, merged = a.read(), b.read()
    assert one == merged and one.count("\n#CHROM") == 1
    check_file(tmp_path / "m.vcf.gz", tmp_path / "merged.h5", EXAMPLES / "variants.vcf", [0, 1, 2], rtol=1e-5)


def test_region_writes_the_records_read(tmp_path):
    src = tmp_path / "v.vcf.gz"
    pysam.tabix_compress(str(EXAMPLES / "variants.vcf"), str(src))
    pysam.tabix_index(str(src), preset="vcf")
    regions = ["chr2:5000-20000", "chrM", "chr2:15000-30000"]  # the third overlaps the first
    run(["score", src, "--fasta", EXAMPLES / "genome.fa", *MODEL, "-q", *[a for r in regions for a in ("--region", r)],
         "--out", tmp_path / "r.h5", "--out-vcf", tmp_path / "r.vcf"])
    check_file(tmp_path / "r.vcf", tmp_path / "r.h5", src, [], rtol=1e-5, regions=regions)
    in_first = [(r.CHROM, r.POS) for q in ("chr2:5000-20000", "chrM") for r in VCF(str(src))(q)]
    rest = [(r.CHROM, r.POS) for r in VCF(str(src))("chr2:20001-30000")]
    ours = [(r.CHROM, r.POS) for r in VCF(str(tmp_path / "r.vcf"))]
    assert ours == in_first + rest and 0 < len(in_first) and 0 < len(rest) and len(ours) < 285
    run(["annotate", tmp_path / "r.h5", "--vcf", src, "--out-vcf", tmp_path / "again.vcf"])
    assert (tmp_path / "again.vcf").read_text() == (tmp_path / "r.vcf").read_text()


# -- multi-allelic records with skipped ALTs, unknown contigs ----------------------------------------------------------


def other(b):
    return "A" if b.upper() != "A" else "C"


def test_multiallelic_records_with_skipped_alts(tmp_path, fasta, genome_seqs):
    s1 = genome_seqs["chr1"].upper()
    bad = other(s1[999])
    recs = [
        ("chr1", 100, "snv", s1[99], other(s1[99])),
        ("chr1", 200, "sym", s1[199], f"{other(s1[199])},<DEL>,{s1[199]}GA"),  # the middle ALT is symbolic
        ("chr1", 300, "star", s1[299], f"*,{other(s1[299])}"),
        ("chr1", 1000, "mismatch", bad, f"{other(bad)},{bad}T"),  # REF disagrees with the FASTA: both skipped
        ("chr1", 1100, "noalt", s1[1099], "."),
        ("chrZ", 10, "nocontig1", "A", "C,G"),  # a contig the FASTA lacks
        ("chr1", 1200, "same", s1[1199], f"{s1[1199]},{other(s1[1199])}"),
        ("chrZ", 20, "nocontig2", "A", "T"),
    ]
    vcf = write_vcf(tmp_path / "m.vcf", recs, contigs={"chr1": 2000, "chrZ": 100})
    weights, _ = save_toy(tmp_path)
    run(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights, "-q", "--float32",
         "--out", tmp_path / "m.h5", "--out-vcf", tmp_path / "m.vcf.gz", "--vcf-tracks", "all"])
    res = varfx.read_scores(tmp_path / "m.h5")
    reasons = set(res.skipped["reason"])
    assert {"symbolic_allele", "star_allele", "ref_mismatch", "unknown_contig", "same_as_ref", "missing_alt"} <= reasons
    ours = check_file(tmp_path / "m.vcf.gz", tmp_path / "m.h5", vcf, [0, 1, 2], rtol=1e-5)
    by_id = {r.ID: r for r in ours}
    assert by_id["sym"].INFO.get("VARFX_SKIP") == ".,symbolic_allele,."
    assert by_id["mismatch"].INFO.get("VARFX_SKIP") == "ref_mismatch,ref_mismatch"
    assert by_id["mismatch"].INFO.get("VARFX_SAD_MAXABS") is None  # no ALT scored: no value fields
    assert by_id["nocontig1"].INFO.get("VARFX_SKIP") == "unknown_contig,unknown_contig"
    assert by_id["snv"].INFO.get("VARFX_SKIP") is None  # every ALT scored
    sad = per_alt(by_id["sym"].INFO.get("VARFX_SAD_t1"), 3)
    assert sad[1] is None and sad[0] is not None and sad[2] is not None


# -- a real-world file with samples: everything else is kept ---------------------------------------------------------


def corpus_fasta(vcf: Path, path: Path, leave_out: str | None = None, mismatch: tuple[str, int] | None = None) -> Path:
    """Random contigs long enough for ``vcf``, carrying each record's REF; ``leave_out`` absent and a
    wrong base at ``mismatch``."""
    ends: dict[str, int] = {}
    recs = list(VCF(str(vcf), samples=[]))
    for r in recs:
        ends[r.CHROM] = max(ends.get(r.CHROM, 0), r.POS + len(r.REF) + 200)
    rng = np.random.default_rng(0)
    acgt = np.frombuffer(b"ACGT", np.uint8)
    seqs = {c: acgt[rng.integers(0, 4, n)] for c, n in ends.items() if c != leave_out}
    for r in recs:
        if r.CHROM in seqs:
            seqs[r.CHROM][r.POS - 1:r.POS - 1 + len(r.REF)] = np.frombuffer(r.REF.upper().encode(), np.uint8)
    if mismatch:
        c, p = mismatch
        seqs[c][p - 1] = ord(other(chr(seqs[c][p - 1])))
    return write_fasta(path, {c: s.tobytes().decode() for c, s in seqs.items()}, width=10_000)


@pytest.mark.parametrize("ending", [".vcf.gz", ".bcf"])
def test_corpus_file_with_samples_keeps_everything_else(tmp_path, ending):
    src = CORPUS / "htslib" / "tabix__vcf_file.vcf"  # 2 samples, FORMAT fields, flags, multi-allelic, ALT '.'
    fa = corpus_fasta(src, tmp_path / "g.fa", leave_out="3", mismatch=("2", 3199812))
    weights, _ = save_toy(tmp_path)
    out = tmp_path / f"o{ending}"
    run(["score", src, "--fasta", fa, "--backend", "torchscript", "--weights", weights, "-q",
         "--out", tmp_path / "o.h5", "--out-vcf", out, "--vcf-tracks", "track 1$"])
    res = varfx.read_scores(tmp_path / "o.h5")
    assert {"unknown_contig", "ref_mismatch", "missing_alt"} <= set(res.skipped["reason"])
    check_file(out, tmp_path / "o.h5", src, [1], rtol=1e-5 if ending == ".vcf.gz" else 0)
    a_in, a_out = pysam.VariantFile(str(src)), pysam.VariantFile(str(out))
    assert list(a_out.header.samples) == list(a_in.header.samples) == ["A", "B"]
    for key in ("TEST", "DP4", "AC", "AN", "INDEL", "STR"):
        assert str(a_out.header.info[key].record) == str(a_in.header.info[key].record)
    for key in ("TT", "GT", "GQ", "DP", "GL"):
        assert a_out.header.formats[key].number == a_in.header.formats[key].number
    n = 0
    for x, y in zip(a_in, a_out, strict=True):
        assert (x.chrom, x.pos, x.id, x.ref, x.alts, x.qual, list(x.filter)) == \
               (y.chrom, y.pos, y.id, y.ref, y.alts, y.qual, list(y.filter))
        assert {k: v for k, v in x.info.items()} == {k: v for k, v in y.info.items() if not k.startswith("VARFX_")}
        for s in ("A", "B"):
            assert dict(x.samples[s].items()) == dict(y.samples[s].items())
            assert x.samples[s].phased == y.samples[s].phased
        n += 1
    assert n == 15
    for x, y in zip(VCF(str(src)), VCF(str(out)), strict=True):  # the genotype columns, as text
        assert str(x).split("\t")[8:] == str(y).split("\t")[8:]


def test_undeclared_contigs_and_tags_still_make_a_valid_bcf(tmp_path, fasta, genome_seqs):
    """A VCF without contig lines whose records use INFO and FORMAT tags it does not declare."""
    s1 = genome_seqs["chr1"].upper()
    lines = ["##fileformat=VCFv4.2", '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT", "S1", "S2"])]
    for k, p in enumerate((100, 400, 800)):
        alt = other(s1[p - 1]) + ("," + s1[p - 1] + "T" if k == 1 else "")
        lines.append("\t".join(["chr1", str(p), f"r{k}", s1[p - 1], alt, "50", "PASS", f"XX={k};FLAGGED",
                                "GT:YY", f"0/1:{k},7", "1|1:."]))
    src = tmp_path / "u.vcf"
    src.write_text("\n".join(lines) + "\n")
    weights, _ = save_toy(tmp_path)
    run(["score", src, "--fasta", fasta, "--backend", "torchscript", "--weights", weights, "-q",
         "--out", tmp_path / "u.h5", "--out-vcf", tmp_path / "u.bcf"])
    check_file(tmp_path / "u.bcf", tmp_path / "u.h5", src, [], rtol=0)
    with pysam.VariantFile(str(tmp_path / "u.bcf")) as v:
        assert "chr1" in v.header.contigs and {"XX", "FLAGGED"} <= set(v.header.info) and "YY" in v.header.formats
        recs = list(v)
    assert [str(r.info["XX"]) for r in recs] == ["0", "1", "2"] and all("FLAGGED" in r.info for r in recs)
    assert [r.samples["S1"]["YY"] for r in recs] == [("0", "7"), ("1", "7"), ("2", "7")]
    assert [r.samples["S2"]["GT"] for r in recs] == [(1, 1)] * 3 and all(r.samples["S2"].phased for r in recs)


def test_samples_htslib_cannot_parse_are_one_line(tmp_path):
    src = CORPUS / "htslib" / "vcf44_1.vcf"  # genotypes such as '/0' and '|./1'
    fa = corpus_fasta(src, tmp_path / "g.fa")
    weights, _ = save_toy(tmp_path)
    code, msg = fails(["score", src, "--fasta", fa, "--backend", "torchscript", "--weights", weights, "-q",
                       "--out", tmp_path / "o.h5", "--out-vcf", tmp_path / "o.vcf.gz"])
    assert "a record could not be read with its sample columns" in msg and code == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("o.")) == ["o.h5"]  # the scores stay


# -- track identifiers as INFO keys and values ---------------------------------------------------------------------


def test_info_keys_are_valid_and_unique():
    ids = ["CAGE:K562 rep1", "CAGE:K562-rep1", "MAXABS", "maxabs", "x.y", "x_y", "1st", "", "ü"]
    keys = info_keys("SAD", ids)
    assert all(VCF_KEY.match(k) and k.startswith("VARFX_SAD_") for k in keys)
    assert len({k.upper() for k in keys} | {f"VARFX_SAD_{s}" for s in SUMMARY}) == len(keys) + 3
    assert keys[0] == "VARFX_SAD_CAGE_K562_rep1" and keys[1] == "VARFX_SAD_CAGE_K562_rep1_2"
    assert keys[2] == "VARFX_SAD_MAXABS_2"
    for text in ids + ["a,b;c=d e%f:g", "ref_mismatch"]:
        enc = encode_value(text)
        assert not set(enc) & set(" ,;=:\t\n") and urllib.parse.unquote(enc) == (text or "_")
    assert encode_value("ref_mismatch") == "ref_mismatch"


def test_odd_track_ids_and_labels(tmp_path, fasta, genome_seqs):
    weights, _ = save_toy(tmp_path)
    spec = json.loads(weights.with_suffix(".json").read_text())
    odd = ["CAGE:K562 rep1", "CAGE:K562,rep1", "MAXABS"]
    for t, tid in zip(spec["tracks"], odd):
        t["id"], t["description"] = tid, f'say "{tid}"; x=1'
    weights.with_suffix(".json").write_text(json.dumps(spec))
    s1 = genome_seqs["chr1"].upper()
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", p, f"v{p}", s1[p - 1], other(s1[p - 1])) for p in (100, 500, 900)])
    run(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights, "-q", "--float32",
         "--out", tmp_path / "o.h5", "--out-vcf", tmp_path / "o.vcf", "--vcf-tracks", "all"])
    header = pysam.VariantFile(str(tmp_path / "o.vcf")).header.info
    assert {"VARFX_SAD_CAGE_K562_rep1", "VARFX_SAD_CAGE_K562_rep1_2", "VARFX_SAD_MAXABS_2"} <= set(header)
    assert "CAGE:K562,rep1" in header["VARFX_SAD_CAGE_K562_rep1_2"].description
    res = varfx.read_scores(tmp_path / "o.h5")
    v = res.stats["SAD"].astype(np.float32)
    for i, rec in enumerate(pysam.VariantFile(str(tmp_path / "o.vcf"))):
        assert urllib.parse.unquote(rec.info["VARFX_SAD_MAXTRACK"][0]) == odd[int(np.argmax(np.abs(v[i])))]
        np.testing.assert_allclose(rec.info["VARFX_SAD_MAXABS_2"][0], v[i, 2], rtol=1e-5)
        np.testing.assert_allclose(rec.info["VARFX_SAD_MAXABS"][0], v[i, np.argmax(np.abs(v[i]))], rtol=1e-5)


def test_values_already_in_the_input_are_replaced(example, tmp_path):
    """Scoring an annotated VCF again: the fields written are replaced, never doubled."""
    again = tmp_path / "again.vcf"
    run(["score", example / "a.vcf.gz", "--fasta", EXAMPLES / "genome.fa", *MODEL, "-q", "--stat", "SAD",
         "--out", tmp_path / "b.h5", "--out-vcf", again])
    want, _ = expected(tmp_path / "b.h5", [])
    text = again.read_text()
    assert text.count("##INFO=<ID=VARFX_SAD_MAXABS,") == 1
    for i, rec in enumerate(VCF(str(again))):
        info = str(rec).split("\t")[7]
        scored = [(i, j) in want for j in range(len(rec.ALT))]
        assert info.count("VARFX_SAD_MAXABS=") == (1 if any(scored) else 0)
        got = per_alt(rec.INFO.get("VARFX_SAD_MAXABS"), len(rec.ALT))
        for j, ok in enumerate(scored):
            if ok:
                np.testing.assert_allclose(got[j], want[(i, j)]["VARFX_SAD_MAXABS"], rtol=1e-5)
            else:
                assert got[j] is None
        assert ("VARFX_D2_MAXABS=" in info) == any(scored)  # the earlier run's D2 fields stay


# -- user errors -----------------------------------------------------------------------------------------------------


def test_user_errors_are_one_line(example, tmp_path):
    base = ["score", EXAMPLES / "variants.vcf", "--fasta", EXAMPLES / "genome.fa", *MODEL, "-q"]
    out = ["--out-vcf", tmp_path / "x.vcf.gz"]
    code, msg = fails(base + out + ["--vcf-stats", "XYZ"])
    assert msg == "varfx: error: --vcf-stats 'XYZ' is not a statistic; the scores have SAD, logSED" and code == 2
    code, msg = fails(base + out + ["--vcf-stats", "D1"])
    assert "the scores have no D1 (they have SAD, logSED); add it to --stat" in msg
    code, msg = fails(base + out + ["--vcf-tracks", "no such track"])
    assert "--vcf-tracks 'no such track' matches no track description" in msg
    code, msg = fails(base + out + ["--vcf-tracks", "5"])
    assert "--vcf-tracks '5': 5 is outside 0..2" in msg
    code, msg = fails(base + out + ["--shard", "1/2"])
    assert "--out-vcf is not written by one shard" in msg and "varfx annotate" in msg
    code, msg = fails(base + ["--out-vcf", tmp_path / "x.txt"])
    assert "--out-vcf" in msg and "must end in .vcf, .vcf.gz or .bcf" in msg
    code, msg = fails(base + ["--out", tmp_path / "x.h5", "--vcf-stats", "SAD"])
    assert "give --out-vcf OUT.vcf.gz too" in msg
    code, msg = fails(base + ["--tsv", tmp_path / "x.vcf", "--out-vcf", tmp_path / "x.vcf"])
    assert "--out-vcf must be a file of its own" in msg
    code, msg = fails(base + ["--out-vcf", tmp_path / "x.vcf", "--genotypes", EXAMPLES / "variants.vcf"])
    assert "with --genotypes" in msg
    code, msg = fails(base + ["--out", tmp_path / "x.h5", "--vcf-tracks", "0",
                              "--genotypes", EXAMPLES / "variants.vcf"])
    assert "--genotypes runs write no annotated VCF" in msg
    code, msg = fails(["score", EXAMPLES / "variants.vcf", "--fasta", EXAMPLES / "genome.fa", "--backend", "spliceai",
                       "--out-vcf", tmp_path / "x.vcf", "--vcf-stats", "SAD"])
    assert "--backend spliceai writes its own INFO field" in msg
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing left behind

    ann = ["annotate", example / "s.h5", "--vcf", EXAMPLES / "variants.vcf"]
    other_vcf = write_vcf(tmp_path / "other.vcf", [("chr1", 10, ".", "A", "C")])
    code, msg = fails(["annotate", example / "s.h5", "--vcf", other_vcf, "--out-vcf", tmp_path / "w.vcf"])
    assert "is not the VCF these scores were made from" in msg and code == 1
    code, msg = fails(ann + ["--out-vcf", tmp_path / "w.vcf.zip"])
    assert "must end in .vcf, .vcf.gz or .bcf" in msg
    code, msg = fails(ann + ["--out-vcf", tmp_path / "w.vcf", "--vcf-stats", "logSED"])
    assert "the scores have no logSED (they have SAD, D2, QTL)" in msg
    code, msg = fails(ann + ["--out-vcf", tmp_path / "w.vcf", "--vcf-stats", "QTL", "--vcf-tracks", "0"])
    assert "QTL have one value per variant" in msg
    code, msg = fails(ann + ["--out-vcf", tmp_path / "w.vcf", "--vcf-tracks", "nothing"])
    assert "matches no track" in msg
    code, msg = fails(ann + ["--out-vcf", tmp_path / "missing" / "w.vcf"])
    assert "does not exist" in msg
    code, msg = fails(["annotate", tmp_path / "none.h5", "--vcf", EXAMPLES / "variants.vcf",
                       "--out-vcf", tmp_path / "w.vcf"])
    assert "scores file not found" in msg
    code, msg = fails(ann + ["--out-vcf", EXAMPLES / "variants.vcf"])
    assert "is also an input of this command (its vcf)" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.vcf"]


def test_annotate_refuses_a_shard(tmp_path):
    score_example(tmp_path, "--out", tmp_path / "s1.h5", "--shard", "1/2", "--block-records", "64")
    code, msg = fails(["annotate", tmp_path / "s1.h5", "--vcf", EXAMPLES / "variants.vcf",
                       "--out-vcf", tmp_path / "w.vcf"])
    assert "is shard 1/2 of a run: merge the shards first" in msg


def test_input_declaring_a_field_otherwise(tmp_path):
    lines = (EXAMPLES / "variants.vcf").read_text().splitlines()
    lines.insert(1, '##INFO=<ID=VARFX_SAD_L2,Number=1,Type=String,Description="something else">')
    src = tmp_path / "v.vcf"
    src.write_text("\n".join(lines) + "\n")
    code, msg = fails(["score", src, "--fasta", EXAMPLES / "genome.fa", *MODEL, "-q", "--out-vcf", tmp_path / "o.vcf"])
    assert "already declares INFO/VARFX_SAD_L2 as Number=1,Type=String" in msg and "bcftools annotate -x" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.vcf"]  # refused before scoring: nothing written
