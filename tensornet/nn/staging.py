"""Staged forward plans: the factors applied to the activation a few at a time.

The factors of a conv structure are split into stages (see :class:`Placements`): an *in* part
applied to the input channels first (a batched matmul: a ``1 x 1`` conv), a *spatial* part
holding ``kh``/``kw`` (a small conv, or two one-dimensional convs when the part separates), and
an *out* part (a final ``1 x 1`` conv). Tucker-2 becomes 1x1 / kxk / 1x1, CP becomes 1x1 /
depthwise kx1 / depthwise 1xk / 1x1, a TT ordered (in, kh, kw, out) a chain, the ALDS grouped
format a grouped conv and a 1x1 conv, and so on, for any registered format. A factor leg shared
by a step's input and a later step (a CP rank, an ALDS group) makes that step grouped; legs a
step does not touch are folded into the batch. :func:`build_staged` turns stages into the
steps of a :class:`~tensornet.nn.plans.ForwardPlan`; :func:`stage_step` is the one step
builder (``export`` uses it for chains of linear maps too).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from ..formats.structure import Factor, Structure
from .geometry import ConvGeometry
from .plans import ConvStep, ForwardPlan, MatmulStep, PermuteStep, Step, WeightExpr

__all__ = ["Placements", "PlanFrame", "build_staged", "stage_legs", "stage_step"]


class PlanFrame:
    """Build-time bookkeeping of the activation: channel legs (with sizes) and spatial size."""

    def __init__(self, batch: int, legs: Sequence[str], dims: Mapping[str, int], hw: tuple):
        self.batch = batch
        self.legs = list(legs)
        self.dims = dict(dims)
        self.hw = hw

    def size(self, legs: Sequence[str]) -> int:
        """Product of the sizes of ``legs``."""
        return math.prod(self.dims[leg] for leg in legs)

    @property
    def elements(self) -> int:
        """Elements of the activation."""
        return self.batch * self.size(self.legs) * self.hw[0] * self.hw[1]

    def shape(self) -> tuple[int, ...]:
        """``(batch, *channel legs, rows * cols)``."""
        return (self.batch, *(self.dims[leg] for leg in self.legs), self.hw[0] * self.hw[1])

    def permute_to(self, wanted: Sequence[str]) -> list[Step]:
        """A permute step putting the channel legs in the order ``wanted`` (none if they are)."""
        wanted = list(wanted)
        if wanted == self.legs:
            return []
        src = self.shape()
        perm = [0] + [1 + self.legs.index(leg) for leg in wanted] + [len(wanted) + 1]
        self.legs = wanted
        return [PermuteStep("copy", 0, 2 * self.elements, "permute", tuple(perm), src)]


def _ordered(legs: Sequence[str], first: Sequence[str]) -> list[str]:
    """``legs`` with ``first`` (those present) in front, in ``first``'s order."""
    head = [leg for leg in first if leg in legs]
    return head + [leg for leg in legs if leg not in head]


def stage_legs(
    frame: PlanFrame, factors: Sequence[Factor], later: set[str], out_modes: Sequence[str]
) -> tuple[list[Step], tuple[list[str], list[str], list[str], list[str]]] | None:
    """How a stage applying ``factors`` splits the activation's legs, and the permute to it.

    Returns the permute steps (``frame`` set to ``passive + group + c_in``, the factors' leg
    sizes recorded) and ``(passive, group, c_in, c_out)``: legs the factors do not touch, legs
    they keep (in ``later``), legs they contract, and the new legs they write (``out_modes``
    first, in their order). ``None`` if the factors do not touch the activation.
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
    c_out = _ordered([leg for leg in f_legs if leg not in state and leg in later], out_modes)
    for f in factors:
        frame.dims.update(zip(f.legs, f.shape))
    return frame.permute_to(passive + group + c_in), (passive, group, c_in, c_out)


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

    An optional permute, then a matmul (``geometry`` None) or a conv; ``frame`` is updated.
    ``None`` if the factors do not touch the activation. ``later`` holds the legs of the
    stages after this one and of the output: a factor leg among them is kept (a group when
    the activation carries it too), the others are contracted.
    """
    split = stage_legs(frame, factors, later, out_modes)
    if split is None:
        return None
    steps, legs = split
    passive, group, _, c_out = legs
    if geometry is None:
        steps.append(_matmul(frame, factors, legs))
    else:
        steps.append(_conv(frame, factors, legs, spatial, geometry, device_type))
    frame.legs = passive + group + c_out
    return steps


