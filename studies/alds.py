"""Study 4 (Maalouf, Liebenwein et al. 2021, ALDS): global layer-wise allocation of low rank.

``python -m studies alds [--quick] [--seeds N] [--dataset digits] [--budgets 0.6,0.4,...] ...``

Per seed (``OUT/seed-S/``; the seed sets the data split, the initial weights and the shuffling):

1. Train (or reuse) a ResNet-20-style model (3 stages x 3 basic blocks, widths ``w, 2w, 4w``,
   option-A shortcuts; ``--width 16`` is He et al.'s ResNet-20).
2. For every kept-parameter fraction in ``--budgets`` (plus 1.0, the uncompressed reference)
   and every allocation method of :func:`tensornet.nn.allocate` (``alds``: channel-grouped low
   rank with per-layer rank ``j`` and group count ``k``; ``uniform``: one rank ratio, plain SVD;
   ``energy``: one energy threshold, plain SVD, the threshold solved to meet the budget;
   ``auto``: any format and ranks per layer, and ``auto-data``: the same scored by output errors
   on calibration batches; ``--methods`` picks some), a *cell*: allocate, compress (first and
   last layer stay dense), recalibrate BatchNorm on ``--calibration-batches`` training batches
   (``--no-recalibrate-bn`` turns it off), validation and test accuracy, then re-train for
   ``--retrain-epochs`` at ``--retrain-lr`` (the tail of the schedule: the
   base model is trained at a constant ``--lr``; re-training continues at a tenth of it by
   default) and keep the epoch with the best validation accuracy.
3. Cells are appended to ``cells.jsonl`` as they finish (resumable) and run in this process or on
   a Dask cluster (``--workers``/``--scheduler``), the model and data sent to each worker once.

Then ``OUT/report.md`` and ``OUT/findings.json``: per budget and method the parameter and FLOP
compression and the accuracy before and after re-training; the paper-style number (the largest
compression whose **validation** drop is at most ``--max-drop``, reported on test); and the
finding "at equal parameter budget ALDS loses less accuracy than uniform rank and than energy
SVD" as holds / not significant / does not hold, by a paired bootstrap of per-image test
correctness over budgets x seeds x images (and a one-sided Wilcoxon signed-rank test over the
budget x seed cells), separately before and after re-training; and, per budget, whether
``auto`` (with and without data) keeps at least ALDS's accuracy.

Files: with ``--data-dir`` (CIFAR / MNIST files) the validation split is ``--val-size`` of the
training images, a count or a fraction (default 0.1), and part of the training key; the bundled
datasets are split 60/20/20. Progress: on a terminal a tqdm bar with the time left for training
and for the cells; otherwise one line per training epoch and per finished cell, each ending
``[cell 3/12, 0:42 elapsed, ~2:06 left]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.resnet import BasicBlock, ResNet
from studies.alds_cells import (  # noqa: F401  (re-exported: the cell code)
    ALL_METHODS,
    AUTO_METHODS,
    CellContext,
    cell_key,
    grouped_formula,
    map_cells,
    run_cell,
)
from studies.alds_report import auto_section, recalibration_section
from studies.common import cli, runner, stats
from studies.common.calibration import CALIBRATION_BATCHES, add_calibration_arguments
from studies.common.checkpoints import check_checkpoint, checkpoint_path, train_or_load
from studies.common.data import BUNDLED, DATASET_NAMES, DatasetSplits, val_size_key
from studies.common.progress import Progress
from studies.common.report import configuration, md_table, rows_to_csv, verdict_text
from studies.common.study import StudyDriver
from studies.verdicts.alds import (  # noqa: F401  (the verdict code, re-exported)
    METHODS,
    combine,
    compare,
    findings,
    paper_number,
)
from tensornet.analysis import ResultStore
from tensornet.io import atomic_write_text, save_figure
from tensornet.nn.alloc_candidates import AUTO_FORMATS

PROG = "python -m studies alds"
BUDGETS: tuple[float, ...] = (0.6, 0.4, 0.25, 0.15)
QUICK_BUDGETS: tuple[float, ...] = (0.5, 0.25)
QUICK_AUTO_FORMATS: tuple[str, ...] = ("svd", "grouped", "tucker2")  # the fast candidates
# Per-dataset defaults: mnist5k (28x28, 3,000 training images) is shrunk to stay near 10 min.
DEFAULTS = {
    "digits": {"width": 16, "epochs": 15, "retrain_epochs": 3},
    "mnist5k": {"width": 8, "epochs": 6, "retrain_epochs": 1},
}
OTHER_DEFAULTS = {"width": 16, "epochs": 30, "retrain_epochs": 5}
CELL_COLUMNS = (
    "method", "budget", "params", "model_params", "params_kept", "flops", "model_flops",
    "flops_kept", "max_error", "val_before", "test_before", "val_after", "test_after",
    "retrain_epoch",
)  # fmt: skip
PAPER = (
    "ResNet-20 on CIFAR-10 (91.39 % top-1), one-shot, largest compression with top-1 drop "
    "<= 0.5 %: ALDS -0.47 %, 74.9 % fewer parameters, 67.9 % fewer FLOPs; uniform SVD and "
    "energy-based SVD baselines reach roughly 40-50 % fewer parameters (STUDIES.md section 4)"
)


@dataclass(frozen=True)
class Config:
    """Everything that determines the study's results (written into the report).

    ``device``, ``out``, ``workers`` and ``scheduler`` say where the run happens, not what it
    computes.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    width: int = 16
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    seeds: int = 1
    budgets: tuple[float, ...] = BUDGETS
    retrain_epochs: int = 3
    retrain_lr: float = 1e-4
    max_drop: float = 0.005
    iterations: int = 4
    random_starts: int = 4
    limit: int | None = None
    methods: tuple[str, ...] = ALL_METHODS
    auto_formats: tuple[str, ...] = AUTO_FORMATS
    recalibrate_bn: bool = True
    calibration_batches: int = CALIBRATION_BATCHES
    val_size: int | float | None = None  # validation split of a file dataset
    device: str = "cpu"
    out: str = "runs/alds"
    quick: bool = False
    workers: int | None = None
    scheduler: str | None = None

    def training(self, seed: int) -> dict[str, Any]:
        """What the trained model of ``seed`` depends on (its checkpoint key)."""
        return {
            "model": f"resnet20-w{self.width}",
            "dataset": self.dataset,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": seed,
            "limit": self.limit,
            **val_size_key(self.val_size),
        }

    def cells(self, seed: int) -> dict[str, Any]:
        """What the cells of ``seed`` depend on (the header of its ``cells.jsonl``)."""
        return {
            **self.training(seed),
            "retrain_epochs": self.retrain_epochs,
            "retrain_lr": self.retrain_lr,
            "iterations": self.iterations,
            "random_starts": self.random_starts,
            "auto_formats": list(self.auto_formats),
            "recalibrate_bn": self.recalibrate_bn,
            "calibration_batches": self.calibration_batches,
        }

    def levels(self) -> list[float]:
        """The kept fractions of every seed: 1.0 (the reference) and the budgets, descending."""
        return [1.0, *sorted(self.budgets, reverse=True)]

    def seed_list(self) -> list[int]:
        """The seeds of this run."""
        return runner.seed_list(self.seed, self.seeds)


