"""The three sequence representations varfx uses, their validators and converters.

* **base codes** — ``uint8`` arrays, one value per position: A=0, C=1, G=2, T=3,
  N=4 (``N`` and every IUPAC ambiguity code read as 4; lower case reads as upper).
  Windows travel through the pipeline in this form: 1 byte per base.
* **one-hot** — float ``(..., L, 4)``, channels A, C, G, T; code 4 is all zeros.
* **two-hot** — float ``(..., L, 4)``, the sum of the one-hots of a diploid
  genome's two alleles (CLIPNET): a homozygous base is 2, a heterozygote 1 + 1,
  an N allele contributes 0.

Diploid windows travel as **pair codes** ``5·a + b`` (uint8, 0..24) of the two
haplotypes' base codes and are encoded by :func:`two_hot_pairs`.

Reverse complement exists for each.  Because the channel order A, C, G, T is its
own complement read backwards, the reverse complement of a one-hot or two-hot
tensor is a flip over both the length and the channel axes; a heterozygous A/T
position stays A+T, C/G stays C+G.
"""

from __future__ import annotations

import numpy as np
import torch


ALPHABET = "ACGT"
N_CODE = 4

#: ASCII byte -> base code.  Everything that is not A, C, G or T (either case) is N.
_ENCODE = np.full(256, N_CODE, dtype=np.uint8)
for _i, _b in enumerate(ALPHABET):
    _ENCODE[ord(_b)] = _i
    _ENCODE[ord(_b.lower())] = _i
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)
#: base code -> code of its complement (N stays N).
COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


def encode(seq: str | bytes | np.ndarray) -> np.ndarray:
    """Text (str, bytes or an array of ASCII bytes) -> base codes (uint8)."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")
    if isinstance(seq, (bytes, bytearray, memoryview)):
        seq = np.frombuffer(seq, dtype=np.uint8)
    return _ENCODE[np.asarray(seq, dtype=np.uint8)]


def decode(codes: np.ndarray) -> str:
    """Base codes -> upper-case text (code 4 -> ``N``)."""
    codes = np.asarray(codes)
    check_codes(codes)
    return _DECODE[codes].tobytes().decode("ascii")


def check_codes(codes) -> None:
    """Raise ``ValueError`` unless ``codes`` holds only values 0..4."""
    arr = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if arr.dtype != np.uint8:
        raise ValueError(f"base codes must be uint8, got {arr.dtype}")
    if arr.size and int(arr.max()) > N_CODE:
        raise ValueError(f"base codes must be 0..4, found {int(arr.max())}")


def check_one_hot(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is (…, L, 4) with 0/1 entries summing to ≤ 1 per position."""
    if x.shape[-1] != 4:
        raise ValueError(f"one-hot tensors have 4 channels last, got shape {tuple(x.shape)}")
    if not bool(((x == 0) | (x == 1)).all()):
        raise ValueError("one-hot entries must be 0 or 1")
    if bool((x.sum(-1) > 1).any()):
        raise ValueError("a one-hot position has more than one base set")


def check_two_hot(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is (…, L, 4) with entries in {0,1,2} summing to ≤ 2."""
    if x.shape[-1] != 4:
        raise ValueError(f"two-hot tensors have 4 channels last, got shape {tuple(x.shape)}")
    if not bool(((x == 0) | (x == 1) | (x == 2)).all()):
        raise ValueError("two-hot entries must be 0, 1 or 2")
    if bool((x.sum(-1) > 2).any()):
        raise ValueError("a two-hot position carries more than two alleles")


_TABLE = {}


def _table(device, dtype) -> torch.Tensor:
    key = (str(device), dtype)
    if key not in _TABLE:
        t = torch.zeros(5, 4, dtype=dtype, device=device)
        t[torch.arange(4), torch.arange(4)] = 1
        _TABLE[key] = t
    return _TABLE[key]


def _lookup(codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` indexed by ``codes`` (…) -> (…, 4), on the codes' device.

    On the CPU (float32) a numpy ``take`` on the uint8 codes, ~10× faster than torch's embedding,
    which first widens the codes to int64; elsewhere an embedding lookup, one kernel on a GPU.
    """
    if codes.device.type == "cpu" and table.dtype == torch.float32 and codes.dtype == torch.uint8:
        return torch.from_numpy(np.take(table.numpy(), codes.numpy(), axis=0))
    return torch.nn.functional.embedding(codes.long(), table)


def one_hot(codes: torch.Tensor | np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """Base codes (…, L) -> one-hot (…, L, 4), built on the codes' device: a lookup in a 5×4
    table whose row 4 (N) is zero."""
    codes = torch.as_tensor(codes)
    return _lookup(codes, _table(codes.device, dtype))


def two_hot(codes_a, codes_b, dtype=torch.float32) -> torch.Tensor:
    """Two haplotypes' base codes (…, L) -> two-hot (…, L, 4)."""
    return one_hot(codes_a, dtype) + one_hot(codes_b, dtype)


_PAIR_TABLE = {}


def two_hot_pairs(pairs: torch.Tensor | np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """Pair codes ``5·a + b`` (…, L) of two haplotypes' base codes -> two-hot (…, L, 4).

    Diploid windows travel as one byte per position (varfx.personal); like :func:`one_hot`,
    an embedding lookup, here in a 25×4 table whose row 5·a + b is one-hot(a) + one-hot(b).
    """
    pairs = torch.as_tensor(pairs)
    key = (str(pairs.device), dtype)
    if key not in _PAIR_TABLE:
        base = _table(pairs.device, dtype)
        _PAIR_TABLE[key] = (base[:, None, :] + base[None, :, :]).reshape(25, 4)
    return _lookup(pairs, _PAIR_TABLE[key])


def one_hot_to_codes(x: torch.Tensor) -> torch.Tensor:
    """One-hot (…, L, 4) -> base codes (…, L) uint8 (all-zero positions -> 4)."""
    check_one_hot(x)
    codes = x.argmax(-1).to(torch.uint8)
    codes[x.sum(-1) == 0] = N_CODE
    return codes


def two_hot_to_codes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-hot (…, L, 4) -> an (a, b) pair of base-code tensors with a ≤ b per position.

    Phase is not recoverable from two-hot, so the smaller code goes first.  An
    allele that contributed nothing (N) comes back as 4.
    """
    check_two_hot(x)
    counts = x.round().to(torch.int64)
    first = torch.full(counts.shape[:-1], N_CODE, dtype=torch.uint8, device=x.device)
    second = first.clone()
    cum = counts.cumsum(-1)
    total = cum[..., -1]
    # the allele with rank 1 is the first channel where the running count reaches 1, etc.
    has1 = total >= 1
    has2 = total >= 2
    first[has1] = (cum >= 1).to(torch.int64).argmax(-1).to(torch.uint8)[has1]
    second[has2] = (cum >= 2).to(torch.int64).argmax(-1).to(torch.uint8)[has2]
    # a single allele (the other N): report it as (base, N)
    return first, second


def revcomp_codes(codes):
    """Reverse complement of base codes over the last axis (numpy or torch)."""
    if isinstance(codes, torch.Tensor):
        comp = torch.as_tensor(COMPLEMENT, device=codes.device)[codes.long()]
        return comp.flip(-1)
    return COMPLEMENT[np.asarray(codes)][..., ::-1]


def revcomp_hot(x: torch.Tensor) -> torch.Tensor:
    """Reverse complement of a one-hot or two-hot tensor (…, L, 4)."""
    return x.flip(-1).flip(-2)
