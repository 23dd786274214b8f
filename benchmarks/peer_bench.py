"""varfx side by side with a peer: the same SNVs, the same model, the same CPU threads.

    python benchmarks/peer_bench.py [--venv /tmp/varfx-peer-venv] [--variants 1000,5000,20000]
        [--big-variants 400] [--repeats 3] [--threads 1] [--peers grelu,tangermeme] [--profile]

(docs/performance.md, "Side by side with a peer", records a run with --threads 1: on a
shared 2-core machine two OpenMP threads per process make timings swing many-fold.)

The peers live in their own virtual environment (``--venv``), created on first use:
``torch==2.13.0`` first (the CPU wheel, so that nothing pulls CUDA packages), then
``grelu==1.1.0``, which brings ``tangermeme`` with it.

* **gReLU** (``grelu.variant.predict_variant_effects``): the TorchScript model is
  wrapped as gReLU documents for external PyTorch models (``LightningModel`` with
  ``model_type="BaseModel"``, an embedding that takes gReLU's (N, 4, L) input and a
  head with ``n_tasks`` that returns (N, tracks, bins)); ``compare_func="subtract"``,
  ``return_ad=False`` gives ALT - REF per bin, summed here over the bins varfx sums.
  gReLU reads the FASTA itself (pyfaidx, through its ``CustomGenome``); it has no
  VCF reader, so the VCF is read with pandas, as its tutorial reads its variant table.
  gReLU puts an SNV at index L/2 - 1 of an even-length window, varfx at L/2, so the
  scores are compared with ``varfx score --shifts 1`` (the same windows as gReLU's);
  both varfx timings are shown. gReLU's predict_on_dataset sets float32 matmul
  precision "medium" (bfloat16 matmuls on CPUs that have them), so models with
  matmuls are also run with that held at "highest" ("grelu fp32 matmul").
* **tangermeme** (``tangermeme.variant_effect.substitution_effect``), with its own
  ``read_vcf`` and ``extract_loci`` (a 1-bp locus at the variant centres the window on
  it exactly as varfx does): compared with plain ``varfx score``.

Models: the bundled example (examples/model.pt, 1,024 bp, 16 bins x 3 tracks) and a
small Enformer-shaped model built here with a fixed seed (8,192 bp, conv stem and a
tower of 6 conv stages halving the length to 64 bins of 128 bp, 2 transformer layers,
crop 16 bins on each side, 32 bins x 8 tracks), saved as TorchScript with its varfx
JSON spec. Variants: random SNVs at distinct positions of the example genome whose
windows lie inside the contig (gReLU refuses others) and contain only A, C, G, T, N;
the VCF has one sample column (tangermeme's read_vcf needs nine columns).

Every run is its own process, started in the work folder (Lightning writes
lightning_logs/ into the working directory) and timed from process start to output
written (varfx: HDF5 via the ``varfx`` command; peers: a .npy of the scores), the tools
interleaved in each repetition; the table gives the median wall time. All runs get the
same environment (OMP_NUM_THREADS = MKL_NUM_THREADS = --threads) and batch size. The
FASTA is indexed (.fai, and the .sizes file gReLU needs) before timing. ``--profile``
runs varfx once more under cProfile and prints where its time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRELU_VERSION = "1.1.0"
TORCH_VERSION = "2.13.0"

# ---------------------------------------------------------------------------------------------
# the peers' environment


def ensure_venv(venv: Path, grelu_version: str, log) -> dict:
    """Create the peers' venv if it does not import grelu and tangermeme; return versions and notes."""
    py = venv / "bin" / "python"
    probe = ("import importlib.metadata as m, torch, grelu.variant, grelu.lightning, tangermeme.variant_effect; "
             "import json; print(json.dumps({k: m.version(k) for k in "
             "['torch', 'grelu', 'tangermeme', 'pytorch-lightning', 'pyfaidx', 'pandas', 'numpy']}))")
    notes = []
    if py.exists():
        r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
        if r.returncode == 0:
            return {"versions": json.loads(r.stdout.splitlines()[-1]), "notes": ["reused existing venv"]}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # torch first, pinned: an unpinned torch requirement would pull the CUDA build
    subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True, stdout=log, stderr=log)
    r = subprocess.run(pip + [f"grelu=={grelu_version}"], stdout=log, stderr=log)
    if r.returncode != 0:
        # gReLU pins nothing heavy today; if that changes, keep our torch and add its deps by hand
        notes.append(f"pip install grelu=={grelu_version} failed (see the log); retrying with --no-deps plus "
                     "its dependencies except torch")
        subprocess.run(pip + ["--no-deps", f"grelu=={grelu_version}"], check=True, stdout=log, stderr=log)
        subprocess.run(pip + ["pytorch-lightning", "torchmetrics", "tangermeme", "anndata", "pyfaidx", "pandas",
                              "einops", "genomepy", "bioframe", "captum==0.5.0", "wandb", "pyBigWig",
                              "scikit-learn", "seaborn", "matplotlib", "plotnine", "modisco-lite", "biopython",
                              "enformer-pytorch", "logomaker", "ledidi", "memelite", "pygenomeviz<=0.4.4",
                              "statsmodels", "pyjaspar", "huggingface_hub", "importlib-resources"],
                       check=True, stdout=log, stderr=log)
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"the peers' venv {venv} does not import grelu and tangermeme:\n{r.stderr[-2000:]}")
    notes.append(f"installed in {time.perf_counter() - t0:.0f} s")
    return {"versions": json.loads(r.stdout.splitlines()[-1]), "notes": notes}


