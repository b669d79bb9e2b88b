"""The truncation study's report: the findings with their verdicts, the tables, the figures.

:func:`report` is called by :class:`studies.truncation.Study` with the seeds' results and the
findings of :mod:`studies.verdicts.truncation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from studies.common import stats, units
from studies.common.report import configuration, md_table, verdict_text
from studies.verdicts.truncation import MUCH_NORM, tolerated

if TYPE_CHECKING:
    from studies.truncation import Config

def _s(summary: Mapping[str, Any], key: str, fmt: str = ".4f", scale: float = 1.0, unit: str = ""):
    return stats.Spread(**summary[key]).format(fmt, scale, unit)


def _iv(found: Mapping[str, Any], key: str) -> str:
    """The t interval over seeds (where there are two or more) and each seed's own bootstrap."""
    per_seed = "; ".join(
        stats.Interval(**iv).format(scale=100, unit=" points")
        for iv in found["per_seed_intervals"][key]
    )
    over = stats.Interval(**found["intervals"][key])
    if len(found["per_seed_intervals"][key]) < 2:
        return f"one seed, bootstrap over its test images: {per_seed}"
    return f"{over.format(scale=100, unit=' points')} ({over.method}; per seed: {per_seed})"


def _verdict(found: Mapping[str, Any], number: str) -> str:
    v = found["verdicts"][number]
    verdict = stats.Verdict(**v)
    return f"{verdict_text(verdict)}.** Why: {verdict.reason}."


def report(
    cfg: Config, results: Sequence[Mapping[str, Any]], found: Mapping[str, Any], seconds: float
) -> str:
    """``report.md``: the findings with verdicts, tables, figures and the configuration."""
    s = found["summary"]
    first = results[0]
    layers = first["layers"]
    tol = f"{100 * cfg.tolerance:g} point{'s' if cfg.tolerance != 0.01 else ''}"
    pts = {"fmt": ".2f", "scale": 100.0, "unit": " points"}  # accuracy lost
    pct = {"fmt": ".1f", "scale": 100.0, "unit": "%"}
    n = len(results)
    sizes = first["sizes"]
    evidence = [f"**{found['evidence']}**", ""] if found.get("evidence") else []
    lines = [
        f"# Truncation along cuts: {cfg.model} on {cfg.dataset}",
        "",
        "Reproduction of Singh, Jahromi & Orus (2024), *Tensor network compressibility of "
        f"convolutional models*, on this run's data ({n} seed{'s' if n > 1 else ''}: "
        f"{', '.join(str(x) for x in found['seeds'])}; {seconds:.0f} s). Every level (the chi "
        "of each cut, the safe and aggressive combined plans, the re-training epoch) is chosen "
        "on the validation split; accuracies below are test-split accuracies of those choices. "
        "*Norm lost* is `1 - ||K'|| / ||K||` for a truncated kernel `K'`.",
        "",
        *evidence,
        f"**{found['note']}**",
        "",
        "## Model",
        f"- Test accuracy of the trained model: **{_s(s, 'base_test_accuracy')}** (validation "
        f"{_s(s, 'base_val_accuracy')}); {sizes[0]} train / {sizes[1]} val / {sizes[2]} test "
        "images per seed.",
        "",
        "## Findings",
        "",
        "Each verdict is a test over the seeds (the independent units): *holds* when the named "
        "test supports the finding at 95% (p < 0.05 and, for differences, the whole 95% t "
        "interval over seeds on the finding's side), *does not hold* when it supports the "
        "opposite, *not significant* otherwise; *not enough units* when there are fewer seeds "
        "than the test can decide on (the exact sign-flip test needs 5 at p < 0.05); *no "
        f"verdict* when a compared model is within {100 * units.CHANCE_MARGIN:g} points of "
        "chance. Bootstrap intervals over test images are given per seed, beside the test.",
        "",
        f"**1. Kernels can be truncated along cuts, losing much norm but little accuracy: "
        f"{_verdict(found, '1')} Truncating every layer along {len(cfg.combined_cuts)} cuts "
        f"at once, each at the smallest chi whose validation accuracy stays within {tol} (the "
        f"safe plan), removes {_s(s, 'safe_norm_lost', **pct)} of the kernel norm on average "
        f"and loses {_s(s, 'safe_drop', **pts)} of test accuracy (test accuracy "
        f"{_s(s, 'safe_test_accuracy')}; {_iv(found, 'safe_drop')}). The "
        "finding needs at least "
        f"{100 * MUCH_NORM:.0f}% of the norm removed and the drop's interval below {tol}. "
        f"One cut at a time: in {_s(s, 'pairs_much_norm', '.3g')} of "
        f"{_s(s, 'pairs', '.3g')} non-trivial (layer, cut) pairs at least "
        f"{100 * MUCH_NORM:.0f}% of the norm goes within the tolerance; the test accuracy at the "
        f"chosen chi is {_s(s, 'pair_test_drop', **pts)} below the model's on average.",
        "",
        f"**2. Deeper layers are more truncatable: {_verdict(found, '2')} Mean norm "
        f"removable within {tol} over the swept cuts, per layer from first to last: "
        + ", ".join(
            f"`{layer}` {stats.Spread(**v).format(**pct)}"
            for layer, v in zip(layers, s["removable_norm"])
        )
        + f". The test is Kendall tau-b between layer depth and removable norm within each seed "
        f"({len(layers)} layers), one-sided (deeper = more), combined over {n} seed(s) by "
        "Stouffer's z (points of different seeds are never compared).",
        "",
        f"**3. Re-training recovers from aggressive truncation: {_verdict(found, '3')} "
        f"Truncating every layer along {len(cfg.combined_cuts)} cuts at the level where each cut "
        f"alone loses up to {100 * cfg.aggressive_drop:g} points on validation removes "
        f"{_s(s, 'aggressive_norm_lost', **pct)} of the kernel norm and loses "
        f"{_s(s, 'aggressive_drop', **pts)} of test accuracy (to "
        f"{_s(s, 'aggressive_test_accuracy')}). After up "
        f"to {cfg.retrain_epochs} epoch(s) of re-training (the truncation re-applied after every "
        f"epoch; the epoch kept, {_s(s, 'retrain_epoch', '.3g')} on average, has the best "
        f"validation accuracy) the loss is {_s(s, 'retrained_drop', **pts)} (test accuracy "
        f"{_s(s, 'retrained_test_accuracy')}), regaining {_s(s, 'regained', **pct)} of the "
        "accuracy lost. The finding needs the interval of the aggressive loss above the "
        f"tolerance (here {_iv(found, 'aggressive_drop')}) "
        "and that of the re-trained loss below it (here "
        f"{_iv(found, 'retrained_drop')}).",
        "",
    ]
    lines += _tables(cfg, results, found)
    lines += ["", *configuration(cfg)]
    return "\n".join(lines)


