"""Enformer (Avsec et al., Nature Methods 2021) in PyTorch, written for inference.

Layout (defaults in brackets; ``EnformerConfig`` holds them):

* stem: Conv1d(4 → dim/2, k15) → residual [BN, GELU, Conv1d k1] → attention pooling ×2
* conv tower: 6 × [BN, GELU, Conv1d k5 (dims 768→1536, an exponential ladder rounded to 128)]
  → residual [BN, GELU, Conv1d k1] → attention pooling ×2   (7 halvings: 128 bp per position)
* 11 transformer blocks: residual [LayerNorm, multi-head attention (8 heads, key 64, value dim/8)
  with relative positional encodings], residual [LayerNorm, Linear ×2, ReLU, Linear]
* crop to 896 positions, pointwise [BN, GELU, Conv1d k1 → 2·dim], GELU
* heads: Linear(2·dim → 5,313 human | 1,643 mouse tracks) → softplus

GELU is the sigmoid approximation x·σ(1.702x) used by the original.

Relative positions use three basis families (exponential decay, central mask,
gamma pdf), each with ``dim/heads/6`` features, and their sign-flipped copies.
The gamma pdfs are normalised **per feature, over all positions**, as in the
TensorFlow original (its distance tensor carries a leading axis of 1, so the
``reduce_max(axis=1)`` runs over positions); normalising per position instead,
as some ports do, changes values by up to ~1.

Attention runs through ``scaled_dot_product_attention`` with the relative
logits as an additive bias. The projection of the positional basis depends only
on the weights and the sequence length, so it is computed once (in float32) and
cached per length and device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SEQUENCE_LENGTH = 196_608
TARGET_LENGTH = 896


@dataclass
class EnformerConfig:
    dim: int = 1536
    depth: int = 11
    heads: int = 8
    attn_dim_key: int = 64
    num_downsamples: int = 7
    dim_divisible_by: int = 128
    target_length: int = TARGET_LENGTH
    output_heads: dict = field(default_factory=lambda: {"human": 5313, "mouse": 1643})

    @classmethod
    def from_dict(cls, d: dict) -> "EnformerConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    @property
    def tower_dims(self) -> list[int]:
        """Channel counts from the stem through the conv tower."""
        half = self.dim // 2
        n = self.num_downsamples - 1
        base = math.exp(math.log(self.dim / half) / (n - 1))
        ladder = [int(round(half * base ** i / self.dim_divisible_by) * self.dim_divisible_by) for i in range(n)]
        return [half, *ladder]


class GELU(nn.Module):
    def forward(self, x):
        return torch.sigmoid(1.702 * x) * x


def batch_norm_affine(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Inference BatchNorm on (B, C, L) as x·a + b in x's own dtype.

    ``F.batch_norm`` runs in float32 under CPU autocast, so a bf16 model would convert every
    activation to float32 and back around each norm; the affine form needs no conversion.
    """
    a = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
    b = bn.bias.float() - bn.running_mean.float() * a
    return torch.addcmul(b.to(x.dtype)[:, None], x, a.to(x.dtype)[:, None])


class ConvBlock(nn.Module):
    """BatchNorm → GELU → Conv1d, on (B, C, L)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim_in)
        self.conv = nn.Conv1d(dim_in, dim_out, kernel, padding=kernel // 2)
        self.act = GELU()

    def forward(self, x):
        return self.conv(self.act(batch_norm_affine(self.bn, x)))


class AttentionPool(nn.Module):
    """Softmax-weighted pooling of non-overlapping pairs of positions (B, C, L) -> (B, C, L/2).

    The weights are softmax(W·x) over each pair, W a 1×1 convolution without bias. For a pair
    (x0, x1) the softmax is σ(W·x0 − W·x1) = σ(W·(x0 − x1)), so the pooled value is
    x1 + (x0 − x1)·σ(W·(x0 − x1)): one convolution at half length and no softmax.
    """

    def __init__(self, dim: int, pool: int = 2):
        super().__init__()
        if pool != 2:
            raise ValueError("Enformer pools pairs of positions")
        self.logits = nn.Conv2d(dim, dim, 1, bias=False)  # the shape of the original's weights

    def forward(self, x):
        b, c, n = x.shape
        if n % 2:
            raise ValueError(f"attention pooling needs an even length, got {n}")
        x0, x1 = x[..., 0::2], x[..., 1::2]
        d = x0 - x1
        return x1 + d * torch.sigmoid(F.conv1d(d, self.logits.weight[..., 0]))


class TowerStage(nn.Module):
    """ConvBlock(k) → residual ConvBlock(1) → attention pooling."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int = 5):
        super().__init__()
        self.block = ConvBlock(dim_in, dim_out, kernel)
        self.res = ConvBlock(dim_out, dim_out, 1)
        self.pool = AttentionPool(dim_out)

    def forward(self, x):
        x = self.block(x)
        return self.pool(x + self.res(x))


