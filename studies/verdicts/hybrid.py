"""Study 3 (hybrid TT / HT): paired comparisons of the configurations, the verdicts.

Everything here is recomputed from the seeds' cells (``cells.jsonl``): one row per
(configuration, ratio) with, ``"before"`` and ``"after"`` fine-tuning, the validation and test
accuracy and the per-image test correctness, and per compressed layer its storage and
relative weight error. ``cfg`` is the study's ``Config`` (``ratios``, ``match_tol`` and
``seed`` are read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from studies.common import stats
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
) -> dict[str, Any]:
    """Paired comparison of test accuracy ``a - b`` over every (pair, ratio, seed) unit.

    A paired percentile bootstrap resamples the units, then the test images inside each
    (images are paired: both cells of a unit are scored on the same images); a one-sided
    Wilcoxon signed-rank test over the units' accuracy differences is given beside it.
    """
    refs, others, diffs = [], [], []
    for r in results:
        for a, b in pairs:
            for ratio in ratios:
                ra, rb = _cell(r, a, ratio), _cell(r, b, ratio)
                refs.append(unpack_correct(ra[stage]["test_correct"]))
                others.append(unpack_correct(rb[stage]["test_correct"]))
                diffs.append(ra[stage]["test_accuracy"] - rb[stage]["test_accuracy"])
    iv = stats.paired_bootstrap(refs, others, seed=seed)
    n_images = sorted({len(x) for x in refs})
    iv = replace(
        iv,
        method=(
            f"paired percentile bootstrap (4000 replicates) over {len(refs)} units "
            f"({len(pairs)} pair(s) x {len(ratios)} ratios x {len(results)} seed(s)), then "
            f"{n_images[0]} test images per unit"
        ),
    )
    nonzero = [d for d in diffs if d != 0]
    if nonzero:
        w = sps.wilcoxon(diffs, alternative="greater")
        wilcoxon = {"statistic": float(w.statistic), "p_value": float(w.pvalue)}
    else:
        wilcoxon = {"statistic": None, "p_value": None}
    return {
        "pairs": [list(p) for p in pairs],
        "stage": stage,
        "interval": asdict(iv),
        "differences": diffs,
        "wins": int(sum(d > 0 for d in diffs)),
        "losses": int(sum(d < 0 for d in diffs)),
        "wilcoxon": wilcoxon,
    }


def _verdict_of(comparison: Mapping[str, Any], what: str) -> stats.Verdict:
    iv = stats.Interval(**comparison["interval"])
    return stats.threshold_verdict(
        iv, 0.0, claim="above", test="paired bootstrap of the test accuracy difference", what=what
    )


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """The finding and its two parts, before and after fine-tuning, from the seeds' cells.

    Every number is recomputable from the seeds' ``cells.jsonl``.
    """
    ratios = list(cfg.ratios)
    comparisons: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    for stage in STAGES:
        for number, (_, pairs) in FINDINGS.items():
            offset = 10 * int(number) + STAGES.index(stage)
            if number == "1":  # two separate comparisons, both must hold
                parts = []
                for a, b in pairs:
                    comp = compare(results, [(a, b)], ratios, stage, seed=cfg.seed + offset)
                    comparisons[f"1{b}_{stage}"] = comp
                    parts.append(_verdict_of(comp, f"hybrid - {LABELS[b]}"))
                verdicts[f"1_{stage}"] = _both(parts).as_dict()
            else:
                comp = compare(results, pairs, ratios, stage, seed=cfg.seed + offset)
                comparisons[f"{number}_{stage}"] = comp
                what = "HT-FC - TT-FC" if number == "2" else "TT-conv - HT-conv"
                verdicts[f"{number}_{stage}"] = _verdict_of(comp, what).as_dict()
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
    """Holds when every part holds, does not hold when any part does not, else not significant."""
    reason = "; ".join(p.reason for p in parts)
    test = parts[0].test + " (each comparison separately)"
    return stats.Verdict(stats.all_hold([p.status for p in parts]), test, reason)


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
