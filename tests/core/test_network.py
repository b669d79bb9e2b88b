import pytest
import torch

import tensornet as tn
from tensornet import Bond, Node, TensorNetwork


def chain():
    a = Node(torch.randn(2, 3, dtype=torch.float64), ("i", "j"), name="A")
    b = Node(torch.randn(3, 4, 5, dtype=torch.float64), ("j", "k", "x"), name="B")
    c = Node(torch.randn(4, 6, dtype=torch.float64), ("k", "l"), name="C")
    return TensorNetwork([a, b, c])


def test_bonds_open_legs_and_counts():
    net = chain()
    assert net.bonds == (Bond("j", ("A", "B"), 3), Bond("k", ("B", "C"), 4))
    assert net.open_legs == ("i", "x", "l")
    assert net.num_params == 6 + 60 + 24
    assert net.neighbors("B") == ("A", "C")
    assert net.owners("k") == ("B", "C")
    assert net.bond("j").dim == 3
    with pytest.raises(ValueError, match="'i' is an open leg, not a bond"):
        net.bond("i")


def test_unnamed_nodes_get_unique_names():
    net = TensorNetwork([Node(torch.ones(2), ("a",)), Node(torch.ones(2), ("a",), name="n0")][::-1])
    assert set(net.names) == {"n0", "n1"}


def test_third_owner_is_rejected_naming_leg_and_nodes():
    a = Node(torch.ones(2), ("x",), name="A")
    b = Node(torch.ones(2), ("x",), name="B")
    c = Node(torch.ones(2), ("x",), name="C")
    with pytest.raises(ValueError, match=r"leg 'x' would join three nodes \('A', 'B', 'C'\)"):
        TensorNetwork([a, b, c])


def test_dimension_mismatch_is_rejected_naming_both_nodes():
    a = Node(torch.ones(2), ("x",), name="A")
    b = Node(torch.ones(3), ("x",), name="B")
    with pytest.raises(ValueError, match=r"bond 'x' has dimension 2 on node 'A' but 3 on node 'B'"):
        TensorNetwork([a, b])


def test_failed_add_leaves_network_unchanged():
    net = chain()
    before = (net.names, net.open_legs, net.bonds)
    with pytest.raises(ValueError):
        net.add(Node(torch.ones(3), ("j",), name="D"))
    with pytest.raises(ValueError, match="already in the network"):
        net.add(Node(torch.ones(7), ("q",), name="A"))
    with pytest.raises(TypeError, match="holds Node objects"):
        net.add(torch.ones(2))
    assert (net.names, net.open_legs, net.bonds) == before


def test_add_remove_copy():
    net = chain()
    other = net.copy()
    removed = net.remove("B")
    assert removed.name == "B" and net.open_legs == ("i", "j", "k", "l")
    assert other.names == ("A", "B", "C")  # the copy is independent
    net.add(removed)
    assert net.open_legs == ("i", "l", "x")
    with pytest.raises(KeyError, match="no node named 'Z'"):
        net.remove("Z")


def test_contract_orders_output_and_rejects_bad_output():
    net = chain()
    a, b, c = (n.tensor for n in net.nodes)
    expected = torch.einsum("ij,jkx,kl->ixl", a, b, c)
    torch.testing.assert_close(net.contract().tensor, expected)
    out = net.contract(output=("l", "i", "x"))
    assert out.legs == ("l", "i", "x")
    torch.testing.assert_close(out.tensor, expected.permute(2, 0, 1))
    with pytest.raises(ValueError, match="output leg 'j' is a bond"):
        net.contract(output=("i", "j", "x", "l"))
    with pytest.raises(ValueError, match="output leg 'q' is not a leg"):
        net.contract(output=("q",))
    with pytest.raises(ValueError, match=r"missing \['l'\]"):
        net.contract(output=("i", "x"))
    with pytest.raises(ValueError, match="repeats a leg"):
        net.contract(output=("i", "i", "x", "l"))
    with pytest.raises(ValueError, match="empty network"):
        TensorNetwork().contract()


def test_contract_nodes_merges_a_subset():
    net = chain()
    merged = net.contract_nodes(["B", "C"], name="BC")
    assert merged.names == ("A", "BC")
    assert merged.node("BC").legs == ("j", "x", "l")
    torch.testing.assert_close(
        merged.contract().tensor, net.contract(output=("i", "x", "l")).tensor
    )
    assert net.names == ("A", "B", "C")
    with pytest.raises(ValueError, match="already in the network"):
        net.contract_nodes(["B", "C"], name="A")


def test_mixed_dtypes_are_promoted_and_devices_checked():
    a = Node(torch.ones(2, dtype=torch.float32), ("i",))
    b = Node(torch.ones(2, dtype=torch.float64), ("i",))
    out = TensorNetwork([a, b]).contract()
    assert out.dtype == torch.float64 and float(out.tensor) == 2.0


def test_to_rename_and_conj():
    net = chain().to(dtype=torch.float32)
    assert all(n.dtype == torch.float32 for n in net)
    renamed = net.rename({"j": "J", "i": "I"})
    assert renamed.open_legs == ("I", "x", "l") and renamed.bond("J").nodes == ("A", "B")
    with pytest.raises(ValueError, match="cannot rename 'zz'"):
        net.rename({"zz": "y"})
    z = TensorNetwork([Node(torch.tensor([1 + 2j]), ("i",))]).conj()
    assert z.contract().tensor.item() == 1 - 2j


