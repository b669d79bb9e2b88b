"""Contraction planning: paths, compiled contractions, a bounded LRU cache and a size limit.

A contraction is described by the legs and shapes of its operands and the order of the output
legs. Leg names are mapped to opt_einsum symbols (``opt_einsum.get_symbol``) and a pairwise path
is chosen: by the default policy of :class:`~tensornet.core.pathfind.DefaultOptimizer` (search
effort scaled to the contraction's estimated run time), or by whatever ``optimize=`` names (an
opt_einsum optimizer, an explicit path, any ``PathOptimizer`` such as cotengra's). The path is
compiled into a :class:`~tensornet.core.executor.Contraction`: matrix products with planned
memory layouts, generated once as straight-line code. In a network every summed leg joins
exactly two tensors, so every step is a matrix product and any number of legs works (no
52-letter einsum limit); other einsums (a leg on three operands, a shared leg kept) run through
opt_einsum's compiled expression.

Compiled contractions are cached under a key made of the structure, the shapes, the dtype, the
device and the optimizer, so repeating a contraction does no planning at all.

Plans whose largest intermediate exceeds a limit (default ``2**28`` elements, see
:func:`set_max_intermediate`) are refused before any work, or contracted in slices when asked.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import opt_einsum as oe
import torch
from opt_einsum import paths as oe_paths

from .executor import Contraction, linear_to_pairs
from .pathfind import DefaultOptimizer, path_costs
from .slicing import SlicedContraction, choose_chunks

__all__ = [
    "Plan",
    "Contraction",
    "DefaultOptimizer",
    "plan_contraction",
    "cached",
    "compiled",
    "find_path",
    "einsum_equation",
    "leg_symbols",
    "optimizer_key",
    "prepared",
    "cache_info",
    "clear_cache",
    "set_cache_size",
    "set_max_intermediate",
    "get_max_intermediate",
    "short_legs",
]

Optimize = Any  # None | str | explicit path | opt_einsum.paths.PathOptimizer (cotengra's too)

DEFAULT_MAX_INTERMEDIATE = 2**28
_DEFAULT_OPTIMIZER = DefaultOptimizer()


def short_legs(legs: Sequence[str], shown: int = 8) -> str:
    """A leg list for messages: at most ``shown`` names, then how many more.

    Examples
    --------
    >>> short_legs(("a", "b"))
    "('a', 'b')"
    >>> short_legs(tuple(f"x{i}" for i in range(40)), shown=3)
    "('x0', 'x1', 'x2', ... 37 more)"
    """
    opening, closing = ("[", "]") if isinstance(legs, list) else ("(", ")")
    legs = tuple(legs)
    if len(legs) <= shown:
        return repr(list(legs)) if opening == "[" else repr(legs)
    return (
        opening
        + ", ".join(repr(x) for x in legs[:shown])
        + f", ... {len(legs) - shown} more{closing}"
    )


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
        Estimated floating-point operations of the planned order (opt_einsum's cost model; for
        a sliced plan, all slices together).
    naive_flops : int
        Estimated cost of a single einsum over all operands at once.
    largest_intermediate : int
        Elements in the largest tensor the plan creates (per slice when sliced).
    optimizer : str
        What produced ``path``: the ``optimize`` name given (``"greedy"``, ``"auto"``, a class
        name, ``"explicit-path"``), or for the default policy ``"default:<search>"`` naming
        the search that won (``"default:greedy"``, ``"default:dp"``, ``"default:cotengra-hyper"``,
        ...).
    info : opt_einsum.contract.PathInfo or None
        opt_einsum's report when the path came from ``opt_einsum.contract_path``.
    search_seconds : float
        Wall time spent finding the path.
    estimated_seconds : float
        Run time the default policy's roofline model predicts (0 for other optimizers).
    sliced : tuple of str
        Summed legs contracted one chunk of values at a time (empty unless sliced).
    slices : int
        Number of slices (1 unless sliced).
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
    search_seconds: float = field(default=0.0, compare=False)
    estimated_seconds: float = field(default=0.0, compare=False)
    sliced: tuple[str, ...] = ()
    slices: int = 1

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
        out = " ".join(self.output[:shown]) + (" ..." if len(self.output) > shown else "")
        lines = [
            f"Plan[{self.optimizer}]: {len(self.inputs)} tensors -> ({out})",
            f"  inputs: {legs}",
            f"  flops: {self.flops:.4g} (naive {self.naive_flops:.4g}, "
            f"speedup {self.speedup:.3g}x)",
            f"  largest intermediate: {self.largest_intermediate:,} elements",
            f"  path: [{path}]",
            f"  search: {self.search_seconds * 1e3:.3g} ms",
        ]
        if self.sliced:
            lines.append(f"  sliced: {short_legs(self.sliced)} ({self.slices:,} slices)")
        return "\n".join(lines)


# opt_einsum's standard path optimizers, for messages (registered ones are accepted too)
_NAMED_OPTIMIZERS = (
    "auto", "auto-hq", "branch-1", "branch-2", "branch-all", "dp", "dynamic-programming",
    "eager", "greedy", "opportunistic", "optimal", "random-greedy", "random-greedy-128",
)  # fmt: skip


def optimizer_key(optimize: Optimize) -> tuple[Hashable, str]:
    """A hashable cache key and a readable name for ``optimize``; validates it.

    >>> optimizer_key("greedy"), optimizer_key([(0, 1)])
    (('greedy', 'greedy'), (('path', ((0, 1),)), 'explicit-path'))
    """
    if optimize is None:
        return "default", "default"
    if isinstance(optimize, str):
        try:
            oe_paths.get_path_fn(optimize)
        except KeyError:
            raise ValueError(
                f"optimize={optimize!r} is not an opt_einsum path optimizer; choose one of "
                f"{list(_NAMED_OPTIMIZERS)}, None (the default policy), an explicit "
                "path, or a PathOptimizer"
            ) from None
        return optimize, optimize
    if isinstance(optimize, DefaultOptimizer):
        return ("default", optimize), "default"  # frozen: keyed by its settings
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
        "optimize must be None (the default policy), an opt_einsum optimizer name, an explicit "
        f"path or a PathOptimizer, got {type(optimize).__name__}"
    )


def leg_symbols(inputs: Sequence[tuple[str, ...]]) -> dict[str, str]:
    """opt_einsum symbols for leg names, in order of first appearance.

    >>> leg_symbols([("i", "j"), ("j", "k")])
    {'i': 'a', 'j': 'b', 'k': 'c'}
    """
    symbols: dict[str, str] = {}
    for legs in inputs:
        for leg in legs:
            if leg not in symbols:
                symbols[leg] = oe.get_symbol(len(symbols))
    return symbols


def einsum_equation(inputs: Sequence[tuple[str, ...]], output: tuple[str, ...]) -> str:
    """The einsum equation of a contraction over named legs (symbols of :func:`leg_symbols`).

    >>> einsum_equation([("i", "j"), ("j", "k")], ("k", "i"))
    'ab,bc->ca'
    """
    symbols = leg_symbols(inputs)
    lhs = ",".join("".join(symbols[leg] for leg in legs) for legs in inputs)
    return lhs + "->" + "".join(symbols[leg] for leg in output)


def _is_network(inputs: Sequence[tuple[str, ...]], output: tuple[str, ...]) -> bool:
    """True when every leg is on one operand (and kept) or on two (and summed)."""
    count: dict[str, int] = {}
    for legs in inputs:
        for leg in legs:
            count[leg] = count.get(leg, 0) + 1
    out = set(output)
    return all((k == 1) == (leg in out) and k <= 2 for leg, k in count.items())


class _EinsumProgram:
    """Fallback for einsums that are not networks: opt_einsum's compiled expression."""

    __slots__ = ("expression",)

    def __init__(self, equation: str, shapes, path) -> None:
        self.expression = oe.contract_expression(equation, *shapes, optimize=list(path))

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.expression(*tensors, backend="torch")


