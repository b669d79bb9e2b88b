"""TT-matrix (MPO) format for weight matrices and tensorized conv kernels.

A matrix ``W`` of size ``M x N`` with ``M = prod m_k`` and ``N = prod n_k`` is stored as a train
of cores ``G_k[r_{k-1}, m_k, n_k, r_k]`` with legs ``(r{k}, rows_k, cols_k, r{k+1})``; it holds
``sum_k m_k n_k r_{k-1} r_k`` numbers. Legs after the first two (a conv kernel's ``kh, kw``)
are kept whole in one extra core in front (legs ``kh, kw, r1``), while the two channel legs are
factorised: this is the tensorized convolution of Garipov et al. (2016).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.node import as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation
from .base import Dense, Format, Layout, Request, check_shape, dense_input
from .structure import chain_factors, register_format
from .tensorize import balanced_factors, check_dims, mode_legs
from .tt import TT, Budget, from_chain, tt_max_ranks, tt_svd

__all__ = ["TTMatrix"]


def _dims(
    given: Sequence[int] | None, total: int, d: int | None, field: str, what: str
) -> tuple[int, ...]:
    if given is None:
        return balanced_factors(total, 3 if d is None else d)
    return check_dims(given, total, field, what)


def _train_layout(
    shape: tuple[int, ...],
    legs: tuple[str, ...],
    out_dims: Sequence[int] | None,
    in_dims: Sequence[int] | None,
    d: int | None,
    what: str,
) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[str, ...]], list[tuple[int, ...]]]:
    """Mode sizes of the two channel legs and the train's groups (spatial core first)."""
    if len(shape) < 2:
        raise ValueError(f"{what}: needs a matrix or a kernel (2+ legs), got shape {shape}")
    out_dims = _dims(out_dims, shape[0], d, "out_dims", what)
    in_dims = _dims(in_dims, shape[1], d, "in_dims", what)
    if len(out_dims) != len(in_dims):
        raise ValueError(f"{what}: out_dims {out_dims} and in_dims {in_dims} need the same length")
    n = len(out_dims)
    rows, cols = mode_legs(legs[0], n), mode_legs(legs[1], n)
    groups = [tuple(legs[2:])] if len(legs) > 2 else []
    dims = [tuple(shape[2:])] if len(legs) > 2 else []
    groups += list(zip(rows, cols))
    dims += list(zip(out_dims, in_dims))
    return out_dims, in_dims, groups, dims


class _Dense2:
    """Default leg names by number of dimensions."""

    MATRIX = ("rows", "cols")
    KERNEL = ("out", "in", "kh", "kw")


