"""The steps of a forward plan and the plan itself: plain torch code with its cost known.

A :class:`ForwardPlan` is a list of :class:`Step` objects (a permute, a batched matmul, a
(grouped) conv, an unfold, one planned einsum, ...). Each step knows its FLOPs, the elements it
reads and writes and how many independent products it batches before anything runs, which is
what :mod:`.cost` prices. Steps run under autograd, AMP, ``torch.compile`` and
``torch.export`` on any device and never synchronise with the host; their views keep the batch
dimension free, so a plan traced for one batch size serves every batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.einsum import plan_einsum
from ..formats.structure import Factor
from .geometry import ConvGeometry

__all__ = [
    "ConvStep",
    "EinsumStep",
    "ForwardPlan",
    "LayoutStep",
    "LinearStep",
    "MatmulStep",
    "PermuteStep",
    "PointwiseStep",
    "Step",
    "UnfoldStep",
    "WeightExpr",
    "channels_last_format",
    "depthwise_shift",
]


@dataclass
class Step:
    """One operation of a forward plan, with its cost known at build time.

    ``kind`` names what prices it (``"matmul"``, ``"conv"``, ``"depthwise"``, ``"einsum"``,
    ``"grouped"``, ``"unfold"``, ``"copy"``); ``flops`` counts multiply-adds twice;
    ``elements`` counts the elements it reads and writes; ``images`` the independent products
    it batches.
    """

    kind: str
    flops: int
    elements: int
    label: str

    @property
    def images(self) -> int:
        """How many independent products the step runs as one batch (0: not batched)."""
        return 0

    def __call__(self, h: torch.Tensor, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Apply the step to the activation ``h`` (``tensors``: the factors by name)."""
        raise NotImplementedError


