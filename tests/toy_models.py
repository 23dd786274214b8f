"""Seeded toy models for the tests, and a plain-Python reference to check varfx against."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F


class ToyConv(torch.nn.Module):
    """(B, L, 4) -> conv (same padding) -> softplus -> crop -> average pool -> (B, bins, tracks)."""

    def __init__(self, length: int, bins: int, bin_size: int, offset: int, tracks: int = 3,
                 kernel: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv1d(4, tracks, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g) * 0.1)
        self.bins, self.bin_size, self.offset = bins, bin_size, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.softplus(self.conv(x.transpose(1, 2)))  # (B, T, L)
        y = y[:, :, self.offset:self.offset + self.bins * self.bin_size]
        y = F.avg_pool1d(y, self.bin_size)
        return y.transpose(1, 2)


def save_toy(folder: Path, length=64, bins=8, bin_size=4, offset=16, tracks=3, seed=0,
             strand_pairs=((0, 1),), encoding="one-hot", name="toy") -> tuple[Path, ToyConv]:
    """Write a TorchScript toy model and its spec; return the weights path and the eager module."""
    model = ToyConv(length, bins, bin_size, offset, tracks, seed=seed).eval()
    path = Path(folder) / f"{name}.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    spec = {"input_length": length, "encoding": encoding, "input_layout": "NLC", "output_bins": bins,
            "bin_size": bin_size, "bin_offset": offset,
            "tracks": [{"id": f"t{i}", "description": f"toy track {i}"} for i in range(tracks)],
            "strand_pairs": [list(p) for p in strand_pairs]}
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path, model


def one_hot_text(seq: str) -> torch.Tensor:
    """Independent one-hot of a text sequence (the test's own, not varfx's)."""
    table = {"A": 0, "C": 1, "G": 2, "T": 3}
    x = torch.zeros(len(seq), 4)
    for i, b in enumerate(seq.upper()):
        if b in table:
            x[i, table[b]] = 1
    return x


# -- more toy models for the personal-genome tests (tests/test_personal_run.py) -------------------------


def save_module(folder: Path, model: torch.nn.Module, name: str, *, length: int, bins: int, bin_size: int,
                offset: int, tracks: int, encoding: str = "one-hot", strand_pairs=()) -> Path:
    """Write any (B, L, 4) -> (B, bins, tracks) module as TorchScript with its JSON spec; return the path."""
    path = Path(folder) / f"{name}.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    spec = {"input_length": length, "encoding": encoding, "input_layout": "NLC", "output_bins": bins,
            "bin_size": bin_size, "bin_offset": offset,
            "tracks": [{"id": f"t{i}", "description": f"toy track {i}"} for i in range(tracks)],
            "strand_pairs": [list(p) for p in strand_pairs]}
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path


class LinearConv(torch.nn.Module):
    """A model linear in its input: conv without bias or nonlinearity -> crop -> average pool.

    Integer weights keep every output a multiple of 1/bin_size, exact in float32."""

    def __init__(self, bins: int, bin_size: int, offset: int, tracks: int = 2, kernel: int = 9, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv1d(4, tracks, kernel, padding=kernel // 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randint(-4, 5, self.conv.weight.shape, generator=g).float())
        self.bins, self.bin_size, self.offset = bins, bin_size, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))[:, :, self.offset:self.offset + self.bins * self.bin_size]
        return F.avg_pool1d(y, self.bin_size).transpose(1, 2)


class MotifConv(torch.nn.Module):
    """One track: relu(matches of the motif starting at each position − threshold), summed per bin.

    A full match of a k-bp motif scores k − threshold; every mismatch lowers that by 1."""

    def __init__(self, motif: str, bins: int, bin_size: int, offset: int, threshold: float):
        super().__init__()
        k = len(motif)
        self.conv = torch.nn.Conv1d(4, 1, k, bias=False)
        with torch.no_grad():
            w = torch.zeros(1, 4, k)
            for j, b in enumerate(motif):
                w[0, "ACGT".index(b), j] = 1.0
            self.conv.weight.copy_(w)
        self.pad, self.threshold = k - 1, threshold
        self.bins, self.bin_size, self.offset = bins, bin_size, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x.transpose(1, 2)) - self.threshold)  # (B, 1, L − k + 1)
        y = F.pad(y, (0, self.pad))[:, :, self.offset:self.offset + self.bins * self.bin_size]
        return (F.avg_pool1d(y, self.bin_size) * self.bin_size).transpose(1, 2)
