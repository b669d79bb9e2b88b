"""Argument checks shared by every module: integers, finiteness, devices, names.

Each helper raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, bad value)
with a message that names the culprit (the field, node, weight or leg), so that bad input is
refused before any work starts. :func:`check_finite` costs one reduction and one host sync per
tensor; it is meant for entry points, not for inner loops.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "as_int",
    "check_devices",
    "check_finite",
    "check_str",
    "is_int",
    "short_list",
]


def is_int(x: Any) -> bool:
    """True for integers of any library (``int``, numpy and 0-d torch integers), never ``bool``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> is_int(3), is_int(np.int64(3)), is_int(torch.tensor(3)), is_int(True), is_int(3.0)
    (True, True, True, False, False)
    """
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, numbers.Integral):
        return True
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and not x.is_floating_point() and not x.is_complex() and (
            x.dtype != torch.bool
        )
    return False


def as_int(x: Any, field: str, *, low: int | None = None) -> int:
    """``x`` as a Python ``int`` (see :func:`is_int`), else ``TypeError`` naming ``field``.

    With ``low``, values below it raise ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> as_int(np.int32(4), "max_rank", low=1)
    4
    >>> as_int(0, "max_rank", low=1)
    Traceback (most recent call last):
    ...
    ValueError: max_rank must be >= 1, got 0
    """
    if not is_int(x):
        raise TypeError(f"{field} must be an int, got {type(x).__name__} {x!r}")
    value = int(x)
    if low is not None and value < low:
        raise ValueError(f"{field} must be >= {low}, got {value}")
    return value


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``tensor`` holds NaN or inf.

    One reduction on the tensor's device and one host sync; integer tensors pass for free.

    Examples
    --------
    >>> import torch
    >>> check_finite(torch.ones(3), "node 'A'")
    >>> check_finite(torch.tensor([1.0, float("nan")]), "node 'A'")
    Traceback (most recent call last):
    ...
    ValueError: node 'A' holds NaN or inf values (1 of 2 entries); refusing to work on it
    """
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return
    with torch.no_grad():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            count = int(bad.sum())
            raise ValueError(
                f"{what} holds NaN or inf values ({count} of {tensor.numel()} entries); "
                "refusing to work on it"
            )


def check_devices(items: Iterable[tuple[str, torch.Tensor]], what: str) -> torch.device:
    """The one device all named tensors live on, else ``ValueError`` listing them.

    Examples
    --------
    >>> import torch
    >>> check_devices([("A", torch.ones(1)), ("B", torch.ones(1))], "canonicalize")
    device(type='cpu')
    """
    where: dict[str, list[str]] = {}
    for name, t in items:
        where.setdefault(str(t.device), []).append(name)
    if len(where) > 1:
        shown = "{" + ", ".join(f"{dev!r}: {short_list(n, 4)}" for dev, n in where.items()) + "}"
        raise ValueError(
            f"{what}: nodes live on different devices {shown}; move them with .to(device) first"
        )
    if not where:
        raise ValueError(f"{what}: nothing to work on (no nodes)")
    return torch.device(next(iter(where)))


def check_str(x: Any, field: str, *, allow_none: bool = False) -> str | None:
    """``x`` if it is a non-empty ``str`` (or ``None`` when allowed), else ``TypeError``.

    Examples
    --------
    >>> check_str("A", "name"), check_str(None, "name", allow_none=True)
    ('A', None)
    >>> check_str(5, "name")
    Traceback (most recent call last):
    ...
    TypeError: name must be a non-empty str, got int 5
    """
    if x is None and allow_none:
        return None
    if not isinstance(x, str) or not x:
        kind = "a non-empty str" + (" or None" if allow_none else "")
        raise TypeError(f"{field} must be {kind}, got {type(x).__name__} {x!r}")
    return x


def short_list(items: Sequence[Any] | Iterable[Any], limit: int = 8) -> str:
    """``[a, b, ... (n in all)]``: a readable, bounded rendering of a long list.

    Examples
    --------
    >>> short_list(range(20), 3)
    '[0, 1, 2, ... (20 in all)]'
    """
    items = list(items)
    shown = ", ".join(repr(x) if isinstance(x, str) else str(x) for x in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items)} in all)"
    return f"[{shown}]"
