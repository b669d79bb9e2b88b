"""Hierarchical Tucker (HT): a dimension tree, HT-SVD from dense, truncation of an HT tensor.

Nodes of the :class:`DimensionTree` are numbered breadth first (the root is 0). In the network,
leaf ``t`` is a frame node ``"U{t}"`` with legs ``(<mode legs>, r{t})``, an inner node is a
transfer tensor ``"B{t}"`` with legs ``(r{left}, r{right}, r{t})`` and the root ``"B0"`` has legs
``(r{left}, r{right})``.

HT-SVD (Grasedyck 2010) takes every frame from the SVD of the matching matricisation and every
transfer tensor by projection. Its error is at most ``sqrt(sum of the squared discarded singular
values over the 2d - 3 edges)``, hence at most ``sqrt(2d - 3)`` times the best error at those
ranks; tolerances are shared as ``eps / sqrt(2d - 3)`` per edge so ``rel_tol`` holds overall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.linalg import leading_frame, qr
from ..core.node import as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_ranks
from .steps import error_limit, inner, left_svd, relative_error, step_truncation, tail_norm, unfold
from .structure import Factor, Structure, _freeze, register_format
from .tensorize import check_dims, mode_legs

__all__ = ["DimensionTree", "HT"]


class DimensionTree:
    """A binary tree over the modes ``0 .. d-1``.

    Parameters
    ----------
    structure : nested pairs of int
        A leaf is a mode number; an inner node is a pair ``(left, right)``. Every mode appears
        exactly once. The modes of a node are its left modes followed by its right modes.

    Examples
    --------
    >>> DimensionTree.balanced(4).nodes
    ((0, 1, 2, 3), (0, 1), (2, 3), (0,), (1,), (2,), (3,))
    >>> t = DimensionTree(((0, 1), (2, (3, 4))))
    >>> t.children(2), t.parent(2), t.num_edges
    ((5, 6), 0, 7)
    """

    def __init__(self, structure: Any) -> None:
        nodes: list[tuple[int, ...]] = []
        children: list[tuple[int, ...]] = []
        parents: list[int | None] = []
        queue: list[tuple[Any, int | None]] = [(structure, None)]
        shapes: list[Any] = []
        while queue:
            sub, parent = queue.pop(0)
            t = len(nodes)
            nodes.append(())
            children.append(())
            parents.append(parent)
            shapes.append(sub)
            if parent is not None:
                children[parent] = children[parent] + (t,)
            if isinstance(sub, bool) or not isinstance(sub, (int, tuple, list)):
                raise ValueError(f"DimensionTree: a node must be an int or a pair, got {sub!r}")
            if not isinstance(sub, int):
                if len(sub) != 2:
                    raise ValueError(
                        f"DimensionTree: inner nodes must have exactly 2 children, got {sub!r}"
                    )
                queue.extend((c, t) for c in sub)
        # modes of each node, from the leaves up (children come after parents in BFS order)
        for t in range(len(nodes) - 1, -1, -1):
            if children[t]:
                nodes[t] = nodes[children[t][0]] + nodes[children[t][1]]
            else:
                nodes[t] = (shapes[t],)
        d = len(nodes[0])
        if sorted(nodes[0]) != list(range(d)):
            raise ValueError(
                f"DimensionTree: leaves must be the modes 0..{d - 1} once each, got {nodes[0]}"
            )
        if d < 2:
            raise ValueError("DimensionTree: needs at least 2 modes")
        self._nodes = tuple(nodes)
        self._children = tuple(children)
        self._parents = tuple(parents)
        self._structure = structure

    @classmethod
    def balanced(cls, d: int) -> DimensionTree:
        """The balanced tree: each node splits its modes into a first and second half."""
        if isinstance(d, bool) or not isinstance(d, int) or d < 2:
            raise ValueError(f"DimensionTree.balanced: d must be an int >= 2, got {d!r}")

        def build(modes: Sequence[int]) -> Any:
            if len(modes) == 1:
                return modes[0]
            h = (len(modes) + 1) // 2
            return (build(modes[:h]), build(modes[h:]))

        return cls(build(list(range(d))))

    @property
    def structure(self) -> Any:
        """The nested pairs the tree was built from."""
        return self._structure

    @property
    def nodes(self) -> tuple[tuple[int, ...], ...]:
        """Modes of every node, breadth first."""
        return self._nodes

    @property
    def num_modes(self) -> int:
        """Number of modes (leaves)."""
        return len(self._nodes[0])

    @property
    def num_edges(self) -> int:
        """``2d - 3``: the root's two children share one edge."""
        return 2 * self.num_modes - 3

    def children(self, t: int) -> tuple[int, ...]:
        """The two children of node ``t`` (empty for a leaf)."""
        return self._children[t]

    def parent(self, t: int) -> int | None:
        """The parent of node ``t`` (``None`` for the root)."""
        return self._parents[t]

    def is_leaf(self, t: int) -> bool:
        """True for a leaf (a single mode)."""
        return not self._children[t]

    def __len__(self) -> int:
        return len(self._nodes)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, DimensionTree)
            and self._nodes == other._nodes
            and (self._children == other._children)
        )

    def __hash__(self) -> int:
        return hash((self._nodes, self._children))

    def __repr__(self) -> str:
        return f"DimensionTree({self._structure!r})"


