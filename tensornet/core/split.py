"""Splitting one node into two along a bipartition of its legs (SVD with truncation, or QR).

Both splits are differentiable; see :mod:`tensornet.core.linalg` for what their backward passes
guarantee at repeated and zero singular values (``absorb="both"``, the default, is exact for
every loss of the contracted product, rank-deficient nodes included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .linalg import factorize, qr
from .node import Node
from .truncation import Truncation, as_truncation
from .validate import check_finite

__all__ = ["SplitInfo", "fresh_names", "split", "qr_split", "truncation_error"]

Absorb = Literal["left", "right", "both"] | None
_ABSORB = ("left", "right", "both", None)


@dataclass(frozen=True)
class SplitInfo:
    """What a truncating split did.

    Attributes
    ----------
    singular_values : torch.Tensor
        The full spectrum across the cut, descending (detached from autograd).
    rank : int
        How many values were kept (the new bond's dimension).
    error : float
        Relative Frobenius error ``||T - T_k|| / ||T||`` (0 for a zero tensor).
    abs_error : float
        Absolute Frobenius error ``||T - T_k||``.
    norm : float
        ``||T||``.
    left_legs, right_legs : tuple of str
        The two sides of the cut.
    bond : str
        Name of the new bond (the left one when the middle node was kept separate).
    """

    singular_values: torch.Tensor
    rank: int
    error: float
    abs_error: float
    norm: float
    left_legs: tuple[str, ...]
    right_legs: tuple[str, ...]
    bond: str

    @property
    def discarded_weight(self) -> float:
        """Fraction of ``sum s^2`` that was thrown away (``error**2``)."""
        return self.error**2

    def __repr__(self) -> str:
        """One line: the cut, the kept rank out of the full one, the error (not the tensor)."""
        full = int(self.singular_values.shape[-1]) if self.singular_values.ndim else 0
        return (
            f"SplitInfo(bond={self.bond!r}, rank={self.rank} of {full}, "
            f"error={self.error:.3g}, norm={self.norm:.4g}, "
            f"cut={' '.join(self.left_legs)} | {' '.join(self.right_legs)})"
        )


def truncation_error(s: torch.Tensor, rank: int) -> tuple[float, float, float]:
    """``(relative, absolute, norm)`` Frobenius error of keeping the first ``rank`` values of ``s``.

    Eckart-Young-Mirsky: this is the error of the best rank-``rank`` approximation.
    """
    s2 = s.detach().double().square()
    total = float(s2.sum())
    discarded = float(s2[rank:].sum())
    norm = math.sqrt(total)
    abs_err = math.sqrt(discarded)
    return (abs_err / norm if norm > 0 else 0.0), abs_err, norm


def _check_node(node: Node, what: str) -> None:
    if not isinstance(node, Node):
        raise TypeError(f"{what}: node must be a Node, got {type(node).__name__}")


def _check_cut(
    node: Node, left_legs: Sequence[str], what: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    _check_node(node, what)
    if isinstance(left_legs, str):
        left_legs = (left_legs,)
    try:
        left = tuple(left_legs)
    except TypeError:
        raise TypeError(
            f"{what}: left_legs must be a leg name or a sequence of leg names of "
            f"{node.describe()} {node.legs}, got {type(left_legs).__name__}"
        ) from None
    for leg in left:
        if not isinstance(leg, str):
            raise TypeError(
                f"{what}: left_legs must hold leg names (str), got {type(leg).__name__} {leg!r}"
            )
        if leg not in node.legs:
            raise ValueError(
                f"{what}: {node.describe()} has no leg {leg!r}; its legs are {node.legs}"
            )
    if len(set(left)) != len(left):
        raise ValueError(f"{what}: left_legs repeats a leg: {left}")
    if not left:
        raise ValueError(f"{what}: left_legs is empty; name at least one leg of {node.legs}")
    right = tuple(leg for leg in node.legs if leg not in left)
    if not right:
        raise ValueError(
            f"{what}: left_legs {left} take every leg of {node.describe()}; leave at least one "
            "on the right"
        )
    return left, right


def fresh_names(bases: Sequence[str], taken: Sequence[str]) -> tuple[str, ...]:
    """``bases`` made unique against ``taken`` and each other (``"b"``, ``"b2"``, ``"b3"``, ...).

    >>> fresh_names(["r1", "r1", "x"], ["r1"])
    ('r12', 'r13', 'x')
    """
    used = set(taken)
    out = []
    for base in bases:
        name, i = base, 2
        while name in used:
            name, i = f"{base}{i}", i + 1
        used.add(name)
        out.append(name)
    return tuple(out)


def _fresh(name: str, taken: Sequence[str]) -> str:
    return fresh_names([name], taken)[0]


def _check_finite_node(node: Node, what: str) -> None:
    check_finite(node.tensor, f"{what}: {node.describe()}")


def _check_bond_name(bond: str, node: Node, what: str) -> None:
    if not isinstance(bond, str) or not bond:
        raise TypeError(f"{what}: bond must be a non-empty str, got {bond!r}")
    if bond in node.legs:
        raise ValueError(f"{what}: bond name {bond!r} is already a leg of {node.describe()}")


def _child_names(node: Node, names: Sequence[str | None] | None, count: int) -> tuple:
    if names is not None:
        if isinstance(names, str):
            raise TypeError(f"names must be a sequence of {count} node names, got {names!r}")
        try:
            names = tuple(names)
        except TypeError:
            raise TypeError(
                f"names must be a sequence of {count} node names, got {type(names).__name__}"
            ) from None
        if len(names) != count:
            raise ValueError(f"names must give {count} node names, got {names}")
        for name in names:
            if name is not None and not isinstance(name, str):
                raise TypeError(f"names must be str or None, got {type(name).__name__} {name!r}")
        return names
    if node.name is None:
        return (None,) * count
    suffixes = ("L", "R") if count == 2 else ("L", "S", "R")
    return tuple(f"{node.name}_{x}" for x in suffixes)


def _bond_names(
    node: Node, bond: str | tuple[str, str] | None, absorb: Absorb, what: str
) -> tuple[str, str]:
    """The left and right bond names of a split (equal unless ``absorb`` is None), checked."""
    if absorb is None:
        if bond is None:
            bond_l = _fresh("bond", node.legs)
            bond_r = _fresh(bond_l + "'", node.legs)
        elif isinstance(bond, str):
            bond_l, bond_r = bond, bond + "'"
        elif isinstance(bond, tuple) and len(bond) == 2:
            bond_l, bond_r = bond
        else:
            raise TypeError(f"{what}: bond must be a str or a pair of str, got {bond!r}")
        _check_bond_name(bond_l, node, what)
        _check_bond_name(bond_r, node, what)
        if bond_l == bond_r:
            raise ValueError(f"{what}: the two bond names must differ, got {bond!r}")
    else:
        if bond is not None and not isinstance(bond, str):
            raise TypeError(f"{what}: bond must be a str when absorb={absorb!r}, got {bond!r}")
        bond_l = bond_r = _fresh("bond", node.legs) if bond is None else bond
        _check_bond_name(bond_l, node, what)
    return bond_l, bond_r


def split(
    node: Node,
    left_legs: Sequence[str],
    bond: str | tuple[str, str] | None = None,
    trunc: Truncation | int | None = None,
    absorb: Absorb = "both",
    names: Sequence[str | None] | None = None,
) -> tuple:
    """Split ``node`` by an SVD across ``left_legs | other legs``, optionally truncating.

    Parameters
    ----------
    node : Node
        The node to split.
    left_legs : sequence of str
        Legs that go to the left node (in this order); the rest go right, in node order.
    bond : str or (str, str), optional
        Name of the new bond (default ``"bond"``, made unique). With ``absorb=None`` a pair names
        the left and right bonds of the middle node (default ``(bond, bond + "'")``).
    trunc : Truncation or int, optional
        How many singular values to keep (an int means ``max_rank``); ``None`` keeps all.
    absorb : {"both", "left", "right", None}
        Where the singular values go: split as ``sqrt(s)`` to both sides, into one side (the other
        side is then an isometry), or into a separate diagonal middle node (``None``).
    names : sequence of str, optional
        Names of the new nodes (default: ``"<name>_L"``, ``"<name>_R"`` and ``"<name>_S"``).

    Returns
    -------
    (left, right, info) or, with ``absorb=None``, (left, middle, right, info)
        ``info`` is a :class:`SplitInfo` with the spectrum, the kept rank and the error.

    Examples
    --------
    >>> import torch
    >>> t = Node(torch.randn(4, 5, 6, dtype=torch.float64), ("a", "b", "c"), name="T")
    >>> left, right, info = split(t, ["a"], trunc=Truncation(max_rank=2))
    >>> left.legs, right.legs, info.rank
    (('a', 'bond'), ('bond', 'b', 'c'), 2)
    """
    what = "split"
    left, right = _check_cut(node, left_legs, what)
    if absorb not in _ABSORB:
        raise ValueError(f"{what}: absorb must be one of {_ABSORB}, got {absorb!r}")
    trunc = as_truncation(trunc)
    bond_l, bond_r = _bond_names(node, bond, absorb, what)
    node_names = _child_names(node, names, 3 if absorb is None else 2)
    _check_finite_node(node, what)

    left_shape = [node.dim(leg) for leg in left]
    right_shape = [node.dim(leg) for leg in right]
    u, s, vh, s_full = factorize(node.matricize(left), trunc, absorb)
    k = s.shape[0]
    rel, abs_err, norm = truncation_error(s_full, k)
    s_c = s.to(u.dtype)

    tags = node.tags
    left_node = Node._trusted(u.reshape(*left_shape, k), left + (bond_l,), node_names[0], tags)
    right_node = Node._trusted(vh.reshape(k, *right_shape), (bond_r,) + right, node_names[-1], tags)
    info = SplitInfo(
        singular_values=s_full.detach(),
        rank=k,
        error=rel,
        abs_error=abs_err,
        norm=norm,
        left_legs=left,
        right_legs=right,
        bond=bond_l,
    )
    if absorb is None:
        middle = Node._trusted(torch.diag(s_c), (bond_l, bond_r), node_names[1], tags)
        return left_node, middle, right_node, info
    return left_node, right_node, info


def qr_split(
    node: Node,
    left_legs: Sequence[str],
    bond: str | None = None,
    names: Sequence[str | None] | None = None,
) -> tuple[Node, Node]:
    """Split ``node`` exactly as ``Q R`` across ``left_legs``; ``Q`` (left) is an isometry.

    The new bond has dimension ``min(prod(left dims), prod(right dims))``. The backward is exact
    for losses of the product ``Q R`` also when the node is rank-deficient, except, for a tall
    ``Q``, the part outside ``Q``'s columns and in the node's null space (not recoverable from
    the factors; set to zero). See :func:`tensornet.core.linalg.qr`.

    Examples
    --------
    >>> import torch
    >>> t = Node(torch.randn(4, 5, 6), ("a", "b", "c"))
    >>> q, r = qr_split(t, ["a", "b"], bond="k")
    >>> q.shape, r.shape
    ((4, 5, 6), (6, 6))
    """
    what = "qr_split"
    left, right = _check_cut(node, left_legs, what)
    bond = _fresh("bond", node.legs) if bond is None else bond
    _check_bond_name(bond, node, what)
    node_names = _child_names(node, names, 2)
    _check_finite_node(node, what)
    q, r = qr(node.matricize(left))
    k = q.shape[-1]
    left_shape = [node.dim(leg) for leg in left]
    right_shape = [node.dim(leg) for leg in right]
    return (
        Node._trusted(q.reshape(*left_shape, k), left + (bond,), node_names[0], node.tags),
        Node._trusted(r.reshape(k, *right_shape), (bond,) + right, node_names[1], node.tags),
    )
