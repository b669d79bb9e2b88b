"""Forward plans of grouped and depthwise convolutions (``groups > 1``).

A grouped :class:`~tensornet.nn.TNConv2d` holds torch's kernel ``(out, in / groups, kh, kw)``
(legs ``out, in, kh, kw``: ``in`` has ``in / groups`` entries) as the factors of any format.
Output channel ``o`` belongs to group ``o // (out / groups)`` and sees only that group's input
channels. Its plans are registered for the layer kind :data:`GROUPED_KIND`:

- ``dense``: rebuild the kernel, then one ``F.conv2d(..., groups=groups)`` (a depthwise conv
  with one output per channel runs channels-last on CPUs, as in :mod:`.staging`);
- ``staged`` and ``separable``: the placements of :mod:`.staging` run on the *block
  structure* (:func:`block_structure`). The first output leg of the factor holding it is split
  into a group leg and the rest (the factor viewed ``(..., groups, out / groups, ...)``), and
  the input channels are seen as ``(groups, in / groups)``: the kernel becomes the
  block-diagonal ``(out, in, kh, kw)`` kernel of the whole conv, an einsum whose group leg is an
  open leg of both the input and the output. On it, a factor of the input channels leaves the
  group leg alone (it rides in the batch: one batched matmul for all groups), so does the
  spatial core (a conv over ``batch x groups`` images; with the output factor merged into it,
  a grouped conv with ``groups`` groups of ranks), and the output factor, which holds the group
  leg, is a grouped batched matmul with the factor reshaped ``(groups, out / groups, r)``;
- ``patches``: the input unfolded into patches, one planned einsum of the patches (channels seen
  as ``(groups, in / groups)``) and the block structure's factors.

Every plan is exact, depthwise convs (``in / groups == 1``) included; the cost model prices them
with the step kinds of :mod:`.cost` (``grouped``, ``depthwise``, ``conv``, ``matmul``, ...).

The group as a mode of the format: a format that tensorizes the channels (``out_dims``,
``in_dims``) with ``out_dims = (groups, out / groups, ...)`` holds the kernel as a tensor of
``(groups, out / groups, ...)`` output modes, so its factors see the group as one mode (a TT-matrix
core or an HT leaf of its own); the block structure then splits that mode, of size ``groups``,
into the group leg and a leg of size 1, and the same plans run.

Examples
--------
>>> import torch
>>> from tensornet.formats import get_format
>>> from tensornet.nn.functional import candidates
>>> from tensornet.nn.geometry import ConvGeometry
>>> legs = ("out", "in", "kh", "kw")
>>> s = get_format("tucker2").structure_for((8, 3, 3, 3), (4, 3), legs=legs)
>>> geo = ConvGeometry.from_conv_args((3, 3), padding=1, groups=2)
>>> plans = candidates(GROUPED_KIND, s, geo, (2, 6, 5, 5))
>>> plans[0].describe()
'3x3 conv 6->8 (groups 2)'
>>> [p.describe() for p in plans if p.name == "staged[in=U_in conv=core out=U_out]"]
['1x1 3->3 -> 3x3 conv 3->4 -> 1x1 8->8 (groups 2)']
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from ..formats.structure import Factor, Structure
from .functional import max_elements, patches_plan, register_forward, spatial_legs
from .geometry import ConvGeometry
from .plans import ConvStep, EinsumStep, ForwardPlan, WeightExpr
from .staging import Placements, build_staged

__all__ = ["GROUP", "GROUPED_KIND", "block_structure", "grouped_kind"]

#: The forward-plan kind of a conv layer with ``groups > 1``.
GROUPED_KIND = "grouped_conv"
#: The group leg of the block structure (reserved: no format names a leg so).
GROUP = "__group"
# Reserved leg names of the activation frame (batch, patch positions), as in functional.
_B, _L = "__batch", "__patches"


def grouped_kind(groups: int) -> str:
    """The plan kind of a conv layer with ``groups`` groups: ``"conv"`` or :data:`GROUPED_KIND`.

    Examples
    --------
    >>> grouped_kind(1), grouped_kind(4)
    ('conv', 'grouped_conv')
    """
    return "conv" if groups == 1 else GROUPED_KIND


def block_structure(structure: Structure, groups: int) -> tuple[Structure, dict] | None:
    """The block-diagonal structure of a grouped kernel and the factor views it needs.

    ``structure`` describes the kernel ``(out, in / groups, kh, kw)``. The result describes the
    whole conv's kernel ``(out, in, kh, kw)``: the first output mode of the factor holding it
    is split into :data:`GROUP` and the rest, and :data:`GROUP` leads the output and the input
    modes. The views map that factor's name to its new shape (a reshape of the stored tensor).
    ``None`` when the first output mode's size is not a multiple of ``groups`` (a tensorized
    output leg split otherwise) or more than one factor holds it.

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> s = get_format("svd").structure_for((6, 2, 3, 3), (2,), legs=("out", "in", "kh", "kw"))
    >>> block, views = block_structure(s, 3)
    >>> block.shape, block.modes[:2], views
    ((6, 6, 3, 3), (('__group', 'out'), ('__group', 'in')), {'U': (3, 2, 2)})
    """
    out_modes, in_modes, *spatial = structure.modes
    first = out_modes[0]
    size = structure.dim(first)
    holders = [f for f in structure.factors if first in f.legs]
    if size % groups or len(holders) != 1:
        return None
    factors, views = [], {}
    for f in structure.factors:
        if f is holders[0]:
            i = f.legs.index(first)
            shape = (*f.shape[:i], groups, size // groups, *f.shape[i + 1 :])
            f = Factor(f.name, (*f.legs[:i], GROUP, *f.legs[i:]), shape)
            views[f.name] = shape
        factors.append(f)
    shape = (structure.shape[0], groups * structure.shape[1], *structure.shape[2:])
    modes = ((GROUP, *out_modes), (GROUP, *in_modes), *spatial)
    block = dataclasses.replace(structure, shape=shape, factors=tuple(factors), modes=modes)
    return block, views


class _Viewed:
    """A compiled einsum whose tensor arguments are reshaped first (``None``: as given)."""

    def __init__(self, program: Callable, shapes: Sequence[tuple | None]) -> None:
        self.program, self.shapes = program, tuple(shapes)

    def __call__(self, *args):
        """The program on the reshaped arguments."""
        return self.program(
            *(a if s is None else a.reshape(s) for a, s in zip(args, self.shapes, strict=True))
        )


def _with_views(plan: ForwardPlan, views: dict) -> ForwardPlan:
    """``plan`` with every weight and einsum reading the stored factors through ``views``."""
    for step in plan.steps:
        weight = getattr(step, "weight", None)
        if isinstance(weight, WeightExpr):
            shapes = [views.get(n) for n in weight.names]
            step.weight = dataclasses.replace(weight, program=_Viewed(weight.program, shapes))
        if isinstance(step, EinsumStep):
            step.program = _Viewed(step.program, [None] + [views.get(n) for n in step.names])
    return plan


def _check(structure: Structure, geometry: ConvGeometry, input_shape: tuple) -> None:
    """The input's channels are ``groups`` times the kernel's ``in`` (else ValueError)."""
    channels, g = input_shape[1], geometry.groups
    if channels != g * structure.shape[1] or structure.shape[0] % g:
        raise ValueError(
            f"grouped conv plans: input channels {channels} and kernel "
            f"{structure.shape} do not match groups={g}"
        )


# -- the families ----------------------------------------------------------------------------
def _dense_name(structure: Structure) -> tuple[str, ...]:
    return ("dense", "dense[conv]") if spatial_legs(structure) else ()


def _placement_names(pick: str, structure: Structure) -> tuple[str, ...]:
    spatial = spatial_legs(structure)
    if spatial is None:
        return ()
    return tuple(name for name, _ in getattr(Placements(structure, spatial), pick)())


@register_forward(GROUPED_KIND, "dense", names=_dense_name)
def _dense(structure, geometry, input_shape, device_type) -> list[ForwardPlan]:
    """Rebuild the kernel, then one grouped conv.

    A depthwise conv (one input and one output channel per group) runs in channels-last memory
    on CPUs (``dense``, priced as ``depthwise``, as :mod:`.staging` runs its depthwise steps:
    oneDNN's fast layout); ``dense[conv]`` is the same conv in NCHW (``plan="measure"`` finds
    out which a CPU build runs faster).
    """
    spatial = spatial_legs(structure)
    if spatial is None:
        return []
    _check(structure, geometry, input_shape)
    batch, channels, rows, cols = input_shape
    g, (out, ci, kh, kw) = geometry.groups, structure.shape
    legs = (*structure.modes[0], *structure.modes[1], *spatial)
    weight = WeightExpr.build(structure.factors, legs, structure.shape)
    out_rows, out_cols = geometry.output_size(rows, cols)
    flops = 2 * batch * out * ci * kh * kw * out_rows * out_cols
    sizes = (batch * channels * rows * cols, batch * out * out_rows * out_cols)
    layouts = [device_type == "cpu" and ci == 1 and out == g]
    layouts += [False] if layouts[0] else []
    label = f"{kh}x{kw} conv {channels}->{out} (groups {g})"
    view = (batch, channels, rows, cols)
    plans = []
    for channels_last, name in zip(layouts, ("dense", "dense[conv]")):
        kind = "depthwise" if channels_last else "grouped"
        step = ConvStep(kind, flops + weight.flops, sum(sizes), label, weight, view, geometry, g)
        step.channels_last = channels_last
        out_shape = (batch, out, out_rows, out_cols)
        plans.append(ForwardPlan(name, [step], out_shape, peak_elements=max(sizes)))
    return plans


def _checked_block(structure: Structure, geometry: ConvGeometry, input_shape: tuple):
    """``(spatial legs, block structure, views)`` for the factored plans; ``None``: no such plan."""
    spatial = spatial_legs(structure)
    if spatial is None:
        return None
    _check(structure, geometry, input_shape)
    made = block_structure(structure, geometry.groups)
    return None if made is None else (spatial, *made)


def _placement_plans(pick: str, structure, geometry, input_shape, device_type):
    """The ``pick`` placements (``"staged"``/``"separable"``) run on the block structure."""
    found = _checked_block(structure, geometry, input_shape)
    if found is None:
        return []
    spatial, block, views = found
    single = dataclasses.replace(geometry, groups=1)  # the steps carry their own groups
    limit = max_elements(block, geometry, input_shape)
    plans = []
    for name, stages in getattr(Placements(block, spatial), pick)():
        plan = build_staged(name, stages, block, single, input_shape, device_type, limit)
        if plan is not None:
            plans.append(_with_views(plan, views))
    return plans


@register_forward(GROUPED_KIND, "staged", names=functools.partial(_placement_names, "staged"))
def _staged(structure, geometry, input_shape, device_type):
    """Channels in, the spatial part, channels out (on the block structure)."""
    return _placement_plans("staged", structure, geometry, input_shape, device_type)


@register_forward(GROUPED_KIND, "separable", names=functools.partial(_placement_names, "separable"))
def _separable(structure, geometry, input_shape, device_type):
    """As staged, with the spatial part split into a kh and a kw conv."""
    return _placement_plans("separable", structure, geometry, input_shape, device_type)


@register_forward(GROUPED_KIND, "patches", names=lambda s: ("patches",) if spatial_legs(s) else ())
def _patches(structure, geometry, input_shape, device_type) -> list[ForwardPlan]:
    """Unfold the input; one planned einsum of the patches and the block structure's factors."""
    found = _checked_block(structure, geometry, input_shape)
    if found is None:
        return []
    spatial, block, views = found
    return [_with_views(patches_plan(block, spatial, geometry, input_shape), views)]
