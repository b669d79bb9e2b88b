"""Back to plain PyTorch: each compressed layer as the ``torch.nn`` modules of its forward plan.

:func:`to_standard` rewrites every :class:`~tensornet.nn.TNConv2d` and
:class:`~tensornet.nn.TNLinear` as the plain-torch sequence of the forward plan the layer runs
for its input shape: Tucker-2 as 1x1 / kxk / 1x1 convs, CP as 1x1 / depthwise kx1 / depthwise
1xk / 1x1, a TT as a chain of small convs, ALDS groups as a grouped conv and a 1x1 conv, a
TT-matrix or TT linear as a chain of small ``nn.Linear`` layers, and so on. The result holds no
more parameters than the compressed layer and runs the same operations, so it keeps the speed;
it needs no tensornet operation to run and exports with ``torch.export.export``.

The modules used are ``nn.Conv2d``, ``nn.Linear``, the padding modules, and these small ones
of :mod:`tensornet.nn.export_modules` (no other operation than reshapes, permutes and what the
plain layer does):

- :class:`PointwiseConv2d`: an ``nn.Conv2d`` 1x1 (grouped) conv, same parameters and
  ``state_dict``, whose forward is one batched matmul (with channel blocks folded into the
  batch), exactly what the compressed layer runs: on CPUs ``F.conv2d`` over many small images
  is much slower;
- :class:`ChannelsLastConv2d`: an ``nn.Conv2d`` run on channels-last input, as the compressed
  layer runs its depthwise steps on CPUs, where ``F.conv2d``'s depthwise kernel is several times
  slower on NCHW input (on other devices the plans use plain ``nn.Conv2d``);
- :class:`ShiftConv2d`: an ``nn.Conv2d`` whose forward runs a small depthwise conv as shifted
  multiply-adds (a step with ``shift`` set);
- :class:`ChannelPermute`: reorders the channel legs (a reshape and a permute);
- :class:`Folded`: moves leading channel blocks into the batch around a conv or linear layer;
- :class:`ChannelBias`: adds the bias when the last step cannot hold it.

Loading their ``state_dict`` into plain ``nn.Conv2d`` modules of the same arguments gives the
same function (slower on CPUs).

Where no chain of such modules holding at most the layer's parameters is estimated within
``slack`` (1.0x by default) of the layer's own forward plan (for instance a TT-matrix conv,
which runs best by rebuilding its kernel, or a layer whose best plan is one einsum over the input
patches), the layer stays a compressed layer (``fallback="keep"``, with a warning), or becomes
the cheapest chain anyway (``fallback="chain"``); a dense ``nn.Conv2d``/``nn.Linear`` is used
only when it is no larger than the compressed layer and within ``slack`` of its time.

The default ``slack=1.0`` (a chain must be no slower, by the upper quartile of its per-round
time ratio) leaves a margin for a gap measured on CPU: chains timed alone, layer by layer, run
up to ~1.15x slower inside the whole model. With ``slack=1.1`` a ResNet-20 with CP layers at
50 % of its parameters came out at 1.10-1.38x the compressed model's forward; with 1.0 at
1.02-1.03x (``bench/models_interleaved.py``).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import math
import statistics
import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..weights import layer_inputs, replace_module
from . import cost
from .export_modules import (
    ChannelBias,
    ChannelPermute,
    ChannelsLastConv2d,
    Folded,
    PointwiseConv2d,
    ShiftConv2d,
)
from .functional import linear_candidates
from .geometry import ConvGeometry
from .layers import TNConv2d, TNLayer, TNLinear
from .plans import (
    ConvStep,
    ForwardPlan,
    LinearStep,
    MatmulStep,
    PermuteStep,
)
from .staging import PlanFrame, stage_step

__all__ = [
    "ChannelBias",
    "ChannelPermute",
    "Folded",
    "PointwiseConv2d",
    "ShiftConv2d",
    "ChannelsLastConv2d",
    "conv_sequence",
    "linear_sequence",
    "to_standard",
]

_PAD_MODULES = {
    "zeros": nn.ZeroPad2d,
    "reflect": nn.ReflectionPad2d,
    "replicate": nn.ReplicationPad2d,
    "circular": nn.CircularPad2d,
}
_FALLBACKS = ("keep", "chain")
# Up to this many factors, every order of a linear layer's factors is a candidate chain (else
# the structure's order and its reverse).
_MAX_ORDER = 4
# Interleaved rounds of timed runs with ``measure=True`` (the upper quartile of a chain's
# time over the layer's, round by round, is checked against ``slack``).
_REPEAT = 15


def _conv(
    cin: int,
    cout: int,
    geometry: ConvGeometry,
    groups: int,
    weight: torch.Tensor,
    shift: bool = False,
    channels_last: bool = False,
) -> list[nn.Module]:
    """``[padding module,] conv`` applying ``weight`` with ``geometry`` (no bias)."""
    t, b, le, r = geometry.padding
    opts = {"bias": False, "device": weight.device, "dtype": weight.dtype}
    mods: list[nn.Module] = []
    plain = ChannelsLastConv2d if channels_last else nn.Conv2d
    if geometry.symmetric_zero_padding and not shift:
        conv = plain(
            cin, cout, geometry.kernel, geometry.stride, (t, le), geometry.dilation, groups, **opts
        )
    else:
        if t or b or le or r:
            mods.append(_PAD_MODULES[geometry.padding_mode]((le, r, t, b)))
        cls = ShiftConv2d if shift else plain
        g = geometry
        conv = cls(cin, cout, g.kernel, g.stride, 0, g.dilation, groups, **opts)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return mods + [conv]


def _wrap(mods: list[nn.Module], fold: int) -> nn.Module:
    inner = mods[0] if len(mods) == 1 else nn.Sequential(*mods)
    return inner if fold == 1 else Folded(fold, inner)


def _step_modules(step, tensors, batch: int, linear: bool) -> list[nn.Module]:
    """The modules of one step (``linear``: the activation is ``(N, features)``)."""
    if isinstance(step, PermuteStep):
        dims = tuple(d - 1 for d in step.dims[1:-1])
        return [ChannelPermute(step.shape[1:-1], dims)]
    w = step.inner.weight(tensors) if isinstance(step, LinearStep) else step.weight(tensors)
    w = w.detach()
    if isinstance(step, LinearStep):
        _, co, ci = w.shape
        return [_linear_module(ci, co, w.reshape(co, ci))]
    if isinstance(step, MatmulStep):
        _, fold, g, ci, _ = step.view
        co = w.shape[1]
        if linear and g == 1:
            return [_wrap([_linear_module(ci, co, w.reshape(co, ci))], fold)]
        opts = {"groups": g, "bias": False, "device": w.device, "dtype": w.dtype}
        conv = PointwiseConv2d(g * ci, g * co, 1, **opts)
        conv.fold = fold
        with torch.no_grad():
            conv.weight.copy_(w.reshape(g * co, ci, 1, 1))
        return [conv]
    assert isinstance(step, ConvStep)
    fold = step.view[0] // batch
    mods = _conv(
        step.view[1], w.shape[0], step.geometry, step.groups, w, step.shift, step.channels_last
    )
    return [_wrap(mods, fold)]


def _linear_module(cin: int, cout: int, weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(cin, cout, bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def _convertible(plan: ForwardPlan) -> bool:
    return all(isinstance(s, (MatmulStep, ConvStep, PermuteStep, LinearStep)) for s in plan.steps)


def _plan_params(plan: ForwardPlan) -> int:
    total = 0
    for s in plan.steps:
        if isinstance(s, LinearStep):
            total += math.prod(s.inner.weight.shape)
        elif isinstance(s, (MatmulStep, ConvStep)):
            total += math.prod(s.weight.shape)
    return total


def _plan_modules(layer: TNLayer, plan: ForwardPlan, batch: int) -> list[nn.Module]:
    tensors = {k: v.detach() for k, v in layer.factors.items()}
    linear = isinstance(layer, TNLinear)
    mods: list[nn.Module] = []
    for step in plan.steps:
        mods += _step_modules(step, tensors, batch, linear)
    if layer.bias is not None:
        last = mods[-1]
        if isinstance(last, (nn.Linear, nn.Conv2d)) and getattr(last, "fold", 1) == 1:
            last.bias = nn.Parameter(layer.bias.detach().clone())
        else:
            mods.append(ChannelBias(layer.bias))
    return mods


def _fits(layer: TNLayer, plans: list[ForwardPlan]) -> list[ForwardPlan]:
    """The plans that are chains of plain modules storing at most the layer's parameters."""
    limit = layer.structure.num_params
    return [p for p in plans if _convertible(p) and _plan_params(p) <= limit]


