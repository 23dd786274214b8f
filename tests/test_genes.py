"""Gene-level scores (`varfx score --genes`): TSSs from a GTF, the bins over them, the scores on those bins."""

import gzip
import random

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from varfx.cli import cli
from varfx.genes import GeneIndex, read_gtf
from varfx.windows import Geometry

from conftest import EXAMPLES, one_line_error, write_vcf
from toy_models import one_hot_text, save_toy

L, NB, BS, OFF = 64, 8, 4, 16  # the toy model: output bins cover window bases [16, 48)
C = L // 2


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def gtf_line(chrom, feature, start, end, strand, gene_id, name=None, tx=None):
    attrs = f'gene_id "{gene_id}";' + (f' gene_name "{name}";' if name else "") + (f' transcript_id "{tx}";' if tx else "")
    return f"{chrom}\ttest\t{feature}\t{start}\t{end}\t.\t{strand}\t.\t{attrs}\n"


def write_gtf(path, genes, gz=False):
    """genes: (chrom, gene_id, name, strand, [(start, end), …]) — one transcript per (start, end)."""
    text = "#!comment line\n"
    for chrom, gid, name, strand, txs in genes:
        text += gtf_line(chrom, "gene", min(a for a, _ in txs), max(b for _, b in txs), strand, gid, name)
        for i, (a, b) in enumerate(txs):
            text += gtf_line(chrom, "transcript", a, b, strand, gid, name, f"{gid}.{i}")
            text += gtf_line(chrom, "exon", a, a + 10, strand, gid, name, f"{gid}.{i}")
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


# -- reading a GTF -------------------------------------------------------------------------------------------------

def test_read_gtf_takes_each_transcripts_start_by_strand(tmp_path):
    p = write_gtf(tmp_path / "g.gtf.gz", [
        ("chr1", "G1", "ONE", "+", [(100, 500), (120, 500), (100, 400)]),  # two distinct TSSs
        ("chr1", "G2", None, "-", [(300, 900), (300, 880)]),  # minus: TSS = end; no gene_name
        ("chr2", "G3", "THREE", "-", [(5, 50)]),
    ], gz=True)
    t = read_gtf(p)
    got = sorted(zip(t.gene_id, t.gene_name, t.chrom, t.strand, t.tss))
    assert got == [("G1", "ONE", "chr1", "+", 100), ("G1", "ONE", "chr1", "+", 120),
                   ("G2", "G2", "chr1", "-", 880), ("G2", "G2", "chr1", "-", 900),
                   ("G3", "THREE", "chr2", "-", 50)]


def test_read_gtf_without_transcript_lines_uses_genes(tmp_path):
    p = tmp_path / "g.gtf"
    p.write_text(gtf_line("chr1", "gene", 10, 90, "-", "A") + gtf_line("chr1", "gene", 40, 60, "+", "B", "bee"))
    t = read_gtf(p)
    assert list(zip(t.gene_id, t.tss)) == [("B", 40), ("A", 90)]


@pytest.mark.parametrize("text, message", [
    ("", "has no GTF lines"),
    ("chr1\tx\texon\t1\t5\t.\t+\t.\tgene_id \"A\";\n", "no 'transcript' or 'gene' lines"),
    ("chr1\tx\ttranscript\t1\t5\t.\t.\t.\tgene_id \"A\";\n", "strand '.'"),
    ("chr1\tx\ttranscript\t1\t5\t.\t+\t.\tname \"A\";\n", "no gene_id"),
    ("chr1\tx\ttranscript\tone\t5\t.\t+\t.\tgene_id \"A\";\n", "not integers"),
])
def test_read_gtf_refuses_what_is_not_a_usable_gtf(tmp_path, text, message):
    p = tmp_path / "bad.gtf"
    p.write_text(text)
    from varfx.errors import InputError
    with pytest.raises(InputError, match=message):
        read_gtf(p)


# -- which genes, which bins: against a brute force ----------------------------------------------------------------