def _tables(
    cfg: Config, results: Sequence[Mapping[str, Any]], found: Mapping[str, Any]
) -> list[str]:
    first = results[0]
    layers, cuts = first["layers"], first["cuts"]
    swept = sorted({r["cut"] for r in first["rows"]}, key=cuts.index)
    tol = f"{100 * cfg.tolerance:g} point{'s' if cfg.tolerance != 0.01 else ''}"
    choices = [
        tolerated(r["rows"], r["combined"]["base"]["val_accuracy"], cfg.tolerance) for r in results
    ]
    cells = []
    for layer in layers:
        row = [layer]
        for cut in swept:
            picks = [c[(layer, cut)] for c in choices if (layer, cut) in c]
            lost = stats.spread([1 - p["norm_kept"] for p in picks]).format(".1f", 100, "%")
            chis = "/".join(str(p["chi"]) for p in picks)
            row.append(f"{lost} (chi {chis} of {picks[0]['chi_max']})")
        cells.append(row)
    lines = [
        f"## Norm removable within {tol} of validation accuracy, per layer and cut",
        "",
        "Mean over seeds; the chi chosen in each seed, of the cut's full rank.",
        "",
        md_table(["layer", *swept], cells),
        "",
        f"## Spectra (entropy of each cut, nats; seed {first['seed']})",
        "",
        md_table(
            ["layer", "shape", *cuts],
            [
                [layer, "x".join(map(str, first["shapes"][layer]))]
                + [f"{first['entropy'][(layer, c)]:.2f}" for c in cuts]
                for layer in layers
            ],
        ),
        "",
        "## Per seed",
        "",
    ]
    per_seed = found["per_seed"]
    lines.append(
        md_table(
            [
                "seed",
                "test acc.",
                "safe: acc.",
                "norm lost",
                "aggressive: acc.",
                "norm lost",
                "re-trained acc.",
                "epoch",
            ],
            [
                [
                    n["seed"],
                    f"{n['base_test_accuracy']:.4f}",
                    f"{n['safe_test_accuracy']:.4f}",
                    f"{100 * n['safe_norm_lost']:.1f}%",
                    f"{n['aggressive_test_accuracy']:.4f}",
                    f"{100 * n['aggressive_norm_lost']:.1f}%",
                    f"{n['retrained_test_accuracy']:.4f}",
                    n["retrain_epoch"],
                ]
                for n in per_seed
            ],
        )  # fmt: skip
    )
    lines += ["", "## Combined truncation plans", ""]
    for r in results:
        for level in ("safe", "aggressive"):
            entry = r["combined"][level]
            steps = "; ".join(
                f"`{layer}` "
                + ", ".join(f"{','.join(c)}->{chi}" for c, chi in plan)
                + f" (norm lost {100 * (1 - entry['layers'][layer]['norm_kept']):.1f}%)"
                for layer, plan in entry["plan"].items()
            )
            lines.append(
                f"- seed {r['seed']}, {level}: {steps or 'nothing truncated'}; test accuracy "
                f"{entry['test_accuracy']:.4f}"
            )
    d = f"seed-{first['seed']}"
    lines += ["", f"## Figures (seed {first['seed']}; every seed's are in its folder)", ""]
    figures = ["entropy_heatmap", "accuracy_vs_chi", "accuracy_vs_chi_val", "accuracy_vs_norm"]
    figures += [f"spectra_{layer}" for layer in layers]
    lines += [f"- [{name}]({d}/{name}.png)" for name in figures]
    lines += [
        "",
        "Tables: [findings.json](findings.json) (verdicts and every number per seed), and per "
        f"seed `seed-S/spectra.csv`, `seed-S/sweep.csv`, `seed-S/combined.json` (e.g. [{d}/"
        f"sweep.csv]({d}/sweep.csv)).",
    ]
    return lines


