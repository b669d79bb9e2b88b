"""Compressing a model: chosen conv/linear layers replaced by compressed layers, with a report.

:func:`compress` validates everything (formats, ranks, fractions, plans, layer selection) and
builds every replacement before it touches the model, so a failure leaves the model unchanged.
It works on a copy unless ``inplace=True``. Formats may differ per layer (``{"conv": "tt",
"linear": "ht"}``, patterns, or a function of the layer), and an
:class:`~tensornet.nn.Allocation` gives per-layer ranks.

What the model looks like after:

- a module registered at several places (shared, tied) is compressed once and the replacement
  is installed at every name (it stays one module; the report lists it once);
- a layer whose parameters are also another module's (a weight tied across modules) stays
  dense, with a note;
- each new layer has the mode (``training``) of the layer it replaces;
- pruned layers (``torch.nn.utils.prune``) and parametrized ones
  (``torch.nn.utils.parametrize``, ``weight_norm``) are compressed from their effective
  weight; the replacement carries no pruning or parametrization.

The report (:class:`CompressionReport`) gives, per layer and in total, parameters, FLOPs and
the cost model's estimated time of the running plan before and after, the true relative
Frobenius and spectral-norm errors of each layer's kernel, and (with ``example_input``) the
whole model's measured forward time, dense and compressed (:mod:`.report`, :mod:`.measure`).

:func:`compress` is a sequence of steps: check the flags, turn the format spec (with the sizes,
validated once) or the allocation into one ``spec_for(name, module)``, choose the layers, build
every replacement and its report, then install them in the model or a copy.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.truncation import Truncation, as_truncation
from ..core.validate import is_int
from ..formats import get_format
from ..formats.structure import as_fraction
from ..formats.tensorize import balanced_dims
from ..weights import replace_module
from .batchnorm import recalibrate_bn
from .covariance import fit_sequentially
from .defaults import AUTO, default_format
from .kinds import kind_of
from .layers import TNLayer
from .measure import (
    dense_flops,
    dense_seconds,
    forward_time,
    kernel_errors,
    layer_inputs,
    shape_of,
)
from .report import CompressionReport, LayerReport, kept_dense, layer_kind, layer_report, too_slow
from .select import (
    NoMatchingLayer,
    Selector,
    layer_aliases,
    matches,
    select_with_notes,
    shown_names,
    unsupported_reason,
)
from .whiten import compress_layer_whitened

__all__ = [
    "CompressionReport",
    "LayerReport",
    "compress",
    "dense_flops",
    "dense_seconds",
    "kernel_errors",
    "layer_inputs",
]

FormatSpec = (
    str | tuple[str, Mapping[str, Any]] | Mapping[str, Any] | Callable[[str, nn.Module], Any]
)
# One layer's replacement: (format, format options, sizes: trunc / fraction / ranks), or None.
LayerSpec = tuple[str, dict, dict] | None

# The forward-plan families of each layer kind (``plan=`` takes these or an exact name).
PLAN_FAMILIES = {
    "conv": ("dense", "staged", "separable", "patches"),
    "linear": ("dense", "direct"),
    "conv3d": ("dense", "staged"),
    "conv_transpose2d": ("dense", "staged"),
}
_POLICIES = ("auto", "measure")
_KINDS = ("conv", "linear")  # format mapping keys that are layer kinds, not patterns


def compress(
    model: nn.Module,
    format: FormatSpec = AUTO,
    layers: Selector = None,
    *,
    trunc: Truncation | int | None = None,
    fraction: float | None = None,
    ranks: Any = None,
    allocation: Any = None,
    skip: Sequence[str] = ("first", "last"),
    inplace: bool = False,
    example_input: Any = None,
    plan: str = "auto",
    min_speedup: float | None = None,
    measure_time: bool = True,
    calibrate: Any = None,
    data: Any = None,
    tensorize: str | int | None = None,
    **options: Any,
) -> tuple[nn.Module, CompressionReport]:
    """Replace the chosen conv/linear layers of ``model`` by compressed layers.

    Parameters
    ----------
    model : nn.Module
    format : str, (str, options), mapping or callable
        One format for all layers; a mapping whose keys are ``"conv"``, ``"linear"`` or layer
        patterns (first match wins; unmatched layers stay dense; a pattern matching no layer
        raises); or ``(name, module) -> format | None``. ``"auto"`` (default; also as a value
        or an answer) is :func:`~tensornet.nn.defaults.default_format` (``"svd"``; a
        depthwise conv stays dense).
    layers : pattern, names, predicate or None
        Which layers (see :func:`~tensornet.nn.select.select_layers`).
    trunc, fraction, ranks, allocation
        How much to keep (exactly one): a truncation policy, a parameter fraction of each layer
        (Python, numpy or 0-d tensor number), the format's ranks, or an :func:`allocate` result.
    skip : sequence of str
        Layers left dense: ``"first"`` (fed by a model input), ``"last"`` (reaching a model
        output: every head; see :func:`~tensornet.nn.select.end_layers`) and patterns.
    inplace : bool
        Modify ``model`` itself (after every replacement was built) instead of a copy.
    example_input : tensor or tuple of tensors, optional
        An input batch (a tuple: several inputs): the report then gives FLOPs, estimated and
        measured times, and ``"first"``/``"last"`` are found by one forward.
    plan : str
        The layers' ``plan``: ``"auto"``, ``"measure"``, a family every chosen layer has
        (``PLAN_FAMILIES``: conv or linear) or an exact plan name.
    min_speedup : float, optional
        Keep a layer dense when its estimated compressed time exceeds the dense time /
        ``min_speedup`` (needs ``example_input``); without it such layers are flagged ``slower``.
    measure_time : bool
        With ``example_input``, time the whole model's forward before and after (median of 5).
    calibrate, data : iterable of batches, optional
        Inputs (batches, ``(input, target)`` pairs, a ``DataLoader``). From ``calibrate``,
        BatchNorm statistics are recomputed after the replacements (:func:`recalibrate_bn`);
        on ``data``, the layers are fitted in turn to the dense outputs (:func:`fit_sequentially`).
    tensorize : "balanced" or int, optional
        Tensorize each layer whose format takes ``out_dims``/``in_dims`` and whose options give
        none: :func:`~tensornet.formats.tensorize.balanced_dims` (``"balanced"``: 3 modes when
        both sizes split into factors >= 4, else 2; an int: that many modes).
    **options
        Format options passed to every layer's format.

    Returns
    -------
    (nn.Module, CompressionReport)

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3))
    >>> small, report = compress(net, "tucker2", fraction=0.3, example_input=torch.ones(1, 3, 9, 9))
    >>> [r.name for r in report.layers], type(small[1]).__name__, type(net[1]).__name__
    (['1'], 'TNConv2d', 'Conv2d')
    """
    _check_flags(inplace, measure_time, min_speedup, example_input)
    aliases = layer_aliases(model)
    if allocation is None:
        sizes = _sizes(trunc, fraction, ranks)
        spec_for = _tensorized(_spec_source(format, aliases, sizes, options), tensorize)
    else:
        _check_no_tensorize(tensorize)
        # format stays unused: the allocation names each layer's format
        spec_for, layers, skip, format = _allocated(allocation), list(allocation.layers), (), None
    names, notes = _chosen_layers(model, layers, skip, plan, example_input)
    shapes = layer_inputs(model, example_input, names) if example_input is not None else {}
    job = _Job(model, aliases, plan, shapes, example_input, min_speedup, notes)
    return job.install(job.build(spec_for, names, format, data), inplace, measure_time, calibrate)


# -- the steps of compress -------------------------------------------------------------------
def _check_no_tensorize(tensorize: Any) -> None:
    if tensorize is not None:
        raise ValueError("compress: tensorize does not apply to an allocation (its options do)")


def _check_flags(inplace: Any, measure_time: Any, min_speedup: Any, example_input: Any) -> None:
    for name, value in (("inplace", inplace), ("measure_time", measure_time)):
        if not isinstance(value, bool):
            raise TypeError(f"compress: {name} must be a bool, got {value!r}")
    if min_speedup is None:
        return
    if (
        isinstance(min_speedup, (bool, np.bool_))
        or not isinstance(min_speedup, numbers.Real)
        or not (0 < min_speedup < math.inf)
    ):
        raise ValueError(f"compress: min_speedup must be a number > 0, got {min_speedup!r}")
    if example_input is None:
        raise ValueError("compress: min_speedup needs example_input (the cost model's input)")


def _sizes(trunc: Any, fraction: Any, ranks: Any) -> dict[str, Any]:
    """How much every layer keeps: exactly one of trunc, fraction, ranks, validated here once."""
    given = [
        k for k, v in (("trunc", trunc), ("fraction", fraction), ("ranks", ranks)) if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"compress: give exactly one of trunc, fraction, ranks (or allocation); got {given}"
        )
    fraction = None if fraction is None else as_fraction(fraction, "compress")
    return {"trunc": as_truncation(trunc), "ranks": ranks, "fraction": fraction}


def _spec_source(
    spec: FormatSpec,
    aliases: Mapping[str, tuple[str, ...]],
    sizes: dict[str, Any],
    options: dict[str, Any],
) -> Callable[[str, nn.Module], LayerSpec]:
    """Each layer's replacement from a format spec, with the same sizes for every layer."""
    _check_format_keys(spec, aliases)

    def spec_for(name: str, module: nn.Module) -> LayerSpec:
        found = _format_for(spec, name, module, aliases[name])
        return None if found is None else (found[0], {**options, **found[1]}, sizes)

    return spec_for


