"""Choosing a compressed layer's forward plan per input shape, and remembering the choice.

:class:`PlannedLayer` is what :class:`~tensornet.nn.layers.TNLayer` adds to ``nn.Module`` for
its forward: the candidates of the registered families (:mod:`.functional`) for the input's
shape, dtype and device, priced by :mod:`.cost`, picked by the layer's ``plan`` policy (the
cost model's choice, the fastest measured, or a forced family or exact name), and kept in an
LRU cache of :data:`PLAN_CACHE_SIZE` entries. Under ``torch.compile`` / ``torch.export`` the
plan is chosen while the graph is traced (:func:`_prepare_plan`), so the graph holds only the
plan's operations.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import cost
from .functional import candidates
from .layout import CHANNELS_LAST, CONTIGUOUS, channels_last_plan, input_layout
from .plans import ForwardPlan

__all__ = ["PLAN_CACHE_SIZE", "PlanInfo", "PlannedLayer", "flat_names"]

# Input shapes whose forward choice a layer remembers (least recently used forgotten first).
PLAN_CACHE_SIZE = 32


def flat_names(names: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The families, then the exact names that are not families (no repeats).

    Examples
    --------
    >>> flat_names({"dense": ("dense",), "staged": ("staged[a]", "staged[b]")})
    ('dense', 'staged', 'staged[a]', 'staged[b]')
    """
    out = dict.fromkeys(names)
    for exact in names.values():
        out.update(dict.fromkeys(exact))
    return tuple(out)


@dataclass(frozen=True)
class PlanInfo:
    """The candidates for one input shape: name, steps, FLOPs, elements moved, estimate."""

    input_shape: tuple[int, ...]
    chosen: str
    rows: tuple[dict[str, Any], ...]

    def __str__(self) -> str:
        lines = [f"input {self.input_shape}: chosen {self.chosen}"]
        width = max(len(r["name"]) for r in self.rows)
        for r in sorted(self.rows, key=lambda r: r["seconds"]):
            mark = "*" if r["name"] == self.chosen else " "
            lines.append(
                f"{mark} {r['name']:<{width}}  {r['seconds'] * 1e3:9.3f} ms  "
                f"{r['flops'] / 1e6:10.2f} MFLOP  {r['steps']}"
            )
        return "\n".join(lines)


