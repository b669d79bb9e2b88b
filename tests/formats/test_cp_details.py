"""CP in detail: the ALS error track and stopping rule, initialisation, structures, messages."""

import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import CP
from tensornet.formats.cp import _initial_factors, cp_als
from tensornet.formats.structure import Structure

from .helpers import F64, cp_dense, gen, rel_err, unfold


def test_history_is_the_true_error_after_each_sweep():
    """The tracked error (from ALS's own quantities) equals ||x - fit|| / ||x|| after sweep m."""
    x = torch.randn(4, 5, 3, generator=gen(1), dtype=F64)
    for normalize in (False, True):
        long = CP.from_dense(x, ranks=3, max_iter=6, tol=0.0, normalize=normalize)
        assert len(long.history) == 6
        for m in (1, 2, 4):
            short = CP.from_dense(x, ranks=3, max_iter=m, tol=0.0, normalize=normalize)
            assert short.history == pytest.approx(long.history[:m], rel=1e-9)
            assert short.history[-1] == pytest.approx(rel_err(x, short.to_dense()), rel=1e-9)
            assert short.error == pytest.approx(rel_err(x, short.to_dense()), rel=1e-12)
    # complex, with weights: the same identity
    g = gen(2)
    z = torch.randn(3, 4, 2, generator=g, dtype=F64) + 1j * torch.randn(
        3, 4, 2, generator=g, dtype=F64
    )
    for m in (1, 3):
        c = CP.from_dense(z, ranks=2, max_iter=m, tol=0.0, normalize=True)
        assert c.history[-1] == pytest.approx(rel_err(z, c.to_dense()), rel=1e-9)


def test_stops_at_the_first_change_below_tol():
    """ALS stops after the first sweep whose error differs from the last by less than tol."""
    x = torch.randn(5, 4, 6, generator=gen(3), dtype=F64)
    h = CP.from_dense(x, ranks=4, max_iter=40, tol=0.0).history
    for tol in (1e-2, 1e-3, 1e-4):
        want = next(i for i in range(1, len(h)) if abs(h[i - 1] - h[i]) < tol) + 1
        got = CP.from_dense(x, ranks=4, max_iter=40, tol=tol).history
        assert len(got) == want and got == pytest.approx(h[:want], rel=1e-9)
    assert len(CP.from_dense(x, ranks=4, max_iter=3, tol=1.0).history) == 2


def test_initial_factors_are_leading_singular_vectors_or_seeded_noise():
    """svd init: leading left singular vectors of each unfolding, padded with the seed's noise."""
    x = torch.randn(2, 5, 4, generator=gen(4), dtype=F64)
    factors = _initial_factors(x, 3, "svd", seed=7)
    g = torch.Generator().manual_seed(7)
    noise = [torch.randn(n, 3, generator=g, dtype=F64) for n in x.shape]
    for k, f in enumerate(factors):
        u = torch.linalg.svd(unfold(x, [k]), full_matrices=False)[0][:, :3]
        kept = min(3, x.shape[k])
        assert f.shape == (x.shape[k], 3)
        torch.testing.assert_close(f[:, :kept].abs(), u[:, :kept].abs())  # up to signs
        assert torch.equal(f[:, kept:], noise[k][:, kept:])
    rand = _initial_factors(x, 3, "random", seed=7)
    for f, n in zip(rand, noise):
        assert torch.equal(f, n)  # the float64 stream of the seed, bit for bit
    f32 = _initial_factors(x.float(), 2, "random", seed=0)
    assert all(f.dtype == torch.float32 for f in f32)


def test_zero_tensor_and_zero_columns_stay_finite():
    """A zero tensor: singular Gram matrices (pseudo-inverse), unit weights, error 0."""
    zero = torch.zeros(3, 4, 2, dtype=F64)
    for normalize in (False, True):
        cp = CP.from_dense(zero, ranks=2, max_iter=3, normalize=normalize, init="random")
        assert cp.error == 0.0 and cp.history[-1] == 0.0
        assert torch.isfinite(torch.stack([f.abs().sum() for f in cp.factors])).all()
        assert float(cp.to_dense().abs().max()) == 0.0
        if normalize:
            torch.testing.assert_close(cp.weights, torch.ones(2, dtype=F64))


