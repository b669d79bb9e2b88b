"""Compressed layers: the factors of any registered format as parameters.

The forward pass is chosen per input shape by the cost model.

:class:`TNConv2d` and :class:`TNLinear` follow ``nn.Conv2d``/``nn.Linear`` conventions
(``reset_parameters``, ``extra_repr``, ``device``/``dtype`` arguments, ``state_dict`` holding
``factors.<name>`` and ``bias``). Build them from scratch (format and ranks, or a parameter
fraction) or from a trained layer with ``from_conv`` / ``from_linear``. The forward pass is
picked from the candidates of :mod:`tensornet.nn.functional` for the actual input shape, dtype
and device, and the choice is cached (the last :data:`PLAN_CACHE_SIZE` shapes);
:meth:`plan_info` shows every candidate and its cost.

Like ``nn.Conv2d`` / ``nn.Linear``, the layers take unbatched input (``(C, H, W)``; any leading
dimensions for a linear layer) and empty batches. Requested ranks above their useful maximum
are lowered to it by one rule (:func:`clamp_ranks`), whichever constructor is used; trained
layers holding NaN or inf are refused.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.truncation import Truncation
from ..core.validate import check_finite, is_int
from ..formats import Format, Structure, fraction_ranks, get_format
from ..weights import CONV2D_LEGS as KERNEL_LEGS
from ..weights import MATRIX_LEGS
from .functional import POLICIES, plan_names
from .geometry import ConvGeometry
from .grouped_plans import grouped_kind
from .planning import PLAN_CACHE_SIZE, PlanInfo, PlannedLayer, flat_names

__all__ = ["PLAN_CACHE_SIZE", "PlanInfo", "TNConv2d", "TNLinear", "kernel_options"]


def kernel_options(fmt: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A format's options for conv kernels: its ``kernel_defaults``, overridden by ``options``.

    Examples
    --------
    >>> kernel_options("tt")
    {'order': ('in', 'kh', 'kw', 'out')}
    """
    out = dict(get_format(fmt).kernel_defaults)
    out.update(options or {})
    return out


def conv_plan_names(structure: Structure) -> tuple[str, ...]:
    """Every plan family a conv layer of ``structure`` can run, then their exact names.

    Names depend on the structure only (not on the input shape), so a ``plan=`` is checked at
    construction. A named plan may still be impossible for one input shape (its intermediates
    too large), which the forward then reports.
    """
    return flat_names(plan_names("conv", structure))


def _plan_choices(plan: Any, names: Callable[[], Mapping[str, Sequence[str]]], what: str) -> str:
    """``plan`` checked against the policies and the layer's families and names (ValueError).

    ``names()`` gives family -> exact names; it is only called when ``plan`` is not a policy.
    """
    if plan in POLICIES:
        return plan
    by_family = names()
    allowed = ", ".join(repr(n) for n in (*POLICIES, *by_family))
    if not isinstance(plan, str) or not plan:
        raise ValueError(f"{what}: plan must be one of {allowed} or a candidate name, got {plan!r}")
    valid = flat_names(by_family)
    if plan not in valid:
        exact = valid[len(by_family) :]
        more = f" or one of {len(exact)} exact names such as {exact[0]!r}" if exact else ""
        raise ValueError(f"{what}: unknown plan {plan!r}; valid plans are {allowed}{more}")
    return plan


def positive_int(value: Any, field: str, what: str) -> int:
    """A positive int of any library (numpy, 0-d torch) as a Python int, else ValueError."""
    if not is_int(value) or int(value) < 1:
        raise ValueError(f"{what}: {field} must be a positive int, got {value!r}")
    return int(value)


def plain_ints(value: Any) -> Any:
    """Integers of any library (alone or in a tuple/list) as Python ints; other values as is.

    Examples
    --------
    >>> import numpy as np
    >>> plain_ints((np.int64(2), 3)), plain_ints("same")
    ((2, 3), 'same')
    """
    if is_int(value):
        return int(value)
    if isinstance(value, (tuple, list)):
        return tuple(int(v) if is_int(v) else v for v in value)
    return value


