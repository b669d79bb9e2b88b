"""Tensor ring in detail: TR-SVD step by step, maximal ranks, orders, round trips, messages."""

import math

import pytest
import torch

from tensornet import TT, Truncation
from tensornet.formats import TR
from tensornet.formats.structure import Structure
from tensornet.formats.tr import tr_params

from .helpers import F64, decaying, gen, rel_err


def ring_dense(cores):
    """trace(G_0[:, i_0, :] G_1[:, i_1, :] ...) by explicit contraction."""
    out = cores[0]
    for c in cores[1:]:
        out = torch.tensordot(out, c, dims=([out.ndim - 1], [0]))
    return torch.diagonal(out, dim1=0, dim2=-1).sum(-1)


def test_params_formula():
    """sum_k r_k n_k r_{k+1} with the ring closed (r_d = r_0)."""
    assert tr_params((4, 5), (2, 3)) == 2 * 4 * 3 + 3 * 5 * 2
    assert tr_params((2, 3, 4, 5), (1, 2, 3, 4)) == 1 * 2 * 2 + 2 * 3 * 3 + 3 * 4 * 4 + 4 * 5 * 1


def test_structure_maximal_ranks_factors_and_options():
    """Default ranks are the TR-SVD maxima: a balanced r0 = r1, then the train's unfoldings."""
    s = TR.structure_for((9, 2, 3, 4))
    # min(9, 24) = 9 -> r0 = r1 = 3; r2 <= min(3 * 2, 3 * 12); r3 <= min(3 * 6, 3 * 4)
    assert s.ranks == s.max_ranks == (3, 3, 6, 12)
    assert s.format == "tr" and s.option("order") == ("d0", "d1", "d2", "d3")
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("G0", ("r0", "d0", "r1"), (3, 9, 3)),
        ("G1", ("r1", "d1", "r2"), (3, 2, 6)),
        ("G2", ("r2", "d2", "r3"), (6, 3, 12)),
        ("G3", ("r3", "d3", "r0"), (12, 4, 3)),
    ]
    assert s.num_params == tr_params((9, 2, 3, 4), (3, 3, 6, 12))
    assert s.modes == (("d0",), ("d1",), ("d2",), ("d3",))
    assert TR.structure_for((2, 3)).max_ranks == (1, 1)  # min(2, 3) = 2 -> isqrt 1
    assert TR.structure_for((8, 8)).max_ranks == (2, 2)
    assert TR.structure_for((9, 2)).max_ranks == (1, 1)  # min(9, 18 / 9) = 2 -> isqrt 1
    # an order around the ring, and bond names fresh against the legs
    o = TR.structure_for((2, 3, 4), (1, 2, 3), legs=("a", "r1", "c"), order=("c", "a", "r1"))
    assert [(f.legs, f.shape) for f in o.factors] == [
        (("r0", "c", "r12"), (1, 4, 2)),
        (("r12", "a", "r2"), (2, 2, 3)),
        (("r2", "r1", "r0"), (3, 3, 1)),
    ]
    assert o.option("order") == ("c", "a", "r1") and o.max_ranks == (2, 2, 4)


def test_full_rank_tr_svd_is_exact_with_balanced_first_ranks():
    """At full rank TR-SVD is exact; r0 r1 is the first unfolding's rank, split most evenly."""
    cases = (((6, 4, 5), (2, 3)), ((5, 4, 3), (1, 5)), ((4, 3, 3, 2), (2, 2)), ((10, 4, 3), (2, 5)))
    for sizes, first in cases:
        x = torch.randn(*sizes, generator=gen(sum(sizes)), dtype=F64)
        tr = TR.from_dense(x)
        assert tr.ranks[:2] == first
        assert rel_err(x, tr.to_dense()) < 1e-12 and tr.error < 1e-12
        torch.testing.assert_close(ring_dense(tr.cores), x)
        assert tr.num_params == tr_params(sizes, tr.ranks)
    two = TR.from_dense(torch.randn(4, 7, generator=gen(1), dtype=F64))
    assert two.ranks == (2, 2) and two.error < 1e-12 and len(two.cores) == 2


