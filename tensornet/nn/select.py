r"""Choosing layers of a model: by name pattern, explicit list or predicate. The one place for it.

A pattern matches a layer's whole name as a glob (``"layer1.*"``, ``"fc*"``) or as a regular
expression (``"conv[12]"``, ``r"layer\d\.0\.conv1"``). ``skip=("first", "last")`` leaves out the
first and last of the candidate layers in module order (the usual choice when compressing a CNN).

Examples
--------
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
>>> select_layers(net), select_layers(net, skip=("first", "last")), select_layers(net, "2|3")
(['0', '1', '3'], ['1'], ['3'])
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["NoMatchingLayer", "matches", "select_layers", "supported", "unsupported_reason"]

Selector = str | Sequence[str] | Callable[[str, nn.Module], bool] | None


class NoMatchingLayer(ValueError):
    """A layer name or pattern matched no layer (or no weight)."""


def matches(name: str, pattern: str | None) -> bool:
    """Whole-name match of ``pattern`` as a glob, or as a regular expression.

    ``"layer1.*"`` and ``"conv[12]"`` work either way; ``"fc*"`` matches ``fc`` and ``fc1`` but
    not ``classifier``; ``"1"`` matches only ``1``. Globs that are not valid regexes (``"*conv"``)
    are matched as globs only. ``None`` matches everything.

    Examples
    --------
    >>> matches("fc1", "fc*"), matches("classifier", "fc*"), matches("a1", None)
    (True, False, True)
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"a layer pattern is a str (glob or regex), got {type(pattern).__name__}")
    if pattern is None or fnmatch.fnmatchcase(name, pattern):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _kinds() -> tuple[type, ...]:
    return (nn.modules.conv._ConvNd, nn.Linear)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a conv/linear layer cannot be compressed (``None`` if it can)."""
    if isinstance(module, nn.Linear):
        return None
    if not isinstance(module, nn.modules.conv._ConvNd):
        return f"{type(module).__name__} is not a conv or linear layer"
    if getattr(module, "transposed", False):
        return "transposed convolutions are not supported"
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not supported (Conv2d and Linear are)"
    if module.groups != 1:
        return f"groups={module.groups} is not supported (only groups=1)"
    return None


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
) -> list[str]:
    """Names of the conv and linear layers of ``model`` chosen by ``layers`` minus ``skip``.

    Parameters
    ----------
    layers : str, sequence of str, callable or None
        A pattern (glob or regex on the whole name), explicit names, or a predicate
        ``(name, module) -> bool``; ``None`` takes every layer.
    skip : sequence of str
        ``"first"``/``"last"`` (of the candidates in module order) and/or patterns to leave out.
    strict : bool
        Raise :class:`NoMatchingLayer` when nothing is chosen, and ValueError when an explicitly
        named or matched layer cannot be compressed (grouped or transposed convs, Conv1d/3d).
        With ``layers=None`` such layers are simply not candidates.
    include_unsupported : bool
        Keep unsupported layers among the candidates (for spectra, which work on any weight).
    """
    if isinstance(skip, str):
        skip = (skip,)
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, _kinds())
        and getattr(m, "weight", None) is not None
        and not getattr(m, "transposed", False)
    ]
    names = [n for n, _ in found]
    modules = dict(found)
    if layers is None:
        chosen = [n for n in names if include_unsupported or supported(modules[n])]
        explicit = False
    elif isinstance(layers, str):
        chosen = [n for n in names if matches(n, layers)]
        explicit = True
    elif callable(layers):
        chosen = [n for n in names if layers(n, modules[n])]
        explicit = True
    else:
        wanted = list(layers)
        missing = [n for n in wanted if n not in modules]
        if missing:
            raise NoMatchingLayer(f"layers {missing} are not conv/linear layers; found {names}")
        chosen = [n for n in names if n in wanted]
        explicit = True
    if strict and explicit and not include_unsupported:
        for n in chosen:
            reason = unsupported_reason(modules[n])
            if reason:
                raise ValueError(f"layer {n!r} cannot be compressed: {reason}")
    drop = set()
    for entry in skip:
        if entry == "first" and chosen:
            drop.add(chosen[0])
        elif entry == "last" and chosen:
            drop.add(chosen[-1])
        elif entry not in ("first", "last"):
            drop.update(n for n in chosen if matches(n, entry))
    chosen = [n for n in chosen if n not in drop]
    if strict and not chosen:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise NoMatchingLayer(
            f"no conv/linear layer matches {layers!r} (skip={tuple(skip)}); layers are: {shown}"
        )
    return chosen
