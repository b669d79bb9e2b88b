"""Entanglement spectra of dense tensors: any cut, all cuts of a kernel, all layers of a model.

Spectra are computed from singular values only (no singular vectors), so memory stays at the
size of the matricisation. Matricisations of equal shape are batched. For single- or
half-precision inputs the values come from the eigenvalues of the float64 Gram matrix of the
smaller side (``M M^T`` or ``M^T M``): one matmul and one small symmetric eigensolve, accurate
to float64 rounding relative to the largest value, which is far below float32's own rounding.
Float64 inputs use ``torch.linalg.svdvals`` directly.

Every entry point refuses tensors holding NaN or inf with a ValueError that names the weight
(one reduction per tensor), before any work.

A compressed kernel is given as its :class:`~tensornet.formats.Format` (a compressed layer's
``to_format()``; :func:`model_spectra` finds compressed layers through
:func:`tensornet.weights.layer_kernel`). Its spectra come from the format's network
(:func:`tensornet.formats.format_cut`): exact through the tree gauge where a bond induces the
cut, with no dense kernel; otherwise from the contracted kernel, refused above
``max_elements``. They are :class:`CompressedSpectrum` objects, which carry the format and the
rank of the bond that made the cut. (This module was ``tensornet.spectrum``, a name
that collided with the function :func:`tensornet.spectrum`.)
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from .core.linalg import svdvals, truncated_svd
from .core.node import Node, as_tensor
from .core.spectrum import Spectrum, cuts
from .core.truncation import Truncation, as_truncation
from .core.validate import check_finite, is_int
from .formats.base import Format
from .formats.cuts import DENSE_LIMIT, format_cut
from .io import atomic_path
from .weights import KERNEL_LEGS, NoMatchingLayer, kernel_legs, layer_aliases, layer_kernel
from .weights import matches as name_matches

__all__ = [
    "CompressedSpectrum",
    "NoMatchingLayer",
    "Spectrum",
    "SpectrumTable",
    "TruncationResult",
    "cuts",
    "cut_key",
    "cut_spectra",
    "spectrum",
    "kernel_spectra",
    "layer_name",
    "name_matches",
    "weight_spectra",
    "model_spectra",
    "truncate",
    "KERNEL_LEGS",
]

Method = Literal["auto", "svd", "gram"]
Kernel = torch.Tensor | Format


@dataclass(frozen=True, eq=False)
class CompressedSpectrum(Spectrum):
    """The spectrum of a cut of a compressed kernel, with the format it came from.

    ``rank`` is the rank of the format's bond that induces the cut (the values past it are
    zero: what the compression discarded there); ``None`` when no bond induces it.

    Examples
    --------
    >>> import torch
    >>> from tensornet.formats import LowRank
    >>> fmt = LowRank.from_dense(torch.randn(6, 4, dtype=torch.float64), ranks=2)
    >>> sp = spectrum(fmt, [fmt.legs[0]])
    >>> sp.format, sp.rank, sp.chi_max, sp.as_dict()["compressed"]
    ('svd', 2, 4, True)
    """

    format: str = ""
    rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """:meth:`Spectrum.as_dict` with ``compressed``, ``format`` and the bond's ``rank``."""
        return {**super().as_dict(), "compressed": True, "format": self.format, "rank": self.rank}


def _format_spectrum(
    fmt: Format, left_legs: Sequence[str] | str, name: str | None, max_elements: int
) -> CompressedSpectrum:
    res = format_cut(fmt, left_legs, max_elements)
    sp = res.spectrum
    return CompressedSpectrum(sp.values, sp.left_legs, sp.right_legs, name, fmt.name, res.rank)


