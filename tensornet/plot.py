"""Figures for spectra, truncation studies and networks.

Every function returns a :class:`matplotlib.figure.Figure`. Pass ``ax`` to draw into an existing
Axes (its root figure is returned), and ``path`` to save the figure (PNG, PDF, SVG, ... by
extension; parent folders are created). Figures are built with the object-oriented API and never
touch pyplot's global state, so this works headless and nothing needs closing. matplotlib is
imported on first use, keeping ``import tensornet`` light.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .core.network import TensorNetwork
from .core.spectrum import Spectrum
from .io import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .spectra import SpectrumTable

__all__ = ["bond_spectra", "draw_network", "entropy_heatmap", "network_layout", "recovery_curve",
           "sweep_curves", "truncation_curves"]

#: Above this many curves the automatic legend is left out (it would hide the data).
MAX_LEGEND = 12

LayoutKind = Literal["auto", "chain", "spring", "circular"]
_XY = dict[str, np.ndarray]  # node name -> position


# -- shared plumbing -------------------------------------------------------------------------
def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure.figure, ax  # the root Figure, also when ax lives in a SubFigure
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax: Axes, title: str | None, path: str | os.PathLike | None) -> Figure:
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _as_list(spectra: Spectrum | SpectrumTable | Iterable[Spectrum]) -> list[Spectrum]:
    items = [spectra] if isinstance(spectra, Spectrum) else list(spectra)
    for sp in items:
        if not isinstance(sp, Spectrum):
            raise TypeError(f"expected Spectrum objects, got {type(sp).__name__}")
    return items


def _labels(spectra: list[Spectrum], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(spectra):
            raise ValueError(f"{len(labels)} labels for {len(spectra)} spectra")
        return [str(label) for label in labels]
    names = {sp.name for sp in spectra}
    cut_labels = {sp.label for sp in spectra}
    out = []
    for sp in spectra:
        if sp.name is None or len(names) == 1:
            out.append(sp.label)  # one layer's cuts: its name belongs in the title
        elif len(cut_labels) == 1:
            out.append(str(sp.name))  # one cut across layers
        else:
            out.append(f"{sp.name} ({sp.label})")
        if getattr(sp, "format", ""):  # a compressed kernel's: its format and its bond's rank
            out[-1] += f" [{sp.format}" + ("]" if sp.rank is None else f", rank {sp.rank}]")
    return out


def _colors(n: int, cmap: str | None) -> list | None:
    if cmap is None:
        return None
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return [cm(x) for x in np.linspace(0.0, 0.9, n)] if n > 1 else [cm(0.0)]


def _legend(ax: Axes, n: int, legend: bool | Literal["auto"]) -> None:
    if legend is True or (legend == "auto" and 0 < n <= MAX_LEGEND):
        ax.legend(fontsize="small", ncols=2 if n > 6 else 1, framealpha=0.8)


def _positive(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y > 0  # zeros (and exact-rank tails) have no place on a log axis
    return x[keep], y[keep]


def _tidy_axes(ax: Axes, integer_x: bool, log_y: bool) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = ax.get_ylim()
    if not (log_y and low > 0 and high / low < 12):
        return
    # About a decade or less: plain tick labels (0.6, not 6x10^-1). Under 3x, evenly spaced
    # values (a log locator has next to no ticks there); else the minor ticks at 2, 3 and 5
    # times a power of ten, as the others would crowd near the top.
    if high / low < 3:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        return

    def label(v: float, _: int) -> str:
        return f"{v:g}" if round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in (1, 2, 3, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _chi_marker(ax: Axes, chi: int | None) -> None:
    if chi is None:
        return
    if isinstance(chi, bool) or not isinstance(chi, int) or chi < 0:
        raise ValueError(f"chi must be an int >= 0, got {chi!r}")
    ax.axvline(chi, color="0.3", linestyle="--", linewidth=1.0, label=f"χ = {chi}", zorder=1)


# -- spectra ---------------------------------------------------------------------------------
def bond_spectra(
    spectra: Spectrum | SpectrumTable | Iterable[Spectrum],
    chi: int | None = None,
    normalize: bool = True,
    labels: Sequence[str] | None = None,
    *,
    legend: bool | Literal["auto"] = "auto",
    cmap: str | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Singular values against their index (1-based), on a log axis, several spectra overlaid.

    Parameters
    ----------
    spectra : Spectrum, SpectrumTable or iterable of Spectrum
    chi : int, optional
        Draw a dashed vertical line at this index (the last value kept at bond dimension chi).
    normalize : bool
        Plot ``s / s_max`` (default) rather than the raw values.
    labels : sequence of str, optional
        Legend entries; default: ``name (cut)``, or just the cut (the name) when all spectra
        share one name (one cut).
    legend : bool or "auto"
        "auto" shows a legend for up to ``MAX_LEGEND`` curves.
    cmap : str, optional
        Colour the curves in order along this colormap (e.g. "viridis" for many layers) rather
        than with the default colour cycle.
    ax, path, title
        Draw into this Axes; save to this file; set this title.

    Zero values are left out (a log axis). A compressed kernel's spectrum is labelled with its
    format, with a dotted line in its colour at its bond's rank (if below ``chi_max``): what
    the compression discarded lies past it.

    Examples
    --------
    >>> import torch, tensornet as tn
    >>> from tensornet import plot
    >>> sp = tn.spectrum(torch.randn(16, 8, 3, 3), ["out"], name="conv")
    >>> fig = plot.bond_spectra([sp], chi=4)
    >>> len(fig.axes[0].lines)  # the spectrum and the chi marker
    2
    """
    items = _as_list(spectra)
    fig, ax = _axes(ax, (6.4, 4.2))
    colors = _colors(len(items), cmap)
    for i, (sp, label) in enumerate(zip(items, _labels(items, labels))):
        y = (sp.normalized() if normalize else sp.values).numpy()
        x, y = _positive(np.arange(1, sp.chi_max + 1), y)
        (line,) = ax.plot(x, y, marker="." if sp.chi_max <= 64 else None, markersize=4,
                          linewidth=1.2, label=label, color=None if colors is None else colors[i])
        if getattr(sp, "rank", None) is not None and sp.rank < sp.chi_max:
            ax.axvline(sp.rank, color=line.get_color(), linestyle=":", linewidth=1.0, zorder=1)
    _chi_marker(ax, chi)
    ax.set_yscale("log")
    _tidy_axes(ax, integer_x=True, log_y=True)
    ax.set_xlabel("index i")
    ax.set_ylabel("$s_i / s_1$" if normalize else "$s_i$")
    ax.grid(True, which="major", alpha=0.3)
    _legend(ax, len(items) + (chi is not None), legend)
    return _finish(fig, ax, title, path)


