"""Planned einsum over named legs, with hyperedges and batch legs allowed.

:class:`~tensornet.TensorNetwork` contraction requires every summed leg to join exactly two
nodes. Formats such as CP (one rank index shared by every factor) and channel-grouped low rank
(the group index shared by both factors and the input), and layer forwards (a batch leg carried
from the input to the output), need the general form: any leg on any number of operands. This
module plans such an einsum once (through :func:`~tensornet.core.contract.find_path`, the path
search of every route), compiles it into pairwise ``torch.einsum`` steps over small local
equations, and keeps the result in the one contraction cache (:func:`tensornet.cache_info`,
:func:`tensornet.clear_cache`) by structure and shapes. The compiled
program is plain torch code, so it runs under autograd, AMP and ``torch.compile``.

Examples
--------
>>> import torch
>>> a, b, c = torch.randn(4, 3), torch.randn(5, 3), torch.randn(6, 3)
>>> out = einsum([("i", "r"), ("j", "r"), ("k", "r")], [a, b, c], ("i", "j", "k"))
>>> bool(torch.allclose(out, torch.einsum("ir,jr,kr->ijk", a, b, c), atol=1e-6))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .contract import Plan, cached, einsum_equation, find_path, optimizer_key
from .pathfind import DefaultOptimizer

__all__ = ["EinsumProgram", "einsum", "plan_einsum"]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _local_equation(inputs: Sequence[Sequence[str]], output: Sequence[str]) -> str:
    """An einsum equation over at most 52 distinct legs, with letters assigned locally."""
    letters: dict[str, str] = {}
    for legs in (*inputs, output):
        for leg in legs:
            if leg not in letters:
                if len(letters) == len(_LETTERS):
                    raise ValueError(
                        f"one einsum step joins more than {len(_LETTERS)} distinct legs"
                    )
                letters[leg] = _LETTERS[len(letters)]
    lhs = ",".join("".join(letters[leg] for leg in legs) for legs in inputs)
    return lhs + "->" + "".join(letters[leg] for leg in output)


class EinsumProgram:
    """Pairwise ``torch.einsum`` steps along a planned path, as one generated function.

    Each step takes the operands the path names, keeps the legs some later operand or the output
    still needs, and sums the rest; the last step writes the legs in output order, so no final
    permutation is needed. ``steps`` lists ``(positions, equation)`` per step; the program runs
    them as straight-line code (``source``) whose operand names and equations are literals, so
    ``torch.compile`` sees constants, never operand positions it could make symbolic.
    """

    __slots__ = ("steps", "source", "_run")

    def __init__(
        self,
        inputs: Sequence[tuple[str, ...]],
        path: Sequence[tuple[int, ...]],
        output: tuple[str, ...],
    ) -> None:
        legs = [tuple(x) for x in inputs]
        steps = []
        for k, step in enumerate(path):
            positions = tuple(sorted(step, reverse=True))
            taken = [legs.pop(p) for p in positions]
            if k == len(path) - 1:
                kept = output
            else:
                needed = set(output).union(*legs)
                seen: list[str] = []
                for x in taken:
                    seen.extend(leg for leg in x if leg in needed and leg not in seen)
                kept = tuple(seen)
            legs.append(kept)
            steps.append((positions, _local_equation(taken, kept)))
        if len(legs) != 1:
            raise ValueError(f"the path leaves {len(legs)} operands uncontracted: {list(path)}")
        self.__setstate__((len(inputs), tuple(steps)))

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Run the steps on ``tensors`` (in the order the plan was built for)."""
        return self._run(*tensors)

    def __getstate__(self) -> tuple[int, tuple]:
        """Operand count and steps (pickling and deep copies regenerate the code from them)."""
        return self._run.__code__.co_argcount, self.steps

    def __setstate__(self, state: tuple[int, tuple]) -> None:
        n, self.steps = state
        self.source = _program_source(n, self.steps)
        namespace = {"einsum": torch.einsum}
        exec(compile(self.source, "<tensornet einsum>", "exec"), namespace)
        self._run = namespace["run"]


def _program_source(n: int, steps: Sequence[tuple[tuple[int, ...], str]]) -> str:
    """Straight-line code of ``steps`` on operands ``t0 .. t(n-1)``.

    A single step that neither permutes nor sums (``"ab->ab"``) returns its operand as it is.
    """
    names = [f"t{i}" for i in range(n)]
    lines = []
    for k, (positions, equation) in enumerate(steps):
        taken = [names.pop(p) for p in positions]
        lhs, rhs = equation.split("->")
        if len(taken) == 1 and lhs == rhs:
            names.append(taken[0])
            continue
        names.append(f"t{n + k}")
        lines.append(f"    t{n + k} = einsum({equation!r}, {', '.join(taken)})")
    args = ", ".join(f"t{i}" for i in range(n))
    lines.append(f"    return {names[0]}")
    return f"def run({args}):\n" + "".join(line + "\n" for line in lines)


