"""Compressing a model: chosen conv/linear layers replaced by compressed layers, with a report.

:func:`compress` validates everything (formats, ranks, fractions, layer selection) and builds
every replacement before it touches the model, so a failure leaves the model unchanged. It works
on a copy unless ``inplace=True``. Formats may differ per layer (``{"conv": "tt", "linear":
"ht"}``, patterns, or a function of the layer), and an :class:`~tensornet.nn.Allocation` gives
per-layer ranks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.truncation import Truncation
from ..formats import get_format
from ..formats.base import choose
from .batchnorm import recalibrate_bn
from .layers import TNConv2d, TNLayer, TNLinear
from .select import Selector, matches, select_layers

__all__ = ["CompressionReport", "LayerReport", "compress", "dense_flops", "layer_inputs"]

FormatSpec = (
    str | tuple[str, Mapping[str, Any]] | Mapping[str, Any] | Callable[[str, nn.Module], Any]
)


@dataclass(frozen=True)
class LayerReport:
    """One layer's compression: format, ranks, parameters and FLOPs before/after, error."""

    name: str
    kind: str
    format: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    flops_before: int | None
    flops_after: int | None
    error: float | None
    plan: str | None = None

    @property
    def compression(self) -> float:
        """Parameters before / after."""
        return self.params_before / self.params_after


