"""Compressed 1-d and 3-d convolutions: :class:`TNConv1d` and :class:`TNConv3d`.

Both follow their torch layer's arguments and conventions (unbatched input, empty batches,
padding modes, ``"same"``/``"valid"``), hold the kernel's factors as parameters and speak their
own dimension: ``weight``, ranks, spectra, save/load and ``to_conv`` see the kernel ``(out, in,
k)`` / ``(out, in, kd, kh, kw)`` (leg names of :data:`tensornet.weights.KERNEL_LEGS`).

- :class:`TNConv1d` runs as a 2-d conv on ``(N, C, 1, L)``: its plans are every 2-d plan of
  :mod:`.functional` on the *lifted* structure, the format's factors plus a constant size-1
  factor for the unit kernel height (never a parameter, never saved, not in ``weight``).
- :class:`TNConv3d` has its own plans (:mod:`.plans_nd`: ``dense`` and ``staged``).

:class:`TNConvNd` is what they (and :class:`~tensornet.nn.conv_transpose.TNConvTranspose2d`)
share: building from a trained torch layer (``from_conv``), back to it (``to_conv``), the
forward around the cached plan, and ``extra_repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.truncation import Truncation
from ..core.validate import check_finite
from ..formats import Format, Structure, get_format
from ..formats.structure import Factor
from ..weights import KERNEL_LEGS
from . import plans_nd  # noqa: F401  (registers the conv3d / transposed plan families)
from .functional import candidates
from .geometry import ConvGeometry
from .geometry_nd import GeometryNd, as_tuple
from .layers import TNLayer, clamp_ranks, new_structure, plain_ints, positive_int

__all__ = ["TNConv1d", "TNConv3d", "TNConvNd", "conv_options"]

# The constant factor that lifts a 1-d kernel to (out, in, 1, k) for the 2-d plans.
_UNIT, _UNIT_LEG = "__unit", "__unit_kh"


def conv_options(fmt: str, legs: tuple[str, ...], options: Mapping[str, Any] | None = None):
    """A format's conv defaults for a kernel with ``legs``, overridden by ``options``.

    A default leg ``order`` written for 2-d kernels (TT, TR: ``in, kh, kw, out``) becomes
    ``in, <spatial legs>, out`` for the kernel's own spatial legs.

    Examples
    --------
    >>> conv_options("tt", ("out", "in", "k"))
    {'order': ('in', 'k', 'out')}
    """
    out = dict(get_format(fmt).kernel_defaults)
    order = out.get("order")
    if order is not None and set(order) != set(legs):
        out["order"] = ("in", *(leg for leg in legs if leg not in ("in", "out")), "out")
    out.update(options or {})
    return out


def decompose(
    weight: torch.Tensor,
    fmt: str,
    trunc: Any,
    ranks: Any,
    fraction: Any,
    legs: tuple[str, ...],
    options: Mapping[str, Any],
    what: str,
) -> Format:
    """A trained kernel in ``fmt`` (NaN/inf refused; ranks lowered to their useful maximum)."""
    name = get_format(fmt).name
    options = conv_options(name, legs, options)
    check_finite(weight, f"{what}: conv.weight")
    if ranks is not None:
        ranks = clamp_ranks(name, weight.shape, ranks, legs, options, what)
    return get_format(name).from_dense(weight, trunc, ranks, fraction, legs=legs, **options)


class TNConvNd(TNLayer):
    """What the n-d and transposed compressed convs share (see the subclasses)."""

    #: the torch layer a subclass stands for, its spatial dimensions and kernel legs
    torch_type: ClassVar[type]
    spatial_dims: ClassVar[int]
    legs: ClassVar[tuple[str, ...]]

    def _conv_setup(self, channels: tuple[int, int], kernel_size: Any, groups: Any, spec: dict):
        """Channels, kernel size and the layer's structure (``spec``: format, ranks, ...)."""
        what = type(self).__name__
        if groups != 1:
            raise ValueError(f"{what}: only groups=1 is supported")
        self.in_channels = positive_int(channels[0], "in_channels", what)
        self.out_channels = positive_int(channels[1], "out_channels", what)
        self.kernel_size = as_tuple(plain_ints(kernel_size), self.spatial_dims, "kernel_size")
        self.groups = 1
        structure = spec.pop("_structure")
        if structure is None:
            fmt = get_format(spec["format"]).name
            shape = self._kernel_shape()
            options = conv_options(fmt, self.legs, spec.pop("options"))
            structure = new_structure(
                fmt, shape, self.legs, spec["ranks"], spec["fraction"], options, what
            )
        return structure

    def _kernel_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    @classmethod
    def plans_for(cls, structure: Structure, geometry: Any, shape: tuple, device_type: str):
        """The plans of ``structure`` in a layer of this class for the input ``shape``."""
        return candidates(cls.kind, structure, geometry, shape, device_type)

    def torch_args(self) -> dict[str, Any]:
        """The arguments that build the torch layer (or this class) with the same geometry."""
        return torch_args(self)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Module,
        format: str = "tt",
        trunc: Truncation | int | None = None,
        ranks: Any = None,
        fraction: float | None = None,
        *,
        plan: str = "auto",
        **options: Any,
    ) -> TNConvNd:
        """Decompose a trained torch conv (its kernel by the format's ``from_dense``).

        ``decomposition_error`` holds the relative Frobenius error of the kernel; ``ranks``
        above their useful maximum are lowered to it; a kernel or bias holding NaN or inf is
        refused (ValueError), as are grouped convs.
        """
        what = f"{cls.__name__}.from_conv"
        if not isinstance(conv, cls.torch_type):
            raise TypeError(
                f"{what}: expected an nn.{cls.torch_type.__name__}, got {type(conv).__name__}"
            )
        if conv.groups != 1:
            raise ValueError(f"{what}: groups={conv.groups} is not supported (only groups=1)")
        if conv.bias is not None:
            check_finite(conv.bias.detach(), f"{what}: conv.bias")
        weight = conv.weight.detach()
        fmt = decompose(weight, format, trunc, ranks, fraction, cls.legs, options, what)
        layer = cls(
            **torch_args(conv),
            plan=plan,
            device=weight.device,
            dtype=weight.dtype,
            _structure=fmt.structure,
        )
        layer._load_factors(fmt, conv.bias)
        return layer

    def to_conv(self) -> nn.Module:
        """The torch layer with the rebuilt kernel (same outputs), on the factors' device."""
        p0 = next(iter(self.factors.values()))
        conv = self.torch_type(**self.torch_args(), device=p0.device, dtype=p0.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def _checked(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``x`` batched (and whether it was not), or ValueError naming the expected shape."""
        n = self.spatial_dims
        if x.ndim not in (n + 1, n + 2) or x.shape[-n - 1] != self.in_channels:
            dims = ", ".join(f"S{i}" for i in range(n))
            raise ValueError(
                f"{type(self).__name__} expects input (N, {self.in_channels}, {dims}) or "
                f"({self.in_channels}, {dims}), got {tuple(x.shape)}"
            )
        unbatched = x.ndim == n + 1
        return (x.unsqueeze(0) if unbatched else x), unbatched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer (the cached plan for this input shape, then the bias).

        Takes batched or unbatched input like the torch layer; an empty batch gives an empty
        output of the right shape.
        """
        x, unbatched = self._checked(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if x.shape[0] > 0:  # the plan adds the bias in its last step where it can
            y = self._run_plan(x, bias)
        else:
            y = self._dense_forward(x)
            if bias is not None:
                y = y + bias.reshape(1, -1, *([1] * self.spatial_dims))
        return y.squeeze(0) if unbatched else y

    def _run_plan(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self._plan_for(x)(x, self.factors, bias)

    def _dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The torch op with the rebuilt kernel (an empty batch: no plan for zero images)."""
        self.geometry.output_size(x.shape[2:])  # the plans' size check
        return self.geometry.conv(x, self.weight.to(x.dtype))

    def extra_repr(self) -> str:
        """Layer arguments, format, ranks, parameters and compression."""
        args = self.torch_args()
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        n = self.spatial_dims
        for key, plain in (
            ("stride", (1,) * n),
            ("padding", (0,) * n),
            ("output_padding", (0,) * n),
            ("dilation", (1,) * n),
        ):
            if key in args and args[key] != plain:
                s += f", {key}={args[key]}"
        if args.get("padding_mode", "zeros") != "zeros":
            s += f", padding_mode={args['padding_mode']!r}"
        if self.bias is None:
            s += ", bias=False"
        return s + ", " + self._compression_repr()


def torch_args(m: nn.Module) -> dict[str, Any]:
    """Keyword arguments of a torch conv (or compressed conv) that rebuild its geometry.

    Examples
    --------
    >>> torch_args(nn.Conv1d(2, 3, 5, padding=2))["padding"]
    (2,)
    """
    out = {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": tuple(m.kernel_size),
        "stride": tuple(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding),
        "dilation": tuple(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }
    if getattr(m, "transposed", False):
        out["output_padding"] = tuple(m.output_padding)
    return out


def layer_spec(format: str, ranks: Any, fraction: Any, structure: Any, options: dict) -> dict:
    """What a conv constructor got for its kernel (``format``, sizes, a given structure)."""
    return {
        "format": format,
        "ranks": ranks,
        "fraction": fraction,
        "_structure": structure,
        "options": options,
    }


class TNConv1d(TNConvNd):
    """A 1-d convolution whose kernel ``(out, in, k)`` is a tensor network of any format.

    Arguments as ``nn.Conv1d`` (``groups`` must be 1) plus ``format``, ``ranks`` or
    ``fraction``, ``plan`` and format options, as :class:`~tensornet.nn.TNConv2d`.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv1d(6, 8, 5, padding=2, padding_mode="circular")
    >>> layer = TNConv1d.from_conv(conv, "tucker2", ranks=(8, 6))  # full rank: exact
    >>> x = torch.randn(2, 6, 20)
    >>> bool(torch.allclose(layer(x), conv(x), atol=1e-5)), layer.weight.shape
    (True, torch.Size([8, 6, 5]))
    """

    kind = "conv"
    torch_type = nn.Conv1d
    spatial_dims = 1
    legs = KERNEL_LEGS[3]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] = 1,
        padding: int | tuple[int] | str = 0,
        dilation: int | tuple[int] = 1,
        groups: int = 1,
        bias: bool = True,
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
        spec = layer_spec(format, ranks, fraction, _structure, options)
        structure = self._conv_setup((in_channels, out_channels), kernel_size, groups, spec)
        stride = as_tuple(plain_ints(stride), 1, "stride")
        dilation = as_tuple(plain_ints(dilation), 1, "dilation")
        padding = plain_ints(padding)
        if not isinstance(padding, str):
            padding = as_tuple(padding, 1, "padding", low=0)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.padding_mode = padding_mode
        self.geometry = self.geometry_of(self)
        self._lifted: tuple[Structure, Structure] | None = None
        self._setup(structure, bias, self.out_channels, plan, device, dtype)
        self.reset_parameters()

    @property
    def _plan_structure(self) -> Structure:
        """The structure lifted to ``(out, in, 1, k)`` (:func:`lift`), cached."""
        if self._lifted is None or self._lifted[0] is not self.structure:
            self._lifted = (self.structure, lift(self.structure))
        return self._lifted[1]

    def _plan_tensors(self, x: torch.Tensor) -> Mapping[str, torch.Tensor]:
        p0 = next(iter(self.factors.values()))
        return {**self.factors, _UNIT: p0.new_ones(1)}

    def _candidates(self, shape: tuple[int, ...], device_type: str) -> list:
        return self.plans_for(self._plan_structure, self.geometry, shape, device_type)

    @staticmethod
    def geometry_of(module: nn.Module) -> ConvGeometry:
        """The lifted 2-d geometry of a 1-d conv (``nn.Conv1d`` or this class)."""
        pad = module.padding if isinstance(module.padding, str) else (0, module.padding[0])
        k, s, d = module.kernel_size[0], module.stride[0], module.dilation[0]
        return ConvGeometry.from_conv_args((1, k), (1, s), pad, (1, d), module.padding_mode)

    @staticmethod
    def plans_for(structure: Structure, geometry: Any, shape: tuple, device_type: str) -> list:
        """The plans of a (lifted) structure for a 1-d input ``(N, C, L)``."""
        if len(structure.modes) == 3:
            structure = lift(structure)
        n, c, length = shape
        return candidates("conv", structure, geometry, (n, c, 1, length), device_type)

    def _run_plan(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self._plan_for(x)(x.unsqueeze(2), self._plan_tensors(x), bias).squeeze(2)

    def _dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        self.geometry.output_size(1, x.shape[2])  # the plans' size check
        w = self.weight.to(x.dtype).unsqueeze(2)
        return torch.nn.functional.conv2d(
            g.pad(x.unsqueeze(2)), w, None, g.stride, 0, g.dilation
        ).squeeze(2)


def lift(structure: Structure) -> Structure:
    """A 1-d kernel's structure as a 2-d one ``(out, in, 1, k)``: plus a constant unit factor.

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> s = get_format("tucker2").structure_for((4, 3, 5), (2, 2), legs=("out", "in", "k"))
    >>> lift(s).shape, lift(s).factors[-1]
    ((4, 3, 1, 5), Factor(name='__unit', legs=('__unit_kh',), shape=(1,)))
    """
    unit = Factor(_UNIT, (_UNIT_LEG,), (1,))
    s = structure
    modes = (s.modes[0], s.modes[1], (_UNIT_LEG,), s.modes[2])
    legs = (*s.legs[:2], _UNIT_LEG, s.legs[2])
    shape = (*s.shape[:2], 1, s.shape[2])
    return Structure(
        s.format, legs, shape, s.ranks, (*s.factors, unit), modes, s.max_ranks, s.options
    )


class TNConv3d(TNConvNd):
    """A 3-d convolution whose kernel ``(out, in, kd, kh, kw)`` is a tensor network.

    Arguments as ``nn.Conv3d`` (``groups`` must be 1) plus ``format``, ``ranks`` or
    ``fraction``, ``plan`` (``"dense"``, ``"staged"`` or an exact name) and format options.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv3d(4, 6, 3, padding=1)
    >>> layer = TNConv3d.from_conv(conv, "tucker2", ranks=(6, 4), plan="staged")
    >>> x = torch.randn(2, 4, 5, 6, 7)
    >>> bool(torch.allclose(layer(x), conv(x), atol=1e-5))
    True
    """

    kind = "conv3d"
    torch_type = nn.Conv3d
    spatial_dims = 3
    legs = KERNEL_LEGS[5]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] | str = 0,
        dilation: int | tuple[int, int, int] = 1,
        groups: int = 1,
        bias: bool = True,
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
        spec = layer_spec(format, ranks, fraction, _structure, options)
        structure = self._conv_setup((in_channels, out_channels), kernel_size, groups, spec)
        stride, padding, dilation = (plain_ints(v) for v in (stride, padding, dilation))
        self.geometry = GeometryNd.from_conv_args(
            self.kernel_size, stride, padding, dilation, padding_mode
        )
        self.stride, self.dilation = self.geometry.stride, self.geometry.dilation
        self.padding = padding if isinstance(padding, str) else as_tuple(padding, 3, "padding", 0)
        self.padding_mode = padding_mode
        self._setup(structure, bias, self.out_channels, plan, device, dtype)
        self.reset_parameters()

    @staticmethod
    def geometry_of(module: nn.Module) -> GeometryNd:
        """The geometry of a 3-d conv (``nn.Conv3d`` or this class)."""
        args = (module.stride, module.padding, module.dilation, module.padding_mode)
        return GeometryNd.from_conv_args(module.kernel_size, *args)