def truncation_curves(
    spectra: Spectrum | SpectrumTable | Iterable[Spectrum],
    log: bool = True,
    fraction: bool = False,
    labels: Sequence[str] | None = None,
    *,
    chi: int | None = None,
    legend: bool | Literal["auto"] = "auto",
    cmap: str | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Relative Frobenius error of the best rank-chi approximation against chi, per spectrum.

    Parameters
    ----------
    spectra : Spectrum, SpectrumTable or iterable of Spectrum
    log : bool
        Log y axis (default); the exact zero at ``chi = chi_max`` is then left out.
    fraction : bool
        Plot against ``chi / chi_max`` so that cuts of different sizes share one axis.
    labels, legend, cmap, chi, ax, path, title
        As in :func:`bond_spectra` (``chi`` only when ``fraction`` is False).

    Examples
    --------
    >>> import torch, tensornet as tn
    >>> from tensornet import plot
    >>> sp = tn.spectrum(torch.randn(16, 8, 3, 3), ["out"])
    >>> line = plot.truncation_curves(sp, log=False).axes[0].lines[0]
    >>> line.get_ydata().tolist() == sp.relative_errors().tolist()
    True
    """
    items = _as_list(spectra)
    if fraction and chi is not None:
        raise ValueError("chi marks an absolute bond dimension; it cannot be used with fraction")
    fig, ax = _axes(ax, (6.4, 4.2))
    colors = _colors(len(items), cmap)
    for i, (sp, label) in enumerate(zip(items, _labels(items, labels))):
        x = np.arange(sp.chi_max + 1, dtype=float)
        if fraction:
            x = x / max(sp.chi_max, 1)
        y = sp.relative_errors().numpy()
        if log:
            x, y = _positive(x, y)
        ax.plot(x, y, linewidth=1.2, label=label, color=None if colors is None else colors[i])
    _chi_marker(ax, chi)
    if log:
        ax.set_yscale("log")
    _tidy_axes(ax, integer_x=not fraction, log_y=log)
    ax.set_xlabel("χ / χ_max" if fraction else "χ (values kept)")
    ax.set_ylabel(r"relative error $\|T - T_\chi\| \,/\, \|T\|$")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(items) + (chi is not None), legend)
    return _finish(fig, ax, title, path)


def entropy_heatmap(
    table: SpectrumTable,
    alpha: float = 1.0,
    *,
    annotate: bool | None = None,
    fmt: str = ".2f",
    cmap: str = "viridis",
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Heat map of the entropy of every layer (rows) along every cut (columns).

    Parameters
    ----------
    table : SpectrumTable
    alpha : float
        Renyi order (1: von Neumann), in nats.
    annotate : bool, optional
        Write each value in its cell (default: when there are at most 400 cells).
    fmt : str
        Format of the annotations.
    cmap, ax, path, title
        Colormap; draw into this Axes; save to this file; set this title.

    Cells of cuts a layer does not have (a linear layer next to conv layers) are left blank;
    compressed layers are named with their format (``"conv2 [tucker2]"``).

    Examples
    --------
    >>> import torch, tensornet as tn
    >>> from tensornet import plot
    >>> table = tn.weight_spectra({"conv": torch.randn(8, 4, 3, 3), "fc": torch.randn(10, 8)})
    >>> fig = plot.entropy_heatmap(table)
    >>> fig.axes[0].images[0].get_array().shape
    (2, 8)
    """
    layers, cut_labels, e = table.entropy_matrix(alpha)
    rows, cols = e.shape
    width = min(2.5 + 0.8 * cols + 0.06 * max(map(len, layers), default=0), 16.0)
    height = min(1.8 + 0.32 * rows, 24.0)
    fig, ax = _axes(ax, (width, height))
    image = ax.imshow(np.ma.masked_invalid(e), cmap=cmap, aspect="auto", interpolation="nearest")
    name = "entropy" if alpha == 1 else f"Rényi-{alpha:g} entropy"
    # on ax.figure, which may be a SubFigure of the figure returned
    ax.figure.colorbar(image, ax=ax, label=f"{name} (nats)", shrink=0.9)
    ax.set_xticks(range(cols), cut_labels, rotation=40, ha="right", rotation_mode="anchor")
    compressed = table.compressed
    ax.set_yticks(range(rows), [f"{n} [{compressed[n]}]" if n in compressed else n for n in layers])
    ax.set_xlabel("cut")
    ax.set_ylabel("layer")
    ax.tick_params(length=0)
    if annotate is None:
        annotate = rows * cols <= 400
    if annotate:
        norm = image.norm
        for (i, j), v in np.ndenumerate(e):
            if np.isnan(v):
                continue
            dark = norm(v) < 0.6  # viridis-like maps: light text on the dark lower part
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize="small",
                    color="white" if dark else "black")
    return _finish(fig, ax, title, path)


