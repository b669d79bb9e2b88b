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

from studies.common import stats, units

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
MARGIN = 0.05  # "no better": tau(feature) - tau(rel. weight) below +0.05 (tau-a units)


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
    per_seed: Sequence[Sequence[Sequence[Mapping]]],
    cfg: Config,
    perf: str,
    offset: int,
    margin: float = MARGIN,
) -> dict[str, Any]:
    """The main finding for one performance error: rel. weight tau > 0, features no better.

    Two parts, tested with the seeds as the independent units:

    - rel. weight error correlates positively: per seed, the largest p over its pseudo-runs of
      scipy's one-sided Kendall test (tau-b; equal to tau-a without ties; a valid, conservative
      p-value), combined across seeds by Stouffer's z;
    - feature errors are no better: per feature measure, each seed's ``tau(feature) - tau(rel.
      weight)`` (its bootstrap over configurations, within the seed, reported beside), and a
      TOST-style test over seeds that the difference stays below ``+margin``
      (:func:`studies.common.units.unit_equivalence_verdict`, "not enough units" below 5 seeds).

    The finding holds when every part holds (:func:`studies.common.stats.all_hold`).
    """
    taus, p_up, p_down = _kendall_over_seeds(per_seed, cfg, perf)
    tau = float(np.mean(taus))
    no_better = {}
    for i, m in enumerate(FEATURE_MEASURES):
        within = [
            tau_difference(
                [c],
                m,
                "weight_rel",
                perf,
                cfg.seed + offset + i + 100 * s,
                cfg.boot,
                cfg.pseudo_runs,
            )
            for s, c in enumerate(per_seed)
        ]
        no_better[m] = units.unit_equivalence_verdict(
            [iv.estimate for iv in within], margin, what=f"tau({m}) - tau(rel. weight)",
            side="upper", per_unit=within,
        )  # fmt: skip
    kendall = _kendall_status(tau, p_up, p_down)
    status = stats.all_hold([kendall[0], *(v.status for v in no_better.values())])
    parts = [kendall[1], *(v.reason for v in no_better.values() if v.status != stats.HOLDS)]
    if all(v.status == stats.HOLDS for v in no_better.values()):
        parts.append(f"no feature error is better by {margin:g} or more")
    test = (
        "one-sided Kendall test of rel. weight error vs performance error within each seed "
        "(largest p over its pseudo-runs), combined across seeds by Stouffer's z; TOST over "
        f"seeds of tau(feature) - tau(rel. weight) < +{margin:g} (equivalence margin)"
    )
    v = stats.Verdict(
        status, test, "; ".join(parts), tau, p_up, no_better["feature_rel"].interval, "tau-a"
    )
    return {
        **v.as_dict(),
        "units": len(per_seed),
        "taus": taus,
        "p_less": p_down,
        "margin": margin,
        "differences": {m: asdict(x.interval) for m, x in no_better.items()},
        "no_better": {m: x.as_dict() for m, x in no_better.items()},
    }


def _kendall_over_seeds(
    per_seed: Sequence[Sequence[Sequence[Mapping]]], cfg: Config, perf: str
) -> tuple[list[float], float, float]:
    """tau-a of every pseudo-run, and the one-sided p-values (up, down) combined over seeds.

    Per seed, the largest p over its pseudo-runs; across seeds, Stouffer's z.
    """
    taus, ups, downs = [], [], []
    for configs in per_seed:
        samples = pseudo_runs(configs, cfg.pseudo_runs, cfg.seed)
        x = [[r["weight_rel"] for r in s] for s in samples]
        y = [[r[f"perf_{perf}"] for r in s] for s in samples]
        taus += [tau_a(a, b) for a, b in zip(x, y)]
        ups.append(
            max(float(sps.kendalltau(a, b, alternative="greater").pvalue) for a, b in zip(x, y))
        )
        downs.append(
            max(float(sps.kendalltau(a, b, alternative="less").pvalue) for a, b in zip(x, y))
        )
    return taus, units.stouffer(ups), units.stouffer(downs)


def _kendall_status(tau: float, p_up: float, p_down: float) -> tuple[str, str]:
    """Status and reason of "rel. weight error correlates positively"."""
    if p_up < stats.ALPHA:
        return stats.HOLDS, (
            f"rel. weight error correlates positively (mean tau-a {tau:.2f}, combined p {p_up:.3g})"
        )
    if p_down < stats.ALPHA:
        return stats.DOES_NOT_HOLD, (
            f"rel. weight error correlates negatively (combined p {p_down:.3g})"
        )
    reason = f"mean tau-a {tau:.2f}, combined one-sided p {p_up:.3g} >= {stats.ALPHA}"
    return stats.NOT_SIGNIFICANT, reason


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
    out["evidence"] = units.evidence_note(cfg.quick)
    return out
