"""Plain low rank in detail: cuts, structures, round trips, batched re-factoring, messages."""

import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import LowRank
from tensornet.formats.lowrank import reduce_pairs, shared_rank
from tensornet.formats.structure import Factor, Structure

from .helpers import F64, gen, rel_err, unfold


def test_shared_rank_truncates_the_root_sum_square_spectrum():
    """The batch rank is the rank of sqrt(sum_b s_b^2): its tails are the summed tails."""
    s = torch.tensor([[4.0, 2.0, 1.0, 0.5], [3.0, 1.5, 0.2, 0.1]], dtype=F64)
    tails = [math.sqrt(float(s[:, k:].square().sum())) for k in range(5)]
    total = float(s.norm())
    for tol in (0.05, 0.1, 0.2, 0.4):
        want = min(k for k in range(5) if tails[k] <= tol * total)
        assert shared_rank(s, Truncation(rel_tol=tol)) == max(want, 1)
    # rel_tol against another reference norm, also through the batched re-factoring
    assert shared_rank(s, Truncation(rel_tol=0.1), norm=10 * total) == 1
    u = torch.diag_embed(s)  # products u_b @ I have the spectra s
    eye = torch.eye(4, dtype=F64).expand(2, 4, 4)
    assert reduce_pairs(u, eye, Truncation(rel_tol=0.1))[0].shape[-1] == 3
    assert reduce_pairs(u, eye, Truncation(rel_tol=0.1), norm=10 * total)[0].shape[-1] == 1
    assert shared_rank(s, Truncation(abs_tol=tails[2] + 1e-9)) == 2
    assert shared_rank(s, None) == 4


def test_reduce_pairs_is_the_optimal_shared_rank_refactoring():
    """Each product u_b v_b loses exactly its discarded singular values; s are the full spectra."""
    g = gen(11)
    u = torch.randn(3, 6, 4, generator=g, dtype=F64)
    v = torch.randn(3, 4, 5, generator=g, dtype=F64)
    prods = u @ v
    for trunc, k in ((None, 4), (Truncation(max_rank=2), 2)):
        new_u, new_v, s = reduce_pairs(u, v, trunc)
        assert new_u.shape == (3, 6, k) and new_v.shape == (3, k, 5)
        for b in range(3):
            sv = torch.linalg.svdvals(prods[b])
            torch.testing.assert_close(s[b], sv[:4])
            diff = float((prods[b] - new_u[b] @ new_v[b]).norm())
            assert diff == pytest.approx(float(sv[k:].norm()), abs=1e-10, rel=1e-9)
            # singular values split evenly: column norms of U = row norms of V = sqrt(s)
            torch.testing.assert_close(new_u[b].norm(dim=0), sv[:k].sqrt())
            torch.testing.assert_close(new_v[b].norm(dim=1), sv[:k].sqrt())


def test_structure_cut_shapes_ranks_and_options():
    """The structure of a cut: factor shapes, maximal rank min(rows, cols), options, modes."""
    s = LowRank.structure_for((4, 3, 5), legs=("a", "b", "c"), left=("c", "a"))
    assert s.format == "svd" and s.ranks == (3,) and s.max_ranks == (3,)
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("U", ("a", "c", "r"), (4, 5, 3)),
        ("V", ("r", "b"), (3, 3)),
    ]
    assert s.option("left") == ("a", "c") and s.modes == (("a",), ("b",), ("c",))
    s2 = LowRank.structure_for((4, 30), 3, left="d1")
    assert s2.max_ranks == (4,) and s2.num_params == 3 * (30 + 4)
    assert [f.legs for f in s2.factors] == [("d1", "r"), ("r", "d0")]
    s3 = LowRank.structure_for((7, 2, 3))  # default cut: the first leg
    assert s3.max_ranks == (6,) and s3.option("left") == ("d0",)
    assert s3.num_params == 6 * 7 + 6 * 6
    # a leg named "r" pushes the rank leg to a fresh name
    s4 = LowRank.structure_for((3, 4), 2, legs=("r", "x"))
    assert s4.factors[0].legs == ("r", "r2") and s4.factors[1].legs == ("r2", "x")


