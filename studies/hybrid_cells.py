"""Cells of the hybrid TT/HT study: tensorized layers, storage formulas, matched ranks, runs.

- :func:`layer_specs`: the layers a configuration compresses (every conv but the first, every
  linear but the last) and how each is tensorized: a kernel ``(out, in, l, l)`` becomes the
  spatial mode ``l*l`` followed by ``d`` channel modes ``(m_k, n_k)``, a weight matrix ``d``
  modes ``(m_k, n_k)`` (``out = prod m_k``, ``in = prod n_k``).
- :func:`tt_storage`, :func:`ht_storage`: the papers' storage counts, written out independently
  of the library, to check the layers' actual parameter counts against.
- :func:`match_ranks`: per configuration and compression ratio, ranks for every layer whose
  total parameter count is within a tolerance of the target (each layer matched to its own
  share, then a global fill only where needed), with no rank larger than its factor can use.
- :func:`run_cells`: the cells (decompose, score, fine-tune, score) in this process or on a Dask
  cluster (model and data sent to each worker once), results appended as they finish.

Examples
--------
>>> tt_storage((9, 16, 8), (3, 2))   # 9*1*3 + 16*3*2 + 8*2*1
139
>>> ranks = {(0, 1): 3, 2: 3, 0: 2, 1: 2}
>>> ht_storage(((0, 1), 2), (9, 16, 8), ranks)  # B0 3*3 + B(0,1) 2*2*3 + U0 9*2, U1 16*2, U2 8*3
95
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from studies.common.data import DatasetSplits
from studies.common.training import split_scores, train
from tensornet import runs
from tensornet.formats import Structure, get_format
from tensornet.formats.ht import DimensionTree
from tensornet.formats.tensorize import balanced_factors
from tensornet.nn import TNConv2d, TNLinear
from tensornet.weights import CONV2D_LEGS, MATRIX_LEGS, replace_module

__all__ = [
    "CONFIGS",
    "DENSE",
    "HybridCell",
    "LayerSpec",
    "FineTune",
    "ht_storage",
    "layer_specs",
    "match_ranks",
    "plan_cells",
    "run_cells",
    "storage_formula",
    "tt_storage",
]

# configuration -> (format of the conv layers, format of the FC layers)
CONFIGS: dict[str, tuple[str, str]] = {
    "tt": ("ttmatrix", "ttmatrix"),
    "ht": ("ht", "ht"),
    "hybrid": ("ttmatrix", "ht"),
    "reverse": ("ht", "ttmatrix"),
}
LABELS = {
    "tt": "TT-only",
    "ht": "HT-only",
    "hybrid": "hybrid (TT conv + HT FC)",
    "reverse": "HT conv + TT FC",
    "dense": "uncompressed",
}
DENSE = "dense"  # the uncompressed cell (ratio 1)


@dataclass(frozen=True)
class LayerSpec:
    """One compressed layer and its tensorization.

    Attributes
    ----------
    name, kind
        Module name and ``"conv"`` or ``"fc"``.
    shape
        The dense weight's shape.
    out_dims, in_dims
        Mode sizes of the output and input channels (same length ``d``).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    out_dims: tuple[int, ...]
    in_dims: tuple[int, ...]

    @property
    def legs(self) -> tuple[str, ...]:
        """Dense leg names, as :class:`~tensornet.nn.TNConv2d` / ``TNLinear`` use them."""
        return CONV2D_LEGS if self.kind == "conv" else MATRIX_LEGS

    @property
    def dense_params(self) -> int:
        """Elements of the dense weight (the bias is never compressed)."""
        return math.prod(self.shape)

    @property
    def mode_sizes(self) -> tuple[int, ...]:
        """Sizes of the tensorized modes: ``l*l`` first for a kernel, then ``m_k n_k``."""
        pairs = tuple(m * n for m, n in zip(self.out_dims, self.in_dims))
        return (math.prod(self.shape[2:]), *pairs) if self.kind == "conv" else pairs

    def options(self) -> dict[str, Any]:
        """The format options of the layer (``out_dims``, ``in_dims``)."""
        return {"out_dims": self.out_dims, "in_dims": self.in_dims}

    def structure(self, fmt: str, ranks: Sequence[int] | None = None) -> Structure:
        """The layer's structure in format ``fmt`` (``None``: maximal ranks)."""
        return get_format(fmt).structure_for(self.shape, ranks, legs=self.legs, **self.options())


