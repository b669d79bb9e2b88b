"""Global rank allocation under a parameter, FLOP or time budget: uniform, energy and ALDS.

Every chosen layer ``W (f, c, k1, k2)`` (a linear layer is ``k1 = k2 = 1``) is considered in the
channel-grouped low-rank format of :class:`~tensornet.formats.Grouped`: ``k`` groups of input
channels (``k`` divides ``c``), rank ``j`` in every group, ``j (k f + c k1 k2)`` parameters.
Over the matricised kernel ``W = [W_1 | ... | W_k]`` (``f x c k1 k2``, the groups are column
blocks) the approximation error is ``W - W' = [E_1 | ... | E_k]`` with ``E_g`` the discarded part
of ``W_g``'s SVD, so (Eckart-Young-Mirsky per group)

- the true relative Frobenius error is ``sqrt(sum_g sum_(i>j) s_i(W_g)^2) / ||W||_F``;
- the true relative spectral error is ``sqrt(lambda_max(sum_g E_g E_g^T)) / ||W||_2``, where
  ``E_g E_g^T = U_g[:, j:] S_g[j:]^2 U_g[:, j:]^T`` (computed exactly, on the smaller side of
  the tail, only for the ``(j, k)`` a search visits, and cached);
- the ALDS proxy (Liebenwein et al. 2021) is ``max_g s_(j+1)(W_g) / ||W||_2``, a lower bound of
  the spectral error that can be ``sqrt(k)`` times too small.

With ``k = 1`` all three are the plain truncated SVD's errors. A layer stays dense where the
compressed form would not be cheaper.

Methods
-------
- ``"uniform"``: one rank ratio for every layer (``j = ratio * min(f, c k1 k2)``, ``k = 1``);
- ``"energy"``: one energy threshold: each layer keeps the fewest singular values holding that
  fraction of ``sum s^2`` (``k = 1``);
- ``"alds"``: one global error threshold, found by bisection so the total meets the budget
  (which minimises the largest layer error for the given group counts), alternated with a local
  step that, per layer and at fixed cost, tries every divisor ``k`` and keeps the least error;
  run from several seeds (``k`` near 1, 3, 5, 7, 9 everywhere, then random) and the best result
  kept. Leftover budget is spent on the layers with the largest errors, and a last local step
  makes every group count the best at its layer's cost;
- ``"auto"``: per layer, any registered format that fits it (svd, grouped, tucker2, tucker,
  tt in its useful mode orders, ht, tr, cp) or dense, at a grid of ranks, each scored by its
  true relative Frobenius weight error (or a given ``errors`` function) and priced in the
  measure; only each layer's Pareto frontier of error against cost is kept, and one point per
  layer is chosen under the budget: least sum of squared errors (default, with a Lagrangian
  bound) or least largest error (exact). See :mod:`tensornet.nn.alloc_candidates` (candidates
  and the rank grid), :mod:`tensornet.nn.alloc_auto` (prices, frontiers) and
  :mod:`tensornet.nn.frontier` (the global choice).

The error ALDS minimises is ``error="true"`` (the true relative spectral error, default) or
``"proxy"`` (the paper's bound). Uniform and energy compute only the single-group spectra.

The budget is a fraction of the whole model's parameters, of its conv/linear FLOPs or of their
estimated time in ``(0, 1]``, or an absolute count above 1 (parameters or FLOPs). FLOPs and
time are those of the forward plan each compressed layer will run for ``example_input`` (the
cost model's choice, :mod:`tensornet.nn.cost`); a layer whose best plan is the dense one, or
that costs no less than dense, counts as dense. The result is an :class:`Allocation`; apply it
with ``compress(model, allocation=...)``.

:func:`allocate` checks its arguments once, surveys the model (layer inputs, dense totals),
builds each chosen layer's :class:`~tensornet.nn.alloc_layer.GroupedLayer` (spectra, errors,
costs), finds the room the budget leaves them and runs the method's search
(:mod:`tensornet.nn.alloc_search`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..core.validate import as_int
from .alloc_auto import (
    OBJECTIVES,
    ErrorFn,
    LayerFrontier,
    check_formats,
    choose,
    chosen_errors,
    layer_frontier,
    price,
)
from .alloc_candidates import Candidate
from .alloc_data import output_errors
from .alloc_layer import GroupedLayer, Pricer, layer_seconds
from .alloc_search import SEARCHES, progress
from .allocation import Allocation, LayerChoice
from .covariance import input_covariances
from .measure import dense_flops, layer_inputs
from .select import Selector, select_layers

__all__ = ["Allocation", "LayerChoice", "allocate"]

METHODS = ("uniform", "energy", "alds", "auto")
MEASURES = ("params", "flops", "time")
ERRORS = ("true", "proxy")
_UNITS = {"params": "parameters", "flops": "FLOPs", "time": "seconds"}


def allocate(
    model: nn.Module,
    budget: float,
    method: str = "alds",
    measure: str = "params",
    layers: Selector = None,
    *,
    skip: Sequence[str] = ("first", "last"),
    example_input: torch.Tensor | None = None,
    error: str = "true",
    iterations: int = 4,
    seeds: int = 4,
    max_groups: int = 64,
    seed: int = 0,
    progress: bool | None = None,
    formats: Sequence[str] | None = None,
    objective: str | None = None,
    weights: Mapping[str, float] | None = None,
    errors: ErrorFn | None = None,
    data: Any = None,
    reuse: Allocation | None = None,
) -> Allocation:
    """Choose per-layer ranks (and ALDS group counts) so the model meets ``budget``.

    Parameters
    ----------
    model : nn.Module
        A trained model (its conv/linear weights are analysed, not changed).
    budget : float
        In ``(0, 1]``: fraction of the model's parameters (``measure="params"``), of its
        conv/linear FLOPs (``"flops"``) or of their estimated time (``"time"``); above 1: an
        absolute count of parameters or FLOPs. Python, numpy or 0-d torch numbers.
    method : {"uniform", "energy", "alds", "auto"}
        ``"auto"``: per layer, any format, ranks and options (see :mod:`tensornet.nn.alloc_auto`
        and the arguments ``formats`` to ``errors`` below).
    measure : {"params", "flops", "time"}
        FLOPs and time need ``example_input`` (an input batch): they are those of the plan the
        cost model runs for each layer at that input (a layer that would run its dense plan, or
        cost no less than dense, counts as dense).
    layers, skip
        Which layers may be compressed (see :func:`~tensornet.nn.select.select_layers`).
    error : {"true", "proxy"}
        What ALDS minimises: the true relative spectral error ``||W - W'||_2 / ||W||_2`` (the
        ALDS quantity, computed exactly), or the paper's proxy ``max_g s_(j+1)(W_g) /
        ||W||_2``. With ``"true"`` the group count of every layer is the best at its cost, so
        a grouped choice is never worse than a plain SVD (``k = 1``) of the same cost. The
        smaller error is not the better model: on ResNet-20 trained on digits (3 seeds, 50-60 %
        of the parameters, BatchNorm recalibrated) the proxy's allocations kept 18-19 points
        more test accuracy (``bench/results/accuracy_recalibration_digits_true_vs_proxy.md``).
        Reported as ``LayerChoice.error``; the true spectral and Frobenius errors are always
        reported too.
    iterations, seeds, seed
        ALDS: global/local alternations per start (``>= 0``), random starts (``>= 0``), their
        seed (``>= 0``).
    max_groups : int
        ALDS: the largest group count tried (``>= 1``).
    progress : bool, optional
        tqdm bars over the layers' spectra and ALDS's starts; default on when stderr is a
        terminal.
    formats : sequence of str, optional
        ``auto``: the formats to consider (default all of
        :data:`~tensornet.nn.alloc_candidates.AUTO_FORMATS`); the dense layer always is.
    objective : {"sum", "max"}, optional
        ``auto``'s global choice over the layers' error-cost frontiers. ``"sum"`` (default)
        minimises ``sum_l w_l e_l^2`` (Lagrangian relaxation on the frontiers' convex hulls,
        then a greedy repair; :attr:`Allocation.gap` bounds its distance from the optimum);
        ``"max"`` minimises the largest layer error (ALDS's objective; exact, by bisection over
        the error levels, leftover spent on the largest errors). The sum is the default: it
        spends each unit of budget where it removes the most (weighted) squared error, the
        rate-distortion optimum when the layers' errors add up as independent perturbations,
        while the largest error lets the one layer that is dearest to approximate set the
        error level of all, and keeps no budget for the layers where a little more buys much.
        On ResNet-20 (width 16) trained on digits (seeds 0 and 1, BatchNorm recalibrated, no
        fine-tuning) at 60 / 40 / 25 % of the parameters, ``"sum"`` kept 95-98 / 94-98 /
        93-97 % test accuracy, ``"max"`` 87-89 / 53-62 / 41-51 %, ALDS (``error="proxy"``)
        89-95 / 80-83 / 51-52 %, dense 92-98 %: ``"sum"`` compresses a few large layers (to
        CP, mostly) and keeps the rest dense.
    weights : mapping of str to float, optional
        ``auto`` with ``objective="sum"``: per-layer sensitivities ``w_l > 0`` (default 1).
    errors : callable, optional
        ``auto``: ``errors(name, module, candidates) -> errors``, one per candidate, replacing
        the weight errors (e.g. output errors on data: see :mod:`tensornet.nn.alloc_auto`).
    data : tensor or iterable of batches, optional
        ``auto``: a few input batches (``(input, target)`` pairs and ``DataLoader`` too); each
        candidate is scored by the relative error of its layer's output on them, for the kernel
        ``compress(model, allocation=..., data=data)`` builds (svd and Tucker-2 whitened by the
        inputs; :mod:`tensornet.nn.alloc_data`). Apply the result with that same ``data``.
    reuse : Allocation, optional
        ``auto``: an earlier ``auto`` allocation of this same model, layers and measure. Its
        frontiers are reused and only the global choice is made again (at this ``budget``,
        ``objective`` and ``weights``), so several budgets pay for the candidates once. The
        reused allocation fixes ``formats``, ``errors`` and ``data``: they are refused here.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 32, 3),
    ...                     nn.Conv2d(32, 8, 1))
    >>> alloc = allocate(net, 0.5, "alds")
    >>> alloc.total_params <= 0.5 * sum(p.numel() for p in net.parameters())
    True
    >>> c = alloc.layers["1"]
    >>> c.error == c.spectral_error and c.frobenius_error > 0
    True
    >>> auto = allocate(net, 0.5, "auto", formats=("svd", "tucker2"))
    >>> auto.total_params <= auto.budget, sorted(auto.layers)
    (True, ['1', '2'])
    >>> {c.format for c in auto.layers.values()} <= {"svd", "tucker2", "dense"}
    True
    >>> allocate(net, 0.3, "auto", reuse=auto).total_params <= 0.3 * auto.model_params
    True
    """
    settings = _settings(
        method, measure, error, budget, iterations, seeds, seed, max_groups, progress
    )  # fmt: skip
    auto = _auto_settings(method, formats, objective, weights, errors, data, reuse)
    if measure != "params" and example_input is None:
        raise ValueError(f"allocate: measure={measure!r} needs example_input (an input batch)")
    names = select_layers(model, layers, skip)
    if auto is not None:
        _check_weights(auto.weights, names)
    if reuse is not None:
        _check_reuse(reuse, names, settings.measure)
    if data is not None:  # scored by output errors on data (auto only: checked above)
        covariances = input_covariances(model, data, names, skip_large=True)
        auto = auto._replace(errors=output_errors(covariances))
    shapes, totals = _survey(model, names, example_input)
    if auto is not None:
        return _auto(model, names, shapes, totals, settings, auto, reuse)
    specs = _spectra(model, names, shapes, settings)
    least = sum(s.cost(1, 1) for s in specs)
    absolute, room = _room(sum(s.dense_cost() for s in specs), least, settings, totals)
    js, ks, history = SEARCHES[settings.method](specs, room, **settings.search)
    return _result(specs, js, ks, settings, absolute, history, totals)


# -- the steps of allocate -------------------------------------------------------------------
@dataclass(frozen=True)
class _Settings:
    """The checked arguments of :func:`allocate`."""

    method: str
    measure: str
    error: str
    budget: float
    max_groups: int
    search: dict[str, Any]  # the search's keyword arguments


def _settings(
    method: Any,
    measure: Any,
    error: Any,
    budget: Any,
    iterations: Any,
    seeds: Any,
    seed: Any,
    max_groups: Any,
    progress: Any,
) -> _Settings:
    method = _check_choice(method, METHODS, "method")
    measure = _check_choice(measure, MEASURES, "measure")
    error = _check_choice(error, ERRORS, "error")
    budget = _as_budget(budget, measure)
    search = {
        "iterations": as_int(iterations, "allocate: iterations", low=0),
        "seeds": as_int(seeds, "allocate: seeds", low=0),
        "seed": as_int(seed, "allocate: seed", low=0),
    }
    max_groups = as_int(max_groups, "allocate: max_groups", low=1)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"allocate: progress must be a bool or None, got {progress!r}")
    search["show"] = sys.stderr.isatty() if progress is None else progress
    return _Settings(method, measure, error, budget, max_groups, search)


def _as_budget(budget: Any, measure: str) -> float:
    """``budget`` as a float (numpy and 0-d torch numbers too): finite and > 0."""
    value = None
    if isinstance(budget, torch.Tensor) and budget.ndim == 0 and not budget.is_complex():
        if budget.dtype != torch.bool:
            value = float(budget)
    elif isinstance(budget, (int, float, np.integer, np.floating)) and not isinstance(
        budget, (bool, np.bool_)
    ):
        value = float(budget)
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"allocate: budget must be a finite fraction in (0, 1] or a count > 1, got {budget!r}"
        )
    if measure == "time" and value > 1:
        raise ValueError(
            f"allocate: budget for measure='time' must be a fraction in (0, 1], got {budget!r}"
        )
    return value


def _check_choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"allocate: {what} must be one of {allowed}, got {value!r}")
    return value


class _Totals(NamedTuple):
    """The whole model's parameters and its conv/linear layers' dense FLOPs and seconds."""

    params: int
    flops: int | None
    time: float | None


def _survey(
    model: nn.Module, names: list[str], example_input: Any
) -> tuple[dict[str, tuple[int, ...]], _Totals]:
    """Every conv/linear layer's input shape (with ``example_input``) and the model's totals."""
    params = sum(p.numel() for p in model.parameters())
    if example_input is None:
        return {}, _Totals(params, None, None)
    every = select_layers(model, None, (), strict=False, include_unsupported=True)
    shapes = layer_inputs(model, example_input, every)
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ValueError(f"allocate: layers {missing} did not run on example_input")
    ran = [(model.get_submodule(n), shapes[n]) for n in every if n in shapes]
    flops = sum(dense_flops(m, shape) for m, shape in ran)
    return shapes, _Totals(params, flops, sum(layer_seconds(m, shape) for m, shape in ran))


def _spectra(
    model: nn.Module, names: list[str], shapes: dict, settings: _Settings
) -> list[GroupedLayer]:
    """Each chosen layer's spectra for the group counts the method needs (ALDS: divisors)."""
    specs = []
    for name in progress(names, settings.search["show"], "allocate: spectra"):
        module = model.get_submodule(name)
        c = module.weight.shape[1]
        top = min(c, settings.max_groups) if settings.method == "alds" else 1
        ks = [k for k in range(1, top + 1) if c % k == 0]
        pricer = Pricer(module, shapes[name]) if name in shapes else None
        specs.append(GroupedLayer(name, module, ks, settings.measure, settings.error, pricer))
    return specs


