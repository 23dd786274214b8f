"""`varfx export --format finemap`: values against read_scores + numpy, sorting, BGZF members, the tabix
index against brute-force region filters (pysam), bad inputs, and the code of docs/finemapping.md."""

import gzip
import random
import re
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import varfx
from varfx.cli import cli
from varfx.export import export_table

from cohort import random_genotypes, random_records, write_cohort
from conftest import EXAMPLES, ROOT, random_seq, write_fasta, write_vcf
from toy_models import save_toy

pysam = pytest.importorskip("pysam")

ID_COLS = ["#chrom", "pos", "end", "key", "id", "ref", "alt"]


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def score(vcf, fasta, weights, out, *extra):
    r = run(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights, "--out", out,
             "-q", *extra])
    assert r.exit_code == 0, r.output
    return out


# -- independent expectations -------------------------------------------------------------------------


def expected_table(h5, stats, chosen, contigs):
    """The table computed from read_scores with numpy: chosen track columns, profile columns, summaries
    over all tracks; rows sorted by the given contig order, pos, ref, alt, input order."""
    res = varfx.read_scores(h5)
    v = res.variants
    ids = list(res.tracks["id"])
    cols = {"#chrom": v["chrom"], "pos": v["pos"], "end": v["pos"] + v["ref"].str.len() - 1,
            "key": v["chrom"] + ":" + v["pos"].astype(str) + ":" + v["ref"] + ":" + v["alt"],
            "id": v["id"], "ref": v["ref"], "alt": v["alt"]}
    track_stats = [s for s in stats if res.stats[s].ndim == 2]
    for s in track_stats:
        for t in chosen:
            cols[f"{s}:{ids[t]}"] = res.stats[s][:, t].astype(np.float32)
    for s in stats:
        if res.stats[s].ndim == 1:
            cols[s] = res.stats[s].astype(np.float32)
    for s in track_stats:
        x = res.stats[s].astype(np.float64)
        assert not np.isnan(x).any()
        k = np.abs(x).argmax(axis=1)
        cols[f"{s}:max_abs"] = x[np.arange(len(x)), k]
        cols[f"{s}:max_track"] = [ids[i] for i in k]
        cols[f"{s}:l2"] = np.sqrt((x ** 2).sum(axis=1))
    df = pd.DataFrame(cols)
    rank = {c: i for i, c in enumerate(contigs)}
    order = sorted(range(len(df)), key=lambda i: (rank[v["chrom"][i]], v["pos"][i], v["ref"][i], v["alt"][i], i))
    return df.iloc[order].reset_index(drop=True)


def read_table(path):
    return pd.read_csv(path, sep="\t", dtype={c: str for c in ("#chrom", "key", "id", "ref", "alt")},
                       keep_default_na=False, na_values=["nan"])


def assert_tables_equal(got, want):
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for c in want.columns:
        if want[c].dtype.kind == "f":
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=1e-6, atol=0, err_msg=c)
        else:
            assert got[c].astype(str).tolist() == want[c].astype(str).tolist(), c


def bgzf_members(path):
    """Walk the file member by member: the BGZF header of each, its size, CRC and ISIZE; the EOF member last."""
    raw = Path(path).read_bytes()
    members, off = [], 0
    while off < len(raw):
        head = raw[off:off + 18]
        assert head[:4] == b"\x1f\x8b\x08\x04"  # gzip, deflate, FEXTRA
        assert struct.unpack("<H", head[10:12])[0] == 6 and head[12:14] == b"BC"
        assert struct.unpack("<H", head[14:16])[0] == 2
        size = struct.unpack("<H", head[16:18])[0] + 1
        assert size <= 65536
        member = raw[off:off + size]
        data = zlib.decompress(member[18:-8], -15)
        crc, isize = struct.unpack("<II", member[-8:])
        assert crc == zlib.crc32(data) and isize == len(data)
        members.append((off, size, data))
        off += size
    assert off == len(raw)
    assert members[-1][1] == 28 and members[-1][2] == b""  # the EOF marker
    assert all(len(m[2]) > 0 for m in members[:-1])
    assert gzip.decompress(raw) == b"".join(m[2] for m in members)  # also one gzip stream of members
    return members


