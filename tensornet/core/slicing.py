"""Sliced contraction: fix some summed legs, contract each slice, add the slices up.

When a plan's largest intermediate exceeds a memory limit, summing over a bond ``x`` can be
moved outside the contraction: ``sum_x T(..., x, ...)`` is contracted once per value of ``x``
with every tensor carrying ``x`` indexed at that value, and the results are added. Every slice
has the same structure, so one compiled program runs them all. The legs to slice are chosen
greedily along the planned path: repeatedly the summed leg of the largest intermediate whose
removal shrinks the largest intermediate most (ties: fewest total FLOPs over all slices).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

__all__ = ["choose_sliced_legs", "choose_chunks", "SlicedContraction"]


def _over_limit(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
    limit: int,
) -> tuple[int, int, frozenset[str], int]:
    """Along ``path``: the largest intermediate and what is above ``limit``.

    Returns (largest intermediate, total elements above ``limit`` over all intermediates, legs
    of the intermediates above it, FLOPs).
    """
    live = list(inputs)
    count: dict[str, int] = dict.fromkeys(output, 1)
    for legs in live:
        for leg in legs:
            count[leg] = count.get(leg, 0) + 1
    largest, excess, over, flops = 0, 0, frozenset(), 0
    for step in path:
        taken = [live.pop(p) for p in sorted(step, reverse=True)]
        union = frozenset().union(*taken)
        held: dict[str, int] = {}
        for legs in taken:
            for leg in legs:
                held[leg] = held.get(leg, 0) + 1
        result = frozenset(leg for leg in union if count[leg] > held[leg])
        for leg, k in held.items():
            count[leg] -= k
        for leg in result:
            count[leg] += 1
        flops += math.prod(size_dict[i] for i in union) * (2 if union != result else 1)
        size = math.prod(size_dict[i] for i in result)
        largest = max(largest, size)
        if size > limit:
            excess += size - limit
            over |= result
        live.append(result)
    return largest, excess, over, flops


def choose_sliced_legs(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
    limit: int,
) -> tuple[str, ...]:
    """Summed legs to slice so that no intermediate of ``path`` exceeds ``limit`` elements.

    Greedy: each round slices the summed leg (of an intermediate above the limit) that most
    reduces the elements above the limit, ties broken by the total FLOPs of all slices.

    Raises
    ------
    ValueError
        If slicing summed legs cannot get below ``limit`` (the result itself is larger).

    Examples
    --------
    >>> ins = [frozenset("ab"), frozenset("bc"), frozenset("cd")]
    >>> sizes = dict(a=2, b=100, c=100, d=2)
    >>> choose_sliced_legs(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)], limit=500)
    ('b',)
    """
    sizes = dict(size_dict)
    sliced: list[str] = []
    largest, excess, over, _ = _over_limit(inputs, output, sizes, path, limit)
    while largest > limit:
        best = None
        for leg in sorted(over - output):
            if sizes[leg] == 1:
                continue
            trial = dict(sizes)
            trial[leg] = 1
            _, new_excess, _, new_flops = _over_limit(inputs, output, trial, path, limit)
            total = new_flops * math.prod(size_dict[x] for x in sliced) * size_dict[leg]
            key = (new_excess, total, leg)
            if best is None or key < best[0]:
                best = (key, leg)
        # slicing a leg of an intermediate above the limit always shrinks it, so any candidate
        # makes progress; none is left only when every such leg is kept or already sliced
        if best is None:
            raise ValueError(
                f"cannot slice the contraction below {limit:,} elements: an intermediate of "
                f"{largest:,} elements has no summed leg left to slice"
            )
        leg = best[1]
        sliced.append(leg)
        sizes[leg] = 1
        largest, excess, over, _ = _over_limit(inputs, output, sizes, path, limit)
    return tuple(sliced)


def choose_chunks(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
    limit: int,
) -> tuple[tuple[str, int], ...]:
    """Like :func:`choose_sliced_legs`, with each sliced leg cut into equal chunks.

    The fewest chunks that still keep every intermediate within ``limit``: ``(leg, chunk size)``
    pairs.

    Fewer, larger slices run faster (less per-slice overhead, less repeated work).

    Examples
    --------
    >>> ins = [frozenset("ab"), frozenset("bc"), frozenset("cd")]
    >>> sizes = dict(a=2, b=100, c=100, d=2)
    >>> choose_chunks(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)], limit=1000)
    (('b', 2),)
    """
    legs = choose_sliced_legs(inputs, output, size_dict, path, limit)
    sizes = dict(size_dict)
    sizes.update(dict.fromkeys(legs, 1))
    chunks = dict.fromkeys(legs, 1)
    for leg in reversed(legs):  # the last sliced was needed least
        d = size_dict[leg]
        for chunk in sorted((c for c in range(2, d + 1) if d % c == 0), reverse=True):
            trial = dict(sizes)
            trial[leg] = chunk
            if _over_limit(inputs, output, trial, path, limit)[0] <= limit:
                sizes[leg] = chunks[leg] = chunk
                break
    return tuple((leg, chunks[leg]) for leg in legs if chunks[leg] < size_dict[leg])


class SlicedContraction:
    """Runs ``inner`` once per chunk of the sliced legs and adds the results.

    Parameters
    ----------
    inner : callable
        The compiled contraction of one slice (each sliced leg of size ``chunk``).
    inputs : sequence of tuple of str
        Leg names of the full operands.
    sliced : sequence of str
        The legs to slice.
    dims : sequence of int
        Their dimensions.
    chunks : sequence of int, optional
        The size of each leg's chunks (a divisor of its dimension; default 1).
    """

    __slots__ = ("inner", "sliced", "dims", "chunks", "narrows")

    def __init__(
        self,
        inner,
        inputs: Sequence[tuple[str, ...]],
        sliced: Sequence[str],
        dims: Sequence[int],
        chunks: Sequence[int] | None = None,
    ) -> None:
        self.inner = inner
        self.sliced = tuple(sliced)
        self.dims = tuple(int(d) for d in dims)
        self.chunks = tuple(int(c) for c in chunks) if chunks is not None else (1,) * len(dims)
        for leg, d, c in zip(self.sliced, self.dims, self.chunks):
            if c < 1 or d % c:
                raise ValueError(f"chunk {c} of sliced leg {leg!r} does not divide {d}")
        position = {leg: j for j, leg in enumerate(self.sliced)}
        narrows = []
        for i, legs in enumerate(inputs):
            axes = tuple((a, position[leg]) for a, leg in enumerate(legs) if leg in position)
            if axes:
                narrows.append((i, axes))
        self.narrows = tuple(narrows)

    @property
    def slices(self) -> int:
        """Number of slices the contraction runs."""
        return math.prod(d // c for d, c in zip(self.dims, self.chunks))

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Contract slice by slice and sum."""
        total = None
        in_place = not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        counts = [range(d // c) for d, c in zip(self.dims, self.chunks)]
        chunks = self.chunks
        for index in itertools.product(*counts):
            operands = list(tensors)
            for i, axes in self.narrows:
                t = operands[i]
                for axis, j in axes:
                    t = t.narrow(axis, index[j] * chunks[j], chunks[j])
                operands[i] = t
            part = self.inner(*operands)
            if total is None:
                total = part.clone() if in_place else part
            elif in_place:
                total.add_(part)
            else:
                total = total + part
        assert total is not None
        return total

    def __repr__(self) -> str:
        return f"SlicedContraction(legs {self.sliced}, {self.slices:,} slices, {self.inner!r})"