def _tensorized(
    spec_for: Callable[[str, nn.Module], LayerSpec], tensorize: Any
) -> Callable[[str, nn.Module], LayerSpec]:
    """``spec_for`` with ``out_dims``/``in_dims`` added per ``tensorize`` (see :func:`compress`)."""
    if tensorize is None:
        return spec_for
    if not (tensorize == "balanced" or (is_int(tensorize) and int(tensorize) >= 1)):
        raise ValueError(
            f"compress: tensorize must be 'balanced', a number of modes or None, got {tensorize!r}"
        )
    modes = None if tensorize == "balanced" else int(tensorize)

    def split(name: str, module: nn.Module) -> LayerSpec:
        spec = spec_for(name, module)
        if spec is None or "out_dims" in spec[1] or "in_dims" in spec[1]:
            return spec
        if "out_dims" not in get_format(spec[0]).structure_options():
            return spec
        dims = balanced_dims(*module.weight.shape[:2], modes)
        if dims is None:
            return spec
        return spec[0], {**spec[1], "out_dims": dims[0], "in_dims": dims[1]}, spec[2]

    return split


def _allocated(allocation: Any) -> Callable[[str, nn.Module], LayerSpec]:
    """Each layer's replacement from an allocation's choice (``None`` for a dense one)."""

    def spec_for(name: str, module: nn.Module) -> LayerSpec:
        choice = allocation.layers[name]
        if choice.format == "dense":
            return None
        return choice.format, dict(choice.options), {"ranks": choice.ranks}

    return spec_for


