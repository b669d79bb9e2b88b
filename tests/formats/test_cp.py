import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import CP, khatri_rao

from .helpers import F64, cp_dense, gen, rel_err


def rank3(seed=0, sizes=(8, 9, 10)):
    g = gen(seed)
    factors = [torch.randn(n, 3, generator=g, dtype=F64) for n in sizes]
    return cp_dense(factors), factors


@pytest.mark.parametrize("init", ["svd", "random"])
@pytest.mark.parametrize("normalize", [False, True])
def test_known_rank3_is_recovered(init, normalize, device):
    x, _ = rank3()
    x = x.to(device)
    cp = CP.from_dense(x, ranks=3, init=init, normalize=normalize, max_iter=500, tol=1e-12)
    assert cp.ranks == (3,) and cp.rank == 3
    assert rel_err(x, cp.to_dense()) < 1e-8  # an exact rank-3 tensor: ALS converges to it
    assert cp.error == pytest.approx(rel_err(x, cp.to_dense()), rel=1e-6, abs=1e-12)
    assert cp.to_dense().device.type == device.type
    if normalize:
        norms = torch.stack([f.norm(dim=0) for f in cp.factors])
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert cp.num_params == 3 * (8 + 9 + 10) + 3
    else:
        assert cp.num_params == 3 * (8 + 9 + 10)


def test_network_is_the_same_tensor_with_dense_leg_names():
    x, _ = rank3(1, (4, 5, 6, 3))
    cp = CP.from_dense(x, ranks=3, legs=("a", "b", "c", "d"), max_iter=50)
    assert cp.network.open_legs == ("a", "b", "c", "d")
    torch.testing.assert_close(cp.network.contract(output=cp.legs).tensor, cp.to_dense())
    two = CP.from_dense(torch.randn(4, 5, dtype=F64), ranks=2)
    torch.testing.assert_close(two.network.contract(output=two.legs).tensor, two.to_dense())


def test_als_error_history_is_monotone_and_iterations_settable():
    g = gen(2)
    x = torch.randn(6, 7, 8, generator=g, dtype=F64)
    cp = CP.from_dense(x, ranks=4, init="random", seed=3, max_iter=15, tol=0.0)
    assert len(cp.history) == 15
    assert all(b <= a + 1e-10 for a, b in zip(cp.history, cp.history[1:]))
    assert cp.history[-1] == pytest.approx(cp.error, rel=1e-6)
    again = CP.from_dense(x, ranks=4, init="random", seed=3, max_iter=15, tol=0.0)
    torch.testing.assert_close(again.to_dense(), cp.to_dense())  # seeded
    other = CP.from_dense(x, ranks=4, init="random", seed=4, max_iter=15, tol=0.0)
    assert not torch.allclose(other.to_dense(), cp.to_dense())
    early = CP.from_dense(x, ranks=4, max_iter=1000, tol=1e-3)
    assert len(early.history) < 1000


def test_khatri_rao_matches_unfolding_order():
    _, (a, b, c) = rank3(3)
    x = cp_dense([a, b, c])
    torch.testing.assert_close(x.reshape(8, -1), a @ khatri_rao([b, c]).T)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.9])
def test_fraction_picks_the_rank_from_the_parameter_count(fraction):
    x = torch.randn(10, 12, 9, generator=gen(4), dtype=F64)
    cp = CP.from_dense(x, fraction=fraction, max_iter=5)
    budget = fraction * x.numel()
    assert cp.num_params <= budget < (cp.rank + 1) * 31
    assert cp.rank == math.floor(budget / 31)


def test_truncate_keeps_the_largest_components():
    _, factors = rank3(5)
    factors[0] = factors[0] * torch.tensor([10.0, 1.0, 0.01], dtype=F64)
    cp = CP(factors)
    small = cp.truncate(2)
    assert small.rank == 2
    torch.testing.assert_close(small.to_dense(), cp_dense([f[:, :2] for f in factors]))
    assert small.error == pytest.approx(rel_err(cp.to_dense(), small.to_dense()))


def test_to_casts_every_factor():
    cp = CP.from_dense(rank3()[0], ranks=3, normalize=True, max_iter=5).to(dtype=torch.float32)
    assert cp.dtype == torch.float32 and cp.to_dense().dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "needs a rank"),
        (dict(ranks=(2, 3)), "ranks must have 1 entry"),
        (dict(trunc=Truncation(rel_tol=0.1)), "only set max_rank"),
        (dict(fraction=2.0), "fraction must be in"),
        (dict(ranks=2, init="nope"), "init must be"),
        (dict(ranks=2, legs=("a",)), "legs has 1 names"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CP.from_dense(torch.ones(3, 4, 5, dtype=F64), **kwargs)


def test_exact_complex_rank3_is_fitted():
    g = gen(7)
    factors = [
        torch.randn(n, 3, generator=g, dtype=F64) + 1j * torch.randn(n, 3, generator=g, dtype=F64)
        for n in (6, 7, 8)
    ]
    x = cp_dense(factors)
    cp = CP.from_dense(x, ranks=3, max_iter=100, tol=0.0)
    assert cp.to_dense().dtype == torch.complex128
    assert rel_err(x, cp.to_dense()) < 1e-8
    assert cp.error == pytest.approx(rel_err(x, cp.to_dense()), abs=1e-10)


def test_rank_above_the_largest_possible_cp_rank_is_refused():
    x = torch.randn(3, 4, 5, dtype=F64)
    with pytest.raises(ValueError, match="exceeds 12, the largest CP rank"):
        CP.from_dense(x, ranks=13)
    assert CP.from_dense(x, ranks=12, max_iter=2).rank == 12
