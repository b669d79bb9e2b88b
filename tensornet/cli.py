"""The ``tensornet`` command line.

``tensornet spectra CHECKPOINT`` reads a state_dict (safetensors, or ``torch.save`` loaded with
``weights_only=True``), computes the spectrum of every cut of every weight, writes a CSV and three
figures, and prints a summary. In a file written by :func:`tensornet.nn.save` each compressed
layer is one kernel, its format rebuilt from the file's records and its spectra taken through its
network (:mod:`tensornet.checkpoints`). Errors the user can fix (a missing or unreadable file, a
pattern that matches nothing, weights holding NaN or inf, two weights with one layer name, records
that cannot be interpreted) end with one line ``tensornet: error: ...`` on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import CLIError, load_kernels, load_state_dict
from .io import save_figure

if TYPE_CHECKING:  # torch and the spectra load only when a command runs, not for --help
    import torch

    from .core.spectrum import Spectrum
    from .formats import Format
    from .spectra import SpectrumTable

__all__ = ["CLIError", "load_state_dict", "main"]

PROG = "tensornet"
PLOTS = ("bond_spectra.png", "entropy_heatmap.png", "truncation_curves.png")


# -- report ----------------------------------------------------------------------------------
def _layer_shapes(state: Mapping[str, torch.Tensor | Format]) -> dict[str, tuple[int, ...]]:
    """Shapes by layer name, named as :func:`weight_spectra` names layers."""
    from .spectra import layer_name

    shapes = {layer_name(name): tuple(w.shape) for name, w in state.items()}
    return {name: shape for name, shape in shapes.items() if 2 <= len(shape) <= 5}


def _kernel_kinds(state: Mapping[str, torch.Tensor | Format]) -> dict[str, str]:
    """``"tucker2(4,3)"`` (format and ranks) by compressed layer name; none if all are dense."""
    from .formats import Format
    from .spectra import layer_name

    return {
        layer_name(name): f"{w.name}({','.join(map(str, w.ranks))})"
        for name, w in state.items()
        if isinstance(w, Format)
    }


EXACT = "exact (chi >= chi_max)"
NORMALISATION = (
    "(picked cut: lowest normalised entropy S/log(chi_max), 0 = rank one, 1 = flat spectrum;\n"
    " trivial cuts (chi_max = 1, e.g. a size-1 leg) are left out of the pick and of S min/max)"
)


def _pick(spectra: Sequence[Spectrum]) -> Spectrum | None:
    """The non-trivial cut of lowest normalised entropy (the first on ties); None if none.

    Raw entropies cannot be compared across cuts: ``S <= log chi_max``, so a leg of size 3
    always looks better than a wide cut, however low-rank the wide cut is.
    """
    candidates = [sp for sp in spectra if not sp.trivial]
    if not candidates:
        return None
    return min(candidates, key=lambda sp: sp.normalized_entropy())


def _summary_row(
    layer: str, shape: tuple[int, ...], spectra: Sequence[Spectrum], chi: int | None
) -> list[str]:
    """One summary row: the picked cut, its size and entropies, the layer's entropy range."""
    best = _pick(spectra)
    entropies = [sp.entropy() for sp in spectra if not sp.trivial]
    row = [layer, "x".join(map(str, shape)) or "?"]
    if best is None:  # every cut is trivial: a rank-one layer with a single value per cut
        return row + ["-", "1", "-", "-", "-", "1.00"] + ([] if chi is None else [EXACT])
    row += [
        best.label,
        str(best.chi_max),
        f"{best.normalized_entropy():.3f}",
        f"{min(entropies):.3f}",
        f"{max(entropies):.3f}",
        f"{best.effective_rank():.2f}",
    ]
    if chi is not None:
        row.append(f"{best.relative_error(chi):.3g}" if chi < best.chi_max else EXACT)
    return row


