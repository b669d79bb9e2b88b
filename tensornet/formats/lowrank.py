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
from ..core.network import TensorNetwork
from ..core.node import Node, as_tensor
from ..core.truncation import Truncation, as_truncation
from .base import (
    Format,
    check_ranks,
    check_shape,
    choose,
    dense_input,
    factor_shapes_match,
    fresh_names,
    tail_norm,
)
from .structure import Factor, Structure, fraction_ranks, register_format

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

    _left: tuple[str, ...]
    _right: tuple[str, ...]
    _rank_leg: str

    def __init__(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        left: Sequence[str],
        right: Sequence[str],
        legs: Sequence[str] | None = None,
        error: float | None = None,
    ) -> None:
        left, right = tuple(left), tuple(right)
        legs = left + right if legs is None else tuple(legs)
        self._rank_leg = fresh_names(["r"], legs)[0]
        u, v = as_tensor(u), as_tensor(v)
        self._network = TensorNetwork(
            [
                Node(u, (*left, self._rank_leg), name="U"),
                Node(v, (self._rank_leg, *right), name="V"),
            ]
        )
        self._left, self._right, self._legs, self._error = left, right, legs, error

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
    def structure_for(
        cls,
        shape: Sequence[int],
        ranks: Sequence[int] | int | None = None,
        *,
        legs: Sequence[str] | None = None,
        left: Sequence[str] | str | None = None,
    ) -> Structure:
        """``U (*left, r)`` and ``V (r, *right)``; ``left`` defaults to the first leg.

        Examples
        --------
        >>> LowRank.structure_for((64, 32, 3, 3), 8).num_params
        2816
        """
        what = "LowRank.structure_for"
        shape, legs = check_shape(shape, legs, what)
        if len(shape) < 2:
            raise ValueError(f"{what}: needs at least 2 legs, got shape {shape}")
        left, right = cls._cut(legs, left, what)
        rows = math.prod(shape[legs.index(leg)] for leg in left)
        top = min(rows, math.prod(shape) // rows)
        (rank,) = (top,) if ranks is None else check_ranks(ranks, 1, what)
        r = fresh_names(["r"], legs)[0]
        dims = dict(zip(legs, shape))
        factors = (
            Factor("U", (*left, r), (*(dims[leg] for leg in left), rank)),
            Factor("V", (r, *right), (rank, *(dims[leg] for leg in right))),
        )
        return Structure(
            "svd",
            legs,
            shape,
            (rank,),
            factors,
            tuple((leg,) for leg in legs),
            (top,),
            (("left", left),),
        )

    @classmethod
    def from_factors(
        cls, structure: Structure, tensors: dict[str, torch.Tensor], error: float | None = None
    ) -> LowRank:
        """The format with the given factor tensors (layout of ``structure.factors``)."""
        factor_shapes_match(structure, tensors, "LowRank.from_factors")
        left, right = cls._cut(structure.legs, structure.option("left"), "LowRank.from_factors")
        return cls(tensors["U"], tensors["V"], left, right, structure.legs, error)

    def factor_tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by factor name, in the structure's layout."""
        return {"U": self._network.node("U").tensor, "V": self._network.node("V").tensor}

    @property
    def options(self) -> dict[str, Any]:
        """The options that, with shape, legs and ranks, rebuild the structure."""
        return {"left": self._left}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        x: Any,
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        fraction: float | None = None,
        *,
        legs: Sequence[str] | None = None,
        left: Sequence[str] | str | None = None,
    ) -> LowRank:
        """Truncated SVD of the matricisation ``left | rest`` (default left: the first leg)."""
        what = "LowRank.from_dense"
        trunc = choose(trunc, ranks, fraction, what)
        x, legs = dense_input(x, legs, what)
        if x.ndim < 2:
            raise ValueError(f"{what}: needs at least 2 legs, got shape {tuple(x.shape)}")
        left, right = cls._cut(legs, left, what)
        if ranks is not None:
            trunc = Truncation(max_rank=check_ranks(ranks, 1, what)[0])
        elif fraction is not None:
            (cap,) = fraction_ranks(cls, tuple(x.shape), fraction, legs=legs, what=what, left=left)
            trunc = Truncation(max_rank=cap)
        perm = [legs.index(leg) for leg in left + right]
        xp = x.permute(perm)
        rows = math.prod(xp.shape[: len(left)])
        u, s, vh, s_full = truncated_svd(xp.reshape(rows, -1), trunc)
        root = s.sqrt().to(u.dtype)
        new = cls(
            (u * root).reshape(*xp.shape[: len(left)], -1),
            (root[:, None] * vh).reshape(-1, *xp.shape[len(left) :]),
            left,
            right,
            legs,
        )
        norm = float(torch.linalg.vector_norm(s_full.detach()))
        new._error = tail_norm(s_full, s.shape[0]) / norm if norm > 0 else 0.0
        return new

    # -- views -------------------------------------------------------------------------------
    @property
    def ranks(self) -> tuple[int, ...]:
        """The format's ranks."""
        return (self._network.dim(self._rank_leg),)

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
        new = type(self)(
            new_u.reshape(*t["U"].shape[:-1], k),
            new_v.reshape(k, *t["V"].shape[1:]),
            self._left,
            self._right,
            self._legs,
        )
        norm = float(torch.linalg.vector_norm(s.detach()))
        new._error = tail_norm(s[0], k) / norm if norm > 0 else 0.0
        return new
