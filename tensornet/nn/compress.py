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
whole model's measured forward time, dense and compressed.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.truncation import Truncation
from ..formats import get_format
from ..formats.base import choose
from ..formats.structure import Factor, Structure
from . import cost
from .batchnorm import recalibrate_bn
from .defaults import AUTO, default_format
from .functional import ConvGeometry, conv_candidates, linear_candidates
from .layers import TNConv2d, TNLayer, TNLinear
from .select import (
    NoMatchingLayer,
    Selector,
    layer_aliases,
    matches,
    select_with_notes,
    shown_names,
)

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

# The forward-plan families of each layer kind (``plan=`` takes these or an exact name).
PLAN_FAMILIES = {
    "conv": ("dense", "staged", "separable", "patches"),
    "linear": ("dense", "direct"),
}
_POLICIES = ("auto", "measure")
_KINDS = ("conv", "linear")  # format mapping keys that are layer kinds, not patterns


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


def _inputs(example_input: Any) -> tuple:
    """The positional inputs: a tuple is several inputs, anything else one."""
    return example_input if isinstance(example_input, tuple) else (example_input,)


def _shape_of(example_input: Any) -> tuple | None:
    if example_input is None:
        return None
    if isinstance(example_input, tuple):
        return tuple(tuple(getattr(a, "shape", ())) for a in example_input)
    return tuple(example_input.shape)


class _Modes:
    """Every module's ``training`` flag, restored on exit (a forward in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes = {m: m.training for m in model.modules()}

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes.items():
            m.training = mode


def layer_inputs(
    model: nn.Module, example_input: Any, names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Input shape of each named layer when ``model`` runs on ``example_input``.

    The forward runs in eval mode without gradients; every module's mode is restored after.
    ``example_input`` is a tensor, or a tuple of positional inputs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 2))
    >>> layer_inputs(net, torch.randn(5, 3, 4, 4), ["0", "2"])
    {'0': (5, 3, 4, 4), '2': (5, 16)}
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(mod, args, name=name):
            shapes.setdefault(name, tuple(args[0].shape))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with _Modes(model), torch.no_grad():
            model(*_inputs(example_input))
    finally:
        for h in handles:
            h.remove()
    return {n: shapes[n] for n in names if n in shapes}


def dense_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 per multiply-add) of a dense ``nn.Conv2d``/``nn.Linear`` on ``input_shape``.

    Examples
    --------
    >>> from torch import nn
    >>> dense_flops(nn.Linear(4, 3), (5, 4)), dense_flops(nn.Conv2d(2, 3, 3), (1, 2, 5, 5))
    (120, 972)
    """
    if isinstance(module, nn.Linear):
        n = math.prod(input_shape[:-1])
        return 2 * n * module.in_features * module.out_features
    geo = ConvGeometry.from_conv_args(
        module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
    )
    rows, cols = geo.output_size(input_shape[2], input_shape[3])
    per = module.in_channels // module.groups * math.prod(module.kernel_size)
    return 2 * input_shape[0] * module.out_channels * per * rows * cols


def dense_seconds(
    module: nn.Module, input_shape: Sequence[int], device: Any = None, dtype: Any = None
) -> float:
    """The cost model's estimated forward time of a dense ``nn.Conv2d``/``nn.Linear``.

    Priced like a compressed layer's ``dense`` plan with the kernel stored as is (one
    ``F.conv2d``/``F.linear``, no rebuild), with the cost table of the device type.

    Examples
    --------
    >>> from torch import nn
    >>> dense_seconds(nn.Linear(64, 64), (32, 64)) > 0
    True
    """
    weight = module.weight
    device = torch.device(device) if device is not None else weight.device
    itemsize = torch.empty((), dtype=dtype or weight.dtype).element_size()
    if isinstance(module, nn.Linear):
        legs: tuple[str, ...] = ("out", "in")
        shape: tuple[int, ...] = (module.out_features, module.in_features)
    else:
        legs, shape = ("out", "in", "kh", "kw"), tuple(weight.shape)
    structure = Structure(
        "dense", legs, shape, (), (Factor("weight", legs, shape),), tuple((g,) for g in legs), ()
    )
    if isinstance(module, nn.Linear):
        n = math.prod(input_shape[:-1])
        plans = linear_candidates(structure, (n, input_shape[-1]))
    else:
        geo = ConvGeometry.from_conv_args(
            module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
        )
        plans = conv_candidates(structure, geo, input_shape, device.type)
    plan = next(p for p in plans if p.name == "dense")
    return cost.choose([plan], device.type, itemsize).cost["seconds"]


