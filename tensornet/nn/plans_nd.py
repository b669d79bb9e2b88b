"""Forward plans of 3-d and transposed 2-d compressed convs: ``dense`` and ``staged``.

Registered in :mod:`.functional` for the layer kinds ``"conv3d"`` (dense legs ``(out, in, kd, kh,
kw)``) and ``"conv_transpose2d"`` (torch's layout ``(in, out, kh, kw)``):

- ``dense``: rebuild the kernel, then one ``F.conv3d`` / ``F.conv_transpose2d``;
- ``staged``: the factors that carry only channel legs run as batched matmuls (``1 x 1 x 1``
  convs) on the input channels first or on the output channels after, and the factors that
  carry the spatial legs (with those placed with them) are contracted into one small kernel run
  by the spatial op with the ranks as channels (grouped where a rank is shared with a later
  stage, e.g. CP's). For a transposed conv this is the adjoint of a conv plan: in-channel
  factors, the spatial core through ``conv_transpose2d``, out-channel factors.

Steps are priced by the cost model like a 2-d conv's (kinds ``"conv"``/``"grouped"``, FLOPs
and elements moved of the actual op).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..formats.structure import Factor, Structure
from .functional import register_forward
from .plans import ForwardPlan, Step, WeightExpr
from .staging import Placements, PlanFrame, stage_legs, stage_step

__all__ = ["SpatialStep", "nd_plans"]

# kind -> (position of the input-channel leg, of the output-channel leg) in the dense legs
_IO = {"conv3d": (1, 0), "conv_transpose2d": (0, 1)}


@dataclass
class SpatialStep(Step):
    """The spatial op of a plan (``geometry.conv``) on ``h`` viewed as ``(b P, G ci, *S)``."""

    weight: WeightExpr = None  # type: ignore[assignment]
    view: tuple[int, ...] = ()
    geometry: Any = None
    groups: int = 1

    def __post_init__(self) -> None:
        self.run_view = (-1, *self.view[1:])  # the batch left free, as every plan step

    @property
    def images(self) -> int:
        """The images the op batches (batch times folded legs)."""
        return self.view[0]

    def __call__(self, h, tensors):
        """Apply the step to the activation ``h``."""
        return self.geometry.conv(h.reshape(self.run_view), self.weight(tensors), self.groups)


def _spatial_legs(structure: Structure) -> tuple[str, ...]:
    return tuple(leg for group in structure.modes[2:] for leg in group)


def _step(frame: PlanFrame, factors: Sequence[Factor], later: set[str], ctx: dict):
    """The (permute and) spatial step applying ``factors``; ``frame`` updated (None: no-op)."""
    split = stage_legs(frame, factors, later, ctx["out"])
    if split is None:
        return None
    steps, (passive, group, c_in, c_out) = split
    nb = frame.batch * frame.size(passive)
    g, ci, co = frame.size(group), frame.size(c_in), frame.size(c_out)
    geometry, sizes, spatial = ctx["geometry"], ctx["sizes"], ctx["spatial"]
    kernel = tuple(geometry.kernel)
    if ctx["transposed"]:
        weight = WeightExpr.build(factors, group + c_in + c_out + spatial, (g * ci, co, *kernel))
    else:
        weight = WeightExpr.build(factors, group + c_out + c_in + spatial, (g * co, ci, *kernel))
    out_sizes = geometry.output_size(sizes)
    positions = math.prod(sizes if ctx["transposed"] else out_sizes)
    flops = 2 * nb * g * co * ci * math.prod(kernel) * positions
    elements = nb * g * (ci * math.prod(sizes) + co * math.prod(out_sizes))
    kind = "conv" if g == 1 else "grouped"
    label = f"{'x'.join(map(str, kernel))} {ctx['op']} {g * ci}->{g * co}" + (
        f" (groups {g})" if g > 1 else ""
    )
    view = (nb, g * ci, *sizes)
    steps.append(
        SpatialStep(kind, flops + weight.flops, elements, label, weight, view, geometry, g)
    )
    ctx["sizes"] = out_sizes
    frame.hw = (math.prod(out_sizes), 1)
    frame.legs = passive + group + c_out
    return steps


def _build(name: str, stages, structure: Structure, kind: str, geometry, input_shape, device_type):
    """The plan running ``stages`` (channel matmuls and one spatial step); None if impossible."""
    batch, _, *sizes = input_shape
    in_pos, out_pos = _IO[kind]
    in_modes, out_modes = structure.modes[in_pos], structure.modes[out_pos]
    ctx = {
        "geometry": geometry,
        "sizes": tuple(sizes),
        "spatial": list(_spatial_legs(structure)),
        "transposed": kind == "conv_transpose2d",
        "op": "conv_transpose" if kind == "conv_transpose2d" else "conv",
        "out": out_modes,
    }
    dims = {leg: structure.dim(leg) for leg in in_modes}
    frame = PlanFrame(batch, in_modes, dims, (math.prod(sizes), 1))
    by_name = {f.name: f for f in structure.factors}
    limit = (math.prod(geometry.kernel) + 1) * max(
        math.prod(input_shape),
        batch * structure.shape[out_pos] * math.prod(geometry.output_size(sizes)),
    )
    steps: list[Step] = []
    peak = frame.elements
    for i, (where, names) in enumerate(stages):
        later = {leg for _, ns in stages[i + 1 :] for n in ns for leg in by_name[n].legs}
        later |= set(out_modes)
        factors = [by_name[n] for n in names]
        if where == "hw":
            new = _step(frame, factors, later, ctx)
        else:
            new = stage_step(frame, factors, later, out_modes, (), None, device_type)
        if new is None or frame.elements > limit:
            return None
        steps.extend(new)
        peak = max(peak, frame.elements)
    if sorted(frame.legs) != sorted(out_modes):
        return None
    steps.extend(frame.permute_to(out_modes))
    out_shape = (batch, structure.shape[out_pos], *ctx["sizes"])
    return ForwardPlan(name, steps, out_shape, peak_elements=peak)


def _plain(structure: Structure) -> bool:
    """Every spatial leg is one factor leg (not tensorized): the plans apply."""
    return all(len(group) == 1 for group in structure.modes[2:])


def nd_plans(pick: str, kind: str, structure, geometry, input_shape, device_type) -> list:
    """The ``pick`` (``"dense"``/``"staged"``) plans of a ``kind`` layer for one input shape."""
    if not _plain(structure):
        return []
    placements = Placements(structure, _spatial_legs(structure))
    variants = [("dense", placements.dense())] if pick == "dense" else placements.staged()
    plans = []
    for name, stages in variants:
        plan = _build(name, stages, structure, kind, geometry, tuple(input_shape), device_type)
        if plan is not None:
            plans.append(plan)
    return plans


def _names(pick: str, structure: Structure) -> tuple[str, ...]:
    if not _plain(structure):
        return ()
    if pick == "dense":
        return ("dense",)
    return tuple(name for name, _ in Placements(structure, _spatial_legs(structure)).staged())


for _kind in _IO:
    for _pick in ("dense", "staged"):
        register_forward(_kind, _pick, names=functools.partial(_names, _pick))(
            functools.partial(nd_plans, _pick, _kind)
        )