def layer_specs(model: nn.Module, conv_modes: int = 3, fc_modes: int = 4) -> list[LayerSpec]:
    """The layers to compress: every ``Conv2d`` but the first, every ``Linear`` but the last.

    Channels are split into ``conv_modes`` (kernels) or ``fc_modes`` (matrices) balanced
    factors (:func:`tensornet.formats.tensorize.balanced_factors`).

    Examples
    --------
    >>> from models import build_model
    >>> specs = layer_specs(build_model("hybrid_cnn", 1, 10, 8))
    >>> [(s.name, s.out_dims, s.in_dims) for s in specs][1:]
    [('conv3', (4, 4, 4), (4, 4, 2)), ('fc1', (4, 4, 4, 4), (4, 4, 4, 4))]
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    specs = []
    for name, module in convs[1:] + linears[:-1]:
        kind = "conv" if isinstance(module, nn.Conv2d) else "fc"
        d = conv_modes if kind == "conv" else fc_modes
        shape = tuple(module.weight.shape)
        specs.append(
            LayerSpec(
                name, kind, shape, balanced_factors(shape[0], d), balanced_factors(shape[1], d)
            )
        )
    return specs


# -- storage formulas (independent of the library) ------------------------------------------------
def tt_storage(sizes: Sequence[int], ranks: Sequence[int]) -> int:
    """TT / TT-matrix storage ``sum_k s_k r_{k-1} r_k`` with ``r_0 = r_d = 1``.

    ``s_k`` is the size of mode ``k`` (``m_k n_k`` for a TT-matrix core, ``l*l`` for a kernel's
    spatial core); ``ranks`` are the ``d - 1`` inner bonds.
    """
    r = (1, *ranks, 1)
    return sum(s * r[k] * r[k + 1] for k, s in enumerate(sizes))


def ht_storage(tree: Any, sizes: Sequence[int], ranks: Mapping[Any, int]) -> int:
    """HT storage ``sum_leaves s_t r_t + sum_inner r_t r_t1 r_t2`` with the root's ``r = 1``.

    Parameters
    ----------
    tree
        Nested pairs of mode numbers (the dimension tree; a leaf is an int).
    sizes
        Size of every mode.
    ranks
        Rank of every non-root node, keyed by its nested-pairs sub-tree (a leaf by its int).
    """

    def count(node: Any, rank: int) -> int:
        if isinstance(node, int):
            return sizes[node] * rank
        left, right = node
        rl, rr = ranks[_key(left)], ranks[_key(right)]
        return rl * rr * rank + count(left, rl) + count(right, rr)

    return count(tree, 1)


def _key(node: Any) -> Any:
    return node if isinstance(node, int) else tuple(_key(c) for c in node)


def storage_formula(structure: Structure, spec: LayerSpec) -> int:
    """The papers' storage count of a layer's structure (TT or HT formula, from the ranks)."""
    if structure.format == "ttmatrix":
        return tt_storage(spec.mode_sizes, structure.ranks)
    if structure.format == "ht":
        tree = DimensionTree(structure.option("tree"))
        nested = _key(structure.option("tree"))
        by_node = {}
        for t, r in enumerate(structure.ranks, start=1):
            by_node[_nested_of(nested, tree.nodes[t])] = r
        return ht_storage(nested, spec.mode_sizes, by_node)
    raise ValueError(f"storage_formula: no formula for format {structure.format!r}")


def _nested_of(tree: Any, modes: tuple[int, ...]) -> Any:
    """The sub-tree of ``tree`` whose modes are ``modes`` (in order)."""

    def leaves(node: Any) -> tuple[int, ...]:
        return (node,) if isinstance(node, int) else leaves(node[0]) + leaves(node[1])

    stack = [tree]
    while stack:
        node = stack.pop()
        if leaves(node) == tuple(modes):
            return node
        if not isinstance(node, int):
            stack.extend(node)
    raise ValueError(f"no node with modes {modes} in {tree}")


# -- matched ranks --------------------------------------------------------------------------------
def useful(structure: Structure) -> bool:
    """True when no bond is larger than the rest of its factor (a larger one only wastes storage).

    Every factor leg summed over (a bond) must be at most the product of the factor's other
    dimensions; for HT this also ties the root's two ranks together.
    """
    open_legs = set(structure.mode_legs)
    for f in structure.factors:
        for i, leg in enumerate(f.legs):
            if leg not in open_legs and f.shape[i] > math.prod(f.shape) // f.shape[i]:
                return False
    return True


def _uniform(spec: LayerSpec, fmt: str, r: int) -> tuple[int, ...]:
    tops = spec.structure(fmt).max_ranks
    return tuple(min(r, t) for t in tops)


def _base_ranks(spec: LayerSpec, fmt: str, target: float) -> tuple[int, ...]:
    """The largest uniform ranks (capped at the maximal ones) within ``target`` parameters."""
    best = _uniform(spec, fmt, 1)
    r = 1
    while True:
        r += 1
        ranks = _uniform(spec, fmt, r)
        if ranks == best or spec.structure(fmt, ranks).num_params > target:
            return best
        best = ranks


def _best_move(
    spec: LayerSpec, fmt: str, now: tuple[int, ...], tops: tuple[int, ...], distance: Callable
) -> tuple[tuple[int, ...], int] | None:
    """The one- or two-rank change of a layer that improves ``distance(change in params)``.

    Increments first: among the improving ones, the one raising the smallest ranks wins (ranks
    stay balanced), then the one closest to the goal. Decrements (the largest ranks first) only
    when no increment improves; ``None`` when nothing does.
    """
    current = spec.structure(fmt, now).num_params
    n = len(now)
    moves = [(k,) for k in range(n)] + list(itertools.combinations(range(n), 2))
    for step in (1, -1):
        best = None
        for move in moves:
            new = tuple(r + step * (k in move) for k, r in enumerate(now))
            if any(r > t or r < 1 for r, t in zip(new, tops)):
                continue
            structure = spec.structure(fmt, new)
            if not useful(structure):
                continue
            gain = distance(structure.num_params - current)
            if gain >= distance(0):
                continue
            score = (step * min(step * now[k] for k in move), gain)
            if best is None or score < best[0]:
                best = (score, new, structure.num_params)
        if best is not None:
            return best[1], best[2]
    return None


def match_ranks(
    specs: Sequence[LayerSpec], formats: Sequence[str], ratio: float, tol: float = 0.02
) -> dict[str, Any]:
    """Ranks for every layer so the total parameter count is ``dense / ratio`` within ``tol``.

    1. Per layer, on its own: the largest uniform ranks within its share (its dense size over
       ``ratio``), then one- or two-rank changes while they bring the layer closer to its
       share. A layer's ranks depend only on the layer, its format and the ratio, so two
       configurations with the same conv format have the same conv layers.
    2. Only when the total is still more than ``tol`` from the target: changes anywhere (the
       layer furthest below its share first) while they bring the total closer.

    No rank is larger than its factor can use (:func:`useful`). The result may miss ``tol``
    when even the smallest ranks are too many parameters; the gap is returned either way.

    Returns
    -------
    dict
        ``ranks`` (layer -> tuple), ``params`` (layer -> factor parameters), ``total``,
        ``target``, ``gap`` (``total / target - 1``), ``within_tol`` and ``global_fill``
        (whether step 2 was needed).

    Examples
    --------
    >>> spec = LayerSpec("fc", "fc", (256, 256), (4, 4, 4, 4), (4, 4, 4, 4))
    >>> m = match_ranks([spec], ["ht"], ratio=10)
    >>> m["target"], abs(m["gap"]) <= 0.02
    (6553.6, True)
    """
    dense = sum(s.dense_params for s in specs)
    target = dense / ratio
    ranks, params, tops = {}, {}, {}
    for spec, fmt in zip(specs, formats):
        share = spec.dense_params / ratio
        tops[spec.name] = spec.structure(fmt).max_ranks
        ranks[spec.name] = _base_ranks(spec, fmt, share)
        params[spec.name] = spec.structure(fmt, ranks[spec.name]).num_params
        while True:
            here = params[spec.name]
            move = _best_move(
                spec,
                fmt,
                ranks[spec.name],
                tops[spec.name],
                lambda d, h=here, g=share: abs(h + d - g),
            )
            if move is None:
                break
            ranks[spec.name], params[spec.name] = move
    global_fill = abs(sum(params.values()) / target - 1) > tol
    while global_fill:
        total = sum(params.values())
        order = sorted(zip(specs, formats), key=lambda sf: params[sf[0].name] / sf[0].dense_params)
        for spec, fmt in order:
            move = _best_move(
                spec, fmt, ranks[spec.name], tops[spec.name], lambda d, t=total: abs(t + d - target)
            )
            if move is not None:
                ranks[spec.name], params[spec.name] = move
                break
        else:
            break
    total = sum(params.values())
    return {
        "ranks": ranks,
        "params": params,
        "total": total,
        "target": target,
        "gap": total / target - 1,
        "within_tol": abs(total / target - 1) <= tol,
        "global_fill": global_fill,
    }


# -- cells ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HybridCell:
    """One configuration at one compression ratio: the formats and ranks of every layer."""

    config: str
    ratio: float
    formats: tuple[tuple[str, str], ...]  # (layer, format)
    ranks: tuple[tuple[str, tuple[int, ...]], ...]  # (layer, ranks)
    target: float
    global_fill: bool = False  # whether match_ranks needed its global step

    @property
    def key(self) -> str:
        """The cell's identity in ``cells.jsonl``: ``config<TAB>ratio``."""
        return f"{self.config}\t{self.ratio:g}"


