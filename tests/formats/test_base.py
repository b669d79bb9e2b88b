"""The helpers every format shares (tensornet/formats/base.py), checked against dense float64
linear algebra: input checks and their messages, tolerances, projections, frames, inner products,
and the read-only views of a format object."""

import math

import numpy as np
import pytest
import torch

from tensornet import Node, TensorNetwork, Truncation
from tensornet.formats import TT, TTMatrix, Tucker
from tensornet.formats.base import (
    check_order,
    check_ranks,
    check_shape,
    choose,
    dense_input,
    factor_shapes_match,
)
from tensornet.formats.steps import (
    error_limit,
    inner,
    left_svd,
    mode_product,
    relative_error,
    step_truncation,
    tail_norm,
    unfold,
)
from tensornet.formats.structure import chain_factors

from .helpers import F64, gen
from .helpers import unfold as unfold_reference


def with_spectrum(rows, cols, s, seed):
    """A ``rows x cols`` matrix with singular values ``s`` (random orthonormal frames)."""
    g = gen(seed)
    k = len(s)
    u = torch.linalg.qr(torch.randn(rows, k, generator=g, dtype=F64))[0]
    v = torch.linalg.qr(torch.randn(cols, k, generator=g, dtype=F64))[0]
    return (u * torch.tensor(s, dtype=F64)) @ v.T, u


# -- dense_input -----------------------------------------------------------------------------
def test_dense_input_defaults_and_integer_conversion():
    """Default legs d0, d1, ...; integers become the default float dtype; floats are kept."""
    t, legs = dense_input(torch.arange(6).reshape(2, 3), None, "demo")
    assert legs == ("d0", "d1") and t.dtype == torch.get_default_dtype()
    torch.testing.assert_close(t, torch.arange(6.0).reshape(2, 3))
    x = torch.randn(2, 3, generator=gen(0), dtype=F64)
    t, legs = dense_input(x, ["a", "b"], "demo")
    assert legs == ("a", "b") and t.dtype == F64 and torch.equal(t, x)
    t, legs = dense_input([[1.0, 2.0]], None, "demo")  # array-like
    assert legs == ("d0", "d1") and t.shape == (1, 2)