class Stem(nn.Module):
    def __init__(self, dim_out: int):
        super().__init__()
        self.conv = nn.Conv1d(4, dim_out, 15, padding=7)
        self.res = ConvBlock(dim_out, dim_out, 1)
        self.pool = AttentionPool(dim_out)

    def forward(self, x):
        x = self.conv(x)
        return self.pool(x + self.res(x))


# -- relative positional basis -------------------------------------------------------------

def _exponential(dist: torch.Tensor, features: int, n: int) -> torch.Tensor:
    half_life = 2 ** torch.linspace(3.0, math.log2(n), features, dtype=torch.float64)
    return torch.exp(-math.log(2.0) / half_life[None, :] * dist.abs()[:, None])


def _central_mask(dist: torch.Tensor, features: int, n: int) -> torch.Tensor:
    widths = 2.0 ** torch.arange(1, features + 1, dtype=torch.float64) - 1
    return (widths[None, :] > dist.abs()[:, None]).to(torch.float64)


def _gamma(dist: torch.Tensor, features: int, n: int) -> torch.Tensor:
    """Gamma pdfs with means spread over [n/features, n]; each feature scaled to max 1 over positions."""
    stddev = n / (2 * features)
    mean = torch.linspace(n / features, n, features, dtype=torch.float64)
    conc = (mean / stddev) ** 2
    rate = mean / stddev ** 2
    x = dist.abs()[:, None]
    log_pdf = torch.xlogy(conc[None, :] - 1, x) - rate[None, :] * x - (torch.lgamma(conc) - conc * torch.log(rate))
    prob = torch.exp(log_pdf) + 1e-8
    return prob / prob.amax(dim=0, keepdim=True)


def positional_basis(n: int, features: int) -> torch.Tensor:
    """(2n − 1, features) basis for relative distances −(n−1) … n−1, in float32."""
    if features % 6:
        raise ValueError(f"relative position features ({features}) must be divisible by 6")
    per = features // 6
    dist = torch.arange(-n + 1, n, dtype=torch.float64)
    sym = torch.cat([_exponential(dist, per, n), _central_mask(dist, per, n), _gamma(dist, per, n)], dim=-1)
    return torch.cat([sym, torch.sign(dist)[:, None] * sym], dim=-1).float()


def relative_logits(q: torch.Tensor, rel_k: torch.Tensor) -> torch.Tensor:
    """q (B, H, n, d), rel_k (H, 2n−1, d) for distances −(n−1)…n−1 -> (B, H, n, n) with
    out[..., i, j] = q_i · rel_k[(j − i) + n − 1].

    Row i of the result is the window of row i of the full (n, 2n−1) product that starts
    at column n−1−i, i.e. flat element i·(2n−2) + n−1 + j of each (n, 2n−1) block: a slice of the
    flattened block read with rows of 2n−2 (views only, no gather; torch.compile traces it).
    """
    n = q.shape[-2]
    full = torch.einsum("bhid,hrd->bhir", q, rel_k).contiguous()  # (b, h, n, 2n − 1)
    b, h = full.shape[:2]
    if n == 1:  # one position: distance 0 only
        return full
    flat = full.reshape(b, h, n * (2 * n - 1))[..., n - 1: n - 1 + n * (2 * n - 2)]
    return flat.reshape(b, h, n, 2 * n - 2)[..., :n]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_key: int, dim_value: int, rel_features: int):
        super().__init__()
        self.heads, self.dim_key, self.dim_value = heads, dim_key, dim_value
        self.scale = dim_key ** -0.5
        self.rel_features = rel_features
        self.to_q = nn.Linear(dim, dim_key * heads, bias=False)
        self.to_k = nn.Linear(dim, dim_key * heads, bias=False)
        self.to_v = nn.Linear(dim, dim_value * heads, bias=False)
        self.to_out = nn.Linear(dim_value * heads, dim)
        self.to_rel_k = nn.Linear(rel_features, dim_key * heads, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(1, heads, 1, dim_key))
        self.pos_bias = nn.Parameter(torch.zeros(1, heads, 1, dim_key))
        self._rel_k_cache: dict = {}

    def rel_k(self, n: int, device) -> torch.Tensor:
        """(H, 2n−1, dk) projection of the positional basis, in float32, cached."""
        key = (n, str(device), self.to_rel_k.weight.data_ptr(), self.to_rel_k.weight._version)
        hit = self._rel_k_cache.get(key)
        if hit is None:
            basis = positional_basis(n, self.rel_features).to(device)
            w = self.to_rel_k.weight.float()
            with torch.autocast(device_type=torch.device(device).type, enabled=False):
                proj = basis @ w.t()
            hit = proj.reshape(2 * n - 1, self.heads, self.dim_key).permute(1, 0, 2).contiguous()
            self._rel_k_cache = {key: hit}
        return hit

    def forward(self, x):
        b, n, _ = x.shape
        h = self.heads
        q = self.to_q(x).reshape(b, n, h, self.dim_key).transpose(1, 2) * self.scale
        k = self.to_k(x).reshape(b, n, h, self.dim_key).transpose(1, 2)
        v = self.to_v(x).reshape(b, n, h, self.dim_value).transpose(1, 2)
        rel_k = self.rel_k(n, x.device).to(q.dtype)
        bias = relative_logits(q + self.pos_bias.to(q.dtype), rel_k)
        out = F.scaled_dot_product_attention(q + self.content_bias.to(q.dtype), k, v, attn_mask=bias.to(q.dtype),
                                             scale=1.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * self.dim_value))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: EnformerConfig):
        super().__init__()
        d = cfg.dim
        self.attn_norm = nn.LayerNorm(d)
        self.attn = Attention(d, cfg.heads, cfg.attn_dim_key, d // cfg.heads, d // cfg.heads)
        self.ff_norm = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, 2 * d)
        self.ff_out = nn.Linear(2 * d, d)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.ff_out(F.relu(self.ff_in(self.ff_norm(x))))


