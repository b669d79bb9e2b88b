"""Study 1 (Singh, Jahromi, Orus 2024): how far can conv kernels be truncated along cuts?

``python -m studies truncation [--quick] [--model vanilla_cnn] [--dataset digits] ...``

1. Train (or reuse) the model and report its test accuracy.
2. Spectra of every conv kernel along all 7 cuts: table, bond-spectrum plots, entropy heat map.
3. Per layer and cut, sweep chi: test accuracy and kernel norm kept at each chi.
4. Truncate all layers along several cuts together: at the level each cut alone tolerates
   (< 1 point lost), and at an aggressive level; re-train the aggressive one for a few epochs.
5. ``report.md`` in the output folder: the paper's three findings, tested with this run's
   numbers, links to the figures, and the exact configuration.

Every stage is resumable: the trained model is a safetensors checkpoint keyed by its training
configuration, sweep cells are appended to ``sweep.jsonl`` as they finish, and the combined
truncation result is written once to ``combined.json``. Files are written atomically.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import tensornet as tn
from models import MODEL_NAMES, build_model
from studies.common.checkpoints import train_or_load
from studies.common.data import get_dataset
from studies.common.training import evaluate, train
from tensornet import plot as tnplot
from tensornet.analysis import truncate_layers, truncation_sweep
from tensornet.core.spectrum import cut_label
from tensornet.io import atomic_write_text

KERNEL_LEGS = tn.KERNEL_LEGS[4]
ALL_CUTS: tuple[tuple[str, ...], ...] = tuple(left for left, _ in tn.cuts(KERNEL_LEGS))
COMBINED_CUTS: tuple[tuple[str, ...], ...] = (("out",), ("in",), ("out", "in"))
QUICK_CHIS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Config:
    """Everything that determines the study's results (written into the report)."""

    model: str = "vanilla_cnn"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    cuts: tuple[tuple[str, ...], ...] = ALL_CUTS
    chis: tuple[int, ...] | None = None
    tolerance: float = 0.01
    aggressive_drop: float = 0.05
    combined_cuts: tuple[tuple[str, ...], ...] = COMBINED_CUTS
    retrain_epochs: int = 5
    retrain_lr: float = 1e-3
    limit: int | None = None
    device: str = "cpu"
    out: str = "runs/truncation"
    quick: bool = False
    extra: dict = field(default_factory=dict, compare=False)

    def training(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "limit": self.limit,
        }

    def sweep(self) -> dict[str, Any]:
        return {**self.training(), "cuts": [list(c) for c in self.cuts], "chis": self.chis}

    def combined(self) -> dict[str, Any]:
        return {
            **self.sweep(),
            "tolerance": self.tolerance,
            "aggressive_drop": self.aggressive_drop,
            "combined_cuts": [list(c) for c in self.combined_cuts],
            "retrain_epochs": self.retrain_epochs,
            "retrain_lr": self.retrain_lr,
        }


# -- small file helpers -----------------------------------------------------------------------
def md(text: str) -> str:
    """Escape a cut label (``out|in,kh,kw``) for a Markdown table cell."""
    return text.replace("|", "\\|")


def rows_to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# -- analysis of the sweep ------------------------------------------------------------------------
def tolerated(rows: Sequence[dict], base: float, drop: float) -> dict[tuple[str, str], dict]:
    """Per (layer, cut): the smallest-chi row whose accuracy stays within ``drop`` of ``base``.

    The full-rank row always qualifies (it is the untruncated model), so every pair has one.
    """
    best: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["accuracy"] < base - drop - 1e-12:
            continue
        key = (row["layer"], row["cut"])
        if key not in best or row["chi"] < best[key]["chi"]:
            best[key] = row
    return best