def _check(
    inputs: Sequence[Sequence[str]], shapes: Sequence[Sequence[int]], output: Sequence[str]
) -> tuple[tuple[tuple[str, ...], ...], tuple[tuple[int, ...], ...], tuple[str, ...]]:
    inputs_t = tuple(tuple(x) for x in inputs)
    shapes_t = tuple(tuple(int(d) for d in s) for s in shapes)
    output_t = tuple(output)
    if not inputs_t:
        raise ValueError("einsum needs at least one operand")
    if len(inputs_t) != len(shapes_t):
        raise ValueError(f"einsum: {len(inputs_t)} leg lists for {len(shapes_t)} shapes")
    dims: dict[str, int] = {}
    for k, (legs, shape) in enumerate(zip(inputs_t, shapes_t)):
        if len(legs) != len(shape):
            raise ValueError(f"einsum: operand {k} has legs {legs} but shape {shape}")
        if len(set(legs)) != len(legs):
            raise ValueError(f"einsum: operand {k} repeats a leg: {legs}")
        for leg, d in zip(legs, shape):
            if dims.setdefault(leg, d) != d:
                raise ValueError(f"einsum: leg {leg!r} has sizes {dims[leg]} and {d}")
    missing = [leg for leg in output_t if leg not in dims]
    if missing or len(set(output_t)) != len(output_t):
        raise ValueError(f"einsum: output {output_t} must name distinct legs of the operands")
    return inputs_t, shapes_t, output_t


def _plan(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    output: tuple[str, ...],
    optimize: Any,
    memory_limit: int | None,
) -> tuple[Plan, EinsumProgram]:
    equation = einsum_equation(inputs, output)
    name = optimizer_key(optimize)[1]
    if len(inputs) == 1:
        path, flops, naive = [(0,)], math.prod(shapes[0]), math.prod(shapes[0])
        largest = math.prod([shapes[0][inputs[0].index(leg)] for leg in output])
    else:
        path, name, info, _ = find_path(
            inputs, shapes, output, optimize, memory_limit=memory_limit, report=True
        )
        flops, naive, largest = info.opt_cost, info.naive_cost, info.largest_intermediate
    plan = Plan(
        equation=equation,
        inputs=inputs,
        output=output,
        path=tuple(tuple(step) for step in path),
        flops=int(flops),
        naive_flops=int(naive),
        largest_intermediate=int(largest),
        optimizer=name,
    )
    return plan, EinsumProgram(inputs, path, output)


def plan_einsum(
    inputs: Sequence[Sequence[str]],
    shapes: Sequence[Sequence[int]],
    output: Sequence[str],
    optimize: str | Sequence[Sequence[int]] = "auto",
    memory_limit: int | None = None,
) -> tuple[Plan, EinsumProgram]:
    """Plan (or fetch from the cache) an einsum given only leg names and shapes.

    Parameters
    ----------
    inputs : sequence of sequence of str
        Legs of each operand. A leg may appear on any number of operands; legs not in
        ``output`` are summed.
    shapes : sequence of sequence of int
        Shape of each operand.
    output : sequence of str
        Legs of the result, in order.
    optimize : str or explicit path
        An opt_einsum path optimizer name (``"auto"``, ``"greedy"``, ``"optimal"``, ...) or a
        path.
    memory_limit : int, optional
        Largest intermediate (elements) the path may create (opt_einsum's ``memory_limit``).

    Returns
    -------
    (Plan, EinsumProgram)
        The plan (FLOPs, largest intermediate) and the program that runs it.

    Examples
    --------
    >>> plan, run = plan_einsum([("b", "i"), ("i", "r"), ("r", "o")], [(32, 64), (64, 4),
    ...                         (4, 64)], ("b", "o"))
    >>> plan.flops < 2 * 32 * 64 * 64
    True
    """
    inputs_t, shapes_t, output_t = _check(inputs, shapes, output)
    if optimize is None or isinstance(optimize, DefaultOptimizer):
        raise TypeError(
            "einsum: optimize must be an opt_einsum optimizer name, an explicit path or a "
            "PathOptimizer (the default policy plans networks only)"
        )
    key = ("einsum", inputs_t, shapes_t, output_t, optimizer_key(optimize)[0], memory_limit)
    return cached(key, lambda: _plan(inputs_t, shapes_t, output_t, optimize, memory_limit))


def einsum(
    inputs: Sequence[Sequence[str]],
    tensors: Sequence[torch.Tensor],
    output: Sequence[str],
    optimize: str | Sequence[Sequence[int]] = "auto",
) -> torch.Tensor:
    """Contract ``tensors`` (legs ``inputs``) into ``output`` along a cached opt_einsum plan."""
    tensors = list(tensors)
    _, program = plan_einsum(inputs, [t.shape for t in tensors], output, optimize)
    return program(*tensors)
