"""Report sections of the ALDS study for the automatic allocations and BatchNorm recalibration.

Each function takes the study's ``findings`` (see :mod:`studies.verdicts.alds`) and returns
Markdown lines; :func:`studies.alds.report` places them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from studies.common import stats
from studies.common.report import md_table

__all__ = ["auto_section", "recalibration_section"]

_LABELS = {"auto-data": "`auto` with data", "auto": "`auto` (weights only)"}


def auto_section(found: Mapping[str, Any]) -> list[str]:
    """The finding "the automatic allocation keeps at least ALDS's accuracy at every budget".

    >>> auto_section({"auto": {}})
    []
    """
    if not found["auto"]:
        return []
    lines = [
        "## Finding: `auto` keeps at least ALDS's test accuracy at every budget",
        "",
        '`auto` is `tensornet.nn.allocate(method="auto")`: per layer every format (svd, '
        "grouped, Tucker-2, Tucker, TT in three mode orders, HT, TR, CP, or dense) at a grid "
        "of ranks; the global choice minimises the sum of squared relative layer errors under "
        "the parameter budget. *With data*, each candidate's error is its layer's output error "
        "on the calibration batches and svd / Tucker-2 factors are whitened by them. Per "
        "budget and phase: the 95 % paired-bootstrap interval (seeds, then test images) of "
        "its test-accuracy advantage over ALDS; *holds* when it lies above 0, *does not hold* "
        "when below 0, *not significant* otherwise; the one-sided Wilcoxon p over the seeds' "
        "cells beside. The finding holds in a phase when it holds at every budget. Beside it, "
        "the test over seeds alone (one value per seed, its mean advantage; an exact sign-flip "
        "test, which needs at least 5 seeds to decide, and the 95 % t interval over seeds).",
        "",
    ]
    for method, phases in found["auto"].items():
        rows = []
        for phase, label in (("before", "compress-only"), ("after", "re-trained")):
            for budget, c in phases[phase]["budgets"].items():
                iv = stats.Interval(**c["advantage"]).format(scale=100, unit=" points")
                seeds = stats.Interval(**c["over_seeds"]["interval"]).format(scale=100)
                rows.append(
                    [label, budget, iv, f"{c['wins']}/{c['ties']}/{c['losses']}",
                     f"{c['wilcoxon_p']:.3g}", c["verdict"]["status"], seeds,
                     c["over_seeds"]["status"]]
                )  # fmt: skip
        verdicts = ", ".join(
            f"{label}: **{phases[p]['verdict']}**"
            for p, label in (("before", "compress-only"), ("after", "re-trained"))
        )
        lines += [
            f"**{_LABELS.get(method, method)} vs ALDS.** {verdicts}.",
            "",
            md_table(
                [
                    "phase",
                    "budget",
                    "advantage",
                    "seeds won/tied/lost",
                    "Wilcoxon p",
                    "verdict",
                    "over seeds: t interval",
                    "test over seeds",
                ],  # fmt: skip
                rows,
            ),
            "",
        ]
    return lines


def recalibration_section(cfg: Any, found: Mapping[str, Any]) -> list[str]:
    """How every compressed model is scored: BatchNorm recalibrated, and its effect once.

    >>> recalibration_section(type("C", (), {"recalibrate_bn": False})(), {})[0][:40]
    '- Compressed models are scored with the '
    """
    if not cfg.recalibrate_bn:
        return [
            "- Compressed models are scored with the BatchNorm statistics of the trained model "
            "(no recalibration, `--no-recalibrate-bn`): a model near chance has collapsed.",
            "",
        ]
    rows = [
        [r["method"], f"{r['budget']:g}", stats.Spread(**r["without"]).format(".2f", 100),
         stats.Spread(**r["with"]).format(".2f", 100)]
        for r in found["recalibration"]
    ]  # fmt: skip
    return [
        "- Every compressed model is scored after recomputing its BatchNorm statistics on "
        f"{cfg.calibration_batches} training batches of {cfg.batch_size} (no labels, no weight "
        "change: `tensornet.nn.recalibrate_bn`), after compression and again after re-training. "
        "Its effect on the compress-only test accuracy (%, mean ± std over seeds):",
        "",
        md_table(["method", "budget", "without", "with"], rows),
        "",
    ]