def kernel_errors(dense: torch.Tensor, approx: torch.Tensor) -> tuple[float, float]:
    """True relative errors ``||W - W'|| / ||W||``: (Frobenius, spectral), in float64.

    Both kernels are matricised as ``(out, rest)`` (a conv kernel ``out | in kh kw``). A zero
    ``W`` gives 0 when ``W'`` is zero too, else inf.

    Examples
    --------
    >>> import torch
    >>> w = torch.eye(3)
    >>> kernel_errors(w, torch.diag(torch.tensor([1.0, 1.0, 0.0])))
    (0.5773502691896258, 1.0)
    """
    if dense.shape != approx.shape:
        raise ValueError(
            f"kernel_errors: shapes differ: {tuple(dense.shape)} vs {tuple(approx.shape)}"
        )
    w = dense.detach().to(torch.float64).reshape(dense.shape[0], -1)
    diff = w - approx.detach().to(device=w.device, dtype=torch.float64).reshape(w.shape)
    out = []
    for norm in (torch.linalg.matrix_norm, _spectral_norm):
        num, den = float(norm(diff)), float(norm(w))
        out.append(num / den if den > 0 else (0.0 if num == 0 else math.inf))
    return out[0], out[1]


# Up to this smaller side, spectral norms by a full SVD; above, by Lanczos (scipy's svds).
_EXACT_SIDE = 256


def _spectral_norm(m: torch.Tensor) -> float:
    """Largest singular value of a float64 matrix (Lanczos above ``_EXACT_SIDE``)."""
    side = min(m.shape)
    if side <= _EXACT_SIDE:
        return float(torch.linalg.matrix_norm(m, ord=2))
    if not bool(m.any()):
        return 0.0
    from scipy.sparse.linalg import svds

    a = m.cpu().numpy()
    return float(svds(a, k=1, return_singular_vectors=False, v0=np.ones(side))[0])


def _kind(module: nn.Module) -> str:
    return "linear" if isinstance(module, nn.Linear) else "conv"


def _format_for(
    spec: FormatSpec, name: str, module: nn.Module, aliases: Sequence[str] = ()
) -> tuple[str, dict] | None:
    """The (format, options) for one layer; ``None`` leaves it dense."""
    kind = _kind(module)
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


def _as_fraction(fraction: Any) -> Any:
    """A numpy scalar or 0-d tensor as a Python number (``choose`` validates the rest)."""
    if isinstance(fraction, torch.Tensor):
        if fraction.ndim != 0 or fraction.dtype == torch.bool or fraction.is_complex():
            raise ValueError(
                f"compress: fraction must be a number in (0, 1], got a {fraction.dtype} tensor "
                f"of shape {tuple(fraction.shape)}"
            )
        return fraction.item()
    if isinstance(fraction, np.ndarray) and fraction.ndim == 0:
        fraction = fraction[()]
    if isinstance(fraction, np.generic) and not isinstance(fraction, np.bool_):
        return fraction.item()
    return fraction


def _check_plan(plan: Any, kinds: Mapping[str, str]) -> None:
    """``plan`` is a policy or a plan (family) every chosen layer has."""
    if not isinstance(plan, str) or not plan:
        raise ValueError(f"compress: plan must be 'auto', 'measure' or a plan name, got {plan!r}")
    if plan in _POLICIES:
        return
    family = plan.split("[")[0]
    for name, kind in kinds.items():
        if family not in PLAN_FAMILIES[kind]:
            raise ValueError(
                f"compress: plan={plan!r} is not a forward plan of {kind} layer {name!r}; "
                f"use 'auto', 'measure' or one of {PLAN_FAMILIES[kind]}"
            )


def _check_min_speedup(min_speedup: Any, example_input: Any) -> None:
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