def nontrivial(choice: dict[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """Drop cuts with a single singular value (e.g. ``in`` of a one-channel input layer)."""
    return {k: r for k, r in choice.items() if r["chi_max"] > 1}


def layer_truncatability(
    choice: dict[tuple[str, str], dict], layers: Sequence[str]
) -> dict[str, float]:
    """Mean over cuts of the norm fraction that can be removed within tolerance, per layer."""
    out = {}
    for layer in layers:
        lost = [1 - r["norm_kept"] for (name, _), r in choice.items() if name == layer]
        out[layer] = float(np.mean(lost)) if lost else float("nan")
    return out


def combined_plan(choice: dict[tuple[str, str], dict], layers: Sequence[str], cuts) -> dict:
    """layer -> [(left legs, chi)] for the cuts in ``cuts`` at the chosen chi of each."""
    plan = {}
    for layer in layers:
        steps = []
        for left in cuts:
            label = cut_label(left, tuple(x for x in KERNEL_LEGS if x not in left))
            row = choice.get((layer, label))
            if row is not None and row["chi"] < row["chi_max"]:
                steps.append((left, int(row["chi"])))
        if steps:
            plan[layer] = steps
    return plan


def cut_ranks(model: torch.nn.Module, plan: dict) -> dict[str, list[int]]:
    """Numerical rank of each planned layer's weight along each planned cut (for checking)."""
    out = {}
    for layer, steps in plan.items():
        param = model.get_submodule(layer).weight.detach()
        cutoff = 100 * torch.finfo(param.dtype).eps  # values below this are rounding noise
        ranks = []
        for left, _ in steps:
            s = tn.spectrum(param.double(), left).values
            ranks.append(int((s > cutoff * s[0]).sum()))
        out[layer] = ranks
    return out


# -- the study ------------------------------------------------------------------------------------
class Study:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(cfg.device)
        self.log_lines: list[str] = []
        self.started = time.perf_counter()

    def log(self, text: str) -> None:
        text = f"{text}  [{time.perf_counter() - self.started:.1f} s]"
        print(text, flush=True)
        self.log_lines.append(text)

    def run(self, data) -> Path:
        """Run every stage on ``data`` (a ``DatasetSplits``); return the report's path."""
        cfg = self.cfg
        start = time.perf_counter()
        self.data = data

        def build() -> torch.nn.Module:
            torch.manual_seed(cfg.seed)
            return build_model(cfg.model, data.in_channels, data.num_classes, data.image_size)

        model, meta, reused = train_or_load(
            build,
            cfg.training(),
            data,
            cache_dir=self.out / "checkpoints",
            train_kwargs={
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "batch_size": cfg.batch_size,
                "seed": cfg.seed,
                "device": cfg.device,
            },
        )
        model.to(self.device).eval()
        base = self.accuracy(model)
        self.log(
            f"[1/5] {cfg.model} on {cfg.dataset}: test accuracy {base:.4f} "
            f"({'reused checkpoint' if reused else f'trained {cfg.epochs} epochs'})"
        )
        layers = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        self.shapes = {n: tuple(model.get_submodule(n).weight.shape) for n in layers}

        table = tn.weight_spectra({n: model.get_submodule(n).weight for n in layers})
        table.to_csv(self.out / "spectra.csv")
        figures = {"entropy": "entropy_heatmap.png"}
        tnplot.entropy_heatmap(
            table, path=self.out / figures["entropy"], title=f"Entropy of each cut, {cfg.model}"
        )
        for layer in layers:
            figures[f"spectra_{layer}"] = f"spectra_{layer}.png"
            tnplot.bond_spectra(
                [sp for sp in table if sp.name == layer],
                path=self.out / figures[f"spectra_{layer}"],
                title=f"Bond spectra of {layer}",
            )
        self.log(
            f"[2/5] spectra of {len(layers)} conv layers x {len(table.cuts)} cuts -> spectra.csv"
        )

        rows = truncation_sweep(
            model,
            lambda m: {"accuracy": self.accuracy(m)},
            layers=layers,
            cuts=cfg.cuts,
            chis=cfg.chis,
            results=self.out / "sweep.jsonl",
            config={**cfg.sweep(), "base_accuracy": base},
        )
        columns = [
            "layer",
            "cut",
            "chi",
            "chi_max",
            "accuracy",
            "rel_error",
            "norm_kept",
            "discarded_weight",
            "entropy",
        ]
        atomic_write_text(self.out / "sweep.csv", rows_to_csv(rows, columns))
        figures["accuracy_vs_chi"] = "accuracy_vs_chi.png"
        figures["accuracy_vs_norm"] = "accuracy_vs_norm.png"
        tnplot.sweep_curves(
            rows, x="chi", y="accuracy", baseline=base, path=self.out / figures["accuracy_vs_chi"]
        )
        tnplot.sweep_curves(
            rows,
            x="norm_kept",
            y="accuracy",
            baseline=base,
            path=self.out / figures["accuracy_vs_norm"],
        )
        self.log(f"[3/5] sweep: {len(rows)} cells (layer x cut x chi) -> sweep.csv")

        combined = self.combined(model, rows, base, layers)
        figures["recovery"] = "recovery.png"
        tnplot.recovery_curve(
            combined["aggressive"]["retrain_accuracy"],
            before=base,
            truncated=combined["aggressive"]["accuracy"],
            path=self.out / figures["recovery"],
        )
        self.log(
            f"[4/5] combined truncation: safe {combined['safe']['accuracy']:.4f}, aggressive "
            f"{combined['aggressive']['accuracy']:.4f} -> retrained "
            f"{combined['aggressive']['retrain_accuracy'][-1]:.4f}"
        )
        report = self.report(
            base, reused, meta, table, rows, combined, layers, figures, time.perf_counter() - start
        )
        path = self.out / "report.md"
        atomic_write_text(path, report)
        self.log(f"[5/5] report: {path}")
        return path

    def accuracy(self, model: torch.nn.Module) -> float:
        return evaluate(model, self.data.test, device=self.cfg.device)

    def combined(self, model, rows, base, layers) -> dict[str, Any]:
        cfg = self.cfg
        path = self.out / "combined.json"
        config = {**cfg.combined(), "base_accuracy": base}
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("config") == config:
                return saved
        result: dict[str, Any] = {"config": config}
        for level, drop in (("safe", cfg.tolerance), ("aggressive", cfg.aggressive_drop)):
            choice = tolerated(rows, base, drop)
            plan = combined_plan(choice, layers, cfg.combined_cuts)
            trial = copy.deepcopy(model)
            report = truncate_layers(trial, plan)
            entry = {
                "plan": {k: [[list(c), chi] for c, chi in v] for k, v in plan.items()},
                "layers": report,
                "accuracy": self.accuracy(trial),
                "params_dense": sum(model.get_submodule(n).weight.numel() for n in layers),
            }
            if level == "aggressive":
                # Projected re-training: one epoch of ordinary training, then the same truncation
                # again, so the model that is scored is always truncated along the same cuts to
                # the same chi. (The optimizer starts afresh each epoch, after the projection.)
                history = []
                for epoch in range(cfg.retrain_epochs):
                    train(
                        trial,
                        self.data,
                        epochs=1,
                        lr=cfg.retrain_lr,
                        batch_size=cfg.batch_size,
                        seed=cfg.seed + 1000 + epoch,
                        device=cfg.device,
                        progress=False,
                    )
                    truncate_layers(trial, plan)
                    history.append(self.accuracy(trial))
                entry["retrain_accuracy"] = history
                entry["ranks_after_retrain"] = cut_ranks(trial, plan)
            result[level] = entry
        atomic_write_text(path, json.dumps(result, indent=1, sort_keys=True))
        return result

    # -- report -----------------------------------------------------------------------------
    def report(self, base, reused, meta, table, rows, combined, layers, figures, seconds) -> str:
        cfg = self.cfg
        tol_pts = 100 * cfg.tolerance
        choice = tolerated(rows, base, cfg.tolerance)
        per_layer = layer_truncatability(nontrivial(choice), layers)
        pairs = list(nontrivial(choice).values())
        much = [r for r in pairs if 1 - r["norm_kept"] >= 0.10]
        f1 = len(much) >= 0.5 * len(pairs)
        first, deepest = layers[0], layers[-1]
        depth = list(range(len(layers)))
        tau = stats.kendalltau(depth, [per_layer[n] for n in layers]) if len(layers) > 2 else None
        deeper = per_layer[deepest] > per_layer[first]
        trend = tau is None or (np.isfinite(tau.statistic) and tau.statistic > 0)
        f2 = "holds" if deeper and trend else ("is mixed" if deeper or trend else "does not hold")
        agg = combined["aggressive"]
        safe = combined["safe"]
        recovered = max(agg["retrain_accuracy"]) if agg["retrain_accuracy"] else agg["accuracy"]
        f3 = recovered >= base - cfg.tolerance and agg["accuracy"] < base - cfg.tolerance
        lost = base - agg["accuracy"]
        regained = (recovered - agg["accuracy"]) / lost if lost > 0 else 1.0

        def pct(x: float) -> str:
            return f"{100 * x:.1f}%"

        def mean_lost(entry) -> float:
            values = [1 - v["norm_kept"] for v in entry["layers"].values()]
            return float(np.mean(values)) if values else 0.0

        lines = [
            f"# Truncation along cuts: {cfg.model} on {cfg.dataset}",
            "",
            "Reproduction of Singh, Jahromi & Orus (2024), *Tensor network compressibility of "
            "convolutional models*, on this run's data. Numbers below come from this run; "
            f"it took {seconds:.0f} s. Accuracies are test-set accuracies; "
            "*norm lost* is `1 - ||K'|| / ||K||` for a truncated kernel `K'`, *error* is "
            "`||K - K'|| / ||K||`.",
            "",
            "## Model",
            f"- Test accuracy of the trained model: **{base:.4f}** "
            f"({'reused checkpoint' if reused else 'trained in this run'}; "
            f"{len(self.data.train)} train / {len(self.data.val)} val / "
            f"{len(self.data.test)} test images).",
            "",
            "## Findings",
            "",
            f"**1. Kernels can be truncated along cuts, losing much norm but little accuracy: "
            f"{'holds' if f1 else 'does not hold'}.** In {len(much)} of {len(pairs)} "
            f"non-trivial (layer, cut) pairs at least 10% of the kernel norm can be removed "
            f"along that cut while the accuracy drops by less than {tol_pts:.0f} point. "
            f"Truncating every layer along {len(cfg.combined_cuts)} cuts at once, each at its "
            "own tolerated level, "
            f"removes on average {pct(mean_lost(safe))} of the kernel norm and gives accuracy "
            f"{safe['accuracy']:.4f} ({100 * (safe['accuracy'] - base):+.1f} points).",
            "",
            f"**2. Deeper layers are more truncatable: {f2}.** "
            f"Mean norm removable within {tol_pts:.0f} point, over the swept cuts: first layer "
            f"`{first}` {pct(per_layer[first])}, deepest `{deepest}` {pct(per_layer[deepest])}."
            + (
                f" Kendall tau between depth and removable norm over all {len(layers)} layers: "
                f"{tau.statistic:.2f} (p = {tau.pvalue:.2f})."
                if tau is not None and np.isfinite(tau.statistic)
                else ""
            ),
            "",
            f"**3. Re-training recovers from aggressive truncation: "
            f"{'holds' if f3 else 'does not hold'}.** Truncating every layer along "
            f"{len(cfg.combined_cuts)} cuts at the level where each cut alone loses up to "
            f"{100 * cfg.aggressive_drop:.0f} points removes {pct(mean_lost(agg))} of the kernel "
            f"norm on average and drops accuracy from {base:.4f} to {agg['accuracy']:.4f}; "
            f"after each of {cfg.retrain_epochs} epoch(s) of re-training (the truncation "
            "re-applied after every epoch, so the model stays truncated) it is "
            + ", ".join(f"{a:.4f}" for a in agg["retrain_accuracy"])
            + f" (epoch by epoch), recovering {pct(regained)} of the accuracy lost; the finding "
            f"counts as holding when re-training ends within {tol_pts:.0f} point of the "
            f"original accuracy, here {100 * (recovered - base):+.1f} points.",
            "",
            f"## Norm removable within {tol_pts:.0f} point of accuracy, per layer and cut",
            "",
            "| layer | " + " | ".join(md(c) for c in table.cuts) + " |",
            "| --- | " + " | ".join("---" for _ in table.cuts) + " |",
        ]
        for layer in layers:
            cells = []
            for cut in table.cuts:
                row = choice.get((layer, cut))
                cells.append(
                    f"{pct(1 - row['norm_kept'])} (chi {row['chi']}/{row['chi_max']})"
                    if row
                    else "-"
                )
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Spectra (entropy of each cut, nats)",
            "",
            "| layer | shape | " + " | ".join(table.cuts) + " |",
            "| --- | --- | " + " | ".join("---" for _ in table.cuts) + " |",
        ]
        for layer in layers:
            shape = "x".join(str(d) for d in self.shapes[layer])
            ent = [f"{table.get(layer, c).entropy():.2f}" for c in table.cuts]
            lines.append(f"| {layer} | {shape} | " + " | ".join(ent) + " |")
        lines += ["", "## Combined truncation plans", ""]
        for level in ("safe", "aggressive"):
            entry = combined[level]
            lines.append(
                f"- {level}: "
                + "; ".join(
                    f"`{layer}` "
                    + ", ".join(f"{','.join(c)}->{chi}" for c, chi in steps)
                    + f" (norm lost {pct(1 - entry['layers'][layer]['norm_kept'])})"
                    for layer, steps in entry["plan"].items()
                )
                + f"; accuracy {entry['accuracy']:.4f}"
            )
        lines += ["", "## Figures", ""]
        lines += [f"- [{name}]({file})" for name, file in figures.items()]
        lines += [
            "",
            "Tables: [spectra.csv](spectra.csv), [sweep.csv](sweep.csv), "
            "[combined.json](combined.json).",
            "",
            "## Configuration",
            "",
            "```",
        ]
        for key, value in asdict(cfg).items():
            if key != "extra":
                lines.append(f"{key} = {value!r}")
        lines += [
            f"python = {platform.python_version()}, torch = {torch.__version__}, "
            f"tensornet = {tn.__version__}",
            "```",
            "",
        ]
        return "\n".join(lines)


def parse_cuts(text: str) -> tuple[tuple[str, ...], ...]:
    """``"all"`` or cuts separated by ';' with legs separated by ',' (e.g. ``"out;in;out,in"``)."""
    if text == "all":
        return ALL_CUTS
    out = []
    for part in text.split(";"):
        legs = tuple(x.strip() for x in part.split(",") if x.strip())
        bad = [x for x in legs if x not in KERNEL_LEGS]
        if bad or not legs:
            raise argparse.ArgumentTypeError(
                f"cut {part!r}: legs must be among {KERNEL_LEGS}, separated by ','"
            )
        out.append(legs)
    return tuple(out)


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m studies truncation", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", default="vanilla_cnn", choices=MODEL_NAMES)
    p.add_argument(
        "--dataset",
        default="digits",
        choices=["digits", "cifar10", "cifar100", "mnist", "fashion_mnist"],
    )
    p.add_argument("--data-dir", default=None, help="folder with the dataset's standard files")
    p.add_argument(
        "--cuts",
        type=parse_cuts,
        default=ALL_CUTS,
        help="'all' or e.g. 'out;in;out,in' (default: all 7)",
    )
    p.add_argument(
        "--chis",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=None,
        help="comma-separated chi values (default: powers of two up to full rank)",
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--retrain-epochs", type=int, default=5)
    p.add_argument("--retrain-lr", type=float, default=1e-3)
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="accuracy drop counted as 'little' (fraction, default 0.01 = 1 point)",
    )
    p.add_argument(
        "--aggressive-drop",
        type=float,
        default=0.05,
        help="per-cut accuracy drop defining the aggressive level (default 0.05)",
    )
    p.add_argument("--limit", type=int, default=None, help="use at most this many images per split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--out", default=None, help="output folder (default runs/truncation-DATASET-MODEL)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI-sized run: 3 epochs, 3 cuts, chi in 1..64 by powers of two, 1 re-train epoch",
    )
    a = p.parse_args(argv)
    cfg = Config(
        model=a.model,
        dataset=a.dataset,
        data_dir=a.data_dir,
        epochs=a.epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        cuts=a.cuts,
        chis=a.chis,
        tolerance=a.tolerance,
        aggressive_drop=a.aggressive_drop,
        retrain_epochs=a.retrain_epochs,
        retrain_lr=a.retrain_lr,
        limit=a.limit,
        device=a.device,
        out=a.out or f"runs/truncation-{a.dataset}-{a.model}",
        quick=a.quick,
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
    cfg = parse_args(argv)
    try:
        data = get_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed, limit=cfg.limit)
    except (FileNotFoundError, ValueError) as exc:  # missing or malformed dataset files
        print(f"studies truncation: error: {exc}", file=sys.stderr)
        return 2
    Study(cfg).run(data)
    return 0
