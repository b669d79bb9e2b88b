"""``allocate(method="auto")``: per layer the format, ranks and options, under one global budget.

For every chosen layer :func:`layer_frontier` lists the candidates
(:func:`~tensornet.nn.alloc_candidates.weight_candidates`: the dense layer and every format
that fits it at a grid of ranks, each with its true weight error), prices them in the
allocation's measure and keeps the Pareto frontier of error against cost. :func:`choose` then
picks one point per layer within the budget (:mod:`tensornet.nn.frontier`).

Prices: ``"params"`` is the structure's exact parameter count; ``"flops"`` and ``"time"`` are the
FLOPs and estimated seconds of the forward plan the cost model runs for the candidate at the
layer's input (:mod:`tensornet.nn.cost`, as ``alds`` prices grouped low rank). Only the
candidates on their family's frontier of error against parameters are priced (within one
format and options, a larger rank costs more to run): pricing every grid point would take
seconds per layer, so a family keeps at most :data:`MOST_PRICED` of them, evenly spaced.

Errors: by default each candidate's relative Frobenius weight error. An ``errors`` function
replaces it: ``errors(name, module, candidates) -> sequence of float``, one error per candidate
(the dense one included), called once per layer with every family's frontier candidates (by
weight error and parameters). :func:`~tensornet.nn.alloc_candidates.candidate_kernel` gives the
kernel ``compress`` would build for a candidate, e.g. to measure the relative error of the
layer's output on a few input batches instead. The frontier and the global choice then use
those errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..formats.steps import shared_steps
from . import cost
from .alloc_candidates import (
    AUTO_FORMATS,
    Candidate,
    candidate_kernel,
    family_frontiers,
    weight_candidates,
)
from .alloc_layer import layer_seconds
from .frontier import Choice, minimax, pareto, weighted_sum
from .measure import candidates, dense_flops, kernel_errors, kernel_legs

__all__ = [
    "OBJECTIVES",
    "ErrorFn",
    "LayerFrontier",
    "check_formats",
    "choose",
    "chosen_errors",
    "layer_frontier",
    "price",
    "thinned",
]

#: Per family, the most candidates priced by the cost model for FLOPs and time (each costs
#: milliseconds): the family's frontier by parameters, thinned evenly.
MOST_PRICED = 24

#: The global objectives of ``auto``: the weighted sum of squared errors, the largest error.
OBJECTIVES = ("sum", "max")

ErrorFn = Callable[[str, nn.Module, Sequence[Candidate]], Sequence[float]]


@dataclass(frozen=True)
class LayerFrontier:
    """One layer's candidates on the Pareto frontier of error against cost, cheapest first.

    ``dense`` is the dense layer as a (priced) candidate; ``shape`` the layer's input shape
    (``None`` without an example input).
    """

    name: str
    dense: Candidate
    frontier: tuple[Candidate, ...]
    shape: tuple[int, ...] | None = None

    @property
    def costs(self) -> list[float]:
        """The frontier's costs, increasing."""
        return [c.cost for c in self.frontier]

    @property
    def errors(self) -> list[float]:
        """The frontier's errors, decreasing."""
        return [c.error for c in self.frontier]


def check_formats(formats: Any) -> tuple[str, ...]:
    """``formats`` as a tuple of names ``auto`` knows (None: all of :data:`AUTO_FORMATS`)."""
    if formats is None:
        return AUTO_FORMATS
    if isinstance(formats, str):
        formats = (formats,)
    try:
        names = tuple(formats)
    except TypeError:
        raise TypeError(f"allocate: formats must be a sequence of names, got {formats!r}") from None
    unknown = [f for f in names if f not in AUTO_FORMATS]
    if unknown or not names:
        raise ValueError(
            f"allocate: formats must be a non-empty selection of {AUTO_FORMATS}, got {formats!r}"
        )
    return tuple(dict.fromkeys(names))


class _Prices:
    """The cost model's plan, FLOPs and seconds of candidates of one layer at one input."""

    def __init__(self, module: nn.Module, shape: tuple[int, ...]) -> None:
        w = module.weight
        self.module, self.shape = module, tuple(shape)
        self.device_type, self.itemsize = w.device.type, w.element_size()
        self.table = cost.costs_for(self.device_type)
        self.legs, self.kernel_shape = kernel_legs(module)

    def __call__(self, c: Candidate) -> Candidate:
        if c.format == "dense":
            flops = dense_flops(self.module, self.shape)
            return replace(c, flops=flops, seconds=layer_seconds(self.module, self.shape))
        from ..formats import get_format

        structure = get_format(c.format).structure_for(
            self.kernel_shape, c.ranks, legs=self.legs, **dict(c.options)
        )
        plans = candidates(self.module, structure, self.shape, self.device_type)
        best = cost.choose(plans, self.device_type, self.itemsize, self.table)
        return replace(
            c, flops=int(best.flops), seconds=float(best.cost["seconds"]), plan=best.name
        )