def ht_params(tree: DimensionTree, sizes: Sequence[int], ranks: Sequence[int]) -> int:
    """``sum_leaves n_t r_t + sum_inner r_left r_right r_t`` (root rank 1).

    ``ranks`` are per non-root node, breadth first.
    """
    r = (1, *ranks)
    total = 0
    for t in range(len(tree)):
        if tree.is_leaf(t):
            total += sizes[tree.nodes[t][0]] * r[t]
        else:
            a, b = tree.children(t)
            total += r[a] * r[b] * r[t]
    return total


def _max_ranks(tree: DimensionTree, sizes: Sequence[int]) -> tuple[int, ...]:
    total = math.prod(sizes)
    out = []
    for t in range(1, len(tree)):
        n = math.prod(sizes[m] for m in tree.nodes[t])
        out.append(min(n, total // n))
    return tuple(out)


def ht_svd(
    x: torch.Tensor,
    tree: DimensionTree,
    trunc: Truncation | None,
    max_ranks: Sequence[int] | None,
) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """HT-SVD of ``x`` (one axis per tree mode).

    Returns the node tensors (leaf frames ``(n, r)``, transfer tensors ``(ra, rb, r)``, root
    ``(ra, rb)``) and the discarded singular-value norm of every edge.
    """
    norm = float(torch.linalg.vector_norm(x.detach()))
    limit = error_limit(trunc, norm)
    lim = None if limit is None else limit / math.sqrt(tree.num_edges)
    cap = None if trunc is None else trunc.max_rank

    def step(t: int) -> Truncation | None:
        caps = [v for v in (cap, None if max_ranks is None else max_ranks[t - 1]) if v]
        return step_truncation(min(caps) if caps else None, lim)

    left, right = tree.children(0)
    frames: dict[int, torch.Tensor] = {}
    tails: dict[int, float] = {}
    # the root's children share one matricisation: one SVD gives both frames
    # rows: the left child's modes; columns: the right child's modes in the tree's order
    n_left = math.prod(x.shape[m] for m in tree.nodes[left])
    top = x.permute(tree.nodes[0]).reshape(n_left, -1)
    for t, mat in ((left, top), (right, top.mT)):
        frames[t], s = left_svd(mat, step(t))
        tails[t] = tail_norm(s, frames[t].shape[1])
    root = frames[left].mH @ top @ frames[right].conj()
    for t in range(3, len(tree)):
        frames[t], s_full = left_svd(unfold(x, tree.nodes[t]), step(t))
        tails[t] = tail_norm(s_full, frames[t].shape[1])
    tensors: dict[int, torch.Tensor] = {0: root}
    for t in range(1, len(tree)):
        if tree.is_leaf(t):
            tensors[t] = frames[t]
            continue
        a, b = tree.children(t)
        na, nb = frames[a].shape[0], frames[b].shape[0]
        ut = frames[t].reshape(na, nb, -1)
        tensors[t] = torch.einsum("ia,jb,ijc->abc", frames[a].conj(), frames[b].conj(), ut)
    return tensors, tails


def _orthogonalize(tree: DimensionTree, tensors: dict[int, torch.Tensor]) -> dict[int, Any]:
    """Orthonormal frames everywhere: QR from the leaves up, R factors pushed to the parent."""
    out = dict(tensors)
    for t in range(len(tree) - 1, 0, -1):
        m = out[t] if tree.is_leaf(t) else out[t].reshape(-1, out[t].shape[-1])
        q, r = qr(m)
        out[t] = q if tree.is_leaf(t) else q.reshape(*out[t].shape[:2], -1)
        p = tree.parent(t)
        slot = tree.children(p).index(t)
        out[p] = torch.movedim(torch.tensordot(r, out[p], dims=([1], [slot])), 0, slot)
    return out


def _gramians(tree: DimensionTree, tensors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Reduced Gramians ``G_t`` (``r_t x r_t``) of orthogonalised frames, from the root down.

    The eigenvalues of ``G_t`` are the squared singular values of the matricisation at ``t``.
    """
    a, b = tree.children(0)
    root = tensors[0]
    grams = {a: root @ root.mH, b: (root.mH @ root).conj()}
    for t in range(1, len(tree)):
        if tree.is_leaf(t):
            continue
        ca, cb = tree.children(t)
        bt, g = tensors[t], grams[t]
        grams[ca] = torch.einsum("ijc,cd,kjd->ik", bt, g, bt.conj())
        grams[cb] = torch.einsum("ijc,cd,ikd->jk", bt, g, bt.conj())
    return grams


def _ht_layout(
    shape: tuple[int, ...],
    legs: tuple[str, ...],
    out_dims: Sequence[int] | None,
    in_dims: Sequence[int] | None,
    what: str,
) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], tuple[tuple[str, ...], ...]]:
    """Leaf groups, their sizes and the dense legs' modes.

    Plain HT: one leaf per dense leg. Tensorized (``out_dims``/``in_dims`` given): the first two
    legs are split into modes paired leaf by leaf (``(out_k, in_k)``), and the remaining legs
    (a kernel's ``kh, kw``) form one leaf in front.
    """
    if out_dims is None and in_dims is None:
        return [(leg,) for leg in legs], [(n,) for n in shape], tuple((leg,) for leg in legs)
    if out_dims is None or in_dims is None or len(shape) < 2:
        raise ValueError(f"{what}: a tensorized HT needs out_dims and in_dims and 2+ legs")
    out_dims = check_dims(out_dims, shape[0], "out_dims", what)
    in_dims = check_dims(in_dims, shape[1], "in_dims", what)
    if len(out_dims) != len(in_dims):
        raise ValueError(f"{what}: out_dims {out_dims} and in_dims {in_dims} need one length")
    n = len(out_dims)
    rows, cols = mode_legs(legs[0], n), mode_legs(legs[1], n)
    groups = ([tuple(legs[2:])] if len(legs) > 2 else []) + list(zip(rows, cols))
    dims = ([tuple(shape[2:])] if len(legs) > 2 else []) + list(zip(out_dims, in_dims))
    return groups, dims, (rows, cols, *((leg,) for leg in legs[2:]))


def _as_tree(tree: DimensionTree | Any | None, d: int, what: str) -> DimensionTree:
    tree = DimensionTree.balanced(d) if tree is None else tree
    if not isinstance(tree, DimensionTree):
        tree = DimensionTree(tree)
    if tree.num_modes != d:
        raise ValueError(f"{what}: tree has {tree.num_modes} modes, the tensor has {d}")
    return tree


def _ht_factors(
    tree: DimensionTree,
    groups: Sequence[tuple[str, ...]],
    dims: Sequence[tuple[int, ...]],
    rank_legs: Sequence[str],
    ranks: Sequence[int],
) -> tuple[Factor, ...]:
    """Root ``B0 (r_a, r_b)``, leaves ``U{t} (*group, r_t)``, inner ``B{t} (r_a, r_b, r_t)``."""
    r = (1, *ranks)
    out = []
    for t in range(len(tree)):
        if t == 0:
            a, b = tree.children(0)
            out.append(Factor("B0", (rank_legs[a], rank_legs[b]), (r[a], r[b])))
        elif tree.is_leaf(t):
            mode = tree.nodes[t][0]
            out.append(Factor(f"U{t}", (*groups[mode], rank_legs[t]), (*dims[mode], r[t])))
        else:
            a, b = tree.children(t)
            out.append(
                Factor(f"B{t}", (rank_legs[a], rank_legs[b], rank_legs[t]), (r[a], r[b], r[t]))
            )
    return tuple(out)


@register_format("ht")
class HT(Format):
    """A tensor in Hierarchical Tucker format over a :class:`DimensionTree`.

    A tensorized HT (``out_dims``/``in_dims``, or :meth:`from_matrix`) splits the first two legs
    into modes paired leaf by leaf, as a TT-matrix does; :attr:`legs`, :attr:`shape` and
    :meth:`to_dense` still describe the matrix or kernel, the network's open legs are the modes.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(3, 4, 5, 2, dtype=torch.float64)
    >>> ht = HT.from_dense(x)
    >>> ht.tree.nodes[:3], ht.ranks
    (((0, 1, 2, 3), (0, 1), (2, 3)), (10, 10, 3, 4, 5, 2))
    >>> bool(torch.allclose(ht.to_dense(), x))
    True
    """

    _tails: dict[int, float] = {}

    @classmethod
    def _parts(
        cls,
        tensors: dict[int, torch.Tensor],
        tree: DimensionTree,
        groups: Sequence[Sequence[str]],
        group_dims: Sequence[Sequence[int]],
        legs: Sequence[str] | None = None,
        error: float | None = None,
    ) -> tuple[Structure, dict, float | None, dict]:
        """Node tensors by tree node (leaf frames ``(n, r)``) over one leaf per leg."""
        flat = tuple(leg for g in groups for leg in g)
        legs = flat if legs is None else tuple(legs)
        dims = dict(zip(flat, (n for g in group_dims for n in g)))
        ranks = tuple(tensors[t].shape[-1] for t in range(1, len(tree)))
        s = cls.structure_for(
            tuple(dims[leg] for leg in legs), ranks, legs=legs, tree=tree.structure, what="HT"
        )
        return s, _node_tensors(s, tensors), error, {}

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(
        cls,
        dense: Dense,
        *,
        tree: DimensionTree | Any | None = None,
        out_dims: Sequence[int] | None = None,
        in_dims: Sequence[int] | None = None,
    ) -> Layout:
        """Nodes of the dimension ``tree``: ranks per non-root node, breadth first.

        Examples
        --------
        >>> s = HT.structure_for((6, 5, 4, 6), 2)
        >>> [(f.name, f.shape) for f in s.factors][:3]
        [('B0', (2, 2)), ('B1', (2, 2, 2)), ('B2', (2, 2, 2))]
        >>> s.num_params == ht_params(DimensionTree.balanced(4), (6, 5, 4, 6), (2,) * 6)
        True
        """
        shape, legs, what = dense
        groups, dims, modes = _ht_layout(shape, legs, out_dims, in_dims, what)
        tree = _as_tree(tree, len(groups), what)
        rank_legs = _rank_legs(tree, tuple(leg for g in groups for leg in g))
        options: tuple[tuple[str, Any], ...] = (("tree", _freeze(tree.structure)),)
        if out_dims is not None:
            options += (("out_dims", tuple(out_dims)), ("in_dims", tuple(in_dims)))
        return Layout(
            _max_ranks(tree, [math.prod(g) for g in dims]),
            lambda ranks: _ht_factors(tree, groups, dims, rank_legs, ranks),
            options,
            modes,
        )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request) -> HT:
        """HT-SVD, the leaves tensorized as the structure says."""
        shape, out_dims, in_dims = (
            req.full.shape,
            req.full.option("out_dims"),
            req.full.option("in_dims"),
        )
        t = x
        if out_dims is not None:
            n = len(out_dims)
            t = x.reshape(*out_dims, *in_dims, *shape[2:])
            pairs = [j for k in range(n) for j in (k, n + k)]
            t = t.permute(list(range(2 * n, t.ndim)) + pairs)
        groups, dims, _ = _ht_layout(shape, req.full.legs, out_dims, in_dims, req.what)
        tree = _as_tree(req.full.option("tree"), len(groups), req.what)
        tensors, tails = ht_svd(t.reshape([math.prod(g) for g in dims]), tree, req.trunc, req.caps)
        new = cls._of(req.full, tensors, None)
        new._error = relative_error(x, new.to_dense())
        new._tails = tails
        return new

    @classmethod
    def _of(cls, structure: Structure, tensors: dict[int, torch.Tensor], error) -> HT:
        ranks = tuple(tensors[t].shape[-1] for t in range(1, len(tensors)))
        s = structure.with_ranks(ranks)
        return cls(s, _node_tensors(s, tensors), error)

    @classmethod
    def from_matrix(
        cls,
        w: Any,
        row_dims: Sequence[int],
        col_dims: Sequence[int],
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        fraction: float | None = None,
        *,
        legs: Sequence[str] = ("rows", "cols"),
        tree: DimensionTree | Any | None = None,
    ) -> HT:
        """HT of a matrix tensorized TT-matrix style.

        Leaf ``k`` holds the pair ``(rows_k, cols_k)`` of sizes ``(m_k, n_k)``.

        Examples
        --------
        >>> import torch
        >>> w = torch.randn(12, 20, dtype=torch.float64)
        >>> ht = HT.from_matrix(w, (3, 4), (4, 5))
        >>> ht.network.open_legs
        ('rows_0', 'cols_0', 'rows_1', 'cols_1')
        >>> bool(torch.allclose(ht.to_dense(), w))
        True
        """
        what = "HT.from_matrix"
        w = as_tensor(w)
        if w.ndim != 2:
            raise ValueError(f"{what}: w must be a matrix, got shape {tuple(w.shape)}")
        row_dims = check_dims(row_dims, w.shape[0], "row_dims", what)
        col_dims = check_dims(col_dims, w.shape[1], "col_dims", what)
        if len(row_dims) != len(col_dims):
            raise ValueError(f"{what}: row_dims and col_dims need the same length")
        return cls.from_dense(
            w, trunc, ranks, fraction, legs=legs, tree=tree, out_dims=row_dims, in_dims=col_dims
        )

    def _by_node(self) -> dict[int, torch.Tensor]:
        """The node tensors by tree node, leaf frames as ``(n, r)`` matrices."""
        tree = self.tree
        out = {}
        for t, f in enumerate(self._structure.factors):
            x = self._tensors[f.name]
            out[t] = x.reshape(-1, x.shape[-1]) if tree.is_leaf(t) else x
        return out

    # -- views -------------------------------------------------------------------------------
    @property
    def tree(self) -> DimensionTree:
        """The dimension tree."""
        return DimensionTree(self._structure.option("tree"))

    @property
    def edge_tails(self) -> dict[int, float]:
        """Discarded singular-value norm per non-root node.

        Of the last HT-SVD/truncation (absolute; the root's second child repeats the first's).
        """
        return dict(self._tails)

    def to_matrix(self) -> torch.Tensor:
        """The matrix of a tensorized HT (same as :meth:`to_dense`)."""
        if self._structure.option("out_dims") is None:
            raise ValueError("HT.to_matrix: this HT was not built from a matrix")
        return self.to_dense()

    # -- truncation --------------------------------------------------------------------------
    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> HT:
        """Orthogonalise, then truncate every edge using the reduced Gramians.

        QR from the leaves to the root; the result equals HT-SVD applied to this tensor.

        ``error`` is relative to this HT tensor: from inner products of the two networks
        (accurate to about 1e-8), or the HT-SVD bound when that is smaller.

        Examples
        --------
        >>> import torch
        >>> ht = HT.from_dense(torch.randn(4, 4, 4, 4, dtype=torch.float64))
        >>> ht.truncate(2).ranks
        (2, 2, 2, 2, 2, 2)
        """
        what = "HT.truncate"
        trunc = as_truncation(trunc)
        tree = self.tree
        max_ranks = None if ranks is None else check_ranks(ranks, len(tree) - 1, what)
        tensors = _orthogonalize(tree, self._by_node())
        grams = _gramians(tree, tensors)
        norm = float(torch.linalg.vector_norm(tensors[0].detach()))
        limit = error_limit(trunc, norm)
        lim = None if limit is None else limit / math.sqrt(tree.num_edges)
        cap = None if trunc is None else trunc.max_rank
        bases, tails = {}, {}
        for t in range(1, len(tree)):
            caps = [v for v in (cap, None if max_ranks is None else max_ranks[t - 1]) if v]
            st = step_truncation(min(caps) if caps else None, lim)
            # G_t is Hermitian PSD: its left singular vectors are its eigenvectors, and the
            # frame's backward stays finite at repeated or zero eigenvalues (eigh's does not)
            frame, evals = leading_frame(
                grams[t], None if st is None else (lambda e, st=st: st.rank(e.clamp_min(0).sqrt()))
            )
            s = evals.clamp_min(0).sqrt()
            k = frame.shape[1]
            bases[t] = frame
            tails[t] = tail_norm(s, k)
        new = {}
        for t in range(len(tree)):
            x = tensors[t]
            if t > 0:
                x = x @ bases[t] if tree.is_leaf(t) else torch.tensordot(x, bases[t], ([2], [0]))
            if not tree.is_leaf(t):
                a, b = tree.children(t)
                x = torch.tensordot(bases[a].mH, x, dims=([1], [0]))
                x = torch.movedim(torch.tensordot(bases[b].mH, x, dims=([1], [1])), 0, 1)
            new[t] = x
        out = self._of(self._structure, new, None)
        out._tails = tails
        xx = norm * norm
        yy = float(inner(out.network, out.network).real.detach())
        xy = float(inner(self.network, out.network).real.detach())
        # The inner-product formula cancels below ~1e-8; the HT-SVD bound sqrt(sum tails^2)
        # (root edge once) is rigorous, so the smaller of the two is the better estimate.
        bound = math.sqrt(sum(v * v for t, v in tails.items() if t != 2))
        est = math.sqrt(max(xx - 2 * xy + yy, 0.0))
        out._error = min(est, bound) / math.sqrt(xx) if xx > 0 else 0.0
        return out


def _rank_legs(tree: DimensionTree, taken: Sequence[str]) -> tuple[str, ...]:
    """Rank leg names per tree node (``""`` for the root, which has none)."""
    return ("",) + fresh_names([f"r{t}" for t in range(1, len(tree))], taken)


def _node_tensors(structure: Structure, tensors: dict[int, torch.Tensor]) -> dict:
    """Node tensors by tree node (leaf frames ``(n, r)``) as the structure's factors."""
    return {f.name: tensors[t].reshape(f.shape) for t, f in enumerate(structure.factors)}