def build_resnet(width: int, in_channels: int, num_classes: int) -> ResNet:
    """ResNet-20's layout (3 stages x 3 basic blocks, option-A shortcuts), widths ``w, 2w, 4w``.

    >>> net = build_resnet(16, 3, 10)
    >>> sum(p.numel() for p in net.parameters())
    269722
    """
    widths = (width, 2 * width, 4 * width)
    return ResNet(BasicBlock, (3, 3, 3), widths, in_channels, num_classes, shortcut="pad")


# -- one seed -----------------------------------------------------------------------------------
class SeedRun:
    """Everything for one seed in ``OUT/seed-S``; each stage is reused when already done."""

    def __init__(self, cfg: Config, seed: int, data: DatasetSplits, log: Callable) -> None:
        self.cfg, self.seed, self.data = cfg, seed, data
        self.dir = runner.seed_dir(cfg.out, seed)
        self.log = lambda text: log(f"[seed {seed}] {text}")

    def build(self) -> torch.nn.Module:
        """The untrained model of this seed."""
        torch.manual_seed(self.seed)
        return build_resnet(self.cfg.width, self.data.in_channels, self.data.num_classes)

    def train_kwargs(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "epochs": c.epochs,
            "lr": c.lr,
            "batch_size": c.batch_size,
            "seed": self.seed,
            "device": c.device,
        }

    def check(self) -> None:
        """Refuse (StudyError naming the file) any artefact of this seed that cannot be reused."""
        ckpt, _ = checkpoint_path(
            self.cfg.training(self.seed), self.data, self.dir / "checkpoints", self.train_kwargs()
        )
        if ckpt.exists():
            check_checkpoint(ckpt, self.build)
        runner.check_results_file(self.dir / "cells.jsonl", self.cfg.cells(self.seed))

    def run(self, executor: Any = None) -> dict[str, Any]:
        """Train, then every (method, budget) cell; returns this seed's result record."""
        cfg = self.cfg
        model, _, reused = train_or_load(
            self.build,
            cfg.training(self.seed),
            self.data,
            cache_dir=self.dir / "checkpoints",
            train_kwargs=self.train_kwargs(),
        )
        model.to(cfg.device).eval()
        ctx = CellContext(cfg, self.seed, model, self.data)
        base = ctx.scores(model)
        how = "reused checkpoint" if reused else f"trained {cfg.epochs} epochs"
        self.log(
            f"[1/2] resnet20 (width {cfg.width}) on {cfg.dataset}: val "
            f"{base['val_accuracy']:.4f}, test {base['test_accuracy']:.4f} ({how})"
        )
        store = ResultStore(self.dir / "cells.jsonl", cfg.cells(self.seed))
        wanted = [(m, b) for b in cfg.levels() for m in cfg.methods]
        todo = [c for c in wanted if cell_key(*c) not in store.done]
        with Progress(len(todo), "cell", log=self.log) as progress:
            for row in map_cells(ctx, todo, executor):
                store.add(row)
                progress.step(
                    f"  {row['method']:<7} budget {row['budget']:<5g} params {row['params']:,} "
                    f"test {row['before']['test_accuracy']:.4f} -> "
                    f"{row['after']['test_accuracy']:.4f} ({row['seconds']:.1f} s)"
                )
        by_key = {r["key"]: r for r in store.rows if "key" in r}
        rows = [by_key[cell_key(*c)] for c in wanted]
        self.log(f"[2/2] cells: {len(todo)} computed, {len(wanted) - len(todo)} reused")
        atomic_write_text(self.dir / "cells.csv", rows_to_csv(flat_rows(rows), CELL_COLUMNS))
        plot_allocations(rows, cfg.levels(), self.dir / "allocations.png", cfg.methods)
        return {
            "seed": self.seed,
            "base": base,
            "rows": rows,
            "computed": len(todo),
            "input_shape": list(ctx.example.shape),
            "num_classes": self.data.num_classes,
            "sizes": (len(self.data.train), len(self.data.val), len(self.data.test)),
            "reused": reused,
        }


