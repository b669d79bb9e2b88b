"""The approx-error study's verdict code on hand-built cell tables with known correlations.

Rows have the structure of ``cells.jsonl`` (layer, method, fraction, repeat, the six error
measures and the performance errors); tau-a, grouped taus, bootstrap intervals, p-values and
verdicts are derived here independently (by hand, with numpy or scipy) and compared.
"""

import json
import math
import warnings
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats as sps

from studies.approx_error import Config
from studies.common import stats, units
from studies.verdicts import approx_error as ae

CFG = Config(pseudo_runs=3, boot=100, seed=4)
LAYERS, METHODS, FRACTIONS = ("l1", "l2", "l3"), ("cp", "tt"), (0.1, 0.5, 0.9)


def rows(weight=lambda p, k: p, feature=lambda p, k: -p, repeats=2, seed=0, fractions=FRACTIONS):
    """Cells whose performance error ``p`` differs per configuration and repeat; weight_rel and
    the feature measures are functions of ``p`` and a per-row index ``k``."""
    out, k = [], 0
    for li, layer in enumerate(LAYERS):
        for mi, method in enumerate(METHODS):
            for fraction in fractions:
                for rep in range(repeats):
                    p = 1 - fraction + li / 50 + mi / 100 + rep / 1000 + seed / 10000
                    r = {"layer": layer, "method": method, "fraction": fraction, "repeat": rep}
                    for m in ae.MEASURES:
                        r[m] = feature(p, k) if m.startswith("feature") else p + k / 1e6
                    r["weight_rel"] = weight(p, k)
                    r["perf_before"], r["perf_after"] = p, p + (k % 3) / 100
                    out.append(r)
                    k += 1
    return out


def noise(p, k):
    return math.sin(17.0 * k)  # a deterministic measure unrelated to p


