import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensornet import Truncation
from tensornet.formats import Tucker
from tensornet.formats.tucker import tucker_params

from .helpers import F64, best_tail, decaying, gen, random_tucker_dense, rel_err


@pytest.mark.parametrize("method", ["hosvd", "hooi"])
def test_full_rank_reproduces_input(method, device):
    x = torch.randn(3, 4, 5, generator=gen(0), dtype=F64).to(device)
    t = Tucker.from_dense(x, method=method, legs=("a", "b", "c"))
    assert t.ranks == (3, 4, 5) and t.network.open_legs == ("a", "b", "c")
    assert rel_err(x, t.to_dense()) < 1e-10 and t.error < 1e-10
    assert t.device.type == device.type


def test_known_ranks_are_recovered():
    x = random_tucker_dense((6, 7, 8), (2, 3, 4), seed=1)
    t = Tucker.from_dense(x, Truncation(rel_tol=1e-10))
    assert t.ranks == (2, 3, 4)
    assert rel_err(x, t.to_dense()) < 1e-10
    for u in t.factors:  # orthonormal columns
        torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1], dtype=F64))


def test_error_matches_dense_and_hosvd_is_multilinear_projection():
    x = decaying((6, 5, 7), seed=2)
    t = Tucker.from_dense(x, ranks=(2, 3, 2))
    assert t.error == pytest.approx(rel_err(x, t.to_dense()), rel=1e-8)
    # each factor spans the leading left singular vectors of its unfolding
    for k, u in enumerate(t.factors):
        m = x.movedim(k, 0).reshape(x.shape[k], -1)
        uu = torch.linalg.svd(m, full_matrices=False)[0][:, : u.shape[1]]
        torch.testing.assert_close(u @ u.T, uu @ uu.T)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 6), min_size=3, max_size=4),
    tol=st.floats(1e-3, 0.7),
    seed=st.integers(0, 10_000),
)
def test_hosvd_error_is_within_rel_tol(sizes, tol, seed):
    x = decaying(sizes, seed=seed, rate=0.6)
    t = Tucker.from_dense(x, Truncation(rel_tol=tol))
    assert rel_err(x, t.to_dense()) <= tol * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 6), min_size=3, max_size=4),
    rank=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_hosvd_is_within_sqrt_n_of_hooi(sizes, rank, seed):
    x = torch.randn(*sizes, generator=gen(seed), dtype=F64)
    ranks = [min(rank, n) for n in sizes]
    hosvd = Tucker.from_dense(x, ranks=ranks)
    hooi = Tucker.from_dense(x, ranks=ranks, method="hooi", max_iter=30)
    e_hosvd, e_hooi = rel_err(x, hosvd.to_dense()), rel_err(x, hooi.to_dense())
    assert e_hosvd <= math.sqrt(len(sizes)) * e_hooi + 1e-12
    assert e_hooi <= e_hosvd + 1e-10  # HOOI starts from the HOSVD and never gets worse
    # and both are above the best single-mode approximation (a lower bound on the optimum)
    lower = max(best_tail(x, [k], r) for k, r in enumerate(ranks)) / float(x.norm())
    assert e_hooi >= lower - 1e-10


def test_hooi_history_decreases_and_iterations_are_settable():
    x = decaying((8, 7, 6), seed=3, rate=0.8)
    t = Tucker.from_dense(x, ranks=(2, 2, 2), method="hooi", max_iter=4, tol=0.0)
    assert len(t.history) == 4
    assert all(b <= a + 1e-12 for a, b in zip(t.history, t.history[1:]))
    assert t.history[-1] == pytest.approx(t.error, rel=1e-8)
    quick = Tucker.from_dense(x, ranks=(2, 2, 2), method="hooi", max_iter=100, tol=1e-2)
    assert len(quick.history) == 2  # the second sweep changes the error by less than 1e-2


def test_tucker2_on_kernel_channels():
    k = torch.randn(8, 6, 3, 3, generator=gen(4), dtype=F64)
    legs = ("out", "in", "kh", "kw")
    t = Tucker.from_dense(k, ranks=(4, 3), legs=legs, modes=("out", "in"))
    assert t.network.open_legs.count("kh") == 1 and set(t.network.open_legs) == set(legs)
    assert t.core.shape == (4, 3, 3, 3) and t.ranks == (4, 3)
    assert t.num_params == 4 * 3 * 9 + 8 * 4 + 6 * 3 == tucker_params((8, 6, 3, 3), (0, 1), (4, 3))
    # equals projecting the out and in modes on the leading singular vectors
    u0 = torch.linalg.svd(k.reshape(8, -1), full_matrices=False)[0][:, :4]
    u1 = torch.linalg.svd(k.movedim(1, 0).reshape(6, -1), full_matrices=False)[0][:, :3]
    ref = torch.einsum("ai,bj,ijxy->abxy", u0 @ u0.T, u1 @ u1.T, k)
    torch.testing.assert_close(t.to_dense(), ref)
    full = Tucker.from_dense(k, legs=legs, modes=("out", "in"))
    assert rel_err(k, full.to_dense()) < 1e-10


