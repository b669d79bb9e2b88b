"""Figures of an automatic allocation: per layer the error-cost frontier and the chosen point.

:func:`allocation_frontiers` draws, for an :class:`~tensornet.nn.Allocation` of
``allocate(method="auto")``, one panel per layer: every frontier candidate as a point (cost in
the allocation's measure against its error), coloured by format, the chosen one ringed and
named. Like :mod:`tensornet.plot`, it returns a :class:`matplotlib.figure.Figure` built with the
object-oriented API (headless, nothing to close) and saves it when given ``path``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .io import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["allocation_frontiers"]

_UNITS = {"params": "parameters", "flops": "FLOPs", "time": "estimated seconds"}


def allocation_frontiers(
    allocation: Any,
    layers: Sequence[str] | None = None,
    *,
    columns: int = 4,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Per layer, its error-cost frontier by format and the point the allocation chose.

    Parameters
    ----------
    allocation : Allocation
        A result of ``allocate(..., method="auto")`` (it keeps each layer's frontier).
    layers : sequence of str, optional
        The layers to draw, in this order (default: every allocated layer).
    columns : int
        Panels per row (``>= 1``).
    path, title
        Save the figure to this file; set this overall title.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from tensornet.nn import allocate
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    >>> alloc = allocate(net, 0.6, "auto", formats=("svd", "tucker2"))
    >>> fig = allocation_frontiers(alloc)
    >>> len(fig.axes), fig.axes[0].get_title().split(":")[0]  # one layer chosen: "1"
    (1, '1')
    """
    frontiers = getattr(allocation, "frontiers", None)
    if not frontiers:
        raise ValueError("allocation_frontiers: the allocation holds no frontiers (use 'auto')")
    names = list(frontiers) if layers is None else [str(n) for n in layers]
    unknown = [n for n in names if n not in frontiers]
    if unknown or not names:
        raise ValueError(
            f"allocation_frontiers: layers {unknown or names} are not among {list(frontiers)}"
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"allocation_frontiers: columns must be an int >= 1, got {columns!r}")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    cols = min(columns, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    families = sorted({c.label for n in names for c in frontiers[n]})
    colors = {f: f"C{i % 10}" for i, f in enumerate(families)}
    for ax, name in zip(axes, names):
        _panel(ax, name, frontiers[name], allocation.layers[name], colors)
        ax.set_xlabel(_UNITS.get(allocation.measure, allocation.measure))
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    handles = [Line2D([], [], color=colors[f], marker="o", ls="", label=f) for f in families]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _panel(ax: Any, name: str, frontier: Sequence[Any], choice: Any, colors: dict) -> None:
    """One layer: its frontier by format, a line through it, the chosen point ringed."""
    ax.plot([c.cost for c in frontier], [c.error for c in frontier], color="0.8", lw=0.8)
    for c in frontier:
        ax.scatter(c.cost, c.error, color=colors[c.label], s=16, zorder=2)
    chosen = next(
        (c for c in frontier if (c.format, c.ranks, c.params) ==
         (choice.format, tuple(choice.ranks), choice.params)),
        None,
    )  # fmt: skip
    if chosen is not None:
        ax.scatter(chosen.cost, chosen.error, s=120, facecolors="none", edgecolors="k", zorder=3)
    ax.set_title(f"{name}: {choice.label}")
    ax.set_ylabel("error")
    ax.set_xscale("log")