def test_exact_low_rank_with_rank_deficient_unfoldings():
    """Rank 3 on a mode of size 2 (padded init, singular Grams early on) still fits exactly."""
    g = gen(5)
    factors = [torch.randn(n, 2, generator=g, dtype=F64) for n in (2, 5, 4)]
    x = cp_dense(factors)
    cp = CP.from_dense(x, ranks=2, max_iter=300, tol=1e-14)
    assert cp.error < 1e-9
    assert all(b <= a + 1e-12 for a, b in zip(cp.history, cp.history[1:]))  # monotone


def test_structure_counts_and_round_trip():
    """R sum(n_k) (+R weights when normalised); the maximal rank is size // per-rank count."""
    s = CP.structure_for((4, 5, 6), 2, legs=("a", "b", "r"))
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("A0", ("a", "r2"), (4, 2)),
        ("A1", ("b", "r2"), (5, 2)),
        ("A2", ("r", "r2"), (6, 2)),
    ]
    assert s.num_params == 30 and s.max_ranks == (120 // 15,) and s.option("normalize") is False
    n = CP.structure_for((4, 5, 6), 2, normalize=True)
    assert n.factors[-1] == n.factors[-1].__class__("weights", ("r",), (2,))
    assert n.num_params == 32 and n.max_ranks == (120 // 16,) and n.option("normalize") is True
    assert CP.structure_for((2, 2)).max_ranks == (1,) and CP.structure_for((2, 2)).ranks == (1,)
    assert CP.structure_for((1,), normalize=True).max_ranks == (1,)  # max(1, 1 // 2)
    x = torch.randn(4, 5, 6, generator=gen(6), dtype=F64)
    for normalize in (False, True):
        cp = CP.from_dense(x, ranks=2, max_iter=3, normalize=normalize, legs=("a", "b", "c"))
        data = cp.structure.to_dict()
        assert data["options"] == {"normalize": normalize}
        again = CP.from_factors(Structure.from_dict(data), cp.factor_tensors(), error=0.5)
        torch.testing.assert_close(again.to_dense(), cp.to_dense())
        assert again.error == 0.5 and again.legs == ("a", "b", "c")
        assert again.options == {"normalize": normalize}
        assert ("weights" in cp.factor_tensors()) == normalize


def test_constructor_network_and_one_factor():
    """CP(factors, weights): the dense tensor and its chain network; a single factor sums ranks."""
    g = gen(7)
    a, b, c = (torch.randn(n, 2, generator=g, dtype=F64) for n in (3, 4, 2))
    w = torch.tensor([2.0, -0.5], dtype=F64)
    cp = CP([a, b, c], w, legs=("c1", "x", "y"))
    want = torch.einsum("r,ir,jr,kr->ijk", w, a, b, c)
    torch.testing.assert_close(cp.to_dense(), want)
    torch.testing.assert_close(cp.network.contract(output=cp.legs).tensor, want)
    assert [node.name for node in cp.network] == ["A0", "A1", "A2"]
    assert cp.shape == (3, 4, 2) and cp.legs == ("c1", "x", "y") and cp.num_params == 20
    assert cp.network.node("A1").legs == ("c12", "x", "c2")  # bonds fresh against the legs
    assert CP([a, b]).legs == ("d0", "d1") and CP([a, b]).error is None
    torch.testing.assert_close(CP([a, b]).weights, torch.ones(2, dtype=F64))
    one = CP([a], w)
    torch.testing.assert_close(one.to_dense(), a @ w)
    torch.testing.assert_close(one.network.contract(output=one.legs).tensor, a @ w)
    v = torch.arange(1.0, 4.0, dtype=F64)
    vec = CP.from_dense(v, ranks=1)
    assert vec.error == 0.0 and vec.rank == 1 and vec.history == (0.0,)
    torch.testing.assert_close(vec.factors[0], v[:, None])
    torch.testing.assert_close(vec.to_dense(), v)
    unit = CP.from_dense(v, ranks=1, normalize=True)
    torch.testing.assert_close(unit.weights, v.norm().reshape(1))
    torch.testing.assert_close(unit.factors[0], v[:, None] / v.norm())
    assert unit.error == pytest.approx(0.0, abs=1e-15)
    zero = CP.from_dense(torch.zeros(3, dtype=F64), ranks=1, normalize=True)
    assert float(zero.weights[0]) == 1.0 and zero.error == 0.0


def test_int_trunc_fraction_and_to():
    """An int trunc is the rank; to() keeps the error, history and weights."""
    x = torch.randn(4, 5, 6, generator=gen(8), dtype=F64)
    assert CP.from_dense(x, 2, max_iter=2).rank == 2
    assert CP.from_dense(x, Truncation(max_rank=3), max_iter=2).rank == 3
    assert CP.from_dense(x, fraction=0.5, normalize=True, max_iter=2).rank == 60 // 16
    assert CP.from_dense(x, fraction=0.5, max_iter=2, legs=("a", "b", "c")).rank == 60 // 15
    cp = CP.from_dense(x, ranks=2, max_iter=4, normalize=True, legs=("a", "b", "c"))
    moved = cp.to(device="meta", dtype=torch.float32)
    assert {f.device.type for f in moved.factors} == {
        "meta"
    } and moved.weights.device.type == "meta"
    assert moved.weights.dtype == torch.float32 and moved.history == cp.history
    assert (
        moved.error == cp.error and moved.options == {"normalize": True} and moved.legs == cp.legs
    )
    plain = CP.from_dense(x, ranks=2, max_iter=4).to(dtype=torch.float32)
    assert plain.options == {"normalize": False} and "weights" not in plain.factor_tensors()


def test_truncate_orders_components_by_weighted_norm():
    """The kept components are those of largest |w_r| prod_k ||a_k[:, r]||, weights included."""
    g = gen(9)
    factors = [torch.randn(n, 3, generator=g, dtype=F64) for n in (3, 4, 5)]
    norms = math.prod(f.norm(dim=0) for f in factors)
    w = torch.tensor([1.0, -50.0, 3.0], dtype=F64) / norms  # sizes 1, 50, 3
    cp = CP(factors, w, legs=("p", "q", "s"))
    for small in (cp.truncate(2), cp.truncate(ranks=2), cp.truncate(Truncation(max_rank=2))):
        keep = [1, 2]
        torch.testing.assert_close(small.weights, w[keep])
        want = cp_dense([f[:, keep] for f in factors], w[keep])
        torch.testing.assert_close(small.to_dense(), want)
        assert small.error == pytest.approx(rel_err(cp.to_dense(), want), rel=1e-12)
        assert small.options == {"normalize": True} and small.legs == ("p", "q", "s")
    unweighted = CP([f * torch.tensor([1.0, 5.0, 2.0], dtype=F64) / f.norm(dim=0) for f in factors])
    assert "weights" not in unweighted.truncate(1).factor_tensors()
    torch.testing.assert_close(unweighted.truncate(1).factors[0], unweighted.factors[0][:, [1]])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: CP([]), r"^CP: needs at least one factor"),
        (
            lambda: CP([torch.ones(2, 2), torch.ones(3, 1)]),
            r"^CP: factors must be \(n_k, R\) with one R, got \[\(2, 2\), \(3, 1\)\]",
        ),
        (lambda: CP([torch.ones(2, 2), torch.ones(3)]), r"^CP: factors must be \(n_k, R\)"),
        (lambda: CP([torch.ones(2, 2)], legs=("a", "b")), r"^CP: legs has 2 names for 1 factors"),
        (lambda: CP.structure_for((2, 0), 1), r"^CP.structure_for: shape must be positive"),
        (lambda: CP.structure_for((2, 3), (1, 1)), r"^CP.structure_for: ranks must have 1 entry"),
        (lambda: CP.structure_for((2, 3), 0), r"^CP.structure_for: ranks must be a positive int"),
        (lambda: CP.structure_for((2, 3), True), r"ranks must be a positive int, got True"),
        (lambda: CP.structure_for((2, 3), 1.0), r"ranks must be a positive int, got 1.0"),
        (lambda: CP.structure_for((2, 3), [2]).ranks == (2,) or 1 / 0, r"never"),
    ],
)
def test_bad_inputs_name_the_culprit(call, match):
    """Errors say which call failed and which field was wrong."""
    if match == "never":
        assert call()
        return
    with pytest.raises(ValueError, match=match):
        call()