@dataclass(frozen=True)
class FineTune:
    """How every cell is fine-tuned (all cells alike) and where it runs."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    device: str = "cpu"


def plan_cells(specs: Sequence[LayerSpec], ratios: Sequence[float], tol: float) -> list[HybridCell]:
    """The uncompressed cell, then every configuration at every ratio (ranks matched)."""
    cells = [HybridCell(DENSE, 1.0, (), (), float(sum(s.dense_params for s in specs)))]
    for ratio in ratios:
        for config, (conv_fmt, fc_fmt) in CONFIGS.items():
            formats = [conv_fmt if s.kind == "conv" else fc_fmt for s in specs]
            m = match_ranks(specs, formats, ratio, tol)
            cells.append(
                HybridCell(
                    config,
                    float(ratio),
                    tuple((s.name, f) for s, f in zip(specs, formats)),
                    tuple((s.name, m["ranks"][s.name]) for s in specs),
                    m["target"],
                    m["global_fill"],
                )
            )
    return cells


def compressed(
    model: nn.Module, cell: HybridCell, specs: Sequence[LayerSpec]
) -> tuple[nn.Module, list[dict]]:
    """A copy of ``model`` with the cell's layers decomposed (TT-SVD / HT-SVD at its ranks)."""
    out = copy.deepcopy(model)
    by_name = {s.name: s for s in specs}
    ranks = dict(cell.ranks)
    layers = []
    for name, fmt in cell.formats:
        spec = by_name[name]
        module = out.get_submodule(name)
        if spec.kind == "conv":
            new = TNConv2d.from_conv(module, fmt, ranks=ranks[name], **spec.options())
        else:
            new = TNLinear.from_linear(module, fmt, ranks=ranks[name], **spec.options())
        replace_module(out, name, new)
        actual = sum(p.numel() for p in new.factors.values())
        layers.append(
            {
                "layer": name,
                "kind": spec.kind,
                "format": fmt,
                "ranks": list(new.structure.ranks),
                "planned_ranks": list(ranks[name]),
                "params": actual,
                "structure_params": new.structure.num_params,
                "formula_params": storage_formula(new.structure, spec),
                "dense_params": spec.dense_params,
                "rel_error": float(new.decomposition_error),
            }
        )
    return out, layers


