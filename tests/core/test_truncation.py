import math
import re

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


# --- exact behaviour the mutation run found unpinned -------------------------------------------


def says(exc, message):
    """``pytest.raises`` for exactly this message."""
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def starts(exc, message):
    """``pytest.raises`` for a message starting with this text."""
    return pytest.raises(exc, match="^" + re.escape(message))


def test_max_rank_alone_can_keep_a_single_value():
    s = torch.tensor([3.0, 2.0, 1.0])
    assert Truncation(max_rank=1).rank(s) == 1
    assert Truncation(max_rank=5).rank(s) == 3


def test_abs_tol_is_a_norm_not_a_squared_norm():
    # discarded norms: keep 1 -> sqrt(0.5**2 + 0.4**2) = 0.640..., keep 2 -> 0.4
    s = torch.tensor([1.0, 0.5, 0.4], dtype=torch.float64)
    assert Truncation(abs_tol=0.65).rank(s) == 1
    assert Truncation(abs_tol=0.5).rank(s) == 2  # 0.5**2 = 0.25 < 0.41 but 0.5 * 2 = 1 > 0.41
    assert Truncation(abs_tol=0.39).rank(s) == 3


def test_rel_tol_against_a_supplied_reference_norm():
    # tail norms: keep 1 -> 0.640, keep 2 -> 0.4; with norm=2: rel 0.320 / 0.2
    s = torch.tensor([1.0, 0.5, 0.4], dtype=torch.float64)
    assert Truncation(rel_tol=0.33).rank(s, norm=2.0) == 1
    assert Truncation(rel_tol=0.25).rank(s, norm=torch.tensor(2.0)) == 2
    assert Truncation(rel_tol=0.33).rank(s) == 3  # against ||s|| = 1.19: 0.537 > 0.33


def test_a_tail_exactly_at_the_limit_is_accepted():
    """The tolerances are inclusive: ``||T - T_k|| <= tol`` (plus a 1e-12 relative slack)."""
    limit = 0.25 * (1 + 1e-12) + 1e-300  # the slacked limit of abs_tol = 0.5
    x = math.sqrt(limit)
    for _ in range(8):  # find x whose square is the limit exactly in float64
        if x * x == limit:
            break
        x = math.nextafter(x, math.inf if x * x < limit else -math.inf)
    assert x * x == limit
    s = torch.tensor([1.0, x], dtype=torch.float64)
    assert Truncation(abs_tol=0.5).rank(s) == 1


def test_tolerance_fields_accept_0d_tensors_and_refuse_others():
    t = Truncation(rel_tol=torch.tensor(0.25), abs_tol=torch.tensor(0.5, dtype=torch.float64))
    assert (t.rel_tol, t.abs_tol) == (0.25, 0.5)
    assert type(t.rel_tol) is float and type(t.abs_tol) is float
    with starts(TypeError, "Truncation.rel_tol must be a real number, got Tensor"):
        Truncation(rel_tol=torch.tensor([0.25]))
    with starts(TypeError, "Truncation.rel_tol must be a real number, got Tensor"):
        Truncation(rel_tol=torch.tensor(0.25 + 0j))
    with says(TypeError, "Truncation.abs_tol must be a real number, got str '1'"):
        Truncation(abs_tol="1")


def test_max_rank_is_stored_as_a_python_int():
    import numpy as np

    t = Truncation(max_rank=np.int64(3))
    assert type(t.max_rank) is int and t.max_rank == 3
    assert "max_rank" in vars(t) and len(vars(t)) == 4
    with says(TypeError, "Truncation.max_rank must be an int, got float 2.0"):
        Truncation(max_rank=2.0)


def test_range_messages_state_the_bounds_exactly():
    assert Truncation(abs_tol=0.0).abs_tol == 0.0  # abs_tol is closed at 0
    with says(ValueError, "Truncation.abs_tol must be >= 0.0, got -1.0"):
        Truncation(abs_tol=-1)
    with says(ValueError, "Truncation.rel_tol must be >= 0.0 and <= 1.0, got 2.0"):
        Truncation(rel_tol=2)
    with says(ValueError, "Truncation.keep_energy must be > 0.0 and <= 1.0, got 0.0"):
        Truncation(keep_energy=0)


def test_as_truncation_messages():
    with says(TypeError, "trunc must be a Truncation, an int (max_rank) or None, got float"):
        as_truncation(0.5)
    with says(ValueError, "chi as an int is a max_rank and must be >= 1, got 0"):
        as_truncation(0, field="chi")


def test_spectrum_messages():
    with says(ValueError, "singular values must be 1-D, got shape (2, 2)"):
        Truncation(max_rank=1).rank(torch.ones(2, 2))
    with says(ValueError, "cannot truncate an empty spectrum (a dimension of size 0)"):
        Truncation(max_rank=1).rank(torch.ones(0))
    with says(ValueError, "singular values contain NaN or inf; the tensor is not finite"):
        Truncation(rel_tol=0.1).rank(torch.tensor([1.0, math.nan]))


def test_split_policy_values():
    t = Truncation(max_rank=4, rel_tol=0.3, abs_tol=0.6, keep_energy=0.91)
    per_step = t.split(9)
    assert per_step.max_rank == 4
    assert per_step.rel_tol == pytest.approx(0.1, rel=1e-15)
    assert per_step.abs_tol == pytest.approx(0.2, rel=1e-15)
    assert per_step.keep_energy == pytest.approx(0.99, rel=1e-15)
    assert t.split(1) == t
    only_rel = Truncation(rel_tol=0.2).split(4)
    assert (only_rel.abs_tol, only_rel.keep_energy, only_rel.rel_tol) == (None, None, 0.1)
    assert Truncation(max_rank=2).split(4) == Truncation(max_rank=2)
    for bad in (0, 1.5, "2"):
        with starts(ValueError, "steps must be an int >= 1, got "):
            t.split(bad)