def _room(dense: float, least: float, settings: _Settings, totals: _Totals) -> tuple[float, float]:
    """The absolute budget and what is left of it for the chosen layers (feasible at rank 1).

    ``dense`` is what the chosen layers cost dense, ``least`` the least they can cost.
    """
    whole = getattr(totals, settings.measure)
    budget = settings.budget
    absolute = budget * whole if budget <= 1 else budget
    fixed = whole - dense
    room = absolute - fixed
    if room >= least:
        return absolute, room
    raise ValueError(
        f"allocate: the budget ({absolute:,.6g} {_UNITS[settings.measure]}) is below what the "
        f"model needs at rank 1 in every chosen layer ({fixed + least:,.6g}: {fixed:,.6g} in the "
        "layers and parameters that are not compressed)"
        + (
            ""
            if settings.measure == "params"
            else "; a layer whose rank-1 form would run its dense plan, or cost no less "
            "than dense, counts as dense (small inputs favour dense plans)"
        )
    )


def _result(
    specs: list[GroupedLayer],
    js: list[int],
    ks: list[int],
    settings: _Settings,
    absolute: float,
    history: list[float],
    totals: _Totals,
) -> Allocation:
    """The allocation of ``(j, k)`` per layer, with the totals it reaches."""
    choices = {s.name: _choice(s, j, k) for s, j, k in zip(specs, js, ks)}
    return _assemble(choices, settings, absolute, history, totals)


