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


# -- details pinned down by mutation testing -------------------------------------------------
def test_from_cores_and_from_factors_rebuild_the_tensor():
    """from_cores (default legs d0, ...) and from_factors (structure layout, order, error)."""
    x = torch.randn(3, 4, 5, generator=gen(30), dtype=F64)
    tt = TT.from_dense(x, ranks=(2, 3))
    again = TT.from_cores(list(tt.cores))
    assert again.legs == ("d0", "d1", "d2") and again.ranks == (2, 3) and again.error is None
    torch.testing.assert_close(again.to_dense(), tt.to_dense(), rtol=0, atol=0)
    named = TT.from_cores(list(tt.cores), legs=["a", "b", "c"])
    assert named.legs == ("a", "b", "c") and named.network.open_legs == ("a", "b", "c")
    with pytest.raises(ValueError, match=r"^TT\.from_cores: legs has 2 names for 3 cores$"):
        TT.from_cores(list(tt.cores), legs=("a", "b"))
    ordered = TT.from_dense(Node(x, ("a", "b", "c")), ranks=(3, 2), order=("c", "a", "b"))
    s = ordered.structure
    assert [(f.legs, f.shape) for f in s.factors] == [
        (("c", "r1"), (5, 3)), (("r1", "a", "r2"), (3, 3, 2)), (("r2", "b"), (2, 4)),
    ]  # fmt: skip
    rebuilt = TT.from_factors(s, ordered.factor_tensors(), error=0.125)
    assert rebuilt.error == 0.125 and rebuilt.legs == ("a", "b", "c")
    assert rebuilt.order == ("c", "a", "b") and rebuilt.ranks == (3, 2)
    torch.testing.assert_close(rebuilt.to_dense(), ordered.to_dense(), rtol=0, atol=0)
    assert TT.from_factors(s, ordered.factor_tensors()).error is None
    single = TT.structure_for((4,))
    one = TT.from_factors(single, {"G0": torch.arange(4.0)})
    torch.testing.assert_close(one.to_dense(), torch.arange(4.0))
    with pytest.raises(ValueError, match=r"^TT\.from_factors: tensors must be the factors"):
        TT.from_factors(s, {"G0": torch.ones(5, 3)})


def test_constructor_checks_name_the_core():
    """TT(cores, groups, legs): default legs, and refusals that name the core and the shape."""
    g = [torch.randn(1, 2, 3, dtype=F64), torch.randn(3, 4, 1, dtype=F64)]
    tt = TT(g, [("a",), ("b",)])
    assert tt.legs == ("a", "b") and tt.error is None
    torch.testing.assert_close(tt.to_dense(), torch.einsum("xai,ibz->ab", *g))
    cases = [
        (lambda: TT(g, [("a",), ("b",)], legs=("a", "x")),
         r"^TT: legs \('a', 'x'\) must be a permutation of the mode legs \('a', 'b'\)$"),
        (lambda: TT(g, [("a",), ("a",)], legs=("a", "a")), r"^TT: legs .* must be a permutation"),
        (lambda: TT(g, [("a",)]), r"^TT: 2 cores for 1 mode groups$"),
        (lambda: TT([], []), r"^TT: 0 cores for 0 mode groups$"),
        (lambda: TT([g[0], torch.ones(3, 4)], [("a",), ("b",)]),
         r"^TT: core 1 needs 3 dims \(r, modes\.\.\., r'\), got shape \(3, 4\)$"),
        (lambda: TT([g[0], torch.ones(3, 4, 2)], [("a",), ("b",)]),
         r"^TT: boundary ranks must be 1, core 1 has \(3, 4, 2\)$"),
        (lambda: TT([torch.ones(2, 2, 3), g[1]], [("a",), ("b",)]),
         r"^TT: boundary ranks must be 1, core 0 has \(2, 2, 3\)$"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: TT.from_dense(x, 2, fraction=0.5), r"^TT\.from_dense: give at most one of"),
        (lambda x: TT.from_dense(x, budget="x"), r"^TT\.from_dense: budget must be 'uniform' or"),
        (lambda x: TT.from_dense(x, legs="abc"), r"^TT\.from_dense: legs must be a sequence"),
        (lambda x: TT.from_dense(x, ranks=(1,)), r"^TT\.from_dense: ranks must have 2 entries"),
        (lambda x: TT.from_dense(x, fraction=1e-4), r"^TT\.from_dense: fraction too small"),
        (lambda x: TT.from_dense(x, order=("d0",)), r"^TT\.from_dense: order \('d0',\) must be"),
        (lambda x: TT.from_dense(x).round(budget="x"), r"^TT\.round: budget must be 'uniform'"),
        (lambda x: TT.from_dense(x).round(ranks=(1,)), r"^TT\.round: ranks must have 2 entries"),
        (lambda x: TT.from_dense(x).canonical(3), r"^TT\.canonical: center must be an int in "
                                                 r"\[0, 3\), got 3$"),
        (lambda x: TT.from_dense(x).canonical(-4), r"^TT\.canonical: center must be an int"),
        (lambda x: TT.from_dense(x).canonical(True), r"^TT\.canonical: center must be an int"),
        (lambda x: TT.from_dense(x).canonical(1.0), r"^TT\.canonical: center must be an int"),
        (lambda x: TT.structure_for((0, 2)), r"^TT\.structure_for: shape must be positive"),
        (lambda x: TT.structure_for((2, 2), order=("a",)), r"^TT\.structure_for: order"),
        (lambda x: TT.structure_for((2, 2), (1, 1)), r"^TT\.structure_for: ranks must have 1 "),
    ],
)
def test_errors_name_the_entry_point(call, match):
    """Each TT entry point names itself and the field in its refusals."""
    with pytest.raises(ValueError, match=match):
        call(torch.ones(3, 4, 5, dtype=F64))