X = torch.ones(3, 4, 5, dtype=F64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), r"^CP.from_dense: CP needs a rank: give ranks=, fraction= or trunc=<int>"),
        (
            dict(ranks=(2, 3)),
            r"^CP.from_dense: ranks must have 1 entry \(the CP rank\), got \(2, 3\)",
        ),
        (dict(ranks=0), r"^CP.from_dense: ranks must be a positive int, got 0"),
        (
            dict(trunc=Truncation(rel_tol=0.1)),
            r"^CP.from_dense: trunc can only set max_rank for CP",
        ),
        (dict(trunc=Truncation(max_rank=2, abs_tol=0.1)), r"^CP.from_dense: trunc can only set"),
        (dict(trunc=Truncation(max_rank=2, rel_tol=0.1)), r"^CP.from_dense: trunc can only set"),
        (dict(trunc=Truncation(max_rank=2, keep_energy=0.9)), r"^CP.from_dense: trunc can only"),
        (dict(fraction=2.0), r"^CP.from_dense: fraction must be in"),
        (dict(fraction=0.001), r"^CP.from_dense: fraction too small"),
        (dict(ranks=2, fraction=0.5), r"^CP.from_dense: give at most one"),
        (dict(trunc=2, ranks=2), r"^CP.from_dense: give at most one"),
        (dict(ranks=2, init="nope"), r"^CP.from_dense: init must be 'svd' or 'random', got 'nope'"),
        (dict(ranks=2, legs=("a",)), r"^CP.from_dense: legs has 1 names"),
        (dict(ranks=2, max_iter=0), r"^CP.from_dense: max_iter must be a positive int, got 0"),
        (
            dict(ranks=2, max_iter=True),
            r"^CP.from_dense: max_iter must be a positive int, got True",
        ),
        (dict(ranks=2, max_iter=2.0), r"^CP.from_dense: max_iter must be a positive int, got 2.0"),
        (dict(ranks=2, tol=-1.0), r"^CP.from_dense: tol must be a number >= 0, got -1.0"),
        (dict(ranks=2, tol="0"), r"^CP.from_dense: tol must be a number >= 0, got '0'"),
        (dict(ranks=13), r"^CP.from_dense: rank 13 exceeds 12, the largest CP rank a tensor of "),
    ],
)
def test_from_dense_bad_inputs_name_the_field(kwargs, match):
    """from_dense validates every argument, naming it and the call."""
    with pytest.raises(ValueError, match=match):
        CP.from_dense(X, **kwargs)


