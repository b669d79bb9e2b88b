"""Hierarchical Tucker in detail: trees, HT-SVD ranks and bound per edge, layouts, messages."""

import dataclasses
import math
import re

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import HT, DimensionTree
from tensornet.formats.ht import ht_params
from tensornet.formats.structure import Structure

from .helpers import F64, decaying, gen, rel_err, unfold


def node_spectrum(x, tree, t):
    """Singular values of the matricisation of node t's modes (numpy-free dense reference)."""
    return torch.linalg.svdvals(unfold(x, list(tree.nodes[t])))


def test_tree_views():
    """Breadth-first nodes, children, parents, leaves, edges, equality and repr."""
    t = DimensionTree(((0, 1), (2, (3, 4))))
    assert t.nodes == ((0, 1, 2, 3, 4), (0, 1), (2, 3, 4), (0,), (1,), (2,), (3, 4), (3,), (4,))
    assert t.children(0) == (1, 2) and t.children(6) == (7, 8) and t.children(3) == ()
    assert t.parent(0) is None and t.parent(7) == 6 and t.parent(2) == 0
    assert [t.is_leaf(k) for k in range(len(t))] == [False] * 3 + [True] * 3 + [False, True, True]
    assert t.num_modes == 5 and t.num_edges == 7 and len(t) == 9
    assert (
        t.structure == ((0, 1), (2, (3, 4))) and repr(t) == "DimensionTree(((0, 1), (2, (3, 4))))"
    )
    assert DimensionTree([[0, 1], [2, [3, 4]]]) == t and hash(DimensionTree(t.structure)) == hash(t)
    assert t != DimensionTree(((0, 1), ((2, 3), 4))) and t != "tree"
    assert DimensionTree.balanced(2).nodes == ((0, 1), (0,), (1,))
    assert DimensionTree.balanced(3).structure == ((0, 1), 2)
    assert DimensionTree.balanced(5).structure == (((0, 1), 2), (3, 4))
    assert DimensionTree((1, 0)).nodes == ((1, 0), (1,), (0,))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: DimensionTree((0, True)),
            r"^DimensionTree: a node must be an int or a pair, got True",
        ),
        (
            lambda: DimensionTree((0, 1.0)),
            r"^DimensionTree: a node must be an int or a pair, got 1.0",
        ),
        (
            lambda: DimensionTree(((0,), 1)),
            r"^DimensionTree: inner nodes must have exactly 2 children, got \(0,\)",
        ),
        (
            lambda: DimensionTree((0, 2)),
            r"^DimensionTree: leaves must be the modes 0..1 once each, got \(0, 2\)",
        ),
        (lambda: DimensionTree(0), r"^DimensionTree: needs at least 2 modes"),
        (
            lambda: DimensionTree.balanced(1),
            r"^DimensionTree.balanced: d must be an int >= 2, got 1",
        ),
        (
            lambda: DimensionTree.balanced(True),
            r"^DimensionTree.balanced: d must be an int >= 2, got True",
        ),
        (
            lambda: DimensionTree.balanced(3.0),
            r"^DimensionTree.balanced: d must be an int >= 2, got 3.0",
        ),
    ],
)
def test_bad_trees_are_named(call, match):
    """Tree errors say what is wrong with which node."""
    with pytest.raises(ValueError, match=match):
        call()


