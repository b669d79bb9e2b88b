"""Study 3 (Wu, Wang, Zhao, Deng & Li, Neural Networks 2020): hybrid TT / HT compression.

``python -m studies hybrid [--quick] [--seeds N] [--dataset digits] [--ratios 5,10,20,40] ...``

Per seed (``OUT/seed-S/``; the seed sets the data split, the initial weights and the shuffling):

1. Train (or reuse) a CNN with conv layers and a hidden fully connected layer (``hybrid_cnn``).
2. Tensorize every conv layer but the first (spatial mode ``l*l`` kept whole, channels split
   into ``--conv-modes`` pairs) and every linear layer but the last (``--fc-modes`` pairs).
3. Four configurations {TT, HT} for conv x {TT, HT} for FC: TT-only, HT-only, the hybrid
   (TT conv + HT FC) and HT conv + TT FC, each at every ``--ratios`` compression ratio. The
   ranks of each (configuration, ratio) are searched so that the total factor count of the
   compressed layers is within ``--match-tol`` (2 %) of ``dense / ratio``: matched counts.
4. Every cell decomposes the trained weights (TT-SVD / HT-SVD at those ranks), reads the
   validation and test accuracy, fine-tunes ``--finetune-epochs`` epochs and keeps the epoch
   with the best **validation** accuracy; an uncompressed cell (ratio 1) is the control.

Then ``OUT/report.md`` and ``OUT/findings.json``: the paper's finding (the hybrid beats TT-only
and HT-only at matched parameter count) and its two parts (HT is better for FC layers, TT for
conv layers), each with a verdict from a paired bootstrap over (ratio, seed) units and test
images, before and after fine-tuning; the storage formulas checked against the layers' actual
parameter counts.

Resumable: the trained model is a safetensors checkpoint keyed by its configuration, finished
cells are appended to ``cells.jsonl`` and skipped on rerun; files are written atomically; a
second run on the same ``--out`` refuses to start; another configuration refuses to mix.

Files: with ``--data-dir`` (CIFAR / MNIST files) the validation split is ``--val-size`` of the
training images, a count or a fraction (default 0.1), and part of the training key; the bundled
datasets are split 60/20/20. Progress: on a terminal a tqdm bar with the time left for training
and for the cells; otherwise one line per training epoch and per finished cell, each ending
``[cell 3/12, 0:42 elapsed, ~2:06 left]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import build_model
from studies.common import cli, runner, stats, units
from studies.common.checkpoints import check_checkpoint, checkpoint_path, train_or_load
from studies.common.data import BUNDLED, DATASET_NAMES, DatasetSplits, val_size_key
from studies.common.progress import Progress
from studies.common.report import configuration, md_table, rows_to_csv, verdict_text
from studies.common.study import StudyDriver
from studies.common.training import split_scores
from studies.hybrid_cells import (
    CONFIGS,
    DENSE,
    LABELS,
    FineTune,
    LayerSpec,
    layer_specs,
    plan_cells,
    run_cells,
)
from studies.verdicts.hybrid import (  # noqa: F401  (the verdict code, re-exported)
    FINDINGS,
    STAGES,
    _both,
    _cell,
    _verdict_of,
    compare,
    findings,
    kernel_errors,
    seed_numbers,
)
from tensornet.analysis import ResultStore
from tensornet.io import atomic_write_text, save_figure

PROG = "python -m studies hybrid"
MODEL = "hybrid_cnn"
SMALL = {"widths": (16, 32, 64), "hidden": 256}  # digits (8x8)
LARGE = {"widths": (32, 64, 64), "hidden": 256}  # 28x28 and 32x32 images
RATIOS = (5.0, 10.0, 20.0, 40.0)
QUICK_RATIOS = (5.0, 20.0)
CELL_COLUMNS = (
    "config", "ratio", "target", "params", "gap", "val_before", "test_before", "epoch",
    "val_after", "test_after",
)  # fmt: skip
LAYER_COLUMNS = (
    "config", "ratio", "layer", "kind", "format", "ranks", "params", "formula_params",
    "dense_params", "rel_error",
)  # fmt: skip
RANK_SEARCH = "per-layer share, then global fill (v2)"  # stored: results of another search refused


@dataclass(frozen=True)
class Config:
    """Everything that determines the study's results (written into the report).

    ``seed`` is the first seed and ``seeds`` their number; ``device``, ``out``, ``workers`` and
    ``scheduler`` say where the run happens, not what it computes.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    widths: tuple[int, ...] = SMALL["widths"]
    hidden: int = SMALL["hidden"]
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    seeds: int = 1
    ratios: tuple[float, ...] = RATIOS
    conv_modes: int = 3
    fc_modes: int = 4
    match_tol: float = 0.02
    finetune_epochs: int = 5
    finetune_lr: float = 1e-3
    limit: int | None = None
    val_size: int | float | None = None  # validation split of a file dataset
    device: str = "cpu"
    out: str = "runs/hybrid-digits"
    quick: bool = False
    workers: int | None = None
    scheduler: str | None = None

    def training(self, seed: int) -> dict[str, Any]:
        """What the trained model of ``seed`` depends on (its checkpoint key)."""
        return {
            "model": MODEL,
            "widths": list(self.widths),
            "hidden": self.hidden,
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
            "ratios": list(self.ratios),
            "conv_modes": self.conv_modes,
            "fc_modes": self.fc_modes,
            "match_tol": self.match_tol,
            "finetune_epochs": self.finetune_epochs,
            "finetune_lr": self.finetune_lr,
            "rank_search": RANK_SEARCH,
        }

    def seed_list(self) -> list[int]:
        """The seeds of this run."""
        return runner.seed_list(self.seed, self.seeds)


