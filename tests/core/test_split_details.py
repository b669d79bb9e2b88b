"""split / qr_split beyond the numbers: the names, tags and metadata they hand out, and the
one-line errors (each naming the function and the offending value)."""

import re

import pytest
import torch

from tensornet import Node, Truncation
from tensornet.core.split import SplitInfo, fresh_names, qr_split, split, truncation_error

F64 = torch.float64


def node(name="T", tags=("conv",)):
    t = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    return Node(t, ("a", "b", "c"), name=name, tags=tags)


def test_children_are_named_after_the_node_and_keep_its_tags():
    n = node()
    left, right, info = split(n, ["a"])
    assert (left.name, right.name) == ("T_L", "T_R")
    assert left.tags == right.tags == n.tags == frozenset({"conv"})
    assert info.bond == "bond" and left.legs == ("a", "bond") and right.legs == ("bond", "b", "c")
    left, middle, right, info = split(n, ["a"], absorb=None)
    assert (left.name, middle.name, right.name) == ("T_L", "T_S", "T_R")
    assert middle.tags == frozenset({"conv"}) and middle.legs == ("bond", "bond'")
    assert right.legs == ("bond'", "b", "c")
    left, middle, right, _ = split(n, ["a"], bond="k", absorb=None)
    assert middle.legs == ("k", "k'")
    q, r = qr_split(n, ["a"])
    assert (q.name, r.name) == ("T_L", "T_R") and q.tags == r.tags == frozenset({"conv"})
    assert q.legs == ("a", "bond") and r.legs == ("bond", "b", "c")
    # unnamed nodes give unnamed children; explicit names are used as given
    assert split(node(name=None), ["a"])[0].name is None
    assert [x.name for x in split(n, ["a"], names=("x", None))[:2]] == ["x", None]


def test_default_bond_names_avoid_the_node_legs():
    n = Node(torch.ones(2, 3, 4, dtype=F64), ("bond", "bond2", "c"))
    assert split(n, ["bond"])[2].bond == "bond3"
    assert qr_split(n, ["bond"])[0].legs == ("bond", "bond3")
    m = Node(torch.ones(2, 3, dtype=F64), ("x", "bond'"))
    left, middle, right, _ = split(m, ["x"], absorb=None)
    assert middle.legs == ("bond", "bond'2")
    assert fresh_names(["r", "r", "x"], ["r"]) == ("r2", "r3", "x")
    assert fresh_names(["r"], ["r", "r2"]) == ("r3",)


def test_split_info_fields_and_summary():
    n = node()
    _, _, info = split(n, ["a", "c"], trunc=Truncation(max_rank=2))
    s = torch.linalg.svdvals(n.tensor.permute(0, 2, 1).reshape(15, 4))
    assert info.left_legs == ("a", "c") and info.right_legs == ("b",)
    assert info.norm == pytest.approx(float(n.tensor.norm()))
    assert info.abs_error == pytest.approx(float(s[2:].norm()))
    assert info.error == pytest.approx(float(s[2:].norm() / s.norm()))
    assert info.discarded_weight == pytest.approx(info.error**2)
    text = repr(info)
    assert text.startswith("SplitInfo(bond='bond', rank=2 of 4, ")
    assert text.endswith(f"norm={info.norm:.4g}, cut=a c | b)")
    assert f"error={info.error:.3g}" in text
    empty = SplitInfo(torch.tensor(0.0), 0, 0.0, 0.0, 0.0, ("a",), ("b",), "k")
    assert "rank=0 of 0" in repr(empty)


def test_truncation_error_of_a_zero_and_a_small_tensor():
    assert truncation_error(torch.zeros(3, dtype=F64), 1) == (0.0, 0.0, 0.0)
    rel, abs_err, norm = truncation_error(torch.tensor([0.3, 0.4], dtype=F64), 1)
    assert (rel, abs_err, norm) == pytest.approx((0.8, 0.4, 0.5))
    _, _, info = split(Node(torch.zeros(2, 3, dtype=F64), ("a", "b")), ["a"], trunc=1)
    assert info.error == 0.0