def brute_pairs(tss_table, contig, pos, geom, margin, delta=0):
    """{gene: (sorted TSSs in the output window, REF bins, ALT bins)} for a variant, base by base."""
    out = {}
    start = pos - geom.center + geom.bin_offset  # 1-based genome position of bin 0's first base
    end = start + geom.output_bins * geom.bin_size
    for gid, chrom, t in tss_table:
        if chrom == contig and start <= t < end:
            w = t - pos + geom.center  # window index of the TSS base
            bins = {b for b in range(geom.output_bins)
                    if geom.bin_offset + b * geom.bin_size <= w + margin
                    and geom.bin_offset + (b + 1) * geom.bin_size - 1 >= w - margin}
            tss, have = out.get(gid, ([], set()))
            out[gid] = (tss + [t], have | bins)
    res = {}
    for gid, (tss, bins) in out.items():
        k = int(np.sign(delta) * np.floor(abs(delta) / geom.bin_size + 0.5))  # nearest whole bins, halves out
        pairs = []
        c, bs = geom.center, geom.bin_size
        for b in sorted(bins):
            start = geom.bin_offset + b * bs
            a = b + k if start > c else b
            deleted = delta < 0 and start >= c + 1 and start + bs <= c + 1 - delta  # REF = anchor + |delta| bases
            pairs.append((b, a if 0 <= a < geom.output_bins and not deleted else None))
        res[gid] = (sorted(tss), pairs)
    return res


@pytest.mark.parametrize("margin", [0, 3, 9])
def test_gene_rows_match_a_brute_force(tmp_path, margin):
    rng = random.Random(margin)
    genes = []
    for g in range(60):
        strand = rng.choice("+-")
        txs = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            a = rng.randrange(1, 900)
            txs.append((a, a + rng.randrange(20, 300)))
        genes.append((rng.choice(["chr1", "chr2"]), f"G{g:02d}", None, strand, txs))
    gtf = write_gtf(tmp_path / "g.gtf", genes)
    table = read_gtf(gtf)
    tss_table = list(zip(table.gene_id, table.chrom, table.tss))
    geom = Geometry(L, NB, BS, OFF)
    index = GeneIndex(gtf, lambda c: c, margin)
    contigs = [rng.choice(["chr1", "chr2", "chr3"]) for _ in range(300)]
    pos = np.array([rng.randrange(1, 1200) for _ in contigs])
    delta = np.array([rng.choice([0, 0, 0, 5, -7, 12, -3]) for _ in contigs])
    ref_len = np.where(delta < 0, 1 - delta, 1)
    rows = index.rows(contigs, pos, geom, ref_len, delta)
    got = {}
    for i in range(len(rows)):
        v, g = int(rows.variant[i]), index.ids[rows.gene[i]]
        pairs = [(int(b), int(a) if m else None) for b, a, m, keep in
                 zip(rows.ref_bins[i], rows.alt_bins[i], rows.mask[i], rows.ref_bins[i] >= 0)]
        # padding: REF bins whose own mask is off at both ends are not part of the gene's set
        got[(v, g)] = (int(rows.tss[i]), int(rows.tss_distance[i]), int(rows.n_tss[i]), pairs)
    want = {}
    for v, (c, p, d) in enumerate(zip(contigs, pos.tolist(), delta.tolist())):
        for gid, (tss, pairs) in brute_pairs(tss_table, c, p, geom, margin, d).items():
            near = min(tss, key=lambda t: (abs(p - t), t))
            strand = table.strand[table.gene_id == gid].iloc[0]
            want[(v, gid)] = (near, (p - near) * (1 if strand == "+" else -1), len(tss), pairs)
    assert set(got) == set(want)
    assert len(want) > 50
    for key, (t, dist, n, pairs) in want.items():
        gt, gd, gn, gpairs = got[key]
        assert (gt, gd, gn) == (t, dist, n), key
        # the rows list every gene bin (mask may be off for ALT bins outside the output); padding after
        ref_bins = [b for b, _ in pairs]
        assert [b for b, _ in gpairs[:len(ref_bins)]] == ref_bins, key
        assert [a for _, a in gpairs[:len(ref_bins)]] == [a for _, a in pairs], key
        assert all(a is None for _, a in gpairs[len(ref_bins):]), key