def test_truncate_an_existing_tucker():
    x = decaying((6, 5, 7), seed=5)
    full = Tucker.from_dense(x)
    small = full.truncate(Truncation(max_rank=2))
    direct = Tucker.from_dense(x, ranks=(2, 2, 2))
    assert small.ranks == (2, 2, 2)
    torch.testing.assert_close(small.to_dense(), direct.to_dense())
    assert small.error == pytest.approx(rel_err(x, small.to_dense()), rel=1e-6)
    tol = small.truncate(Truncation(rel_tol=0.05))
    assert rel_err(small.to_dense(), tol.to_dense()) <= 0.05


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_fraction_budget(fraction):
    shape = (12, 10, 3, 3)
    x = torch.randn(*shape, generator=gen(6), dtype=F64)
    t = Tucker.from_dense(x, fraction=fraction, legs=("o", "i", "h", "w"), modes=("o", "i"))
    budget = fraction * math.prod(shape)
    assert t.num_params <= budget
    cap = max(t.ranks)
    assert cap >= 12 or tucker_params(shape, (0, 1), (min(cap + 1, 12), min(cap + 1, 10))) > budget


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ranks=(2, 2)), "ranks must have 3 entries"),
        (dict(fraction=0), "fraction must be in"),
        (dict(legs=("a",)), "legs has 1 names"),
        (dict(modes=("zz",)), "modes"),
        (dict(method="als"), "method must be"),
        (dict(method="hooi", max_iter=0), "max_iter"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Tucker.from_dense(torch.ones(3, 4, 5, dtype=F64), **kwargs)


def project_others(x, factors, keep):
    """``x`` times ``U_j^T`` on every mode but ``keep`` (the tensor HOOI's step ``keep`` sees)."""
    y = x
    for j, u in enumerate(factors):
        if j != keep:
            y = torch.movedim(torch.tensordot(u.T, y, dims=([1], [j])), 0, j)
    return y


def test_hooi_converges_to_a_stationary_point_and_beats_hosvd():
    # A Gaussian tensor at ranks (2, 2, 2): the HOSVD is not optimal there, HOOI improves on it.
    x = torch.randn(7, 6, 5, generator=gen(11), dtype=F64)
    ranks = (2, 2, 2)
    hosvd = Tucker.from_dense(x, ranks=ranks)
    hooi = Tucker.from_dense(x, ranks=ranks, method="hooi", max_iter=500, tol=1e-14)
    e_hosvd, e_hooi = rel_err(x, hosvd.to_dense()), rel_err(x, hooi.to_dense())
    assert e_hooi < e_hosvd - 1e-4  # a strict improvement, not HOSVD again
    # stationarity: every factor spans the leading left singular vectors of the unfolding of x
    # projected on the other factors (the HOOI fixed-point condition)
    factors = hooi.factors
    for k, u in enumerate(factors):
        y = project_others(x, factors, k)
        m = y.movedim(k, 0).reshape(y.shape[k], -1)
        lead = torch.linalg.svd(m, full_matrices=False)[0][:, : ranks[k]]
        torch.testing.assert_close(u @ u.T, lead @ lead.T, atol=1e-6, rtol=0)
    # the core is the projection of x on all factors, and the error is ||x||^2 - ||core||^2
    core = project_others(x, factors, -1)
    torch.testing.assert_close(hooi.core, core)
    assert hooi.error == pytest.approx(
        math.sqrt(1 - float(core.norm()) ** 2 / float(x.norm()) ** 2), rel=1e-8
    )


# -- details pinned down by mutation testing -------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trunc=2, ranks=2), r"^Tucker\.from_dense: give at most one of"),
        (dict(legs=("a",)), r"^Tucker\.from_dense: legs has 1 names"),
        (dict(method="als"), r"^Tucker\.from_dense: method must be 'hosvd' or 'hooi'"),
        (dict(method="hooi", max_iter=True), r"^Tucker\.from_dense: max_iter must be a positive"),
        (dict(method="hooi", tol=-1.0), r"^Tucker\.from_dense: tol must be a number >= 0"),
        (dict(method="hooi", tol="small"), r"^Tucker\.from_dense: tol must be a number >= 0"),
        (dict(modes=("zz",)), r"^Tucker\.from_dense: modes \('zz',\) must be distinct"),
        (dict(modes=()), r"^Tucker\.from_dense: modes \(\) must be distinct"),
        (dict(modes=("d0", "d0")), r"^Tucker\.from_dense: modes \('d0', 'd0'\) must be"),
        (dict(ranks=(2, 2)), r"^Tucker\.from_dense: ranks must have 3 entries"),
        (dict(fraction=1e-3), r"^Tucker\.from_dense: fraction too small"),
    ],
)
def test_from_dense_errors_start_with_the_caller(kwargs, match):
    """Every refusal of from_dense names the entry point and the field."""
    with pytest.raises(ValueError, match=match):
        Tucker.from_dense(torch.ones(3, 4, 5, dtype=F64), **kwargs)


