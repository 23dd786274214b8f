"""varfx's Enformer against enformer-pytorch (a test extra) with the same random weights."""

import json
import math
import os
import re

import numpy as np
import pytest
import torch

from varfx.backends import load_backend
from varfx.backends import enformer_model as M
from varfx.errors import ModelError

ep = pytest.importorskip("enformer_pytorch")
from enformer_pytorch import modeling_enformer as EP  # noqa: E402

SMALL = dict(dim=48, depth=2, heads=2, attn_dim_key=8, num_downsamples=7, dim_divisible_by=8, target_length=4,
             output_heads=dict(human=5313, mouse=12))
SMALL_LENGTH = 128 * 8  # 8 tower positions, the central 4 kept


def tf_style_gamma(positions, features, seq_len, **_):
    """Gamma basis normalised per feature over positions (the TensorFlow original), in float64."""
    d = positions.double().abs()[:, None]
    stddev = seq_len / (2 * features)
    mean = torch.linspace(seq_len / features, seq_len, features, dtype=torch.float64)[None, :]
    conc, rate = (mean / stddev) ** 2, mean / stddev ** 2
    logp = torch.xlogy(conc - 1, d) - rate * d - (torch.lgamma(conc) - conc * torch.log(rate))
    p = torch.exp(logp) + 1e-8
    return (p / p.amax(0, keepdim=True)).float()


def randomize(model, seed=0):
    """Random weights at the scale of a fresh initialisation (fan-in scaled), so that activations
    stay O(1), attention is not saturated and every part of the model (the positional basis too)
    shapes the output; BatchNorm statistics are random but sane."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # norm scales
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:  # biases, relative-position biases
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if "running_mean" in name:
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif "running_var" in name:
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def random_one_hot(n, length, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 5, (n, length), generator=g)
    return torch.nn.functional.one_hot(idx, 5)[..., :4].float()  # code 4 = N = zeros


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def make_checkpoint(folder, monkeypatch, hparams, length, seed):
    """A port model with random weights saved as save_pretrained does, plus varfx's sequence_length."""
    monkeypatch.setattr(EP, "get_positional_features_gamma", tf_style_gamma)
    model = EP.Enformer.from_hparams(**hparams).eval()
    randomize(model, seed=seed)
    model.save_pretrained(folder, safe_serialization=False)  # shared _trunk tensors: .bin
    cfg = json.loads((folder / "config.json").read_text())
    cfg["sequence_length"] = length
    (folder / "config.json").write_text(json.dumps(cfg))
    return model, folder


@pytest.fixture
def small_port(tmp_path, monkeypatch):
    return make_checkpoint(tmp_path / "ckpt", monkeypatch, SMALL, SMALL_LENGTH, seed=0)


def test_reduced_config_matches_enformer_pytorch(small_port):
    port, ckpt = small_port
    assert (ckpt / "pytorch_model.bin").exists()
    x = random_one_hot(3, SMALL_LENGTH)
    with torch.no_grad():
        want = port(x)
    for head in ("human", "mouse"):
        b = load_backend("enformer", [str(ckpt)], head=head)
        assert b.geometry.input_length == SMALL_LENGTH and b.geometry.output_bins == 4
        assert b.geometry.bin_offset == (SMALL_LENGTH - 4 * 128) // 2
        with torch.no_grad():
            got = b.predict(x)
        assert got.shape == want[head].shape
        assert rel_err(got, want[head]) <= 1e-5, rel_err(got, want[head])


def test_track_selection_slices_the_head(small_port):
    port, ckpt = small_port
    b = load_backend("enformer", [str(ckpt)])
    x = random_one_hot(2, SMALL_LENGTH)
    with torch.no_grad():
        full = b.predict(x)
        b.compute_tracks([5, 4000, 17])
        part = b.predict(x)
    assert part.shape == (2, 4, 3)
    torch.testing.assert_close(part, full[..., [5, 4000, 17]], rtol=1e-5, atol=1e-6)
    assert list(b.tracks["id"][:2]) == ["ENCFF833POA", "ENCFF110QGM"]


def test_bare_state_dict_with_trunk_duplicates(small_port, tmp_path):
    port, ckpt = small_port
    state = port.state_dict()
    assert any(k.startswith("_trunk.") for k in state)  # the port's duplicated keys are there
    torch.save(state, tmp_path / "ckpt" / "weights.pt")
    b = load_backend("enformer", [str(tmp_path / "ckpt" / "weights.pt")])  # config.json beside it is read
    x = random_one_hot(1, SMALL_LENGTH)
    with torch.no_grad():
        assert rel_err(b.predict(x), port(x)["human"]) <= 1e-5


