import numpy as np
import pytest
import torch

from tensornet import Node


def test_numpy_array_is_converted_and_keeps_dtype():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    node = Node(a, ("i", "j"), name="A", tags=("x",))
    assert isinstance(node.tensor, torch.Tensor)
    assert node.dtype == torch.float64
    assert node.shape == (2, 3) and node.legs == ("i", "j")
    assert node.dim("j") == 3 and node.axis("j") == 1
    assert node.tags == frozenset({"x"})
    np.testing.assert_array_equal(node.tensor.numpy(), a)


def test_nested_list_and_readonly_array():
    ro = np.ones((2, 2))
    ro.setflags(write=False)
    assert Node(ro, ("a", "b")).shape == (2, 2)
    assert Node([[1.0, 2.0]], ("a", "b")).shape == (1, 2)


@pytest.mark.parametrize(
    "legs, match",
    [
        (("i",), r"1 leg names \('i',\) for a tensor of shape \(2, 3\)"),
        (("i", "i"), r"repeated: \['i'\]"),
        ("ij", "single string 'ij'"),
        (("i", 3), "non-empty str, got 3"),
        (("i", ""), "non-empty str"),
    ],
)
def test_bad_legs_are_named(legs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Node(torch.zeros(2, 3), legs, name="A")


def test_unknown_leg_is_named():
    node = Node(torch.zeros(2, 3), ("i", "j"), name="A")
    with pytest.raises(ValueError, match=r"node 'A' has no leg 'k'"):
        node.dim("k")
    with pytest.raises(ValueError, match=r"cannot rename leg 'k'"):
        node.rename({"k": "x"})
    with pytest.raises(ValueError, match="permutation of its legs"):
        node.transpose(("i",))


def test_rename_transpose_and_matricize_values():
    t = torch.arange(24.0).reshape(2, 3, 4)
    node = Node(t, ("a", "b", "c"))
    r = node.rename({"a": "x"})
    assert r.legs == ("x", "b", "c") and r.tensor is t
    with pytest.raises(ValueError, match="repeated"):
        node.rename({"a": "b"})
    p = node.transpose(("c", "a", "b"))
    assert torch.equal(p.tensor, t.permute(2, 0, 1))
    m = node.matricize(("c", "a"))
    assert torch.equal(m, t.permute(2, 0, 1).reshape(8, 3))


def test_to_changes_dtype_and_is_identity_when_nothing_changes():
    node = Node(torch.ones(2), ("i",))
    assert node.to(dtype=torch.float64).dtype == torch.float64
    assert node.to() is node


@pytest.mark.gpu
def test_to_cuda_round_trip():
    node = Node(torch.ones(2, 2), ("i", "j")).to("cuda")
    assert node.device.type == "cuda"
    assert node.to("cpu").device.type == "cpu"


def test_to_another_device_keeps_legs_and_name_on_cpu_with_meta():
    node = Node(torch.ones(2, 3), ("i", "j"), name="A")
    moved = node.to("meta")
    assert moved.device.type == "meta" and moved.legs == ("i", "j") and moved.name == "A"
    assert moved.shape == (2, 3) and node.device.type == "cpu"
