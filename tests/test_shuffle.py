"""varfx.shuffle: dinucleotide shuffles keep what they must, are seeded, and are uniform."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from varfx.shuffle import dinuc_shuffle


def codes_of(text: str) -> np.ndarray:
    table = {"A": 0, "C": 1, "G": 2, "T": 3, "N": 4}
    return np.array([table[b] for b in text], dtype=np.uint8)


def text_of(codes) -> str:
    return "".join("ACGTN"[int(c)] for c in codes)


def pairs(text: str) -> Counter:
    """Dinucleotide counts, by hand (independent of varfx.shuffle.dinuc_counts)."""
    return Counter(text[i:i + 2] for i in range(len(text) - 1))


def random_codes(n: int, seed: int, alphabet: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, alphabet, n).astype(np.uint8)


@pytest.mark.parametrize("n", [3, 4, 10, 64, 5000])
def test_dinucleotides_first_and_last_base_kept(n):
    x = random_codes(n, n)
    out = dinuc_shuffle(x, 8, rng=1)
    assert out.shape == (8, n) and out.dtype == np.uint8
    want = pairs(text_of(x))
    for row in out:
        t = text_of(row)
        assert pairs(t) == want
        assert t[0] == text_of(x)[0] and t[-1] == text_of(x)[-1]
        assert Counter(t) == Counter(text_of(x))


def test_shuffles_actually_rearrange_long_sequences():
    x = random_codes(5000, 3)
    out = dinuc_shuffle(x, 4, rng=2)
    for row in out:
        assert (row != x).mean() > 0.5  # random 4-letter sequences: ~3/4 of positions change
    assert len({row.tobytes() for row in out}) == 4


def test_seeded_deterministic_and_seed_dependent():
    x = random_codes(500, 5)
    a = dinuc_shuffle(x, 5, rng=11)
    b = dinuc_shuffle(x, 5, rng=11)
    c = dinuc_shuffle(x, 5, rng=12)
    d = dinuc_shuffle(x, 5, rng=[11, 1, 3])
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    assert np.array_equal(dinuc_shuffle(x, 2, rng=g1), dinuc_shuffle(x, 2, rng=g2))
    assert not np.array_equal(dinuc_shuffle(x, 1, rng=None), dinuc_shuffle(x, 1, rng=None))


def test_n_kept_in_place_and_each_stretch_shuffled_on_its_own():
    text = "ACGTTGCAAC" + "NNNN" + "GGATCCATGACT" + "N" + "TA" + "N" + "CATCATGGAC"
    x = codes_of(text)
    for row in dinuc_shuffle(x, 20, rng=4):
        t = text_of(row)
        assert [i for i, b in enumerate(t) if b == "N"] == [i for i, b in enumerate(text) if b == "N"]
        for part_new, part_old in zip(t.split("N"), text.split("N")):
            assert pairs(part_new) == pairs(part_old)
            if part_old:
                assert part_new[0] == part_old[0] and part_new[-1] == part_old[-1]
        assert t[26:30] == "NTAN"  # a 2-bp stretch has no other arrangement


def test_n_as_a_symbol_moves_but_keeps_counts():
    text = "ACGNNTACGATNGCAT" * 4
    x = codes_of(text)
    rows = dinuc_shuffle(x, 30, rng=5, keep_n=False)
    moved = False
    for row in rows:
        t = text_of(row)
        assert pairs(t) == pairs(text)
        moved |= [i for i, b in enumerate(t) if b == "N"] != [i for i, b in enumerate(text) if b == "N"]
    assert moved


@pytest.mark.parametrize("text", ["", "A", "AC", "NNNN", "ANA", "ACA"])
def test_short_and_all_n(text):
    x = codes_of(text)
    out = dinuc_shuffle(x, 3, rng=0)
    assert out.shape == (3, len(text))
    for row in out:
        assert text_of(row) == text  # at most one arrangement keeps the ends and the dinucleotides


def test_zero_shuffles_and_bad_input():
    assert dinuc_shuffle(codes_of("ACGTAC"), 0, rng=0).shape == (0, 6)
    with pytest.raises(ValueError, match="1-D"):
        dinuc_shuffle(np.zeros((2, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        dinuc_shuffle(np.zeros(5, dtype=np.int64))


def test_uniform_over_every_sequence_with_the_same_dinucleotides():
    """Brute force: all distinct arrangements of a short sequence that keep its dinucleotide counts
    (and so its first and last base) are reached, and about equally often."""
    text = "ACAGTACGGT"
    want = pairs(text)
    valid = {"".join(p) for p in itertools.permutations(text)
             if p[0] == text[0] and p[-1] == text[-1] and pairs("".join(p)) == want}
    n = 12000
    seen = Counter(text_of(r) for r in dinuc_shuffle(codes_of(text), n, rng=9))
    assert set(seen) == valid
    expected = n / len(valid)
    chi2 = sum((seen[s] - expected) ** 2 / expected for s in valid)
    dof = len(valid) - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof)  # far inside the tail for a uniform draw
