"""Canonical gauges on tree networks, and exact spectra and truncations of their bonds.

On a tree (an acyclic, connected network: MPS, Tucker, hierarchical Tucker, ...) QR sweeps from
the leaves towards a chosen node make every other node an isometry pointing at it (the gauge
centre). The tensor the network represents is unchanged. Cutting a bond then splits the
network into two isometries and the centre node, so the singular values of the centre across
that bond are exactly the singular values of the dense tensor across the bipartition of open
legs that the bond induces. Truncating them there is the Eckart-Young-Mirsky optimum, reached
without ever forming the dense tensor.

Every function here accepts a bond as its leg name or as the :class:`Bond` object that
``net.bonds`` hands out, refuses nodes on different devices (ValueError naming them) and nodes
holding NaN or inf (ValueError naming the node) before any work, and is differentiable: the QR
sweeps keep exact gradients for losses of the network's value (see
:func:`tensornet.core.linalg.qr`).

This module does not import :mod:`tensornet.core.network` (the network imports it): new networks
are built with ``type(net)(nodes)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .linalg import qr, svdvals, truncated_svd
from .node import Node
from .spectrum import Spectrum
from .split import SplitInfo, truncation_error
from .truncation import Truncation, as_truncation
from .validate import check_devices, check_finite, short_list

if TYPE_CHECKING:
    from .network import TensorNetwork

__all__ = [
    "bond_leg",
    "bond_sides",
    "bond_spectrum",
    "canonicalize",
    "check_inputs",
    "check_tree",
    "cut",
    "truncate_bond",
]


def bond_leg(net: TensorNetwork, bond: Any, what: str) -> str:
    """The leg name of ``bond`` (a leg name or a :class:`Bond` of ``net``), checked to be a bond.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> net = TensorNetwork([Node(torch.ones(2, 3), ("i", "j")), Node(torch.ones(3), ("j",))])
    >>> bond_leg(net, net.bonds[0], "demo"), bond_leg(net, "j", "demo")
    ('j', 'j')
    """
    leg = getattr(bond, "leg", bond)
    if not isinstance(leg, str):
        raise TypeError(
            f"{what}: a bond is given by its leg name (str) or a Bond from net.bonds, got "
            f"{type(bond).__name__} {bond!r}"
        )
    owners = net.owners(leg) if leg in net.legs else ()
    if len(owners) != 2:
        kind = "an open leg" if owners else "not a leg of this network"
        bonds = [b.leg for b in net.bonds]
        raise ValueError(f"{what}: {leg!r} is {kind}, not a bond; bonds are {short_list(bonds)}")
    nodes = getattr(bond, "nodes", None)
    if nodes is not None and tuple(nodes) != tuple(owners):
        raise ValueError(
            f"{what}: {bond!r} joins nodes {tuple(nodes)}, but in this network bond {leg!r} "
            f"joins {tuple(owners)}; was it taken from another network?"
        )
    return leg


def check_inputs(net: TensorNetwork, what: str) -> None:
    """One device for every node and no NaN/inf anywhere (one reduction per node tensor).

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> check_inputs(TensorNetwork([Node(torch.tensor([1.0, float("inf")]), ("i",), name="A")]),
    ...              "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: node 'A' holds NaN or inf values (1 of 2 entries); refusing to work on it
    """
    nodes = net.nodes
    check_devices(((str(node.name), node.tensor) for node in nodes), what)
    for node in nodes:
        check_finite(node.tensor, f"{what}: {node.describe()}")


def check_tree(net: TensorNetwork) -> None:
    """Raise ValueError unless ``net`` is a connected tree; name the bond that closes a loop.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a, b = Node(torch.ones(2, 2), ("a", "b")), Node(torch.ones(2, 2), ("b", "a"))
    >>> check_tree(TensorNetwork([a, b]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: bond 'b' between 'n0' and 'n1' closes a loop; ...
    """
    if len(net) == 0:
        raise ValueError("the network has no nodes")
    parent = {name: name for name in net.names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for bond in net.bonds:
        a, b = (find(n) for n in bond.nodes)
        if a == b:
            raise ValueError(
                f"bond {bond.leg!r} between {bond.nodes[0]!r} and {bond.nodes[1]!r} closes a loop; "
                "exact gauge methods need a tree-shaped network"
            )
        parent[a] = b
    roots = {find(n) for n in net.names}
    if len(roots) > 1:
        groups: dict[str, list[str]] = {}
        for n in net.names:
            groups.setdefault(find(n), []).append(n)
        raise ValueError(
            f"the network is not connected (components {list(groups.values())}); "
            "exact gauge methods need one tree"
        )


def _postorder(net: TensorNetwork, root: str) -> list[tuple[str, str, str]]:
    """(child, parent, bond leg) for every non-root node, leaves first.

    ``net`` is a checked tree: skipping the leg a node was reached by is enough to reach every
    other node exactly once.
    """
    order: list[tuple[str, str, str]] = []
    stack = [(root, None)]
    while stack:
        name, via = stack.pop()
        for leg in net.node(name).legs:
            if leg == via:
                continue
            for other in net.owners(leg):
                if other != name:
                    order.append((other, name, leg))
                    stack.append((other, leg))
    return order[::-1]


def _absorb(matrix: torch.Tensor, node: Node, leg: str) -> Node:
    """Apply ``matrix`` (new_dim x old_dim) to ``node`` along ``leg``, keeping leg order."""
    axis = node.axis(leg)
    dtype = torch.promote_types(matrix.dtype, node.dtype)  # never drop an imaginary part
    t = torch.tensordot(matrix.to(dtype), node.tensor.to(dtype), dims=([1], [axis]))
    t = t.movedim(0, axis)
    return Node._trusted(t, node.legs, node.name, node.tags)


def _factor_towards(node: Node, leg: str, factor: torch.Tensor) -> Node:
    """Reshape ``factor`` (rows of ``node`` without ``leg``) x k back into ``node``'s leg order."""
    others = [x for x in node.legs if x != leg]
    shape = [node.dim(x) for x in others] + [factor.shape[-1]]
    t = factor.reshape(shape).movedim(-1, node.axis(leg))
    return Node._trusted(t, node.legs, node.name, node.tags)


def canonicalize(net: TensorNetwork, towards: Any) -> TensorNetwork:
    """A new network, equal in value, whose every node but ``towards`` is an isometry.

    ``towards`` is a node name, or a bond (leg name or :class:`Bond`; the centre then goes to
    the bond's first node). Bond dimensions larger than what a node can carry shrink to their
    exact rank bound.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a = Node(torch.randn(4, 3, dtype=torch.float64), ("i", "j"), name="A")
    >>> b = Node(torch.randn(3, 5, dtype=torch.float64), ("j", "k"), name="B")
    >>> net = TensorNetwork([a, b])
    >>> q = canonicalize(net, "B").node("A").tensor
    >>> torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64))
    True
    """
    what = "canonicalize"
    check_tree(net)
    root = _centre_node(net, towards, what)
    check_inputs(net, what)
    return _canonicalize(net, root)


def _canonicalize(net: TensorNetwork, root: str) -> TensorNetwork:
    """Canonicalize towards the node ``root`` (arguments already checked)."""
    nodes = {node.name: node for node in net.nodes}
    for child, parent, leg in _postorder(net, root):
        c = nodes[child]
        rows = [x for x in c.legs if x != leg]
        q, r = qr(c.matricize(rows))
        nodes[child] = _factor_towards(c, leg, q)
        nodes[parent] = _absorb(r, nodes[parent], leg)
    return type(net)(nodes[name] for name in net.names)


def _centre_node(net: TensorNetwork, towards: Any, what: str) -> str:
    if isinstance(towards, str) and towards in net:
        return towards
    leg = getattr(towards, "leg", towards)
    if isinstance(leg, str) and leg in net.legs:
        return net.bond(bond_leg(net, towards, what)).nodes[0]
    if not isinstance(leg, str):
        raise TypeError(
            f"{what}: towards must be a node name, a bond's leg name or a Bond, got "
            f"{type(towards).__name__} {towards!r}"
        )
    raise ValueError(
        f"{what}: towards={towards!r} is neither a node nor a bond of the network; nodes are "
        f"{short_list(net.names)}"
    )


def bond_sides(net: TensorNetwork, leg: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Open legs on each side of ``leg`` (first node's side first), in :attr:`open_legs` order.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a, b = Node(torch.ones(2, 3), ("i", "j")), Node(torch.ones(3, 4), ("j", "k"))
    >>> bond_sides(TensorNetwork([a, b]), "j")
    (('i',), ('k',))
    """
    check_tree(net)
    leg = bond_leg(net, leg, "bond_sides")
    first, second = net.bond(leg).nodes
    side = {first}
    stack = [first]
    while stack:
        name = stack.pop()
        for other_leg in net.node(name).legs:
            if other_leg == leg:
                continue
            for other in net.owners(other_leg):
                if other not in side:
                    side.add(other)
                    stack.append(other)
    left = tuple(x for x in net.open_legs if net.owners(x)[0] in side)
    right = tuple(x for x in net.open_legs if net.owners(x)[0] not in side)
    return left, right


def bond_spectrum(net: TensorNetwork, leg: Any) -> Spectrum:
    """Exact spectrum of the bipartition of open legs that cutting bond ``leg`` induces.

    Only the bond dimension's worth of values exists; the rest of the dense spectrum is zero.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a = Node(torch.eye(2, dtype=torch.float64), ("i", "j"), name="A")
    >>> b = Node(torch.diag(torch.tensor([3.0, 4.0], dtype=torch.float64)), ("j", "k"), name="B")
    >>> net = TensorNetwork([a, b])
    >>> bond_spectrum(net, net.bonds[0]).values.tolist()
    [4.0, 3.0]
    """
    what = "spectrum"
    check_tree(net)
    leg = bond_leg(net, leg, what)
    check_inputs(net, what)
    return _bond_spectrum(net, leg)


def _bond_spectrum(net: TensorNetwork, leg: str) -> Spectrum:
    left, right = bond_sides(net, leg)
    centre = net.bond(leg).nodes[0]
    node = _canonicalize(net, centre).node(centre)
    s = svdvals(node.matricize([x for x in node.legs if x != leg]))
    return Spectrum(s, left, right, name=leg)


def truncate_bond(
    net: TensorNetwork, leg: Any, trunc: Truncation | int
) -> tuple[TensorNetwork, SplitInfo]:
    """Optimal truncation of bond ``leg`` (the dense Eckart-Young-Mirsky optimum).

    The same as truncating the dense tensor along the bipartition the bond induces. Returns the
    new network and a :class:`SplitInfo` whose ``error`` is relative to the whole network's
    norm. Differentiable, exact across a gap at the truncation (also at repeated values on
    either side of it).

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a = Node(torch.eye(3, dtype=torch.float64), ("i", "j"), name="A")
    >>> s = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    >>> net = TensorNetwork([a, Node(torch.diag(s), ("j", "k"), name="B")])
    >>> new, info = truncate_bond(net, "j", 2)
    >>> info.rank, round(info.error, 6)
    (2, 0.267261)
    """
    what = "truncate"
    policy = as_truncation(trunc)
    if policy is None:
        raise ValueError(f"{what}: trunc must be given (a Truncation or an int max_rank)")
    check_tree(net)
    leg = bond_leg(net, leg, what)
    check_inputs(net, what)
    left, right = bond_sides(net, leg)
    first, second = net.bond(leg).nodes
    canon = _canonicalize(net, first)
    node = canon.node(first)
    u, s, vh, full = truncated_svd(node.matricize([x for x in node.legs if x != leg]), policy)
    k = s.shape[0]
    rel, abs_err, norm = truncation_error(full, k)
    new_first = _factor_towards(node, leg, u)
    new_second = _absorb(s.to(vh.dtype)[:, None] * vh, canon.node(second), leg)
    replaced = {first: new_first, second: new_second}
    out = type(net)(replaced.get(n.name, n) for n in canon.nodes)
    info = SplitInfo(full.detach(), k, rel, abs_err, norm, left, right, leg)
    return out, info


def cut(net: TensorNetwork, left_legs: Sequence[str], max_elements: int = 2**26) -> Spectrum:
    """Spectrum of any bipartition of the open legs.

    Uses the gauge when the cut is induced by a bond of a tree; otherwise contracts the network
    (refusing, with ValueError, when the dense tensor or an intermediate would exceed
    ``max_elements``) and takes the singular values of the matricisation.

    Examples
    --------
    >>> import torch
    >>> from tensornet import Node, TensorNetwork
    >>> a = Node(torch.randn(2, 3, 4, dtype=torch.float64), ("i", "j", "b"), name="A")
    >>> b = Node(torch.randn(4, 5, dtype=torch.float64), ("b", "k"), name="B")
    >>> sp = cut(TensorNetwork([a, b]), ["i", "k"])  # not induced by the bond: contracts
    >>> sp.label, sp.chi_max
    ('ik|j', 3)
    """
    what = "cut"
    if isinstance(left_legs, str):
        left_legs = (left_legs,)
    try:
        left = tuple(left_legs)
    except TypeError:
        raise TypeError(
            f"{what}: left_legs must be a leg name or a sequence of leg names, got "
            f"{type(left_legs).__name__}"
        ) from None
    open_legs = net.open_legs
    for leg in left:
        if not isinstance(leg, str):
            raise TypeError(f"{what}: leg names are str, got {type(leg).__name__} {leg!r}")
        if leg not in open_legs:
            raise ValueError(f"cut: {leg!r} is not an open leg; open legs are {open_legs}")
    if not left or len(set(left)) == len(open_legs) or len(set(left)) != len(left):
        raise ValueError(
            f"cut: left legs {left} must be a non-empty proper subset of the open legs "
            f"{open_legs} without repeats"
        )
    right = tuple(x for x in open_legs if x not in left)
    if isinstance(max_elements, bool) or not isinstance(max_elements, (int, np.integer)):
        raise TypeError(f"{what}: max_elements must be an int, got {type(max_elements).__name__}")
    check_inputs(net, what)
    try:
        check_tree(net)
        is_tree = True
    except ValueError:
        is_tree = False
    if is_tree:
        for bond in net.bonds:
            a, b = bond_sides(net, bond.leg)
            if set(a) == set(left) or set(b) == set(left):
                return Spectrum(_bond_spectrum(net, bond.leg).values, left, right, name=bond.leg)
    size = int(np.prod([net.dim(x) for x in open_legs], dtype=np.float64))
    if size > max_elements:
        raise ValueError(
            f"cut {left} | {right} is not induced by a bond, and the dense tensor has {size:,} "
            f"elements, above max_elements={max_elements:,}"
        )
    dense = net.contract(max_intermediate=max_elements)
    s = svdvals(dense.matricize(left))
    return Spectrum(s, left, right)