def parse_tbi(path):
    """The .tbi read with the layout of hts-specs tabix.pdf (the test's own reader)."""
    b = gzip.decompress(Path(path).read_bytes())
    assert b[:4] == b"TBI\x01"
    n_ref, fmt, col_seq, col_beg, col_end, meta, skip, l_nm = struct.unpack_from("<8i", b, 4)
    names = [x.decode() for x in b[36:36 + l_nm].split(b"\0")[:-1]]
    off, refs = 36 + l_nm, []
    for _ in range(n_ref):
        (n_bin,), off = struct.unpack_from("<i", b, off), off + 4
        bins = {}
        for _ in range(n_bin):
            (bin_, n_chunk), off = struct.unpack_from("<Ii", b, off), off + 8
            flat = struct.unpack_from(f"<{2 * n_chunk}Q", b, off)
            off += 16 * n_chunk
            bins[bin_] = list(zip(flat[::2], flat[1::2]))
        (n_intv,), off = struct.unpack_from("<i", b, off), off + 4
        linear = struct.unpack_from(f"<{n_intv}Q", b, off)
        off += 8 * n_intv
        refs.append({"bins": bins, "linear": linear})
    assert off + 8 == len(b)  # n_no_coor
    return {"format": fmt, "cols": (col_seq, col_beg, col_end), "meta": chr(meta), "skip": skip,
            "names": names, "refs": refs}


def assert_index_equals_htslib(path, tmp_path):
    """htslib (through pysam) indexes a copy of the table: the same bins, chunks, linear index and counts."""
    copy = tmp_path / f"htslib.{Path(path).name}"
    shutil.copy(path, copy)
    pysam.tabix_index(str(copy), seq_col=0, start_col=1, end_col=2, meta_char="#", force=True)
    assert parse_tbi(str(path) + ".tbi") == parse_tbi(str(copy) + ".tbi")


def spec_bin(beg, end):
    """reg2bin as printed in tabix.pdf."""
    end -= 1
    for shift, first in ((14, 4681), (17, 585), (20, 73), (23, 9), (26, 1)):
        if beg >> shift == end >> shift:
            return first + (beg >> shift)
    return 0


def brute(table, contig, beg, end):
    """Rows of ``table`` whose [pos, end] (1-based, closed) overlaps the 0-based half-open [beg, end)."""
    t = table[(table["#chrom"] == contig) & (table["pos"] - 1 < end) & (table["end"] > beg)]
    return ["\t".join(str(x) for x in row) for row in t[ID_COLS].itertuples(index=False)]


def fetched(tbx, contig, beg, end):
    return ["\t".join(line.split("\t")[:7]) for line in tbx.fetch(contig, beg, end)]


def check_regions(path, table, regions):
    with pysam.TabixFile(str(path)) as tbx:
        for contig, beg, end in regions:
            assert fetched(tbx, contig, beg, end) == brute(table, contig, beg, end), (contig, beg, end)


# -- the bundled example --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    t = tmp_path_factory.mktemp("export_example")
    h5 = score(EXAMPLES / "variants.vcf", EXAMPLES / "genome.fa", EXAMPLES / "model.pt", t / "ex.h5",
               "--stat", "SAD,logSED,D2")
    out = t / "ex.tsv.gz"
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    return {"t": t, "h5": h5, "out": out, "output": r.output}


def test_example_values_summaries_and_report(example):
    want = expected_table(example["h5"], ["SAD", "logSED", "D2"], [0, 1, 2], ["chr1", "chr2", "chrM"])
    got = read_table(example["out"])
    assert_tables_equal(got, want)
    assert len(got) == 285
    skipped = len(varfx.read_scores(example["h5"]).skipped)
    assert skipped == 4
    assert f"skipped variants (not rows; listed in the scores file's 'skipped' group): {skipped}" in example["output"]
    assert f"contig order: FASTA index {EXAMPLES / 'genome.fa'}.fai" in example["output"]
    assert not [p for p in example["t"].iterdir() if p.name.endswith(".partial")]


def test_example_bgzf_members_and_index_header(example, tmp_path):
    members = bgzf_members(example["out"])
    text = b"".join(m[2] for m in members)
    with pysam.BGZFile(str(example["out"]), "rb") as fh:
        assert fh.read() == text
    tbi = parse_tbi(str(example["out"]) + ".tbi")
    assert (tbi["format"], tbi["cols"], tbi["meta"], tbi["skip"]) == (0, (1, 2, 3), "#", 0)
    assert tbi["names"] == ["chr1", "chr2", "chrM"]
    table = read_table(example["out"])
    for name, ref in zip(tbi["names"], tbi["refs"]):
        # htslib's pseudo-bin 37450: the contig's record count in its second chunk
        assert ref["bins"][37450][1] == (int((table["#chrom"] == name).sum()), 0)
    bgzf_members(str(example["out"]) + ".tbi")
    assert_index_equals_htslib(example["out"], tmp_path)


