"""Truncation studies on any model: sweep layers x cuts x chi with your own evaluation function.

Every cell (one layer, one cut, one chi) truncates that layer's weight along that cut to ``chi``
singular values, calls ``evaluate(model)``, and restores the weight. Results go to a JSON-lines
file one finished cell at a time (each row is a single appended, fsync'ed line; a torn last line
from a killed run is discarded), so a rerun skips the finished cells and returns the same table.
The store and the engines that run the cells (here, ``concurrent.futures``, Dask) are those of
:mod:`tensornet.runs`.

Examples
--------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
>>> x = torch.randn(8, 1, 5, 5)
>>> reference = model(x).detach()
>>> @torch.no_grad()
... def evaluate(m):
...     return {"output_error": float((m(x) - reference).norm() / reference.norm())}
>>> rows = truncation_sweep(model, evaluate, chis=[1, 4], progress=False)
>>> [(r["cut"], r["chi"]) for r in rows][:3]
[('out|in,kh,kw', 1), ('out|in,kh,kw', 4), ('in|out,kh,kw', 1)]
>>> rows[1]["rel_error"] < 1e-6 and rows[1]["output_error"] < 1e-6  # chi = full rank
True
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .core.linalg import svd
from .core.node import Node
from .core.spectrum import Spectrum, cuts
from .core.truncation import Truncation
from .core.validate import check_finite, is_int
from .runs import ResultStore, map_cells
from .spectra import cut_key, cut_spectra
from .weights import KERNEL_LEGS, select_layers

__all__ = [
    "Cell",
    "ResultStore",
    "chi_grid",
    "truncatable_layers",
    "truncation_sweep",
    "truncate_layers",
    "replaced_weight",
]

Metrics = Mapping[str, float] | float
Evaluate = Callable[[torch.nn.Module], Metrics]


def chi_grid(chi_max: int, points: int | None = None) -> list[int]:
    """Bond dimensions to try: powers of two up to ``chi_max``, plus ``chi_max`` itself.

    With ``points``, that many roughly geometrically spaced values in ``[1, chi_max]`` instead.

    >>> chi_grid(12), chi_grid(64, points=4)
    ([1, 2, 4, 8, 12], [1, 4, 16, 64])
    """
    if not is_int(chi_max) or int(chi_max) < 1:
        raise ValueError(f"chi_max must be an int >= 1, got {chi_max!r}")
    chi_max = int(chi_max)
    if points is None:
        grid = [2**k for k in range(int(math.log2(chi_max)) + 1)]
    else:
        if not is_int(points) or int(points) < 1:
            raise ValueError(f"points must be an int >= 1, got {points!r}")
        points = int(points)
        grid = [round(chi_max ** (k / max(points - 1, 1))) for k in range(points)]
    return sorted({max(1, min(c, chi_max)) for c in grid} | {chi_max})


def truncatable_layers(
    model: torch.nn.Module, layers: str | Sequence[str] | None = None
) -> list[str]:
    """Names of conv and linear layers of ``model`` (filtered by glob/regex or an explicit list).

    Transposed convolutions are not included (their weight layout is ``(in, out, k...)``); see
    :func:`tensornet.weights.select_layers`, which this is.

    Raises ValueError when a requested name or pattern matches nothing.
    """
    return select_layers(model, layers)


@contextmanager
def replaced_weight(model: torch.nn.Module, layer: str, weight: torch.Tensor):
    """Temporarily copy ``weight`` into ``model.<layer>.weight`` (restored on exit)."""
    param = model.get_submodule(layer).weight
    if tuple(weight.shape) != tuple(param.shape):
        raise ValueError(
            f"layer {layer!r}: weight shape {tuple(weight.shape)} != {tuple(param.shape)}"
        )
    saved = param.detach().clone()
    with torch.no_grad():
        param.copy_(weight)
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(saved)


@dataclass(frozen=True)
class Cell:
    """One unit of a sweep: truncate ``layer`` along ``left_legs`` to ``chi`` values."""

    layer: str
    left_legs: tuple[str, ...]
    cut: str
    chi: int

    @property
    def key(self) -> str:
        """The cell's identity in a results file: ``layer<TAB>cut<TAB>chi``."""
        return f"{self.layer}\t{self.cut}\t{self.chi}"


