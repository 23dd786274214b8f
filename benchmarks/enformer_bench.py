"""Enformer speed, side by side with enformer-pytorch, on the same machine in one run.

    python benchmarks/enformer_bench.py [--device cpu] [--repeats 2] [--batch 1] [--variants 8]

Prints (Markdown):
1. seconds per 196,608-bp sequence for varfx and enformer-pytorch (same random weights), fp32
   and bf16 autocast;
2. the cost of varfx's incremental ALT pass for an SNV relative to a full forward;
3. scored SNVs/s end to end (`varfx score` on random SNVs of a synthetic 600-kb genome, REF+ALT,
   no reverse complement, at --precision), with and without the incremental pass
   (and with --compile: varfx's model compiled by torch.compile, in (1) and (3)).
enformer-pytorch is needed for (1) only (pip install enformer-pytorch==0.8.12).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from varfx.backends import load_backend  # noqa: E402
from varfx.backends.enformer_model import SEQUENCE_LENGTH, patch_tower  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, caches)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def random_weights(folder: Path):
    """A standard-size enformer-pytorch model with random weights, saved as a bare state dict."""
    import enformer_pytorch
    model = enformer_pytorch.Enformer.from_hparams(use_tf_gamma=True).eval()
    torch.save(model.state_dict(), folder / "enformer.pt")
    return model


def write_genome(folder: Path, n_variants: int, seed=0):
    rng = random.Random(seed)
    seq = "".join(rng.choice("ACGT") for _ in range(600_000))
    with open(folder / "g.fa", "w") as fh:
        fh.write(">chr1\n")
        for i in range(0, len(seq), 60):
            fh.write(seq[i:i + 60] + "\n")
    pos = sorted(rng.sample(range(100_000, 500_000), n_variants))
    with open(folder / "v.vcf", "w") as fh:
        fh.write("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=600000>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, p in enumerate(pos):
            ref = seq[p - 1]
            fh.write(f"chr1\t{p}\ts{i}\t{ref}\t{'ACGT'[('ACGT'.index(ref) + 1) % 4]}\t.\t.\t.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--skip-port", action="store_true", help="do not time enformer-pytorch")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="for the end-to-end part")
    ap.add_argument("--compile", action="store_true",
                    help="also time varfx with --compile (torch.compile; the first call of each shape compiles "
                         "and is left out of the timings, as the warm-up)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {a.batch}")
    tmp = Path(tempfile.mkdtemp())
    port = random_weights(tmp)
    ours = load_backend("enformer", [str(tmp / "enformer.pt")]).to(dev)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (a.batch, SEQUENCE_LENGTH)), 4).float().to(dev)
    rows = []
    with torch.inference_mode():
        for precision in ("fp32", "bf16"):
            with autocast(dev, precision):
                t_ours = timed(lambda: ours.predict(x), a.repeats) / a.batch
                t_port = None
                if not a.skip_port:
                    port.to(dev)
                    t_port = timed(lambda: port(x, head="human"), a.repeats) / a.batch
                    port.cpu()
            rows.append((precision, t_ours, t_port))
            if a.compile:
                comp = load_backend("enformer", [str(tmp / "enformer.pt")], compile=True).to(dev)
                with autocast(dev, precision):
                    rows.append((f"{precision}, --compile", timed(lambda: comp.predict(x), a.repeats) / a.batch,
                                 t_port))
        print("\n| precision | varfx s/sequence | enformer-pytorch s/sequence | varfx / port |")
        print("|---|---:|---:|---:|")
        for p, t1, t2 in rows:
            ratio = f"{t1 / t2:.2f}" if t2 else "—"
            print(f"| {p} | {t1:.2f} | {t2:.2f} | {ratio} |" if t2 else f"| {p} | {t1:.2f} | — | — |")

        # incremental ALT pass vs full forward (fp32)
        m = ours.model
        c = SEQUENCE_LENGTH // 2
        alt = x.clone()
        alt[:, c] = alt[:, c].roll(1, dims=-1)
        tower = m.conv_tower(x)
        lo = torch.full((a.batch,), c, device=dev)
        full = timed(lambda: ours.predict(alt), a.repeats)

        def inc():
            t = patch_tower(m, tower, alt, lo, lo + 1)
            return m.head(m.trunk_from_tower(t), "human")

        t_inc = timed(inc, a.repeats)
        t_tower = timed(lambda: m.conv_tower(x), a.repeats)
        print(f"\nincremental ALT pass: {t_inc / a.batch:.2f} s/sequence = {100 * t_inc / full:.0f}% of a full forward "
              f"({full / a.batch:.2f} s); the conv tower alone is {100 * t_tower / full:.0f}%")

    # end to end
    import varfx
    write_genome(tmp, a.variants)
    print(f"\nend to end at {a.precision}:\n\n| mode | SNVs | seconds | SNVs/s |\n|---|---:|---:|---:|")
    modes = [("full ALT forward", False, False), ("incremental ALT pass", True, False)]
    if a.compile:
        modes.append(("incremental ALT pass, --compile", True, True))
    for label, inc_flag, comp_flag in modes:
        b = load_backend("enformer", [str(tmp / "enformer.pt")], incremental=inc_flag, compile=comp_flag)
        t = time.perf_counter()
        s = varfx.score_vcf(tmp / "v.vcf", tmp / "g.fa", b, out=tmp / f"s{inc_flag}.h5", device=a.device,
                            batch_size=max(2, a.batch * 2), float32=True, precision=a.precision)
        dt = time.perf_counter() - t
        print(f"| {label} | {s.scored} | {dt:.1f} | {s.scored / dt:.3f} |")


if __name__ == "__main__":
    main()