def _groups(groups: Any, in_channels: int, out_channels: int, what: str) -> int:
    """``groups`` as a Python int dividing both channel counts, else ValueError."""
    groups = positive_int(groups, "groups", what)
    for field, n in (("in_channels", in_channels), ("out_channels", out_channels)):
        if n % groups:
            raise ValueError(f"{what}: {field}={n} is not divisible by groups={groups}")
    return groups


def _check_bias(bias: torch.Tensor | None, what: str) -> None:
    if bias is not None:
        check_finite(bias.detach(), f"{what}: bias")


def _bias(bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """The bias in the input's dtype (the plan adds it in its last step where it can)."""
    return None if bias is None else bias.to(x.dtype)


class TNLayer(PlannedLayer, nn.Module):
    """What the compressed layers share: factors, initialisation, planning, conversions."""

    structure: Structure

    def _setup(
        self,
        structure: Structure,
        bias: bool,
        out_features: int,
        plan: str,
        device: Any,
        dtype: Any,
    ) -> None:
        self.structure = structure
        self.plan = plan
        opts = {"device": device, "dtype": dtype}
        self.factors = nn.ParameterDict(
            {f.name: nn.Parameter(torch.empty(f.shape, **opts)) for f in structure.factors}
        )
        self.bias = nn.Parameter(torch.empty(out_features, **opts)) if bias else None
        self._plans: OrderedDict[tuple, Any] = OrderedDict()
        self.decomposition_error: float | None = None

    @property
    def plan(self) -> str:
        """The plan policy: ``"auto"``, ``"measure"``, a candidate family or exact name.

        Checked whenever it is set (ValueError listing the valid names); cached choices made
        under another policy are not reused (the policy is part of the cache key).
        """
        return self._plan

    @plan.setter
    def plan(self, value: str) -> None:
        names = functools.partial(plan_names, self.kind, self._plan_structure)  # for names only
        self._plan = _plan_choices(value, names, type(self).__name__)

    @property
    def _plan_structure(self) -> Structure:
        """The structure the forward plans see (a lifted layer's differs: see ``TNConv1d``)."""
        return self.structure

    # -- parameters --------------------------------------------------------------------------
    @property
    def fan_in(self) -> int:
        return math.prod(self.structure.shape[1:])

    def reset_parameters(self) -> None:
        """Random factors whose kernel has ``nn.Conv2d``'s default variance and bias init.

        The variance is ``1 / (3 fan_in)`` per kernel element.

        Each kernel element is a sum of ``structure.terms`` products of one entry from each of
        the ``n`` factors; with independent zero-mean entries of standard deviation ``sigma``
        its variance is ``terms * sigma^(2 n)``, which fixes ``sigma``. The elements are
        uncorrelated, so a layer's output variance matches the dense layer's too.
        """
        target = 1.0 / (3.0 * self.fan_in)
        n = len(self.structure.factors)
        sigma = (target / self.structure.terms) ** (1.0 / (2 * n))
        with torch.no_grad():
            for p in self.factors.values():
                p.normal_(0.0, sigma)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.fan_in)
                self.bias.uniform_(-bound, bound)

    def _load_factors(self, fmt: Format, bias: torch.Tensor | None) -> None:
        with torch.no_grad():
            for name, t in fmt.factor_tensors().items():
                p = self.factors[name]
                p.copy_(t.to(device=p.device, dtype=p.dtype))
            if self.bias is not None and bias is not None:
                self.bias.copy_(bias.detach())
        self.decomposition_error = fmt.error

    def _set_format(self, fmt: Format) -> None:
        """Hold ``fmt``'s factors (new structure and parameters; plans forgotten).

        The parameters keep their device, dtype and ``requires_grad``; ``decomposition_error``
        becomes ``None`` (the kernel no longer is the one it described).
        """
        p0 = next(iter(self.factors.values()))
        self.structure = fmt.structure
        self.factors = nn.ParameterDict(
            {
                name: nn.Parameter(
                    t.detach().to(device=p0.device, dtype=p0.dtype).clone(),
                    requires_grad=p0.requires_grad,
                )
                for name, t in fmt.factor_tensors().items()
            }
        )
        self._plans.clear()
        self.decomposition_error = None

    @property
    def weight(self) -> torch.Tensor:
        """The dense kernel the factors make (differentiable; rebuilt on every access)."""
        return self.structure.contract(self.factors)

    def to_format(self) -> Format:
        """The factors as a :class:`~tensornet.formats.Format` object (detached)."""
        tensors = {k: v.detach() for k, v in self.factors.items()}
        return get_format(self.structure.format).from_factors(self.structure, tensors)

    @property
    def format(self) -> str:
        return self.structure.format

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.structure.ranks

    @property
    def num_params(self) -> int:
        """Parameters of the factors (plus the bias)."""
        return self.structure.num_params + (0 if self.bias is None else self.bias.numel())

    @property
    def dense_params(self) -> int:
        return self.structure.dense_size + (0 if self.bias is None else self.bias.numel())

    def _compression_repr(self) -> str:
        ratio = self.structure.dense_size / self.structure.num_params
        return (
            f"format={self.structure.format}, ranks={self.structure.ranks}, "
            f"params={self.structure.num_params:,} (dense {self.structure.dense_size:,}, "
            f"{ratio:.3g}x)"
        )