def _chosen_layers(
    model: nn.Module, layers: Selector, skip: Sequence[str], plan: Any, example_input: Any
) -> tuple[list[str], list[str]]:
    """The layers to compress (tied ones left out) and the notes on the choice."""
    names, notes = select_with_notes(model, layers, skip, True, False, example_input)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    _check_plan(plan, {n: model.get_submodule(n) for n in names})
    tied = _tied(model, names)
    for name, sharers in tied.items():
        notes.append(f"layer {name!r} shares parameters with {sharers} (tied): left dense")
    if layers is None:  # chosen by pattern or name, such layers are refused already
        for name in layer_aliases(model):
            reason = unsupported_reason(model.get_submodule(name))
            if reason:
                notes.append(f"layer {name!r} left dense: {reason}")
    return [n for n in names if n not in tied], notes


@dataclass
class _Job:
    """What every replacement needs: the model, its layers' names and inputs, the options."""

    model: nn.Module
    aliases: Mapping[str, tuple[str, ...]]
    plan: str
    shapes: Mapping[str, tuple[int, ...]]
    example_input: Any
    min_speedup: float | None
    notes: list[str]

    def build(
        self,
        spec_for: Callable[[str, nn.Module], LayerSpec],
        names: Sequence[str],
        format: FormatSpec,
        data: Any,
    ) -> list[tuple[Any, LayerReport]]:
        """Every replacement (layers whose spec is ``None`` stay dense) and its report.

        With ``data`` (a few input batches) the layers are built in turn, each fitted to the
        dense model's outputs from the inputs the layers built before give it
        (:func:`~tensornet.nn.covariance.fit_sequentially`; svd and tucker2 whitened by those
        inputs, :mod:`~tensornet.nn.whiten`; other formats, and layers with over
        ``MAX_FEATURES`` inputs, decomposed plainly): two forwards of ``data`` per layer.
        """
        specs = {name: spec_for(name, self.model.get_submodule(name)) for name in names}
        self.notes += _auto_notes(format, specs)
        chosen = [name for name, spec in specs.items() if spec is not None]
        if data is None:
            return [self.replacement(name, specs[name]) for name in chosen]
        built = fit_sequentially(
            self.model, data, chosen, lambda n, c: self.replacement(n, specs[n], c),
            _deepcopy(self.model), self.aliases,
        )  # fmt: skip
        self.notes.append(f"{len(built)} layers fitted in turn to the dense outputs on data")
        return built

    def replacement(
        self, name: str, spec: tuple[str, dict, dict], covariance: Any = None
    ) -> tuple[Any, LayerReport]:
        """The compressed layer (``None`` when kept dense) and its report."""
        module = self.model.get_submodule(name)
        fmt, opts, sizes = spec
        reparam = _reparam_note(module)
        if reparam:
            _refresh(module)
            self.notes.append(
                f"layer {name!r} ({reparam}) compressed from its effective weight; the "
                "replacement carries no pruning/parametrization"
            )
        layer = _build(name, module, fmt, self.plan, sizes, opts, covariance)
        shape = self.shapes.get(name)
        report = layer_report(name, module, layer, shape, self.aliases[name])
        if self.example_input is not None and shape is None:
            self.notes.append(f"layer {name!r} did not run on example_input: no FLOPs or times")
        if self.min_speedup is None or shape is None or not too_slow(report, self.min_speedup):
            return layer, report
        self.notes.append(
            f"layer {name!r} kept dense: estimated {report.seconds_after * 1e3:.3f} ms "
            f"compressed vs {report.seconds_before * 1e3:.3f} ms dense "
            f"(min_speedup={self.min_speedup})"
        )
        return None, kept_dense(report)

    def install(
        self, built: list[tuple[Any, LayerReport]], inplace: bool, timed: bool, calibrate: Any
    ) -> tuple[nn.Module, CompressionReport]:
        """Every built layer at each of its names, in the model or a copy, and the report."""
        reports = [report for _, report in built]
        slow = [r.name for r in reports if r.slower]
        if slow:
            self.notes.append(f"slower than dense by the cost model (see min_speedup): {slow}")
        timed = timed and self.example_input is not None
        before = _params(self.model), self._time(self.model) if timed else None
        target = self.model if inplace else _deepcopy(self.model)
        for layer, report in built:
            for alias in report.aliases if layer is not None else ():
                replace_module(target, alias, layer)
        after = _params(target), self._time(target) if timed else None
        shape = shape_of(self.example_input)
        report = CompressionReport(
            reports, before[0], after[0], shape, self.notes, before[1], after[1]
        )
        if calibrate is not None:
            done = recalibrate_bn(target, calibrate)
            report.notes.append(
                f"BatchNorm statistics recomputed for {len(done.layers)} layers from "
                f"{done.samples:,} samples ({done.batches} batches)"
            )
        return target, report

    def _time(self, model: nn.Module) -> float:
        return forward_time(model, self.example_input)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(
    name: str, module: nn.Module, fmt: str, plan: str, kw: dict, opts: dict, cov: Any = None
) -> TNLayer:
    """The compressed layer, in the mode of the one it replaces (errors name the layer)."""
    try:
        if cov is not None:
            layer = compress_layer_whitened(module, fmt, cov, plan=plan, **kw, **opts)
        else:
            layer = kind_of(module).from_module(module, fmt, plan=plan, **kw, **opts)
    except (ValueError, TypeError) as err:
        raise type(err)(f"layer {name!r}: {err}") from None
    return layer.train(module.training)


