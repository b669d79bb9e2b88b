"""Global rank allocation under a parameter or FLOP budget: uniform, energy and ALDS.

Every chosen layer ``W (f, c, k1, k2)`` (a linear layer is ``k1 = k2 = 1``) is considered in the
channel-grouped low-rank format of :class:`~tensornet.formats.Grouped`: ``k`` groups of input
channels (``k`` divides ``c``), rank ``j`` in every group, ``j (k f + c k1 k2)`` parameters (and
that many multiply-adds per output position). Its error is measured as in ALDS (Liebenwein et
al. 2021): ``eps(j) = max_g sigma_{j+1}(W_g) / ||W||_2``, a relative operator-norm error whose
true value lies between ``eps`` and ``sqrt(k) eps`` (Eckart-Young-Mirsky per group). A layer
stays dense where the compressed form would not be smaller.

Methods
-------
- ``"uniform"``: one rank ratio for every layer (``j = ratio * min(f, c k1 k2)``, ``k = 1``);
- ``"energy"``: one energy threshold: each layer keeps the fewest singular values holding that
  fraction of ``sum s^2`` (``k = 1``);
- ``"alds"``: one global error threshold, found by root finding so the total meets the budget
  (which minimises the largest layer error for the given group counts), alternated with a local
  step that, per layer and at fixed parameter count, tries every divisor ``k`` and keeps the
  least error; run from several seeds (``k`` near 1, 3, 5, 7, 9 everywhere, then random) and the
  best result kept. Leftover budget is spent on the layers with the largest errors.

The budget is a fraction of the whole model's parameters (or of its conv/linear FLOPs) in
``(0, 1]``, or an absolute count above 1. The result is an :class:`Allocation`; apply it with
``compress(model, allocation=...)``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .compress import layer_inputs
from .select import Selector, select_layers

__all__ = ["Allocation", "LayerChoice", "allocate"]

METHODS = ("uniform", "energy", "alds")
MEASURES = ("params", "flops")


@dataclass(frozen=True)
class LayerChoice:
    """The format and ranks chosen for one layer, with its predicted cost and error."""

    name: str
    format: str  # "grouped" or "dense"
    ranks: tuple[int, ...]
    groups: int
    params: int
    flops: int | None
    error: float
    dense_params: int

    @property
    def options(self) -> dict[str, Any]:
        """The options that, with shape, legs and ranks, rebuild the structure."""
        return {"channel_groups": self.groups} if self.format == "grouped" else {}


@dataclass
class Allocation:
    """Per-layer choices of a global allocation, and the totals it reaches."""

    method: str
    measure: str
    budget: float
    layers: dict[str, LayerChoice]
    total_params: int
    total_flops: int | None
    model_params: int
    model_flops: int | None
    history: list[float] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        """The largest predicted layer error."""
        return max(c.error for c in self.layers.values())

    @property
    def total(self) -> int:
        """The allocation's total in its measure (parameters or FLOPs)."""
        return self.total_params if self.measure == "params" else int(self.total_flops or 0)

    def __str__(self) -> str:
        lines = [f"{'layer':<24} {'k':>3} {'j':>5} {'params':>10} {'error':>8}"]
        for c in self.layers.values():
            j = c.ranks[0] if c.ranks else "-"
            lines.append(f"{c.name:<24} {c.groups:>3} {j:>5} {c.params:>10,} {c.error:>8.4f}")
        lines.append(
            f"{self.method} ({self.measure}): total {self.total:,} of budget {self.budget:,.0f}; "
            f"max error {self.max_error:.4f}"
        )
        return "\n".join(lines)


