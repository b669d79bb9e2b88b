"""Study 4 (ALDS): the paper-style numbers, ALDS against each baseline, the verdicts.

Everything here is recomputed from the seeds' cells (``cells.jsonl``): one row per (method,
budget) with its parameter and FLOP counts and, ``"before"`` and ``"after"`` re-training, the
validation and test accuracy and the per-image test correctness. ``cfg`` is the study's
``Config`` (``levels()``, ``max_drop`` and ``seed`` are read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from studies.common import stats
from studies.common.levels import cheapest_within
from studies.common.training import unpack_correct

if TYPE_CHECKING:
    from studies.alds import Config

METHODS: tuple[str, ...] = ("alds", "uniform", "energy")  # ALDS first, then the baselines


# -- findings -----------------------------------------------------------------------------------
def paper_number(
    rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any], max_drop: float, phase: str
) -> dict[str, dict[str, Any]]:
    """Per method: the cell of fewest parameters whose **validation** drop is <= ``max_drop``.

    ``phase`` is ``"before"`` or ``"after"`` re-training. The uncompressed cell always qualifies.
    """
    flat = [
        {**r, "val_accuracy": r[phase]["val_accuracy"], "test_accuracy": r[phase]["test_accuracy"]}
        for r in rows
    ]
    chosen = cheapest_within(
        flat,
        ["method"],
        "params",
        "val_accuracy",
        reference=base["val_accuracy"],
        drop=max_drop,
        always=lambda r: r["budget"] == 1.0,
    )
    out = {}
    for (method,), r in chosen.items():
        out[method] = {
            "budget": r["budget"],
            "params_removed": 1 - r["params"] / r["model_params"],
            "flops_removed": 1 - r["flops"] / r["model_flops"],
            "test_drop": base["test_accuracy"] - r["test_accuracy"],
            "val_drop": base["val_accuracy"] - r["val_accuracy"],
        }
    return out


def compare(
    results: Sequence[Mapping[str, Any]], other: str, phase: str, seed: int
) -> dict[str, Any]:
    """ALDS against ``other`` at equal budgets (< 1), ``phase`` ``"before"``/``"after"``.

    Primary: paired percentile bootstrap of ``mean(correct_alds - correct_other)`` over test
    images (per image averaged over the budgets; seeds resampled too when there are several);
    the claim holds when the whole 95 % interval lies above 0. Secondary: one-sided Wilcoxon
    signed-rank test of the per-cell accuracy differences over budgets x seeds.
    """
    ref, oth, diffs = [], [], []
    for res in results:
        cells = {(r["method"], r["budget"]): r for r in res["rows"]}
        budgets = sorted({b for (_, b) in cells if b < 1}, reverse=True)
        a = np.mean([unpack_correct(cells["alds", b][phase]["test_correct"]) for b in budgets], 0)
        o = np.mean([unpack_correct(cells[other, b][phase]["test_correct"]) for b in budgets], 0)
        ref.append(a)
        oth.append(o)
        diffs += [
            cells["alds", b][phase]["test_accuracy"] - cells[other, b][phase]["test_accuracy"]
            for b in budgets
        ]
    iv = stats.paired_bootstrap(ref, oth, seed=seed)
    verdict = stats.threshold_verdict(
        iv,
        0.0,
        claim="above",
        test="paired bootstrap of the test-accuracy advantage over budgets x seeds x images",
        what=f"ALDS's accuracy advantage over {other}",
    )
    nonzero = [d for d in diffs if d != 0]
    wilcoxon_p = (
        float(sps.wilcoxon(nonzero, alternative="greater").pvalue) if nonzero else float("nan")
    )
    return {
        "verdict": verdict.as_dict(),
        "advantage": asdict(iv),
        "cell_differences": diffs,
        "wins": sum(d > 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "wilcoxon_p": wilcoxon_p,
    }


def combine(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """Both comparisons must hold; one that does not hold makes the finding not hold.

    >>> combine([{"status": "holds"}, {"status": "not significant"}])
    'not significant'
    """
    return stats.all_hold([v["status"] for v in verdicts])


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """Tables, paper-style numbers and verdicts over all seeds (recomputable from cells.jsonl)."""
    table = []
    for budget in cfg.levels():
        for method in METHODS:
            cells = [
                next(r for r in res["rows"] if r["method"] == method and r["budget"] == budget)
                for res in results
            ]
            bases = [res["base"] for res in results]
            table.append(
                {
                    "budget": budget,
                    "method": method,
                    "params_kept": asdict(
                        stats.spread([c["params"] / c["model_params"] for c in cells])
                    ),
                    "flops_kept": asdict(
                        stats.spread([c["flops"] / c["model_flops"] for c in cells])
                    ),
                    "max_error": asdict(stats.spread([c["max_error"] for c in cells])),
                    **{
                        f"{phase}_{what}": asdict(
                            stats.spread(
                                [
                                    (b["test_accuracy"] - c[phase]["test_accuracy"])
                                    if what == "drop"
                                    else c[phase]["test_accuracy"]
                                    for b, c in zip(bases, cells)
                                ]
                            )
                        )
                        for phase in ("before", "after")
                        for what in ("accuracy", "drop")
                    },
                }
            )
    paper = {
        phase: [
            {"seed": res["seed"], **paper_number(res["rows"], res["base"], cfg.max_drop, phase)}
            for res in results
        ]
        for phase in ("before", "after")
    }
    comparisons: dict[str, dict[str, Any]] = {}
    verdicts = {}
    for i, phase in enumerate(("before", "after")):
        comparisons[phase] = {
            other: compare(results, other, phase, cfg.seed + 10 * i + j)
            for j, other in enumerate(METHODS[1:])
        }
        verdicts[phase] = combine([c["verdict"] for c in comparisons[phase].values()])
    return {
        "seeds": [res["seed"] for res in results],
        "note": stats.seeds_note(len(results)),
        "base": [res["base"]["test_accuracy"] for res in results],
        "base_val": [res["base"]["val_accuracy"] for res in results],
        "table": table,
        "paper_number": paper,
        "comparisons": comparisons,
        "verdicts": verdicts,
    }
