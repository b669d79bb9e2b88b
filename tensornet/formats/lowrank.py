"""Plain low rank: a tensor as ``U V`` across one cut (the truncated SVD, Eckart-Young optimal).

The factors are ``U`` with legs ``(*left, r)`` and ``V`` with legs ``(r, *right)``; the singular
values are split evenly (``U = u sqrt(s)``, ``V = sqrt(s) v^H``), which keeps both factors on
the same scale when they are trained as layer parameters. For a conv kernel the default cut is
``out | in, kh, kw``: a ``k x k`` conv to ``r`` channels followed by a ``1 x 1`` conv.

The batched helpers here (:func:`shared_rank`, :func:`reduce_pairs`) serve every format made of
``U V`` pairs, including channel-grouped low rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.linalg import qr, svd, truncated_svd
from ..core.node import as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_ranks
from .steps import tail_norm
from .structure import Factor, Structure, register_format

__all__ = ["LowRank", "reduce_pairs", "shared_rank"]


def shared_rank(s: torch.Tensor, trunc: Truncation | None, norm: float | None = None) -> int:
    """The one rank that ``trunc`` allows for a batch of spectra ``s`` (``(B, m)``) kept together.

    Errors of the batch add in squares, so the batch is truncated like the single spectrum
    ``sqrt(sum_b s_b^2)``, whose tails are the summed tails. ``norm`` is the reference norm for
    ``rel_tol`` (default: the whole batch's norm).

    >>> import torch
    >>> shared_rank(torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.5, 0.1]]), Truncation(rel_tol=0.2))
    2
    """
    if trunc is None:
        return s.shape[-1]
    return trunc.rank(s.detach().double().square().sum(0).sqrt(), norm=norm)


def reduce_pairs(
    u: torch.Tensor, v: torch.Tensor, trunc: Truncation | None, norm: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-factor a batch of products ``u_b v_b`` (``(B, m, r)`` times ``(B, r, n)``) optimally.

    QR of both sides, SVD of the small ``r x r`` middle, one shared rank from ``trunc``. Returns
    the new ``(B, m, k)`` and ``(B, k, n)`` factors (singular values split evenly) and the full
    spectra ``(B, r)``; the products change by exactly the discarded singular values.
    """
    q1, r1 = qr(u)
    q2, r2 = qr(v.mH)  # v = r2^H q2^H
    uu, s, vh = svd(r1 @ r2.mH)
    k = shared_rank(s, trunc, norm)
    root = s[..., :k].sqrt().to(uu.dtype)
    new_u = (q1 @ uu[..., :k]) * root[..., None, :]
    new_v = (root[..., :, None] * vh[..., :k, :]) @ q2.mH
    return new_u, new_v, s