def _as_node(x: Node | Any, legs: Sequence[str] | None, what: str = "x") -> Node:
    """``x`` as a Node with ``legs``, checked to be finite (ValueError naming ``what``)."""
    if isinstance(x, Node):
        node = x.transpose(legs) if legs is not None and tuple(legs) != x.legs else x
        check_finite(node.tensor, x.describe() if x.name is not None else what)
        return node
    t = as_tensor(x)
    node = Node(t, kernel_legs(t.ndim) if legs is None else legs)
    check_finite(node.tensor, what)
    return node


def _resolve_left(
    node: Node, left_legs: Sequence[str | int] | str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(left_legs, str) or is_int(left_legs):
        left_legs = (left_legs,)
    try:
        left_legs = tuple(left_legs)
    except TypeError:
        raise TypeError(
            f"left_legs must be leg names or axis positions of {node.legs}, got "
            f"{type(left_legs).__name__} {left_legs!r}"
        ) from None
    left = []
    for leg in left_legs:
        if is_int(leg):
            if not -node.ndim <= int(leg) < node.ndim:
                raise ValueError(f"left_legs: axis {leg} is out of range for legs {node.legs}")
            leg = node.legs[int(leg)]
        elif not isinstance(leg, str):
            raise TypeError(
                f"left_legs must hold leg names or axis positions, got {type(leg).__name__} "
                f"{leg!r}"
            )
        left.append(leg)
    left = tuple(left)
    for leg in left:
        node.axis(leg)
    if not left or len(left) == node.ndim or len(set(left)) != len(left):
        raise ValueError(
            f"left_legs {left} must be a non-empty proper subset of the legs {node.legs} "
            "without repeats"
        )
    return left, tuple(leg for leg in node.legs if leg not in left)


def _singular_values(batch: torch.Tensor, method: Method) -> torch.Tensor:
    """Singular values of a batch of equal-shape matrices ``(b, m, n)``, descending."""
    m, n = batch.shape[-2], batch.shape[-1]
    if method not in ("auto", "svd", "gram"):
        raise ValueError(f"method must be 'auto', 'svd' or 'gram', got {method!r}")
    if method == "auto":
        method = "svd" if batch.dtype in (torch.float64, torch.complex128) else "gram"
    if method == "svd":
        return svdvals(batch)
    wide = batch.to(torch.complex128 if batch.is_complex() else torch.float64)
    gram = wide @ wide.mH if m <= n else wide.mH @ wide
    eig = torch.linalg.eigvalsh(gram).real if gram.is_complex() else torch.linalg.eigvalsh(gram)
    return eig.flip(-1).clamp_min(0).sqrt()


def spectrum(
    x: Node | torch.Tensor | Any,
    left_legs: Sequence[str | int] | str,
    legs: Sequence[str] | None = None,
    name: str | None = None,
    method: Method = "auto",
    max_elements: int = DENSE_LIMIT,
) -> Spectrum:
    """Spectrum of one cut of a dense tensor (values only), or of a compressed kernel.

    Parameters
    ----------
    x : Node, tensor, array-like or Format
        The tensor; a plain tensor gets ``legs`` (default: :data:`KERNEL_LEGS` for 2-5 dims,
        else ``"d0", "d1", ...``). A :class:`~tensornet.formats.Format` gives a
        :class:`CompressedSpectrum` computed through its network (``legs`` and ``method`` do
        not apply; ``max_elements`` guards the cuts that need its dense tensor).
    left_legs : sequence of str or int
        One side of the cut (names, or axis positions).
    method : {"auto", "svd", "gram"}
        ``"svd"``: ``torch.linalg.svdvals`` in the input precision; ``"gram"``: eigenvalues of the
        float64 Gram matrix of the smaller side; ``"auto"``: svd for float64, gram otherwise.

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    >>> sp = spectrum(w, ["out", "in"])
    >>> sp.label, sp.chi_max
    ('out,in|kh,kw', 9)
    """
    if isinstance(x, Format):
        _no_legs(legs, x)
        return _format_spectrum(x, left_legs, name, max_elements)
    node = _as_node(x, legs, "x" if name is None else repr(name))
    left, right = _resolve_left(node, left_legs)
    s = _singular_values(node.matricize(left).unsqueeze(0), method)[0]
    return Spectrum(s, left, right, name=name)


def _no_legs(legs: Sequence[str] | None, fmt: Format) -> None:
    if legs is not None and tuple(legs) != fmt.legs:
        raise ValueError(
            f"legs {tuple(legs)} do not apply to a {fmt.name} kernel with legs {fmt.legs}"
        )


def kernel_spectra(
    weights: Kernel | Mapping[str, Kernel] | Sequence[Kernel],
    legs: Sequence[str] | None = None,
    method: Method = "auto",
    max_elements: int = DENSE_LIMIT,
) -> list[Spectrum]:
    """Every cut of one or many weight tensors (7 per conv2d kernel), batched by shape.

    All matricisations of equal shape (across cuts and across weights) go through one batched
    call on the tensors' device. A compressed kernel (a :class:`~tensornet.formats.Format`)
    gets :class:`CompressedSpectrum` objects computed through its network.

    Parameters
    ----------
    weights : tensor or Format, or mapping name -> those, or sequence of those
        Conv kernels ``(out, in, kh, kw)``, linear weights ``(out, in)``, ...
    legs : sequence of str, optional
        Leg names (default :data:`KERNEL_LEGS` by number of dimensions; a Format's own).
    max_elements : int
        Size guard for a compressed kernel's cuts that no bond induces (its dense kernel and
        every intermediate may hold at most this many elements, else ValueError).

    Returns
    -------
    list of Spectrum
        Weight by weight, cut by cut (in :func:`cuts` order); ``name`` is the mapping key (or
        the position) when several weights are given.

    Examples
    --------
    >>> import torch
    >>> spectra = kernel_spectra(torch.randn(32, 16, 3, 3))
    >>> [sp.label for sp in spectra]  # doctest: +NORMALIZE_WHITESPACE
    ['out|in,kh,kw', 'in|out,kh,kw', 'kh|out,in,kw', 'kw|out,in,kh',
     'out,in|kh,kw', 'out,kh|in,kw', 'out,kw|in,kh']
    """
    if isinstance(weights, Mapping):
        items = list(weights.items())
    elif isinstance(weights, (list, tuple)):
        items = [(str(i), w) for i, w in enumerate(weights)]
    elif weights is None or isinstance(weights, (str, bytes)):
        raise TypeError(
            "kernel_spectra takes a tensor, a mapping name -> tensor or a sequence of tensors, "
            f"got {type(weights).__name__}"
        )
    else:
        items = [(None, weights)]  # one weight: its spectra are unnamed
    done: list[Spectrum | tuple[str | None, tuple[str, ...], tuple[str, ...], int]] = []
    matrices: list[torch.Tensor] = []
    for name, w in items:
        if isinstance(w, Format):
            _no_legs(legs, w)
            done += [_format_spectrum(w, left, name, max_elements) for left, _ in cuts(w.legs)]
            continue
        label = "weight" if name is None else f"weight {name!r}"
        node = _as_node(w.detach() if isinstance(w, torch.Tensor) else w, legs, label)
        if node.ndim < 2:
            raise ValueError(f"weight {name!r} has shape {node.shape}; a cut needs >= 2 legs")
        for left, right, j in _shared_cuts(node, cuts(node.legs), matrices):
            done.append((name, left, right, j))
    values = _batched_values(matrices, method)  # one SVD per distinct matricisation
    out: list[Spectrum] = []
    for job in done:
        if not isinstance(job, Spectrum):  # a dense kernel's cut: its shared values
            name, left, right, j = job
            job = Spectrum(values[j], left, right, name=name)
        out.append(job)
    return out


def cut_key(node: Node, left_legs: Sequence[str]) -> frozenset[frozenset[str]]:
    """What a cut's singular values depend on: its two sides with the size-1 legs dropped.

    A leg of size 1 can sit on either side of a cut without changing the matrix (up to a
    transpose), and a cut and its complement have the same singular values; so two cuts of
    ``node`` with the same key have the same spectrum (for a 1x1 kernel, 4 of its 7 cuts are the
    same ``out x in`` matrix). The legs must be legs of ``node`` (not checked here).

    Examples
    --------
    >>> import torch
    >>> node = Node(torch.ones(4, 3, 1, 1), ("out", "in", "kh", "kw"))
    >>> cut_key(node, ("out",)) == cut_key(node, ("out", "kh")) == cut_key(node, ("in",))
    True
    >>> cut_key(node, ("out",)) == cut_key(node, ("kh",))
    False
    """
    big = {leg for leg in node.legs if node.dim(leg) > 1}
    side = frozenset(big.intersection(left_legs))
    return frozenset((side, frozenset(big - side)))


def _shared_cuts(
    node: Node,
    resolved: Iterable[tuple[tuple[str, ...], tuple[str, ...]]],
    matrices: list[torch.Tensor],
) -> list[tuple[tuple[str, ...], tuple[str, ...], int]]:
    """Each cut with the index in ``matrices`` of its matricisation, appended once per key."""
    index: dict[frozenset[frozenset[str]], int] = {}
    out = []
    for left, right in resolved:
        key = cut_key(node, left)
        if key not in index:
            index[key] = len(matrices)
            matrices.append(node.matricize(left))
        out.append((left, right, index[key]))
    return out


def _batched_values(matrices: Sequence[torch.Tensor], method: Method) -> list[torch.Tensor]:
    """Singular values of each matrix (on the CPU), one batched call per shape, dtype, device."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        groups[(tuple(m.shape), m.dtype, m.device)].append(i)
    values: dict[int, torch.Tensor] = {}
    for members in groups.values():
        s = _singular_values(torch.stack([matrices[i] for i in members]), method).cpu()
        values.update(zip(members, s))
    return [values[i] for i in range(len(matrices))]


def cut_spectra(
    x: Node | torch.Tensor | Any,
    cuts_left: Sequence[Sequence[str | int] | str],
    legs: Sequence[str] | None = None,
    name: str | None = None,
    method: Method = "auto",
) -> list[Spectrum]:
    """Spectra of several cuts of one dense tensor, each distinct matricisation computed once.

    Cuts with the same :func:`cut_key` (they differ only by size-1 legs, or are complements)
    share one decomposition; every cut gets its own :class:`Spectrum` (its own legs, the shared
    values). Every cut is checked (as in :func:`spectrum`) before any work.

    Parameters
    ----------
    x : Node, tensor or array-like
        The tensor (legs as in :func:`spectrum`).
    cuts_left : sequence of cuts
        The left side of each cut (leg names or axis positions).

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(8, 4, 1, 1, dtype=torch.float64)
    >>> a, b = cut_spectra(w, [["out"], ["out", "kh"]])
    >>> (a.label, b.label), torch.equal(a.values, b.values)
    (('out|in,kh,kw', 'out,kh|in,kw'), True)
    """
    node = _as_node(x, legs, "x" if name is None else repr(name))
    if isinstance(cuts_left, str) or is_int(cuts_left):
        raise TypeError(f"cuts_left must be a sequence of cuts (left legs), got {cuts_left!r}")
    resolved = [_resolve_left(node, left) for left in cuts_left]
    matrices: list[torch.Tensor] = []
    shared = _shared_cuts(node, resolved, matrices)
    values = _batched_values(matrices, method)
    return [Spectrum(values[j], left, right, name=name) for left, right, j in shared]


class SpectrumTable:
    """Spectra of several layers and cuts, as a tidy table (one row per layer and cut).

    Examples
    --------
    >>> import torch
    >>> table = weight_spectra({"conv1": torch.randn(8, 3, 3, 3), "fc": torch.randn(10, 8)})
    >>> table.layers, len(table), table.get("fc", "out|in").chi_max
    (['conv1', 'fc'], 8, 8)
    """

    def __init__(self, spectra: Iterable[Spectrum]) -> None:
        self.spectra: list[Spectrum] = list(spectra)

    def __len__(self) -> int:
        return len(self.spectra)

    def __iter__(self) -> Iterator[Spectrum]:
        return iter(self.spectra)

    @property
    def layers(self) -> list[str]:
        """Layer names in order of first appearance."""
        return list(dict.fromkeys(str(sp.name) for sp in self.spectra))

    @property
    def cuts(self) -> list[str]:
        """Cut labels in order of first appearance."""
        return list(dict.fromkeys(sp.label for sp in self.spectra))

    def get(self, layer: str, cut: str) -> Spectrum:
        """The spectrum of ``layer`` along the cut labelled ``cut`` (KeyError if none)."""
        for sp in self.spectra:
            if str(sp.name) == layer and sp.label == cut:
                return sp
        raise KeyError(f"no spectrum for layer {layer!r} and cut {cut!r}")

    @property
    def compressed(self) -> dict[str, str]:
        """Compressed layers and their formats (layer name -> format name), in order."""
        return {
            str(sp.name): sp.format for sp in self.spectra if isinstance(sp, CompressedSpectrum)
        }

    def rows(self, values: bool = True) -> list[dict[str, Any]]:
        """One dict per spectrum: layer, cut, chi_max, norm, entropy, effective rank (+ values).

        ``compressed``, ``format`` and ``rank`` say whether the layer is compressed, in which
        format, and the rank of the bond inducing the cut (``""`` and ``None`` for dense ones).
        """
        out = []
        for sp in self.spectra:
            row = {"compressed": False, "format": "", "rank": None, **sp.as_dict()}
            row["layer"] = row.pop("name")
            if not values:
                row.pop("singular_values")
            out.append(row)
        return out

    def entropy_matrix(self, alpha: float = 1.0) -> tuple[list[str], list[str], np.ndarray]:
        """``(layers, cuts, E)`` with ``E[i, j]`` the entropy of layer i along cut j.

        ``E`` is NaN where the layer has no such cut.
        """
        layers, cut_labels = self.layers, self.cuts
        e = np.full((len(layers), len(cut_labels)), np.nan)
        for sp in self.spectra:
            e[layers.index(str(sp.name)), cut_labels.index(sp.label)] = sp.entropy(alpha)
        return layers, cut_labels, e

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write :meth:`rows` as CSV atomically (singular values space-separated).

        ``normalized_entropy`` is ``nan`` on trivial cuts (``chi_max = 1``).
        """
        rows = self.rows()
        fields = [
            "layer",
            "cut",
            "left_legs",
            "right_legs",
            "chi_max",
            "norm",
            "entropy",
            "renyi2",
            "effective_rank",
            "normalized_entropy",
            "compressed",
            "format",
            "rank",
            "singular_values",
        ]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                row = dict(row)
                row["singular_values"] = " ".join(f"{v:.9g}" for v in row["singular_values"])
                writer.writerow(row)

    def __repr__(self) -> str:
        return f"SpectrumTable({len(self.layers)} layers, {len(self.cuts)} cuts, {len(self)} rows)"


def layer_name(key: str) -> str:
    """The layer a state_dict key belongs to: ``"conv1.weight" -> "conv1"`` (others unchanged)."""
    return key[: -len(".weight")] if key.endswith(".weight") else key


def weight_spectra(
    weights: Mapping[str, Kernel],
    layers: str | None = None,
    method: Method = "auto",
    max_elements: int = DENSE_LIMIT,
) -> SpectrumTable:
    """All cuts of every weight (2-5 dims) in a name -> tensor mapping, e.g. a state_dict.

    Values may also be compressed kernels (:class:`~tensornet.formats.Format`), whose spectra
    are taken through their networks (see :func:`kernel_spectra` for ``max_elements``).

    ``layers`` filters names by glob (``"layer*.conv1"``) or regular expression; tensors with
    fewer than 2 dimensions (biases, norms) are skipped. Layers are named by :func:`layer_name`
    (``"conv1.weight" -> "conv1"``). Raises ValueError when nothing matches, when two weights
    would get the same layer name (``"conv.weight"`` and ``"conv"``), or when a weight holds NaN
    or inf (naming it).

    Examples
    --------
    >>> import torch
    >>> weight_spectra({"fc.weight": torch.randn(4, 3), "fc.bias": torch.randn(4)}).layers
    ['fc']
    """
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weight_spectra takes a mapping name -> tensor (a state_dict), got "
            f"{type(weights).__name__}"
        )
    chosen: dict[str, Kernel] = {}
    keys: dict[str, str] = {}
    for name, w in weights.items():
        if not isinstance(w, (torch.Tensor, Format)) or not 2 <= len(w.shape) <= 5:
            continue
        layer = layer_name(str(name))
        if name_matches(layer, layers) or name_matches(str(name), layers):
            if layer in chosen:
                raise ValueError(
                    f"weights {keys[layer]!r} and {name!r} would both be layer {layer!r}; "
                    "rename one of them"
                )
            chosen[layer] = w
            keys[layer] = str(name)
    if not chosen:
        what = f"matching {layers!r}" if layers else "with 2-5 dimensions"
        names = list(weights)
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        raise NoMatchingLayer(f"no weight {what}; names are: {shown}")
    return SpectrumTable(kernel_spectra(chosen, method=method, max_elements=max_elements))