def _forward_time(model: nn.Module, example_input: Any, repeat: int = 5) -> float:
    """Median seconds of one forward (eval mode, no grad; modes restored)."""
    args = _inputs(example_input)
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    with _Modes(model), torch.no_grad():
        return cost.measure(lambda: model(*args), device, repeat=repeat)


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
    **options: Any,
) -> tuple[nn.Module, CompressionReport]:
    """Replace the chosen conv/linear layers of ``model`` by compressed layers.

    Parameters
    ----------
    model : nn.Module
    format : str, (str, options), mapping or callable
        One format for all layers, a mapping whose keys are ``"conv"``, ``"linear"`` or layer
        patterns (first match wins; unmatched layers stay dense; a pattern matching no layer
        raises), or ``(name, module) -> format | None``. ``"auto"`` (the default, also as a
        mapping value or a callable's answer) gives each layer
        :func:`~tensornet.nn.defaults.default_format`: ``"svd"`` everywhere, as no format
        was reliably better than a truncated SVD of the matricised kernel at the same
        parameter count on trained weights (``bench/default_formats.py``).
        A named format always wins.
    layers : pattern, names, predicate or None
        Which layers (see :func:`~tensornet.nn.select.select_layers`).
    trunc, fraction, ranks
        How much to keep (exactly one, or ``allocation``): a truncation policy, a parameter
        fraction of each layer (a Python, numpy or 0-d tensor number), or the format's ranks.
    allocation : Allocation, optional
        Per-layer formats and ranks from :func:`~tensornet.nn.allocate` (overrides the above).
    skip : sequence of str
        Layers left dense: ``"first"`` (the layers fed by a model input), ``"last"`` (the
        layers whose outputs reach a model output: every head), and/or patterns, each of which
        must match a layer. See :func:`~tensornet.nn.select.end_layers`.
    inplace : bool
        Modify ``model`` itself (after every replacement was built) instead of a copy.
    example_input : tensor or tuple of tensors, optional
        An input batch (a tuple: several positional inputs). With it the report gives FLOPs and
        estimated times for that batch and the measured model forward times, and
        ``"first"``/``"last"`` are found by one forward.
    plan : str
        The layers' ``plan`` policy: ``"auto"``, ``"measure"`` or a plan family every chosen
        layer has (``"dense"``; conv: ``"staged"``, ``"separable"``, ``"patches"``; linear:
        ``"direct"``) or an exact plan name.
    min_speedup : float, optional
        Keep a layer dense when the cost model says compressing it speeds it up by less than
        this factor: when ``estimated compressed time > estimated dense time / min_speedup``
        (1.0: never slower than dense; 0.5: at most 2x slower). Needs ``example_input``.
        Without it (``None``), such layers are compressed and flagged ``slower`` in the report.
    measure_time : bool
        With ``example_input``, time the whole model's forward before and after (median of 5).
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
    ...                     nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(576, 10))
    >>> small, report = compress(net, "tucker2", fraction=0.3, example_input=torch.randn(1, 3, 12,
    ...                          12))
    >>> [r.name for r in report.layers], type(small[2]).__name__, type(net[2]).__name__
    (['2', '4'], 'TNConv2d', 'Conv2d')
    """
    if not isinstance(inplace, bool):
        raise TypeError(f"compress: inplace must be a bool, got {inplace!r}")
    if not isinstance(measure_time, bool):
        raise TypeError(f"compress: measure_time must be a bool, got {measure_time!r}")
    _check_min_speedup(min_speedup, example_input)
    if allocation is None:
        fraction = _as_fraction(fraction)
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
    aliases = layer_aliases(model)
    if allocation is None:
        _check_format_keys(format, aliases)
    names, notes = select_with_notes(model, layers, skip, True, False, example_input)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    modules = {n: model.get_submodule(n) for n in names}
    _check_plan(plan, {n: _kind(m) for n, m in modules.items()})
    tied = _tied(model, names)
    for name, sharers in tied.items():
        notes.append(f"layer {name!r} shares parameters with {sharers} (tied): left dense")
    shapes = layer_inputs(model, example_input, names) if example_input is not None else {}
    # Build every replacement first: any error leaves the model untouched.
    built: dict[str, TNLayer] = {}
    reports = []
    for name in names:
        if name in tied:
            continue
        module = modules[name]
        if allocation is not None:
            spec = _allocated(allocation.layers[name])
        else:
            spec = _format_for(format, name, module, aliases[name])
            if spec is not None:
                sizes = {"trunc": trunc, "ranks": ranks, "fraction": fraction}
                spec = (spec[0], {**options, **spec[1]}, sizes)
        if spec is None:
            continue
        fmt, opts, kw = spec
        reparam = _reparam_note(module)
        if reparam:
            _refresh(module)
            notes.append(
                f"layer {name!r} ({reparam}) compressed from its effective weight; the "
                "replacement carries no pruning/parametrization"
            )
        layer = _build(name, module, fmt, plan, kw, opts)
        report = _layer_report(name, module, layer, shapes.get(name), aliases[name])
        if example_input is not None and name not in shapes:
            notes.append(f"layer {name!r} did not run on example_input: no FLOPs or times")
        if min_speedup is not None and name in shapes and _too_slow(report, min_speedup):
            notes.append(
                f"layer {name!r} kept dense: estimated {report.seconds_after * 1e3:.3f} ms "
                f"compressed vs {report.seconds_before * 1e3:.3f} ms dense "
                f"(min_speedup={min_speedup})"
            )
            report = _kept_dense(report)
        else:
            built[name] = layer
        reports.append(report)
    slow = [r.name for r in reports if r.slower]
    if slow:
        notes.append(f"slower than dense by the cost model (see min_speedup): {slow}")
    timed = measure_time and example_input is not None
    before = sum(p.numel() for p in model.parameters())
    forward_before = _forward_time(model, example_input) if timed else None
    target = model if inplace else _deepcopy(model)
    for name, layer in built.items():
        for alias in aliases[name]:
            _set_submodule(target, alias, layer)
    after = sum(p.numel() for p in target.parameters())
    forward_after = _forward_time(target, example_input) if timed else None
    report = CompressionReport(
        reports, before, after, _shape_of(example_input), notes, forward_before, forward_after
    )
    if calibrate is not None:
        done = recalibrate_bn(target, calibrate)
        report.notes.append(
            f"BatchNorm statistics recomputed for {len(done.layers)} layers from "
            f"{done.samples:,} samples ({done.batches} batches)"
        )
    return target, report


