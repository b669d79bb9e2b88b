"""The candidate forwards of a compressed layer: a registry of plan families.

A compressed layer holds the factors of a :class:`~tensornet.formats.Structure`. There are many
ways to apply them to an input, and which is fastest depends on the input's shape and the device.
Each way is a *family* of :class:`~tensornet.nn.plans.ForwardPlan` candidates, registered for a
layer kind (``"conv"`` or ``"linear"``) with :func:`register_forward`:

- conv ``dense``: rebuild the kernel from the factors, then one ``F.conv2d``;
- conv ``staged`` and ``separable``: a sequence of small operations (:mod:`.staging`);
- conv ``patches``: unfold the input into patches and contract patches and factors as one
  planned einsum;
- linear ``dense`` (rebuild ``W``, then ``F.linear``) and ``direct`` (one planned einsum of the
  input and the factors).

A new forward is one registered function. :func:`conv_candidates` / :func:`linear_candidates`
collect every family's plans for one input shape (:mod:`.cost` prices them and picks one), and a
layer's ``plan="<family>"`` is looked up here by family (each plan records the family that
built it), so forcing a new family needs nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..core.einsum import plan_einsum
from ..formats.structure import Structure
from .geometry import ConvGeometry
from .plans import EinsumStep, ForwardPlan, LinearStep, MatmulStep, Step, UnfoldStep, WeightExpr
from .staging import Placements, build_staged

__all__ = [
    "ConvGeometry",
    "ForwardPlan",
    "PlanFamily",
    "Step",
    "candidates",
    "conv_candidates",
    "families",
    "linear_candidates",
    "max_elements",
    "patches_plan",
    "plan_names",
    "register_forward",
    "spatial_legs",
    "unregister_forward",
]

# Reserved leg names of the activation frame (batch, patch positions).
_B, _L = "__batch", "__patches"

# grouped_conv: groups > 1 (.grouped_plans); conv3d, conv_transpose2d: .plans_nd
KINDS = ("conv", "linear", "grouped_conv", "conv3d", "conv_transpose2d")
# Plan policies every layer takes besides the families (never a family's name).
POLICIES = ("auto", "measure")

#: ``build(structure, geometry, input_shape, device_type)``: the family's plans for one input
#: shape (``geometry`` is ``None`` for a linear layer, whose input shape is ``(N, in)``).
Builder = Callable[[Structure, "ConvGeometry | None", tuple, str], Iterable[ForwardPlan]]


@dataclass(frozen=True)
class PlanFamily:
    """A registered family of forward plans: its name, builder and plan names.

    ``names(structure)`` gives the exact plan names the family can build for a structure (no
    input shape needed, so a ``plan=`` is checked at construction); empty when the family does
    not apply to it.
    """

    name: str
    build: Builder
    names: Callable[[Structure], Sequence[str]]


_REGISTRY: dict[str, dict[str, PlanFamily]] = {kind: {} for kind in KINDS}


def register_forward(
    kind: str,
    family: str,
    *,
    names: Callable[[Structure], Sequence[str]] | None = None,
    replace: bool = False,
) -> Callable[[Builder], Builder]:
    """Register a family of forward plans for ``kind`` layers (a decorator).

    Parameters
    ----------
    kind
        ``"conv"`` (dense legs ``(out, in, kh, kw)``) or ``"linear"`` (``(out, in)``).
    family
        The family's name: what ``plan=`` forces. Not a policy (``"auto"``, ``"measure"``).
    names
        ``names(structure)``: the exact names of the plans the family builds for a structure
        (default: just ``family`` for every structure).
    replace
        Allow replacing a registered family of that name (else ValueError).

    Returns
    -------
    The decorator, which returns the builder unchanged. The builder is called as
    ``build(structure, geometry, input_shape, device_type)`` and returns the family's plans for
    that input shape (maybe none); each plan's ``family`` is set to ``family``.

    Examples
    --------
    >>> from tensornet.nn.plans import ForwardPlan
    >>> @register_forward("linear", "doc-example")
    ... def _nothing(structure, geometry, input_shape, device_type):
    ...     return []
    >>> "doc-example" in families("linear")
    True
    >>> unregister_forward("linear", "doc-example")
    """
    if kind not in KINDS:
        raise ValueError(f"register_forward: kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(family, str) or not family or family in POLICIES:
        raise ValueError(
            f"register_forward: family must be a non-empty name other than {POLICIES}, "
            f"got {family!r}"
        )
    if family in _REGISTRY[kind] and not replace:
        raise ValueError(f"register_forward: {kind} family {family!r} is already registered")

    def decorate(build: Builder) -> Builder:
        listed = names if names is not None else (lambda structure: (family,))
        _REGISTRY[kind][family] = PlanFamily(family, build, listed)
        return build

    return decorate


def unregister_forward(kind: str, family: str) -> None:
    """Remove a registered family (KeyError naming it if there is none)."""
    if family not in _REGISTRY.get(kind, {}):
        raise KeyError(f"no {kind} forward family {family!r}")
    del _REGISTRY[kind][family]


def families(kind: str) -> tuple[str, ...]:
    """The registered families of ``kind`` layers, in registration order.

    Examples
    --------
    >>> families("linear")[:2]
    ('dense', 'direct')
    """
    return tuple(_REGISTRY[kind])


def plan_names(kind: str, structure: Structure) -> dict[str, tuple[str, ...]]:
    """Family -> the exact plan names it can build for ``structure`` (families that apply).

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> s = get_format("svd").structure_for((6, 4), (2,), legs=("out", "in"))
    >>> plan_names("linear", s)
    {'dense': ('dense',), 'direct': ('direct',)}
    """
    out = {}
    for fam in _REGISTRY[kind].values():
        names = tuple(fam.names(structure))
        if names:
            out[fam.name] = names
    return out


def candidates(
    kind: str,
    structure: Structure,
    geometry: ConvGeometry | None,
    input_shape: Sequence[int],
    device_type: str = "cpu",
) -> list[ForwardPlan]:
    """The plans of every registered ``kind`` family for one input shape, in family order.

    ``geometry`` is ``None`` for a linear layer (input shape ``(N, in)``). Each plan's
    ``family`` names the family that built it.
    """
    input_shape = tuple(int(n) for n in input_shape)
    plans = []
    for fam in _REGISTRY[kind].values():
        for plan in fam.build(structure, geometry, input_shape, device_type):
            plan.family = fam.name
            plans.append(plan)
    return plans


def conv_candidates(
    structure: Structure,
    geometry: ConvGeometry,
    input_shape: Sequence[int],
    device_type: str = "cpu",
) -> list[ForwardPlan]:
    """Every forward plan of a conv layer with this structure, for one input shape.

    ``structure`` has dense legs ``(out, in, kh, kw)``; the plans of every registered conv
    family, in registration order (``dense`` first).

    Examples
    --------
    >>> import torch
    >>> from tensornet.formats import get_format
    >>> s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3))
    >>> plans = conv_candidates(s, ConvGeometry.from_conv_args((3, 3), padding=1), (2, 6, 5, 5))
    >>> plans[0].name, plans[-1].name, plans[0].output_shape
    ('dense', 'patches', (2, 8, 5, 5))
    """
    return candidates("conv", structure, geometry, input_shape, device_type)


def linear_candidates(
    structure: Structure, input_shape: Sequence[int], device_type: str = "cpu"
) -> list[ForwardPlan]:
    """Forward plans of a linear layer (dense legs ``(out, in)``) for input ``(N, in)``."""
    return candidates("linear", structure, None, input_shape, device_type)


# -- the conv families -------------------------------------------------------------------------
def spatial_legs(structure: Structure) -> tuple[str, str] | None:
    """The kernel's ``kh`` and ``kw`` legs; ``None`` when one is tensorized (no plans then)."""
    rows, cols = structure.modes[2], structure.modes[3]
    return (rows[0], cols[0]) if len(rows) == len(cols) == 1 else None


