"""`TensorNetwork.plan/contract/norm/to/cut` and `tn.contract` pass every argument on.

Checked by effects that only the argument can cause: an explicit path is reported (and a bad one
refused), a per-call limit refuses or slices, an output order is honoured, a device is reached.
"""

import re

import numpy as np
import pytest
import torch

import tensornet as tn
from tensornet import Node, TensorNetwork

DT = torch.float64


def chain():
    """i -(2x8)- j -(8x8)- k -(8x2)- l: largest intermediate 16, 4 when sliced over k."""
    g = torch.Generator().manual_seed(0)
    a = Node(torch.randn(2, 8, generator=g, dtype=DT), ("i", "j"), name="A")
    b = Node(torch.randn(8, 8, generator=g, dtype=DT), ("j", "k"), name="B")
    c = Node(torch.randn(8, 2, generator=g, dtype=DT), ("k", "l"), name="C")
    return TensorNetwork([a, b, c])


def dense(net):
    a, b, c = (net.node(n).tensor.numpy() for n in "ABC")
    return np.einsum("ij,jk,kl->il", a, b, c)


PATH = ((1, 2), (0, 1))  # B with C first, then A


def test_plan_reports_the_arguments_given():
    net = chain()
    plan = net.plan(optimize=PATH)
    assert plan.path == PATH and plan.optimizer == "explicit-path"
    assert net.plan(output=("l", "i")).output == ("l", "i")
    sliced = net.plan(max_intermediate=4, slicing=True)
    assert sliced.sliced == ("k",) and sliced.slices > 1
    oversized = net.plan(max_intermediate=4)  # returned for inspection, not refused
    assert oversized.largest_intermediate == 16 and oversized.sliced == ()


@pytest.mark.parametrize("call", ["method", "function"])
def test_contract_passes_every_argument_on(call):
    net = chain()

    def run(**kw):
        return net.contract(**kw) if call == "method" else tn.contract(net, **kw)

    expected = dense(net)
    np.testing.assert_allclose(run(optimize=PATH).tensor.numpy(), expected, rtol=1e-13)
    with pytest.raises(ValueError, match=r"step 0 \(0, 7\) names position 7"):
        run(optimize=((0, 7), (0, 1)))  # an impossible path is refused, so it was read
    with pytest.raises(ValueError, match=r"intermediate of 16 elements, above max_intermediate=4"):
        run(max_intermediate=4)
    out = run(max_intermediate=4, slicing=True)
    np.testing.assert_allclose(out.tensor.numpy(), expected, rtol=1e-13)
    flipped = run(output=("l", "i"))
    assert flipped.legs == ("l", "i")
    np.testing.assert_allclose(flipped.tensor.numpy(), expected.T, rtol=1e-13)


def test_contract_function_accepts_one_node_a_list_or_nodes():
    net = chain()
    a = net.node("A")
    assert torch.equal(tn.contract(a).tensor, a.tensor) and tn.contract(a).legs == ("i", "j")
    both = tn.contract(net.node("A"), net.node("B")).tensor.numpy()
    np.testing.assert_allclose(both, a.tensor.numpy() @ net.node("B").tensor.numpy(), rtol=1e-13)
    listed = tn.contract([net.node("A"), net.node("B")]).tensor.numpy()
    np.testing.assert_allclose(listed, both, rtol=1e-13)


def test_messages_of_contract():
    net = chain()
    with pytest.raises(ValueError, match=r"^cannot contract an empty network$"):
        TensorNetwork([]).contract()
    with pytest.raises(ValueError, match=re.escape(
        "output leg 'j' is a bond between nodes ('A', 'B'), not an open leg"
    )):  # fmt: skip
        net.contract(output=("i", "j", "l"))
    with pytest.raises(TypeError, match=r"^TensorNetwork holds Node objects, got int$"):
        TensorNetwork([]).add(3)


def test_norm_below_one_real_and_complex():
    x = Node(torch.full((2, 2), 0.1, dtype=DT), ("i", "j"), name="X")
    assert float(TensorNetwork([x]).norm()) == pytest.approx(0.2, rel=1e-14)
    z = Node(torch.full((2, 2), 0.1j, dtype=torch.complex128), ("i", "j"), name="Z")
    w = Node(torch.full((2,), 0.5, dtype=torch.complex128), ("j",), name="W")
    net = TensorNetwork([z, w])
    assert float(net.norm()) == pytest.approx(float(net.to_dense().abs().square().sum().sqrt()))
    assert float(net.norm()) == pytest.approx(0.1 * 2 * 0.5 * np.sqrt(2), rel=1e-14)


def test_to_reaches_the_device_and_dtype():
    moved = chain().to(device="meta", dtype=torch.float32)
    assert {n.tensor.device.type for n in moved} == {"meta"}
    assert {n.tensor.dtype for n in moved} == {torch.float32}


def test_cut_passes_its_size_guard_on():
    g = torch.Generator().manual_seed(1)
    a = Node(torch.randn(2, 3, 4, generator=g, dtype=DT), ("i", "j", "b"), name="A")
    b = Node(torch.randn(4, 5, generator=g, dtype=DT), ("b", "k"), name="B")
    net = TensorNetwork([a, b])
    with pytest.raises(ValueError):
        net.cut(["i", "k"], max_elements=29)  # no bond induces this cut: it needs 30 elements
    assert net.cut(["i", "k"], max_elements=30).chi_max == 3