def test_structure_for_layout_legs_order_and_options():
    """structure_for: format 'tt', bonds r1, r2, ... along order, ranks, the order option."""
    s = TT.structure_for((3, 4, 5), (2, 3), legs=("a", "b", "c"), order=("b", "c", "a"))
    assert s.format == "tt" and s.legs == ("a", "b", "c") and s.shape == (3, 4, 5)
    assert s.ranks == (2, 3) and s.options == (("order", ("b", "c", "a")),)
    assert s.max_ranks == (4, 3)
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("G0", ("b", "r1"), (4, 2)),
        ("G1", ("r1", "c", "r2"), (2, 5, 3)),
        ("G2", ("r2", "a"), (3, 3)),
    ]
    clash = TT.structure_for((2, 2, 2), legs=("r1", "x", "r3"))
    assert clash.summed_legs == ("r12", "r2")
    assert s.with_ranks(None).ranks == (4, 3)


def test_zero_and_small_tensors_report_relative_errors():
    """A zero tensor has error 0; tensors with norm below 1 report ||x - approx|| / ||x||."""
    zero = TT.from_dense(torch.zeros(3, 4, 5, dtype=F64), ranks=(1, 1))
    assert zero.error == 0.0 and zero.round(ranks=(1, 1)).error == 0.0
    x = 1e-3 * decaying((4, 5, 6), seed=31)
    tt = TT.from_dense(x, ranks=(2, 2))
    assert tt.error == pytest.approx(rel_err(x, tt.to_dense()), rel=1e-8) and tt.error > 1e-3
    full = TT.from_dense(x)
    r = full.round(ranks=(2, 2))
    assert r.error == pytest.approx(rel_err(x, r.to_dense()), rel=1e-8) and r.error > 1e-3


def test_a_truncation_rank_cap_applies_to_every_bond():
    """trunc=Truncation(max_rank=k) or the int k caps every bond (with or without a tolerance)."""
    x = torch.randn(4, 5, 6, generator=gen(32), dtype=F64)
    assert TT.from_dense(x, Truncation(max_rank=2)).ranks == (2, 2)
    assert TT.from_dense(x, 3).ranks == (3, 3)
    assert TT.from_dense(x, Truncation(max_rank=2, rel_tol=1e-12)).ranks == (2, 2)
    assert TT.from_dense(x).truncate(ranks=(2, 3)).ranks == (2, 3)
    assert TT.from_dense(x).truncate(2).ranks == (2, 2)


