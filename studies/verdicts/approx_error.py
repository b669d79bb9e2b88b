"""Study 2 (is the approximation error informative?): Kendall tau-a tables and the verdicts.

Everything here is recomputed from the seeds' cells (``cells.jsonl``): one row per (layer,
method, fraction, repeat) with its six error measures and the performance errors
``perf_before`` / ``perf_after``. ``cfg`` is the study's ``Config`` (``pseudo_runs``, ``boot``
and ``seed`` are read).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from studies.common import stats

if TYPE_CHECKING:
    from studies.approx_error import Config

PAPER_FRACTIONS = (0.1, 0.25, 0.5)  # the paper's 90 / 75 / 50 % compression
MEASURES = (
    "weight_abs", "weight_rel", "weight_scaled", "feature_abs", "feature_rel", "feature_scaled",
)  # fmt: skip
FEATURE_MEASURES = ("feature_abs", "feature_rel", "feature_scaled")
GROUPINGS = {"all": None, "layers": ("method", "fraction"), "methods": ("layer", "fraction")}
PERF = ("before", "after")
N_BOOT = 2000


# -- Kendall tau-a ------------------------------------------------------------------------------
def tau_a(x: Sequence[float], y: Sequence[float], ids: Sequence[int] | None = None) -> float:
    """Kendall tau-a: ``(concordant - discordant) / (n (n - 1) / 2)``; tied pairs count zero.

    With ``ids``, pairs of two items with the same id (two bootstrap copies of one observation)
    are left out of the numerator and the denominator.

    >>> tau_a([1, 2, 3], [10, 20, 30]), tau_a([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    >>> tau_a([1, 2, 2, 3], [1, 3, 2, 2])   # 3 concordant, 1 discordant, 2 tied of 6 pairs
    0.3333333333333333
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"tau_a needs two equally long 1-D sequences, got {x.shape}, {y.shape}")
    i, j = np.triu_indices(x.size, 1)
    if ids is not None:
        ids = np.asarray(ids)
        keep = ids[i] != ids[j]
        i, j = i[keep], j[keep]
    if i.size == 0:
        return float("nan")
    return float((np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])).sum() / i.size)


# -- correlations -------------------------------------------------------------------------------
def configurations(rows: Sequence[Mapping[str, Any]], fractions=None) -> list[list[Mapping]]:
    """Rows grouped per (layer, method, fraction), repeats in order; optionally some fractions."""
    groups: dict[tuple, list] = {}
    for r in rows:
        if fractions is None or any(math.isclose(r["fraction"], f) for f in fractions):
            groups.setdefault((r["layer"], r["method"], r["fraction"]), []).append(r)
    return [sorted(g, key=lambda r: r["repeat"]) for g in groups.values()]


def pseudo_runs(configs: Sequence[Sequence[Mapping]], n: int, seed: int) -> list[list[Mapping]]:
    """``n`` samples of one repeat per configuration (seeded)."""
    rng = np.random.default_rng(seed)
    return [[c[int(rng.integers(len(c)))] for c in configs] for _ in range(n)]


def grouped_tau(sample: Sequence[Mapping], measure: str, perf: str, grouping: str) -> float:
    """tau-a of ``measure`` vs ``perf_<perf>``: pooled, or averaged over groups of fixed keys."""
    keys = GROUPINGS[grouping]
    if keys is None:
        return tau_a([r[measure] for r in sample], [r[f"perf_{perf}"] for r in sample])
    groups: dict[tuple, list] = {}
    for r in sample:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    taus = [grouped_tau(g, measure, perf, "all") for g in groups.values() if len(g) > 1]
    taus = [t for t in taus if math.isfinite(t)]
    return float(np.mean(taus)) if taus else float("nan")


def correlation_table(samples: Sequence[Sequence[Mapping]]) -> dict[str, Any]:
    """grouping -> perf -> measure -> tau-a per pseudo-run, with mean and std."""
    out: dict[str, Any] = {}
    for grouping in GROUPINGS:
        for perf in PERF:
            for m in MEASURES:
                values = [grouped_tau(s, m, perf, grouping) for s in samples]
                out.setdefault(grouping, {}).setdefault(perf, {})[m] = {
                    "values": values,
                    **asdict(stats.spread(values)),
                }
    return out


