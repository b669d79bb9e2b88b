"""Study 1 (conv kernel truncation): levels chosen on validation, the numbers quoted, verdicts.

Everything here is recomputed from a seed's sweep table (``sweep.csv``) and its combined
truncation record (``combined.json``); ``cfg`` is the study's ``Config`` (``tolerance`` and
``seed`` are read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from studies.common import stats
from studies.common.levels import cheapest_within
from studies.common.training import unpack_correct

if TYPE_CHECKING:
    from studies.truncation import Config

MUCH_NORM = 0.10  # "much" kernel norm: at least 10 % removed


# -- levels chosen on validation ----------------------------------------------------------------
def tolerated(rows: Sequence[Mapping], base_val: float, drop: float) -> dict[tuple[str, str], dict]:
    """Per (layer, cut): the smallest chi whose **validation** accuracy is within ``drop``.

    The full-rank row always qualifies (it is the untruncated model), so every pair has one.
    Test accuracies play no part in the choice.
    """
    chosen = cheapest_within(
        rows,
        ["layer", "cut"],
        "chi",
        "val_accuracy",
        reference=base_val,
        drop=drop,
        always=lambda r: r["chi"] == r["chi_max"],
    )
    return {(k[0], k[1]): dict(v) for k, v in chosen.items()}


def nontrivial(choice: Mapping[tuple[str, str], dict]) -> dict[tuple[str, str], dict]:
    """Drop cuts with a single singular value (e.g. ``in`` of a one-channel input layer)."""
    return {k: r for k, r in choice.items() if r["chi_max"] > 1}


def removable_norm(choice: Mapping[tuple[str, str], dict], layers: Sequence[str]) -> list[float]:
    """Per layer, the mean over its non-trivial cuts of the norm removed at the chosen chi."""
    out = []
    for layer in layers:
        lost = [1 - r["norm_kept"] for (name, _), r in nontrivial(choice).items() if name == layer]
        out.append(float(np.mean(lost)) if lost else float("nan"))
    return out


# -- findings over seeds ------------------------------------------------------------------------
def seed_numbers(result: Mapping[str, Any], cfg: Config) -> dict[str, Any]:
    """The numbers the findings quote, for one seed (recomputed from its tables)."""
    combined = result["combined"]
    base, safe, agg = combined["base"], combined["safe"], combined["aggressive"]
    layers = result["layers"]
    choice = nontrivial(tolerated(result["rows"], base["val_accuracy"], cfg.tolerance))
    much = [r for r in choice.values() if 1 - r["norm_kept"] >= MUCH_NORM]
    retrained = agg["retrain"][agg["retrain_epoch"] - 1]

    def mean_lost(entry: Mapping[str, Any]) -> float:
        values = [1 - v["norm_kept"] for v in entry["layers"].values()]
        return float(np.sum(values) / len(layers)) if layers else 0.0

    lost = base["test_accuracy"] - agg["test_accuracy"]
    return {
        "seed": result["seed"],
        "base_val_accuracy": base["val_accuracy"],
        "base_test_accuracy": base["test_accuracy"],
        "pairs": len(choice),
        "pairs_much_norm": len(much),
        "pair_test_drop": float(
            np.mean([base["test_accuracy"] - r["test_accuracy"] for r in choice.values()])
        ),
        "removable_norm": removable_norm(choice, layers),
        "safe_test_accuracy": safe["test_accuracy"],
        "safe_drop": base["test_accuracy"] - safe["test_accuracy"],
        "safe_norm_lost": mean_lost(safe),
        "aggressive_test_accuracy": agg["test_accuracy"],
        "aggressive_drop": lost,
        "aggressive_norm_lost": mean_lost(agg),
        "retrain_epoch": agg["retrain_epoch"],
        "retrained_test_accuracy": retrained["test_accuracy"],
        "retrained_drop": base["test_accuracy"] - retrained["test_accuracy"],
        "regained": (
            (retrained["test_accuracy"] - agg["test_accuracy"]) / lost if lost > 0 else float("nan")
        ),
    }


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """The three findings over all seeds: numbers per seed, their spread, verdicts.

    Every verdict is recomputable from the seeds' ``sweep.csv`` and ``combined.json``.
    """
    per_seed = [seed_numbers(r, cfg) for r in results]
    tol = cfg.tolerance
    base = [unpack_correct(r["combined"]["base"]["test_correct"]) for r in results]

    def correctness(level: str) -> list[np.ndarray]:
        out = []
        for r in results:
            if level == "retrained":
                agg = r["combined"]["aggressive"]
                entry = agg["retrain"][agg["retrain_epoch"] - 1]
            else:
                entry = r["combined"][level]
            out.append(unpack_correct(entry["test_correct"]))
        return out

    def boot(level: str, offset: int) -> stats.Interval:
        return stats.paired_bootstrap(base, correctness(level), seed=cfg.seed + offset)

    test_name = "paired bootstrap of the test accuracy drop"
    # 1. much norm (>= 10 % of the kernel norm on average) but little accuracy (< tolerance)
    safe_iv = boot("safe", 1)
    norm_lost = stats.spread([n["safe_norm_lost"] for n in per_seed]).mean
    f1 = stats.threshold_verdict(
        safe_iv, tol, claim="below", test=test_name, what="the safe plan's accuracy drop"
    )
    if norm_lost < MUCH_NORM:
        f1 = stats.Verdict(
            stats.DOES_NOT_HOLD,
            test_name,
            f"the safe plan removes only {100 * norm_lost:.1f}% of the kernel norm "
            f"(< {100 * MUCH_NORM:.0f}%)",
            interval=safe_iv,
        )
    # 2. deeper layers are more truncatable
    depth = [i for n in per_seed for i in range(len(n["removable_norm"]))]
    removable = [v for n in per_seed for v in n["removable_norm"]]
    f2 = stats.kendall_verdict(depth, removable, what="the removable norm with layer depth")
    # 3. re-training recovers from aggressive truncation
    before_iv, after_iv = boot("aggressive", 2), boot("retrained", 3)
    after = stats.threshold_verdict(
        after_iv, tol, claim="below", test=test_name, what="the re-trained drop"
    )
    before = stats.threshold_verdict(
        before_iv, tol, claim="above", test=test_name, what="the aggressive drop"
    )
    if after.status == stats.DOES_NOT_HOLD:
        f3 = after
    elif after.status == stats.HOLDS and before.status == stats.HOLDS:
        f3 = replace(after, reason=f"{before.reason}, and {after.reason}")
    else:
        weak = before if before.status != stats.HOLDS else after
        f3 = replace(after, status=stats.NOT_SIGNIFICANT, reason=weak.reason)
    keys = [k for k in per_seed[0] if k not in ("seed", "removable_norm")]
    summary = {k: asdict(stats.spread([n[k] for n in per_seed])) for k in keys}
    summary["removable_norm"] = [
        asdict(stats.spread([n["removable_norm"][i] for n in per_seed]))
        for i in range(len(per_seed[0]["removable_norm"]))
    ]
    return {
        "seeds": [n["seed"] for n in per_seed],
        "note": stats.seeds_note(len(per_seed)),
        "per_seed": per_seed,
        "summary": summary,
        "intervals": {
            "safe_drop": asdict(safe_iv),
            "aggressive_drop": asdict(before_iv),
            "retrained_drop": asdict(after_iv),
        },
        "verdicts": {"1": f1.as_dict(), "2": f2.as_dict(), "3": f3.as_dict()},
    }
