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

from studies.common import stats, units
from studies.common.levels import cheapest_within
from studies.common.training import unpack_correct

if TYPE_CHECKING:
    from studies.alds import Config

METHODS: tuple[str, ...] = ("alds", "uniform", "energy")  # ALDS first, then the baselines
#: The automatic allocations compared with ALDS, budget by budget.
AUTO: tuple[str, ...] = ("auto-data", "auto")
NAMES = {"alds": "ALDS", "auto-data": "auto with data"}
ORDER: tuple[str, ...] = METHODS + ("auto", "auto-data")  # the table's order of methods


def methods_in(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """The methods every seed's rows hold, in table order (a run may name a subset).

    >>> methods_in([{"rows": [{"method": "auto"}, {"method": "alds"}]}])
    ['alds', 'auto']
    """
    held = set.intersection(*({r["method"] for r in res["rows"]} for res in results))
    return [m for m in ORDER if m in held]


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
    results: Sequence[Mapping[str, Any]],
    other: str,
    phase: str,
    seed: int,
    ref: str = "alds",
    budgets: Sequence[float] | None = None,
) -> dict[str, Any]:
    """``ref`` against ``other`` at equal budgets (< 1), ``phase`` ``"before"``/``"after"``.

    Primary: paired percentile bootstrap of ``mean(correct_ref - correct_other)`` over test
    images (per image averaged over the budgets; seeds resampled too when there are several);
    the claim holds when the whole 95 % interval lies above 0. Secondary: one-sided Wilcoxon
    signed-rank test of the per-cell accuracy differences over budgets x seeds, and
    ``over_seeds``: the test over seeds (:func:`studies.common.units.paired_unit_verdict`, "not
    enough units" below 5 seeds, its t interval reported). ``budgets``:
    the budgets compared (default every budget < 1 of the run).
    """
    mine, oth, diffs = [], [], []
    for res in results:
        cells = {(r["method"], r["budget"]): r for r in res["rows"]}
        chosen = budgets or sorted({b for (_, b) in cells if b < 1}, reverse=True)
        a = np.mean([unpack_correct(cells[ref, b][phase]["test_correct"]) for b in chosen], 0)
        o = np.mean([unpack_correct(cells[other, b][phase]["test_correct"]) for b in chosen], 0)
        mine.append(a)
        oth.append(o)
        diffs += [
            cells[ref, b][phase]["test_accuracy"] - cells[other, b][phase]["test_accuracy"]
            for b in chosen
        ]
    iv = stats.paired_bootstrap(mine, oth, seed=seed)
    verdict = stats.threshold_verdict(
        iv,
        0.0,
        claim="above",
        test="paired bootstrap of the test-accuracy advantage over budgets x seeds x images",
        what=f"{NAMES.get(ref, ref)}'s accuracy advantage over {NAMES.get(other, other)}",
    )
    over_seeds = units.paired_unit_verdict(
        mine, oth, 0.0, claim="above", seed=seed,
        what=f"{NAMES.get(ref, ref)}'s accuracy advantage over {NAMES.get(other, other)}",
    )  # fmt: skip
    nonzero = [d for d in diffs if d != 0]
    wilcoxon_p = (
        float(sps.wilcoxon(nonzero, alternative="greater").pvalue) if nonzero else float("nan")
    )
    return {
        "verdict": verdict.as_dict(),
        "advantage": asdict(iv),
        "over_seeds": over_seeds.as_dict(),
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


def seeds_note(n_seeds: int) -> str:
    """What this study's statistics cover (its verdicts are still two-stage bootstraps).

    >>> seeds_note(3)[:60]
    '3 seed(s): numbers are mean ± standard deviation over seeds;'
    """
    return (
        f"{n_seeds} seed(s): numbers are mean ± standard deviation over seeds; each verdict is "
        "a two-stage paired bootstrap (seeds resampled, then test images within each), so its "
        "interval covers training variation only as far as the seeds sampled do; the test over "
        "seeds alone (exact sign-flip, at least 5 seeds to decide) is reported beside the "
        "automatic allocations' verdicts."
    )


def withheld_near_chance(
    comparison: dict[str, Any],
    results: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    phase: str,
    budgets: Sequence[float],
    chance: float,
) -> dict[str, Any]:
    """``comparison`` with its verdict withheld ("no verdict") when a compared cell (a method
    at a budget, mean test accuracy over seeds) lies within 5 points of ``chance``."""
    accuracies = {
        f"{NAMES.get(m, m)} at {b:g}": float(np.mean([
            next(r for r in res["rows"] if r["method"] == m and r["budget"] == b)[phase][
                "test_accuracy"]
            for res in results
        ]))
        for m in methods
        for b in budgets
    }  # fmt: skip
    v = comparison["verdict"]
    iv = stats.Interval(**v["interval"]) if v["interval"] else None
    verdict = units.withhold_near_chance(stats.Verdict(**{**v, "interval": iv}), accuracies, chance)
    return {**comparison, "verdict": verdict.as_dict()}


def auto_findings(
    results: Sequence[Mapping[str, Any]], cfg: Config, present: Sequence[str]
) -> dict[str, Any]:
    """Per automatic method (with ALDS in the run): at every budget, its advantage over ALDS.

    Per phase and budget :func:`compare` (``ref`` the automatic method, ``other`` ALDS; a paired
    bootstrap over seeds and images); the finding "at least ALDS's accuracy at every budget"
    holds in a phase when it holds at every budget (:func:`combine`).
    """
    out: dict[str, Any] = {}
    if "alds" not in present:
        return out
    budgets = sorted((b for b in cfg.levels() if b < 1), reverse=True)
    chance = units.chance_level(cfg.dataset)
    for a, method in enumerate(m for m in AUTO if m in present):
        per_phase = {}
        for i, phase in enumerate(("before", "after")):
            per_budget = {
                f"{b:g}": withheld_near_chance(
                    compare(
                        results, "alds", phase, cfg.seed + 100 * (a + 1) + 10 * i + j, method, [b]
                    ),
                    results, (method, "alds"), phase, [b], chance,
                )
                for j, b in enumerate(budgets)
            }  # fmt: skip
            verdict = combine([c["verdict"] for c in per_budget.values()])
            per_phase[phase] = {"budgets": per_budget, "verdict": verdict}
        out[method] = per_phase
    return out


def recalibration_effect(
    results: Sequence[Mapping[str, Any]], present: Sequence[str]
) -> list[dict[str, Any]]:
    """Per method and budget: test accuracy before re-training without and with BatchNorm
    recalibration (cells that hold both), as spreads over seeds.

    >>> row = {"method": "alds", "budget": 0.5, "before": {"test_accuracy": 0.9},
    ...        "before_raw": {"test_accuracy": 0.2}}
    >>> out = recalibration_effect([{"rows": [row]}], ["alds"])
    >>> out[0]["without"]["mean"], out[0]["with"]["mean"]
    (0.2, 0.9)
    """
    out = []
    for method in present:
        for budget in sorted({r["budget"] for r in results[0]["rows"]}, reverse=True):
            cells = [
                r
                for res in results
                for r in res["rows"]
                if r["method"] == method and r["budget"] == budget and r.get("before_raw")
            ]
            if len(cells) == len(results):
                out.append(
                    {
                        "method": method,
                        "budget": budget,
                        "without": asdict(
                            stats.spread([c["before_raw"]["test_accuracy"] for c in cells])
                        ),
                        "with": asdict(stats.spread([c["before"]["test_accuracy"] for c in cells])),
                    }
                )
    return out


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """Tables, paper-style numbers and verdicts over all seeds (recomputable from cells.jsonl)."""
    table, present = [], methods_in(results)
    for budget in cfg.levels():
        for method in present:
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
        budgets = sorted((b for b in cfg.levels() if b < 1), reverse=True)
        comparisons[phase] = {
            other: withheld_near_chance(
                compare(results, other, phase, cfg.seed + 10 * i + j),
                results, ("alds", other), phase, budgets, units.chance_level(cfg.dataset),
            )
            for j, other in enumerate(METHODS[1:])
            if "alds" in present and other in present
        }  # fmt: skip
        verdicts[phase] = combine([c["verdict"] for c in comparisons[phase].values()])
    return {
        "methods": present,
        "auto": auto_findings(results, cfg, present),
        "recalibration": recalibration_effect(results, present),
        "seeds": [res["seed"] for res in results],
        "note": seeds_note(len(results)),
        "base": [res["base"]["test_accuracy"] for res in results],
        "base_val": [res["base"]["val_accuracy"] for res in results],
        "table": table,
        "paper_number": paper,
        "comparisons": comparisons,
        "verdicts": verdicts,
    }
