import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensornet import Node, Truncation
from tensornet.formats import TT
from tensornet.formats.tt import tt_params

from .helpers import F64, decaying, gen, random_tt_dense, rel_err, unfold


def test_full_rank_reproduces_input_and_names_legs(device):
    x = torch.randn(3, 4, 5, 2, generator=gen(0), dtype=F64).to(device)
    tt = TT.from_dense(x, legs=("a", "b", "c", "d"))
    assert tt.network.open_legs == ("a", "b", "c", "d")
    assert tt.ranks == (3, 10, 2) and tt.error < 1e-12
    assert rel_err(x, tt.to_dense()) < 1e-10
    assert tt.device.type == device.type and tt.dtype == F64
    assert set(tt.bond_legs) == {"r1", "r2", "r3"}


def test_chosen_leg_order_and_node_input():
    x = torch.randn(3, 4, 5, generator=gen(1), dtype=F64)
    tt = TT.from_dense(Node(x, ("a", "b", "c")), order=("c", "a", "b"))
    assert tt.order == ("c", "a", "b") and tt.legs == ("a", "b", "c")
    assert tt.ranks == (5, 4)  # min(5, 12) and min(15, 4)
    assert rel_err(x, tt.to_dense()) < 1e-10
    # contracting the network in any output order matches the dense permutation
    reordered = tt.network.contract(output=("c", "b", "a")).tensor
    torch.testing.assert_close(reordered, x.permute(2, 1, 0))


def test_bond_names_avoid_dense_legs():
    x = torch.randn(2, 3, 4, dtype=F64)
    tt = TT.from_dense(x, legs=("r1", "r2", "x"))
    assert not set(tt.bond_legs) & {"r1", "r2", "x"}
    assert tt.network.open_legs == ("r1", "r2", "x")


def test_known_ranks_are_recovered():
    x = random_tt_dense((4, 5, 6, 3), (2, 3, 2), seed=2)
    tt = TT.from_dense(x, Truncation(rel_tol=1e-10))
    assert tt.ranks == (2, 3, 2)
    assert rel_err(x, tt.to_dense()) < 1e-10


def multiscale(seed):
    """T = sum_i 10^(-3(i-1)) a_i o b_i o c_i with normalised random a_i, b_i, c_i."""
    g = gen(seed)
    factors = []
    for n in (20, 30, 32):
        m = torch.randn(n, 4, generator=g, dtype=F64)
        factors.append(m / m.norm(dim=0))
    w = 10.0 ** (-3 * torch.arange(4, dtype=F64))
    return torch.einsum("r,ar,br,cr->abc", w, *factors)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiscale_rounding(seed):
    t = multiscale(seed)
    tt = TT.from_dense(t, Truncation(rel_tol=1e-13))
    assert tt.ranks == (4, 4)  # a rank-4 CP tensor; rel_tol only drops rounding noise
    for tol, ranks in [(1e-9, (3, 3)), (1e-6, (2, 2)), (1e-3, (1, 1))]:
        r = tt.round(Truncation(rel_tol=tol))
        assert r.ranks == ranks
        assert rel_err(t, r.to_dense()) <= tol
        assert r.error == pytest.approx(rel_err(t, r.to_dense()), rel=1e-3)


def test_multiscale_uniform_budget_keeps_one_more_term():
    # Each dropped term's relative weight (~0.96-1.0 x tol) is above the uniform per-step share
    # tol / sqrt(2), so equal shares cannot drop it; the adaptive budget can (see the test above).
    tt = TT.from_dense(multiscale(0), Truncation(rel_tol=1e-13))
    got = [tt.round(Truncation(rel_tol=tol), budget="uniform").ranks for tol in (1e-9, 1e-6, 1e-3)]
    assert got == [(4, 4), (3, 3), (2, 2)]


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 5), min_size=2, max_size=4),
    tol=st.floats(1e-3, 0.7),
    seed=st.integers(0, 10_000),
    budget=st.sampled_from(["uniform", "adaptive"]),
)
def test_tt_svd_error_is_within_rel_tol(sizes, tol, seed, budget):
    x = decaying(sizes, seed=seed, rate=0.6)
    tt = TT.from_dense(x, Truncation(rel_tol=tol), budget=budget)
    actual = rel_err(x, tt.to_dense())
    assert actual <= tol * (1 + 1e-9)
    assert tt.error == pytest.approx(actual, rel=1e-6, abs=1e-12)
    rounded = TT.from_dense(x).round(Truncation(rel_tol=tol), budget=budget)
    assert rel_err(x, rounded.to_dense()) <= tol * (1 + 1e-9)


