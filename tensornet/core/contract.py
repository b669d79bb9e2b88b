"""Contraction planning: opt_einsum paths, compiled contractions and a bounded LRU cache.

A contraction is described by the legs and shapes of its operands and the order of the output
legs. Leg names are mapped to opt_einsum symbols (``opt_einsum.get_symbol``) and a path is found
with ``opt_einsum.contract_path``. The path is compiled into a `Contraction`: a fixed list of
``torch.tensordot`` calls and one final permutation. That is what opt_einsum's compiled
expressions run for such steps, minus the 52-letter limit of their einsum fallback: in a network
every summed leg joins exactly two tensors, so every step is a tensordot and any number of legs
works. Compiled contractions are cached under a key made of the structure, the shapes, the dtype,
the device and the optimizer, so repeating a contraction does no planning at all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import opt_einsum as oe
import torch
from opt_einsum import paths as oe_paths

__all__ = [
    "Plan",
    "Contraction",
    "plan_contraction",
    "compiled",
    "cache_info",
    "clear_cache",
    "set_cache_size",
]

Optimize = Any  # str | explicit path | opt_einsum.paths.PathOptimizer (cotengra's included)


@dataclass(frozen=True)
class Plan:
    """A contraction plan: the pairwise order and what it costs, known before anything runs.

    Attributes
    ----------
    equation : str
        The einsum equation (opt_einsum symbols).
    inputs : tuple of tuple of str
        Leg names of each operand, in the order the operands are passed.
    output : tuple of str
        Leg names of the result, in order.
    path : tuple of tuple of int
        Pairwise contraction order in opt_einsum's format.
    flops : int
        Estimated floating-point operations of the planned order (opt_einsum's cost model).
    naive_flops : int
        Estimated cost of a single einsum over all operands at once.
    largest_intermediate : int
        Elements in the largest tensor the plan creates.
    optimizer : str
        Name of the path optimizer that produced ``path``.
    """

    equation: str
    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    path: tuple[tuple[int, ...], ...]
    flops: int
    naive_flops: int
    largest_intermediate: int
    optimizer: str
    info: Any = field(default=None, repr=False, compare=False)

    @property
    def speedup(self) -> float:
        """``naive_flops / flops``."""
        return self.naive_flops / max(self.flops, 1)

    def __str__(self) -> str:
        shown = 8
        legs = ", ".join("(" + " ".join(x) + ")" for x in self.inputs[:shown])
        if len(self.inputs) > shown:
            legs += f", ... ({len(self.inputs)} tensors)"
        path = ", ".join(str(step) for step in self.path[:shown])
        if len(self.path) > shown:
            path += f", ... ({len(self.path)} steps)"
        return (
            f"Plan[{self.optimizer}]: {len(self.inputs)} tensors -> ({' '.join(self.output)})\n"
            f"  inputs: {legs}\n"
            f"  flops: {self.flops:.4g} (naive {self.naive_flops:.4g}, "
            f"speedup {self.speedup:.3g}x)\n"
            f"  largest intermediate: {self.largest_intermediate:,} elements\n"
            f"  path: [{path}]"
        )


class Contraction:
    """A compiled contraction: pairwise ``torch.tensordot`` steps along a planned path.

    Built from the operands' leg names, an opt_einsum path and the output order; calling it with
    tensors of the planned shapes runs the steps. Steps follow opt_einsum's convention: the
    operands named by a step are removed from the list and their product is appended.
    """

    __slots__ = ("steps", "permutation")

    def __init__(
        self,
        inputs: Sequence[tuple[str, ...]],
        path: Sequence[tuple[int, ...]],
        output: tuple[str, ...],
    ) -> None:
        legs = [list(x) for x in inputs]
        steps = []
        for step in path:
            positions = tuple(sorted(step, reverse=True))
            taken = [legs.pop(p) for p in positions]
            current = taken[0]
            pair_axes = []
            for other in taken[1:]:
                shared = [leg for leg in current if leg in other]
                pair_axes.append(
                    (tuple(current.index(x) for x in shared), tuple(other.index(x) for x in shared))
                )
                current = [x for x in current if x not in shared] + [
                    x for x in other if x not in shared
                ]
            legs.append(current)
            steps.append((positions, tuple(pair_axes)))
        if len(legs) != 1:
            raise ValueError(f"the path leaves {len(legs)} tensors uncontracted: {list(path)}")
        final = legs[0]
        perm = tuple(final.index(leg) for leg in output)
        self.steps = tuple(steps)
        self.permutation = None if perm == tuple(range(len(perm))) else perm

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        operands = list(tensors)
        tensordot = torch.tensordot
        for positions, pair_axes in self.steps:
            taken = [operands.pop(p) for p in positions]
            result = taken[0]
            for other, dims in zip(taken[1:], pair_axes):
                result = tensordot(result, other, dims=dims)
            operands.append(result)
        result = operands[0]
        return result if self.permutation is None else result.permute(self.permutation)


def _optimizer_key(optimize: Optimize) -> tuple[Hashable, str]:
    """A hashable cache key and a readable name for ``optimize``; validates it."""
    if isinstance(optimize, str):
        if optimize not in oe_paths._PATH_OPTIONS:
            raise ValueError(
                f"optimize={optimize!r} is not an opt_einsum path optimizer; choose one of "
                f"{sorted(oe_paths._PATH_OPTIONS)}, an explicit path, or a PathOptimizer"
            )
        return optimize, optimize
    if isinstance(optimize, oe_paths.PathOptimizer):
        # Stateful optimizers (random-greedy, cotengra) are keyed by identity.
        return ("optimizer", id(optimize)), type(optimize).__name__
    if isinstance(optimize, (list, tuple)):
        try:
            path = tuple(tuple(int(i) for i in step) for step in optimize)
        except (TypeError, ValueError):
            raise TypeError(
                f"optimize as an explicit path must be a sequence of index tuples, got {optimize!r}"
            ) from None
        return ("path", path), "explicit-path"
    raise TypeError(
        "optimize must be an opt_einsum optimizer name, an explicit path or a PathOptimizer, "
        f"got {type(optimize).__name__}"
    )


def _equation(inputs: Sequence[tuple[str, ...]], output: tuple[str, ...]) -> str:
    symbols: dict[str, str] = {}
    for legs in inputs:
        for leg in legs:
            if leg not in symbols:
                symbols[leg] = oe.get_symbol(len(symbols))
    lhs = ",".join("".join(symbols[leg] for leg in legs) for legs in inputs)
    return lhs + "->" + "".join(symbols[leg] for leg in output)


class _LRUCache:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def resize(self, maxsize: int) -> None:
        with self._lock:
            self.maxsize = maxsize
            while len(self._data) > maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)


_CACHE = _LRUCache(maxsize=512)


def cache_info() -> dict[str, int]:
    """Hits, misses, current size and capacity of the compiled-contraction cache."""
    return {
        "hits": _CACHE.hits,
        "misses": _CACHE.misses,
        "size": len(_CACHE),
        "maxsize": _CACHE.maxsize,
    }


def clear_cache() -> None:
    """Forget every cached plan (and reset the hit/miss counters)."""
    _CACHE.clear()


def set_cache_size(maxsize: int) -> None:
    """Change how many compiled contractions are kept (least recently used are dropped)."""
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"cache maxsize must be an int >= 1, got {maxsize!r}")
    _CACHE.resize(maxsize)


def compiled(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    output: tuple[str, ...],
    optimize: Optimize = "auto",
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> tuple[Plan, Contraction]:
    """The plan and compiled `Contraction` for one contraction, from the cache if seen.

    ``inputs``/``shapes`` are per operand; callers validate consistency beforehand.
    """
    opt_key, opt_name = _optimizer_key(optimize)
    key = (inputs, shapes, output, opt_key, dtype, device)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    equation = _equation(inputs, output)
    path, info = oe.contract_path(equation, *shapes, shapes=True, optimize=optimize)
    program = Contraction(inputs, path, output)
    plan = Plan(
        equation=equation,
        inputs=inputs,
        output=output,
        path=tuple(tuple(step) for step in path),
        flops=int(info.opt_cost),
        naive_flops=int(info.naive_cost),
        largest_intermediate=int(info.largest_intermediate),
        optimizer=opt_name,
        info=info,
    )
    _CACHE.put(key, (plan, program))
    return plan, program


def plan_contraction(
    inputs: Sequence[Sequence[str]],
    shapes: Sequence[Sequence[int]],
    output: Sequence[str],
    optimize: Optimize = "auto",
) -> Plan:
    """Plan a contraction given only leg names and shapes (no tensors needed).

    Examples
    --------
    >>> legs = [("i", "j"), ("j", "k"), ("k", "l")]
    >>> p = plan_contraction(legs, [(8, 64), (64, 64), (64, 8)], ("i", "l"))
    >>> p.largest_intermediate
    512
    """
    inputs_t = tuple(tuple(x) for x in inputs)
    shapes_t = tuple(tuple(int(d) for d in s) for s in shapes)
    return compiled(inputs_t, shapes_t, tuple(output), optimize)[0]
