import types

import numpy as np
import pytest
import torch

from varfx.encoding import decode
from varfx.errors import OptionError, RefMismatchError
from varfx.genome import Genome
from varfx.variants import Site
from varfx.windows import BinSelection, Geometry, align_bins, build_windows, check_sites

import reference as R


expected = R.windows


def site_for(seq, contig, pos, ref_len, alts):
    ref = seq[pos - 1:pos - 1 + ref_len].upper()
    return Site(0, contig, contig, pos, ".", ref, [(i, a) for i, a in enumerate(alts)])


@pytest.mark.parametrize("length", [33, 64])
@pytest.mark.parametrize("pos,ref_len,alt", [
    (1000, 1, "A"), (1000, 1, "T"), (1000, 3, "GGG"),  # SNV, MNV
    (1000, 1, "ACGTACG"), (1000, 6, "C"), (1000, 3, "TT"),  # insertion, deletion, complex
    (3, 1, "A"), (1, 1, "C"), (1998, 1, "G"), (1995, 4, "A"), (1999, 1, "CAAAAA"),  # contig edges
])
def test_windows_match_independent_construction(fasta, genome_seqs, length, pos, ref_len, alt):
    seq = genome_seqs["chr1"]
    g = Genome(fasta)
    geom = Geometry(length, 1, 1, 0)
    site = site_for(seq, "chr1", pos, ref_len, [alt])
    wb = build_windows(g, [site], geom)
    ref_w, alt_w = expected(seq, pos, site.ref, alt, length)
    assert decode(wb.ref[0]) == ref_w
    assert decode(wb.alt[0]) == alt_w
    assert wb.ref[0, length // 2] != 4 or seq[pos - 1].upper() not in "ACGT"
    assert wb.delta[0] == len(alt) - ref_len


def test_extended_frame_holds_every_shift(fasta, genome_seqs):
    seq = genome_seqs["chr1"]
    g = Genome(fasta)
    geom = Geometry(40, 1, 1, 0)
    site = site_for(seq, "chr1", 500, 2, ["T", "GGGG"])
    wb = build_windows(g, [site], geom, max_shift=3)
    for s in (-3, -1, 0, 2, 3):
        for k, alt in enumerate(["T", "GGGG"]):
            ref_w, alt_w = expected(seq, 500, site.ref, alt, 40, shift=s)
            assert decode(wb.ref[wb.ref_row[k], 3 + s: 3 + s + 40]) == ref_w
            assert decode(wb.alt[k, 3 + s: 3 + s + 40]) == alt_w


def test_one_ref_row_per_site(fasta, genome_seqs):
    g = Genome(fasta)
    s1 = site_for(genome_seqs["chr1"], "chr1", 100, 1, ["A", "C", "G"])
    s2 = site_for(genome_seqs["chr2"], "chr2", 50, 1, ["T"])
    wb = build_windows(g, [s1, s2], Geometry(21, 1, 1, 0))
    assert wb.ref.shape[0] == 2 and wb.alt.shape[0] == 4
    assert wb.ref_row.tolist() == [0, 0, 0, 1]


def test_check_sites_ref_policies(fasta, genome_seqs):
    g = Genome(fasta)
    geom = Geometry(64, 8, 4, 16)
    seq = genome_seqs["chr1"]
    good = site_for(seq, "chr1", 305, 2, ["A"])  # inside the soft-masked stretch: matches upper-cased
    wrong_base = "A" if seq[99].upper() != "A" else "C"
    bad = Site(1, "chr1", "chr1", 100, ".", wrong_base, [(0, "G"), (1, "T")])
    n_ok = Site(2, "chr1", "chr1", 101, ".", "N", [(0, "G")])  # N in the VCF matches any base
    past = Site(3, "chr1", "chr1", 2000, ".", "AC", [(0, "A")])
    check_sites(g, [good, bad, n_ok, past], geom, 0, "skip", "error")
    assert good.alts == [(0, "A")]
    assert bad.alts == [] and bad.skipped == [(0, "G", "ref_mismatch"), (1, "T", "ref_mismatch")]
    assert n_ok.alts == [(0, "G")]
    assert past.skipped == [(0, "A", "outside_contig")]
    bad2 = Site(1, "chr1", "chr1", 100, ".", wrong_base, [(0, "G")])
    with pytest.raises(RefMismatchError, match=r"chr1:100 REF .* does not match the FASTA"):
        check_sites(g, [bad2], geom, 0, "error", "error")


def test_allele_too_long_and_short_contigs(fasta, genome_seqs):
    g = Genome(fasta)
    seq = genome_seqs["chr1"]
    geom = Geometry(20, 1, 1, 0)  # the variant sits at index 10: 10 bases of room
    long_ins = site_for(seq, "chr1", 500, 1, [seq[499].upper() + "A" * 10, "C"])
    check_sites(g, [long_ins], geom, 0)
    assert [a for _, a in long_ins.alts] == ["C"]
    assert long_ins.skipped[0][2] == "allele_too_long"
    # sites emptied by the REF and contig checks (here in the middle and last) hold no ALTs when the
    # longest ALT per site is taken: the too-long check must still line up with the right sites
    long2 = site_for(seq, "chr1", 520, 1, ["C", seq[519].upper() + "G" * 12])
    wrong = "A" if seq[539].upper() != "A" else "C"
    mismatch = Site(5, "chr1", "chr1", 540, ".", wrong, [(0, "G")])
    fits = site_for(seq, "chr1", 560, 1, [seq[559].upper() + "T" * 9])
    past = Site(7, "chr1", "chr1", 5000, ".", "A", [(0, "C")])
    check_sites(g, [long2, mismatch, fits, past], geom, 0)
    assert [a for _, a in long2.alts] == ["C"] and long2.skipped[0][2] == "allele_too_long"
    assert mismatch.skipped == [(0, "G", "ref_mismatch")]
    assert len(fits.alts) == 1 and fits.skipped == []
    assert past.skipped == [(0, "C", "outside_contig")]
    big = Geometry(1000, 1, 1, 0)  # chrM is 300 bp
    m = site_for(genome_seqs["chrM"], "chrM", 10, 1, ["A"])
    with pytest.raises(OptionError, match="--short-contigs"):
        check_sites(g, [m], big, 0, "skip", "error")
    check_sites(g, [m], big, 0, "skip", "skip")
    assert m.skipped == [(0, "A", "short_contig")]
    m2 = site_for(genome_seqs["chrM"], "chrM", 10, 1, ["A"])
    check_sites(g, [m2], big, 0, "skip", "pad")
    assert m2.alts == [(0, "A")]


def test_bin_selection_parse():
    assert BinSelection.parse("variant").margin == 128
    assert BinSelection.parse("variant:0").margin == 0
    assert BinSelection.parse("center:3").count == 3
    assert BinSelection.parse("all").mode == "all"
    for bad in ("middle", "center:0", "center:x", "variant:-1"):
        with pytest.raises(OptionError, match="--bins"):
            BinSelection.parse(bad)


def test_align_bins_snv_variant_margin():
    # 64-bp input, 8 bins of 4 bp from offset 16: bins cover [16, 48); variant at 32 (bin 4)
    geom = Geometry(64, 8, 4, 16)
    rb, ab, m = align_bins(geom, BinSelection("variant", margin=4), np.array([1]), np.array([0]))
    assert rb[0][m[0]].tolist() == [3, 4, 5] and ab[0][m[0]].tolist() == [3, 4, 5]
    rb, ab, m = align_bins(geom, BinSelection("variant", margin=0), np.array([3]), np.array([0]))
    assert rb[0][m[0]].tolist() == [4]  # [32, 35) lies in bin 4
    rb, ab, m = align_bins(geom, BinSelection("variant", margin=0), np.array([5]), np.array([0]))
    assert rb[0][m[0]].tolist() == [4, 5]  # [32, 37) reaches bin 5
    rb, ab, m = align_bins(geom, BinSelection("center", count=2), np.array([1]), np.array([0]))
    assert rb[0].tolist() == [3, 4] and m.all()
    # with an even number of bins, an odd K is centred on the variant's bin 4 (it was 3 for K = 1)
    for k, want in ((1, [4]), (3, [3, 4, 5]), (8, list(range(8))), (7, [1, 2, 3, 4, 5, 6, 7])):
        rb, _, m = align_bins(geom, BinSelection("center", count=k), np.array([1]), np.array([0]))
        assert rb[0].tolist() == want and m.all(), k
    odd = Geometry(60, 7, 4, 16)  # 7 bins of [16, 44): the centre base 30 is in bin 3 = 7 // 2
    rb, _, _ = align_bins(odd, BinSelection("center", count=1), np.array([1]), np.array([0]))
    assert rb[0].tolist() == [(30 - 16) // 4] == [3]
    rb, ab, m = align_bins(geom, BinSelection("all"), np.array([1]), np.array([0]))
    assert rb[0].tolist() == list(range(8)) and (rb == ab).all()


def test_align_bins_indels_shift_right_side():
    geom = Geometry(64, 8, 4, 16)  # variant at 32: bins 0..4 start at or before it
    rb, ab, m = align_bins(geom, BinSelection("all"), np.array([1, 9, 1, 1]), np.array([8, -8, 1, 2]))
    # +8 bp insertion: right-side bins j compare with ALT bin j+2; those past the end drop out
    assert ab[0].tolist()[:5] == [0, 1, 2, 3, 4]
    assert ab[0][5] == 7 and m[0].tolist() == [True] * 6 + [False, False]
    # -8 bp deletion (REF = anchor + 8 bases, window [33, 41) deleted): right-side bins compare with ALT bin
    # j-2, except bin 5 = [36, 40), made only of deleted bases; bin 6 = [40, 44) holds shared 41-43, which ALT
    # bin 4 holds too
    assert ab[1][6:].tolist() == [4, 5] and m[1].tolist() == [True] * 5 + [False, True, True]
    # +1 bp rounds to no shift; +2 (half a bin) rounds away from zero to +1
    assert (ab[2] == rb[2]).all()
    assert ab[3][5] == 6 and ab[3][4] == 4


def test_indels_compare_only_shared_sequence_at_base_resolution(tmp_path, fasta, genome_seqs):
    """With 1-bp bins and a model whose output at each position depends on that base alone, every pair of
    aligned bins holds the same base in REF and ALT: an insertion or a deletion scores exactly 0 on every
    pairwise statistic (the deleted and inserted bases are left out, nothing is compared twice)."""
    import h5py
    from click.testing import CliRunner

    from varfx.cli import cli
    from conftest import write_vcf
    from toy_models import save_module

    class PerBase(torch.nn.Module):
        def forward(self, x):  # (B, L, 4) -> (B, 32, 2): weights 1, 2, 3, 4 for A, C, G, T; x10 on track 2
            y = x[:, 16:48, :] @ torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
            return y

    weights = save_module(tmp_path, PerBase(), "perbase", length=64, bins=32, bin_size=1, offset=16, tracks=2)
    s = genome_seqs["chr1"].upper()
    recs = [("chr1", 700, "del3", s[699:703], s[699]), ("chr1", 800, "del20", s[799:820], s[799]),
            ("chr1", 900, "ins4", s[899], s[899] + "GATC"), ("chr1", 1000, "mnv", s[999:1001],
                                                             "".join("A" if b != "A" else "C" for b in s[999:1001]))]
    vcf = write_vcf(tmp_path / "v.vcf", recs)
    r = CliRunner().invoke(cli, ["score", str(vcf), "--fasta", str(fasta), "--backend", "torchscript", "--weights",
                                 str(weights), "--out", str(tmp_path / "o.h5"), "--stat", "SAD,D1,D2", "--bins", "all",
                                 "--float32", "-q"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o.h5") as f:
        ids = [v.decode() for v in f["id"][()]]
        for stat in ("SAD", "D1", "D2"):
            values = dict(zip(ids, f[stat][()]))
            for vid in ("del3", "del20", "ins4"):
                assert np.all(values[vid] == 0), (stat, vid, values[vid])
            assert np.all(np.abs(values["mnv"]) > 0)  # a substitution is seen


def test_check_sites_multi_base_refs_in_one_call(fasta, genome_seqs):
    """Longer REFs are checked together (one comparison over their concatenated bases): each site keeps
    its own verdict whatever its neighbours' lengths."""
    g = Genome(fasta)
    geom = Geometry(64, 8, 4, 16)
    seq = genome_seqs["chr1"].upper()
    flip = lambda b: "A" if b != "A" else "C"
    ok3 = Site(0, "chr1", "chr1", 400, ".", seq[399:402], [(0, seq[399])])
    bad_mid = Site(1, "chr1", "chr1", 500, ".", seq[499] + flip(seq[500]) + seq[501:505], [(0, seq[499])])
    n_mid = Site(2, "chr1", "chr1", 600, ".", seq[599] + "N" + seq[601], [(0, seq[599])])
    snv = Site(3, "chr1", "chr1", 700, ".", seq[699], [(0, flip(seq[699]))])
    bad_last = Site(4, "chr1", "chr1", 800, ".", seq[799] + flip(seq[800]), [(0, seq[799])])
    ok7 = Site(5, "chr1", "chr1", 900, ".", seq[899:906], [(0, seq[899]), (1, seq[899:901])])
    sites = [ok3, bad_mid, n_mid, snv, bad_last, ok7]
    check_sites(g, sites, geom, 0, "skip", "error")
    assert [bool(s.alts) for s in sites] == [True, False, True, True, False, True]
    assert bad_mid.skipped == [(0, seq[499], "ref_mismatch")] and bad_last.skipped[0][2] == "ref_mismatch"
    assert ok7.alts == [(0, seq[899]), (1, seq[899:901])]


def _aligned_pairs_by_hand(geom, sel, ref_len, delta):
    """The (REF bin, ALT bin) pairs of one variant, from the rule in docs/windows.md, bin by bin."""
    nb, bs, off, c = geom.output_bins, geom.bin_size, geom.bin_offset, geom.center
    if sel.mode == "all":
        bins = range(nb)
    elif sel.mode == "center":
        k = min(sel.count, nb)
        first = min(nb // 2 - k // 2, nb - k)
        bins = range(first, first + k)
    else:  # bins overlapping [c - margin, c + len(REF) + margin)
        lo, hi = c - sel.margin, c + ref_len + sel.margin
        bins = [j for j in range(nb) if off + j * bs < hi and off + (j + 1) * bs > lo]
    shift = int(np.sign(delta)) * int(abs(delta) / bs + 0.5) if delta else 0  # halves away from zero
    pairs = []
    for j in bins:
        start = off + j * bs
        a = j + shift if start > c else j
        only_deleted = delta < 0 and start >= c + ref_len + delta and start + bs <= c + ref_len
        if 0 <= a < nb and not only_deleted:
            pairs.append((j, a))
    return pairs


@pytest.mark.parametrize("seed", range(6))
def test_align_bins_equals_the_rule_bin_by_bin(seed):
    """align_bins (vectorised over a unit of variants, SNVs and indels mixed) gives, for every variant, the
    pairs that the documented rule gives for it alone."""
    rng = np.random.default_rng(seed)
    bs = int(rng.choice([1, 2, 4, 7, 32]))
    nb = int(rng.integers(1, 40))
    off = int(rng.integers(0, 3 * bs + 1))
    geom = Geometry(2 * off + nb * bs + int(rng.integers(0, 2 * bs)), nb, bs, off)
    ref_len = rng.integers(1, 3 * bs + 3, size=50)
    ref_len[rng.random(50) < 0.5] = 1
    delta = np.where(rng.random(50) < 0.4, 0, rng.integers(-4 * bs, 4 * bs + 1, size=50))
    delta = np.maximum(delta, 1 - ref_len)  # ALT keeps at least one base
    for sel in (BinSelection("all"), BinSelection("center", count=int(rng.integers(1, nb + 3))),
                BinSelection("variant", margin=int(rng.integers(0, 3 * bs)))):
        for rows in (np.arange(50), np.flatnonzero(delta == 0)[:5], np.flatnonzero(delta)[:1]):  # mixed and pure units
            rb, ab, m = align_bins(geom, sel, ref_len[rows], delta[rows])
            for k, v in enumerate(rows.tolist()):
                got = list(zip(rb[k][m[k]].tolist(), ab[k][m[k]].tolist()))
                assert got == _aligned_pairs_by_hand(geom, sel, int(ref_len[v]), int(delta[v])), (sel, v)


def _units_one_site_at_a_time(sites, per_window, unit, block):
    """Work units by the rule of run._prepare, applied site by site: a unit takes sites while their
    sequences stay within ``unit`` (a site needing more alone is a unit of its own), holds at most ``unit``
    sites, and stays in its first site's block of ``block`` records."""
    units, cur, seqs, limit = [], [], 0, -1
    for s in sites:
        if s.record >= limit:
            if cur:
                units.append(cur)
                cur, seqs = [], 0
            limit = (s.record // block + 1) * block
        need = (1 + len(s.alts)) * per_window if s.alts else 0
        if need and seqs and seqs + need > unit:
            units.append(cur)
            cur, seqs = [], 0
        cur.append(s)
        seqs += need
        if seqs >= unit or len(cur) >= unit:
            units.append(cur)
            cur, seqs = [], 0
    return units + ([cur] if cur else [])


def _fake_sites(rng, n):
    from varfx.variants import Site
    records = np.sort(rng.choice(np.arange(4 * n), size=n, replace=False))  # gaps: shards, resumed blocks
    sites = []
    for r in records.tolist():
        k = int(rng.choice([0, 1, 1, 1, 2, 3]))
        sites.append(Site(r, "chr1", "chr1", 100 + r, ".", "A", [(i, "C") for i in range(k)], []))
    return sites


@pytest.mark.parametrize("seed", range(8))
def test_work_units_are_cut_as_the_site_by_site_rule(seed, monkeypatch):
    """_prepare cuts the sites it reads into work units with array operations; the units are those of the
    rule applied one site at a time, and each unit's batch covers its own sites."""
    import varfx.run as R
    from varfx.windows import SiteColumns

    monkeypatch.setattr(R, "check_sites", lambda genome, sites, *a, **k: SiteColumns([s for s in sites if s.alts]))
    monkeypatch.setattr(R, "build_windows", lambda genome, cols, *a: types.SimpleNamespace(ref_len=0, delta=0))
    monkeypatch.setattr(R, "align_bins", lambda *a: None)
    rng = np.random.default_rng(seed)
    sites = _fake_sites(rng, int(rng.integers(1, 700)))
    per_window, unit, block = int(rng.integers(1, 4)), int(rng.choice([1, 2, 5, 16, 64])), int(rng.choice([1, 7, 64]))
    got = [b.sites for b in R._prepare(iter(sites), None, None, None, 0, per_window, unit, "skip", "error", False,
                                       block)]
    want = _units_one_site_at_a_time(sites, per_window, unit, block)
    assert [[s.record for s in u] for u in got] == [[s.record for s in u] for u in want]


def test_units_before_an_unreadable_record_are_handed_on(monkeypatch):
    """Sites are read ahead in chunks; a record that cannot be read still ends the run only after the units
    completed before it (so their blocks can be committed for --resume), as when sites came one at a time."""
    import varfx.run as R
    from varfx.errors import InputError
    from varfx.windows import SiteColumns

    monkeypatch.setattr(R, "check_sites", lambda genome, sites, *a, **k: SiteColumns([s for s in sites if s.alts]))
    monkeypatch.setattr(R, "build_windows", lambda genome, cols, *a: types.SimpleNamespace(ref_len=0, delta=0))
    monkeypatch.setattr(R, "align_bins", lambda *a: None)
    sites = _fake_sites(np.random.default_rng(0), 300)

    def reader():
        yield from sites[:250]
        raise InputError("record 251 could not be parsed")

    got = []
    with pytest.raises(InputError, match="record 251"):
        for b in R._prepare(reader(), None, None, None, 0, 1, 16, "skip", "error", False, 64):
            got.append([s.record for s in b.sites])
    want = _units_one_site_at_a_time(sites[:250], 1, 16, 64)[:-1]  # all but the unit the bad record interrupts
    assert got == [[s.record for s in u] for u in want] and len(got) > 5


@pytest.mark.parametrize("seed", range(5))
def test_a_mixed_unit_gives_each_site_its_own_windows(fasta, genome_seqs, seed):
    """One call for a unit of sites on several contigs (SNVs, MNVs, insertions, deletions, complex pairs,
    several ALTs, near contig ends, with shifts) cuts, for every ALT, the windows it gets alone."""
    import random
    rng = random.Random(seed)
    g = Genome(fasta)
    length, shift = rng.choice([33, 64, 101]), rng.choice([0, 2])
    geom = Geometry(length, 1, 1, 0)
    sites = []
    for k in range(60):
        contig = rng.choice(["chr1", "chr1", "chr2", "chrM"])
        seq = genome_seqs[contig]
        ref_len = rng.choice([1, 1, 1, 2, 5])
        pos = rng.randint(1, len(seq) - ref_len + 1)
        alts = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            alts.append("".join(rng.choice("ACGTN") for _ in range(rng.choice([1, 1, ref_len, 3, 9]))))
        site = site_for(seq, contig, pos, ref_len, alts)
        site.record = k
        sites.append(site)
    wb = build_windows(g, sites, geom, max_shift=shift)
    row = 0
    for s_i, site in enumerate(sites):
        seq = genome_seqs[site.contig]
        for _, alt in site.alts:
            assert wb.ref_row[row] == s_i
            want_ref, want_alt = expected(seq, site.pos, site.ref, alt, length + 2 * shift)  # the extended frame
            assert decode(wb.ref[s_i]) == want_ref and decode(wb.alt[row]) == want_alt, (site, alt)
            assert wb.delta[row] == len(alt) - len(site.ref)
            row += 1
    assert row == wb.alt.shape[0]


def test_div_round_away_rounds_halves_away_from_zero():
    from varfx.windows import div_round_away
    got = [int(div_round_away(n, 4)) for n in (-10, -6, -5, -2, -1, 0, 1, 2, 5, 6, 10)]
    assert got == [-3, -2, -1, -1, 0, 0, 0, 1, 1, 2, 3]  # ±2/4 and ±6/4 and ±10/4: halves, away from zero
    n = np.arange(-40, 41)
    assert (div_round_away(n, 7) == -div_round_away(-n, 7)).all()  # mirrored