def test_example_region_queries_match_a_brute_force_filter(example):
    table = read_table(example["out"])
    rng = random.Random(3)
    lengths = {"chr1": 60000, "chr2": 40000, "chrM": 16569}
    regions = [(c, 0, n) for c, n in lengths.items()]
    for _ in range(150):
        c = rng.choice(list(lengths))
        beg = rng.randrange(lengths[c])
        regions.append((c, beg, beg + rng.choice([1, 10, 300, 5000, 30000])))
    # deletions: a region that touches only their last base finds them
    dels = table[table["end"] > table["pos"]]
    assert len(dels) >= 3
    regions += [(c, e - 1, e) for c, e in zip(dels["#chrom"], dels["end"])]
    check_regions(example["out"], table, regions)
    with pysam.TabixFile(str(example["out"])) as tbx:
        assert list(tbx.contigs) == ["chr1", "chr2", "chrM"]
        assert list(tbx.header) == ["\t".join(table.columns)]


def test_stat_and_track_selection(example, tmp_path):
    out = tmp_path / "sel.tsv.gz"
    r = run(["export", example["h5"], "--format", "finemap", "--out", out, "--stat", "logsed", "--tracks", "0,2"])
    assert r.exit_code == 0, r.output
    got = read_table(out)
    assert list(got.columns) == ID_COLS + ["logSED:motifA_plus", "logSED:motifB", "logSED:max_abs",
                                           "logSED:max_track", "logSED:l2"]
    # the summaries still cover all three tracks, motifA_minus included
    want = expected_table(example["h5"], ["logSED"], [0, 2], ["chr1", "chr2", "chrM"])
    assert_tables_equal(got, want)
    assert "motifA_minus" in set(got["logSED:max_track"])

    r = run(["export", example["h5"], "--format", "finemap", "--out", out, "--stat", "D2", "--stat", "SAD",
             "--tracks", "motif A"])  # a regular expression on the descriptions: the two motif-A tracks
    assert r.exit_code == 0, r.output
    cols = list(read_table(out).columns)
    assert cols[7:11] == ["D2:motifA_plus", "D2:motifA_minus", "SAD:motifA_plus", "SAD:motifA_minus"]
    assert cols[11:] == ["D2:max_abs", "D2:max_track", "D2:l2", "SAD:max_abs", "SAD:max_track", "SAD:l2"]

    r = run(["export", example["h5"], "--format", "finemap", "--out", out, "--stat", "SAD", "--tracks", "none"])
    assert r.exit_code == 0, r.output
    assert list(read_table(out).columns) == ID_COLS + ["SAD:max_abs", "SAD:max_track", "SAD:l2"]


def test_bad_inputs(example, tmp_path):
    base = ["--format", "finemap", "--out", tmp_path / "o.tsv.gz"]
    text = tmp_path / "text.h5"
    text.write_text("chrom\tpos\n")
    r = run(["export", text, *base])
    assert r.exit_code == 1 and "is not an HDF5 file" in r.output

    r = run(["export", tmp_path / "absent.h5", *base])
    assert r.exit_code == 1 and "scores file not found" in r.output

    unfinished = tmp_path / "unfinished.h5"
    shutil.copy(example["h5"], unfinished)
    with h5py.File(unfinished, "a") as f:
        f.attrs["complete"] = False
    r = run(["export", unfinished, *base])
    assert r.exit_code == 1 and "is not a finished varfx output" in r.output

    far = tmp_path / "far.h5"  # a position a .tbi cannot index
    shutil.copy(example["h5"], far)
    with h5py.File(far, "a") as f:
        f["pos"][3] = 600_000_000
    r = run(["export", far, *base])
    assert r.exit_code == 1
    assert f"{far}: chr1:600000000 ends beyond 2^29 = 536,870,912 bp, the limit of a .tbi index" in r.output

    r = run(["export", example["h5"], *base, "--stat", "SAD,D1"])
    assert r.exit_code == 2
    assert f"--stat 'D1': {example['h5']} has SAD, logSED, D2" in r.output

    r = run(["export", example["h5"], "--format", "finemap", "--out", tmp_path / "o.tsv"])
    assert r.exit_code == 2
    assert "the table is bgzip-compressed and tabix-indexed; give a name ending in .gz (e.g. o.tsv.gz)" in r.output

    r = run(["export", example["h5"], *base, "--tracks", "3"])
    assert r.exit_code == 2 and "outside 0..2" in r.output

    r = run(["export", example["h5"], "--format", "vcf", "--out", tmp_path / "o.tsv.gz"])
    assert r.exit_code == 2 and "'vcf' is not 'finemap'" in r.output

    shard = tmp_path / "shard.h5"  # one shard's part of the variants would pass for the whole table
    shard_run = score(EXAMPLES / "variants.vcf", EXAMPLES / "genome.fa", EXAMPLES / "model.pt", shard,
                      "--shard", "2/3")
    for args in (["export", shard_run, *base], ["top", shard_run]):
        r = run(args)
        assert r.exit_code == 1 and f"{shard_run} is shard 2/3 of a run" in r.output and "merge the shards" in r.output
        assert len(r.output.strip().splitlines()) == 1
    assert "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.h5", "shard.h5", "text.h5", "unfinished.h5"]


