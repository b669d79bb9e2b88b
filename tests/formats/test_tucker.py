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