class _LRUCache:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self.generation = 0  # bumped by clear(): per-network memos compare it
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
            self.generation += 1

    def __len__(self) -> int:
        return len(self._data)


DEFAULT_CACHE_SIZE = 1024
_CACHE = _LRUCache(maxsize=DEFAULT_CACHE_SIZE)


def cached(key: Hashable, build: Callable[[], Any]) -> Any:
    """The cache's entry for ``key``, built (and kept) on a miss.

    The one cache of compiled contractions: network contractions, sliced plans and planned
    einsums (:mod:`tensornet.core.einsum`) all live here, under keys that cannot collide (the
    first element says which route made them), so :func:`cache_info`, :func:`clear_cache` and
    :func:`set_cache_size` see every route.
    """
    hit = _CACHE.get(key)
    if hit is None:
        hit = build()
        _CACHE.put(key, hit)
    return hit


def cache_generation() -> int:
    """A counter that :func:`clear_cache` bumps (per-network memos compare it)."""
    return _CACHE.generation


def count_hit() -> None:
    """Count a repeat served from a per-network memo as a cache hit."""
    _CACHE.hits += 1


def cache_info() -> dict[str, int]:
    """Hits, misses, current size and capacity of the compiled-contraction cache.

    One cache serves every contraction route (networks, sliced plans, planned einsums).

    Examples
    --------
    >>> import tensornet as tn
    >>> tn.clear_cache()
    >>> sorted(tn.cache_info().items())
    [('hits', 0), ('maxsize', 1024), ('misses', 0), ('size', 0)]
    """
    return {
        "hits": _CACHE.hits,
        "misses": _CACHE.misses,
        "size": len(_CACHE),
        "maxsize": _CACHE.maxsize,
    }