# -- tau-a --------------------------------------------------------------------------------------
def test_tau_a_counts_concordant_minus_discordant_pairs():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=12), rng.normal(size=12)
    assert ae.tau_a(a, b) == pytest.approx(sps.kendalltau(a, b).statistic)  # no ties: tau-b
    assert ae.tau_a([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(2 / 6)
    assert ae.tau_a([3, 2, 1], [1, 2, 3]) == -1.0
    # ids: pairs within one id are left out of numerator and denominator
    assert ae.tau_a([1, 2, 3, 4], [1, 2, 4, 3], ids=[0, 1, 2, 2]) == pytest.approx(1.0)
    assert ae.tau_a([1, 2, 3, 4], [1, 2, 4, 3], ids=[0, 1, 2, 3]) == pytest.approx(4 / 6)
    assert ae.tau_a([1, 2, 3], [2, 1, 3], ids=[5, 6, 6]) == pytest.approx(0.0)
    assert math.isnan(ae.tau_a([1.0], [2.0])) and math.isnan(ae.tau_a([1, 2], [1, 2], ids=[0, 0]))
    # boolean measures count as 0/1
    assert ae.tau_a([True, False, True], [3, 1, 2]) == pytest.approx(2 / 3)
    assert ae.tau_a([3, 1, 2], [True, False, True]) == pytest.approx(2 / 3)


def test_tau_a_rejects_unequal_or_2d_inputs():
    with pytest.raises(
        ValueError, match=r"^tau_a needs two equally long 1-D sequences, got \(3,\), \(2,\)$"
    ):
        ae.tau_a([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"got \(2, 2\), \(2, 2\)"):
        ae.tau_a(np.ones((2, 2)), np.ones((2, 2)))


# -- configurations and pseudo-runs -------------------------------------------------------------
def test_configurations_group_repeats_in_order_and_filter_fractions():
    cells = rows(repeats=3)
    shuffled = [cells[i] for i in np.random.default_rng(0).permutation(len(cells))]
    groups = ae.configurations(shuffled)
    assert len(groups) == 3 * 2 * 3
    for g in groups:
        assert [r["repeat"] for r in g] == [0, 1, 2]
        assert len({(r["layer"], r["method"], r["fraction"]) for r in g}) == 1
    # first appearance orders the groups
    first = shuffled[0]
    assert (groups[0][0]["layer"], groups[0][0]["method"], groups[0][0]["fraction"]) == (
        first["layer"], first["method"], first["fraction"]
    )  # fmt: skip
    # fractions match up to rounding (0.1 + 1e-12 is 0.1)
    some = ae.configurations(rows(fractions=(0.1 + 1e-12, 0.5, 0.9)), fractions=(0.1, 0.9))
    assert len(some) == 3 * 2 * 2
    assert sorted({g[0]["fraction"] for g in some}) == [0.1 + 1e-12, 0.9]
    assert ae.configurations(cells, fractions=(0.3,)) == []


def test_pseudo_runs_take_one_seeded_repeat_per_configuration():
    configs = ae.configurations(rows(repeats=3))
    runs = ae.pseudo_runs(configs, 40, seed=7)
    assert len(runs) == 40 and all(len(s) == len(configs) for s in runs)
    assert all(s[i] in configs[i] for s in runs for i in range(len(configs)))
    rng = np.random.default_rng(7)
    assert runs == [[c[int(rng.integers(len(c)))] for c in configs] for _ in range(40)]
    assert {r["repeat"] for s in runs for r in s} == {0, 1, 2}  # every repeat can be drawn
    assert ae.pseudo_runs(configs, 5, seed=8) != runs[:5]


# -- grouped taus -------------------------------------------------------------------------------
def sample_of(values):
    """(layer, method, fraction, measure, perf) rows."""
    return [
        {
            "layer": la,
            "method": me,
            "fraction": f,
            "weight_rel": x,
            "perf_before": y,
            "perf_after": -y,
        }
        for la, me, f, x, y in values
    ]


SAMPLE = sample_of(
    [
        ("a", "cp", 0.1, 1, 1), ("b", "cp", 0.1, 2, 2), ("c", "cp", 0.1, 3, 3),  # up: tau 1
        ("a", "tt", 0.1, 1, 3), ("b", "tt", 0.1, 2, 1), ("c", "tt", 0.1, 3, 2),  # tau -1/3
        ("a", "cp", 0.5, 5, 9),  # alone in its (method, fraction) group
    ]
)  # fmt: skip


def test_grouped_tau_pooled_across_layers_and_across_methods():
    x = [r["weight_rel"] for r in SAMPLE]
    y = [r["perf_before"] for r in SAMPLE]
    assert ae.grouped_tau(SAMPLE, "weight_rel", "before", "all") == ae.tau_a(x, y)
    assert ae.grouped_tau(SAMPLE, "weight_rel", "after", "all") == -ae.tau_a(x, y)
    # across layers: groups (cp, 0.1) tau 1 and (tt, 0.1) tau -1/3; (cp, 0.5) has one row
    assert ae.grouped_tau(SAMPLE, "weight_rel", "before", "layers") == pytest.approx(1 / 3)
    # across methods: (layer, fraction) groups of two rows, cp vs tt: a (1,1),(1,3): x tied -> 0;
    # b (2,2),(2,1): 0; c (3,3),(3,2): 0
    assert ae.grouped_tau(SAMPLE, "weight_rel", "before", "methods") == 0.0
    # ties everywhere leave tau 0, not NaN; groups of one row only give NaN
    assert math.isnan(ae.grouped_tau(SAMPLE[-1:], "weight_rel", "before", "layers"))


def test_grouped_tau_skips_groups_whose_tau_is_undefined():
    with_nan = SAMPLE + sample_of([("z", "ht", 0.9, float("nan"), 1), ("y", "ht", 0.9, 1, 2)])
    # the (ht, 0.9) group's tau is NaN (sign(nan) is nan): left out of the average
    assert ae.grouped_tau(with_nan, "weight_rel", "before", "layers") == pytest.approx(1 / 3)
    only_nan = sample_of([("z", "ht", 0.9, float("nan"), 1), ("y", "ht", 0.9, 1, 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tau to average: NaN, without a mean-of-empty warning
        assert math.isnan(ae.grouped_tau(only_nan, "weight_rel", "before", "layers"))
        assert math.isnan(ae.grouped_tau(SAMPLE[-1:], "weight_rel", "before", "methods"))


def test_correlation_table_lists_every_grouping_perf_and_measure():
    samples = ae.pseudo_runs(ae.configurations(rows(feature=noise)), 3, seed=1)
    table = ae.correlation_table(samples)
    assert list(table) == ["all", "layers", "methods"]
    for g in table:
        assert list(table[g]) == ["before", "after"]
        for perf in ("before", "after"):
            assert list(table[g][perf]) == list(ae.MEASURES)
            for m in ae.MEASURES:
                values = [ae.grouped_tau(s, m, perf, g) for s in samples]
                entry = table[g][perf][m]
                assert entry["values"] == values
                assert entry["mean"] == pytest.approx(np.mean(values))
                assert entry["std"] == pytest.approx(np.std(values, ddof=1)) and entry["n"] == 3
    assert table["all"]["before"]["weight_rel"]["mean"] == 1.0


# -- tau difference -----------------------------------------------------------------------------
def test_tau_difference_of_perfect_and_reversed_measures_is_two():
    configs = ae.configurations(rows(feature=lambda p, k: -p))
    iv = ae.tau_difference([configs], "weight_rel", "feature_rel", "before", seed=3, n_boot=50)
    assert (iv.estimate, iv.low, iv.high, iv.level) == (2.0, 2.0, 2.0, 0.95)
    assert iv.method == "paired bootstrap over configurations (50 replicates)"
    same = ae.tau_difference([configs], "weight_rel", "weight_rel", "after", seed=3, n_boot=20)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)


def test_tau_difference_resamples_seeds():
    """Seed 0: difference 2; seed 1: difference 0; replicates draw the seeds with replacement."""
    up = ae.configurations(rows(feature=lambda p, k: -p))
    flat = ae.configurations(rows(feature=lambda p, k: p, seed=1))
    iv = ae.tau_difference([up, flat], "weight_rel", "feature_rel", "before", seed=0, n_boot=200)
    assert iv.estimate == pytest.approx(1.0)
    assert (iv.low, iv.high) == (0.0, 2.0)


def test_tau_difference_matches_the_bootstrap_by_hand():
    configs = ae.configurations(rows(feature=noise))
    iv = ae.tau_difference(
        [configs], "feature_rel", "weight_rel", "after", seed=5, n_boot=60, pseudo=4
    )
    rng = np.random.default_rng(5)
    reps = []
    for _ in range(60):
        idx = rng.integers(0, len(configs), len(configs))
        pick = [int(rng.integers(len(c))) for c in configs]
        chosen = [configs[k][pick[k]] for k in idx]
        y = [r["perf_after"] for r in chosen]
        reps.append(
            ae.tau_a([r["feature_rel"] for r in chosen], y, idx)
            - ae.tau_a([r["weight_rel"] for r in chosen], y, idx)
        )
    assert (iv.low, iv.high) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    runs = ae.pseudo_runs(configs, 4, 5)
    assert iv.estimate == pytest.approx(
        np.mean(
            [
                ae.grouped_tau(s, "feature_rel", "after", "all")
                - ae.grouped_tau(s, "weight_rel", "after", "all")
                for s in runs
            ]
        )
    )
    assert iv.low < iv.estimate < iv.high < 0
    # the estimate averages 5 pseudo-runs unless told otherwise
    args = ([configs], "feature_rel", "weight_rel", "after", 5, 10)
    assert ae.tau_difference(*args) == ae.tau_difference(*args, pseudo=5)
    assert ae.tau_difference(*args).estimate != ae.tau_difference(*args, pseudo=6).estimate


# -- verdict and findings -----------------------------------------------------------------------
def stouffer_by_hand(p):
    return sps.norm.sf(sum(sps.norm.isf(x) for x in p) / math.sqrt(len(p)))


def check_verdict(found, per_seed, cfg, perf, offset):
    taus, ups, downs = [], [], []
    for c in per_seed:  # per seed: its pseudo-runs' taus and the largest p of each side
        samples = ae.pseudo_runs(c, cfg.pseudo_runs, cfg.seed)
        x = [[r["weight_rel"] for r in s] for s in samples]
        y = [[r[f"perf_{perf}"] for r in s] for s in samples]
        taus += [ae.tau_a(a, b) for a, b in zip(x, y)]
        ups.append(max(sps.kendalltau(a, b, alternative="greater").pvalue for a, b in zip(x, y)))
        downs.append(max(sps.kendalltau(a, b, alternative="less").pvalue for a, b in zip(x, y)))
    p_up, p_down = stouffer_by_hand(ups), stouffer_by_hand(downs)
    assert found["taus"] == pytest.approx(taus)
    assert found["statistic"] == pytest.approx(np.mean(taus))
    assert found["p_value"] == pytest.approx(p_up) and found["p_less"] == pytest.approx(p_down)
    assert found["statistic_name"] == "tau-a" and found["units"] == len(per_seed)
    assert found["test"] == (
        "one-sided Kendall test of rel. weight error vs performance error within each seed "
        "(largest p over its pseudo-runs), combined across seeds by Stouffer's z; TOST over "
        "seeds of tau(feature) - tau(rel. weight) < +0.05 (equivalence margin)"
    )
    assert list(found["differences"]) == list(ae.FEATURE_MEASURES) and found["margin"] == 0.05
    for i, m in enumerate(ae.FEATURE_MEASURES):
        within = [
            ae.tau_difference(
                [c], m, "weight_rel", perf, cfg.seed + offset + i + 100 * s, cfg.boot,
                cfg.pseudo_runs,
            )
            for s, c in enumerate(per_seed)
        ]  # fmt: skip
        assert [stats.Interval(**x) for x in found["no_better"][m]["per_unit"]] == within
        t90 = units.t_interval([iv.estimate for iv in within], 0.9)
        assert found["differences"][m] == pytest.approx(asdict(t90), nan_ok=True)
        assert found["no_better"][m]["interval"] == found["differences"][m]
        assert found["no_better"][m]["test"] == (
            "TOST over seeds (t interval), equivalence margin ±0.05"
        )
    assert found["interval"] == found["differences"]["feature_rel"]
    return p_up, p_down


def five(**kw):
    return [ae.configurations(rows(seed=s, **kw)) for s in range(5)]


def test_verdict_holds_when_weight_error_correlates_and_no_feature_does_better():
    per_seed = five(feature=noise)
    found = ae.verdict(per_seed, CFG, "before", 1)
    p_up, _ = check_verdict(found, per_seed, CFG, "before", 1)
    assert found["status"] == "holds"
    assert found["reason"] == (
        f"rel. weight error correlates positively (mean tau-a 1.00, combined p {p_up:.3g}); "
        "no feature error is better by 0.05 or more"
    )
    assert all(x["status"] == "holds" for x in found["no_better"].values())
    # the margin is an argument: a margin the differences' intervals do not clear
    wide = ae.verdict(per_seed, CFG, "before", 1, margin=0.01)
    assert wide["margin"] == 0.01 and "< +0.01 (equivalence margin)" in wide["test"]


def test_verdict_with_fewer_than_five_seeds_is_not_enough_units():
    per_seed = [ae.configurations(rows(feature=noise))]
    found = ae.verdict(per_seed, CFG, "before", 1)
    p_up, _ = check_verdict(found, per_seed, CFG, "before", 1)
    assert found["status"] == "not enough units"
    assert found["reason"].startswith(
        f"rel. weight error correlates positively (mean tau-a 1.00, combined p {p_up:.3g}); "
        "1 seed(s): each one-sided test needs at least 5"
    )
    assert found["p_value"] == pytest.approx(p_up)  # one seed: its own largest p
    four = ae.verdict(five(feature=noise)[:4], CFG, "before", 1)
    assert four["status"] == "not enough units"


def test_verdict_does_not_hold_when_a_feature_error_correlates_better():
    per_seed = five(weight=lambda p, k: p + noise(p, k) / 4, feature=lambda p, k: p)
    found = ae.verdict(per_seed, CFG, "before", 11)
    check_verdict(found, per_seed, CFG, "before", 11)
    assert found["status"] == "does not hold"
    assert all(x["status"] == "does not hold" for x in found["no_better"].values())
    assert (
        "tau(feature_abs) - tau(rel. weight) lies entirely outside below +0.05" in (found["reason"])
    )
    assert all(d["low"] > 0.05 for d in found["differences"].values())


def test_verdict_does_not_hold_when_weight_error_correlates_negatively():
    per_seed = [ae.configurations(rows(weight=lambda p, k: -p, feature=lambda p, k: -p))]
    found = ae.verdict(per_seed, CFG, "before", 1)
    _, p_down = check_verdict(found, per_seed, CFG, "before", 1)
    assert found["status"] == "does not hold"
    assert found["reason"].startswith(
        f"rel. weight error correlates negatively (combined p {p_down:.3g}); 1 seed(s)"
    )


def test_verdict_not_significant_without_a_correlation():
    per_seed = five(weight=noise, feature=noise)
    found = ae.verdict(per_seed, CFG, "after", 1)
    p_up, p_down = check_verdict(found, per_seed, CFG, "after", 1)
    assert p_up >= 0.05 and p_down >= 0.05
    assert found["status"] == "not significant"
    assert found["reason"] == (
        f"mean tau-a {found['statistic']:.2f}, combined one-sided p {p_up:.3g} >= 0.05; "
        "no feature error is better by 0.05 or more"
    )


def test_kendall_p_values_combine_across_seeds():
    """Two seeds whose pseudo-runs disagree: per seed the largest p, then Stouffer's z."""
    per_seed = [ae.configurations(rows(weight=noise)), ae.configurations(rows(seed=1))]
    found = ae.verdict(per_seed, CFG, "before", 1)
    p_up, p_down = check_verdict(found, per_seed, CFG, "before", 1)
    assert 0 < p_up < 0.05 and p_down > 0.5  # one seed without a trend, one with a perfect one


def test_findings_cover_both_subsets_and_both_performance_errors():
    results = [
        {"seed": 0, "rows": rows(feature=noise)},
        {"seed": 1, "rows": rows(feature=noise, seed=1)},
    ]
    found = ae.findings(results, CFG)
    assert found["seeds"] == [0, 1] and found["note"] == stats.seeds_note(2)
    assert list(found["verdicts"]) == ["all/before", "all/after", "paper/before", "paper/after"]
    for subset, fractions in (("all", None), ("paper", (0.1, 0.25, 0.5))):
        per_seed = [ae.configurations(r["rows"], fractions) for r in results]
        samples = [s for c in per_seed for s in ae.pseudo_runs(c, CFG.pseudo_runs, CFG.seed)]
        assert json.dumps(found["tables"][subset]) == json.dumps(ae.correlation_table(samples))
        for k, perf in enumerate(("before", "after")):
            expected = ae.verdict(per_seed, CFG, perf, 10 * k + 1)
            assert json.dumps(found["verdicts"][f"{subset}/{perf}"]) == json.dumps(expected)
    assert len(found["tables"]["paper"]["all"]["before"]["weight_rel"]["values"]) == 6


def test_findings_skip_the_paper_subset_without_its_fractions():
    results = [{"seed": 3, "rows": rows(feature=noise, fractions=(0.75, 0.9))}]
    found = ae.findings(results, CFG)
    assert list(found["tables"]) == ["all"]
    assert list(found["verdicts"]) == ["all/before", "all/after"]
    assert found["note"] == stats.seeds_note(1) and found["seeds"] == [3]
    assert found["evidence"] is None
    assert ae.findings(results, Config(pseudo_runs=3, boot=100, seed=4, quick=True))[
        "evidence"
    ] == units.evidence_note(True)


def test_kendall_status_needs_p_strictly_below_alpha():
    assert ae._kendall_status(0.3, 0.05, 0.9) == (
        "not significant", "mean tau-a 0.30, combined one-sided p 0.05 >= 0.05"
    )  # fmt: skip
    assert ae._kendall_status(-0.3, 0.9, 0.05)[0] == "not significant"
    assert ae._kendall_status(-0.3, 0.9, 0.0499) == (
        "does not hold", "rel. weight error correlates negatively (combined p 0.0499)"
    )  # fmt: skip
    assert ae._kendall_status(0.3, 0.0499, 0.9)[0] == "holds"