@dataclass
class CompressionReport:
    """Per-layer reports and model totals (parameters of the whole model)."""

    layers: list[LayerReport]
    model_params_before: int
    model_params_after: int
    input_shape: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def params_ratio(self) -> float:
        """Model parameters after / before."""
        return self.model_params_after / self.model_params_before

    @property
    def flops_before(self) -> int | None:
        """FLOPs of the compressed layers before compression (None without an input)."""
        values = [r.flops_before for r in self.layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def flops_after(self) -> int | None:
        """FLOPs of the compressed layers after compression (None without an input)."""
        values = [r.flops_after for r in self.layers]
        return None if any(v is None for v in values) else sum(values)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer (for tables)."""
        return [dict(r.__dict__) for r in self.layers]

    def __str__(self) -> str:
        head = (
            f"{'layer':<22} {'format':<9} {'ranks':<18} {'params':>17} {'MFLOP':>17} {'error':>7}"
        )
        lines = [head, "-" * len(head)]
        for r in self.layers:
            ranks = ",".join(map(str, r.ranks))
            ranks = ranks if len(ranks) <= 18 else ranks[:15] + "..."
            flops = (
                ""
                if r.flops_before is None
                else (f"{r.flops_before / 1e6:.1f}->{r.flops_after / 1e6:.1f}")
            )
            err = "" if r.error is None else f"{r.error:.3f}"
            lines.append(
                f"{r.name:<22} {r.format:<9} {ranks:<18} "
                f"{f'{r.params_before:,}->{r.params_after:,}':>17} {flops:>17} {err:>7}"
            )
        lines.append(
            f"model: {self.model_params_before:,} -> {self.model_params_after:,} parameters "
            f"({100 * self.params_ratio:.1f}%)"
        )
        if self.flops_before:
            lines.append(
                f"compressed layers: {self.flops_before / 1e6:.1f} -> "
                f"{self.flops_after / 1e6:.1f} MFLOP for input {self.input_shape}"
            )
        return "\n".join(lines + self.notes)


def layer_inputs(
    model: nn.Module, example_input: torch.Tensor, names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Input shape of each named layer when ``model`` runs on ``example_input`` (no grad)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(mod, args, name=name):
            shapes.setdefault(name, tuple(args[0].shape))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_input)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return shapes


def dense_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 per multiply-add) of a dense ``nn.Conv2d``/``nn.Linear`` on ``input_shape``."""
    if isinstance(module, nn.Linear):
        n = math.prod(input_shape[:-1])
        return 2 * n * module.in_features * module.out_features
    from .functional import ConvGeometry

    geo = ConvGeometry.from_conv_args(
        module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
    )
    rows, cols = geo.output_size(input_shape[2], input_shape[3])
    per = module.in_channels // module.groups * math.prod(module.kernel_size)
    return 2 * input_shape[0] * module.out_channels * per * rows * cols


def _format_for(spec: FormatSpec, name: str, module: nn.Module) -> tuple[str, dict] | None:
    """The (format, options) for one layer; ``None`` leaves it dense."""
    kind = "linear" if isinstance(module, nn.Linear) else "conv"
    value: Any = spec
    if callable(spec) and not isinstance(spec, str):
        value = spec(name, module)
    elif isinstance(spec, Mapping):
        value = None
        for key, v in spec.items():
            if key == kind or (key not in ("conv", "linear") and matches(name, key)):
                value = v
                break
    if value is None:
        return None
    if isinstance(value, str):
        return get_format(value).name, {}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return get_format(value[0]).name, dict(value[1])
    raise ValueError(f"layer {name!r}: a format must be a name or (name, options), got {value!r}")


def compress(
    model: nn.Module,
    format: FormatSpec = "tt",
    layers: Selector = None,
    *,
    trunc: Truncation | int | None = None,
    fraction: float | None = None,
    ranks: Any = None,
    allocation: Any = None,
    skip: Sequence[str] = ("first", "last"),
    inplace: bool = False,
    example_input: torch.Tensor | None = None,
    plan: str = "auto",
    calibrate: Any = None,
    **options: Any,
) -> tuple[nn.Module, CompressionReport]:
    """Replace the chosen conv/linear layers of ``model`` by compressed layers.

    Parameters
    ----------
    model : nn.Module
    format : str, (str, options), mapping or callable
        One format for all layers, a mapping whose keys are ``"conv"``, ``"linear"`` or layer
        patterns (first match wins; unmatched layers stay dense), or ``(name, module) ->
        format | None``.
    layers : pattern, names, predicate or None
        Which layers (see :func:`~tensornet.nn.select.select_layers`); ``skip`` removes the
        first/last ones by default.
    trunc, fraction, ranks
        How much to keep (exactly one, or ``allocation``): a truncation policy, a parameter
        fraction of each layer, or the format's ranks.
    allocation : Allocation, optional
        Per-layer formats and ranks from :func:`~tensornet.nn.allocate` (overrides the above).
    inplace : bool
        Modify ``model`` itself (after every replacement was built) instead of a copy.
    example_input : tensor, optional
        An input batch; with it the report gives FLOPs before/after for that batch.
    plan : str
        The layers' ``plan`` policy.
    calibrate : iterable of batches, optional
        Training inputs (batches, ``(input, target)`` pairs or a ``DataLoader``): after the
        replacements, the compressed model's BatchNorm statistics are recomputed from them with
        :func:`~tensornet.nn.recalibrate_bn` (a note in the report says how many samples).
        Without it, BatchNorm layers keep the dense model's statistics, which no longer match.
    **options
        Format options passed to every layer's format.

    Returns
    -------
    (nn.Module, CompressionReport)

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
    ...                     nn.Conv2d(16, 16, 3), nn.Flatten(), nn.LazyLinear(10))
    >>> _ = net(torch.randn(1, 3, 12, 12))
    >>> small, report = compress(net, "tucker2", fraction=0.3, example_input=torch.randn(1, 3, 12,
    ...                          12))
    >>> [r.name for r in report.layers], type(small[2]).__name__, type(net[2]).__name__
    (['2', '4'], 'TNConv2d', 'Conv2d')
    """
    if allocation is None:
        given = [
            k
            for k, v in (("trunc", trunc), ("fraction", fraction), ("ranks", ranks))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"compress: give exactly one of trunc, fraction, ranks (or allocation); got {given}"
            )
        choose(trunc, ranks, fraction, "compress")  # validates fraction
    else:
        layers = list(allocation.layers)
        skip = ()
    names = select_layers(model, layers, skip)
    modules = {n: model.get_submodule(n) for n in names}
    shapes = layer_inputs(model, example_input, names) if example_input is not None else {}
    # Build every replacement first: any error leaves the model untouched.
    built: dict[str, TNLayer] = {}
    reports = []
    for name in names:
        module = modules[name]
        if allocation is not None:
            choice = allocation.layers[name]
            if choice.format == "dense":
                continue
            fmt, opts = choice.format, dict(choice.options)
            kw = {"ranks": choice.ranks}
        else:
            spec = _format_for(format, name, module)
            if spec is None:
                continue
            fmt, opts = spec
            opts = {**options, **opts}
            kw = {"trunc": trunc, "ranks": ranks, "fraction": fraction}
        try:
            if isinstance(module, nn.Linear):
                layer = TNLinear.from_linear(module, fmt, plan=plan, **kw, **opts)
            else:
                layer = TNConv2d.from_conv(module, fmt, plan=plan, **kw, **opts)
        except (ValueError, TypeError) as err:
            raise type(err)(f"layer {name!r}: {err}") from None
        built[name] = layer
        shape = shapes.get(name)
        flops_after = chosen = None
        if shape is not None:
            dev = module.weight.device
            info = layer.plan_info(
                shape if isinstance(layer, TNConv2d) else (math.prod(shape[:-1]), shape[-1]),
                dev,
                module.weight.dtype,
            )
            row = next(r for r in info.rows if r["name"] == info.chosen)
            flops_after, chosen = row["flops"], info.chosen
        reports.append(
            LayerReport(
                name,
                "linear" if isinstance(module, nn.Linear) else "conv",
                fmt,
                layer.ranks,
                sum(p.numel() for p in module.parameters()),
                layer.num_params,
                None if shape is None else dense_flops(module, shape),
                flops_after,
                layer.decomposition_error,
                chosen,
            )
        )
    before = sum(p.numel() for p in model.parameters())
    target = model if inplace else copy.deepcopy(model)
    for name, layer in built.items():
        _set_submodule(target, name, layer)
    after = sum(p.numel() for p in target.parameters())
    report = CompressionReport(
        reports, before, after, None if example_input is None else tuple(example_input.shape)
    )
    if calibrate is not None:
        done = recalibrate_bn(target, calibrate)
        report.notes.append(
            f"BatchNorm statistics recomputed for {len(done.layers)} layers from "
            f"{done.samples:,} samples ({done.batches} batches)"
        )
    return target, report


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