def test_params_and_maximal_ranks_of_a_structure():
    """Parameter count by the formula; maximal ranks min(n_t, N / n_t) per node."""
    tree = DimensionTree(((0, 1), (2, (3, 4))))
    sizes = (2, 3, 4, 2, 5)
    ranks = (2, 3, 2, 3, 1, 2, 3, 2)
    r = (1, *ranks)
    want = 6 + 12 + 6 + 4 + 9 + 4 + 12 + 6 + 10  # B0, B1, B2, U3, U4, U5, B6, U7, U8
    assert (
        ht_params(tree, sizes, ranks)
        == want
        == sum(f.size for f in HT.structure_for(sizes, ranks, tree=tree.structure).factors)
    )
    assert r[0] == 1
    s = HT.structure_for(sizes, tree=tree.structure, legs=("a", "b", "c", "r1", "e"))
    total = math.prod(sizes)
    tops = []
    for t in range(1, len(tree)):
        n = math.prod(sizes[m] for m in tree.nodes[t])
        tops.append(min(n, total // n))
    assert s.max_ranks == s.ranks == tuple(tops) == (6, 6, 2, 3, 4, 10, 2, 5)
    assert s.factors[0].name == "B0" and s.factors[0].legs == ("r12", "r2")  # fresh names
    assert s.factors[3] == s.factors[3].__class__("U3", ("a", "r3"), (2, 2))
    assert s.factors[6].legs == ("r7", "r8", "r6") and s.option("tree") == tree.structure
    assert s.modes == (("a",), ("b",), ("c",), ("r1",), ("e",))


def test_ht_svd_ranks_are_the_per_edge_tolerance_ranks():
    """Each edge keeps the fewest values whose tail is <= eps ||x|| / sqrt(2d - 3)."""
    x = decaying((4, 3, 5, 2, 3), seed=1, rate=0.6)
    norm = float(x.norm())
    tree = DimensionTree(((0, 1), (2, (3, 4))))
    # a tolerance that puts node 1's sixth tail just inside eps ||x|| / sqrt(7)
    near = 1.05 * float(node_spectrum(x, tree, 1)[5:].norm()) * math.sqrt(7) / norm
    assert near < 1
    for tol in (0.02, 0.1, 0.3, near):
        ht = HT.from_dense(x, Truncation(rel_tol=tol), tree=tree.structure)
        lim = tol * norm / math.sqrt(7)
        want, tails = [], {}
        for t in range(1, len(tree)):
            s = node_spectrum(x, tree, t)
            k = max(1, min(j for j in range(len(s) + 1) if float(s[j:].norm()) <= lim))
            want.append(k)
            tails[t] = float(s[k:].norm())
        assert ht.ranks == tuple(want)
        assert ht.edge_tails == pytest.approx(tails, abs=1e-10)
        err = rel_err(x, ht.to_dense())
        bound = math.sqrt(sum(v * v for t, v in tails.items() if t != 2)) / norm
        assert ht.error == pytest.approx(err, rel=1e-9) and err <= bound + 1e-12 <= tol + 1e-12


def test_rank_caps_and_given_ranks_combine():
    """max_rank and ranks= both cap: each edge keeps min(cap, given, full) values."""
    x = torch.randn(3, 4, 2, 5, generator=gen(2), dtype=F64)
    tree = DimensionTree.balanced(4)
    full = HT.structure_for((3, 4, 2, 5)).max_ranks
    assert HT.from_dense(x).ranks == full == (10, 10, 3, 4, 2, 5)
    capped = HT.from_dense(x, Truncation(max_rank=3))
    assert capped.ranks == tuple(min(3, f) for f in full)
    given = HT.from_dense(x, ranks=(2, 2, 1, 3, 2, 4))
    assert given.ranks == (2, 2, 1, 3, 2, 4)
    assert HT.from_dense(x, ranks=4).ranks == tuple(min(4, f) for f in full)
    for ht in (capped, given):
        tails = ht.edge_tails
        for t in range(1, len(tree)):
            s = node_spectrum(x, tree, t)
            assert tails[t] == pytest.approx(float(s[ht.ranks[t - 1] :].norm()), abs=1e-10)
        bound = math.sqrt(sum(v * v for t, v in tails.items() if t != 2))
        assert rel_err(x, ht.to_dense()) * float(x.norm()) <= bound + 1e-10
        assert ht.error == pytest.approx(rel_err(x, ht.to_dense()), rel=1e-9)
    zero = HT.from_dense(torch.zeros(2, 3, 2, dtype=F64), ranks=1)
    assert zero.error == 0.0 and zero.truncate(1).error == 0.0


def test_round_trips_plain_and_tensorized():
    """to_dict / from_dict / from_factors rebuild plain and tensorized HT tensors."""
    x = torch.randn(3, 4, 2, generator=gen(3), dtype=F64)
    ht = HT.from_dense(x, ranks=2, legs=("a", "b", "c"), tree=(2, (0, 1)))
    data = ht.structure.to_dict()
    assert data["options"] == {"tree": [2, [0, 1]]}
    again = HT.from_factors(Structure.from_dict(data), ht.factor_tensors(), error=0.5)
    torch.testing.assert_close(again.to_dense(), ht.to_dense())
    assert again.error == 0.5 and again.legs == ("a", "b", "c") and again.tree == ht.tree
    assert ht.options == {"tree": (2, (0, 1))}
    assert [n.name for n in ht.network] == ["B0", "U1", "B2", "U3", "U4"]
    assert ht.network.node("U1").legs == ("c", "r1")
    assert ht.network.node("B2").legs == ("r3", "r4", "r2")
    w = torch.randn(6, 4, 3, generator=gen(4), dtype=F64)
    tz = HT.from_dense(w, ranks=3, out_dims=(2, 3), in_dims=(2, 2), legs=("o", "i", "k"))
    assert tz.shape == (6, 4, 3) and tz.to_dense().shape == (6, 4, 3)
    assert tz.options == {"tree": ((0, 1), 2), "out_dims": (2, 3), "in_dims": (2, 2)}
    assert sorted(tz.network.open_legs) == ["i_0", "i_1", "k", "o_0", "o_1"]
    assert tz.network.node("U3").legs == ("k", "r3")  # the spatial leaf comes first
    assert tz.network.node("U4").legs == ("o_0", "i_0", "r4")
    data = tz.structure.to_dict()
    back = HT.from_factors(Structure.from_dict(data), tz.factor_tensors())
    torch.testing.assert_close(back.to_dense(), tz.to_dense())
    assert back.options == tz.options and back.shape == (6, 4, 3)
    exact = HT.from_dense(w, out_dims=(2, 3), in_dims=(2, 2))
    torch.testing.assert_close(exact.to_dense(), w)
    assert exact.error < 1e-12
    # the tensorized layout: leaf k holds (out_k, in_k), the kernel's spatial leg in front
    s = HT.structure_for((6, 4, 3), 1, out_dims=(2, 3), in_dims=(2, 2), legs=("o", "i", "k"))
    assert [f.shape for f in s.factors if f.name.startswith("U")] == [(3, 2, 1), (3, 1), (2, 2, 1)]
    assert s.modes == (("o_0", "o_1"), ("i_0", "i_1"), ("k",))


def test_from_matrix_and_to_matrix():
    """A matrix as pairs (rows_k, cols_k); to_matrix only for tensorized HTs."""
    w = torch.randn(6, 10, generator=gen(5), dtype=F64)
    ht = HT.from_matrix(w, (2, 3), (5, 2))
    torch.testing.assert_close(ht.to_matrix(), w)
    assert ht.legs == ("rows", "cols") and ht.network.node("U1").legs == ("rows_0", "cols_0", "r1")
    small = HT.from_matrix(w, (2, 3), (5, 2), ranks=1)
    assert small.ranks == (1, 1)
    u, s, vh = torch.linalg.svd(
        w.reshape(2, 3, 5, 2).permute(0, 2, 1, 3).reshape(10, 6), full_matrices=False
    )
    assert small.error == pytest.approx(float(s[1:].norm() / s.norm()), rel=1e-9)
    assert HT.from_matrix(w, (2, 3), (5, 2), Truncation(max_rank=2)).ranks == (2, 2)
    assert HT.from_matrix(w, (2, 3), (5, 2), fraction=0.9).num_params <= 54
    with pytest.raises(ValueError, match=r"^HT.to_matrix: this HT was not built from a matrix"):
        HT.from_dense(torch.ones(2, 2, dtype=F64)).to_matrix()


def test_truncate_equals_ht_svd_with_tolerances_and_complex_values():
    """Gramian truncation of an HT equals HT-SVD of its dense tensor, also for tolerances."""
    x = decaying((4, 3, 5, 2), seed=6, rate=0.6)
    full = HT.from_dense(x, tree=((0, 1), (2, 3)))
    for trunc in (Truncation(rel_tol=0.1), Truncation(rel_tol=0.3), 2, Truncation(max_rank=3)):
        small = full.truncate(trunc)
        direct = HT.from_dense(x, trunc, tree=((0, 1), (2, 3)))
        assert small.ranks == direct.ranks
        torch.testing.assert_close(small.to_dense(), direct.to_dense())
        assert small.edge_tails == pytest.approx(direct.edge_tails, abs=1e-9)
        assert small.error == pytest.approx(rel_err(x, small.to_dense()), rel=1e-6, abs=1e-9)
        assert small.legs == full.legs and small.tree == full.tree
    assert full.truncate(ranks=(1, 1, 2, 2, 2, 2)).ranks == (1, 1, 2, 2, 2, 2)
    g = gen(7)
    z = torch.randn(3, 4, 2, 3, generator=g, dtype=F64) + 1j * torch.randn(
        3, 4, 2, 3, generator=g, dtype=F64
    )
    zt = HT.from_dense(z)
    torch.testing.assert_close(zt.to_dense(), z)
    small = zt.truncate(2)
    torch.testing.assert_close(small.to_dense(), HT.from_dense(z, 2).to_dense())
    assert small.error == pytest.approx(rel_err(z, small.to_dense()), rel=1e-6)
    scaled = HT.from_dense(1e-3 * x).truncate(2)
    assert scaled.error == pytest.approx(rel_err(1e-3 * x, scaled.to_dense()), rel=1e-6)
    tz = HT.from_matrix(torch.randn(6, 4, generator=g, dtype=F64), (2, 3), (2, 2))
    assert tz.truncate(1).shape == (6, 4) and tz.truncate(1).options == tz.options


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: HT.from_dense(torch.ones(2, 3, dtype=F64), out_dims=(2,)),
            r"^HT.from_dense: a tensorized HT needs out_dims and in_dims and 2\+ legs",
        ),
        (
            lambda: HT.structure_for((2,), in_dims=(2,), out_dims=(2,)),
            r"^HT.structure_for: a tensorized HT needs",
        ),
        (
            lambda: HT.from_dense(torch.ones(4, 6, dtype=F64), out_dims=(2, 2), in_dims=(6,)),
            r"^HT.from_dense: out_dims \(2, 2\) and in_dims \(6,\) need one length",
        ),
        (
            lambda: HT.from_dense(torch.ones(4, 6, dtype=F64), out_dims=(3, 2), in_dims=(2, 3)),
            r"^HT.from_dense: out_dims",
        ),
        (
            lambda: HT.from_dense(torch.ones(4, 6, dtype=F64), out_dims=(2, 2), in_dims=(2, 2)),
            r"^HT.from_dense: in_dims",
        ),
        (
            lambda: HT.structure_for((2, 3), tree=(0, (1, 2))),
            r"^HT.structure_for: tree has 3 modes",
        ),
        (lambda: HT.structure_for((2, 0)), r"^HT.structure_for: shape must be positive"),
        (lambda: HT.structure_for((2, 3), (1, 1, 1)), r"^HT.structure_for: ranks must have 2"),
        (lambda: HT.from_dense(torch.ones(2, 3, dtype=F64), legs=("a",)), r"^HT.from_dense: legs"),
        (
            lambda: HT.from_dense(torch.ones(2, 3, dtype=F64), 1, ranks=1),
            r"^HT.from_dense: give at most",
        ),
        (
            lambda: HT.from_dense(torch.ones(2, 3, dtype=F64), 1, fraction=0.5),
            r"^HT.from_dense: give at most",
        ),
        (
            lambda: HT.from_dense(torch.ones(2, 3, 4, dtype=F64), fraction=0.01),
            r"^HT.from_dense: fraction too small",
        ),
        (
            lambda: HT.from_dense(torch.ones(2, 3, dtype=F64)).truncate(ranks=(1,)),
            r"^HT.truncate: ranks must have 2",
        ),
        (
            lambda: HT.from_matrix(torch.ones(2, 3, 1), (2,), (3,)),
            r"^HT.from_matrix: w must be a matrix, got shape \(2, 3, 1\)",
        ),
        (
            lambda: HT.from_matrix(torch.ones(4, 3), (2, 2), (3,)),
            r"^HT.from_matrix: row_dims and col_dims need the same length",
        ),
        (lambda: HT.from_matrix(torch.ones(4, 3), (4,), (2,)), r"^HT.from_matrix: col_dims"),
        (
            lambda: HT.from_factors(HT.structure_for((2, 3), 1), {"B0": torch.ones(1, 1)}),
            r"^HT.from_factors: ",
        ),
    ],
)
def test_bad_inputs_name_the_call_and_the_culprit(call, match):
    """Errors say which call failed and which field was wrong."""
    with pytest.raises(ValueError, match=match):
        call()