def clear_cache() -> None:
    """Forget every cached plan of every route (and reset the hit/miss counters)."""
    _CACHE.clear()


def set_cache_size(maxsize: int) -> None:
    """Change how many compiled contractions are kept (least recently used are dropped).

    The default is 1024, shared by every contraction route.
    """
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"cache maxsize must be an int >= 1, got {maxsize!r}")
    _CACHE.resize(maxsize)


def find_path(
    inputs: Sequence[tuple[str, ...]],
    shapes: Sequence[tuple[int, ...]],
    output: tuple[str, ...],
    optimize: Optimize,
    *,
    memory_limit: int | None = None,
    report: bool = False,
) -> tuple[tuple[tuple[int, ...], ...], str, Any, float]:
    """The one path search of every contraction route: ``(path, name, info, estimated)``.

    ``inputs`` and ``output`` are leg names, ``shapes`` the operands' shapes. None or a
    :class:`DefaultOptimizer` runs the default policy (``name`` says which search won,
    ``estimated`` its predicted seconds); an explicit path is checked and used as given
    (through opt_einsum when ``report`` asks for its ``PathInfo``); anything else goes to
    ``opt_einsum.contract_path`` (with ``memory_limit``). ``info`` is opt_einsum's report or
    None.

    >>> find_path([("i", "j"), ("j", "k"), ("k", "l")], [(2, 9), (9, 9), (9, 2)], ("i", "l"),
    ...           "greedy")[:2]
    (((0, 1), (0, 1)), 'greedy')
    """
    opt_key, name = optimizer_key(optimize)
    if optimize is None or isinstance(optimize, DefaultOptimizer):
        symbols = leg_symbols(inputs)
        choice = (optimize or _DEFAULT_OPTIMIZER).search(
            [frozenset(symbols[leg] for leg in legs) for legs in inputs],
            frozenset(symbols[leg] for leg in output),
            {symbols[x]: d for legs, shape in zip(inputs, shapes) for x, d in zip(legs, shape)},
        )
        return choice.path, f"default:{choice.optimizer}", None, choice.estimated_seconds
    if opt_key[0] == "path":
        if not report:
            if inputs:  # refused before planning, with the step at fault
                try:
                    linear_to_pairs(len(inputs), opt_key[1])
                except ValueError as err:
                    raise ValueError(f"optimize {err}") from None
            return opt_key[1], name, None, 0.0
        optimize = list(opt_key[1])
    found, info = oe.contract_path(
        einsum_equation(inputs, output), *shapes, shapes=True, optimize=optimize,
        memory_limit=memory_limit,
    )  # fmt: skip
    return tuple(tuple(int(i) for i in step) for step in found), name, info, 0.0


