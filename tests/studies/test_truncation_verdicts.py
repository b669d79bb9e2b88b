"""The truncation study's verdicts on synthetic tables whose verdicts are known by construction.

``findings`` is fed seed results built by hand (a sweep table and a combined-truncation record,
the same structure as ``sweep.csv`` and ``combined.json``), so each verdict and each quoted
number can be derived here independently and compared.
"""

import numpy as np
import pytest

from studies import truncation
from studies.common.training import pack_correct

N = 1000  # test images
LAYERS = ["conv0", "conv1", "conv2", "conv3", "conv4"]


def correct(wrong):
    """A correctness string with the first ``wrong`` of N images wrong."""
    return pack_correct(np.arange(N) >= wrong)


def sweep_rows(lost_at_choice):
    """One cut per layer, chi 1..4; validation accuracy is tolerated (within 1 point) from
    chi = 2 on, so chi = 2 is the choice; its norm lost is ``lost_at_choice[layer]``."""
    rows = []
    for layer, lost in zip(LAYERS, lost_at_choice):
        for chi in range(1, 5):
            val = 0.90 if chi == 1 else 0.995
            kept = {1: 0.2, 2: 1 - lost, 3: 1 - lost / 2, 4: 1.0}[chi]
            rows.append(
                {"layer": layer, "cut": "out|in,kh,kw", "chi": chi, "chi_max": 4,
                 "val_accuracy": val, "test_accuracy": val, "norm_kept": kept}
            )  # fmt: skip
    return rows


def level(test_wrong, kept, **extra):
    return {
        "val_accuracy": 1 - test_wrong / N,
        "test_accuracy": 1 - test_wrong / N,
        "test_correct": correct(test_wrong),
        "layers": {layer: {"norm_kept": kept} for layer in LAYERS},
        **extra,
    }


def seed_result(*, safe_kept, safe_wrong, agg_wrong, retrained_wrong, lost_at_choice, seed=0):
    retrain = [
        {"epoch": 1, "val_accuracy": 0.9, "test_accuracy": 0.9, "test_correct": correct(100)},
        {
            "epoch": 2,
            "val_accuracy": 0.99,
            "test_accuracy": 1 - retrained_wrong / N,
            "test_correct": correct(retrained_wrong),
        },
    ]
    return {
        "seed": seed,
        "layers": LAYERS,
        "rows": sweep_rows(lost_at_choice),
        "combined": {
            "base": {"val_accuracy": 1.0, "test_accuracy": 1.0, "test_correct": correct(0)},
            "safe": level(safe_wrong, safe_kept),
            "aggressive": level(agg_wrong, 0.3, retrain=retrain, retrain_epoch=2),
        },
    }


CFG = truncation.Config(quick=True)  # tolerance 0.01, aggressive_drop 0.05
RISING = [0.15, 0.2, 0.3, 0.4, 0.5]


def statuses(found):
    return [found["verdicts"][k]["status"] for k in "123"]


def test_all_three_findings_hold_when_the_tables_say_so():
    found = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    assert statuses(found) == ["holds", "holds", "holds"]
    numbers = found["per_seed"][0]
    assert numbers["safe_norm_lost"] == pytest.approx(0.4)  # 1 - 0.6 on every layer
    assert numbers["aggressive_norm_lost"] == pytest.approx(0.7)
    assert numbers["removable_norm"] == pytest.approx(RISING)
    assert numbers["aggressive_drop"] == pytest.approx(0.2)
    assert numbers["retrained_drop"] == 0 and numbers["regained"] == pytest.approx(1.0)
    assert numbers["pairs"] == 5 and numbers["pairs_much_norm"] == 5
    # Kendall tau of a strictly rising sequence of 5: tau = 1, p = 1/5! (exact test)
    assert found["verdicts"]["2"]["statistic"] == pytest.approx(1.0)
    assert found["verdicts"]["2"]["p_value"] == pytest.approx(1 / 120)


def test_finding_1_needs_much_norm_lost_not_kept():
    # the safe plan costs no accuracy but removes only 5% of the norm (keeps 95%): not "much"
    found = truncation.findings(
        [seed_result(safe_kept=0.95, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    assert found["per_seed"][0]["safe_norm_lost"] == pytest.approx(0.05)
    assert statuses(found)[0] == "does not hold"
    assert "5.0% of the kernel norm" in found["verdicts"]["1"]["reason"]


def test_finding_1_does_not_hold_when_the_safe_plan_loses_accuracy():
    found = truncation.findings(
        [seed_result(safe_kept=0.5, safe_wrong=60, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    iv = found["intervals"]["safe_drop"]
    assert iv["estimate"] == pytest.approx(0.06) and iv["low"] > CFG.tolerance
    assert statuses(found)[0] == "does not hold"


def test_finding_2_follows_the_direction_of_the_removable_norm():
    falling = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=RISING[::-1])],
        CFG,
    )  # fmt: skip
    assert statuses(falling)[1] == "does not hold"
    flat = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=[0.3, 0.1, 0.4, 0.2, 0.3])],
        CFG,
    )  # fmt: skip
    assert statuses(flat)[1] == "not significant"


def test_finding_3_compares_the_retrained_drop_with_the_tolerance():
    # re-training leaves a 3-point drop: above the 1-point tolerance (though below the 5-point
    # aggressive threshold), so re-training did not recover
    found = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=30,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    iv = found["intervals"]["retrained_drop"]
    assert iv["estimate"] == pytest.approx(0.03) and CFG.tolerance < iv["low"]
    assert iv["high"] < CFG.aggressive_drop
    assert statuses(found)[2] == "does not hold"
    assert found["per_seed"][0]["regained"] == pytest.approx((0.97 - 0.8) / 0.2)


def test_finding_3_is_not_significant_when_the_aggressive_plan_costs_nothing():
    found = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=0, retrained_wrong=0,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    assert statuses(found)[2] == "not significant"


def test_verdicts_pool_the_seeds():
    results = [
        seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                    lost_at_choice=RISING, seed=s)
        for s in range(3)
    ]  # fmt: skip
    found = truncation.findings(results, CFG)
    assert found["seeds"] == [0, 1, 2] and statuses(found) == ["holds", "holds", "holds"]
    # finding 2 pools (depth, removable norm) over seeds: 15 points, ties within each depth
    assert found["verdicts"]["2"]["p_value"] < 1e-3