def _times(fns, repeat: int) -> list[list[float]]:
    """Seconds of ``repeat`` runs of each of ``fns``, interleaved (no grad).

    Each function runs once to warm up; then every round runs each in turn, so load that
    comes and goes lands on all of them alike and rounds can be compared pairwise.
    """
    runs: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn()
        for _ in range(repeat):
            for fn, out in zip(fns, runs):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return runs


def _measured_ratio(chain: list[float], own: list[float]) -> tuple[float, float]:
    """``(median, upper quartile)`` of a chain's time over the layer's, round by round.

    The upper quartile is what is checked against ``slack``: a chain is kept only when it
    is within ``slack`` in three rounds of four, not when a lucky round or two put it there.
    """
    ratios = [c / o for c, o in zip(chain, own)]
    return statistics.median(ratios), statistics.quantiles(ratios, n=4)[2]


def _pick(
    layer: TNLayer,
    plans: list[ForwardPlan],
    chosen: ForwardPlan,
    shape: tuple[int, ...],
    measure: bool,
):
    """``(plan, modules, ratio)``: the chain to write out and its time over the layer's.

    By the cost model's estimates (the layer's plan when it is a chain, else the cheapest
    chain), or with ``measure`` by timing the three cheapest chains and the layer itself on
    a random input of ``shape``. ``(None, None, inf)`` when no chain fits.
    """
    fits = _fits(layer, plans)
    if not fits:
        return None, None, math.inf
    fits.sort(key=lambda p: (p.name != chosen.name, p.cost["seconds"]))
    if not measure:
        best = fits[0]
        ratio = best.cost["seconds"] / chosen.cost["seconds"]
        return best, _plan_modules(layer, best, shape[0]), ratio
    p0 = next(iter(layer.factors.values()))
    x = torch.randn(shape, device=p0.device, dtype=p0.dtype)
    sync = torch.cuda.synchronize if p0.device.type == "cuda" else (lambda: None)
    chains = []
    for plan in fits[:3]:
        mods = _plan_modules(layer, plan, shape[0])
        chains.append((plan, mods, _as_module(layer, mods)))
    own, *runs = _times(
        [lambda: (layer(x), sync())] + [lambda seq=seq: (seq(x), sync()) for _, _, seq in chains],
        _REPEAT,
    )
    ratios = [_measured_ratio(r, own) for r in runs]
    best = min(range(len(chains)), key=lambda i: ratios[i])
    plan, mods, _ = chains[best]
    return plan, mods, ratios[best][1]


