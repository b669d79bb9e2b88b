"""Truncating a layer's kernel along cuts: the operation of the truncation-along-cuts study.

Along one cut the kernel is matricised across the bipartition of its legs, truncated to ``chi``
singular values (the Eckart-Young-Mirsky optimum) and reshaped back, so the layer keeps its
shape and type. Several cuts are applied in turn, each on the result of the previous one.

A compressed layer (:class:`~tensornet.nn.TNConv2d`, :class:`~tensornet.nn.TNLinear`) is
truncated through its network: a cut must be induced by one bond of the format (removing the
bond splits the factors into the cut's two sides, e.g. ``["out"]`` for Tucker-2 or SVD, any
prefix of a TT's order), and that bond's rank is lowered by the format's own ``truncate``
(which re-orthonormalises first, so the result is the Eckart-Young optimum along the cut). Cuts
no bond induces (CP's hyperedge, a ring, grouped low rank) are refused with a ValueError; turn
the layer dense first (``to_conv()`` / ``to_linear()``) to truncate its kernel there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.node import Node
from ..core.spectrum import Spectrum
from ..core.truncation import Truncation, as_truncation
from ..formats.cuts import DENSE_LIMIT
from ..spectra import truncate as truncate_cut
from ..weights import KERNEL_LEGS

__all__ = ["KernelTruncation", "truncate_kernel"]

# A compressed layer's kernel is rebuilt to find each cut's spectrum: refused above DENSE_LIMIT
# (the size guard of tensornet.formats.cuts, shared with the spectra of compressed kernels).



@dataclass(frozen=True)
class KernelTruncation:
    """What :func:`truncate_kernel` did.

    Per-cut spectra (each taken on the kernel as it was at that step) and errors, the total
    relative Frobenius error ``||K - K'|| / ||K||`` and the kept norm fraction
    ``||K'|| / ||K||``.
    """

    cuts: tuple[tuple[str, ...], ...]
    ranks: tuple[int, ...]
    spectra: tuple[Spectrum, ...]
    step_errors: tuple[float, ...]
    error: float
    norm_kept: float


def _as_cuts(cuts) -> list[tuple[str, ...]]:
    if isinstance(cuts, str):
        return [(cuts,)]
    cuts = list(cuts)
    if cuts and all(isinstance(c, str) for c in cuts):
        return [tuple(cuts)]
    return [(c,) if isinstance(c, str) else tuple(c) for c in cuts]


def truncate_kernel(
    layer: nn.Module,
    cuts: str | Sequence[str] | Sequence[Sequence[str]],
    chi: int | Truncation | Sequence[int | Truncation],
    *,
    inplace: bool = False,
) -> tuple[nn.Module, KernelTruncation]:
    """The layer with its kernel truncated along one or several cuts, and what that cost.

    Parameters
    ----------
    layer : nn.Module
        A conv or linear layer (its ``weight`` has legs ``out, in, kh, kw`` / ``out, in``), or a
        compressed layer (``TNConv2d`` / ``TNLinear``): then each cut must be a bond of its
        format, whose rank is lowered (the layer keeps its format; see the module notes).
    cuts : legs of one cut's left side, or a list of such
        E.g. ``["out"]``, ``["out", "in"]``, or ``[["out"], ["kh"]]``.
    chi : int, Truncation or one per cut
        How many singular values each cut keeps (or a truncation policy).
    inplace : bool
        Change ``layer`` itself instead of a copy.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 16, 3)
    >>> small, res = truncate_kernel(conv, [["out"], ["out", "in"]], 4)
    >>> res.ranks, small.weight.shape == conv.weight.shape, res.error >= max(res.step_errors)
    ((4, 4), True, True)
    """
    from .layers import TNLayer

    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim not in KERNEL_LEGS:
        raise TypeError(
            f"truncate_kernel: expected a conv or linear layer, got {type(layer).__name__}"
        )
    if getattr(layer, "transposed", False):
        raise ValueError("truncate_kernel: transposed convolutions are not supported")
    steps = _as_cuts(cuts)
    if not steps:
        raise ValueError("truncate_kernel: cuts must name at least one cut")
    chis = list(chi) if isinstance(chi, (list, tuple)) else [chi] * len(steps)
    if len(chis) != len(steps):
        raise ValueError(f"truncate_kernel: {len(chis)} chi values for {len(steps)} cuts")
    policies = [as_truncation(c, "chi") for c in chis]
    if any(p is None for p in policies):
        raise ValueError("truncate_kernel: chi must be an int or a Truncation for every cut")
    if isinstance(layer, TNLayer):
        return _truncate_network(layer, steps, policies, inplace)
    return _truncate_dense(layer, weight, steps, policies, inplace)


def _truncate_dense(layer, weight, steps, policies, inplace):
    legs = KERNEL_LEGS[weight.ndim]
    original = weight.detach()
    current = original
    spectra, errors, ranks = [], [], []
    for left, policy in zip(steps, policies):
        res = truncate_cut(Node(current, legs), left, policy)
        current = res.tensor
        spectra.append(res.spectrum)
        errors.append(res.step_errors[0])
        ranks.append(res.spectrum.rank_for(policy))
    # the report first: with inplace=True, ``original`` shares the weight's storage
    report = _report(steps, ranks, spectra, errors, original, current)
    target = layer if inplace else copy.deepcopy(layer)
    with torch.no_grad():
        target.weight.copy_(current)
    return target, report


def _report(steps, ranks, spectra, errors, original, current) -> KernelTruncation:
    norm = float(torch.linalg.vector_norm(original))
    error = float(torch.linalg.vector_norm(current - original)) / norm if norm > 0 else 0.0
    kept = float(torch.linalg.vector_norm(current)) / norm if norm > 0 else 1.0
    return KernelTruncation(tuple(steps), tuple(ranks), tuple(spectra), tuple(errors), error, kept)


def bond_cuts(structure: Any) -> dict[int, frozenset[str]]:
    """Rank index -> the dense legs on one side of the cut its bond induces.

    A rank's bond is the one summed leg whose size follows that rank; it induces a cut of the
    dense legs when it joins exactly two factors and removing it splits the factors into two
    groups, each holding whole dense legs (all their modes). The side given is the smaller one
    (on a tie, the one holding the first dense leg). Ranks without such a bond (CP's
    hyperedge, ring bonds, grouped low rank) are left out.

    Examples
    --------
    >>> from tensornet.formats import get_format
    >>> legs = ("out", "in", "kh", "kw")
    >>> s = get_format("tucker2").structure_for((16, 8, 3, 3), (4, 4), legs=legs)
    >>> {i: sorted(side) for i, side in bond_cuts(s).items()}
    {0: ['out'], 1: ['in']}
    """
    out: dict[int, frozenset[str]] = {}
    summed = structure.summed_legs
    for i, r in enumerate(structure.ranks):
        bigger = list(structure.ranks)
        bigger[i] = r + 1
        other = structure.with_ranks(tuple(bigger))
        changed = [leg for leg in summed if other.dim(leg) != structure.dim(leg)]
        if len(changed) != 1:
            continue
        side = _bond_side(structure, changed[0])
        if side is not None:
            out[i] = side
    return out


def _bond_side(structure: Any, bond: str) -> frozenset[str] | None:
    holders = [f.name for f in structure.factors if bond in f.legs]
    if len(holders) != 2:
        return None
    legs_of = {f.name: set(f.legs) - {bond} for f in structure.factors}
    side, todo = {holders[0]}, [holders[0]]
    while todo:
        name = todo.pop()
        for other, legs in legs_of.items():
            if other not in side and legs & legs_of[name]:
                side.add(other)
                todo.append(other)
    if holders[1] in side:
        return None  # the factors stay connected without the bond
    side_legs = set().union(*(legs_of[n] for n in side))
    dense = set()
    for leg, modes in zip(structure.legs, structure.modes):
        inside = [m in side_legs for m in modes]
        if all(inside):
            dense.add(leg)
        elif any(inside):
            return None  # a dense leg split across the bond
    rest = set(structure.legs) - dense
    if len(rest) < len(dense) or (len(rest) == len(dense) and structure.legs[0] in rest):
        dense = rest  # the smaller side (on a tie, the one holding the first leg)
    return frozenset(dense)


def _truncate_network(layer, steps, policies, inplace):
    what = f"truncate_kernel({type(layer).__name__}, format {layer.format!r})"
    structure = layer.structure
    if structure.dense_size > DENSE_LIMIT:
        raise ValueError(
            f"{what}: the kernel has {structure.dense_size:,} elements, above the "
            f"{DENSE_LIMIT:,} this rebuilds to find each cut's spectrum"
        )
    legs = structure.legs
    all_legs = frozenset(legs)
    original = layer.weight.detach()
    fmt = layer.to_format()
    current = original
    spectra, errors, ranks = [], [], []
    for left, policy in zip(steps, policies):
        unknown = [leg for leg in left if leg not in legs]
        if unknown:
            raise ValueError(f"{what}: cut {list(left)} names legs {unknown} not in {legs}")
        cuts = bond_cuts(fmt.structure)
        wanted = frozenset(left)
        index = next((i for i, c in cuts.items() if wanted in (c, all_legs - c)), None)
        if index is None:
            bonds = [sorted(c) for c in cuts.values()]
            have = f"its bonds cut {bonds}" if bonds else "it has no bond that cuts the kernel"
            raise ValueError(
                f"{what}: no bond of the format induces the cut {list(left)}; {have}. "
                "Truncate the dense layer instead (to_conv() / to_linear())"
            )
        res = truncate_cut(Node(current, legs), left, policy)
        new_ranks = list(fmt.ranks)
        new_ranks[index] = min(new_ranks[index], res.ranks[0])
        fmt = fmt.truncate(ranks=tuple(new_ranks))
        new = fmt.to_dense().to(current.dtype)
        norm = float(torch.linalg.vector_norm(current))
        diff = float(torch.linalg.vector_norm(new - current))
        spectra.append(res.spectrum)
        errors.append(diff / norm if norm > 0 else 0.0)
        ranks.append(new_ranks[index])
        current = new
    target = layer if inplace else copy.deepcopy(layer)
    target._set_format(fmt)
    with torch.no_grad():
        final = target.weight.detach()
    return target, _report(steps, ranks, spectra, errors, original, final)
