"""Verdicts, bootstrap intervals, spreads and validation-based level choice (studies/common)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from studies.common import stats
from studies.common.levels import cheapest_within
from studies.common.report import md_table, verdict_text


def correctness(n, accuracy, rng):
    return (rng.random(n) < accuracy).astype(float)


def test_bootstrap_matches_the_normal_approximation_for_one_seed():
    rng = np.random.default_rng(0)
    a = correctness(2000, 0.9, rng)
    b = a.copy()
    flip = rng.choice(2000, 120, replace=False)
    b[flip] = 1 - b[flip]
    iv = stats.paired_bootstrap([a], [b], n_boot=4000, seed=1)
    d = a - b
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert iv.estimate == pytest.approx(d.mean())
    assert iv.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert iv.high == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert "2000 test images" in iv.method and "seeds" not in iv.method


def test_bootstrap_is_deterministic_and_seeds_widen_it():
    rng = np.random.default_rng(2)
    # three seeds whose true drops differ: seed-to-seed variation must widen the interval
    base = [np.ones(400) for _ in range(3)]
    other = [correctness(400, 1 - p, rng) for p in (0.01, 0.05, 0.09)]
    one = [stats.paired_bootstrap(base[:1], other[:1], seed=0) for _ in range(2)]
    assert one[0] == one[1]
    pooled = stats.paired_bootstrap(base, other, seed=0)
    assert pooled.estimate == pytest.approx(np.mean([1 - o.mean() for o in other]))
    assert "and 3 seeds" in pooled.method
    within = stats.paired_bootstrap(
        [np.concatenate(base)], [np.concatenate(other)], seed=0
    )  # the same images as one seed: test-set sampling only
    assert pooled.high - pooled.low > 1.3 * (within.high - within.low)


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one array per seed"):
        stats.paired_bootstrap([], [])
    with pytest.raises(ValueError, match="seed 0"):
        stats.paired_bootstrap([np.ones(3)], [np.ones(4)])


@pytest.mark.parametrize(
    "low, high, claim, status",
    [
        (0.001, 0.008, "below", "holds"),
        (0.005, 0.02, "below", "not significant"),
        (0.011, 0.03, "below", "does not hold"),
        (0.011, 0.03, "above", "holds"),
        (0.001, 0.008, "above", "does not hold"),
        (0.01, 0.02, "above", "not significant"),  # touching the threshold is not significant
    ],
)
def test_threshold_verdicts(low, high, claim, status):
    iv = stats.Interval((low + high) / 2, low, high, 0.95, "bootstrap")
    v = stats.threshold_verdict(iv, 0.01, claim=claim, test="paired bootstrap", what="the drop")
    assert v.status == status and v.interval == iv and "the drop" in v.reason
    assert verdict_text(v).startswith(f"{status} (paired bootstrap: estimate ")


def test_kendall_verdicts_use_one_sided_p_values():
    up = stats.kendall_verdict(range(8), [0.1, 0.2, 0.25, 0.3, 0.5, 0.6, 0.7, 0.9])
    expected = sps.kendalltau(range(8), range(8), alternative="greater")
    assert up.status == "holds" and up.p_value == pytest.approx(expected.pvalue)
    down = stats.kendall_verdict(range(8), [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    assert down.status == "does not hold" and down.statistic == pytest.approx(-1)
    # the quick run's old "holds" at tau 0.33: four layers, weakly ordered, is not significant
    weak = stats.kendall_verdict(range(4), [0.1, 0.3, 0.2, 0.25])
    assert weak.status == "not significant" and weak.p_value > 0.05
    # four perfectly ordered layers are just significant one-sided: p = 1/24
    four = stats.kendall_verdict(range(4), [0.1, 0.2, 0.3, 0.4])
    assert four.status == "holds" and four.p_value == pytest.approx(1 / 24)
    flat = stats.kendall_verdict(range(4), [0.2] * 4)
    assert flat.status == "not significant" and flat.p_value is None
    assert "tau = " in verdict_text(up) and "p = " in verdict_text(up)


def test_verdict_status_is_checked():
    with pytest.raises(ValueError, match="status"):
        stats.Verdict("probably", "test", "why")


def test_spread_ignores_nan_and_formats_seeds():
    s = stats.spread([0.9, 0.8, float("nan"), 1.0])
    assert (s.mean, s.n) == (pytest.approx(0.9), 3)
    assert s.std == pytest.approx(np.std([0.9, 0.8, 1.0], ddof=1))
    assert s.format(".2f") == "0.90 ± 0.10"
    assert stats.spread([0.5]).format(".2f") == "0.50" and stats.spread([]).n == 0
    assert stats.seeds_note(1).startswith("One seed")
    assert stats.seeds_note(3).startswith("3 seeds")


def test_cheapest_within_chooses_on_validation():
    """Validation and test disagree: the choice follows validation, whatever test says."""
    rows = [
        {"g": "a", "chi": 1, "val": 0.70, "test": 0.99, "full": False},
        {"g": "a", "chi": 2, "val": 0.985, "test": 0.50, "full": False},
        {"g": "a", "chi": 8, "val": 0.99, "test": 0.99, "full": True},
        {"g": "b", "chi": 1, "val": 0.10, "test": 0.99, "full": False},
        {"g": "b", "chi": 4, "val": 0.20, "test": 0.99, "full": True},
    ]
    pick = cheapest_within(
        rows, ["g"], "chi", "val", reference=0.99, drop=0.01, always=lambda r: r["full"]
    )
    assert pick[("a",)]["chi"] == 2 and pick[("b",)]["chi"] == 4
    by_test = cheapest_within(rows, ["g"], "chi", "test", reference=0.99, drop=0.01)
    assert by_test[("a",)]["chi"] == 1  # what choosing on test would have done
    assert cheapest_within(rows, ["g"], "chi", "val", reference=0.99, drop=0.01).keys() == {("a",)}


def test_md_table_escapes_and_checks_widths():
    text = md_table(["a|b", "c"], [["x|y", 1]])
    assert text.splitlines()[0] == "| a\\|b | c |" and "x\\|y" in text
    with pytest.raises(ValueError, match="row 0"):
        md_table(["a"], [[1, 2]])