def test_tolerance_is_shared_over_the_steps_as_in_tr_svd():
    """First step: tail <= eps / sqrt(d - 1); the rest: TT-SVD with the remaining budget."""
    x = decaying((6, 4, 5, 3), seed=2, rate=0.6)
    norm = float(x.norm())
    d = 4
    s_first = torch.linalg.svdvals(x.reshape(6, -1))
    between = 2 * float(s_first[2:].norm()) / norm  # tail_2 / tol is 2, between sqrt(3) and sqrt(5)
    for tol in (0.05, 0.15, 0.3, between):
        tr = TR.from_dense(x, Truncation(rel_tol=tol))
        err = rel_err(x, tr.to_dense())
        assert err <= tol + 1e-12 and tr.error == pytest.approx(err, rel=1e-8, abs=1e-12)
        m = x.reshape(6, -1)
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        tails = [float(s[k:].norm()) for k in range(len(s) + 1)]
        k = max(1, min(j for j in range(len(s) + 1) if tails[j] <= tol * norm / math.sqrt(d - 1)))
        r0, r1 = min(
            ((a, k // a) for a in range(1, k + 1) if k % a == 0 and a * a <= k),
            key=lambda p: p[1] - p[0],
        )
        assert tr.ranks[:2] == (r0, r1)
        rest = (s[:k, None] * vh[:k]).reshape(r0, r1, 4, 5, 3).movedim(0, -1)
        budget = math.sqrt(max((tol * norm) ** 2 - tails[k] ** 2, 0.0))
        tt = TT.from_dense(rest.reshape(r1 * 4, 5, 3 * r0), Truncation(abs_tol=budget))
        assert tr.ranks[2:] == tt.ranks


def test_max_rank_caps_every_bond_and_ranks_are_used_as_given():
    """max_rank caps every ring rank (r0 r1 <= cap^2); ranks= fixes r0, r1 and caps the rest."""
    x = torch.randn(9, 4, 5, 3, generator=gen(3), dtype=F64)
    capped = TR.from_dense(x, Truncation(max_rank=2))
    assert capped.ranks == (2, 2, 2, 2)
    assert capped.error == pytest.approx(rel_err(x, capped.to_dense()), rel=1e-8)
    # a first rank of 3 would split as 1 x 3 > cap: TR-SVD keeps 2 = 1 x 2 instead
    x3 = torch.randn(3, 4, 5, generator=gen(7), dtype=F64)
    odd = TR.from_dense(x3, Truncation(max_rank=2))
    assert odd.ranks[:2] == (1, 2) and max(odd.ranks) <= 2
    assert odd.error == pytest.approx(rel_err(x3, odd.to_dense()), rel=1e-8)
    given = TR.from_dense(x, ranks=(1, 3, 4, 2))
    assert given.ranks == (1, 3, 4, 2)
    assert given.error == pytest.approx(rel_err(x, given.to_dense()), rel=1e-8)
    # more than the first unfolding can hold: lowered by clamp_ranks (r0 r1 <= min(2, 12)),
    # then r2 <= min(r1 * 3, r0 * 4); still exact
    small = torch.randn(2, 3, 4, generator=gen(4), dtype=F64)
    lowered = TR.from_dense(small, ranks=(2, 2, 12))
    assert lowered.ranks == (2, 1, 3) and lowered.error < 1e-12
    assert TR.clamp_ranks((2, 3, 4), (2, 2, 12)) == (2, 1, 3)
    assert TR.clamp_ranks((2, 3, 4), (1, 5, 12)) == (1, 2, 4)  # r2 <= min(2 * 3, 1 * 4)
    assert TR.clamp_ranks((2, 3, 4), (1, 5, 12), order=("d2", "d0", "d1")) == (1, 4, 3)
    torch.testing.assert_close(lowered.to_dense(), small)
    # a first unfolding of rank 2 < 4 = r0 r1 with more rows than its rank
    g = gen(8)
    low = torch.einsum("ia,ajk->ijk", torch.randn(4, 2, generator=g, dtype=F64),
                       torch.randn(2, 3, 2, generator=g, dtype=F64))  # fmt: skip
    low_tr = TR.from_dense(low, ranks=(2, 2, 6))
    assert low_tr.ranks[:2] == (2, 2) and low_tr.error < 1e-12
    torch.testing.assert_close(low_tr.to_dense(), low)
    tall = torch.randn(6, 2, generator=gen(11), dtype=F64)  # a 6 x 2 unfolding: 2 < 4 columns
    tall_tr = TR.from_dense(tall, ranks=(2, 2))
    assert tall_tr.ranks == (2, 1) and tall_tr.error < 1e-12  # r0 r1 <= min(6, 2)
    torch.testing.assert_close(tall_tr.to_dense(), tall)
    zero = TR.from_dense(torch.zeros(3, 4, 2, dtype=F64), ranks=(1, 1, 1))
    assert zero.error == 0.0 and float(zero.to_dense().abs().max()) == 0.0


def test_fraction_budget_and_order():
    """fraction: one cap for all ranks within the budget; order permutes the ring's legs."""
    x = torch.randn(4, 5, 6, generator=gen(5), dtype=F64)
    fmt = TR.from_dense(x, fraction=0.5, legs=("a", "b", "c"), order=("b", "c", "a"))
    want = TR.structure_for((4, 5, 6), None, legs=("a", "b", "c"), order=("b", "c", "a"))
    assert fmt.order == ("b", "c", "a") and fmt.legs == ("a", "b", "c")
    assert fmt.num_params <= 60 and fmt.shape == (4, 5, 6)
    assert [c.shape[1] for c in fmt.cores] == [5, 6, 4]
    # the largest common cap within the budget
    caps = [
        r for r in range(1, 31) if tr_params((5, 6, 4), [min(r, t) for t in want.max_ranks]) <= 60
    ]
    assert fmt.ranks == tuple(min(max(caps), t) for t in want.max_ranks)
    # the budget is priced for the ring's order: (9, 9, 2) allows other ranks than (2, 9, 9)
    y = torch.randn(2, 9, 9, generator=gen(9), dtype=F64)
    around = TR.from_dense(y, fraction=0.5, order=("d1", "d2", "d0"))
    want = TR.structure_for((2, 9, 9), None, order=("d1", "d2", "d0")).max_ranks
    caps = [r for r in range(1, 30) if tr_params((9, 9, 2), [min(r, t) for t in want]) <= 81]
    assert around.ranks == tuple(min(max(caps), t) for t in want)
    ordered = TR.from_dense(x, legs=("a", "b", "c"), order=("b", "c", "a"))
    torch.testing.assert_close(ordered.to_dense(), x)
    torch.testing.assert_close(ring_dense(ordered.cores), x.permute(1, 2, 0))


def test_round_trip_and_truncate_keep_order_and_legs():
    """to_dict / from_dict / from_factors rebuild the ring; truncate keeps the order."""
    x = decaying((4, 5, 3), seed=6)
    tr = TR.from_dense(x, legs=("a", "b", "c"), order=("c", "a", "b"))
    data = tr.structure.to_dict()
    assert data["options"] == {"order": ["c", "a", "b"]} and data["ranks"] == list(tr.ranks)
    again = TR.from_factors(Structure.from_dict(data), tr.factor_tensors(), error=0.125)
    torch.testing.assert_close(again.to_dense(), tr.to_dense())
    assert again.error == 0.125 and again.order == ("c", "a", "b") and again.legs == tr.legs
    assert list(tr.factor_tensors()) == ["G0", "G1", "G2"]
    assert tr.options == {"order": ("c", "a", "b")}
    for small in (
        tr.truncate(2),
        tr.truncate(ranks=(1, 2, 2)),
        tr.truncate(Truncation(max_rank=2)),
    ):
        assert small.order == ("c", "a", "b") and small.legs == ("a", "b", "c")
        assert max(small.ranks) <= 2
        assert small.error == pytest.approx(rel_err(tr.to_dense(), small.to_dense()), rel=1e-8)
    assert tr.truncate(ranks=(1, 2, 2)).ranks == (1, 2, 2)
    assert TR(tr.cores, ("c", "a", "b")).legs == ("c", "a", "b")  # legs default to the order
    assert TR(tr.cores, ("c", "a", "b")).error is None


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: TR([torch.ones(1, 2, 1)], ("a",)), r"^TR: needs d >= 2 cores, one per leg; got 1"),
        (
            lambda: TR([torch.ones(1, 2, 1)] * 3, ("a", "b")),
            r"^TR: needs d >= 2 cores, one per leg; got 3 for \('a', 'b'\)",
        ),
        (
            lambda: TR([torch.ones(1, 2, 1), torch.ones(1, 2)], ("a", "b")),
            r"^TR: core 1 must be \(r, n, r'\), got \(1, 2\)",
        ),
        (
            lambda: TR([torch.ones(1, 2, 1)] * 2, ("a", "b"), legs=("a", "c")),
            r"^TR: order \('a', 'c'\) must be a permutation of the legs \('a', 'b'\)",
        ),
        (lambda: TR.structure_for((4,)), r"^TR.structure_for: a tensor ring needs at least 2 legs"),
        (lambda: TR.structure_for((2, 0)), r"^TR.structure_for: shape must be positive"),
        (lambda: TR.structure_for((2, 3), order=("d0",)), r"^TR.structure_for: order \('d0',\)"),
        (lambda: TR.structure_for((2, 3), (1, 2, 3)), r"^TR.structure_for: ranks must have 2"),
        (lambda: TR.from_dense(torch.ones(4, dtype=F64)), r"^TR.from_dense: a tensor ring needs"),
        (
            lambda: TR.from_dense(torch.ones(2, 3, dtype=F64), order=("d1", "x")),
            r"^TR.from_dense: order",
        ),
        (lambda: TR.from_dense(torch.ones(2, 3, dtype=F64), ranks=(1,)), r"^TR.from_dense: ranks"),
        (
            lambda: TR.from_dense(torch.ones(2, 3, dtype=F64), legs=("a",)),
            r"^TR.from_dense: legs has 1 names",
        ),
        (
            lambda: TR.from_dense(torch.ones(2, 3, dtype=F64), 1, fraction=0.5),
            r"^TR.from_dense: give at most one",
        ),
        (
            lambda: TR.from_dense(torch.ones(2, 3, dtype=F64), 1, ranks=1),
            r"^TR.from_dense: give at most one",
        ),
        (
            lambda: TR.from_dense(torch.ones(2, 3, 4, dtype=F64), fraction=0.01),
            r"^TR.from_dense: fraction too small",
        ),
        (
            lambda: TR.from_dense(torch.ones(2, 3, dtype=F64)).truncate(ranks=(1,)),
            r"^TR.truncate: ranks must have 2",
        ),
        (
            lambda: TR.from_factors(TR.structure_for((2, 3), (1, 1)), {"G0": torch.ones(1, 2, 1)}),
            r"^TR.from_factors: ",
        ),
    ],
)
def test_bad_inputs_name_the_call_and_the_culprit(call, match):
    """Errors say which call failed and what was wrong with which field."""
    with pytest.raises(ValueError, match=match):
        call()


def test_small_norm_tensors_report_their_relative_error():
    """The reported error is relative at any scale (norms below 1 too)."""
    x = 1e-3 * decaying((4, 5, 3), seed=10)
    tr = TR.from_dense(x, Truncation(max_rank=2))
    assert tr.error == pytest.approx(rel_err(x, tr.to_dense()), rel=1e-8)
    assert tr.error > 1e-3
