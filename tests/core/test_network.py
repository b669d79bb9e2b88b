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


# -- container bookkeeping, memoized contraction, splits, conversions: exact values ------------
def _dense(net, output):
    """The network's value from numpy, in float64 (einsum over the leg names)."""
    import string

    import numpy as np

    letters = {}
    for node in net.nodes:
        for leg in node.legs:
            letters.setdefault(leg, string.ascii_letters[len(letters)])
    spec = ",".join("".join(letters[x] for x in n.legs) for n in net.nodes)
    spec += "->" + "".join(letters[x] for x in output)
    return torch.from_numpy(np.einsum(spec, *(n.tensor.numpy() for n in net.nodes)))


def test_constructor_accepts_one_node_and_refuses_non_iterables():
    """A single Node is a one-node network; str, None and non-iterables are refused by type."""
    one = TensorNetwork(Node(torch.ones(2), ("i",), name="A"))
    assert one.names == ("A",) and len(one) == 1 and "A" in one and "B" not in one
    assert [n.name for n in one] == ["A"]
    for bad, kind in ((None, "NoneType"), ("ab", "str"), (5, "int")):
        message = f"^TensorNetwork takes an iterable of Node objects, got {kind}$"
        with pytest.raises(TypeError, match=message):
            TensorNetwork(bad)


def test_automatic_names_skip_taken_ones_and_continue_after_copies():
    """Unnamed nodes get n0, n1, ... skipping names in use; a copy continues the same counter."""
    net = TensorNetwork([Node(torch.ones(2), ("a",), name="n1"), Node(torch.ones(2), ("b",))])
    assert net.names == ("n1", "n0")
    assert net.add(Node(torch.ones(2), ("c",))).name == "n2"
    net.remove("n0")
    other = net.copy()
    assert other.add(Node(torch.ones(2), ("d",))).name == "n3"  # not the freed n0
    assert net.names == ("n1", "n2")  # the copy's add leaves the original alone
    assert net.open_legs == ("a", "c") and other.open_legs == ("a", "c", "d")


def test_remove_by_node_updates_legs_and_bonds():
    net = chain()
    removed = net.remove(net.node("A"))
    assert removed.name == "A" and net.names == ("B", "C")
    assert net.legs == ("j", "k", "x", "l") and net.open_legs == ("j", "x", "l")
    assert [b.leg for b in net.bonds] == ["k"]
    with pytest.raises(ValueError, match=r"^'i' is not a leg of this network; legs are "):
        net.dim("i")


def test_node_lookup_messages():
    net = chain()
    with pytest.raises(TypeError, match="^node names are str, got int 3$"):
        net.node(3)
    with pytest.raises(tn.core.network.NodeNotFoundError) as err:
        net.node("Z")
    assert str(err.value) == "no node named 'Z'; nodes are ['A', 'B', 'C']"  # not KeyError's quotes


def test_structure_queries():
    """Legs, dims, owners, neighbours (each once), tags, dtype and device, exactly."""
    a = Node(torch.ones(2, 3, 4), ("i", "p", "q"), name="A", tags=("t",))
    b = Node(torch.ones(3, 4, dtype=torch.float64), ("p", "q"), name="B")
    c = Node(torch.ones(2, dtype=torch.complex64), ("i",), name="C", tags=("t", "u"))
    net = TensorNetwork([a, b, c])
    assert net.legs == ("i", "p", "q") and net.open_legs == ()
    assert net.dim("q") == 4 and net.owners("i") == ("A", "C")
    assert net.neighbors("A") == ("C", "B") and net.neighbors("B") == ("A",)
    assert [n.name for n in net.tagged("t")] == ["A", "C"] and net.tagged("v") == ()
    assert net.dtype == torch.complex128 and net.device == torch.device("cpu")
    assert net.num_params == 24 + 12 + 2
    with pytest.raises(ValueError, match="^the network has no nodes$"):
        _ = TensorNetwork().dtype
    with pytest.raises(ValueError, match="^cannot plan the contraction of an empty network$"):
        TensorNetwork().plan()


def test_contract_values_single_output_leg_and_plan():
    net = chain()
    torch.testing.assert_close(net.contract().tensor, _dense(net, ("i", "x", "l")))
    single = TensorNetwork([net.node("A"), net.node("B")]).contract_nodes(["A", "B"])
    node = single.node("A")
    assert node.legs == ("i", "k", "x")
    vec = TensorNetwork([Node(torch.arange(3.0), ("i",)), Node(torch.ones(3, 2), ("i", "o"))])
    out = vec.contract(output="o")
    assert out.legs == ("o",) and torch.equal(out.tensor, torch.tensor([3.0, 3.0]))
    plan = net.plan(output=("l", "i", "x"))
    assert plan.largest_intermediate == net.plan().largest_intermediate
    assert plan.flops > 0


