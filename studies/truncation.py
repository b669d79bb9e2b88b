"""Study 1 (Singh, Jahromi, Orus 2024): how far can conv kernels be truncated along cuts?

``python -m studies truncation [--quick] [--seeds N] [--model vanilla_cnn] [--dataset digits] ...``

Per seed (``OUT/seed-S/``; the seed sets the data split, the initial weights and the shuffling):

1. Train (or reuse) the model; its validation and test accuracy.
2. Spectra of every conv kernel along all 7 cuts: table, bond-spectrum plots, entropy heat map.
3. Per layer and cut, sweep chi: validation and test accuracy and kernel norm kept at each chi.
4. Choose levels **on the validation split**: per (layer, cut) the smallest chi whose validation
   accuracy stays within ``--tolerance`` (the safe level) or ``--aggressive-drop`` (the
   aggressive level); truncate all layers along several cuts at those levels together, read
   their test accuracy, and re-train the aggressive one for a few epochs (the epoch kept is the
   one with the best validation accuracy).

Then ``OUT/report.md`` and ``OUT/findings.json``: the paper's three findings, each with a verdict
(holds / not significant / does not hold), its test and its p-value or bootstrap interval, and
every number as mean ± standard deviation over the seeds.

Every stage is resumable: the trained model is a safetensors checkpoint keyed by its training
configuration, sweep cells are appended to ``sweep.jsonl`` as they finish, and each seed's combined
truncation result is written once to ``combined.json``. Files are written atomically; a second run
on the same ``--out`` refuses to start; a rerun with another configuration refuses to mix results.

Files: with ``--data-dir`` (CIFAR / MNIST files) the validation split is ``--val-size`` of the
training images, a count or a fraction (default 0.1), and part of the training key; the bundled
datasets are split 60/20/20. Progress: on a terminal a tqdm bar with the time left for training
and for the cells; otherwise one line per training epoch and per finished cell, each ending
``[cell 3/12, 0:42 elapsed, ~2:06 left]``.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

import tensornet as tn
from models import MODEL_NAMES, build_model
from studies.common import cli, runner
from studies.common.checkpoints import check_checkpoint, checkpoint_path, train_or_load
from studies.common.data import BUNDLED, DATASET_NAMES, DatasetSplits, val_size_key
from studies.common.progress import Progress
from studies.common.report import rows_to_csv
from studies.common.study import StudyDriver
from studies.common.training import (
    SplitAccuracy,
    evaluate,
    split_scores,
    train,
)
from studies.truncation_report import report
from studies.verdicts.truncation import (  # noqa: F401  (the verdict code, re-exported)
    MUCH_NORM,
    findings,
    nontrivial,
    removable_norm,
    seed_numbers,
    tolerated,
)
from tensornet import plot as tnplot
from tensornet.analysis import truncate_layers, truncation_sweep
from tensornet.core.spectrum import cut_label
from tensornet.io import atomic_write_text

PROG = "python -m studies truncation"
KERNEL_LEGS = tn.KERNEL_LEGS[4]
ALL_CUTS: tuple[tuple[str, ...], ...] = tuple(left for left, _ in tn.cuts(KERNEL_LEGS))
COMBINED_CUTS: tuple[tuple[str, ...], ...] = (("out",), ("in",), ("out", "in"))
QUICK_CHIS = (1, 2, 4, 8, 16, 32, 64)
SWEEP_COLUMNS = (
    "layer", "cut", "chi", "chi_max", "val_accuracy", "test_accuracy", "rel_error", "norm_kept",
    "discarded_weight", "entropy",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Everything that determines the study's results (written into the report).

    ``seed`` is the first seed and ``seeds`` their number; ``device``, ``out``, ``workers`` and
    ``scheduler`` say where the run happens, not what it computes.
    """

    model: str = "vanilla_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    seeds: int = 1
    cuts: tuple[tuple[str, ...], ...] = ALL_CUTS
    chis: tuple[int, ...] | None = None
    tolerance: float = 0.01
    aggressive_drop: float = 0.05
    combined_cuts: tuple[tuple[str, ...], ...] = COMBINED_CUTS
    retrain_epochs: int = 5
    retrain_lr: float = 1e-3
    limit: int | None = None
    val_size: int | float | None = None  # validation split of a file dataset
    device: str = "cpu"
    out: str = "runs/truncation"
    quick: bool = False
    workers: int | None = None
    scheduler: str | None = None

    def training(self, seed: int) -> dict[str, Any]:
        """What the trained model of ``seed`` depends on (its checkpoint key)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": seed,
            "limit": self.limit,
            **val_size_key(self.val_size),
        }

    def sweep(self, seed: int) -> dict[str, Any]:
        """What the sweep of ``seed`` depends on (the header of its ``sweep.jsonl``)."""
        return {
            **self.training(seed),
            "cuts": [list(c) for c in self.cuts],
            "chis": list(self.chis) if self.chis else None,
            "metrics": ["val_accuracy", "test_accuracy"],
        }

    def combined(self, seed: int) -> dict[str, Any]:
        """What the combined truncation of ``seed`` depends on (stored in ``combined.json``)."""
        return {
            **self.sweep(seed),
            "tolerance": self.tolerance,
            "aggressive_drop": self.aggressive_drop,
            "combined_cuts": [list(c) for c in self.combined_cuts],
            "retrain_epochs": self.retrain_epochs,
            "retrain_lr": self.retrain_lr,
        }

    def seed_list(self) -> list[int]:
        """The seeds of this run."""
        return runner.seed_list(self.seed, self.seeds)


# -- levels chosen on validation (tolerated, nontrivial: studies.verdicts.truncation) ----------
def combined_plan(
    choice: Mapping[tuple[str, str], dict], layers: Sequence[str], cuts: Sequence[tuple[str, ...]]
) -> dict[str, list[tuple[tuple[str, ...], int]]]:
    """layer -> [(left legs, chi)] for the cuts in ``cuts`` truncated below full rank."""
    plan = {}
    for layer in layers:
        steps = []
        for left in cuts:
            label = cut_label(left, tuple(x for x in KERNEL_LEGS if x not in left))
            row = choice.get((layer, label))
            if row is not None and row["chi"] < row["chi_max"]:
                steps.append((tuple(left), int(row["chi"])))
        if steps:
            plan[layer] = steps
    return plan


def cut_ranks(model: torch.nn.Module, plan: Mapping[str, Sequence]) -> dict[str, list[int]]:
    """Numerical rank of each planned layer's weight along each planned cut (for checking)."""
    out = {}
    for layer, steps in plan.items():
        param = model.get_submodule(layer).weight.detach()
        cutoff = 100 * torch.finfo(param.dtype).eps  # values below this are rounding noise
        ranks = []
        for left, _ in steps:
            s = tn.spectrum(param.double(), tuple(left)).values
            ranks.append(int((s > cutoff * s[0]).sum()))
        out[layer] = ranks
    return out