def gauged(ht, seed=5):
    """The same HT tensor with every frame mixed by an invertible matrix (inverse in the parent):
    no frame is orthonormal any more, and the dense tensor is unchanged."""
    tree, names = ht.tree, [f.name for f in ht.structure.factors]
    factors = ht.factor_tensors()
    nodes = {t: factors[name].clone() for t, name in enumerate(names)}
    g = gen(seed)
    for t in range(1, len(tree)):
        r = nodes[t].shape[-1]
        mix = torch.eye(r, dtype=F64) + 0.4 * torch.randn(r, r, generator=g, dtype=F64)
        nodes[t] = torch.tensordot(nodes[t], mix, dims=([nodes[t].ndim - 1], [0]))
        p = tree.parent(t)
        slot = tree.children(p).index(t)
        inv = torch.linalg.inv(mix)
        nodes[p] = torch.movedim(torch.tensordot(inv, nodes[p], dims=([1], [slot])), 0, slot)
    return HT.from_factors(ht.structure, {names[t]: x for t, x in nodes.items()})


@pytest.mark.parametrize("structure", [None, ((0, 1), (2, (3, 4)))])
def test_truncating_an_ht_with_non_orthonormal_frames_equals_truncating_the_tensor(structure):
    """truncate() orthogonalises first: the result does not depend on the gauge of the frames."""
    x = decaying((3, 4, 3, 4, 3)[: 5 if structure else 4], seed=6)
    tree = None if structure is None else DimensionTree(structure)
    ht = HT.from_dense(x, tree=tree)
    mixed = gauged(ht)
    leaf = mixed.factor_tensors()[mixed.structure.factors[-1].name]
    assert not torch.allclose(leaf.mH @ leaf, torch.eye(leaf.shape[-1], dtype=F64))
    torch.testing.assert_close(mixed.to_dense(), x, rtol=1e-10, atol=1e-10)
    for trunc in (Truncation(max_rank=2), Truncation(rel_tol=0.05)):
        a, b = ht.truncate(trunc), mixed.truncate(trunc)
        assert a.ranks == b.ranks
        torch.testing.assert_close(b.to_dense(), a.to_dense(), rtol=1e-9, atol=1e-9)
        assert b.error == pytest.approx(a.error, rel=1e-6)
        assert b.error == pytest.approx(rel_err(x, b.to_dense()), rel=1e-5)


