"""Exact values of the verdict statistics (studies/common/stats.py): p-values against scipy,
bootstrap intervals against cases whose distribution is known, reason and method texts, formats.
"""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from studies.common import stats


def kendall(x, y, **kw):
    return stats.kendall_verdict(x, y, **kw)


# -- kendall_verdict ----------------------------------------------------------------------------
def test_kendall_verdict_texts_and_values_per_status():
    """Each status names the test, the trend, tau and the one-sided p-value (from scipy)."""
    x, rising = range(6), [0.1, 0.2, 0.3, 0.5, 0.6, 0.9]
    p = sps.kendalltau(x, rising, alternative="greater").pvalue
    up = kendall(x, rising, what="the norm with depth")
    assert up == stats.Verdict(
        "holds", "one-sided Kendall tau-b test",
        f"the norm with depth increases (tau = 1.00, p = {p:.3g} < 0.05)",
        statistic=pytest.approx(1.0), p_value=pytest.approx(p), statistic_name="tau",
    )  # fmt: skip
    # four perfectly falling points: one-sided p = 1/24 < 0.05, though two-sided 1/12 is not
    down = kendall(range(4), [0.4, 0.3, 0.2, 0.1])
    assert down.status == "does not hold" and down.test == "one-sided Kendall tau-b test"
    assert down.reason == "y with x decreases (tau = -1.00, opposite one-sided p = 0.0417)"
    assert down.p_value == pytest.approx(1.0) and down.statistic == pytest.approx(-1.0)
    weak = kendall(range(4), [0.1, 0.3, 0.2, 0.25])
    p_weak = sps.kendalltau(range(4), [0.1, 0.3, 0.2, 0.25], alternative="greater").pvalue
    assert weak.status == "not significant" and weak.test == "one-sided Kendall tau-b test"
    assert weak.reason == f"tau = 0.33, p = {p_weak:.3g} >= 0.05 over 4 points"
    assert weak.statistic_name == "tau" and weak.p_value == pytest.approx(p_weak)


def test_kendall_verdict_significance_is_strictly_below_alpha():
    p = sps.kendalltau(range(4), range(4), alternative="greater").pvalue
    assert kendall(range(4), [1, 2, 3, 4], alpha=p).status == "not significant"
    assert kendall(range(4), [4, 3, 2, 1], alpha=p).status == "not significant"
    assert kendall(range(4), [1, 2, 3, 4], alpha=2 * p).status == "holds"
    assert kendall(range(4), [1, 2, 3, 4], alpha=0.01).reason.endswith(">= 0.01 over 4 points")


def test_kendall_verdict_drops_non_finite_points():
    """A NaN or inf in either sequence removes that point, as if it were never measured."""
    x, y = [0, 1, 2, 3, 4, 5], [0.1, 0.2, float("nan"), 0.5, 0.6, 0.9]
    kept = kendall([0, 1, 3, 4, 5], [0.1, 0.2, 0.5, 0.6, 0.9])
    assert kendall(x, y) == kept and kendall(y, x) == kendall(
        [0.1, 0.2, 0.5, 0.6, 0.9], [0, 1, 3, 4, 5]
    )
    assert kendall([0, 1, float("inf"), 3, 4, 5], [0.1, 0.2, 0.4, 0.5, 0.6, 0.9]) == kept
    assert kept.status == "holds" and "over" not in kept.reason


@pytest.mark.parametrize(
    "x, y",
    [
        ([0, 1], [0, 1]),  # two points
        ([1, 1, 1, 1], [0, 1, 2, 3]),  # no variation in x
        ([0, 1, 2, 3], [2, 2, 2, 2]),  # no variation in y
        ([0, 1, 2, float("nan")], [0, 1, float("nan"), 3]),  # two finite points left
    ],
)
def test_kendall_verdict_without_enough_points_or_variation(x, y):
    v = kendall(x, y, what="the removable norm with depth")
    assert v == stats.Verdict(
        "not significant", "one-sided Kendall tau-b test",
        "too few points or no variation to test the removable norm with depth",
    )  # fmt: skip
    assert v.statistic is None and v.p_value is None


def test_kendall_verdict_tests_three_points_and_any_range():
    three = kendall([0, 1, 2], [0, 1, 2])  # the smallest testable case: p = 1/3! = 1/6
    assert three.statistic == pytest.approx(1.0) and three.p_value == pytest.approx(1 / 6)
    unit = kendall([0, 0.25, 0.5, 0.75, 1.0], [1, 2, 3, 4, 5])  # x spans exactly 1
    assert unit.status == "holds" and unit.p_value == pytest.approx(1 / 120)
    flags = kendall([True, False, True, False], [1.0, 0.0, 0.9, 0.1])  # booleans are 0/1
    assert flags.statistic == pytest.approx(sps.kendalltau([1, 0, 1, 0], [1, 0, 0.9, 0.1])[0])
    assert kendall([1.0, 0.0, 0.9, 0.1], [True, False, True, False]).statistic == flags.statistic


