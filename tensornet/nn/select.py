"""Choosing the layers to compress: :func:`tensornet.weights.select_layers` with what nn supports.

Selection itself (patterns, explicit names, predicates, ``skip=("first", "last")``, shared
modules) lives in :mod:`tensornet.weights`, the ground floor that spectra and analysis use too;
this module adds what only compression knows: which conv/linear layers a compressed layer can
replace (:func:`unsupported_reason`). The names of :mod:`tensornet.weights` used here are
re-exported, so ``tensornet.nn.select_layers`` and ``tensornet.nn.select.end_layers`` keep
working.

Examples
--------
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten())
>>> select_layers(net), select_layers(net, include_unsupported=True)
(['1'], ['0', '1'])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..weights import (
    EndLayers,
    NoMatchingLayer,
    Selector,
    end_layers,
    layer_aliases,
    matches,
    shown_names,
)
from ..weights import select_with_notes as _select_with_notes

__all__ = [
    "EndLayers",
    "NoMatchingLayer",
    "Selector",
    "end_layers",
    "layer_aliases",
    "matches",
    "select_layers",
    "select_with_notes",
    "shown_names",
    "supported",
    "unsupported_reason",
]


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a conv/linear layer cannot be compressed (``None`` if it can).

    Examples
    --------
    >>> from torch import nn
    >>> unsupported_reason(nn.Conv2d(4, 4, 3, groups=4)), unsupported_reason(nn.Conv3d(2, 2, 1))
    (None, 'Conv3d is not supported (Conv2d and Linear are)')
    """
    if isinstance(module, nn.Linear):
        return None
    if not isinstance(module, nn.modules.conv._ConvNd):
        return f"{type(module).__name__} is not a conv or linear layer"
    if module.transposed:
        return "transposed convolutions are not supported"
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not supported (Conv2d and Linear are)"
    return None  # any groups: grouped and depthwise convs too


def supported(module: nn.Module) -> bool:
    """True when the layer can be compressed."""
    return unsupported_reason(module) is None


def select_layers(
    model: nn.Module,
    layers: Selector = None,
    skip: Sequence[str] = (),
    *,
    strict: bool = True,
    include_unsupported: bool = False,
    example_input: Any = None,
) -> list[str]:
    """Names of the conv and linear layers of ``model`` chosen by ``layers`` minus ``skip``.

    :func:`tensornet.weights.select_layers` refusing the layers that cannot be compressed
    (:func:`unsupported_reason`) unless ``include_unsupported``.

    Parameters
    ----------
    layers : str, sequence of str, callable or None
        A pattern (glob or regex on the whole name), explicit names, or a predicate
        ``(name, module) -> bool``; ``None`` takes every layer.
    skip : sequence of str
        ``"first"``/``"last"`` (the model's input/output layers, see :func:`end_layers`) and/or
        patterns to leave out; a pattern that matches no conv/linear layer raises
        :class:`NoMatchingLayer` naming the layers.
    strict : bool
        Raise :class:`NoMatchingLayer` when nothing is chosen, and ValueError when an explicitly
        named or matched layer cannot be compressed (transposed convs, Conv1d/3d).
        With ``layers=None`` such layers are simply not candidates.
    include_unsupported : bool
        Keep unsupported layers among the candidates (for spectra, which work on any weight).
    example_input : tensor or tuple, optional
        Finds ``"first"``/``"last"`` by one forward (see :func:`end_layers`).

    Returns
    -------
    list of str
        First names (see :func:`layer_aliases`) in module order.
    """
    chosen, notes = select_with_notes(
        model, layers, skip, strict, include_unsupported, example_input
    )
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return chosen


def select_with_notes(
    model: nn.Module,
    layers: Selector,
    skip: Sequence[str],
    strict: bool,
    include_unsupported: bool,
    example_input: Any,
) -> tuple[list[str], list[str]]:
    """:func:`select_layers` and its notes (how ``"first"``/``"last"`` were found)."""
    refuse = None if include_unsupported else unsupported_reason
    return _select_with_notes(model, layers, skip, strict, refuse, example_input)