def test_tss_at_the_edges_of_the_output_window(tmp_path):
    geom = Geometry(L, NB, BS, OFF)
    pos = 500
    first = pos - C + OFF  # bin 0's first base
    last = first + NB * BS - 1  # bin 7's last base
    gtf = write_gtf(tmp_path / "g.gtf", [
        ("chr1", "OUT_LEFT", None, "+", [(first - 1, first + 500)]),
        ("chr1", "IN_LEFT", None, "+", [(first, first + 500)]),
        ("chr1", "IN_RIGHT", None, "-", [(last - 500, last)]),
        ("chr1", "OUT_RIGHT", None, "-", [(last - 400, last + 1)]),
    ])
    rows = GeneIndex(gtf, lambda c: c, 6).rows(["chr1"], np.array([pos]), geom, np.array([1]), np.array([0]))
    got = {GeneIndex(gtf, lambda c: c, 6).ids[g]: (list(b[m]), d)
           for g, b, m, d in zip(rows.gene, rows.ref_bins, rows.mask, rows.tss_distance)}
    # the margin reaches past the output's ends: only the bins inside count
    assert got == {"IN_LEFT": ([0, 1], pos - first), "IN_RIGHT": ([6, 7], -(pos - last))}


# -- scores on those bins: exact, against predictions made here ----------------------------------------------------

@pytest.fixture
def gene_world(tmp_path, fasta, genome_seqs):
    s1 = genome_seqs["chr1"].upper()
    other = lambda b: "A" if b != "A" else "C"  # noqa: E731
    recs = [("chr1", p, f"v{p}", s1[p - 1], other(s1[p - 1])) for p in (400, 410, 430, 700, 1300, 1500)]
    recs.append(("1", 420, "multi", s1[419], "G,T" if s1[419] not in "GT" else "A,C"))
    recs.append(("chr1", 1490, "ins", s1[1489], s1[1489] + "ACGTACGT"))  # shifts bins right of it by 2
    recs.append(("chr1", 1520, "del", s1[1519:1526], s1[1519]))  # and by -2
    recs.append(("chr2", 300, "chr2", genome_seqs["chr2"][299].upper(), "T" if genome_seqs["chr2"][299].upper() != "T" else "A"))
    vcf = write_vcf(tmp_path / "v.vcf", recs)
    gtf = write_gtf(tmp_path / "g.gtf", [
        ("chr1", "P1", "PLUS1", "+", [(415, 900), (428, 900)]),
        ("1", "M1", "MINUS1", "-", [(100, 405), (100, 440)]),  # 'chr1' written '1': an alias
        ("chr1", "P2", "PLUS2", "+", [(1505, 1700)]),
        ("chr1", "M2", "MINUS2", "-", [(1000, 1480)]),
        ("chrZ", "Z", "NOWHERE", "+", [(1, 10)]),
        ("2", "C2", "TWO", "+", [(310, 400)]),
    ])
    weights, model = save_toy(tmp_path, length=L, bins=NB, bin_size=BS, offset=OFF)
    return {"vcf": vcf, "gtf": gtf, "weights": weights, "model": model, "fasta": fasta, "seqs": genome_seqs,
            "t": tmp_path, "recs": recs}


def window_text(seq, pos, ref, alt):
    """REF and ALT window text around a 1-based variant, as varfx centres it (first REF base at index C)."""
    left = seq[max(0, pos - 1 - C):pos - 1].rjust(C, "N")
    ref_w = (left + seq[pos - 1:pos - 1 + L]).ljust(L, "N")[:L]
    right = seq[pos - 1 + len(ref):]
    alt_w = (left + alt + right).ljust(L, "N")[:L]
    return ref_w, alt_w


