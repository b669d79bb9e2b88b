"""Study 2 (Schuurmans, Batselier & Kooij, ICLR 2023): is the approximation error informative?

``python -m studies approx-error [--quick] [--dataset digits] [--repeats 3] ...``

Per seed (``OUT/seed-S/``):

1. Train (or reuse) the base model; its validation and test accuracy.
2. One layer decomposed at a time (never the first layer nor the last, which is the linear
   classifier), by CP (ALS), Tucker-2 (HOSVD, spatial modes whole) and TT (TT-SVD, cores in, kh,
   kw, out), at kept parameter fractions {0.1, 0.25, 0.5, 0.75, 0.9} (the library's fraction
   solver), each repeated ``--repeats`` times. Repeat ``r`` differs in the CP-ALS random
   initialisation (seed ``r``) and, for every method, in the fine-tuning shuffle (seed
   ``1000 * seed + r + 1``); Tucker-2 and TT decompositions are deterministic, so their errors
   and accuracies before fine-tuning are the same in every repeat.
3. Per cell: weight errors and feature errors (output of the decomposed layer vs the original,
   per training image, averaged), each absolute ``||W - W~||_F``, relative ``||W - W~|| / ||W||``
   and scaled ``||W - W~|| / numel``; performance error ``1 - test accuracy`` before and after a
   short fine-tuning of the whole network (SGD with momentum).
4. Kendall tau-a between each error and the performance error over pseudo-runs (one repeat
   sampled per configuration): pooled over all choices, across layers only (method and level
   fixed, then averaged) and across methods only (layer and level fixed, then averaged).

Cells are appended to ``cells.jsonl`` as they finish (resumable; ``--workers``/``--scheduler``
run them on Dask as the truncation sweep does). ``OUT/report.md`` and ``OUT/findings.json``
hold the verdicts. No level is chosen in this study (fractions and fine-tuning epochs are fixed
by the protocol), so the test split is read only for the performance error.

Files: with ``--data-dir`` (CIFAR / MNIST files) the validation split is ``--val-size`` of the
training images, a count or a fraction (default 0.1), and part of the training key; the bundled
datasets are split 60/20/20. Progress: on a terminal a tqdm bar with the time left for training
and for the cells; otherwise one line per training epoch and per finished cell, each ending
``[cell 3/12, 0:42 elapsed, ~2:06 left]``.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tensornet.nn as tnn
from models import MODEL_NAMES, build_model
from studies.common import cli, runner, stats
from studies.common.calibration import (
    CALIBRATION_BATCHES,
    add_calibration_arguments,
    calibration_batches,
    recalibrated,
)
from studies.common.checkpoints import check_checkpoint, checkpoint_path, train_or_load
from studies.common.data import BUNDLED, DATASET_NAMES, DatasetSplits, val_size_key
from studies.common.progress import Progress
from studies.common.report import configuration, md_table, rows_to_csv
from studies.common.study import StudyDriver
from studies.common.training import evaluate, train
from studies.verdicts.approx_error import (  # noqa: F401  (the verdict code, re-exported)
    FEATURE_MEASURES,
    GROUPINGS,
    MARGIN,
    MEASURES,
    N_BOOT,
    PAPER_FRACTIONS,
    PERF,
    configurations,
    correlation_table,
    findings,
    grouped_tau,
    pseudo_runs,
    tau_a,
    tau_difference,
    verdict,
)
from tensornet import runs
from tensornet.analysis import ResultStore
from tensornet.io import atomic_write_text, save_figure
from tensornet.nn import TNConv2d
from tensornet.weights import replace_module

PROG = "python -m studies approx-error"
METHODS = ("cp", "tucker2", "tt")
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)
# [paper, STUDIES.md] tau before / after fine-tuning, all choices at 50/75/90 % compression
REFERENCE = {
    "ResNet-18 CIFAR-10": {"weight_rel": (0.51, 0.57), "feature_rel": (0.48, 0.55)},
    "GaripovNet CIFAR-10": {"weight_rel": (0.82, 0.69), "feature_rel": (0.73, 0.57)},
    "GaripovNet F-MNIST": {"weight_rel": (0.78, 0.65), "feature_rel": (0.62, 0.50)},
}
CELL_COLUMNS = (
    "layer", "method", "fraction", "repeat", "ranks", "params", "dense_params", "kernel_kept",
    *MEASURES,
    "val_before", "test_before", "val_after", "test_after", "perf_before", "perf_after", "seconds",
)  # fmt: skip


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """Everything that determines the results; ``device``/``out``/``workers``/``scheduler`` not."""

    model: str = "vanilla_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    seeds: int = 1
    methods: tuple[str, ...] = METHODS
    fractions: tuple[float, ...] = FRACTIONS
    repeats: int = 3
    finetune_epochs: int = 3
    finetune_lr: float = 1e-4
    momentum: float = 0.9
    feature_images: int = 1000
    recalibrate_bn: bool = True
    calibration_batches: int = CALIBRATION_BATCHES
    pseudo_runs: int = 5
    boot: int = N_BOOT
    limit: int | None = None
    val_size: int | float | None = None  # validation split of a file dataset
    device: str = "cpu"
    out: str = "runs/approx-error"
    quick: bool = False
    workers: int | None = None
    scheduler: str | None = None

    def training(self, seed: int) -> dict[str, Any]:
        """What the base model of ``seed`` depends on (its checkpoint key)."""
        return {
            "model": self.model, "dataset": self.dataset, "epochs": self.epochs, "lr": self.lr,
            "batch_size": self.batch_size, "seed": seed, "limit": self.limit,
            **val_size_key(self.val_size),
        }  # fmt: skip

    def cells(self, seed: int) -> dict[str, Any]:
        """What the cells of ``seed`` depend on (the header of its ``cells.jsonl``)."""
        return {
            **self.training(seed),
            "finetune_epochs": self.finetune_epochs,
            "finetune_lr": self.finetune_lr,
            "momentum": self.momentum,
            "feature_images": self.feature_images,
            "recalibrate_bn": self.recalibrate_bn,
            "calibration_batches": self.calibration_batches,
        }


@dataclass(frozen=True)
class Cell:
    """One decomposition: ``layer`` by ``method`` keeping ``fraction`` of its parameters.

    ``fraction == 1.0`` leaves the layer dense (the uncompressed reference cell).
    """

    layer: str
    method: str
    fraction: float
    repeat: int

    @property
    def key(self) -> str:
        """Identity in ``cells.jsonl``."""
        return f"{self.layer}\t{self.method}\t{self.fraction!r}\t{self.repeat}"


def middle_layers(model: torch.nn.Module) -> list[str]:
    """Conv layers other than the first and the last weight layer (the paper never decomposes them).

    >>> from models import build_model
    >>> middle_layers(build_model("vanilla_cnn", 1, 10, 8))
    ['conv2', 'conv3', 'conv4']
    """
    names = [
        n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    inner = names[1:-1]
    return [n for n in inner if isinstance(model.get_submodule(n), torch.nn.Conv2d)]


# -- one cell -----------------------------------------------------------------------------------
class CellContext:
    """What every cell needs: the base model, the data and the settings (sent once per worker).

    The layer inputs of the feature images are computed on first use per layer and cached in
    the process (not pickled).
    """

    def __init__(self, cfg: Config, seed: int, model: torch.nn.Module, data: DatasetSplits):
        self.cfg, self.seed, self.model, self.data = cfg, seed, model, data
        self._inputs: dict[str, list[torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inputs": {}}

    def calibration(self) -> list[torch.Tensor] | None:
        """The BatchNorm recalibration batches (``None`` when the model is scored as it is:
        ``recalibrate_bn`` off, or no BatchNorm layer)."""
        cfg = self.cfg
        if not cfg.recalibrate_bn or not tnn.batchnorm_layers(self.model):
            return None
        return calibration_batches(
            self.data.train, self.seed, cfg.batch_size, cfg.calibration_batches, cfg.device
        )

    def inputs(self, layer: str) -> list[torch.Tensor]:
        """The input batches of ``layer`` for the first ``feature_images`` training images."""
        if layer not in self._inputs:
            self._inputs.clear()  # one layer at a time: cells come grouped by layer
            x = self.data.train.tensors[0][: self.cfg.feature_images]
            captured: list[torch.Tensor] = []
            module = self.model.get_submodule(layer)
            hook = module.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
            try:
                with torch.no_grad():
                    for start in range(0, len(x), 256):
                        self.model(x[start : start + 256].to(self.cfg.device))
            finally:
                hook.remove()
            self._inputs[layer] = captured
        return self._inputs[layer]


def decompose(conv: torch.nn.Conv2d, method: str, fraction: float, repeat: int) -> torch.nn.Module:
    """The decomposed layer (a :class:`~tensornet.nn.TNConv2d`), or ``conv`` itself at 1.0."""
    if fraction >= 1.0:
        return copy.deepcopy(conv)
    options: dict[str, Any] = {"init": "random", "seed": repeat} if method == "cp" else {}
    return TNConv2d.from_conv(conv, method, fraction=fraction, **options)


def weight_errors(w: torch.Tensor, approx: torch.Tensor) -> dict[str, float]:
    """Absolute, relative and scaled Frobenius errors of ``approx`` (computed in float64)."""
    w, approx = w.detach().double(), approx.detach().double()
    err = float(torch.linalg.vector_norm(w - approx))
    norm = float(torch.linalg.vector_norm(w))
    return {"weight_abs": err, "weight_rel": err / norm, "weight_scaled": err / w.numel()}


@torch.no_grad()
def feature_errors(
    original: torch.nn.Module, approx: torch.nn.Module, inputs: Iterable[torch.Tensor]
) -> dict[str, float]:
    """Per-image absolute, relative and scaled errors of the layer output, averaged."""
    d, n, sizes = [], [], []
    for x in inputs:
        f, g = original(x), approx(x)
        d.append(torch.linalg.vector_norm((f - g).flatten(1).double(), dim=1))
        n.append(torch.linalg.vector_norm(f.flatten(1).double(), dim=1))
        sizes.append(f[0].numel())
    diff, norm = torch.cat(d), torch.cat(n)
    return {
        "feature_abs": float(diff.mean()),
        "feature_rel": float((diff / norm.clamp_min(1e-30)).mean()),
        "feature_scaled": float(diff.mean() / sizes[0]),
    }


def run_cell(ctx: CellContext, cell: Cell) -> dict[str, Any]:
    """Decompose, measure the errors, score, fine-tune, score again: one row of ``cells.jsonl``."""
    start = time.perf_counter()
    cfg, data = ctx.cfg, ctx.data
    conv = ctx.model.get_submodule(cell.layer)
    layer = decompose(conv, cell.method, cell.fraction, cell.repeat).to(cfg.device)
    approx_weight = layer.weight
    row: dict[str, Any] = {
        "kind": "cell", "key": cell.key, **asdict(cell),
        "ranks": list(getattr(layer, "ranks", ())),
        "params": int(getattr(layer, "num_params", sum(p.numel() for p in layer.parameters()))),
        "dense_params": int(sum(p.numel() for p in conv.parameters())),
        "kernel_kept": (
            layer.structure.num_params if isinstance(layer, TNConv2d) else conv.weight.numel()
        )
        / conv.weight.numel(),
        **weight_errors(conv.weight, approx_weight),
        **feature_errors(conv, layer, ctx.inputs(cell.layer)),
    }  # fmt: skip
    model = copy.deepcopy(ctx.model)
    replace_module(model, cell.layer, layer)
    batches = ctx.calibration()
    if batches is not None:  # the score with the dense model's statistics, kept beside
        row["test_before_raw"] = evaluate(model, data.test, device=cfg.device)
    recalibrated(model, batches)
    row["val_before"] = evaluate(model, data.val, device=cfg.device)
    row["test_before"] = evaluate(model, data.test, device=cfg.device)
    if cfg.finetune_epochs:
        train(
            model, data, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
            batch_size=cfg.batch_size, optimizer="sgd", momentum=cfg.momentum,
            device=cfg.device, seed=1000 * ctx.seed + cell.repeat + 1, progress=False,
        )  # fmt: skip
    recalibrated(model, batches)
    row["val_after"] = evaluate(model, data.val, device=cfg.device)
    row["test_after"] = evaluate(model, data.test, device=cfg.device)
    row["perf_before"] = 1.0 - row["test_before"]
    row["perf_after"] = 1.0 - row["test_after"]
    row["seconds"] = time.perf_counter() - start
    return row


def cell_line(row: Mapping[str, Any]) -> str:
    """One finished cell as a line of the log.

    >>> cell_line({"layer": "conv2", "method": "tucker2", "fraction": 0.25, "repeat": 0,
    ...            "weight_rel": 0.4, "test_before": 0.5, "test_after": 0.9, "seconds": 1.0})
    '  conv2 tucker2 0.25 #0: weight error 0.400, test 0.5000 -> 0.9000 (1.0 s)'
    """
    return (
        f"  {row['layer']} {row['method']} {row['fraction']:g} #{row['repeat']}: weight error "
        f"{row['weight_rel']:.3f}, test {row['test_before']:.4f} -> {row['test_after']:.4f} "
        f"({row['seconds']:.1f} s)"
    )


def run_cells(ctx: CellContext, cells: Sequence[Cell], executor: Any) -> Iterable[dict[str, Any]]:
    """Cells in this process, on a ``concurrent.futures`` executor, or on a Dask client.

    As in :func:`tensornet.analysis.truncation_sweep`: a ``distributed.Client`` gets the context
    once per worker (scattered); only the caller writes results.
    """
    return runs.map_cells(run_cell, cells, executor=executor, shared=(ctx,))


# -- one seed -----------------------------------------------------------------------------------
class SeedRun:
    """Base model and cells of one seed in ``OUT/seed-S``, reused when already done."""

    def __init__(self, cfg: Config, seed: int, data: DatasetSplits, log: Callable) -> None:
        self.cfg, self.seed, self.data = cfg, seed, data
        self.dir = runner.seed_dir(cfg.out, seed)
        self.log = lambda text: log(f"[seed {seed}] {text}")

    def build(self) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        d = self.data
        return build_model(self.cfg.model, d.in_channels, d.num_classes, d.image_size)

    def train_kwargs(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size, "seed": self.seed,
            "device": c.device,
        }  # fmt: skip

    def check(self) -> None:
        """Refuse any artefact of this seed that cannot be reused (one line, naming it)."""
        ckpt, _ = checkpoint_path(
            self.cfg.training(self.seed), self.data, self.dir / "checkpoints", self.train_kwargs()
        )
        if ckpt.exists():
            check_checkpoint(ckpt, self.build)
        runner.check_results_file(self.dir / "cells.jsonl", self.cfg.cells(self.seed))

    def plan(self, layers: Sequence[str]) -> list[Cell]:
        c = self.cfg
        return [
            Cell(layer, method, fraction, repeat)
            for layer in layers
            for method in c.methods
            for fraction in c.fractions
            for repeat in range(c.repeats)
        ]

    def run(self, executor: Any = None) -> dict[str, Any]:
        cfg, data = self.cfg, self.data
        model, _, reused = train_or_load(
            self.build, cfg.training(self.seed), data, self.dir / "checkpoints",
            self.train_kwargs(),
        )  # fmt: skip
        model.to(cfg.device).eval()
        base_val = evaluate(model, data.val, device=cfg.device)
        base_test = evaluate(model, data.test, device=cfg.device)
        how = "reused checkpoint" if reused else f"trained {cfg.epochs} epochs"
        self.log(f"[1/2] {cfg.model}: val {base_val:.4f}, test {base_test:.4f} ({how})")
        layers = middle_layers(model)
        plan = self.plan(layers)
        store = ResultStore(self.dir / "cells.jsonl", cfg.cells(self.seed))
        todo = [c for c in plan if c.key not in store.done]
        rows = {r["key"]: r for r in store.rows if "key" in r}
        ctx = CellContext(cfg, self.seed, model, data)
        with Progress(len(todo), "cell", log=self.log) as progress:
            for row in run_cells(ctx, todo, executor):
                store.add(row)
                rows[row["key"]] = row
                progress.step(cell_line(row))
        table = [rows[c.key] for c in plan]
        csv_rows = [{**r, "ranks": "x".join(map(str, r["ranks"]))} for r in table]
        atomic_write_text(self.dir / "cells.csv", rows_to_csv(csv_rows, CELL_COLUMNS))
        self.log(f"[2/2] {len(plan)} cells ({len(todo)} computed, {len(plan) - len(todo)} reused)")
        return {
            "seed": self.seed, "layers": layers, "rows": table, "computed": len(todo),
            "base_val": base_val, "base_test": base_test,
            "sizes": (len(data.train), len(data.val), len(data.test)),
        }  # fmt: skip


# -- figures and report -------------------------------------------------------------------------
def scatter(rows: Sequence[Mapping], perf: str, by: str, path: Path) -> None:
    """Every error measure vs the performance error, one colour per ``by`` (method or layer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r[by] for r in rows))
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, m in zip(axes.flat, MEASURES):
        for i, name in enumerate(names):
            sel = [r for r in rows if r[by] == name]
            ax.scatter([r[m] for r in sel], [r[f"perf_{perf}"] for r in sel], s=14,
                       color=f"C{i}", label=name, alpha=0.8)  # fmt: skip
        if not m.endswith("rel"):
            ax.set_xscale("log")
        ax.set_xlabel(m.replace("_", " "))
        ax.set_ylabel(f"performance error ({perf} fine-tuning)")
    axes.flat[0].legend(title=by, fontsize=8)
    fig.suptitle(f"Approximation error vs performance error {perf} fine-tuning, by {by}")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