@pytest.mark.parametrize("fn", [split, qr_split])
@pytest.mark.parametrize(
    "args, exc, message",
    [
        (("nope", ["a"]), TypeError, "{f}: node must be a Node, got str"),
        ((None, 5), TypeError, "{f}: left_legs must be a leg name or a sequence of leg names of "
         "node 'T' ('a', 'b', 'c'), got int"),
        ((None, [1]), TypeError, "{f}: left_legs must hold leg names (str), got int 1"),
        ((None, ["z"]), ValueError, "{f}: node 'T' has no leg 'z'; its legs are ('a', 'b', 'c')"),
        ((None, ["a", "a"]), ValueError, "{f}: left_legs repeats a leg: ('a', 'a')"),
        ((None, []), ValueError, "{f}: left_legs is empty; name at least one leg of"),
        ((None, ["a", "b", "c"]), ValueError, "{f}: left_legs ('a', 'b', 'c') take every leg of "
         "node 'T'; leave at least one on the right"),
    ],
)  # fmt: skip
def test_bad_cuts_name_the_function_and_the_value(fn, args, exc, message):
    n = node()
    args = tuple(n if a is None else a for a in args)
    with pytest.raises(exc, match="^" + re.escape(message.format(f=fn.__name__))):
        fn(*args)


@pytest.mark.parametrize("fn", [split, qr_split])
def test_bad_bonds_names_and_values(fn):
    n, f = node(), fn.__name__
    with pytest.raises(TypeError, match=f"^{f}: bond must be a "):
        fn(n, ["a"], bond=3)
    with pytest.raises(ValueError, match=f"^{f}: bond name 'b' is already a leg of node 'T'"):
        fn(n, ["a"], bond="b")
    count = 2
    with pytest.raises(
        TypeError, match=f"^names must be a sequence of {count} node names, got 'x'"
    ):
        fn(n, ["a"], names="x")
    with pytest.raises(
        TypeError, match=f"^names must be a sequence of {count} node names, got int"
    ):
        fn(n, ["a"], names=3)
    with pytest.raises(ValueError, match=rf"^names must give {count} node names, got \('x',\)"):
        fn(n, ["a"], names=("x",))
    with pytest.raises(TypeError, match="^names must be str or None, got int 1"):
        fn(n, ["a"], names=("x", 1))
    bad = Node(torch.tensor([[1.0, float("nan")]]), ("a", "b"), name="N")
    with pytest.raises(ValueError, match=f"^{f}: node 'N'"):
        fn(bad, ["a"])


def test_split_bond_forms_are_checked():
    n = node()
    with pytest.raises(
        TypeError, match=r"^split: bond must be a str or a pair of str, got \['k'\]"
    ):
        split(n, ["a"], absorb=None, bond=["k"])
    with pytest.raises(TypeError, match="^split: bond must be a str or a pair of str"):
        split(n, ["a"], absorb=None, bond=("k", "l", "m"))
    with pytest.raises(
        ValueError, match=r"^split: the two bond names must differ, got \('k', 'k'\)"
    ):
        split(n, ["a"], absorb=None, bond=("k", "k"))
    with pytest.raises(
        TypeError, match=r"^split: bond must be a str when absorb='both', got \('k', 'l'\)"
    ):
        split(n, ["a"], bond=("k", "l"))
    with pytest.raises(TypeError, match="^split: bond must be a non-empty str"):
        split(n, ["a"], absorb=None, bond=("", "l"))
    with pytest.raises(ValueError, match="^split: bond name 'b' is already a leg"):
        split(n, ["a"], absorb=None, bond=("k", "b"))
    with pytest.raises(ValueError, match=r"^names must give 3 node names"):
        split(n, ["a"], absorb=None, names=("x", "y"))
    left, middle, right, _ = split(n, ["a"], absorb=None, bond=("k", "l"))
    assert middle.legs == ("k", "l") and middle.dtype == F64
    # the middle node holds the singular values (real, in the node's dtype)
    torch.testing.assert_close(torch.diag(middle.tensor), torch.linalg.svdvals(n.matricize(("a",))))


def test_a_single_leg_name_is_a_cut_and_complex_spectra_stay_in_the_node_dtype():
    n = node()
    for fn in (split, qr_split):
        a, b = fn(n, "a")[:2]
        c, d = fn(n, ["a"])[:2]
        assert a.legs == c.legs and torch.equal(a.tensor, c.tensor) and b.legs == d.legs
    z = Node(torch.randn(3, 4, dtype=torch.complex128), ("a", "b"))
    left, middle, right, info = split(z, ["a"], absorb=None)
    assert middle.dtype == left.dtype == torch.complex128
    assert info.singular_values.dtype == torch.float64
    _, _, info = split(node(), ["a"], trunc=2)
    assert repr(info).endswith("cut=a | b c)")
