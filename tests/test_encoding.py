import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from varfx import encoding as enc

seqs = st.text(alphabet="ACGTN", min_size=1, max_size=200)


def test_codes_for_every_letter():
    assert enc.encode("ACGTNacgtnRYKMSWBDHV-").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4] + [4] * 11


def test_one_hot_values():
    x = enc.one_hot(enc.encode("ACGTN"))
    assert x.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]


@given(seqs)
def test_codes_text_round_trip(s):
    assert enc.decode(enc.encode(s)) == s


@given(seqs)
def test_one_hot_round_trip(s):
    codes = enc.encode(s)
    x = enc.one_hot(codes)
    enc.check_one_hot(x)
    assert enc.one_hot_to_codes(x).numpy().tolist() == codes.tolist()


@given(seqs)
def test_revcomp_hot_equals_hot_of_revcomp_codes(s):
    codes = enc.encode(s)
    assert torch.equal(enc.revcomp_hot(enc.one_hot(codes)), enc.one_hot(enc.revcomp_codes(codes).copy()))
    assert enc.decode(enc.revcomp_codes(enc.revcomp_codes(codes))) == s


def test_revcomp_text():
    assert enc.decode(enc.revcomp_codes(enc.encode("AACGTN"))) == "NACGTT"


@given(seqs, seqs)
def test_two_hot_round_trip_and_revcomp(a, b):
    n = min(len(a), len(b))
    ca, cb = enc.encode(a[:n]), enc.encode(b[:n])
    x = enc.two_hot(ca, cb)
    enc.check_two_hot(x)
    first, second = enc.two_hot_to_codes(x)
    # the unordered pair of bases comes back (N alleles contribute nothing)
    for i in range(n):
        want = sorted(c for c in (ca[i], cb[i]) if c != 4)
        got = sorted(c for c in (int(first[i]), int(second[i])) if c != 4)
        assert got == want
    # reverse complement of two-hot = two-hot of the two reverse-complemented haplotypes
    rc = enc.two_hot(enc.revcomp_codes(ca).copy(), enc.revcomp_codes(cb).copy())
    assert torch.equal(enc.revcomp_hot(x), rc)


def test_two_hot_heterozygote_complements():
    # A/T heterozygote stays A+T, C/G stays C+G, A/C becomes G+T
    x = enc.two_hot(enc.encode("ACA"), enc.encode("TGC"))
    rc = enc.revcomp_hot(x)
    assert rc[2].tolist() == [1, 0, 0, 1]  # from position 0 (A/T)
    assert rc[1].tolist() == [0, 1, 1, 0]  # from position 1 (C/G)
    assert rc[0].tolist() == [0, 0, 1, 1]  # from position 2 (A/C -> T/G)
    assert enc.two_hot(enc.encode("G"), enc.encode("G")).tolist() == [[0, 0, 2, 0]]


def test_validators_reject_bad_input():
    with pytest.raises(ValueError, match="0..4"):
        enc.check_codes(np.array([0, 5], dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        enc.check_codes(np.array([0, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="more than one base"):
        enc.check_one_hot(torch.tensor([[1.0, 1.0, 0, 0]]))
    with pytest.raises(ValueError, match="0 or 1"):
        enc.check_one_hot(torch.tensor([[0.5, 0, 0, 0]]))
    with pytest.raises(ValueError, match="more than two"):
        enc.check_two_hot(torch.tensor([[2.0, 1.0, 0, 0]]))
    with pytest.raises(ValueError, match="4 channels"):
        enc.check_two_hot(torch.zeros(3, 5))
