"""Channel-grouped low rank (ALDS, Liebenwein et al. 2021): one SVD per group of input channels.

A kernel ``W (f, c, k1, k2)`` has its ``c`` input channels cut into ``k`` contiguous groups;
group ``g``'s slice, folded to ``f x (c/k k1 k2)``, is kept at the same rank ``j`` in every
group. The factors are ``U (f, k, j)`` and ``V (k, j, c/k, k1, k2)``:

``W[o, (g, c'), ...] = sum_j U[o, g, j] V[g, j, c', ...]``,

which as a layer is a grouped ``k1 x k2`` conv (``groups = k``, ``c -> k j`` channels) followed by
a ``1 x 1`` conv (``k j -> f``). It stores ``j (k f + c k1 k2)`` numbers. The group leg is shared
by both factors and the input, so the structure is an einsum (the network view pads ``V`` to a
block-diagonal tensor of the same value).

With ``channel_groups=1`` it is the plain SVD across ``out | in, k1, k2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.linalg import svd
from ..core.node import Node, as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_ranks
from .lowrank import reduce_pairs, shared_rank
from .structure import Factor, Structure, register_format

__all__ = ["Grouped", "grouped_params"]


def grouped_params(shape: Sequence[int], groups: int, rank: int) -> int:
    """``j (k f + c k1 k2)`` for a kernel ``(f, c, k1, k2)``.

    >>> grouped_params((64, 32, 3, 3), 4, 8)
    4352
    """
    f, c, rest = shape[0], shape[1], math.prod(shape[2:])
    return rank * (groups * f + c * rest)


def _check_groups(groups: Any, channels: int, what: str) -> int:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{what}: channel_groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(
            f"{what}: channel_groups={groups} must divide the {channels} channels of the second leg"
        )
    return groups


def _names(legs: tuple[str, ...]) -> tuple[str, str, str]:
    """The group leg, the within-group channel leg and the rank leg (fresh against ``legs``)."""
    g, c, r = fresh_names([f"{legs[1]}_g", f"{legs[1]}_c", "r"], legs)
    return g, c, r


@register_format("grouped")
class Grouped(Format):
    """A kernel as ``k`` channel groups, each a rank-``j`` product ``U_g V_g``.

    ``Grouped(u, v, legs, error=None, spectra=None)`` builds one directly. Option of
    :meth:`from_dense`: ``channel_groups`` (``k``, which must divide ``c``). ``trunc`` picks the
    smallest ``j`` whose total Frobenius error (groups add in squares) meets the tolerances;
    ``ranks`` is ``j`` (lowered to ``min(f, c/k * prod(rest))``); ``fraction`` the largest ``j``
    with ``j (k f + c k1 k2) <= fraction * size``.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    >>> lr = Grouped.from_dense(w, ranks=3, channel_groups=2, legs=("out", "in", "kh", "kw"))
    >>> lr.ranks, lr.groups, lr.num_params == grouped_params(w.shape, 2, 3)
    ((3,), 2, True)
    >>> full = Grouped.from_dense(w, channel_groups=4)
    >>> bool(torch.allclose(full.to_dense(), w))
    True
    """

    _spectra: torch.Tensor | None = None

    @classmethod
    def _parts(
        cls,
        u: torch.Tensor,
        v: torch.Tensor,
        legs: Sequence[str],
        error: float | None = None,
        spectra: torch.Tensor | None = None,
    ) -> tuple[Structure, dict, float | None, dict]:
        u, v = as_tensor(u), as_tensor(v)
        legs = tuple(legs)
        if u.ndim != 3 or v.ndim < 3 or u.shape[1:] != v.shape[:2]:
            raise ValueError(
                f"Grouped: U must be (f, k, j) and V (k, j, c/k, ...); got {tuple(u.shape)} "
                f"and {tuple(v.shape)}"
            )
        if len(legs) != v.ndim - 1:
            raise ValueError(f"Grouped: {len(legs)} legs for factors of a {v.ndim - 1}-way kernel")
        f, k, j = u.shape
        shape = (f, k * v.shape[2], *v.shape[3:])
        s = cls.structure_for(shape, j, legs=legs, channel_groups=k, what="Grouped")
        return s, {"U": u, "V": v}, error, {"spectra": spectra}

    def _network_nodes(self) -> list[Node]:
        """``U`` and ``V`` padded to a block-diagonal tensor over the (group, rank) pairs."""
        u, v, legs = self._tensors["U"], self._tensors["V"], self.legs
        f, k, j = u.shape
        g_leg, c_leg, r_leg = _names(legs)
        blocks = v.new_zeros(k, j, k, v.shape[2], *v.shape[3:])
        idx = torch.arange(k, device=v.device)
        blocks[idx, :, idx] = v
        band = fresh_names([r_leg + "_band"], legs)[0]
        return [
            Node(u.reshape(f, k * j), (legs[0], band), name="U"),
            Node(blocks.reshape(k * j, k, *v.shape[2:]), (band, g_leg, c_leg, *legs[2:]), name="V"),
        ]

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(cls, dense: Dense, *, channel_groups: int = 1) -> Layout:
        """``U (f, k, j)`` and ``V (k, j, c/k, ...)`` sharing the group leg with the input.

        Examples
        --------
        >>> s = Grouped.structure_for((64, 32, 3, 3), 8, legs=("o", "i", "h", "w"),
        ...                           channel_groups=4)
        >>> [(f.legs, f.shape) for f in s.factors]
        [(('o', 'i_g', 'r'), (64, 4, 8)), (('i_g', 'r', 'i_c', 'h', 'w'), (4, 8, 8, 3, 3))]
        >>> s.modes[1], s.num_params
        (('i_g', 'i_c'), 4352)
        """
        shape, legs, what = dense
        if len(shape) < 2:
            raise ValueError(f"{what}: needs at least 2 legs (out, in, ...), got shape {shape}")
        k = _check_groups(channel_groups, shape[1], what)
        ck = shape[1] // k
        g, c, r = _names(legs)

        def factors(ranks: tuple[int, ...]) -> tuple[Factor, Factor]:
            return (
                Factor("U", (legs[0], g, r), (shape[0], k, *ranks)),
                Factor("V", (g, r, c, *legs[2:]), (k, *ranks, ck, *shape[2:])),
            )

        return Layout(
            (min(shape[0], ck * math.prod(shape[2:])),),
            factors,
            (("channel_groups", k),),
            ((legs[0],), (g, c), *((leg,) for leg in legs[2:])),
        )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request) -> Grouped:
        """One SVD per channel group, all kept at the same rank ``j``."""
        k = req.full.option("channel_groups")
        f, c = x.shape[0], x.shape[1]
        rest = tuple(x.shape[2:])
        mats = x.reshape(f, k, c // k, *rest).movedim(1, 0).reshape(k, f, -1)
        u, s, vh = svd(mats)
        norm = float(torch.linalg.vector_norm(x.detach()))
        (j,) = req.caps if req.caps is not None else (shared_rank(s, req.trunc, norm),)
        # j <= min(f, c/k * prod(rest)) = s.shape[1]: every group has j singular values
        root = s[:, :j].sqrt().to(u.dtype)
        uu = u[:, :, :j] * root[:, None, :]
        vv = root[:, :, None] * vh[:, :j, :]
        tail = float(s[:, j:].detach().square().sum().sqrt()) if j < s.shape[1] else 0.0
        return cls._of(
            req.full,
            uu.movedim(0, 1),
            vv.reshape(k, j, c // k, *rest),
            tail / norm if norm > 0 else 0.0,
            s,
        )

    @classmethod
    def _of(cls, structure, u, v, error, spectra) -> Grouped:
        new = cls(structure.with_ranks((u.shape[2],)), {"U": u, "V": v}, error)
        new._spectra = spectra.detach()
        return new

    # -- views -------------------------------------------------------------------------------
    @property
    def groups(self) -> int:
        """The number of channel groups ``k``."""
        return self._structure.option("channel_groups")

    @property
    def spectra(self) -> torch.Tensor | None:
        """Singular values of every group's slice ``(k, min(f, c/k k1 k2))``.

        Recorded by :meth:`from_dense` (``None`` otherwise).
        """
        return self._spectra

    def to_dense(self) -> torch.Tensor:
        """The dense tensor, legs in :attr:`legs` order."""
        return self.structure.contract(self.factor_tensors())

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Grouped:
        """The same format with every factor moved and/or cast (the spectra moved)."""
        new = super().to(device=device, dtype=dtype)
        if self._spectra is not None:
            new._spectra = self._spectra.to(device=device)
        return new

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> Grouped:
        """Optimal re-truncation of every group to one shared rank (QR + small SVDs)."""
        trunc = as_truncation(trunc)
        if ranks is not None:
            trunc = Truncation(max_rank=check_ranks(ranks, 1, "Grouped.truncate")[0])
        u, v = self._tensors["U"], self._tensors["V"]
        f, k, j = u.shape
        shape_v = v.shape
        u = u.movedim(1, 0)  # (k, f, j)
        v = v.reshape(k, j, -1)
        # the groups are disjoint blocks: their spectra together hold the kernel's whole norm
        new_u, new_v, s = reduce_pairs(u, v, trunc)
        dense_norm = float(s.detach().square().sum().sqrt())
        kept = new_u.shape[-1]
        tail = float(s[:, kept:].detach().square().sum().sqrt()) if kept < s.shape[1] else 0.0
        return self._of(
            self._structure,
            new_u.movedim(0, 1),
            new_v.reshape(k, kept, *shape_v[2:]),
            tail / dense_norm if dense_norm > 0 else 0.0,
            s,
        )
