"""A compressed 2-d transposed convolution: :class:`TNConvTranspose2d`.

The kernel keeps torch's layout ``(in, out, kh, kw)`` (legs ``in, out, kh, kw``), so ``weight``,
spectra, save/load and ``to_conv`` see what ``nn.ConvTranspose2d`` holds. Its forward plans
(:mod:`.plans_nd`) are the adjoint of a conv's: ``dense`` (rebuild the kernel, then
``F.conv_transpose2d``) and ``staged`` (in-channel factors as matmuls, the spatial core through
``conv_transpose2d``, out-channel factors after).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..formats import Structure
from .convnd import TNConvNd, layer_spec, plain_ints
from .geometry_nd import TransposeGeometry

__all__ = ["TRANSPOSED_LEGS", "TNConvTranspose2d"]

#: The legs of a transposed 2-d conv's kernel, in torch's layout.
TRANSPOSED_LEGS = ("in", "out", "kh", "kw")


class TNConvTranspose2d(TNConvNd):
    """A 2-d transposed convolution whose kernel ``(in, out, kh, kw)`` is a tensor network.

    Arguments as ``nn.ConvTranspose2d`` (``groups`` must be 1, ``padding_mode`` ``"zeros"``)
    plus ``format``, ``ranks`` or ``fraction``, ``plan`` (``"dense"``, ``"staged"`` or an exact
    name) and format options. The forward takes no ``output_size``: give ``output_padding``.

    Examples
    --------
    >>> import torch
    >>> up = torch.nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
    >>> layer = TNConvTranspose2d.from_conv(up, "tucker2", ranks=(8, 4), plan="staged")
    >>> x = torch.randn(2, 8, 5, 5)
    >>> layer(x).shape, bool(torch.allclose(layer(x), up(x), atol=1e-5))
    (torch.Size([2, 4, 10, 10]), True)
    """

    kind = "conv_transpose2d"
    torch_type = nn.ConvTranspose2d
    spatial_dims = 2
    legs = TRANSPOSED_LEGS
    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        *,
        format: str = "tt",
        ranks: Any = None,
        fraction: float | None = None,
        plan: str = "auto",
        device: Any = None,
        dtype: Any = None,
        _structure: Structure | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(
                f"TNConvTranspose2d: padding_mode must be 'zeros' (as in torch), got "
                f"{padding_mode!r}"
            )
        spec = layer_spec(format, ranks, fraction, _structure, options)
        structure = self._conv_setup(
            (in_channels, out_channels), kernel_size, groups, spec
        )
        stride, padding, output_padding, dilation = (
            plain_ints(v) for v in (stride, padding, output_padding, dilation)
        )
        if isinstance(padding, str):
            raise ValueError(f"TNConvTranspose2d: padding must be ints, got {padding!r}")
        self.geometry = TransposeGeometry.from_conv_args(
            self.kernel_size, stride, padding, output_padding, dilation
        )
        g = self.geometry
        self.stride, self.padding, self.dilation = g.stride, g.padding, g.dilation
        self.output_padding, self.padding_mode = g.output_padding, padding_mode
        self._setup(structure, bias, self.out_channels, plan, device, dtype)
        self.reset_parameters()

    @staticmethod
    def geometry_of(module: nn.Module) -> TransposeGeometry:
        """The geometry of a transposed 2-d conv (``nn.ConvTranspose2d`` or this class)."""
        args = (module.stride, module.padding, module.output_padding, module.dilation)
        return TransposeGeometry.from_conv_args(module.kernel_size, *args)

    def _kernel_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels, *self.kernel_size)
