"""Cut-truncated tensors as networks: one factor per region, one bond per cut (``"cut"``).

A cut is a bipartition of the dense legs, named by the legs of one side (``("out", "kh")``
against ``in, kw``). Truncating a kernel along one cut (the operation of the truncation study,
Singh, Jahromi & Orus 2024) gives a tensor of rank ``chi`` across it: two factors joined by a
bond of size ``chi``, so a conv layer runs it as two small convs (``("out", "kh")``: a
``1 x kw`` conv from ``in`` to ``chi`` channels, then a ``kh x 1`` conv to ``out``, the
spatially separable pair).

Several cuts must be compatible (laminar: for any two, one side of one lies inside one side of
the other); they are then the edges of a tree whose vertices are the regions they carve, each
region one factor holding its dense legs and the bonds of its cuts. Crossing cuts (``("out",
"kh")`` and ``("out", "kw")``) have no such tree and are refused with a ValueError naming them.

:meth:`CutNetwork.from_dense` runs truncated SVDs from the leaves to the root (the vertex that
holds the first dense leg), each on the tensor left by the previous ones, keeping isometries in
the leaf-side factors. Along one cut this is the truncated SVD (Eckart-Young optimal). The
projections commute, so the error is exactly ``sqrt(sum of the steps' discarded s^2)``, each
step's discarded energy at most the dense tensor's own along that cut: the HT-SVD bound.

Examples
--------
>>> import torch
>>> k = torch.randn(16, 8, 3, 3, dtype=torch.float64)
>>> fmt = CutNetwork.from_dense(k, ranks=4, cuts=[("out", "kh")], legs=("out", "in", "kh", "kw"))
>>> [(f.name, f.legs, f.shape) for f in fmt.structure.factors]
[('G0', ('out', 'kh', 'r1'), (16, 3, 4)), ('G1', ('in', 'kw', 'r1'), (8, 3, 4))]
>>> s = torch.linalg.svdvals(k.permute(0, 2, 1, 3).reshape(48, 24))
>>> abs(fmt.error - float(s[4:].norm() / s.norm())) < 1e-12
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ..core.linalg import truncated_svd
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_ranks
from .steps import relative_error, tail_norm
from .structure import Factor, Structure, register_format

__all__ = ["CutNetwork", "CutTree", "cut_tree"]


class CutTree(NamedTuple):
    """Compatible cuts of a set of legs as a tree.

    Vertex 0 holds the first leg; vertex ``i + 1`` is the region below cut ``i``.

    Attributes
    ----------
    cuts : tuple of tuple of str
        The cuts as given (one side each, legs in dense order).
    sides : tuple of frozenset of str
        Each cut's side away from the first leg (the region below the cut).
    parent : tuple of int
        Per cut, the vertex above it (0: the root).
    own : tuple of tuple of str
        Per vertex, the dense legs it holds (dense order).
    order : tuple of int
        The cuts from the leaves to the root (each after every cut below it).
    """

    cuts: tuple[tuple[str, ...], ...]
    sides: tuple[frozenset[str], ...]
    parent: tuple[int, ...]
    own: tuple[tuple[str, ...], ...]
    order: tuple[int, ...]

    def children(self, vertex: int) -> tuple[int, ...]:
        """The cuts just below ``vertex`` (their indices, in cut order)."""
        return tuple(i for i, p in enumerate(self.parent) if p == vertex)


def _as_cut_list(cuts: Any, legs: tuple[str, ...], what: str) -> list[tuple[str, ...]]:
    """``cuts`` as a list of cuts: a string is one leg, a sequence of strings one cut."""
    if cuts is None:
        return [(legs[0], legs[2])] if len(legs) >= 3 else [(legs[0],)]
    if isinstance(cuts, str):
        return [(cuts,)]
    try:
        cuts = list(cuts)
    except TypeError:
        raise ValueError(f"{what}: cuts must be a cut (leg names) or a list of cuts") from None
    if cuts and all(isinstance(c, str) for c in cuts):
        return [tuple(cuts)]
    out = []
    for c in cuts:
        if isinstance(c, str):
            out.append((c,))
            continue
        try:
            out.append(tuple(c))
        except TypeError:
            raise ValueError(f"{what}: cuts: each cut must be leg names, got {c!r}") from None
    return out


def cut_tree(legs: Sequence[str], cuts: Any = None, what: str = "cut_tree") -> CutTree:
    """The tree of compatible ``cuts`` of ``legs`` (ValueError for bad, repeated or crossing cuts).

    ``cuts``: one cut (a leg name or a sequence of leg names: one side of the cut) or a list of
    cuts. Default: the first leg with the third (``out, kh`` of a conv kernel: the separable
    split), or the first leg alone for two legs.

    Examples
    --------
    >>> t = cut_tree(("out", "in", "kh", "kw"), [("out", "kh"), ("in",)])
    >>> t.sides[0] == {"in", "kw"}, t.parent, t.own
    (True, (0, 1), (('out', 'kh'), ('kw',), ('in',)))
    >>> cut_tree(("out", "in", "kh", "kw"), [("out", "kh"), ("out", "kw")])
    Traceback (most recent call last):
    ...
    ValueError: cut_tree: cuts ('out', 'kh') and ('out', 'kw') cross (no tree holds both)
    """
    legs = tuple(legs)
    given = _as_cut_list(cuts, legs, what)
    if not given:
        raise ValueError(f"{what}: cuts must name at least one cut")
    norm, sides = [], []
    for cut in given:
        unknown = [leg for leg in cut if leg not in legs]
        if unknown or not cut or len(set(cut)) != len(cut) or len(cut) >= len(legs):
            raise ValueError(
                f"{what}: cut {cut} must be a non-empty proper subset of the legs {legs} "
                "without repeats"
            )
        norm.append(tuple(leg for leg in legs if leg in cut))
        side = frozenset(cut)
        sides.append(side if legs[0] not in side else frozenset(legs) - side)
    for i, a in enumerate(sides):
        for j in range(i):
            b = sides[j]
            if a == b:
                raise ValueError(f"{what}: cuts {norm[j]} and {norm[i]} are the same bipartition")
            if not (a < b or b < a or not a & b):
                raise ValueError(f"{what}: cuts {norm[j]} and {norm[i]} cross (no tree holds both)")
    parent = []
    for a in sides:
        above = [j for j, b in enumerate(sides) if a < b]
        parent.append(0 if not above else 1 + min(above, key=lambda j: len(sides[j])))
    own = []
    for v, region in enumerate([frozenset(legs), *sides]):
        below = [sides[i] for i, p in enumerate(parent) if p == v]
        held = region.difference(*below)
        own.append(tuple(leg for leg in legs if leg in held))
    order = tuple(sorted(range(len(sides)), key=lambda i: len(sides[i])))
    return CutTree(tuple(norm), tuple(sides), tuple(parent), tuple(own), order)


def _max_ranks(tree: CutTree, dims: dict[str, int]) -> tuple[int, ...]:
    """Per cut, the largest useful rank: ``min(prod of one side, prod of the other)``.

    On a tree these bounds are consistent: at either end of a bond the other bonds' bounds and
    the legs held there multiply to at least the bond's own bound (each other bond gives its
    whole side, or its other side, which holds the far side of the bond), so no factor is
    narrower than a bond it carries.
    """
    total = math.prod(dims.values())
    out = []
    for side in tree.sides:
        n = math.prod(dims[leg] for leg in side)
        out.append(min(n, total // n))
    return tuple(out)


def _factor_legs(tree: CutTree, bonds: Sequence[str]) -> list[tuple[str, ...]]:
    """Per vertex: its dense legs, the bonds of the cuts below it, then its own cut's bond."""
    out = []
    for v in range(len(tree.own)):
        up = () if v == 0 else (bonds[v - 1],)
        out.append((*tree.own[v], *(bonds[c] for c in tree.children(v)), *up))
    return out