def test_a_failed_export_leaves_the_previous_table_and_no_partial_files(example, tmp_path, monkeypatch):
    out = tmp_path / "t.tsv.gz"
    export_table(example["h5"], out, stats="SAD")
    before = out.read_bytes(), Path(str(out) + ".tbi").read_bytes()

    def fail(self, fh, level=6):
        raise OSError("disk full")

    monkeypatch.setattr("varfx.bgzf.TabixIndex.write", fail)
    with pytest.raises(OSError):
        export_table(example["h5"], out, stats="logSED")
    assert (out.read_bytes(), Path(str(out) + ".tbi").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tsv.gz", "t.tsv.gz.tbi"]


# -- sorting ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    t = tmp_path_factory.mktemp("export_toy")
    weights, _ = save_toy(t)
    return weights


def test_unsorted_interleaved_vcf_comes_out_sorted(tmp_path, toy):
    rng = random.Random(5)
    seqs = {"chr2": random_seq(3000, rng), "chr10": random_seq(3000, rng), "chr1": random_seq(3000, rng)}
    fasta = write_fasta(tmp_path / "genome.fa", seqs)  # FASTA order chr2, chr10, chr1: not the natural order

    def base(c, p):
        return seqs["chr1" if c == "1" else c][p - 1]

    def snv(c, p, vid):
        b = base(c, p)
        return (c, p, vid, b, "A" if b != "A" else "C")

    recs = [snv("chr1", 2500, "a"), snv("chr10", 700, "b"), snv("chr2", 1800, "c"), snv("chr1", 300, "d"),
            snv("1", 900, "e"), snv("chr10", 200, "f"), snv("chr2", 150, "g"), snv("chr1", 1200, "h"),
            ("chr2", 1000, "multi", base("chr2", 1000), ",".join(sorted("ACGT".replace(base("chr2", 1000), ""),
                                                                        reverse=True))),
            ("chr10", 1500, "del", seqs["chr10"][1499:1504], seqs["chr10"][1499]),
            snv("chr10", 1500, "snv_same_pos"), snv("1", 100, "i"),
            ("chr9", 50, "nocontig", "A", "C")]
    vcf = write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 3000, "chr2": 3000, "chr10": 3000, "1": 3000,
                                                       "chr9": 100})
    h5 = score(vcf, fasta, toy, tmp_path / "s.h5", "--stat", "SAD,D1")
    out = tmp_path / "t.tsv.gz"
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    assert "skipped variants (not rows; listed in the scores file's 'skipped' group): 1" in r.output
    got = read_table(out)
    # the FASTA order; "1" is chr1 under another name: beside it, before "chr1" (natural order of the two)
    want = expected_table(h5, ["SAD", "D1"], [0, 1, 2], ["chr2", "chr10", "1", "chr1"])
    assert_tables_equal(got, want)
    assert got["id"].tolist() == ["g", "multi", "multi", "multi", "c", "f", "b", "snv_same_pos", "del",
                                  "i", "e", "d", "h", "a"]
    assert not (tmp_path / "t.tsv.gz.spool.partial").exists()
    bgzf_members(out)
    table = got
    regions = [(c, 0, 3000) for c in ("chr2", "chr10", "1", "chr1")] + [("chr10", 1502, 1503), ("chr2", 999, 1000)]
    check_regions(out, table, regions)
    assert_index_equals_htslib(out, tmp_path)

    # without a readable FASTA index: natural order
    (tmp_path / "genome.fa.fai").unlink()
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    assert "contig order: natural (no readable FASTA index)" in r.output
    assert_tables_equal(read_table(out), expected_table(h5, ["SAD", "D1"], [0, 1, 2], ["1", "chr1", "chr2", "chr10"]))
    check_regions(out, read_table(out), regions)


# -- many rows: several BGZF members, 16-kb windows and bins ----------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory, toy):
    t = tmp_path_factory.mktemp("export_many")
    rng = random.Random(11)
    seqs = {"chr1": random_seq(400_000, rng), "chr2": random_seq(150_000, rng)}
    fasta = write_fasta(t / "genome.fa", seqs)
    recs, used = [], set()
    for i in range(2600):
        c = "chr1" if i % 4 else "chr2"
        p = rng.randrange(100, len(seqs[c]) - 100)
        if (c, p) in used:
            continue
        used.add((c, p))
        b = seqs[c][p - 1]
        recs.append((c, p, f"r{i}", b, "A" if b != "A" else "G"))
    # deletions across 16-kb window edges, and across 128-kb and 1-Mb bin edges on chr1
    for c, edge in [("chr1", k * 16384) for k in range(1, 24)] + [("chr2", k * 16384) for k in range(1, 9)]:
        p = edge - 4  # 1-based; covers 0-based [edge - 5, edge + 5)
        if (c, p) not in used:
            used.add((c, p))
            recs.append((c, p, f"del{c}_{edge}", seqs[c][p - 1:p + 9], seqs[c][p - 1]))
    recs.sort(key=lambda r: (r[0], r[1]))
    vcf = write_vcf(t / "v.vcf", recs, contigs={"chr1": 400_000, "chr2": 150_000})
    h5 = score(vcf, fasta, toy, t / "s.h5", "--stat", "SAD,logSED")
    return {"t": t, "h5": h5, "fasta": fasta}