class Enformer(nn.Module):
    """Input (B, L, 4) one-hot; output {head: (B, target_length, tracks)}."""

    def __init__(self, cfg: EnformerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EnformerConfig()
        dims = cfg.tower_dims
        self.stem = Stem(dims[0])
        self.tower = nn.ModuleList(TowerStage(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.depth))
        self.final = ConvBlock(dims[-1], 2 * cfg.dim, 1)
        self.final_act = GELU()
        self.heads = nn.ModuleDict({name: nn.Linear(2 * cfg.dim, n) for name, n in cfg.output_heads.items()})

    @property
    def bin_size(self) -> int:
        return 2 ** self.cfg.num_downsamples

    def conv_tower(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, 4) -> (B, C, L / 128): the local part of the model."""
        x = self.stem(x.transpose(1, 2))
        for stage in self.tower:
            x = stage(x)
        return x

    def trunk_from_tower(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, n) tower output -> (B, target_length, 2·dim) embeddings."""
        x = t.transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        n, target = x.shape[1], self.cfg.target_length
        if target > 0 and n != target:
            if n < target:
                raise ValueError(f"{n} positions are fewer than the target length {target}")
            trim = (n - target) // 2
            x = x[:, trim:trim + target]
        return self.final_act(self.final(x.transpose(1, 2)).transpose(1, 2))

    def head(self, emb: torch.Tensor, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Softplus of the head's linear layer, only for ``rows`` (track indices) when given."""
        lin = self.heads[name]
        if rows is None:
            return F.softplus(lin(emb))
        return F.softplus(F.linear(emb, lin.weight.index_select(0, rows), lin.bias.index_select(0, rows)))

    def forward(self, x: torch.Tensor, head: str | None = None):
        emb = self.trunk_from_tower(self.conv_tower(x))
        if head is not None:
            return self.head(emb, head)
        return {name: self.head(emb, name) for name in self.heads}


# -- incremental ALT pass -------------------------------------------------------------------

def tower_halo(cfg: EnformerConfig) -> int:
    """Input bp on each side of a change beyond which tower outputs cannot change (receptive field)."""
    halo = 7  # stem conv k15
    for i in range(1, cfg.num_downsamples):
        halo += 2 * 2 ** i  # k5 conv at resolution 2**i
    return halo + 2 ** cfg.num_downsamples  # plus one output position for pooling alignment


def patch_tower(model: Enformer, ref_tower: torch.Tensor, alt_x: torch.Tensor, starts: torch.Tensor,
                ends: torch.Tensor) -> torch.Tensor:
    """Tower output of each ALT sequence, recomputed only near its change and spliced into REF's.

    ``ref_tower`` (B, C, n) is the tower output of the REF sequence each ALT row came from;
    ``alt_x`` (B, L, 4) the ALT inputs; [starts, ends) the changed input positions of each row.
    Exact when REF and ALT differ only inside [start, end): every tower output whose receptive
    field reaches the change is recomputed from a slice wide enough that its own edges (zero
    padding) cannot reach the recomputed outputs.
    """
    bs = model.bin_size
    halo = tower_halo(model.cfg)
    hb = -(-halo // bs)  # bins of receptive field
    n = ref_tower.shape[-1]
    out = ref_tower.clone()
    span = int((ends - starts).max()) if len(starts) else 0
    width_bins = 2 * hb + 1 + -(-span // bs) + 2 * hb  # changed bins, their halo, and a clean margin
    if width_bins >= n:  # the change's neighbourhood is the whole sequence: no saving
        return model.conv_tower(alt_x)
    width = width_bins * bs
    L = alt_x.shape[1]
    first_bins = ((starts // bs) - 2 * hb).clamp(min=0, max=max(n - width_bins, 0))
    slices = torch.stack([alt_x[i, int(f) * bs: int(f) * bs + width] for i, f in enumerate(first_bins.tolist())])
    if slices.shape[1] != width:
        raise ValueError(f"incremental pass needs {width} bp of sequence, the input has {L}")
    part = model.conv_tower(slices)  # (B, C, width_bins)
    for i, f in enumerate(first_bins.tolist()):
        lo_change, hi_change = int(starts[i]) // bs, (int(ends[i]) - 1) // bs
        lo = max(lo_change - hb, 0)
        hi = min(hi_change + hb + 1, n)
        out[i, :, lo:hi] = part[i, :, lo - f: hi - f]
    return out
