"""End-to-end `varfx score` throughput, time outside the model, and peak memory.

    python benchmarks/score_bench.py [--sizes 1000,100000] [--model examples/model.pt]

Each size runs in a fresh process (so that peak RSS is its own) on random SNVs of
the example genome with the example model on the CPU. "model" is the time spent
inside the backend's forward pass; "outside" is everything else (VCF parsing,
REF checks, windows, encoding, statistics, writing), as a share of wall time.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_vcf(fasta: Path, n: int, path: Path, seed: int = 0) -> None:
    """n random SNVs (REF from the genome), sorted, with unique IDs."""
    from varfx.genome import Genome
    from varfx.encoding import decode

    g = Genome(fasta)
    rng = random.Random(seed)
    names = [c for c in g.names if g.length(c) > 2000]
    weights = [g.length(c) for c in names]
    seqs = {c: decode(g.codes(c)) for c in names}
    sites = []
    for _ in range(n):
        c = rng.choices(names, weights)[0]
        p = rng.randrange(1, g.length(c) + 1)
        ref = seqs[c][p - 1]
        if ref == "N":
            ref = "N"
        alt = rng.choice([b for b in "ACGT" if b != ref])
        sites.append((names.index(c), p, ref, alt))
    sites.sort()
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        for c in names:
            fh.write(f"##contig=<ID={c},length={g.length(c)}>\n")
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, (ci, p, ref, alt) in enumerate(sites):
            fh.write(f"{names[ci]}\t{p}\tb{i}\t{ref}\t{alt}\t.\t.\t.\n")


def run_one(vcf: Path, fasta: Path, model: Path, out: Path, batch: int) -> dict:
    """Score in this process; time the forward passes; report peak RSS."""
    import varfx
    from varfx.backends import load_backend

    backend = load_backend("torchscript", [str(model)])
    spent = [0.0]
    forward = backend.forward

    def timed(x):
        t = time.perf_counter()
        y = forward(x)
        spent[0] += time.perf_counter() - t
        return y

    backend.forward = timed
    t0 = time.perf_counter()
    s = varfx.score_vcf(vcf, fasta, backend, out=out, batch_size=batch, device="cpu")
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"variants": s.variants, "scored": s.scored, "wall_s": wall, "model_s": spent[0],
            "variants_per_s": s.scored / wall, "outside_share": 1 - spent[0] / wall, "peak_rss_mib": rss}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--model", default=str(ROOT / "examples" / "model.pt"))
    ap.add_argument("--fasta", default=str(ROOT / "examples" / "genome.fa"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--one", nargs=2, metavar=("VCF", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(Path(a.one[0]), Path(a.fasta), Path(a.model), Path(a.one[1]), a.batch_size)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in a.sizes.split(",")]:
            vcf = Path(tmp) / f"b{n}.vcf"
            make_vcf(Path(a.fasta), n, vcf)
            cmd = [sys.executable, __file__, "--one", str(vcf), str(Path(tmp) / f"b{n}.h5"), "--model", a.model,
                   "--fasta", a.fasta, "--batch-size", str(a.batch_size)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(res)
            print(f"done {n}", file=sys.stderr)
    print(f"machine: {os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}, "
          f"batch size {a.batch_size}")
    print("| variants | wall s | model s | variants/s | outside the model | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variants']:,} | {r['wall_s']:.2f} | {r['model_s']:.2f} | {r['variants_per_s']:,.0f} | "
              f"{100 * r['outside_share']:.1f}% | {r['peak_rss_mib']:.0f} |")
    if len(rows) >= 2:
        print(f"peak RSS of the largest run vs the smallest: {100 * (rows[-1]['peak_rss_mib'] / rows[0]['peak_rss_mib'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