def _as_metrics(value: Metrics) -> dict[str, float]:
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    return {"metric": float(value)}


def _cut_spec(cut_spec: Sequence[Sequence[str]] | None) -> list[tuple[str, ...]] | None:
    """The requested cuts as tuples of leg names (TypeError naming a bad one)."""
    if cut_spec is None:
        return None
    if isinstance(cut_spec, str):
        raise TypeError(
            f"cuts must be a sequence of left-leg tuples such as [('out',)], got {cut_spec!r}"
        )
    out = []
    for left in cut_spec:
        left = (left,) if isinstance(left, str) else tuple(left)
        if not left or not all(isinstance(leg, str) for leg in left):
            raise TypeError(f"every cut is a non-empty sequence of leg names, got {left!r}")
        out.append(left)
    return out


def _layer_cuts(
    weight: torch.Tensor, cut_spec: list[tuple[str, ...]] | None
) -> list[tuple[str, ...]]:
    legs = KERNEL_LEGS[weight.ndim]
    if cut_spec is None:
        return [left for left, _ in cuts(legs)]
    return [
        left for left in cut_spec if all(leg in legs for leg in left) and 0 < len(left) < len(legs)
    ]


class _CutFactors:
    """The SVD of one weight across one cut, reused for every chi swept on that cut."""

    def __init__(self, weight: torch.Tensor, left: tuple[str, ...]) -> None:
        legs = KERNEL_LEGS[weight.ndim]
        node = Node(weight, legs)
        right = tuple(leg for leg in legs if leg not in left)
        self.u, s, self.vh = svd(node.matricize(left))
        self.s = s.to(self.u.dtype)
        self.spectrum = Spectrum(s, left, right)
        self.shape = [node.dim(leg) for leg in left + right]
        self.permutation = [(left + right).index(leg) for leg in legs]

    def truncated(self, chi: int) -> torch.Tensor:
        """The best rank-``chi`` approximation across the cut, in the weight's layout."""
        approx = (self.u[:, :chi] * self.s[:chi]) @ self.vh[:chi]
        return approx.reshape(self.shape).permute(self.permutation)


def _evaluate_cell(
    model: torch.nn.Module,
    evaluate: Evaluate,
    cell: Cell,
    factors: _CutFactors | None = None,
) -> dict[str, Any]:
    if factors is None:
        factors = _CutFactors(model.get_submodule(cell.layer).weight.detach(), cell.left_legs)
    sp = factors.spectrum
    with replaced_weight(model, cell.layer, factors.truncated(cell.chi)):
        metrics = _as_metrics(evaluate(model))
    err = sp.relative_error(cell.chi)
    return {
        "kind": "cell",
        "key": cell.key,
        "layer": cell.layer,
        "cut": cell.cut,
        "chi": cell.chi,
        "chi_max": sp.chi_max,
        "rel_error": err,
        "discarded_weight": sp.discarded_weight(cell.chi),
        "norm_kept": math.sqrt(max(0.0, 1.0 - err**2)),
        "entropy": sp.entropy(),
        **metrics,
    }