def test_from_dense_round_trips_through_the_structure_dict():
    """to_dict / from_dict / from_factors rebuild the same tensor, cut, ranks and legs."""
    x = torch.randn(4, 3, 5, generator=gen(12), dtype=F64)
    lr = LowRank.from_dense(x, ranks=2, legs=("a", "b", "c"), left=("c",))
    data = lr.structure.to_dict()
    assert data["options"] == {"left": ["c"]} and data["ranks"] == [2]
    again = LowRank.from_factors(Structure.from_dict(data), lr.factor_tensors(), error=0.25)
    torch.testing.assert_close(again.to_dense(), lr.to_dense())
    assert again.legs == ("a", "b", "c") and again.options == {"left": ("c",)}
    assert (
        again.error == 0.25
        and LowRank(*lr.factor_tensors().values(), ("c",), ("a", "b")).error is None
    )
    # the reconstruction is the rank-2 SVD of the (c | a, b) unfolding, in the dense leg order
    m = unfold(x, [2])
    uu, ss, vh = torch.linalg.svd(m, full_matrices=False)
    best = ((uu[:, :2] * ss[:2]) @ vh[:2]).reshape(5, 4, 3).permute(1, 2, 0)
    torch.testing.assert_close(lr.to_dense(), best)
    assert lr.shape == (4, 3, 5) and lr.num_params == 2 * (5 + 12)


def test_default_legs_are_left_then_right():
    """Without legs the dense order is the cut's left legs then its right legs."""
    g = gen(13)
    u, v = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(2, 3, 5, generator=g, dtype=F64)
    lr = LowRank(u, v, ("p",), ("q", "s"))
    assert lr.legs == ("p", "q", "s") and lr.shape == (4, 3, 5)
    torch.testing.assert_close(lr.to_dense(), torch.einsum("ir,rjk->ijk", u, v))


def test_from_dense_fraction_trunc_and_zero_tensor():
    """fraction is a parameter budget; a tolerance gives the smallest rank; zero has error 0."""
    x = torch.randn(10, 8, generator=gen(14), dtype=F64)
    lr = LowRank.from_dense(x, fraction=0.5)
    assert lr.ranks == (2,)  # 2 * 18 = 36 <= 0.5 * 80 < 3 * 18
    s = torch.linalg.svdvals(x)
    for tol in (0.2, 0.5):
        k = LowRank.from_dense(x, Truncation(rel_tol=tol)).ranks[0]
        tails = [float(s[j:].norm() / s.norm()) for j in range(9)]
        assert k == min(j for j in range(1, 9) if tails[j] <= tol)
    assert LowRank.from_dense(x, 3).ranks == (3,)
    zero = LowRank.from_dense(torch.zeros(3, 4, dtype=F64), ranks=2)
    assert zero.error == 0.0 and float(zero.to_dense().abs().max()) == 0.0
    assert LowRank.from_dense(torch.zeros(3, 4, dtype=F64), ranks=2).truncate(ranks=1).error == 0.0


def test_truncate_forms_and_errors():
    """truncate accepts an int, a Truncation or ranks=; its error is relative to the input."""
    x = torch.randn(6, 2, 5, generator=gen(15), dtype=F64)
    lr = LowRank.from_dense(x, left=("d0", "d1"))  # (12 x 5) unfolding, full rank 5
    assert lr.ranks == (5,) and rel_err(x, lr.to_dense()) < 1e-12 and lr.error < 1e-12
    s = torch.linalg.svdvals(unfold(x, [0, 1]))
    for small in (lr.truncate(2), lr.truncate(ranks=2), lr.truncate(Truncation(max_rank=2))):
        assert small.ranks == (2,) and small.shape == (6, 2, 5) and small.legs == lr.legs
        assert small.options == {"left": ("d0", "d1")}
        assert small.error == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-9)
        assert rel_err(x, small.to_dense()) == pytest.approx(small.error, rel=1e-9)
    assert lr.truncate().ranks == (5,) and lr.truncate().error == pytest.approx(0.0, abs=1e-12)
    assert lr.truncate(ranks=(2,)).ranks == (2,)


