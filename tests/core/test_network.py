import pytest
import torch

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