def test_mismatched_tensor_is_named(small_port, tmp_path):
    port, ckpt = small_port
    state = port.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("_trunk.")}
    state["transformer.1.0.fn.1.to_q.weight"] = torch.zeros(3, 48)
    torch.save(state, tmp_path / "ckpt" / "bad.pt")
    with pytest.raises(ModelError, match=r"tensor layers\.1\.attn\.to_q\.weight has shape \(3, 48\) in the weights "
                                         r"but the model expects \(16, 48\)"):
        load_backend("enformer", [str(tmp_path / "ckpt" / "bad.pt")])


def test_gamma_basis_is_normalised_per_feature_like_tensorflow():
    """At Enformer's 1,536 positions the basis is within TF's own float32 noise of the values
    TensorFlow computed (shipped by enformer-pytorch); per-position normalisation is off by ~1."""
    tf_gammas = torch.load(os.path.join(os.path.dirname(ep.__file__), "precomputed", "tf_gammas.pt"),
                           weights_only=True)
    basis = M.positional_basis(1536, 192)  # 6 groups of 32: exp, mask, gamma, then their signed copies
    ours = basis[:, 64:96]
    assert ours.shape == tf_gammas.shape
    assert float((ours - tf_gammas).abs().max()) < 3e-3
    per_position = tf_style_gamma(torch.arange(-1535, 1536), 32, 1536)
    per_position = per_position / per_position.amax(1, keepdim=True)
    assert float((per_position - tf_gammas).abs().max()) > 0.9
    # and for other lengths the same function (no table): mask and exponential parts too
    for n in (8, 100):
        b = M.positional_basis(n, 12)
        assert b.shape == (2 * n - 1, 12)
        np.testing.assert_allclose(b[:, 4:6].numpy(), tf_style_gamma(torch.arange(-n + 1, n), 2, n).numpy(),
                                   rtol=1e-6, atol=1e-7)


def test_safetensors_folder(small_port, tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    port, ckpt = small_port
    state = {k: v.contiguous() for k, v in port.state_dict().items() if not k.startswith("_trunk.")}
    (ckpt / "pytorch_model.bin").unlink()
    safetensors.save_file(state, str(ckpt / "model.safetensors"))
    b = load_backend("enformer", [str(ckpt)])
    x = random_one_hot(1, SMALL_LENGTH)
    with torch.no_grad():
        assert rel_err(b.predict(x), port(x)["human"]) <= 1e-5
    from varfx.backends.weights import read_safetensors
    back = read_safetensors(ckpt / "model.safetensors")
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)


def test_config_values_are_checked(small_port):
    """config.json values that the model cannot use are one-line errors naming the key; target_length -1
    (the port's "no crop") keeps all 8 tower positions; a crop that is not the same at both ends (8 - 3 = 5
    positions) is refused rather than mapped half a bin off."""
    _, ckpt = small_port
    good = json.loads((ckpt / "config.json").read_text())
    for change, message in (({"dim": "48"}, "dim must be a positive whole number, not '48'"),
                            ({"sequence_length": 1088}, "sequence_length 1,088 is not a whole number of 128-bp bins"),
                            ({"target_length": 3}, "target_length 3 does not fit the 8 bins of a 1,024-bp input"),
                            ({"target_length": 9}, "target_length 9 does not fit"),
                            ({"target_length": -2}, "target_length must be a positive whole number or -1"),
                            ({"output_heads": {"human": "many"}}, "output_heads must map head names")):
        (ckpt / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ModelError, match=re.escape(message)):
            load_backend("enformer", [str(ckpt)])
    (ckpt / "config.json").write_text(json.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="must hold a JSON object of settings, not a list"):
        load_backend("enformer", [str(ckpt)])
    (ckpt / "config.json").write_text(json.dumps({**good, "target_length": -1}))
    b = load_backend("enformer", [str(ckpt)])
    assert (b.geometry.output_bins, b.geometry.bin_offset) == (8, 0)
    with torch.no_grad():
        assert b.predict(random_one_hot(1, SMALL_LENGTH)).shape == (1, 8, 5313)


