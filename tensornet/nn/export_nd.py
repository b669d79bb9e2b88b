"""Back to plain PyTorch for the 1-d, 3-d and transposed compressed convs.

:func:`nd_sequence` is what :func:`~tensornet.nn.to_standard` runs for
:class:`~tensornet.nn.TNConv1d`, :class:`~tensornet.nn.TNConv3d` and
:class:`~tensornet.nn.TNConvTranspose2d`:

- a 1-d layer is written out as its 2-d twin would be (:func:`~tensornet.nn.export.conv_sequence`
  on the lifted structure) inside :class:`Lifted1d` (``(N, C, L) -> (N, C, 1, L)`` and back);
- a 3-d or transposed layer becomes the modules of its cheapest plan that is a chain (matmuls
  as :class:`~tensornet.nn.export_modules.PointwiseConv2d`, the spatial step as ``nn.Conv3d``
  (after a padding module where needed) or ``nn.ConvTranspose2d``, permutes as
  :class:`~tensornet.nn.export_modules.ChannelPermute`), when it holds no more parameters than
  the layer and is estimated within ``slack`` of the layer's own plan; else the layer is kept
  (with a warning) or, with ``fallback="chain"``, written out anyway.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from . import cost
from .convnd import TNConv1d, TNConvNd, lift
from .export import conv_sequence
from .export_modules import ChannelBias, ChannelPermute, Folded, PointwiseConv2d
from .geometry_nd import GeometryNd, TransposeGeometry
from .layers import TNConv2d
from .plans import ForwardPlan, MatmulStep, PermuteStep
from .plans_nd import SpatialStep

__all__ = ["Lifted1d", "nd_sequence"]

_PAD3D = {
    "zeros": nn.ZeroPad3d,
    "reflect": nn.ReflectionPad3d,
    "replicate": nn.ReplicationPad3d,
    "circular": nn.CircularPad3d,
}


class Lifted1d(nn.Module):
    """A 2-d module applied to 1-d input: ``(N, C, L) -> (N, C, 1, L) -> inner -> squeeze``.

    Examples
    --------
    >>> import torch
    >>> lifted = Lifted1d(torch.nn.Conv2d(2, 3, (1, 3)))
    >>> lifted(torch.randn(4, 2, 10)).shape
    torch.Size([4, 3, 8])
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``inner`` on the input with a unit height."""
        return self.inner(x.unsqueeze(-2)).squeeze(-2)


def _twin(layer: TNConv1d) -> TNConv2d:
    """The 2-d layer of the lifted structure with the same factors (and a unit factor)."""
    p0 = next(iter(layer.factors.values()))
    g = layer.geometry
    twin = TNConv2d(
        layer.in_channels,
        layer.out_channels,
        g.kernel,
        g.stride,
        layer.padding if isinstance(layer.padding, str) else (0, layer.padding[0]),
        g.dilation,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
        plan=layer.plan,
        device=p0.device,
        dtype=p0.dtype,
        _structure=lift(layer.structure),
    )
    with torch.no_grad():
        for name, t in layer._plan_tensors(p0).items():
            twin.factors[name].copy_(t)
        if layer.bias is not None:
            twin.bias.copy_(layer.bias)
    return twin


def _spatial_modules(step: SpatialStep, tensors, batch: int) -> list[nn.Module]:
    w = step.weight(tensors).detach()
    g, cin = step.groups, step.view[1]
    geo = step.geometry
    opts = {"bias": False, "device": w.device, "dtype": w.dtype, "groups": g}
    mods: list[nn.Module] = []
    if isinstance(geo, TransposeGeometry):
        cout = w.shape[1] * g
        args = (geo.kernel, geo.stride, geo.padding, geo.output_padding)
        conv: nn.Module = nn.ConvTranspose2d(cin, cout, *args, dilation=geo.dilation, **opts)
    else:
        assert isinstance(geo, GeometryNd)
        pads = tuple(lo for lo, _ in geo.padding)
        if not geo.symmetric_zero_padding:
            flat = tuple(p for pair in reversed(geo.padding) for p in pair)
            mods.append(_PAD3D[geo.padding_mode](flat))
            pads = (0, 0, 0)
        conv = nn.Conv3d(cin, w.shape[0], geo.kernel, geo.stride, pads, geo.dilation, **opts)
    with torch.no_grad():
        conv.weight.copy_(w)
    mods.append(conv)
    fold = step.view[0] // batch
    inner = mods[0] if len(mods) == 1 else nn.Sequential(*mods)
    return [inner if fold == 1 else Folded(fold, inner)]


def _pointwise(step: MatmulStep, tensors) -> nn.Module:
    """A matmul step as :class:`~tensornet.nn.export_modules.PointwiseConv2d` (its folds kept)."""
    w = step.weight(tensors).detach()
    _, fold, g, ci, _ = step.view
    co = w.shape[1]
    opts = {"groups": g, "bias": False, "device": w.device, "dtype": w.dtype}
    conv = PointwiseConv2d(g * ci, g * co, 1, **opts)
    conv.fold = fold
    with torch.no_grad():
        conv.weight.copy_(w.reshape(g * co, ci, 1, 1))
    return conv


def _modules(layer: TNConvNd, plan: ForwardPlan, batch: int) -> list[nn.Module]:
    tensors = {k: v.detach() for k, v in layer.factors.items()}
    mods: list[nn.Module] = []
    for step in plan.steps:
        if isinstance(step, SpatialStep):
            mods += _spatial_modules(step, tensors, batch)
        elif isinstance(step, MatmulStep):
            mods.append(_pointwise(step, tensors))
        else:
            dims = tuple(d - 1 for d in step.dims[1:-1])
            mods.append(ChannelPermute(step.shape[1:-1], dims))
    if layer.bias is not None:
        mods.append(ChannelBias(layer.bias))
    return mods


def _params(plan: ForwardPlan) -> int:
    return sum(int(torch.Size(s.weight.shape).numel()) for s in plan.steps if hasattr(s, "weight"))


def _default_shape(layer: TNConvNd) -> tuple[int, ...]:
    return (1, layer.in_channels, *([32] if layer.spatial_dims == 1 else [8] * layer.spatial_dims))


def nd_sequence(
    layer: TNConvNd,
    input_shape: Sequence[int] | None = None,
    *,
    slack: float = 1.0,
    fallback: str = "keep",
    measure: bool = True,
    name: str = "",
) -> nn.Module:
    """The layer as plain torch modules of one of its plans (see the module docstring).

    ``input_shape`` defaults to batch 1 at 32 (1-d) or 8 per axis. ``measure`` times the 1-d
    chains (as :func:`~tensornet.nn.export.conv_sequence`); the 3-d and transposed chains are
    compared by the cost model's estimates.

    Examples
    --------
    >>> import torch
    >>> from tensornet.nn import TNConv3d
    >>> layer = TNConv3d(8, 8, 3, padding=1, format="tucker2", ranks=(2, 2))
    >>> seq = nd_sequence(layer, (2, 8, 4, 4, 4), fallback="chain")
    >>> x = torch.randn(2, 8, 4, 4, 4)
    >>> bool(torch.allclose(seq(x), layer(x), atol=1e-5))
    True
    """
    options = _options(slack, fallback, measure)
    shape = tuple(input_shape or _default_shape(layer))
    if isinstance(layer, TNConv1d):
        twin = _twin(layer)
        n, c, length = shape
        seq = conv_sequence(twin, (n, c, 1, length), **options, name=name)
        return layer if seq is twin else Lifted1d(seq)
    p0 = next(iter(layer.factors.values()))
    plans = layer._candidates(shape, p0.device.type)
    cost.choose(plans, p0.device.type, p0.element_size())
    chosen = layer._choose(shape, p0.device, p0.dtype)
    fits = [p for p in plans if _chain(p) and _params(p) <= layer.structure.num_params]
    best = min(fits, key=lambda p: p.cost["seconds"], default=None)
    if best is not None:
        ratio = best.cost["seconds"] / chosen.cost["seconds"]
        if ratio <= slack or fallback == "chain":
            return nn.Sequential(*_modules(layer, best, shape[0]))
    why = "no chain of plain modules holds at most its parameters"
    if best is not None:
        why = f"its fastest plain chain ({best.name}) is estimated at {ratio:.2f}x its forward"
    warnings.warn(
        f"to_standard: {name or type(layer).__name__} (format {layer.format}) has no "
        f"plain-torch form within {slack}x of its time at no more parameters: {why}; "
        "kept as a compressed layer",
        stacklevel=2,
    )
    return layer


def _chain(plan: ForwardPlan) -> bool:
    """Every step has a plain module (the plans of 3-d and transposed layers all do)."""
    return all(isinstance(s, (SpatialStep, MatmulStep, PermuteStep)) for s in plan.steps)


def _options(slack: float, fallback: str, measure: bool) -> dict:
    """The checked options (as :func:`~tensornet.nn.to_standard` checks them)."""
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not slack >= 1:
        raise ValueError(f"slack must be a number >= 1, got {slack!r}")
    if fallback not in ("keep", "chain"):
        raise ValueError(f"fallback must be one of ('keep', 'chain'), got {fallback!r}")
    if not isinstance(measure, bool):
        raise TypeError(f"measure must be True or False, got {measure!r}")
    return {"slack": slack, "fallback": fallback, "measure": measure}