def test_many_rows_index_matches_brute_force_on_random_regions(many):
    out = many["t"] / "m.tsv.gz"
    summary = export_table(many["h5"], out, chunk_rows=777)  # several chunks, rows already in order
    assert summary.rows > 2500
    table = read_table(out)
    assert_tables_equal(table, expected_table(many["h5"], ["SAD", "logSED"], [0, 1, 2], ["chr1", "chr2"]))
    members = bgzf_members(out)
    assert len(members) >= 5 and sum(len(m[2]) for m in members) > 4 * 65536
    # what the index must cover: positions past 2^14, several linear windows, rows in bins of several levels
    bins = {spec_bin(p - 1, e) for p, e in zip(table["pos"], table["end"])}
    assert table["pos"].max() > 2 ** 18 and any(b < 4681 for b in bins) and len(bins) > 20
    tbi = parse_tbi(str(out) + ".tbi")
    assert [len(r["linear"]) for r in tbi["refs"]] == [(table[table["#chrom"] == c]["end"].max() - 1) // 16384 + 1
                                                      for c in ("chr1", "chr2")]
    for ref in tbi["refs"]:
        assert list(ref["linear"]) == sorted(ref["linear"])
    rng = random.Random(1)
    lengths = {"chr1": 400_000, "chr2": 150_000}
    regions = [(c, 0, n) for c, n in lengths.items()]
    for _ in range(400):
        c = rng.choice(["chr1", "chr1", "chr2"])
        beg = rng.randrange(lengths[c])
        regions.append((c, beg, min(lengths[c], beg + rng.choice([1, 50, 2000, 16384, 40000, 140000]))))
    dels = table[table["id"].str.startswith("del")]
    regions += [(c, e - 1, e) for c, e in zip(dels["#chrom"], dels["end"])]  # only the deletion's last base
    regions += [(c, p - 1, p) for c, p in zip(dels["#chrom"], dels["pos"])]
    check_regions(out, table, regions)
    assert_index_equals_htslib(out, many["t"])


def test_row_order_in_the_scores_file_does_not_change_the_table(many, tmp_path):
    """The same scores with their rows shuffled (the spooled path) give the same bytes."""
    shuffled = tmp_path / "shuffled.h5"
    shutil.copy(many["h5"], shuffled)
    with h5py.File(shuffled, "a") as f:
        n = f["pos"].shape[0]
        perm = np.random.default_rng(0).permutation(n)
        for name in ("snp", "chr", "pos", "ref_allele", "alt_allele", "id", "record", "alt_index", "SAD", "logSED"):
            f[name][...] = f[name][:][perm]
    a, b = tmp_path / "a.tsv.gz", tmp_path / "b.tsv.gz"
    export_table(many["h5"], a)
    export_table(shuffled, b, chunk_rows=500)
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(b.read_bytes())
    assert a.read_bytes() == b.read_bytes()
    assert Path(str(a) + ".tbi").read_bytes() == Path(str(b) + ".tbi").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_bgzf_writer_and_index_on_long_intervals(tmp_path):
    """varfx.bgzf on its own: intervals of every bin level (up to 100 Mb), incompressible text."""
    from varfx.bgzf import BLOCK_DATA, BgzfWriter, TabixIndex, compress_block, reg2bin, reg2bins

    rng = random.Random(4)
    rows = []
    for c, n in (("c1", 3000), ("c2", 1500)):
        starts = sorted(rng.randrange(0, 2 ** 29 - 200_000_000) if i % 3 else rng.randrange(0, 3_000_000)
                        for i in range(n))
        for s in starts:
            length = rng.choice([1, 5, 300, 20_000, 200_000, 3_000_000, 100_000_000])
            noise = "".join(rng.choice("ACGTxyz0123456789") for _ in range(rng.randrange(10, 120)))
            rows.append((c, s + 1, s + length, noise))
    path = tmp_path / "iv.tsv.gz"
    index = TabixIndex()
    with open(path, "wb") as fh:
        w = BgzfWriter(fh)
        w.write(b"#c\tbeg\tend\tnoise\n")
        for c in ("c1", "c2"):
            mine = [r for r in rows if r[0] == c]
            lines = [f"{r[0]}\t{r[1]}\t{r[2]}\t{r[3]}\n".encode() for r in mine]
            lens = np.array([len(x) for x in lines])
            u_end = w.upos + np.cumsum(lens)
            w.write(b"".join(lines))
            index.add(c, np.array([r[1] - 1 for r in mine]), np.array([r[2] for r in mine]),
                      w.virtual_offsets(u_end - lens), w.virtual_offsets(u_end))
        w.close()
    with open(str(path) + ".tbi", "wb") as fh:
        index.write(fh)
    members = bgzf_members(path)
    assert len(members) > 3
    table = pd.DataFrame(rows, columns=["#chrom", "pos", "end", "noise"])
    assert {reg2bin(p - 1, e) for p, e in zip(table["pos"], table["end"])} >= {0, 1}
    rng = random.Random(8)
    with pysam.TabixFile(str(path)) as tbx:
        for _ in range(300):
            c = rng.choice(["c1", "c2"])
            beg = rng.randrange(0, 2 ** 29 - 10)
            end = min(2 ** 29, beg + rng.choice([1, 1000, 100_000, 5_000_000]))
            t = table[(table["#chrom"] == c) & (table["pos"] - 1 < end) & (table["end"] > beg)]
            want = [f"{a}\t{b}\t{x}\t{d}" for a, b, x, d in t.itertuples(index=False)]
            assert list(tbx.fetch(c, beg, end)) == want
            assert spec_bin(beg, end) == reg2bin(beg, end) and spec_bin(beg, end) in reg2bins(beg, end)
    noise = np.random.default_rng(0).bytes(BLOCK_DATA)  # incompressible: stored, still one valid member
    block = compress_block(noise)
    assert len(block) <= 65536 and gzip.decompress(block) == noise
    assert compress_block(b"") == bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


