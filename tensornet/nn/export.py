"""Back to plain PyTorch: compressed layers rewritten as ``nn.Conv2d``/``nn.Linear`` sequences.

:func:`to_standard` replaces every :class:`~tensornet.nn.TNConv2d` by the cheapest of its
forward plans that is a chain of plain convolutions (1x1, spatial, grouped or depthwise, with
the same padding mode), so the compressed model keeps its speed and runs and exports
(``torch.export.export``) without tensornet. A layer none of whose plans is such a chain becomes
one ``nn.Conv2d`` with the rebuilt kernel. :class:`~tensornet.nn.TNLinear` becomes one
``nn.Linear``, or two for the plain low-rank format. Outputs are the same up to rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from . import cost
from .functional import ConvGeometry, ConvStep, MatmulStep, conv_candidates
from .layers import TNConv2d, TNLinear

__all__ = ["to_standard", "conv_sequence"]

_PAD_MODULES = {
    "zeros": nn.ZeroPad2d,
    "reflect": nn.ReflectionPad2d,
    "replicate": nn.ReplicationPad2d,
    "circular": nn.CircularPad2d,
}


def _padded_conv(
    cin: int, cout: int, geometry: ConvGeometry, groups: int, weight: torch.Tensor
) -> list[nn.Module]:
    t, b, le, r = geometry.padding
    mods: list[nn.Module] = []
    if t == b and le == r:
        conv = nn.Conv2d(
            cin,
            cout,
            geometry.kernel,
            geometry.stride,
            (t, le),
            geometry.dilation,
            groups,
            bias=False,
            padding_mode=geometry.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
    else:
        mods.append(_PAD_MODULES[geometry.padding_mode]((le, r, t, b)))
        conv = nn.Conv2d(
            cin,
            cout,
            geometry.kernel,
            geometry.stride,
            0,
            geometry.dilation,
            groups,
            bias=False,
            device=weight.device,
            dtype=weight.dtype,
        )
    with torch.no_grad():
        conv.weight.copy_(weight)
    return mods + [conv]


def conv_sequence(layer: TNConv2d, input_shape: Sequence[int] | None = None) -> nn.Sequential:
    """The layer as ``nn.Sequential`` of plain convolutions (last one carries the bias).

    Among the candidates for ``input_shape`` (default ``(1, in_channels, 32, 32)``) other than
    the dense one, the cheapest chain of convolutions (no batch-folded legs, no permutes) is
    used, so the parameters stay compressed; if there is none, one dense ``nn.Conv2d``.
    """
    shape = tuple(input_shape or (1, layer.in_channels, 32, 32))
    p0 = next(iter(layer.factors.values()))
    plans = conv_candidates(layer.structure, layer.geometry, shape, "cuda")  # no CPU-only steps
    cost.choose(plans, p0.device.type, p0.element_size())
    chains = [p for p in plans if p.name != "dense" and _is_chain(p)]  # keep the compression
    if not chains:
        return nn.Sequential(layer.to_conv())
    tensors = {k: v.detach() for k, v in layer.factors.items()}
    limit = layer.structure.num_params
    # the cheapest chain that stores no more than the layer does (else the smallest one)
    best = min(
        chains, key=lambda p: (_params(p, tensors) > limit, p.cost["seconds"], _params(p, tensors))
    )
    mods: list[nn.Module] = []
    for step in best.steps:
        w = step.weight(tensors)
        if isinstance(step, MatmulStep):
            g, co, ci = w.shape
            mods += _padded_conv(
                g * ci, g * co, ConvGeometry((1, 1)), g, w.reshape(g * co, ci, 1, 1)
            )
        else:
            mods += _padded_conv(step.view[1], w.shape[0], step.geometry, step.groups, w)
    last = mods[-1]
    if layer.bias is not None:
        last.bias = nn.Parameter(layer.bias.detach().clone())
    return nn.Sequential(*mods)


def _params(plan, tensors) -> int:
    return sum(step.weight(tensors).numel() for step in plan.steps)


def _is_chain(plan) -> bool:
    for step in plan.steps:
        if isinstance(step, MatmulStep):
            if step.view[1] != 1:  # legs folded into the batch
                return False
        elif isinstance(step, ConvStep):
            if step.view[0] != plan.output_shape[0]:
                return False
        else:
            return False
    return True


def _linear(layer: TNLinear) -> nn.Module:
    if layer.structure.format == "svd":
        u = layer.factors["U"].detach()
        v = layer.factors["V"].detach()
        first = nn.Linear(layer.in_features, u.shape[1], bias=False, device=u.device, dtype=u.dtype)
        second = nn.Linear(
            u.shape[1],
            layer.out_features,
            bias=layer.bias is not None,
            device=u.device,
            dtype=u.dtype,
        )
        with torch.no_grad():
            first.weight.copy_(v)
            second.weight.copy_(u)
            if layer.bias is not None:
                second.bias.copy_(layer.bias)
        return nn.Sequential(first, second)
    return layer.to_linear()


def to_standard(
    model: nn.Module, input_shape: Sequence[int] | None = None, inplace: bool = False
) -> nn.Module:
    """``model`` with every compressed layer rewritten in plain ``torch.nn`` modules.

    ``input_shape`` (an input batch shape of the model) only guides which conv chain is
    cheapest; the result works for any input.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from tensornet.nn import TNConv2d
    >>> net = nn.Sequential(TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4)))
    >>> plain = to_standard(net)
    >>> {type(m).__name__ for m in plain[0]}, len(plain[0]) > 1
    ({'Conv2d'}, True)
    >>> x = torch.randn(2, 8, 6, 6)
    >>> bool(torch.allclose(plain(x), net(x), atol=1e-5))
    True
    """
    target = model if inplace else copy.deepcopy(model)
    shapes: dict[str, tuple[int, ...]] = {}
    if input_shape is not None:
        from .compress import layer_inputs

        names = [n for n, m in target.named_modules() if isinstance(m, TNConv2d)]
        p0 = next(target.parameters())
        shapes = layer_inputs(
            target, torch.zeros(tuple(input_shape), device=p0.device, dtype=p0.dtype), names
        )
    replacements = {}
    for name, module in target.named_modules():
        if isinstance(module, TNConv2d):
            replacements[name] = conv_sequence(module, shapes.get(name))
        elif isinstance(module, TNLinear):
            replacements[name] = _linear(module)
    for name, module in replacements.items():
        if not name:
            return module
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, module)
    return target