def test_repr_lists_nodes():
    text = repr(chain())
    assert "3 nodes, 2 bonds" in text and "Node('B', [j=3, k=4, x=5], float64)" in text


def test_contract_on_device(device):
    net = chain().to(device=device)
    out = net.contract()
    assert out.device.type == device.type
    a, b, c = (n.tensor for n in net.nodes)
    torch.testing.assert_close(out.tensor, torch.einsum("ij,jkx,kl->ixl", a, b, c))


@pytest.mark.gpu
def test_mixed_devices_are_rejected():
    a = Node(torch.ones(2), ("i",), name="A")
    b = Node(torch.ones(2, device="cuda"), ("i",), name="B")
    with pytest.raises(ValueError, match="different devices"):
        TensorNetwork([a, b]).contract()


def test_mixed_devices_are_rejected_on_cpu_with_the_meta_device():
    a = Node(torch.ones(2), ("i",), name="A")
    b = Node(torch.ones(2, device="meta"), ("i",), name="B")
    net = TensorNetwork([a, b])
    for call in (net.contract, lambda: net.device, lambda: net.plan()):
        with pytest.raises(ValueError, match=r"different devices .*'meta': 'B'"):
            call()


# -- objects the library hands out are accepted back; conveniences; summaries ----------------
def _chain(seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorNetwork(
        [
            Node(torch.randn(2, 3, generator=g, dtype=torch.float64), ("i", "j"), name="A"),
            Node(torch.randn(3, 4, 2, generator=g, dtype=torch.float64), ("j", "x", "k"), name="B"),
            Node(torch.randn(2, 5, generator=g, dtype=torch.float64), ("k", "l"), name="C"),
        ]
    )


def test_bond_objects_are_accepted_wherever_a_bond_is():
    net = _chain()
    j, k = net.bonds
    assert net.bond(j) == j and net.bond("k") == k
    assert torch.equal(net.spectrum(j).values, net.spectrum("j").values)
    new_obj, info_obj = net.truncate(k, 1)
    new_str, info_str = net.truncate("k", 1)
    assert info_obj.error == info_str.error and new_obj.bond("k").dim == 1
    by_bond = net.canonicalize(j).contract(output=("i", "x", "l")).tensor
    torch.testing.assert_close(by_bond, net.contract(output=("i", "x", "l")).tensor)
    a = net.canonicalize(j).node("B").matricize(("x", "k"))
    torch.testing.assert_close(a.T @ a, torch.eye(3, dtype=torch.float64))  # B points at A


def test_missing_node_is_a_value_error_and_still_a_key_error():
    net = _chain()
    with pytest.raises(ValueError, match=r"no node named 'Z'; nodes are \['A', 'B', 'C'\]"):
        net.node("Z")
    with pytest.raises(KeyError):
        net.node("Z")


def test_gauge_methods_check_devices_instead_of_moving_nodes():
    net = TensorNetwork(
        [
            Node(torch.ones(2, 3), ("i", "j"), name="A"),
            Node(torch.empty(3, 4, device="meta"), ("j", "k"), name="B"),
        ]
    )
    for call in (
        lambda: net.canonicalize("A"),
        lambda: net.spectrum("j"),
        lambda: net.truncate("j", 1),
        lambda: net.cut(["i"]),
    ):
        with pytest.raises(ValueError, match=r"different devices \{'cpu': \['A'\], 'meta'"):
            call()


def test_to_dense_norm_and_draw():
    net = _chain(1)
    dense = net.contract().tensor
    torch.testing.assert_close(net.to_dense(), dense)
    torch.testing.assert_close(net.to_dense(output=("l", "x", "i")), dense.permute(2, 1, 0))
    assert float(net.norm()) == pytest.approx(float(torch.linalg.vector_norm(dense)), rel=1e-12)
    c = TensorNetwork([Node(torch.randn(3, 2, dtype=torch.complex128), ("i", "j"))])
    assert float(c.norm()) == pytest.approx(float(torch.linalg.vector_norm(c.to_dense())))
    fig = net.draw(bond_labels="leg")
    ids = {t.get_gid() for t in fig.axes[0].texts}
    assert {"node:A", "node:B", "node:C", "bond:j", "bond:k"} <= ids


def test_reprs_are_summaries():
    many = TensorNetwork(Node(torch.ones(2, 2), (f"b{i}", f"b{i + 1}")) for i in range(200))
    text = repr(many)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("TensorNetwork(200 nodes, 199 bonds, open legs ['b0', 'b200']")
    small = repr(_chain())
    assert small.count("\n") == 3 and "Node('B', [j=3, x=4, k=2], float64)" in small
    *_, info = tn.split(Node(torch.randn(30, 40), ("a", "b")), ["a"], trunc=5)
    text = repr(info)
    assert "\n" not in text and "tensor(" not in text
    assert "rank=5 of 30" in text and "cut=a | b" in text and f"error={info.error:.3g}" in text
