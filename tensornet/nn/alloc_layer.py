"""One layer as the allocation sees it: channel-grouped low rank at every ``(j, k)``.

:class:`GroupedLayer` holds a conv/linear kernel's per-group spectra and, for rank ``j`` in
each of ``k`` input-channel groups, its errors (the ALDS proxy, the true spectral and Frobenius
errors) and its cost in the allocation's measure. Every cost is priced from the grouped
format's structure (:meth:`~tensornet.formats.Grouped.structure_for`): its parameter count, and
for FLOPs and time the plan the cost model runs for it (:class:`Pricer`). The errors are
described in :mod:`tensornet.nn.allocate`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..formats import get_format
from ..formats.structure import Structure
from . import cost
from .functional import ConvGeometry
from .measure import candidates, dense_flops, dense_seconds, kernel_legs

__all__ = ["GroupedLayer", "Pricer", "grouped_structure", "layer_seconds"]


@lru_cache(maxsize=4096)
def grouped_structure(
    shape: tuple[int, ...], legs: tuple[str, ...], rank: int, groups: int
) -> Structure:
    """The grouped format's structure of rank ``rank`` in each of ``groups`` channel groups.

    Examples
    --------
    >>> grouped_structure((64, 32, 3, 3), ("out", "in", "kh", "kw"), 8, 4).num_params
    4352
    """
    return get_format("grouped").structure_for(shape, rank, legs=legs, channel_groups=groups)


class Pricer:
    """FLOPs and estimated seconds of the plan the cost model runs for a grouped structure.

    Priced from the structure alone (nothing is decomposed) and cached per ``(j, k)``; the
    dense layer is priced by :func:`~tensornet.nn.measure.dense_seconds`.
    """

    def __init__(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        w = module.weight
        self.module, self.input_shape = module, tuple(shape)
        self.device_type, self.itemsize = w.device.type, w.element_size()
        self.costs = cost.costs_for(self.device_type)
        self.legs, self.shape = kernel_legs(module)
        self.dense_flops = dense_flops(module, shape)
        self.dense_seconds = dense_seconds(module, shape)
        self._cache: dict[tuple[int, int], tuple[str, int, float]] = {}

    def price(self, j: int, k: int) -> tuple[str, int, float]:
        """``(plan name, FLOPs, seconds)`` of grouped rank ``j`` with ``k`` groups."""
        key = (j, k)
        if key not in self._cache:
            structure = grouped_structure(self.shape, self.legs, j, k)
            plans = candidates(self.module, structure, self.input_shape, self.device_type)
            best = cost.choose(plans, self.device_type, self.itemsize, self.costs)
            self._cache[key] = best.name, int(best.flops), float(best.cost["seconds"])
        return self._cache[key]


def layer_seconds(module: nn.Module, shape: tuple[int, ...]) -> float:
    """Estimated seconds of any dense conv/linear layer (grouped convs priced as grouped)."""
    if not isinstance(module, nn.Conv2d) or module.groups == 1:
        return dense_seconds(module, shape)
    table = cost.costs_for(module.weight.device.type)
    batch, channels, rows, cols = shape
    geo = ConvGeometry.from_conv_args(
        module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
    )
    out_rows, out_cols = geo.output_size(rows, cols)
    # as functional prices a grouped step: one-in-one-out small kernels on CPU are shifts
    shift = module.weight.shape[1] == 1 and module.out_channels == channels
    small = math.prod(module.kernel_size) <= 9 and module.weight.device.type == "cpu"
    kind = "depthwise" if shift and small else "grouped"
    elements = batch * (channels * rows * cols + module.out_channels * out_rows * out_cols)
    return table.step_time(
        kind, dense_flops(module, shape), elements * module.weight.element_size(), batch
    )


# -- spectra and errors of one layer ---------------------------------------------------------
class GroupedLayer:
    """Spectra, errors and costs of one layer for the group counts a method needs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> layer = GroupedLayer("c", nn.Conv2d(4, 8, 3), [1, 2], "params", "true", None)
    >>> layer.max_rank(2), layer.params(3, 2), layer.is_dense(8, 1)
    (8, 156, True)
    """

    def __init__(
        self,
        name: str,
        module: nn.Module,
        ks: Sequence[int],
        measure: str,
        objective: str,
        pricer: Pricer | None,
    ) -> None:
        w = module.weight.detach().double().cpu()
        self.name = name
        self.legs, self.shape = kernel_legs(module)
        self._counts: dict[tuple[int, int], int] = {}  # parameters per (j, k)
        self.f, self.c = w.shape[0], w.shape[1]
        self.rest = math.prod(w.shape[2:])
        self.dense = w.numel()
        self.measure, self.objective, self.pricer = measure, objective, pricer
        self.ks = list(ks)
        self._w = w
        self.s: dict[int, np.ndarray] = {}  # (k, m) singular values per group
        self.u: dict[int, torch.Tensor] = {}  # (f, k, m) left vectors, computed when needed
        for k in self.ks:  # left vectors where true errors will be needed (else on demand)
            if k > 1 and objective == "true":
                u, s, _ = torch.linalg.svd(self._groups(k), full_matrices=False)
                self.u[k] = u.movedim(0, 1)
            else:
                s = torch.linalg.svdvals(self._groups(k))
            self.s[k] = s.numpy()
        s1 = self.s[1][0]
        self.norm2 = float(s1[0]) if s1[0] > 0 else 1.0
        frob = float(np.sqrt(np.square(s1).sum()))
        self.normf = frob if frob > 0 else 1.0
        # curves over j = 0 .. m (values kept per group); the last entry (j = m) is 0
        self.proxy: dict[int, np.ndarray] = {}
        self.upper: dict[int, np.ndarray] = {}
        self.frob: dict[int, np.ndarray] = {}
        for k, s in self.s.items():
            sq = np.square(s).sum(axis=0)  # sum over groups of s_j^2
            self.proxy[k] = np.append(s.max(axis=0), 0.0) / self.norm2
            self.upper[k] = np.append(np.sqrt(sq), 0.0) / self.norm2
            tail = np.append(np.cumsum(sq[::-1])[::-1], 0.0)
            self.frob[k] = np.sqrt(tail) / self.normf
        sq1 = np.square(s1)
        self.energy = np.cumsum(sq1) / sq1.sum() if frob > 0 else np.ones_like(sq1)
        # true spectral errors, computed when asked (NaN: not yet); exact from s when k = 1
        self.true = {k: np.full_like(p, np.nan) for k, p in self.proxy.items()}
        self.true[1] = self.proxy[1]
        for curve in self.true.values():
            curve[-1] = 0.0
        self.evaluations = 0

    def _groups(self, k: int) -> torch.Tensor:
        """The ``k`` column blocks ``W_g`` of the matricised kernel, ``(k, f, c/k k1 k2)``."""
        return (
            self._w.reshape(self.f, k, self.c // k, self.rest).movedim(1, 0).reshape(k, self.f, -1)
        )

    def _vectors(self, k: int) -> torch.Tensor:
        if k not in self.u:
            u = torch.linalg.svd(self._groups(k), full_matrices=False)[0]
            self.u[k] = u.movedim(0, 1)
        return self.u[k]

    # -- errors ----------------------------------------------------------------------------
    def max_rank(self, k: int) -> int:
        """The largest useful rank with ``k`` groups, ``min(f, c/k k1 k2)``."""
        return self.s[k].shape[1]

    def spectral(self, j: int, k: int) -> float:
        """True relative spectral error of keeping ``j`` values in each of ``k`` groups.

        ``sqrt(lambda_max(sum_g E_g E_g^T)) / ||W||_2`` from the tail ``[U_g S_g]_(j:)`` of
        every group, on its smaller Gram side; computed once per ``(j, k)``.
        """
        known = self.true[k]
        value = known[min(j, len(known) - 1)]
        if value != value:  # not computed yet (NaN)
            self.evaluations += 1
            s = torch.from_numpy(self.s[k][:, j:])  # (k, m - j)
            tail = (self._vectors(k)[:, :, j:] * s).reshape(self.f, -1)  # [U_g S_g] over groups
            gram = tail.T @ tail if tail.shape[1] < self.f else tail @ tail.T
            top = float(torch.linalg.eigvalsh(gram)[-1])
            value = known[j] = math.sqrt(max(top, 0.0)) / self.norm2
        return float(value)

    def curve(self, j: int, k: int) -> float:
        """The objective error of ``(j, k)`` as a low-rank form (dense or not)."""
        if self.objective == "proxy":
            return float(self.proxy[k][min(j, self.max_rank(k))])
        return self.spectral(j, k)

    def error(self, j: int, k: int) -> float:
        """The objective error of ``(j, k)`` as chosen: 0 when it is dense."""
        return 0.0 if self.is_dense(j, k) else self.curve(j, k)

    def rank_for(self, eps: float, k: int) -> int:
        """Smallest ``j >= 1`` whose objective error is ``<= eps``.

        The proxy (a lower bound) and ``sqrt(sum_g s_(j+1)(W_g)^2)`` (an upper bound) bracket
        it, and so do the true errors already computed; the true error is monotone in ``j``, so
        a bisection in what is left finds it.
        """
        lo = max(1, int(np.count_nonzero(self.proxy[k][:-1] > eps)))
        if self.objective == "proxy":
            return lo
        hi = max(1, int(np.count_nonzero(self.upper[k][:-1] > eps)))
        known = self.true[k][lo:hi]  # narrow by the values already computed (NaN compares False)
        below = np.flatnonzero(known <= eps)
        if below.size:
            hi = lo + int(below[0])
        above = np.flatnonzero(known[: hi - lo] > eps)
        if above.size:
            lo += int(above[-1]) + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.spectral(mid, k) <= eps:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- costs -----------------------------------------------------------------------------
    def params(self, j: int, k: int) -> int:
        """Parameters of ``(j, k)``: the grouped structure's count, ``j (k f + c k1 k2)``."""
        key = (j, k)
        if key not in self._counts:
            self._counts[key] = grouped_structure(self.shape, self.legs, j, k).num_params
        return self._counts[key]

    def dense_cost(self) -> float:
        """The dense layer's cost in the measure."""
        if self.measure == "params":
            return self.dense
        assert self.pricer is not None
        return self.pricer.dense_flops if self.measure == "flops" else self.pricer.dense_seconds

    def _priced(self, j: int, k: int) -> tuple[str | None, float]:
        """The plan ``(j, k)`` runs (``None`` when only parameters count) and its cost."""
        if self.measure == "params":
            return None, self.params(j, k)
        assert self.pricer is not None
        plan, flops, seconds = self.pricer.price(j, k)
        return plan, (flops if self.measure == "flops" else seconds)

    def is_dense(self, j: int, k: int) -> bool:
        """Dense when the low-rank form is no smaller, runs the dense plan, or costs no less."""
        if self.params(j, k) >= self.dense:
            return True
        plan, value = self._priced(j, k)
        return plan == "dense" or value >= self.dense_cost()

    def cost(self, j: int, k: int) -> float:
        """Cost of ``(j, k)`` in the measure, or of the dense layer when that is not more."""
        return self.dense_cost() if self.is_dense(j, k) else self._priced(j, k)[1]

    def largest_rank(self, k: int, cap: float) -> int | None:
        """The largest ``j`` whose compressed form costs at most ``cap`` (None: not even 1)."""

        def fits(j: int) -> bool:
            return not self.is_dense(j, k) and self.cost(j, k) <= cap

        if not fits(1):
            return None
        lo, hi = 1, self.max_rank(k)
        while lo < hi:  # the cost grows with j
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def nearest_k(self, target: int) -> int:
        """The group count nearest ``target`` (the smaller on a tie)."""
        return min(self.ks, key=lambda k: (abs(k - target), k))