def _assemble(
    choices: dict[str, LayerChoice],
    settings: _Settings,
    absolute: float,
    history: list[float],
    totals: _Totals,
    **auto: Any,
) -> Allocation:
    """The allocation of ``choices``, with the totals it reaches (``auto``: its extra fields)."""
    params = totals.params
    flops, seconds = totals.flops, totals.time
    for c in choices.values():
        params += c.params - c.dense_params
        if c.flops is not None:
            flops += c.flops - c.dense_flops
            seconds += c.seconds - c.dense_seconds
    return Allocation(
        settings.method,
        settings.measure,
        absolute,
        choices,
        params,
        flops,
        totals.params,
        totals.flops,
        history,
        settings.error,
        seconds,
        totals.time,
        **auto,
    )


def _choice(s: GroupedLayer, j: int, k: int) -> LayerChoice:
    """One layer's choice: grouped ``(j, k)``, or dense where that is not cheaper."""
    dense = s.is_dense(j, k)
    flops = seconds = plan = dense_flops = dense_seconds = None
    if s.pricer is not None:
        dense_flops, dense_seconds = s.pricer.dense_flops, s.pricer.dense_seconds
        plan, flops, seconds = (None, dense_flops, dense_seconds) if dense else s.pricer.price(j, k)
    return LayerChoice(
        s.name,
        "dense" if dense else "grouped",
        () if dense else (j,),
        1 if dense else k,
        s.dense if dense else s.params(j, k),
        flops,
        s.error(j, k),
        s.dense,
        0.0 if dense else s.spectral(j, k),
        0.0 if dense else float(s.frob[k][j]),
        seconds,
        plan,
        dense_flops,
        dense_seconds,
    )