def _matmul(frame: PlanFrame, factors: Sequence[Factor], legs: tuple) -> Step:
    """Channels only: a (grouped) batched matmul; the spatial size stays."""
    passive, group, c_in, c_out = legs
    nb = frame.batch * frame.size(passive)
    g, ci, co = frame.size(group), frame.size(c_in), frame.size(c_out)
    pixels = frame.hw[0] * frame.hw[1]
    weight = WeightExpr.build(factors, group + c_out + c_in, (g, co, ci))
    view = (frame.batch, frame.size(passive), g, ci, pixels)
    flops = 2 * nb * g * co * ci * pixels
    elements = nb * g * (ci + co) * pixels
    label = f"1x1 {g * ci}->{g * co}" + (f" (groups {g})" if g > 1 else "")
    return MatmulStep("matmul", flops + weight.flops, elements, label, weight, view)


def _conv(frame, factors, legs, spatial, geometry: ConvGeometry, device_type: str) -> Step:
    """A (grouped or depthwise) conv with the kernel legs ``spatial``; ``frame.hw`` updated."""
    passive, group, c_in, c_out = legs
    nb = frame.batch * frame.size(passive)
    g, ci, co = frame.size(group), frame.size(c_in), frame.size(c_out)
    rows, cols = frame.hw
    kh, kw = geometry.kernel
    kernel_legs = [leg for leg in spatial if any(leg in f.legs for f in factors)]
    if frame.size(kernel_legs) != kh * kw:
        raise AssertionError("spatial legs do not match the geometry")
    weight = WeightExpr.build(factors, group + c_out + c_in + kernel_legs, (g * co, ci, kh, kw))
    out_hw = geometry.output_size(rows, cols)
    flops = 2 * nb * g * co * ci * kh * kw * out_hw[0] * out_hw[1]
    elements = nb * g * (ci * rows * cols + co * out_hw[0] * out_hw[1])
    # CPU depthwise convs run channels-last (several times faster than NCHW or shifted slices)
    channels_last = device_type == "cpu" and ci == 1 and co == 1 and g > 1
    kind = "depthwise" if channels_last else ("conv" if g == 1 else "grouped")
    label = f"{kh}x{kw} conv {g * ci}->{g * co}" + (f" (groups {g})" if g > 1 else "")
    view = (nb, g * ci, rows, cols)
    frame.hw = out_hw
    step = ConvStep(kind, flops + weight.flops, elements, label, weight, view, geometry, g)
    step.channels_last = channels_last
    return step


def build_staged(
    name: str,
    stages: Sequence[tuple[str, Sequence[str]]],
    structure: Structure,
    geometry: ConvGeometry,
    input_shape: tuple[int, int, int, int],
    device_type: str,
    max_elements: int,
) -> ForwardPlan | None:
    """The plan running ``stages`` in order.

    ``None`` if a stage touches nothing, an intermediate exceeds ``max_elements`` or the stages
    do not end on the output legs.
    """
    batch, _, rows, cols = input_shape
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    spatial = {"hw": (structure.modes[2][0], structure.modes[3][0])}
    spatial.update(h=spatial["hw"][:1], w=spatial["hw"][1:])
    frame = PlanFrame(batch, in_modes, {leg: structure.dim(leg) for leg in in_modes}, (rows, cols))
    by_name = {f.name: f for f in structure.factors}
    steps: list[Step] = []
    peak = frame.elements
    for i, (kind, names) in enumerate(stages):
        later = {leg for _, ns in stages[i + 1 :] for n in ns for leg in by_name[n].legs}
        later |= set(out_modes)
        geo = {"hw": geometry, "h": geometry.axis("h"), "w": geometry.axis("w")}.get(kind)
        factors = [by_name[n] for n in names]
        new = stage_step(frame, factors, later, out_modes, spatial.get(kind, ()), geo, device_type)
        if new is None or frame.elements > max_elements:
            return None
        steps.extend(new)
        peak = max(peak, frame.elements)
    if sorted(frame.legs) != sorted(out_modes):
        return None
    steps.extend(frame.permute_to(out_modes))
    _channels_last_inputs(steps)
    return ForwardPlan(name, steps, (batch, structure.shape[0], *frame.hw), peak_elements=peak)


def _channels_last_inputs(steps: Sequence[Step]) -> None:
    """A plain 1x1 matmul feeding a channels-last conv writes its output channels-last."""
    for step, nxt in zip(steps, steps[1:]):
        if (
            isinstance(step, MatmulStep)
            and isinstance(nxt, ConvStep)
            and nxt.channels_last
            and step.view[1] == step.view[2] == 1  # no folded legs or groups: a view
        ):
            step.channels_last = True


# -- where the factors go: the factor graph and the stage orders ------------------------------
# Up to this many factors outside the spatial part, every placement is tried (3^n candidates).
_MAX_ASSIGNED = 5

Stages = list[tuple[str, list[str]]]