def flat_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat dict per cell (the columns of ``cells.csv``)."""
    out = []
    for r in rows:
        out.append(
            {
                "method": r["method"],
                "budget": r["budget"],
                "params": r["params"],
                "model_params": r["model_params"],
                "params_kept": r["params"] / r["model_params"],
                "flops": r["flops"],
                "model_flops": r["model_flops"],
                "flops_kept": r["flops"] / r["model_flops"],
                "max_error": r["max_error"],
                "val_before": r["before"]["val_accuracy"],
                "test_before": r["before"]["test_accuracy"],
                "val_after": r["after"]["val_accuracy"],
                "test_after": r["after"]["test_accuracy"],
                "retrain_epoch": r["after"]["epoch"],
            }
        )
    return out


def plot_allocations(
    rows: Sequence[Mapping[str, Any]],
    levels: Sequence[float],
    path: Path,
    methods: Sequence[str] = METHODS,
) -> None:
    """Per budget: rank ``j`` (auto: the first rank) per layer for each method (0: left
    dense) and ALDS's ``k``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [b for b in levels if b < 1]
    fig, axes = plt.subplots(len(budgets), 2, figsize=(13, 2.6 * len(budgets) + 0.6), squeeze=False)
    for ax_j, ax_k, budget in zip(axes[:, 0], axes[:, 1], budgets):
        cells = {r["method"]: r for r in rows if r["budget"] == budget}
        names = [lay["name"] for lay in cells[methods[0]]["layers"]]
        x = np.arange(len(names))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            js = [lay["j"] for lay in cells[method]["layers"]]
            ax_j.bar(x + (i - (len(methods) - 1) / 2) * width, js, width, label=method)
        ax_j.set_ylabel(f"rank j\n(budget {budget:g})")
        alds = cells["alds"]["layers"] if "alds" in cells else []
        ks = [lay["k"] if lay["format"] != "dense" else 0 for lay in alds]
        ax_k.bar(x, ks, 0.6, color="tab:blue")
        ax_k.set_ylabel("ALDS groups k")
        for ax in (ax_j, ax_k):
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=70, fontsize=6)
    axes[0, 0].legend(fontsize=7)
    axes[0, 0].set_title("rank per layer (0: layer left dense)")
    axes[0, 1].set_title("ALDS channel groups per layer (0: dense)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


# -- report -------------------------------------------------------------------------------------
def _sp(d: Mapping[str, Any], fmt: str = ".2f", scale: float = 100.0, unit: str = "") -> str:
    return stats.Spread(**d).format(fmt, scale, unit)


def _verdict_line(c: Mapping[str, Any]) -> str:
    v = c["verdict"]
    iv = stats.Interval(**v["interval"]) if v["interval"] else None
    verdict = stats.Verdict(**{**v, "interval": iv})
    return (
        f"{verdict_text(verdict)}.** {verdict.reason}; per cell ALDS wins {c['wins']}, ties "
        f"{c['ties']}, loses {c['losses']} (one-sided Wilcoxon signed-rank p = "
        f"{c['wilcoxon_p']:.3g})"
    )


def report(
    cfg: Config, results: Sequence[Mapping[str, Any]], found: Mapping[str, Any], seconds: float
) -> str:
    """``report.md``: the finding with verdicts, tables, the paper-style number, figures."""
    n = len(results)
    first = results[0]
    sizes = first["sizes"]
    base = stats.spread(found["base"]).format(".4f")
    params = first["rows"][0]["model_params"]
    flops = first["rows"][0]["model_flops"]
    lines = [
        f"# ALDS global allocation: ResNet-20-style (width {cfg.width}) on {cfg.dataset}",
        "",
        "Reproduction of Maalouf, Liebenwein, Feldman, Rus et al. (NeurIPS 2021), *Compressing "
        "Neural Networks: Towards Determining the Optimal Layer-wise Decomposition*, on this "
        f"run's data ({n} seed{'s' if n > 1 else ''}: {', '.join(map(str, found['seeds']))}; "
        f"{seconds:.0f} s). Budgets are kept fractions of the whole model's {params:,} "
        f"parameters (first conv and the classifier are never compressed); FLOPs are the "
        f"library's count (2 per multiply-add, conv/linear layers, factored forward) for one "
        f"{'x'.join(map(str, first['input_shape'][1:]))} input image "
        f"({flops:,} dense). The re-training epoch and the paper-style level are chosen on the "
        "validation split; accuracies below are test-split accuracies.",
        "",
        f"**{found['note']}**",
        "",
        "## Model",
        f"- Test accuracy of the trained model: **{base}** (validation "
        f"{stats.spread(found['base_val']).format('.4f')}); {sizes[0]} train / {sizes[1]} val / "
        f"{sizes[2]} test images per seed. Chance level (1 / classes): "
        f"{1 / first['num_classes']:.4f}.",
        *recalibration_section(cfg, found),
        "## Finding: at equal parameter budget, ALDS loses less accuracy than uniform rank and "
        "than energy-threshold SVD",
        "",
        "Each comparison: *holds* when the 95 % paired-bootstrap interval of ALDS's test-accuracy "
        "advantage (per image, averaged over the budgets "
        f"{', '.join(f'{b:g}' for b in sorted(cfg.budgets, reverse=True))}; resampling seeds, "
        "then images) lies above 0, *does not hold* when it lies below 0, *not significant* "
        "otherwise. The finding holds when both comparisons hold. The Wilcoxon test over the "
        f"{len(cfg.budgets) * n} budget x seed cells is secondary (with {len(cfg.budgets) * n} "
        f"cells its smallest possible one-sided p is {0.5 ** (len(cfg.budgets) * n):.3g}).",
        "",
    ]
    for phase, label in (
        ("before", "compress-only (r = 0, before re-training)"),
        ("after", "after re-training (one-shot, r = e)"),
    ):
        lines.append(f"**{label.capitalize()}: {found['verdicts'][phase]}.**")
        lines.append("")
        for other, c in found["comparisons"][phase].items():
            iv = stats.Interval(**c["advantage"]).format(scale=100, unit=" points")
            lines.append(f"- vs {other}: advantage {iv}. **{_verdict_line(c)}.")
        lines.append("")
    lines += auto_section(found)
    lines += [
        f"## Paper-style number: largest compression with a drop <= {100 * cfg.max_drop:g} points",
        "",
        f"Reference [paper]: {PAPER}. Here: the budget of fewest parameters whose *validation* "
        f"drop is at most {100 * cfg.max_drop:g} points (1.0, no compression, always qualifies); "
        "its test drop. Only the budgets of this run are candidates.",
        "",
    ]
    rows, none = [], []
    for phase in ("before", "after"):
        for method in found["methods"]:
            picks = [p[method] for p in found["paper_number"][phase] if method in p]
            label = "compress-only" if phase == "before" else "one-shot"
            if picks and all(p["budget"] == 1.0 for p in picks):
                none.append(f"{method} ({label})")
            rows.append(
                [
                    label,
                    method,
                    "/".join(f"{p['budget']:g}" for p in picks),
                    stats.spread([p["params_removed"] for p in picks]).format(".1f", 100, "%"),
                    stats.spread([p["flops_removed"] for p in picks]).format(".1f", 100, "%"),
                    stats.spread([p["test_drop"] for p in picks]).format(".2f", 100),
                ]
            )
    lines += [
        md_table(
            ["phase", "method", "budget", "fewer params", "fewer FLOPs", "test drop (points)"], rows
        ),
        "",
        *(
            [
                f"No compressed budget qualified in any seed for: {', '.join(none)}; their row is "
                "the uncompressed model (0 % fewer parameters).",
                "",
            ]
            if none
            else []
        ),  # fmt: skip
        "## Per budget (mean ± std over seeds)",
        "",
    ]
    rows = []
    for t in found["table"]:
        rows.append(
            [
                f"{t['budget']:g}",
                t["method"],
                _sp(t["params_kept"], ".1f", unit="%"),
                _sp(t["flops_kept"], ".1f", unit="%"),
                _sp(t["max_error"], ".3f", 1.0),
                _sp(t["before_accuracy"], ".2f"),
                _sp(t["before_drop"], ".2f"),
                _sp(t["after_accuracy"], ".2f"),
                _sp(t["after_drop"], ".2f"),
            ]
        )
    lines += [
        md_table(
            [
                "budget",
                "method",
                "params kept",
                "FLOPs kept",
                "max layer error",
                "test acc. % (compress-only)",
                "drop",
                "test acc. % (re-trained)",
                "drop",
            ],
            rows,
        ),
        "",
        "*max layer error* is ALDS's `max_g sigma_(j+1)(W_g) / ||W||_2` of the chosen ranks "
        "(the quantity ALDS minimises; for uniform/energy with one group).",
        "",
        "## Differences from the paper's setting",
        "",
        f"- Data: {cfg.dataset} ({sizes[0]} training images"
        f"{'' if cfg.dataset in ('cifar10',) else '; the paper uses CIFAR-10, 50,000 32x32 images'}"
        ").",
        f"- Model: ResNet-20 layout with stage widths {cfg.width}/{2 * cfg.width}/{4 * cfg.width}"
        f" ({'as the paper' if cfg.width == 16 else 'the paper: 16/32/64'}), trained {cfg.epochs} "
        f"epochs with Adam at a constant lr {cfg.lr:g} (the paper: SGD with a step schedule, "
        "182 epochs).",
        f"- Re-training: {cfg.retrain_epochs} epoch(s) of Adam at lr {cfg.retrain_lr:g} (the tail "
        "of a schedule, standing in for the paper's re-training with the last part of its "
        "schedule); the epoch kept has the best validation accuracy.",
        f"- Budgets: {', '.join(f'{b:g}' for b in cfg.levels())} kept parameter fractions only; "
        "the paper sweeps finely, so the paper-style number here is as coarse as the grid.",
        f"- ALDS search: {cfg.iterations} global/local alternations from starts k ~ 1, 3, 5, 7, 9 "
        f"(the divisor nearest) in every layer and {cfg.random_starts} random starts; group "
        "counts up to 64; the best (least maximum layer error) kept. Uniform and energy are "
        "plain SVD (k = 1), their ratio/threshold solved by bisection to meet the budget, "
        "leftover budget spent round-robin one rank at a time.",
        "",
        "## Per seed",
        "",
    ]
    rows = []
    for res in results:
        for r in res["rows"]:
            rows.append(
                [
                    res["seed"],
                    f"{r['budget']:g}",
                    r["method"],
                    f"{r['params']:,}",
                    f"{r['flops']:,}",
                    f"{r['before']['test_accuracy']:.4f}",
                    f"{r['after']['test_accuracy']:.4f}",
                    r["after"]["epoch"],
                ]
            )
    lines += [
        md_table(
            [
                "seed",
                "budget",
                "method",
                "params",
                "FLOPs",
                "test compress-only",
                "test re-trained",
                "epoch",
            ],
            rows,
        ),  # fmt: skip
        "",
        "## Figures and tables",
        "",
    ]
    lines += [
        f"- [seed-{res['seed']}/allocations.png](seed-{res['seed']}/allocations.png): rank j "
        "per layer for each method and ALDS's group count k, per budget"
        for res in results
    ]
    lines += [
        "- [findings.json](findings.json) (every number and verdict); per seed "
        "`seed-S/cells.jsonl` (every cell, with per-layer ranks/groups and per-image test "
        "correctness) and `seed-S/cells.csv`.",
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

    def report(self, results: list[dict[str, Any]], found: dict[str, Any], seconds: float) -> str:
        return report(self.cfg, results, found, seconds)


def budget_list(text: str) -> tuple[float, ...]:
    """Comma-separated distinct kept fractions in (0, 1), e.g. ``"0.6,0.4,0.25"``.

    >>> budget_list("0.25,0.6")
    (0.6, 0.25)
    """
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers expected") from None
    if not values or any(not 0 < v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"{text!r}: distinct kept fractions strictly between 0 and 1 expected"
        )
    return tuple(sorted(values, reverse=True))


def method_list(text: str) -> tuple[str, ...]:
    """Comma-separated distinct methods of :data:`ALL_METHODS`, in the table's order.

    >>> method_list("auto-data,alds")
    ('alds', 'auto-data')
    """
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in ALL_METHODS]
    if not names or unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: distinct methods of {', '.join(ALL_METHODS)} expected"
        )
    return tuple(m for m in ALL_METHODS if m in names)