def test_dense_input_takes_legs_from_a_node():
    """A Node brings its legs and its name (used in messages about its values)."""
    x = torch.randn(2, 3, generator=gen(1), dtype=F64)
    t, legs = dense_input(Node(x, ("p", "q"), name="W"), None, "demo")
    assert legs == ("p", "q") and torch.equal(t, x)
    ints, legs = dense_input(Node(torch.ones(2, 2, dtype=torch.int64), ("p", "q")), None, "demo")
    assert ints.dtype == torch.get_default_dtype() and legs == ("p", "q")
    bad = x.clone()
    bad[0, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^demo: node 'W' holds NaN or inf values \(1 of 6"):
        dense_input(Node(bad, ("p", "q"), name="W"), None, "demo")
    with pytest.raises(ValueError, match=r"^demo: legs= is taken from the Node; do not pass"):
        dense_input(Node(x, ("p", "q")), ("a", "b"), "demo")


@pytest.mark.parametrize(
    "x, legs, match",
    [
        (torch.tensor(1.0), None, r"^demo: x must have at least one dimension"),
        (torch.ones(2, 3), "ab", r"^demo: legs must be a sequence of names, got the string 'ab'"),
        (torch.ones(2, 3), ("a",), r"^demo: legs has 1 names for a 2-way tensor"),
        (torch.ones(2, 3), ("a", "a"), r"^demo: legs must be unique non-empty strings"),
        (torch.ones(2, 3), ("a", ""), r"^demo: legs must be unique non-empty strings"),
        (torch.ones(2, 3), ("a", 1), r"^demo: legs must be unique non-empty strings"),
        (
            torch.ones(2, 0, 3),
            None,
            r"^demo: leg 'd1' has size 0 \(shape \(2, 0, 3\)\); a format "
            r"of an empty tensor has nothing to represent$",
        ),
        (torch.tensor([1.0, float("nan")]), None, r"^demo: x holds NaN or inf values \(1 of 2"),
    ],
)
def test_dense_input_refusals_name_the_culprit(x, legs, match):
    """Bad dense inputs are refused with the caller, the field and the value in the message."""
    with pytest.raises(ValueError, match=match):
        dense_input(x, legs, "demo")


# -- choose, check_ranks, check_shape, check_order --------------------------------------------
def test_choose_returns_the_truncation():
    """An int trunc is a rank cap; nothing given is None; a fraction alone gives no truncation."""
    assert choose(3, None, None, "demo") == Truncation(max_rank=3)
    assert choose(None, None, None, "demo") is None
    assert choose(None, None, 1, "demo") is None  # fraction 1 is allowed
    assert choose(None, (2, 2), None, "demo") is None
    t = Truncation(rel_tol=0.1)
    assert choose(t, None, None, "demo") is t


@pytest.mark.parametrize(
    "args, match",
    [
        (
            (2, (2,), None),
            r"^demo: give at most one of trunc, ranks, fraction; got \['trunc', "
            r"'ranks'\]",
        ),
        (
            (None, 2, 0.5),
            r"^demo: give at most one of trunc, ranks, fraction; got \['ranks', "
            r"'fraction'\]",
        ),
        ((None, None, True), r"^demo: fraction must be a number in \(0, 1\], got True"),
        ((None, None, np.bool_(True)), r"^demo: fraction must be a number in \(0, 1\]"),
        ((None, None, "0.5"), r"^demo: fraction must be a number in \(0, 1\], got '0.5'"),
        ((None, None, 0.0), r"^demo: fraction must be in \(0, 1\], got 0.0"),
        ((None, None, 1.01), r"^demo: fraction must be in \(0, 1\], got 1.01"),
    ],
)
def test_choose_refusals(args, match):
    """choose names the caller and what was given."""
    with pytest.raises(ValueError, match=match):
        choose(*args, "demo")


def test_check_ranks_accepts_ints_of_any_library():
    """An int is repeated; numpy and torch integers become Python ints."""
    assert check_ranks(2, 3, "demo") == (2, 2, 2)
    assert check_ranks(np.int64(2), 2, "demo") == (2, 2)
    got = check_ranks(torch.tensor([1, 3]), 2, "demo")
    assert got == (1, 3) and all(type(r) is int for r in got)
    assert check_ranks([1, 1], 2, "demo") == (1, 1)


@pytest.mark.parametrize(
    "ranks, match",
    [
        ("ab", r"^demo: ranks must be an int or a sequence of ints, got 'ab'"),
        (2.5, r"^demo: ranks must be an int or a sequence of ints$"),
        ((1, 2, 3), r"^demo: ranks must have 2 entries, got 3: \(1, 2, 3\)"),
        ((1, 0), r"^demo: ranks must be positive ints, got \(1, 0\)"),
        ((1, 1.5), r"^demo: ranks must be positive ints, got \(1, 1.5\)"),
    ],
)
def test_check_ranks_refusals(ranks, match):
    """Bad ranks are refused with the caller and the value."""
    with pytest.raises(ValueError, match=match):
        check_ranks(ranks, 2, "demo")


def test_check_shape_defaults_and_refusals():
    """check_shape: positive ints, default legs, legs checked like dense_input's."""
    assert check_shape([2, 3], None, "demo") == ((2, 3), ("d0", "d1"))
    assert check_shape((2, 3), ["a", "b"], "demo") == ((2, 3), ("a", "b"))
    assert check_shape((1, 1), None, "demo") == ((1, 1), ("d0", "d1"))  # size 1 is a size
    for shape, match in [
        (5, r"^demo: shape must be a sequence of ints, got 5"),
        ((), r"^demo: shape must be positive ints, got \(\)"),
        ((2, 0), r"^demo: shape must be positive ints, got \(2, 0\)"),
        ((2, True), r"^demo: shape must be positive ints"),
        ((2, 3.0), r"^demo: shape must be positive ints"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_shape(shape, None, "demo")
    for legs, match in [
        ("ab", r"^demo: legs must be a sequence of names, got the string 'ab'"),
        (("a",), r"^demo: legs has 1 names for shape \(2, 3\)"),
        (("a", "a"), r"^demo: legs must be unique non-empty strings, got \('a', 'a'\)"),
        (("a", ""), r"^demo: legs must be unique non-empty strings"),
        (("a", 3), r"^demo: legs must be unique non-empty strings"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_shape((2, 3), legs, "demo")


def test_check_order_is_a_permutation_of_the_legs():
    """order defaults to the legs and must be a permutation of them."""
    legs = ("a", "b", "c")
    assert check_order(None, legs, "demo") == legs
    assert check_order(["c", "a", "b"], legs, "demo") == ("c", "a", "b")
    for order in [("a", "b"), ("a", "b", "b"), ("a", "b", "c", "c"), ("a", "b", "d")]:
        with pytest.raises(ValueError, match=r"^demo: order .* must be a permutation of the legs"):
            check_order(order, legs, "demo")


# -- tolerances ------------------------------------------------------------------------------
def test_error_limit_is_the_tightest_tolerance():
    """All tolerances as one absolute limit: rel_tol * norm, abs_tol, sqrt(1 - energy) * norm."""
    assert error_limit(None, 10.0) is None
    assert error_limit(Truncation(max_rank=3), 10.0) is None
    assert error_limit(Truncation(rel_tol=0.1), 10.0) == pytest.approx(1.0)
    assert error_limit(Truncation(abs_tol=0.5), 10.0) == 0.5
    assert error_limit(Truncation(keep_energy=0.99), 10.0) == pytest.approx(1.0)
    assert error_limit(Truncation(rel_tol=0.1, abs_tol=0.5), 10.0) == 0.5
    assert error_limit(Truncation(rel_tol=0.01, abs_tol=0.5), 10.0) == pytest.approx(0.1)
    both = Truncation(rel_tol=0.2, keep_energy=0.99, abs_tol=3.0)
    assert error_limit(both, 10.0) == pytest.approx(1.0)


def test_step_truncation():
    """A step is a rank cap and/or a non-negative absolute limit (None when neither)."""
    assert step_truncation(None, None) is None
    assert step_truncation(3, None) == Truncation(max_rank=3)
    assert step_truncation(None, 0.25) == Truncation(abs_tol=0.25)
    assert step_truncation(2, -1e-3) == Truncation(max_rank=2, abs_tol=0.0)


def test_relative_error_and_tail_norm():
    """||x - y|| / ||x|| (plain ||y|| when x is 0); tail norms of a spectrum."""
    x = torch.tensor([3.0, 4.0], dtype=F64)
    assert relative_error(x, torch.tensor([3.0, 1.0], dtype=F64)) == pytest.approx(0.6)
    assert relative_error(torch.zeros(2, dtype=F64), x) == pytest.approx(5.0)
    small = torch.tensor([0.3, 0.4], dtype=F64)  # norm 0.5: still divided by it
    assert relative_error(small, torch.tensor([0.3, 0.1], dtype=F64)) == pytest.approx(0.6)
    s = torch.tensor([5.0, 3.0, 4.0], dtype=F64)
    assert tail_norm(s, 1) == pytest.approx(5.0)
    assert tail_norm(s, 0) == pytest.approx(math.sqrt(50.0))
    assert tail_norm(s, 3) == 0.0 and tail_norm(s, 5) == 0.0


# -- multilinear algebra ---------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mode_product_and_unfold_match_einsum(axis):
    """mode_product multiplies one axis by a matrix; unfold is the matricisation."""
    x = torch.randn(3, 4, 5, generator=gen(2), dtype=F64)
    m = torch.randn(2, x.shape[axis], generator=gen(3), dtype=F64)
    letters = "abc"
    eq = f"z{letters[axis]},abc->" + letters.replace(letters[axis], "z")
    torch.testing.assert_close(mode_product(x, m, axis), torch.einsum(eq, m, x))
    for axes in ([axis], [2, 0], [1, 2]):
        torch.testing.assert_close(unfold(x, axes), unfold_reference(x, axes), rtol=0, atol=0)


@pytest.mark.parametrize(
    "rows, cols, step",
    [
        (4, 6, None),  # Gram route
        (4, 6, Truncation(max_rank=2)),
        (3, 9, Truncation(abs_tol=1e-3)),  # Gram route, tolerance coarse enough
        (3, 9, Truncation(rel_tol=1e-2)),  # QR of the wide matrix, then SVD
        (7, 4, Truncation(max_rank=3)),  # tall: SVD
        (5, 7, Truncation(keep_energy=0.999)),  # wide but not twice as wide: SVD
    ],
)
def test_left_svd_gives_the_leading_frame_and_the_whole_spectrum(rows, cols, step):
    """Every route: orthonormal U_k spanning the leading left singular vectors, exact spectrum."""
    k = min(rows, cols)
    s = [2.0**-i for i in range(k)]
    m, u_true = with_spectrum(rows, cols, s, seed=rows * cols)
    u, spectrum = left_svd(m, step)
    torch.testing.assert_close(spectrum, torch.tensor(s, dtype=F64), rtol=0, atol=1e-7)
    r = k if step is None else step.rank(torch.tensor(s, dtype=F64))
    assert u.shape == (rows, r)
    torch.testing.assert_close(u.T @ u, torch.eye(r, dtype=F64), rtol=0, atol=1e-12)
    lead = u_true[:, :r]
    torch.testing.assert_close(u @ u.T, lead @ lead.T, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    "step",
    [
        Truncation(abs_tol=3e-9),
        Truncation(rel_tol=3e-9),
    ],
)
def test_left_svd_resolves_tiny_singular_values_for_fine_tolerances(step):
    """Tolerances below GRAM_MIN_TOL * ||m|| avoid the Gram route: 1e-8 and 1e-9 are resolved."""
    s = [1.0, 1e-8, 1e-9, 1e-12]
    m, _ = with_spectrum(4, 6, s, seed=4)
    u, spectrum = left_svd(m, step)
    torch.testing.assert_close(spectrum, torch.tensor(s, dtype=F64), rtol=1e-6, atol=1e-15)
    assert u.shape[1] == 2  # dropping 1e-9 and 1e-12 meets the tolerance, dropping 1e-8 does not


def test_left_svd_keep_energy_avoids_the_gram_route():
    """keep_energy is a relative tolerance too: the small singular values come out exact."""
    s = [1.0, 1e-7, 2e-8, 1e-9]
    m, _ = with_spectrum(4, 6, s, seed=11)
    u, spectrum = left_svd(m, Truncation(keep_energy=1 - 1e-15))
    torch.testing.assert_close(spectrum, torch.tensor(s, dtype=F64), rtol=1e-6, atol=1e-15)
    assert u.shape[1] == 2


def test_left_svd_abs_tol_threshold_is_gram_min_tol_times_the_norm():
    """abs_tol just above 1e-6 * ||m|| may use the Gram route; just below it must not."""
    s = [1.0, 3e-7, 1e-9]
    m, _ = with_spectrum(3, 5, s, seed=5)
    # abs_tol 9e-7 < 1e-6 * ||m||: the spectrum is exact, 3e-7 and 1e-9 are dropped
    u, spectrum = left_svd(m, Truncation(abs_tol=9e-7))
    torch.testing.assert_close(spectrum, torch.tensor(s, dtype=F64), rtol=1e-6, atol=1e-15)
    assert u.shape[1] == 1
    _, coarse = left_svd(m, Truncation(abs_tol=2e-6))
    assert abs(float(coarse[2]) - 1e-9) > 1e-12  # Gram: tiny values are only sqrt(eps) accurate


def test_left_svd_gram_route_for_rank_caps_and_coarse_tolerances():
    """No tolerance, a plain rank cap, or abs_tol >= 1e-6 * ||m|| (also square m): Gram route.

    Its tiny singular values are only sqrt(eps) * ||m|| accurate, which is how the route shows.
    """
    s = [1.0, 1e-4, 1e-9]
    for rows, cols in [(3, 5), (3, 3)]:
        m, _ = with_spectrum(rows, cols, s, seed=12 + cols)
        m = 100.0 * m
        norm = float(torch.linalg.vector_norm(m))
        for step in (None, Truncation(max_rank=2), Truncation(abs_tol=1e-6 * norm)):
            u, spectrum = left_svd(m, step)
            assert abs(float(spectrum[2]) - 1e-7) > 1e-10
            torch.testing.assert_close(spectrum[:2], 100 * torch.tensor(s[:2], dtype=F64))
        # just below the threshold (relative to ||m|| = 100, not 1): the exact SVD route
        _, exact = left_svd(m, Truncation(abs_tol=0.9e-6 * norm))
        torch.testing.assert_close(exact, 100 * torch.tensor(s, dtype=F64), rtol=1e-6, atol=0)


def test_left_svd_needs_grad_route_gives_the_same_frame():
    """With gradients enabled on a wide input the SVD route gives the same frame and spectrum."""
    m, _ = with_spectrum(2, 8, [3.0, 1.0], seed=6)
    step = Truncation(rel_tol=1e-3, max_rank=1)
    u0, s0 = left_svd(m, step)
    u1, s1 = left_svd(m.clone().requires_grad_(True), step)
    torch.testing.assert_close(s1.detach(), s0)
    torch.testing.assert_close((u1 @ u1.T).detach(), u0 @ u0.T)


def test_inner_renames_bonds_apart_from_every_leg_of_both():
    """b's bonds get fresh names that clash with no leg of a (here a has a bond named 'j~')."""
    x = torch.randn(2, 3, generator=gen(13), dtype=F64)
    y = torch.randn(3, 4, generator=gen(14), dtype=F64)
    a = TensorNetwork([Node(x, ("i", "j~"), name="A"), Node(y, ("j~", "k"), name="B")])
    p = torch.randn(2, 5, generator=gen(15), dtype=F64)
    q = torch.randn(5, 4, generator=gen(16), dtype=F64)
    b = TensorNetwork([Node(p, ("i", "j"), name="A"), Node(q, ("j", "k"), name="B")])
    expected = float(((x @ y) * (p @ q)).sum())
    assert float(inner(a, b)) == pytest.approx(expected, rel=1e-12)


def test_inner_matches_the_dense_inner_product():
    """<a, b> of two networks is sum(conj(a) * b)... here of real and complex TTs vs dense."""
    x = torch.randn(3, 4, 5, generator=gen(7), dtype=F64)
    y = torch.randn(3, 4, 5, generator=gen(8), dtype=F64)
    a, b = TT.from_dense(x), TT.from_dense(y)
    assert float(inner(a.network, b.network)) == pytest.approx(float((x * y).sum()), rel=1e-12)
    # bonds of b that clash with a's are renamed apart: a network with itself
    assert float(inner(a.network, a.network)) == pytest.approx(float((x * x).sum()), rel=1e-12)
    z = torch.complex(x, y)
    c = TT.from_dense(z)
    got = complex(inner(c.network, c.network))
    assert got == pytest.approx(complex((z.conj() * z).sum()), rel=1e-12)
    tucker = Tucker.from_dense(y, legs=("d0", "d1", "d2"))
    assert float(inner(a.network, tucker.network)) == pytest.approx(float((x * y).sum()), rel=1e-12)
    other = TT.from_dense(torch.randn(3, 4, dtype=F64), legs=("d0", "q"))
    with pytest.raises(ValueError, match=r"^inner: open legs differ: \('d0', 'd1', 'd2'\) vs"):
        inner(a.network, other.network)


# -- structure helpers -----------------------------------------------------------------------
def test_chain_factors_open_and_ring():
    """Open trains have no outer bonds on their end cores; rings close with the last bond."""
    groups, dims = [("a",), ("b", "c"), ("d",)], [(2,), (3, 4), (5,)]
    open_ = chain_factors(groups, dims, ("r1", "r2"), (6, 7))
    assert [(f.name, f.legs, f.shape) for f in open_] == [
        ("G0", ("a", "r1"), (2, 6)),
        ("G1", ("r1", "b", "c", "r2"), (6, 3, 4, 7)),
        ("G2", ("r2", "d"), (7, 5)),
    ]
    ring = chain_factors(groups, dims, ("r0", "r1", "r2"), (6, 7, 8), ring=True)
    assert [(f.legs, f.shape) for f in ring] == [
        (("r2", "a", "r0"), (8, 2, 6)),
        (("r0", "b", "c", "r1"), (6, 3, 4, 7)),
        (("r1", "d", "r2"), (7, 5, 8)),
    ]
    single = chain_factors([("a",)], [(2,)], (), ())
    assert [(f.legs, f.shape) for f in single] == [(("a",), (2,))]


def test_factor_shapes_match_names_missing_extra_and_misshapen_factors():
    """The tensors must be exactly the structure's factors, each with its shape."""
    s = TT.structure_for((2, 3), (2,))
    good = {"G0": torch.ones(2, 2), "G1": torch.ones(2, 3)}
    factor_shapes_match(s, good, "demo")
    with pytest.raises(
        ValueError,
        match=r"^demo: tensors must be the factors \['G0', 'G1'\]; missing \['G1'\], "
        r"unexpected \['G2'\]",
    ):
        factor_shapes_match(s, {"G0": good["G0"], "G2": good["G1"]}, "demo")
    with pytest.raises(ValueError, match=r"^demo: tensors must be .* missing \[\], unexpected \["):
        factor_shapes_match(s, {**good, "X": torch.ones(1)}, "demo")
    with pytest.raises(
        ValueError,
        match=r"^demo: factor G1 \(legs \('r1', 'd1'\)\) must have shape \(2, 3\), got \(3, 2\)",
    ):
        factor_shapes_match(s, {"G0": good["G0"], "G1": torch.ones(3, 2)}, "demo")


# -- the shared views of a format ------------------------------------------------------------
def test_format_views_sizes_and_repr():
    """shape, dense_size, num_params, compression, dtype, device, error and repr, exactly."""
    x = torch.randn(4, 5, 6, generator=gen(9), dtype=F64)
    tt = TT.from_dense(x, ranks=(2, 3), legs=("a", "b", "c"))
    assert tt.shape == (4, 5, 6) and tt.dense_size == 120
    assert tt.num_params == 4 * 2 + 2 * 5 * 3 + 3 * 6 == 56
    assert tt.compression == 120 / 56
    assert tt.dtype == F64 and tt.device == x.device
    assert tt.legs == ("a", "b", "c") and isinstance(tt.network, TensorNetwork)
    assert repr(tt) == (
        f"TT(shape=(4, 5, 6), legs=('a', 'b', 'c'), ranks=(2, 3), params=56, "
        f"compression=2.14, error={tt.error:.3g})"
    )
    bare = TT(list(tt.cores), [("a",), ("b",), ("c",)])
    assert bare.error is None
    assert repr(bare) == (
        "TT(shape=(4, 5, 6), legs=('a', 'b', 'c'), ranks=(2, 3), params=56, compression=2.14)"
    )
    big = TT.from_dense(torch.randn(40, 40, 4, dtype=F64))
    assert "params=8,016, compression=0.798, error=0)" in repr(big)


def test_to_casts_every_factor_and_keeps_the_rest():
    """to() returns a new object with cast factors; the original and its fields are kept."""
    x = torch.randn(3, 4, 5, generator=gen(10), dtype=F64)
    t = Tucker.from_dense(x, ranks=(2, 2, 2), legs=("a", "b", "c"))
    f32 = t.to(dtype=torch.float32)
    assert f32 is not t and type(f32) is Tucker
    assert f32.dtype == torch.float32 and t.dtype == F64
    assert all(v.dtype == torch.float32 for v in f32.factor_tensors().values())
    assert f32.legs == t.legs and f32.ranks == t.ranks and f32.error == t.error
    assert f32.modes == t.modes and f32.history == t.history
    torch.testing.assert_close(f32.to_dense(), t.to_dense().float())
    meta = t.to(device="meta")
    assert meta.device.type == "meta" and meta.dtype == F64
    assert all(v.device.type == "meta" for v in meta.factor_tensors().values())
    same = t.to()
    torch.testing.assert_close(same.to_dense(), t.to_dense(), rtol=0, atol=0)
    assert t.structure == f32.structure


# -- the Format template: generic constructor, from_dense, from_factors, structure_for --------
def _tt():
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return x, TT.from_dense(x, ranks=2, legs=("a", "b", "c"))


def test_generic_constructor_takes_structure_tensors_error():
    """cls(structure, tensors, error) rebuilds a format; other structures and shapes are refused."""
    _, tt = _tt()
    s, t = tt.structure, tt.factor_tensors()
    again = TT(s, t, error=0.25)
    assert again.error == 0.25 and again.structure is s and TT(s, t).error is None
    torch.testing.assert_close(again.to_dense(), tt.to_dense(), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^Tucker: got a 'tt' structure, not 'tucker'$"):
        Tucker(s, t)
    with pytest.raises(ValueError, match=r"^TT: factor G0 \(legs \('a', 'r1'\)\) must have shape"):
        TT(s, dict(t, G0=torch.ones(3, 3, dtype=torch.float64)))
    with pytest.raises(TypeError, match=r"^TTMatrix\(structure, tensors, error=None\): got no Str"):
        TTMatrix(1, 2)


def test_own_constructors_pass_keywords_and_records():
    """A format's own constructor (its _parts) gets keywords; its records land on the object."""
    _, tt = _tt()
    named = TT(list(tt.cores), [("a",), ("b",), ("c",)], legs=("c", "a", "b"), error=0.5)
    assert named.legs == ("c", "a", "b") and named.error == 0.5
    core, factors = torch.ones(2, 3, dtype=torch.float64), [torch.eye(2, dtype=torch.float64)]
    t = Tucker(core, factors, ("p", "q"), modes=("p",), history=(0.3, 0.2))
    assert t.history == (0.3, 0.2) and t.modes == ("p",) and t.error is None
    assert Tucker(core, factors, ("p", "q"), ("p",)).history == ()


def test_from_dense_names_the_caller_and_passes_the_options():
    """Every refusal of the template names FORMAT.from_dense; algorithm options reach the format."""
    x, _ = _tt()
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    cases = [
        (dict(ranks=2, fraction=0.5), "give at most one of trunc, ranks, fraction"),
        (dict(x=bad), "x holds NaN or inf"),
        (dict(order=("a", "b")), r"order \('a', 'b'\) must be a permutation"),
        (dict(ranks=(2, 2, 2)), "ranks must have 2 entries"),
        (dict(fraction=1e-3), "fraction too small"),
        (dict(budget="nope"), "budget must be 'uniform' or 'adaptive'"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=r"^TT\.from_dense: " + match):
            TT.from_dense(kw.pop("x", x), legs=("a", "b", "c"), **kw)
    tol = Truncation(rel_tol=0.6)
    uniform = TT.from_dense(x, tol)
    adaptive = TT.from_dense(x, tol, budget="adaptive")
    assert adaptive.ranks != uniform.ranks and max(adaptive.error, uniform.error) <= 0.6


def test_from_factors_checks_the_structure_by_rebuilding_it():
    """from_factors rebuilds the structure with the format's own checks and keeps the error."""
    import dataclasses

    _, tt = _tt()
    again = TT.from_factors(tt.structure, tt.factor_tensors(), 0.125)
    assert again.error == 0.125 and again.structure == tt.structure
    assert TT.from_factors(tt.structure, tt.factor_tensors()).error is None
    bad = dataclasses.replace(tt.structure, options=(("order", ("a", "b")),))
    with pytest.raises(ValueError, match=r"^TT\.from_factors: order \('a', 'b'\) must be"):
        TT.from_factors(bad, tt.factor_tensors())
    with pytest.raises(ValueError, match=r"^TT\.from_factors: tensors must be the factors"):
        TT.from_factors(tt.structure, {"G0": torch.ones(4, 2)})


def test_structure_for_names_the_caller_and_takes_the_format_default_legs():
    """structure_for: default and given caller names, format default legs, rank checks."""
    from tensornet.formats import get_format

    assert get_format("ttmatrix").structure_for((24, 30), 2).legs == ("rows", "cols")
    assert TT.structure_for((2, 3)).legs == ("d0", "d1")
    for call, match in [
        (lambda: TT.structure_for((2, 0)), r"^TT\.structure_for: shape must be positive ints"),
        (lambda: TT.structure_for((2, 3), what="mine"), None),
        (lambda: TT.structure_for((2, 0), what="mine"), r"^mine: shape must be positive ints"),
        (lambda: TT.structure_for((2, 3), (1, 1)), r"^TT\.structure_for: ranks must have 1"),
        (lambda: TT.structure_for((2, 3), order=("x", "y")), r"^TT\.structure_for: order"),
    ]:
        if match is None:
            assert call().ranks == (2,)
            continue
        with pytest.raises(ValueError, match=match):
            call()


def test_clamp_ranks_lowers_to_the_maximal_ranks_and_names_the_caller():
    """clamp_ranks takes legs and options; refusals name clamp_ranks or the caller given."""
    legs = ("o", "i", "h", "w")
    assert TT.clamp_ranks((16, 8, 3, 3), 64, legs=legs, order=("i", "h", "w", "o")) == (8, 24, 16)
    assert TT.clamp_ranks((16, 8, 3, 3), (2, 100, 1)) == (2, 9, 1)
    with pytest.raises(ValueError, match=r"^TT\.clamp_ranks: ranks must have 3 entries"):
        TT.clamp_ranks((16, 8, 3, 3), (2, 2))
    with pytest.raises(ValueError, match=r"^TT\.clamp_ranks: legs has 1 names"):
        TT.clamp_ranks((16, 8, 3, 3), 2, legs=("o",))
    with pytest.raises(ValueError, match=r"^layer: order \('o',\) must be a permutation"):
        TT.clamp_ranks((16, 8, 3, 3), 2, legs=legs, what="layer", order=("o",))