# -- truncation studies ----------------------------------------------------------------------
def sweep_curves(
    rows: Iterable[Mapping[str, Any]],
    x: str = "chi",
    y: str = "accuracy",
    *,
    baseline: float | None = None,
    group: str | None = "layer",
    hue: str = "cut",
    logx: bool | None = None,
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """A metric against a truncation parameter, from the rows of a truncation sweep.

    Parameters
    ----------
    rows : iterable of mapping
        E.g. from :func:`tensornet.analysis.truncation_sweep`: ``layer, cut, chi, norm_kept``,
        ``rel_error`` and the evaluated metrics.
    x, y : str
        Columns to plot; points of one curve are sorted by ``x``.
    baseline : float, optional
        A dashed horizontal reference (the untruncated model's metric).
    group : str or None
        One panel per value of this column (default: per layer). With None, rows are told apart
        by ``hue`` alone, in one Axes; with a given ``ax``, by ``group`` and ``hue`` in it.
    hue : str
        One curve per value of this column within a panel (default: per cut).
    logx : bool, optional
        Log-2 x axis; default: when ``x == "chi"``.
    ax, path, title
        Draw into this Axes; save to this file; set this (figure) title.

    Examples
    --------
    >>> from tensornet import plot
    >>> rows = [{"layer": "conv", "cut": "out|in,kh,kw", "chi": c, "accuracy": a}
    ...         for c, a in [(1, 0.2), (2, 0.6), (4, 0.9)]]
    >>> fig = plot.sweep_curves(rows, baseline=0.95)
    >>> fig.axes[0].lines[0].get_ydata().tolist()
    [0.2, 0.6, 0.9]
    """
    panels = _sweep_panels(rows, (x, y, hue, group), group if ax is None else None)
    fig, axes = _panel_grid(len(panels)) if ax is None else (ax.figure.figure, [ax])
    logx = x == "chi" if logx is None else logx
    colours: dict[Any, str] = {}  # one colour per curve key, the same in every panel
    handles: dict[str, Any] = {}
    for panel_ax, (name, members) in zip(axes, panels.items()):
        curves: dict[Any, list] = {}
        for row in members:
            key = row[hue] if name is not None or group is None else (row[group], row[hue])
            curves.setdefault(key, []).append((row[x], row[y]))
        for key, points in curves.items():
            label = " ".join(map(str, key)) if isinstance(key, tuple) else str(key)
            colour = colours.setdefault(key, f"C{len(colours) % 10}")
            (line,) = panel_ax.plot(*zip(*sorted(points, key=lambda p: p[0])), marker="o",
                                    markersize=3, linewidth=1.2, label=label, color=colour)
            handles.setdefault(label, line)
        if baseline is not None:
            handles["baseline"] = panel_ax.axhline(
                baseline, color="0.3", linestyle="--", linewidth=1.0, label="baseline", zorder=1
            )
        _sweep_axes(panel_ax, x, y, logx, name)
    for extra in axes[len(panels):]:
        extra.remove()
    if len(panels) > 1:
        fig.legend(handles=list(handles.values()), loc="outside right upper", fontsize="small")
    else:
        _legend(axes[0], len(handles), "auto")
    if title and ax is None:
        fig.suptitle(title)
    return _finish(fig, axes[0], title if ax is not None else None, path)


def _sweep_panels(rows: Iterable[Mapping[str, Any]], columns: tuple, group: str | None) -> dict:
    """Rows by panel (by ``group``; all in one panel ``None`` without), columns checked."""
    rows = list(rows)
    for row in rows:
        missing = [key for key in columns if key is not None and key not in row]
        if missing:
            raise KeyError(f"sweep row has no column {missing[0]!r}; columns are {list(row)}")
    if group is None:
        return {None: rows}
    panels: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        panels.setdefault(row[group], []).append(row)
    return panels


def _panel_grid(count: int) -> tuple[Figure, list[Axes]]:
    """A new figure with a grid of at least ``count`` panels (2 x 2 for four, else <= 3 wide)."""
    from matplotlib.figure import Figure

    cols = 2 if count == 4 else min(count, 3) or 1
    n_rows = max(math.ceil(count / cols), 1)
    fig = Figure(figsize=(4.6 * cols + 1.0, 3.4 * n_rows), layout="constrained")
    return fig, list(fig.subplots(n_rows, cols, squeeze=False).ravel())


def _sweep_axes(ax: Axes, x: str, y: str, logx: bool, name: Any) -> None:
    """Labels, grid, log-2 x axis (optional) and title of one sweep panel."""
    if logx:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    if name is not None:
        ax.set_title(str(name))


def recovery_curve(
    history: Sequence[float],
    before: float | None = None,
    truncated: float | None = None,
    *,
    ylabel: str = "accuracy",
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """A metric over epochs of re-training after truncation.

    Parameters
    ----------
    history : sequence of float
        The metric after each epoch (epochs 1, 2, ...).
    before : float, optional
        The metric before truncation, as a dashed reference line.
    truncated : float, optional
        The metric right after truncation, drawn at epoch 0.
    ylabel, ax, path, title
        Axis label; draw into this Axes; save to this file; set this title.

    Examples
    --------
    >>> from tensornet import plot
    >>> fig = plot.recovery_curve([0.8, 0.9], before=0.95, truncated=0.4)
    >>> fig.axes[0].lines[0].get_ydata().tolist()
    [0.4, 0.8, 0.9]
    """
    fig, ax = _axes(ax, (5.4, 3.6))
    ys = ([] if truncated is None else [truncated]) + [float(v) for v in history]
    start = 0 if truncated is not None else 1
    ax.plot(range(start, start + len(ys)), ys, marker="o", markersize=4, linewidth=1.4,
            label="re-training")
    if before is not None:
        ax.axhline(before, color="0.3", linestyle="--", linewidth=1.0, label="before truncation")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0: just truncated)" if truncated is not None else "epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _finish(fig, ax, title, path)


# -- networks --------------------------------------------------------------------------------
def _adjacency(net: TensorNetwork) -> tuple[list[str], np.ndarray]:
    names = list(net.names)
    index = {name: i for i, name in enumerate(names)}
    adj = np.zeros((len(names), len(names)))
    for bond in net.bonds:
        a, b = index[bond.nodes[0]], index[bond.nodes[1]]
        adj[a, b] = adj[b, a] = 1.0
    return names, adj


def _chain_order(adj: np.ndarray) -> list[int] | None:
    """Node order along the chain when the graph is a single path, else None."""
    n = len(adj)
    degree = adj.sum(1)
    if n < 2 or degree.max() > 2 or adj.sum() / 2 != n - 1:
        return None
    order = [int(np.argmin(degree))]
    while len(order) < n:
        nxt = [j for j in np.flatnonzero(adj[order[-1]]) if j not in order]
        if not nxt:
            return None  # disconnected
        order.append(int(nxt[0]))
    return order


def _spring(adj: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Fruchterman-Reingold layout from a circle, deterministic (fixed small perturbation)."""
    n = len(adj)
    angle = 2 * np.pi * np.arange(n) / n
    pos = np.stack([np.cos(angle), np.sin(angle)], 1)
    pos += 1e-3 * np.random.default_rng(0).standard_normal(pos.shape)  # break exact symmetry
    k = 1.0 / math.sqrt(n)
    step = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 1e-3)
        force = k * k / dist**2 - adj * dist / k  # repulsion minus attraction, per unit delta
        np.fill_diagonal(force, 0.0)
        disp = (delta * force[..., None]).sum(1)
        length = np.maximum(np.linalg.norm(disp, axis=-1, keepdims=True), 1e-9)
        pos += disp / length * np.minimum(length, step)
        step = max(step * 0.98, 1e-3)
    return pos


def network_layout(
    net: TensorNetwork, kind: LayoutKind = "auto"
) -> dict[str, tuple[float, float]]:
    """Deterministic 2-D positions for the nodes of ``net``, bonds about one unit long.

    ``"auto"`` lays a single path (an MPS) out on a horizontal line and anything else with a
    spring layout; ``"circular"`` puts the nodes on a circle in network order.

    Examples
    --------
    >>> import torch, tensornet as tn
    >>> nodes = [tn.Node(torch.ones(2, 2), (f"b{i}", f"b{i+1}"), name=f"A{i}") for i in range(3)]
    >>> network_layout(tn.TensorNetwork(nodes))
    {'A0': (0.0, 0.0), 'A1': (1.0, 0.0), 'A2': (2.0, 0.0)}
    """
    names, adj = _adjacency(net)
    n = len(names)
    if n == 0:
        return {}
    if n == 1:
        return {names[0]: (0.0, 0.0)}
    order = _chain_order(adj) if kind in ("auto", "chain") else None
    if kind == "chain" and order is None:
        raise ValueError("the network is not a chain (a single path of bonds)")
    if order is not None:
        pos = np.zeros((n, 2))
        pos[order, 0] = np.arange(n, dtype=float)
        if order[0] > order[-1]:  # keep network order left to right
            pos[:, 0] = n - 1 - pos[:, 0]
    elif kind == "circular":
        angle = np.pi / 2 - 2 * np.pi * np.arange(n) / n
        pos = np.stack([np.cos(angle), np.sin(angle)], 1) / (2 * math.sin(math.pi / n))
    elif kind in ("auto", "spring"):
        pos = _spring(adj)
        pos -= pos.mean(0)
        edges = np.argwhere(np.triu(adj) > 0)
        lengths = np.linalg.norm(pos[edges[:, 0]] - pos[edges[:, 1]], axis=1)
        scale = np.median(lengths) if len(lengths) else np.min(
            [np.linalg.norm(pos[i] - pos[j]) for i in range(n) for j in range(i)]
        )
        pos /= scale
    else:
        raise ValueError(f"unknown layout {kind!r}; use 'auto', 'chain', 'spring' or 'circular'")
    return {name: (float(x) + 0.0, float(y) + 0.0) for name, (x, y) in zip(names, pos.round(12))}


def _stub_angles(bond_angles: list[float], count: int) -> list[float]:
    """Directions for ``count`` open legs, spread evenly inside the widest gap between bonds.

    The gap that faces down is preferred (physical legs of a chain hang below it).
    """
    if not bond_angles:
        return [-np.pi / 2 + 2 * np.pi * k / count for k in range(count)]
    a = sorted(float(x) for x in np.mod(bond_angles, 2 * np.pi))
    following = a[1:] + [a[0] + 2 * np.pi]
    gaps = [(start, end - start) for start, end in zip(a, following)]

    def score(gap: tuple[float, float]) -> tuple[float, float]:
        return round(gap[1], 6), -math.sin(gap[0] + gap[1] / 2)  # widest, then most downward

    start, width = max(gaps, key=score)
    return [start + width * (k + 1) / (count + 1) for k in range(count)]


def draw_network(
    net: TensorNetwork,
    layout: LayoutKind | Mapping[str, tuple[float, float]] = "auto",
    *,
    bond_labels: Literal["dim", "leg", "both"] = "dim",
    ax: Axes | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a tensor network: nodes as labelled circles, bonds as lines, open legs as stubs.

    Parameters
    ----------
    net : TensorNetwork
    layout : str or mapping name -> (x, y)
        A :func:`network_layout` kind, or explicit positions (bonds best about 1 apart).
    bond_labels : {"dim", "leg", "both"}
        Label bonds with their dimension (default), their leg name, or ``leg=dim``. Open legs
        are labelled with their leg name.
    ax, path, title
        Draw into this Axes; save to this file; set this title.

    Text artists carry ids for inspection: ``node:<name>``, ``bond:<leg>`` and ``leg:<leg>``.

    Examples
    --------
    >>> import torch, tensornet as tn
    >>> from tensornet import plot
    >>> a = tn.Node(torch.ones(2, 3), ("i", "j"), name="A")
    >>> b = tn.Node(torch.ones(3, 4), ("j", "k"), name="B")
    >>> fig = plot.draw_network(tn.TensorNetwork([a, b]))
    >>> sorted(t.get_text() for t in fig.axes[0].texts)
    ['3', 'A', 'B', 'i', 'k']
    """
    from matplotlib.patches import Circle

    pos = dict(network_layout(net, layout)) if isinstance(layout, str) else dict(layout)
    missing = [name for name in net.names if name not in pos]
    if missing:
        raise ValueError(f"layout has no position for nodes {missing}")
    xy = {name: np.asarray(pos[name], dtype=float) for name in net.names}
    points = list(xy.values())
    span = np.ptp(np.array(points), axis=0) if points else np.zeros(2)
    fig, ax = _axes(ax, (float(np.clip(1.6 * span[0] + 2.5, 3, 12)),
                         float(np.clip(1.6 * span[1] + 2.2, 2.2, 10))))
    angles = _draw_bonds(ax, net, xy, bond_labels)
    extent = points + _draw_open_legs(ax, net, xy, angles)
    for name, centre in xy.items():
        ax.add_patch(Circle(centre, 0.22, facecolor="#dce9f5", edgecolor="0.2", linewidth=1.2,
                            zorder=2))
        ax.text(centre[0], centre[1], name, ha="center", va="center", fontsize="small",
                zorder=4, gid=f"node:{name}")
    ax.set_aspect("equal")
    ax.set_axis_off()
    if extent:
        lo, hi = np.min(extent, axis=0) - 0.45, np.max(extent, axis=0) + 0.45
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    return _finish(fig, ax, title, path)


def _draw_bonds(ax: Axes, net: TensorNetwork, xy: _XY, bond_labels: str) -> dict[str, list]:
    """Draw the bonds (parallel ones bow apart); return the angles each node's bonds leave at."""
    label_box = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9)
    pairs: dict[frozenset, list] = {}
    for bond in net.bonds:
        pairs.setdefault(frozenset(bond.nodes), []).append(bond)
    angles: dict[str, list[float]] = {name: [] for name in net.names}
    for group in pairs.values():
        for k, bond in enumerate(group):
            p, q = xy[bond.nodes[0]], xy[bond.nodes[1]]
            d = q - p
            normal = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-12)
            bow = (k - (len(group) - 1) / 2) * 0.35
            t = np.linspace(0, 1, 33)[:, None]
            ctrl = (p + q) / 2 + 2 * bow * normal  # quadratic Bezier reaching `bow` at its middle
            curve = (1 - t) ** 2 * p + 2 * (1 - t) * t * ctrl + t**2 * q
            ax.plot(curve[:, 0], curve[:, 1], color="0.25", linewidth=1.5, zorder=1)
            text = {"dim": str(bond.dim), "leg": bond.leg, "both": f"{bond.leg}={bond.dim}"}
            mid = curve[16]
            ax.text(mid[0], mid[1], text[bond_labels], ha="center", va="center", fontsize="small",
                    color="0.15", bbox=label_box, zorder=3, gid=f"bond:{bond.leg}")
            for name, end in zip(bond.nodes, (p, q)):
                towards = ctrl - end  # the curve's tangent at this end
                angles[name].append(math.atan2(towards[1], towards[0]))
    return angles


def _draw_open_legs(ax: Axes, net: TensorNetwork, xy: _XY, angles: dict[str, list]) -> list:
    """Draw open legs as stubs pointing away from the bonds; return their label positions."""
    stub = 0.55
    tips = []
    open_legs = set(net.open_legs)
    for node in net.nodes:
        legs = [leg for leg in node.legs if leg in open_legs]
        for leg, angle in zip(legs, _stub_angles(angles[node.name], len(legs))):
            direction = np.array([math.cos(angle), math.sin(angle)])
            start, end = xy[node.name], xy[node.name] + stub * direction
            ax.plot([start[0], end[0]], [start[1], end[1]], color="0.25", linewidth=1.5, zorder=1)
            tip = xy[node.name] + (stub + 0.15) * direction
            ax.text(tip[0], tip[1], leg, ha="center", va="center", fontsize="small",
                    color="tab:blue", gid=f"leg:{leg}")
            tips.append(tip)
    return tips
