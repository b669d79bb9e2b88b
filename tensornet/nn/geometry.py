"""Conv arithmetic: stride, padding, dilation, padding mode and groups of a 2-d convolution.

:class:`ConvGeometry` is what every forward plan of a compressed conv needs to know about the
layer besides its factors: output sizes, the one-dimensional parts of a separable kernel, and
the explicit padding for modes ``F.conv2d`` does not pad itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ConvGeometry"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, explicit padding, dilation, padding mode and groups of a 2-d convolution.

    ``padding`` is ``(top, bottom, left, right)``; ``padding_mode`` is one of ``"zeros"``,
    ``"reflect"``, ``"replicate"``, ``"circular"`` (as in ``nn.Conv2d``); ``groups`` as in
    ``nn.Conv2d`` (the forward plans of a grouped layer read it; a plan's own conv steps carry
    their own group count).

    Examples
    --------
    >>> g = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1)
    >>> g.padding, g.output_size(8, 7)
    ((1, 1, 1, 1), (4, 4))
    >>> g.axis("w").kernel, g.axis("w").stride
    ((1, 3), (1, 2))
    """

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    padding_mode: str = "zeros"
    groups: int = 1

    @staticmethod
    def from_conv_args(
        kernel: tuple[int, int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
        groups: int = 1,
    ) -> ConvGeometry:
        """From ``nn.Conv2d``-style arguments (``padding`` may be ``"same"`` or ``"valid"``)."""
        stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int, got {groups!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                "padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', "
                f"got {padding_mode!r}"
            )
        if isinstance(padding, str):
            if padding == "valid":
                pads = (0, 0, 0, 0)
            elif padding == "same":
                if stride != (1, 1):
                    raise ValueError("padding='same' is not supported for strided convolutions")
                th, tw = (dilation[i] * (kernel[i] - 1) for i in range(2))
                pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
            else:
                raise ValueError(
                    f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
                )
        else:
            ph, pw = _pair(padding, "padding", low=0)
            pads = (ph, ph, pw, pw)
        return ConvGeometry(tuple(kernel), stride, pads, dilation, padding_mode, groups)

    def output_size(self, rows: int, cols: int) -> tuple[int, int]:
        """Output rows and columns for an input of ``rows x cols``."""
        t, b, le, r = self.padding
        out = []
        for n, p, k, s, d in (
            (rows, t + b, self.kernel[0], self.stride[0], self.dilation[0]),
            (cols, le + r, self.kernel[1], self.stride[1], self.dilation[1]),
        ):
            span = d * (k - 1) + 1
            if n + p < span:
                raise ValueError(
                    f"input of spatial size {rows}x{cols} is smaller than the kernel "
                    f"{self.kernel} (dilation {self.dilation}, padding {self.padding})"
                )
            out.append((n + p - span) // s + 1)
        return out[0], out[1]

    def axis(self, which: str) -> ConvGeometry:
        """The one-dimensional part along ``"h"`` (rows) or ``"w"`` (columns)."""
        if which not in ("h", "w"):
            raise ValueError(f"axis must be 'h' or 'w', got {which!r}")
        t, b, le, r = self.padding
        if which == "h":
            return ConvGeometry(
                (self.kernel[0], 1),
                (self.stride[0], 1),
                (t, b, 0, 0),
                (self.dilation[0], 1),
                self.padding_mode,
            )
        return ConvGeometry(
            (1, self.kernel[1]),
            (1, self.stride[1]),
            (0, 0, le, r),
            (1, self.dilation[1]),
            self.padding_mode,
        )

    @property
    def symmetric_zero_padding(self) -> bool:
        """True when the padding is zeros and the same on both sides."""
        t, b, le, r = self.padding
        return self.padding_mode == "zeros" and t == b and le == r

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Explicit padding (for non-zero modes and asymmetric pads)."""
        t, b, le, r = self.padding
        if t == b == le == r == 0:
            return x
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(x, (le, r, t, b), mode=mode)


def _pair(value: int | Sequence[int], field: str, low: int = 1) -> tuple[int, int]:
    """``value`` as a pair of ints ``>= low`` (an int is used twice), else ValueError."""
    if isinstance(value, (tuple, list)):
        pair = tuple(value)
    else:
        pair = (value, value)
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < low for v in pair
    ):
        raise ValueError(f"{field} must be an int >= {low} or a pair of them, got {pair!r}")
    return pair  # type: ignore[return-value]