# ---------------------------------------------------------------------------------------------
# the models

def build_enformer_shaped(path: Path, seed: int = 0) -> Path:
    """A small Enformer-shaped model with fixed random weights, saved as TorchScript + varfx spec."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class ConvBlock(nn.Module):          # Enformer's BatchNorm -> GELU -> Conv
        def __init__(self, cin: int, cout: int, k: int):
            super().__init__()
            self.bn = nn.BatchNorm1d(cin)
            self.conv = nn.Conv1d(cin, cout, k, padding=k // 2)

        def forward(self, x):
            return self.conv(F.gelu(self.bn(x)))

    class TowerStage(nn.Module):         # conv, residual pointwise conv, pool by 2
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.conv = ConvBlock(cin, cout, 5)
            self.res = ConvBlock(cout, cout, 1)
            self.pool = nn.MaxPool1d(2)

        def forward(self, x):
            x = self.conv(x)
            return self.pool(x + self.res(x))

    class TransformerLayer(nn.Module):
        def __init__(self, d: int, heads: int, ff: int):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d)
            self.ff1 = nn.Linear(d, ff)
            self.ff2 = nn.Linear(ff, d)

        def forward(self, x):
            h = self.ln1(x)
            a, _ = self.attn(h, h, h, need_weights=False)
            x = x + a
            return x + self.ff2(F.relu(self.ff1(self.ln2(x))))

    class EnformerShaped(nn.Module):
        """(B, 8192, 4) -> 64 positions of 128 bp -> 2 transformer layers -> crop 16+16 -> (B, 32, 8)."""

        def __init__(self, tracks: int = 8, width: int = 96, crop: int = 16):
            super().__init__()
            chans = [48, 56, 64, 72, 80, 88, width]
            self.stem = nn.Conv1d(4, chans[0], 15, padding=7)
            self.stem_res = ConvBlock(chans[0], chans[0], 1)
            self.tower = nn.Sequential(*[TowerStage(a, b) for a, b in zip(chans[:-1], chans[1:])])
            self.pos = nn.Parameter(torch.randn(1, 64, width) * 0.1)
            self.layers = nn.Sequential(TransformerLayer(width, 4, 2 * width), TransformerLayer(width, 4, 2 * width))
            self.crop = crop
            self.final = nn.Linear(width, 2 * width)
            self.head = nn.Linear(2 * width, tracks)

        def forward(self, x):
            x = self.stem(x.transpose(1, 2))
            x = F.max_pool1d(x + self.stem_res(x), 2)        # 4,096 positions
            x = self.tower(x)                                 # 64 positions of 128 bp
            x = self.layers(x.transpose(1, 2) + self.pos)
            x = x[:, self.crop:x.shape[1] - self.crop]        # 32 bins
            return F.softplus(self.head(F.gelu(self.final(x))))

    torch.manual_seed(seed)
    m = EnformerShaped().eval()
    with torch.no_grad():
        # He-normal weights at gain 0.8: with PyTorch's default initialisation an SNV moves the
        # summed output by ~2e-6 of itself, below float32 noise; this gives a few per cent
        for name, p in m.named_parameters():
            if p.dim() >= 2 and name != "pos":
                p.normal_(0.0, 0.8 * (2.0 / p[0].numel()) ** 0.5)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(m), str(path))
    spec = {"input_length": 8192, "encoding": "one-hot", "input_layout": "NLC", "output_bins": 32,
            "bin_size": 128, "bin_offset": 16 * 128,
            "tracks": [{"id": f"t{i}", "description": f"random track {i}"} for i in range(8)]}
    path.with_suffix(".json").write_text(json.dumps(spec, indent=1))
    return path


def selected_bins(spec: dict, margin: int = 128, ref_len: int = 1) -> list[int]:
    """The REF bins varfx's default --bins variant:128 sums for an SNV (docs/scores.md)."""
    L, off, bs, n = spec["input_length"], spec.get("bin_offset", 0), spec["bin_size"], spec["output_bins"]
    c = L // 2
    lo, hi = c - margin, c + ref_len + margin          # [lo, hi) in window coordinates
    return [j for j in range(n) if off + j * bs < hi and off + (j + 1) * bs > lo]


