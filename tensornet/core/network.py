"""`TensorNetwork`: a set of named nodes joined by shared leg names.

A leg name carried by exactly two nodes is a :class:`Bond` (summed over on contraction); a leg
carried by one node is an open leg (kept). A leg on three or more nodes, or a bond whose two ends
disagree on its dimension, is rejected when the node is added.

The network is a mutable container (``add``, ``remove``), while every transformation
(``contract_nodes``, ``split``, ``qr_split``, ``to``, ...) returns a new network. Nodes are
immutable and tensors are shared, so new networks are cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import gauge, netcontract
from . import split as _split
from .contract import Optimize, Plan, prepared
from .node import Node
from .spectrum import Spectrum
from .truncation import Truncation
from .validate import short_list

__all__ = ["Bond", "NodeNotFoundError", "TensorNetwork", "contract"]


class NodeNotFoundError(ValueError, KeyError):
    """No node of that name: a ``ValueError`` (and, for older code, a ``KeyError``)."""

    __str__ = ValueError.__str__  # not KeyError's quoted message


@dataclass(frozen=True)
class Bond:
    """A leg shared by two nodes.

    Attributes
    ----------
    leg : str
        The shared leg name.
    nodes : (str, str)
        Names of the two nodes, in network order.
    dim : int
        Its dimension.
    """

    leg: str
    nodes: tuple[str, str]
    dim: int


class TensorNetwork:
    """A tensor network: nodes whose shared leg names are bonds.

    Parameters
    ----------
    nodes : iterable of Node
        Nodes without a name are named ``"n0"``, ``"n1"``, ... (skipping names in use).

    Examples
    --------
    >>> import torch
    >>> a = Node(torch.randn(2, 3), ("i", "j"), name="A")
    >>> b = Node(torch.randn(3, 4), ("j", "k"), name="B")
    >>> net = TensorNetwork([a, b])
    >>> [bond.leg for bond in net.bonds], net.open_legs
    (['j'], ('i', 'k'))
    >>> net.contract(output=("k", "i")).shape
    (4, 2)
    """

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self._nodes: dict[str, Node] = {}
        self._owners: dict[str, list[str]] = {}
        self._counter = 0
        self._cached: tuple | None = None
        self._memo: dict = {}  # contract() arguments -> compiled program (see contract)
        if isinstance(nodes, Node):
            nodes = (nodes,)
        if nodes is None or isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
            raise TypeError(
                f"TensorNetwork takes an iterable of Node objects, got {type(nodes).__name__}"
            )
        for node in nodes:
            self.add(node)

    # -- container -------------------------------------------------------------------------
    def _next_name(self) -> str:
        while f"n{self._counter}" in self._nodes:
            self._counter += 1
        name = f"n{self._counter}"
        self._counter += 1
        return name

    def add(self, node: Node) -> Node:
        """Add ``node`` (in place) and return it as stored (named).

        Raises
        ------
        ValueError
            If the name is taken, a leg would join a third node, or a bond's dimensions differ.
            The network is left unchanged.
        """
        if not isinstance(node, Node):
            raise TypeError(f"TensorNetwork holds Node objects, got {type(node).__name__}")
        if node.name is None:
            node = node.with_name(self._next_name())
        elif node.name in self._nodes:
            raise ValueError(f"a node named {node.name!r} is already in the network")
        for leg, dim in zip(node.legs, node.shape):
            owners = self._owners.get(leg, ())
            if len(owners) >= 2:
                raise ValueError(
                    f"leg {leg!r} would join three nodes ({owners[0]!r}, {owners[1]!r}, "
                    f"{node.name!r}); a leg joins at most two nodes"
                )
            if owners:
                other = self._nodes[owners[0]]
                if other.dim(leg) != dim:
                    raise ValueError(
                        f"bond {leg!r} has dimension {other.dim(leg)} on node {owners[0]!r} "
                        f"but {dim} on node {node.name!r}"
                    )
        self._nodes[node.name] = node
        for leg in node.legs:
            self._owners.setdefault(leg, []).append(node.name)
        self._cached = None
        self._memo = {}
        return node

    def remove(self, node: Node | str) -> Node:
        """Remove a node (by name or the node itself) in place and return it."""
        name = node.name if isinstance(node, Node) else node
        stored = self.node(name)
        del self._nodes[name]
        for leg in stored.legs:
            owners = self._owners[leg]
            owners.remove(name)
            if not owners:
                del self._owners[leg]
        self._cached = None
        self._memo = {}
        return stored

    def node(self, name: str) -> Node:
        """The node called ``name``.

        Raises
        ------
        NodeNotFoundError
            A ``ValueError`` (also a ``KeyError``) naming the missing node.
        """
        if not isinstance(name, str):
            raise TypeError(f"node names are str, got {type(name).__name__} {name!r}")
        try:
            return self._nodes[name]
        except KeyError:
            raise NodeNotFoundError(
                f"no node named {name!r}; nodes are {short_list(self._nodes)}"
            ) from None

    def copy(self) -> TensorNetwork:
        """A new network with the same nodes (tensors shared; nodes are immutable)."""
        new = TensorNetwork.__new__(TensorNetwork)
        new._nodes = dict(self._nodes)
        new._owners = {leg: list(owners) for leg, owners in self._owners.items()}
        new._counter = self._counter
        new._cached = self._cached
        new._memo = self._memo  # same structure; replaced (never cleared) on change
        return new

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    # -- structure -------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes, in insertion order."""
        return tuple(self._nodes.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The node names, in insertion order."""
        return tuple(self._nodes)

    @property
    def bonds(self) -> tuple[Bond, ...]:
        """Every bond, in order of first appearance."""
        return tuple(
            Bond(leg, (owners[0], owners[1]), self._nodes[owners[0]].dim(leg))
            for leg, owners in self._owners.items()
            if len(owners) == 2
        )

    def bond(self, leg: str | Bond) -> Bond:
        """The bond called ``leg`` (a leg name, or a :class:`Bond` from :attr:`bonds`)."""
        leg = gauge.bond_leg(self, leg, "bond")
        owners = self._owners[leg]
        return Bond(leg, (owners[0], owners[1]), self._nodes[owners[0]].dim(leg))

    def _bond_legs(self) -> list[str]:
        return [leg for leg, owners in self._owners.items() if len(owners) == 2]

    @property
    def open_legs(self) -> tuple[str, ...]:
        """Legs carried by a single node, in node order then leg order."""
        return self._structure()[2]

    @property
    def legs(self) -> tuple[str, ...]:
        """Every leg name (bonds and open legs)."""
        return tuple(self._owners)

    def dim(self, leg: str) -> int:
        """Dimension of any leg of the network."""
        owners = self._owners.get(leg)
        if not owners:
            raise ValueError(f"{leg!r} is not a leg of this network; legs are {list(self._owners)}")
        return self._nodes[owners[0]].dim(leg)

    def owners(self, leg: str) -> tuple[str, ...]:
        """Names of the nodes that carry ``leg`` (one or two)."""
        self.dim(leg)
        return tuple(self._owners[leg])

    def neighbors(self, name: str) -> tuple[str, ...]:
        """Names of the nodes bonded to ``name``."""
        node = self.node(name)
        out: list[str] = []
        for leg in node.legs:
            for other in self._owners[leg]:
                if other != name and other not in out:
                    out.append(other)
        return tuple(out)

    def tagged(self, tag: str) -> tuple[Node, ...]:
        """Nodes carrying ``tag``."""
        return tuple(node for node in self._nodes.values() if tag in node.tags)

    @property
    def num_params(self) -> int:
        """Total number of tensor elements."""
        return sum(node.size for node in self._nodes.values())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype contraction produces (common promotion of all node dtypes)."""
        return self._common_dtype_device()[0]

    @property
    def device(self) -> torch.device:
        """The one device of all nodes (ValueError when they differ)."""
        return self._common_dtype_device()[1]

    def _structure(self) -> tuple:
        """Cached (nodes, inputs, open legs, shapes, tensors).

        Nodes are immutable, so this is stable.
        """
        if self._cached is None:
            nodes = tuple(self._nodes.values())
            inputs = tuple(node.legs for node in nodes)
            shapes = tuple(node.shape for node in nodes)
            open_legs = tuple(leg for legs in inputs for leg in legs if len(self._owners[leg]) == 1)
            tensors = tuple(node.tensor for node in nodes)
            self._cached = (nodes, inputs, open_legs, shapes, tensors)
        return self._cached

    def _common_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        nodes = self._structure()[0]
        if not nodes:
            raise ValueError("the network has no nodes")
        devices = {node.tensor.device for node in nodes}
        if len(devices) > 1:
            where = {str(node.device): node.name for node in nodes}
            raise ValueError(
                f"nodes live on different devices {where}; move them with .to(device) first"
            )
        dtypes = {node.tensor.dtype for node in nodes}
        dtype = functools.reduce(torch.promote_types, dtypes)
        return dtype, devices.pop()

    def _check_output(self, output: Sequence[str] | None) -> tuple[str, ...]:
        return netcontract.output_legs(self._structure()[2], self._owners, output)

    # -- contraction -----------------------------------------------------------------------
    def plan(
        self,
        output: Sequence[str] | None = None,
        optimize: Optimize = None,
        max_intermediate: int | None = None,
        slicing: bool | None = None,
    ) -> Plan:
        """The contraction plan (path, FLOPs, largest intermediate, search time), not run.

        The arguments are those of :meth:`contract`.

        The plan is cached, so a following :meth:`contract` with the same arguments reuses it.
        An oversized plan is returned rather than refused (sliced when slicing is on), so its
        cost can be inspected.
        """
        nodes, inputs, _, shapes, _ = self._structure()
        if not nodes:
            raise ValueError("cannot plan the contraction of an empty network")
        out = self._check_output(output)
        dtype, device = self._common_dtype_device()
        plan, _ = prepared(
            inputs, shapes, out, optimize, dtype, device, max_intermediate, slicing, refuse=False
        )
        return plan

    def contract(
        self,
        output: Sequence[str] | None = None,
        optimize: Optimize = None,
        max_intermediate: int | None = None,
        slicing: bool | None = None,
    ) -> Node:
        """Contract every node into one.

        Parameters
        ----------
        output : sequence of str, optional
            Order of the open legs in the result (default: :attr:`open_legs`). It must list every
            open leg and nothing else.
        optimize : None, str, path or PathOptimizer
            None (default): the adaptive policy of :class:`~tensornet.DefaultOptimizer`, which
            searches longer for contractions that cost more. Anything else overrides it: an
            opt_einsum optimizer name (``"auto"``, ``"greedy"``, ``"optimal"``, ``"dp"``, ...),
            an explicit path, or a ``PathOptimizer`` instance such as a cotengra optimizer.
        max_intermediate : int, optional
            Limit on the largest intermediate (elements) for this call; default: the global
            limit of :func:`~tensornet.set_max_intermediate` (``2**28``).
        slicing : bool, optional
            Above the limit, contract in slices that fit (True) or raise ValueError before any
            work (False). Default: the global setting (False).

        Returns
        -------
        Node
            Unnamed node with legs ``output``; mixed dtypes are promoted.

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.ones(2, 8), ("i", "j"))
        >>> b = Node(torch.ones(8, 8), ("j", "k"))
        >>> c = Node(torch.ones(8, 2), ("k", "l"))
        >>> net = TensorNetwork([a, b, c])
        >>> net.plan().largest_intermediate
        16
        >>> net.plan(max_intermediate=4, slicing=True).sliced
        ('k',)
        >>> net.contract(max_intermediate=4, slicing=True).tensor
        tensor([[64., 64.],
                [64., 64.]])
        """
        # Repeated calls: everything that depends only on the structure and the arguments is
        # memoized on the network, so a hit checks dtypes/devices and runs the program.
        key = netcontract.memo_key(output, optimize, max_intermediate, slicing)
        tensors = self._structure()[4]
        hit = netcontract.run_memoized(self._memo, key, tensors)
        if hit is not None:
            return Node._trusted(hit[0], hit[1], None, frozenset())
        nodes, inputs, _, shapes, _ = self._structure()
        if not nodes:
            raise ValueError("cannot contract an empty network")
        out = self._check_output(output)
        dtype, device = self._common_dtype_device()
        _, program = prepared(
            inputs, shapes, out, optimize, dtype, device, max_intermediate, slicing
        )
        needed = netcontract.remember(self._memo, key, program, out, dtype, device, tensors)
        result = program(*netcontract.cast(tensors, dtype, needed))
        return Node._trusted(result, out, None, frozenset())

    def contract_nodes(
        self, names: Sequence[str], name: str | None = None, optimize: Optimize = None
    ) -> TensorNetwork:
        """A new network in which the nodes ``names`` are contracted into one.

        The merged node takes the place of the first of ``names`` and is called ``name``
        (default: the first of ``names``). Its legs are the legs of the group that do not join two
        members of the group, in order of appearance.
        """
        if isinstance(names, str):
            names = (names,)
        names = tuple(names)
        if not names:
            raise ValueError("contract_nodes needs at least one node name")
        if len(set(names)) != len(names):
            raise ValueError(f"contract_nodes: names repeat: {names}")
        group = [self.node(n) for n in names]
        member = set(names)
        outer: list[str] = []
        for node in group:
            for leg in node.legs:
                owners = self._owners[leg]
                if len(owners) == 1 or not all(owner in member for owner in owners):
                    outer.append(leg)
        new_name = names[0] if name is None else name
        if new_name in self._nodes and new_name not in member:
            raise ValueError(f"a node named {new_name!r} is already in the network")
        merged = TensorNetwork(group).contract(output=tuple(outer), optimize=optimize)
        merged = merged.with_name(new_name)
        return self._replaced(names, [merged], at=names[0])

    def _replaced(self, old: Sequence[str], new: Sequence[Node], at: str) -> TensorNetwork:
        """A new network with nodes ``old`` replaced by ``new``, inserted where ``at`` was."""
        drop = set(old)
        result: list[Node] = []
        for key, node in self._nodes.items():
            if key == at:
                result.extend(new)
            elif key not in drop:
                result.append(node)
        return TensorNetwork(result)

    # -- splitting -------------------------------------------------------------------------
    def _fresh_leg(self, base: str) -> str:
        return _split.fresh_names([base], tuple(self._owners))[0]

    def split(
        self,
        name: str,
        left_legs: Sequence[str],
        bond: str | tuple[str, str] | None = None,
        trunc: Truncation | int | None = None,
        absorb: _split.Absorb = "both",
        names: Sequence[str] | None = None,
    ) -> tuple[TensorNetwork, _split.SplitInfo]:
        """Split node ``name`` by a (truncated) SVD; return the new network and the split's info.

        See :func:`tensornet.split` for the arguments. The new nodes replace ``name`` in place
        in the node order and are called ``names`` (default ``"<name>_L"``, ``"<name>_R"``).

        Examples
        --------
        >>> import torch
        >>> t = Node(torch.randn(4, 5, 6, dtype=torch.float64), ("a", "b", "c"), name="T")
        >>> net, info = TensorNetwork([t]).split("T", ["a"], trunc=3)
        >>> net.names, info.rank, [b.leg for b in net.bonds]
        (('T_L', 'T_R'), 3, ['T_bond'])
        """
        node = self.node(name)
        if bond is None:
            bond = self._fresh_leg(f"{name}_bond")
        names_given = (bond,) if isinstance(bond, str) else tuple(bond)
        for leg in names_given:
            if leg in self._owners:
                raise ValueError(f"split: bond name {leg!r} is already a leg of the network")
        if absorb is None and isinstance(bond, str):
            bond = (bond, self._fresh_leg(bond + "'"))
        *parts, info = _split.split(
            node, left_legs, bond=bond, trunc=trunc, absorb=absorb, names=names
        )
        self._check_new_names(name, parts)
        return self._replaced([name], parts, at=name), info

    def qr_split(
        self,
        name: str,
        left_legs: Sequence[str],
        bond: str | None = None,
        names: Sequence[str] | None = None,
    ) -> TensorNetwork:
        """Split node ``name`` exactly as ``Q R`` (``Q`` on the left is an isometry).

        Examples
        --------
        >>> import torch
        >>> t = Node(torch.randn(4, 5, 6), ("a", "b", "c"), name="T")
        >>> TensorNetwork([t]).qr_split("T", ["a", "b"]).node("T_R").shape
        (6, 6)
        """
        node = self.node(name)
        if bond is None:
            bond = self._fresh_leg(f"{name}_bond")
        elif bond in self._owners:
            raise ValueError(f"qr_split: bond name {bond!r} is already a leg of the network")
        parts = _split.qr_split(node, left_legs, bond=bond, names=names)
        self._check_new_names(name, parts)
        return self._replaced([name], parts, at=name)

    def _check_new_names(self, replaced: str, parts: Sequence[Node]) -> None:
        for part in parts:
            if part.name is not None and part.name != replaced and part.name in self._nodes:
                raise ValueError(f"a node named {part.name!r} is already in the network")

    # -- gauges, spectra and truncation on trees -------------------------------------------
    def canonicalize(self, towards: str | Bond) -> TensorNetwork:
        """A new network of equal value whose other nodes are isometries pointing at ``towards``.

        QR sweeps from the leaves. Trees only; a loop raises ValueError naming the bond that
        closes it. ``towards`` may also be a bond, by leg name or :class:`Bond` (centre at its
        first node). Nodes on different devices, or holding NaN/inf, are refused up front.

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.randn(5, 3, dtype=torch.float64), ("i", "j"), name="A")
        >>> b = Node(torch.randn(3, 4, dtype=torch.float64), ("j", "k"), name="B")
        >>> net = TensorNetwork([a, b])
        >>> q = net.canonicalize(net.bonds[0]).node("B").tensor  # centre: the bond's first node A
        >>> torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64))
        True
        """
        return gauge.canonicalize(self, towards)

    def spectrum(self, bond: str | Bond) -> Spectrum:
        """Exact singular values of the dense tensor across the cut that ``bond`` induces.

        Computed through the gauge without contracting the network (trees only); ``bond`` is a
        leg name or a :class:`Bond`.

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.randn(4, 3, dtype=torch.float64), ("i", "j"), name="A")
        >>> b = Node(torch.randn(3, 5, dtype=torch.float64), ("j", "k"), name="B")
        >>> net = TensorNetwork([a, b])
        >>> dense = torch.linalg.svdvals(net.contract().tensor)
        >>> torch.allclose(net.spectrum(net.bonds[0]).values, dense[:3])  # bond dimension 3
        True
        """
        return gauge.bond_spectrum(self, bond)

    def truncate(
        self, bond: str | Bond, trunc: Truncation | int
    ) -> tuple[TensorNetwork, _split.SplitInfo]:
        """Optimally truncate ``bond`` (equal to truncating the dense tensor along the cut).

        Returns the new network and a ``SplitInfo`` with the error (trees only).

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.randn(4, 3, dtype=torch.float64), ("i", "j"), name="A")
        >>> b = Node(torch.randn(3, 5, dtype=torch.float64), ("j", "k"), name="B")
        >>> net = TensorNetwork([a, b])
        >>> new, info = net.truncate("j", 1)
        >>> new.bond("j").dim, abs(info.error - net.spectrum("j").relative_error(1)) < 1e-12
        (1, True)
        """
        return gauge.truncate_bond(self, bond, trunc)

    def cut(self, left_legs: Sequence[str], max_elements: int = 2**26) -> Spectrum:
        """Spectrum of any bipartition of the open legs.

        Through the gauge when a bond induces it, otherwise by contracting (ValueError above
        ``max_elements``).

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.randn(2, 3, 4, dtype=torch.float64), ("i", "j", "b"), name="A")
        >>> b = Node(torch.randn(4, 5, dtype=torch.float64), ("b", "k"), name="B")
        >>> net = TensorNetwork([a, b])
        >>> net.cut(["k"]).name, net.cut(["i", "k"]).chi_max  # the first is the bond's cut
        ('b', 3)
        """
        return gauge.cut(self, left_legs, max_elements=max_elements)

    @property
    def is_tree(self) -> bool:
        """True for a connected network without loops."""
        try:
            gauge.check_tree(self)
        except ValueError:
            return False
        return True

    # -- conversions -----------------------------------------------------------------------
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TensorNetwork:
        """A new network with every tensor moved/cast."""
        return TensorNetwork(node.to(device=device, dtype=dtype) for node in self._nodes.values())

    def conj(self) -> TensorNetwork:
        """Complex-conjugate every node (legs unchanged)."""
        return TensorNetwork(node.conj() for node in self._nodes.values())

    def rename(self, mapping: dict[str, str]) -> TensorNetwork:
        """A new network with legs renamed everywhere they appear."""
        for leg in mapping:
            if leg not in self._owners:
                raise ValueError(f"cannot rename {leg!r}: not a leg of this network")
        return TensorNetwork(
            node.rename({k: v for k, v in mapping.items() if k in node.legs})
            for node in self._nodes.values()
        )

    # -- conveniences ----------------------------------------------------------------------
    def to_dense(self, output: Sequence[str] | None = None) -> torch.Tensor:
        """The contracted tensor (legs in ``output`` order, default :attr:`open_legs`).

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.ones(2, 3), ("i", "j"))
        >>> TensorNetwork([a, Node(torch.ones(3), ("j",))]).to_dense()
        tensor([3., 3.])
        """
        return self.contract(output=output).tensor

    def norm(self) -> torch.Tensor:
        """Frobenius norm of the represented tensor, from ``<net, net>`` (no dense tensor).

        Examples
        --------
        >>> import torch
        >>> a = Node(torch.full((2, 3), 2.0, dtype=torch.float64), ("i", "j"), name="A")
        >>> net = TensorNetwork([a, Node(torch.ones(3, 4, dtype=torch.float64), ("j", "k"))])
        >>> float(net.norm()), float(net.to_dense().norm())
        (16.97056274847714, 16.97056274847714)
        """
        bonds = self._bond_legs()
        taken = tuple(self._owners)
        new = _split.fresh_names([leg + "~" for leg in bonds], taken)
        other = self.conj().rename(dict(zip(bonds, new))) if bonds else self.conj()
        names = _split.fresh_names([f"{name}~" for name in self.names], self.names)
        nodes = [*self._nodes.values(), *(n.with_name(x) for n, x in zip(other, names))]
        value = TensorNetwork(nodes).contract(output=()).tensor
        return value.real.clamp_min(0).sqrt() if value.is_complex() else value.clamp_min(0).sqrt()

    def draw(self, **kwargs: Any) -> Any:
        """Draw the network with matplotlib: an alias of :func:`tensornet.plot.draw_network`.

        Examples
        --------
        >>> import torch
        >>> fig = TensorNetwork([Node(torch.ones(2, 3), ("i", "j"), name="A")]).draw()
        >>> type(fig).__name__
        'Figure'
        """
        from .. import plot  # the hook resolves only when called: core does not need matplotlib

        return plot.draw_network(self, **kwargs)

    def __repr__(self) -> str:
        """A header line, plus one line per node for networks of up to 12 nodes."""
        head = (
            f"TensorNetwork({len(self._nodes)} nodes, {len(self._bond_legs())} bonds, "
            f"open legs {short_list(self.open_legs)}, {self.num_params:,} params)"
        )
        if len(self._nodes) > 12:
            return head
        return "\n".join([head, *(f"  {node!r}" for node in self._nodes.values())])


def contract(
    *nodes: Node | TensorNetwork | Iterable[Node],
    output: Sequence[str] | None = None,
    optimize: Optimize = None,
    max_intermediate: int | None = None,
    slicing: bool | None = None,
) -> Node:
    """Contract nodes (or one network) into a single node; see :meth:`TensorNetwork.contract`.

    Examples
    --------
    >>> import torch
    >>> a = Node(torch.ones(2, 3), ("i", "j"))
    >>> b = Node(torch.ones(3), ("j",))
    >>> contract(a, b).tensor
    tensor([3., 3.])
    """
    if len(nodes) == 1 and isinstance(nodes[0], TensorNetwork):
        net = nodes[0]
    elif len(nodes) == 1 and not isinstance(nodes[0], Node):
        net = TensorNetwork(_as_node_list(nodes[0]))
    else:
        net = TensorNetwork(_as_node_list(nodes))
    return net.contract(
        output=output, optimize=optimize, max_intermediate=max_intermediate, slicing=slicing
    )


def _as_node_list(items: Iterable[Any]) -> list[Node]:
    out = list(items)
    for item in out:
        if not isinstance(item, Node):
            raise TypeError(
                f"contract takes Node objects or one TensorNetwork, got {type(item).__name__}"
            )
    return out
