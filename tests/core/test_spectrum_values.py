"""`Spectrum` quantities against direct float64 computations, and its exact messages."""

import math
import re

import numpy as np
import pytest
import torch

from tensornet.core.spectrum import Spectrum, cut_label, cuts


def says(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


S = np.array([3.0, 2.0, 1.0, 0.5])
P = S**2 / (S**2).sum()


def spectrum(values=S, name=None):
    return Spectrum(torch.tensor(values, dtype=torch.float32), ["o"], ["i", "h"], name=name)


def test_values_are_stored_sorted_float64_on_the_cpu():
    sp = Spectrum(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float32), ["a"], ["b"])
    assert sp.values.dtype == torch.float64 and sp.values.device.type == "cpu"
    assert sp.values.tolist() == [3.0, 2.0, 1.0]
    assert sp.left_legs == ("a",) and sp.right_legs == ("b",)  # lists become tuples
    assert isinstance(sp.left_legs, tuple) and isinstance(sp.right_legs, tuple)
    exact = Spectrum(torch.tensor([1 / 3], dtype=torch.float64), ("a",), ("b",))
    assert float(exact.values[0]) == 1 / 3  # float64 input is kept to the last digit
    single = Spectrum(torch.tensor([0.1], dtype=torch.float32), ("a",), ("b",))
    assert float(single.values[0]) == float(np.float32(0.1))


@pytest.mark.gpu
def test_values_move_to_the_cpu():
    sp = Spectrum(torch.tensor([1.0, 2.0], device="cuda"), ("a",), ("b",))
    assert sp.values.device.type == "cpu" and sp.values.tolist() == [2.0, 1.0]


def test_invalid_values_are_refused_with_the_reason():
    with says(ValueError, "Spectrum values must be 1-D, got shape (2, 2)"):
        Spectrum(torch.ones(2, 2), ("a",), ("b",))
    with says(TypeError, "Spectrum values are singular values and must be real"):
        Spectrum(torch.ones(2, dtype=torch.complex64), ("a",), ("b",))
    with says(ValueError, "Spectrum values must be finite; got NaN or inf"):
        Spectrum(torch.tensor([1.0, math.inf]), ("a",), ("b",))
    with says(ValueError, "singular values are >= 0; got -0.5"):
        Spectrum(torch.tensor([1.0, -0.5]), ("a",), ("b",))


def test_normalized_probabilities_and_errors_match_numpy():
    sp = spectrum()
    np.testing.assert_allclose(sp.normalized().numpy(), S / 3.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sp.probabilities().numpy(), P, rtol=0, atol=1e-15)
    expected = [math.sqrt(P[k:].sum()) for k in range(len(S) + 1)]
    np.testing.assert_allclose(sp.relative_errors().numpy(), expected, rtol=0, atol=1e-15)
    assert sp.relative_errors().shape == (len(S) + 1,)
    for k in range(len(S) + 1):
        assert sp.discarded_weight(k) == pytest.approx(P[k:].sum(), abs=1e-15)
        assert sp.relative_error(k) == pytest.approx(expected[k], abs=1e-15)
    assert sp.norm == pytest.approx(math.sqrt((S**2).sum()), rel=1e-15)


def test_a_zero_and_an_empty_spectrum():
    zero = spectrum(np.zeros(3))
    assert zero.normalized().tolist() == [0.0, 0.0, 0.0]
    assert zero.probabilities().tolist() == [0.0, 0.0, 0.0]
    assert zero.entropy() == 0.0 and math.copysign(1, zero.entropy(alpha=2)) == 1.0
    empty = Spectrum(torch.zeros(0), ("a",), ("b",))
    assert empty.normalized().shape == (0,) and empty.relative_errors().tolist() == [0.0]
    assert empty.entropy() == 0.0 and empty.entropy(alpha=math.inf) == 0.0
    assert zero.entropy(alpha=math.inf) == 0.0
    small = spectrum(np.array([0.5, 0.25]))  # the largest value below 1
    assert small.normalized().tolist() == [1.0, 0.5]


def test_entropies_match_their_definitions():
    sp = spectrum()
    assert sp.entropy() == pytest.approx(-(P * np.log(P)).sum(), rel=1e-14)
    assert sp.entropy(alpha=2.0) == pytest.approx(-math.log((P**2).sum()), rel=1e-14)
    assert sp.entropy(alpha=0.5) == pytest.approx(math.log((P**0.5).sum()) / 0.5, rel=1e-14)
    assert sp.entropy(alpha=3.0) == pytest.approx(math.log((P**3).sum()) / -2.0, rel=1e-14)
    assert sp.entropy(alpha=0) == pytest.approx(math.log(4), rel=1e-15)
    assert sp.entropy(alpha=math.inf) == pytest.approx(-math.log(P.max()), rel=1e-14)
    assert sp.entropy(base=2) == pytest.approx(-(P * np.log2(P)).sum(), rel=1e-14)
    assert sp.entropy(base=10) == pytest.approx(-(P * np.log10(P)).sum(), rel=1e-14)
    assert sp.effective_rank() == pytest.approx(math.exp(-(P * np.log(P)).sum()), rel=1e-14)
    single = spectrum(np.array([2.0]))
    assert single.entropy() == 0.0 and single.entropy(alpha=0) == 0.0
    assert math.copysign(1, single.entropy()) == 1.0  # -(1 * log 1) is -0.0; reported as +0.0
    assert sp.entropy(base=0.5) == pytest.approx(-(P * np.log(P)).sum() / math.log(0.5), rel=1e-14)
    with_zero = spectrum(np.array([1.0, 1.0, 0.0]))
    assert with_zero.entropy(alpha=0) == pytest.approx(math.log(2), rel=1e-15)  # zeros not counted


