"""Canonical gauges on tree networks, and exact spectra and truncations of their bonds.

On a tree (an acyclic, connected network: MPS, Tucker, hierarchical Tucker, ...) QR sweeps from
the leaves towards a chosen node make every other node an isometry pointing at it (the gauge
centre). The tensor the network represents is unchanged. Cutting a bond then splits the
network into two isometries and the centre node, so the singular values of the centre across
that bond are exactly the singular values of the dense tensor across the bipartition of open
legs that the bond induces. Truncating them there is the Eckart-Young-Mirsky optimum, reached
without ever forming the dense tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .linalg import qr, svdvals, truncated_svd
from .node import Node
from .spectrum import Spectrum
from .split import SplitInfo, truncation_error
from .truncation import Truncation, as_truncation

if TYPE_CHECKING:
    from .network import TensorNetwork

__all__ = ["check_tree", "canonicalize", "bond_spectrum", "truncate_bond", "bond_sides", "cut"]


def check_tree(net: TensorNetwork) -> None:
    """Raise ValueError unless ``net`` is a connected tree; name the bond that closes a loop."""
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
    """(child, parent, bond leg) for every non-root node, leaves first."""
    order: list[tuple[str, str, str]] = []
    stack = [(root, None)]
    seen = {root}
    while stack:
        name, via = stack.pop()
        for leg in net.node(name).legs:
            if leg == via:
                continue
            for other in net.owners(leg):
                if other != name and other not in seen:
                    seen.add(other)
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


def canonicalize(net: TensorNetwork, towards: str) -> TensorNetwork:
    """A new network, equal in value, whose every node but ``towards`` is an isometry.

    ``towards`` is a node name, or a bond leg (the centre then goes to the bond's first node).
    Bond dimensions larger than what a node can carry shrink to their exact rank bound.
    """
    check_tree(net)
    root = _centre_node(net, towards)
    nodes = {node.name: node for node in net.nodes}
    for child, parent, leg in _postorder(net, root):
        c = nodes[child]
        rows = [x for x in c.legs if x != leg]
        q, r = qr(c.matricize(rows))
        nodes[child] = _factor_towards(c, leg, q)
        nodes[parent] = _absorb(r, nodes[parent], leg)
    from .network import TensorNetwork

    return TensorNetwork(nodes[name] for name in net.names)


def _centre_node(net: TensorNetwork, towards: str) -> str:
    if towards in net:
        return towards
    if isinstance(towards, str) and towards in net.legs:
        return net.bond(towards).nodes[0]
    raise ValueError(f"towards={towards!r} is neither a node nor a bond of the network")


def bond_sides(net: TensorNetwork, leg: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Open legs on each side of ``leg`` (first node's side first), in :attr:`open_legs` order."""
    check_tree(net)
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


def bond_spectrum(net: TensorNetwork, leg: str) -> Spectrum:
    """Exact spectrum of the bipartition of open legs that cutting bond ``leg`` induces.

    Only the bond dimension's worth of values exists; the rest of the dense spectrum is zero.
    """
    left, right = bond_sides(net, leg)
    centre = net.bond(leg).nodes[0]
    node = canonicalize(net, centre).node(centre)
    s = svdvals(node.matricize([x for x in node.legs if x != leg]))
    return Spectrum(s, left, right, name=leg)


def truncate_bond(
    net: TensorNetwork, leg: str, trunc: Truncation | int
) -> tuple[TensorNetwork, SplitInfo]:
    """Optimal truncation of bond ``leg``: the same as truncating the dense tensor along the
    bipartition the bond induces. Returns the new network and a :class:`SplitInfo` whose
    ``error`` is relative to the whole network's norm."""
    policy = as_truncation(trunc)
    if policy is None:
        raise ValueError("trunc must be given (a Truncation or an int max_rank)")
    left, right = bond_sides(net, leg)
    first, second = net.bond(leg).nodes
    canon = canonicalize(net, first)
    node = canon.node(first)
    u, s, vh, full = truncated_svd(node.matricize([x for x in node.legs if x != leg]), policy)
    k = s.shape[0]
    rel, abs_err, norm = truncation_error(full, k)
    new_first = _factor_towards(node, leg, u)
    new_second = _absorb(s.to(vh.dtype)[:, None] * vh, canon.node(second), leg)
    from .network import TensorNetwork

    replaced = {first: new_first, second: new_second}
    out = TensorNetwork(replaced.get(n.name, n) for n in canon.nodes)
    info = SplitInfo(full.detach(), k, rel, abs_err, norm, left, right, leg)
    return out, info


def cut(net: TensorNetwork, left_legs: Sequence[str], max_elements: int = 2**26) -> Spectrum:
    """Spectrum of any bipartition of the open legs.

    Uses the gauge when the cut is induced by a bond of a tree; otherwise contracts the network
    (refusing, with ValueError, when the dense tensor or an intermediate would exceed
    ``max_elements``) and takes the singular values of the matricisation.
    """
    if isinstance(left_legs, str):
        left_legs = (left_legs,)
    left = tuple(left_legs)
    open_legs = net.open_legs
    for leg in left:
        if leg not in open_legs:
            raise ValueError(f"cut: {leg!r} is not an open leg; open legs are {open_legs}")
    if not left or len(set(left)) == len(open_legs) or len(set(left)) != len(left):
        raise ValueError(
            f"cut: left legs {left} must be a non-empty proper subset of the open legs "
            f"{open_legs} without repeats"
        )
    right = tuple(x for x in open_legs if x not in left)
    try:
        check_tree(net)
        is_tree = True
    except ValueError:
        is_tree = False
    if is_tree:
        for bond in net.bonds:
            a, b = bond_sides(net, bond.leg)
            if set(a) == set(left) or set(b) == set(left):
                return Spectrum(bond_spectrum(net, bond.leg).values, left, right, name=bond.leg)
    size = int(np.prod([net.dim(x) for x in open_legs], dtype=np.float64))
    if size > max_elements:
        raise ValueError(
            f"cut {left} | {right} is not induced by a bond, and the dense tensor has {size:,} "
            f"elements, above max_elements={max_elements:,}"
        )
    dense = net.contract(max_intermediate=max_elements)
    s = svdvals(dense.matricize(left))
    return Spectrum(s, left, right)