def test_gene_scores_are_the_statistics_on_the_tss_bins(gene_world):
    w = gene_world
    out, tsv = w["t"] / "s.h5", w["t"] / "s.tsv"
    r = run(["score", w["vcf"], "--fasta", w["fasta"], "--backend", "torchscript", "--weights", w["weights"],
             "--out", out, "--tsv", tsv, "--genes", w["gtf"], "--tss-margin", 2, "--stat", "SAD,logSED,D1,D2",
             "--float32", "-q"])
    assert r.exit_code == 0, r.output
    genes_tsv = w["t"] / "s.genes.tsv"
    table = pd.read_csv(genes_tsv, sep="\t")
    with h5py.File(out) as f:
        g = {k: f["genes"][k][()] for k in f["genes"]}
        assert f.attrs["tss_margin"] == 2 and f.attrs["genes"].endswith("g.gtf")
    gtf = read_gtf(w["gtf"])
    tss_table = [(gid, "chr1" if c == "1" else "chr2" if c == "2" else c, t)
                 for gid, c, t in zip(gtf.gene_id, gtf.chrom, gtf.tss)]
    geom = Geometry(L, NB, BS, OFF)
    model = w["model"]
    expected = []
    for chrom, pos, vid, ref, alts in w["recs"]:
        contig = "chr1" if chrom == "1" else chrom
        if contig not in w["seqs"]:
            continue
        seq = w["seqs"][contig].upper()
        for alt in alts.split(","):
            delta = len(alt) - len(ref)
            found = brute_pairs(tss_table, contig, pos, geom, 2, delta)
            nearest = {gid: min(tss, key=lambda t: (abs(pos - t), t)) for gid, (tss, _) in found.items()}
            for gid, (tss, pairs) in sorted(found.items(), key=lambda kv: (nearest[kv[0]], kv[0])):
                ref_w, alt_w = window_text(seq, pos, ref, alt)
                with torch.no_grad():
                    pr = model(one_hot_text(ref_w)[None])[0].double().numpy()
                    pa = model(one_hot_text(alt_w)[None])[0].double().numpy()
                rb = [b for b, a in pairs if a is not None]
                ab = [a for b, a in pairs if a is not None]
                rs, as_ = pr[rb].sum(0), pa[ab].sum(0)
                stats = {"SAD": as_ - rs, "logSED": np.log2(as_ + 1) - np.log2(rs + 1),
                         "D1": np.abs(pa[ab] - pr[rb]).sum(0), "D2": np.sqrt(((pa[ab] - pr[rb]) ** 2).sum(0))}
                if not rb:  # every ALT bin off the output: nothing compared, NaN (not 0, "no effect")
                    stats = {k: np.full(3, np.nan) for k in stats}
                expected.append(((chrom, pos, alt, gid), stats))
    assert len(expected) == len(table) == g["SAD"].shape[0] >= 8
    # the 8-bp insertion at 1490 moves P2's only bin (TSS 1505, bin 7) to bin 9, off the 8-bin output
    assert [k for k, st in expected if np.isnan(st["SAD"]).all()] == [("chr1", 1490, w["recs"][7][4], "P2")]
    ids = [x.decode() for x in g["gene_id"]]
    for i, ((chrom, pos, alt, gid), stats) in enumerate(expected):
        assert (g["chr"][i].decode(), int(g["pos"][i]), g["alt_allele"][i].decode(), ids[i]) == (chrom, pos, alt, gid)
        row = table.iloc[i]
        assert (row.chrom, row.pos, row.alt, row.gene_id) == (chrom, pos, alt, gid)
        for s, v in stats.items():
            np.testing.assert_allclose(g[s][i], v, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(row[[f"{s}:t{k}" for k in range(3)]].to_numpy(float), v, rtol=1e-4, atol=1e-5)
    # the gene columns: names, strands, nearest TSS and the strand-aware distance
    by = {(r.pos, r.alt, r.gene_id): r for r in table.itertuples()}
    r = by[(400, table[table.pos == 400].alt.iloc[0], "M1")]
    assert (r.gene_name, r.strand, r.tss, r.tss_distance, r.n_tss) == ("MINUS1", "-", 405, 5, 1)  # 5 bp upstream; TSS 440 is outside
    r = by[(410, table[table.pos == 410].alt.iloc[0], "P1")]
    assert (r.gene_name, r.strand, r.tss, r.tss_distance, r.n_tss) == ("PLUS1", "+", 415, -5, 1)
    r = by[(430, table[table.pos == 430].alt.iloc[0], "P1")]
    assert (r.tss, r.tss_distance, r.n_tss) == (428, 2, 2)  # both of P1's TSSs in the window: the nearer one
    assert "NOWHERE" not in set(table.gene_name) and "TWO" in set(table.gene_name)


def test_gene_rows_of_sharded_runs_merge_to_the_unsharded_run(gene_world):
    w = gene_world
    base = ["score", w["vcf"], "--fasta", w["fasta"], "--backend", "torchscript", "--weights", w["weights"],
            "--genes", w["gtf"], "--block-records", 2, "-q"]
    t = w["t"]
    assert run(base + ["--out", t / "all.h5", "--tsv", t / "all.tsv"]).exit_code == 0
    for k in (1, 2, 3):
        r = run(base + ["--out", t / f"s{k}.h5", "--tsv", t / f"s{k}.tsv", "--shard", f"{k}/3"])
        assert r.exit_code == 0, r.output
    assert run(["merge", *[t / f"s{k}.h5" for k in (1, 2, 3)], "--out", t / "m.h5"]).exit_code == 0
    r = run(["merge", *[t / f"s{k}.genes.tsv" for k in (3, 1, 2)], "--out", t / "m.genes.tsv"])
    assert r.exit_code == 0, r.output
    assert (t / "m.genes.tsv").read_bytes() == (t / "all.genes.tsv").read_bytes()
    with h5py.File(t / "m.h5") as a, h5py.File(t / "all.h5") as b:
        assert sorted(a["genes"]) == sorted(b["genes"])
        for k in b["genes"]:
            x, y = a["genes"][k][()], b["genes"][k][()]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), k
        assert a["genes/SAD"].shape[0] > 5


