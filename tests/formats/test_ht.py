import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tensornet import Truncation
from tensornet.formats import HT, DimensionTree
from tensornet.formats.ht import ht_params

from .helpers import F64, best_tail, decaying, gen, rel_err

TREES = [None, ((0, 1), (2, (3, 4))), (((0, 4), 1), (3, 2)), (0, (1, (2, (3, 4))))]


@pytest.mark.parametrize("tree", TREES, ids=str)
def test_full_rank_reproduces_input(tree, device):
    x = torch.randn(3, 4, 2, 3, 2, generator=gen(0), dtype=F64).to(device)
    ht = HT.from_dense(x, tree=tree, legs=("a", "b", "c", "d", "e"))
    assert sorted(ht.network.open_legs) == ["a", "b", "c", "d", "e"]
    assert rel_err(x, ht.to_dense()) < 1e-10 and ht.error < 1e-10
    assert ht.device.type == device.type


def random_ht(tree, sizes, ranks, seed):
    """A dense tensor built from random HT factors with the given ranks (breadth first)."""
    g = gen(seed)
    r = (1, *ranks)
    tensors = {}
    for t in range(len(tree)):
        if tree.is_leaf(t):
            tensors[t] = torch.randn(sizes[tree.nodes[t][0]], r[t], generator=g, dtype=F64)
        else:
            a, b = tree.children(t)
            shape = (r[a], r[b]) if t == 0 else (r[a], r[b], r[t])
            tensors[t] = torch.randn(*shape, generator=g, dtype=F64)
    groups = [(f"d{i}",) for i in range(len(sizes))]
    return HT(tensors, tree, groups, [(n,) for n in sizes]).to_dense()


def test_known_ranks_are_recovered():
    tree = DimensionTree.balanced(4)
    ranks = (3, 3, 2, 3, 2, 2)
    x = random_ht(tree, (4, 5, 4, 3), ranks, seed=1)
    ht = HT.from_dense(x, Truncation(rel_tol=1e-10))
    assert ht.ranks == ranks
    assert rel_err(x, ht.to_dense()) < 1e-10


def test_dimension_tree_structure_and_validation():
    t = DimensionTree.balanced(5)
    assert t.nodes[0] == (0, 1, 2, 3, 4) and t.num_edges == 7 and len(t) == 9
    assert all(t.parent(c) == p for p in range(len(t)) for c in t.children(p))
    assert DimensionTree(((0, 1), (2, 3))) == DimensionTree.balanced(4)
    for bad, match in [
        (((0, 1), (1, 2)), "once each"),
        (((0, 1, 2), 3), "exactly 2 children"),
        ((0, "a"), "int or a pair"),
        (0, "at least 2 modes"),
        (((0, 2), 3), "once each"),
    ]:
        with pytest.raises(ValueError, match=match):
            DimensionTree(bad)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 4), min_size=3, max_size=5),
    tol=st.floats(1e-3, 0.7),
    seed=st.integers(0, 10_000),
)
def test_ht_svd_error_is_within_rel_tol(sizes, tol, seed):
    x = decaying(sizes, seed=seed, rate=0.6)
    ht = HT.from_dense(x, Truncation(rel_tol=tol))
    assert rel_err(x, ht.to_dense()) <= tol * (1 + 1e-9)
    trunc = HT.from_dense(x).truncate(Truncation(rel_tol=tol))
    assert rel_err(x, trunc.to_dense()) <= tol * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 4), min_size=3, max_size=5),
    rank=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    balanced=st.booleans(),
)
def test_ht_error_is_within_sqrt_2d_minus_3_of_the_best(sizes, rank, seed, balanced):
    d = len(sizes)
    tree = DimensionTree.balanced(d) if balanced else DimensionTree(_caterpillar(d))
    x = torch.randn(*sizes, generator=gen(seed), dtype=F64)
    for ht in (HT.from_dense(x, rank, tree=tree), HT.from_dense(x, tree=tree).truncate(rank)):
        err = float((x - ht.to_dense()).norm())
        # node t's matricisation has rank <= r_t in any HT of these ranks, so the best rank-r_t
        # approximation of each matricisation bounds the best HT error from below
        edges = [t for t in range(1, len(tree)) if t != 2]
        tails = [best_tail(x, tree.nodes[t], ht.ranks[t - 1]) for t in edges]
        assert err <= math.sqrt(sum(s * s for s in tails)) * (1 + 1e-9) + 1e-12
        assert err <= math.sqrt(2 * d - 3) * max(tails) * (1 + 1e-9) + 1e-12