def test_tt_svd_defaults_to_the_uniform_budget():
    """tt_svd's default budget is uniform (what TR's inner TT-SVD relies on)."""
    from tensornet.formats.tt import tt_svd

    x = decaying((4, 4, 4, 4), seed=33, rate=0.5)
    trunc = Truncation(rel_tol=0.3)
    default = tt_svd(x, x.shape, trunc)
    uniform = tt_svd(x, x.shape, trunc, None, "uniform")
    adaptive = tt_svd(x, x.shape, trunc, None, "adaptive")
    ranks = [tuple(c.shape[2] for c in cores[:-1]) for cores, _ in (default, uniform, adaptive)]
    assert ranks[0] == ranks[1] != ranks[2]
    assert default[1] == uniform[1]


def test_adaptive_budget_reaches_from_dense():
    """budget='adaptive' in from_dense gives what the adaptive TT-SVD gives (fewer ranks here)."""
    x = decaying((4, 4, 4, 4), seed=33, rate=0.5)
    uni = TT.from_dense(x, Truncation(rel_tol=0.3))
    ada = TT.from_dense(x, Truncation(rel_tol=0.3), budget="adaptive")
    assert sum(ada.ranks) < sum(uni.ranks) and rel_err(x, ada.to_dense()) <= 0.3


def test_uniform_rounding_share_is_tol_over_sqrt_d_minus_1():
    """round(budget='uniform') gives each of the d - 1 steps tol / sqrt(d - 1), like TT-SVD."""
    sizes, tol = (4, 3, 5), 0.1
    d = len(sizes)
    c = tol * (1 / math.sqrt(d - 1) + 1 / math.sqrt(d)) / 2
    t = c * math.sqrt(1.25) / math.sqrt(1 - c * c)
    s = torch.tensor([1.0, 0.5, t], dtype=F64)
    g = gen(7)
    a = torch.linalg.qr(torch.randn(sizes[0], 3, generator=g, dtype=F64))[0]
    b = torch.linalg.qr(torch.randn(math.prod(sizes[1:]), 3, generator=g, dtype=F64))[0]
    x = ((a * s) @ b.T).reshape(sizes)
    rounded = TT.from_dense(x).round(Truncation(rel_tol=tol), budget="uniform")
    assert rounded.ranks[0] == 2


def test_left_orthogonalize_default_and_one_sided_canonical_forms():
    """left_orthogonalize() stops before the last core; left/right_canonical are the two ends."""
    from tensornet.formats.tt import left_orthogonalize

    x = torch.randn(3, 4, 5, 2, generator=gen(34), dtype=F64)
    tt = TT.from_dense(x, ranks=(3, 5, 2)) * 2.0
    cores = left_orthogonalize(tt._cores3())
    dense = TT.from_cores(cores).to_dense()
    torch.testing.assert_close(dense, tt.to_dense())
    for c in cores[:-1]:
        m = c.reshape(-1, c.shape[-1])
        torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=F64), atol=1e-12, rtol=0)
    assert float(cores[-1].norm()) == pytest.approx(float(dense.norm()), rel=1e-12)
    left, right = tt.left_canonical(), tt.right_canonical()
    for c in left.cores[:-1]:
        m = c.reshape(-1, c.shape[-1])
        torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=F64), atol=1e-12, rtol=0)
    for c in right.cores[1:]:
        m = c.reshape(c.shape[0], -1)
        torch.testing.assert_close(m @ m.T, torch.eye(m.shape[0], dtype=F64), atol=1e-12, rtol=0)
    assert tt.canonical(-4).to_dense().allclose(tt.to_dense())
    assert tt.canonical(1).error == tt.error and (tt * 3).error == tt.error


def test_noise_floor_and_step_limit():
    """The floor is 4 eps ||x|| sqrt(d) (real eps for complex); adaptive steps get what is left."""
    from tensornet.formats.tt import _noise_floor, _step_limit

    eps64, eps32 = torch.finfo(F64).eps, torch.finfo(torch.float32).eps
    assert _noise_floor(torch.ones(2, dtype=F64), 3.0, 4) == pytest.approx(4 * eps64 * 3.0 * 2.0)
    assert _noise_floor(torch.ones(2), 3.0, 9) == pytest.approx(4 * eps32 * 3.0 * 3.0)
    z = torch.ones(2, dtype=torch.complex64)
    assert _noise_floor(z, 2.0, 1) == pytest.approx(4 * eps32 * 2.0)
    assert _step_limit(None, 3, 0.0, "uniform", 1e-3) is None
    assert _step_limit(1.0, 4, 0.5, "uniform", 1e-3) == pytest.approx(0.5)
    assert _step_limit(1.0, 4, 0.36, "adaptive", 1e-3) == pytest.approx(0.8 + 1e-3)
    assert _step_limit(1.0, 4, 2.0, "adaptive", 1e-3) == pytest.approx(1e-3)