@register_format("svd")
class LowRank(Format):
    """A tensor as ``U V`` across the cut ``left | rest`` (truncated SVD).

    ``LowRank(u, v, left, right, legs=None, error=None)`` builds one directly. Option of
    :meth:`from_dense`: ``left`` (the legs of the rows, default the first leg).

    Examples
    --------
    >>> import torch
    >>> k = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    >>> lr = LowRank.from_dense(k, ranks=4, legs=("out", "in", "kh", "kw"))
    >>> [t.shape for t in lr.factor_tensors().values()], lr.ranks
    ([torch.Size([16, 4]), torch.Size([4, 8, 3, 3])], (4,))
    >>> s = torch.linalg.svdvals(k.reshape(16, -1))
    >>> abs(lr.error - float(s[4:].norm() / s.norm())) < 1e-12
    True
    """

    @classmethod
    def _parts(
        cls,
        u: torch.Tensor,
        v: torch.Tensor,
        left: Sequence[str],
        right: Sequence[str],
        legs: Sequence[str] | None = None,
        error: float | None = None,
    ) -> tuple[Structure, dict, float | None, dict]:
        left, right = tuple(left), tuple(right)
        legs = left + right if legs is None else tuple(legs)
        u, v = as_tensor(u), as_tensor(v)
        dims = dict(zip(left, u.shape))
        dims.update(zip(right, v.shape[1:]))
        s = cls.structure_for(
            tuple(dims[leg] for leg in legs), u.shape[-1], legs=legs, left=left, what="LowRank"
        )
        return s, {"U": u, "V": v}, error, {}

    @staticmethod
    def _cut(legs: tuple[str, ...], left: Any, what: str) -> tuple[tuple[str, ...], tuple]:
        left = (legs[0],) if left is None else ((left,) if isinstance(left, str) else tuple(left))
        if not left or len(left) >= len(legs) or any(leg not in legs for leg in left):
            raise ValueError(
                f"{what}: left {left} must be a non-empty proper subset of the legs {legs}"
            )
        left = tuple(leg for leg in legs if leg in left)  # dense order
        return left, tuple(leg for leg in legs if leg not in left)

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(cls, dense: Dense, *, left: Sequence[str] | str | None = None) -> Layout:
        """``U (*left, r)`` and ``V (r, *right)``; ``left`` defaults to the first leg.

        Examples
        --------
        >>> LowRank.structure_for((64, 32, 3, 3), 8).num_params
        2816
        """
        shape, legs, what = dense
        if len(shape) < 2:
            raise ValueError(f"{what}: needs at least 2 legs, got shape {shape}")
        left, right = cls._cut(legs, left, what)
        dims = dict(zip(legs, shape))
        rows = math.prod(dims[leg] for leg in left)
        r = fresh_names(["r"], legs)[0]

        def factors(ranks: tuple[int, ...]) -> tuple[Factor, Factor]:
            return (
                Factor("U", (*left, r), (*(dims[leg] for leg in left), *ranks)),
                Factor("V", (r, *right), (*ranks, *(dims[leg] for leg in right))),
            )

        return Layout((min(rows, math.prod(shape) // rows),), factors, (("left", left),))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request) -> LowRank:
        """Truncated SVD of the matricisation ``left | rest`` (default left: the first leg)."""
        trunc = req.trunc if req.caps is None else Truncation(max_rank=req.caps[0])
        u_legs, v_legs = (f.legs for f in req.full.factors)
        left = u_legs[:-1]
        xp = x.permute([req.full.legs.index(leg) for leg in left + v_legs[1:]])
        rows = math.prod(xp.shape[: len(left)])
        u, s, vh, s_full = truncated_svd(xp.reshape(rows, -1), trunc)
        root = s.sqrt().to(u.dtype)
        new = cls._of(
            req.full,
            (u * root).reshape(*xp.shape[: len(left)], -1),
            (root[:, None] * vh).reshape(-1, *xp.shape[len(left) :]),
        )
        norm = float(torch.linalg.vector_norm(s_full.detach()))
        new._error = tail_norm(s_full, s.shape[0]) / norm if norm > 0 else 0.0
        return new

    @classmethod
    def _of(cls, structure: Structure, u: torch.Tensor, v: torch.Tensor) -> LowRank:
        return cls(structure.with_ranks((u.shape[-1],)), {"U": u, "V": v})

    # -- views -------------------------------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The dense tensor, legs in :attr:`legs` order."""
        return self.structure.contract(self.factor_tensors())

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> LowRank:
        """Optimal re-truncation of ``U V`` (QR of both factors, SVD of the small middle)."""
        trunc = as_truncation(trunc)
        if ranks is not None:
            trunc = Truncation(max_rank=check_ranks(ranks, 1, "LowRank.truncate")[0])
        t = self.factor_tensors()
        r = self.ranks[0]
        u, v = t["U"].reshape(1, -1, r), t["V"].reshape(1, r, -1)
        new_u, new_v, s = reduce_pairs(u, v, trunc)
        k = new_u.shape[-1]
        new = self._of(
            self._structure,
            new_u.reshape(*t["U"].shape[:-1], k),
            new_v.reshape(k, *t["V"].shape[1:]),
        )
        norm = float(torch.linalg.vector_norm(s.detach()))
        new._error = tail_norm(s[0], k) / norm if norm > 0 else 0.0
        return new