def test_truncate_needs_a_max_rank():
    """CP has no tolerance-driven truncation: only max_rank or ranks."""
    cp = CP([torch.ones(2, 2, dtype=F64), torch.ones(3, 2, dtype=F64)])
    for bad in (None, Truncation(rel_tol=0.1)):
        with pytest.raises(ValueError, match=r"^CP.truncate: only max_rank applies to CP"):
            cp.truncate(bad)
    with pytest.raises(ValueError, match=r"^CP.truncate: ranks must be a positive int"):
        cp.truncate(ranks=0)
    assert CP.from_dense(torch.ones(2, 3, dtype=F64), ranks=1, max_iter=1, tol=0).error < 1e-12
    assert CP.from_dense(torch.ones(2, 3, dtype=F64), ranks=1, tol=0).history[-1] < 1e-12


def test_cp_als_defaults_are_the_documented_ones():
    """cp_als(x, R) runs svd init, 100 sweeps at most, tol 1e-8, no weights, seed 0."""
    x = torch.randn(4, 3, 5, generator=gen(20), dtype=F64)
    w, factors, history = cp_als(x, 3)
    w2, factors2, history2 = cp_als(x, 3, "svd", 100, 1e-8, False, 0)
    assert history == history2 and 2 < len(history) < 100
    torch.testing.assert_close(w, torch.ones(3, dtype=F64))
    for a, b in zip(factors, factors2):
        assert torch.equal(a, b)
    assert len(cp_als(x, 3, tol=0.0)[2]) == 100
    assert len(CP.from_dense(x, ranks=3, tol=0.0).history) == 100
    assert CP.from_dense(x, ranks=3).history == tuple(history)
    r1 = cp_als(x, 2, "random")
    r2 = cp_als(x, 2, "random", seed=0)
    assert r1[2] == r2[2] and all(torch.equal(a, b) for a, b in zip(r1[1], r2[1]))
    c1 = CP.from_dense(x, ranks=2, init="random", max_iter=3)
    c2 = CP.from_dense(x, ranks=2, init="random", max_iter=3, seed=0)
    assert torch.equal(c1.to_dense(), c2.to_dense())