# -- paired_bootstrap ---------------------------------------------------------------------------
def test_bootstrap_accepts_boolean_masks_and_is_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.random(300) < 0.9, rng.random(300) < 0.8
    iv = stats.paired_bootstrap([a], [b], seed=4)
    assert iv == stats.paired_bootstrap([a.astype(float)], [b.astype(float)], seed=4)
    assert iv.estimate == pytest.approx(a.mean() - b.mean())
    # continuous differences: every replicate differs, so the interval pins the seed
    x, y = [rng.random(50)], [rng.random(50)]
    assert stats.paired_bootstrap(x, y) == stats.paired_bootstrap(x, y, seed=0)
    assert stats.paired_bootstrap(x, y, seed=0) == stats.paired_bootstrap(x, y, seed=0)
    assert stats.paired_bootstrap(x, y, seed=0) != stats.paired_bootstrap(x, y, seed=1)


def test_bootstrap_method_names_replicates_images_and_seeds():
    one = stats.paired_bootstrap([np.ones(10)], [np.zeros(10)])
    assert one.method == "paired percentile bootstrap (4000 replicates) over 10 test images"
    assert one.level == 0.95 and (one.estimate, one.low, one.high) == (1.0, 1.0, 1.0)
    two = stats.paired_bootstrap([np.ones(10)] * 2, [np.zeros(10)] * 2, n_boot=50, level=0.9)
    assert two.method == (
        "paired percentile bootstrap (50 replicates) over 10 test images and 2 seeds"
    )
    assert two.level == 0.9
    sizes = [np.ones(n) for n in (30, 10, 20)]
    mixed = stats.paired_bootstrap(sizes, sizes, n_boot=10)
    assert mixed.method.endswith("over 10-30 test images and 3 seeds")
    pair = stats.paired_bootstrap(sizes[:2], sizes[:2], n_boot=10)
    assert pair.method.endswith("over 10-30 test images and 2 seeds")


def test_bootstrap_resamples_every_seed_and_every_item():
    # seed-level differences 1, 0, 0: replicates are 0, 1/3, 2/3 or 1 (seeds drawn with
    # replacement); some replicate draws seed 0 more than once
    seeds = stats.paired_bootstrap([np.ones(5)] * 3, [np.ones(5) - (i == 0) for i in range(3)])
    assert seeds.estimate == pytest.approx(1 / 3)
    assert seeds.low == 0.0 and seeds.high == pytest.approx(1.0)
    # two seeds, differences 0 and 1: both are resampled (a replicate may hold one twice)
    two = stats.paired_bootstrap([np.ones(4)] * 2, [np.ones(4), np.zeros(4)])
    assert (two.low, two.estimate, two.high) == (0.0, 0.5, 1.0)
    # one seed, items with differences 1 and 0: item 0 is drawn twice in a quarter of them
    items = stats.paired_bootstrap([np.array([1.0, 1.0])], [np.array([0.0, 1.0])])
    assert (items.low, items.estimate, items.high) == (0.0, 0.5, 1.0)


def test_bootstrap_level_sets_the_percentiles():
    """At level 0.5 the interval is the replicates' quartiles: +-0.674 standard errors."""
    rng = np.random.default_rng(3)
    d = rng.normal(0.0, 1.0, 4000)
    iv = stats.paired_bootstrap([d], [np.zeros_like(d)], n_boot=4000, level=0.5, seed=2)
    se = d.std() / math.sqrt(d.size)
    assert iv.level == 0.5
    assert iv.high - iv.estimate == pytest.approx(0.674 * se, rel=0.08)
    assert iv.estimate - iv.low == pytest.approx(0.674 * se, rel=0.08)