def sweep_line(row: Mapping[str, Any]) -> str:
    """One finished sweep cell as a line of the log.

    >>> sweep_line({"layer": "conv1", "cut": "out|in,kh,kw", "chi": 4, "rel_error": 0.25,
    ...             "val_accuracy": 0.9, "test_accuracy": 0.875})
    '  conv1 out|in,kh,kw chi 4: error 0.250, val 0.9000, test 0.8750'
    """
    return (
        f"  {row['layer']} {row['cut']} chi {row['chi']}: error {row['rel_error']:.3f}, "
        f"val {row['val_accuracy']:.4f}, test {row['test_accuracy']:.4f}"
    )


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
        d = self.data
        return build_model(self.cfg.model, d.in_channels, d.num_classes, d.image_size)

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
        cfg = self.cfg
        ckpt, _ = checkpoint_path(
            cfg.training(self.seed), self.data, self.dir / "checkpoints", self.train_kwargs()
        )
        if ckpt.exists():
            check_checkpoint(ckpt, self.build)
        runner.check_results_file(self.dir / "sweep.jsonl", cfg.sweep(self.seed))
        runner.check_json_artefact(
            self.dir / "combined.json",
            "a combined-truncation result",
            ("base", "safe", "aggressive"),
            cfg.combined(self.seed),
        )

    def run(self, executor: Any = None) -> dict[str, Any]:
        """Train, spectra, sweep, combined truncation; returns this seed's result record."""
        cfg, data = self.cfg, self.data
        model, _, reused = train_or_load(
            self.build,
            cfg.training(self.seed),
            data,
            cache_dir=self.dir / "checkpoints",
            train_kwargs=self.train_kwargs(),
        )
        model.to(cfg.device).eval()
        base_val = evaluate(model, data.val, device=cfg.device)
        base_test = evaluate(model, data.test, device=cfg.device)
        how = "reused checkpoint" if reused else f"trained {cfg.epochs} epochs"
        self.log(
            f"[1/4] {cfg.model} on {cfg.dataset}: val {base_val:.4f}, test {base_test:.4f} ({how})"
        )
        layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        table = self.spectra(model, layers)
        rows = self.sweep(model, layers, executor, {"val": base_val, "test": base_test})
        combined = self.combined(model, rows, layers, base_val)
        agg = combined["aggressive"]
        self.log(
            f"[4/4] combined truncation (test): safe {combined['safe']['test_accuracy']:.4f}, "
            f"aggressive {agg['test_accuracy']:.4f} -> re-trained "
            f"{agg['retrain'][agg['retrain_epoch'] - 1]['test_accuracy']:.4f}"
        )
        shapes = {n: tuple(model.get_submodule(n).weight.shape) for n in layers}
        entropies = {(sp.name, sp.label): sp.entropy() for sp in table}
        return {
            "seed": self.seed,
            "layers": layers,
            "shapes": shapes,
            "cuts": list(table.cuts),
            "entropy": entropies,
            "rows": rows,
            "combined": combined,
            "sizes": (len(data.train), len(data.val), len(data.test)),
            "reused": reused,
        }

    def spectra(self, model: torch.nn.Module, layers: Sequence[str]) -> tn.SpectrumTable:
        table = tn.weight_spectra({n: model.get_submodule(n).weight for n in layers})
        table.to_csv(self.dir / "spectra.csv")
        tnplot.entropy_heatmap(
            table,
            path=self.dir / "entropy_heatmap.png",
            title=f"Entropy of each cut, {self.cfg.model}",
        )
        for layer in layers:
            tnplot.bond_spectra(
                [sp for sp in table if sp.name == layer],
                path=self.dir / f"spectra_{layer}.png",
                title=f"Bond spectra of {layer}",
            )
        self.log(f"[2/4] spectra of {len(layers)} conv layers x {len(table.cuts)} cuts")
        return table

    def sweep(
        self,
        model: torch.nn.Module,
        layers: Sequence[str],
        executor: Any,
        base: Mapping[str, float],
    ) -> list[dict]:
        cfg, data = self.cfg, self.data
        with Progress(0, "cell", log=self.log) as progress:
            rows = truncation_sweep(
                model,
                SplitAccuracy(data.val, data.test, device=cfg.device),
                layers=list(layers),
                cuts=cfg.cuts,
                chis=cfg.chis,
                results=self.dir / "sweep.jsonl",
                config=cfg.sweep(self.seed),
                executor=executor,
                progress=progress.callback(sweep_line),
            )
        atomic_write_text(self.dir / "sweep.csv", rows_to_csv(rows, SWEEP_COLUMNS))
        for split in ("test", "val"):
            suffix = "" if split == "test" else "_val"
            tnplot.sweep_curves(
                rows,
                x="chi",
                y=f"{split}_accuracy",
                baseline=base[split],
                path=self.dir / f"accuracy_vs_chi{suffix}.png",
                title=f"{split} accuracy vs chi (one layer, one cut truncated)",
            )
        tnplot.sweep_curves(
            rows,
            x="norm_kept",
            y="test_accuracy",
            baseline=base["test"],
            path=self.dir / "accuracy_vs_norm.png",
        )
        self.log(f"[3/4] sweep: {len(rows)} cells (layer x cut x chi)")
        return rows

    def scores(self, model: torch.nn.Module) -> dict[str, Any]:
        """Validation and test accuracy, and per-image test correctness."""
        return split_scores(model, self.data, self.cfg.device)

    def combined(
        self, model: torch.nn.Module, rows: Sequence[dict], layers: Sequence[str], base_val: float
    ) -> dict[str, Any]:
        cfg = self.cfg
        path = self.dir / "combined.json"
        if path.exists():  # checked against this configuration before the run started
            return runner.read_json(path, "combined-truncation results", "delete it to recompute")
        result: dict[str, Any] = {"config": cfg.combined(self.seed), "base": self.scores(model)}
        for level, drop in (("safe", cfg.tolerance), ("aggressive", cfg.aggressive_drop)):
            plan = combined_plan(tolerated(rows, base_val, drop), layers, cfg.combined_cuts)
            trial = copy.deepcopy(model)
            entry = {
                "plan": {k: [[list(c), chi] for c, chi in v] for k, v in plan.items()},
                "layers": truncate_layers(trial, plan),
                **self.scores(trial),
            }
            if level == "aggressive":
                entry.update(self.retrain(trial, plan))
            result[level] = entry
        runner.write_json(path, result)
        return result

    def retrain(self, trial: torch.nn.Module, plan: Mapping[str, Sequence]) -> dict[str, Any]:
        """Projected re-training: one epoch, then the same truncation again, per epoch.

        The model scored is always truncated along the same cuts to the same chi; the epoch
        reported is the one with the best validation accuracy (the earliest among ties).
        """
        cfg = self.cfg
        history = []
        for epoch in range(1, cfg.retrain_epochs + 1):
            train(
                trial,
                self.data,
                epochs=1,
                lr=cfg.retrain_lr,
                batch_size=cfg.batch_size,
                seed=self.seed + 1000 + epoch,
                device=cfg.device,
                progress=False,
            )
            truncate_layers(trial, plan)
            history.append({"epoch": epoch, **self.scores(trial)})
        best = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"]))
        return {
            "retrain": history,
            "retrain_epoch": best["epoch"],
            "ranks_after_retrain": cut_ranks(trial, plan),
        }