def _summary(
    table: SpectrumTable,
    shapes: Mapping[str, tuple[int, ...]],
    chi: int | None = None,
    kinds: Mapping[str, str] | None = None,
) -> str:
    """Plain aligned text, one row per layer, and a line saying how cuts are compared.

    Each row: the layer's shape; with ``kinds`` (compressed layers -> ``"format(ranks)"``), a
    column ``kernel`` giving it, or ``dense``; its cut of lowest normalised entropy
    ``S / log(chi_max)`` among the non-trivial cuts (``chi_max >= 2``), with that cut's
    ``chi_max``, normalised entropy and effective rank ``exp(S)``; the range of the raw entropy
    ``S`` over the non-trivial cuts; and, with ``chi``, the relative error of keeping ``chi``
    values at the picked cut, or ``exact (chi >= chi_max)`` where ``chi`` keeps them all.
    """
    by_layer: dict[str, list[Spectrum]] = {}
    for sp in table:
        by_layer.setdefault(str(sp.name), []).append(sp)
    header = ["layer", "shape", "cut of lowest S/log(chi_max)", "chi_max", "S/log(chi_max)"]
    header += ["S min", "S max", "eff. rank"]
    if chi is not None:
        header.append(f"err@chi={chi}")
    rows = [header] + [
        _summary_row(layer, shapes.get(layer, ()), spectra, chi)
        for layer, spectra in by_layer.items()
    ]
    if kinds:
        for row in rows:
            row.insert(2, "kernel" if row is header else kinds.get(row[0], "dense"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = range(4 if kinds else 3, len(header))
    lines = [  # the last column is numeric (right-aligned): no trailing spaces to strip
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(NORMALISATION)
    return "\n".join(lines)


def _panels(table: SpectrumTable) -> dict[str, list[Spectrum]]:
    """One-vs-rest spectra grouped by the single leg on the left (out, in, kh, ...)."""
    groups: dict[str, list[Spectrum]] = {}
    for sp in table:
        if len(sp.left_legs) == 1:
            groups.setdefault(sp.left_legs[0], []).append(sp)
    return groups


def _overview(
    table: SpectrumTable, draw: Callable[..., Any], path: Path, title: str, chi: int | None
) -> None:
    """A grid with one panel per one-vs-rest cut, every layer overlaid, colours fixed per layer."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    groups = _panels(table)
    layers = table.layers
    many = len(layers) > 10
    if many:  # depth along a colormap: a 50-entry legend would be unreadable
        cmap = colormaps["viridis"]
        colour = {layer: cmap(0.9 * i / (len(layers) - 1)) for i, layer in enumerate(layers)}
    else:
        colour = {layer: f"C{i}" for i, layer in enumerate(layers)}
    cols = min(len(groups), 2)
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(5.0 * cols + (1.6 if many else 2.2), 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (leg, spectra) in zip(axes, groups.items()):
        # a marker beyond every rank in the panel only squeezes the curves
        marker = chi if chi is not None and chi < max(sp.chi_max for sp in spectra) else None
        draw(
            spectra,
            chi=marker,
            labels=[str(sp.name) for sp in spectra],
            legend=False,
            ax=ax,
            title=f"{leg} | rest",
        )
        current = None
        for line in ax.lines:  # each curve, then a compressed layer's rank line in its colour
            if line.get_label() in colour:
                current = colour[line.get_label()]
            if current is not None and not line.get_label().startswith("χ"):
                line.set_color(current)
    for ax in axes[len(groups) :]:
        ax.remove()
    if many:
        steps = ListedColormap([colour[layer] for layer in layers])
        mappable = ScalarMappable(Normalize(-0.5, len(layers) - 0.5), cmap=steps)
        bar = fig.colorbar(mappable, ax=list(axes[: len(groups)]), shrink=0.7, aspect=30)
        bar.set_ticks([0, len(layers) - 1], labels=[layers[0], layers[-1]])
        bar.ax.set_title("layer", fontsize="small")
    else:
        handles = [
            next(
                line for ax in axes[: len(groups)] for line in ax.lines if line.get_label() == layer
            )
            for layer in layers
        ]
        handles += [line for line in axes[0].lines if line.get_label().startswith("χ")]
        fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle(title)
    save_figure(fig, path)


def _write_outputs(table: SpectrumTable, out: Path, chi: int | None, plots: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "spectra.csv"]
    table.to_csv(paths[0])
    if not plots:
        return paths
    from . import plot

    paths += [out / name for name in PLOTS]
    _overview(table, plot.bond_spectra, paths[1], "Normalised singular values, one leg | rest", chi)
    plot.entropy_heatmap(table, path=paths[2], title="Entanglement entropy of every cut")
    _overview(
        table,
        plot.truncation_curves,
        paths[3],
        "Relative error of the best rank-χ approximation, one leg | rest",
        chi,
    )
    return paths


# -- commands --------------------------------------------------------------------------------
def _spectra(args: argparse.Namespace) -> int:
    from .spectra import weight_spectra
    from .weights import NoMatchingLayer

    path = Path(args.checkpoint)
    state = load_kernels(path)
    try:
        table = weight_spectra(state, layers=args.layers)
    except (NoMatchingLayer, ValueError) as e:  # no match, NaN/inf weights, colliding names
        raise CLIError(f"{path}: {e}") from None
    out = Path(args.out) if args.out else Path(f"spectra-{path.stem}")
    try:
        written = _write_outputs(table, out, args.chi, plots=not args.no_plots)
    except OSError as e:
        raise CLIError(f"cannot write to {out}: {e.strerror or e}") from None
    print(_summary(table, _layer_shapes(state), args.chi, _kernel_kinds(state)))
    print()
    print(
        f"{_count(len(table.layers), 'layer')}, {_count(len(table), 'cut')}; wrote "
        + ", ".join(str(p) for p in written)
    )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _chi(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands: ``spectra``)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Tensor-network tools for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    spectra = sub.add_parser(
        "spectra",
        help="entanglement spectra of every weight in a checkpoint",
        description="Spectrum of every cut of every 2-5 dimensional weight in a state_dict: "
        "writes spectra.csv, bond_spectra.png, entropy_heatmap.png and truncation_curves.png "
        "to DIR, and prints a summary. In a file written by tensornet.nn.save, each compressed "
        "layer is its kernel, rebuilt from the file's records and factors (never the factors "
        "as layers), marked by its format and ranks. The summary picks, per layer, the cut of "
        "lowest normalised entropy S/log(chi_max) (0: rank one, 1: flat spectrum), so that cuts of "
        "different sizes compare fairly; trivial cuts (chi_max = 1, e.g. the size-1 legs of a "
        "1x1 conv) are left out of the pick (spectra.csv gives them normalized_entropy nan).",
    )
    spectra.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a .safetensors file (also one written by tensornet.nn.save), or a state_dict "
        "saved with torch.save",
    )
    spectra.add_argument(
        "--layers",
        metavar="PATTERN",
        help="only layers whose name matches this glob or regular expression",
    )
    spectra.add_argument(
        "--out", metavar="DIR", help="output folder (default: ./spectra-<checkpoint stem>)"
    )
    spectra.add_argument(
        "--chi",
        metavar="CHI",
        type=_chi,
        help="bond dimension to mark in the plots; the summary then shows the relative "
        "error of keeping CHI values at each layer's picked cut, or 'exact (chi >= chi_max)' "
        "where that cut has at most CHI values",
    )
    spectra.add_argument(
        "--no-plots",
        action="store_true",
        help="write only spectra.csv (much faster for large models)",
    )
    spectra.set_defaults(run=_spectra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status.

    Examples
    --------
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: tensornet [-h] COMMAND ...
    ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