# ---------------------------------------------------------------------------------------------
# the variants

def make_vcf(fasta: Path, n: int, length: int, path: Path, seed: int = 0) -> None:
    """n random SNVs at distinct positions whose windows (both conventions, +-1 bp) lie inside the contig
    and hold only A, C, G, T, N; REF from the genome, not N."""
    from pyfaidx import Fasta

    fa = Fasta(str(fasta), sequence_always_upper=True)
    names = [c for c in fa.keys() if len(fa[c]) >= length + 4]
    seqs = {c: str(fa[c][:]) for c in names}
    fa.close()
    rng = random.Random(seed)
    weights = [len(seqs[c]) - length for c in names]
    half = length // 2
    sites, tries = set(), 0
    while len(sites) < n:
        tries += 1
        if tries > 50 * n + 10000:
            raise SystemExit(f"could not place {n} SNVs with {length}-bp windows in {fasta}")
        c = rng.choices(names, weights)[0]
        p = rng.randrange(half + 2, len(seqs[c]) - half - 1)         # 1-based POS
        s = seqs[c][p - 2 - half: p + half + 1]
        if seqs[c][p - 1] == "N" or set(s) - set("ACGTN"):
            continue
        sites.add((names.index(c), p))
    with open(path, "w") as fh:
        fh.write("##fileformat=VCFv4.2\n")
        for c in names:
            fh.write(f"##contig=<ID={c},length={len(seqs[c])}>\n")
        # one sample column: tangermeme's read_vcf insists on nine columns (it fails on a sites-only VCF)
        fh.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n")
        for i, (ci, p) in enumerate(sorted(sites)):
            ref = seqs[names[ci]][p - 1]
            alt = rng.choice([b for b in "ACGT" if b != ref])
            fh.write(f"{names[ci]}\t{p}\ts{i}\t{ref}\t{alt}\t.\t.\t.\tGT\t0/1\n")


# ---------------------------------------------------------------------------------------------
# the peers' drivers (run with the peers' venv python; argv[1] is a JSON config)

