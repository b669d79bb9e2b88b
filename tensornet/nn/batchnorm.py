"""Recomputing BatchNorm statistics after a model changed: :func:`recalibrate_bn`.

A compressed layer computes a slightly different function than the dense layer it replaced, so
the BatchNorm layers after it normalise with the running statistics of the *dense* model; in a
deep network the mismatch compounds and a one-shot compressed ResNet falls to near chance.
Recomputing the statistics on training inputs (no labels, no weight change) recovers most of the
accuracy. :func:`~tensornet.nn.compress` runs it with ``calibrate=data``.

The module is ``batchnorm`` rather than ``calibrate``: ``tensornet.nn.calibrate`` is the cost
model's calibration function (:func:`~tensornet.nn.cost.calibrate`).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer

# torch's BatchNorm classes (their common base is private); user subclasses of these count
BATCHNORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
)

__all__ = ["BNRecalibration", "batchnorm_layers", "recalibrate_bn"]


@dataclass(frozen=True)
class BNRecalibration:
    """What :func:`recalibrate_bn` did: the layers it recomputed and the data it saw.

    Attributes
    ----------
    layers : tuple of str
        Names of the BatchNorm layers whose running statistics were recomputed.
    batches : int
        Batches run through the model.
    samples : int
        Samples in those batches (their first dimension).
    """

    layers: tuple[str, ...]
    batches: int
    samples: int


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers of ``model`` that keep running statistics, by name.

    Every ``BatchNorm1d/2d/3d``, ``SyncBatchNorm`` or lazy BatchNorm (and their subclasses)
    with ``track_running_stats=True``; a layer without running statistics always
    normalises with the batch's own and has nothing to recompute.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
    ...                     nn.BatchNorm2d(4, track_running_stats=False))
    >>> list(batchnorm_layers(net))
    ['1']
    """
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, BATCHNORMS) and m.track_running_stats and m.running_mean is not None
    }


