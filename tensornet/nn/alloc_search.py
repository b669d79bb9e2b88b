"""The allocation searches over :class:`~tensornet.nn.alloc_layer.GroupedLayer` s.

Each method takes the layers and the budget left for them (in the layers' measure) and returns
the rank ``j`` and group count ``k`` of every layer, and the history of its starts:

- :func:`uniform` and :func:`energy`: one parameter ``t`` (a rank ratio or an energy
  threshold) found by bisection, then the leftover spent round-robin, ``k = 1``;
- :func:`alds`: a global step (one error threshold, by bisection) alternated with a local step
  (per layer, the group count with the least error at its cost), from several starts.

:data:`SEARCHES` maps each method's name to its search.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np

from .alloc_layer import GroupedLayer

__all__ = ["SEARCHES", "alds", "energy", "progress", "uniform"]

Result = tuple[list[int], list[int], list[float]]


def _total(layers, js, ks) -> float:
    return sum(layer.cost(j, k) for layer, j, k in zip(layers, js, ks))


def _global(layers: list[GroupedLayer], ks: list[int], budget: float) -> list[int] | None:
    """Ranks from the smallest common error threshold that fits the budget (None: none fits)."""

    def ranks(eps: float) -> list[int]:
        return [layer.rank_for(eps, k) for layer, k in zip(layers, ks)]

    top = max(layer.curve(1, k) for layer, k in zip(layers, ks))
    ones = ranks(top)  # rank 1 everywhere
    if _total(layers, ones, ks) > budget:
        return None
    lo_js = ranks(0.0)
    if _total(layers, lo_js, ks) <= budget:
        return _fill(layers, lo_js, ks, budget)
    hi_js = _bisect(layers, ks, budget, ranks, 0.0, top, lo_js, ones)
    return _fill(layers, hi_js, ks, budget)


def _bisect(layers, ks, budget, ranks, lo, hi, lo_js, hi_js) -> list[int]:
    """The ranks of the smallest threshold in ``[lo, hi]`` within budget (bisection).

    ``ranks(lo)`` is over budget and ``ranks(hi)`` within it. It stops when the ranks at the
    two ends differ by one rank of one layer (nothing lies between), else at float resolution.
    """
    for _ in range(200):
        gaps = [a - b for a, b in zip(lo_js, hi_js) if a != b]
        mid = 0.5 * (lo + hi)
        if gaps == [1] or not lo < mid < hi:
            break
        mid_js = ranks(mid)
        if _total(layers, mid_js, ks) <= budget:
            hi, hi_js = mid, mid_js
        else:
            lo, lo_js = mid, mid_js
    return hi_js


def _fill(layers, js, ks, budget, by_error: bool = True) -> list[int]:
    """Spend what is left of the budget one rank at a time.

    On the layer with the largest error (ALDS), or round-robin over the layers in model order
    (keeps uniform allocations uniform).
    """
    js = list(js)
    spent = _total(layers, js, ks)
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
        step = layer.cost(j + 1, k) - layer.cost(j, k)
        if spent + step <= budget:
            js[i] = j + 1
            spent += step
            heapq.heappush(heap, (-layer.error(j + 1, k) if by_error else (key[0] + 1, i), i))
    return js


def _local(layers, js, ks) -> tuple[list[int], list[int]]:
    """Per layer, at no more than its current cost, the ``(j, k)`` with the least error.

    Ties keep the smaller group count; the current choice is a candidate, so no layer's error
    grows and no cost grows.
    """
    out_js, out_ks = [], []
    for layer, j, k in zip(layers, js, ks):
        best = (layer.error(j, k), k, j)
        if not layer.is_dense(j, k):
            cap = layer.cost(j, k)
            found = [(k2, layer.largest_rank(k2, cap)) for k2 in layer.ks]
            # the proxy bounds the error from below: most promising first, stop at what
            # cannot win
            for low, k2, j2 in sorted((layer.proxy[k2][j2], k2, j2) for k2, j2 in found if j2):
                if low > best[0]:
                    break
                best = min(best, (layer.error(j2, k2), k2, j2))
        out_ks.append(best[1])
        out_js.append(best[2])
    return out_js, out_ks


def _max_error(layers, js, ks) -> float:
    return max(layer.error(j, k) for layer, j, k in zip(layers, js, ks))


def alds(
    layers: list[GroupedLayer], budget: float, *, iterations: int, seeds: int, seed: int, show: bool
) -> Result:
    """ALDS: global and local steps alternated from several starts; the best result kept."""
    rng = np.random.default_rng(seed)
    starts = [[layer.nearest_k(t) for layer in layers] for t in (1, 3, 5, 7, 9)]
    for _ in range(seeds):
        starts.append([int(rng.choice(layer.ks)) for layer in layers])
    best = None
    history = []
    solved: dict[tuple[int, ...], list[int] | None] = {}

    def solve(ks: list[int]) -> list[int] | None:  # the global step is a function of ks
        key = tuple(ks)
        if key not in solved:
            solved[key] = _global(layers, ks, budget)
        return solved[key]

    for ks in progress(starts, show, "allocate: alds starts"):
        js = solve(ks)
        if js is None:
            continue
        # every iterate is a feasible allocation: keep the best one seen, not only the last
        start_best = (_max_error(layers, js, ks), js, ks)
        for _ in range(iterations):
            new_ks = _local(layers, js, ks)[1]
            new_js = solve(new_ks)
            if new_js is None:
                break
            ks, js = new_ks, new_js
            err = _max_error(layers, js, ks)
            if err < start_best[0]:
                start_best = (err, js, ks)
        history.append(start_best[0])
        if best is None or start_best[0] < best[0]:
            best = start_best
    assert best is not None  # the k = 1 start fits: allocate checked rank 1 with k = 1
    # every group count the best at its layer's cost, leftover spent, and again
    js, ks = _local(layers, best[1], best[2])
    js = _fill(layers, js, ks, budget)
    js, ks = _local(layers, js, ks)
    return js, ks, history


def _ratio_search(
    layers: list[GroupedLayer], budget: float, ranks_at: Callable[[float], list[int]]
) -> list[int]:
    """Largest parameter t in [0, 1] whose ranks ``ranks_at(t)`` fit the budget (bisection)."""
    ones = [1] * len(layers)

    def total(t):
        return _total(layers, ranks_at(t), ones)

    lo, hi = 0.0, 1.0  # t = 0 is rank 1 everywhere, which allocate checked fits
    if total(hi) > budget:
        for _ in range(60):
            mid = (lo + hi) / 2
            if total(mid) <= budget:
                lo = mid
            else:
                hi = mid
    else:
        lo = hi
    return _fill(layers, ranks_at(lo), ones, budget, by_error=False)


def uniform(layers: list[GroupedLayer], budget: float, **_: Any) -> Result:
    """One rank ratio ``t`` for every layer (``j = t * min(f, c k1 k2)``, ``k = 1``).

    Examples
    --------
    >>> from torch import nn
    >>> layers = [GroupedLayer(n, nn.Linear(16, 16), [1], "params", "true", None) for n in "ab"]
    >>> uniform(layers, 2 * 4 * 32)  # 4 of 16 ranks in each: j (f + c) = 128 parameters
    ([4, 4], [1, 1], [])
    """

    def ranks_at(t: float) -> list[int]:
        return [max(1, round(t * s.max_rank(1))) for s in layers]

    return _ratio_search(layers, budget, ranks_at), [1] * len(layers), []


def energy(layers: list[GroupedLayer], budget: float, **_: Any) -> Result:
    """One energy threshold ``t``: each layer keeps the fewest values holding ``t`` of ``s^2``."""

    def ranks_at(t: float) -> list[int]:
        return [max(1, int(np.searchsorted(s.energy, t - 1e-15)) + 1) for s in layers]

    return _ratio_search(layers, budget, ranks_at), [1] * len(layers), []


SEARCHES: dict[str, Callable[..., Result]] = {"uniform": uniform, "energy": energy, "alds": alds}


def progress(items: Any, show: bool, desc: str) -> Any:
    """``items`` with a tqdm bar when ``show``."""
    from tqdm.auto import tqdm

    return tqdm(items, disable=not show, desc=desc, leave=False)