@register_format("ttmatrix")
class TTMatrix(Format):
    """A matrix (or conv kernel) in TT-matrix format.

    :attr:`legs` and :attr:`shape` describe the matrix (or kernel) and :meth:`to_dense` returns
    it; the network's open legs are the tensorized mode legs (``out_0, in_0, ...``, plus ``kh``
    and ``kw`` for a kernel).

    Options of :meth:`from_dense`: ``out_dims``, ``in_dims`` (mode sizes of the first two legs,
    same length; default :func:`balanced_factors` with ``d`` factors, default 3), ``budget`` (as
    for :class:`TT`). Legs after the first two stay whole in a spatial core in front. Default
    legs: ``("rows", "cols")`` or ``("out", "in", "kh", "kw")``.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(24, 30, dtype=torch.float64)
    >>> ttm = TTMatrix.from_matrix(w, (2, 3, 4), (3, 5, 2), legs=("out", "in"))
    >>> ttm.ranks, ttm.network.open_legs[:3]
    ((6, 8), ('out_0', 'in_0', 'out_1'))
    >>> bool(torch.allclose(ttm.to_dense(), w))
    True
    >>> k = TTMatrix.from_conv_kernel(torch.randn(16, 8, 3, 3, dtype=torch.float64), ranks=4)
    >>> k.row_dims, k.col_dims, k.ranks, "kh" in k.network.open_legs
    ((4, 2, 2), (2, 2, 2), (4, 4, 4), True)
    """

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(
        cls,
        dense: Dense,
        *,
        out_dims: Sequence[int] | None = None,
        in_dims: Sequence[int] | None = None,
        d: int | None = None,
    ) -> Layout:
        """A train over the paired channel modes, the spatial legs in one core in front.

        Examples
        --------
        >>> s = TTMatrix.structure_for((16, 8, 3, 3), 4, legs=("out", "in", "kh", "kw"),
        ...                            out_dims=(4, 4), in_dims=(2, 4))
        >>> [(f.legs, f.shape) for f in s.factors][:2]
        [(('kh', 'kw', 'r1'), (3, 3, 4)), (('r1', 'out_0', 'in_0', 'r2'), (4, 4, 2, 4))]
        """
        shape, legs, what = dense
        out_dims, in_dims, groups, dims = _train_layout(shape, legs, out_dims, in_dims, d, what)
        tops = tt_max_ranks([math.prod(g) for g in dims])
        flat = tuple(leg for g in groups for leg in g)
        bonds = fresh_names([f"r{k + 1}" for k in range(len(groups) - 1)], flat)
        n = len(out_dims)
        return Layout(
            tops,
            lambda ranks: chain_factors(groups, dims, bonds, ranks),
            (("out_dims", out_dims), ("in_dims", in_dims)),
            (mode_legs(legs[0], n), mode_legs(legs[1], n), *((leg,) for leg in legs[2:])),
        )

    @classmethod
    def _default_legs(cls, ndim: int) -> tuple[str, ...]:
        """A matrix's ``rows, cols``, a kernel's ``out, in, kh, kw``; else ``out, in, k0, ...``."""
        if ndim == 2:
            return _Dense2.MATRIX
        if ndim == 4:
            return _Dense2.KERNEL
        return ("out", "in", *(f"k{i}" for i in range(ndim - 2)))

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _dense_input(
        cls, x: Any, legs: Sequence[str] | None, what: str
    ) -> tuple[torch.Tensor, tuple[str, ...]]:
        x, _ = dense_input(x, None, what)
        return x, check_shape(tuple(x.shape), legs, what, cls._default_legs)[1]

    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request, budget: Budget = "uniform") -> TTMatrix:
        """TT-SVD of the matrix or kernel with its first two legs tensorized.

        Legs after the first two (a kernel's ``kh, kw``) are kept whole in a spatial core in
        front; ``out_dims``/``in_dims`` (default :func:`balanced_factors` with ``d`` factors,
        default 3) are the mode sizes of the first two legs.
        """
        out_dims, in_dims = req.full.option("out_dims"), req.full.option("in_dims")
        n = len(out_dims)
        t = x.reshape(*out_dims, *in_dims, *req.full.shape[2:])
        channels = [j for k in range(n) for j in (k, n + k)]
        t = t.permute(list(range(2 * n, t.ndim)) + channels)
        _, _, _, dims = _train_layout(
            req.full.shape, req.full.legs, out_dims, in_dims, None, req.what
        )
        cores, err = tt_svd(t, [math.prod(g) for g in dims], req.trunc, req.caps, budget)
        return from_chain(cls, req.full, cores, err)

    @classmethod
    def from_matrix(
        cls,
        w: Any,
        row_dims: Sequence[int] | None = None,
        col_dims: Sequence[int] | None = None,
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        fraction: float | None = None,
        *,
        legs: Sequence[str] = _Dense2.MATRIX,
        d: int | None = None,
        budget: Budget = "uniform",
    ) -> TTMatrix:
        """TT-SVD of a matrix tensorized into ``row_dims x col_dims`` (see :meth:`from_dense`)."""
        what = "TTMatrix.from_matrix"
        w = as_tensor(w)
        if w.ndim != 2:
            raise ValueError(f"{what}: w must be a matrix, got shape {tuple(w.shape)}")
        legs = _two_legs(legs, what)
        row_dims = _dims(row_dims, w.shape[0], d, "row_dims", what)
        col_dims = _dims(col_dims, w.shape[1], d, "col_dims", what)
        if len(row_dims) != len(col_dims):
            raise ValueError(
                f"{what}: row_dims {row_dims} and col_dims {col_dims} need the same length"
            )
        return cls.from_dense(
            w,
            trunc,
            ranks,
            fraction,
            legs=legs,
            out_dims=row_dims,
            in_dims=col_dims,
            d=d,
            budget=budget,
        )

    @classmethod
    def from_conv_kernel(
        cls,
        kernel: Any,
        out_dims: Sequence[int] | None = None,
        in_dims: Sequence[int] | None = None,
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        fraction: float | None = None,
        *,
        legs: Sequence[str] = _Dense2.KERNEL,
        d: int | None = None,
        budget: Budget = "uniform",
    ) -> TTMatrix:
        """Tensorized conv kernel ``(out, in, kh, kw)``.

        A spatial core (``kh * kw`` as one mode) followed by TT-matrix cores over the
        factorised channels (``d`` of them).

        ``ranks`` has ``d`` entries: the bond after the spatial core, then the channel bonds.
        """
        what = "TTMatrix.from_conv_kernel"
        kernel = as_tensor(kernel)
        if kernel.ndim != 4:
            raise ValueError(f"{what}: kernel must be (out, in, kh, kw), got {tuple(kernel.shape)}")
        if isinstance(legs, str) or len(tuple(legs)) != 4 or len(set(legs)) != 4:
            raise ValueError(f"{what}: legs must be 4 distinct names, got {legs!r}")
        return cls.from_dense(
            kernel,
            trunc,
            ranks,
            fraction,
            legs=tuple(legs),
            out_dims=out_dims,
            in_dims=in_dims,
            d=d,
            budget=budget,
        )

    # -- views -------------------------------------------------------------------------------
    @property
    def tt(self) -> TT:
        """The underlying train (cores with a row and a column leg each)."""
        _, _, groups, dims = _train_layout(
            self.shape, self.legs, self.row_dims, self.col_dims, None, "TTMatrix.tt"
        )
        flat = tuple(leg for g in groups for leg in g)
        sizes = tuple(n for g in dims for n in g)
        s = TT.structure_for(sizes, self.ranks, legs=flat, groups=groups)
        return TT(s, self._tensors, self._error)

    @property
    def row_dims(self) -> tuple[int, ...]:
        """Mode sizes of the first (row / out) leg."""
        return self._structure.option("out_dims")

    @property
    def col_dims(self) -> tuple[int, ...]:
        """Mode sizes of the second (column / in) leg."""
        return self._structure.option("in_dims")

    def round(
        self, trunc: Truncation | int | None = None, ranks: Sequence[int] | int | None = None
    ) -> TTMatrix:
        """TT rounding of the train (see :meth:`TT.round`)."""
        tt = self.tt.round(trunc, ranks)
        return self._like(tt.ranks, tt.factor_tensors(), tt.error)

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> TTMatrix:
        """A smaller approximation; ``error`` is relative to this tensor."""
        return self.round(trunc, ranks)


def _two_legs(legs: Any, what: str) -> tuple[str, str]:
    if isinstance(legs, str) or len(tuple(legs)) != 2 or len(set(legs)) != 2:
        raise ValueError(f"{what}: legs must be two distinct names, got {legs!r}")
    return tuple(legs)  # type: ignore[return-value]