def test_example_genes(tmp_path):
    """The bundled example: the motif-breaking SNV next to PLUSA's TSS moves PLUSA's TSS bins."""
    r = run(["score", EXAMPLES / "variants.vcf", "--fasta", EXAMPLES / "genome.fa", "--backend", "torchscript",
             "--weights", EXAMPLES / "model.pt", "--tsv", tmp_path / "s.tsv", "--genes", EXAMPLES / "genes.gtf", "-q"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(tmp_path / "s.genes.tsv", sep="\t")
    assert set(t.gene_name) >= {"PLUSA", "MINUSA", "CHR2GENE"} and "UNPLACED" not in set(t.gene_name)
    assert (t.tss_distance.abs() <= 256 + 50).all()  # TSSs within the 512-bp output (+ the nearest-TSS slack)
    breaking = t[(t.id == "v0008") & (t.gene_name == "MINUSA")].iloc[0]
    assert breaking.strand == "-" and breaking.tss == 2500 and breaking.tss_distance == -52
    assert abs(breaking["SAD:motifA_minus"]) > 1.0  # the motif copy it breaks sits in MINUSA's TSS bins


@pytest.mark.parametrize("extra, code, message", [
    (["--genes-tsv", "x.tsv"], 2, "--genes-tsv needs --genes"),
    (["--tss-margin", "5"], 2, "--tss-margin needs --genes"),
    (["--genes", "missing.gtf"], 1, "gene annotation not found: missing.gtf"),
    (["--genes", "BADGTF"], 1, "has no 'transcript' or 'gene' lines"),
    (["--genes", "GTF", "--tss-margin", "-1"], 2, "--tss-margin must be ≥ 0"),
    (["--genes", "GTF", "--genes-tsv", "OUT"], 2, "must be different files"),
    (["--genes", "GTF", "--genotypes", "VCF"], 2, "--genes is not available with --genotypes"),
    (["--genes", "GTF", "--out-vcf", "a.vcf", "NO_TSV"], 2, "--genes writes its (variant, gene) rows to --out"),
])
def test_gene_option_errors(gene_world, extra, code, message, monkeypatch):
    w = gene_world
    monkeypatch.chdir(w["t"])
    (w["t"] / "bad.gtf").write_text("chr1\tx\texon\t1\t5\t.\t+\t.\tgene_id \"A\";\n")
    table = [] if "NO_TSV" in extra else ["--tsv", w["t"] / "o.tsv"]
    names = {"GTF": w["gtf"], "BADGTF": w["t"] / "bad.gtf", "OUT": w["t"] / "o.tsv", "VCF": w["vcf"]}
    extra = [names.get(x, x) for x in extra if x != "NO_TSV"]
    msg = one_line_error(run(["score", w["vcf"], "--fasta", w["fasta"], "--backend", "torchscript",
                              "--weights", w["weights"], *table, "-q", *extra]), code)
    assert message in msg
    assert not list(w["t"].glob("o.*"))  # nothing written


def test_gene_rows_do_not_depend_on_batch_size_or_workers(gene_world):
    w = gene_world
    t = w["t"]
    base = ["score", w["vcf"], "--fasta", w["fasta"], "--backend", "torchscript", "--weights", w["weights"],
            "--genes", w["gtf"], "-q"]
    outs = []
    for i, extra in enumerate([["--batch-size", 64], ["--batch-size", 2], ["--workers", 1, "--batch-size", 3]]):
        r = run(base + ["--tsv", t / f"r{i}.tsv", *extra])
        assert r.exit_code == 0, r.output
        outs.append((t / f"r{i}.genes.tsv").read_text())
    assert outs[0].count("\n") > 8 and outs[1] == outs[0] and outs[2] == outs[0]