def _allocated(choice: Any) -> tuple[str, dict, dict] | None:
    """(format, options, sizes) of an allocation's choice; ``None`` for a dense one."""
    if choice.format == "dense":
        return None
    return choice.format, dict(choice.options), {"ranks": choice.ranks}


def _build(name: str, module: nn.Module, fmt: str, plan: str, kw: dict, opts: dict) -> TNLayer:
    """The compressed layer, in the mode of the one it replaces (errors name the layer)."""
    try:
        if isinstance(module, nn.Linear):
            layer = TNLinear.from_linear(module, fmt, plan=plan, **kw, **opts)
        else:
            layer = TNConv2d.from_conv(module, fmt, plan=plan, **kw, **opts)
    except (ValueError, TypeError) as err:
        raise type(err)(f"layer {name!r}: {err}") from None
    return layer.train(module.training)


def _layer_report(
    name: str,
    module: nn.Module,
    layer: TNLayer,
    shape: tuple[int, ...] | None,
    aliases: tuple[str, ...],
) -> LayerReport:
    flops_before = flops_after = seconds_before = seconds_after = chosen = None
    weight = module.weight
    if shape is not None:
        dev, dtype = weight.device, weight.dtype
        info = layer.plan_info(
            shape if isinstance(layer, TNConv2d) else (math.prod(shape[:-1]), shape[-1]),
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
        _kind(module),
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


def _too_slow(r: LayerReport, min_speedup: float) -> bool:
    """The estimated compressed time exceeds the dense time / ``min_speedup``."""
    return r.seconds_after > r.seconds_before / min_speedup


def _kept_dense(r: LayerReport) -> LayerReport:
    return LayerReport(
        r.name,
        r.kind,
        "dense",
        (),
        r.params_before,
        r.params_before,
        r.flops_before,
        r.flops_before,
        0.0,
        None,
        r.seconds_before,
        r.seconds_before,
        0.0,
        0.0,
        r.aliases,
        True,
    )


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
