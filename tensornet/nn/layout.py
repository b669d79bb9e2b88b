"""Channels-last forward plans: a compressed conv that keeps its input's memory format.

``model.to(memory_format=torch.channels_last)`` with a channels-last input is how a PyTorch user
runs a CNN on oneDNN's fast path: every conv reads and writes channels-last, and nothing is
reordered between layers. A compressed conv does the same: for a 4-d channels-last input
(:func:`input_layout`) each candidate plan is rewritten by :func:`channels_last_plan` so that
its ``1 x 1`` matmuls become ``1 x 1`` convs (:class:`~tensornet.nn.plans.PointwiseStep`: one
matrix product over all pixels instead of one per image) and its convs run channels-last, the
activation staying ``(b, C, H, W)`` in channels-last memory from input to output. A plan with a
step that cannot (a permute of channel legs, folded legs, an unfold or einsum) runs as before
between a copy to channels-first and one back (a priced
:class:`~tensornet.nn.plans.LayoutStep`). The output is channels-last either way, as torch's
conv gives for a channels-last input. Plans keep their steps' kinds and costs, so the cost model
(fitted on channels-first timings) ranks them as it ranks their channels-first forms.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .plans import ConvStep, ForwardPlan, LayoutStep, MatmulStep, PointwiseStep, Step

__all__ = ["CHANNELS_LAST", "CONTIGUOUS", "channels_last_plan", "input_layout"]

CONTIGUOUS, CHANNELS_LAST = "contiguous", "channels_last"


def input_layout(x: torch.Tensor) -> str:
    """``"channels_last"`` for a 4-d input in channels-last memory, else ``"contiguous"``.

    A tensor both layouts describe (one channel, or ``1 x 1`` images) counts as contiguous.

    Examples
    --------
    >>> x = torch.zeros(2, 3, 4, 4)
    >>> input_layout(x), input_layout(x.contiguous(memory_format=torch.channels_last))
    ('contiguous', 'channels_last')
    >>> input_layout(torch.zeros(2, 1, 4, 4).contiguous(memory_format=torch.channels_last))
    'contiguous'
    """
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return CHANNELS_LAST
    return CONTIGUOUS


def _channels_last_step(step: Step, batch: int) -> Step | None:
    """``step`` on a 4-d channels-last activation of ``batch`` images (None if it cannot)."""
    if isinstance(step, MatmulStep) and step.view[1] == 1:  # no folded legs
        groups = step.view[2]
        return PointwiseStep(
            step.kind, step.flops, step.elements, step.label, step.weight, batch, groups
        )
    if isinstance(step, ConvStep) and step.view[0] == batch:  # no folded legs
        return dataclasses.replace(step, channels_last=True)
    return None


def channels_last_plan(plan: ForwardPlan, input_shape: tuple[int, ...]) -> ForwardPlan:
    """``plan`` for a channels-last input of ``input_shape``, with a channels-last output.

    Every step rewritten to keep the activation 4-d and channels-last where each can be; else
    the plan's own steps after a :class:`~tensornet.nn.plans.LayoutStep` (copies in and out).

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> from tensornet.nn.functional import ConvGeometry, conv_candidates
    >>> s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3))
    >>> geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    >>> staged = conv_candidates(s, geo, (2, 6, 5, 5))[2]
    >>> staged.name
    'staged[in=U_d1 conv=core out=U_d0]'
    >>> [type(step).__name__ for step in channels_last_plan(staged, (2, 6, 5, 5)).steps]
    ['PointwiseStep', 'ConvStep', 'PointwiseStep']
    """
    batch = input_shape[0]
    steps = [_channels_last_step(s, batch) for s in plan.steps]
    if any(s is None for s in steps):
        out = math.prod(plan.output_shape)
        copy = LayoutStep("copy", 0, 2 * (math.prod(input_shape) + out), "to channels-first")
        steps = [copy, *plan.steps]
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    fields.update(steps=steps, memory_format=torch.channels_last)
    return ForwardPlan(**fields)