# -- formats, plans and checks ---------------------------------------------------------------
def _auto_notes(spec: FormatSpec, specs: Mapping[str, LayerSpec]) -> list[str]:
    """Notes on the layers ``format="auto"`` leaves dense (depthwise convs: no default)."""
    if not (isinstance(spec, str) and spec == AUTO):
        return []
    return [
        f"layer {name!r} left dense: format='auto' does not compress a depthwise conv (no "
        "factored form runs fewer multiply-adds); name a format to compress it"
        for name, found in specs.items()
        if found is None
    ]


def _format_for(
    spec: FormatSpec, name: str, module: nn.Module, aliases: Sequence[str] = ()
) -> tuple[str, dict] | None:
    """The (format, options) for one layer; ``None`` leaves it dense."""
    kind = layer_kind(module)
    value: Any = spec
    if callable(spec) and not isinstance(spec, str):
        value = spec(name, module)
    elif isinstance(spec, Mapping):
        value = None
        for key, v in spec.items():
            if key == kind or (
                key not in _KINDS and any(matches(a, key) for a in (name, *aliases))
            ):
                value = v
                break
    if value is None:
        return None
    if isinstance(value, str) and value == AUTO:
        return default_format(module)
    if isinstance(value, str):
        return get_format(value).name, {}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return get_format(value[0]).name, dict(value[1])
    raise ValueError(f"layer {name!r}: a format must be a name or (name, options), got {value!r}")


