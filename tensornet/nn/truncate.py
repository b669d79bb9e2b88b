"""Truncating a layer's kernel along cuts: the operation of the truncation-along-cuts study.

Along one cut the kernel is matricised across the bipartition of its legs, truncated to ``chi``
singular values (the Eckart-Young-Mirsky optimum) and reshaped back, so the layer keeps its
shape and type. Several cuts are applied in turn, each on the result of the previous one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.node import Node
from ..core.spectrum import Spectrum
from ..core.truncation import Truncation, as_truncation

__all__ = ["KernelTruncation", "truncate_kernel"]

_LEGS = {
    2: ("out", "in"),
    3: ("out", "in", "k"),
    4: ("out", "in", "kh", "kw"),
    5: ("out", "in", "kd", "kh", "kw"),
}


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
        A conv or linear layer (its ``weight`` has legs ``out, in, kh, kw`` / ``out, in``).
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
    from ..spectra import truncate  # the dense cut truncation (module above nn)

    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim not in _LEGS:
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
    legs = _LEGS[weight.ndim]
    original = weight.detach()
    current = original
    spectra, errors, ranks = [], [], []
    for left, policy in zip(steps, policies):
        res = truncate(Node(current, legs), left, policy)
        current = res.tensor
        spectra.append(res.spectrum)
        errors.append(res.step_errors[0])
        ranks.append(res.spectrum.rank_for(policy))
    norm = float(torch.linalg.vector_norm(original))
    error = float(torch.linalg.vector_norm(current - original)) / norm if norm > 0 else 0.0
    kept = float(torch.linalg.vector_norm(current)) / norm if norm > 0 else 1.0
    target = layer if inplace else copy.deepcopy(layer)
    with torch.no_grad():
        target.weight.copy_(current)
    return target, KernelTruncation(
        tuple(steps), tuple(ranks), tuple(spectra), tuple(errors), error, kept
    )