def new_structure(
    fmt: str,
    shape: tuple[int, ...],
    legs: tuple[str, ...],
    ranks: Any,
    fraction: Any,
    options: Mapping[str, Any],
    what: str,
) -> Structure:
    """The structure of a layer built from scratch (``ranks`` or ``fraction``)."""
    fmt = get_format(fmt).name
    if ranks is not None and fraction is not None:
        raise ValueError(f"{what}: give ranks or fraction, not both")
    if ranks is None and fraction is None:
        raise ValueError(f"{what}: a compressed layer needs ranks= or fraction=")
    if fraction is not None:
        ranks = fraction_ranks(fmt, shape, fraction, legs=legs, what=what, **options)
    else:
        ranks = clamp_ranks(fmt, shape, ranks, legs, options, what)
    return get_format(fmt).structure_for(shape, ranks, legs=legs, **options)


def clamp_ranks(
    fmt: str,
    shape: Sequence[int],
    ranks: Any,
    legs: Sequence[str],
    options: Mapping[str, Any],
    what: str,
) -> tuple[int, ...]:
    """Requested ranks lowered to their useful maximum (the format's ``clamp_ranks``).

    Every layer constructor and ``from_conv``/``from_linear`` applies this one rule, so a
    layer never holds more than its format can use (e.g. ``TNConv2d(8, 16, 3,
    format="tucker", ranks=64)`` has ranks ``(16, 8, 3, 3)``). Options that only
    ``from_dense`` takes (CP's ``init``, ...) are ignored here.

    Examples
    --------
    >>> clamp_ranks("tucker2", (16, 8, 3, 3), 64, ("out", "in", "kh", "kw"), {}, "demo")
    (16, 8)
    """
    cls = get_format(fmt)
    accepted = cls.structure_options()
    opts = {k: v for k, v in options.items() if k in accepted}
    return cls.clamp_ranks(tuple(shape), ranks, legs=legs, what=what, **opts)