class _Layer:
    """Spectra of one layer for every divisor ``k`` of its input channels."""

    def __init__(self, name: str, weight: torch.Tensor, positions: int, max_groups: int):
        w = weight.detach().double().cpu()
        self.name = name
        self.f, self.c = w.shape[0], w.shape[1]
        self.rest = math.prod(w.shape[2:])
        self.dense = w.numel()
        self.positions = positions
        self.norm2 = float(torch.linalg.matrix_norm(w.reshape(self.f, -1), ord=2))
        self.ks = [k for k in range(1, min(self.c, max_groups) + 1) if self.c % k == 0]
        # e[k][j]: error of keeping j values in every group (j = 0 .. m_k), descending, e[-1] = 0
        self.errors: dict[int, np.ndarray] = {}
        self.energy: np.ndarray | None = None
        for k in self.ks:
            mats = w.reshape(self.f, k, self.c // k, self.rest).movedim(1, 0).reshape(k, self.f, -1)
            s = torch.linalg.svdvals(mats)  # (k, m)
            top = s.max(dim=0).values.numpy()
            scale = self.norm2 if self.norm2 > 0 else 1.0
            self.errors[k] = np.concatenate([top / scale, [0.0]])
            if k == 1:
                s2 = s[0].square().numpy()
                total = s2.sum()
                self.energy = np.cumsum(s2) / total if total > 0 else np.ones_like(s2)

    def max_rank(self, k: int) -> int:
        return len(self.errors[k]) - 1

    def params(self, j: int, k: int) -> int:
        return j * (k * self.f + self.c * self.rest)

    def cost(self, j: int, k: int, measure: str) -> int:
        """Cost of (j, k), or of the dense layer when that is not smaller."""
        p = min(self.params(j, k), self.dense)
        return p * self.positions if measure == "flops" else p

    def is_dense(self, j: int, k: int) -> bool:
        return self.params(j, k) >= self.dense

    def error(self, j: int, k: int) -> float:
        if self.is_dense(j, k):
            return 0.0
        return float(self.errors[k][min(j, self.max_rank(k))])

    def rank_for(self, eps: float, k: int) -> int:
        """Smallest j >= 1 with error <= eps."""
        e = self.errors[k]
        return max(1, int(np.count_nonzero(e[:-1] > eps)))

    def nearest_k(self, target: int) -> int:
        return min(self.ks, key=lambda k: (abs(k - target), k))


def _global(layers: list[_Layer], ks: list[int], budget: float, measure: str) -> list[int] | None:
    """Ranks from the smallest common error threshold that fits the budget (None: none fits)."""
    candidates = np.unique(np.concatenate([layer.errors[k] for layer, k in zip(layers, ks)]))

    def ranks(eps: float) -> list[int]:
        return [layer.rank_for(eps, k) for layer, k in zip(layers, ks)]

    def total(js: list[int]) -> int:
        return sum(layer.cost(j, k, measure) for layer, j, k in zip(layers, js, ks))

    lo, hi = 0, len(candidates) - 1  # candidates ascending; the largest eps gives rank 1
    if total(ranks(candidates[hi])) > budget:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if total(ranks(candidates[mid])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return _fill(layers, ranks(candidates[lo]), ks, budget, measure)


def _fill(layers, js, ks, budget, measure, by_error: bool = True) -> list[int]:
    """Spend what is left of the budget one rank at a time.

    On the layer with the largest error (ALDS), or round-robin over the layers in model order
    (keeps uniform allocations uniform).
    """
    js = list(js)
    spent = sum(layer.cost(j, k, measure) for layer, j, k in zip(layers, js, ks))
    heap = [
        (-layer.error(j, k) if by_error else (0, i), i)
        for i, (layer, j, k) in enumerate(zip(layers, js, ks))
    ]
    heapq.heapify(heap)
    while heap:
        key, i = heapq.heappop(heap)
        layer, j, k = layers[i], js[i], ks[i]
        if layer.is_dense(j, k) or layer.error(j, k) == 0.0:
            continue
        step = layer.cost(j + 1, k, measure) - layer.cost(j, k, measure)
        if spent + step <= budget:
            js[i] = j + 1
            spent += step
            heapq.heappush(heap, (-layer.error(j + 1, k) if by_error else (key[0] + 1, i), i))
    return js


def _local(layers, js, ks, measure) -> list[int]:
    """Per layer, at its current cost, the group count with the least error."""
    out = []
    for layer, j, k in zip(layers, js, ks):
        if layer.is_dense(j, k):
            out.append(k)
            continue
        cap = layer.cost(j, k, measure)
        best = (layer.error(j, k), k)
        for k2 in layer.ks:
            per = layer.cost(1, k2, measure)
            j2 = int(cap // per) if per > 0 else 0
            if j2 < 1 or layer.is_dense(j2, k2):
                continue
            best = min(best, (layer.error(j2, k2), k2))
        out.append(best[1])
    return out


def _alds(layers, budget, measure, iterations, seeds, rng) -> tuple[list[int], list[int], list]:
    starts = [[layer.nearest_k(t) for layer in layers] for t in (1, 3, 5, 7, 9)]
    for _ in range(seeds):
        starts.append([int(rng.choice(layer.ks)) for layer in layers])
    best = None
    history = []
    for ks in starts:
        js = _global(layers, ks, budget, measure)
        if js is None:
            continue
        # every iterate is a feasible allocation: keep the best one seen, not only the last
        start_best = (max(layer.error(j, k) for layer, j, k in zip(layers, js, ks)), js, ks)
        for _ in range(iterations):
            new_ks = _local(layers, js, ks, measure)
            new_js = _global(layers, new_ks, budget, measure)
            if new_js is None:
                break
            ks, js = new_ks, new_js
            err = max(layer.error(j, k) for layer, j, k in zip(layers, js, ks))
            if err < start_best[0]:
                start_best = (err, js, ks)
        history.append(start_best[0])
        if best is None or start_best[0] < best[0]:
            best = start_best
    if best is None:
        raise ValueError("allocate: the budget is below what rank 1 in every layer needs")
    return best[1], best[2], history


def _ratio_search(layers, budget, measure, ranks_at) -> list[int]:
    """Largest parameter t in [0, 1] whose ranks ``ranks_at(t)`` fit the budget (bisection)."""

    def total(t):
        return sum(layer.cost(j, 1, measure) for layer, j in zip(layers, ranks_at(t)))

    if total(0.0) > budget:
        raise ValueError("allocate: the budget is below what rank 1 in every layer needs")
    lo, hi = 0.0, 1.0
    if total(hi) > budget:
        for _ in range(60):
            mid = (lo + hi) / 2
            if total(mid) <= budget:
                lo = mid
            else:
                hi = mid
    else:
        lo = hi
    return _fill(layers, ranks_at(lo), [1] * len(layers), budget, measure, by_error=False)


def allocate(
    model: nn.Module,
    budget: float,
    method: str = "alds",
    measure: str = "params",
    layers: Selector = None,
    *,
    skip: Sequence[str] = ("first", "last"),
    example_input: torch.Tensor | None = None,
    iterations: int = 4,
    seeds: int = 4,
    max_groups: int = 64,
    seed: int = 0,
) -> Allocation:
    """Choose per-layer ranks (and ALDS group counts) so the model meets ``budget``.

    Parameters
    ----------
    model : nn.Module
        A trained model (its conv/linear weights are analysed, not changed).
    budget : float
        In ``(0, 1]``: fraction of the model's parameters (``measure="params"``) or of its
        conv/linear FLOPs (``"flops"``); above 1: an absolute count.
    method : {"uniform", "energy", "alds"}
    measure : {"params", "flops"}
        FLOPs need ``example_input`` (an input batch, for the layers' output sizes).
    layers, skip
        Which layers may be compressed (see :func:`~tensornet.nn.select.select_layers`).
    iterations, seeds, seed
        ALDS: global/local alternations per start, random starts, their seed.
    max_groups : int
        ALDS: the largest group count tried.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 32, 3),
    ...                     nn.Conv2d(32, 8, 1))
    >>> alloc = allocate(net, 0.5, "alds")
    >>> alloc.total_params <= 0.5 * sum(p.numel() for p in net.parameters())
    True
    """
    if method not in METHODS:
        raise ValueError(f"allocate: method must be one of {METHODS}, got {method!r}")
    if measure not in MEASURES:
        raise ValueError(f"allocate: measure must be one of {MEASURES}, got {measure!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(
            f"allocate: budget must be a fraction in (0, 1] or a count > 1, got {budget!r}"
        )
    if measure == "flops" and example_input is None:
        raise ValueError("allocate: measure='flops' needs example_input (an input batch)")
    from .compress import dense_flops

    names = select_layers(model, layers, skip)
    all_layers = select_layers(model, None, (), strict=False, include_unsupported=True)
    shapes = {}
    if example_input is not None:
        shapes = layer_inputs(model, example_input, all_layers)
    model_params = sum(p.numel() for p in model.parameters())
    model_flops = None
    if shapes:
        model_flops = sum(
            dense_flops(model.get_submodule(n), shapes[n]) for n in all_layers if n in shapes
        )
    specs = []
    for name in names:
        module = model.get_submodule(name)
        positions = 1
        if name in shapes:
            per_weight = module.weight.numel()
            positions = dense_flops(module, shapes[name]) // (2 * per_weight)
        specs.append(_Layer(name, module.weight, positions, max_groups))
    # Costs are counted in parameters, or in multiply-adds (FLOPs / 2) for measure="flops".
    whole = model_params if measure == "params" else model_flops / 2
    absolute = budget * whole if budget <= 1 else float(budget) / (2 if measure == "flops" else 1)
    fixed = whole - sum(s.dense * (s.positions if measure == "flops" else 1) for s in specs)
    room = absolute - fixed
    least = sum(s.cost(1, 1, measure) for s in specs)
    if room < least:
        unit = "parameters" if measure == "params" else "multiply-adds"
        raise ValueError(
            f"allocate: the budget ({absolute:,.0f} {unit}) is below what the model needs at "
            f"rank 1 in every chosen layer ({fixed + least:,.0f}: {fixed:,.0f} in the layers "
            "and parameters that are not compressed)"
        )
    history: list[float] = []
    if method == "alds":
        js, ks, history = _alds(
            specs, room, measure, iterations, seeds, np.random.default_rng(seed)
        )
    elif method == "uniform":

        def uniform(t):
            return [max(1, round(t * s.max_rank(1))) for s in specs]

        js, ks = _ratio_search(specs, room, measure, uniform), [1] * len(specs)
    else:

        def energy(t):
            return [max(1, int(np.searchsorted(s.energy, t - 1e-15)) + 1) for s in specs]

        js, ks = _ratio_search(specs, room, measure, energy), [1] * len(specs)
    choices = {}
    total_params = model_params - sum(s.dense for s in specs)
    total_flops = None if model_flops is None else model_flops
    for s, j, k in zip(specs, js, ks):
        dense = s.is_dense(j, k)
        params = s.dense if dense else s.params(j, k)
        total_params += params
        flops = None
        if model_flops is not None:
            flops = 2 * params * s.positions
            total_flops += flops - 2 * s.dense * s.positions
        choices[s.name] = LayerChoice(
            s.name,
            "dense" if dense else "grouped",
            () if dense else (j,),
            1 if dense else k,
            params,
            flops,
            s.error(j, k),
            s.dense,
        )
    return Allocation(
        method,
        measure,
        absolute * (2 if measure == "flops" else 1),
        choices,
        total_params,
        total_flops,
        model_params,
        model_flops,
        history,
    )