# -- many tracks, profile statistics, personal genomes --------------------------------------------------


def small_case(tmp_path, n=12, seed=2):
    rng = random.Random(seed)
    seqs = {"chr1": random_seq(1500, rng)}
    fasta = write_fasta(tmp_path / "genome.fa", seqs)
    recs = []
    for i, p in enumerate(sorted(rng.sample(range(60, 1440), n))):
        b = seqs["chr1"][p - 1]
        recs.append(("chr1", p, f"s{i}", b, "T" if b != "T" else "C"))
    return fasta, write_vcf(tmp_path / "v.vcf", recs, contigs={"chr1": 1500}), seqs


def test_more_than_50_tracks_have_only_summaries_by_default(tmp_path):
    fasta, vcf, _ = small_case(tmp_path)
    weights, _ = save_toy(tmp_path, tracks=60, strand_pairs=())
    h5 = score(vcf, fasta, weights, tmp_path / "s.h5", "--stat", "SAD")
    out = tmp_path / "t.tsv.gz"
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    assert "60 tracks (more than 50): no per-track columns" in r.output
    assert_tables_equal(read_table(out), expected_table(h5, ["SAD"], [], ["chr1"]))
    r = run(["export", h5, "--format", "finemap", "--out", out, "--tracks", "all"])
    assert r.exit_code == 0, r.output
    assert_tables_equal(read_table(out), expected_table(h5, ["SAD"], list(range(60)), ["chr1"]))
    r = run(["export", h5, "--format", "finemap", "--out", out, "--tracks", "5-7,59"])
    assert r.exit_code == 0, r.output
    assert_tables_equal(read_table(out), expected_table(h5, ["SAD"], [5, 6, 7, 59], ["chr1"]))


def test_profile_statistic_is_one_column(tmp_path, toy):
    fasta, vcf, _ = small_case(tmp_path)
    h5 = score(vcf, fasta, toy, tmp_path / "s.h5", "--stat", "SAD,JSD", "--float32")
    out = tmp_path / "t.tsv.gz"
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    got = read_table(out)
    assert "JSD" in got.columns and not any(c.startswith("JSD:") for c in got.columns)
    assert_tables_equal(got, expected_table(h5, ["SAD", "JSD"], [0, 1, 2], ["chr1"]))
    assert (got["JSD"] > 0).all()