def test_other_entry_points_name_themselves_in_errors():
    """structure_for, truncate, from_factors and the constructor name themselves and the field."""
    with pytest.raises(ValueError, match=r"^Tucker\.structure_for: shape must be positive"):
        Tucker.structure_for((3, 0))
    with pytest.raises(ValueError, match=r"^Tucker\.structure_for: modes \('x',\) must be"):
        Tucker.structure_for((3, 4), modes=("x",))
    with pytest.raises(ValueError, match=r"^Tucker\.structure_for: ranks must have 2 entries"):
        Tucker.structure_for((3, 4), (1, 2, 3))
    t = Tucker.from_dense(torch.randn(3, 4, 5, generator=gen(20), dtype=F64))
    with pytest.raises(ValueError, match=r"^Tucker\.truncate: ranks must have 3 entries"):
        t.truncate(ranks=(1, 1))
    tensors = t.factor_tensors()
    del tensors["U_d1"]
    with pytest.raises(ValueError, match=r"^Tucker\.from_factors: tensors must be the factors"):
        Tucker.from_factors(t.structure, tensors)
    with pytest.raises(ValueError, match=r"^Tucker: 1 factors for 3 modes"):
        Tucker(t.core, t.factors[:1], t.legs)


def test_hooi_max_iter_one_is_allowed():
    """max_iter=1 (the smallest positive int) runs exactly one sweep."""
    x = decaying((5, 4, 3), seed=21)
    t = Tucker.from_dense(x, ranks=2, method="hooi", max_iter=1)
    assert len(t.history) == 1 and t.history[0] == pytest.approx(t.error, rel=1e-8)


def test_hooi_defaults_are_fifty_sweeps_and_tol_1e_10():
    """The documented defaults: max_iter=50, tol=1e-10 (same run as passing them explicitly)."""
    x = torch.randn(6, 5, 4, generator=gen(22), dtype=F64)
    default = Tucker.from_dense(x, ranks=2, method="hooi")
    explicit = Tucker.from_dense(x, ranks=2, method="hooi", max_iter=50, tol=1e-10)
    assert default.history == explicit.history and len(default.history) > 2
    never_stops = Tucker.from_dense(x, ranks=2, method="hooi", tol=0.0)
    assert len(never_stops.history) == 50


def test_hooi_with_tol_zero_runs_every_sweep_even_when_the_error_repeats():
    """tol=0 stops only at max_iter: with one mode every sweep gives the same error exactly."""
    x = torch.randn(5, 6, generator=gen(23), dtype=F64)
    t = Tucker.from_dense(x, ranks=(2,), modes=("d0",), method="hooi", max_iter=5, tol=0.0)
    assert len(t.history) == 5 and len(set(t.history)) == 1


def test_hooi_history_at_full_rank_is_zero():
    """At full rank every sweep is exact: the clamped error is ~0, whatever the norm of x."""
    x = 10.0 * torch.randn(3, 4, 5, generator=gen(24), dtype=F64)
    t = Tucker.from_dense(x, method="hooi", max_iter=3, tol=0.0)
    assert len(t.history) == 3 and max(t.history) < 1e-6


def test_hosvd_history_is_its_error():
    """HOSVD has one history entry: its error."""
    t = Tucker.from_dense(decaying((5, 4, 3), seed=25), ranks=2)
    assert t.history == (t.error,) and t.error > 0


