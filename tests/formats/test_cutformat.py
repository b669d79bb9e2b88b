"""The ``"cut"`` format: a tensor truncated along compatible cuts, checked against numpy's SVD,
the dense truncation of the study and the HT-SVD error bound."""

import json
import math

import numpy as np
import pytest
import torch

from tensornet import Truncation
from tensornet.formats import CutNetwork, Structure, cut_tree, format_cut, get_format
from tensornet.spectra import truncate as truncate_dense

from .helpers import F64, gen, rel_err

LEGS = ("out", "in", "kh", "kw")
SHAPE = (10, 6, 3, 4)


@pytest.fixture
def kernel():
    return torch.randn(*SHAPE, generator=gen(3), dtype=F64)


def numpy_svd(x, legs, left):
    """Singular values of ``x`` matricised ``left | rest`` (numpy)."""
    right = [leg for leg in legs if leg not in left]
    a = x.numpy().transpose([legs.index(leg) for leg in (*left, *right)])
    rows = math.prod(a.shape[: len(left)])
    return np.linalg.svd(a.reshape(rows, -1), compute_uv=False)


def discarded(x, legs, left, chi):
    s = numpy_svd(x, legs, left)
    return float(np.sum(s[chi:] ** 2))


def test_registered_under_cut():
    assert get_format("cut") is CutNetwork


@pytest.mark.parametrize("cut", [("out",), ("out", "kh"), ("in", "kw"), ("kh",), ("out", "in")])
@pytest.mark.parametrize("chi", [1, 3, 5])
def test_one_cut_is_the_eckart_young_optimum(kernel, cut, chi):
    fmt = CutNetwork.from_dense(kernel, ranks=chi, cuts=[cut], legs=LEGS)
    s = numpy_svd(kernel, LEGS, cut)
    want = math.sqrt(float(np.sum(s[chi:] ** 2))) / math.sqrt(float(np.sum(s**2)))
    assert fmt.ranks == (min(chi, len(s)),)
    assert fmt.error == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert rel_err(kernel, fmt.to_dense()) == pytest.approx(want, rel=1e-10, abs=1e-14)
    # the same values as the study's dense truncation along that cut
    dense = truncate_dense(kernel, cut, chi, legs=LEGS).tensor
    torch.testing.assert_close(fmt.to_dense(), dense, rtol=1e-10, atol=1e-12)


def test_one_cut_layout_and_parameters():
    s = CutNetwork.structure_for(SHAPE, 4, legs=LEGS, cuts=("out", "kh"))
    assert s.option("cuts") == (("out", "kh"),)  # one flat cut is one cut
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("G0", ("out", "kh", "r1"), (10, 3, 4)),
        ("G1", ("in", "kw", "r1"), (6, 4, 4)),
    ]
    assert s.num_params == 4 * (10 * 3 + 6 * 4) and s.max_ranks == (24,)
    # the default: the first leg with the third (a conv kernel's separable split)
    assert CutNetwork.structure_for(SHAPE, legs=LEGS).option("cuts") == (("out", "kh"),)
    assert CutNetwork.structure_for((5, 7), legs=("out", "in")).option("cuts") == (("out",),)
    assert CutNetwork.structure_for((5, 7), legs=("out", "in")).max_ranks == (5,)
    # a cut's legs are kept in dense order; the side given is recorded
    s2 = CutNetwork.structure_for(SHAPE, legs=LEGS, cuts=[["kw", "in"]])
    assert s2.option("cuts") == (("in", "kw"),)


NESTED = [
    [("out", "kh"), ("out",)],
    [("out", "kh"), ("in",)],
    [("out",), ("kh",), ("kw",)],
    [("in", "kh", "kw"), ("kh", "kw"), ("kw",)],
    [("out", "in"), ("out",), ("kh",)],
    [("out",), ("in",), ("out", "in")],
]


@pytest.mark.parametrize("cuts", NESTED)
@pytest.mark.parametrize("chi", [1, 2, 4])
def test_nested_cuts_meet_the_sequential_bound(kernel, cuts, chi):
    fmt = CutNetwork.from_dense(kernel, ranks=chi, cuts=cuts, legs=LEGS)
    norm2 = float(kernel.square().sum())
    bound = sum(discarded(kernel, LEGS, cut, chi) for cut in cuts) / norm2
    err = rel_err(kernel, fmt.to_dense())
    assert err == pytest.approx(fmt.error, rel=1e-9, abs=1e-13)
    assert err**2 <= bound * (1 + 1e-9) + 1e-24
    # every bond really bounds the rank across its cut, and no cut can do better than its own
    dense = fmt.to_dense()
    for cut, r in zip(cuts, fmt.ranks):
        s = numpy_svd(dense, LEGS, cut)
        assert r <= chi and np.all(s[r:] <= 1e-10 * s[0])
        assert err**2 >= discarded(kernel, LEGS, cut, r) / norm2 * (1 - 1e-9)
    # and at full ranks the tree is exact
    assert rel_err(kernel, CutNetwork.from_dense(kernel, cuts=cuts, legs=LEGS).to_dense()) < 1e-12