def test_repeated_contraction_is_served_from_the_memo_with_the_same_value():
    """The second identical call is a cache hit; mixed dtypes are still promoted on a hit."""
    a = Node(torch.arange(6.0, dtype=torch.float32).reshape(2, 3), ("i", "j"), name="A")
    b = Node(torch.arange(3.0, dtype=torch.float64), ("j",), name="B")
    net = TensorNetwork([a, b])
    first = net.contract()
    hits = tn.cache_info()["hits"]
    second = net.contract()
    assert tn.cache_info()["hits"] == hits + 1
    assert second.dtype == torch.float64 and second.legs == ("i",)
    assert torch.equal(first.tensor, torch.tensor([5.0, 14.0], dtype=torch.float64))
    assert torch.equal(second.tensor, first.tensor)
    listed = net.contract(output=["i"])  # unhashable argument: no memo, same value
    assert torch.equal(listed.tensor, first.tensor) and listed.legs == ("i",)
    copy = net.copy()
    assert torch.equal(copy.contract().tensor, first.tensor)
    net.add(Node(torch.full((2,), 2.0, dtype=torch.float64), ("i",), name="C"))
    assert float(net.contract().tensor) == 38.0  # the memo is dropped when the network changes
    net.remove("C")
    assert torch.equal(net.contract().tensor, first.tensor)


def test_memo_replans_after_an_in_place_dtype_change():
    """A tensor whose dtype changes in place (``module.to``) is planned again, not reused."""
    p = torch.nn.Parameter(torch.ones(2, 3))
    net = TensorNetwork([Node(p, ("i", "j"), name="A"), Node(torch.ones(3), ("j",), name="B")])
    assert net.contract().dtype == torch.float32
    p.data = p.data.double()
    out = net.contract()
    assert out.dtype == torch.float64
    assert torch.equal(out.tensor, torch.tensor([3.0, 3.0], dtype=torch.float64))
    tn.clear_cache()  # a cleared cache invalidates the memo too
    assert torch.equal(net.contract().tensor, out.tensor)


def test_a_memo_hit_plans_nothing_and_a_miss_plans_again(monkeypatch):
    """A repeat with the same (hashable) arguments runs the remembered program without going
    through the planner; an unhashable argument, an in-place dtype or device change, or a
    cleared cache goes through it again."""
    from tensornet.core import network

    calls = []
    prepared = network.prepared

    def counting(*args, **kwargs):
        calls.append(args[2])
        return prepared(*args, **kwargs)

    monkeypatch.setattr(network, "prepared", counting)
    p = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    net = TensorNetwork([Node(p, ("i", "j"), name="A"), Node(torch.ones(3), ("j",), name="B")])
    first = net.contract(output=("i",))
    assert calls == [("i",)]
    for _ in range(2):
        assert torch.equal(net.contract(output=("i",)).tensor, first.tensor)
    assert calls == [("i",)]  # served from the memo
    assert net.contract(output=["i"]).legs == ("i",) and len(calls) == 2  # a list: no memo
    tn.clear_cache()
    net.contract(output=("i",))
    assert len(calls) == 3
    net.contract(output=("i",))
    assert len(calls) == 3
    p.data = p.data.double()
    assert net.contract(output=("i",)).dtype == torch.float64 and len(calls) == 4


def test_a_memo_hit_promotes_dtypes_that_promote_to_a_third():
    """float16 with bfloat16 contracts in float32 (neither operand's dtype), also on a repeat."""
    a = Node(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float16), ("i", "j"), name="A")
    b = Node(torch.tensor([0.5, 0.25], dtype=torch.bfloat16), ("j",), name="B")
    net = TensorNetwork([a, b])
    for _ in range(2):
        out = net.contract()
        assert out.dtype == torch.float32
        assert torch.equal(out.tensor, torch.tensor([1.0, 2.5]))


def test_contract_nodes_bookkeeping_and_messages():
    net = chain()
    merged = net.contract_nodes(["C", "B"])
    assert merged.names == ("A", "C") and merged.node("C").legs == ("l", "j", "x")
    same = net.contract_nodes("B")
    assert same.names == ("A", "B", "C") and same.node("B").legs == ("j", "k", "x")
    torch.testing.assert_close(same.node("B").tensor, net.node("B").tensor)
    with pytest.raises(ValueError, match="^contract_nodes needs at least one node name$"):
        net.contract_nodes([])
    with pytest.raises(ValueError, match=r"^contract_nodes: names repeat: \('B', 'B'\)$"):
        net.contract_nodes(["B", "B"])
    with pytest.raises(ValueError, match="^a node named 'A' is already in the network$"):
        net.contract_nodes(["B", "C"], name="A")
    torch.testing.assert_close(
        net.contract_nodes(["B", "C"], name="B").contract().tensor, _dense(net, ("i", "x", "l"))
    )


