"""Peak memory of `varfx score` for 10,000 and 200,000 variants with 5,313 tracks written.

    python benchmarks/memory_bench.py [--sizes 10000,200000] [--tracks 5313] [--tsv]

Each size runs `varfx score` in a fresh process on random SNVs of a random 4-Mbp genome, with a
TorchScript model that maps a 1-kb window to one bin of 5,313 tracks (Enformer's human head width;
a linear map of the window's base composition, so that the model costs little and the run is
dominated by windows, statistics and writing), statistics SAD and logSED, HDF5 float16 output.
Prints wall time, output size and the child's peak RSS (``ru_maxrss``); the target is the larger
run's peak within 10% of the smaller run's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wide_model(folder: Path, tracks: int) -> Path:
    import torch

    class Wide(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w = torch.nn.Parameter(torch.rand(4, tracks, generator=g), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 450:550].mean(1, keepdim=True) @ self.w  # (B, 1, tracks)

    path = folder / "wide.pt"
    torch.jit.save(torch.jit.script(Wide()), str(path))
    spec = {"input_length": 1000, "encoding": "one-hot", "input_layout": "NLC", "output_bins": 1,
            "bin_size": 100, "bin_offset": 450,
            "tracks": [{"id": f"t{i}", "description": f"track {i}"} for i in range(tracks)]}
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path


def child(args) -> None:
    import varfx

    t0 = time.perf_counter()
    s = varfx.score_vcf(args.vcf, args.fasta, "torchscript", [args.model], out=args.out,
                        tsv=args.out + ".tsv" if args.tsv else None, device="cpu", batch_size=128, quiet=True)
    wall = time.perf_counter() - t0
    size = sum(os.path.getsize(p) for p in s.outputs)
    print(json.dumps({"scored": s.scored, "wall_s": wall, "bytes": size,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,200000")
    ap.add_argument("--tracks", type=int, default=5313)
    ap.add_argument("--tsv", action="store_true", help="also write the wide TSV")
    ap.add_argument("--child", nargs=5, metavar=("VCF", "FASTA", "MODEL", "OUT", "TSV"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        ns = argparse.Namespace(vcf=a.child[0], fasta=a.child[1], model=a.child[2], out=a.child[3],
                                tsv=a.child[4] == "1")
        child(ns)
        return
    from input_bench import make_genome, make_vcf

    sizes = [int(x) for x in a.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        t = Path(tmp)
        fasta = make_genome(t, sizes=(2_000_000, 2_000_000))
        model = wide_model(t, a.tracks)
        for n in sizes:
            vcf = t / f"v{n}.vcf"
            make_vcf(fasta, n, vcf)
            out = t / f"o{n}.h5"
            r = subprocess.run([sys.executable, __file__, "--child", str(vcf), str(fasta), str(model), str(out),
                                "1" if a.tsv else "0"], capture_output=True, text=True, cwd=ROOT)
            if r.returncode:
                sys.exit(r.stderr)
            res = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((n, res))
            for p in t.glob(f"o{n}.h5*"):
                p.unlink()
    print(f"{a.tracks:,} tracks, SAD and logSED, HDF5 float16{' + wide TSV' if a.tsv else ''}; "
          f"{os.cpu_count()} CPU cores\n")
    print("| variants scored | wall s | output | peak RSS MiB |")
    print("|---:|---:|---:|---:|")
    for n, r in rows:
        print(f"| {r['scored']:,} | {r['wall_s']:.1f} | {r['bytes'] / 2**30:.2f} GiB | {r['peak_rss_mib']:.0f} |")
    if len(rows) > 1:
        first, last = rows[0][1]["peak_rss_mib"], rows[-1][1]["peak_rss_mib"]
        print(f"\nlargest vs smallest peak RSS: {100 * (last / first - 1):+.1f}% (target: within +10%)")


if __name__ == "__main__":
    main()
