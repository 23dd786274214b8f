"""The input path: VCF -> windows ready for the model, without a model, and `varfx score` with a trivial one.

    python benchmarks/input_bench.py [--variants 200000] [--long-variants 20000] [--quick]

Builds a random genome (two 8-Mbp contigs) and a sorted VCF of random variants (90% SNVs, 5%
deletions, 5% insertions, 3% of records with two ALTs), then, in this one process:

* ``VCF -> batches``: ``varfx.run._prepare`` (the producer of ``varfx score``: VCF parsing, REF
  checks, work units, REF/ALT windows as uint8 codes, bin alignment), consumed without a model,
  for 1,000-bp windows and for Enformer's 196,608-bp windows;
* the same on the VCF shuffled (unsorted input: every work unit touches both contigs);
* ``score, trivial model``: ``varfx score`` end to end (HDF5 written) with a TorchScript model that
  only reads its input's centre base, 1,000-bp windows.

Prints variants/s (ALT alleles per second; wall time and CPU time of this process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_genome(folder: Path, sizes=(8_000_000, 8_000_000), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / "genome.fa"
    with open(path, "wb") as fh:
        for i, n in enumerate(sizes):
            fh.write(f">chr{i + 1}\n".encode())
            seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)]
            lines = seq[: n - n % 60].reshape(-1, 60)
            fh.write(b"\n".join(bytes(r) for r in lines) + b"\n")
            if n % 60:
                fh.write(bytes(seq[n - n % 60:]) + b"\n")
    return path


def make_vcf(fasta: Path, n: int, path: Path, seed: int = 1, shuffle: bool = False) -> None:
    from varfx.genome import Genome
    from varfx.encoding import decode

    g = Genome(fasta)
    rng = random.Random(seed)
    rows = []
    for ci, name in enumerate(g.names):
        seq = decode(g.codes(name))
        m = n // len(g.names) + (1 if ci < n % len(g.names) else 0)
        for p in sorted(rng.sample(range(200_000, len(seq) - 200_000), m)):
            ref = seq[p - 1]
            u = rng.random()
            if u < 0.05:
                k = rng.randint(1, 6)
                ref, alts = seq[p - 1:p + k], [seq[p - 1]]
            elif u < 0.10:
                alts = [ref + "".join(rng.choice("ACGT") for _ in range(rng.randint(1, 6)))]
            else:
                others = [b for b in "ACGT" if b != ref]
                alts = rng.sample(others, 2 if rng.random() < 0.03 else 1)
            rows.append(f"{name}\t{p}\tv{len(rows)}\t{ref}\t{','.join(alts)}\t.\t.\t.\n")
    if shuffle:
        rng.shuffle(rows)
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        for name in g.names:
            fh.write(f"##contig=<ID={name},length={g.length(name)}>\n")
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        fh.writelines(rows)
    g.close()


def trivial_model(folder: Path) -> Path:
    import torch

    class Centre(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 500:501, 0:1] + 1.0  # (B, 1 bin, 1 track): is the centre base an A

    path = folder / "trivial.pt"
    torch.jit.save(torch.jit.script(Centre()), str(path))
    spec = {"input_length": 1000, "encoding": "one-hot", "input_layout": "NLC", "output_bins": 1,
            "bin_size": 1, "bin_offset": 500, "tracks": [{"id": "A", "description": "centre base is A"}]}
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path


def prepare_rate(vcf: Path, fasta: Path, length: int, batch: int = 64) -> dict:
    from varfx.genome import Genome
    from varfx.run import _prepare, fewer_collections, work_unit
    from varfx.variants import VariantReader
    from varfx.windows import BinSelection, Geometry

    genome = Genome(fasta)
    geom = Geometry(length, 896 if length > 100_000 else 16, 128 if length > 100_000 else 32,
                    (length - (896 * 128 if length > 100_000 else 512)) // 2)
    reader = VariantReader(vcf, genome.resolve)
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with fewer_collections():
        for b in _prepare(reader, genome, geom, BinSelection("variant"), 0, 1, work_unit(batch, length), "skip",
                          "error"):
            if b.windows is not None:
                n += b.windows.alt.shape[0]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reader.close()
    genome.close()
    return {"variants": n, "wall_s": wall, "cpu_s": cpu}


def score_rate(vcf: Path, fasta: Path, model: Path, out: Path) -> dict:
    import varfx

    t0, c0 = time.perf_counter(), time.process_time()
    s = varfx.score_vcf(vcf, fasta, "torchscript", [str(model)], out=out, device="cpu", batch_size=256)
    return {"variants": s.scored, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", type=int, default=200_000, help="variants for 1-kb windows")
    ap.add_argument("--long-variants", type=int, default=20_000, help="variants for 196,608-bp windows")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.variants, a.long_variants = 20_000, 2_000
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        fasta = make_genome(t)
        vcf, long_vcf, shuf = t / "v.vcf", t / "long.vcf", t / "shuffled.vcf"
        make_vcf(fasta, a.variants, vcf)
        make_vcf(fasta, a.long_variants, long_vcf)
        make_vcf(fasta, a.variants, shuf, shuffle=True)
        model = trivial_model(t)
        rows = [("VCF -> batches, 1,000-bp windows", prepare_rate(vcf, fasta, 1000), "≥ 300,000"),
                ("VCF -> batches, 196,608-bp windows", prepare_rate(long_vcf, fasta, 196_608), "≥ 3,000"),
                ("VCF -> batches, 1,000-bp, unsorted VCF", prepare_rate(shuf, fasta, 1000), ""),
                ("score, trivial model, 1,000-bp", score_rate(vcf, fasta, model, t / "o.h5"), "")]
    print(f"CPU: {os.cpu_count()} cores; torch threads default\n")
    print("| path | variants | wall s | variants/s (wall) | variants/s (CPU) | target |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r, target in rows:
        print(f"| {name} | {r['variants']:,} | {r['wall_s']:.2f} | {r['variants'] / r['wall_s']:,.0f} | "
              f"{r['variants'] / r['cpu_s']:,.0f} | {target} |")


if __name__ == "__main__":
    main()
