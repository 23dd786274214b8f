"""Laws that must hold whatever the input."""

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import varfx

from conftest import write_fasta, write_vcf
from toy_models import save_toy

bases = st.text(alphabet="ACGT", min_size=1, max_size=3)


def _score(tmp, name, seq, pos, ref, alt, weights, bins):
    fa = write_fasta(tmp / f"{name}.fa", {"chr1": seq})
    vcf = write_vcf(tmp / f"{name}.vcf", [("chr1", pos, "v", ref, alt)])
    varfx.score_vcf(vcf, fa, "torchscript", [str(weights)], tmp / f"{name}.h5", bins=bins,
                    stats="SAD,logSED,D1,D2,TOTAL,logTOTAL", float32=True, rc=True, shifts="-1,0,1")
    return varfx.read_scores(tmp / f"{name}.h5").stats


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), pos=st.integers(1, 400), ref_len=st.integers(1, 3), alt=bases,
       indel=st.booleans())
def test_swapping_ref_and_alt_flips_sad(tmp_path, seed, pos, ref_len, alt, indel):
    rng = random.Random(seed)
    seq = "".join(rng.choice("ACGT") for _ in range(400))
    ref = seq[pos - 1:pos - 1 + ref_len]
    if not indel:  # SNV / MNV: same length, any bins
        alt = (alt * 3)[:len(ref)]
        bins = "variant:8"
    else:  # a 1-bp indel, under half a 4-bp bin: with all bins the alignment is the identity both ways
        ref = ref[:2]
        alt = ref[0] + alt[:1] if len(ref) == 1 else ref[0]
        bins = "all"
    if alt == ref or pos - 1 + len(ref) > len(seq):
        return
    weights, _ = save_toy(tmp_path, seed=seed % 5)
    swapped = seq[:pos - 1] + alt + seq[pos - 1 + len(ref):]
    a = _score(tmp_path, "a", seq, pos, ref, alt, weights, bins)
    b = _score(tmp_path, "b", swapped, pos, alt, ref, weights, bins)
    np.testing.assert_allclose(b["SAD"], -a["SAD"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["logSED"], -a["logSED"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["D1"], a["D1"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["D2"], a["D2"], rtol=1e-4, atol=1e-5)
    # whole outputs: the swapped run's REF and ALT windows are this run's ALT and REF windows, indels too
    np.testing.assert_allclose(b["TOTAL"], -a["TOTAL"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b["logTOTAL"], -a["logTOTAL"], rtol=1e-4, atol=1e-5)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 1000))
def test_scores_do_not_depend_on_other_variants_in_the_batch(tmp_path, seed):
    """A variant scored alone equals the same variant scored among others."""
    rng = random.Random(seed)
    seq = "".join(rng.choice("ACGT") for _ in range(600))
    fa = write_fasta(tmp_path / "g.fa", {"chr1": seq})
    positions = sorted(rng.sample(range(1, 600), 6))
    recs = [("chr1", p, f"v{p}", seq[p - 1], "ACGT"[("ACGT".index(seq[p - 1]) + 1) % 4]) for p in positions]
    weights, _ = save_toy(tmp_path)
    varfx.score_vcf(write_vcf(tmp_path / "all.vcf", recs), fa, "torchscript", [str(weights)], tmp_path / "all.h5",
                    float32=True)
    k = rng.randrange(6)
    varfx.score_vcf(write_vcf(tmp_path / "one.vcf", [recs[k]]), fa, "torchscript", [str(weights)],
                    tmp_path / "one.h5", float32=True)
    a, b = varfx.read_scores(tmp_path / "all.h5"), varfx.read_scores(tmp_path / "one.h5")
    np.testing.assert_allclose(b.stats["SAD"][0], a.stats["SAD"][k], rtol=1e-5, atol=1e-6)


def test_cpu_statistics_do_not_go_through_torch_vector_maths(monkeypatch):
    """On the CPU, the log and square-root statistics are computed with numpy in this thread: torch's CPU
    log2/sqrt run through MKL's vector maths split across threads, whose first call in a process was seen
    to give one thread's share wrong by ~100 ulp now and then (docs/design.md, "Reproducibility").  The
    values are those of float64 arithmetic, to float32 rounding."""
    import torch

    from varfx.scores import Aligned, profile_stats, variant_stats

    def refuse(*a, **k):
        raise AssertionError("torch's CPU log2/sqrt was called")

    g = torch.Generator().manual_seed(0)
    ref = torch.rand(5, 8, 3, generator=g) * 10
    alt = torch.rand(7, 8, 3, generator=g) * 10
    al = Aligned(torch.tensor([0, 0, 1, 2, 3, 4, 4]), torch.arange(8).repeat(7, 1), torch.arange(8).repeat(7, 1),
                 torch.rand(7, 8, generator=g) > 0.3)
    monkeypatch.setattr(torch, "log2", refuse)
    monkeypatch.setattr(torch, "sqrt", refuse)
    monkeypatch.setattr(torch.Tensor, "sqrt", refuse)
    monkeypatch.setattr(torch.Tensor, "log2", refuse)
    got = variant_stats(ref, alt, al, ("SAD", "logSED", "D2", "logTOTAL"), 1.0)
    prof = profile_stats(ref, alt, al, torch.tensor([0, 1]), ("QTL", "JSD"))
    r = ref.double().numpy()[al.ref_row.numpy()]
    a = alt.double().numpy()
    w = al.mask.numpy()[..., None]
    rs, as_ = (r * w).sum(1), (a * w).sum(1)
    np.testing.assert_allclose(got["logSED"].numpy(), np.log2(as_ + 1) - np.log2(rs + 1), rtol=0, atol=2e-6)
    np.testing.assert_allclose(got["D2"].numpy(), np.sqrt((((a - r) * w) ** 2).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(got["logTOTAL"].numpy(), np.log2(a.sum(1) + 1) - np.log2(r.sum(1) + 1), atol=2e-6)
    np.testing.assert_allclose(prof["QTL"].numpy(), np.sqrt((((a - r) * w)[..., :2] ** 2).sum((1, 2))), rtol=1e-6)
    assert torch.isfinite(prof["JSD"]).all() and (prof["JSD"] >= 0).all() and (prof["JSD"] <= 1).all()