def _input_of(item: Any, index: int) -> torch.Tensor:
    """The input tensor of one batch: the batch itself or the first element of a pair."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise TypeError(f"recalibrate_bn: batch {index} is an empty {type(item).__name__}")
        item = item[0]
    if not isinstance(item, torch.Tensor):
        raise TypeError(
            "recalibrate_bn: each batch must be a tensor or an (input, target) pair with a tensor "
            f"input; batch {index} gives {type(item).__name__}"
        )
    if item.dim() == 0:
        raise TypeError(
            f"recalibrate_bn: batch {index} is a 0-d tensor; batches have a batch dimension"
        )
    return item


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the model's first floating parameter or buffer.

    A model with a BatchNorm layer always has one: its running mean.
    """
    first = next(t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
    return first.device, first.dtype


class _Moments:
    """Per-channel count, mean and sum of squared deviations of everything a layer sees.

    Batches are merged with Chan et al.'s pairwise update in float64, so the result is the
    statistics of all the values at once, whatever the batch sizes.
    """

    def __init__(self) -> None:
        self.calls = 0  # forward calls, as torch counts them in num_batches_tracked
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.calls += 1
        x = args[0].detach()
        if x.dim() < 2 or x.numel() == 0:
            return  # the layer's own forward refuses it
        values = x.transpose(0, 1).reshape(x.shape[1], -1).double()
        n = values.shape[1]
        mean = values.mean(dim=1)
        m2 = ((values - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total


def _check_batches(batches: Any) -> int | None:
    if batches is None:
        return None
    if isinstance(batches, bool):
        raise TypeError(f"recalibrate_bn: batches must be a positive integer, got {batches!r}")
    try:
        count = operator.index(batches)
    except TypeError:
        raise TypeError(
            f"recalibrate_bn: batches must be a positive integer, got {batches!r}"
        ) from None
    if count < 1:
        raise ValueError(f"recalibrate_bn: batches must be at least 1, got {count}")
    return count


def _progress(data: Iterable, limit: int | None, enabled: bool) -> Any:
    """A tqdm bar over ``data`` that appears only on runs longer than two seconds, or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    try:
        total = len(data)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if limit is not None:
        total = limit if total is None else min(total, limit)
    return tqdm(data, total=total, desc="recalibrate_bn", unit="batch", delay=2.0, leave=False)


def recalibrate_bn(
    model: nn.Module,
    data: Iterable[Any] | torch.Tensor,
    *,
    batches: int | None = None,
    progress: bool = True,
) -> BNRecalibration:
    """Recompute the running statistics of every BatchNorm layer of ``model`` from ``data``.

    Each BatchNorm layer with running statistics (see :func:`batchnorm_layers`) runs in training
    mode, so it normalises with the batch's statistics as during training, while every other
    module keeps its mode (dropout in an eval-mode model stays off). After the forward passes
    (under ``torch.no_grad``), each layer's ``running_mean`` is the mean of every value it saw,
    per channel, and ``running_var`` their unbiased variance (as BatchNorm stores it), computed
    in float64 over all batches at once: a short last batch counts by its size. A layer's
    ``num_batches_tracked`` counts its forward calls (one per batch, as in training); a layer
    that no batch reaches keeps its statistics (with a ``UserWarning``). Nothing else changes:
    no parameter, no other buffer, no module's mode, no layer's ``momentum``, nor the CPU (and
    the model's CUDA device's) random state. On any error (a bad batch, a failing forward)
    every running statistic is restored, so the model is left as it was.

    Parameters
    ----------
    model : nn.Module
    data : iterable or tensor
        Input batches, or ``(input, target, ...)`` tuples/lists whose first element is the input
        (a ``DataLoader`` of a labelled dataset works; targets are ignored). A single tensor is
        one batch. Inputs go to the model's device, and floating inputs to its dtype.
    batches : int, optional
        Use at most this many batches (default: all of ``data``).
    progress : bool
        Show a progress bar (tqdm) when the run takes longer than two seconds.

    Returns
    -------
    BNRecalibration
        The recomputed layers' names and the batches and samples used. A model without a
        BatchNorm layer that keeps running statistics gets a ``UserWarning``, nothing runs and
        the result names no layers.

    Raises
    ------
    TypeError
        ``data`` not iterable; a batch that is not a tensor or a pair whose first element is a
        tensor; a non-integer ``batches``.
    ValueError
        ``data`` yields no batch; ``batches < 1``; a lazy BatchNorm layer is not initialised.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> x = torch.randn(64, 1, 6, 6)
    >>> result = recalibrate_bn(net, [(x[:32], None), (x[32:], None)])
    >>> result.layers, result.batches, result.samples, net.training
    (('1',), 2, 64, False)
    >>> y = net[0](x).double()
    >>> bool(torch.allclose(net[1].running_mean.double(), y.mean(dim=(0, 2, 3)), atol=1e-6))
    True
    """
    limit = _check_batches(batches)
    layers = _layers_to_recompute(model, data)
    if not layers:
        return BNRecalibration((), 0, 0)
    saved = {
        n: (bn.running_mean.clone(), bn.running_var.clone(), _count(bn)) for n, bn in layers.items()
    }
    moments = {name: _Moments() for name in layers}
    try:
        batches_run = [data] if isinstance(data, torch.Tensor) else data
        done, samples = _run(model, layers, moments, batches_run, limit, progress)
    except BaseException:
        for name, bn in layers.items():
            _restore(bn, saved[name])
        raise
    return BNRecalibration(_write(layers, moments, saved), done, samples)


def _layers_to_recompute(model: nn.Module, data: Any) -> dict[str, nn.Module]:
    """The model's BatchNorm layers with running statistics (checked; none: a warning)."""
    if not isinstance(data, Iterable):  # a tensor is iterable too
        raise TypeError(
            "recalibrate_bn: data must be a tensor or an iterable of batches, "
            f"got {type(data).__name__}"
        )
    layers = batchnorm_layers(model)
    if not layers:
        warnings.warn(
            "recalibrate_bn: the model has no BatchNorm layer with running statistics; "
            "nothing to recompute",
            UserWarning,
            stacklevel=3,
        )
    lazy = [n for n, bn in layers.items() if isinstance(bn.running_mean, UninitializedBuffer)]
    if lazy:
        raise ValueError(
            f"recalibrate_bn: lazy BatchNorm layers {lazy} are not initialised; run the model once"
        )
    return layers


def _run(
    model: nn.Module,
    layers: dict[str, nn.Module],
    moments: dict[str, _Moments],
    data: Iterable[Any],
    limit: int | None,
    progress: bool,
) -> tuple[int, int]:
    """Forward passes with the BatchNorm layers in training mode: (batches, samples) seen.

    Every module's mode is restored after, and the hooks that gather the moments removed.
    """
    device, dtype = _placement(model)
    modes = {m: m.training for m in model.modules()}
    bar = _progress(data, limit, progress)
    hooks = [bn.register_forward_pre_hook(moments[name]) for name, bn in layers.items()]
    done = samples = 0
    try:
        for bn in layers.values():
            bn.training = True  # normalise with batch statistics; torch's own update is overwritten
        rng_devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):
            for index, item in enumerate(data if bar is None else bar):
                x = _input_of(item, index)
                model(x.to(device, dtype) if x.is_floating_point() else x.to(device))
                done += 1
                samples += x.shape[0]
                if done == limit:
                    break
        if done == 0:
            raise ValueError("recalibrate_bn: data yielded no batches")
    finally:
        if bar is not None:
            bar.close()
        for hook in hooks:
            hook.remove()
        for module, mode in modes.items():
            module.training = mode
    return done, samples


def _write(
    layers: dict[str, nn.Module], moments: dict[str, _Moments], saved: dict[str, tuple]
) -> tuple[str, ...]:
    """Each layer's pooled statistics stored (one that saw nothing: restored, with a warning)."""
    unused = [name for name in layers if moments[name].mean is None]
    if unused:
        warnings.warn(
            f"recalibrate_bn: BatchNorm layers {unused} saw no input; their statistics are kept",
            UserWarning,
            stacklevel=3,
        )
    for name, bn in layers.items():
        if name in unused:
            _restore(bn, saved[name])
        else:
            _store(bn, moments[name])
    return tuple(name for name in layers if name not in unused)


def _count(bn: nn.Module) -> int | None:
    return None if bn.num_batches_tracked is None else int(bn.num_batches_tracked)


def _restore(bn: nn.Module, saved: tuple) -> None:
    """Put back a layer's running statistics as :func:`recalibrate_bn` found them."""
    mean, var, count = saved
    with torch.no_grad():
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        if count is not None:
            bn.num_batches_tracked.fill_(count)


def _store(bn: nn.Module, moments: _Moments) -> None:
    """Write the pooled mean and unbiased variance into the layer's running buffers."""
    n = moments.count
    var = moments.m2 / (n - 1)  # n > 1: a training-mode BatchNorm refuses one value per channel
    with torch.no_grad():
        bn.running_mean.copy_(moments.mean)
        bn.running_var.copy_(var)
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(moments.calls)
