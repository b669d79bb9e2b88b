import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import TTMatrix, balanced_factors

from .helpers import F64, gen, rel_err


@pytest.mark.parametrize("n, d", [(256, 3), (1000, 3), (96, 2), (7, 2), (1, 3), (4096, 4)])
def test_balanced_factors(n, d):
    f = balanced_factors(n, d)
    assert len(f) == d and math.prod(f) == n and list(f) == sorted(f, reverse=True)
    if n in (256, 1000, 4096):
        assert max(f) / min(f) <= 2


def test_full_rank_reproduces_matrix(device):
    w = torch.randn(24, 30, generator=gen(0), dtype=F64).to(device)
    ttm = TTMatrix.from_matrix(w, legs=("out", "in"))
    assert ttm.row_dims == balanced_factors(24, 3) == (4, 3, 2)
    assert rel_err(w, ttm.to_dense()) < 1e-10 and ttm.error < 1e-10
    assert ttm.shape == (24, 30) and ttm.to_dense().device.type == device.type
    assert {"out_0", "in_2"} <= set(ttm.network.open_legs)


def tt_matrix_dense(row_dims, col_dims, ranks, seed):
    g = gen(seed)
    r = (1, *ranks, 1)
    d = len(row_dims)
    cores = [
        torch.randn(r[k], row_dims[k], col_dims[k], r[k + 1], generator=g, dtype=F64)
        for k in range(d)
    ]
    t = cores[0]
    for c in cores[1:]:
        t = torch.tensordot(t, c, dims=([t.ndim - 1], [0]))
    t = t.reshape([x for k in range(d) for x in (row_dims[k], col_dims[k])])
    perm = [2 * k for k in range(d)] + [2 * k + 1 for k in range(d)]
    return t.permute(perm).reshape(math.prod(row_dims), math.prod(col_dims))


def test_known_ranks_recovered_and_storage_formula():
    w = tt_matrix_dense((2, 3, 4), (3, 2, 5), (2, 3), seed=1)
    ttm = TTMatrix.from_matrix(w, (2, 3, 4), (3, 2, 5), Truncation(rel_tol=1e-10))
    assert ttm.ranks == (2, 3)
    assert rel_err(w, ttm.to_dense()) < 1e-10
    r = (1, 2, 3, 1)
    mn = (6, 6, 20)
    assert ttm.num_params == sum(mn[k] * r[k] * r[k + 1] for k in range(3))
    for k, core in enumerate(ttm.tt.cores):
        assert core.shape == (r[k], (2, 3, 4)[k], (3, 2, 5)[k], r[k + 1])


def test_conv_kernel_keeps_spatial_mode_and_names_legs():
    k = torch.randn(16, 8, 3, 3, generator=gen(2), dtype=F64)
    full = TTMatrix.from_conv_kernel(k)
    assert rel_err(k, full.to_dense()) < 1e-10
    assert set(full.network.open_legs) == {
        "kh",
        "kw",
        "out_0",
        "out_1",
        "out_2",
        "in_0",
        "in_1",
        "in_2",
    }
    assert full.network.node("G0").legs == ("kh", "kw", "r1")
    # the spatial core is the SVD of the (kh kw) x (channels) unfolding
    assert full.ranks[0] == 9
    small = TTMatrix.from_conv_kernel(k, (4, 4), (2, 4), Truncation(rel_tol=0.3))
    assert small.row_dims == (4, 4) and small.col_dims == (2, 4)
    assert rel_err(k, small.to_dense()) <= 0.3
    r = (1, *small.ranks, 1)
    sizes = (9, 8, 16)
    assert small.num_params == sum(sizes[j] * r[j] * r[j + 1] for j in range(3))


def test_rounding_and_cast():
    w = torch.randn(16, 16, generator=gen(3), dtype=F64)
    ttm = TTMatrix.from_matrix(w, (4, 4), (4, 4))
    low = ttm.round(ranks=(3,))
    assert low.ranks == (3,)
    assert low.error == pytest.approx(rel_err(w, low.to_dense()), rel=1e-8)
    assert ttm.truncate(2).ranks == (2,)
    f32 = low.to(dtype=torch.float32)
    assert f32.dtype == torch.float32 and f32.to_dense().shape == (16, 16)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_fraction_budget(fraction):
    w = torch.randn(64, 48, generator=gen(4), dtype=F64)
    ttm = TTMatrix.from_matrix(w, (4, 4, 4), (4, 4, 3), fraction=fraction)
    budget = fraction * w.numel()
    assert ttm.num_params <= budget
    cap = max(ttm.ranks)
    sizes, tops = (16, 16, 12), (16, 12)
    r = (1, *[min(cap + 1, t) for t in tops], 1)
    assert cap >= 16 or sum(sizes[k] * r[k] * r[k + 1] for k in range(3)) > budget


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(row_dims=(5, 5), col_dims=(5, 6)), "row_dims"),
        (dict(row_dims=(4, 6), col_dims=(2, 3, 5)), "same length"),
        (dict(row_dims=(4, 6), col_dims=(5, 6), ranks=(2, 2)), "ranks must have 1 entries"),
        (dict(legs=("a",)), "legs must be two"),
        (dict(fraction=1.01), "fraction must be in"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTMatrix.from_matrix(torch.ones(24, 30, dtype=F64), **kwargs)


def test_bad_kernel_inputs():
    with pytest.raises(ValueError, match="out_dims"):
        TTMatrix.from_conv_kernel(torch.ones(6, 4, 3, 3), out_dims=(4, 2))
    with pytest.raises(ValueError, match="kernel must be"):
        TTMatrix.from_conv_kernel(torch.ones(6, 4, 3))
