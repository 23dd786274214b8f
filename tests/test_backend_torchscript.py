import json

import pytest
import torch

from varfx.backends import available, backend_class, load_backend
from varfx.errors import InputError, ModelError, OptionError

from toy_models import ToyConv, save_toy


def test_loads_and_predicts_like_the_eager_model(tmp_path):
    path, eager = save_toy(tmp_path)
    b = load_backend("torchscript", [str(path)])
    assert b.geometry.input_length == 64 and b.geometry.output_bins == 8
    assert b.geometry.bin_size == 4 and b.geometry.bin_offset == 16
    assert list(b.tracks["id"]) == ["t0", "t1", "t2"]
    assert b.strand_pairs == [(0, 1)]
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (5, 64), generator=torch.Generator().manual_seed(1)), 4).float()
    with torch.no_grad():
        want = eager(x)
    assert torch.allclose(b.predict(x), want, atol=1e-6)
    b.compute_tracks([2, 0])
    assert torch.allclose(b.predict(x), want[..., [2, 0]], atol=1e-6)


def test_ncl_and_ntb_layouts(tmp_path):
    class NCL(torch.nn.Module):
        def forward(self, x):  # (B, 4, L) -> (B, T=2, bins=4)
            return x[:, :2, :].reshape(x.shape[0], 2, 4, -1).sum(-1)

    path = tmp_path / "ncl.pt"
    torch.jit.save(torch.jit.script(NCL()), str(path))
    spec = {"input_length": 16, "input_layout": "NCL", "output_layout": "NTB", "output_bins": 4,
            "bin_size": 4, "bin_offset": 0, "tracks": ["A", "C"]}
    path.with_suffix(".json").write_text(json.dumps(spec))
    b = load_backend("torchscript", [str(path)])
    x = torch.zeros(1, 16, 4)
    x[0, :4, 0] = 1  # A in bin 0
    x[0, 12:, 1] = 1  # C in bin 3
    y = b.predict(x)
    assert y.shape == (1, 4, 2)
    assert y[0, :, 0].tolist() == [4, 0, 0, 0] and y[0, :, 1].tolist() == [0, 0, 0, 4]


def _spec(tmp_path, **change):
    path, _ = save_toy(tmp_path)
    spec = json.loads(path.with_suffix(".json").read_text())
    spec.update(change)
    for k, v in list(spec.items()):
        if v is None:
            del spec[k]
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("change,message", [
    ({"input_length": None}, "has no 'input_length'"),
    ({"bin_size": "4"}, "'bin_size' must be int"),
    ({"output_bins": 20}, "run past the 64-bp input"),
    ({"encoding": "three-hot"}, "encoding must be one of"),
    ({"strand_pairs": [[0, 7]]}, "strand pair"),
    ({"tracks": ["a", "b"]}, r"returns \(1, 8, 3\) but the spec says .* \(1, 8, 2\)"),
    ({"output_bins": 4}, r"returns \(1, 8, 3\)"),
    ({"input_layout": "NCL"}, r"fails on a \(1, 4, 64\) input as the spec describes: .* … .*channels"),
    ({"output_layout": "NTB"}, r"returns \(1, 8, 3\) but the spec says \(batch, tracks, bins\) = \(1, 3, 8\)"),
    # mistakes that used to be tracebacks, or silently changed the scores
    ({"strand_pairs": None, "strand_pair": [[0, 1]]}, r"unknown key 'strand_pair' \(did you mean 'strand_pairs'\?\)"),
    ({"strand_pairs": "none"}, "strand_pairs must be a list"),
    ({"strand_pairs": [[0, 1], [1, 2]]}, "track 1 is in two strand pairs"),
    ({"state_dict": 5}, "state_dict must be a file name"),
    ({"tracks": ["a", "b", "a"]}, "track id 'a' is given twice"),
    ({"tracks": ["a", "b\tc", "d"]}, "has a tab or a line break"),
])
def test_spec_errors_name_the_problem(tmp_path, change, message):
    path = _spec(tmp_path, **change)
    with pytest.raises((ModelError, InputError), match=message):
        load_backend("torchscript", [str(path)])


def test_spec_not_json_and_missing(tmp_path):
    path, _ = save_toy(tmp_path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_backend("torchscript", [str(path)])
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match="model spec not found"):
        load_backend("torchscript", [str(path)])


def test_not_torchscript(tmp_path):
    path, _ = save_toy(tmp_path)
    path.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a TorchScript file"):
        load_backend("torchscript", [str(path)])