class TNConv2d(TNLayer):
    """A 2-d convolution whose kernel is a tensor network of any registered format.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As for ``nn.Conv2d`` (``padding`` may be ``"same"`` or ``"valid"``). With ``groups``
        above 1 the kernel is torch's ``(out_channels, in_channels / groups, kh, kw)``: its
        ``in`` leg has ``in_channels / groups`` entries (a depthwise conv: 1), and the forward
        candidates are those of :mod:`tensornet.nn.grouped_plans` (a channel-tensorized format
        with ``out_dims=(groups, out_channels / groups, ...)`` holds the group as a mode).
    format : str
        A registered format: ``"tt"``, ``"ttmatrix"``, ``"ht"``, ``"tucker"``, ``"tucker2"``,
        ``"cp"``, ``"tr"``, ``"svd"``, ``"grouped"``.
    ranks : int or sequence of int, optional
        The format's ranks; a rank above its useful maximum is lowered to it
        (:func:`clamp_ranks`: e.g. Tucker's ``min(n_i, prod of the others)``). Or
        ``fraction``: the largest uniform ranks keeping at most this fraction of the dense
        kernel's parameters (a number of any library: ``np.float32``, a 0-d tensor).
    plan : str
        ``"auto"`` (the cost model's choice per input shape), ``"measure"`` (time the likely
        candidates once per input shape and keep the fastest), or a candidate family
        (``"dense"``, ``"staged"``, ``"separable"``, ``"patches"``) or exact name; checked
        here (ValueError listing the valid names). The choice per input shape is cached for
        the last :data:`PLAN_CACHE_SIZE` shapes (least recently used forgotten first).
    **options
        Format options (e.g. ``order`` for TT, ``groups`` for grouped; ``out_dims``/``in_dims``
        for a channel-tensorized kernel in tt, tr, tucker, cp, ht or ttmatrix: see
        :meth:`from_conv`).

    Notes
    -----
    Like ``nn.Conv2d``, a channels-last input gives a channels-last output: the plans then run
    their ``1 x 1`` steps as oneDNN ``1 x 1`` convs and keep every intermediate channels-last
    (:mod:`tensornet.nn.layout`). With ``model.to(memory_format=torch.channels_last)`` and
    :func:`~tensornet.nn.fold_batchnorm`, this is the fast way to run a compressed CNN on a CPU.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    >>> layer = TNConv2d.from_conv(conv, "tucker2", ranks=(32, 16))  # full rank: exact
    >>> x = torch.randn(2, 16, 8, 8)
    >>> bool(torch.allclose(layer(x), conv(x), atol=1e-5))
    True
    >>> small = TNConv2d(16, 32, 3, padding=1, format="cp", ranks=8)
    >>> small.num_params, small(x).shape
    (464, torch.Size([2, 32, 8, 8]))
    """

    kind = "conv"
    channels_last_plans = True  # a channels-last input keeps its layout (:mod:`.layout`)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
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
        what = "TNConv2d"
        in_channels = positive_int(in_channels, "in_channels", what)
        out_channels = positive_int(out_channels, "out_channels", what)
        groups = _groups(groups, in_channels, out_channels, what)
        kernel_size, stride, padding, dilation = (
            plain_ints(v) for v in (kernel_size, stride, padding, dilation)
        )
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.geometry = ConvGeometry.from_conv_args(
            kernel, stride, padding, dilation, padding_mode, groups
        )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel
        self.stride, self.dilation = self.geometry.stride, self.geometry.dilation
        self.padding, self.padding_mode, self.groups = padding, padding_mode, groups
        self.kind = grouped_kind(groups)
        if _structure is None:
            shape = (out_channels, in_channels // groups, *kernel)
            options = kernel_options(format, options)
            _structure = new_structure(format, shape, KERNEL_LEGS, ranks, fraction, options, what)
        self._setup(_structure, bias, out_channels, plan, device, dtype)
        self.reset_parameters()

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        format: str = "tt",
        trunc: Truncation | int | None = None,
        ranks: Any = None,
        fraction: float | None = None,
        *,
        plan: str = "auto",
        **options: Any,
    ) -> TNConv2d:
        """Decompose a trained ``nn.Conv2d`` (its kernel by the format's ``from_dense``).

        A grouped or depthwise conv's kernel is torch's ``(out, in / groups, kh, kw)``, decomposed
        as it is (the format's ``in`` leg has ``in / groups`` entries).
        ``decomposition_error`` holds the relative Frobenius error of the kernel. ``ranks``
        above their useful maximum are lowered to it (:func:`clamp_ranks`); a kernel or bias
        holding NaN or inf is refused (ValueError).

        Channel-tensorized (tt, tr, tucker, cp, ht, ttmatrix): ``out_dims`` and ``in_dims``
        split the out and in channels into modes (products ``out_channels``, ``in_channels``),
        ``kh`` and ``kw`` stay legs of their own, and the format decomposes the tensor of modes
        ``(out_0, ..., in_0, ..., kh, kw)``. TT and TR order their train by the kernel default
        ``in, kh, kw, out`` with each channel leg replaced by its modes (``order=`` changes it);
        :func:`~tensornet.formats.tensorize.balanced_dims` suggests the dims.

        Examples
        --------
        >>> import torch
        >>> conv = torch.nn.Conv2d(9, 16, 3, padding=1)
        >>> dims = {"out_dims": (4, 4), "in_dims": (3, 3)}
        >>> layer = TNConv2d.from_conv(conv, "tucker", fraction=0.5, **dims)
        >>> layer.structure.modes
        (('out_0', 'out_1'), ('in_0', 'in_1'), ('kh',), ('kw',))
        >>> layer.num_params <= 0.5 * 16 * 9 * 3 * 3 + 16
        True
        """
        what = "TNConv2d.from_conv"
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{what}: expected an nn.Conv2d, got {type(conv).__name__}")
        if getattr(conv, "transposed", False):
            raise ValueError(f"{what}: transposed convolutions are not supported")
        fmt_name = get_format(format).name
        options = kernel_options(fmt_name, options)
        weight = conv.weight.detach()
        check_finite(weight, f"{what}: conv.weight")
        _check_bias(conv.bias, f"{what}: conv")
        if ranks is not None:
            ranks = clamp_ranks(fmt_name, weight.shape, ranks, KERNEL_LEGS, options, what)
        fmt = get_format(fmt_name).from_dense(
            weight, trunc, ranks, fraction, legs=KERNEL_LEGS, **options
        )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            plan=plan,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            _structure=fmt.structure,
        )
        layer._load_factors(fmt, conv.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer (the cached plan for this input shape, then the bias).

        Takes ``(N, C, H, W)`` or unbatched ``(C, H, W)`` input, like ``nn.Conv2d``; an empty
        batch (``N = 0``) gives an empty output of the right shape.
        """
        unbatched = x.ndim == 3
        if x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"TNConv2d expects input (N, {self.in_channels}, H, W) or "
                f"({self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if unbatched:
            x = x.unsqueeze(0)
        if x.shape[0] == 0:
            y = self._empty_forward(x)
        else:
            y = self._plan_for(x)(x, self.factors, _bias(self.bias, x))
        return y.squeeze(0) if unbatched else y

    def _empty_forward(self, x: torch.Tensor) -> torch.Tensor:
        """An empty batch: the dense conv with the rebuilt kernel (no plan for zero images)."""
        g = self.geometry
        self.geometry.output_size(x.shape[2], x.shape[3])  # same size check as the plans
        weight = self.weight.to(x.dtype)
        return F.conv2d(g.pad(x), weight, None, g.stride, 0, g.dilation, self.groups)

    def to_conv(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the rebuilt kernel (same outputs, same ``groups``)."""
        p0 = next(iter(self.factors.values()))
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
            self.padding_mode,
            device=p0.device,
            dtype=p0.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        """Layer arguments, format, ranks, parameters and compression."""
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding not in (0, (0, 0)):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        if self.bias is None:
            s += ", bias=False"
        return s + ", " + self._compression_repr()


class TNLinear(TNLayer):
    """A linear layer whose weight ``(out, in)`` is a tensor network of any registered format.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(64, 36)
    >>> layer = TNLinear.from_linear(lin, "ttmatrix", ranks=4, out_dims=(6, 6), in_dims=(8, 8))
    >>> layer.ranks, layer(torch.randn(5, 64)).shape
    ((4,), torch.Size([5, 36]))
    """

    kind = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        format: str = "svd",
        ranks: Any = None,
        fraction: float | None = None,
        plan: str = "auto",
        device: Any = None,
        dtype: Any = None,
        _structure: Structure | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        what = "TNLinear"
        in_features = positive_int(in_features, "in_features", what)
        out_features = positive_int(out_features, "out_features", what)
        self.in_features, self.out_features = in_features, out_features
        if _structure is None:
            shape = (out_features, in_features)
            _structure = new_structure(format, shape, MATRIX_LEGS, ranks, fraction, options, what)
        self._setup(_structure, bias, out_features, plan, device, dtype)
        self.reset_parameters()

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        format: str = "svd",
        trunc: Truncation | int | None = None,
        ranks: Any = None,
        fraction: float | None = None,
        *,
        plan: str = "auto",
        **options: Any,
    ) -> TNLinear:
        """Decompose a trained ``nn.Linear`` (its weight by the format's ``from_dense``).

        ``ranks`` above their useful maximum are lowered to it (:func:`clamp_ranks`); a weight
        or bias holding NaN or inf is refused (ValueError).

        Tensorized (tt, tr, tucker, cp, ht, ttmatrix): ``out_dims`` and ``in_dims`` split the
        weight ``(out, in)`` into modes ``(out_0, ..., in_0, ...)`` (products ``out_features``
        and ``in_features``), which the format decomposes; TT and TR order their train
        ``out_0, in_0, out_1, in_1, ...`` unless ``order=`` says otherwise. ``weight`` and
        :meth:`to_linear` still give the ``(out, in)`` matrix.

        Examples
        --------
        >>> import torch
        >>> lin = torch.nn.Linear(9, 16)
        >>> layer = TNLinear.from_linear(lin, "tt", out_dims=(4, 4), in_dims=(3, 3))  # full rank
        >>> layer.ranks, layer.structure.option("order")
        ((4, 12, 3), ('out_0', 'in_0', 'out_1', 'in_1'))
        >>> x = torch.randn(5, 9)
        >>> bool(torch.allclose(layer(x), lin(x), atol=1e-5))
        True
        """
        what = "TNLinear.from_linear"
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{what}: expected an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        check_finite(weight, f"{what}: linear.weight")
        _check_bias(linear.bias, f"{what}: linear")
        if ranks is not None:
            ranks = clamp_ranks(format, weight.shape, ranks, MATRIX_LEGS, options, what)
        fmt = get_format(format).from_dense(
            weight, trunc, ranks, fraction, legs=MATRIX_LEGS, **options
        )
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            plan=plan,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
            _structure=fmt.structure,
        )
        layer._load_factors(fmt, linear.bias)
        return layer

    def _plan_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (math.prod(x.shape[:-1]), x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer (the cached plan for this input shape, then the bias).

        Takes any leading dimensions, empty ones included, like ``nn.Linear``.
        """
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"TNLinear expects input (..., {self.in_features}), got {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        y = self._plan_for(flat)(flat, self.factors, _bias(self.bias, flat))
        return y.reshape(*lead, self.out_features)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the rebuilt weight (same outputs)."""
        p0 = next(iter(self.factors.values()))
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=p0.device,
            dtype=p0.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self) -> str:
        """Layer arguments, format, ranks, parameters and compression."""
        s = f"in_features={self.in_features}, out_features={self.out_features}"
        if self.bias is None:
            s += ", bias=False"
        return s + ", " + self._compression_repr()