def price(module: nn.Module, shape: tuple[int, ...] | None, c: Candidate) -> Candidate:
    """``c`` with the plan, FLOPs and seconds the cost model gives it at input ``shape``.

    Examples
    --------
    >>> from torch import nn
    >>> c = price(nn.Linear(8, 8), (4, 8), Candidate("svd", (2,), (), 32, 0.5))
    >>> c.flops, c.plan is not None  # 2 FLOPs per multiply-add: 2 * 4 * (8 * 2 + 2 * 8)
    (256, True)
    """
    return c if shape is None else _Prices(module, shape)(c)


def thinned(found: Sequence[Candidate], most: int = MOST_PRICED) -> list[Candidate]:
    """At most ``most`` candidates per family, evenly spaced in their order by parameters.

    The cheapest and the largest of each family are always kept.

    Examples
    --------
    >>> found = [Candidate("svd", (r,), (), 10 * r, 1 / r) for r in range(1, 11)]
    >>> [c.ranks[0] for c in thinned(found, 4)]
    [1, 4, 7, 10]
    """
    families: dict[Any, list[Candidate]] = {}
    for c in found:
        families.setdefault(c.family, []).append(c)
    out = []
    for members in families.values():
        members.sort(key=lambda c: c.params)
        if len(members) > most:
            picks = np.unique(np.linspace(0, len(members) - 1, most).round().astype(int))
            members = [members[i] for i in picks]
        out += members
    return out


def _measured(c: Candidate, measure: str) -> Candidate:
    value = {"params": c.params, "flops": c.flops, "time": c.seconds}[measure]
    return replace(c, cost=float(value))


def layer_frontier(
    name: str,
    module: nn.Module,
    shape: tuple[int, ...] | None,
    measure: str,
    formats: Sequence[str] = AUTO_FORMATS,
    max_groups: int = 64,
    errors: ErrorFn | None = None,
) -> LayerFrontier:
    """The layer's candidates priced in ``measure`` and their Pareto frontier (error vs cost).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> f = layer_frontier("fc", nn.Linear(16, 16), None, "params", ("svd",))
    >>> [c.format for c in f.frontier][-1], f.frontier[-1].error  # dense: the exact end
    ('dense', 0.0)
    >>> all(a.cost < b.cost and a.error > b.error for a, b in zip(f.frontier, f.frontier[1:]))
    True
    """
    with shared_steps():  # the candidates' decompositions (and the errors') share their SVDs
        found = weight_candidates(module, formats, max_groups)
        if errors is not None:
            found = family_frontiers(_rescored(name, module, found, errors))
    if measure != "params":
        prices = _Prices(module, shape)
        found = [prices(c) for c in thinned(found)]
    found = [_measured(c, measure) for c in found]
    dense = found[0]
    keep = pareto([c.cost for c in found], [c.error for c in found])
    return LayerFrontier(name, dense, tuple(found[i] for i in keep), shape)


def _rescored(
    name: str, module: nn.Module, found: list[Candidate], errors: ErrorFn
) -> list[Candidate]:
    values = list(errors(name, module, found))
    if len(values) != len(found):
        raise ValueError(
            f"allocate: errors returned {len(values)} values for layer {name!r}, expected "
            f"{len(found)} (one per candidate)"
        )
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(
                f"allocate: errors must return finite numbers >= 0 for layer {name!r}, got {v!r}"
            )
    return [c.with_error(v) for c, v in zip(found, values)]


def choose(
    layers: Sequence[LayerFrontier],
    room: float,
    objective: str,
    weights: Mapping[str, float] | None = None,
) -> Choice:
    """One frontier point per layer within ``room``: ``"max"`` exact, ``"sum"`` with its bound.

    Examples
    --------
    >>> a = Candidate("svd", (1,), (), 10, 0.5, cost=10.0)
    >>> d = Candidate("dense", (), (), 40, 0.0, cost=40.0)
    >>> f = LayerFrontier("x", d, (a, d))
    >>> choose([f, f], 50, "max").picks, choose([f, f], 50, "sum").picks
    ((1, 0), (1, 0))
    """
    costs = [f.costs for f in layers]
    errors = [f.errors for f in layers]
    if objective == "max":
        return minimax(costs, errors, room)
    w = None if weights is None else [float(weights.get(f.name, 1.0)) for f in layers]
    return weighted_sum(costs, errors, room, w)


def chosen_errors(module: nn.Module, c: Candidate) -> tuple[float, float]:
    """True relative (Frobenius, spectral) errors of the kernel ``compress`` builds for ``c``."""
    if c.format == "dense":
        return 0.0, 0.0
    with torch.no_grad():
        return kernel_errors(module.weight, candidate_kernel(module, c))