# -- method="auto" ---------------------------------------------------------------------------
class _Auto(NamedTuple):
    """The checked arguments only ``auto`` takes."""

    formats: tuple[str, ...]
    objective: str
    weights: Mapping[str, float] | None
    errors: ErrorFn | None


def _auto_settings(
    method: str,
    formats: Any,
    objective: Any,
    weights: Any,
    errors: Any,
    data: Any = None,
    reuse: Any = None,
) -> _Auto | None:
    """``auto``'s arguments checked (None for the other methods, which take none of them)."""
    given = {"formats": formats, "objective": objective, "weights": weights, "errors": errors}
    given.update(data=data, reuse=reuse)
    if errors is not None and data is not None:
        raise ValueError("allocate: give errors or data, not both (data sets the errors)")
    if reuse is not None:
        fixed = [k for k in ("formats", "errors", "data") if given[k] is not None]
        if fixed:
            raise ValueError(
                f"allocate: {', '.join(fixed)} cannot be given with reuse (the reused "
                "allocation's candidates fixed them)"
            )
    if method != "auto":
        named = [k for k, v in given.items() if v is not None]
        if named:
            raise ValueError(f"allocate: {', '.join(named)} apply to method='auto' only")
        return None
    objective = _check_choice("sum" if objective is None else objective, OBJECTIVES, "objective")
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise TypeError(
                f"allocate: weights must be a mapping of layer name to float, got {weights!r}"
            )
        if objective != "sum":
            raise ValueError("allocate: weights apply to objective='sum' only")
    if errors is not None and not callable(errors):
        raise TypeError(f"allocate: errors must be a callable, got {errors!r}")
    return _Auto(check_formats(formats), objective, weights, errors)


