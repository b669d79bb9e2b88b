"""Folding eval-mode BatchNorm into the layer before it: :func:`fold_batchnorm`.

In eval mode a BatchNorm is a per-channel affine map ``y = s z + t`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean s``. After a conv or linear layer
``z = W x + b`` it folds into that layer exactly: ``y = (s W) x + (s b + t)``. For a dense layer
this is torch's own fusion (``torch.nn.utils.fusion``); for a compressed layer the scale goes
into the one factor holding the output-channel leg (the kernel's rank, parameter count and
forward plans are unchanged) and the shift into the bias. The BatchNorm becomes
``nn.Identity``: one elementwise pass over the activation less per pair, which in a compressed
ResNet is a fixed cost the compression cannot shrink.

Pairs are found by tracing the model with ``torch.fx`` (a BatchNorm whose only input is a conv
or linear layer whose output nothing else reads), or given by name.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .batchnorm import BATCHNORMS
from .layers import TNLayer

__all__ = ["batchnorm_pairs", "fold_batchnorm"]

# dense layers torch's fusion handles
_DENSE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
_LAYERS = (*_DENSE, TNLayer)


class _LeafTracer(fx.Tracer):
    """An fx tracer that keeps layers and BatchNorms as single calls (never traced into)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (*_LAYERS, *BATCHNORMS)) or super().is_leaf_module(m, qualname)


def batchnorm_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer, batchnorm)`` names where the BatchNorm only normalises that layer's output.

    The model is traced with ``torch.fx`` (its forward must be traceable: no control flow on
    tensor values); a layer whose output is also read elsewhere (e.g. by a residual branch) is
    not paired, since folding would change what that reader sees.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    >>> batchnorm_pairs(net)
    [('0', '1')]
    """
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # fx raises many types; say what to do instead
        raise TypeError(
            f"batchnorm_pairs: {type(model).__name__} cannot be traced by torch.fx "
            f"({type(exc).__name__}: {exc}); pass the pairs by name to fold_batchnorm(pairs=...)"
        ) from exc
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), BATCHNORMS):
            continue
        src = node.args[0]  # a BatchNorm call has its input
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(model.get_submodule(src.target), _LAYERS)
            and len(src.users) == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def _out_leg(layer: TNLayer) -> tuple[str, int] | None:
    """The factor holding a compressed layer's output-channel leg, and the leg's axis in it.

    ``None`` when a tensorized layer splits the output channels over several modes: a
    per-channel scale does not factor over them.
    """
    legs = getattr(type(layer), "legs", ("out",))
    modes = layer.structure.modes[legs.index("out")]
    if len(modes) != 1:
        return None
    factor = next(f for f in layer.structure.factors if modes[0] in f.legs)
    return factor.name, factor.legs.index(modes[0])


def _affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` of an eval-mode BatchNorm: ``bn(z) = s z + t`` per channel."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -bn.running_mean * s
    if bn.bias is not None:
        t = t + bn.bias
    return s, t


def _check(layer: nn.Module, bn: nn.Module, what: str) -> None:
    """TypeError/ValueError naming the pair if ``bn`` cannot be folded into ``layer``."""
    if not isinstance(layer, _LAYERS):
        raise TypeError(
            f"{what}: expected a conv, linear or compressed layer, got {type(layer).__name__}"
        )
    if not isinstance(bn, BATCHNORMS) or bn.running_var is None:
        raise TypeError(f"{what}: expected a BatchNorm with running statistics")
    if bn.training:
        raise ValueError(f"{what}: the BatchNorm is in training mode; call model.eval() first")
    out = layer.out_channels if hasattr(layer, "out_channels") else layer.out_features
    if bn.num_features != out:
        raise ValueError(f"{what}: the BatchNorm has {bn.num_features} channels, the layer {out}")
    if isinstance(layer, TNLayer) and _out_leg(layer) is None:
        raise ValueError(
            f"{what}: no single leg of the kernel indexes the output channels (modes "
            f"{layer.structure.modes}); a per-channel scale does not fold into it"
        )


def _fold_compressed(layer: TNLayer, bn: nn.Module) -> TNLayer:
    """Scale the output-leg factor of ``layer`` by the BatchNorm and add its shift to the bias."""
    name, axis = _out_leg(layer)
    s, t = _affine(bn)
    factor = layer.factors[name]
    shape = [1] * factor.ndim
    shape[axis] = -1
    with torch.no_grad():
        factor.mul_(s.to(factor.dtype).reshape(shape))
        if layer.bias is None:
            layer.bias = nn.Parameter(t.to(factor.dtype))
        else:
            layer.bias.mul_(s).add_(t)
    layer.decomposition_error = None  # the kernel is no longer the one decomposed
    return layer


def _fold_one(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """The layer with ``bn`` folded in (a new dense layer, or ``layer`` changed in place)."""
    if isinstance(layer, TNLayer):
        return _fold_compressed(layer, bn)
    if isinstance(layer, nn.Linear):
        return fuse_linear_bn_eval(layer, bn)
    transposed = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d))
    return fuse_conv_bn_eval(layer, bn, transpose=transposed)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_batchnorm(
    model: nn.Module,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    inplace: bool = False,
) -> nn.Module:
    """The model with each eval-mode BatchNorm folded into the layer before it (exact).

    Parameters
    ----------
    model
        In eval mode. Dense convs and linears (torch's ``fuse_conv_bn_eval`` /
        ``fuse_linear_bn_eval``) and compressed layers (the factor holding the output leg is
        scaled; a bias is added where the layer had none) take their BatchNorm; the BatchNorm
        becomes ``nn.Identity``.
    pairs
        ``(layer name, batchnorm name)`` pairs; default :func:`batchnorm_pairs` (fx tracing).
    inplace
        Change ``model`` itself instead of a deep copy.

    Returns
    -------
    The folded model (``model`` itself when ``inplace``). Its outputs equal the original's in
    eval mode up to rounding; it must not be trained further as if it had BatchNorms.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> net[1].running_mean.fill_(0.5)  # doctest: +ELLIPSIS
    tensor(...)
    >>> folded = fold_batchnorm(net)
    >>> folded[1]
    Identity()
    >>> x = torch.randn(2, 3, 6, 6)
    >>> bool(torch.allclose(folded(x), net(x), atol=1e-6))
    True
    """
    pairs = batchnorm_pairs(model) if pairs is None else [tuple(p) for p in pairs]
    modules = dict(model.named_modules())
    for layer_name, bn_name in pairs:
        for name in (layer_name, bn_name):
            if name not in modules:
                raise ValueError(f"fold_batchnorm: the model has no module named {name!r}")
        _check(
            modules[layer_name], modules[bn_name], f"fold_batchnorm({layer_name!r}, {bn_name!r})"
        )
    if not inplace:
        model = copy.deepcopy(model)
    for layer_name, bn_name in pairs:
        folded = _fold_one(model.get_submodule(layer_name), model.get_submodule(bn_name))
        _set(model, layer_name, folded)
        _set(model, bn_name, nn.Identity())
    return model