def max_elements(structure: Structure, geometry: ConvGeometry, input_shape: tuple) -> int:
    """The largest intermediate worth building for a conv: that of the unfolded patches."""
    batch, _, rows, cols = input_shape
    out_rows, out_cols = geometry.output_size(rows, cols)
    largest = max(math.prod(input_shape), batch * structure.shape[0] * out_rows * out_cols)
    return (geometry.kernel[0] * geometry.kernel[1] + 1) * largest


def _placement_names(pick: str, structure: Structure) -> tuple[str, ...]:
    """Names of the ``pick`` (``"staged"``/``"separable"``) placements of ``structure``."""
    spatial = spatial_legs(structure)
    if spatial is None:
        return ()
    return tuple(name for name, _ in getattr(Placements(structure, spatial), pick)())


def _placement_plans(pick: str, structure, geometry, input_shape, device_type):
    """The buildable plans of the ``pick`` placements (``"dense"``, ``"staged"``, ...)."""
    spatial = spatial_legs(structure)
    if spatial is None:
        return []
    placements = Placements(structure, spatial)
    variants = [("dense", placements.dense())] if pick == "dense" else getattr(placements, pick)()
    limit = max_elements(structure, geometry, input_shape)
    plans = []
    for name, stages in variants:
        plan = build_staged(name, stages, structure, geometry, input_shape, device_type, limit)
        if plan is not None:
            plans.append(plan)
    return plans


def _single_name(name: str, structure: Structure) -> tuple[str, ...]:
    """``(name,)`` when the kernel's spatial legs are plain, else nothing."""
    return (name,) if spatial_legs(structure) else ()