def test_tree_of_nested_cuts():
    t = cut_tree(LEGS, [("in", "kh", "kw"), ("kh", "kw"), ("kw",)])
    assert t.parent == (0, 1, 2) and t.order == (2, 1, 0)
    assert t.own == (("out",), ("in",), ("kh",), ("kw",))
    s = CutNetwork.structure_for(SHAPE, (3, 2, 2), legs=LEGS, cuts=t.cuts)
    assert [f.legs for f in s.factors] == [
        ("out", "r1"),
        ("in", "r2", "r1"),
        ("kh", "r3", "r2"),
        ("kw", "r3"),
    ]
    # a region without dense legs: three cuts meeting there (a transfer tensor, as in HT)
    t3 = cut_tree(LEGS, [("out",), ("in",), ("out", "in")])
    assert t3.parent == (0, 1, 1) and t3.own == (("out",), (), ("in",), ("kh", "kw"))
    s3 = CutNetwork.structure_for(SHAPE, (4, 3, 2), legs=LEGS, cuts=t3.cuts)
    assert s3.factors[1].legs == ("r2", "r3", "r1") and s3.factors[1].shape == (3, 2, 4)
    # the maximal ranks follow the factors at both ends (a TT along out, in, kh, kw)
    full = CutNetwork.structure_for(SHAPE, legs=LEGS, cuts=[("in", "kh", "kw"), ("kh", "kw")])
    assert full.max_ranks == (10, 12)