def test_uniform_budget_spreads_eps_over_steps():
    x = decaying((4, 4, 4, 4), seed=3)
    tol = 0.1
    tt = TT.from_dense(x, Truncation(rel_tol=tol))
    norm = float(x.norm())
    # every step's own error is within tol / sqrt(d - 1)
    for k, r in enumerate(tt.ranks):
        s = torch.linalg.svdvals(unfold(x, range(k + 1)))
        assert float(s[r:].norm()) <= tol / math.sqrt(3) * norm * (1 + 1e-9) or r == 1


def test_rounding_by_rank_matches_tt_svd_of_the_dense_tensor():
    x = decaying((4, 5, 6), seed=4)
    exact = TT.from_dense(x)
    rounded = exact.round(ranks=(2, 3))
    direct = TT.from_dense(x, ranks=(2, 3))
    assert rounded.ranks == direct.ranks == (2, 3)
    torch.testing.assert_close(rounded.to_dense(), direct.to_dense())
    assert rounded.error == pytest.approx(rel_err(x, rounded.to_dense()), rel=1e-8)
    assert exact.truncate(2).ranks == (2, 2)


@pytest.mark.parametrize("center", [0, 1, 2, 3])
def test_canonical_forms(center):
    x = torch.randn(3, 4, 5, 2, generator=gen(5), dtype=F64)
    tt = TT.from_dense(x, ranks=(3, 6, 2)) * 3.0
    before = tt.to_dense()
    can = tt.canonical(center)
    torch.testing.assert_close(can.to_dense(), before, rtol=1e-12, atol=1e-12)
    for k, core in enumerate(can.cores):
        r0, n, r1 = core.shape
        if k < center:
            m = core.reshape(r0 * n, r1)
            torch.testing.assert_close(m.T @ m, torch.eye(r1, dtype=F64), rtol=0, atol=1e-12)
        elif k > center:
            m = core.reshape(r0, n * r1)
            torch.testing.assert_close(m @ m.T, torch.eye(r0, dtype=F64), rtol=0, atol=1e-12)
    assert can.norm() == pytest.approx(float(before.norm()), rel=1e-12)
    assert float(can.core(center).norm()) == pytest.approx(float(before.norm()), rel=1e-12)
    assert tt.left_canonical().to_dense().allclose(before)
    assert tt.right_canonical().to_dense().allclose(before)


def test_addition_scaling_and_rounded_sum():
    a = TT.from_dense(random_tt_dense((3, 4, 5), (2, 3), seed=6))
    b = TT.from_dense(random_tt_dense((3, 4, 5), (2, 2), seed=7), Truncation(rel_tol=1e-12))
    s = a + 2.0 * b
    assert s.ranks == (a.ranks[0] + b.ranks[0], a.ranks[1] + b.ranks[1])
    torch.testing.assert_close(s.to_dense(), a.to_dense() + 2 * b.to_dense())
    torch.testing.assert_close((a - a).to_dense(), torch.zeros(3, 4, 5, dtype=F64))
    r = a.add(b, Truncation(rel_tol=1e-10))
    assert r.ranks == (3, 5)  # ranks add; rounding only removes the redundancy of a's full ranks
    torch.testing.assert_close(r.to_dense(), a.to_dense() + b.to_dense())
    short = (a + a).round(Truncation(rel_tol=1e-12))
    assert short.ranks == (2, 3)