def test_bootstrap_input_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^reference and other need one array per seed, and"):
        stats.paired_bootstrap([np.ones(3)], [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match=r"^seed 1: arrays must be 1-D, non-empty and equally"):
        stats.paired_bootstrap([np.ones(3), np.ones((2, 2))], [np.ones(3), np.ones((2, 2))])
    with pytest.raises(ValueError, match=r"^seed 0: arrays must be 1-D"):
        stats.paired_bootstrap([np.ones(0)], [np.ones(0)])
    single = stats.paired_bootstrap([np.ones(1)], [np.zeros(1)], n_boot=10)  # one image is fine
    assert (single.low, single.high) == (1.0, 1.0)


# -- threshold_verdict --------------------------------------------------------------------------
def test_threshold_verdict_reasons_name_the_side_level_and_threshold():
    above = stats.Interval(0.03, 0.02, 0.04, 0.95, "bootstrap")
    below = stats.Interval(0.003, 0.001, 0.008, 0.9, "bootstrap")
    v = stats.threshold_verdict(above, 0.01, claim="below", test="t")
    assert (v.status, v.reason) == (
        "does not hold", "the 95% interval of the difference lies above 0.01"
    )  # fmt: skip
    v = stats.threshold_verdict(below, 0.01, claim="above", test="t", what="the gain")
    assert (v.status, v.reason) == ("does not hold", "the 90% interval of the gain lies below 0.01")
    v = stats.threshold_verdict(below, 0.01, claim="below", test="t")
    assert (v.status, v.reason) == ("holds", "the 90% interval of the difference lies below 0.01")
    v = stats.threshold_verdict(above, 0.01, claim="above", test="the test")
    assert (v.status, v.reason, v.test) == (
        "holds", "the 95% interval of the difference lies above 0.01", "the test"
    )  # fmt: skip
    v = stats.threshold_verdict(above, 0.025, claim="above", test="t")
    assert (v.status, v.reason) == (
        "not significant", "the 95% interval of the difference contains 0.025"
    )  # fmt: skip
    assert v.interval == above and v.statistic is None and v.p_value is None


# -- spread, seeds_note, formats ----------------------------------------------------------------
def test_spread_values():
    two = stats.spread([0.5, 0.7])
    assert two == stats.Spread(pytest.approx(0.6), pytest.approx(math.sqrt(0.02)), 0.5, 0.7, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one seed is a normal run: no degrees-of-freedom warning
        one = stats.spread([0.25, None, float("inf")])
    assert (one.mean, one.low, one.high, one.n) == (0.25, 0.25, 0.25, 1) and math.isnan(one.std)
    empty = stats.spread([float("nan")])
    assert empty.n == 0
    assert all(math.isnan(v) for v in (empty.mean, empty.std, empty.low, empty.high))
    # float32 inputs are averaged in float64
    x = [np.float32(v) for v in (0.1, 0.2, 0.7, 0.3, 0.9)]
    assert stats.spread(x).mean == np.asarray(x, dtype=np.float64).mean()


def test_seeds_note_texts():
    assert stats.seeds_note(1) == (
        'One seed: verdicts over seeds say "not enough units"; the intervals cover test-set '
        "sampling only, not training variation (rerun with --seeds N to include it); no spread "
        "across seeds is reported."
    )
    assert stats.seeds_note(2) == (
        "2 seeds: numbers are mean ± standard deviation over seeds; verdicts test the per-seed "
        "values over the seeds (the seeds are the independent units); bootstrap intervals "
        "resample test images within one seed only."
    )


def test_spread_format():
    two = stats.spread([0.5, 0.7])
    assert two.format() == "0.6000 ± 0.1414"
    assert two.format(".1f", scale=100, unit="%") == "60.0 ± 14.1%"
    assert two.format("+.2f", scale=-1) == "-0.60 ± 0.14"  # the sign goes on the mean only
    assert two.format("X>6.2f") == "XX0.60 ± XX0.14"  # fill and width apply to both
    assert stats.spread([0.5, 0.7, 0.9]).format(".1f") == "0.7 ± 0.2"
    assert stats.spread([0.5]).format(".2f", scale=2) == "1.00"
    assert stats.spread([]).format() == "nan"


def test_interval_format():
    iv = stats.Interval(0.01, 0.0, 0.02, 0.95, "bootstrap")
    assert iv.format() == "0.01, 95% interval [0.00, 0.02]"
    assert iv.format(".1f", scale=100, unit=" points") == "1.0 points, 95% interval [0.0, 2.0]"
    # a negative scale flips the bounds: still written low to high
    flipped = stats.Interval(0.01, 0.005, 0.02, 0.95, "bootstrap").format(scale=-100)
    assert flipped == "-1.00, 95% interval [-2.00, -0.50]"
    assert stats.Interval(0.5, 0.4, 0.6, 0.9, "b").format(".1f") == "0.5, 90% interval [0.4, 0.6]"
    nan = float("nan")
    assert stats.Interval(nan, nan, nan, 0.95, "b").format() == "nan, 95% interval [nan, nan]"


def test_verdict_as_dict_nests_the_interval():
    iv = stats.Interval(0.01, 0.0, 0.02, 0.95, "bootstrap")
    v = stats.Verdict("holds", "t", "why", interval=iv)
    assert v.as_dict() == {
        "status": "holds", "test": "t", "reason": "why", "statistic": None, "p_value": None,
        "interval": {"estimate": 0.01, "low": 0.0, "high": 0.02, "level": 0.95,
                     "method": "bootstrap"},
        "statistic_name": "statistic", "per_unit": (), "units": None,
    }  # fmt: skip
    assert stats.Verdict(**{**v.as_dict(), "interval": iv}) == v
    assert stats.Verdict(**v.as_dict()) == v  # the interval's dict is read back as an Interval
    assert stats.Verdict("holds", "t", "why").interval is None


# -- all_hold -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parts, expected",
    [
        ([stats.HOLDS], stats.HOLDS),
        ([stats.HOLDS, stats.HOLDS], stats.HOLDS),
        ([stats.HOLDS, stats.NOT_SIGNIFICANT], stats.NOT_SIGNIFICANT),
        ([stats.NOT_SIGNIFICANT, stats.DOES_NOT_HOLD], stats.DOES_NOT_HOLD),
        ([stats.HOLDS, stats.DOES_NOT_HOLD, stats.HOLDS], stats.DOES_NOT_HOLD),
        ([stats.NOT_SIGNIFICANT], stats.NOT_SIGNIFICANT),
    ],
)
def test_a_finding_of_parts_holds_only_when_every_part_holds(parts, expected):
    assert stats.all_hold(parts) == expected