def test_max_ranks_are_the_dense_bounds_and_fit_every_factor():
    """Each bond's bound fits within the other legs of both factors it joins (no lowering)."""
    legs = ("a", "b", "c", "d", "e")
    for dims in [(2, 3, 50, 5, 7), (60, 2, 2, 30, 2), (2, 40, 3, 2, 40)]:
        for cuts in ([("a",), ("b",), ("a", "b"), ("d", "e")], [("c",), ("a", "c"), ("e",)]):
            s = CutNetwork.structure_for(dims, legs=legs, cuts=cuts)
            total = math.prod(dims)
            for cut, top in zip(cuts, s.max_ranks):
                n = math.prod(dims[legs.index(leg)] for leg in cut)
                assert top == min(n, total // n)
            for f in s.factors:
                for i in range(len(f.shape)):
                    others = math.prod(f.shape) // f.shape[i]
                    assert f.shape[i] <= others, (dims, cuts, f)


@pytest.mark.parametrize(
    "cuts, match",
    [
        ([("out", "kh"), ("out", "kw")], r"cuts \('out', 'kh'\) and \('out', 'kw'\) cross"),
        ([("out",), ("in", "kh", "kw")], "are the same bipartition"),
        ([("out",), ("out",)], "are the same bipartition"),
        ([("bad",)], "cut \\('bad',\\) must be a non-empty proper subset"),
        ([("out", "in", "kh", "kw")], "proper subset"),
        ([()], "proper subset"),
        ([("out", "out")], "without repeats$"),
        ([], "at least one cut"),
        (3, "cuts must be a cut"),
        ([("out",), 3], "each cut must be leg names"),
    ],
)
def test_bad_cuts_are_refused_naming_them(kernel, cuts, match):
    with pytest.raises(ValueError, match="^CutNetwork.from_dense: .*" + match):
        CutNetwork.from_dense(kernel, ranks=2, cuts=cuts, legs=LEGS)
    with pytest.raises(ValueError, match="^cut_tree: .*" + match):
        cut_tree(LEGS, cuts)


def test_cut_spellings():
    assert cut_tree(LEGS, "kh").cuts == (("kh",),)
    assert cut_tree(LEGS, ["kw", "out"]).cuts == (("out", "kw"),)  # one cut, dense order
    assert cut_tree(LEGS, ["kh", ("out",)]).cuts == (("kh",), ("out",))
    assert cut_tree(LEGS, [("out", "kh"), "in"]).cuts == (("out", "kh"), ("in",))
    assert cut_tree(("a", "b", "c")).cuts == (("a", "c"),)  # default: the first and third legs
    assert cut_tree(("a", "b")).cuts == (("a",),)


def test_one_leg_tensor_is_refused():
    with pytest.raises(ValueError, match="at least 2 legs"):
        CutNetwork.from_dense(torch.randn(5, dtype=F64))


def test_tolerances_hold_overall(kernel):
    cuts = [("out",), ("kh",), ("kw",)]
    for tol in (0.05, 0.3, 0.6):
        fmt = CutNetwork.from_dense(kernel, Truncation(rel_tol=tol), cuts=cuts, legs=LEGS)
        assert rel_err(kernel, fmt.to_dense()) <= tol + 1e-12
    one = CutNetwork.from_dense(kernel, Truncation(rel_tol=0.3), cuts=[("out", "kh")], legs=LEGS)
    s = numpy_svd(kernel, LEGS, ("out", "kh"))
    tails = np.sqrt(np.cumsum((s**2)[::-1])[::-1]) / np.linalg.norm(s)  # error keeping k values
    assert one.ranks[0] == int(np.argmax(tails <= 0.3))  # the fewest values within tolerance


def test_tolerance_is_shared_against_the_whole_norm(kernel):
    """Each of n cuts may discard ``tol / sqrt(n) * ||X||``, however much went before."""
    cuts = [("kw",), ("kh",)]  # equal sides: taken in the order given
    x = kernel.numpy()

    def fewest(s, limit):
        tails = np.sqrt(np.cumsum((s**2)[::-1])[::-1])
        return int(np.argmax(np.append(tails, 0.0) <= limit * (1 + 1e-12)))

    for tol in (0.5, 0.7, 0.95):  # 0.7, 0.95: the second step's own norm would keep more
        fmt = CutNetwork.from_dense(kernel, Truncation(rel_tol=tol), cuts=cuts, legs=LEGS)
        limit = tol / math.sqrt(2) * float(kernel.norm())
        k1 = fewest(numpy_svd(kernel, LEGS, ("kw",)), limit)
        m = np.moveaxis(x, 3, 0).reshape(4, -1)
        u = np.linalg.svd(m, full_matrices=False)[0][:, :k1]
        y = np.moveaxis((u @ u.T @ m).reshape(4, 10, 6, 3), 0, 3)
        k2 = fewest(numpy_svd(torch.from_numpy(y), LEGS, ("kh",)), limit)
        assert fmt.ranks == (k1, k2), tol
        assert rel_err(kernel, fmt.to_dense()) <= tol


def test_zero_and_small_tensors():
    zero = CutNetwork.from_dense(torch.zeros(SHAPE, dtype=F64), ranks=2, legs=LEGS)
    assert zero.error == 0.0 and torch.equal(zero.to_dense(), torch.zeros(SHAPE, dtype=F64))
    small = torch.randn(*SHAPE, generator=gen(4), dtype=F64) * 1e-3
    fmt = CutNetwork.from_dense(small, ranks=2, legs=LEGS)
    assert fmt.error == pytest.approx(rel_err(small, fmt.to_dense()), rel=1e-9) and fmt.error > 0.1


def test_fraction_is_within_budget(kernel):
    for fraction in (0.2, 0.5):
        fmt = CutNetwork.from_dense(kernel, fraction=fraction, cuts=[("out", "kh")], legs=LEGS)
        assert fmt.num_params <= fraction * kernel.numel()
        bigger = fmt.structure.with_ranks((fmt.ranks[0] + 1,))
        assert bigger.num_params > fraction * kernel.numel()


def test_truncate_is_the_optimal_retruncation(kernel):
    fmt = CutNetwork.from_dense(kernel, ranks=6, cuts=[("out", "kh")], legs=LEGS)
    small = fmt.truncate(ranks=2)
    ref = truncate_dense(fmt.to_dense(), ("out", "kh"), 2, legs=LEGS).tensor
    torch.testing.assert_close(small.to_dense(), ref, rtol=1e-10, atol=1e-12)
    assert small.error == pytest.approx(rel_err(fmt.to_dense(), small.to_dense()), rel=1e-10)
    assert fmt.truncate(ranks=50).ranks == (6,)  # ranks never grow
    assert fmt.truncate(Truncation(max_rank=3)).ranks == (3,)
    assert fmt.truncate(Truncation(max_rank=50)).ranks == (6,)
    assert fmt.truncate(Truncation(rel_tol=1e-30)).ranks == (6,)  # rounding noise is not kept
    assert fmt.truncate().ranks == (6,) and fmt.truncate().error < 1e-12
    tree = CutNetwork.from_dense(kernel, ranks=(5, 3), cuts=NESTED[0], legs=LEGS)
    assert tree.truncate(ranks=(2, 3)).ranks == (2, 3)
    with pytest.raises(ValueError, match="^CutNetwork.truncate: ranks must have 2 entries"):
        tree.truncate(ranks=(1, 1, 1))


def test_bond_spectra_equal_the_dense_svd_along_the_cut(kernel):
    fmt = CutNetwork.from_dense(kernel, ranks=(4, 3), cuts=[("out", "kh"), ("out",)], legs=LEGS)
    dense = fmt.to_dense()
    for cut in fmt.cuts:
        res = format_cut(fmt, cut, max_elements=10)  # through the bond: no dense tensor
        assert res.bond is not None
        ref = numpy_svd(dense, LEGS, cut)
        np.testing.assert_allclose(res.spectrum.values.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_structure_serialises_with_cuts_as_lists(kernel):
    fmt = CutNetwork.from_dense(kernel, ranks=(4, 2), cuts=[("out", "kh"), ("out",)], legs=LEGS)
    data = json.loads(json.dumps(fmt.structure.to_dict()))
    assert data["options"] == {"cuts": [["out", "kh"], ["out"]]}
    assert Structure.from_dict(data) == fmt.structure
    again = CutNetwork.from_factors(Structure.from_dict(data), fmt.factor_tensors())
    assert torch.equal(again.to_dense(), fmt.to_dense())
    assert fmt.cuts == (("out", "kh"), ("out",)) and fmt.tree.parent == (2, 0)