# -- one seed -------------------------------------------------------------------------------------
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
        return build_model(
            MODEL,
            d.in_channels,
            d.num_classes,
            d.image_size,
            widths=self.cfg.widths,
            hidden=self.cfg.hidden,
        )

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
        runner.check_results_file(self.dir / "cells.jsonl", cfg.cells(self.seed))

    def run(self, executor: Any = None) -> dict[str, Any]:
        """Train, plan the matched cells, run those not done; returns this seed's results."""
        cfg, data = self.cfg, self.data
        model, _, reused = train_or_load(
            self.build,
            cfg.training(self.seed),
            data,
            cache_dir=self.dir / "checkpoints",
            train_kwargs=self.train_kwargs(),
        )
        model.to(cfg.device).eval()
        base = split_scores(model, data, cfg.device)
        how = "reused checkpoint" if reused else f"trained {cfg.epochs} epochs"
        self.log(
            f"[1/3] {MODEL} {tuple(cfg.widths)}/{cfg.hidden} on {cfg.dataset}: val "
            f"{base['val_accuracy']:.4f}, test {base['test_accuracy']:.4f} ({how})"
        )
        specs = layer_specs(model, cfg.conv_modes, cfg.fc_modes)
        cells = plan_cells(specs, cfg.ratios, cfg.match_tol)
        self.log(
            f"[2/3] {len(cells)} cells: {len(CONFIGS)} configurations x {len(cfg.ratios)} ratios "
            f"+ uncompressed; layers {', '.join(s.name for s in specs)}"
        )
        store = ResultStore(self.dir / "cells.jsonl", cfg.cells(self.seed))
        todo = [c for c in cells if c.key not in store.done]
        tune = FineTune(cfg.finetune_epochs, cfg.finetune_lr, cfg.batch_size, self.seed, cfg.device)
        with Progress(len(todo), "cell", log=self.log) as progress:
            for row in run_cells(model, data, todo, specs, tune, executor):
                store.add(row)
                progress.step(
                    f"      {row['config']:<8} ratio {row['ratio']:>5g}: test "
                    f"{row['before']['test_accuracy']:.4f} -> {row['after']['test_accuracy']:.4f} "
                    f"(gap {100 * row['gap']:+.2f}%, {row['seconds']:.1f} s)"
                )
        by_key = {row["key"]: row for row in store.rows if "key" in row}
        rows = [by_key[c.key] for c in cells]
        self.log(f"[3/3] cells: {len(todo)} computed, {len(cells) - len(todo)} reused")
        self.write_tables(rows)
        return {
            "seed": self.seed,
            "base": base,
            "specs": [asdict(s) for s in specs],
            "rows": rows,
            "computed": len(todo),
            "sizes": (len(data.train), len(data.val), len(data.test)),
            "reused": reused,
        }

    def write_tables(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """``cells.csv`` (one row per cell) and ``layers.csv`` (one per compressed layer)."""
        flat, layers = [], []
        for r in rows:
            flat.append(
                {
                    **{k: r[k] for k in ("config", "ratio", "target", "params", "gap", "epoch")},
                    "val_before": r["before"]["val_accuracy"],
                    "test_before": r["before"]["test_accuracy"],
                    "val_after": r["after"]["val_accuracy"],
                    "test_after": r["after"]["test_accuracy"],
                }
            )
            for layer in r["layers"]:
                ranks = "-".join(str(v) for v in layer["ranks"])
                layers.append({"config": r["config"], "ratio": r["ratio"], **layer, "ranks": ranks})
        atomic_write_text(self.dir / "cells.csv", rows_to_csv(flat, CELL_COLUMNS))
        atomic_write_text(self.dir / "layers.csv", rows_to_csv(layers, LAYER_COLUMNS))


# -- figure and report ----------------------------------------------------------------------------
def accuracy_figure(
    found: Mapping[str, Any], cfg: Config, path: Path
) -> None:  # pragma: no cover - drawing
    """Test accuracy vs compression ratio, before and after fine-tuning, one line per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    acc = found["summary"]["accuracy"]
    base = found["summary"]["base_test_accuracy"]["mean"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, stage, title in zip(axes, ("before", "after"), ("no fine-tuning", "fine-tuned")):
        for config in CONFIGS:
            means = [acc[f"{config}\t{r:g}\t{stage}"]["mean"] for r in cfg.ratios]
            ax.plot(cfg.ratios, means, marker="o", label=LABELS[config])
        ax.axhline(base, color="grey", linestyle="--", label="uncompressed")
        ax.set_xscale("log")
        ax.set_xticks(cfg.ratios, [f"{r:g}" for r in cfg.ratios])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("compression ratio of the compressed layers")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def _verdict_line(found: Mapping[str, Any], key: str) -> str:
    return verdict_text(stats.Verdict(**found["verdicts"][key]))


def _comparison_text(comp: Mapping[str, Any]) -> str:
    iv = stats.Interval(**comp["interval"])
    v = comp["verdict"]
    per_seed = "; ".join(
        stats.Interval(**x).format(scale=100, unit=" points") for x in comp["per_seed_intervals"]
    )
    n = len(comp["differences"])
    return (
        f"difference {iv.format(scale=100, unit=' points')} ({iv.method}; one-sided sign-flip "
        f"p = {v['p_value']:.3g}); per seed, bootstrap over its test images: {per_seed}; "
        f"{comp['wins']} of {n} (ratio, seed) cells better, {comp['losses']} worse"
    )


def report(
    cfg: Config, results: Sequence[Mapping[str, Any]], found: Mapping[str, Any], seconds: float
) -> str:
    """``report.md``: the findings with verdicts, tables, figure, settings and configuration."""
    s = found["summary"]
    first = results[0]
    n = len(results)
    specs = [LayerSpec(**{**d, "shape": tuple(d["shape"])}) for d in first["specs"]]
    dense_total = sum(sp.dense_params for sp in specs)
    sizes = first["sizes"]
    comps = found["comparisons"]

    def acc(key: str) -> str:
        return stats.Spread(**s[key]).format(".4f")

    lines = [
        f"# Hybrid TT / HT compression: {MODEL} on {cfg.dataset}",
        "",
        "Reproduction of Wu, Wang, Zhao, Deng & Li (2020), *Hybrid tensor decomposition in neural "
        f"network compression* (Neural Networks), on this run's data ({n} seed"
        f"{'s' if n > 1 else ''}: {', '.join(str(x) for x in found['seeds'])}; this invocation "
        f"took {seconds:.0f} s and computed {sum(r['computed'] for r in results)} of "
        f"{sum(len(r['rows']) for r in results)} cells, the others reused). "
        "The only level chosen is the fine-tuning epoch, chosen on the validation split; every "
        "accuracy below is a test-split accuracy.",
        "",
        *([f"**{found['evidence']}**", ""] if found.get("evidence") else []),
        f"**{found['note']}**",
        "",
        "## Model and compressed layers",
        f"- `{MODEL}` widths {tuple(cfg.widths)}, hidden {cfg.hidden}: test accuracy "
        f"**{acc('base_test_accuracy')}** (validation {acc('base_val_accuracy')}); {sizes[0]} "
        f"train / {sizes[1]} val / {sizes[2]} test images per seed.",
        "- Compressed (first conv and classifier left dense, as usual): "
        + "; ".join(
            f"`{sp.name}` {'x'.join(map(str, sp.shape))} as modes "
            + " x ".join(str(m) for m in sp.mode_sizes)
            + f" (out {sp.out_dims}, in {sp.in_dims}"
            + (", spatial l*l first)" if sp.kind == "conv" else ")")
            for sp in specs
        )
        + f"; {dense_total:,} dense weights in all. HT uses the balanced dimension tree over "
        "those modes (root rank 1); TT-matrix keeps the spatial core in front.",
        "- Compression ratio = dense weights of the compressed layers / their factor "
        "parameters (biases, `conv1` and the classifier are dense in every configuration).",
        "",
        "## Findings",
        "",
        "Each verdict is a test over the seeds (the independent units; a seed's value is its "
        "mean accuracy difference over the ratios): *holds* when the exact one-sided sign-flip "
        "test gives p < 0.05 and the whole 95% t interval over seeds lies above 0, *does not "
        "hold* when both say below 0, *not significant* otherwise; *not enough units* with "
        "fewer than 5 seeds (the sign-flip test cannot reach p < 0.05); *no verdict* when a "
        f"compared cell is within {100 * units.CHANCE_MARGIN:g} points of chance. Both cells of "
        "a comparison are scored on the same test images; each seed's bootstrap over its test "
        "images is given beside. "
        "Headline: after fine-tuning (the factors trained, as tensorized networks are); before "
        "fine-tuning (the decomposed trained weights as they are) below it.",
        "",
    ]
    for number, (claim, _) in FINDINGS.items():
        lines.append(
            f"**{number}. {claim[0].upper() + claim[1:]}: "
            f"{_verdict_line(found, number + '_after')}.**"
        )
        for stage in STAGES:
            label = "fine-tuned" if stage == "after" else "no fine-tuning"
            if number == "1":
                for b in ("tt", "ht"):
                    lines.append(
                        f"- {label}, hybrid vs {LABELS[b]}: "
                        f"{_comparison_text(comps[f'1{b}_{stage}'])}"
                    )
            else:
                lines.append(f"- {label}: {_comparison_text(comps[f'{number}_{stage}'])}")
        lines.append(
            f"- verdict without fine-tuning: {_verdict_line(found, number + '_before')}; why "
            f"(fine-tuned): {found['verdicts'][number + '_after']['reason']}."
        )
        lines.append("")
    st, mt = found["storage"], found["matching"]
    lines += [
        "## Storage formulas and matched parameter counts",
        "",
        f"- TT-matrix: `sum_k s_k r_(k-1) r_k` (r_0 = r_d = 1; s_k = m_k n_k, or l*l for a "
        "kernel's spatial core). HT: `sum_leaves s_t r_t + sum_inner r_t r_t1 r_t2`, the root "
        "counted with r = 1 (its matrix `r_t1 r_t2`). Computed from the ranks alone "
        f"(`studies/hybrid_cells.py`) and compared with the layers' stored factors: **equal in "
        f"{st['formula_equal']} of {st['layers']} compressed layers** (exact equality expected).",
        f"- Matched counts: {mt['within_tol']} of {mt['cells']} compressed cells within "
        f"{100 * cfg.match_tol:g}% of `dense / ratio` (largest gap "
        f"{100 * mt['max_abs_gap']:.2f}%). "
        "Ranks: per layer, the largest uniform ranks within its share (its dense weights / "
        "ratio), then single or paired rank changes while they bring the layer closer to its "
        "share; only when the total is still off by more than the tolerance, changes in any "
        f"layer towards the total (needed in {mt['global_fill']} of {mt['cells']} cells). So "
        "configurations sharing a conv (or FC) format have the same conv (FC) layers, up to "
        "those cells. No rank exceeds what its factor can use.",
        "",
        "## Weight approximation error at matched count (TT vs HT, same layer)",
        "",
        "Relative Frobenius error of the decomposed weight (before fine-tuning); units are "
        "(layer, ratio, seed); descriptive, with a two-sided Wilcoxon signed-rank p-value.",
        "",
        md_table(
            ["layers", "units", "TT error (mean)", "HT error (mean)", "TT lower in", "Wilcoxon p"],
            [
                [
                    kind,
                    ke["units"],
                    f"{ke['tt_mean']:.4f}",
                    f"{ke['ht_mean']:.4f}",
                    f"{ke['tt_lower']} of {ke['units']}",
                    "n/a" if ke["wilcoxon_p"] is None else f"{ke['wilcoxon_p']:.3g}",
                ]
                for kind, ke in found["kernel_error"].items()
            ],
        ),
        "",
        f"## Test accuracy vs compression ratio (mean over seeds; uncompressed "
        f"{acc('base_test_accuracy')})",
        "",
    ]
    header = ["configuration", *[f"{r:g}x: no FT / FT" for r in cfg.ratios]]
    table = []
    for config in CONFIGS:
        row = [LABELS[config]]
        for r in cfg.ratios:
            a = stats.Spread(**s["accuracy"][f"{config}\t{r:g}\tbefore"]).format(".4f")
            b = stats.Spread(**s["accuracy"][f"{config}\t{r:g}\tafter"]).format(".4f")
            row.append(f"{a} / {b}")
        table.append(row)
    lines += [md_table(header, table), ""]
    dense_rows = [n_["dense_finetuned_test_accuracy"] for n_ in found["per_seed"]]
    lines += [
        f"Control: the uncompressed cell (ratio 1) scores "
        f"{stats.spread([n_['dense_cell_test_accuracy'] for n_ in found['per_seed']]).format()}"
        f" (the trained model's accuracy, exactly) and "
        f"{stats.spread(dense_rows).format('.4f')} after the same fine-tuning.",
        "",
        "![accuracy vs ratio](accuracy_vs_ratio.png)",
        "",
        f"## Per cell (seed {first['seed']}): parameters, ranks and kernel errors",
        "",
    ]
    cell_rows = []
    for row in first["rows"]:
        if row["config"] == DENSE:
            continue
        detail = "; ".join(
            f"{ly['layer']} {ly['format']} r=({','.join(map(str, ly['ranks']))}) "
            f"{ly['params']} p, err {ly['rel_error']:.3f}"
            for ly in row["layers"]
        )
        cell_rows.append(
            [
                LABELS[row["config"]],
                f"{row['ratio']:g}",
                f"{row['params']:,} / {row['target']:,.0f} ({100 * row['gap']:+.2f}%)",
                detail,
                f"{row['before']['test_accuracy']:.4f}",
                f"{row['after']['test_accuracy']:.4f} (epoch {row['epoch']})",
            ]
        )
    lines += [
        md_table(["configuration", "ratio", "params / target", "layers", "no FT", "FT"], cell_rows),
        "",
        "`err` is the relative Frobenius error of the decomposed weight before fine-tuning.",
        "",
        "## Setting compared with the paper",
        "",
        "- STUDIES.md records the paper's finding qualitatively (HT compresses weight matrices "
        "better, TT conv kernels; the hybrid beats TT-only and HT-only at matched parameter "
        "count) and no reference accuracies, so none are quoted here.",
        f"- Data: {cfg.dataset} ({sizes[0]} training images), not the paper's full datasets "
        "(`--dataset cifar10 --data-dir DIR` for CIFAR-10); model: a three-conv, two-FC "
        f"`hybrid_cnn` ({tuple(cfg.widths)}, hidden {cfg.hidden}), not the paper's networks "
        "(STUDIES.md records neither in detail).",
        "- Training: here a dense model is trained "
        f"({cfg.epochs} epochs, Adam lr {cfg.lr:g}), decomposed by TT-SVD / HT-SVD, and "
        f"fine-tuned {cfg.finetune_epochs} epoch(s) (Adam lr {cfg.finetune_lr:g}, the optimizer "
        "restarted every epoch; the epoch with the best validation accuracy kept). Tensorized "
        "networks are usually trained in their format for many epochs; the short fine-tuning "
        "here is the largest difference of setting.",
        f"- Tensorization [guess, STUDIES.md]: conv channels in {cfg.conv_modes} modes plus the "
        f"spatial l*l mode, FC in {cfg.fc_modes} modes, balanced factors; compression ratios "
        f"{', '.join(f'{r:g}' for r in cfg.ratios)}.",
        "",
        "Tables: [findings.json](findings.json) (verdicts, comparisons, every number per seed); "
        "per seed `seed-S/cells.csv` (one row per cell), `seed-S/layers.csv` (one per compressed "
        "layer: ranks, parameters, formula, kernel error), `seed-S/cells.jsonl` (everything, with "
        "per-image "
        "test correctness).",
        "",
    ]
    lines += configuration(cfg)
    return "\n".join(lines)


# -- running --------------------------------------------------------------------------------------
class Study(StudyDriver):
    """The whole run: lock ``--out``, check what is there, run every seed, write the report."""

    seed_run = SeedRun

    def findings(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        return findings(results, self.cfg)

    def figures(self, results: list[dict[str, Any]], found: dict[str, Any]) -> None:
        accuracy_figure(found, self.cfg, self.out / "accuracy_vs_ratio.png")

    def report(self, results: list[dict[str, Any]], found: dict[str, Any], seconds: float) -> str:
        return report(self.cfg, results, found, seconds)


def ratio_list(text: str) -> tuple[float, ...]:
    """Comma-separated compression ratios > 1, distinct, e.g. ``"5,10,20"`` (argparse type).

    >>> ratio_list("10,5")
    (5.0, 10.0)
    """
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not np.isfinite(v) or v <= 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated compression ratios > 1, got {text!r}"
        )
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"ratios must be distinct, got {text!r}")
    return tuple(sorted(values))


def widths_list(text: str) -> tuple[int, ...]:
    """Three comma-separated channel counts >= 2 (argparse type).

    >>> widths_list("16,32,64")
    (16, 32, 64)
    """
    values = cli.int_list(text)
    if len(values) != 3 or min(values) < 2:
        raise argparse.ArgumentTypeError(f"must be 3 comma-separated widths >= 2, got {text!r}")
    return values


def build_parser() -> cli.OneLineParser:
    """The argument parser; every value is checked here (one line and exit 2 when bad)."""
    p = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    cli.add_run_arguments(p, DATASET_NAMES, default_out="runs/hybrid-DATASET", val_size=True)
    add = p.add_argument
    add(
        "--widths",
        type=widths_list,
        default=None,
        help="conv1..conv3 channels (default 16,32,64 on digits, 32,64,64 otherwise)",
    )
    add(
        "--hidden",
        type=cli.positive_int,
        default=None,
        help="width of the hidden FC layer (default 256)",
    )
    add(
        "--ratios",
        type=ratio_list,
        default=RATIOS,
        help="compression ratios of the compressed layers (default 5,10,20,40)",
    )
    add(
        "--conv-modes",
        type=cli.positive_int,
        default=3,
        help="channel modes of a tensorized kernel (plus the spatial mode; default 3)",
    )
    add(
        "--fc-modes",
        type=cli.positive_int,
        default=4,
        help="modes of a tensorized FC matrix (default 4)",
    )
    add(
        "--match-tol",
        type=cli.fraction,
        default=0.02,
        help="tolerated relative gap of the matched parameter counts (default 0.02)",
    )
    add(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="training epochs of the base model (default 15 on digits, 8 otherwise)",
    )
    add("--lr", type=cli.positive_float, default=1e-3)
    add("--batch-size", type=cli.positive_int, default=64)
    add(
        "--finetune-epochs",
        type=cli.positive_int,
        default=None,
        help="fine-tuning epochs of every cell (default 5 on digits, 2 otherwise)",
    )
    add("--finetune-lr", type=cli.positive_float, default=1e-3)
    add(
        "--quick",
        action="store_true",
        help="CI-sized run: 3 epochs, ratios 5 and 20, 1 fine-tuning epoch",
    )
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> Config:
    """Parse and check the arguments (exits with status 2 and one line when they are bad)."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.conv_modes < 2 or a.fc_modes < 2:
        p.error("--conv-modes and --fc-modes must be at least 2")
    out = cli.check_run_arguments(p, a, BUNDLED, f"runs/hybrid-{a.dataset}")
    size = SMALL if a.dataset == "digits" else LARGE
    cfg = Config(
        dataset=a.dataset,
        data_dir=a.data_dir,
        widths=a.widths or size["widths"],
        hidden=a.hidden or size["hidden"],
        epochs=a.epochs or (15 if a.dataset == "digits" else 8),
        finetune_epochs=a.finetune_epochs or (5 if a.dataset == "digits" else 2),
        lr=a.lr,
        batch_size=a.batch_size,
        seed=a.seed,
        seeds=a.seeds,
        ratios=a.ratios,
        conv_modes=a.conv_modes,
        fc_modes=a.fc_modes,
        match_tol=a.match_tol,
        finetune_lr=a.finetune_lr,
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
            ratios=QUICK_RATIOS if a.ratios == RATIOS else a.ratios,
            finetune_epochs=min(cfg.finetune_epochs, 1),
        )
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m studies hybrid``: returns the exit status (2: a bad argument or file)."""
    return Study.main(PROG, parse_args, argv)