def says(message):
    return pytest.raises(ValueError, match="^" + re.escape(message))


def test_messages_name_the_constructor():
    x = torch.zeros(3, 4, 3, dtype=F64)
    with says("HT.from_dense: tree has 4 modes, the tensor has 3"):
        HT.from_dense(x, tree=((0, 1), (2, 3)))
    with says("HT.from_dense: ranks must have 4 entries, got 2: (1, 2)"):
        HT.from_dense(x, ranks=[1, 2])
    with says("HT.from_matrix: row_dims (4, 2) multiply to 8, not the size 6"):
        HT.from_matrix(torch.zeros(6, 4, dtype=F64), row_dims=(4, 2), col_dims=(2, 2))
    structure = HT.from_dense(x).structure
    with says("HT.from_factors: tensors must be the factors ['B0', 'B1', 'U2', 'U3', 'U4']"):
        HT.from_factors(structure, {})
    other = dataclasses.replace(structure, options=(("tree", ((0, 1), (2, 3))),))
    with says("HT.from_factors: tree has 4 modes, the tensor has 3"):
        HT.from_factors(other, HT.from_dense(x).factor_tensors())


def test_legs_trees_and_errors_survive_factors_and_truncation():
    """Custom legs and trees, and a tensorized layout, come back from from_factors and stay
    through truncate; a given error is kept."""
    g = gen(8)
    x = torch.randn(3, 4, 2, dtype=F64, generator=g)
    ht = HT.from_dense(x, legs=("a", "b", "c"), tree=(0, (1, 2)))
    back = HT.from_factors(ht.structure, ht.factor_tensors(), error=0.25)
    assert back.legs == ("a", "b", "c") and back.tree == DimensionTree((0, (1, 2)))
    assert back.error == 0.25
    torch.testing.assert_close(back.to_dense(), x, rtol=1e-12, atol=1e-12)
    cut = back.truncate(1)
    assert cut.legs == ("a", "b", "c") and cut.tree == back.tree
    w = torch.randn(8, 4, dtype=F64, generator=g)
    tree = (0, (1, 2))  # not the balanced ((0, 1), 2)
    mat = HT.from_matrix(w, row_dims=(2, 2, 2), col_dims=(1, 2, 2), legs=("o", "i"), tree=tree)
    assert mat.tree == DimensionTree(tree) and mat.structure.options[0] == ("tree", tree)
    again = HT.from_factors(mat.structure, mat.factor_tensors(), error=0.5)
    assert again.error == 0.5 and again.legs == ("o", "i") and again.tree == mat.tree
    torch.testing.assert_close(again.to_matrix(), w, rtol=1e-12, atol=1e-12)
    assert mat.truncate(1).legs == ("o", "i") and mat.truncate(1).to_matrix().shape == (8, 4)
    assert HT.structure_for((8, 4), mat.ranks, out_dims=(2, 2, 2), in_dims=(1, 2, 2),
                            legs=("o", "i"), tree=tree) == mat.structure  # fmt: skip


def test_truncate_without_a_truncation_is_exact():
    x = decaying((3, 4, 3), seed=9)
    ht = HT.from_dense(x)
    same = ht.truncate()
    assert same.ranks == ht.ranks and same.error == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(same.to_dense(), x, rtol=1e-10, atol=1e-10)


def test_fraction_follows_the_tree_and_legs_given():
    """``fraction`` sizes the ranks for the tree that is used (a chain costs other parameters
    than a balanced tree)."""
    x = decaying((4, 4, 4, 4), seed=10)
    chain = (((0, 1), 2), 3)
    ht = HT.from_dense(x, fraction=0.3, tree=chain, legs=("p", "q", "r", "s"))
    assert ht.tree == DimensionTree(chain) and ht.legs == ("p", "q", "r", "s")
    assert ht_params(ht.tree, (4, 4, 4, 4), ht.ranks) <= 0.3 * 256
    balanced = HT.from_dense(x, fraction=0.3)
    assert ht_params(balanced.tree, (4, 4, 4, 4), balanced.ranks) <= 0.3 * 256
