"""One cell of the ALDS study: allocate at one budget, compress, recalibrate, score, re-train.

A cell is a ``(method, budget)`` pair. The methods are :func:`tensornet.nn.allocate`'s
``alds`` (the paper's algorithm, its error proxy), ``uniform`` and ``energy``, and ``auto``
(every format, ranks and options per layer; the global choice minimises the sum of squared
relative kernel errors) and ``auto-data`` (the same, each candidate scored by its layer's
output error on calibration batches, and svd / Tucker-2 factors whitened by them). The two
``auto`` methods compute every layer's candidates once per seed and reuse them at each budget
(``allocate(..., reuse=)``): the choice at a budget is the one a fresh allocation makes.

Every compressed model's BatchNorm statistics are recomputed on the calibration batches (no
labels, no weight change: :func:`tensornet.nn.recalibrate_bn`) before it is scored, after
compression and again after re-training; the scores without recalibration are kept beside
(``before_raw``) to show its effect.

Examples
--------
>>> cell_key("auto-data", 0.25)
'auto-data\\t0.25'
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

import tensornet.nn as tnn
from studies.common.calibration import calibration_batches, recalibrated
from studies.common.data import DatasetSplits
from studies.common.training import split_scores, train
from tensornet import runs

__all__ = [
    "ALL_METHODS",
    "AUTO_METHODS",
    "CellContext",
    "cell_key",
    "grouped_formula",
    "map_cells",
    "run_cell",
]

#: The library's allocation methods the study runs as they are.
PAPER_METHODS: tuple[str, ...] = ("alds", "uniform", "energy")
#: ``allocate(method="auto")`` without and with calibration data.
AUTO_METHODS: tuple[str, ...] = ("auto", "auto-data")
ALL_METHODS: tuple[str, ...] = PAPER_METHODS + AUTO_METHODS


def cell_key(method: str, budget: float) -> str:
    """The identity of one cell in ``cells.jsonl``: ``method<TAB>budget``.

    >>> cell_key("alds", 0.25)
    'alds\\t0.25'
    """
    return f"{method}\t{budget:g}"


def grouped_formula(layer: Mapping[str, Any]) -> int:
    """Parameters of a saved ALDS layer choice: ``j (k f + c k1 k2)``, or the dense count.

    >>> grouped_formula({"format": "grouped", "j": 2, "k": 4, "shape": [16, 8, 3, 3],
    ...                  "dense_params": 1152})
    272
    """
    if layer["format"] == "dense":
        return int(layer["dense_params"])
    f, c = layer["shape"][0], layer["shape"][1]
    rest = int(np.prod(layer["shape"][2:])) if len(layer["shape"]) > 2 else 1
    return int(layer["j"]) * (int(layer["k"]) * f + c * rest)


class CellContext:
    """What every cell of one seed needs (picklable: sent once to each Dask worker).

    ``cfg`` needs ``device``, ``batch_size``, ``calibration_batches``, ``recalibrate_bn``,
    ``auto_formats``, ``iterations``, ``random_starts``, ``retrain_epochs`` and ``retrain_lr``.
    """

    def __init__(self, cfg: Any, seed: int, model: torch.nn.Module, data: DatasetSplits):
        self.cfg, self.seed, self.model, self.data = cfg, seed, model, data
        self.example = data.train.tensors[0][:1]
        self.frontiers: dict[str, tnn.Allocation] = {}  # per auto method, its first allocation

    def calibration(self) -> list[torch.Tensor]:
        """``calibration_batches`` training batches (inputs only), the same for every cell."""
        cfg = self.cfg
        return calibration_batches(
            self.data.train, self.seed, cfg.batch_size, cfg.calibration_batches, cfg.device
        )

    def scores(self, model: torch.nn.Module) -> dict[str, Any]:
        """Validation and test accuracy, and per-image test correctness."""
        return split_scores(model, self.data, self.cfg.device)

    def recalibrated_scores(self, model: torch.nn.Module) -> dict[str, Any]:
        """:meth:`scores` after recomputing the BatchNorm statistics (when configured)."""
        batches = self.calibration() if self.cfg.recalibrate_bn else None
        return self.scores(recalibrated(model, batches))

    def allocate(self, method: str, budget: float) -> tnn.Allocation:
        """The allocation of ``method`` at ``budget`` (auto: candidates reused across budgets)."""
        cfg, example = self.cfg, self.example.to(self.cfg.device)
        if method not in AUTO_METHODS:
            return tnn.allocate(
                self.model, budget, method, example_input=example,
                error="proxy",  # the paper's algorithm (true errors are recorded beside it)
                iterations=cfg.iterations, seeds=cfg.random_starts, seed=self.seed,
                progress=False,
            )  # fmt: skip
        first = self.frontiers.get(method)
        if first is not None:
            kw: dict[str, Any] = {"reuse": first}
        else:
            kw = {"formats": cfg.auto_formats}
            if method == "auto-data":
                kw["data"] = self.calibration()
        alloc = tnn.allocate(
            self.model, budget, "auto", example_input=example, progress=False, **kw
        )
        self.frontiers.setdefault(method, alloc)
        return alloc


def _layer_rows(model: torch.nn.Module, alloc: tnn.Allocation) -> list[dict[str, Any]]:
    rows = []
    for name, choice in alloc.layers.items():
        rows.append(
            {
                "name": name,
                "format": choice.format,
                "label": choice.label,
                "ranks": list(choice.ranks),
                "j": choice.ranks[0] if choice.ranks else 0,
                "k": choice.groups,
                "params": choice.params,
                "dense_params": choice.dense_params,
                "shape": list(model.get_submodule(name).weight.shape),
                "error": choice.error,
                "spectral_error": choice.spectral_error,
                "frobenius_error": choice.frobenius_error,
            }
        )
    return rows


def _retrain(ctx: CellContext, small: torch.nn.Module) -> list[dict[str, Any]]:
    """``retrain_epochs`` epochs, each scored (after BatchNorm recalibration)."""
    cfg, history = ctx.cfg, []
    for epoch in range(1, cfg.retrain_epochs + 1):
        train(
            small, ctx.data, epochs=1, lr=cfg.retrain_lr, batch_size=cfg.batch_size,
            seed=ctx.seed + 1000 + epoch, device=cfg.device, progress=False,
        )  # fmt: skip
        history.append({"epoch": epoch, **ctx.recalibrated_scores(small)})
    return history


def run_cell(ctx: CellContext, cell: tuple[str, float]) -> dict[str, Any]:
    """Allocate, compress, recalibrate, score, re-train and score one (method, budget) cell."""
    model, (method, budget) = ctx.model, cell
    started = time.perf_counter()
    alloc = ctx.allocate(method, budget)
    compressed_any = any(c.format != "dense" for c in alloc.layers.values())
    plan_flops, before_raw = None, None
    if compressed_any:
        data = ctx.calibration() if method == "auto-data" else None
        small, rep = tnn.compress(
            model, allocation=alloc, example_input=ctx.example.to(ctx.cfg.device),
            measure_time=False, data=data,
        )  # fmt: skip
        plan_flops = [rep.flops_before, rep.flops_after]
        small.eval()
        before_raw = ctx.scores(small) if ctx.cfg.recalibrate_bn else None
        before = ctx.recalibrated_scores(small)
    else:
        small = copy.deepcopy(model).eval()
        before = ctx.scores(small)
    history = _retrain(ctx, small) if compressed_any and ctx.cfg.retrain_epochs > 0 else []
    # nothing compressed: nothing to re-train, "after" is the model itself
    after = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"])) if history else None
    max_error = alloc.max_spectral_error if method in AUTO_METHODS else alloc.max_error
    return {
        "key": cell_key(method, budget),
        "method": method,
        "budget": budget,
        "target_params": alloc.budget,
        "params": sum(p.numel() for p in small.parameters()),
        "allocated_params": alloc.total_params,
        "model_params": alloc.model_params,
        "flops": alloc.total_flops,
        "model_flops": alloc.model_flops,
        "plan_flops": plan_flops,
        "max_error": max_error,
        "layers": _layer_rows(model, alloc),
        "before": before,
        "before_raw": before_raw,
        "after": after or {"epoch": 0, **before},
        "retrain": [{k: h[k] for k in ("epoch", "val_accuracy", "test_accuracy")} for h in history],
        "seconds": time.perf_counter() - started,
    }


def map_cells(
    ctx: CellContext, cells: Sequence[tuple[str, float]], executor: Any
) -> Iterable[dict[str, Any]]:
    """Run cells here (in order) or on a Dask client (as they finish) or a futures executor."""
    return runs.map_cells(run_cell, cells, executor=executor, shared=(ctx,))