def test_errors_and_weights_do_not_depend_on_the_scale():
    """Scaling x scales the fit: the error history is the same, columns stay unit-norm."""
    x = torch.randn(4, 3, 5, generator=gen(21), dtype=F64)
    for normalize in (False, True):
        big = CP.from_dense(x, ranks=2, max_iter=5, tol=0.0, normalize=normalize)
        small = CP.from_dense(1e-3 * x, ranks=2, max_iter=5, tol=0.0, normalize=normalize)
        assert small.history == pytest.approx(big.history, rel=1e-6)
        torch.testing.assert_close(small.to_dense(), 1e-3 * big.to_dense())
        if normalize:
            norms = torch.stack([f.norm(dim=0) for f in small.factors])
            torch.testing.assert_close(norms, torch.ones_like(norms))
    v = torch.tensor([0.3, -0.4], dtype=F64)  # norm 0.5 < 1
    unit = CP.from_dense(v, ranks=1, normalize=True)
    torch.testing.assert_close(unit.weights, torch.tensor([0.5], dtype=F64))
    torch.testing.assert_close(unit.factors[0], (v / 0.5)[:, None])
    assert [n.name for n in unit.network] == ["A0"]
    with pytest.raises(ValueError, match=r"^CP.from_dense: rank 2 exceeds 1, the largest CP rank"):
        CP.from_dense(v, ranks=2)


def test_random_init_follows_the_device_and_structures_price_weights():
    """Random factors are made where x lives; normalised structures count R weights."""
    meta = torch.empty(2, 3, device="meta", dtype=F64)
    assert {f.device.type for f in _initial_factors(meta, 2, "random", 0)} == {"meta"}
    # per rank 24 (+1 with weights): 1296 // 25 = 51 vs 1296 // 24 = 54
    assert CP.structure_for((6, 6, 6, 6), normalize=True).max_ranks == (51,)
    assert CP.structure_for((6, 6, 6, 6)).max_ranks == (54,)
    bad = {"A0": torch.ones(2, 1), "A1": torch.ones(4, 1)}
    with pytest.raises(ValueError, match=r"^CP.from_factors: "):
        CP.from_factors(CP.structure_for((2, 3), 1), bad)