class PlannedLayer:
    """The forward choice of a compressed layer (a mixin of ``nn.Module`` subclasses).

    The layer provides ``kind`` (``"conv"``/``"linear"``), ``structure``, ``factors``, ``plan``
    and ``_plans`` (an ``OrderedDict``), and a conv layer ``geometry``.
    """

    kind: str
    #: How many input shapes (with dtype, device and policy) the layer remembers plans for.
    plan_cache_size: int = PLAN_CACHE_SIZE
    #: Whether a channels-last input gets channels-last plans (:mod:`.layout`; 2-d convs).
    channels_last_plans: bool = False

    def _candidates(self, shape: tuple[int, ...], device_type: str) -> list[ForwardPlan]:
        geometry = getattr(self, "geometry", None)
        return candidates(self.kind, self.structure, geometry, shape, device_type)

    def _plan_tensors(self, x: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The tensors the plans take (the factors; a lifted layer adds its own, like ``x``)."""
        return self.factors

    def _plan_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The input shape the plans are made for (a linear layer flattens leading dims)."""
        return tuple(x.shape)

    def _layout(self, x: torch.Tensor) -> str:
        """The input's layout as the plans see it (always contiguous for most layers)."""
        return input_layout(x) if self.channels_last_plans else CONTIGUOUS

    def _plan_for(self, x: torch.Tensor) -> ForwardPlan:
        if torch.compiler.is_compiling():
            return self._traced_plan(x)
        return self._cached_plan(self._plan_shape(x), x.dtype, x.device, self._layout(x))

    def _cached_plan(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        layout: str = CONTIGUOUS,
    ) -> ForwardPlan:
        """The cached plan for this input (an LRU cache of :attr:`plan_cache_size` entries)."""
        key = (shape, dtype, device.type, self.plan, layout)
        plans: OrderedDict = self._plans
        plan = plans.get(key)
        if plan is None:
            plan = self._choose(shape, device, dtype, layout)
            plans[key] = plan
            while len(plans) > self.plan_cache_size:
                plans.popitem(last=False)
        else:
            plans.move_to_end(key)
        return plan

    def _traced_plan(self, x: torch.Tensor) -> ForwardPlan:
        """The plan under ``torch.compile`` / ``torch.export``, chosen as the graph is traced.

        A symbolic size (dynamic batch) counts with its example value, and no guard is added
        on it: plans run with the batch size left free, so the one chosen for the example's
        batch size serves every batch size. Dynamo runs :func:`_prepare_plan` while tracing and
        reads the plan from the attribute it names, so the graph holds only the plan's
        operations (no graph break, even for a layer traced at several shapes).
        """
        from torch.fx.experimental import symbolic_shapes  # loaded by the tracer already

        # A symbolic size as an int without a guard (its example value); torch releases without
        # ``optimization_hint`` specialise the size instead.
        example_size = getattr(symbolic_shapes, "optimization_hint", int)
        shape = tuple(example_size(n) for n in self._plan_shape(x))
        layout = self._layout(x)
        return getattr(self, _prepare_plan(self, shape, x.dtype, x.device, self.plan, layout))

    def _choose(
        self,
        shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype,
        layout: str = CONTIGUOUS,
    ) -> ForwardPlan:
        """The plan for this input (in ``layout``) under the layer's ``plan`` policy."""
        plans = self._candidates(shape, device.type)
        if layout == CHANNELS_LAST:
            plans = [channels_last_plan(p, shape) for p in plans]
        return self._select(plans, shape, device, dtype, layout)

    def _select(self, plans, shape, device, dtype, layout=CONTIGUOUS) -> ForwardPlan:
        """Price ``plans`` (each ``plan.cost``) and pick one by the ``plan`` policy."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        best = cost.choose(plans, device.type, itemsize)
        if self.plan == "auto":
            return best
        if self.plan == "measure":
            return self._measured(plans, shape, device, dtype, layout)
        named = [p for p in plans if self.plan in (p.name, p.family)]
        if not named:
            families = sorted({p.family for p in plans})
            raise ValueError(f"plan={self.plan!r} is not a candidate here; candidates: {families}")
        return min(named, key=lambda p: p.cost["seconds"])

    def _measured(self, plans, shape, device, dtype, layout) -> ForwardPlan:
        """Time the candidates whose estimate is within 4x of the best; keep the fastest."""
        best = min(p.cost["seconds"] for p in plans)
        shortlist = [p for p in plans if p.cost["seconds"] <= 4 * best]
        x = torch.randn(shape, device=device, dtype=dtype)
        if layout == CHANNELS_LAST:
            x = x.contiguous(memory_format=torch.channels_last)
        tensors = {k: v.detach() for k, v in self._plan_tensors(x).items()}
        with torch.no_grad():
            for p in shortlist:
                p.cost["measured"] = cost.measure(lambda p=p: p(x, tensors), device, repeat=3)
        best_plan = min(shortlist, key=lambda p: p.cost["measured"])
        best_plan.cost["timings"] = {p.name: p.cost["measured"] for p in shortlist}
        return best_plan

    def plan_info(
        self, input_shape: Sequence[int], device: Any = None, dtype: Any = None
    ) -> PlanInfo:
        """Every candidate forward for ``input_shape``, its steps and cost, and the choice.

        Examples
        --------
        >>> from tensornet.nn import TNConv2d
        >>> layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4), plan="dense")
        >>> info = layer.plan_info((2, 8, 6, 6))
        >>> info.chosen, len(info.rows) > 2
        ('dense', True)
        """
        p0 = next(iter(self.factors.values()))
        device = torch.device(device) if device is not None else p0.device
        dtype = dtype or p0.dtype
        shape = tuple(int(n) for n in input_shape)
        plans = self._candidates(shape, device.type)
        chosen = self._select(plans, shape, device, dtype)
        keys = ("flops", "elements", "peak_elements", "seconds")
        rows = tuple(
            {"name": p.name, "steps": p.describe(), **{k: p.cost[k] for k in keys}} for p in plans
        )
        return PlanInfo(shape, chosen.name, rows)

    def clear_plans(self) -> None:
        """Forget the cached forward choices (e.g. after :func:`~tensornet.nn.cost.calibrate`)."""
        self._plans.clear()

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half(): choices depend on these
        self._plans.clear()
        return super()._apply(fn, recurse)


def _prepare_plan(
    layer: PlannedLayer,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    policy: str,
    layout: str = CONTIGUOUS,
) -> str:
    """Put ``layer``'s plan for ``shape`` in an attribute of its own; return the attribute name.

    Dynamo runs this while tracing (outside the graph) and takes the name as a constant. One
    attribute per plan key, never a shared container, so what Dynamo reads is never a view of
    the cache from before the plan was made. ``policy`` is ``layer.plan`` as the traced code
    read it (so Dynamo guards on it).
    """
    key = (shape, dtype, device.type, policy, layout)
    names = layer.__dict__.setdefault("_traced_names", {})
    name = names.setdefault(key, f"_traced_plan{len(names)}")
    object.__setattr__(layer, name, layer._cached_plan(shape, dtype, device, layout))
    return name


# Dynamo takes the result as a constant: the mark ``torch.compiler.assume_constant_result`` sets,
# set directly so that importing this module does not import ``torch._dynamo`` (about 1.5 s);
# tests/nn/test_compile.py checks that the decorator sets the same mark.
_prepare_plan._dynamo_marked_constant = True  # type: ignore[attr-defined]
