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

from studies.common import stats, units
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

    The seeds are the independent units: findings 1 and 3 are exact sign-flip tests over the
    seeds' test accuracy drops (with a t interval over seeds; each seed's bootstrap over its
    own test images is reported beside), finding 2 a Kendall test within each seed combined by
    Stouffer's z (:mod:`studies.common.units`). A verdict is withheld ("no verdict") when a
    compared model is within :data:`~studies.common.units.CHANCE_MARGIN` of chance. Every
    verdict is recomputable from the seeds' ``sweep.csv`` and ``combined.json``.
    """
    per_seed = [seed_numbers(r, cfg) for r in results]
    base = [unpack_correct(r["combined"]["base"]["test_correct"]) for r in results]
    drops = {
        key: units.paired_unit_verdict(
            base, _correctness(results, level), cfg.tolerance, claim=claim, what=what,
            seed=cfg.seed + offset,
        )
        for key, (level, claim, what, offset) in DROPS.items()
    }  # fmt: skip
    chance = units.chance_level(cfg.dataset)

    def mean(key: str) -> float:
        return stats.spread([n[key] for n in per_seed]).mean

    f1 = _finding_1(drops["safe_drop"], mean("safe_norm_lost"))
    f1 = units.withhold_near_chance(
        f1, {"base": mean("base_test_accuracy"), "safe": mean("safe_test_accuracy")}, chance
    )
    f2 = units.kendall_units_verdict(
        [(range(len(n["removable_norm"])), n["removable_norm"]) for n in per_seed],
        what="the removable norm with layer depth",
    )
    f2 = units.withhold_near_chance(f2, {"base": mean("base_test_accuracy")}, chance)
    f3 = _finding_3(drops["aggressive_drop"], drops["retrained_drop"])
    compared = {"base": mean("base_test_accuracy"), "re-trained": mean("retrained_test_accuracy")}
    f3 = units.withhold_near_chance(f3, compared, chance)
    keys = [k for k in per_seed[0] if k not in ("seed", "removable_norm")]
    summary = {k: asdict(stats.spread([n[k] for n in per_seed])) for k in keys}
    summary["removable_norm"] = [
        asdict(stats.spread([n["removable_norm"][i] for n in per_seed]))
        for i in range(len(per_seed[0]["removable_norm"]))
    ]
    return {
        "seeds": [n["seed"] for n in per_seed],
        "note": stats.seeds_note(len(per_seed)),
        "evidence": units.evidence_note(cfg.quick),
        "per_seed": per_seed,
        "summary": summary,
        "intervals": {k: asdict(v.interval) for k, v in drops.items()},
        "per_seed_intervals": {k: [asdict(iv) for iv in v.per_unit] for k, v in drops.items()},
        "verdicts": {"1": f1.as_dict(), "2": f2.as_dict(), "3": f3.as_dict()},
    }


# (level of the combined record, the claim about its drop, what it is, bootstrap seed offset)
DROPS = {
    "safe_drop": ("safe", "below", "the safe plan's accuracy drop", 1),
    "aggressive_drop": ("aggressive", "above", "the aggressive drop", 2),
    "retrained_drop": ("retrained", "below", "the re-trained drop", 3),
}


def _correctness(results: Sequence[Mapping[str, Any]], level: str) -> list[np.ndarray]:
    """Per seed, the per-image test correctness of a level (``"retrained"``: the kept epoch)."""
    out = []
    for r in results:
        if level == "retrained":
            agg = r["combined"]["aggressive"]
            entry = agg["retrain"][agg["retrain_epoch"] - 1]
        else:
            entry = r["combined"][level]
        out.append(unpack_correct(entry["test_correct"]))
    return out


def _finding_1(safe: stats.Verdict, norm_lost: float) -> stats.Verdict:
    """Much norm (>= 10 % of the kernel norm on average) but a drop below the tolerance."""
    if norm_lost < MUCH_NORM:
        reason = (
            f"the safe plan removes only {100 * norm_lost:.1f}% of the kernel norm "
            f"(< {100 * MUCH_NORM:.0f}%)"
        )
        return replace(safe, status=stats.DOES_NOT_HOLD, reason=reason)
    return safe


def _finding_3(before: stats.Verdict, after: stats.Verdict) -> stats.Verdict:
    """Re-training recovers: the aggressive drop above the tolerance, the re-trained one below.

    The re-trained part decides when it does not hold or cannot be tested (not enough units);
    both parts holding is needed for "holds"; otherwise not significant, naming the weak part.
    """
    if after.status in (stats.DOES_NOT_HOLD, stats.NOT_ENOUGH_UNITS):
        return after
    if after.status == stats.HOLDS and before.status == stats.HOLDS:
        return replace(after, reason=f"{before.reason}, and {after.reason}")
    weak = before if before.status != stats.HOLDS else after
    return replace(after, status=stats.NOT_SIGNIFICANT, reason=weak.reason)
