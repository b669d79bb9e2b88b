"""TT-matrix (MPO) format for weight matrices and tensorized conv kernels.

A matrix ``W`` of size ``M x N`` with ``M = prod m_k`` and ``N = prod n_k`` is stored as a train
of cores ``G_k[r_{k-1}, m_k, n_k, r_k]`` with legs ``(r{k}, rows_k, cols_k, r{k+1})``; it holds
``sum_k m_k n_k r_{k-1} r_k`` numbers. A conv kernel ``(out, in, kh, kw)`` gets one extra core in
front that holds the whole spatial mode (legs ``kh, kw``), while the channels are factorised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.truncation import Truncation
from .base import Format, check_ranks, choose, dense_input
from .tensorize import balanced_factors, check_dims, mode_legs, tensorize_matrix
from .tt import TT, Budget, fraction_ranks, tt_svd

__all__ = ["TTMatrix"]


def _dims(
    given: Sequence[int] | None, total: int, d: int | None, field: str, what: str
) -> tuple[int, ...]:
    if given is None:
        return balanced_factors(total, 3 if d is None else d)
    return check_dims(given, total, field, what)


class TTMatrix(Format):
    """A matrix (or conv kernel) in TT-matrix format.

    :attr:`legs` and :attr:`shape` describe the matrix (or kernel) and :meth:`to_dense` returns
    it; the network's open legs are the tensorized mode legs (``out_0, in_0, ...``, plus ``kh``
    and ``kw`` for a kernel).

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

    _tt: TT
    _dense_shape: tuple[int, ...]
    _row_legs: tuple[str, ...]
    _col_legs: tuple[str, ...]
    _spatial: tuple[str, ...]

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
        legs: Sequence[str] = ("rows", "cols"),
        d: int | None = None,
        budget: Budget = "uniform",
    ) -> TTMatrix:
        """TT-SVD of a matrix tensorized into ``row_dims x col_dims``.

        Parameters
        ----------
        w : tensor (M, N)
            The matrix.
        row_dims, col_dims : sequence of int, optional
            Mode sizes with products ``M`` and ``N`` (same length); default
            :func:`balanced_factors` with ``d`` factors (default 3).
        trunc, ranks, fraction
            As for :meth:`TT.from_dense`; ``ranks`` has one entry per bond (``d - 1``).
        legs : (str, str)
            Names of the matrix's two legs; mode legs are ``<leg>_0, <leg>_1, ...``.
        """
        what = "TTMatrix.from_matrix"
        trunc = choose(trunc, ranks, fraction, what)
        w, _ = dense_input(w, None, what)
        if w.ndim != 2:
            raise ValueError(f"{what}: w must be a matrix, got shape {tuple(w.shape)}")
        row_dims = _dims(row_dims, w.shape[0], d, "row_dims", what)
        col_dims = _dims(col_dims, w.shape[1], d, "col_dims", what)
        if len(row_dims) != len(col_dims):
            raise ValueError(
                f"{what}: row_dims {row_dims} and col_dims {col_dims} need the same length"
            )
        legs = _two_legs(legs, what)
        t = tensorize_matrix(w, row_dims, col_dims)
        rows, cols = mode_legs(legs[0], len(row_dims)), mode_legs(legs[1], len(col_dims))
        groups = list(zip(rows, cols))
        new = cls._build(t, groups, trunc, ranks, fraction, budget, what)
        new._dense_shape = tuple(w.shape)
        new._legs = legs
        new._row_legs, new._col_legs, new._spatial = rows, cols, ()
        return new

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
        legs: Sequence[str] = ("out", "in", "kh", "kw"),
        d: int | None = None,
        budget: Budget = "uniform",
    ) -> TTMatrix:
        """Tensorized conv kernel ``(out, in, kh, kw)``: a spatial core (``kh * kw`` as one
        mode) followed by TT-matrix cores over the factorised channels (``d`` of them).

        ``ranks`` has ``d`` entries: the bond after the spatial core, then the channel bonds.
        """
        what = "TTMatrix.from_conv_kernel"
        trunc = choose(trunc, ranks, fraction, what)
        kernel, _ = dense_input(kernel, None, what)
        if kernel.ndim != 4:
            raise ValueError(f"{what}: kernel must be (out, in, kh, kw), got {tuple(kernel.shape)}")
        if isinstance(legs, str) or len(tuple(legs)) != 4 or len(set(legs)) != 4:
            raise ValueError(f"{what}: legs must be 4 distinct names, got {legs!r}")
        legs = tuple(legs)
        o, i, kh, kw = kernel.shape
        out_dims = _dims(out_dims, o, d, "out_dims", what)
        in_dims = _dims(in_dims, i, d, "in_dims", what)
        if len(out_dims) != len(in_dims):
            raise ValueError(f"{what}: out_dims {out_dims} and in_dims {in_dims} need one length")
        n = len(out_dims)
        t = kernel.reshape(*out_dims, *in_dims, kh, kw)
        perm = [2 * n, 2 * n + 1] + [j for k in range(n) for j in (k, n + k)]
        t = t.permute(perm)
        rows, cols = mode_legs(legs[0], n), mode_legs(legs[1], n)
        groups = [(legs[2], legs[3])] + list(zip(rows, cols))
        new = cls._build(t, groups, trunc, ranks, fraction, budget, what)
        new._dense_shape = tuple(kernel.shape)
        new._legs = legs
        new._row_legs, new._col_legs, new._spatial = rows, cols, (legs[2], legs[3])
        return new

    @classmethod
    def _build(cls, t, groups, trunc, ranks, fraction, budget, what) -> TTMatrix:
        sizes = []
        dims = list(t.shape)
        for g in groups:
            sizes.append(math.prod(dims[: len(g)]))
            dims = dims[len(g) :]
        max_ranks = None
        if ranks is not None:
            max_ranks = check_ranks(ranks, len(groups) - 1, what)
        elif fraction is not None:
            max_ranks = fraction_ranks(sizes, fraction, what)
        cores, err = tt_svd(t, sizes, trunc, max_ranks, budget)
        shaped, pos = [], 0
        for g, c in zip(groups, cores):
            shaped.append(c.reshape(c.shape[0], *t.shape[pos : pos + len(g)], c.shape[-1]))
            pos += len(g)
        new = cls.__new__(cls)
        new._tt = TT(shaped, groups, error=err)
        new._network = new._tt.network
        new._error = err
        return new

    def _with_tt(self, tt: TT) -> TTMatrix:
        new = self._replace(tt=tt, network=tt.network, error=tt.error)
        return new

    # -- views -------------------------------------------------------------------------------
    @property
    def tt(self) -> TT:
        """The underlying train (cores with a row and a column leg each)."""
        return self._tt

    @property
    def shape(self) -> tuple[int, ...]:
        return self._dense_shape

    @property
    def ranks(self) -> tuple[int, ...]:
        return self._tt.ranks

    @property
    def row_dims(self) -> tuple[int, ...]:
        return tuple(self._network.dim(leg) for leg in self._row_legs)

    @property
    def col_dims(self) -> tuple[int, ...]:
        return tuple(self._network.dim(leg) for leg in self._col_legs)

    def to_dense(self) -> torch.Tensor:
        """The matrix ``(M, N)``, or the kernel ``(out, in, kh, kw)``."""
        out = self._row_legs + self._col_legs + self._spatial
        return self._network.contract(output=out).tensor.reshape(self._dense_shape)

    def round(
        self, trunc: Truncation | int | None = None, ranks: Sequence[int] | int | None = None
    ) -> TTMatrix:
        """TT rounding of the train (see :meth:`TT.round`)."""
        return self._with_tt(self._tt.round(trunc, ranks))

    def truncate(self, trunc: Truncation | int | None) -> TTMatrix:
        return self.round(trunc)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TTMatrix:
        tt = self._tt.to(device=device, dtype=dtype)
        return self._replace(tt=tt, network=tt.network)


def _two_legs(legs: Any, what: str) -> tuple[str, str]:
    if isinstance(legs, str) or len(tuple(legs)) != 2 or len(set(legs)) != 2:
        raise ValueError(f"{what}: legs must be two distinct names, got {legs!r}")
    return tuple(legs)  # type: ignore[return-value]
