"""Personal-genome sequence building: sample-windows built per second and peak memory, no model.

    python benchmarks/personal_bench.py [--samples 100] [--variants 10000] [--quick] [--profile]

Builds a synthetic genome (random bases, one contig) and a phased cohort VCF (bgzipped, tabix
index): cohort sites every ~300 bp (uniform 200-400 bp gaps), allele frequency uniform in
0.05-0.55 (mean 0.3, so each haplotype carries about 1 variant per 1,000 bp), 12% indels
(1-5 bp insertions and deletions).  The focal variants are every third cohort site (~900 bp
apart) of the contig's middle, as a sites-only VCF; runs with fewer variants take the first N.

Then, for each case and each N (1,000 and --variants), in a fresh process, it runs the path of
``varfx score --genotypes`` without a model: focal VCF -> cohort genotype blocks -> haplotypes ->
windows (``varfx.personal_run._prepare_personal`` with a ``PersonalSetup``, as ``score_personal``
calls it, consumed in one thread) and counts what comes out:

* ``two-hot 1 kb`` (CLIPNET geometry, 1,000 bp): one *sample-window* is one diploid two-hot pair-
  code window of one sample, REF or ALT, i.e. 2 per (variant, sample) (rows of batch.ref + batch.alt).
* ``haplotypes 196 kb`` (Enformer geometry, 196,608 bp, ``--haplotypes mean``): one *haplotype
  window* is one copy's 196,608-bp sequence, REF or ALT, i.e. 4 per (variant, sample): (variant,
  sample, copy) × {REF, ALT} (rows of batch.ref + batch.alt).

Time is split by timing the pieces in place (wrappers around the functions, varfx unchanged):
``Cohort.block`` (reading genotypes with cyvcf2 and the genotype rules), ``Haplotypes.build``,
``Haplotypes.windows`` (cutting; of which ``coord`` for the bulk-cut pairs and ``_piecewise`` for the
pairs built piece by piece, including their own ``coord`` calls),
``PersonalSetup.combine`` (pair codes), and the rest (reading focal sites, REF checks, ``_focal``,
``span_margin``, count bookkeeping; ``Cohort.block`` calls made by ``Cohort.count``/``reach_back``
are in ``Cohort.block``).  Peak RSS is the child's ``ru_maxrss``; "base" is its
RSS after the imports and opening the inputs, before the first window.  ``--profile`` adds a
cProfile run per case (top functions by own time).  Prints Markdown tables.

The full run takes about 9 minutes on a 2-core machine, most of it the 196-kb case with 10,000
variants (4 million 196,608-bp windows); ``--cases "two-hot 1 kb"`` runs one case, ``--quick`` all
of it in seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTIG = "chr1"
FLANK = 120_000  # bp kept free of focal variants at each contig end (> half a 196,608-bp window)
GAP = (200, 400)  # bp between cohort sites
FOCAL_EVERY = 3  # every third cohort site is a focal variant
INDEL_RATE = 0.12
AF = (0.05, 0.55)

CASES = {
    # name: (input_length, output_bins, bin_size, bin_offset, two_hot, target per s, unit)
    "two-hot 1 kb": (1000, 500, 1, 250, True, 200_000, "sample-windows"),
    "haplotypes 196 kb": (196_608, 896, 128, 40_960, False, 2_000, "haplotype windows"),
}


# -- synthetic data ------------------------------------------------------------------------------
def make_data(tmp: Path, n_variants: int, n_samples: int, seed: int = 0) -> dict:
    """FASTA + .fai, cohort.vcf.gz + .tbi and the sites of the focal variants; vectorised."""
    import pysam

    rng = np.random.default_rng(seed)
    mean_gap = (GAP[0] + GAP[1]) / 2
    length = int(2 * FLANK + n_variants * FOCAL_EVERY * mean_gap * 1.05) + 10_000
    seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, length)]
    fasta = tmp / "genome.fa"
    width = 60
    full = length // width * width
    with open(fasta, "wb") as fh:
        fh.write(f">{CONTIG}\n".encode())
        lines = np.concatenate([seq[:full].reshape(-1, width), np.full((full // width, 1), 10, np.uint8)], 1)
        fh.write(lines.tobytes())
        if full < length:
            fh.write(seq[full:].tobytes() + b"\n")
    pysam.faidx(str(fasta))

    # cohort sites: 0-based positions, 1-5 bp indels, the rest SNVs
    gaps = rng.integers(GAP[0], GAP[1] + 1, int(length / GAP[0]) + 10)
    pos0 = 1000 + np.cumsum(gaps)
    pos0 = pos0[pos0 < length - 1000]
    r_n = pos0.size
    kind = rng.random(r_n)
    klen = rng.integers(1, 6, r_n)
    text = seq.tobytes().decode()
    other = np.frombuffer(b"ACGT", np.uint8)
    refs, alts = [], []
    for i, p in enumerate(pos0.tolist()):
        base = text[p]
        if kind[i] < INDEL_RATE / 2:  # deletion
            refs.append(text[p:p + klen[i] + 1])
            alts.append(base)
        elif kind[i] < INDEL_RATE:  # insertion
            refs.append(base)
            alts.append(base + other[rng.integers(0, 4, klen[i])].tobytes().decode())
        else:
            refs.append(base)
            alts.append("ACGT"[("ACGT".index(base) + int(rng.integers(1, 4))) % 4])

    # phased genotypes, written as bytes: "a|b\t" per sample, the last tab a newline
    af = rng.uniform(AF[0], AF[1], r_n)
    hap = (rng.random((r_n, n_samples, 2)) < af[:, None, None]).astype(np.uint8)
    gt = np.empty((r_n, n_samples, 4), np.uint8)
    gt[..., 0] = 48 + hap[..., 0]
    gt[..., 1] = ord("|")
    gt[..., 2] = 48 + hap[..., 1]
    gt[..., 3] = 9
    gt[:, -1, 3] = 10
    gt = gt.reshape(r_n, -1)
    samples = [f"S{i:04d}" for i in range(n_samples)]
    head = ("##fileformat=VCFv4.2\n"
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
            f"##contig=<ID={CONTIG},length={length}>\n"
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n")
    ids = [f"v{i}" for i in range(r_n)]
    cohort = tmp / "cohort.vcf"
    with open(cohort, "wb") as fh:
        fh.write(head.encode())
        for i, p in enumerate(pos0.tolist()):
            fh.write(f"{CONTIG}\t{p + 1}\t{ids[i]}\t{refs[i]}\t{alts[i]}\t.\tPASS\t.\tGT\t".encode())
            fh.write(gt[i].tobytes())
    cohort_gz = pysam.tabix_index(str(cohort), preset="vcf", force=True)  # bgzips, then indexes

    middle = np.flatnonzero((pos0 >= FLANK) & (pos0 < length - FLANK))[::FOCAL_EVERY]
    if middle.size < n_variants:
        raise SystemExit(f"internal: only {middle.size} focal sites fit in {length:,} bp")
    focal = [(int(pos0[i]) + 1, ids[i], refs[i], alts[i]) for i in middle[:n_variants]]
    per_hap = hap.sum() / (2 * n_samples) / length * 1000
    return {"fasta": fasta, "cohort": Path(cohort_gz), "focal": focal, "length": length, "records": r_n,
            "per_hap_per_kb": float(per_hap), "indel_share": float((kind < INDEL_RATE).mean()),
            "contig_length": length}


def write_focal(path: Path, focal: list, length: int) -> Path:
    with open(path, "w") as fh:
        fh.write(f"##fileformat=VCFv4.2\n##contig=<ID={CONTIG},length={length}>\n"
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        fh.write("".join(f"{CONTIG}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for p, i, r, a in focal))
    return path


def code_hash() -> str:
    """sha256 (12 hex digits) of varfx/personal.py + varfx/personal_run.py: which code was measured."""
    import hashlib

    h = hashlib.sha256()
    for name in ("personal.py", "personal_run.py"):
        h.update((ROOT / "varfx" / name).read_bytes())
    return h.hexdigest()[:12]


# -- one case in this process --------------------------------------------------------------------
SPENT: dict[str, float] = {}  # seconds per timed piece
CALLS: dict[str, int] = {}
_INSIDE: list[str] = []  # names of the timed calls in progress


def _timed(name, fn, not_inside: str | None = None):
    """``fn`` timed under ``name``; calls made inside ``not_inside`` are not counted (they are part of it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not_inside is not None and not_inside in _INSIDE:
            return fn(*args, **kwargs)
        _INSIDE.append(name)
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - t
            CALLS[name] = CALLS.get(name, 0) + 1
            _INSIDE.pop()
    return wrapper


def _instrument():
    from varfx import personal, personal_run

    personal.Cohort.block = _timed("Cohort.block", personal.Cohort.block)
    personal.Haplotypes.build = classmethod(_timed("Haplotypes.build", personal.Haplotypes.build.__func__))
    personal.Haplotypes.windows = _timed("Haplotypes.windows", personal.Haplotypes.windows)
    personal.Haplotypes.coord = _timed("windows: coord", personal.Haplotypes.coord, not_inside="windows: _piecewise")
    personal.Haplotypes._piecewise = _timed("windows: _piecewise", personal.Haplotypes._piecewise)
    personal_run.PersonalSetup.combine = _timed("PersonalSetup.combine", personal_run.PersonalSetup.combine)


def run_one(case: str, focal_vcf: Path, fasta: Path, cohort_vcf: Path, batch_size: int, contrast: bool,
            profile: bool, instrument: bool = True) -> dict:
    from varfx.genome import Genome
    from varfx.personal import Cohort
    from varfx.personal_run import PersonalSetup, _prepare_personal
    from varfx.run import work_unit
    from varfx.variants import VariantReader
    from varfx.windows import BinSelection, Geometry

    length, bins, bin_size, offset, two_hot, _, _ = CASES[case]
    if instrument and not profile:
        _instrument()
    geom = Geometry(length, bins, bin_size, offset)
    genome = Genome(fasta)
    cohort = Cohort(cohort_vcf, genome, None, two_hot=two_hot)
    setup = PersonalSetup(cohort, two_hot, None if two_hot else "mean", contrast)
    reader = VariantReader(focal_vcf, genome.resolve)
    per_site = setup.copies * len(cohort.samples)
    unit = max(work_unit(batch_size, geom.input_length), per_site * 3)  # as score_personal
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = {"sites": 0, "alts": 0, "ref_rows": 0, "alt_rows": 0, "batches": 0}
    width = None

    def consume():
        nonlocal width
        for batch in _prepare_personal(reader, genome, cohort, setup, geom, BinSelection("variant"), 0, 1, unit,
                                       "skip", "error", all_bins=False):
            counts["batches"] += 1
            counts["sites"] += len(batch.sites)
            counts["alts"] += sum(len(s.alts) for s in batch.sites)
            if batch.ref is not None:
                counts["ref_rows"] += batch.ref.shape[0]
                counts["alt_rows"] += batch.alt.shape[0]
                width = batch.ref.shape[1]

    t0 = time.perf_counter()
    prof_text = None
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.runcall(consume)
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(22)
        st.sort_stats("cumulative").print_stats(22)
        prof_text = buf.getvalue()
    else:
        consume()
    wall = time.perf_counter() - t0
    for part in (reader, cohort, genome):
        part.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    windows = counts["ref_rows"] + counts["alt_rows"]
    if width != geom.input_length:
        raise SystemExit(f"internal: windows of {width} bp, expected {geom.input_length}")
    return {"case": case, **counts, "samples": len(cohort.samples), "windows": windows, "wall_s": wall,
            "per_s": windows / wall, "base_rss_mib": base_rss, "peak_rss_mib": peak, "spent": dict(SPENT),
            "calls": dict(CALLS), "profile": prof_text,
            "code": code_hash()}


# -- driver --------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--variants", type=int, default=10_000, help="focal variants of the large run")
    ap.add_argument("--small", type=int, default=1_000, help="focal variants of the small run (memory check)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of: " + ", ".join(CASES))
    ap.add_argument("--batch-size", type=int, default=64, help="as --batch-size (sizes the work units)")
    ap.add_argument("--contrast", action="store_true", help="also build the genotype windows (--contrast)")
    ap.add_argument("--profile", action="store_true", help="add a cProfile run per case (--profile-variants)")
    ap.add_argument("--profile-variants", type=int, default=None,
                    help="focal variants of the cProfile runs (default: --small)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 samples, 500 and 100 variants")
    ap.add_argument("--keep", metavar="DIR", help="write the data here and keep it (default: a temp dir)")
    ap.add_argument("--one", nargs=4, metavar=("CASE", "FOCAL", "FASTA", "COHORT"), help=argparse.SUPPRESS)
    ap.add_argument("--one-profile", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        res = run_one(a.one[0], Path(a.one[1]), Path(a.one[2]), Path(a.one[3]), a.batch_size, a.contrast,
                      a.one_profile)
        print(json.dumps(res))
        return
    if a.quick:
        a.samples, a.variants, a.small = 10, 500, 100
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            ap.error(f"--cases: {c!r} is not one of {', '.join(CASES)}")
    sizes = sorted({min(a.small, a.variants), a.variants})

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(a.keep) if a.keep else Path(tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        data = make_data(tmp, a.variants, a.samples)
        gen_s = time.perf_counter() - t
        print(f"data: {data['contig_length']:,}-bp contig, {data['records']:,} cohort records × {a.samples} samples "
              f"({100 * data['indel_share']:.0f}% indels), {data['per_hap_per_kb']:.2f} ALT alleles per kb per "
              f"haplotype; written in {gen_s:.1f} s", file=sys.stderr)
        focal = {n: write_focal(tmp / f"focal{n}.vcf", data["focal"][:n], data["length"]) for n in sizes}

        def child(case, n, profile=False):
            cmd = [sys.executable, __file__, "--one", case, str(focal[n]), str(data["fasta"]), str(data["cohort"]),
                   "--batch-size", str(a.batch_size)] + (["--contrast"] if a.contrast else []) + \
                  (["--one-profile"] if profile else [])
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                sys.stderr.write(p.stderr)
                raise SystemExit(f"{case} with {n} variants failed (exit {p.returncode})")
            return json.loads(p.stdout.splitlines()[-1])

        rows, profiles = [], []
        for case in cases:
            for n in sizes:
                t = time.perf_counter()
                rows.append(child(case, n))
                print(f"done {case}, {n} variants ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
        if a.profile:
            pn = a.profile_variants or min(a.small, a.variants)
            if pn not in focal:
                focal[pn] = write_focal(tmp / f"focal{pn}.vcf", data["focal"][:pn], data["length"])
            for case in cases:
                profiles.append((case, pn, child(case, pn, profile=True)))
                print(f"done cProfile {case}, {pn} variants", file=sys.stderr)

    codes = sorted({r["code"] for r in rows + [p[2] for p in profiles]})
    print(f"code: varfx/personal.py + personal_run.py sha256 {', '.join(codes)}"
          + (" — CHANGED during the run: the rows measured different code" if len(codes) > 1 else ""))
    print(f"machine: {os.cpu_count()} CPU cores; {a.samples} samples; cohort: {data['records']:,} phased records "
          f"on {data['contig_length']:,} bp ({data['per_hap_per_kb']:.2f} ALT alleles per kb per haplotype, "
          f"{100 * data['indel_share']:.0f}% indels); focal variants ~{FOCAL_EVERY * sum(GAP) // 2} bp apart"
          f"{'; with --contrast' if a.contrast else ''}")
    print("one sample-window (two-hot) = one sample's diploid pair-code window, REF or ALT: 2 per (variant, sample);")
    print("one haplotype window (196 kb) = one copy's 196,608-bp sequence, REF or ALT: 4 per (variant, sample);")
    print("REF+ALT pairs/s = (variant, sample)/s for two-hot, (variant, sample, copy)/s for 196 kb"
          + (" (REF, ALT and genotype windows: --contrast)" if a.contrast else ""))
    print()
    print("| case | focal variants | windows built | wall s | windows/s | target/s | REF+ALT pairs/s "
          "| base RSS MiB | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        unit, target = CASES[r["case"]][6], CASES[r["case"]][5]
        vs = r["per_s"] / (3 if a.contrast else 2)  # (variant, sample[, copy]) per s
        ok = "met" if r["per_s"] >= target else "missed"
        print(f"| {r['case']} | {r['alts']:,} | {r['windows']:,} {unit} | {r['wall_s']:.1f} | {r['per_s']:,.0f} | "
              f"{target:,} ({ok}) | {vs:,.0f} | {r['base_rss_mib']:.0f} | {r['peak_rss_mib']:.0f} |")
    for case in cases:
        rs = [r for r in rows if r["case"] == case]
        if len(rs) >= 2:
            small, large = rs[0], rs[-1]
            d = large["peak_rss_mib"] - small["peak_rss_mib"]
            print(f"\n{case}: peak RSS with {large['alts']:,} variants vs {small['alts']:,}: {d:+.0f} MiB "
                  f"({100 * d / small['peak_rss_mib']:+.1f}%); above base: "
                  f"{small['peak_rss_mib'] - small['base_rss_mib']:.0f} -> "
                  f"{large['peak_rss_mib'] - large['base_rss_mib']:.0f} MiB")
    print()
    print("time by piece (largest run of each case; 'windows: coord' (bulk pairs) and 'windows: _piecewise' "
          "(pairs built piece by piece, with their own coord calls) are parts of Haplotypes.windows):")
    print()
    print("| case | piece | calls | s | share of wall |")
    print("|---|---|---:|---:|---:|")
    for case in cases:
        r = [r for r in rows if r["case"] == case][-1]
        spent, calls = r["spent"], r["calls"]
        top = ["Cohort.block", "Haplotypes.build", "Haplotypes.windows", "PersonalSetup.combine"]
        for k in top + ["windows: coord", "windows: _piecewise"]:
            s = spent.get(k, 0.0)
            print(f"| {case} | {k} | {calls.get(k, 0):,} | {s:.2f} | {100 * s / r['wall_s']:.1f}% |")
        rest = r["wall_s"] - sum(spent.get(k, 0.0) for k in top)
        print(f"| {case} | rest (focal VCF, REF checks, _focal, span_margin, count bookkeeping) | | {rest:.2f} | "
              f"{100 * rest / r['wall_s']:.1f}% |")
    for case, n, r in profiles:
        print(f"\ncProfile, {case}, {r['alts']:,} variants ({r['wall_s']:.1f} s under the profiler):\n")
        print(r["profile"])


if __name__ == "__main__":
    main()