def model_spectra(
    model: torch.nn.Module,
    layers: str | None = None,
    method: Method = "auto",
    max_elements: int = DENSE_LIMIT,
) -> SpectrumTable:
    """All cuts of the weight of every conv and linear layer of ``model``, compressed or not.

    Transposed convolutions are left out (their weights are laid out ``(in, out, k...)``).
    Compressed layers (``TNConv2d``, ``TNLinear``: any type registered with a ``kernel``
    accessor, :func:`tensornet.weights.register_layer_type`) are included through their
    format's network: their rows are :class:`CompressedSpectrum` objects, marked in
    :meth:`SpectrumTable.rows` and listed by :attr:`SpectrumTable.compressed`.

    Examples
    --------
    >>> import torch
    >>> layers = [torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2)]
    >>> net = torch.nn.Sequential(*layers)
    >>> table = model_spectra(net)
    >>> table.layers, table.cuts[:2]
    (['0', '2'], ['out|in,kh,kw', 'in|out,kh,kw'])
    """
    dense = layer_aliases(model)
    weights: dict[str, Kernel] = {}
    for name, module in model.named_modules():
        if name in dense:
            weights[name] = module.weight
        else:
            kernel = layer_kernel(module)
            if kernel is not None:
                weights[name] = kernel
    return weight_spectra(weights, layers=layers, method=method, max_elements=max_elements)