def test_split_and_qr_split_names_bonds_and_values():
    net = chain()
    value = _dense(net, ("i", "x", "l"))
    split, info = net.split("B", ["j", "x"], trunc=2)
    assert split.names == ("A", "B_L", "B_R", "C") and info.bond == "B_bond" and info.rank == 2
    assert split.node("B_L").legs == ("j", "x", "B_bond")
    assert split.node("B_R").legs == ("B_bond", "k")
    kept, _ = net.split("B", ["j", "x"])
    torch.testing.assert_close(kept.contract(output=("i", "x", "l")).tensor, value)
    taken = net.rename({"l": "B_bond"})
    fresh, info = taken.split("B", ["j"])
    assert info.bond == "B_bond2" and fresh.bond("B_bond2").nodes == ("B_L", "B_R")
    none, _ = net.split("B", ["j"], bond="s", absorb=None, names=("L", "M", "R"))
    assert none.names == ("A", "L", "M", "R", "C")
    assert none.node("M").legs == ("s", "s'")
    torch.testing.assert_close(none.contract(output=("i", "x", "l")).tensor, value)
    with pytest.raises(ValueError, match="^split: bond name 'k' is already a leg of the network$"):
        net.split("B", ["j"], bond="k")
    with pytest.raises(ValueError, match="^split: bond name 'l' is already a leg of the network$"):
        net.split("B", ["j"], bond=("s", "l"), absorb=None)
    with pytest.raises(ValueError, match="^a node named 'A' is already in the network$"):
        net.split("B", ["j"], names=("A", "D"))
    q = net.qr_split("B", ["j", "x"])
    assert q.names == ("A", "B_L", "B_R", "C")
    qb = [b.leg for b in q.bonds if b.leg not in ("j", "k")]
    assert qb == ["B_bond"]
    left = q.node(q.names[1]).matricize(["j", "x"])
    torch.testing.assert_close(left.T @ left, torch.eye(left.shape[1], dtype=torch.float64))
    torch.testing.assert_close(q.contract(output=("i", "x", "l")).tensor, value)
    named = net.qr_split("B", ["j"], bond="r", names=("Q", "R"))
    assert named.names == ("A", "Q", "R", "C") and named.node("Q").legs == ("j", "r")
    with pytest.raises(ValueError, match="^qr_split: bond name 'x' is already a leg of the"):
        net.qr_split("B", ["j"], bond="x")
    with pytest.raises(ValueError, match="^a node named 'C' is already in the network$"):
        net.qr_split("B", ["j"], names=("Q", "C"))


def test_is_tree_and_conversions():
    net = chain()
    assert net.is_tree
    ring = TensorNetwork([Node(torch.ones(2, 2), ("a", "b")), Node(torch.ones(2, 2), ("b", "a"))])
    assert not ring.is_tree
    half = net.to(dtype=torch.float32)
    assert half.names == net.names and all(n.dtype == torch.float32 for n in half)
    renamed = net.rename({"k": "K"})
    assert renamed.node("B").legs == ("j", "K", "x") and renamed.node("C").legs == ("K", "l")
    torch.testing.assert_close(renamed.contract().tensor, net.contract().tensor)
    z = torch.tensor([[1 + 2j, 3j]])
    c = TensorNetwork([Node(z, ("i", "j"), name="Z")]).conj()
    assert c.names == ("Z",) and torch.equal(c.node("Z").tensor, z.conj())


def test_norm_of_complex_networks_with_bonds():
    """``norm`` from <net, net> equals the dense Frobenius norm, real and complex, with bonds."""
    g = torch.Generator().manual_seed(3)
    a = Node(torch.randn(2, 3, generator=g, dtype=torch.complex128), ("i", "j"), name="A")
    b = Node(torch.randn(3, 4, generator=g, dtype=torch.complex128), ("j", "k"), name="B")
    net = TensorNetwork([a, b])
    dense = net.to_dense()
    assert float(net.norm()) == pytest.approx(float(torch.linalg.vector_norm(dense)), rel=1e-12)
    assert net.norm().dtype == torch.float64
    real = chain()
    assert float(real.norm()) == pytest.approx(float(real.to_dense().norm()), rel=1e-12)


def test_contract_function_accepts_nodes_a_list_or_a_network():
    net = chain()
    ref = net.contract().tensor
    torch.testing.assert_close(tn.contract(net).tensor, ref)
    torch.testing.assert_close(tn.contract(list(net.nodes)).tensor, ref)
    torch.testing.assert_close(tn.contract(*net.nodes).tensor, ref)
    out = tn.contract(*net.nodes, output=("l", "x", "i"))
    torch.testing.assert_close(out.tensor, ref.permute(2, 1, 0))
    message = "^contract takes Node objects or one TensorNetwork, got {}$"
    with pytest.raises(TypeError, match=message.format("int")):
        tn.contract(net.node("A"), 3)
    with pytest.raises(TypeError, match=message.format("str")):
        tn.contract(["x"])


def test_repr_of_small_and_large_networks():
    net = chain()
    lines = repr(net).split("\n")
    assert lines[0] == "TensorNetwork(3 nodes, 2 bonds, open legs ['i', 'x', 'l'], 90 params)"
    assert lines[1:] == [f"  {n!r}" for n in net.nodes]
    thirteen = TensorNetwork(Node(torch.ones(2), (f"o{i}",)) for i in range(13))
    assert "\n" not in repr(thirteen)
    twelve = TensorNetwork(Node(torch.ones(2), (f"o{i}",)) for i in range(12))
    assert repr(twelve).count("\n") == 12