def format_list(text: str) -> tuple[str, ...]:
    """Comma-separated distinct formats of ``auto`` (:data:`AUTO_FORMATS`).

    >>> format_list("svd,tucker2")
    ('svd', 'tucker2')
    """
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names or any(n not in AUTO_FORMATS for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"{text!r}: distinct formats of {', '.join(AUTO_FORMATS)} expected"
        )
    return names


def build_parser() -> cli.OneLineParser:
    """The argument parser; every value is checked here (one line and exit 2 when bad)."""
    p = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    cli.add_run_arguments(p, DATASET_NAMES, default_out="runs/alds-DATASET", val_size=True)
    add = p.add_argument
    add(
        "--budgets",
        type=budget_list,
        default=BUDGETS,
        help="kept parameter fractions (default 0.6,0.4,0.25,0.15; 1.0 is always added)",
    )
    add(
        "--width",
        type=cli.positive_int,
        default=None,
        help="first-stage width (16: ResNet-20; default 16, mnist5k 8)",
    )
    add(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="training epochs (default digits 15, mnist5k 6, others 30)",
    )
    add("--lr", type=cli.positive_float, default=1e-3)
    add("--batch-size", type=cli.positive_int, default=64)
    add(
        "--retrain-epochs",
        type=cli.nonnegative_int,
        default=None,
        help="re-training epochs after compression (default digits 3, mnist5k 1, others 5)",
    )
    add("--retrain-lr", type=cli.positive_float, default=1e-4)
    add(
        "--max-drop",
        type=cli.fraction,
        default=0.005,
        help="accuracy drop of the paper-style number (fraction, default 0.005 = 0.5 points)",
    )
    add(
        "--methods",
        type=method_list,
        default=ALL_METHODS,
        help=f"allocation methods, comma-separated (default {','.join(ALL_METHODS)})",
    )
    add(
        "--auto-formats",
        type=format_list,
        default=None,
        help=f"formats auto may choose (default all: {','.join(AUTO_FORMATS)}; --quick: "
        f"{','.join(QUICK_AUTO_FORMATS)})",
    )
    add_calibration_arguments(p)  # also the batches auto-data fits to
    add("--iterations", type=cli.positive_int, default=4, help="ALDS alternations per start")
    add("--random-starts", type=cli.nonnegative_int, default=4, help="ALDS random starts")
    add(
        "--quick",
        action="store_true",
        help="CI-sized run: width 8, 4 epochs, budgets 0.5,0.25, 1 re-train epoch",
    )
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Config:
    """Parse and check the arguments (exits with status 2 and one line when they are bad)."""
    p = build_parser()
    a = p.parse_args(argv)
    out = cli.check_run_arguments(p, a, BUNDLED, f"runs/alds-{a.dataset}")
    defaults = DEFAULTS.get(a.dataset, OTHER_DEFAULTS)
    if a.quick:
        defaults = {"width": 8, "epochs": 4, "retrain_epochs": 1}
    cfg = Config(
        dataset=a.dataset,
        data_dir=a.data_dir,
        width=a.width or defaults["width"],
        epochs=a.epochs or defaults["epochs"],
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        seeds=a.seeds,
        budgets=a.budgets,
        retrain_epochs=(
            defaults["retrain_epochs"] if a.retrain_epochs is None else a.retrain_epochs
        ),
        retrain_lr=a.retrain_lr,
        max_drop=a.max_drop,
        iterations=a.iterations,
        random_starts=a.random_starts,
        limit=a.limit,
        methods=a.methods,
        auto_formats=a.auto_formats or (QUICK_AUTO_FORMATS if a.quick else AUTO_FORMATS),
        recalibrate_bn=a.recalibrate_bn,
        calibration_batches=a.calibration_batches,
        val_size=a.val_size,
        device=a.device,
        out=out,
        quick=a.quick,
        workers=a.workers,
        scheduler=a.scheduler,
    )
    if a.quick and a.budgets == BUDGETS:
        cfg = replace(cfg, budgets=QUICK_BUDGETS)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m studies alds``: returns the exit status (2: a bad argument or file)."""
    return Study.main(PROG, parse_args, argv)
