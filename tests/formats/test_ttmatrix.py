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


# -- details pinned down by mutation testing -------------------------------------------------
@pytest.mark.parametrize(
    "n, d, expected",
    [
        (256, 3, (8, 8, 4)),
        (1000, 3, (10, 10, 10)),
        (7, 2, (7, 1)),
        (1, 3, (1, 1, 1)),
        (12, 1, (12,)),
        (2 * 3 * 5 * 7 * 11, 2, (66, 35)),  # largest primes first, each to the smallest factor
        (4, 2, (2, 2)),
        (9, 2, (3, 3)),
        (49, 3, (7, 7, 1)),
        (2**5 * 3, 2, (12, 8)),
        (2, 2, (2, 1)),
        (3, 1, (3,)),
    ],
)
def test_balanced_factors_exact(n, d, expected):
    """The exact factors: primes dealt largest first to the currently smallest factor."""
    got = balanced_factors(n, d)
    assert got == expected and all(type(f) is int for f in got)


def test_balanced_factors_accepts_library_ints_and_refuses_bad_ones():
    import numpy as np

    assert balanced_factors(np.int64(12), np.int64(2)) == (4, 3)
    for n, d, match in [
        (0, 2, r"^balanced_factors: n must be a positive int, got 0$"),
        (2.0, 2, r"^balanced_factors: n must be a positive int, got 2.0$"),
        (6, 0, r"^balanced_factors: d must be a positive int, got 0$"),
        (6, "2", r"^balanced_factors: d must be a positive int, got '2'$"),
    ]:
        with pytest.raises(ValueError, match=match):
            balanced_factors(n, d)