@dataclass
class WeightExpr:
    """Factors contracted into one operator tensor (legs ``legs``), reshaped to ``shape``."""

    names: tuple[str, ...]
    legs: tuple[str, ...]
    shape: tuple[int, ...]
    flops: int
    program: object

    @staticmethod
    def build(factors: Sequence[Factor], legs: Sequence[str], shape: Sequence[int]) -> WeightExpr:
        """Plan the contraction of ``factors`` to ``legs`` (no FLOPs for a single factor)."""
        plan, program = plan_einsum([f.legs for f in factors], [f.shape for f in factors], legs)
        flops = plan.flops if len(factors) > 1 else 0
        return WeightExpr(tuple(f.name for f in factors), tuple(legs), tuple(shape), flops, program)

    def __call__(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The operator from the factors ``tensors`` (by name)."""
        return self.program(*(tensors[n] for n in self.names)).reshape(self.shape)


def _any_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with its leading (batch) entry left free (``-1``).

    Plans are built for one input shape, but the views they run with keep the batch free, so a
    plan traced by ``torch.compile``/``torch.export`` stays valid for a symbolic batch size.
    """
    return (-1, *shape[1:]) if shape else shape


@dataclass
class PermuteStep(Step):
    """``h`` viewed as ``shape`` (batch left free), its axes permuted to ``dims``."""

    dims: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.run_shape = _any_batch(self.shape)

    def __call__(self, h, tensors):
        """Apply the step to the activation ``h``."""
        return h.reshape(self.run_shape).permute(self.dims).contiguous()


@dataclass
class MatmulStep(Step):
    """``h[b, P, G, ci, L] -> w[G, co, ci] @ h``: a (grouped, batched) ``1 x 1`` convolution.

    ``channels_last``: the same values, written pixels-major (``(h^T w^T)^T``), so that a
    channels-last conv after it reads them without a copy.
    """

    weight: WeightExpr = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    @property
    def images(self) -> int:
        """Batch, folded and group sizes: the products the matmul broadcasts over."""
        return math.prod(self.view[:3])

    def __call__(self, h, tensors, bias=None):
        """Apply the step to the activation ``h`` (plus ``bias`` per output channel)."""
        w, h = self.weight(tensors), h.reshape(self.run_view)
        if self.channels_last:
            y = torch.matmul(h.transpose(-1, -2), w.transpose(-1, -2)).transpose(-1, -2)
        else:
            y = torch.matmul(w, h)
        # in place: matmul's backward needs its inputs only; no second output-sized allocation
        return y if bias is None else y.add_(bias.reshape(w.shape[0], w.shape[1], 1))


@dataclass
class PointwiseStep(Step):
    """A :class:`MatmulStep` without folded legs as a (grouped) ``1 x 1`` conv of a 4-d activation.

    Same values; used by channels-last plans (:mod:`.layout`), where the activation stays
    ``(b, G ci, H, W)`` in channels-last memory and oneDNN runs the ``1 x 1`` conv as one
    matrix product over all pixels (no per-image products, no layout copies). Priced as the
    matmul it replaces (``images``: batch times groups).
    """

    weight: WeightExpr = None  # type: ignore[assignment]
    batch: int = 0
    groups: int = 1

    @property
    def images(self) -> int:
        """Batch times groups: the products the matmul it replaces broadcasts over."""
        return self.batch * self.groups

    def __call__(self, h, tensors, bias=None):
        """Apply the step to the 4-d activation ``h`` (plus ``bias`` per output channel)."""
        w = self.weight(tensors)
        h = h.contiguous(memory_format=channels_last_format(h))  # a no-op if it is already
        return F.conv2d(h, w.reshape(-1, w.shape[2], 1, 1), bias, groups=self.groups)


@dataclass
class LayoutStep(Step):
    """``h`` made contiguous (channels-first), for a plan that cannot stay channels-last.

    Such a plan runs it first on a channels-last input; ``elements`` also counts the copy back
    to channels-last at the end.
    """

    def __call__(self, h, tensors):
        """Apply the step to the activation ``h``."""
        return h.contiguous()


class LinearStep(Step):
    """Rebuild ``W`` and apply ``F.linear``."""

    def __init__(self, inner: MatmulStep) -> None:
        super().__init__(inner.kind, inner.flops, inner.elements, inner.label)
        self.inner = inner

    def __call__(self, h, tensors, bias=None):
        """Apply the step to the activation ``h`` (plus ``bias``)."""
        w = self.inner.weight(tensors)
        return F.linear(h, w.reshape(w.shape[1], w.shape[2]), bias)


@dataclass
class ConvStep(Step):
    """``F.conv2d`` on ``h`` viewed as ``(b P, G ci, H, W)`` with ``groups = G``."""

    weight: WeightExpr = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()
    geometry: ConvGeometry = None  # type: ignore[assignment]
    groups: int = 1
    shift: bool = False  # depthwise as shifted multiply-adds
    # run in channels-last memory (CPU depthwise convs: oneDNN's fast layout); same values
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    @property
    def images(self) -> int:
        """The images the conv batches (batch times folded legs)."""
        return self.view[0]

    def __call__(self, h, tensors, bias=None):
        """Apply the step to the activation ``h`` (plus ``bias`` per output channel)."""
        g = self.geometry
        x = h.reshape(self.run_view)
        w = self.weight(tensors)
        if self.shift:
            y = depthwise_shift(g.pad(x), w, g)
            return y if bias is None else y + bias.reshape(1, -1, 1, 1)
        if self.channels_last:
            x = x.contiguous(memory_format=channels_last_format(x))  # a no-op if it is already
        if g.symmetric_zero_padding:
            return F.conv2d(
                x, w, bias, g.stride, (g.padding[0], g.padding[2]), g.dilation, self.groups
            )
        return F.conv2d(g.pad(x), w, bias, g.stride, 0, g.dilation, self.groups)


# dtypes oneDNN runs channels-last; others take torch's slow path, which wants NCHW input
# (its backward fails on channels-last float64: "grad_weight must be contiguous")
_CHANNELS_LAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def channels_last_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` where a depthwise conv of ``x`` is fast in it, else NCHW.

    Examples
    --------
    >>> channels_last_format(torch.zeros(1, 2, 3, 3)) == torch.channels_last
    True
    >>> channels_last_format(torch.zeros(1, 2, 3, 3, dtype=torch.float64))
    torch.contiguous_format
    """
    return torch.channels_last if x.dtype in _CHANNELS_LAST_DTYPES else torch.contiguous_format


def depthwise_shift(x: torch.Tensor, w: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """Depthwise conv (one filter per channel) on padded ``x`` as a sum of shifted slices."""
    kh, kw = g.kernel
    (sh, sw), (dh, dw) = g.stride, g.dilation
    rows = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    cols = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = None
    for a in range(kh):
        for b in range(kw):
            tap = x[
                :,
                :,
                a * dh : a * dh + (rows - 1) * sh + 1 : sh,
                b * dw : b * dw + (cols - 1) * sw + 1 : sw,
            ]
            weight = w[:, 0, a, b].reshape(1, -1, 1, 1)
            # in place after the first tap: autograd saves the taps and weights, not the sum
            out = tap * weight if out is None else out.addcmul_(tap, weight)
    return out


@dataclass
class UnfoldStep(Step):
    """Patches ``(b, C kh kw, L)`` of the input (``F.unfold``)."""

    geometry: ConvGeometry = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    def __call__(self, h, tensors):
        """Apply the step to the activation ``h``."""
        g = self.geometry
        x = h.reshape(self.run_view)
        if g.symmetric_zero_padding:
            return F.unfold(x, g.kernel, g.dilation, (g.padding[0], g.padding[2]), g.stride)
        return F.unfold(g.pad(x), g.kernel, g.dilation, 0, g.stride)


@dataclass
class EinsumStep(Step):
    """One planned einsum of the activation and all factors."""

    names: tuple[str, ...] = ()
    program: object = None
    view: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    def __call__(self, h, tensors):
        """Apply the step to the activation ``h``."""
        return self.program(h.reshape(self.run_view), *(tensors[n] for n in self.names))


def _fuses_bias(last: Step, output_shape: tuple[int, ...]) -> bool:
    """Whether ``last`` writes every output channel in order, unfolded (then it adds the bias)."""
    if isinstance(last, LinearStep):
        return True
    if isinstance(last, ConvStep):
        return last.view[0] == output_shape[0]
    if isinstance(last, MatmulStep):
        return last.view[1] == 1 and not last.channels_last
    return isinstance(last, PointwiseStep)


@dataclass
class ForwardPlan:
    """A candidate forward pass: steps, then a reshape to the layer's output shape.

    ``family`` is the registered candidate family that built it (set by
    :func:`~tensornet.nn.functional.conv_candidates`); ``cost`` holds the estimate of
    :func:`~tensornet.nn.cost.choose`; ``peak_elements`` the largest intermediate;
    ``memory_format`` that of the output (channels-last plans: :mod:`.layout`).
    """

    name: str
    steps: list[Step]
    output_shape: tuple[int, ...]
    peak_elements: int = 0
    cost: dict = field(default_factory=dict)
    family: str = ""
    memory_format: torch.memory_format = torch.contiguous_format

    def __post_init__(self) -> None:
        self.run_shape = _any_batch(self.output_shape)
        self.fuses_bias = _fuses_bias(self.steps[-1], self.output_shape) if self.steps else False

    def __call__(
        self,
        x: torch.Tensor,
        tensors: Mapping[str, torch.Tensor],
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the plan on the input ``x`` with the factors ``tensors`` (by name).

        ``bias`` (one value per output channel) is added by the last step where it can (a
        conv's or linear's own bias, an in-place add after a matmul), else at the end.
        """
        h = x
        for step in self.steps[:-1]:
            h = step(h, tensors)
        fused = bias is not None and self.fuses_bias
        h = self.steps[-1](h, tensors, bias) if fused else self.steps[-1](h, tensors)
        # a channels-last step may leave its layout: the output is in the plan's memory format
        y = h.reshape(self.run_shape).contiguous(memory_format=self.memory_format)
        if bias is None or fused:
            return y
        return y + bias.to(y.dtype).reshape(-1, *([1] * (y.ndim - 2)))

    @property
    def flops(self) -> int:
        """FLOPs of all steps (2 per multiply-add)."""
        return sum(s.flops for s in self.steps)

    @property
    def elements(self) -> int:
        """Elements read and written by all steps."""
        return sum(s.elements for s in self.steps)

    def describe(self) -> str:
        """The steps, in one line."""
        return " -> ".join(s.label for s in self.steps)
