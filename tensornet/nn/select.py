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
>>> net = nn.Sequential(nn.ConvTranspose1d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten())
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
    matches,
    shown_names,
)
from ..weights import layer_aliases as _layer_aliases
from ..weights import select_with_notes as _select_with_notes
from .kinds import unsupported_reason as _kind_reason

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
    """Why a conv/linear layer cannot be compressed (``None`` if it can): see :mod:`.kinds`.

    Examples
    --------
    >>> from torch import nn
    >>> grouped_1d = nn.Conv1d(4, 4, 3, groups=2)
    >>> unsupported_reason(nn.Conv2d(4, 4, 3, groups=4)), unsupported_reason(grouped_1d)
    (None, 'groups=2 is not supported (only groups=1)')
    """
    return _kind_reason(module)


def layer_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """:func:`tensornet.weights.layer_aliases` with transposed convs (compression takes some)."""
    return _layer_aliases(model, transposed=True)


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
        named or matched layer cannot be compressed (grouped transposed convs, ConvTranspose1d/3d).
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
    return _select_with_notes(model, layers, skip, strict, refuse, example_input, True)