def _fmt(entry: Mapping[str, Any]) -> str:
    return stats.Spread(**{k: entry[k] for k in ("mean", "std", "low", "high", "n")}).format(".2f")


def report(cfg: Config, results: Sequence[Mapping], found: Mapping, seconds: float) -> str:
    """``report.md``: verdicts, tau tables beside the paper's, cell table, figures, settings."""
    first = results[0]
    n = len(results)
    v = found["verdicts"]
    lines = [
        f"# Is the approximation error informative? {cfg.model} on {cfg.dataset}",
        "",
        "Reproduction of Schuurmans, Batselier & Kooij (ICLR 2023) on this run's data "
        f"({n} seed(s); {seconds:.0f} s). One layer ({', '.join(first['layers'])}) decomposed at "
        f"a time by {', '.join(cfg.methods)} keeping {', '.join(map(str, cfg.fractions))} of its "
        f"parameters, {cfg.repeats} repeat(s) each; Kendall tau-a between each error and the "
        f"performance error (1 - test accuracy) over {cfg.pseudo_runs} pseudo-runs (one repeat "
        "sampled per configuration), mean ± std.",
        "",
        *([f"**{found['evidence']}**", ""] if found.get("evidence") else []),
        f"**{found['note']}**"
        + (
            " With one repeat per configuration the pseudo-runs coincide."
            if cfg.repeats == 1
            else ""
        ),
        "",
        f"Base model: test accuracy **{first['base_test']:.4f}** (validation "
        f"{first['base_val']:.4f}); {first['sizes'][0]} train / {first['sizes'][1]} val / "
        f"{first['sizes'][2]} test images. "
        + (
            f"Each decomposed model is scored after recomputing its BatchNorm statistics on "
            f"{cfg.calibration_batches} training batches (`tensornet.nn.recalibrate_bn`; no "
            "labels, no weight change), before and after fine-tuning; `test_before_raw` in "
            "`cells.jsonl` is the score without (a model without BatchNorm has nothing to "
            "recalibrate)."
            if cfg.recalibrate_bn
            else "Decomposed models keep the trained model's BatchNorm statistics "
            "(`--no-recalibrate-bn`)."
        ),
        "",
        "## Finding: relative weight error correlates best with performance error; feature "
        "errors are no better",
        "",
        "Verdict per set of levels and performance error, the seeds being the independent "
        "units: *holds* when the one-sided Kendall test of rel. weight error vs performance "
        "error has p < 0.05 (per seed the largest p over its pseudo-runs, combined across seeds "
        "by Stouffer's z) and, for every feature error, the 90% t interval over seeds of "
        "tau(feature) - tau(rel. weight) lies below the equivalence margin "
        f'+{MARGIN:g} (a TOST at 5%: "no better"); *does not hold* when a '
        "feature error's interval lies above the margin or the correlation is significantly "
        "negative; *not enough units* with fewer than 5 seeds (the margin test cannot decide); "
        "*not significant* otherwise. Each seed's bootstrap interval over its configurations is "
        "given beside.",
        "",
    ]
    for key, entry in v.items():
        subset, perf = key.split("/")
        label = "all levels" if subset == "all" else "paper's levels (50/75/90 % compression)"
        diffs = "; ".join(
            f"{m.replace('_', ' ')} - rel. weight: "
            + ", ".join(stats.Interval(**iv).format(".2f") for iv in x["per_unit"])
            for m, x in entry["no_better"].items()
        )
        lines.append(
            f"- **{label}, {perf} fine-tuning: {entry['status']}** (tau-a of rel. weight error "
            f"{entry['statistic']:.2f}, one-sided p = {entry['p_value']:.3g}). {entry['reason']}. "
            f"Differences of tau-a, per seed (bootstrap over its configurations): {diffs}."
        )
    lines += ["", "## tau beside the paper's (all choices, 50/75/90 % compression)", ""]
    if "paper" in found["tables"]:
        t = found["tables"]["paper"]["all"]
        header = ["setting", "rel. weight before", "rel. weight after",
                  "rel. feature before", "rel. feature after"]  # fmt: skip
        rows = [[f"this run: {cfg.model} {cfg.dataset}", _fmt(t["before"]["weight_rel"]),
                 _fmt(t["after"]["weight_rel"]), _fmt(t["before"]["feature_rel"]),
                 _fmt(t["after"]["feature_rel"])]]  # fmt: skip
        for name, ref in REFERENCE.items():
            w, f = ref["weight_rel"], ref["feature_rel"]
            rows.append([f"paper: {name}", f"{w[0]:.2f}", f"{w[1]:.2f}", f"{f[0]:.2f}",
                         f"{f[1]:.2f}"])  # fmt: skip
        lines.append(md_table(header, rows))
    else:
        lines.append("(the run's fractions include none of 0.1, 0.25, 0.5)")
    for subset, title in (("all", "all levels"), ("paper", "the paper's levels")):
        if subset not in found["tables"]:
            continue
        t = found["tables"][subset]
        lines += ["", f"## tau-a per measure and grouping, {title}", ""]
        header = ["measure"] + [f"{g} {p}" for g in GROUPINGS for p in PERF]
        body = [[m.replace("_", " ")] + [_fmt(t[g][p][m]) for g in GROUPINGS for p in PERF]
                for m in MEASURES]  # fmt: skip
        lines.append(md_table(header, body))
    lines += ["", "*all*: pooled over every layer, method and level; *layers*: across layers "
              "with method and level fixed, averaged; *methods*: across methods with layer and "
              "level fixed, averaged.", "", "## Cells (mean over repeats, seed "
              f"{first['seed']})", ""]  # fmt: skip
    cells = []
    for c in configurations(first["rows"]):
        r0 = c[0]
        cells.append([
            r0["layer"], r0["method"], r0["fraction"], "x".join(map(str, r0["ranks"])),
            f"{np.mean([r['weight_rel'] for r in c]):.3f}",
            f"{np.mean([r['feature_rel'] for r in c]):.3f}",
            f"{np.mean([r['test_before'] for r in c]):.4f}",
            f"{np.mean([r['test_after'] for r in c]):.4f}",
        ])  # fmt: skip
    lines.append(md_table(["layer", "method", "fraction", "ranks", "rel. weight err.",
                           "rel. feature err.", "test acc. before", "after"], cells))  # fmt: skip
    d = f"seed-{first['seed']}"
    lines += ["", "## Figures", ""]
    lines += [f"- [scatter_{by}_{p}]({d}/scatter_{by}_{p}.png)"
              for by in ("method", "layer") for p in PERF]  # fmt: skip
    lines += [
        "",
        "## Differences from the paper's setting",
        "",
        f"- Data: {cfg.dataset} ({first['sizes'][0]} training images) instead of CIFAR-10 / "
        "Fashion-MNIST; model " + cfg.model + " instead of ResNet-18 / GaripovNet unless noted.",
        f"- Repeats: {cfg.repeats} (paper 5); pseudo-runs {cfg.pseudo_runs} (paper 5).",
        f"- Fine-tuning: {cfg.finetune_epochs} epoch(s) SGD lr {cfg.finetune_lr:g} momentum "
        f"{cfg.momentum:g} (paper, GaripovNet: 10 epochs SGD lr 1e-4 momentum 0.9).",
        f"- Feature errors over the first {cfg.feature_images} training images (all of them "
        "when fewer); CP by ALS from a random start (seed = repeat), TT-SVD cores in, kh, kw, "
        "out; ranks from the library's uniform-cap fraction solver.",
        "",
    ]
    lines += configuration(cfg)
    return "\n".join(lines)