def _check_weights(weights: Mapping[str, Any] | None, names: list[str]) -> None:
    for name, w in (weights or {}).items():
        if name not in names:
            raise ValueError(
                f"allocate: weights name {name!r}, not one of the chosen layers {names}"
            )
        ok = isinstance(w, (int, float, np.integer, np.floating)) and not isinstance(w, bool)
        if not ok or not (0 < float(w) < math.inf):
            raise ValueError(f"allocate: weights[{name!r}] must be a finite number > 0, got {w!r}")


def _check_reuse(reuse: Any, names: list[str], measure: str) -> None:
    """``reuse`` must be an ``auto`` allocation of these layers in this measure."""
    if not isinstance(reuse, Allocation) or reuse.method != "auto":
        raise TypeError(f"allocate: reuse must be an Allocation of method 'auto', got {reuse!r}")
    if reuse.measure != measure:
        raise ValueError(
            f"allocate: reuse was allocated with measure={reuse.measure!r}, not {measure!r}"
        )
    if sorted(reuse.frontiers) != sorted(names) or sorted(reuse.dense) != sorted(names):
        raise ValueError(
            f"allocate: reuse holds the frontiers of layers {sorted(reuse.frontiers)}, not of "
            f"the chosen layers {sorted(names)}"
        )


def _auto(
    model: nn.Module,
    names: list[str],
    shapes: dict,
    totals: _Totals,
    settings: _Settings,
    auto: _Auto,
    reuse: Allocation | None = None,
) -> Allocation:
    """Every layer's frontier (or ``reuse``'s), one point of each within the budget."""
    if reuse is not None:
        frontiers = [
            LayerFrontier(n, reuse.dense[n], reuse.frontiers[n], shapes.get(n)) for n in names
        ]
    else:
        frontiers = [
            layer_frontier(
                n, model.get_submodule(n), shapes.get(n), settings.measure, auto.formats,
                settings.max_groups, auto.errors,
            )
            for n in progress(names, settings.search["show"], "allocate: candidates")
        ]  # fmt: skip
    dense = sum(f.dense.cost for f in frontiers)
    absolute, room = _room(dense, sum(f.frontier[0].cost for f in frontiers), settings, totals)
    chosen = choose(frontiers, room, auto.objective, auto.weights)
    choices = {
        f.name: _auto_choice(model.get_submodule(f.name), f, f.frontier[i])
        for f, i in zip(frontiers, chosen.picks)
    }
    return _assemble(
        choices, settings, absolute, [chosen.objective], totals, objective=auto.objective,
        frontiers={f.name: f.frontier for f in frontiers}, score=chosen.objective,
        bound=chosen.bound, dense={f.name: f.dense for f in frontiers},
    )  # fmt: skip


def _auto_choice(module: nn.Module, f: LayerFrontier, c: Candidate) -> LayerChoice:
    """The chosen candidate as a :class:`LayerChoice`, priced and with its true errors."""
    dense = f.dense
    if f.shape is not None:
        dense = dense if dense.flops is not None else price(module, f.shape, dense)
        c = c if c.flops is not None else price(module, f.shape, c)
    frob, spectral = chosen_errors(module, c)
    return LayerChoice(
        f.name, c.format, c.ranks, int(dict(c.options).get("channel_groups", 1)), c.params,
        c.flops, c.error, dense.params, spectral, frob, c.seconds, c.plan, dense.flops,
        dense.seconds, c.options,
    )  # fmt: skip
