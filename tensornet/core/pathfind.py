"""The default contraction-path choice: search effort that pays for itself.

Plans are cached by structure, so a contraction planned once is usually run many times. The
default optimizer therefore starts from opt_einsum's greedy path, estimates how long that path
would run, and searches for a better one for a small fraction of that run time multiplied by the
number of times the contraction is expected to be reused:

- up to four tensors: opt_einsum's exhaustive ``optimal`` (instant);
- when the greedy path runs in well under a millisecond, or the budget is too small for a single
  further trial: the greedy path;
- up to 12 tensors: opt_einsum's dynamic programming ``dp`` (exact for the FLOP count);
- otherwise a budgeted randomized search: randomized greedy trials of cotengrust (cotengra's
  Rust core) each scored by :func:`estimate_seconds`; without cotengrust, cotengra's
  hyper-optimizer over greedy trials scored by FLOPs plus memory traffic
  (``minimize="combo"``); without cotengra, opt_einsum's ``RandomGreedy``.

Candidates are compared with :func:`estimate_seconds`, a roofline model of the executor (each
step costs the larger of its FLOPs at a compute rate and the bytes it reads and writes at a
memory rate), because FLOPs alone misjudge paths whose steps stream a large intermediate past
a small tensor.

Examples
--------
>>> import tensornet as tn
>>> opt = tn.DefaultOptimizer(reuse=100, max_seconds=5.0)  # search harder for hot contractions
>>> opt.reuse
100
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import opt_einsum as oe
from opt_einsum import paths as oe_paths

__all__ = ["DefaultOptimizer", "PathChoice", "estimate_seconds", "path_costs"]

# Rates of the roofline model (2-core CPU, float64; only their ratio matters for ranking)
FLOP_RATE = 2.0e10  # opt_einsum flop units (a multiply-add counts 2) per second
BYTE_RATE = 3.0e9  # bytes per second streamed through memory
STEP_SECONDS = 4e-6  # Python and dispatch cost of one step
ITEMSIZE = 8
MIN_TRIALS = 128  # randomized greedy trials before a found path may cut the budget short


@dataclass(frozen=True)
class PathChoice:
    """The path the default optimizer picked, and why.

    Attributes
    ----------
    path : tuple of tuple of int
        opt_einsum linear path.
    optimizer : str
        Which search produced it, e.g. ``"greedy"``, ``"dp"``, ``"cotengra-hyper"``.
    search_seconds : float
        Wall time spent choosing (all candidates).
    estimated_seconds : float
        :func:`estimate_seconds` of the chosen path.
    budget_seconds : float
        Time the search was allowed beyond the greedy path.
    """

    path: tuple[tuple[int, ...], ...]
    optimizer: str
    search_seconds: float
    estimated_seconds: float
    budget_seconds: float


def _walk(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
):
    """Yield ``(terms, union size, sums anything, input sizes, result size)`` per step."""
    live = [frozenset(x) for x in inputs]
    sizes = [math.prod(size_dict[i] for i in x) for x in live]
    count: dict[str, int] = dict.fromkeys(output, 1)  # live tensors (and output) holding a leg
    for legs in live:
        for leg in legs:
            count[leg] = count.get(leg, 0) + 1
    for step in path:
        positions = sorted(step, reverse=True)
        taken = [live.pop(p) for p in positions]
        taken_sizes = [sizes.pop(p) for p in positions]
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
        size_r = math.prod(size_dict[i] for i in result)
        yield (
            len(taken),
            math.prod(size_dict[i] for i in union),
            union != result,
            taken_sizes,
            size_r,
        )
        live.append(result)
        sizes.append(size_r)


def path_costs(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
) -> tuple[int, int]:
    """FLOPs and the largest intermediate of ``path``.

    FLOPs follow opt_einsum's convention (a multiply-add counts 2); the largest intermediate is
    in elements, the result included.
    """
    flops = 0
    largest = 0
    for terms, union_size, summed, _, size_r in _walk(inputs, output, size_dict, path):
        flops += union_size * (max(1, terms - 1) + summed)
        largest = max(largest, size_r)
    return flops, largest


def estimate_seconds(
    inputs: Sequence[frozenset[str]],
    output: frozenset[str],
    size_dict: dict[str, int],
    path: Sequence[Sequence[int]],
) -> float:
    """Estimated run time of ``path``: per step, the larger of compute and memory time.

    Examples
    --------
    >>> ins = [frozenset("ab"), frozenset("bc"), frozenset("cd")]
    >>> sizes = dict(a=10, b=1000, c=1000, d=10)
    >>> good = estimate_seconds(ins, frozenset("ad"), sizes, [(0, 1), (0, 1)])
    >>> bad = estimate_seconds(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)])
    >>> good < bad
    True
    """
    seconds = 0.0
    for terms, union_size, summed, taken_sizes, size_r in _walk(inputs, output, size_dict, path):
        flops = union_size * (max(1, terms - 1) + summed)
        moved = (sum(taken_sizes) + size_r) * ITEMSIZE
        seconds += max(flops / FLOP_RATE, moved / BYTE_RATE) + STEP_SECONDS
    return seconds


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class DefaultOptimizer(oe_paths.PathOptimizer):
    """The default path optimizer: search time scaled to what the contraction is worth.

    Parameters
    ----------
    reuse : float
        How many times a planned contraction is expected to run (plans are cached).
    fraction : float
        Share of the expected total run time (greedy path estimate x ``reuse``) that may be
        spent searching for a better path.
    max_seconds : float
        Upper bound on the search time of one plan.
    use_cotengra : bool or None
        Use cotengra when it is installed (None, the default), always (True: ImportError
        without it) or never (False).

    Notes
    -----
    Pass an instance as ``optimize=`` to change the policy for one contraction; any other
    ``optimize`` value (a name, a path, a ``PathOptimizer``) bypasses this policy entirely.
    As an opt_einsum ``PathOptimizer`` it also works with ``opt_einsum.contract_path``.

    Examples
    --------
    >>> import tensornet as tn, torch
    >>> legs = [("i", "j"), ("j", "k"), ("k", "l")]
    >>> net = tn.TensorNetwork(tn.Node(torch.ones(3, 3), x) for x in legs)
    >>> net.plan(optimize=tn.DefaultOptimizer(reuse=1)).optimizer
    'default:optimal'
    """

    reuse: float = 20.0
    fraction: float = 0.2
    max_seconds: float = 10.0
    use_cotengra: bool | None = None

    def __post_init__(self) -> None:
        for name in ("reuse", "fraction", "max_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"DefaultOptimizer: {name} must be a number >= 0, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"DefaultOptimizer: {name} must be finite, got {value!r}")
        if self.use_cotengra not in (None, True, False):
            raise ValueError(
                f"DefaultOptimizer: use_cotengra must be None, True or False, "
                f"got {self.use_cotengra!r}"
            )
        if self.use_cotengra and not _have("cotengra"):
            raise ImportError("DefaultOptimizer(use_cotengra=True) needs cotengra installed")

    def __call__(  # noqa: D102 (opt_einsum's PathOptimizer protocol)
        self,
        inputs: list[frozenset[str]],
        output: frozenset[str],
        size_dict: dict[str, int],
        memory_limit: int | None = None,
    ) -> list[tuple[int, ...]]:
        return [tuple(step) for step in self.search(inputs, output, size_dict).path]

    def search(
        self,
        inputs: Sequence[frozenset[str]],
        output: frozenset[str],
        size_dict: dict[str, int],
    ) -> PathChoice:
        """Choose a path; see the module docstring for the policy."""
        start = time.perf_counter()
        inputs = [frozenset(x) for x in inputs]
        output = frozenset(output)
        n = len(inputs)
        if n <= 2:
            path = ((0, 1),) if n == 2 else ((0,),) if n == 1 else ()
            return self._done(path, "trivial", start, inputs, output, size_dict, 0.0)
        if n <= 4:
            path = oe_paths.optimal(inputs, output, size_dict)
            return self._done(path, "optimal", start, inputs, output, size_dict, 0.0)

        greedy = tuple(tuple(s) for s in oe_paths.greedy(inputs, output, size_dict))
        greedy_seconds = estimate_seconds(inputs, output, size_dict, greedy)
        spent = time.perf_counter() - start
        budget = min(self.max_seconds, self.fraction * self.reuse * greedy_seconds)
        candidates = [("greedy", greedy, greedy_seconds)]
        # a search that cannot beat the greedy path by more than it costs is not started
        if budget >= max(1e-3, 2 * spent):
            deadline = start + budget
            if n <= 12:
                dp = oe_paths.DynamicProgramming(minimize="flops")
                path = tuple(tuple(s) for s in dp(inputs, output, size_dict))
                candidates.append(("dp", path, estimate_seconds(inputs, output, size_dict, path)))
            else:
                candidates += self._random_search(
                    inputs, output, size_dict, deadline, spent, start, greedy_seconds
                )
        name, path, seconds = min(candidates, key=lambda c: c[2])
        return self._done(path, name, start, inputs, output, size_dict, budget, seconds)

    def _random_search(
        self,
        inputs: list[frozenset[str]],
        output: frozenset[str],
        size_dict: dict[str, int],
        deadline: float,
        trial: float,
        start: float,
        best_seconds: float,
    ) -> list[tuple[str, tuple[tuple[int, ...], ...], float]]:
        """Random searches until ``deadline``.

        ``trial`` is the time one greedy run took, so that no search starts that could not
        finish in time.
        """
        found = []
        use_ctg = _have("cotengra") if self.use_cotengra is None else self.use_cotengra
        if use_ctg and _have("cotengrust"):
            found += self._greedy_trials(
                inputs, output, size_dict, deadline, start, best_seconds, self.fraction * self.reuse
            )
        elif use_ctg:
            import cotengra as ctg

            remaining = deadline - time.perf_counter()
            # each hyper-optimizer trial builds a contraction tree: several greedy runs' worth
            if remaining > max(5e-3, 20 * trial):
                hyper = ctg.HyperOptimizer(
                    methods=["greedy"],
                    minimize="combo",
                    max_time=remaining,
                    max_repeats=4096,
                    parallel=False,
                    progbar=False,
                    optlib="random",
                    seed=0,
                )
                tree = hyper.search(
                    [tuple(sorted(x)) for x in inputs], tuple(sorted(output)), size_dict
                )
                path = tuple(tuple(s) for s in tree.get_path())
                found.append(
                    ("cotengra-hyper", path, estimate_seconds(inputs, output, size_dict, path))
                )
        else:
            remaining = deadline - time.perf_counter()
            if remaining > max(1e-3, 2 * trial):
                rg = oe.RandomGreedy(max_repeats=4096, max_time=remaining, parallel=False)
                path = tuple(tuple(s) for s in rg(inputs, output, size_dict))
                found.append(
                    ("random-greedy", path, estimate_seconds(inputs, output, size_dict, path))
                )
        return found

    @staticmethod
    def _greedy_trials(
        inputs: list[frozenset[str]],
        output: frozenset[str],
        size_dict: dict[str, int],
        deadline: float,
        start: float,
        best_seconds: float,
        factor: float,
    ) -> list[tuple[str, tuple[tuple[int, ...], ...], float]]:
        """Cotengrust's randomized greedy (cotengra's Rust core), trial after trial.

        Each path is scored by :func:`estimate_seconds` (FLOPs and memory traffic). The search
        stops at
        ``deadline`` or, after ``MIN_TRIALS`` trials, once it has run ``factor`` times the best
        estimate so far (a better path shortens the search it is worth). The trials' parameters
        follow a fixed seed, so equal budgets give equal paths.
        """
        import random

        import cotengrust

        rng = random.Random(0)
        ins = [sorted(x) for x in inputs]
        out = sorted(output)
        best = None
        for trial in range(100_000):
            # the hyper-parameter space of cotengra's hyper-optimized "greedy" method
            costmod = rng.uniform(0.1, 4.0)
            temperature = math.exp(rng.uniform(math.log(1e-3), 0.0))
            strength = math.exp(rng.uniform(math.log(1e-3), 0.0))
            jittered = {k: v * (1 + strength * rng.expovariate(1.0)) for k, v in size_dict.items()}
            ssa = cotengrust.optimize_greedy(
                ins,
                out,
                jittered,
                costmod=costmod,
                temperature=temperature,
                seed=trial,
                use_ssa=True,
            )
            path = tuple(tuple(s) for s in oe_paths.ssa_to_linear(ssa))
            seconds = estimate_seconds(inputs, output, size_dict, path)
            if best is None or seconds < best[2]:
                best = ("cotengrust-greedy", path, seconds)
                best_seconds = min(best_seconds, seconds)
            now = time.perf_counter()
            if now >= deadline or (trial >= MIN_TRIALS and now >= start + factor * best_seconds):
                break
        return [best] if best is not None else []

    def _done(
        self,
        path: Any,
        name: str,
        start: float,
        inputs: list[frozenset[str]],
        output: frozenset[str],
        size_dict: dict[str, int],
        budget: float,
        seconds: float | None = None,
    ) -> PathChoice:
        path = tuple(tuple(int(i) for i in step) for step in path)
        if seconds is None:
            seconds = estimate_seconds(inputs, output, size_dict, path)
        return PathChoice(path, name, time.perf_counter() - start, seconds, budget)
