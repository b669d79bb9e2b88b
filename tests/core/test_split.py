import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from tensornet import Node, TensorNetwork, Truncation, contract, qr_split, split


def decaying_tensor(shape, seed=0, dtype=torch.float64, device="cpu"):
    """A tensor whose (a | rest) spectrum decays geometrically, so tolerances bite."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    m = t.reshape(shape[0], -1)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    s = 0.6 ** torch.arange(s.shape[0], dtype=torch.float64)
    return (u @ torch.diag(s) @ vh).reshape(shape).to(dtype=dtype, device=device)


def numpy_spectrum(t, left_axes):
    a = t.detach().cpu().numpy()
    right = [i for i in range(a.ndim) if i not in left_axes]
    rows = int(np.prod([a.shape[i] for i in left_axes]))
    return np.linalg.svd(
        np.transpose(a, list(left_axes) + right).reshape(rows, -1), compute_uv=False
    )


TRUNCATIONS = [
    Truncation(max_rank=3),
    Truncation(rel_tol=0.05),
    Truncation(abs_tol=0.2),
    Truncation(keep_energy=0.99),
    Truncation(max_rank=5, rel_tol=0.01),
]


@pytest.mark.parametrize("trunc", TRUNCATIONS, ids=repr)
@pytest.mark.parametrize("absorb", ["both", "left", "right", None])
def test_error_is_eckart_young_mirsky(trunc, absorb, device):
    t = decaying_tensor((12, 4, 5), device=device)
    node = Node(t, ("a", "b", "c"), name="T")
    *parts, info = split(node, ["a"], trunc=trunc, absorb=absorb)
    s = numpy_spectrum(t, [0])
    k = info.rank
    expected = math.sqrt((s[k:] ** 2).sum()) / math.sqrt((s**2).sum())
    assert info.error == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # the reconstruction makes exactly that error
    approx = contract(*parts, output=("a", "b", "c")).tensor
    actual = float(torch.linalg.norm(approx - t) / torch.linalg.norm(t))
    assert actual == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # and the rank is the one the policy asks for on numpy's spectrum
    assert k == trunc.rank(torch.from_numpy(s.copy()))
    np.testing.assert_allclose(info.singular_values.cpu().numpy(), s, rtol=1e-10, atol=1e-14)


def test_split_legs_shapes_and_isometries():
    t = torch.randn(3, 4, 5, 2, dtype=torch.float64)
    node = Node(t, ("a", "b", "c", "d"), name="T", tags=("x",))
    left, right, info = split(node, ["c", "a"], bond="k", absorb="right")
    assert left.legs == ("c", "a", "k") and right.legs == ("k", "b", "d")
    assert left.name == "T_L" and right.name == "T_R" and left.tags == {"x"}
    assert info.rank == min(15, 8) and info.error == pytest.approx(0.0, abs=1e-12)
    m = left.matricize(("c", "a"))
    torch.testing.assert_close(m.T @ m, torch.eye(info.rank, dtype=t.dtype))
    left, mid, right, info = split(node, ["a"], trunc=2, absorb=None)
    assert mid.legs == ("bond", "bond'") and torch.allclose(
        torch.diag(mid.tensor), info.singular_values[:2]
    )


@pytest.mark.parametrize(
    "args, match",
    [
        ((["z"],), "has no leg 'z'"),
        (([],), "left_legs is empty"),
        ((["a", "b", "c"],), "leave at least one"),
        ((["a", "a"],), "repeats a leg"),
    ],
)
def test_bad_cuts_are_named(args, match):
    node = Node(torch.ones(2, 3, 4), ("a", "b", "c"), name="T")
    with pytest.raises(ValueError, match=match):
        split(node, *args)
    with pytest.raises(ValueError, match=match):
        qr_split(node, *args)


def test_bad_bond_and_absorb_are_named():
    node = Node(torch.ones(2, 3), ("a", "b"))
    with pytest.raises(ValueError, match="bond name 'b' is already a leg"):
        split(node, ["a"], bond="b")
    with pytest.raises(ValueError, match="absorb must be one of"):
        split(node, ["a"], absorb="middle")
    with pytest.raises(TypeError, match="trunc must be"):
        split(node, ["a"], trunc=0.1)


def test_qr_split_is_exact():
    t = torch.randn(3, 4, 5, dtype=torch.float64)
    q, r = qr_split(Node(t, ("a", "b", "c")), ["b"], bond="k")
    assert q.legs == ("b", "k") and r.legs == ("k", "a", "c")
    torch.testing.assert_close(contract(q, r, output=("a", "b", "c")).tensor, t)
    # Q is an isometry (Q^T Q = I on the bond) and R is the projection Q^T t
    qm = q.transpose(("b", "k")).tensor
    torch.testing.assert_close(qm.T @ qm, torch.eye(4, dtype=torch.float64))
    tm = t.permute(1, 0, 2).reshape(4, 15)
    torch.testing.assert_close(r.transpose(("k", "a", "c")).tensor.reshape(4, 15), qm.T @ tm)
    wide_q, _ = qr_split(Node(t, ("a", "b", "c")), ["a", "b"], bond="k")
    wq = wide_q.tensor.reshape(12, 5)
    torch.testing.assert_close(wq.T @ wq, torch.eye(5, dtype=torch.float64))


def test_gradients_flow_through_truncated_split():
    t = torch.randn(6, 5, 4, dtype=torch.float64, requires_grad=True)

    def f(t):
        left, right, _ = split(Node(t, ("a", "b", "c")), ["a", "c"], trunc=3)
        return contract(left, right, output=("a", "b", "c")).tensor

    assert gradcheck(f, (t,))


def test_network_split_replaces_node_and_keeps_value():
    a = Node(torch.randn(3, 4, 5, dtype=torch.float64), ("i", "j", "k"), name="A")
    b = Node(torch.randn(5, 2, dtype=torch.float64), ("k", "l"), name="B")
    net = TensorNetwork([a, b])
    new, info = net.split("A", ["i"])
    assert new.names == ("A_L", "A_R", "B") and len(net) == 2
    assert info.bond == "A_bond"
    torch.testing.assert_close(new.contract().tensor, net.contract().tensor)
    qr_net = net.qr_split("A", ["j", "k"], names=("Q", "R"))
    assert qr_net.names == ("Q", "R", "B")
    torch.testing.assert_close(qr_net.contract(output=net.open_legs).tensor, net.contract().tensor)
    with pytest.raises(ValueError, match="bond name 'k' is already a leg of the network"):
        net.split("A", ["i"], bond="k")
    with pytest.raises(ValueError, match="a node named 'B' is already"):
        net.split("A", ["i"], names=("B", "C"))


def test_network_split_with_a_named_bond_pair_and_size_zero_legs():
    net = TensorNetwork([Node(torch.randn(3, 4, dtype=torch.float64), ("i", "j"), name="A")])
    new, info = net.split("A", ["i"], bond=("p", "q"), absorb=None)
    assert [n.legs for n in new] == [("i", "p"), ("p", "q"), ("q", "j")]
    torch.testing.assert_close(new.contract().tensor, net.contract().tensor)
    empty = Node(torch.ones(0, 3), ("a", "b"))
    assert empty.matricize(["a"]).shape == (0, 3)


def test_half_precision_split():
    t = torch.randn(6, 5, dtype=torch.float64)
    left, right, info = split(Node(t.to(torch.bfloat16), ("a", "b")), ["a"], trunc=5)
    assert left.dtype == torch.bfloat16
    approx = contract(left, right).tensor.double()
    assert float((approx - t).norm() / t.norm()) < 2e-2