def _check_format_keys(spec: FormatSpec, aliases: Mapping[str, Sequence[str]]) -> None:
    """Every pattern key of a format mapping matches some conv/linear layer."""
    if not isinstance(spec, Mapping):
        return
    every = [a for group in aliases.values() for a in group]
    for key in spec:
        if key in _KINDS:
            continue
        if not isinstance(key, str):
            raise TypeError(
                f"compress: format mapping keys are 'conv', 'linear' or layer patterns (str), "
                f"got {key!r}"
            )
        if not any(matches(a, key) for a in every):
            raise NoMatchingLayer(
                f"compress: format pattern {key!r} matches no conv/linear layer; layers are: "
                f"{shown_names(list(aliases))}"
            )


def _check_plan(plan: Any, modules: Mapping[str, nn.Module]) -> None:
    """``plan`` is a policy or a plan (family) every chosen layer has."""
    if not isinstance(plan, str) or not plan:
        raise ValueError(f"compress: plan must be 'auto', 'measure' or a plan name, got {plan!r}")
    if plan in _POLICIES:
        return
    family = plan.split("[")[0]
    for name, module in modules.items():
        plans = PLAN_FAMILIES[kind_of(module).tn_type.kind]
        if family not in plans:
            raise ValueError(
                f"compress: plan={plan!r} is not a forward plan of {layer_kind(module)} layer "
                f"{name!r}; use 'auto', 'measure' or one of {plans}"
            )


# -- pruned, parametrized and tied layers ----------------------------------------------------
def _reparam_hooks(module: nn.Module) -> list:
    """The forward pre-hooks that recompute a weight (pruning, old-style weight_norm)."""
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.weight_norm import WeightNorm

    return [
        h
        for h in module._forward_pre_hooks.values()
        if isinstance(h, (BasePruningMethod, WeightNorm))
    ]


def _refresh(module: nn.Module) -> None:
    """Recompute the weights pruning/weight_norm hooks derive (as a forward would)."""
    from torch.nn.utils.prune import BasePruningMethod

    for h in _reparam_hooks(module):
        if isinstance(h, BasePruningMethod):
            setattr(module, h._tensor_name, h.apply_mask(module))
        else:
            setattr(module, h.name, h.compute_weight(module))


def _deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also copies pruned / weight_norm models.

    Their derived weights are non-leaf tensors, which torch refuses to deepcopy: they are
    copied detached, then recomputed on the copy from its own parameters.
    """
    memo: dict[int, Any] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    target = copy.deepcopy(model, memo)
    for m in target.modules():
        _refresh(m)
    return target


def _reparam_note(module: nn.Module) -> str | None:
    from torch.nn.utils import parametrize

    kinds = []
    for h in _reparam_hooks(module):
        kinds.append("weight_norm" if hasattr(h, "compute_weight") else "torch.nn.utils.prune")
    if parametrize.is_parametrized(module):
        kinds.append("torch.nn.utils.parametrize")
    return ", ".join(kinds) or None


def _tied(model: nn.Module, names: Sequence[str]) -> dict[str, list[str]]:
    """Chosen layers one of whose parameters is also another module's: ``name -> sharers``."""
    owners: dict[int, list[str]] = {}
    for mname, m in model.named_modules():
        for p in m._parameters.values():
            if p is not None:
                owners.setdefault(id(p), []).append(mname)
    counts = Counter({k: len(v) for k, v in owners.items()})
    out = {}
    for name in names:
        module = model.get_submodule(name)
        shared = [
            o
            for p in module._parameters.values()
            if p is not None and counts[id(p)] > 1
            for o in owners[id(p)]
            if o != name
        ]
        if shared:
            out[name] = sorted(set(shared))
    return out