class TruncationResult(NamedTuple):
    """Outcome of :func:`truncate`.

    The truncated tensor (same shape), the spectra that were cut (one per cut, each taken on
    the tensor as it was at that step), the total relative error ``||T - T'|| / ||T||``, each
    step's own relative error, and each step's kept rank.
    """

    tensor: torch.Tensor
    spectrum: Spectrum | tuple[Spectrum, ...]
    error: float
    step_errors: tuple[float, ...]
    ranks: tuple[int, ...] = ()

    def __repr__(self) -> str:
        """One line: shape, dtype, cuts with their kept ranks, errors (not the tensor)."""
        spectra = self.spectrum if isinstance(self.spectrum, tuple) else (self.spectrum,)
        ranks = self.ranks or (None,) * len(spectra)
        cut = ", ".join(
            f"{sp.label} -> {r if r is not None else '?'} of {sp.chi_max}"
            for sp, r in zip(spectra, ranks)
        )
        dt = str(self.tensor.dtype).replace("torch.", "")
        steps = ", ".join(f"{e:.3g}" for e in self.step_errors)
        return (
            f"TruncationResult(shape={tuple(self.tensor.shape)}, {dt}, cuts=[{cut}], "
            f"error={self.error:.3g}, step_errors=[{steps}])"
        )


