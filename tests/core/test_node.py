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


# -- bookkeeping of derived nodes, messages that name the culprit, summaries ---------------------
def _tagged():
    t = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    return Node(t, ("i", "j"), name="A", tags=("x", "y"))


def _same_labels(node, legs=("i", "j")):
    return node.legs == legs and node.name == "A" and node.tags == frozenset({"x", "y"})


def test_derived_nodes_keep_legs_name_and_tags():
    """Every derived node carries the legs, name and tags over exactly, and the right values."""
    node = _tagged()
    t = node.tensor
    assert node.dims() == {"i": 2, "j": 3}
    assert node.ndim == 2 and node.size == 6
    other = node.with_tensor(2 * t)
    assert _same_labels(other) and torch.equal(other.tensor, 2 * t)
    assert _same_labels(node.rename({"i": "i"}))
    moved = node.to(dtype=torch.float32)
    assert _same_labels(moved) and torch.equal(moved.tensor, t.float())
    p = node.transpose(("j", "i"))
    assert _same_labels(p, ("j", "i")) and torch.equal(p.tensor, t.T)
    assert node.transpose(("i", "j")) is node
    z = Node(torch.tensor([1 + 2j, 3 - 1j]), ("k",), name="A", tags=("x", "y"))
    c = z.conj()
    assert _same_labels(c, ("k",)) and torch.equal(c.tensor, torch.tensor([1 - 2j, 3 + 1j]))
    w = node.with_tensor(t.clone().requires_grad_(True))
    d = w.detach()
    assert _same_labels(d) and not d.tensor.requires_grad and torch.equal(d.tensor, t)


def test_with_name_and_with_tags():
    """Renaming keeps tensor, legs and tags; tags accept one str or an iterable of str."""
    node = _tagged()
    b = node.with_name("B")
    assert b.name == "B" and b.tensor is node.tensor and b.legs == ("i", "j")
    assert b.tags == frozenset({"x", "y"})
    assert node.with_name(None).name is None
    with pytest.raises(TypeError, match="^Node name must be a str or None, got int$"):
        node.with_name(3)
    one = node.with_tags("z")
    assert one.tags == frozenset({"z"}) and one.tensor is node.tensor
    assert one.legs == ("i", "j") and one.name == "A"
    assert node.with_tags(["p", "q"]).tags == frozenset({"p", "q"})
    with pytest.raises(TypeError, match="^with_tags: every tag must be a str, got int 3$"):
        node.with_tags(["p", 3])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": 3}, TypeError, "^Node name must be a str or None, got int$"),
        ({"legs": 5}, TypeError, "^Node: legs must be a sequence of str, got int$"),
        ({"legs": ("i",)}, ValueError, r"^Node: 1 leg names \('i',\) for a tensor of shape"),
        ({"name": "A", "legs": ("i",)}, ValueError, r"^Node 'A': 1 leg names"),
        ({"tags": 5}, TypeError, "^Node: tags must be a str or an iterable of str, got int 5$"),
        (
            {"name": "A", "tags": ["t", 2]},
            TypeError,
            "^Node 'A': every tag must be a str, got int 2$",
        ),
        ({"tensor": object()}, TypeError, "^cannot convert object to a torch tensor: "),
        (
            {"tensor": torch.zeros(2, 2, 2), "legs": ("i", "i", "j")},
            ValueError,
            r"repeated: \['i'\]$",
        ),
    ],
)
def test_construction_errors_name_the_field(kwargs, error, match):
    """Bad constructor arguments raise messages that start with the node and name the field."""
    args = {"tensor": torch.zeros(2, 3), "legs": ("i", "j"), **kwargs}
    with pytest.raises(error, match=match):
        Node(args.pop("tensor"), args.pop("legs"), **args)


def test_numpy_memory_is_shared_when_writeable_and_copied_when_not():
    """A writeable array is wrapped (no copy); a read-only one is copied (torch cannot wrap it)."""
    a = np.zeros((2, 2))
    node = Node(a, ("i", "j"))
    a[0, 0] = 5.0
    assert float(node.tensor[0, 0]) == 5.0
    ro = np.ones((2, 2))
    ro.setflags(write=False)
    node = Node(ro, ("i", "j"))
    assert not np.shares_memory(node.tensor.numpy(), ro)
    np.testing.assert_array_equal(node.tensor.numpy(), ro)


def test_describe_and_repr():
    """``describe`` and ``repr`` spell out name, legs with dims, dtype, device and tags."""
    assert _tagged().describe() == "node 'A'"
    unnamed = Node(torch.ones(2, dtype=torch.float32), ("i",))
    assert unnamed.describe() == "node"
    assert repr(unnamed) == "Node(None, [i=2], float32)"
    assert repr(_tagged()) == "Node('A', [i=2, j=3], float64, tags=['x', 'y'])"
    meta = Node(torch.empty(4, 1, device="meta"), ("a", "b"), name="M")
    assert repr(meta) == "Node('M', [a=4, b=1], float32, device=meta)"
    with pytest.raises(ValueError, match=r"^node has no leg 'k'; its legs are \('i',\)$"):
        unnamed.dim("k")
