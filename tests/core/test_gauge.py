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


# -- bookkeeping, centres, messages that name the call and the culprit ----------------------------
def chain(bad=None, device=None):
    """A - B - C with open legs i, x, l and bonds j (A-B), k (B-C); tagged nodes."""
    g = torch.Generator().manual_seed(21)
    b = rand(3, 4, 5, g=g)
    if bad is not None:
        b[0, 0, 0] = bad
    return TensorNetwork(
        [
            Node(rand(2, 3, g=g), ("i", "j"), name="A", tags=("left",)),
            Node(b if device is None else b.to(device), ("j", "k", "x"), name="B", tags=("mid",)),
            Node(rand(4, 6, g=g), ("k", "l"), name="C", tags=("right",)),
        ]
    )


def test_canonicalize_centre_by_name_leg_or_bond_keeps_tags():
    """A bond (leg name or Bond) centres on its first node, exactly as naming that node does."""
    net = chain()
    by_name = net.canonicalize("B")
    for towards in ("k", net.bond("k")):
        canon = net.canonicalize(towards)
        for x, y in zip(canon.nodes, by_name.nodes):
            assert x.legs == y.legs and x.name == y.name
            torch.testing.assert_close(x.tensor, y.tensor, rtol=0, atol=0)
    for node in by_name.nodes:
        assert node.tags == net.node(node.name).tags
    a = by_name.node("A").tensor  # (i, j): rows i ... A points at B through j
    c = by_name.node("C").matricize(["l"])  # C points at B through k
    torch.testing.assert_close(a.T @ a, torch.eye(2, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(c.T @ c, torch.eye(4, dtype=DT), atol=1e-12, rtol=0)
    assert by_name.bond("j").dim == 2  # the bond shrank to A's rank bound (2 rows)
    dense = net.contract().tensor
    torch.testing.assert_close(by_name.contract().tensor, dense, rtol=1e-12, atol=1e-12)


def test_single_node_network_is_its_own_centre():
    """A one-node tree: nothing to sweep, the node is returned as it is."""
    t = rand(2, 3, g=torch.Generator().manual_seed(22))
    canon = TensorNetwork([Node(t, ("i", "j"), name="A")]).canonicalize("A")
    assert canon.names == ("A",) and torch.equal(canon.node("A").tensor, t)


def test_bond_spectrum_names_its_bond_and_sides():
    net = chain()
    sp = net.spectrum("k")
    assert sp.name == "k" and sp.left_legs == ("i", "x") and sp.right_legs == ("l",)
    assert torch.equal(net.spectrum(net.bond("k")).values, sp.values)
    assert tn.core.gauge.bond_sides(net, net.bond("j")) == (("i",), ("x", "l"))


def test_truncate_bond_reports_the_whole_split_info():
    """Spectrum, rank, absolute and relative error, norm, sides and bond: all against dense."""
    net = chain()
    dense = net.contract().tensor
    new, info = net.truncate("k", 2)
    ref = torch.linalg.svdvals(dense.permute(0, 1, 2).reshape(10, 6))  # (i x) | l
    norm = float(dense.norm())
    tail = float(ref[2:].square().sum().sqrt())
    np.testing.assert_allclose(info.singular_values.numpy(), ref[:4].numpy(), rtol=1e-10)
    assert not info.singular_values.requires_grad
    assert info.rank == 2 and info.bond == "k"
    assert info.left_legs == ("i", "x") and info.right_legs == ("l",)
    assert info.abs_error == pytest.approx(tail, rel=1e-10)
    assert info.norm == pytest.approx(norm, rel=1e-12)
    assert info.error == pytest.approx(tail / norm, rel=1e-10)
    assert [n.tags for n in new.nodes] == [n.tags for n in net.nodes]


def test_real_centre_absorbs_into_a_complex_node():
    """The R of a float32 node is cast before it meets a complex128 neighbour."""
    g = torch.Generator().manual_seed(23)
    a = Node(torch.randn(3, 4, generator=g), ("x", "b"), name="A")  # float32
    b = Node(torch.randn(4, 5, generator=g, dtype=torch.complex128), ("b", "y"), name="B")
    net = TensorNetwork([a, b])
    canon = net.canonicalize("B")
    torch.testing.assert_close(canon.contract().tensor, net.contract().tensor, rtol=1e-5, atol=1e-5)


def triangle():
    g = torch.Generator().manual_seed(24)
    return TensorNetwork(
        [
            Node(rand(4, 4, 2, g=g), ("a", "c", "i"), name="A"),
            Node(rand(4, 4, 2, g=g), ("a", "b", "j"), name="B"),
            Node(rand(4, 4, 2, g=g), ("b", "c", "k"), name="C"),
        ]
    )


def test_cut_of_a_loop_is_dense_and_honours_max_elements_for_intermediates():
    """A loop has no gauge: the cut is the dense SVD, and no intermediate may exceed the limit."""
    net = triangle()
    dense = net.contract().tensor  # (i, j, k)
    sp = net.cut("j")  # a single leg name is accepted
    assert sp.left_legs == ("j",) and sp.right_legs == ("i", "k")
    ref = np.linalg.svd(dense.permute(1, 0, 2).reshape(2, 4).numpy(), compute_uv=False)
    np.testing.assert_allclose(sp.values.numpy(), ref, rtol=1e-10)
    assert torch.equal(net.cut(["j"]).values, sp.values)
    with pytest.raises(ValueError, match="intermediate of 64 elements, above max_intermediate=8"):
        net.cut(["j"], max_elements=8)  # the dense tensor (8) fits, A*B (64) does not


def test_cut_size_guard_is_exact_and_does_not_overflow():
    net = mps(torch.Generator().manual_seed(25))
    dense = net.contract()
    size = dense.size  # 144
    sp = net.cut(["p0", "p2"], max_elements=size)  # exactly at the limit: allowed
    assert sp.right_legs == ("p1", "p3", "p4")
    np.testing.assert_allclose(sp.values.numpy(), dense_spectrum(dense, ["p0", "p2"]), rtol=1e-9)
    with pytest.raises(ValueError, match=f"has {size:,} elements, above max_elements={size - 1}"):
        net.cut(["p0", "p2"], max_elements=size - 1)
    huge = TensorNetwork([Node(torch.zeros(2**16), (f"x{i}",)) for i in range(5)])  # 2**80
    guard = r"^cut \('x0',\) \| .* is not induced by a bond, and the dense tensor has 1,208,925,"
    with pytest.raises(ValueError, match=guard):
        huge.cut(["x0"])


def two_devices():
    return chain(device="meta")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: chain().spectrum(5), TypeError,
         r"^spectrum: a bond is given by its leg name \(str\) or a Bond from net.bonds, "
         r"got int 5$"),
        (lambda: chain().truncate("x", 1), ValueError,
         r"^truncate: 'x' is an open leg, not a bond; bonds are \['j', 'k'\]$"),
        (lambda: chain().spectrum("zz"), ValueError,
         r"^spectrum: 'zz' is not a leg of this network, not a bond; bonds are \['j', 'k'\]$"),
        (lambda: chain().spectrum(tn.Bond("j", ("X", "Y"), 3)), ValueError,
         r"^spectrum: Bond\(leg='j', nodes=\('X', 'Y'\), dim=3\) joins nodes \('X', 'Y'\), but in "
         r"this network bond 'j' joins \('A', 'B'\); was it taken from another network\?$"),
        (lambda: tn.core.gauge.bond_sides(chain(), "x"), ValueError, r"^bond_sides: 'x' is an"),
        (lambda: chain().canonicalize("Q"), ValueError,
         r"^canonicalize: towards='Q' is neither a node nor a bond of the network; nodes are "
         r"\['A', 'B', 'C'\]$"),
        (lambda: chain().canonicalize(5), TypeError,
         r"^canonicalize: towards must be a node name, a bond's leg name or a Bond, got int 5$"),
        (lambda: chain().canonicalize("i"), ValueError, r"^canonicalize: 'i' is an open leg"),
        (lambda: chain().canonicalize(tn.Bond("k", ("A", "C"), 4)), ValueError,
         r"^canonicalize: Bond\(leg='k'.* joins nodes \('A', 'C'\)"),
        (lambda: chain(np.nan).canonicalize("A"), ValueError,
         r"^canonicalize: node 'B' holds NaN or inf values \(1 of 60 entries\)"),
        (lambda: chain(np.inf).spectrum("j"), ValueError, r"^spectrum: node 'B' holds NaN"),
        (lambda: chain(np.nan).truncate("j", 1), ValueError, r"^truncate: node 'B' holds NaN"),
        (lambda: chain(np.nan).cut(["i"]), ValueError, r"^cut: node 'B' holds NaN"),
        (lambda: two_devices().canonicalize("A"), ValueError,
         r"^canonicalize: nodes live on different devices "
         r"\{'cpu': \['A', 'C'\], 'meta': \['B'\]\}"),
        (lambda: two_devices().spectrum("j"), ValueError, r"^spectrum: nodes live on different"),
        (lambda: two_devices().truncate("j", 1), ValueError, r"^truncate: nodes live on different"),
        (lambda: two_devices().cut(["i"]), ValueError, r"^cut: nodes live on different"),
        (lambda: chain().truncate("j", None), ValueError,
         r"^truncate: trunc must be given \(a Truncation or an int max_rank\)$"),
        (lambda: chain().cut(None), TypeError,
         r"^cut: left_legs must be a leg name or a sequence of leg names, got NoneType$"),
        (lambda: chain().cut(5), TypeError,
         r"^cut: left_legs must be a leg name or a sequence of leg names, got int$"),
        (lambda: chain().cut([3]), TypeError, r"^cut: leg names are str, got int 3$"),
        (lambda: chain().cut(["i", "i"]), ValueError, r"^cut: left legs \('i', 'i'\) must be a"),
        (lambda: chain().cut(["i"], max_elements="10"), TypeError,
         r"^cut: max_elements must be an int, got str$"),
        (lambda: chain().cut(["i"], max_elements=True), TypeError,
         r"^cut: max_elements must be an int, got bool$"),
        (lambda: TensorNetwork().canonicalize("A"), ValueError, r"^the network has no nodes$"),
        (lambda: triangle().canonicalize("A"), ValueError,
         r"^bond 'b' between 'B' and 'C' closes a loop; exact gauge methods need a tree-shaped "
         r"network$"),
        (lambda: TensorNetwork([Node(torch.ones(2), ("p",)), Node(torch.ones(2), ("q",))]).spectrum(
            "p"), ValueError,
         r"^the network is not connected \(components \[\['n0'\], \['n1'\]\]\); exact gauge "
         r"methods need one tree$"),
    ],
)  # fmt: skip
def test_gauge_errors_name_the_call_and_the_culprit(call, error, match):
    with pytest.raises(error, match=match):
        call()