def tau_difference(
    per_seed: Sequence[Sequence[Sequence[Mapping]]],
    a: str,
    b: str,
    perf: str,
    seed: int,
    n_boot: int = N_BOOT,
    pseudo: int = 5,
) -> stats.Interval:
    """Bootstrap interval of pooled ``tau_a(a) - tau_a(b)`` (paired: the same resample for both).

    A replicate resamples seeds (when several), then configurations with replacement, and
    samples one repeat per configuration; copies of one configuration are not paired.
    """
    rng = np.random.default_rng(seed)
    reps = []
    n_seeds = len(per_seed)
    for _ in range(n_boot):
        chosen = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else [0]
        diffs = []
        for s in chosen:
            configs = per_seed[s]
            idx = rng.integers(0, len(configs), len(configs))
            pick = [int(rng.integers(len(c))) for c in configs]
            rows = [configs[k][pick[k]] for k in idx]
            y = [r[f"perf_{perf}"] for r in rows]
            diffs.append(tau_a([r[a] for r in rows], y, idx) - tau_a([r[b] for r in rows], y, idx))
        reps.append(np.nanmean(diffs))
    low, high = np.nanquantile(reps, [0.025, 0.975])
    samples = [pseudo_runs(c, pseudo, seed) for c in per_seed]
    estimate = float(
        np.mean(
            [
                grouped_tau(s, a, perf, "all") - grouped_tau(s, b, perf, "all")
                for runs in samples
                for s in runs
            ]
        )
    )
    method = f"paired bootstrap over configurations ({n_boot} replicates)"
    return stats.Interval(estimate, float(low), float(high), 0.95, method)


def verdict(
    per_seed: Sequence[Sequence[Sequence[Mapping]]], cfg: Config, perf: str, offset: int
) -> dict[str, Any]:
    """The main finding for one performance error: rel. weight tau > 0, features no better.

    The p-value is the largest over the pseudo-runs (and seeds) of scipy's one-sided Kendall
    test (tau-b; equal to tau-a without ties): a valid, conservative p-value.
    """
    samples = [s for configs in per_seed for s in pseudo_runs(configs, cfg.pseudo_runs, cfg.seed)]
    x = [[r["weight_rel"] for r in s] for s in samples]
    y = [[r[f"perf_{perf}"] for r in s] for s in samples]
    taus = [tau_a(a, b) for a, b in zip(x, y)]
    p_up = max(float(sps.kendalltau(a, b, alternative="greater").pvalue) for a, b in zip(x, y))
    p_down = max(float(sps.kendalltau(a, b, alternative="less").pvalue) for a, b in zip(x, y))
    diffs = {
        m: tau_difference(
            per_seed, m, "weight_rel", perf, cfg.seed + offset + i, cfg.boot, cfg.pseudo_runs
        )
        for i, m in enumerate(FEATURE_MEASURES)
    }
    better = [m for m, iv in diffs.items() if iv.low > 0]
    tau = float(np.mean(taus))
    rel_iv = diffs["feature_rel"]
    test = (
        "one-sided Kendall test of rel. weight error vs performance error (largest p over "
        "pseudo-runs) and paired bootstrap of tau(feature) - tau(rel. weight)"
    )
    if p_up < stats.ALPHA and not better:
        status = stats.HOLDS
        reason = (
            f"rel. weight error correlates positively (mean tau-a {tau:.2f}, p <= {p_up:.3g}) and "
            "no feature error's interval of tau(feature) - tau(rel. weight) lies above 0"
        )
    elif better or p_down < stats.ALPHA:
        status = stats.DOES_NOT_HOLD
        reason = (
            f"{', '.join(better)} correlate(s) significantly better than rel. weight error"
            if better
            else f"rel. weight error correlates negatively (p <= {p_down:.3g})"
        )
    else:
        status = stats.NOT_SIGNIFICANT
        reason = f"mean tau-a {tau:.2f}, largest one-sided p {p_up:.3g} >= {stats.ALPHA}"
    v = stats.Verdict(status, test, reason, tau, p_up, rel_iv, "tau-a")
    return {
        **v.as_dict(),
        "taus": taus,
        "p_less": p_down,
        "differences": {m: asdict(iv) for m, iv in diffs.items()},
    }


def findings(results: Sequence[Mapping[str, Any]], cfg: Config) -> dict[str, Any]:
    """Correlation tables and verdicts (all levels and the paper's subset, before and after)."""
    out: dict[str, Any] = {"seeds": [r["seed"] for r in results], "tables": {}, "verdicts": {}}
    for subset, fractions in (("all", None), ("paper", PAPER_FRACTIONS)):
        per_seed = [configurations(r["rows"], fractions) for r in results]
        if not all(per_seed):
            continue
        samples = [s for c in per_seed for s in pseudo_runs(c, cfg.pseudo_runs, cfg.seed)]
        out["tables"][subset] = correlation_table(samples)
        for k, perf in enumerate(PERF):
            out["verdicts"][f"{subset}/{perf}"] = verdict(per_seed, cfg, perf, 10 * k + 1)
    out["note"] = stats.seeds_note(len(results))
    return out
