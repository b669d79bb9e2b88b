"""The compression report: per layer and in total, costs before and after, true kernel errors.

:func:`layer_report` measures one replacement against the layer it replaces (the compressed
layer's running plan from the cost model, the dense layer's from :mod:`.measure`);
:class:`CompressionReport` holds the layers' reports, the whole model's counts and times and the
notes :func:`~tensornet.nn.compress` made, and prints them as a table.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .layers import TNLayer, TNLinear
from .measure import dense_flops, dense_seconds, kernel_errors

__all__ = [
    "CompressionReport",
    "LayerReport",
    "kept_dense",
    "layer_kind",
    "layer_report",
    "too_slow",
]


@dataclass(frozen=True)
class LayerReport:
    """One layer's compression.

    Attributes
    ----------
    name, kind, format, ranks
        The layer (its first name), ``"conv"``/``"linear"``, the format (``"dense"`` when
        ``min_speedup`` kept it dense) and ranks.
    params_before, params_after : int
        Parameters of the layer (with its bias) before and after.
    flops_before, flops_after : int or None
        FLOPs (2 per multiply-add) for the example input: the dense layer's, and those of the
        plan the compressed layer runs (the cost model's choice; the rebuild-then-conv plan
        counts the kernel rebuild too). ``None`` without ``example_input``.
    error : float or None
        The format's own error figure (``decomposition_error``; for some formats a bound).
    plan : str or None
        The running plan's name.
    seconds_before, seconds_after : float or None
        The cost model's estimated forward time, dense and compressed (running plan).
    error_fro, error_spectral : float
        True relative errors of the kernel the layer runs, ``||W - W'|| / ||W||`` in the
        Frobenius and spectral norms (a conv kernel matricised as ``out | in kh kw``), computed
        in float64 from the dense weight and the compressed layer's ``weight``.
    aliases : tuple of str
        Every name the layer is registered under (one module, compressed once).
    kept_dense : bool
        ``min_speedup`` kept the layer dense (the cost model said compressed was too slow).
    """

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
    seconds_before: float | None = None
    seconds_after: float | None = None
    error_fro: float = 0.0
    error_spectral: float = 0.0
    aliases: tuple[str, ...] = ()
    kept_dense: bool = False

    @property
    def compression(self) -> float:
        """Parameters before / after."""
        return self.params_before / self.params_after

    @property
    def speedup(self) -> float | None:
        """Estimated dense time / compressed time (``None`` without an example input)."""
        if self.seconds_before is None or self.seconds_after is None:
            return None
        return self.seconds_before / self.seconds_after

    @property
    def slower(self) -> bool:
        """The cost model says the compressed forward is slower than the dense one."""
        speedup = self.speedup
        return speedup is not None and speedup < 1


def _total(values: list) -> Any:
    return None if any(v is None for v in values) else sum(values)


@dataclass
class CompressionReport:
    """Per-layer reports and totals.

    ``model_params_before``/``after`` count the whole model's parameters (each shared tensor
    once); ``forward_before``/``after`` are the whole model's measured forward times (median
    seconds, eval mode, no grad) on ``example_input``; ``notes`` say what was decided and why.
    """

    layers: list[LayerReport]
    model_params_before: int
    model_params_after: int
    input_shape: tuple | None = None
    notes: list[str] = field(default_factory=list)
    forward_before: float | None = None
    forward_after: float | None = None

    @property
    def params_ratio(self) -> float:
        """Model parameters after / before."""
        return self.model_params_after / self.model_params_before

    @property
    def params_before(self) -> int:
        """Parameters of the reported layers before compression."""
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:
        """Parameters of the reported layers after compression."""
        return sum(r.params_after for r in self.layers)

    @property
    def flops_before(self) -> int | None:
        """FLOPs of the reported layers before compression (None without an input)."""
        return _total([r.flops_before for r in self.layers])

    @property
    def flops_after(self) -> int | None:
        """FLOPs of the reported layers' running plans (None without an input)."""
        return _total([r.flops_after for r in self.layers])

    @property
    def seconds_before(self) -> float | None:
        """Estimated forward time of the reported layers, dense (None without an input)."""
        return _total([r.seconds_before for r in self.layers])

    @property
    def seconds_after(self) -> float | None:
        """Estimated forward time of the reported layers' running plans."""
        return _total([r.seconds_after for r in self.layers])

    @property
    def slower(self) -> list[str]:
        """Layers the cost model says run slower compressed than dense."""
        return [r.name for r in self.layers if r.slower]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer (for tables)."""
        return [dict(r.__dict__) for r in self.layers]

    def __str__(self) -> str:
        head = (
            f"{'layer':<22} {'format':<9} {'ranks':<14} {'params':>17} {'MFLOP':>13} "
            f"{'est. ms':>15} {'err F':>6} {'err 2':>6}"
        )
        lines = [head, "-" * len(head)]
        for r in self.layers:
            ranks = ",".join(map(str, r.ranks))
            ranks = ranks if len(ranks) <= 14 else ranks[:11] + "..."
            flops = _arrow(r.flops_before, r.flops_after, 1e-6, ".1f")
            est = _arrow(r.seconds_before, r.seconds_after, 1e3, ".3f")
            flag = " kept dense" if r.kept_dense else (" slower" if r.slower else "")
            lines.append(
                f"{r.name:<22} {r.format:<9} {ranks:<14} "
                f"{f'{r.params_before:,}->{r.params_after:,}':>17} {flops:>13} {est:>15} "
                f"{r.error_fro:6.3f} {r.error_spectral:6.3f}{flag}"
            )
        lines.append(
            f"layers: {self.params_before:,} -> {self.params_after:,} parameters"
            + (
                ""
                if self.flops_before is None
                else f", {_arrow(self.flops_before, self.flops_after, 1e-6, '.1f')} MFLOP, "
                f"{_arrow(self.seconds_before, self.seconds_after, 1e3, '.3f')} ms estimated "
                f"for input {self.input_shape}"
            )
        )
        lines.append(
            f"model: {self.model_params_before:,} -> {self.model_params_after:,} parameters "
            f"({100 * self.params_ratio:.1f}%)"
        )
        if self.forward_before is not None and self.forward_after is not None:
            lines.append(
                f"model forward (measured, median): {self.forward_before * 1e3:.3f} -> "
                f"{self.forward_after * 1e3:.3f} ms "
                f"({self.forward_before / self.forward_after:.2f}x)"
            )
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _arrow(before: float | None, after: float | None, scale: float, spec: str) -> str:
    if before is None or after is None:
        return ""
    return f"{before * scale:{spec}}->{after * scale:{spec}}"


def layer_kind(module: nn.Module) -> str:
    """``"linear"`` or ``"conv"``."""
    return "linear" if isinstance(module, nn.Linear) else "conv"


def layer_report(
    name: str,
    module: nn.Module,
    layer: TNLayer,
    shape: tuple[int, ...] | None,
    aliases: tuple[str, ...],
) -> LayerReport:
    """``layer`` measured against ``module``, the layer it replaces (costs need ``shape``)."""
    flops_before = flops_after = seconds_before = seconds_after = chosen = None
    weight = module.weight
    if shape is not None:
        dev, dtype = weight.device, weight.dtype
        info = layer.plan_info(
            (math.prod(shape[:-1]), shape[-1]) if isinstance(layer, TNLinear) else shape,
            dev,
            dtype,
        )
        row = next(r for r in info.rows if r["name"] == info.chosen)
        flops_after, seconds_after, chosen = row["flops"], row["seconds"], info.chosen
        flops_before = dense_flops(module, shape)
        seconds_before = dense_seconds(module, shape, dev, dtype)
    with torch.no_grad():
        error_fro, error_spectral = kernel_errors(weight, layer.weight)
    return LayerReport(
        name,
        layer_kind(module),
        layer.format,
        layer.ranks,
        sum(p.numel() for p in module.parameters()),
        layer.num_params,
        flops_before,
        flops_after,
        layer.decomposition_error,
        chosen,
        seconds_before,
        seconds_after,
        error_fro,
        error_spectral,
        aliases,
    )


def too_slow(report: LayerReport, min_speedup: float) -> bool:
    """The estimated compressed time exceeds the dense time / ``min_speedup``."""
    return report.seconds_after > report.seconds_before / min_speedup


def kept_dense(report: LayerReport) -> LayerReport:
    """The report of the layer left dense: every figure after is the one before.

    Examples
    --------
    >>> r = LayerReport("fc", "linear", "svd", (2,), 120, 40, 960, 320, 0.1)
    >>> d = kept_dense(r)
    >>> d.format, d.params_after, d.flops_after, d.error_fro, d.kept_dense
    ('dense', 120, 960, 0.0, True)
    """
    return dataclasses.replace(
        report,
        format="dense",
        ranks=(),
        params_after=report.params_before,
        flops_after=report.flops_before,
        error=0.0,
        plan=None,
        seconds_after=report.seconds_before,
        error_fro=0.0,
        error_spectral=0.0,
        kept_dense=True,
    )