def test_addition_needs_matching_legs():
    a = TT.from_dense(torch.randn(2, 3, dtype=F64))
    b = TT.from_dense(torch.randn(2, 3, dtype=F64), legs=("x", "y"))
    with pytest.raises(ValueError, match="same legs"):
        a + b


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_fraction_stays_within_one_rank_step_of_the_budget(fraction):
    sizes = (6, 7, 8, 5)
    x = torch.randn(*sizes, generator=gen(8), dtype=F64)
    tt = TT.from_dense(x, fraction=fraction)
    budget = fraction * math.prod(sizes)
    assert tt.num_params <= budget
    cap = max(tt.ranks)
    tops = (6, 40, 5)
    bigger = tt_params(sizes, [min(cap + 1, t) for t in tops])
    assert bigger > budget or cap >= max(tops)


def test_storage_count_and_compression():
    x = torch.randn(4, 5, 6, dtype=F64)
    tt = TT.from_dense(x, ranks=(2, 3))
    assert tt.num_params == 4 * 2 + 2 * 5 * 3 + 3 * 6 == tt_params((4, 5, 6), (2, 3))
    assert tt.compression == pytest.approx(120 / tt.num_params)


def test_to_moves_and_casts():
    tt = TT.from_dense(torch.randn(3, 4, dtype=F64))
    f32 = tt.to(dtype=torch.float32)
    assert f32.dtype == torch.float32 and f32.ranks == tt.ranks
    assert tt.dtype == F64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ranks=(2,)), "ranks must have 2 entries"),
        (dict(fraction=0.0), "fraction must be in"),
        (dict(fraction=1.5), "fraction must be in"),
        (dict(legs=("a", "b")), "legs has 2 names"),
        (dict(order=("d0", "d0", "d1")), "order"),
        (dict(trunc=2, ranks=(2, 2)), "at most one of"),
        (dict(fraction=1e-4), "fraction too small"),
        (dict(budget="greedy"), "budget must be"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TT.from_dense(torch.ones(3, 4, 5, dtype=F64), **kwargs)


def test_tt_times_a_tensor_that_is_not_a_scalar_is_refused():
    tt = TT.from_dense(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="scalar only"):
        tt * torch.ones(3)
    torch.testing.assert_close((tt * torch.tensor(2.0, dtype=torch.float64)).to_dense(),
                               2 * tt.to_dense())


@pytest.mark.parametrize("sizes", [(4, 3, 5), (4, 3, 2, 3)])
def test_uniform_budget_keeps_the_smallest_rank_within_its_share(sizes):
    # The first unfolding has singular values (1, 0.5, t), t chosen between the per-step shares
    # tol / sqrt(d) and tol / sqrt(d - 1) of the norm: the uniform budget (tol / sqrt(d - 1))
    # must drop t, and no smaller rank meets the share.
    d, tol = len(sizes), 0.1
    c = tol * (1 / math.sqrt(d - 1) + 1 / math.sqrt(d)) / 2
    t = c * math.sqrt(1.25) / math.sqrt(1 - c * c)
    s = torch.tensor([1.0, 0.5, t], dtype=F64)
    g = gen(7)
    a = torch.linalg.qr(torch.randn(sizes[0], 3, generator=g, dtype=F64))[0]
    b = torch.linalg.qr(torch.randn(math.prod(sizes[1:]), 3, generator=g, dtype=F64))[0]
    x = ((a * s) @ b.T).reshape(sizes)
    share = tol / math.sqrt(d - 1) * float(x.norm())
    tails = [float(s[r:].norm()) for r in range(4)]
    smallest = min(r for r in range(4) if tails[r] <= share)
    assert smallest == 2  # the construction: t alone fits the share, 0.5 does not
    tt = TT.from_dense(x, Truncation(rel_tol=tol), budget="uniform")
    assert tt.ranks[0] == smallest
    assert rel_err(x, tt.to_dense()) <= tol