def test_cut_not_in_dense_order_keeps_the_dense_legs():
    """A cut whose left legs are not first: the dense order survives from_dense and truncate."""
    x = torch.randn(3, 4, 5, generator=gen(16), dtype=F64)
    lr = LowRank.from_dense(x, left="d1")
    assert [n.legs for n in lr.network] == [("d1", "r"), ("r", "d0", "d2")]  # as the structure
    for fmt in (lr, lr.truncate(2)):
        assert fmt.legs == ("d0", "d1", "d2") and fmt.shape == (3, 4, 5)
        assert fmt.to_dense().shape == (3, 4, 5)
    s = torch.linalg.svdvals(unfold(x, [1]))
    assert rel_err(x, lr.truncate(2).to_dense()) == pytest.approx(float(s[2:].norm() / s.norm()))
    # fraction with named legs and a cut: the budget counts this cut's factors
    named = LowRank.from_dense(x, fraction=2 / 3, legs=("a", "b", "c"), left=("b",))
    assert named.ranks == (2,) and named.options == {"left": ("b",)}  # 2 * (4 + 15) <= 40
    assert LowRank.from_dense(x, fraction=2 / 3, legs=("a", "b", "c")).ranks == (1,)  # 2 * 23 > 40


def test_small_norm_tensors_report_their_relative_error():
    """The relative error does not depend on the tensor's scale (also for norms below 1)."""
    x = 1e-3 * torch.randn(6, 5, generator=gen(17), dtype=F64)
    s = torch.linalg.svdvals(x)
    want = float(s[2:].norm() / s.norm())
    lr = LowRank.from_dense(x, ranks=2)
    assert lr.error == pytest.approx(want, rel=1e-9)
    assert LowRank.from_dense(x).truncate(2).error == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: LowRank.structure_for((4,), 1), r"^LowRank.structure_for: needs at least 2 legs"),
        (
            lambda: LowRank.from_dense(torch.ones(4, dtype=F64)),
            r"^LowRank.from_dense: needs at least 2",
        ),
        (
            lambda: LowRank.structure_for((2, 3), left=()),
            r"^LowRank.structure_for: left \(\) must be a non-empty proper",
        ),
        (lambda: LowRank.structure_for((2, 0)), r"^LowRank.structure_for: shape must be positive"),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), legs=("a", "b", "c")),
            r"^LowRank.from_dense: legs has 3 names",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), 1, ranks=1),
            r"^LowRank.from_dense: give at most one of trunc, ranks, fraction",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), 1, fraction=0.5),
            r"^LowRank.from_dense: give at most one of trunc, ranks, fraction",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), fraction=0.1),
            r"^LowRank.from_dense: fraction too small",
        ),
        (
            lambda: LowRank.from_factors(
                Structure(
                    "svd",
                    ("a", "b"),
                    (2, 3),
                    (1,),
                    (Factor("U", ("a", "r"), (2, 1)), Factor("V", ("r", "b"), (1, 3))),
                    (("a",), ("b",)),
                    (2,),
                    (("left", ("z",)),),
                ),
                {"U": torch.ones(2, 1), "V": torch.ones(1, 3)},
            ),
            r"^LowRank.from_factors: left \('z',\) must be a non-empty proper subset",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), left=("d0", "d1")),
            r"^LowRank.from_dense: left \('d0', 'd1'\) must be a non-empty proper subset of the "
            r"legs \('d0', 'd1'\)",
        ),
        (lambda: LowRank.structure_for((2, 3), left="z"), r"left \('z',\) must be"),
        (
            lambda: LowRank.structure_for((2, 3), (1, 2)),
            r"^LowRank.structure_for: ranks must have 1",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64), ranks=(1, 2)),
            r"^LowRank.from_dense: ranks",
        ),
        (
            lambda: LowRank.from_dense(torch.ones(2, 3, dtype=F64)).truncate(ranks=0),
            r"^LowRank.truncate: ranks must be positive",
        ),
        (
            lambda: LowRank.from_factors(
                LowRank.structure_for((2, 3), 1), {"U": torch.ones(2, 2), "V": torch.ones(2, 3)}
            ),
            r"^LowRank.from_factors: ",
        ),
    ],
)
def test_bad_inputs_name_the_call_and_the_culprit(call, match):
    """Errors say which call failed and what was wrong with which field."""
    with pytest.raises(ValueError, match=match):
        call()
