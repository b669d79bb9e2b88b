"""Forward passes of a decomposed convolution or linear map, built from the format's structure.

A compressed layer holds the factors of a :class:`~tensornet.formats.Structure`. There are many
ways to apply them to an input, and which is fastest depends on the input's shape and the device.
This module builds the candidates, each a :class:`ForwardPlan` made of a few steps:

- ``dense``: rebuild the kernel from the factors, then one ``F.conv2d`` (``F.linear``);
- ``staged`` (and its variants): a sequence of small operations. The factors are split into
  an *in* part (applied to the input channels first, a batched matmul: a ``1 x 1`` conv), a
  *spatial* part holding ``kh``/``kw`` (a small conv, or two one-dimensional convs when the part
  separates), and an *out* part (a final ``1 x 1`` conv). Tucker-2 becomes 1x1 / kxk / 1x1, CP
  becomes 1x1 / depthwise kx1 / depthwise 1xk / 1x1, a TT ordered (in, kh, kw, out) a chain, the
  ALDS grouped format a grouped conv and a 1x1 conv, and so on, for any registered format. A
  factor leg shared by a step's input and a later step (a CP rank, an ALDS group) makes that step
  grouped; legs a step does not touch are folded into the batch;
- ``patches``: unfold the input into patches and contract patches and factors as one planned
  einsum (for a linear layer: the input and the factors, ``direct``).

Every step knows its FLOPs and the elements it moves before anything runs (:mod:`.cost` prices
them). Plans are plain torch code: they run under autograd, AMP and ``torch.compile``, on any
device, and never synchronise with the host.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.einsum import plan_einsum
from ..formats.structure import Factor, Structure

__all__ = [
    "ConvGeometry",
    "ForwardPlan",
    "Step",
    "conv_candidates",
    "linear_candidates",
]

# Reserved leg names of the activation frame (batch, rows, columns, patch positions).
_B, _H, _W, _L = "__batch", "__rows", "__cols", "__patches"


@dataclass(frozen=True)
class ConvGeometry:
    """Stride, explicit padding, dilation and padding mode of a 2-d convolution.

    ``padding`` is ``(top, bottom, left, right)``; ``padding_mode`` is one of ``"zeros"``,
    ``"reflect"``, ``"replicate"``, ``"circular"`` (as in ``nn.Conv2d``).
    """

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    padding_mode: str = "zeros"

    @staticmethod
    def from_conv_args(
        kernel: tuple[int, int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
    ) -> ConvGeometry:
        """From ``nn.Conv2d``-style arguments (``padding`` may be ``"same"`` or ``"valid"``)."""
        stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
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
        return ConvGeometry(tuple(kernel), stride, pads, dilation, padding_mode)

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
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < low for v in value
    ):
        raise ValueError(f"{field} must be an int >= {low} or a pair of them, got {value!r}")
    return value  # type: ignore[return-value]


# -- steps -----------------------------------------------------------------------------------
@dataclass
class Step:
    """One operation of a forward plan, with its cost known at build time.

    ``kind`` names what prices it (``"matmul"``, ``"conv"``, ``"depthwise"``, ``"einsum"``,
    ``"unfold"``, ``"copy"``, ``"weight"``); ``flops`` counts multiply-adds twice; ``elements``
    counts the elements it reads and writes; ``images`` the independent products it batches.
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
        """Run the steps on ``tensors`` (in the order the plan was built for)."""
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
        plan, program = plan_einsum([f.legs for f in factors], [f.shape for f in factors], legs)
        flops = plan.flops if len(factors) > 1 else 0
        return WeightExpr(tuple(f.name for f in factors), tuple(legs), tuple(shape), flops, program)

    def __call__(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.program(*(tensors[n] for n in self.names)).reshape(self.shape)


def _any_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with its leading (batch) entry left free (``-1``).

    Plans are built for one input shape, but the views they run with keep the batch free, so a
    plan traced by ``torch.compile``/``torch.export`` stays valid for a symbolic batch size.
    """
    return (-1, *shape[1:]) if shape else shape


@dataclass
class PermuteStep(Step):
    dims: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.run_shape = _any_batch(self.shape)

    def __call__(self, h, tensors):
        return h.reshape(self.run_shape).permute(self.dims).contiguous()


@dataclass
class MatmulStep(Step):
    """``h[b, P, G, ci, L] -> w[G, co, ci] @ h``: a (grouped, batched) ``1 x 1`` convolution."""

    weight: WeightExpr = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    @property
    def images(self) -> int:
        return math.prod(self.view[:3])

    def __call__(self, h, tensors):
        return torch.matmul(self.weight(tensors), h.reshape(self.run_view))


@dataclass
class ConvStep(Step):
    """``F.conv2d`` on ``h`` viewed as ``(b P, G ci, H, W)`` with ``groups = G``."""

    weight: WeightExpr = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()
    geometry: ConvGeometry = None  # type: ignore[assignment]
    groups: int = 1
    shift: bool = False  # depthwise as shifted multiply-adds (fast on CPU for small kernels)

    def __post_init__(self) -> None:
        self.run_view = _any_batch(self.view)

    @property
    def images(self) -> int:
        return self.view[0]

    def __call__(self, h, tensors):
        g = self.geometry
        x = h.reshape(self.run_view)
        w = self.weight(tensors)
        if self.shift:
            return depthwise_shift(g.pad(x), w, g)
        if g.symmetric_zero_padding:
            return F.conv2d(
                x, w, None, g.stride, (g.padding[0], g.padding[2]), g.dilation, self.groups
            )
        return F.conv2d(g.pad(x), w, None, g.stride, 0, g.dilation, self.groups)


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
        return self.program(h.reshape(self.run_view), *(tensors[n] for n in self.names))


# -- plans -----------------------------------------------------------------------------------
@dataclass
class ForwardPlan:
    """A candidate forward pass: steps, then a reshape to the layer's output shape."""

    name: str
    steps: list[Step]
    output_shape: tuple[int, ...]
    notes: str = ""
    weight_flops: int = 0
    peak_elements: int = 0
    cost: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_shape = _any_batch(self.output_shape)

    def __call__(self, x: torch.Tensor, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Run the steps on ``tensors`` (in the order the plan was built for)."""
        h = x
        for step in self.steps:
            h = step(h, tensors)
        return h.reshape(self.run_shape)

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


class PlanFrame:
    """Build-time bookkeeping of the activation: channel legs (with sizes) and spatial size."""

    def __init__(self, batch: int, legs: Sequence[str], dims: Mapping[str, int], hw: tuple):
        self.batch = batch
        self.legs = list(legs)
        self.dims = dict(dims)
        self.hw = hw

    def size(self, legs: Sequence[str]) -> int:
        return math.prod(self.dims[leg] for leg in legs)

    @property
    def elements(self) -> int:
        return self.batch * self.size(self.legs) * self.hw[0] * self.hw[1]

    def shape(self) -> tuple[int, ...]:
        return (self.batch, *(self.dims[leg] for leg in self.legs), self.hw[0] * self.hw[1])


def _ordered(legs: Sequence[str], first: Sequence[str]) -> list[str]:
    """``legs`` with ``first`` (those present) in front, in ``first``'s order."""
    head = [leg for leg in first if leg in legs]
    return head + [leg for leg in legs if leg not in head]


def stage_step(
    frame: PlanFrame,
    factors: Sequence[Factor],
    later: set[str],
    out_modes: Sequence[str],
    spatial: Sequence[str],
    geometry: ConvGeometry | None,
    device_type: str,
) -> list[Step] | None:
    """The steps that apply ``factors`` to the activation described by ``frame``.

    An optional permute, then a matmul or a conv; ``frame`` is updated. ``None`` if the factors
    do not touch the activation.
    """
    f_legs: list[str] = []
    for f in factors:
        f_legs.extend(leg for leg in f.legs if leg not in f_legs)
    state = frame.legs
    group = [leg for leg in state if leg in f_legs and leg in later]
    c_in = [leg for leg in state if leg in f_legs and leg not in later]
    if not group and not c_in:
        return None
    passive = [leg for leg in state if leg not in f_legs]
    c_out = [leg for leg in f_legs if leg not in state and leg in later]
    c_out = _ordered(c_out, out_modes)
    dims = {}
    for f in factors:
        dims.update(zip(f.legs, f.shape))
    frame.dims.update(dims)
    steps: list[Step] = []
    wanted = passive + group + c_in
    if wanted != state:
        src = frame.shape()
        perm = [0] + [1 + state.index(leg) for leg in wanted] + [len(state) + 1]
        steps.append(PermuteStep("copy", 0, 2 * frame.elements, "permute", tuple(perm), src))
        frame.legs = wanted
    nb = frame.batch * frame.size(passive)
    g, ci, co = frame.size(group), frame.size(c_in), frame.size(c_out)
    rows, cols = frame.hw
    if geometry is None:  # channels only: a batched matmul
        weight = WeightExpr.build(factors, group + c_out + c_in, (g, co, ci))
        view = (frame.batch, frame.size(passive), g, ci, rows * cols)
        flops = 2 * nb * g * co * ci * rows * cols
        elements = nb * g * (ci + co) * rows * cols
        label = f"1x1 {g * ci}->{g * co}" + (f" (groups {g})" if g > 1 else "")
        steps.append(MatmulStep("matmul", flops + weight.flops, elements, label, weight, view))
        out_hw = (rows, cols)
    else:
        kh, kw = geometry.kernel
        kernel_legs = [leg for leg in spatial if leg in f_legs]
        kdims = tuple(frame.dims[leg] for leg in kernel_legs)
        weight = WeightExpr.build(factors, group + c_out + c_in + kernel_legs, (g * co, ci, kh, kw))
        if math.prod(kdims) != kh * kw:
            raise AssertionError("spatial legs do not match the geometry")
        out_hw = geometry.output_size(rows, cols)
        flops = 2 * nb * g * co * ci * kh * kw * out_hw[0] * out_hw[1]
        elements = nb * g * (ci * rows * cols + co * out_hw[0] * out_hw[1])
        shift = device_type == "cpu" and ci == 1 and co == 1 and g > 1 and kh * kw <= 9
        kind = "depthwise" if shift else ("conv" if g == 1 else "grouped")
        label = f"{kh}x{kw} conv {g * ci}->{g * co}" + (f" (groups {g})" if g > 1 else "")
        view = (nb, g * ci, rows, cols)
        steps.append(
            ConvStep(kind, flops + weight.flops, elements, label, weight, view, geometry, g, shift)
        )
    frame.legs = passive + group + c_out
    frame.hw = out_hw
    return steps


def _spatial_factors(structure: Structure, spatial: Sequence[str]) -> set[str]:
    return {f.name for f in structure.factors if any(leg in f.legs for leg in spatial)}


def _adjacency(factors: Sequence[Factor]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {f.name: set() for f in factors}
    for a, b in itertools.combinations(factors, 2):
        if set(a.legs) & set(b.legs):
            adj[a.name].add(b.name)
            adj[b.name].add(a.name)
    return adj


def _connected(names: set[str], adj: Mapping[str, set[str]]) -> bool:
    if not names:
        return False
    start = next(iter(names))
    seen, todo = {start}, [start]
    while todo:
        for other in adj[todo.pop()] & names:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen == names


def _steiner(terminals: set[str], adj: Mapping[str, set[str]]) -> set[str]:
    """A small connected set of factors containing ``terminals`` (shortest paths joined)."""
    tree = {next(iter(terminals))}
    for t in terminals:
        if t in tree:
            continue
        # BFS from the tree to t
        prev: dict[str, str | None] = {n: None for n in tree}
        todo = list(tree)
        while todo and t not in prev:
            nxt = []
            for n in todo:
                for m in adj[n]:
                    if m not in prev:
                        prev[m] = n
                        nxt.append(m)
            todo = nxt
        node: str | None = t
        while node is not None and node not in tree:
            tree.add(node)
            node = prev[node]
    return tree


def _components(names: set[str], adj: Mapping[str, set[str]]) -> list[set[str]]:
    out, left = [], set(names)
    while left:
        start = left.pop()
        comp, todo = {start}, [start]
        while todo:
            for other in adj[todo.pop()] & names:
                if other not in comp:
                    comp.add(other)
                    todo.append(other)
        left -= comp
        out.append(comp)
    return out


def stage_variants(structure: Structure, spatial: tuple[str, str]) -> list[tuple[str, list]]:
    """Named orders of stages ``[("channels" | "h" | "w" | "hw", factor names), ...]``.

    The spatial part is the smallest connected set of factors holding ``kh`` and ``kw``. Every
    other factor is applied before it (on the input channels), merged into it, or applied after
    it; every such assignment is a candidate (the cost model picks), as is every split of the
    spatial part into a ``kh`` part and a ``kw`` part. Assignments whose stage would not touch
    the activation are dropped when built.
    """
    factors = structure.factors
    adj = _adjacency(factors)
    names = {f.name for f in factors}
    order = [f.name for f in factors]
    spatial_set = _spatial_factors(structure, spatial)
    base = _steiner(spatial_set, adj) if spatial_set else set()
    others = [n for n in order if n not in base]

    def seq(*groups: tuple[str, set[str]]) -> list:
        return [(kind, [n for n in order if n in g]) for kind, g in groups if g]

    variants: list[tuple[str, list]] = [("dense", seq(("hw", names)))]
    if not base or len(others) > _MAX_ASSIGNED:
        return variants
    holders = {leg: {f.name for f in factors if leg in f.legs} for leg in spatial}
    for choice in itertools.product(("in", "core", "out"), repeat=len(others)):
        ins = {n for n, c in zip(others, choice) if c == "in"}
        outs = {n for n, c in zip(others, choice) if c == "out"}
        core = names - ins - outs
        if not ins and not outs:
            continue  # that is the dense plan
        tag = _tag(ins, core, outs, order)
        variants.append((f"staged{tag}", seq(("channels", ins), ("hw", core), ("channels", outs))))
        for part in _subsets(core):
            rest = core - part
            if not (_connected(part, adj) and _connected(rest, adj)):
                continue
            for first, second in (("h", "w"), ("w", "h")):
                leg_first = spatial[0] if first == "h" else spatial[1]
                leg_second = spatial[1] if first == "h" else spatial[0]
                if holders[leg_first] <= part and not (holders[leg_second] & part):
                    split = _tag(ins, set(), outs, order)[1:-1].split(" ")
                    split[len(ins) > 0 : len(ins) > 0] = [
                        f"{first}=" + ",".join(n for n in order if n in part),
                        f"{second}=" + ",".join(n for n in order if n in rest),
                    ]
                    variants.append(
                        (
                            "separable[" + " ".join(p for p in split if p) + "]",
                            seq(
                                ("channels", ins), (first, part), (second, rest), ("channels", outs)
                            ),
                        )
                    )
    return variants


# Up to this many factors outside the spatial part, every placement is tried (3^n candidates).
_MAX_ASSIGNED = 5


def _tag(ins: set[str], core: set[str], outs: set[str], order: Sequence[str]) -> str:
    parts = []
    for label, group in (("in", ins), ("conv", core), ("out", outs)):
        if group:
            parts.append(f"{label}=" + ",".join(n for n in order if n in group))
    return "[" + " ".join(parts) + "]"


def _subsets(names: set[str]) -> list[set[str]]:
    items = sorted(names)
    if len(items) > 8:  # keep the enumeration small; big spatial parts are not separable here
        return []
    return [set(c) for r in range(1, len(items)) for c in itertools.combinations(items, r)]


def _build_staged(
    name: str,
    stages: list,
    structure: Structure,
    geometry: ConvGeometry,
    input_shape: tuple[int, int, int, int],
    device_type: str,
    max_elements: int,
) -> ForwardPlan | None:
    batch, channels, rows, cols = input_shape
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    spatial = (structure.modes[2][0], structure.modes[3][0])
    dims = {leg: structure.dim(leg) for leg in in_modes}
    frame = PlanFrame(batch, in_modes, dims, (rows, cols))
    by_name = {f.name: f for f in structure.factors}
    steps: list[Step] = []
    peak = frame.elements
    weight_flops = 0
    for i, (kind, names) in enumerate(stages):
        later = {leg for _, ns in stages[i + 1 :] for n in ns for leg in by_name[n].legs}
        later |= set(out_modes)
        geo = None
        if kind == "hw":
            geo = geometry
        elif kind in ("h", "w"):
            geo = geometry.axis(kind)
        legs_spatial = {"hw": spatial, "h": spatial[:1], "w": spatial[1:]}.get(kind, ())
        new = stage_step(
            frame, [by_name[n] for n in names], later, out_modes, legs_spatial, geo, device_type
        )
        if new is None or frame.elements > max_elements:
            return None
        steps.extend(new)
        weight_flops += sum(s.weight.flops for s in new if hasattr(s, "weight"))
        peak = max(peak, frame.elements)
    if sorted(frame.legs) != sorted(out_modes):
        return None
    if list(frame.legs) != list(out_modes):
        src = frame.shape()
        perm = [0] + [1 + frame.legs.index(leg) for leg in out_modes] + [len(out_modes) + 1]
        steps.append(PermuteStep("copy", 0, 2 * frame.elements, "permute", tuple(perm), src))
    out_shape = (batch, structure.shape[0], *frame.hw)
    return ForwardPlan(name, steps, out_shape, weight_flops=weight_flops, peak_elements=peak)


def _patches_plan(
    structure: Structure,
    geometry: ConvGeometry,
    input_shape: tuple[int, int, int, int],
    max_elements: int,
) -> ForwardPlan:
    batch, channels, rows, cols = input_shape
    kh, kw = geometry.kernel
    out_hw = geometry.output_size(rows, cols)
    positions = out_hw[0] * out_hw[1]
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    spatial = (structure.modes[2][0], structure.modes[3][0])
    patch_legs = (_B, *in_modes, *spatial, _L)
    patch_shape = (batch, *(structure.dim(m) for m in in_modes), kh, kw, positions)
    unfold = UnfoldStep(
        "unfold",
        0,
        batch * channels * (rows * cols + kh * kw * positions),
        f"unfold {kh}x{kw}",
        geometry,
        (batch, channels, rows, cols),
    )
    inputs = [patch_legs] + [f.legs for f in structure.factors]
    shapes = [patch_shape] + [f.shape for f in structure.factors]
    out_legs = (_B, *out_modes, _L)
    plan, program = plan_einsum(inputs, shapes, out_legs, memory_limit=max_elements)
    elements = batch * (channels * kh * kw + structure.shape[0]) * positions
    ein = EinsumStep(
        "einsum",
        plan.flops,
        elements,
        "einsum(patches, factors)",
        tuple(f.name for f in structure.factors),
        program,
        patch_shape,
    )
    peak = max(batch * channels * kh * kw * positions, plan.largest_intermediate)
    return ForwardPlan(
        "patches", [unfold, ein], (batch, structure.shape[0], *out_hw), peak_elements=peak
    )


def conv_candidates(
    structure: Structure,
    geometry: ConvGeometry,
    input_shape: Sequence[int],
    device_type: str = "cpu",
) -> list[ForwardPlan]:
    """Every forward plan of a conv layer with this structure, for one input shape.

    ``structure`` has dense legs ``(out, in, kh, kw)``. The ``dense`` plan comes first.
    """
    input_shape = tuple(int(n) for n in input_shape)
    spatial = (structure.modes[2], structure.modes[3])
    plans: list[ForwardPlan] = []
    batch, _, rows, cols = input_shape
    out_rows, out_cols = geometry.output_size(rows, cols)
    largest = max(math.prod(input_shape), batch * structure.shape[0] * out_rows * out_cols)
    # an intermediate larger than the unfolded patches is never worth it
    max_elements = (geometry.kernel[0] * geometry.kernel[1] + 1) * largest
    if all(len(m) == 1 for m in spatial):
        seen = set()
        for name, stages in stage_variants(structure, (spatial[0][0], spatial[1][0])):
            key = tuple((k, tuple(n)) for k, n in stages)
            if key in seen:
                continue
            seen.add(key)
            plan = _build_staged(
                name, stages, structure, geometry, input_shape, device_type, max_elements
            )
            if plan is not None:
                plans.append(plan)
        plans.append(_patches_plan(structure, geometry, input_shape, max_elements))
    return plans


def linear_candidates(structure: Structure, input_shape: Sequence[int]) -> list[ForwardPlan]:
    """Forward plans of a linear layer (dense legs ``(out, in)``) for input ``(N, in)``."""
    n, features = (int(v) for v in input_shape)
    out_features = structure.shape[0]
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    factors = structure.factors
    weight = WeightExpr.build(factors, (*out_modes, *in_modes), (1, out_features, features))
    dense = MatmulStep(
        "matmul",
        2 * n * features * out_features + weight.flops,
        n * (features + out_features),
        f"linear {features}->{out_features}",
        weight,
        (1, n, 1, features, 1),
    )
    inputs = [(_B, *in_modes)] + [f.legs for f in factors]
    shapes = [(n, *(structure.dim(m) for m in in_modes))] + [f.shape for f in factors]
    plan, program = plan_einsum(inputs, shapes, (_B, *out_modes))
    direct = EinsumStep(
        "einsum",
        plan.flops,
        n * (features + out_features),
        "einsum(input, factors)",
        tuple(f.name for f in factors),
        program,
        shapes[0],
    )
    return [
        ForwardPlan(
            "dense",
            [LinearStep(dense)],
            (n, out_features),
            weight_flops=weight.flops,
            peak_elements=n * out_features,
        ),
        ForwardPlan(
            "direct",
            [direct],
            (n, out_features),
            peak_elements=max(plan.largest_intermediate, n * out_features),
        ),
    ]


class LinearStep(Step):
    """Rebuild ``W`` and apply ``F.linear``."""

    def __init__(self, inner: MatmulStep) -> None:
        super().__init__(inner.kind, inner.flops, inner.elements, inner.label)
        self.inner = inner

    def __call__(self, h, tensors):
        w = self.inner.weight(tensors)
        return F.linear(h, w.reshape(w.shape[1], w.shape[2]))