def test_check_dims_and_mode_legs():
    """check_dims: positive ints multiplying to the size (ValueError naming the field)."""
    import numpy as np

    from tensornet.formats.tensorize import check_dims, mode_legs

    got = check_dims(np.array([2, 3]), 6, "row_dims", "demo")
    assert got == (2, 3) and all(type(n) is int for n in got)
    assert check_dims([6], 6, "row_dims", "demo") == (6,)
    assert check_dims([1, 6, 1], 6, "row_dims", "demo") == (1, 6, 1)  # sizes of 1 pad
    for dims, match in [
        ("23", r"^demo: row_dims must be a sequence of ints, got '23'$"),
        (6, r"^demo: row_dims must be a sequence of ints, got 6$"),
        ((), r"^demo: row_dims must be positive ints, got \(\)$"),
        ((2, 0), r"^demo: row_dims must be positive ints, got \(2, 0\)$"),
        ((2, 1.5), r"^demo: row_dims must be positive ints, got \(2, 1.5\)$"),
        ((2, 2), r"^demo: row_dims \(2, 2\) multiply to 4, not the size 6$"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_dims(dims, 6, "row_dims", "demo")
    assert mode_legs("out", 3) == ("out_0", "out_1", "out_2") and mode_legs("x", 1) == ("x_0",)


def test_tensorize_matrix_pairs_row_and_column_modes():
    """tensorize_matrix(w)[i1, j1, i2, j2] == w[i1 * m2 + i2, j1 * n2 + j2]."""
    from tensornet.formats.tensorize import tensorize_matrix

    w = torch.randn(6, 20, generator=gen(10), dtype=F64)
    t = tensorize_matrix(w, (2, 3), (4, 5))
    assert t.shape == (2, 4, 3, 5)
    for i1, j1, i2, j2 in [(0, 0, 0, 0), (1, 2, 0, 4), (1, 3, 2, 1), (0, 1, 2, 3)]:
        assert t[i1, j1, i2, j2] == w[i1 * 3 + i2, j1 * 5 + j2]
    three = tensorize_matrix(torch.arange(24.0).reshape(4, 6), (2, 1, 2), (1, 3, 2))
    assert three.shape == (2, 1, 1, 3, 2, 2)
    assert three[1, 0, 0, 2, 1, 1] == (1 * 2 + 1) * 6 + (2 * 2 + 1)


def test_ttmatrix_entry_points_name_themselves_in_errors():
    """Every refusal names the entry point and the culprit."""
    w = torch.ones(24, 30, dtype=F64)
    cases = [
        (lambda: TTMatrix.from_matrix(torch.ones(24), legs=("a", "b")),
         r"^TTMatrix\.from_matrix: w must be a matrix, got shape \(24,\)$"),
        (lambda: TTMatrix.from_matrix(w, legs="ab"),
         r"^TTMatrix\.from_matrix: legs must be two distinct names, got 'ab'$"),
        (lambda: TTMatrix.from_matrix(w, legs=("a", "a")),
         r"^TTMatrix\.from_matrix: legs must be two distinct names"),
        (lambda: TTMatrix.from_matrix(w, (5, 5)),
         r"^TTMatrix\.from_matrix: row_dims \(5, 5\) multiply to 25, not the size 24$"),
        (lambda: TTMatrix.from_matrix(w, (4, 6), (2, 3, 5)),
         r"^TTMatrix\.from_matrix: row_dims \(4, 6\) and col_dims \(2, 3, 5\) need the same"),
        (lambda: TTMatrix.from_matrix(w, None, (2, 3, 5), d=2),
         r"^TTMatrix\.from_matrix: row_dims \(6, 4\) and col_dims \(2, 3, 5\) need the same"),
        (lambda: TTMatrix.from_dense(w, out_dims=(4, 6), in_dims=(30,)),
         r"^TTMatrix\.from_dense: out_dims \(4, 6\) and in_dims \(30,\) need the same length$"),
        (lambda: TTMatrix.from_dense(w, in_dims=(7, 5)),
         r"^TTMatrix\.from_dense: in_dims \(7, 5\) multiply to 35, not the size 30$"),
        (lambda: TTMatrix.from_dense(torch.ones(5, dtype=F64), legs=("a",)),
         r"^TTMatrix\.from_dense: needs a matrix or a kernel \(2\+ legs\), got shape \(5,\)$"),
        (lambda: TTMatrix.from_dense(w, ranks=(2,), out_dims=(4, 6), in_dims=(5, 6), trunc=2),
         r"^TTMatrix\.from_dense: give at most one of"),
        (lambda: TTMatrix.from_dense(w, ranks=(2, 2), out_dims=(4, 6), in_dims=(5, 6)),
         r"^TTMatrix\.from_dense: ranks must have 1 entries"),
        (lambda: TTMatrix.from_dense(w, fraction=1e-4),
         r"^TTMatrix\.from_dense: fraction too small"),
        (lambda: TTMatrix.from_dense(w, legs=("a",)),
         r"^TTMatrix\.from_dense: legs has 1 names for shape \(24, 30\)$"),
        (lambda: TTMatrix.from_dense(torch.tensor([[float("nan")]])),
         r"^TTMatrix\.from_dense: x holds NaN"),
        (lambda: TTMatrix.from_conv_kernel(torch.ones(6, 4, 3, 3), legs=("o", "i", "h")),
         r"^TTMatrix\.from_conv_kernel: legs must be 4 distinct names, got \('o', 'i', 'h'\)$"),
        (lambda: TTMatrix.from_conv_kernel(torch.ones(6, 4, 3, 3), legs="oihw"),
         r"^TTMatrix\.from_conv_kernel: legs must be 4 distinct names, got 'oihw'$"),
        (lambda: TTMatrix.from_conv_kernel(torch.ones(6, 4, 3, 3), legs=("o", "i", "h", "h")),
         r"^TTMatrix\.from_conv_kernel: legs must be 4 distinct names"),
        (lambda: TTMatrix.from_conv_kernel(torch.ones(6, 4, 3)),
         r"^TTMatrix\.from_conv_kernel: kernel must be \(out, in, kh, kw\), got \(6, 4, 3\)$"),
        (lambda: TTMatrix.structure_for((24, 30), out_dims=(5, 5)),
         r"^TTMatrix\.structure_for: out_dims \(5, 5\) multiply to 25"),
        (lambda: TTMatrix.structure_for((24, 30), (2, 2), out_dims=(4, 6), in_dims=(5, 6)),
         r"^TTMatrix\.structure_for: ranks must have 1 entries"),
        (lambda: TTMatrix.structure_for((24, 0)), r"^TTMatrix\.structure_for: shape must be"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_default_dims_legs_and_d():
    """Defaults: d=3 balanced factors, legs (rows, cols) / (out, in, kh, kw) / (out, in, k0)."""
    w = torch.randn(12, 8, generator=gen(11), dtype=F64)
    m = TTMatrix.from_dense(w)
    assert m.legs == ("rows", "cols") and m.row_dims == (3, 2, 2) and m.col_dims == (2, 2, 2)
    assert set(m.network.open_legs) == {f"{leg}_{k}" for leg in ("rows", "cols") for k in range(3)}
    two = TTMatrix.from_dense(w, d=2)
    assert two.row_dims == (4, 3) and two.col_dims == (4, 2)
    assert TTMatrix.from_matrix(w, d=2).col_dims == (4, 2)
    assert TTMatrix.from_matrix(w).legs == ("rows", "cols")
    k = torch.randn(4, 6, 3, 2, generator=gen(12), dtype=F64)
    kern = TTMatrix.from_dense(k)
    assert kern.legs == ("out", "in", "kh", "kw")
    assert TTMatrix.from_conv_kernel(k).legs == ("out", "in", "kh", "kw")
    torch.testing.assert_close(kern.to_dense(), k)
    x3 = torch.randn(4, 6, 5, generator=gen(13), dtype=F64)
    t3 = TTMatrix.from_dense(x3, d=2)
    assert t3.legs == ("out", "in", "k0") and t3.shape == (4, 6, 5)
    torch.testing.assert_close(t3.to_dense(), x3)
    s = TTMatrix.structure_for((12, 8))
    assert s.legs == ("rows", "cols") and s.option("out_dims") == (3, 2, 2)
    s5 = TTMatrix.structure_for((4, 6, 2, 2, 2), d=2)
    assert s5.legs == ("out", "in", "k0", "k1", "k2")
    assert s5.modes == (("out_0", "out_1"), ("in_0", "in_1"), ("k0",), ("k1",), ("k2",))


def test_kernel_layout_structure_and_round_trip():
    """The kernel's spatial core comes first; structure, factors and options rebuild it exactly."""
    k = torch.randn(8, 6, 3, 3, generator=gen(14), dtype=F64)
    legs = ("o", "i", "h", "w")
    t = TTMatrix.from_conv_kernel(k, (2, 4), (3, 2), ranks=(5, 4), legs=legs)
    assert t.legs == legs and t.shape == (8, 6, 3, 3) and t.ranks == (5, 4)
    assert t.options == {"out_dims": (2, 4), "in_dims": (3, 2)}
    s = t.structure
    assert [(f.legs, f.shape) for f in s.factors] == [
        (("h", "w", "r1"), (3, 3, 5)),
        (("r1", "o_0", "i_0", "r2"), (5, 2, 3, 4)),
        (("r2", "o_1", "i_1"), (4, 4, 2)),
    ]
    assert s.max_ranks == (9, 8) and s.num_params == 45 + 120 + 32 == t.num_params
    again = TTMatrix.from_factors(s, t.factor_tensors(), error=0.5)
    assert again.error == 0.5 and again.legs == legs and again.shape == t.shape
    torch.testing.assert_close(again.to_dense(), t.to_dense(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^TTMatrix\.from_factors: tensors must be the factors"):
        TTMatrix.from_factors(s, {"G0": t.factor_tensors()["G0"]})
    # the spatial core is the leading (kh kw) x (channels) SVD: at rank 9 the kernel is exact
    assert rel_err(k, TTMatrix.from_conv_kernel(k, (2, 4), (3, 2), legs=legs).to_dense()) < 1e-12
    m = TTMatrix.from_matrix(torch.randn(6, 4, generator=gen(15), dtype=F64), (2, 3), (2, 2))
    assert m.structure.modes == (("rows_0", "rows_1"), ("cols_0", "cols_1"))
    assert TTMatrix.from_factors(m.structure, m.factor_tensors()).error is None


def test_truncation_rounding_budget_and_cast_keep_the_layout():
    """round / truncate / to act on the train and keep legs, dims and shape; errors are exact."""
    w = torch.randn(16, 12, generator=gen(16), dtype=F64)
    t = TTMatrix.from_matrix(w, (4, 2, 2), (3, 2, 2), legs=("o", "i"))
    small = t.truncate(ranks=(3, 2))
    assert small.ranks == (3, 2) and small.legs == ("o", "i") and small.shape == (16, 12)
    assert small.row_dims == (4, 2, 2) and small.col_dims == (3, 2, 2)
    assert small.error == pytest.approx(rel_err(w, small.to_dense()), rel=1e-8)
    tol = t.round(Truncation(rel_tol=0.3))
    assert rel_err(w, tol.to_dense()) <= 0.3 and tol.error == pytest.approx(
        rel_err(w, tol.to_dense()), rel=1e-8)
    moved = small.to(dtype=torch.float32)
    assert moved.dtype == torch.float32 and moved.legs == ("o", "i") and moved.ranks == (3, 2)
    assert moved.error == small.error and moved.tt.dtype == torch.float32
    torch.testing.assert_close(moved.to_dense(), small.to_dense().float())
    # the budget reaches the TT-SVD: adaptive shares keep fewer ranks than uniform ones
    uni = TTMatrix.from_matrix(w, (4, 2, 2), (3, 2, 2), Truncation(rel_tol=0.5))
    ada = TTMatrix.from_matrix(w, (4, 2, 2), (3, 2, 2), Truncation(rel_tol=0.5), budget="adaptive")
    same = TTMatrix.from_dense(w, Truncation(rel_tol=0.5), out_dims=(4, 2, 2), in_dims=(3, 2, 2))
    assert uni.ranks == same.ranks and sum(ada.ranks) < sum(uni.ranks)
    k = torch.randn(8, 6, 3, 3, generator=gen(17), dtype=F64)
    kuni = TTMatrix.from_conv_kernel(k, (2, 4), (3, 2), Truncation(rel_tol=0.5))
    kada = TTMatrix.from_conv_kernel(k, (2, 4), (3, 2), Truncation(rel_tol=0.5), budget="adaptive")
    kref = TTMatrix.from_dense(k, Truncation(rel_tol=0.5), out_dims=(2, 4), in_dims=(3, 2),
                               budget="adaptive")  # fmt: skip
    assert kada.ranks == kref.ranks != kuni.ranks
    assert TTMatrix.from_conv_kernel(k, d=2).row_dims == (4, 2)


def test_fraction_reaches_the_dims():
    """fraction with explicit dims prices the TT-matrix with those dims."""
    w = torch.randn(24, 30, generator=gen(18), dtype=F64)
    t = TTMatrix.from_matrix(w, (4, 6), (5, 6), fraction=0.3)
    from tensornet.formats import fraction_ranks

    assert t.ranks == fraction_ranks("ttmatrix", (24, 30), 0.3, out_dims=(4, 6), in_dims=(5, 6))
    assert t.num_params <= 0.3 * 720


def test_inner_train_errors_format_name_and_device():
    """The train carries the same error; structures are 'ttmatrix' with their ranks; to(device)."""
    import dataclasses

    w = torch.randn(24, 30, generator=gen(19), dtype=F64)
    t = TTMatrix.from_matrix(w, (4, 6), (5, 6), ranks=(3,))
    assert t.tt.error == t.error and t.error > 0
    s = t.structure
    assert s.format == "ttmatrix" and s.ranks == (3,) and s.max_ranks == (20,)
    again = TTMatrix.from_factors(s, t.factor_tensors(), error=0.5)
    assert again.tt.error == 0.5
    bad = dataclasses.replace(s, options=(("out_dims", (5, 5)), ("in_dims", (5, 6))))
    with pytest.raises(ValueError, match=r"^TTMatrix\.from_factors: out_dims \(5, 5\) multiply"):
        TTMatrix.from_factors(bad, t.factor_tensors())
    meta = t.to(device="meta")
    assert meta.device.type == "meta" and meta.shape == (24, 30)
    with pytest.raises(ValueError, match=r"^TTMatrix\.from_matrix: col_dims \(7, 5\) multiply"):
        TTMatrix.from_matrix(w, (4, 6), (7, 5))
    with pytest.raises(ValueError, match=r"^TTMatrix\.from_dense: give at most one of"):
        TTMatrix.from_dense(w, 2, fraction=0.5)


def test_kernel_fraction_budget():
    """from_conv_kernel passes the fraction on: the cap is fraction_ranks' for those dims."""
    from tensornet.formats import fraction_ranks

    k = torch.randn(8, 6, 3, 3, generator=gen(20), dtype=F64)
    t = TTMatrix.from_conv_kernel(k, (2, 4), (3, 2), fraction=0.3)
    legs = ("out", "in", "kh", "kw")
    expected = fraction_ranks("ttmatrix", (8, 6, 3, 3), 0.3, legs=legs, out_dims=(2, 4),
                              in_dims=(3, 2))  # fmt: skip
    assert t.ranks == expected and t.num_params <= 0.3 * k.numel()