def test_sums_of_one_core_tensors_and_add_without_rounding():
    """A one-core TT adds entrywise; add() without trunc is the exact sum with unknown error."""
    u, v = torch.randn(5, dtype=F64), torch.randn(5, dtype=F64)
    a, b = TT.from_dense(u), TT.from_dense(v)
    torch.testing.assert_close((a + b).to_dense(), u + v)
    torch.testing.assert_close((a - b).to_dense(), u - v)
    assert (a + b).error is None
    x = random_tt_dense((3, 4, 5), (2, 2), seed=35)
    t = TT.from_dense(x, Truncation(rel_tol=1e-12))
    exact = t.add(t)
    assert exact.ranks == (4, 4) and exact.error is None
    torch.testing.assert_close(exact.to_dense(), 2 * x)
    rounded = t.add(t, Truncation(rel_tol=1e-10))
    assert rounded.ranks == (2, 2)
    torch.testing.assert_close(rounded.to_dense(), 2 * x)


def test_scalars_only():
    """A TT times a bool or a string is refused (TypeError); scaling keeps the error."""
    tt = TT.from_dense(torch.randn(3, 4, dtype=F64), ranks=(2,))
    for bad in (True, "2"):
        with pytest.raises(TypeError):
            tt * bad
    torch.testing.assert_close((2.5 * tt).to_dense(), 2.5 * tt.to_dense())
    assert (2.5 * tt).error == tt.error and (-tt).error == tt.error


def test_rebuilt_trains_keep_the_dense_leg_order():
    """Rounding and canonical forms of a TT built along another order keep its dense legs."""
    x = torch.randn(3, 4, 5, generator=gen(36), dtype=F64)
    tt = TT.from_dense(Node(x, ("a", "b", "c")), order=("c", "a", "b"))
    for other in (tt.round(ranks=(5, 4)), tt.canonical(1), tt * 1.0):
        assert other.legs == ("a", "b", "c") and other.order == ("c", "a", "b")
        torch.testing.assert_close(other.to_dense(), x)


def test_fraction_with_named_legs_and_an_order():
    """fraction prices the train in its order, with the caller's leg names."""
    from tensornet.formats import fraction_ranks

    x = torch.randn(6, 7, 8, generator=gen(37), dtype=F64)
    tt = TT.from_dense(Node(x, ("a", "b", "c")), fraction=0.3, order=("c", "a", "b"))
    expected = fraction_ranks("tt", (8, 6, 7), 0.3)
    assert tt.ranks == expected and tt.num_params <= 0.3 * x.numel()


def test_one_sided_sweeps_touch_only_their_side():
    """right_canonical sweeps from the right only: a bond only a left sweep would shrink is kept."""
    g = gen(38)
    cores = [torch.randn(1, 2, 5, generator=g, dtype=F64), torch.randn(5, 3, 2, generator=g,
             dtype=F64), torch.randn(2, 4, 1, generator=g, dtype=F64)]  # fmt: skip
    tt = TT.from_cores(cores)
    right = tt.right_canonical()
    assert right.ranks == (5, 2) and right.core(0).shape == (1, 2, 5)
    assert float(right.core(0).norm()) == pytest.approx(float(tt.to_dense().norm()), rel=1e-12)
    torch.testing.assert_close(right.to_dense(), tt.to_dense())
    assert tt.canonical(1).ranks == (2, 2)  # the left sweep of core 0 shrinks bond 1 to 1 * 2
    assert tt.left_canonical().ranks == (2, 2)


def test_a_one_core_train_rounds():
    """A vector as a one-core TT: rounding has no bond to cut and reports error 0."""
    v = torch.randn(6, generator=gen(39), dtype=F64)
    r = TT.from_dense(v).round(Truncation(rel_tol=0.1))
    assert r.ranks == () and r.error == 0.0
    torch.testing.assert_close(r.to_dense(), v)
