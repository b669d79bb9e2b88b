"""Study 3 (hybrid TT / HT): paired comparisons of the configurations, the verdicts.

Everything here is recomputed from the seeds' cells (``cells.jsonl``): one row per
(configuration, ratio) with, ``"before"`` and ``"after"`` fine-tuning, the validation and test
accuracy and the per-image test correctness, and per compressed layer its storage and
relative weight error. ``cfg`` is the study's ``Config`` (``ratios``, ``match_tol``,
``seed``, ``dataset`` and ``quick`` are read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from studies.common import stats, units
from studies.common.training import unpack_correct
from studies.hybrid_cells import CONFIGS, DENSE, LABELS

if TYPE_CHECKING:
    from studies.hybrid import Config

# (name, the pairs (a, b) whose test accuracy difference a - b the finding says is positive)
FINDINGS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "1": (
        "the hybrid beats TT-only and HT-only at matched parameter count",
        (("hybrid", "tt"), ("hybrid", "ht")),
    ),
    "2": (
        "HT is better than TT for the FC layers (same conv format, matched count)",
        (("hybrid", "tt"), ("ht", "reverse")),
    ),
    "3": (
        "TT is better than HT for the conv layers (same FC format, matched count)",
        (("hybrid", "ht"), ("tt", "reverse")),
    ),
}
STAGES = ("after", "before")


# -- findings over seeds --------------------------------------------------------------------------
def _cell(result: Mapping[str, Any], config: str, ratio: float) -> Mapping[str, Any]:
    for row in result["rows"]:
        if row["config"] == config and float(row["ratio"]) == float(ratio):
            return row
    raise KeyError(f"no cell {config} at ratio {ratio:g} in seed {result['seed']}")


def compare(
    results: Sequence[Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    ratios: Sequence[float],
    stage: str,
    seed: int = 0,
    what: str = "the accuracy difference",
) -> dict[str, Any]:
    """Paired comparison of test accuracy ``a - b``, tested over the seeds.

    The seeds are the independent units (the (pair, ratio) cells of one seed share its trained
    model and test images): each seed's value is its mean difference over the cells, and the
    verdict is :func:`studies.common.units.paired_unit_verdict` over the seeds (exact sign-flip
    test with a t interval over seeds; per seed, a paired bootstrap over its test images of the
    cells' mean correctness, seeded ``seed + s``). The per-cell differences, wins and losses are
    descriptive.
    """
    refs, others, diffs = [], [], []
    for r in results:
        ref, other = [], []
        for a, b in pairs:
            for ratio in ratios:
                ra, rb = _cell(r, a, ratio), _cell(r, b, ratio)
                ref.append(unpack_correct(ra[stage]["test_correct"]))
                other.append(unpack_correct(rb[stage]["test_correct"]))
                diffs.append(ra[stage]["test_accuracy"] - rb[stage]["test_accuracy"])
        refs.append(np.mean(ref, axis=0))
        others.append(np.mean(other, axis=0))
    verdict = units.paired_unit_verdict(refs, others, 0.0, claim="above", what=what, seed=seed)
    return {
        "pairs": [list(p) for p in pairs],
        "stage": stage,
        "interval": asdict(verdict.interval),
        "per_seed": [iv.estimate for iv in verdict.per_unit],
        "per_seed_intervals": [asdict(iv) for iv in verdict.per_unit],
        "differences": diffs,
        "wins": int(sum(d > 0 for d in diffs)),
        "losses": int(sum(d < 0 for d in diffs)),
        "verdict": verdict.as_dict(),
    }


def _verdict_of(
    results: Sequence[Mapping[str, Any]],
    comparison: Mapping[str, Any],
    ratios: Sequence[float],
    chance: float,
) -> stats.Verdict:
    """The comparison's verdict, withheld when a compared cell is near chance.

    A cell (configuration, ratio) is near chance when its test accuracy at the comparison's
    stage, averaged over the seeds, is within :data:`~studies.common.units.CHANCE_MARGIN` of it.
    """
    stage = comparison["stage"]
    configs = dict.fromkeys(c for pair in comparison["pairs"] for c in pair)
    accuracies = {
        f"{LABELS[c]} at {ratio:g}x": float(
            np.mean([_cell(r, c, ratio)[stage]["test_accuracy"] for r in results])
        )
        for c in configs
        for ratio in ratios
    }
    verdict = stats.Verdict(**comparison["verdict"])
    return units.withhold_near_chance(verdict, accuracies, chance)


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """The finding and its two parts, before and after fine-tuning, from the seeds' cells.

    Every number is recomputable from the seeds' ``cells.jsonl``.
    """
    ratios = list(cfg.ratios)
    chance = units.chance_level(cfg.dataset)
    comparisons: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    for stage in STAGES:
        for number, (_, pairs) in FINDINGS.items():
            seed = cfg.seed + 10 * int(number) + STAGES.index(stage)
            if number == "1":  # two separate comparisons, both must hold
                parts = []
                for a, b in pairs:
                    what = f"hybrid - {LABELS[b]}"
                    comp = compare(results, [(a, b)], ratios, stage, seed, what)
                    comparisons[f"1{b}_{stage}"] = comp
                    parts.append(_verdict_of(results, comp, ratios, chance))
                verdicts[f"1_{stage}"] = _both(parts).as_dict()
            else:
                what = "HT-FC - TT-FC" if number == "2" else "TT-conv - HT-conv"
                comp = compare(results, pairs, ratios, stage, seed, what)
                comparisons[f"{number}_{stage}"] = comp
                verdicts[f"{number}_{stage}"] = _verdict_of(results, comp, ratios, chance).as_dict()
    per_seed = [seed_numbers(r, cfg) for r in results]
    summary = {
        "base_test_accuracy": asdict(stats.spread([n["base_test_accuracy"] for n in per_seed])),
        "base_val_accuracy": asdict(stats.spread([n["base_val_accuracy"] for n in per_seed])),
        "accuracy": {
            f"{config}\t{ratio:g}\t{stage}": asdict(
                stats.spread([n["accuracy"][f"{config}\t{ratio:g}\t{stage}"] for n in per_seed])
            )
            for config in CONFIGS
            for ratio in ratios
            for stage in STAGES
        },
    }
    layers = [layer for r in results for row in r["rows"] for layer in row["layers"]]
    gaps = [row["gap"] for r in results for row in r["rows"] if row["config"] != DENSE]
    return {
        "kernel_error": kernel_errors(results),
        "seeds": [r["seed"] for r in results],
        "note": stats.seeds_note(len(results)),
        "evidence": units.evidence_note(cfg.quick),
        "per_seed": per_seed,
        "summary": summary,
        "comparisons": comparisons,
        "verdicts": verdicts,
        "storage": {
            "layers": len(layers),
            "formula_equal": sum(
                layer["formula_params"] == layer["params"] == layer["structure_params"]
                for layer in layers
            ),
        },
        "matching": {
            "cells": len(gaps),
            "within_tol": sum(abs(g) <= cfg.match_tol for g in gaps),
            "max_abs_gap": max(abs(g) for g in gaps),  # compare() above needs compressed cells
            "global_fill": sum(bool(row.get("global_fill")) for r in results for row in r["rows"]),
        },
    }


def kernel_errors(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Relative weight error of TT vs HT on the same layer at the same ratio and seed.

    Descriptive (the paper's theoretical part: which format approximates which layers better
    at equal storage): per layer kind, the mean errors, how often TT's is lower and a two-sided
    Wilcoxon signed-rank p-value over the (layer, ratio, seed) units. TT-only and HT-only
    cells give the pairs (with per-layer matching, every configuration with a format has the
    same decomposition of a layer).
    """
    out = {}
    for kind in ("conv", "fc"):
        tt, ht = [], []
        for r in results:
            for row in r["rows"]:
                if row["config"] != "tt":
                    continue
                twin = _cell(r, "ht", row["ratio"])
                other = {x["layer"]: x for x in twin["layers"]}
                for x in row["layers"]:
                    if x["kind"] == kind:
                        tt.append(x["rel_error"])
                        ht.append(other[x["layer"]]["rel_error"])
        diff = np.asarray(tt) - np.asarray(ht)
        p = float(sps.wilcoxon(diff).pvalue) if np.any(diff != 0) else None
        out[kind] = {
            "units": len(tt),
            "tt_mean": float(np.mean(tt)) if tt else None,
            "ht_mean": float(np.mean(ht)) if ht else None,
            "tt_lower": int(np.sum(diff < 0)),
            "wilcoxon_p": p,
        }
    return out


def _both(parts: Sequence[stats.Verdict]) -> stats.Verdict:
    """Holds when every part holds, does not hold when any part does not; otherwise "no
    verdict", "not enough units" or "not significant" (:func:`~studies.common.stats.all_hold`).
    The reason lists the parts with the combined status first.
    """
    status = stats.all_hold([p.status for p in parts])
    # the parts that decide the status lead the reason (e.g. which models are near chance)
    ordered = sorted(parts, key=lambda p: p.status != status)
    reason = "; ".join(p.reason for p in ordered)
    test = parts[0].test + " (each comparison separately)"
    return stats.Verdict(status, test, reason, units=parts[0].units)


def seed_numbers(result: Mapping[str, Any], cfg: Config) -> dict[str, Any]:
    """The numbers of one seed the report quotes (from its cells)."""
    dense = _cell(result, DENSE, 1.0)
    accuracy = {}
    for config in CONFIGS:
        for ratio in cfg.ratios:
            row = _cell(result, config, ratio)
            for stage in STAGES:
                accuracy[f"{config}\t{ratio:g}\t{stage}"] = row[stage]["test_accuracy"]
    return {
        "seed": result["seed"],
        "base_val_accuracy": result["base"]["val_accuracy"],
        "base_test_accuracy": result["base"]["test_accuracy"],
        "dense_cell_test_accuracy": dense["before"]["test_accuracy"],
        "dense_finetuned_test_accuracy": dense["after"]["test_accuracy"],
        "accuracy": accuracy,
    }