def _shape_of(layer: TNLayer, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if isinstance(layer, TNLinear):
        shape = tuple(input_shape or (1, layer.in_features))
        return (math.prod(shape[:-1]), shape[-1])
    return tuple(input_shape or (1, layer.in_channels, 32, 32))


def _as_module(layer: TNLayer, mods: list[nn.Module]) -> nn.Module:
    if isinstance(layer, TNLinear) and not all(isinstance(m, nn.Linear) for m in mods):
        return _FlatChain(*mods)
    return nn.Sequential(*mods)


def _sequence(
    layer: TNLayer,
    plans: list[ForwardPlan],
    shape: tuple[int, ...],
    options: dict,
    name: str,
) -> nn.Module:
    slack, fallback = options["slack"], options["fallback"]
    p0 = next(iter(layer.factors.values()))
    cost.choose(plans, p0.device.type, p0.element_size())
    chosen = layer._choose(shape, p0.device, p0.dtype)
    best, mods, ratio = _pick(layer, plans, chosen, shape, options["measure"])
    if best is not None and (ratio <= slack or fallback == "chain"):
        return _as_module(layer, mods)
    if best is None:
        why = "no chain of plain modules holds at most its parameters"
    else:
        how = "measured" if options["measure"] else "estimated"
        why = (
            f"its fastest plain chain ({best.name}) is {how} at {ratio:.2f}x its forward "
            "(fallback='chain' writes it anyway)"
        )
    warnings.warn(
        f"to_standard: {name or type(layer).__name__} (format {layer.format}) has no "
        f"plain-torch form within {slack}x of its time at no more parameters: {why}; "
        "kept as a compressed layer",
        stacklevel=_caller_level(),
    )
    return layer


def _caller_level() -> int:
    """The warning ``stacklevel`` of the first frame outside this module (the user's call).

    A fixed level would point into this module when ``to_standard`` is the caller.
    """
    frame, level = inspect.currentframe(), 0  # this function's frame; 1 is its caller's
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


class _FlatChain(nn.Sequential):
    """A linear layer's chain: leading dimensions flattened around it, as ``nn.Linear`` does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = super().forward(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, y.shape[-1])


def _options(slack: float, fallback: str, measure: bool) -> dict:
    if isinstance(slack, bool) or not isinstance(slack, (int, float)) or not slack >= 1:
        raise ValueError(f"slack must be a number >= 1, got {slack!r}")
    if fallback not in _FALLBACKS:
        raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
    if not isinstance(measure, bool):
        raise TypeError(f"measure must be True or False, got {measure!r}")
    return {"slack": slack, "fallback": fallback, "measure": measure}


def conv_sequence(
    layer: TNConv2d,
    input_shape: Sequence[int] | None = None,
    *,
    slack: float = 1.0,
    fallback: str = "keep",
    measure: bool = True,
    name: str = "",
) -> nn.Module:
    """The layer as ``nn.Sequential`` of the plain modules of its forward plan.

    Candidates are the layer's forward plans for ``input_shape`` (default ``(1, in_channels,
    32, 32)``) that are chains of convolutions (and permutes) storing no more parameters than
    the layer. With ``measure`` (default) the three cheapest by the cost model (the layer's own
    plan first) and the layer itself are timed on a random input of that shape, in interleaved
    rounds, and the chain fastest round by round is kept if it runs within ``slack`` of the
    layer in three rounds of four (upper quartile of its per-round ratio, so that a few lucky
    rounds do not let a slower chain through); without, the layer's plan (or the
    cheapest chain) is kept if estimated within ``slack`` of it. Otherwise the layer itself is
    returned with a warning (``fallback="keep"``), or the chain regardless of time
    (``fallback="chain"``). The last conv carries the bias. The result takes any input size.

    Examples
    --------
    >>> import torch
    >>> layer = TNConv2d(16, 16, 3, padding=1, format="tucker2", ranks=(4, 4))
    >>> seq = conv_sequence(layer, (2, 16, 8, 8), fallback="chain")
    >>> [m.kernel_size for m in seq]
    [(1, 1), (3, 3), (1, 1)]
    >>> x = torch.randn(2, 16, 8, 8)
    >>> bool(torch.allclose(seq(x), layer(x), atol=1e-5))
    True
    """
    options = _options(slack, fallback, measure)
    shape = _shape_of(layer, input_shape)
    p0 = next(iter(layer.factors.values()))
    plans = layer._candidates(shape, p0.device.type)  # a grouped layer's are grouped plans
    return _sequence(layer, plans, shape, options, name)


def linear_chains(layer: TNLinear, input_shape: Sequence[int]) -> list[ForwardPlan]:
    """Forward plans of a linear layer that apply its factors to the input one at a time.

    Every order of the factors (up to four factors; else the structure's order and its
    reverse) in which each factor touches the activation gives a chain of (grouped,
    batch-folded) matmuls and permutes: the plain ``nn.Linear`` chains of
    :func:`linear_sequence`.
    """
    n, _ = (int(v) for v in input_shape)
    structure = layer.structure
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    factors = structure.factors
    if len(factors) <= _MAX_ORDER:
        orders = list(itertools.permutations(factors))
    else:
        orders = [tuple(factors), tuple(reversed(factors))]
    plans = []
    for order in orders:
        plan = _linear_chain(structure, order, n, in_modes, out_modes)
        if plan is not None:
            plans.append(plan)
    return plans


def _linear_chain(structure, order, n, in_modes, out_modes) -> ForwardPlan | None:
    dims = {leg: structure.dim(leg) for leg in in_modes}
    frame = PlanFrame(n, in_modes, dims, (1, 1))
    steps = []
    for i, f in enumerate(order):
        later = {leg for g in order[i + 1 :] for leg in g.legs} | set(out_modes)
        new = stage_step(frame, [f], later, out_modes, (), None, "cpu")
        if new is None:
            return None
        steps.extend(new)
    if list(frame.legs) != list(out_modes):
        if sorted(frame.legs) != sorted(out_modes):
            return None
        perm = [0] + [1 + frame.legs.index(leg) for leg in out_modes] + [len(out_modes) + 1]
        steps.append(
            PermuteStep("copy", 0, 2 * frame.elements, "permute", tuple(perm), frame.shape())
        )
    name = "chain[" + ",".join(f.name for f in order) + "]"
    return ForwardPlan(name, steps, (n, structure.shape[0]))


def linear_sequence(
    layer: TNLinear,
    input_shape: Sequence[int] | None = None,
    *,
    slack: float = 1.0,
    fallback: str = "keep",
    measure: bool = True,
    name: str = "",
) -> nn.Module:
    """The layer as a chain of small ``nn.Linear`` layers (its factors, one at a time).

    Among the orders of the factors (:func:`linear_chains`) and the dense ``nn.Linear``, those
    storing no more parameters than the layer, for ``input_shape`` (default ``(1,
    in_features)``), chosen and checked against ``slack`` as in :func:`conv_sequence`. Steps
    that fold factor legs into the batch run inside :class:`Folded`, grouped steps as a
    :class:`PointwiseConv2d` (on ``(N, features)``); such a chain flattens leading input
    dimensions as ``nn.Linear`` does.

    Examples
    --------
    >>> import torch
    >>> layer = TNLinear(16, 12, format="ttmatrix", ranks=2, out_dims=(3, 4), in_dims=(4, 4))
    >>> seq = linear_sequence(layer, (8, 16), fallback="chain")
    >>> sum(p.numel() for p in seq.parameters()) <= layer.num_params
    True
    >>> x = torch.randn(8, 16)
    >>> bool(torch.allclose(seq(x), layer(x), atol=1e-5))
    True
    """
    options = _options(slack, fallback, measure)
    shape = _shape_of(layer, input_shape)
    dense = [p for p in linear_candidates(layer.structure, shape) if p.family == "dense"]
    plans = dense + linear_chains(layer, shape)
    return _sequence(layer, plans, shape, options, name)


def _maker(layer: TNLayer):
    """The function writing out ``layer`` (other kinds than conv2d/linear: :mod:`.export_nd`)."""
    if isinstance(layer, TNConv2d):
        return conv_sequence
    if isinstance(layer, TNLinear):
        return linear_sequence
    from .export_nd import nd_sequence  # it builds on this module

    return nd_sequence


def to_standard(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    inplace: bool = False,
    *,
    slack: float = 1.0,
    fallback: str = "keep",
    measure: bool = True,
) -> nn.Module:
    """``model`` with every compressed layer rewritten as the plain modules of its plan.

    Each :class:`TNConv2d` becomes :func:`conv_sequence`, each :class:`TNLinear`
    :func:`linear_sequence`: never more parameters than the compressed layer, and the same
    operations as its forward plan for the layer's input shape (taken from one forward of a
    zero input of ``input_shape``; without it, batch 1 at 32x32). The result works for any input
    and outputs the same up to rounding. A layer with no plain form within ``slack`` of its
    time (measured with ``measure``, else estimated) stays compressed (with a warning) unless
    ``fallback="chain"``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from tensornet.nn import TNConv2d
    >>> net = nn.Sequential(TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4)))
    >>> plain = to_standard(net, (2, 8, 6, 6), fallback="chain")  # even if slower here
    >>> [type(m).__name__ for m in plain[0]]
    ['PointwiseConv2d', 'Conv2d', 'PointwiseConv2d']
    >>> all(isinstance(m, nn.Conv2d) for m in plain[0])
    True
    >>> x = torch.randn(2, 8, 6, 6)
    >>> bool(torch.allclose(plain(x), net(x), atol=1e-5))
    True
    """
    _options(slack, fallback, measure)
    target = model if inplace else copy.deepcopy(model)
    layers = {n: m for n, m in target.named_modules() if isinstance(m, TNLayer)}
    shapes: dict[str, tuple[int, ...]] = {}
    if input_shape is not None and layers:
        p0 = next(target.parameters())
        x = torch.zeros(tuple(input_shape), device=p0.device, dtype=p0.dtype)
        modes = {m: m.training for m in target.modules()}
        shapes = layer_inputs(target, x, list(layers))
        for m, mode in modes.items():  # layer_inputs leaves every module in the model's mode
            m.training = mode
    made: dict[int, nn.Module] = {}  # by module: a layer used at two places stays shared
    for name, module in layers.items():
        make = _maker(module)
        new = make(
            module,
            shapes.get(name),
            slack=slack,
            fallback=fallback,
            measure=measure,
            name=name,
        )
        if new is not module:
            new.train(module.training)
            made[id(module)] = new
    if id(target) in made:
        return made[id(target)]
    places = [
        (name, module)
        for name, module in target.named_modules(remove_duplicate=False)
        if id(module) in made
    ]
    for name, module in places:
        replace_module(target, name, made[id(module)])
    return target