def compiled(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    output: tuple[str, ...],
    optimize: Optimize = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> tuple[Plan, Any]:
    """The plan and compiled program for one contraction, from the cache if seen.

    ``inputs``/``shapes`` are per operand; callers validate consistency beforehand. The program
    is called with the operand tensors (of one dtype) and returns the result.
    """
    key = (inputs, shapes, output, optimizer_key(optimize)[0], dtype, device)
    return cached(key, lambda: _compile(inputs, shapes, output, optimize))


def _compile(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    output: tuple[str, ...],
    optimize: Optimize,
) -> tuple[Plan, Any]:
    symbols = leg_symbols(inputs)
    equation = einsum_equation(inputs, output)
    sym_inputs = [frozenset(symbols[leg] for leg in legs) for legs in inputs]
    sym_output = frozenset(symbols[leg] for leg in output)
    size_dict = {
        symbols[leg]: d for legs, shape in zip(inputs, shapes) for leg, d in zip(legs, shape)
    }
    start = time.perf_counter()
    path, opt_name, info, estimated = find_path(inputs, shapes, output, optimize)
    searched = time.perf_counter() - start
    if len(inputs) == 1 and not path:
        path = ((0,),)
    flops, largest = path_costs(sym_inputs, sym_output, size_dict, path)
    every = frozenset().union(*sym_inputs) if sym_inputs else frozenset()
    naive = math.prod(size_dict[i] for i in every) * (
        max(1, len(inputs) - 1) + bool(every - sym_output)
    )
    if _is_network(inputs, output):
        program: Any = Contraction(inputs, path, output, shapes)
    else:
        program = _EinsumProgram(equation, shapes, path)
    plan = Plan(
        equation=equation,
        inputs=inputs,
        output=output,
        path=tuple(tuple(step) for step in path),
        flops=int(flops),
        naive_flops=int(naive),
        largest_intermediate=int(largest),
        optimizer=opt_name,
        info=info,
        search_seconds=searched,
        estimated_seconds=estimated,
    )
    return plan, program


def _sliced(
    plan: Plan,
    shapes: tuple[tuple[int, ...], ...],
    limit: int,
    dtype,
    device,
) -> tuple[Plan, SlicedContraction]:
    """The plan and program that contract ``plan`` in slices of at most ``limit`` elements.

    Keyed by the whole plan (the cached object from :func:`compiled`, so the lookup is by
    identity): a sliced plan keeps the optimizer, search time and path info of its own plan,
    also when another optimizer found the same path.
    """
    key = ("sliced", plan, shapes, limit, dtype, device)
    return cached(key, lambda: _slice(plan, shapes, limit, dtype, device))


def _slice(
    plan: Plan, shapes: tuple[tuple[int, ...], ...], limit: int, dtype, device
) -> tuple[Plan, SlicedContraction]:
    symbols = leg_symbols(plan.inputs)
    back = {s: leg for leg, s in symbols.items()}
    sym_inputs = [frozenset(symbols[leg] for leg in legs) for legs in plan.inputs]
    sym_output = frozenset(symbols[leg] for leg in plan.output)
    size_dict = {
        symbols[leg]: d for legs, shape in zip(plan.inputs, shapes) for leg, d in zip(legs, shape)
    }
    chosen = choose_chunks(sym_inputs, sym_output, size_dict, plan.path, limit)
    sliced = tuple(back[s] for s, _ in chosen)
    dims = tuple(size_dict[s] for s, _ in chosen)
    chunk = {back[s]: c for s, c in chosen}
    inner_shapes = tuple(
        tuple(chunk.get(x, d) for x, d in zip(legs, shape))
        for legs, shape in zip(plan.inputs, shapes)
    )
    inner_plan, inner = compiled(plan.inputs, inner_shapes, plan.output, plan.path, dtype, device)
    program = SlicedContraction(inner, plan.inputs, sliced, dims, [chunk[x] for x in sliced])
    sliced_plan = Plan(
        equation=plan.equation,
        inputs=plan.inputs,
        output=plan.output,
        path=plan.path,
        flops=inner_plan.flops * program.slices,
        naive_flops=plan.naive_flops,
        largest_intermediate=inner_plan.largest_intermediate,
        optimizer=plan.optimizer,
        info=plan.info,
        search_seconds=plan.search_seconds,
        estimated_seconds=plan.estimated_seconds * program.slices,
        sliced=sliced,
        slices=program.slices,
    )
    return sliced_plan, program


def prepared(
    inputs: tuple[tuple[str, ...], ...],
    shapes: tuple[tuple[int, ...], ...],
    output: tuple[str, ...],
    optimize: Optimize = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    max_intermediate: int | None = None,
    slicing: bool | None = None,
    refuse: bool = True,
) -> tuple[Plan, Any]:
    """:func:`compiled`, then the size limit: sliced, refused or unchanged.

    The limit is ``max_intermediate`` or else the global one (:func:`set_max_intermediate`);
    ``slicing`` (default: the global setting) chooses between slicing and refusing a plan above
    it. With ``refuse=False`` an oversized plan is returned as it is (for inspection).

    Raises
    ------
    ValueError
        Before any planning when the result alone exceeds the limit; after planning when the
        largest intermediate exceeds it and slicing is off.
    """
    if max_intermediate is None:
        limit, explicit = _LIMIT["elements"], False
    else:
        if isinstance(max_intermediate, bool) or not isinstance(max_intermediate, int):
            raise TypeError(f"max_intermediate must be an int, got {max_intermediate!r}")
        if max_intermediate < 1:
            raise ValueError(f"max_intermediate must be >= 1, got {max_intermediate}")
        limit, explicit = max_intermediate, True
    if slicing is None:
        slicing = _LIMIT["slicing"]
    elif not isinstance(slicing, bool):
        raise TypeError(f"slicing must be True, False or None, got {slicing!r}")
    if limit is None:
        return compiled(inputs, shapes, output, optimize, dtype, device)
    where = f"max_intermediate={limit:,}" if explicit else f"the limit of {limit:,} elements"
    fix = "pass a larger max_intermediate=" if explicit else "raise it with tn.set_max_intermediate"
    if refuse:
        dims = {leg: d for legs, shape in zip(inputs, shapes) for leg, d in zip(legs, shape)}
        out_size = math.prod(dims[leg] for leg in output)
        if out_size > limit:
            raise ValueError(
                f"the result alone has {out_size:,} elements (legs {short_legs(output)}), "
                f"above {where}; slicing cannot help, {fix}(...)"
            )
    plan, program = compiled(inputs, shapes, output, optimize, dtype, device)
    if plan.largest_intermediate <= limit:
        return plan, program
    if slicing:
        return _sliced(plan, shapes, limit, dtype, device)
    if not refuse:
        return plan, program
    raise ValueError(
        f"contraction needs an intermediate of {plan.largest_intermediate:,} elements, above "
        f"{where} (plan by {plan.optimizer}); pass slicing=True to contract it in slices "
        f"(tn.set_max_intermediate(..., slicing=True) for every contraction), {fix}(...), or "
        "try another optimize="
    )


_LIMIT: dict[str, Any] = {"elements": DEFAULT_MAX_INTERMEDIATE, "slicing": False}


def limit_state() -> tuple[int | None, bool]:
    """The global largest-intermediate limit and slicing switch (for memo keys)."""
    return _LIMIT["elements"], _LIMIT["slicing"]


def set_max_intermediate(elements: int | None, slicing: bool | None = None) -> None:
    """Set the default limit on a contraction's largest intermediate (elements).

    Applies to every :meth:`TensorNetwork.contract` (and so to ``Format.to_dense``) that does
    not pass ``max_intermediate=``. Above the limit a contraction raises ValueError before any
    work, unless slicing is on, in which case it runs in slices that fit.

    Parameters
    ----------
    elements : int or None
        The limit; None removes it. The default is ``2**28`` (2 GiB of float64).
    slicing : bool, optional
        Slice oversized contractions instead of refusing them (unchanged when omitted).

    Examples
    --------
    >>> import tensornet as tn
    >>> tn.set_max_intermediate(2**20, slicing=True)
    >>> tn.get_max_intermediate()
    1048576
    >>> tn.set_max_intermediate(2**28, slicing=False)  # the defaults
    """
    if elements is not None:
        if isinstance(elements, bool) or not isinstance(elements, int):
            raise TypeError(f"max intermediate must be an int or None, got {elements!r}")
        if elements < 1:
            raise ValueError(f"max intermediate must be >= 1, got {elements}")
    if slicing is not None and not isinstance(slicing, bool):
        raise TypeError(f"slicing must be True, False or None, got {slicing!r}")
    _LIMIT["elements"] = elements
    if slicing is not None:
        _LIMIT["slicing"] = slicing


def get_max_intermediate() -> int | None:
    """The default limit on a contraction's largest intermediate (None: no limit)."""
    return _LIMIT["elements"]


def plan_contraction(
    inputs: Sequence[Sequence[str]],
    shapes: Sequence[Sequence[int]],
    output: Sequence[str],
    optimize: Optimize = None,
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
