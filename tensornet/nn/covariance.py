r"""A layer's input rows and their covariances, from the dense model or a partly compressed one.

A conv2d/linear layer computes ``X W^T`` from its input rows ``X`` (:func:`layer_rows`: the
input features, or every unfolded ``in * kh * kw`` patch). Its output error under a new kernel
``W'`` depends on the data only through second moments, which :func:`input_covariances`
gathers in float64 from a few batches:

- ``C = X^T X`` of the rows the layer sees (:class:`InputCovariance`);
- with ``compressed=`` (a copy of the model in which some layers are already compressed):
  ``X`` from that model, and also ``X^T X0`` and ``X0^T X0`` with ``X0`` the dense model's rows
  at the same positions, so that a layer can be fitted to the dense model's outputs from the
  inputs it will really get. :func:`fit_sequentially` builds layers in turn that way (what
  ``compress(model, ..., data=...)`` does), so each layer corrects the errors of those before.

Memory is ``d^2`` float64 per layer (``d = in * kh * kw``); layers above :data:`MAX_FEATURES`
are refused with a clear error (or left out with ``skip_large``).

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
>>> x = torch.randn(10, 3, dtype=torch.float64)
>>> cov = input_covariances(net, x)["2"]
>>> h = net[1](net[0](x)).detach()
>>> cov.rows, bool(torch.allclose(cov.matrix, h.T @ h))
(10, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import eval_mode, replace_module
from .geometry import ConvGeometry
from .select import Selector, select_layers

__all__ = [
    "MAX_FEATURES",
    "InputCovariance",
    "fit_sequentially",
    "has_rows",
    "input_covariances",
    "layer_rows",
]

#: The largest ``d`` (``in * kh * kw`` or ``in_features``) :func:`input_covariances` accepts by
#: default: its ``d x d`` float64 matrix is then 128 MiB.
MAX_FEATURES = 4096
_CHUNK = 1 << 22  # patch elements unfolded at a time


@dataclass(frozen=True)
class InputCovariance:
    """The second-moment matrix of a layer's input rows: ``matrix = X^T X`` over ``rows`` rows.

    ``X`` holds one row per output position: a linear layer's input features, or a conv's
    unfolded patch (``in * kh * kw``, in the order of ``weight.reshape(out, -1)``). The sum (not
    the mean) is kept, so ``tr(W C W^T)`` is exactly ``||X W^T||_F^2``.

    When the layer's inputs ``X`` come from a partly compressed model and differ from the dense
    model's ``X0`` (same rows), ``cross = X^T X0`` and ``target = X0^T X0``: the layer's output
    is then compared with the dense ``X0 W^T``.
    """

    matrix: torch.Tensor
    rows: int
    cross: torch.Tensor | None = None
    target: torch.Tensor | None = None

    @property
    def features(self) -> int:
        """``d``: the size of one row."""
        return self.matrix.shape[0]

    @property
    def second_moment(self) -> torch.Tensor:
        """``X^T X / rows``: the mean outer product of a row."""
        return self.matrix / max(self.rows, 1)


def _features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.in_channels * math.prod(module.kernel_size)


def has_rows(module: nn.Module) -> bool:
    """Whether :func:`layer_rows` takes ``module`` (an ``nn.Linear``, an ungrouped ``nn.Conv2d``).

    Examples
    --------
    >>> from torch import nn
    >>> has_rows(nn.Conv2d(4, 4, 3)), has_rows(nn.Conv2d(4, 4, 3, groups=2))
    (True, False)
    >>> has_rows(nn.Conv1d(2, 2, 3)), has_rows(nn.Linear(2, 2))
    (False, True)
    """
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1


def layer_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows ``X`` (``(rows, d)``) a conv2d/linear layer multiplies by its weight on input ``x``.

    For a conv: every patch its kernel sees, after the layer's padding (any ``padding_mode``),
    with its stride and dilation; so ``conv(x)`` without bias is ``X W^T`` rearranged.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    >>> x = torch.randn(4, 2, 7, 7)
    >>> rows = layer_rows(conv, x)
    >>> y = (rows @ conv.weight.reshape(3, -1).T).reshape(4, 16, 3).permute(0, 2, 1)
    >>> rows.shape, bool(torch.allclose(y.reshape(4, 3, 4, 4), conv(x), atol=1e-5))
    (torch.Size([64, 18]), True)
    """
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features)
    if not has_rows(module):
        raise TypeError(
            f"layer_rows: expected an nn.Linear or an nn.Conv2d with groups=1, got {module!r}"
        )
    if x.ndim == 3:
        x = x.unsqueeze(0)
    g = ConvGeometry.from_conv_args(
        module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
    )
    patches = F.unfold(g.pad(x), g.kernel, dilation=g.dilation, stride=g.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _items(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The input as items to unfold a few at a time, and the elements one item unfolds to."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, module.in_features), module.in_features
    x = x if x.ndim == 4 else x.unsqueeze(0)  # patches of one image: ~ (C H W) (kh kw)
    return x, x[0].numel() * math.prod(module.kernel_size)


class _Gram:
    """``X^T X`` (and, for pairs, ``X^T X0`` and ``X0^T X0``) in float64 over every input added."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.sums: list[torch.Tensor] = []
        self.rows = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:  # the forward pre-hook
        self.add(args[0])

    def add(self, x: torch.Tensor, x0: torch.Tensor | None = None) -> None:
        x, per_item = _items(self.module, x)
        step = max(1, _CHUNK // per_item)
        others = _items(self.module, x0)[0].split(step) if x0 is not None else None
        for i, part in enumerate(x.split(step)):
            rows = layer_rows(self.module, part).double()
            grams = [rows.T @ rows]
            if others is not None:
                dense = layer_rows(self.module, others[i]).double()
                grams += [rows.T @ dense, dense.T @ dense]
            self.sums = grams if not self.sums else [a + b for a, b in zip(self.sums, grams)]
            self.rows += rows.shape[0]

    def result(self) -> InputCovariance:
        return InputCovariance(self.sums[0], self.rows, *self.sums[1:])


class _Inputs:
    """A forward pre-hook that keeps every input a layer sees (for one batch)."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.seen.append(args[0])


def _inputs_of(
    model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor
) -> dict[str, _Inputs]:
    """Every input each of ``modules`` sees on one forward of ``model`` on ``x``."""
    stores = {name: _Inputs() for name in modules}
    hooks = [m.register_forward_pre_hook(stores[n]) for n, m in modules.items()]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return stores


def _batch_input(item: Any, index: int) -> torch.Tensor:
    """The input of one batch: the batch itself or the first element of an (x, y) pair."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if not isinstance(item, torch.Tensor) or item.dim() == 0:
        raise TypeError(
            "input_covariances: each batch must be a tensor or an (input, target) pair with a "
            f"tensor input; batch {index} gives {type(item).__name__}"
        )
    return item


def _batches(model: nn.Module, data: Any, limit: int | None) -> Iterator[torch.Tensor]:
    """The input of each batch (at most ``limit``), on the model's device and float dtype."""
    first = next(
        (t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None
    )
    done = 0
    for index, item in enumerate([data] if isinstance(data, torch.Tensor) else data):
        x = _batch_input(item, index)
        if first is not None:
            x = x.to(first.device, first.dtype if x.is_floating_point() else None)
        yield x
        done += 1
        if done == limit:
            break
    if done == 0:
        raise ValueError("input_covariances: data yielded no batches")


def _chosen(
    model: nn.Module, layers: Selector, max_features: int, skip_large: bool
) -> dict[str, nn.Module]:
    """The layers whose inputs are gathered, their size checked before any work."""
    chosen = {}
    for name in select_layers(model, layers):
        module = model.get_submodule(name)
        if not has_rows(module):  # grouped, 1-d, 3-d and transposed convs: decomposed plainly
            continue
        d = _features(module)
        if d <= max_features:
            chosen[name] = module
        elif not skip_large:
            raise ValueError(
                f"input_covariances: layer {name!r} has {d:,} input features per row (a "
                f"{d:,} x {d:,} float64 matrix, {d * d * 8 / 2**20:,.0f} MiB), above "
                f"max_features={max_features:,}; leave it out with layers= or raise max_features"
            )
    return chosen


def _check(data: Any, batches: Any) -> None:
    if batches is not None and (
        isinstance(batches, bool) or not isinstance(batches, int) or batches < 1
    ):
        raise ValueError(f"input_covariances: batches must be a positive int, got {batches!r}")
    if not isinstance(data, (torch.Tensor, Iterable)):
        raise TypeError(
            f"input_covariances: data must be a tensor or an iterable of batches, "
            f"got {type(data).__name__}"
        )


def input_covariances(
    model: nn.Module,
    data: torch.Tensor | Iterable[Any],
    layers: Selector = None,
    *,
    batches: int | None = None,
    max_features: int | None = None,
    skip_large: bool = False,
    compressed: nn.Module | None = None,
) -> dict[str, InputCovariance]:
    """The input covariance of each chosen conv2d/linear layer over a few batches of ``data``.

    The model runs in eval mode without gradients (every module's mode restored after); inputs
    go to the model's device, floating ones in its dtype. A layer called several times per
    forward adds every call's rows.

    Parameters
    ----------
    model : nn.Module
    data : tensor or iterable
        One batch (a tensor), or batches: tensors or ``(input, target, ...)`` pairs (a
        ``DataLoader`` works; targets are ignored).
    layers : pattern, names, predicate or None
        Which layers (:func:`~tensornet.nn.select_layers`; default every conv2d/linear layer
        a compressed layer can replace).
    batches : int, optional
        Use at most this many batches.
    max_features : int, optional
        The largest ``d`` accepted (default :data:`MAX_FEATURES`; memory grows as ``d^2``): a
        layer above it is a ValueError naming it, raised before the data runs.
    skip_large : bool
        Leave out layers above ``max_features`` instead of raising.
    compressed : nn.Module, optional
        A copy of ``model`` with some layers replaced, the chosen ones still dense at the same
        names: ``X`` are the rows there, and ``cross``/``target`` pair them with ``model``'s.

    Returns
    -------
    dict of str to InputCovariance
        By layer name, in module order; a layer no batch reached is left out.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> cov = input_covariances(net.double(), [(x[:6], 0), (x[6:], 1)])["0"]
    >>> cov.rows, bool(torch.allclose(cov.matrix, x.T @ x))
    (10, True)
    """
    _check(data, batches)
    limit = MAX_FEATURES if max_features is None else max_features
    chosen = _chosen(model, layers, limit, skip_large)
    if compressed is None:
        grams = {name: _Gram(m) for name, m in chosen.items()}
        hooks = [g.module.register_forward_pre_hook(g) for g in grams.values()]
        try:
            with eval_mode(model), torch.no_grad():
                for x in _batches(model, data, batches):
                    model(x)
        finally:
            for h in hooks:
                h.remove()
    else:
        grams = _paired(model, compressed, data, chosen, batches)
    return {n: g.result() for n, g in grams.items() if g.rows}


def _paired(
    model: nn.Module,
    compressed: nn.Module,
    data: Any,
    chosen: Mapping[str, nn.Module],
    limit: int | None,
) -> dict[str, _Gram]:
    """Grams of the rows each layer gets in ``compressed``, paired with ``model``'s rows."""
    grams = {name: _Gram(compressed.get_submodule(name)) for name in chosen}
    for name, g in grams.items():
        if not isinstance(g.module, (nn.Linear, nn.Conv2d)):
            raise ValueError(
                f"input_covariances: layer {name!r} of compressed is a "
                f"{type(g.module).__name__}, not the dense layer"
            )
    with eval_mode(model), eval_mode(compressed), torch.no_grad():
        for x in _batches(model, data, limit):
            dense = _inputs_of(model, chosen, x)  # one model at a time: they may share layers
            seen = _inputs_of(compressed, {n: g.module for n, g in grams.items()}, x)
            for name, gram in grams.items():
                for a, b in zip(seen[name].seen, dense[name].seen):
                    gram.add(a, b)
    return grams


def fit_sequentially(
    model: nn.Module,
    data: torch.Tensor | Iterable[Any],
    names: Sequence[str],
    build: Callable[[str, InputCovariance | None], tuple[nn.Module | None, Any]],
    work: nn.Module,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[nn.Module | None, Any]]:
    """Build the named layers in turn, each from the inputs the layers built before give it.

    For each name in order: the layer's covariance with ``work`` as ``compressed`` (rows from
    ``work``, where every layer built so far is installed, paired with the dense ``model``'s),
    then ``build(name, covariance)`` (covariance ``None`` for a layer above
    :data:`MAX_FEATURES` or that saw no data), whose first element, unless ``None`` (kept
    dense), is installed in ``work`` at every alias. Costs two forwards of ``data`` per layer.

    Returns
    -------
    list
        What ``build`` returned, in order.
    """
    out = []
    for name in names:
        cov = input_covariances(model, data, [name], skip_large=True, compressed=work)
        result = build(name, cov.get(name))
        if result[0] is not None:
            for alias in (aliases or {}).get(name, (name,)):
                replace_module(work, alias, result[0])
        out.append(result)
    return out
