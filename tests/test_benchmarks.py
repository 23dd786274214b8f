"""The benchmark scripts still run (on small sizes): a change to varfx that breaks one (as a bound on
--shifts once refused the input benchmark's one-base model) fails here, not when the numbers are next
taken.  Speed and memory targets are checked by running the scripts in full (docs/performance.md), not
here."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, args, row", [
    ("input_bench.py", ["--quick"], r"\| VCF -> batches, 1,000-bp windows \| 20,525 \|"),
    ("personal_bench.py", ["--quick"], r"\| haplotypes 196 kb \| Haplotypes\.windows \|"),
    ("score_bench.py", ["--sizes", "200"], r"\| 200 \| [\d.]+ \| [\d.]+ \| [\d,]+ \|"),
    ("memory_bench.py", ["--sizes", "500,1000", "--tracks", "20"], r"largest vs smallest peak RSS: [+-][\d.]+%"),
])
def test_benchmark_runs(script, args, row):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(row, r.stdout), r.stdout[-3000:]