def test_damaged_weight_files_are_one_line_errors(tmp_path):
    """A safetensors file cut short, with a header that is no object, an entry without dtype or a header
    length past the end; an empty .bin (torch's error message is empty): each a ModelError naming the file."""
    import struct
    from varfx.backends.weights import read_state_dict

    def safetensors(name, header, body):
        raw = json.dumps(header).encode()
        path = tmp_path / name
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
        return path

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    good = {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
    assert torch.equal(read_state_dict(safetensors("good.safetensors", good, w.numpy().tobytes()))["w"], w)
    cases = [
        (safetensors("cut.safetensors", good, w.numpy().tobytes()[:12]), "is cut short or damaged"),
        (safetensors("list.safetensors", [1, 2], b""), "its header is not a JSON object"),
        (safetensors("nodtype.safetensors", {"w": {"shape": [2, 3], "data_offsets": [0, 24]}},
                     w.numpy().tobytes()), "lacks dtype, shape or data_offsets"),
        (safetensors("size.safetensors", {"w": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 24]}},
                     w.numpy().tobytes()), "should take bytes 0-24 (32 for shape (2, 4))"),
    ]
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2 ** 63) + b"{}")
    cases.append((huge, "is cut short or not a safetensors file"))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    cases.append((empty, "is not a PyTorch state dict that loads with weights_only=True"))
    for path, message in cases:
        with pytest.raises(ModelError, match=re.escape(message)) as err:
            read_state_dict(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_full_size_matches_enformer_pytorch_with_tf_gammas(tmp_path):
    """The standard configuration (196,608 bp, 5,313 + 1,643 tracks), one forward on the CPU each."""
    port = EP.Enformer.from_hparams(use_tf_gamma=True).eval()
    randomize(port, seed=3)
    torch.save(port.state_dict(), tmp_path / "enformer.pt")  # a bare state dict, _trunk duplicates included
    x = random_one_hot(1, M.SEQUENCE_LENGTH, seed=4)
    with torch.inference_mode():
        want = port(x)["human"]
    del port
    b = load_backend("enformer", [str(tmp_path / "enformer.pt")])
    assert b.geometry.input_length == 196_608 and b.geometry.bin_offset == 40_960 and len(b.tracks) == 5313
    with torch.inference_mode():
        got = b.predict(x)
    err = rel_err(got, want)
    print(f"full-size relative error vs enformer-pytorch (TF gammas): {err:.2e}")
    assert err <= 1e-5


MID = dict(dim=48, depth=2, heads=2, attn_dim_key=8, num_downsamples=7, dim_divisible_by=8, target_length=32,
           output_heads=dict(human=5313, mouse=12))
MID_LENGTH = 128 * 64  # 64 tower positions: the incremental pass recomputes only a part


@pytest.fixture
def mid_ckpt(tmp_path, monkeypatch):
    return make_checkpoint(tmp_path / "mid", monkeypatch, MID, MID_LENGTH, seed=7)


def test_incremental_alt_pass_is_exact(mid_ckpt):
    port, ckpt = mid_ckpt
    b = load_backend("enformer", [str(ckpt)])
    g = torch.Generator().manual_seed(11)
    ref = random_one_hot(3, MID_LENGTH, seed=12)
    spans = [(0, 1), (4095, 4096), (4090, 4093), (127, 130), (MID_LENGTH - 1, MID_LENGTH), (6000, 6003)]
    alt_rows, ref_row, lo, hi = [], [], [], []
    for k, (a, z) in enumerate(spans):
        r = k % 3
        x = ref[r].clone()
        x[a:z] = torch.nn.functional.one_hot(torch.randint(0, 4, (z - a,), generator=g), 4).float()
        alt_rows.append(x)
        ref_row.append(r)
        lo.append(a)
        hi.append(z)
    alt = torch.stack(alt_rows)
    with torch.no_grad():
        full = b.predict(alt)
        ref_pred, inc = b.predict_ref_alt(ref, alt, torch.tensor(ref_row), torch.tensor(lo), torch.tensor(hi), 4)
        torch.testing.assert_close(ref_pred, b.predict(ref), rtol=1e-5, atol=1e-7)
    assert rel_err(inc, full) <= 1e-5, rel_err(inc, full)
    # an ALT that really changed something changes the prediction
    assert float((full - ref_pred[torch.tensor(ref_row)]).abs().max()) > 0


def test_score_example_with_enformer(mid_ckpt, tmp_path):
    from click.testing import CliRunner

    import varfx
    from varfx.cli import cli
    from conftest import EXAMPLES
    import shutil

    port, ckpt = mid_ckpt
    shutil.copy(EXAMPLES / "genome.fa", tmp_path / "genome.fa")
    lines = (EXAMPLES / "variants.vcf").read_text().splitlines()
    header = [x for x in lines if x.startswith("#")]
    records = [x for x in lines if not x.startswith("#")]
    (tmp_path / "variants.vcf").write_text("\n".join(header + records[::5]) + "\n")  # every 5th record
    args = ["score", str(tmp_path / "variants.vcf"), "--fasta", str(tmp_path / "genome.fa"), "--backend",
            "enformer", "--weights", str(ckpt), "--tracks", "CAGE:.*K562", "--rc", "--shifts", "-1,1",
            "--float32", "-q"]
    r = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "e.h5")])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(tmp_path / "e.h5")
    assert list(res.tracks["description"]) == [d for d in M_targets() if __import__("re").search("CAGE:.*K562", d)]
    assert res.stats["SAD"].shape == (len(res.variants), len(res.tracks)) and len(res.variants) > 50
    assert np.abs(res.stats["SAD"]).max() > 0
    # the same run without the incremental pass gives the same scores
    b = load_backend("enformer", [str(ckpt)], incremental=False)
    varfx.score_vcf(tmp_path / "variants.vcf", tmp_path / "genome.fa", b, out=tmp_path / "f.h5",
                    tracks="CAGE:.*K562", rc=True, shifts="-1,1", float32=True)
    full = varfx.read_scores(tmp_path / "f.h5")
    np.testing.assert_allclose(res.stats["SAD"], full.stats["SAD"], rtol=1e-4, atol=1e-6)