def test_error_is_relative_for_any_norm():
    """The reported error is ||x - approx|| / ||x|| also for small and unit-norm tensors."""
    small = 1e-3 * decaying((6, 5, 4), seed=26)
    t = Tucker.from_dense(small, ranks=2)
    assert t.error == pytest.approx(rel_err(small, t.to_dense()), rel=1e-8) and t.error > 1e-3
    unit = 0.5 * torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64)  # norm exactly 1
    assert float(unit.norm()) == 1.0
    u = Tucker.from_dense(unit, ranks=1)
    assert u.error == pytest.approx(rel_err(unit, u.to_dense()), rel=1e-8) and u.error > 0.1


def test_zero_tensor_has_zero_error():
    """A zero tensor is represented exactly: error 0, not 1."""
    t = Tucker.from_dense(torch.zeros(3, 4, 2, dtype=F64), ranks=1)
    assert t.error == 0.0
    assert torch.count_nonzero(t.to_dense()) == 0


def test_projection_error_uses_the_norms_unless_the_error_is_tiny():
    """Above ~1e-4: sqrt(||x||^2 - ||core||^2) / ||x||; below it approx() is measured."""
    from tensornet.formats.tucker import projection_error

    x = torch.tensor([3.0, 4.0], dtype=F64)  # norm 5
    core = torch.tensor([3.0], dtype=F64)  # the formula gives 4 / 5
    wrong = torch.tensor([0.0, 0.0], dtype=F64)  # a reconstruction the formula never looks at
    assert projection_error(x, core, lambda: wrong) == pytest.approx(0.8, rel=1e-12)
    close = torch.tensor([5.0 * (1 - 1e-12)], dtype=F64)  # formula below 1e-8: measure directly
    approx = torch.tensor([3.0, 4.0 + 1e-3], dtype=F64)
    assert projection_error(x, close, lambda: approx) == pytest.approx(1e-3 / 5, rel=1e-9)


def test_constructor_defaults_and_views():
    """Tucker(core, factors, legs) decomposes every leg; history is empty; node() finds nodes."""
    x = torch.randn(3, 4, 5, generator=gen(27), dtype=F64)
    t = Tucker.from_dense(x, ranks=(2, 3, 2))
    direct = Tucker(t.core, t.factors, t.legs)
    assert direct.modes == t.legs and direct.history == () and direct.error is None
    torch.testing.assert_close(direct.to_dense(), t.to_dense(), rtol=0, atol=0)
    torch.testing.assert_close(t.node("U_d1").transpose(("d1", "r_d1")).tensor, t.factors[1])
    again = Tucker.from_factors(t.structure, t.factor_tensors(), error=0.25)
    assert again.error == 0.25


def test_tucker2_defaults_to_the_first_two_legs():
    """Tucker2 decomposes out and in only; the spatial legs stay whole in the core."""
    from tensornet.formats import Tucker2

    k = torch.randn(6, 5, 3, 3, generator=gen(28), dtype=F64)
    t = Tucker2.from_dense(k, ranks=(2, 3), legs=("out", "in", "kh", "kw"))
    assert t.modes == ("out", "in") and t.core.shape == (2, 3, 3, 3)
    s = Tucker2.structure_for((6, 5, 3, 3), legs=("out", "in", "kh", "kw"))
    assert s.option("modes") == ("out", "in") and s.ranks == (6, 5)


def test_structure_for_partial_modes_and_integer_max_ranks():
    """structure_for honours modes; maximal ranks min(n, prod / n) are ints (JSON as ints)."""
    s = Tucker.structure_for((8, 2, 3), legs=("a", "b", "c"), modes=("a", "b"))
    assert s.ranks == s.max_ranks == (6, 2)
    assert all(type(r) is int for r in s.max_ranks + s.ranks)
    assert [f.shape for f in s.factors] == [(6, 2, 3), (8, 6), (2, 2)]
    assert s.num_params == 36 + 48 + 4


@pytest.mark.parametrize("fraction", [0.15, 0.4])
def test_fraction_uses_only_the_decomposed_modes(fraction):
    """The fraction's rank cap is the largest whose partial-Tucker count fits the budget."""
    shape = (12, 10, 3, 3)
    x = torch.randn(*shape, generator=gen(29), dtype=F64)
    t = Tucker.from_dense(x, fraction=fraction, legs=("o", "i", "h", "w"), modes=("o", "i"))
    budget = fraction * math.prod(shape)
    fits = [r for r in range(1, 13) if tucker_params(shape, (0, 1), (min(r, 12), min(r, 10)))
            <= budget]
    cap = max(fits)
    assert t.ranks == (min(cap, 12), min(cap, 10))
