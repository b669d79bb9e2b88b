"""Tests over independent units (studies/common/units.py) on hand-built tables.

The issue's must-be-true: 2 units never give "holds"; a near-chance comparison gives "no
verdict"; an equivalence claim inside the margin holds and one outside does not; per-seed
Kendall tests are combined as a hand computation says. Every p-value and interval is derived
here independently (by enumeration, with scipy or by hand) and compared.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from studies.common import stats, units
from studies.common.report import verdict_text

finite = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


def brute_sign_flip(values, alternative):
    """The p-value by listing all 2**n sign patterns."""
    observed = sum(values)
    sums = [
        sum(s * v for s, v in zip(signs, values))
        for signs in itertools.product((1, -1), repeat=len(values))
    ]
    if alternative == "greater":
        return sum(s >= observed - 1e-9 for s in sums) / len(sums)
    return sum(s <= observed + 1e-9 for s in sums) / len(sums)


# -- sign-flip test, t interval, minimal units ----------------------------------------------------
hundredths = st.integers(-100, 100).map(lambda k: k / 100)  # distinct sums differ by >= 0.01


@given(st.lists(hundredths, min_size=1, max_size=8), st.sampled_from(["greater", "less"]))
def test_sign_flip_p_is_the_share_of_sign_patterns(values, alternative):
    assert units.sign_flip_p(values, alternative) == pytest.approx(
        brute_sign_flip(values, alternative)
    )


def test_sign_flip_p_values_by_hand():
    assert units.sign_flip_p([1.0, 2.0, 3.0], "greater") == 1 / 8
    assert units.sign_flip_p([1.0, 2.0, 3.0], "less") == 1.0
    assert units.sign_flip_p([-1.0, -2.0, -3.0], "less") == 1 / 8
    # observed 2: the patterns summing to 6, 4 and 2 reach it
    assert units.sign_flip_p([1.0, -2.0, 3.0], "greater") == 3 / 8
    assert units.sign_flip_p([1.0, -2.0, 3.0], "less") == 6 / 8
    # a zero changes no sum: both of its signs count (2 of 4 patterns reach 1)
    assert units.sign_flip_p([0.0, 1.0], "greater") == 0.5
    assert units.sign_flip_p([0.0, 0.0], "greater") == 1.0
    # sums equal up to rounding count as equal: 0.1 + 0.2 vs 0.3
    # (observed 0: the patterns summing to 0.6, 0.4, 0.2 and twice 0 reach it)
    assert units.sign_flip_p([0.1, 0.2, -0.3], "greater") == 5 / 8
    assert units.sign_flip_p([0.3, -0.1, -0.2], "less") == 5 / 8
    big = [1e9 + 0.1, 1e9 + 0.2, -(2e9 + 0.3)]  # the slack scales with the values
    assert units.sign_flip_p(big, "greater") == 5 / 8
    assert units.sign_flip_p([-v for v in big], "less") == 5 / 8
    five = units.sign_flip_p([0.5] * 5, "greater")
    assert five == 1 / 32 and units.sign_flip_p([0.5] * 20, "greater") == 2.0**-20


def test_sign_flip_p_refuses_bad_input():
    with pytest.raises(ValueError, match="sign_flip_p: need a non-empty 1-D sequence"):
        units.sign_flip_p([], "greater")
    with pytest.raises(ValueError, match="finite"):
        units.sign_flip_p([1.0, float("nan")], "greater")
    with pytest.raises(ValueError, match="alternative must be 'greater' or 'less', got 'two'"):
        units.sign_flip_p([1.0], "two")
    with pytest.raises(ValueError, match="at most 20 units, got 21"):
        units.sign_flip_p([1.0] * 21, "greater")


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_t_interval_matches_scipy(level):
    x = [0.01, 0.03, -0.02, 0.05]
    iv = units.t_interval(x, level)
    low, high = sps.t.interval(level, 3, loc=np.mean(x), scale=sps.sem(x))
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((np.mean(x), low, high))
    assert iv.level == level and iv.method == "t interval over 4 seeds (3 degrees of freedom)"
    one = units.t_interval([0.2], unit="run")
    assert one.estimate == 0.2 and math.isnan(one.low) and math.isnan(one.high)
    assert one.method == "t interval over 1 runs (0 degrees of freedom)"
    flat = units.t_interval([0.1, 0.1, 0.1])
    assert (flat.low, flat.high) == pytest.approx((0.1, 0.1))


def test_min_units_is_the_first_n_whose_smallest_p_is_below_alpha():
    for alpha in (0.05, 0.01, 0.1, 0.2, 0.03):
        n = units.min_units(alpha)
        assert 2.0**-n < alpha <= 2.0 ** -(n - 1)
    assert units.min_units(0.0625) == 5  # 1/16 itself is not below 1/16
    assert units.min_units() == 5
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="alpha must lie in"):
            units.min_units(bad)


# -- unit_verdict ---------------------------------------------------------------------------------
@given(st.lists(finite, min_size=1, max_size=4), finite, st.sampled_from(["above", "below"]))
def test_fewer_than_five_units_never_give_a_verdict(values, threshold, claim):
    v = units.unit_verdict(values, threshold, claim=claim, what="d")
    assert v.status == "not enough units" and v.units == len(values)
    assert f"{len(values)} seed(s): an exact one-sided sign-flip test needs at least 5" in v.reason


@given(st.tuples(finite, finite), finite)
def test_two_units_never_hold(pair, threshold):
    """The must-be-true: 2 units never give "holds", however far from the threshold."""
    for claim in ("above", "below"):
        assert units.unit_verdict(pair, threshold, claim=claim, what="d").status != "holds"
        far = [threshold + 10 + pair[0], threshold + 10 + pair[1]]
        assert units.unit_verdict(far, threshold, claim=claim, what="d").status != "holds"
    eq = units.unit_equivalence_verdict(pair, 5.0, what="d")
    assert eq.status == "not enough units"


def test_the_issues_two_unit_example_is_not_enough_units():
    """hybrid --quick finding 1 held on 2 units with t interval [-19.5, +26.4] points."""
    v = units.unit_verdict([-0.02, 0.089], 0.0, claim="above", what="hybrid - TT-only")
    assert v.status == "not enough units" and v.p_value == 0.5  # 2 of 4 sign patterns
    assert v.interval.low < 0 < v.interval.high


def test_unit_verdict_statuses_and_texts():
    up = [0.01, 0.012, 0.008, 0.011, 0.009]
    v = units.unit_verdict(up, 0.0, claim="above", what="the gain")
    iv = units.t_interval(up, 0.95)
    assert v == stats.Verdict(
        "holds",
        "exact one-sided sign-flip test over seeds, with the 95% t interval over seeds",
        "the gain lies above 0 over 5 seeds (sign-flip p = 0.0312, 95% t interval "
        f"[{iv.low:.4f}, {iv.high:.4f}])",
        statistic=pytest.approx(0.01), p_value=1 / 32, interval=iv,
        statistic_name="mean over seeds", units=5,
    )  # fmt: skip
    down = units.unit_verdict(up, 0.0, claim="below", what="the gain")
    assert down.status == "does not hold" and down.p_value == 1.0
    assert down.reason.startswith(
        "the gain lies above 0 over 5 seeds (opposite one-sided sign-flip p = 0.0312, 95% t"
    )
    # below the threshold 0.02: holds for "below", does not hold for "above"
    assert units.unit_verdict(up, 0.02, claim="below", what="d").status == "holds"
    against = units.unit_verdict(up, 0.02, claim="above", what="d")
    assert against.status == "does not hold" and against.reason.startswith("d lies below 0.02")
    # mixed signs: not significant
    mixed = units.unit_verdict([0.01, -0.01, 0.02, -0.02, 0.005], 0.0, claim="above", what="d")
    assert mixed.status == "not significant"
    assert mixed.reason.startswith("d is not significantly above 0 over 5 seeds (sign-flip p = ")


def test_unit_verdict_needs_the_t_interval_to_agree():
    """All five positive (sign-flip p = 1/32) but one large negative... no: one tiny positive
    and a wide spread: the sign-flip test alone would say holds, the t interval straddles 0."""
    x = [0.001, 0.002, 0.001, 0.5, 0.001]
    assert units.sign_flip_p(x, "greater") == 1 / 32
    assert units.t_interval(x).low < 0
    assert units.unit_verdict(x, 0.0, claim="above", what="d").status == "not significant"
    neg = [-v for v in x]
    assert units.unit_verdict(neg, 0.0, claim="above", what="d").status == "not significant"
    assert units.unit_verdict(neg, 0.0, claim="below", what="d").status == "not significant"
    # a t interval on the claimed side but the sign-flip test not below alpha (one zero)
    z = [0.01, 0.01, 0.01, 0.01, 0.0]
    assert units.sign_flip_p(z, "greater") == 2 / 32 and units.t_interval(z).low > 0
    assert units.unit_verdict(z, 0.0, claim="above", what="d").status == "not significant"
    assert units.unit_verdict([-v for v in z], 0.0, claim="above", what="d").status == (
        "not significant"
    )


def test_unit_verdict_level_unit_and_errors():
    x = [0.01, 0.012, 0.008, 0.011, 0.009, 0.01, 0.01]
    v = units.unit_verdict(x, 0.0, claim="above", what="d", unit="run", alpha=0.01)
    assert v.status == "holds" and v.interval.level == pytest.approx(0.99)
    assert v.test == "exact one-sided sign-flip test over runs, with the 99% t interval over runs"
    assert "over 7 runs" in v.reason and v.statistic_name == "mean over runs"
    six = units.unit_verdict(x[:6], 0.0, claim="above", what="d", unit="run", alpha=0.01)
    assert six.status == "not enough units" and six.reason.startswith("6 run(s): ")
    assert "at least 7 to reach p < 0.01" in six.reason
    with pytest.raises(ValueError, match="claim must be 'above' or 'below', got 'over'"):
        units.unit_verdict(x, 0.0, claim="over", what="d")
    with pytest.raises(ValueError, match="the drop: need a non-empty"):
        units.unit_verdict([], 0.0, claim="above", what="the drop")


def test_paired_unit_verdict_tests_seed_means_and_reports_per_seed_bootstraps():
    base = [np.ones(100)] * 5
    lost = (1, 2, 1, 0, 1)
    cut = [np.r_[np.ones(100 - k), np.zeros(k)] for k in lost]
    v = units.paired_unit_verdict(base, cut, 0.05, claim="below", what="the drop", seed=7)
    expected = units.unit_verdict(
        [k / 100 for k in lost], 0.05, claim="below", what="the drop",
        per_unit=[stats.paired_bootstrap([a], [b], seed=7 + s)
                  for s, (a, b) in enumerate(zip(base, cut))],
    )  # fmt: skip
    assert v == expected and v.status == "holds" and v.units == 5
    assert [iv.estimate for iv in v.per_unit] == pytest.approx([k / 100 for k in lost])
    assert (
        v.per_unit[1].method == "paired percentile bootstrap (4000 replicates) over 100 test images"
    )
    # continuous per-image values: each seed's interval depends on its own bootstrap seed
    rng = np.random.default_rng(0)
    a, b = [rng.random(50) for _ in range(5)], [rng.random(50) for _ in range(5)]
    per = units.paired_unit_verdict(a, b, 0.0, claim="above", what="d", seed=3).per_unit
    assert per == tuple(
        stats.paired_bootstrap([x], [y], seed=3 + s) for s, (x, y) in enumerate(zip(a, b))
    )
    assert per[1] != stats.paired_bootstrap([a[1]], [b[1]], seed=3)
    assert per[2] != stats.paired_bootstrap([a[2]], [b[2]], seed=1)
    two = units.paired_unit_verdict(base[:2], cut[:2], 0.05, claim="below", what="the drop")
    assert two.status == "not enough units"
    with pytest.raises(ValueError, match="one array per seed"):
        units.paired_unit_verdict(base, cut[:3], 0.05, claim="below", what="d")
    with pytest.raises(ValueError, match="one array per seed"):
        units.paired_unit_verdict([], [], 0.05, claim="below", what="d")


# -- equivalence ----------------------------------------------------------------------------------
def iv(low, high, level=0.9):
    return stats.Interval((low + high) / 2, low, high, level, "m")


@pytest.mark.parametrize(
    "low, high, side, status",
    [
        (-0.02, 0.03, "both", "holds"),  # inside the margin
        (-0.06, 0.03, "both", "not significant"),  # crosses -margin
        (-0.02, 0.07, "both", "not significant"),  # crosses +margin
        (0.06, 0.09, "both", "does not hold"),  # entirely above +margin
        (-0.09, -0.06, "both", "does not hold"),  # entirely below -margin
        (-0.05, 0.03, "both", "not significant"),  # touching the margin is not inside
        (0.05, 0.09, "both", "not significant"),  # touching it is not outside either
        (-0.02, 0.05, "both", "not significant"),
        (-0.09, -0.05, "both", "not significant"),
        (-0.02, 0.05, "upper", "not significant"),
        (-0.9, 0.03, "upper", "holds"),  # "no better": only the upper bound matters
        (0.06, 0.09, "upper", "does not hold"),
        (-0.09, -0.06, "upper", "holds"),
        (-0.02, 0.07, "upper", "not significant"),
        (-0.03, 0.9, "lower", "holds"),  # "no worse": only the lower bound matters
        (-0.09, -0.06, "lower", "does not hold"),
        (0.06, 0.09, "lower", "holds"),
        (-0.06, 0.03, "lower", "not significant"),
    ],
)
def test_equivalence_verdict_against_the_margin(low, high, side, status):
    v = units.equivalence_verdict(iv(low, high), 0.05, test="bootstrap", what="d", side=side)
    assert v.status == status and v.interval == iv(low, high)
    assert v.test == "bootstrap, equivalence margin ±0.05"


def test_equivalence_verdict_texts_and_errors():
    inside = units.equivalence_verdict(iv(-0.02, 0.03), 0.05, test="t", what="tau(a) - tau(b)")
    assert inside.reason == (
        "the 90% interval of tau(a) - tau(b) lies within ±0.05 (the equivalence margin)"
    )
    out = units.equivalence_verdict(iv(0.06, 0.09, 0.95), 0.05, test="t", side="upper")
    assert out.reason == (
        "the 95% interval of the difference lies entirely outside below +0.05 "
        "(the equivalence margin)"
    )
    unsure = units.equivalence_verdict(iv(-0.06, 0.03), 0.05, test="t", side="lower")
    assert unsure.reason == (
        "the 90% interval of the difference is not entirely above -0.05 (the equivalence margin)"
    )
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="margin must be positive"):
            units.equivalence_verdict(iv(0, 0.01), bad, test="t")
    with pytest.raises(ValueError, match="side must be 'both', 'upper' or 'lower', got 'up'"):
        units.equivalence_verdict(iv(0, 0.01), 0.05, test="t", side="up")


def test_unit_equivalence_verdict_uses_the_tost_t_interval():
    x = [0.01, -0.01, 0.0, 0.005, -0.005]
    v = units.unit_equivalence_verdict(x, 0.05, what="d")
    t90 = units.t_interval(x, 0.9)
    assert v.status == "holds" and v.interval == t90 and v.units == 5
    assert v.statistic == pytest.approx(0.0) and v.test == (
        "TOST over seeds (t interval), equivalence margin ±0.05"
    )
    far = units.unit_equivalence_verdict([v + 0.2 for v in x], 0.05, what="d", side="upper")
    assert far.status == "does not hold"
    few = units.unit_equivalence_verdict(x[:4], 0.05, what="d", unit="run", per_unit=[iv(0, 1)])
    assert few.status == "not enough units" and few.per_unit == (iv(0, 1),)
    assert few.reason == (
        "4 run(s): each one-sided test needs at least 5 (the 90% interval of d lies within "
        "±0.05 (the equivalence margin))"
    )
    strict = units.unit_equivalence_verdict(x * 2, 0.05, what="d", alpha=0.01)
    assert strict.interval == units.t_interval(x * 2, 0.98) and strict.status == "holds"
    assert units.unit_equivalence_verdict(x[:6], 0.05, what="d", alpha=0.01).status == (
        "not enough units"
    )


# -- Kendall within seeds, combined ----------------------------------------------------------------
def test_stouffer_by_hand():
    z = sps.norm.ppf(1 - 0.05)  # 1.645
    assert units.stouffer([0.05, 0.05]) == pytest.approx(1 - sps.norm.cdf(2 * z / math.sqrt(2)))
    assert units.stouffer([0.05, 0.05]) == pytest.approx(0.01, abs=2e-4)
    assert units.stouffer([0.3]) == pytest.approx(0.3)
    assert units.stouffer([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert units.stouffer([0.01, 0.99]) == pytest.approx(0.5)
    assert units.stouffer([1.0, 0.5]) == 1.0
    with pytest.raises(ValueError, match=r"stouffer: p-values must lie in \(0, 1\]"):
        units.stouffer([0.0, 0.5])
    with pytest.raises(ValueError, match="p-values must lie"):
        units.stouffer([0.5, 1.5])


def test_per_seed_kendall_combined_like_a_hand_computation():
    """Seed 0: 4 layers in order (tau 1, exact p 1/24); seed 1: one swap (tau 2/3, p 4/24);
    Stouffer: (z(1/24) + z(1/6)) / sqrt(2)."""
    seeds = [([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4]), ([0, 1, 2, 3], [0.1, 0.3, 0.2, 0.4])]
    v = units.kendall_units_verdict(seeds, what="the norm with depth")
    z = (sps.norm.isf(1 / 24) + sps.norm.isf(4 / 24)) / math.sqrt(2)
    assert v.p_value == pytest.approx(sps.norm.sf(z)) and v.status == "holds"
    assert v.statistic == pytest.approx((1 + 2 / 3) / 2) and v.units == 2
    assert v.statistic_name == "mean tau over seeds" and v.interval is None
    assert v.test == (
        "one-sided Kendall tau-b test within each seed, combined across seeds by Stouffer's z "
        "(equal weights)"
    )
    p = sps.norm.sf(z)
    assert v.reason == (
        f"the norm with depth increases within seeds (tau per seed: 1.00, 0.67; combined p = "
        f"{p:.3g})"
    )
    # the opposite trend: does not hold, with the combined p of a decrease in the reason
    down = units.kendall_units_verdict([(x, [-v for v in y]) for x, y in seeds])
    # p of an increase: seed 0 reversed has p = 1 (z = -inf), so the combined p is 1
    assert down.status == "does not hold" and down.p_value == 1.0
    assert down.reason.startswith("y with x decreases within seeds (tau per seed: -1.00, -0.67")
    assert down.reason.endswith(f"combined p = {p:.3g})")


def test_points_of_different_seeds_are_never_compared():
    """Pooled, seed 1's points (all higher) would make a rising trend; within seeds there is
    none: each seed is flat-ish in opposite directions."""
    seeds = [
        ([0, 1, 2, 3, 4], [0.5, 0.4, 0.6, 0.3, 0.45]),
        ([0, 1, 2, 3, 4], [0.9, 1.0, 0.8, 0.95, 0.85]),
    ]
    v = units.kendall_units_verdict(seeds)
    ups = [sps.kendalltau(x, y, alternative="greater").pvalue for x, y in seeds]
    assert v.p_value == pytest.approx(units.stouffer(ups)) and v.status == "not significant"
    assert v.reason.startswith("y with x shows no significant trend within seeds")
    pooled = sps.kendalltau(
        [0, 1, 2, 3, 4] * 2, [0.5, 0.4, 0.6, 0.3, 0.45, 0.9, 1.0, 0.8, 0.95, 0.85]
    )
    assert v.statistic != pytest.approx(pooled.statistic)


def test_kendall_units_verdict_needs_testable_units():
    three = units.kendall_units_verdict([([0, 1, 2], [1, 2, 3])])  # best possible p = 1/6
    assert three.status == "not enough units" and three.units == 1 and three.p_value is None
    assert three.statistic == pytest.approx(1.0)
    assert three.reason == (
        "1 testable seed(s) (3 or more points with variation): even perfect orders could not "
        "reach p < 0.05 combined"
    )
    # two seeds of three points: (z(1/6) * 2) / sqrt(2) = 1.37, p = 0.085: still not enough
    assert units.kendall_units_verdict([([0, 1, 2], [1, 2, 3])] * 2).status == "not enough units"
    # three seeds of three points: z = 0.967 * sqrt(3) = 1.675, p = 0.047: enough
    assert units.kendall_units_verdict([([0, 1, 2], [1, 2, 3])] * 3).status == "holds"
    untestable = [([0, 1], [1, 2]), ([0, 0, 0], [1, 2, 3]), ([0, 1, 2], [5, 5, 5]),
                  ([0, 1, 2, float("nan")], [1, 2, float("nan"), 4])]  # fmt: skip
    none = units.kendall_units_verdict(untestable, unit="run")
    assert none.status == "not enough units" and none.units == 0 and none.statistic is None
    assert none.reason.startswith("0 testable run(s)")
    # an untestable seed is left out, the others still decide
    four = ([0, 1, 2, 3], [1, 2, 3, 4])
    mixed = units.kendall_units_verdict([four, ([0, 1], [1, 2]), four])
    assert mixed.units == 2 and mixed.p_value == pytest.approx(units.stouffer([1 / 24, 1 / 24]))
    with pytest.raises(ValueError, match="x and y of a seed differ in shape"):
        units.kendall_units_verdict([([0, 1, 2], [1, 2])])
    assert units.kendall_units_verdict([four], alpha=0.04).status == "not enough units"


@given(st.lists(st.permutations(range(5)), min_size=1, max_size=4))
def test_kendall_units_verdict_matches_stouffer_of_scipy(orders):
    seeds = [(list(range(5)), list(o)) for o in orders]
    v = units.kendall_units_verdict(seeds)
    ups = [sps.kendalltau(x, y, alternative="greater").pvalue for x, y in seeds]
    downs = [sps.kendalltau(x, y, alternative="less").pvalue for x, y in seeds]
    assert v.p_value == pytest.approx(units.stouffer(ups))
    expected = (
        "holds" if units.stouffer(ups) < 0.05
        else "does not hold" if units.stouffer(downs) < 0.05
        else "not significant"
    )  # fmt: skip
    assert v.status == expected


# -- near chance, quick runs ----------------------------------------------------------------------
def test_near_chance_comparisons_give_no_verdict():
    v = stats.Verdict("holds", "sign-flip", "the gain lies above 0", interval=iv(0.01, 0.02))
    w = units.withhold_near_chance(v, {"hybrid": 0.13, "TT-only": 0.9, "HT-only": 0.05}, 0.1)
    assert w.status == "no verdict" and w.interval == v.interval and w.test == v.test
    assert w.reason == (
        "compared models within 5 points of chance (10%): hybrid 13.0%, HT-only 5.0% "
        "(the test alone: holds, the gain lies above 0)"
    )
    assert verdict_text(w).startswith("no verdict: compared models within 5 points of chance")
    # exactly at the margin is near; just above is not
    assert units.withhold_near_chance(v, {"a": 0.15}, 0.1).status == "no verdict"
    assert units.withhold_near_chance(v, {"a": 0.1501}, 0.1) is v
    assert units.withhold_near_chance(v, {"a": 0.02}, 0.01, margin=0.01).status == "no verdict"
    assert units.withhold_near_chance(v, {"a": 0.021}, 0.01, margin=0.01) is v
    assert (
        "within 1 points of chance (1%)"
        in units.withhold_near_chance(v, {"a": 0.02}, 0.01, margin=0.01).reason
    )
    assert units.withhold_near_chance(v, {}, 0.1) is v
    with pytest.raises(ValueError, match="margin must be non-negative"):
        units.withhold_near_chance(v, {"a": 0.5}, 0.1, margin=-0.01)


def test_chance_levels_and_evidence_note():
    assert units.chance_level("digits") == 0.1 and units.chance_level("cifar100") == 0.01
    assert units.chance_level("fashion_mnist") == 0.1 and units.chance_level("cifar10") == 0.1
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; chance is known for digits"):
        units.chance_level("svhn")
    assert units.evidence_note(True) == (
        "CI size, not evidence: this --quick run (small models, few epochs and seeds) checks "
        "that the study runs end to end; its verdicts are not evidence for or against the paper."
    )
    assert units.evidence_note(False) is None


# -- statuses and verdicts read back --------------------------------------------------------------
@pytest.mark.parametrize(
    "parts, expected",
    [
        (["holds", "not enough units"], "not enough units"),
        (["not significant", "not enough units"], "not enough units"),
        (["not enough units", "no verdict"], "no verdict"),
        (["holds", "no verdict"], "no verdict"),
        (["no verdict", "does not hold"], "does not hold"),
        (["not enough units", "does not hold"], "does not hold"),
        (["holds", "holds"], "holds"),
    ],
)
def test_a_finding_with_an_untested_part_does_not_hold(parts, expected):
    assert stats.all_hold(parts) == expected


def test_verdicts_read_back_from_json_dicts():
    v = units.paired_unit_verdict(
        [np.ones(20)] * 5, [np.r_[np.ones(19), 0.0]] * 5, 0.1, claim="below", what="d"
    )
    back = stats.Verdict(**v.as_dict())
    assert back == v and isinstance(back.interval, stats.Interval)
    assert all(isinstance(x, stats.Interval) for x in back.per_unit) and len(back.per_unit) == 5
    listed = {**v.as_dict(), "per_unit": [x for x in v.as_dict()["per_unit"]]}
    assert stats.Verdict(**listed) == v
    assert "5 units" in verdict_text(v) and verdict_text(v).startswith("holds (exact one-sided")


def test_one_seed_intervals_survive_strict_json():
    """NaN bounds (a t interval over one seed) are written as null and read back as NaN."""
    from studies.common.runner import to_json

    v = units.unit_verdict([0.02], 0.0, claim="above", what="d")
    assert math.isnan(v.interval.low) and math.isnan(v.interval.high)
    stored = to_json(v.as_dict())
    assert stored["interval"]["low"] is None and stored["interval"]["estimate"] == 0.02
    back = stats.Verdict(**stored)
    assert math.isnan(back.interval.low) and math.isnan(back.interval.high)
    assert back.interval.estimate == 0.02 and back.status == "not enough units"
    assert "95% interval [nan, nan] points" in verdict_text(back)
    nan = stats.Interval(None, 0.1, None, 0.9, "m")
    assert math.isnan(nan.estimate) and nan.low == 0.1 and math.isnan(nan.high)


# -- boundaries and texts, pinned -----------------------------------------------------------------
def test_side_needs_the_whole_interval_strictly_on_one_side():
    assert units._side(iv(0.0, 1.0), 0.0) is None and units._side(iv(-1.0, 0.0), 0.0) is None
    assert units._side(iv(0.01, 1.0), 0.0) == "above"
    assert units._side(iv(-1.0, -0.01), 0.0) == "below"


def test_inputs_are_converted_to_float():
    """Fractions (or other numbers numpy keeps as objects) are read as floats."""
    from fractions import Fraction

    thirds = [Fraction(1, 3), Fraction(2, 3), Fraction(1, 1)]
    assert units.t_interval(thirds).estimate == pytest.approx(2 / 3)
    assert units.sign_flip_p(thirds, "greater") == 1 / 8
    v = units.kendall_units_verdict([(thirds + [Fraction(4, 3)], [1, 2, 3, 4])] * 2)
    assert v.statistic == pytest.approx(1.0)
    w = units.kendall_units_verdict([([1, 2, 3, 4], thirds + [Fraction(4, 3)])] * 2)
    assert w.statistic == pytest.approx(1.0)


def test_error_messages_name_the_function_or_quantity():
    with pytest.raises(ValueError, match=r"^stouffer: need a non-empty"):
        units.stouffer([])
    with pytest.raises(ValueError, match=r"^t_interval: need a non-empty"):
        units.t_interval([])
    with pytest.raises(ValueError, match=r"^the d: need a non-empty"):
        units.unit_equivalence_verdict([], 0.05, what="the d")
    with pytest.raises(ValueError, match=r"^reference and other need one array per seed, and"):
        units.paired_unit_verdict([np.ones(2)], [], 0.0, claim="above", what="d")
    with pytest.raises(ValueError, match=r"chance is known for digits, mnist5k, mnist, fashion"):
        units.chance_level("svhn")


def test_significance_is_strictly_below_alpha():
    # six units, one zero: p = 2/64 = 1/32 exactly; the t interval lies above 0
    x = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert units.sign_flip_p(x, "greater") == 1 / 32 and units.min_units(1 / 32) == 6
    assert units.unit_verdict(x, 0.0, claim="above", what="d", alpha=1 / 32).status == (
        "not significant"
    )
    neg = [-v for v in x]
    assert units.unit_verdict(neg, 0.0, claim="above", what="d", alpha=1 / 32).status == (
        "not significant"
    )
    assert units.unit_verdict(x, 0.0, claim="above", what="d", alpha=0.04).status == "holds"
    # Kendall: two seeds, p = stouffer(1/24, 1/6) exactly at alpha
    seeds = [([0, 1, 2, 3], [1, 2, 3, 4]), ([0, 1, 2, 3], [1, 3, 2, 4])]
    p = units.kendall_units_verdict(seeds).p_value
    assert units.kendall_units_verdict(seeds, alpha=p).status == "not significant"
    down = [(x, [-v for v in y]) for x, y in seeds]
    assert units.kendall_units_verdict(down, alpha=p).status == "not significant"
    assert units.kendall_units_verdict(down, alpha=p * 1.001).status == "does not hold"
    # one seed of four points: its best p is 1/24; at alpha = 1/24 it cannot decide
    four = ([0, 1, 2, 3], [1, 2, 3, 4])
    assert units.kendall_units_verdict([four], alpha=1 / 24).status == "not enough units"


def test_not_enough_units_verdicts_carry_their_fields():
    three = units.kendall_units_verdict([([0, 1, 2], [1, 2, 3])], unit="run")
    assert three.test == (
        "one-sided Kendall tau-b test within each run, combined across runs by Stouffer's z "
        "(equal weights)"
    )
    assert three.statistic_name == "mean tau over runs" and three.interval is None
    assert three.p_value is None and three.per_unit == ()


def test_arguments_are_passed_through():
    rng = np.random.default_rng(4)
    a, b = [rng.random(40) for _ in range(6)], [rng.random(40) for _ in range(6)]
    default = units.paired_unit_verdict(a, b, 0.0, claim="above", what="d")
    assert default == units.paired_unit_verdict(a, b, 0.0, claim="above", what="d", seed=0)
    # alpha reaches the test: 6 units are enough at 0.05, not at 0.01
    big = [x + 1 for x in a]
    assert units.paired_unit_verdict(big, b, 0.0, claim="above", what="d").status == "holds"
    strict = units.paired_unit_verdict(big, b, 0.0, claim="above", what="d", alpha=0.01)
    assert strict.status == "not enough units" and strict.interval.level == pytest.approx(0.99)
    # the unit name reaches the t interval's method
    v = units.unit_verdict([0.1] * 5, 0.0, claim="above", what="d", unit="run")
    assert v.interval.method == "t interval over 5 runs (4 degrees of freedom)"
    e = units.unit_equivalence_verdict([0.01] * 5, 0.05, what="d", unit="run")
    assert e.interval.method == "t interval over 5 runs (4 degrees of freedom)"
    # side reaches the equivalence test: far below -margin is "no better" (upper) but not
    # equivalent (both)
    low = [-0.2, -0.21, -0.19, -0.2, -0.2]
    assert units.unit_equivalence_verdict(low, 0.05, what="d", side="upper").status == "holds"
    assert units.unit_equivalence_verdict(low, 0.05, what="d").status == "does not hold"


def test_sign_flip_slack_is_absolute_below_one():
    """Sums within 1e-9 (or 1e-9 of the total size above 1) count as equal."""
    assert units.sign_flip_p([7.5e-10], "greater") == 0.5  # -7.5e-10 is 1.5e-9 away: not equal
    assert units.sign_flip_p([4e-10], "greater") == 1.0  # 8e-10 apart: equal


def test_a_zero_margin_withholds_only_models_at_or_below_chance():
    v = stats.Verdict("holds", "t", "r")
    assert units.withhold_near_chance(v, {"a": 0.1}, 0.1, margin=0.0).status == "no verdict"
    assert units.withhold_near_chance(v, {"a": 0.11}, 0.1, margin=0.0) is v
