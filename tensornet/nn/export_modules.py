"""The small plain-torch modules a standard model is made of (:func:`~tensornet.nn.to_standard`).

Each does no other operation than reshapes, permutes and what the plain layer does; loading the
``state_dict`` of a conv here into a plain ``nn.Conv2d`` of the same arguments gives the same
function (slower on CPUs). See :mod:`tensornet.nn.export` for where each one is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .geometry import ConvGeometry
from .plans import channels_last_format, depthwise_shift

__all__ = [
    "ChannelBias",
    "ChannelPermute",
    "ChannelsLastConv2d",
    "Folded",
    "PointwiseConv2d",
    "ShiftConv2d",
]


class ChannelPermute(nn.Module):
    """Reorder the channel legs: ``(N, C, *S)`` seen as ``(N, *sizes, *S)``, legs permuted.

    Examples
    --------
    >>> import torch
    >>> p = ChannelPermute((2, 3), (1, 0))
    >>> p(torch.arange(6.0).reshape(1, 6)).tolist()
    [[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]]
    """

    def __init__(self, sizes: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        self.sizes, self.dims = tuple(sizes), tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with its channel legs permuted."""
        n, rest = x.shape[0], x.shape[2:]
        k = len(self.sizes)
        perm = (0, *(1 + d for d in self.dims), *range(1 + k, 1 + k + len(rest)))
        h = x.reshape(n, *self.sizes, *rest).permute(perm)
        return h.reshape(n, -1, *rest)

    def extra_repr(self) -> str:
        """Leg sizes and permutation."""
        return f"sizes={self.sizes}, dims={self.dims}"


class Folded(nn.Module):
    """``inner`` applied with ``fold`` leading channel blocks moved into the batch.

    ``(N, fold C, *S) -> (N fold, C, *S) -> inner -> (N, fold C', *S')``.

    Examples
    --------
    >>> import torch
    >>> f = Folded(3, torch.nn.Linear(2, 4))
    >>> f(torch.randn(5, 6)).shape
    torch.Size([5, 12])
    """

    def __init__(self, fold: int, inner: nn.Module) -> None:
        super().__init__()
        self.fold, self.inner = fold, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``inner`` on the input with ``fold`` channel blocks in the batch."""
        n = x.shape[0]
        h = x.reshape(n * self.fold, -1, *x.shape[2:])
        h = self.inner(h)
        return h.reshape(n, -1, *h.shape[2:])

    def extra_repr(self) -> str:
        """The fold."""
        return f"fold={self.fold}"


class ChannelBias(nn.Module):
    """Adds ``bias`` along dimension 1 of ``(N, C, *S)``.

    Examples
    --------
    >>> import torch
    >>> ChannelBias(torch.tensor([1.0, 2.0]))(torch.zeros(1, 2, 1)).flatten().tolist()
    [1.0, 2.0]
    """

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input plus the bias."""
        return x + self.bias.reshape(-1, *([1] * (x.ndim - 2)))


class ShiftConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` computed as a sum of shifted slices times the weights.

    Same parameters and ``state_dict`` as the ``nn.Conv2d`` it subclasses (the padding is done
    by a module in front of it: ``padding`` is 0). What a plan step with ``shift`` set runs; the
    compressed layer's own CPU depthwise steps now run channels-last (:class:`ChannelsLastConv2d`),
    which measured faster.

    Examples
    --------
    >>> import torch
    >>> conv = ShiftConv2d(4, 4, (3, 1), groups=4, bias=False)
    >>> x = torch.randn(2, 4, 6, 6)
    >>> ref = torch.nn.functional.conv2d(x, conv.weight, groups=4)
    >>> bool(torch.allclose(conv(x), ref, atol=1e-6))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The depthwise conv of the (already padded) input."""
        geometry = ConvGeometry(self.kernel_size, self.stride, (0, 0, 0, 0), self.dilation)
        y = depthwise_shift(x, self.weight, geometry)
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)


class ChannelsLastConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` run on its input in channels-last memory (same values and parameters).

    On CPUs a depthwise conv is several times faster in that layout; the compressed layer runs
    its depthwise steps so.

    Examples
    --------
    >>> import torch
    >>> conv = ChannelsLastConv2d(4, 4, 3, groups=4, bias=False)
    >>> x = torch.randn(2, 4, 6, 6)
    >>> bool(torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, groups=4)))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of the input, read channels-last."""
        return super().forward(x.contiguous(memory_format=channels_last_format(x)))


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 (grouped) ``nn.Conv2d`` computed as one batched matmul, as the compressed layer does.

    Same parameters and ``state_dict`` as the ``nn.Conv2d`` it subclasses. ``fold`` leading
    channel blocks of the input ride in the batch: the input ``(N, fold C_in, *S)`` gives
    ``(N, fold C_out, *S)``; ``S`` may be empty (the features of a linear layer). On CPUs
    a 1x1 conv over many small images is much slower than this matmul.

    Examples
    --------
    >>> import torch
    >>> conv = PointwiseConv2d(4, 6, 1, groups=2, bias=False)
    >>> x = torch.randn(2, 4, 5, 5)
    >>> bool(torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, groups=2)))
    True
    """

    fold: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 conv of the input (with its ``fold`` blocks in the batch)."""
        n, spatial = x.shape[0], x.shape[2:]
        g, ci = self.groups, self.in_channels // self.groups
        w = self.weight.reshape(g, self.out_channels // g, ci)
        if math.prod(spatial) == 1:  # features: one (images x ci) @ (ci x co) per group
            h = x.reshape(n * self.fold, g, ci).transpose(0, 1)
            y = torch.bmm(h, w.transpose(1, 2)).transpose(0, 1)
            if self.bias is not None:
                y = y + self.bias.reshape(g, -1)
            return y.reshape(n, -1, *spatial)
        h = x.reshape(n, self.fold, g, ci, math.prod(spatial))
        y = torch.matmul(w, h)
        if self.bias is not None:  # the same bias for every folded block
            y = y + self.bias.reshape(g, -1, 1)
        return y.reshape(n, -1, *spatial)

    def extra_repr(self) -> str:
        """As ``nn.Conv2d`` (and the fold)."""
        return super().extra_repr() + (f", fold={self.fold}" if self.fold != 1 else "")


# -- plans to modules --------------------------------------------------------------------------