GRELU_DRIVER = r'''
import json, sys, time
t0 = time.perf_counter()
cfg = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(cfg["threads"])
import numpy as np, pandas as pd
from torch import nn
import grelu.variant
from grelu.lightning import LightningModel
if cfg.get("fp32_matmul"):
    # gReLU's predict_on_dataset calls torch.set_float32_matmul_precision("medium"), which lets
    # CPUs with AMX/AVX512-BF16 run float32 matmuls in bfloat16; keep "highest" instead
    torch.set_float32_matmul_precision("highest")
    torch.set_float32_matmul_precision = lambda precision: None
t_import = time.perf_counter()

# gReLU has no VCF reader: read the VCF as its tutorial reads its variant table, with pandas
variants = pd.read_table(cfg["vcf"], comment="#", header=None, usecols=[0, 1, 2, 3, 4],
                         names=["chrom", "pos", "id", "ref", "alt"], dtype={"chrom": str})
net = torch.jit.load(cfg["model"])

class Embedding(nn.Module):            # gReLU input (N, 4, L) -> the model's layout
    def __init__(self, net, nlc):
        super().__init__()
        self.net, self.nlc = net, nlc
    def forward(self, x):
        return self.net(x.transpose(1, 2) if self.nlc else x)

class Head(nn.Module):                 # the model's (N, bins, tracks) -> gReLU's (N, tracks, bins)
    def __init__(self, n_tasks):
        super().__init__()
        self.n_tasks = n_tasks
    def forward(self, y):
        return y.transpose(1, 2)

lm = LightningModel(model_params={"model_type": "BaseModel", "embedding": Embedding(net, cfg["nlc"]),
                                  "head": Head(len(cfg["tracks"]))},
                    train_params={"task": "regression", "loss": "mse"})   # identity activation
lm.data_params["tasks"] = {"name": cfg["tracks"]}
eff = grelu.variant.predict_variant_effects(
    variants, lm, devices="cpu", seq_len=cfg["input_length"], batch_size=cfg["batch"],
    num_workers=cfg["workers"], genome=cfg["fasta"], compare_func="subtract", return_ad=False)   # (N, T, bins)
sad = eff[:, :, cfg["bins"]].sum(-1).astype(np.float32)
np.save(cfg["out"], sad)
print(json.dumps({"import_s": t_import - t0, "total_s": time.perf_counter() - t0, "shape": list(eff.shape),
                  "matmul_precision": torch.get_float32_matmul_precision()}))
'''

TANGERMEME_DRIVER = r'''
import json, sys, time
t0 = time.perf_counter()
cfg = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(cfg["threads"])
import numpy as np, pandas as pd
from torch import nn
from tangermeme.io import read_vcf, extract_loci
from tangermeme.variant_effect import substitution_effect
t_import = time.perf_counter()

vcf = read_vcf(cfg["vcf"])
L = cfg["input_length"]
# a 1-bp locus at the variant: extract_loci centres the window on its middle, [mid - L//2, mid + L//2)
loci = pd.DataFrame({"chrom": vcf.CHROM, "start": vcf.POS - 1, "end": vcf.POS})
X = extract_loci(loci, cfg["fasta"], in_window=L, n_jobs=cfg["threads"])
assert X.shape[0] == len(vcf), (X.shape, len(vcf))
subs = torch.tensor([[i, L // 2, "ACGT".index(a)] for i, a in enumerate(vcf.ALT)])
net = torch.jit.load(cfg["model"])

class Model(nn.Module):               # tangermeme input (N, 4, L) -> the model's layout
    def __init__(self, net, nlc):
        super().__init__()
        self.net, self.nlc = net, nlc
    def forward(self, x):
        return self.net(x.transpose(1, 2) if self.nlc else x)

before, after = substitution_effect(Model(net, cfg["nlc"]).eval(), X, subs, batch_size=cfg["batch"],
                                    device="cpu")                      # (N, bins, T) each
sad = (after - before)[:, cfg["bins"], :].sum(1).numpy().astype(np.float32)
np.save(cfg["out"], sad)
print(json.dumps({"import_s": t_import - t0, "total_s": time.perf_counter() - t0, "shape": list(after.shape)}))
'''


# ---------------------------------------------------------------------------------------------
# running and timing

def timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run cmd in the log's folder (Lightning writes lightning_logs/ into the working directory) to
    completion; wall seconds, CPU seconds of it and its children, load average before."""
    load = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        r = subprocess.run(cmd, env=env, stdout=fh, stderr=fh, cwd=log.parent)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n--- last lines of {log}:\n"
                         + "".join(open(log).readlines()[-30:]))
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    res = {"wall": wall, "cpu": cpu, "load": load}
    with open(log) as fh:                      # a peer driver's last line: its own import and total times
        tail = fh.readlines()[-3:]
    for line in tail:
        if line.startswith('{"import_s"'):
            res.update(json.loads(line))
    return res


def varfx_cmd(vcf, fasta, model, out, batch, extra=()) -> list[str]:
    exe = Path(sys.executable).parent / "varfx"
    head = [str(exe)] if exe.exists() else [sys.executable, "-c", "from varfx.cli import main; main()"]
    return head + ["score", str(vcf), "--fasta", str(fasta), "--backend", "torchscript", "--weights", str(model),
                   "--out", str(out), "--stat", "SAD", "--float32", "--batch-size", str(batch), "--device", "cpu",
                   "-q", *extra]


def read_varfx(path: Path) -> np.ndarray:
    import varfx
    s = varfx.read_scores(path)
    return np.asarray(s.stats["SAD"], dtype=np.float64)


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    d = np.abs(a - b)
    scale = max(np.abs(a).max(), 1e-30)
    return {"max_abs": float(d.max()), "max_rel": float(d.max() / scale), "max_score": float(scale)}


def profile_varfx(vcf, fasta, model, batch, env, work: Path, top: int = 12) -> None:
    """One more varfx run (the `varfx` command) under cProfile: where the time goes."""
    import pstats

    prof = work / "varfx.prof"
    exe = Path(sys.executable).parent / "varfx"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), str(exe)] + \
        varfx_cmd(vcf, fasta, model, work / "profile.h5", batch)[1:]
    r = timed(cmd, env, work / "profile.log")
    st = pstats.Stats(str(prof))

    def cum(file_end, name):
        return max((v[3] for k, v in st.stats.items() if k[0].endswith(file_end) and k[2] == name), default=0.0)

    total = max(v[3] for v in st.stats.values())
    fwd = cum("varfx/backends/torchscript.py", "forward")
    run = cum("varfx/run.py", "score_vcf")
    imp = cum("varfx/run.py", "<module>")
    print(f"\nvarfx under cProfile ({vcf.name}; wall {r['wall']:.2f} s with interpreter start-up and "
          f"profiling overhead; profiled {total:.2f} s):")
    print(f"  model forward passes            {fwd:6.2f} s  {100 * fwd / total:5.1f}%")
    print(f"  rest of score_vcf               {run - fwd:6.2f} s  {100 * (run - fwd) / total:5.1f}%")
    print(f"  before score_vcf (imports, CLI) {total - run:6.2f} s  {100 * (total - run) / total:5.1f}%"
          f"  (importing varfx.run and torch: {imp:.2f} s)")
    print(f"  top {top} by own time:")
    for (f, line, name), v in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        print(f"    {v[2]:7.2f} s  {v[1]:8d} calls  {Path(f).name}:{line}({name})")


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", default="/tmp/varfx-peer-venv", help="the peers' virtual environment (made if needed)")
    ap.add_argument("--grelu-version", default=GRELU_VERSION)
    ap.add_argument("--peers", default="grelu,tangermeme")
    ap.add_argument("--variants", default="5000", help="SNVs for the example model (a comma list: one run each)")
    ap.add_argument("--big-variants", default="400", help="SNVs for the Enformer-shaped model (0: skip it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (REF + ALT), all tools")
    ap.add_argument("--workers", type=int, default=1, help="gReLU DataLoader workers (its default is 1)")
    ap.add_argument("--fasta", default=str(ROOT / "examples" / "genome.fa"))
    ap.add_argument("--workdir", help="keep inputs, outputs and logs here (default: a temporary folder)")
    ap.add_argument("--profile", action="store_true", help="profile one more varfx run with cProfile")
    a = ap.parse_args()
    peers = [p for p in a.peers.split(",") if p]

    work = (Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="peer_bench_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    print(f"work folder: {work}", file=sys.stderr)
    with open(work / "install.log", "a") as ilog:
        env_info = ensure_venv(Path(a.venv), a.grelu_version, ilog)
    peer_py = str(Path(a.venv) / "bin" / "python")

    # the same indexed FASTA for every tool (gReLU's CustomGenome needs FASTA.fai and FASTA.sizes)
    fasta = work / "genome.fa"
    shutil.copyfile(a.fasta, fasta)
    from pyfaidx import Fasta
    Fasta(str(fasta)).close()
    with open(str(fasta) + ".fai") as fi, open(str(fasta) + ".sizes", "w") as fo:
        for line in fi:
            fo.write("\t".join(line.split("\t")[:2]) + "\n")

    (work / "grelu_driver.py").write_text(GRELU_DRIVER)
    (work / "tangermeme_driver.py").write_text(TANGERMEME_DRIVER)

    sizes = lambda text: [int(x) for x in str(text).split(",") if x.strip() and int(x) > 0]  # noqa: E731
    models = [("example", ROOT / "examples" / "model.pt", n) for n in sizes(a.variants)]
    if sizes(a.big_variants):
        big = build_enformer_shaped(work / "enformer_shaped.pt")
        models += [("Enformer-shaped", big, n) for n in sizes(a.big_variants)]

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), PYTHONWARNINGS="ignore")
    import torch
    torch.set_num_threads(a.threads)

    results = []
    for label, model, n in models:
        spec = json.loads(model.with_suffix(".json").read_text())
        bins = selected_bins(spec)
        tag = f"{model.stem}_{n}"
        vcf = work / f"{tag}.vcf"
        make_vcf(fasta, n, spec["input_length"], vcf)
        tracks = [t["id"] if isinstance(t, dict) else t for t in spec["tracks"]]
        base_cfg = {"vcf": str(vcf), "fasta": str(fasta), "model": str(model), "input_length": spec["input_length"],
                    "nlc": spec.get("input_layout", "NLC") == "NLC", "tracks": tracks, "bins": bins,
                    "threads": a.threads, "batch": a.batch_size, "workers": a.workers}
        runs = {"varfx": (varfx_cmd(vcf, fasta, model, work / f"{tag}_varfx.h5", a.batch_size), None)}
        if "grelu" in peers:
            runs["varfx --shifts 1"] = (varfx_cmd(vcf, fasta, model, work / f"{tag}_varfx_s1.h5", a.batch_size,
                                                  ["--shifts", "1"]), None)
            # gReLU runs float32 matmuls in bfloat16 on CPUs that have it (see GRELU_DRIVER); the example
            # model has no matmuls, the Enformer-shaped one also runs with that switched off
            variants_ = [("grelu", False)] + ([("grelu fp32 matmul", True)] if label != "example" else [])
            for key, fp32 in variants_:
                cfg = dict(base_cfg, out=str(work / f"{tag}_{key.replace(' ', '_')}.npy"), fp32_matmul=fp32)
                p = work / f"{tag}_{key.replace(' ', '_')}.json"
                p.write_text(json.dumps(cfg))
                runs[key] = ([peer_py, str(work / "grelu_driver.py"), str(p)], cfg["out"])
        if "tangermeme" in peers:
            cfg = dict(base_cfg, out=str(work / f"{tag}_tangermeme.npy"))
            p = work / f"{tag}_tangermeme.json"
            p.write_text(json.dumps(cfg))
            runs["tangermeme"] = ([peer_py, str(work / "tangermeme_driver.py"), str(p)], cfg["out"])

        times = {k: [] for k in runs}
        for rep in range(a.repeats):
            for k, (cmd, _) in runs.items():
                times[k].append(timed(cmd, env, log))
                print(f"{label} rep {rep + 1}: {k} {times[k][-1]['wall']:.2f} s "
                      f"(load {times[k][-1]['load']:.2f})", file=sys.stderr)

        scores = {"varfx": read_varfx(work / f"{tag}_varfx.h5")}
        if "varfx --shifts 1" in runs:
            scores["varfx --shifts 1"] = read_varfx(work / f"{tag}_varfx_s1.h5")
        for k, (_, out) in runs.items():
            if out is not None:
                scores[k] = np.load(out)
        med = {k: statistics.median(t["wall"] for t in v) for k, v in times.items()}
        cpu = {k: statistics.median(t["cpu"] for t in v) for k, v in times.items()}
        for k in runs:
            if k.startswith("varfx"):
                continue
            ref = "varfx" if k == "tangermeme" else "varfx --shifts 1"
            c = compare(scores[ref], scores[k])
            c_default = compare(scores["varfx"], scores[k])
            results.append({"model": label, "variants": n, "peer": k, "varfx": med["varfx"],
                            "varfx_peer_window": med.get(ref) if ref != "varfx" else None,
                            "peer_s": med[k], "ratio": med[k] / med["varfx"], "cmp": c, "cmp_default": c_default,
                            "cpu_varfx": cpu["varfx"], "cpu_peer": cpu[k], "compared_with": ref,
                            "peer_import_s": statistics.median(t.get("import_s", float("nan")) for t in times[k]),
                            "walls": {kk: [round(t["wall"], 2) for t in times[kk]] for kk in (k, "varfx", ref)},
                            "loads": [round(t["load"], 2) for kk in (k, "varfx") for t in times[kk]]})

    # ---- report
    if not results:
        raise SystemExit("no peer was run (--peers grelu,tangermeme)")
    print(f"\nmachine: {os.cpu_count()} CPU cores, load average now {os.getloadavg()[0]:.2f}; threads {a.threads}, "
          f"batch {a.batch_size} sequences; median of {a.repeats} runs; Python {sys.version.split()[0]}")
    print("peers' venv: " + ", ".join(f"{k} {v}" for k, v in env_info["versions"].items())
          + ("; " + "; ".join(env_info["notes"]) if env_info["notes"] else ""))
    print("\n| model | SNVs | varfx s | varfx on the peer's windows s | peer | peer s | peer / varfx "
          "| max abs diff | max diff / max abs score |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        vw = f"{r['varfx_peer_window']:.2f}" if r["varfx_peer_window"] is not None else "(same)"
        print(f"| {r['model']} | {r['variants']:,} | {r['varfx']:.2f} | {vw} | {r['peer']} | {r['peer_s']:.2f} | "
              f"{r['ratio']:.2f} | {r['cmp']['max_abs']:.2e} | {r['cmp']['max_rel']:.2e} |")
    print("\nCPU seconds (user + sys, children included), medians; the peer's own import time (wall):")
    print("| model | SNVs | peer | varfx CPU s | peer CPU s | peer / varfx | peer's imports s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['variants']:,} | {r['peer']} | {r['cpu_varfx']:.2f} | {r['cpu_peer']:.2f} | "
              f"{r['cpu_peer'] / r['cpu_varfx']:.2f} | {r['peer_import_s']:.2f} |")
    print("\nagreement: each peer against varfx on the same windows (gReLU: varfx --shifts 1; tangermeme: varfx);"
          " against plain varfx:")
    for r in results:
        print(f"  {r['model']}, {r['variants']:,} SNVs, {r['peer']}: max abs diff to plain varfx "
              f"{r['cmp_default']['max_abs']:.2e} ({r['cmp_default']['max_rel']:.2e} of the largest |score| "
              f"{r['cmp_default']['max_score']:.3g})")
    print("\nall wall times (s) and load averages before each run:")
    for r in results:
        print(f"  {r['model']}, {r['variants']:,} SNVs, {r['peer']}: {r['walls']}; loads {r['loads']}")
    with_fp32_row = {r["model"] for r in results if r["peer"] == "grelu fp32 matmul"}
    fp32 = [r for r in results if not (r["peer"] == "grelu" and r["model"] in with_fp32_row)]
    ok = all(r["cmp"]["max_rel"] <= 1e-4 for r in fp32)
    print(f"\nscores agree to 1e-4 of the largest |score| (float32 runs): {'yes' if ok else 'NO'}")
    for r in results:
        if r not in fp32:
            print(f"  {r['model']}, gReLU as shipped (its predict_on_dataset sets float32 matmul precision 'medium',"
                  f" i.e. bfloat16 matmuls on CPUs with AMX/AVX512-BF16): {r['cmp']['max_rel']:.2e}")
    target = [r for r in results if not r["peer"].endswith("fp32 matmul")]
    print("varfx >= 5x faster end to end than every peer: "
          + ("yes" if all(r["ratio"] >= 5 for r in target) else "NO")
          + f" (peer / varfx from {min(r['ratio'] for r in target):.2f} to {max(r['ratio'] for r in target):.2f})")
    with open(work / "results.json", "w") as fh:
        json.dump({"results": results, "env": env_info, "args": vars(a)}, fh, indent=1)

    if a.profile:
        label, model, n = max(models[:len(sizes(a.variants))] or models, key=lambda m: m[2])
        profile_varfx(work / f"{model.stem}_{n}.vcf", fasta, model, a.batch_size, env, work)


if __name__ == "__main__":
    main()
