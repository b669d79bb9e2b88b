"""Tree gauges: bond spectra and truncations equal the dense ones (Eckart-Young-Mirsky)."""

import math

import numpy as np
import pytest
import torch

import tensornet as tn
from tensornet import Node, TensorNetwork

DT = torch.float64


def rand(*shape, g):
    return torch.randn(*shape, generator=g, dtype=DT)


def mps(g):
    dims, chi = [3, 4, 2, 3, 2], [3, 4, 4, 2]
    nodes = []
    for i, d in enumerate(dims):
        legs = ([f"b{i - 1}"] if i else []) + [f"p{i}"] + ([f"b{i}"] if i < 4 else [])
        shape = ([chi[i - 1]] if i else []) + [d] + ([chi[i]] if i < 4 else [])
        nodes.append(Node(rand(*shape, g=g), legs, name=f"A{i}"))
    return TensorNetwork(nodes)


def tucker(g):
    core = Node(rand(3, 2, 4, g=g), ("r0", "r1", "r2"), name="core")
    factors = [
        Node(rand(d, r, g=g), (f"x{i}", f"r{i}"), name=f"U{i}")
        for i, (d, r) in enumerate([(5, 3), (4, 2), (6, 4)])
    ]
    return TensorNetwork([core, *factors])


def hierarchical_tucker(g):
    leaves = [
        Node(rand(d, r, g=g), (f"x{i}", f"a{i}"), name=f"U{i}")
        for i, (d, r) in enumerate([(3, 2), (4, 3), (3, 3), (2, 2)])
    ]
    b01 = Node(rand(2, 3, 4, g=g), ("a0", "a1", "t01"), name="B01")
    b23 = Node(rand(3, 2, 3, g=g), ("a2", "a3", "t23"), name="B23")
    root = Node(rand(4, 3, g=g), ("t01", "t23"), name="root")
    return TensorNetwork([*leaves, b01, b23, root])


NETWORKS = {"mps": mps, "tucker": tucker, "ht": hierarchical_tucker}


def dense_spectrum(dense, left):
    return tn.spectrum(dense, left).values.numpy()


@pytest.mark.parametrize("kind", NETWORKS)
def test_bond_spectra_equal_dense_cut_spectra(kind):
    net = NETWORKS[kind](torch.Generator().manual_seed(1))
    dense = net.contract()
    for bond in net.bonds:
        sp = net.spectrum(bond.leg)
        ref = dense_spectrum(dense, sp.left_legs)
        k = sp.chi_max
        np.testing.assert_allclose(sp.values.numpy(), ref[:k], rtol=1e-9, atol=1e-12 * ref[0])
        assert np.all(ref[k:] <= 1e-12 * ref[0])  # beyond the bond dimension the spectrum is 0
        assert set(sp.left_legs) | set(sp.right_legs) == set(net.open_legs)


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("trunc", [1, 2, tn.Truncation(rel_tol=0.2)], ids=repr)
def test_bond_truncation_is_the_dense_optimum(kind, trunc):
    net = NETWORKS[kind](torch.Generator().manual_seed(2))
    dense = net.contract()
    for bond in net.bonds:
        new, info = net.truncate(bond.leg, trunc)
        best = tn.truncate(dense, info.left_legs, trunc)
        ref = dense_spectrum(dense, info.left_legs)
        expected = math.sqrt((ref[info.rank :] ** 2).sum() / (ref**2).sum())
        assert info.error == pytest.approx(expected, rel=1e-8, abs=1e-13)
        assert best.error == pytest.approx(expected, rel=1e-8, abs=1e-13)
        value = new.contract(output=dense.legs).tensor
        torch.testing.assert_close(
            value, best.tensor, rtol=1e-9, atol=1e-9 * float(dense.tensor.norm())
        )
        assert new.bond(bond.leg).dim == info.rank


@pytest.mark.parametrize("kind", NETWORKS)
def test_canonicalize_keeps_value_and_makes_isometries(kind):
    net = NETWORKS[kind](torch.Generator().manual_seed(3))
    dense = net.contract().tensor
    for centre in net.names:
        canon = net.canonicalize(centre)
        torch.testing.assert_close(canon.contract().tensor, dense, rtol=1e-10, atol=1e-10)
        order = tn.core.gauge._postorder(canon, centre)
        for child, _, leg in order:
            node = canon.node(child)
            m = node.matricize([x for x in node.legs if x != leg])
            torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=DT), atol=1e-12, rtol=0)


def test_loops_are_refused_naming_the_bond():
    a = Node(torch.ones(2, 2), ("x", "y"), name="A")
    b = Node(torch.ones(2, 2), ("y", "z"), name="B")
    c = Node(torch.ones(2, 2), ("z", "x"), name="C")
    ring = TensorNetwork([a, b, c])
    assert not ring.is_tree
    with pytest.raises(ValueError, match="bond 'z' between 'B' and 'C' closes a loop"):
        ring.canonicalize("A")
    with pytest.raises(ValueError, match="closes a loop"):
        ring.spectrum("x")
    with pytest.raises(ValueError, match="not connected"):
        TensorNetwork([Node(torch.ones(2), ("p",)), Node(torch.ones(2), ("q",))]).canonicalize("n0")


def test_cut_uses_bonds_and_falls_back_to_dense_with_a_guard():
    net = mps(torch.Generator().manual_seed(4))
    dense = net.contract()
    by_bond = net.cut(["p1", "p0"])
    assert by_bond.name == "b1" and by_bond.left_legs == ("p1", "p0")
    np.testing.assert_allclose(
        by_bond.values.numpy(), dense_spectrum(dense, ["p0", "p1"])[:4], rtol=1e-9
    )
    other = net.cut(["p0", "p2"])  # no bond induces it
    np.testing.assert_allclose(other.values.numpy(), dense_spectrum(dense, ["p0", "p2"]), rtol=1e-9)
    with pytest.raises(ValueError, match="above max_elements=10"):
        net.cut(["p0", "p2"], max_elements=10)
    with pytest.raises(ValueError, match="'b0' is not an open leg"):
        net.cut(["b0"])
    with pytest.raises(ValueError, match="proper subset"):
        net.cut(list(net.open_legs))


def test_gradients_flow_through_bond_truncation():
    g = torch.Generator().manual_seed(5)
    t = rand(3, 4, 3, g=g).requires_grad_(True)
    u = rand(3, 2, g=g)

    def f(t):
        net = TensorNetwork([Node(t, ("a", "b", "c")), Node(u, ("c", "d"))])
        new, _ = net.truncate("c", 2)
        return new.contract().tensor

    assert torch.autograd.gradcheck(f, (t,))


def test_mixed_real_and_complex_nodes_keep_the_imaginary_part():
    g = torch.Generator().manual_seed(7)
    a = Node(torch.randn(3, 4, generator=g), ("x", "b"), name="A")  # float32
    b = Node(torch.randn(4, 5, generator=g, dtype=torch.complex128), ("b", "y"), name="B")
    net = TensorNetwork([a, b])
    dense = net.contract()
    ref = torch.linalg.svdvals(dense.tensor).numpy()
    np.testing.assert_allclose(net.spectrum("b").values.numpy(), ref, rtol=1e-6)
    canon = net.canonicalize("A")
    torch.testing.assert_close(canon.contract().tensor, dense.tensor, rtol=1e-5, atol=1e-5)
