"""Conv arithmetic beyond :class:`~tensornet.nn.geometry.ConvGeometry`: n-d and transposed convs.

:class:`GeometryNd` holds stride, padding, dilation and padding mode of an ``n``-d convolution
(``nn.Conv3d`` uses it with ``n = 3``); :class:`TransposeGeometry` those of a 2-d transposed
convolution (``nn.ConvTranspose2d``: stride, padding, output padding, dilation). Both give output
sizes the way torch does and refuse an input that is too small before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .geometry import PADDING_MODES

__all__ = ["GeometryNd", "TransposeGeometry", "as_tuple"]


def as_tuple(value: int | Sequence[int], n: int, field: str, low: int = 1) -> tuple[int, ...]:
    """``value`` as ``n`` ints ``>= low`` (an int is repeated), else ValueError naming ``field``.

    Examples
    --------
    >>> as_tuple(2, 3, "stride"), as_tuple((1, 0), 2, "padding", low=0)
    ((2, 2, 2), (1, 0))
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n or any(
        isinstance(v, bool) or not isinstance(v, int) or v < low for v in values
    ):
        raise ValueError(f"{field} must be an int >= {low} or {n} of them, got {value!r}")
    return values


@dataclass(frozen=True)
class GeometryNd:
    """Stride, explicit padding ``((lo, hi), ...)``, dilation and padding mode of an n-d conv.

    Examples
    --------
    >>> g = GeometryNd.from_conv_args((3, 3, 1), stride=(2, 1, 1), padding=1)
    >>> g.padding, g.output_size((8, 5, 4))
    (((1, 1), (1, 1), (1, 1)), (4, 5, 6))
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    padding_mode: str = "zeros"

    @staticmethod
    def from_conv_args(
        kernel: Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
    ) -> GeometryNd:
        """From ``nn.Conv3d``-style arguments (``padding`` may be ``"same"`` or ``"valid"``)."""
        n = len(kernel)
        kernel = as_tuple(tuple(kernel), n, "kernel_size")
        stride, dilation = as_tuple(stride, n, "stride"), as_tuple(dilation, n, "dilation")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if padding == "valid":
            pads = ((0, 0),) * n
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
            pads = tuple((t // 2, t - t // 2) for t in totals)
        elif isinstance(padding, str):
            raise ValueError(
                f"padding must be an int, {n} ints, 'same' or 'valid', got {padding!r}"
            )
        else:
            pads = tuple((p, p) for p in as_tuple(padding, n, "padding", low=0))
        return GeometryNd(kernel, stride, pads, dilation, padding_mode)

    def output_size(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """Output sizes for an input of spatial ``sizes`` (ValueError when too small)."""
        out = []
        for n, (lo, hi), k, s, d in zip(
            sizes, self.padding, self.kernel, self.stride, self.dilation
        ):
            span = d * (k - 1) + 1
            if n + lo + hi < span:
                raise ValueError(
                    f"input of spatial size {tuple(sizes)} is smaller than the kernel "
                    f"{self.kernel} (dilation {self.dilation}, padding {self.padding})"
                )
            out.append((n + lo + hi - span) // s + 1)
        return tuple(out)

    @property
    def symmetric_zero_padding(self) -> bool:
        """True when the padding is zeros and the same on both sides of every axis."""
        return self.padding_mode == "zeros" and all(lo == hi for lo, hi in self.padding)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Explicit padding of ``x`` (last axes last) in the padding mode."""
        flat = tuple(p for pair in reversed(self.padding) for p in pair)
        if not any(flat):
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, flat, mode=mode)

    def conv(self, x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``F.conv{n}d`` of ``x`` with ``w`` in this geometry (no bias)."""
        op = (F.conv1d, F.conv2d, F.conv3d)[len(self.kernel) - 1]
        if self.symmetric_zero_padding:
            pads = tuple(lo for lo, _ in self.padding)
            return op(x, w, None, self.stride, pads, self.dilation, groups)
        return op(self.pad(x), w, None, self.stride, 0, self.dilation, groups)


@dataclass(frozen=True)
class TransposeGeometry:
    """Stride, padding, output padding and dilation of a 2-d transposed convolution.

    Examples
    --------
    >>> g = TransposeGeometry.from_conv_args((3, 3), stride=2, padding=1, output_padding=1)
    >>> g.output_size((4, 5))
    (8, 10)
    """

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @staticmethod
    def from_conv_args(
        kernel: Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
    ) -> TransposeGeometry:
        """From ``nn.ConvTranspose2d`` arguments (ValueError naming a bad one)."""
        kernel = as_tuple(tuple(kernel), 2, "kernel_size")
        stride, dilation = as_tuple(stride, 2, "stride"), as_tuple(dilation, 2, "dilation")
        padding = as_tuple(padding, 2, "padding", low=0)
        output_padding = as_tuple(output_padding, 2, "output_padding", low=0)
        for op, s, d in zip(output_padding, stride, dilation):
            if op >= s and op >= d:
                raise ValueError(
                    f"output_padding {output_padding} must be smaller than stride {stride} or "
                    f"dilation {dilation}"
                )
        return TransposeGeometry(kernel, stride, padding, output_padding, dilation)

    def output_size(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """Output sizes for input ``sizes``, as torch computes them (ValueError if not positive)."""
        out = tuple(
            (n - 1) * s - 2 * p + d * (k - 1) + op + 1
            for n, s, p, d, k, op in zip(
                sizes, self.stride, self.padding, self.dilation, self.kernel, self.output_padding
            )
        )
        if any(o < 1 for o in out):
            raise ValueError(
                f"input of spatial size {tuple(sizes)} gives the output size {out} "
                f"(padding {self.padding} too large)"
            )
        return out

    def conv(self, x: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``F.conv_transpose2d`` of ``x`` with ``w`` (``(in, out / groups, kh, kw)``)."""
        return F.conv_transpose2d(
            x, w, None, self.stride, self.padding, self.output_padding, groups, self.dilation
        )
