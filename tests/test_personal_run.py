"""`varfx score --genotypes` (personal genomes) end to end.

Expectations come from the test's own text-based reference: each sample's haplotypes are built by
string splicing from the GT strings as written, encoded with a numpy one-hot of the test's own, run
through the eager toy model and scored with the formulas in reference.py (docs/personal.md,
docs/formats.md "Personal genomes").
"""

from __future__ import annotations

import random
import re

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import varfx
from varfx import personal_run
from varfx.cli import cli
from varfx.personal_run import score_personal, unique_rows

import reference as R
from cohort import random_genotypes, random_records, write_cohort
from conftest import random_seq, write_fasta, write_vcf
from toy_models import LinearConv, MotifConv, ToyConv, save_module

L, BINS, BS, OFF, T = 64, 8, 4, 16, 3
C = L // 2
GEOM = dict(length=L, bins=BINS, bin_size=BS, offset=OFF)
COUNTS = ["missing", "haploid", "unphased_indel", "overlap", "symbolic"]


def other(b: str) -> str:
    return "A" if b.upper() != "A" else "C"


def run_cli(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def gt_alleles(gt: str) -> list[int]:
    """A GT string -> allele index per copy, as docs/personal.md reads it (missing -> REF, haploid on both)."""
    parts = re.split(r"[|/]", gt)
    if len(parts) == 1:
        parts = parts * 2
    return [0 if p == "." else int(p) for p in parts]


def hap_text(seq: str, recs, calls, copy: int, chrom: str, pos0: int, ref: str, allele: str, margin: int = 0) -> str:
    """Copy ``copy``'s window (L + 2·margin wide) with ``allele`` at the focal site, by string splicing.

    ``recs``/``calls`` are the cohort's records and one sample's allele pair per record; records that
    overlap the focal REF are the focal site and stay out of the background.
    """
    lo, hi = pos0, pos0 + len(ref)
    edits = [(p - 1, r, alts[call[copy] - 1], False) for (c, p, r, alts), call in zip(recs, calls)
             if c == chrom and call[copy] > 0 and not (p - 1 < hi and p - 1 + len(r) > lo)]
    edits.append((pos0, ref, allele, True))
    edits.sort(key=lambda e: e[0])
    out, prev, n, at = [], 0, 0, None
    for p, r, a, focal in edits:
        assert p >= prev, "the test cohort has no overlapping alleles"
        out.append(seq[prev:p])
        n += p - prev
        if focal:
            at = n
        out.append(a)
        n += len(a)
        prev = p + len(r)
    out.append(seq[prev:])
    return R.text_window("".join(out), at - C - margin, L + 2 * margin)


_HOT = np.frombuffer(b"ACGT", dtype=np.uint8)


def hot(texts: list[str]) -> torch.Tensor:
    """The test's own one-hot of equal-length texts -> (n, len, 4)."""
    a = np.frombuffer("".join(texts).encode(), dtype=np.uint8).reshape(len(texts), -1)
    return torch.from_numpy((a[..., None] == _HOT).astype(np.float32))


def rc_text(s: str) -> str:
    return s[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


# -- the cohort ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A random two-contig genome, 62 cohort sites (SNVs, 1-5 bp indels, multi-allelic sites, two at
    the very ends of chr2) with phased genotypes and missing calls for 24 samples plus REFONLY, and two
    toy models with a 15-bp receptive field (one-hot and two-hot)."""
    t = tmp_path_factory.mktemp("personal")
    rng = random.Random(2024)
    seqs = {"chr1": random_seq(1500, rng), "chr2": random_seq(700, rng)}
    fasta = write_fasta(t / "genome.fa", seqs)
    recs = random_records(seqs, 60, rng, indel_rate=0.25, margin=40)
    s2 = seqs["chr2"]
    # windows that run off chr2's ends: N there, as in reference scoring
    recs += [("chr2", 4, s2[3], [other(s2[3])]), ("chr2", 697, s2[696], [other(s2[696])])]
    recs.sort(key=lambda r: (r[0], r[1]))
    samples = [f"S{i:02d}" for i in range(24)]
    gts = random_genotypes(recs, samples, rng, freq=0.3, missing=0.06)
    samples.append("REFONLY")
    for row in gts:
        row.append("0|0")
    cohort = write_cohort(t / "cohort.vcf", recs, samples, gts, contigs={"chr1": 1500, "chr2": 700})
    models = {
        "one-hot": ToyConv(L, BINS, BS, OFF, T, kernel=15, seed=1).eval(),
        "two-hot": ToyConv(L, BINS, BS, OFF, T, kernel=15, seed=2).eval(),
    }
    weights = {k: save_module(t, m, k, tracks=T, encoding=k, strand_pairs=((0, 1),), **GEOM)
               for k, m in models.items()}
    variants = [(r, i) for r, rec in enumerate(recs) for i in range(len(rec[3]))]
    calls = {s: [gt_alleles(row[j]) for row in gts] for j, s in enumerate(samples)}
    w = {"t": t, "seqs": seqs, "fasta": fasta, "recs": recs, "samples": samples, "gts": gts, "cohort": cohort,
         "models": models, "weights": weights, "variants": variants, "calls": calls, "cache": {}}
    # each (variant, sample, copy)'s windows, 1 bp of margin each side (for --shifts -1,0,1)
    texts = {}
    for v, (r, i) in enumerate(variants):
        chrom, pos, ref, alts = recs[r]
        for s in samples:
            c = calls[s]
            for h in range(2):
                mk = lambda a: hap_text(seqs[chrom], recs, c, h, chrom, pos - 1, ref, a, margin=1)
                ref_w, alt_w = mk(ref), mk(alts[i])
                texts[v, s, h] = (ref_w, alt_w, alt_w if c[r][h] == i + 1 else ref_w)
    w["texts"] = texts
    return w


def dosage_of(w, samples) -> np.ndarray:
    """Copies of each ALT per sample, from the GT strings."""
    return np.array([[sum(a == i + 1 for a in w["calls"][s][r]) for s in samples] for r, i in w["variants"]])


def reference_scores(w, kind: str, mode: str, samples, members=((0, False),)) -> dict[str, np.ndarray]:
    """SAD and logSED (and genotype/…) per (variant, sample[, copy], track) from the text windows.

    ``mode``: two-hot, mean or both; ``members``: (shift, reverse-complement) pairs averaged."""
    model = w["models"][kind]
    v_n, s_n = len(w["variants"]), len(samples)
    keys = [(v, s, h) for v in range(v_n) for s in samples for h in range(2)]
    preds = []
    for which in range(3):  # REF, hom-ALT, genotype
        total = 0
        for shift, is_rc in members:
            def cut(x):
                x = x[1 + shift:1 + shift + L]
                return rc_text(x) if is_rc else x
            x = hot([cut(w["texts"][k][which]) for k in keys]).reshape(v_n, s_n, 2, L, 4)
            if kind == "two-hot":
                x = x.sum(2)
            with torch.no_grad():
                y = model(x.reshape(-1, L, 4)).double()
            if is_rc:
                y = y.flip(1)[..., [1, 0, 2]]
            total = total + y
        y = total / len(members)
        y = y.reshape(v_n, s_n, *(() if kind == "two-hot" else (2,)), BINS, T)
        if mode == "mean":
            y = y.mean(2)
        preds.append(y)
    out = {k: np.zeros((v_n, s_n, *((2,) if mode == "both" else ()), T)) for k in
           ("SAD", "logSED", "genotype/SAD", "genotype/logSED")}
    for v, (r, i) in enumerate(w["variants"]):
        rl, al = len(w["recs"][r][2]), len(w["recs"][r][3][i])
        for s in range(s_n):
            for h in (range(2) if mode == "both" else [None]):
                idx = (v, s) if h is None else (v, s, h)
                calls = w["calls"][samples[s]][r]
                carried = any(a == i + 1 for a in calls) if h is None else calls[h] == i + 1
                # genotype rows that do not carry the ALT read the REF sequence: compared bin for bin
                for pre, alt, al_row in (("", preds[1], al), ("genotype/", preds[2], al if carried else rl)):
                    st = R.stats(preds[0][idx], alt[idx], rl, al_row, L, BINS, BS, OFF)
                    out[pre + "SAD"][idx] = st["SAD"].numpy()
                    out[pre + "logSED"][idx] = st["logSED"].numpy()
    return out


def run_cohort(w, mode: str, samples=None, extra=()):
    """Score the cohort file on itself (memoised): returns (h5 path, tsv path, CliRunner result)."""
    key = (mode, tuple(samples or ()), tuple(extra))
    if key not in w["cache"]:
        n = len(w["cache"])
        out, tsv = w["t"] / f"run{n}.h5", w["t"] / f"run{n}.tsv"
        kind = "two-hot" if mode == "two-hot" else "one-hot"
        args = ["score", w["cohort"], "--fasta", w["fasta"], "--backend", "torchscript",
                "--weights", w["weights"][kind], "--genotypes", w["cohort"], "--contrast", "--stat", "SAD,logSED",
                "--out", out, "--tsv", tsv, "--float32", "-q", *extra]
        if mode != "two-hot":
            args += ["--haplotypes", mode]
        if samples is not None:
            if mode == "both":  # a file, one name per line
                (w["t"] / "samples.txt").write_text("# chosen\n" + "\n".join(samples) + "\n")
                args += ["--samples", w["t"] / "samples.txt"]
            else:
                args += ["--samples", ",".join(samples)]
        w["cache"][key] = (out, tsv, run_cli(args))
    return w["cache"][key]


def plain_run(w, kind: str):
    """Reference scoring (no --genotypes) of the same variants with the same model."""
    key = ("plain", kind)
    if key not in w["cache"]:
        out = w["t"] / f"plain_{kind}.h5"
        varfx.score_vcf(w["cohort"], w["fasta"], "torchscript", [str(w["weights"][kind])], out,
                        stats="SAD,logSED", float32=True)
        w["cache"][key] = out
    return w["cache"][key]


CHOSEN = ["S17", "REFONLY", "S03", "S22", "S00", "S09", "S11", "S05", "S20", "S14", "S08", "S01", "S19", "S06",
          "S12", "S23", "S15", "S02"]


# -- 1. the cohort, three ways ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["two-hot", "mean", "both"])
def test_cohort_layout_dosage_summaries_and_values(world, mode):
    w = world
    out, tsv, r = run_cohort(w, mode, CHOSEN)
    assert r.exit_code == 0, r.output
    v_n, s_n = len(w["variants"]), len(CHOSEN)
    assert f"variants scored: {v_n}" in r.output
    inner = (s_n, 2) if mode == "both" else (s_n,)
    want = reference_scores(w, "two-hot" if mode == "two-hot" else "one-hot", mode, CHOSEN)
    dosage = dosage_of(w, CHOSEN)
    assert (dosage == 1).any() and (dosage == 2).any()
    with h5py.File(out) as f:
        assert f.attrs["complete"]
        assert f.attrs["haplotypes"] == mode
        assert f["samples"].asstr()[:].tolist() == CHOSEN
        assert f["dosage"].dtype == np.int8 and f["dosage"].shape == (v_n, s_n)
        np.testing.assert_array_equal(f["dosage"][:], dosage)
        np.testing.assert_array_equal(f["in_cohort"][:], np.ones(v_n))
        ids = f["id"].asstr()[:].tolist()
        assert ids == [f"{w['recs'][r][0]}_{w['recs'][r][1]}" for r, _ in w["variants"]]
        for pre in ("", "genotype/"):
            for stat in ("SAD", "logSED"):
                got = f[pre + stat][:]
                assert got.dtype == np.float32 and got.shape == (v_n, *inner, T)
                np.testing.assert_allclose(got, want[pre + stat], rtol=1e-4, atol=2e-5, err_msg=pre + stat)
                flat = got.astype(np.float64).reshape(v_n, -1, T)  # samples (× copies) pooled
                for name, fn in (("mean", np.mean), ("sd", np.std), ("min", np.min), ("max", np.max)):
                    summ = f[f"{pre}summary/{stat}/{name}"][:]
                    assert summ.shape == (v_n, T)
                    # float32 arithmetic: an sd of equal values may come out at float32 rounding, not 0
                    np.testing.assert_allclose(summ, fn(flat, axis=1), rtol=1e-5,
                                               atol=1e-6 * max(1.0, np.abs(flat).max()),
                                               err_msg=f"{pre}summary/{stat}/{name}")
        # the genotype contrast of a hom-REF sample is 0 (indels too: it reads the REF sequence, compared
        # bin for bin) and of a hom-ALT sample the hom-ALT score
        geno, hom = f["genotype/SAD"][:], f["SAD"][:]
        assert np.all(geno[dosage == 0] == 0)
        both_alt = dosage == 2
        np.testing.assert_allclose(geno[both_alt], hom[both_alt], rtol=1e-6, atol=1e-7)
        # backgrounds matter: the same variant scores differently in different samples
        assert (f["summary/logSED/sd"][:] > 1e-4).mean() > 0.5
        missing = [sum("." in w["gts"][r][w["samples"].index(s)] for r in range(len(w["recs"]))) for s in CHOSEN]
        assert sum(missing) > 5
        np.testing.assert_array_equal(f["sample_counts/missing"][:], missing)
        for k in ("unphased_indel", "overlap", "symbolic"):
            np.testing.assert_array_equal(f[f"sample_counts/{k}"][:], 0)
        assert f.attrs["ref_mismatch_records"] == 0


def test_rc_and_shifts_match_reference(world):
    w = world
    out, _, r = run_cohort(w, "mean", CHOSEN[:6], extra=("--rc", "--shifts", "-1,0,1"))
    assert r.exit_code == 0, r.output
    want = reference_scores(w, "one-hot", "mean", CHOSEN[:6],
                            members=[(s, rc) for rc in (False, True) for s in (-1, 0, 1)])
    with h5py.File(out) as f:
        for k in ("SAD", "logSED", "genotype/SAD", "genotype/logSED"):
            np.testing.assert_allclose(f[k][:], want[k], rtol=1e-4, atol=2e-5, err_msg=k)


# -- 2. a linear two-hot model: the contrast in closed form --------------------------------------------


def test_linear_two_hot_model_het_is_half_hom(world, tmp_path):
    w = world
    model = LinearConv(BINS, BS, OFF, tracks=2, kernel=9, seed=5).eval()
    weights = save_module(tmp_path, model, "linear", tracks=2, encoding="two-hot", **GEOM)
    varfx.score_vcf(w["cohort"], w["fasta"], "torchscript", [str(weights)], tmp_path / "p.h5",
                    genotypes=w["cohort"], contrast=True, float32=True, stats="SAD")
    varfx.score_vcf(w["cohort"], w["fasta"], "torchscript", [str(weights)], tmp_path / "r.h5", float32=True,
                    stats="SAD")
    with h5py.File(tmp_path / "p.h5") as f, h5py.File(tmp_path / "r.h5") as g:
        hom, geno, dosage, plain = f["SAD"][:], f["genotype/SAD"][:], f["dosage"][:], g["SAD"][:]
    snv = [v for v, (r, i) in enumerate(w["variants"]) if len(w["recs"][r][2]) == len(w["recs"][r][3][i]) == 1]
    assert len(snv) > 30
    for v in snv:
        r, i = w["variants"][v]
        ref, alt = w["recs"][r][2], w["recs"][r][3][i]
        # linear, no bias: f(hom-ALT) − f(hom-REF) = f(2·(e_ALT − e_REF) at the centre)
        x = torch.zeros(1, L, 4)
        x[0, C, "ACGT".index(alt)] += 2
        x[0, C, "ACGT".index(ref)] -= 2
        with torch.no_grad():
            expect = model(x)[0].double().sum(0).numpy()
        assert np.abs(expect).max() > 0
        np.testing.assert_array_equal(plain[v], expect)
        np.testing.assert_array_equal(hom[v], np.broadcast_to(expect, hom[v].shape))  # any background
        het, homalt, homref = dosage[v] == 1, dosage[v] == 2, dosage[v] == 0
        np.testing.assert_array_equal(geno[v][het], np.broadcast_to(expect / 2, geno[v][het].shape))
        np.testing.assert_array_equal(geno[v][homalt], np.broadcast_to(expect, geno[v][homalt].shape))
        np.testing.assert_array_equal(geno[v][homref], 0)
    d = dosage[snv]
    assert (d == 1).sum() > 50 and (d == 2).sum() > 5


# -- 3. no variants in the window: reference scoring ---------------------------------------------------


@pytest.mark.parametrize("mode", ["two-hot", "mean"])
def test_sample_without_background_variants_reproduces_reference_scoring(world, mode):
    w = world
    kind = "two-hot" if mode == "two-hot" else "one-hot"
    out, _, r = run_cohort(w, mode, CHOSEN)
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f, h5py.File(plain_run(w, kind)) as g:
        checked = 0
        for v, (rec, i) in enumerate(w["variants"]):
            chrom, pos = w["recs"][rec][:2]
            for j, s in enumerate(CHOSEN):
                near = [q for q, (c, p, _, _) in enumerate(w["recs"])
                        if q != rec and c == chrom and abs(p - pos) < L + 10 and any(w["calls"][s][q])]
                if near:
                    continue
                checked += 1
                for stat in ("SAD", "logSED"):
                    np.testing.assert_allclose(f[stat][v, j], g[stat][v], rtol=1e-5, atol=1e-6,
                                               err_msg=f"{s} {chrom}:{pos} {stat}")
        assert checked > 2 * len(w["variants"])  # REFONLY and others
        ends = [v for v, (rec, _) in enumerate(w["variants"]) if w["recs"][rec][1] in (4, 697)]
        assert len(ends) == 2  # windows running off chr2's ends are among them (REFONLY)


# -- 4. phase ------------------------------------------------------------------------------------------


@pytest.fixture
def phase_case(world, tmp_path):
    """An unphased het SNV (chr1:500) and unphased het deletion (chr1:512) for sample U; W is U with the
    SNV phased and the deletion absent; X carries the deletion phased; H is unphased hom-ALT."""
    s = world["seqs"]["chr1"]
    recs = [("chr1", 500, s[499], [other(s[499])]), ("chr1", 512, s[511:514], [s[511]]),
            ("chr1", 524, s[523], [other(s[523])])]
    samples = ["P", "U", "W", "X", "H"]
    gts = [["1|0", "0/1", "0|1", "0|0", "1|1"],
           ["0|0", "1/0", "0|0", "0|1", "1/1"],
           ["0|1", "0|0", "0|0", "0|0", "0|1"]]
    cohort = write_cohort(tmp_path / "ph.vcf", recs, samples, gts, contigs={"chr1": 1500, "chr2": 700})
    return cohort, recs


def test_unphased_het_with_one_hot_backend_is_a_one_line_error(world, phase_case, tmp_path):
    cohort, _ = phase_case
    out, tsv = tmp_path / "o.h5", tmp_path / "o.tsv"
    r = run_cli(["score", cohort, "--fasta", world["fasta"], "--backend", "torchscript",
                 "--weights", world["weights"]["one-hot"], "--genotypes", cohort, "--out", out, "--tsv", tsv, "-q"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    msg = lines[0]
    assert msg.startswith("varfx: error: ")
    assert "sample U " in msg and "chr1:500" in msg and "unphased" in msg
    assert "phase the VCF" in msg and "two-hot backend" in msg
    for p in (out, tsv):
        assert not p.exists() and not p.with_name(p.name + ".partial").exists()
    assert not list(tmp_path.glob("o.*"))


def test_phase_error_from_a_worker_process_is_the_same_one_line_error(world, phase_case, tmp_path):
    """With --workers the phase check runs in a worker process: its error reaches the user unchanged."""
    cohort, _ = phase_case
    out = tmp_path / "o.h5"
    r = run_cli(["score", cohort, "--fasta", world["fasta"], "--backend", "torchscript", "--workers", "2",
                 "--weights", world["weights"]["one-hot"], "--genotypes", cohort, "--out", out, "-q"])
    _one_line_error(r, 2, "sample U ", "chr1:500", "unphased", "phase the VCF")
    assert not list(tmp_path.glob("o.*"))


@pytest.mark.parametrize("mode", ["two-hot", "both"])
def test_workers_give_the_same_cohort_scores(world, mode):
    """--workers 2 with two-hot pairs and with both haplotypes kept: the same HDF5 and TSV as one process."""
    want = run_cohort(world, mode)
    got = run_cohort(world, mode, extra=("--workers", "2"))
    assert got[2].exit_code == 0, got[2].output
    with h5py.File(want[0]) as a, h5py.File(got[0]) as b:
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert names and "sample_counts/missing" in names
        for n in names:
            np.testing.assert_array_equal(b[n][()], a[n][()], err_msg=n)
    assert got[1].read_bytes() == want[1].read_bytes()


def test_unphased_calls_with_two_hot_backend(world, phase_case, tmp_path):
    cohort, recs = phase_case
    out = tmp_path / "o.h5"
    r = run_cli(["score", cohort, "--fasta", world["fasta"], "--backend", "torchscript", "--contrast",
                 "--weights", world["weights"]["two-hot"], "--genotypes", cohort, "--out", out, "--float32", "-q"])
    assert r.exit_code == 0, r.output
    assert "unphased_indel: 1 over 1 sample(s) (most: U, 1)" in r.output
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["sample_counts/unphased_indel"][:], [0, 1, 0, 0, 0])
        np.testing.assert_array_equal(f["dosage"][:], [[1, 1, 1, 0, 2], [0, 1, 0, 1, 2], [1, 0, 0, 0, 1]])
        sad, lsed, gsad = f["SAD"][:], f["logSED"][:], f["genotype/SAD"][:]
    U, W, X = 1, 2, 3
    # the unphased het SNV reads as written, the unphased het deletion is left out: U scores like W
    np.testing.assert_allclose(sad[:, U], sad[:, W], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lsed[:, U], lsed[:, W], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gsad[[0, 2]][:, U], gsad[[0, 2]][:, W], rtol=1e-6, atol=1e-7)
    # ... and not like X, which carries the deletion (phased) near both SNVs
    assert np.abs(lsed[0, U] - lsed[0, X]).max() > 1e-4
    assert np.abs(gsad[1, U] - gsad[1, W]).max() > 1e-4  # as the focal site, U's het deletion is used


def test_calls_outside_every_window_are_neither_checked_nor_counted(world, tmp_path):
    """An unphased het (and a missing call) 500 bp from the scored variants, inside the span of genome
    that one cluster of sites covers but in no window: no error, no count."""
    s = world["seqs"]["chr1"]
    recs = [("chr1", 500, s[499], [other(s[499])]), ("chr1", 1000, s[999], [other(s[999])]),
            ("chr1", 1400, s[1399], [other(s[1399])])]
    cohort = write_cohort(tmp_path / "c.vcf", recs, ["A", "B"], [["0|1", "1|1"], ["0/1", "./."], ["1|0", "0|0"]],
                          contigs={"chr1": 1500})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 500, "a", recs[0][2], recs[0][3][0]),
                                         ("chr1", 1400, "b", recs[2][2], recs[2][3][0])])
    out = tmp_path / "o.h5"
    r = run_cli(["score", vcf, "--fasta", world["fasta"], "--backend", "torchscript", "--weights",
                 world["weights"]["one-hot"], "--genotypes", cohort, "--out", out, "-q"])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["sample_counts/missing"][:], [0, 0])
        np.testing.assert_array_equal(f["dosage"][:], [[1, 2], [1, 0]])
    # a variant whose window holds the unphased call is an error
    vcf2 = write_vcf(tmp_path / "v2.vcf", [("chr1", 990, "c", s[989], other(s[989]))])
    r = run_cli(["score", vcf2, "--fasta", world["fasta"], "--backend", "torchscript", "--weights",
                 world["weights"]["one-hot"], "--genotypes", cohort, "--out", out, "-q"])
    _one_line_error(r, 2, "sample A has an unphased heterozygous genotype at chr1:1000")


# -- 5. missing calls, and cohort records whose REF disagrees with the FASTA -----------------------------


def test_missing_calls_read_as_ref_and_are_counted(world, tmp_path):
    s = world["seqs"]["chr1"]
    bad_ref = other(s[809])
    recs = [("chr1", 800, s[799], [other(s[799])]), ("chr1", 806, s[805], [other(s[805])]),
            ("chr1", 810, bad_ref, ["G" if bad_ref != "G" else "T"])]
    #          R      B      M1     M2     M3     M4     Hz     F      Fh     Z
    samples = ["R", "B", "M1", "M2", "M3", "M4", "Hz", "F", "Fh", "Z"]
    gts = [["0|0", "1|1", "./.", ".|.", "0|.", "1|.", "1|0", "0|0", "0|0", "0|0"],
           ["0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "./.", "1|.", "0|0"],
           ["0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "0|0", "1|1"]]
    cohort = write_cohort(tmp_path / "m.vcf", recs, samples, gts, contigs={"chr1": 1500})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 800, "b", recs[0][2], recs[0][3][0]),
                                         ("chr1", 806, "f", recs[1][2], recs[1][3][0])])
    out = tmp_path / "o.h5"
    r = run_cli(["score", vcf, "--fasta", world["fasta"], "--backend", "torchscript", "--contrast",
                 "--weights", world["weights"]["one-hot"], "--genotypes", cohort, "--out", out, "--float32", "-q"])
    assert r.exit_code == 0, r.output
    assert "REF disagrees with the FASTA, left out: 1" in r.output
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["sample_counts/missing"][:], [0, 0, 1, 1, 1, 1, 0, 1, 1, 0])
        np.testing.assert_array_equal(f["sample_counts/haploid"][:], 0)
        assert f.attrs["ref_mismatch_records"] == 1
        np.testing.assert_array_equal(f["dosage"][:], [[0, 2, 0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 0]])
        sad, lsed, gsad = f["SAD"][:], f["logSED"][:], f["genotype/SAD"][:]
    col = {n: i for i, n in enumerate(samples)}
    assert np.abs(sad[1, col["B"]] - sad[1, col["R"]]).max() > 1e-3  # the background variant matters
    for n in ("M1", "M2", "M3", "F", "Fh", "Z"):  # missing alleles (and the REF-mismatch record) read as REF
        rows = [1] if n == "Fh" else [0, 1]  # Fh's 1|. at f is background for b
        np.testing.assert_allclose(sad[rows, col[n]], sad[rows, col["R"]], rtol=1e-6, atol=1e-7, err_msg=n)
        np.testing.assert_allclose(lsed[rows, col[n]], lsed[rows, col["R"]], rtol=1e-6, atol=1e-7, err_msg=n)
    assert np.abs(lsed[0, col["Fh"]] - lsed[0, col["R"]]).max() > 1e-4
    np.testing.assert_allclose(sad[:, col["M4"]], sad[:, col["Hz"]], rtol=1e-6, atol=1e-7)  # 1|. is 1|0
    assert np.all(gsad[1, col["F"]] == 0) and np.abs(gsad[1, col["Fh"]]).max() > 1e-3


def test_haploid_calls_use_the_allele_on_both_copies_and_dot_is_missing_only(world, tmp_path):
    s = world["seqs"]["chr1"]
    recs = [("chr1", 800, s[799], [other(s[799])]), ("chr1", 806, s[805], [other(s[805])])]
    cohort = write_cohort(tmp_path / "m.vcf", recs, ["A", "B", "C"], [["0|0", ".", "0|0"], ["1", "0|1", "1|1"]],
                          contigs={"chr1": 1500})
    varfx.score_vcf(cohort, world["fasta"], "torchscript", [str(world["weights"]["one-hot"])], tmp_path / "o.h5",
                    genotypes=cohort, float32=True)
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_array_equal(f["sample_counts/missing"][:], [0, 1, 0])
        np.testing.assert_array_equal(f["sample_counts/haploid"][:], [1, 0, 0])
        np.testing.assert_array_equal(f["dosage"][:], [[0, 0, 0], [2, 1, 2]])
        sad = f["SAD"][:]
    np.testing.assert_allclose(sad[:, 0], sad[:, 2], rtol=1e-6, atol=1e-7)  # haploid 1 reads as 1|1
    assert np.abs(sad[0, 0] - sad[0, 1]).max() > 1e-4


# -- 6. context: a planted motif -----------------------------------------------------------------------


MOTIF = "GATTACAG"


def motif_score(window: str, threshold: float) -> float:
    """The motif model by hand: relu(matches − threshold) at each start whose output lies in the bins."""
    total = 0.0
    for i in range(OFF, OFF + BINS * BS):
        if i + len(MOTIF) <= len(window):
            m = sum(a == b for a, b in zip(window[i:i + len(MOTIF)], MOTIF))
            total += max(m - threshold, 0.0)
    return total


@pytest.mark.parametrize("mode", ["both", "mean"])
def test_motif_context_background_variant_dampens_focal_effect(tmp_path, mode):
    rng = random.Random(99)
    seq = random_seq(300, rng)
    at = 148  # the motif occupies 148..155 (0-based)
    seq = seq[:at] + MOTIF + seq[at + len(MOTIF):]
    bg, fo = at + 1, at + 4  # a background SNV at motif base 1, the focal SNV at motif base 4
    bg_alt, fo_alt = other(MOTIF[1]), other(MOTIF[4])
    fasta = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    model = MotifConv(MOTIF, BINS, BS, OFF, threshold=6.5)
    weights = save_module(tmp_path, model, "motif", tracks=1, **GEOM)
    samples = ["R1", "R2", "A1", "A2", "H1", "H2"]
    cohort = write_cohort(tmp_path / "c.vcf", [("chr1", bg + 1, seq[bg], [bg_alt])], samples,
                          [["0|0", "0|0", "1|1", "1|1", "0|1", "1|0"]], contigs={"chr1": 300})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", fo + 1, "focal", seq[fo], fo_alt)])
    out = tmp_path / "o.h5"
    r = run_cli(["score", vcf, "--fasta", fasta, "--backend", "torchscript", "--weights", weights,
                 "--genotypes", cohort, "--haplotypes", mode, "--contrast", "--out", out, "--float32", "-q"])
    assert r.exit_code == 0, r.output

    def window(with_bg: bool, focal: str) -> str:
        s = seq[:fo] + focal + seq[fo + 1:]
        if with_bg:
            s = s[:bg] + bg_alt + s[bg + 1:]
        return s[fo - C:fo - C + L]

    # the planted motif is the only one that scores: 1.5 intact, 0.5 with one base broken, 0 with two
    assert motif_score(seq[fo - C:fo - C + L], 6.5) == 1.5
    clean = motif_score(window(False, fo_alt), 6.5) - motif_score(window(False, seq[fo]), 6.5)
    broken = motif_score(window(True, fo_alt), 6.5) - motif_score(window(True, seq[fo]), 6.5)
    assert (clean, broken) == (-1.0, -0.5)
    with h5py.File(out) as f:
        sad = f["SAD"][0, ..., 0]
        np.testing.assert_array_equal(f["dosage"][:], [[0] * 6])
        np.testing.assert_array_equal(f["in_cohort"][:], [0])
        np.testing.assert_array_equal(f["genotype/SAD"][:], 0)  # not in the cohort: dosage 0 for everyone
        lsed = f["logSED"][0, ..., 0]
    if mode == "both":
        np.testing.assert_array_equal(sad, [[clean, clean], [clean, clean], [broken, broken], [broken, broken],
                                            [clean, broken], [broken, clean]])
    else:
        np.testing.assert_array_equal(sad, [clean, clean, broken, broken, (clean + broken) / 2,
                                            (clean + broken) / 2])
        # logSED compares the copies' mean predictions: (1.5 + 0.5) / 2 → (0.5 + 0) / 2 for H1, H2
        want = np.log2([0.5 + 1, 0.5 + 1, 0 + 1, 0 + 1, 0.25 + 1, 0.25 + 1]) - \
            np.log2([1.5 + 1, 1.5 + 1, 0.5 + 1, 0.5 + 1, 1.0 + 1, 1.0 + 1])
        np.testing.assert_allclose(lsed, want, rtol=1e-6)
    assert abs(broken) < abs(clean) and broken != 0


# -- 7. TSV ---------------------------------------------------------------------------------------------


def test_tsv_rows_columns_and_values_match_hdf5(world):
    w = world
    out, tsv, r = run_cohort(w, "both", CHOSEN)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tsv, sep="\t", dtype={"sample": str, "id": str}, keep_default_na=False)
    cols = [f"{s}:t{i}" for s in ("SAD", "logSED") for i in range(T)]
    assert list(table.columns) == ["chrom", "pos", "id", "ref", "alt", "sample", "haplotype", "dosage",
                                   *cols, *(f"genotype.{c}" for c in cols)]
    v_n, s_n = len(w["variants"]), len(CHOSEN)
    assert len(table) == v_n * s_n * 2
    assert table["sample"].tolist() == [s for _ in range(v_n) for s in CHOSEN for _ in range(2)]
    assert table["haplotype"].tolist() == [1, 2] * (v_n * s_n)
    with h5py.File(out) as f:
        for col, ds in (("chrom", "chr"), ("id", "id"), ("ref", "ref_allele"), ("alt", "alt_allele")):
            assert table[col].tolist() == np.repeat(f[ds].asstr()[:], s_n * 2).tolist()
        np.testing.assert_array_equal(table["pos"], np.repeat(f["pos"][:], s_n * 2))
        np.testing.assert_array_equal(table["dosage"], np.repeat(f["dosage"][:].ravel(), 2))
        for pre in ("", "genotype."):
            for stat in ("SAD", "logSED"):
                h5 = f[pre.replace(".", "/") + stat][:].reshape(-1, T)
                got = table[[f"{pre}{stat}:t{i}" for i in range(T)]].to_numpy(np.float64)
                np.testing.assert_allclose(got, h5, rtol=6e-7, atol=1e-37, err_msg=pre + stat)


@pytest.fixture(scope="module")
def skip_vcf(world):
    """Variants: three from the cohort, a REF mismatch, a symbolic ALT, a '*' next to a real ALT."""
    w = world
    s1 = w["seqs"]["chr1"]
    picks = [w["recs"][k] for k in (3, 10, 30)]
    recs = [(c, p, f"{c}_{p}", ref, ",".join(alts)) for c, p, ref, alts in picks]
    recs += [("chr1", 1200, "mismatch", other(s1[1199]), "T" if other(s1[1199]) != "T" else "G"),
             ("chr1", 1230, "sym", s1[1229], "<DEL>"),
             ("chr1", 1260, "star", s1[1259], other(s1[1259]) + ",*")]
    return write_vcf(w["t"] / "skip.vcf", recs, contigs={"chr1": 1500, "chr2": 700}), picks


def test_tsv_without_out_writes_skipped_and_sample_counts_beside_it(world, skip_vcf, tmp_path):
    w = world
    vcf, picks = skip_vcf
    tsv = tmp_path / "p.tsv"
    r = run_cli(["score", vcf, "--fasta", w["fasta"], "--backend", "torchscript", "--weights",
                 w["weights"]["two-hot"], "--genotypes", w["cohort"], "--samples", ",".join(CHOSEN),
                 "--tsv", tsv, "-q"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.samples.tsv", "p.skipped.tsv", "p.tsv"]
    table = pd.read_csv(tsv, sep="\t", dtype={"sample": str})
    n_alts = sum(len(a) for *_, a in picks) + 1  # the star record's real ALT
    assert len(table) == n_alts * len(CHOSEN)
    assert list(table.columns[:7]) == ["chrom", "pos", "id", "ref", "alt", "sample", "dosage"]
    skipped = pd.read_csv(tmp_path / "p.skipped.tsv", sep="\t")
    assert sorted(skipped["reason"]) == ["ref_mismatch", "star_allele", "symbolic_allele"]
    counts = pd.read_csv(tmp_path / "p.samples.tsv", sep="\t", dtype={"sample": str})
    assert list(counts.columns) == ["sample", *COUNTS]
    assert counts["sample"].tolist() == CHOSEN
    # the calls inside the windows of these variants: sites within reach of a scored variant
    scored = [(c, p) for c, p, *_ in picks] + [("chr1", 1260)]
    reach = [q for q, (c, p, _, _) in enumerate(w["recs"]) if any(c == c2 and abs(p - p2) < 2 * L for c2, p2 in scored)]
    missing = [sum("." in w["gts"][q][w["samples"].index(s)] for q in reach) for s in CHOSEN]
    assert sum(missing) > 0
    # records further than one window from any scored variant are never counted; the nearest ones always are
    near = [q for q, (c, p, _, _) in enumerate(w["recs"]) if any(c == c2 and abs(p - p2) <= C for c2, p2 in scored)]
    lower = [sum("." in w["gts"][q][w["samples"].index(s)] for q in near) for s in CHOSEN]
    assert np.all(counts["missing"] >= lower) and np.all(counts["missing"] <= missing)
    for k in ("unphased_indel", "overlap", "symbolic"):
        assert (counts[k] == 0).all()


# -- 8. errors --------------------------------------------------------------------------------------------


def _one_line_error(r, code, *parts):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("varfx: error: "), r.output
    for p in parts:
        assert p in lines[0], lines[0]


def test_polyploid_calls_are_refused_for_chosen_samples(world, tmp_path):
    """A triploid call (cyvcf2 gives 4 columns) was read as two alleles and a phase bit; now it is an error
    for a chosen sample, and ignored (correctly read diploid calls) when that sample is left out."""
    s = world["seqs"]["chr1"]
    recs = [("chr1", 500, s[499], [other(s[499])]), ("chr1", 505, s[504], [other(s[504])])]
    cohort = write_cohort(tmp_path / "tri.vcf", recs, ["A", "T"], [["0|1", "0/1/1"], ["1|1", "0/0/1"]],
                          contigs={"chr1": 1500, "chr2": 700})
    base = ["score", cohort, "--fasta", world["fasta"], "--backend", "torchscript", "--weights",
            world["weights"]["one-hot"], "--genotypes", cohort, "--out", tmp_path / "o.h5", "--float32", "-q"]
    _one_line_error(run_cli(base), 1, "sample T at chr1:500 has a call with 3 alleles", "--samples")
    assert not (tmp_path / "o.h5").exists()
    r = run_cli(base + ["--samples", "A"])
    assert r.exit_code == 0, r.output
    only_a = write_cohort(tmp_path / "a.vcf", recs, ["A"], [["0|1"], ["1|1"]], contigs={"chr1": 1500, "chr2": 700})
    r = run_cli(base[:-5] + [only_a, "--out", tmp_path / "a.h5", "--float32", "-q"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "o.h5") as f, h5py.File(tmp_path / "a.h5") as g:
        assert f["SAD"].shape == g["SAD"].shape and np.array_equal(f["SAD"][()], g["SAD"][()])


def test_short_contig_refused_before_any_variant(world, tmp_path, monkeypatch):
    """As in plain runs: a contig shorter than the window, reached last, is refused before any site is read."""
    seqs = {**world["seqs"], "chrS": random_seq(40, random.Random(5))}  # 40 bp < the 64-bp window
    fasta = write_fasta(tmp_path / "g.fa", seqs)
    s1 = seqs["chr1"]
    recs = [("chr1", p, s1[p - 1], [other(s1[p - 1])]) for p in (200, 400, 600)]
    recs.append(("chrS", 20, seqs["chrS"][19], [other(seqs["chrS"][19])]))
    cohort = write_cohort(tmp_path / "c.vcf", recs, ["A", "B"], [["0|1", "1|1"]] * 4,
                          contigs={"chr1": 1500, "chrS": 40})
    checked = []
    monkeypatch.setattr(personal_run, "check_sites", lambda *a, **k: checked.append(a))
    _one_line_error(run_cli(["score", cohort, "--fasta", fasta, "--backend", "torchscript", "--weights",
                             world["weights"]["one-hot"], "--genotypes", cohort, "--out", tmp_path / "o.h5", "-q"]),
                    2, "contig chrS (40 bp) is shorter than the model's 64-bp window", "--short-contigs skip")
    assert checked == [] and not list(tmp_path.glob("o.h5*"))


def test_option_errors(world, tmp_path):
    w = world
    base = ["score", w["cohort"], "--fasta", w["fasta"], "--backend", "torchscript", "--out", tmp_path / "o.h5"]
    one, two = ["--weights", w["weights"]["one-hot"]], ["--weights", w["weights"]["two-hot"]]
    _one_line_error(run_cli(base + one + ["--samples", "S01"]), 2,
                    "--samples needs --genotypes COHORT.vcf.gz")
    _one_line_error(run_cli(base + one + ["--contrast"]), 2, "--contrast needs --genotypes")
    _one_line_error(run_cli(base + two + ["--genotypes", w["cohort"], "--haplotypes", "mean"]), 2,
                    "--haplotypes is for one-hot backends", "two-hot")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--tsv-long", tmp_path / "l.tsv"]), 2,
                    "with --genotypes, write --out (HDF5) and/or --tsv")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--samples", "S01,NOBODY,S02"]), 2,
                    "--samples: NOBODY is not in cohort.vcf", "S00")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--samples", "S01,S01"]), 2,
                    "--samples names S01 twice")
    _one_line_error(run_cli(base + one + ["--genotypes", tmp_path / "gone.vcf"]), 1,
                    "VCF file not found", "gone.vcf")
    sites_only = write_vcf(tmp_path / "sites.vcf", [("chr1", 100, ".", "A", "C")])
    _one_line_error(run_cli(base + one + ["--genotypes", sites_only]), 1,
                    "has no sample columns", "GT for each sample")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--haplotypes", "some"]), 2,
                    "--haplotypes")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--pseudocount", "-1"]), 2,
                    "--pseudocount must be ≥ 0")  # checked as in plain runs
    empty = tmp_path / "names.txt"
    empty.write_text("# nobody\n")
    _one_line_error(run_cli(base + one + ["--genotypes", w["cohort"], "--samples", empty]), 2,
                    "names no samples")
    empty.unlink()
    (tmp_path / "sites.vcf").unlink()
    assert not list(tmp_path.iterdir())


def test_bcf_cohort_on_the_example_genome(tmp_path):
    """A synthetic cohort on the bundled example genome, written as BCF, scored with the example model:
    dosages from the GT strings, and a sample without variants near a site scores as plain scoring."""
    import pysam
    from conftest import EXAMPLES
    from varfx.genome import Genome
    from varfx.encoding import decode

    g = Genome(EXAMPLES / "genome.fa")
    seqs = {n: decode(g.codes(n)) for n in ("chr1", "chr2")}
    g.close()
    rng = random.Random(11)
    recs = random_records(seqs, 60, rng, contigs=["chr1", "chr2"], margin=600)
    samples = [f"P{i}" for i in range(12)] + ["NONE"]
    gts = random_genotypes(recs, samples[:-1], rng, freq=0.3)
    gts = [row + ["0|0"] for row in gts]
    vcf = write_cohort(tmp_path / "c.vcf", recs, samples, gts, contigs={"chr1": 60000, "chr2": 40000})
    bcf = tmp_path / "c.bcf"
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    model = EXAMPLES / "model.pt"
    personal = tmp_path / "p.h5"
    varfx.score_vcf(vcf, EXAMPLES / "genome.fa", "torchscript", [str(model)], out=personal, genotypes=bcf,
                    float32=True)
    plain = tmp_path / "r.h5"
    varfx.score_vcf(vcf, EXAMPLES / "genome.fa", "torchscript", [str(model)], out=plain, float32=True)
    with h5py.File(personal) as f, h5py.File(plain) as r:
        assert [x.decode() for x in f["samples"][:]] == samples
        assert f["SAD"].shape == (len(r["SAD"]), len(samples), 3)
        want = np.array([[sum(a == alt_i + 1 for a in gt_alleles(gts[rec_i][s])) for s in range(len(samples))]
                         for rec_i, alt_i in zip(f["record"][:], f["alt_index"][:])])
        np.testing.assert_array_equal(f["dosage"][:], want)
        assert want.sum() > 0 and f["in_cohort"][:].all()
        # NONE carries nothing, so its windows hold only the neighbours' alleles: where no cohort record lies
        # within the model's window of a site, its scores are plain scoring's
        pos = f["pos"][:].astype(np.int64).tolist()
        chrom = [c.decode() for c in f["chr"][:]]
        alone = np.array([not any(c2 == c and 0 < abs(p2 - p) < 600 for c2, p2, _, _ in recs)
                          for c, p in zip(chrom, pos)])
        assert alone.sum() >= 3
        np.testing.assert_allclose(f["SAD"][:, -1][alone], r["SAD"][:][alone], rtol=1e-5, atol=1e-6)


# -- 9. unique_rows, dedupe, clusters ---------------------------------------------------------------------


@pytest.mark.parametrize("n,width,values", [(0, 5, 4), (1, 7, 4), (200, 3, 2), (500, 64, 5), (50, 200, 25)])
def test_unique_rows_distinct_and_inverse(n, width, values):
    rng = np.random.default_rng(n + width)
    base = rng.integers(0, values, size=(max(1, n // 4), width), dtype=np.uint8)
    codes = base[rng.integers(0, base.shape[0], size=n)] if n else np.zeros((0, width), np.uint8)
    uniq, inv = unique_rows(codes)
    assert inv.shape == (n,)
    np.testing.assert_array_equal(uniq[inv], codes)
    assert len({row.tobytes() for row in uniq}) == uniq.shape[0]  # no row twice
    assert uniq.shape[0] == len({row.tobytes() for row in codes})  # and none missing (no collision here)


def test_dedupe_and_cluster_size_do_not_change_results(world, tmp_path, monkeypatch):
    w = world
    kw = dict(genotypes=w["cohort"], samples=CHOSEN, haplotypes="both", contrast=True, float32=True,
              stats="SAD,logSED")
    wt = [str(w["weights"]["one-hot"])]
    score_personal(w["cohort"], w["fasta"], "torchscript", wt, tmp_path / "a.h5", **kw)
    score_personal(w["cohort"], w["fasta"], "torchscript", wt, tmp_path / "b.h5", dedupe=False, **kw)
    # every site its own cluster of haplotypes and its own batch
    monkeypatch.setattr(personal_run, "CLUSTER_BYTES", 1)
    monkeypatch.setattr(personal_run, "work_unit", lambda *a: 1)
    score_personal(w["cohort"], w["fasta"], "torchscript", wt, tmp_path / "c.h5", block_records=3, **kw)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "c.h5") as c:
        names = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert "genotype/summary/logSED/sd" in names and "sample_counts/missing" in names
        for n in names:
            # genotype counts are kept per block of records (docs/personal.md): with 3-record blocks a
            # record read by windows of two blocks counts twice, so c's counts are compared below
            for other_file in (b, c) if not n.startswith("sample_counts/") else (b,):
                x, y = a[n][:], other_file[n][:]
                if x.dtype.kind == "f":
                    np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6, err_msg=n)
                else:
                    np.testing.assert_array_equal(y, x, err_msg=n)
        for n in names:
            if n.startswith("sample_counts/"):
                assert np.all(c[n][:] >= a[n][:]), n


def test_indexed_cohort_read_in_small_stretches_gives_the_same_scores(world, tmp_path, monkeypatch):
    pysam = pytest.importorskip("pysam")
    from varfx import personal
    w = world
    gz = str(tmp_path / "cohort.vcf.gz")
    pysam.tabix_compress(str(w["cohort"]), gz)
    pysam.tabix_index(gz, preset="vcf")
    out, _, _ = run_cohort(w, "mean", CHOSEN)
    init = personal.Cohort.__init__
    monkeypatch.setattr(personal.Cohort, "__init__", lambda self, *a, **k: init(self, *a, **{**k, "chunk": 150}))
    varfx.score_vcf(w["cohort"], w["fasta"], "torchscript", [str(w["weights"]["one-hot"])], tmp_path / "i.h5",
                    genotypes=gz, samples=CHOSEN, haplotypes="mean", contrast=True, float32=True,
                    stats="SAD,logSED")
    with h5py.File(out) as a, h5py.File(tmp_path / "i.h5") as b:
        for n in ("SAD", "logSED", "genotype/SAD", "dosage", "sample_counts/missing"):
            np.testing.assert_allclose(b[n][:], a[n][:], rtol=1e-5, atol=1e-6, err_msg=n)


# -- 10. skipped variants ---------------------------------------------------------------------------------


def test_skipped_variants_are_listed_and_accounting_adds_up(world, skip_vcf, tmp_path):
    w = world
    vcf, picks = skip_vcf
    out = tmp_path / "o.h5"
    r = run_cli(["score", vcf, "--fasta", w["fasta"], "--backend", "torchscript", "--weights",
                 w["weights"]["one-hot"], "--genotypes", w["cohort"], "--samples", ",".join(CHOSEN),
                 "--haplotypes", "mean", "--contrast", "--stat", "SAD,logSED", "--out", out, "--float32", "-q"])
    assert r.exit_code == 0, r.output
    alts_in_vcf = sum(len(line.split("\t")[4].split(",")) for line in vcf.read_text().splitlines()
                      if not line.startswith("#"))
    res = varfx.read_scores(out)
    assert len(res.variants) + len(res.skipped) == alts_in_vcf
    assert f"variants (ALT alleles): {alts_in_vcf}" in r.output
    sk = res.skipped.set_index("id")["reason"].to_dict()
    assert sorted(res.skipped["reason"]) == ["ref_mismatch", "star_allele", "symbolic_allele"]
    assert sk["mismatch"] == "ref_mismatch" and sk["sym"] == "symbolic_allele" and sk["star"] == "star_allele"
    with h5py.File(out) as f:
        assert f["SAD"].shape == (len(res.variants), len(CHOSEN), T)
        in_cohort = f["in_cohort"][:]
        sad, lsed = f["SAD"][:], f["logSED"][:]
    assert in_cohort.tolist() == [1] * (len(res.variants) - 1) + [0]  # the star site's ALT is not in the cohort
    # the cohort's own variants score as in the run over the whole cohort file
    full, _, _ = run_cohort(w, "mean", CHOSEN)
    with h5py.File(full) as f:
        key = list(zip(f["id"].asstr()[:], f["alt_allele"].asstr()[:]))
        for k, row in enumerate(res.variants.itertuples()):
            if row.id in ("star",):
                continue
            j = key.index((row.id, row.alt))
            np.testing.assert_allclose(sad[k], f["SAD"][j], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(lsed[k], f["logSED"][j], rtol=1e-5, atol=1e-6)
