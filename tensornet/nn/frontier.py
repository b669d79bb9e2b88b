"""Global choice over per-layer error-cost frontiers under one budget.

Each layer offers a Pareto frontier of candidates: costs strictly increasing, errors strictly
decreasing (:func:`pareto` builds one from any candidate list). A choice picks one point per
layer so the total cost stays within the budget. Two objectives:

- :func:`minimax`: minimise the largest layer error (the ALDS objective). Exact: the total cost
  of "the cheapest point with error ``<= e`` in every layer" falls as ``e`` grows, so a
  bisection over the sorted distinct errors of all frontiers finds the smallest feasible level.
  What is left of the budget is then spent on the layer with the largest error, one frontier
  step at a time (the largest error never grows).
- :func:`weighted_sum`: minimise ``sum_l w_l e_l^2``. The Lagrangian relaxation of this
  multiple-choice knapsack is solved exactly on each frontier's lower convex hull (the greedy
  over hull segments by error drop per unit cost; its fractional last step is the Lagrangian /
  LP bound, a lower bound of the optimum); what that leaves of the budget is then spent
  greedily on any frontier point that still fits, the largest drop per unit cost first. The
  result reports the bound, so its optimality gap is known.

Costs are any non-negative numbers (parameters, FLOPs, seconds); nothing here knows of layers.

Examples
--------
>>> costs = [[1.0, 2.0, 4.0], [1.0, 3.0]]
>>> errors = [[0.5, 0.2, 0.0], [0.4, 0.1]]
>>> minimax(costs, errors, 5.0).picks
(1, 1)
>>> weighted_sum(costs, errors, 5.0).picks
(1, 1)
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Choice", "minimax", "pareto", "weighted_sum"]


@dataclass(frozen=True)
class Choice:
    """One point per layer (``picks``: indices into each frontier) and what it reaches.

    ``objective`` is the objective's value (the largest error, or ``sum w e^2``); ``bound`` a
    lower bound of the optimum (the optimum itself for :func:`minimax`); ``gap`` is
    ``objective - bound`` (0: proven optimal).
    """

    picks: tuple[int, ...]
    cost: float
    objective: float
    bound: float

    @property
    def gap(self) -> float:
        """``objective - bound``: how far from optimal the choice can be, at most."""
        return max(self.objective - self.bound, 0.0)


def pareto(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the Pareto frontier, cheapest first (cost up, error strictly down).

    Among equal points the first listed is kept.

    Examples
    --------
    >>> pareto([3, 1, 2, 2, 5], [0.1, 0.5, 0.3, 0.2, 0.1])
    [1, 3, 0]
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], errors[i], i))
    kept: list[int] = []
    for i in order:
        if not kept or errors[i] < errors[kept[-1]]:
            if kept and costs[kept[-1]] == costs[i]:
                kept.pop()  # same cost, less error: the new point dominates
            kept.append(i)
    return kept


def _check(costs: Sequence[Sequence[float]], errors: Sequence[Sequence[float]]) -> None:
    if len(costs) != len(errors) or not costs:
        raise ValueError("frontier: give one (non-empty) frontier of costs and errors per layer")
    for c, e in zip(costs, errors):
        if len(c) != len(e) or not len(c):
            raise ValueError("frontier: every frontier needs as many costs as errors (>= 1)")
        if any(b <= a for a, b in zip(c, c[1:])) or any(b >= a for a, b in zip(e, e[1:])):
            raise ValueError("frontier: costs must increase and errors decrease along a frontier")


def _infeasible(least: float, budget: float) -> ValueError:
    return ValueError(f"frontier: the budget {budget:.6g} is below the cheapest choice {least:.6g}")


def minimax(
    costs: Sequence[Sequence[float]], errors: Sequence[Sequence[float]], budget: float
) -> Choice:
    """The choice with the least largest error within ``budget`` (exact), leftover spent.

    Examples
    --------
    >>> minimax([[1, 2], [1, 2]], [[0.3, 0.1], [0.2, 0.0]], 3).picks  # lower the worst layer
    (1, 0)
    """
    _check(costs, errors)
    least = sum(c[0] for c in costs)
    if least > budget:
        raise _infeasible(least, budget)

    def picks_at(level: float) -> list[int]:  # the cheapest point with error <= level
        return [int(np.count_nonzero(np.asarray(e) > level)) for e in errors]

    def total(picks: list[int]) -> float:
        return sum(c[i] for c, i in zip(costs, picks))

    floor = max(e[-1] for e in errors)  # below it some layer has no point
    levels = sorted({float(x) for e in errors for x in e if x >= floor})
    lo, hi = 0, len(levels) - 1  # the top level (every layer's first error) fits: least
    while lo < hi:
        mid = (lo + hi) // 2
        if total(picks_at(levels[mid])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    best = levels[lo]
    picks = _spend(costs, errors, picks_at(best), budget)
    return Choice(tuple(picks), total(picks), best, best)


def _spend(costs, errors, picks: list[int], budget: float) -> list[int]:
    """Upgrade the layer with the largest error one step at a time while the budget allows."""
    spent = sum(c[i] for c, i in zip(costs, picks))
    heap = [(-errors[k][i], k) for k, i in enumerate(picks) if i + 1 < len(costs[k])]
    heapq.heapify(heap)
    while heap:
        _, k = heapq.heappop(heap)
        i = picks[k]
        step = costs[k][i + 1] - costs[k][i]
        if spent + step <= budget:
            picks[k], spent = i + 1, spent + step
            if i + 2 < len(costs[k]):
                heapq.heappush(heap, (-errors[k][i + 1], k))
    return picks


def _hull(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the lower convex hull of a frontier (cost up, value down), cheapest first."""
    hull: list[int] = []
    for i in range(len(cost)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies above the segment a -> i: not on the lower hull (a point on it is kept,
            # so a layer may take part of a straight run of its frontier)
            if (value[b] - value[a]) * (cost[i] - cost[a]) > (value[i] - value[a]) * (
                cost[b] - cost[a]
            ):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def weighted_sum(
    costs: Sequence[Sequence[float]],
    errors: Sequence[Sequence[float]],
    budget: float,
    weights: Sequence[float] | None = None,
) -> Choice:
    """A choice minimising ``sum_l w_l e_l^2`` within ``budget``, with its Lagrangian bound.

    Examples
    --------
    >>> c = weighted_sum([[1, 2, 3], [1, 2]], [[0.9, 0.5, 0.0], [0.5, 0.0]], 4)
    >>> c.picks, round(c.objective, 2), c.gap
    ((2, 0), 0.25, 0.0)
    """
    _check(costs, errors)
    weights = [1.0] * len(costs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(costs) or any(not w > 0 for w in weights):
        raise ValueError("frontier: weights must be one positive number per layer")
    values = [[w * x * x for x in e] for w, e in zip(weights, errors)]
    least = sum(c[0] for c in costs)
    if least > budget:
        raise _infeasible(least, budget)
    picks = [0] * len(costs)
    segments = []  # (-drop per unit cost, layer, from, to) along each hull
    for k, (c, v) in enumerate(zip(costs, values)):
        hull = _hull(c, v)
        for a, b in zip(hull, hull[1:]):
            segments.append(((v[b] - v[a]) / (c[b] - c[a]), k, a, b))
    segments.sort()
    spent, bound = least, None
    for slope, k, a, b in segments:
        step = costs[k][b] - costs[k][a]
        if spent + step > budget:  # the LP optimum takes this segment in part: the bound
            bound = _value(values, picks) + slope * (budget - spent)
            break
        picks[k], spent = b, spent + step
    picks = _repair(costs, values, picks, budget)
    objective = _value(values, picks)
    return Choice(
        tuple(picks), _cost(costs, picks), objective, objective if bound is None else bound
    )


def _value(values, picks) -> float:
    return float(sum(v[i] for v, i in zip(values, picks)))


def _cost(costs, picks) -> float:
    return float(sum(c[i] for c, i in zip(costs, picks)))


def _repair(costs, values, picks: list[int], budget: float) -> list[int]:
    """Spend the leftover: the upgrade (any frontier point) with the best drop per unit cost."""
    picks = list(picks)
    spent = _cost(costs, picks)
    while True:
        best = None
        for k, (c, v) in enumerate(zip(costs, values)):
            i = picks[k]
            top = bisect.bisect_right(c, c[i] + budget - spent) - 1  # dearest point that fits
            for j in range(i + 1, top + 1):
                gain = (v[i] - v[j]) / (c[j] - c[i])
                if best is None or gain > best[0]:
                    best = (gain, k, j)
        if best is None:
            return picks
        _, k, j = best
        spent += costs[k][j] - costs[k][picks[k]]
        picks[k] = j