@register_format("cut")
class CutNetwork(Format):
    """A tensor truncated along compatible cuts: one factor per region, one bond per cut.

    Option: ``cuts``, one cut (legs of one side, e.g. ``("out", "kh")``) or a list of
    compatible cuts; default the first leg with the third (``out, kh`` of a conv kernel), or
    the first leg alone for a matrix. Ranks: one per cut, in the order given. Factor ``G0``
    holds the first dense leg; factor ``G{i+1}`` the region below cut ``i`` (its side away
    from the first leg), with bond ``r{i+1}`` to the factor above.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(4, 5, 6, 3, dtype=torch.float64)
    >>> fmt = CutNetwork.from_dense(x, cuts=[("d2", "d3"), ("d3",)], ranks=(3, 2))
    >>> fmt.ranks, [f.legs for f in fmt.structure.factors]
    ((3, 2), [('d0', 'd1', 'r1'), ('d2', 'r2', 'r1'), ('d3', 'r2')])
    """

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(cls, dense: Dense, *, cuts: Any = None) -> Layout:
        """One factor per region of the cut tree, one rank per cut.

        Examples
        --------
        >>> CutNetwork.structure_for((64, 32, 3, 3), 8, legs=("out", "in", "kh", "kw")).num_params
        2304
        """
        shape, legs, what = dense
        if len(shape) < 2:
            raise ValueError(f"{what}: needs at least 2 legs, got shape {shape}")
        tree = cut_tree(legs, cuts, what)
        dims = dict(zip(legs, shape))
        bonds = fresh_names([f"r{i + 1}" for i in range(len(tree.cuts))], legs)
        factor_legs = _factor_legs(tree, bonds)

        def factors(ranks: tuple[int, ...]) -> tuple[Factor, ...]:
            sizes = {**dims, **dict(zip(bonds, ranks))}
            return tuple(
                Factor(f"G{v}", fl, tuple(sizes[leg] for leg in fl))
                for v, fl in enumerate(factor_legs)
            )

        return Layout(_max_ranks(tree, dims), factors, (("cuts", tree.cuts),))

    @property
    def tree(self) -> CutTree:
        """The cut tree of this format."""
        return cut_tree(self.legs, self.options["cuts"])

    @property
    def cuts(self) -> tuple[tuple[str, ...], ...]:
        """The cuts (one side each, dense leg order), in rank order."""
        return self.tree.cuts

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request) -> CutNetwork:
        """Truncated SVDs along the cuts, from the leaves to the root."""
        caps = req.full.max_ranks if req.caps is None else req.caps
        return _sequential(cls, x, req.full, _policies(req.trunc, caps))

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> CutNetwork:
        """Lower the ranks by truncated SVDs of the rebuilt tensor along the same cuts.

        Ranks never grow (each is capped by its current value); ``error`` is relative to this
        object. Along one cut this is the optimal re-truncation.
        """
        what = "CutNetwork.truncate"
        trunc = as_truncation(trunc)
        n = len(self.ranks)
        if ranks is not None:
            trunc = None
            caps = tuple(min(a, b) for a, b in zip(check_ranks(ranks, n, what), self.ranks))
        else:
            caps = self.ranks
        dense = self.to_dense()
        new = _sequential(type(self), dense, self.structure, _policies(trunc, caps))
        new._error = relative_error(dense, new.to_dense())
        return new