@register_forward("conv", "dense", names=functools.partial(_single_name, "dense"))
def _dense_conv(structure, geometry, input_shape, device_type):
    """Rebuild the kernel, then one conv."""
    return _placement_plans("dense", structure, geometry, input_shape, device_type)


@register_forward("conv", "staged", names=functools.partial(_placement_names, "staged"))
def _staged(structure, geometry, input_shape, device_type):
    """Channels in, the spatial part, channels out."""
    return _placement_plans("staged", structure, geometry, input_shape, device_type)


@register_forward("conv", "separable", names=functools.partial(_placement_names, "separable"))
def _separable(structure, geometry, input_shape, device_type):
    """As staged, with the spatial part split into a kh and a kw conv."""
    return _placement_plans("separable", structure, geometry, input_shape, device_type)


@register_forward("conv", "patches", names=functools.partial(_single_name, "patches"))
def _patches(structure, geometry, input_shape, device_type):
    """Unfold the input into patches; one planned einsum of the patches and the factors."""
    spatial = spatial_legs(structure)
    if spatial is None:
        return []
    return [patches_plan(structure, spatial, geometry, input_shape)]


def patches_plan(
    structure: Structure,
    spatial: tuple[str, str],
    geometry: ConvGeometry,
    input_shape: tuple[int, ...],
) -> ForwardPlan:
    """Unfold the input, then one planned einsum of the patches and ``structure``'s factors.

    The unfold is one ungrouped conv's; ``spatial`` names the structure's kh and kw legs.
    Shared by the plain convs' and the grouped convs' (block structure) patches families.
    """
    batch, channels, rows, cols = input_shape
    kh, kw = geometry.kernel
    out_hw = geometry.output_size(rows, cols)
    positions = out_hw[0] * out_hw[1]
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    unfold_elements = batch * channels * (rows * cols + kh * kw * positions)
    unfold_geo = dataclasses.replace(geometry, groups=1)
    unfold = UnfoldStep(
        "unfold", 0, unfold_elements, f"unfold {kh}x{kw}", unfold_geo, (batch, channels, rows, cols)
    )
    patch_shape = (batch, *(structure.dim(m) for m in in_modes), kh, kw, positions)
    inputs = [(_B, *in_modes, *spatial, _L)] + [f.legs for f in structure.factors]
    shapes = [patch_shape] + [f.shape for f in structure.factors]
    limit = max_elements(structure, geometry, input_shape)
    plan, program = plan_einsum(inputs, shapes, (_B, *out_modes, _L), memory_limit=limit)
    names = tuple(f.name for f in structure.factors)
    elements = batch * (channels * kh * kw + structure.shape[0]) * positions
    label = "einsum(patches, factors)"
    ein = EinsumStep("einsum", plan.flops, elements, label, names, program, patch_shape)
    peak = max(batch * channels * kh * kw * positions, plan.largest_intermediate)
    out_shape = (batch, structure.shape[0], *out_hw)
    return ForwardPlan("patches", [unfold, ein], out_shape, peak_elements=peak)


# -- the linear families -----------------------------------------------------------------------
@register_forward("linear", "dense")
def _dense_linear(structure, geometry, input_shape, device_type):
    """Rebuild ``W``, then ``F.linear``."""
    n, features = input_shape
    out_features = structure.shape[0]
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    weight = WeightExpr.build(
        structure.factors, (*out_modes, *in_modes), (1, out_features, features)
    )
    flops = 2 * n * features * out_features + weight.flops
    label = f"linear {features}->{out_features}"
    inner = MatmulStep(
        "matmul", flops, n * (features + out_features), label, weight, (1, n, 1, features, 1)
    )
    peak = n * out_features
    return [ForwardPlan("dense", [LinearStep(inner)], (n, out_features), peak_elements=peak)]


@register_forward("linear", "direct")
def _direct_linear(structure, geometry, input_shape, device_type):
    """One planned einsum of the input and the factors."""
    n, features = input_shape
    out_features = structure.shape[0]
    in_modes, out_modes = structure.modes[1], structure.modes[0]
    factors = structure.factors
    inputs = [(_B, *in_modes)] + [f.legs for f in factors]
    shapes = [(n, *(structure.dim(m) for m in in_modes))] + [f.shape for f in factors]
    plan, program = plan_einsum(inputs, shapes, (_B, *out_modes))
    names = tuple(f.name for f in factors)
    elements = n * (features + out_features)
    step = EinsumStep(
        "einsum", plan.flops, elements, "einsum(input, factors)", names, program, shapes[0]
    )
    peak = max(plan.largest_intermediate, n * out_features)
    return [ForwardPlan("direct", [step], (n, out_features), peak_elements=peak)]