def truncate(
    x: Node | torch.Tensor | Any,
    left_legs: Sequence[str | int] | Sequence[Sequence[str | int]],
    trunc: Truncation | int,
    legs: Sequence[str] | None = None,
) -> TruncationResult:
    """Truncate a dense tensor along one cut, or along several cuts in turn.

    Along one cut this is the best approximation whose matricisation across the cut has the
    rank ``trunc`` allows (Eckart-Young-Mirsky); the tensor keeps its shape.

    Differentiable: the gradient is exact across a gap at the kept rank, repeated and
    exactly-zero singular values included (see :mod:`tensornet.core.linalg`).

    Parameters
    ----------
    x : Node, tensor or array-like
        The tensor; refused (ValueError) if it holds NaN or inf.
    left_legs : one cut (sequence of legs) or a sequence of cuts
        Leg names or axis positions.
    trunc : Truncation or int (max_rank), applied at every cut
        Integers of any library are accepted.
    legs : sequence of str, optional
        Leg names of a plain tensor (default :data:`KERNEL_LEGS`).

    Examples
    --------
    >>> import torch
    >>> w = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    >>> out = truncate(w, ["out"], 4)
    >>> out.tensor.shape == w.shape, abs(out.error - out.spectrum.relative_error(4)) < 1e-12
    (True, True)
    >>> both = truncate(w, [["out"], ["kh"]], 2)
    >>> len(both.spectrum), both.error >= max(both.step_errors) - 1e-12
    (2, True)
    """
    policy = as_truncation(trunc, "trunc")
    if policy is None:
        raise ValueError("trunc must be given (a Truncation or an int max_rank)")
    node = _as_node(x, legs)
    if isinstance(left_legs, str) or is_int(left_legs):
        left_legs = (left_legs,)
    try:
        left_legs = list(left_legs)
    except TypeError:
        raise TypeError(
            f"left_legs must be one cut (leg names) or a sequence of cuts, got "
            f"{type(left_legs).__name__}"
        ) from None
    single = len(left_legs) > 0 and all(isinstance(leg, str) or is_int(leg) for leg in left_legs)
    steps = [left_legs] if single else left_legs
    def empty(step: Any) -> bool:
        return not (isinstance(step, str) or is_int(step)) and len(step) == 0

    if not steps or any(empty(step) for step in steps):
        raise ValueError(f"left_legs must name at least one cut, got {left_legs!r}")
    resolved = [_resolve_left(node, step) for step in steps]

    original = node.tensor
    current = node
    spectra, errors, ranks = [], [], []
    for left, right in resolved:
        u, s, vh, full = truncated_svd(current.matricize(left), policy)
        sp = Spectrum(full, left, right)
        spectra.append(sp)
        errors.append(sp.relative_error(s.shape[0]))
        ranks.append(int(s.shape[0]))
        approx = (u * s.to(u.dtype)) @ vh
        shape = [current.dim(leg) for leg in left + right]
        current = Node(approx.reshape(shape), left + right).transpose(node.legs)
    out = current.tensor
    with torch.no_grad():
        norm = float(torch.linalg.norm(original))
        total = float(torch.linalg.norm(out - original)) / norm if norm > 0 else 0.0
    return TruncationResult(
        out, spectra[0] if single else tuple(spectra), total, tuple(errors), tuple(ranks)
    )