def M_targets():
    from varfx.backends.enformer import targets
    return list(targets("human")["description"])


def test_tracks_command_lists_enformer_tracks_offline():
    from click.testing import CliRunner
    from varfx.cli import cli

    r = CliRunner().invoke(cli, ["tracks", "--backend", "enformer", "--tracks", "CAGE:.*K562"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == "index\tid\tdescription" and len(lines) > 1
    assert all("CAGE:" in line and "K562" in line for line in lines[1:])
    r = CliRunner().invoke(cli, ["tracks", "--backend", "enformer", "--head", "mouse"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 1 + 1643
    r = CliRunner().invoke(cli, ["tracks", "--backend", "enformer", "--head", "fish"])
    assert r.exit_code == 2 and "--head 'fish'" in r.output


def test_tracks_command_reads_the_checkpoint_heads(small_port):
    """With --weights, `varfx tracks` lists the checkpoint's heads as a run names them: the small checkpoint's
    12-track mouse head is not the shipped 1,643-track table."""
    from click.testing import CliRunner
    from varfx.cli import cli

    _, ckpt = small_port
    r = CliRunner().invoke(cli, ["tracks", "--backend", "enformer", "--weights", str(ckpt), "--head", "mouse"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines() == ["index\tid\tdescription"] + [f"{i}\tmouse_{i}\tmouse track {i}"
                                                                          for i in range(12)]
    b = load_backend("enformer", [str(ckpt)], head="mouse")
    assert list(b.tracks["id"]) == [f"mouse_{i}" for i in range(12)]
    r = CliRunner().invoke(cli, ["tracks", "--backend", "enformer", "--weights", str(ckpt)])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 1 + 5313  # the human head is the standard


def test_score_with_an_unknown_head(small_port, tmp_path):
    from click.testing import CliRunner
    from varfx.cli import cli
    from conftest import write_fasta, write_vcf

    port, ckpt = small_port
    fa = write_fasta(tmp_path / "g.fa", {"chr1": "ACGT" * 1000})
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 2000, "a", "A", "C")])
    r = CliRunner().invoke(cli, ["score", str(vcf), "--fasta", str(fa), "--backend", "enformer", "--weights",
                                 str(ckpt), "--head", "fish", "--out", str(tmp_path / "o.h5")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "--head 'fish': the model's heads are human, mouse" in r.output


@pytest.mark.slow
def test_score_example_at_full_size(tmp_path):
    """`varfx score --backend enformer` with a standard-size random checkpoint saved as the port saves it."""
    import shutil
    from click.testing import CliRunner

    import varfx
    from varfx.cli import cli
    from conftest import EXAMPLES

    port = EP.Enformer.from_hparams(use_tf_gamma=True).eval()
    randomize(port, seed=5)
    port.save_pretrained(tmp_path / "ckpt", safe_serialization=False)
    del port
    shutil.copy(EXAMPLES / "genome.fa", tmp_path / "genome.fa")
    lines = (EXAMPLES / "variants.vcf").read_text().splitlines()
    records = [x for x in lines if not x.startswith("#") and x.split("\t")[2] in ("v0003", "v0012")]
    assert len(records) == 2  # two motif-breaking SNVs on chr1
    (tmp_path / "v.vcf").write_text("\n".join([x for x in lines if x.startswith("#")] + records) + "\n")
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "v.vcf"), "--fasta", str(tmp_path / "genome.fa"),
                                 "--backend", "enformer", "--weights", str(tmp_path / "ckpt"), "--tracks", "0-9",
                                 "--short-contigs", "pad", "--out", str(tmp_path / "e.h5"), "--float32", "-q"])
    assert r.exit_code == 0, r.output
    res = varfx.read_scores(tmp_path / "e.h5")
    assert len(res.variants) == 2 and res.stats["SAD"].shape == (2, 10)
    assert res.settings["window_length"] == 196_608 and res.settings["bin_offset"] == 40_960
    assert res.settings["bins"] == "variant:128" and np.isfinite(res.stats["SAD"]).all()
    assert np.abs(res.stats["SAD"]).max() > 0


def test_weight_file_errors_are_one_line(tmp_path):
    from varfx.errors import InputError, OptionError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="neither model.safetensors nor pytorch_model.bin"):
        load_backend("enformer", [str(empty)])
    (empty / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json is not valid JSON"):
        load_backend("enformer", [str(empty)])
    with pytest.raises(InputError, match="weights not found"):
        load_backend("enformer", [str(tmp_path / "nope.pt")])
    with pytest.raises(OptionError, match="takes one --weights"):
        load_backend("enformer", [str(empty), str(empty)])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken header}")
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_backend("enformer", [str(bad)])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip or pickle")
    with pytest.raises(ModelError, match="weights_only=True"):
        load_backend("enformer", [str(junk)])
    torch.save({"stem.0.weight": torch.zeros(1), "something.else": torch.zeros(2)}, tmp_path / "alien.pt")
    with pytest.raises(ModelError, match="does not know: something.else"):
        load_backend("enformer", [str(tmp_path / "alien.pt")])


@pytest.mark.slow
def test_compiled_model_agrees_with_eager(mid_ckpt):
    """--compile (torch.compile of the tower and the trunk): the same predictions, full and incremental,
    for two batch sizes (the second reuses the compiled code with a dynamic batch dimension)."""
    port, ckpt = mid_ckpt
    eager = load_backend("enformer", [str(ckpt)])
    comp = load_backend("enformer", [str(ckpt)], compile=True)
    assert comp.settings()["compile"] is True and eager.settings()["compile"] is False
    ref = random_one_hot(3, MID_LENGTH, seed=5)
    alt = ref.clone()
    alt[:, 4096] = alt[:, 4096].roll(1, dims=-1)
    lo, hi, rows = torch.full((3,), 4096), torch.full((3,), 4097), torch.arange(3)
    with torch.no_grad():
        for n in (3, 2):
            want = eager.predict(ref[:n])
            got = comp.predict(ref[:n])
            assert rel_err(got, want) <= 1e-5, rel_err(got, want)
        r_e, a_e = eager.predict_ref_alt(ref, alt, rows, lo, hi, 4)
        r_c, a_c = comp.predict_ref_alt(ref, alt, rows, lo, hi, 4)
    assert rel_err(r_c, r_e) <= 1e-5 and rel_err(a_c, a_e) <= 1e-5
    assert float((a_e - r_e).abs().max()) > 0


@pytest.mark.parametrize("n", [1, 2, 5, 33])
def test_relative_logits_against_a_loop(n):
    """out[..., i, j] = q_i · rel_k[j − i + n − 1], for every length (including one position)."""
    from varfx.backends.enformer_model import relative_logits

    g = torch.Generator().manual_seed(n)
    q, rel_k = torch.randn(2, 3, n, 4, generator=g), torch.randn(3, 2 * n - 1, 4, generator=g)
    want = torch.empty(2, 3, n, n)
    for i in range(n):
        for j in range(n):
            want[:, :, i, j] = (q[:, :, i] * rel_k[:, j - i + n - 1]).sum(-1)
    torch.testing.assert_close(relative_logits(q, rel_k), want, rtol=1e-5, atol=1e-6)


def test_compile_on_a_cpu_without_a_compiler_is_a_one_line_error(small_port, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from varfx.cli import cli
    from conftest import EXAMPLES

    port, ckpt = small_port
    monkeypatch.setattr("varfx.backends.enformer.shutil.which", lambda name: None)
    r = CliRunner().invoke(cli, ["score", str(EXAMPLES / "variants.vcf"), "--fasta", str(EXAMPLES / "genome.fa"),
                                 "--backend", "enformer", "--weights", str(ckpt), "--compile", "--device", "cpu",
                                 "--out", str(tmp_path / "o.h5"), "-q"])
    assert r.exit_code == 2
    assert r.output.strip() == ("varfx: error: --compile on the CPU needs a C++ compiler (g++ or clang++): "
                                "install one, or run without --compile")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o.h5")]  # nothing written