# -- running ------------------------------------------------------------------------------------
class Study(StudyDriver):
    """The whole run: lock ``--out``, check what is there, run every seed, write the report."""

    seed_run = SeedRun

    def findings(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        return findings(results, self.cfg)

    def report(self, results: list[dict[str, Any]], found: dict[str, Any], seconds: float) -> str:
        return report(self.cfg, results, found, seconds)


def parse_cuts(text: str) -> tuple[tuple[str, ...], ...]:
    """``"all"`` or cuts separated by ';' with legs separated by ',' (e.g. ``"out;in;out,in"``)."""
    if text == "all":
        return ALL_CUTS
    out = []
    for part in text.split(";"):
        legs = tuple(x.strip() for x in part.split(",") if x.strip())
        bad = [x for x in legs if x not in KERNEL_LEGS]
        if bad or not legs or len(set(legs)) != len(legs) or len(legs) >= len(KERNEL_LEGS):
            raise argparse.ArgumentTypeError(
                f"cut {part!r}: 1-3 distinct legs among {', '.join(KERNEL_LEGS)}, separated by ','"
            )
        out.append(legs)
    return tuple(out)


def build_parser() -> cli.OneLineParser:
    """The argument parser; every value is checked here (one line and exit 2 when bad)."""
    p = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vanilla_cnn", choices=MODEL_NAMES)
    cli.add_run_arguments(
        p, DATASET_NAMES, default_out="runs/truncation-DATASET-MODEL", val_size=True
    )
    add = p.add_argument
    add(
        "--cuts",
        type=parse_cuts,
        default=ALL_CUTS,
        help="'all' or e.g. 'out;in;out,in' (default: all 7)",
    )
    add(
        "--chis",
        type=cli.int_list,
        default=None,
        help="comma-separated chi values (default: powers of two up to full rank)",
    )
    add("--epochs", type=cli.positive_int, default=15)
    add("--lr", type=cli.positive_float, default=1e-3)
    add("--batch-size", type=cli.positive_int, default=64)
    add("--retrain-epochs", type=cli.positive_int, default=5)
    add("--retrain-lr", type=cli.positive_float, default=1e-3)
    add(
        "--tolerance",
        type=cli.fraction,
        default=0.01,
        help="validation accuracy drop counted as 'little' (fraction, default 0.01 = 1 point)",
    )
    add(
        "--aggressive-drop",
        type=cli.fraction,
        default=0.05,
        help="per-cut validation accuracy drop of the aggressive level (default 0.05)",
    )
    add(
        "--quick",
        action="store_true",
        help="CI-sized run: 3 epochs, 3 cuts, chi in 1..64 by powers of two, 1 re-train epoch",
    )
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Config:
    """Parse and check the arguments (exits with status 2 and one line when they are bad)."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.aggressive_drop <= a.tolerance:
        p.error(f"--aggressive-drop ({a.aggressive_drop}) must exceed --tolerance ({a.tolerance})")
    out = cli.check_run_arguments(p, a, BUNDLED, f"runs/truncation-{a.dataset}-{a.model}")
    cfg = Config(
        model=a.model,
        dataset=a.dataset,
        data_dir=a.data_dir,
        epochs=a.epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        seeds=a.seeds,
        cuts=a.cuts,
        chis=a.chis,
        tolerance=a.tolerance,
        aggressive_drop=a.aggressive_drop,
        retrain_epochs=a.retrain_epochs,
        retrain_lr=a.retrain_lr,
        limit=a.limit,
        val_size=a.val_size,
        device=a.device,
        out=out,
        quick=a.quick,
        workers=a.workers,
        scheduler=a.scheduler,
    )
    if a.quick:
        cfg = replace(
            cfg,
            epochs=min(cfg.epochs, 3),
            cuts=COMBINED_CUTS if a.cuts == ALL_CUTS else a.cuts,
            chis=cfg.chis or QUICK_CHIS,
            retrain_epochs=min(cfg.retrain_epochs, 1),
        )
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m studies truncation``: returns the exit status (2: a bad argument or file)."""
    return Study.main(PROG, parse_args, argv)