def _caterpillar(d):
    tree = d - 1
    for m in range(d - 2, -1, -1):
        tree = (m, tree)
    return tree


def test_truncation_equals_ht_svd_of_the_tensor_and_reports_its_error():
    x = decaying((4, 3, 5, 4), seed=2, rate=0.7)
    full = HT.from_dense(x)
    for ranks in [2, (3, 3, 2, 2, 3, 2)]:
        small = full.truncate(None, ranks=ranks)
        direct = HT.from_dense(x, ranks=ranks)
        assert small.ranks == direct.ranks
        torch.testing.assert_close(small.to_dense(), direct.to_dense())
        assert small.error == pytest.approx(rel_err(x, small.to_dense()), rel=1e-6)
    # truncating an already-truncated HT measures against that HT
    mid = full.truncate(3)
    twice = mid.truncate(Truncation(rel_tol=0.2))
    assert twice.error == pytest.approx(
        rel_err(mid.to_dense(), twice.to_dense()), rel=1e-6, abs=1e-12
    )
    assert twice.error <= 0.2


def test_storage_count_matches_formula():
    x = torch.randn(4, 5, 3, 6, generator=gen(3), dtype=F64)
    ht = HT.from_dense(x, ranks=(3, 3, 2, 3, 2, 2))
    tree = ht.tree
    r = (1, *ht.ranks)
    expected = sum(x.shape[tree.nodes[t][0]] * r[t] for t in range(len(tree)) if tree.is_leaf(t))
    expected += sum(
        r[t] * r[a] * r[b]
        for t in range(len(tree))
        if not tree.is_leaf(t)
        for a, b in [tree.children(t)]
    )
    assert ht.num_params == expected == ht_params(tree, x.shape, ht.ranks)


def test_tensorized_matrix():
    w = torch.randn(24, 30, generator=gen(4), dtype=F64)
    ht = HT.from_matrix(w, (2, 3, 4), (3, 5, 2), legs=("out", "in"))
    assert sorted(ht.network.open_legs) == ["in_0", "in_1", "in_2", "out_0", "out_1", "out_2"]
    assert rel_err(w, ht.to_matrix()) < 1e-10
    small = HT.from_matrix(w, (2, 3, 4), (3, 5, 2), ranks=2)
    r = (1, *small.ranks)
    tree = small.tree
    mn = (6, 15, 8)
    expected = sum(mn[tree.nodes[t][0]] * r[t] for t in range(len(tree)) if tree.is_leaf(t))
    expected += sum(
        r[t] * r[a] * r[b]
        for t in range(len(tree))
        if not tree.is_leaf(t)
        for a, b in [tree.children(t)]
    )
    assert small.num_params == expected
    assert small.truncate(1).ranks == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="row_dims"):
        HT.from_matrix(w, (5, 5), (3, 10))


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6])
def test_fraction_budget(fraction):
    sizes = (6, 5, 4, 6)
    x = torch.randn(*sizes, generator=gen(5), dtype=F64)
    ht = HT.from_dense(x, fraction=fraction)
    budget = fraction * math.prod(sizes)
    assert ht.num_params <= budget
    cap = max(ht.ranks)
    tops = (30, 30, 6, 5, 4, 6)
    assert ht_params(ht.tree, sizes, [min(cap + 1, t) for t in tops]) > budget


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ranks=(2, 2)), "ranks must have 4 entries"),
        (dict(fraction=-0.1), "fraction must be in"),
        (dict(legs=("a", "b")), "legs has 2 names"),
        (dict(tree=((0, 1), (2, 3))), "tree has 4 modes"),
    ],
)
def test_bad_inputs_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HT.from_dense(torch.ones(3, 4, 5, dtype=F64), **kwargs)