def test_personal_genome_file_exports_the_mean_over_samples(tmp_path, toy):
    rng = random.Random(9)
    seqs = {"chr1": random_seq(1500, rng)}
    fasta = write_fasta(tmp_path / "genome.fa", seqs)
    recs = random_records(seqs, 15, rng, indel_rate=0.2, margin=40)
    samples = ["A", "B", "C", "D"]
    cohort = write_cohort(tmp_path / "c.vcf", recs, samples, random_genotypes(recs, samples, rng),
                          contigs={"chr1": 1500})
    h5 = score(cohort, fasta, toy, tmp_path / "p.h5", "--genotypes", cohort, "--stat", "SAD", "--float32")
    out = tmp_path / "t.tsv.gz"
    r = run(["export", h5, "--format", "finemap", "--out", out])
    assert r.exit_code == 0, r.output
    assert "personal-genome scores: values are summary/STAT/mean, the mean over 4 samples' backgrounds" in r.output
    got = read_table(out)
    with h5py.File(h5) as f:
        per_sample = f["SAD"][:].astype(np.float64)  # (variants, samples, tracks)
        ids = [x.decode() for x in f["target_ids"][:]]
        pos = f["pos"][:]
    assert (np.diff(pos.astype(np.int64)) >= 0).all()  # the cohort is sorted: table rows in file order
    mean = per_sample.mean(axis=1)
    for t, tid in enumerate(ids):
        np.testing.assert_allclose(got[f"SAD:{tid}"], mean[:, t], rtol=1e-5, atol=1e-6)
    k = np.abs(mean).argmax(axis=1)
    assert got["SAD:max_track"].tolist() == [ids[i] for i in k]
    np.testing.assert_allclose(got["SAD:l2"], np.sqrt((mean ** 2).sum(axis=1)), rtol=1e-5, atol=1e-6)
    # varfx top ranks the same means (it used to index the (variants, samples, tracks) array: a traceback)
    from varfx.results import top_variants
    top = top_variants(h5, "SAD", n=5, chunk=4)
    best = np.abs(mean).max(axis=1)
    order = np.argsort(-best, kind="stable")[:5]
    with h5py.File(h5) as f:
        want_ids = [f["id"][i].decode() for i in order]
    assert list(top["id"]) == want_ids
    np.testing.assert_allclose(np.abs(top["SAD"]), best[order], rtol=1e-5)
    assert list(top["track"]) == [ids[i] for i in k[order]]
    r = run(["top", h5, "-n", "3"])
    assert r.exit_code == 0 and "ranked by summary/SAD/mean, the mean over 4 samples' backgrounds" in r.output


def test_other_varfx_outputs_are_refused_by_export_top_and_read_scores(tmp_path, toy):
    """ISM and region predictions (tracebacks before) and SpliceAI's (variant, gene) rows (a table of
    identifiers without a score, exit 0, before) are each named for what they are."""
    fasta = write_fasta(tmp_path / "genome.fa", {"chr1": random_seq(1500, random.Random(4))})
    model = ["--backend", "torchscript", "--weights", toy]
    ism = tmp_path / "ism.h5"
    assert run(["ism", "--region", "chr1:700-701", "--fasta", fasta, *model, "--out", ism, "-q"]).exit_code == 0
    bed = tmp_path / "r.bed"
    bed.write_text("chr1\t600\t700\tr1\n")
    pred = tmp_path / "pred.h5"
    assert run(["predict", "--bed", bed, "--fasta", fasta, *model, "--out", pred, "-q"]).exit_code == 0
    splice = tmp_path / "splice.h5"  # the layout of a spliceai run's file (tests/test_spliceai.py makes real ones)
    with h5py.File(splice, "w") as f:
        f.attrs["complete"] = True
        f.attrs["settings"] = '{"backend": "spliceai", "stats": []}'
        for name in ("snp", "chr", "id", "ref_allele", "alt_allele", "gene"):
            f[name] = np.array([b"x"])
        f["pos"] = np.array([5])
        for name in ("DS_AG", "DS_AL", "DS_DG", "DS_DL"):
            f[name] = np.array([0.5], dtype=np.float32)
    kinds = {ism: "holds in silico mutagenesis (varfx ism), not variant scores",
             pred: "holds region predictions (varfx predict), not variant scores",
             splice: "holds SpliceAI scores (a row per variant and gene: DS_AG … DP_DL), not scores per track"}
    for path, what in kinds.items():
        out = tmp_path / "t.tsv.gz"
        for args, cmd in ((["top", path], "`varfx top`"), (["export", path, "--format", "finemap", "--out", out],
                                                            "`varfx export`")):
            r = run(args)
            assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (args, r.output)
            lines = r.output.strip().splitlines()
            assert len(lines) == 1 and what in lines[0] and cmd in lines[0], lines
        assert not out.exists()
        if path != splice:  # read_scores reads a SpliceAI file's identifiers (tests/test_spliceai.py)
            with pytest.raises(varfx.VarfxError, match=re.escape(what)):
                varfx.read_scores(path)


# -- docs/finemapping.md -----------------------------------------------------------------------------------