def truncation_sweep(
    model: torch.nn.Module,
    evaluate: Evaluate,
    *,
    layers: str | Sequence[str] | None = None,
    cuts: Sequence[Sequence[str]] | None = None,
    chis: Sequence[int] | Callable[[Spectrum], Sequence[int]] | None = None,
    results: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    executor: Any = None,
    progress: bool | Callable[[dict[str, Any], int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate ``model`` with one layer truncated along one cut at a time, for each chi.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged (every weight is restored after its cell).
    evaluate : callable
        ``evaluate(model) -> float or {name: float}`` (e.g. test accuracy).
    layers : glob/regex or list of names, optional
        Conv/linear layers to sweep (default all).
    cuts : sequence of left-leg tuples, optional
        Cuts to sweep, e.g. ``[("out",), ("out", "in")]``, with legs named as in
        :data:`tensornet.KERNEL_LEGS`; cuts that do not apply to a layer are skipped, and a cut
        that applies to none of the swept layers raises ValueError. Default: every cut of each
        weight.
    chis : sequence of int, or callable(Spectrum) -> sequence of int, optional
        Bond dimensions; default :func:`chi_grid` of each cut's full rank. Values above a cut's
        full rank are clipped to it, and the full rank is always included.
    results : path, optional
        JSON-lines file for resuming: finished cells are skipped on rerun.
    config : mapping, optional
        Stored with the results; a rerun with another config raises ValueError.
    executor : concurrent.futures.Executor or distributed.Client, optional
        Runs the cells through :func:`tensornet.runs.map_cells`, each on its own deep copy of
        the model (threads, processes, or a Dask/Ray executor with that interface). A Dask
        ``distributed.Client`` gets the model and ``evaluate`` once per worker (scattered, not
        pickled into every cell); the cells then run on the cluster in any order. Either way
        only this process writes ``results``, so resuming works as in a serial run and the
        returned table is the same. Default: in this process.
    progress : bool or callable, optional
        tqdm bar; default on when stderr is a terminal. A callable is called instead as
        ``progress(row, done, total)`` after each computed cell is stored (``done`` of the
        ``total`` cells this call computes; reused cells are not counted).

    Returns
    -------
    list of dict
        One row per cell, in layer, cut, chi order: ``layer, cut, chi, chi_max, rel_error,
        discarded_weight, norm_kept, entropy`` and the evaluation's metrics.
    """
    names = truncatable_layers(model, layers)
    if chis is not None and not callable(chis):
        chis = _check_chis(chis, "chis")
    cells = _sweep_cells(model, names, _cut_spec(cuts), chis)
    store = ResultStore(results, config)
    todo = store.todo(cells, _key)
    task = _SweepCell(private=executor is not None)
    rows = map_cells(task, todo, executor=executor, shared=(model, evaluate))
    if callable(progress):
        for done, row in enumerate(rows, start=1):
            store.add(row)
            progress(row, done, len(todo))
        return store.table(cells, _key)
    show = sys.stderr.isatty() if progress is None else progress
    for row in tqdm(rows, total=len(todo), disable=not show, desc="truncation sweep"):
        store.add(row)
    return store.table(cells, _key)


def _key(cell: Cell) -> str:
    return cell.key


def _sweep_cells(
    model: torch.nn.Module,
    names: Sequence[str],
    requested: list[tuple[str, ...]] | None,
    chis: Sequence[int] | Callable[[Spectrum], Sequence[int]] | None,
) -> list[Cell]:
    """The cells of a sweep, in layer, cut, chi order (ValueError for a cut used nowhere)."""
    cells: list[Cell] = []
    used: set[tuple[str, ...]] = set()
    for name in names:
        weight = model.get_submodule(name).weight.detach()
        check_finite(weight, f"layer {name!r} weight")
        lefts = _layer_cuts(weight, requested)
        used.update(lefts)
        # cuts that differ only by size-1 legs share one decomposition (cut_spectra)
        for left, sp in zip(lefts, cut_spectra(Node(weight, KERNEL_LEGS[weight.ndim]), lefts)):
            if chis is None:
                grid = chi_grid(sp.chi_max)
            elif callable(chis):
                grid = _check_chis(chis(sp), f"chis({sp.label}) of layer {name!r}")
            else:
                grid = chis
            # full rank is always a cell: it is the untruncated reference every analysis needs
            for chi in sorted({min(c, sp.chi_max) for c in grid} | {sp.chi_max}):
                cells.append(Cell(name, left, sp.label, chi))
    unused = [left for left in requested or () if left not in used]
    if unused:
        shown = {name: KERNEL_LEGS[model.get_submodule(name).weight.ndim] for name in names}
        raise ValueError(
            f"cuts {unused} apply to none of the layers swept (their legs: {shown}); a cut "
            "names legs of KERNEL_LEGS on one side, and leaves at least one leg on the other"
        )
    return cells


def _check_chis(chis: Any, what: str) -> list[int]:
    """Bond dimensions as Python ints >= 1 (integers of any library; no floats)."""
    if isinstance(chis, (str, bytes)) or is_int(chis):
        raise TypeError(f"{what} must be a sequence of ints, got {chis!r}")
    try:
        values = list(chis)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of ints, got {type(chis).__name__}") from None
    for c in values:
        if not is_int(c):
            raise TypeError(f"{what} must hold ints, got {type(c).__name__} {c!r}")
        if int(c) < 1:
            raise ValueError(f"{what} must be >= 1, got {c}")
    return [int(c) for c in values]


class _SweepCell:
    """``map_cells`` task: one cell, reusing the SVDs already taken of its layer.

    The SVD of a layer's weight across a cut serves every cut of that layer with the same
    :func:`~tensornet.spectra.cut_key` (cuts that differ only by size-1 legs: the truncated
    weights are the same). A weight without size-1 legs has no such cuts, so only the last SVD
    is kept; the cache is dropped when the layer changes.

    With ``private`` (any executor) each cell runs on a deep copy of the model, so threads and
    the cells of one Dask worker never see each other's truncated weights; here the model is
    truncated in place and restored. The SVD is always taken of the shared, unchanged weight.
    """

    def __init__(self, private: bool) -> None:
        self.private = private
        self._layer: str | None = None
        self._factors: dict[frozenset[frozenset[str]], _CutFactors] = {}

    def __getstate__(self) -> dict[str, Any]:
        # the factors stay in this process
        return {"private": self.private, "_layer": None, "_factors": {}}

    def _cut_factors(self, model: torch.nn.Module, cell: Cell) -> _CutFactors:
        weight = model.get_submodule(cell.layer).weight.detach()
        key = cut_key(Node(weight, KERNEL_LEGS[weight.ndim]), cell.left_legs)
        if cell.layer != self._layer:
            self._layer, self._factors = cell.layer, {}
        factors = self._factors.get(key)
        if factors is None:
            if 1 not in weight.shape:
                self._factors.clear()
            factors = self._factors[key] = _CutFactors(weight, cell.left_legs)
        return factors

    def __call__(self, model: torch.nn.Module, evaluate: Evaluate, cell: Cell) -> dict[str, Any]:
        factors = self._cut_factors(model, cell)
        target = copy.deepcopy(model) if self.private else model
        return _evaluate_cell(target, evaluate, cell, factors)


def truncate_layers(
    model: torch.nn.Module,
    steps: Mapping[str, Sequence[tuple[Sequence[str], Truncation | int]]] | None = None,
    *,
    plan: Mapping[str, Sequence[tuple[Sequence[str], Truncation | int]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Truncate several layers in place, each along several cuts in turn.

    Each layer goes through :func:`tensornet.nn.truncate_kernel`.

    Parameters
    ----------
    model : torch.nn.Module
        Changed in place.
    steps : mapping
        A layer name to its truncation steps ``[(left_legs, trunc), ...]``, applied in order.
    plan : mapping, optional
        Deprecated name of ``steps`` (a DeprecationWarning; removed in the next release):
        ``plan`` names only contraction and forward plans.

    Returns
    -------
    dict
        Per layer, the total relative error, the kept norm fraction and each step's error.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3)).double()
    >>> report = truncate_layers(model, {"0": [(("out",), 2)]})
    >>> round(report["0"]["error"] ** 2 + report["0"]["norm_kept"] ** 2, 9)
    1.0
    """
    from .nn.truncate import truncate_kernel

    if plan is not None:
        if steps is not None:
            raise TypeError("truncate_layers: give steps only (plan is its deprecated name)")
        warnings.warn(
            "truncate_layers(plan=...) is deprecated; use truncate_layers(steps=...)",
            DeprecationWarning,
            stacklevel=2,
        )
        steps = plan
    if steps is None:
        raise TypeError("truncate_layers: missing steps (layer name -> [(left_legs, trunc), ...])")
    report = {}
    for layer, layer_steps in steps.items():
        module = model.get_submodule(layer)
        check_finite(module.weight.detach(), f"layer {layer!r} weight")
        cuts = [tuple(left) for left, _ in layer_steps]
        truncs = [trunc for _, trunc in layer_steps]
        _, res = truncate_kernel(module, cuts, truncs, inplace=True)
        report[layer] = {
            "error": res.error, "norm_kept": res.norm_kept, "step_errors": list(res.step_errors)
        }
    return report