def _adjacency(factors: Sequence[Factor]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {f.name: set() for f in factors}
    for a, b in itertools.combinations(factors, 2):
        if set(a.legs) & set(b.legs):
            adj[a.name].add(b.name)
            adj[b.name].add(a.name)
    return adj


def _connected(names: set[str], adj: Mapping[str, set[str]]) -> bool:
    """Whether the (non-empty) set of factors ``names`` is connected by shared legs."""
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
            node = prev.get(node)  # a terminal no path reaches joins on its own
    return tree


def _subsets(names: set[str]) -> list[set[str]]:
    items = sorted(names)
    if len(items) > 8:  # keep the enumeration small; big spatial parts are not separable here
        return []
    return [set(c) for r in range(1, len(items)) for c in itertools.combinations(items, r)]


class Placements:
    """Where each factor of a conv structure can run: before, in or after the spatial part.

    The spatial part is the smallest connected set of factors holding ``kh`` and ``kw``. Every
    other factor is applied before it (on the input channels), merged into it, or applied after
    it; every such assignment is a ``staged`` candidate (the cost model picks), and every split
    of an assignment's spatial part into a connected ``kh`` part and a connected ``kw`` part is
    a ``separable`` one. Stages are ``("channels" | "h" | "w" | "hw", factor names)``;
    assignments whose stage would not touch the activation are dropped when built.

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> legs = ("out", "in", "kh", "kw")
    >>> s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3), legs=legs)
    >>> name, stages = Placements(s, ("kh", "kw")).staged()[5]
    >>> name
    'staged[in=U_in conv=core out=U_out]'
    >>> stages
    [('channels', ['U_in']), ('hw', ['core']), ('channels', ['U_out'])]
    >>> Placements(s, ("kh", "kw")).separable()  # the core holds kh and kw together
    []
    """

    def __init__(self, structure: Structure, spatial: tuple[str, str]) -> None:
        factors = structure.factors
        self.spatial = spatial
        self.adj = _adjacency(factors)
        self.names = {f.name for f in factors}
        self.order = [f.name for f in factors]
        self.holders = {leg: {f.name for f in factors if leg in f.legs} for leg in spatial}
        held = set().union(*self.holders.values())  # any number of spatial legs (conv3d)
        self.base = _steiner(held, self.adj)  # a valid structure has holders of kh and kw
        self.others = [n for n in self.order if n not in self.base]

    def dense(self) -> Stages:
        """One stage: every factor contracted into the kernel."""
        return [("hw", list(self.order))]

    def _assignments(self):
        """``(ins, core, outs)`` for every placement of the factors outside the spatial part."""
        if len(self.others) > _MAX_ASSIGNED:
            return
        for choice in itertools.product(("in", "core", "out"), repeat=len(self.others)):
            ins = {n for n, c in zip(self.others, choice) if c == "in"}
            outs = {n for n, c in zip(self.others, choice) if c == "out"}
            if ins or outs:  # all in the core: that is the dense plan
                yield ins, self.names - ins - outs, outs

    def _seq(self, *groups: tuple[str, set[str]]) -> Stages:
        return [(kind, [n for n in self.order if n in g]) for kind, g in groups if g]

    def _listed(self, group: set[str]) -> str:
        return ",".join(n for n in self.order if n in group)

    def staged(self) -> list[tuple[str, Stages]]:
        """``(name, stages)`` of every staged candidate: channels, the kh x kw part, channels."""
        out = []
        for ins, core, outs in self._assignments():
            parts = (("in", ins), ("conv", core), ("out", outs))
            tag = " ".join(f"{label}={self._listed(g)}" for label, g in parts if g)
            out.append(
                (f"staged[{tag}]", self._seq(("channels", ins), ("hw", core), ("channels", outs)))
            )
        return out

    def separable(self) -> list[tuple[str, Stages]]:
        """``(name, stages)`` of every split of a staged candidate's core into kh and kw parts."""
        out = []
        # no factor outside the spatial part (a cut network's kh | kw pair): split the whole
        whole = [] if self.others else [(set(), set(self.names), set())]
        for ins, core, outs in [*whole, *self._assignments()]:
            for part in _subsets(core):
                rest = core - part
                if not (_connected(part, self.adj) and _connected(rest, self.adj)):
                    continue
                for first, second in (("h", "w"), ("w", "h")):
                    leg_first, leg_second = self.spatial if first == "h" else self.spatial[::-1]
                    if self.holders[leg_first] <= part and not (self.holders[leg_second] & part):
                        out.append(self._split(ins, (first, part), (second, rest), outs))
        return out

    def _split(self, ins, first, second, outs) -> tuple[str, Stages]:
        groups = (("in", ins), first, second, ("out", outs))
        tag = " ".join(f"{label}={self._listed(g)}" for label, g in groups if g)
        stages = self._seq(("channels", ins), first, second, ("channels", outs))
        return f"separable[{tag}]", stages