# -- running ------------------------------------------------------------------------------------
class Study(StudyDriver):
    """The whole run: lock ``--out``, check what is there, run every seed, write the report."""

    seed_run = SeedRun

    def findings(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        return findings(results, self.cfg)

    def figures(self, results: list[dict[str, Any]], found: dict[str, Any]) -> None:
        for r in results:
            d = runner.seed_dir(self.out, r["seed"])
            for by in ("method", "layer"):
                for perf in PERF:
                    scatter(r["rows"], perf, by, d / f"scatter_{by}_{perf}.png")

    def report(self, results: list[dict[str, Any]], found: dict[str, Any], seconds: float) -> str:
        return report(self.cfg, results, found, seconds)


def _methods(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(","))
    bad = [x for x in values if x not in METHODS]
    if bad or not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"distinct methods among {', '.join(METHODS)}: {text!r}")
    return values


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v <= 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"distinct fractions in (0, 1], got {text!r}")
    return values


def build_parser() -> cli.OneLineParser:
    """The argument parser (one line and exit 2 for a bad value)."""
    p = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    add = p.add_argument
    add(
        "--model",
        default=None,
        choices=MODEL_NAMES,
        help="default: vanilla_cnn on digits, garipov otherwise",
    )
    cli.add_run_arguments(
        p, DATASET_NAMES, default_out="runs/approx-error-DATASET-MODEL", val_size=True
    )
    add("--methods", type=_methods, default=METHODS, help="comma-separated, of cp,tucker2,tt")
    add(
        "--fractions",
        type=_fractions,
        default=FRACTIONS,
        help="kept parameter fractions (1.0: the layer left dense)",
    )
    add("--repeats", type=cli.positive_int, default=3)
    add("--pseudo-runs", type=cli.positive_int, default=5)
    add("--epochs", type=cli.positive_int, default=None, help="base training epochs")
    add("--lr", type=cli.positive_float, default=1e-3)
    add("--batch-size", type=cli.positive_int, default=64)
    add("--finetune-epochs", type=cli.nonnegative_int, default=None)
    add(
        "--finetune-lr",
        type=cli.positive_float,
        default=None,
        help="SGD learning rate of the fine-tuning (default 1e-4, the paper's; 1e-2 makes "
        "every CP layer diverge on digits)",
    )
    add("--feature-images", type=cli.positive_int, default=1000)
    add_calibration_arguments(p)
    add("--quick", action="store_true", help="CI size: 3 epochs, levels 0.1,0.5, 2 repeats")
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Config:
    """Parse and check the arguments (exit 2 with one line when bad)."""
    p = build_parser()
    a = p.parse_args(argv)
    model = a.model or ("vanilla_cnn" if a.dataset == "digits" else "garipov")
    out = cli.check_run_arguments(p, a, BUNDLED, f"runs/approx-error-{a.dataset}-{model}")
    small = a.dataset in ("digits", "mnist5k")
    finetune = a.finetune_epochs if a.finetune_epochs is not None else (3 if small else 10)
    cfg = Config(
        model=model, dataset=a.dataset, data_dir=a.data_dir,
        epochs=a.epochs or (15 if a.dataset == "digits" else 10), lr=a.lr,
        batch_size=a.batch_size, seed=a.seed, seeds=a.seeds, methods=a.methods,
        fractions=a.fractions, repeats=a.repeats,
        finetune_epochs=finetune,
        finetune_lr=a.finetune_lr or 1e-4,
        feature_images=a.feature_images, pseudo_runs=a.pseudo_runs, limit=a.limit,
        recalibrate_bn=a.recalibrate_bn, calibration_batches=a.calibration_batches,
        val_size=a.val_size, device=a.device, out=out, quick=a.quick, workers=a.workers,
        scheduler=a.scheduler,
    )  # fmt: skip
    if a.quick:
        cfg = replace(
            cfg,
            epochs=min(cfg.epochs, 3) if a.epochs is None else cfg.epochs,
            fractions=(0.1, 0.5) if a.fractions == FRACTIONS else cfg.fractions,
            repeats=min(cfg.repeats, 2),
            finetune_epochs=min(cfg.finetune_epochs, 1),
            feature_images=min(cfg.feature_images, 256),
            pseudo_runs=min(cfg.pseudo_runs, 3),
            boot=200,
        )
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m studies approx-error``: the exit status (2: a bad argument or file)."""
    return Study.main(PROG, parse_args, argv)