def test_state_dict_replaces_weights_and_mismatch_names_tensor(tmp_path):
    path, eager = save_toy(tmp_path)
    other = ToyConv(64, 8, 4, 16, 3, seed=5)
    torch.save(other.state_dict(), tmp_path / "ft.pt")
    spec = json.loads(path.with_suffix(".json").read_text())
    spec["state_dict"] = "ft.pt"
    path.with_suffix(".json").write_text(json.dumps(spec))
    b = load_backend("torchscript", [str(path)])
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, 64)), 4).float()
    with torch.no_grad():
        assert torch.allclose(b.predict(x), other(x), atol=1e-6)
        assert not torch.allclose(b.predict(x), eager(x), atol=1e-3)
    bad = ToyConv(64, 8, 4, 16, 3, kernel=7)
    torch.save(bad.state_dict(), tmp_path / "ft.pt")
    with pytest.raises(ModelError, match=r"tensor conv.weight has shape \(3, 4, 7\) in the weights but the model "
                                         r"expects \(3, 4, 5\)"):
        load_backend("torchscript", [str(path)])


def test_unknown_backend_lists_known():
    with pytest.raises(OptionError, match="unknown backend 'nope'; known backends: .*torchscript"):
        load_backend("nope", [])


def test_plugin_entry_point_loaded_only_when_named(monkeypatch):
    import varfx.backends as reg

    loaded = []

    class FakeEP:
        name = "myplug"
        dist = None

        def load(self):
            loaded.append(True)
            from varfx.backends.torchscript import TorchScriptBackend
            return TorchScriptBackend

    monkeypatch.setattr(reg, "entry_points", lambda group: [FakeEP()] if group == reg.GROUP else [])
    with pytest.raises(OptionError):
        backend_class("other")
    assert not loaded
    assert backend_class("myplug").name == "torchscript"
    assert loaded
    assert "myplug" in available()


def test_exported_program_pt2(tmp_path):
    path, eager = save_toy(tmp_path)
    ep = torch.export.export(eager, (torch.zeros(2, 64, 4),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    pt2 = tmp_path / "toy.pt2"
    torch.export.save(ep, str(pt2))
    pt2.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    b = load_backend("torchscript", [str(pt2)])
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (5, 64)), 4).float()
    with torch.no_grad():
        assert torch.allclose(b.predict(x), eager(x), atol=1e-6)
    pt2.write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a torch.export program"):
        load_backend("torchscript", [str(pt2)])


def test_spec_notes_and_state_dict_files_that_are_no_state_dict(tmp_path):
    path = _spec(tmp_path, _comment="keys starting with _ are notes")
    assert load_backend("torchscript", [str(path)]).geometry.output_bins == 8
    import argparse
    torch.save({"model": ToyConv(64, 8, 4, 16, 3).state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "ck.pt")
    path = _spec(tmp_path, state_dict="ck.pt")
    with pytest.raises(ModelError, match=r"ck.pt is not a state_dict of tensors .*torch.save\(model.state_dict"):
        load_backend("torchscript", [str(path)])
    torch.save([1, 2], tmp_path / "ck.pt")
    with pytest.raises(ModelError, match=r"ck.pt holds a list, not a state_dict"):
        load_backend("torchscript", [str(path)])


def test_pt2_exported_in_training_mode_is_refused(tmp_path):
    """An exported program keeps dropout and batch statistics on when exported in training mode, and cannot
    be put in eval mode: its scores would be random."""
    class WithDropout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 3, 5, padding=2)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x):  # (B, 64, 4) -> (B, 8, 3)
            return self.drop(self.conv(x.transpose(1, 2))).transpose(1, 2)[:, 16:48].reshape(x.shape[0], 8, 4, 3).sum(2)

    path, _ = save_toy(tmp_path)
    for mode, refused in (("train", True), ("eval", False)):
        m = WithDropout()
        getattr(m, mode)()
        ep = torch.export.export(m, (torch.zeros(2, 64, 4),), dynamic_shapes={"x": {0: torch.export.Dim("b")}})
        pt2 = tmp_path / f"{mode}.pt2"
        torch.export.save(ep, str(pt2))
        pt2.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
        if refused:
            with pytest.raises(ModelError, match=r"exported in training mode \(aten.dropout.default .*model.eval\(\)"):
                load_backend("torchscript", [str(pt2)])
        else:
            assert load_backend("torchscript", [str(pt2)]).geometry.output_bins == 8