def _policies(trunc: Truncation | None, caps: Sequence[int]) -> list[Truncation]:
    """Each cut's truncation: its rank cap and its share (``1 / sqrt(n)``) of the tolerances."""
    if trunc is None:
        return [Truncation(max_rank=c) for c in caps]
    step = trunc.split(len(caps))
    return [dataclasses.replace(step, max_rank=min(c, step.max_rank or c)) for c in caps]


def _sequential(
    cls: type[CutNetwork], x: torch.Tensor, full: Structure, steps: Sequence[Truncation]
) -> CutNetwork:
    """The leaves-to-root truncated SVDs of ``x`` (legs ``full.legs``) along ``full``'s cuts."""
    tree = cut_tree(full.legs, full.option("cuts"))
    factor_legs = [f.legs for f in full.factors]
    norm = float(torch.linalg.vector_norm(x.detach()))
    t, t_legs = x, list(full.legs)
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[int, int] = {}
    tails = []
    for i in tree.order:
        rows = factor_legs[i + 1][:-1]
        rest = [leg for leg in t_legs if leg not in rows]
        tp = t.permute([t_legs.index(leg) for leg in (*rows, *rest)])
        row_dims, rest_dims = tp.shape[: len(rows)], tp.shape[len(rows) :]
        u, s, vh, s_full = truncated_svd(tp.reshape(math.prod(row_dims), -1), steps[i], norm=norm)
        k = s.shape[0]
        tensors[f"G{i + 1}"] = u.reshape(*row_dims, k)
        t = (s[:, None] * vh).reshape(k, *rest_dims)
        t_legs = [factor_legs[i + 1][-1], *rest]
        ranks[i] = k
        tails.append(tail_norm(s_full, k))
    tensors["G0"] = t.permute([t_legs.index(leg) for leg in factor_legs[0]])
    new = cls(full.with_ranks(tuple(ranks[i] for i in range(len(steps)))), tensors)
    total = math.sqrt(sum(e * e for e in tails))
    new._error = total / norm if norm > 0 else 0.0
    return new