def test_entropy_arguments_are_checked():
    sp = spectrum()
    with says(ValueError, "alpha must be >= 0, got -1"):
        sp.entropy(alpha=-1)
    with says(ValueError, "alpha must be >= 0, got nan"):
        sp.entropy(alpha=math.nan)
    for base in (0, -2, 1):
        with says(ValueError, f"base must be positive and not 1, got {base}"):
            sp.entropy(base=base)


def test_normalized_entropy_is_entropy_over_log_chi_max():
    sp = spectrum()
    assert not sp.trivial
    assert sp.normalized_entropy() == pytest.approx(-(P * np.log(P)).sum() / math.log(4), rel=1e-14)
    renyi2 = -math.log((P**2).sum()) / math.log(4)
    assert sp.normalized_entropy(alpha=2) == pytest.approx(renyi2, rel=1e-14)
    assert spectrum([2.0, 2.0, 2.0]).normalized_entropy() == pytest.approx(1.0, rel=1e-14)
    assert spectrum([5.0, 0.0, 0.0]).normalized_entropy() == 0.0
    assert spectrum([1.0, 1.0, 0.0, 0.0]).normalized_entropy() == pytest.approx(0.5, rel=1e-14)
    assert spectrum([2.0, 1.0]).normalized_entropy() == pytest.approx(
        spectrum([2.0, 1.0]).entropy(base=2), rel=1e-14
    )
    trivial = spectrum([3.0])
    assert trivial.trivial and math.isnan(trivial.normalized_entropy())
    row = trivial.as_dict()
    assert row["entropy"] == 0.0 and math.isnan(row["normalized_entropy"])
    assert spectrum([0.0]).trivial and Spectrum(torch.zeros(0), ["a"], ["b"]).trivial
    with says(ValueError, "alpha must be >= 0, got -1"):
        trivial.normalized_entropy(alpha=-1)


def test_as_dict_and_repr():
    sp = spectrum(name="conv1")
    row = sp.as_dict()
    assert row["name"] == "conv1" and row["cut"] == "o|ih"
    assert row["left_legs"] == "o" and row["right_legs"] == "i h" and row["chi_max"] == 4
    assert row["renyi2"] == pytest.approx(-math.log((P**2).sum()), rel=1e-14)
    assert row["entropy"] == pytest.approx(-(P * np.log(P)).sum(), rel=1e-14)
    assert row["normalized_entropy"] == pytest.approx(row["entropy"] / math.log(4), rel=1e-14)
    assert row["singular_values"] == [3.0, 2.0, 1.0, 0.5]
    two = Spectrum(torch.ones(1), ("a", "b"), ("c", "d"))
    assert two.as_dict()["left_legs"] == "a b" and two.as_dict()["right_legs"] == "c d"
    assert repr(sp).startswith("Spectrum(conv1: o|ih, chi_max=4, norm=3.775, entropy=")
    assert repr(spectrum()).startswith("Spectrum(o|ih, chi_max=4,")


def test_rank_for_and_chi_checks():
    sp = spectrum()
    assert sp.rank_for(None) == 4 and sp.rank_for(2) == 2
    assert sp.discarded_weight(10) == 0.0  # chi above chi_max keeps everything
    with says(ValueError, "chi must be an int >= 0, got -1"):
        sp.discarded_weight(-1)


def test_cut_labels():
    assert cut_label(("o",), ("i", "h", "w")) == "o|ihw"
    assert cut_label(("out",), ("in", "kh")) == "out|in,kh"
    assert cut_label(("o",), ("in",)) == "o|in"  # one long leg name is enough for commas
    assert cut_label(("ab",), ("c",)) == "ab|c"
    assert cut_label(("ab", "cd"), ("ef",)) == "ab,cd|ef"


def test_cuts_enumerate_every_bipartition_once():
    legs = "abcde"
    found = cuts(legs)
    assert len(found) == 2 ** (len(legs) - 1) - 1
    sides = {frozenset(a) for a, _ in found} | {frozenset(b) for _, b in found}
    assert len(sides) == 2 * len(found)  # no side appears twice
    four = cuts("abcd")
    assert [("".join(a), "".join(b)) for a, b in four] == [
        ("a", "bcd"), ("b", "acd"), ("c", "abd"), ("d", "abc"),
        ("ab", "cd"), ("ac", "bd"), ("ad", "bc"),
    ]  # fmt: skip
    with says(ValueError, "legs repeat: ('a', 'b', 'a')"):
        cuts("aba")
