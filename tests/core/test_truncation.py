import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tensornet import Truncation, as_truncation


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_rank": 0}, "max_rank"),
        ({"max_rank": 2.5}, "max_rank"),
        ({"max_rank": True}, "max_rank"),
        ({"rel_tol": -0.1}, "rel_tol"),
        ({"rel_tol": float("nan")}, "rel_tol"),
        ({"abs_tol": -1}, "abs_tol"),
        ({"abs_tol": "1"}, "abs_tol"),
        ({"keep_energy": 0.0}, "keep_energy"),
        ({"keep_energy": 1.5}, "keep_energy"),
    ],
)
def test_invalid_fields_are_named(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=f"Truncation.{field}"):
        Truncation(**kwargs)


def test_as_truncation():
    assert as_truncation(None) is None
    assert as_truncation(4) == Truncation(max_rank=4)
    with pytest.raises(TypeError, match="trunc must be"):
        as_truncation(0.5)


def test_each_field_on_a_known_spectrum():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    total = float((s**2).sum())
    assert Truncation().rank(s) == 5
    assert Truncation(max_rank=2).rank(s) == 2
    assert Truncation(max_rank=9).rank(s) == 5
    # discarded norms: k=2 -> sqrt(1.26), k=3 -> sqrt(0.26), k=4 -> 0.1
    assert Truncation(abs_tol=math.sqrt(1.26)).rank(s) == 2
    assert Truncation(abs_tol=0.11).rank(s) == 4
    assert Truncation(rel_tol=0.11 / math.sqrt(total)).rank(s) == 4
    assert Truncation(rel_tol=0.0).rank(s) == 5
    assert Truncation(keep_energy=20.0 / total).rank(s) == 2
    assert Truncation(keep_energy=1.0).rank(s) == 5
    # strictest (smallest rank) wins
    assert Truncation(max_rank=3, abs_tol=0.11).rank(s) == 3
    assert Truncation(max_rank=4, keep_energy=20.0 / total).rank(s) == 2
    # a reference norm larger than the matrix makes rel_tol looser
    assert Truncation(rel_tol=0.1).rank(s, norm=100.0) == 1


def test_zero_spectrum_keeps_one():
    assert Truncation(rel_tol=0.1).rank(torch.zeros(4)) == 1


@given(
    values=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=30),
    rel_tol=st.floats(0, 1.0),
    keep=st.floats(0.01, 1.0),
)
def test_tolerance_ranks_are_minimal(values, rel_tol, keep):
    s = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    s2 = s**2
    total = float(s2.sum())

    def err2(k):
        return float(s2[k:].sum())

    k = Truncation(rel_tol=rel_tol).rank(s)
    assert err2(k) <= rel_tol**2 * total * (1 + 1e-9) + 1e-300
    if k > 1:
        assert err2(k - 1) > rel_tol**2 * total * (1 - 1e-9)
    k = Truncation(keep_energy=keep).rank(s)
    assert total - err2(k) >= keep * total * (1 - 1e-9)
    if k > 1:
        assert total - err2(k - 1) < keep * total * (1 + 1e-9)


def test_split_spreads_tolerance():
    t = Truncation(rel_tol=0.3, max_rank=5).split(9)
    assert t.rel_tol == pytest.approx(0.1) and t.max_rank == 5


def test_non_finite_spectra_are_refused():
    with pytest.raises(ValueError, match="NaN or inf"):
        Truncation(rel_tol=0.1).rank(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="finite"):
        __import__("tensornet").Spectrum(torch.tensor([1.0, float("inf")]), ("a",), ("b",))