def doc_code(tag):
    text = (ROOT / "docs" / "finemapping.md").read_text()
    m = re.search(rf"<!-- tested: {tag} -->\n```python\n(.*?)```", text, re.S)
    assert m, tag
    return m.group(1)


def test_docs_join_and_priors_code(example, tmp_path, monkeypatch):
    table = read_table(example["out"])
    chr1 = table[table["#chrom"] == "chr1"].reset_index(drop=True)
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    rows = []
    # same orientation, "chr" dropped from the contig name; effect allele = ALT
    for i in range(0, 6):
        r = chr1.iloc[i]
        rows.append(("1", r["pos"], r["alt"], r["ref"], 0.1 * (i + 1), 0.05, "same"))
    # flipped: effect allele = REF (and lower case)
    for i in range(6, 10):
        r = chr1.iloc[i]
        rows.append(("chr1", r["pos"], r["ref"].lower(), r["alt"].lower(), -0.2 * i, 0.1, "flip"))
    # not in the table: an allele the VCF does not have, the opposite strand, an unknown position
    r = chr1.iloc[10]
    other = next(b for b in "ACGT" if b not in (r["ref"], r["alt"]))
    rows.append(("1", r["pos"], other, r["ref"], 0.3, 0.1, "none"))
    r = chr1.iloc[11]
    if len(r["ref"]) == 1 and len(r["alt"]) == 1 and comp[r["ref"]] != r["alt"]:
        rows.append(("1", r["pos"], comp[r["alt"]], comp[r["ref"]], 0.3, 0.1, "none"))
    rows.append(("1", 59_999, "A", "C", 0.3, 0.1, "none"))
    gwas = pd.DataFrame(rows, columns=["chrom", "pos", "effect_allele", "other_allele", "beta", "se", "truth"])
    gwas.drop(columns="truth").to_csv(tmp_path / "gwas.tsv", sep="\t", index=False)
    shutil.copy(example["out"], tmp_path / "table.tsv.gz")
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(doc_code("join"), ns)
    merged = ns["merged"]
    assert len(merged) == len(gwas)
    truth = gwas["truth"]
    assert merged["flipped"].tolist() == (truth == "flip").tolist()
    assert merged["key"].notna().tolist() == (truth != "none").tolist()
    by_key = table.set_index("key")
    for (_, m), (_, g) in zip(merged.iterrows(), gwas.iterrows()):
        if g["truth"] == "none":
            assert pd.isna(m["SAD:max_abs"]) and pd.isna(m["key"])
            continue
        same = g["truth"] == "same"
        ref, alt = (g["other_allele"], g["effect_allele"]) if same else (g["effect_allele"], g["other_allele"])
        key = f"chr1:{g['pos']}:{ref.upper()}:{alt.upper()}"
        assert m["key"] == key
        assert m["SAD:max_abs"] == by_key.loc[key, "SAD:max_abs"]
        assert m["SAD:max_track"] == by_key.loc[key, "SAD:max_track"]
        assert m["beta_alt"] == pytest.approx(g["beta"] if same else -g["beta"])
        assert m["z_alt"] == pytest.approx(m["beta_alt"] / g["se"])

    exec(doc_code("priors"), ns)
    locus = ns["locus"]
    assert len(locus) == len(gwas)  # all on chr1 ("1" or "chr1"), within 1..60,000
    # the formula of the doc, by hand: 0.5 uniform + 0.5 proportional to |score| capped at its 99th percentile
    a = np.abs(locus["SAD:max_abs"].to_numpy(float))
    a[np.isnan(a)] = 0
    a = np.minimum(a, np.quantile(a, 0.99))
    m = len(a)
    np.testing.assert_allclose(locus["prior"], 0.5 / m + 0.5 * a / a.sum(), rtol=1e-12)
    assert locus["prior"].sum() == pytest.approx(1.0)
    assert (locus["prior"][truth.to_numpy() == "none"] == 0.5 / m).all()
    assert (locus["prior"] > 0).all()
    polyfun = pd.read_csv(tmp_path / "locus.polyfun.tsv", sep="\t", dtype={"CHR": str})
    assert list(polyfun.columns) == ["SNP", "CHR", "BP", "A1", "A2", "Z", "SNPVAR"]
    assert set(polyfun["CHR"]) == {"1"}
    np.testing.assert_allclose(polyfun["Z"], gwas["beta"] / gwas["se"])
    np.testing.assert_allclose(polyfun["SNPVAR"], locus["prior"])
    # the helper on its own: no scores at all gives the uniform prior; inf is capped like an outlier
    pw = ns["prior_weights"]
    np.testing.assert_allclose(pw([np.nan, np.nan]), [0.5, 0.5])
    w = pw([np.inf, 1.0, 1.0, 0.0], lam=1.0, cap_quantile=0.5)
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 0])