def run_cell(
    model: nn.Module,
    data: DatasetSplits,
    cell: HybridCell,
    specs: Sequence[LayerSpec],
    tune: FineTune,
) -> dict[str, Any]:
    """Decompose, score, fine-tune ``tune.epochs`` epochs (scored after each), keep the epoch
    with the best validation accuracy (the earliest among ties)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(tune.seed)
        trial, layers = compressed(model, cell, specs)
    trial.to(tune.device).eval()
    before = split_scores(trial, data, tune.device)
    history = []
    for epoch in range(1, tune.epochs + 1):
        train(
            trial,
            data,
            epochs=1,
            lr=tune.lr,
            batch_size=tune.batch_size,
            seed=tune.seed + 2000 + epoch,
            device=tune.device,
            progress=False,
        )
        history.append({"epoch": epoch, **split_scores(trial, data, tune.device)})
    best = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"]))
    total = sum(layer["params"] for layer in layers)
    return {
        "key": cell.key,
        "config": cell.config,
        "ratio": cell.ratio,
        "target": cell.target,
        "params": total if layers else cell.target,
        "gap": (total / cell.target - 1) if layers else 0.0,
        "global_fill": cell.global_fill,
        "layers": layers,
        "before": before,
        "finetune": history,
        "epoch": best["epoch"],
        "after": {k: best[k] for k in ("val_accuracy", "test_accuracy", "test_correct")},
        "seconds": time.perf_counter() - start,
    }


def run_cells(
    model: nn.Module,
    data: DatasetSplits,
    cells: Sequence[HybridCell],
    specs: Sequence[LayerSpec],
    tune: FineTune,
    executor: Any = None,
) -> Iterable[dict[str, Any]]:
    """Run ``cells``: in order here, or on a Dask ``distributed.Client`` as they finish.

    On a cluster the model and the data are scattered to every worker once; each task names
    them and works on its own copy. Only the caller writes the results.
    """
    task = functools.partial(run_cell, specs=list(specs), tune=tune)
    return runs.map_cells(task, cells, executor=executor, shared=(model, data))


def accuracy_of(row: Mapping[str, Any], stage: str) -> float:
    """Test accuracy of a cell row before (``"before"``) or after (``"after"``) fine-tuning."""
    return float(row[stage]["test_accuracy"])


def correct_of(row: Mapping[str, Any], stage: str) -> np.ndarray:
    """Per-image test correctness (0/1 floats) of a cell row at ``stage``."""
    from studies.common.training import unpack_correct

    return unpack_correct(row[stage]["test_correct"])
