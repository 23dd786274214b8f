"""GPU runs give the CPU's results (skipped where no CUDA device is present)."""

import numpy as np
import pytest
import torch

import varfx

from test_score import case  # noqa: F401  (fixture)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("bf16", 0.15)])
def test_cuda_matches_cpu(case, precision, atol):  # noqa: F811
    t = case["tmp"]
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "cpu.h5",
                    device="cpu", float32=True, rc=True, bins="all")
    varfx.score_vcf(case["vcf"], case["fasta"], "torchscript", [str(case["weights"])], t / "gpu.h5",
                    device="cuda", precision=precision, float32=True, rc=True, bins="all")
    a, b = varfx.read_scores(t / "cpu.h5"), varfx.read_scores(t / "gpu.h5")
    np.testing.assert_allclose(a.stats["SAD"], b.stats["SAD"], atol=atol)
    assert b.settings["device"].startswith("cuda")
