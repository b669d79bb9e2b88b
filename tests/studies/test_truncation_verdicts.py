"""The truncation study's verdicts on synthetic tables whose verdicts are known by construction.

``findings`` is fed seed results built by hand (a sweep table and a combined-truncation record,
the same structure as ``sweep.csv`` and ``combined.json``), so each verdict and each quoted
number can be derived here independently and compared.
"""

import math
import warnings
from dataclasses import asdict

import numpy as np
import pytest

from studies import truncation
from studies.common import stats, units
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


def five(**kw):
    """Five seeds with the same tables: the fewest for which the sign-flip test can decide."""
    return [seed_result(seed=s, **kw) for s in range(5)]


def test_all_three_findings_hold_when_the_tables_say_so():
    found = truncation.findings(
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0, lost_at_choice=RISING),
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
    # Kendall tau of a strictly rising sequence of 5: tau = 1, p = 1/5! (exact test) per seed,
    # combined over the five seeds by Stouffer's z
    assert found["verdicts"]["2"]["statistic"] == pytest.approx(1.0)
    assert found["verdicts"]["2"]["p_value"] == pytest.approx(units.stouffer([1 / 120] * 5))
    assert found["verdicts"]["2"]["units"] == 5


def test_one_seed_is_not_enough_units_for_the_drops():
    found = truncation.findings(
        [seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                     lost_at_choice=RISING)],
        CFG,
    )  # fmt: skip
    assert statuses(found) == ["not enough units", "holds", "not enough units"]
    assert found["verdicts"]["2"]["p_value"] == pytest.approx(1 / 120)  # one seed: its own p
    assert found["verdicts"]["3"]["reason"].startswith(
        "1 seed(s): an exact one-sided sign-flip test needs at least 5 to reach p < 0.05"
    )


def test_finding_1_needs_much_norm_lost_not_kept():
    # the safe plan costs no accuracy but removes only 5% of the norm (keeps 95%): not "much"
    found = truncation.findings(
        five(safe_kept=0.95, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
             lost_at_choice=RISING),
        CFG,
    )  # fmt: skip
    assert found["per_seed"][0]["safe_norm_lost"] == pytest.approx(0.05)
    assert statuses(found)[0] == "does not hold"
    assert "5.0% of the kernel norm" in found["verdicts"]["1"]["reason"]


def test_finding_1_does_not_hold_when_the_safe_plan_loses_accuracy():
    found = truncation.findings(
        five(safe_kept=0.5, safe_wrong=60, agg_wrong=200, retrained_wrong=0,
             lost_at_choice=RISING),
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
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=30,
             lost_at_choice=RISING),
        CFG,
    )  # fmt: skip
    iv = found["intervals"]["retrained_drop"]
    assert iv["estimate"] == pytest.approx(0.03) and CFG.tolerance < iv["low"]
    assert iv["high"] < CFG.aggressive_drop
    assert statuses(found)[2] == "does not hold"
    assert found["per_seed"][0]["regained"] == pytest.approx((0.97 - 0.8) / 0.2)


def test_finding_3_is_not_significant_when_the_aggressive_plan_costs_nothing():
    found = truncation.findings(
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=0, retrained_wrong=0, lost_at_choice=RISING),
        CFG,
    )  # fmt: skip
    assert statuses(found)[2] == "not significant"


def test_verdicts_test_over_seeds():
    results = [
        seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                    lost_at_choice=RISING, seed=s)
        for s in range(3)
    ]  # fmt: skip
    found = truncation.findings(results, CFG)
    # three seeds: the sign-flip test cannot reach 0.05 (1/8); the Kendall test within each
    # seed can, combined (points of different seeds are not pooled)
    assert found["seeds"] == [0, 1, 2]
    assert statuses(found) == ["not enough units", "holds", "not enough units"]
    assert found["verdicts"]["2"]["p_value"] == pytest.approx(units.stouffer([1 / 120] * 3))


def test_verdicts_near_chance_are_withheld():
    results = five(safe_kept=0.6, safe_wrong=900, agg_wrong=900, retrained_wrong=0,
                   lost_at_choice=RISING)  # fmt: skip
    found = truncation.findings(results, CFG)
    # the safe plan at 10 % (chance on digits): no verdict; finding 3 compares the base and
    # the re-trained models (both far from chance), the aggressive one is only its premise
    assert statuses(found) == ["no verdict", "holds", "holds"]
    assert found["verdicts"]["1"]["reason"].startswith(
        "compared models within 5 points of chance (10%): safe 10.0% (the test alone: does not hold"
    )
    for r in results:
        r["combined"]["aggressive"]["retrain"][1]["test_accuracy"] = 0.15
        r["combined"]["base"]["test_accuracy"] = 0.151
    found = truncation.findings(results, CFG)
    assert statuses(found) == ["no verdict", "holds", "no verdict"]
    assert "re-trained 15.0%" in found["verdicts"]["3"]["reason"]
    assert "base" not in found["verdicts"]["3"]["reason"]
    for r in results:
        r["combined"]["base"]["test_accuracy"] = 0.15
    found = truncation.findings(results, CFG)
    assert statuses(found) == ["no verdict"] * 3
    assert found["verdicts"]["2"]["reason"].startswith(
        "compared models within 5 points of chance (10%): base 15.0% (the test alone: holds"
    )
    assert "(10%): base 15.0%, safe 10.0% (the test alone" in found["verdicts"]["1"]["reason"]
    assert "(10%): base 15.0%, re-trained 15.0% (the" in found["verdicts"]["3"]["reason"]
    cifar = truncation.findings(results, truncation.Config(quick=True, dataset="cifar100"))
    assert statuses(cifar) == ["does not hold", "holds", "holds"]  # chance 1 %: none is near


# -- the pieces, number by number ---------------------------------------------------------------
def test_tolerated_picks_the_smallest_chi_within_the_drop_on_validation():
    rows = [
        {"layer": "a", "cut": "x", "chi": 1, "chi_max": 4, "val_accuracy": 0.97, "test": 1},
        {"layer": "a", "cut": "x", "chi": 2, "chi_max": 4, "val_accuracy": 0.99, "test": 0},
        {"layer": "a", "cut": "x", "chi": 4, "chi_max": 4, "val_accuracy": 0.995, "test": 0},
        {"layer": "a", "cut": "y", "chi": 1, "chi_max": 2, "val_accuracy": 0.5, "test": 1},
        # the full-rank row qualifies whatever its validation accuracy
        {"layer": "a", "cut": "y", "chi": 2, "chi_max": 2, "val_accuracy": 0.6, "test": 1},
    ]  # fmt: skip
    pick = truncation.tolerated(rows, 1.0, 0.01)
    assert pick == {("a", "x"): rows[1], ("a", "y"): rows[4]}
    assert pick[("a", "x")] is not rows[1]  # copies
    assert truncation.tolerated(rows, 1.0, 0.05)[("a", "x")]["chi"] == 1


def test_removable_norm_averages_the_non_trivial_cuts_per_layer():
    choice = {
        ("a", "x"): {"chi_max": 4, "norm_kept": 0.7},
        ("a", "y"): {"chi_max": 2, "norm_kept": 0.9},
        ("a", "z"): {"chi_max": 1, "norm_kept": 0.0},  # a single singular value: left out
        ("b", "x"): {"chi_max": 1, "norm_kept": 0.5},
        ("c", "x"): {"chi_max": 8, "norm_kept": 1.0},
    }
    assert truncation.nontrivial(choice).keys() == {("a", "x"), ("a", "y"), ("c", "x")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layer without cuts is NaN, without a warning
        out = truncation.removable_norm(choice, ["c", "a", "b"])
    assert out[:2] == pytest.approx([0.0, 0.2]) and math.isnan(out[2])


def test_seed_numbers_quote_the_tables():
    result = seed_result(safe_kept=0.6, safe_wrong=5, agg_wrong=200, retrained_wrong=50,
                         lost_at_choice=[0.2, 0.05, 0.3, 0.4, 0.5], seed=7)  # fmt: skip
    result["combined"]["safe"]["layers"]["conv0"]["norm_kept"] = 0.1
    n = truncation.seed_numbers(result, CFG)
    assert n["seed"] == 7 and n["base_val_accuracy"] == 1.0 and n["base_test_accuracy"] == 1.0
    assert n["pairs"] == 5 and n["pairs_much_norm"] == 4  # 5 % lost is not much
    assert n["pair_test_drop"] == pytest.approx(0.005)  # chosen rows: test accuracy 0.995
    assert n["removable_norm"] == pytest.approx([0.2, 0.05, 0.3, 0.4, 0.5])
    assert n["safe_test_accuracy"] == pytest.approx(0.995)
    assert n["safe_drop"] == pytest.approx(0.005)
    assert n["safe_norm_lost"] == pytest.approx((0.9 + 4 * 0.4) / 5)
    assert n["aggressive_test_accuracy"] == pytest.approx(0.8)
    assert n["aggressive_drop"] == pytest.approx(0.2)
    assert n["aggressive_norm_lost"] == pytest.approx(0.7)
    assert n["retrain_epoch"] == 2 and n["retrained_test_accuracy"] == pytest.approx(0.95)
    assert n["retrained_drop"] == pytest.approx(0.05)
    assert n["regained"] == pytest.approx(0.15 / 0.2)
    # the tolerance decides which chi is chosen: 0.5 admits chi 1 (validation 0.90)
    loose = truncation.seed_numbers(result, truncation.Config(quick=True, tolerance=0.2))
    assert loose["removable_norm"] == pytest.approx([0.8] * 5)


def test_seed_numbers_edge_cases():
    result = seed_result(safe_kept=0.6, safe_wrong=0, agg_wrong=0, retrained_wrong=0,
                         lost_at_choice=RISING)  # fmt: skip
    assert math.isnan(truncation.seed_numbers(result, CFG)["regained"])  # nothing lost
    result["layers"] = []
    n = truncation.seed_numbers(result, CFG)
    assert n["safe_norm_lost"] == 0.0 and n["aggressive_norm_lost"] == 0.0
    assert n["removable_norm"] == []


def test_findings_intervals_verdicts_and_summary():
    results = [
        seed_result(safe_kept=0.6, safe_wrong=40 + s, agg_wrong=200, retrained_wrong=30,
                    lost_at_choice=RISING, seed=s)
        for s in range(2)
    ]  # fmt: skip
    # seed 1 has 997 test images
    combined = results[1]["combined"]
    for entry in (*(combined[k] for k in combined), *combined["aggressive"]["retrain"]):
        entry["test_correct"] = entry["test_correct"][:997]
    cfg = truncation.Config(quick=True, seed=5)
    found = truncation.findings(results, cfg)
    base = [np.ones(N), np.ones(997)]
    levels = {"safe_drop": ((40, 41), 1), "aggressive_drop": ((200, 200), 2),
              "retrained_drop": ((30, 30), 3)}  # fmt: skip
    for key, (wrong, offset) in levels.items():
        other = [np.arange(N) >= wrong[0], np.arange(997) >= wrong[1]]
        drops = [w / n for w, n in zip(wrong, (N, 997))]
        assert found["intervals"][key] == pytest.approx(asdict(units.t_interval(drops, 0.95)))
        per = [stats.paired_bootstrap([b], [o], seed=5 + offset + s)
               for s, (b, o) in enumerate(zip(base, other))]  # fmt: skip
        assert found["per_seed_intervals"][key] == [asdict(iv) for iv in per]
    safe = found["intervals"]["safe_drop"]
    assert safe["estimate"] == pytest.approx((0.04 + 41 / 997) / 2) and safe["low"] < 0.04
    assert found["note"] == stats.seeds_note(2) and found["seeds"] == [0, 1]
    assert found["evidence"] == units.evidence_note(True)
    assert truncation.findings(results, truncation.Config(seed=5))["evidence"] is None
    v1, v2, v3 = (found["verdicts"][k] for k in "123")
    other = [np.arange(N) >= 40, np.arange(997) >= 41]
    assert (
        v1
        == units.paired_unit_verdict(
            base, other, 0.01, claim="below", what="the safe plan's accuracy drop", seed=6
        ).as_dict()
    )
    assert v1["status"] == "not enough units" and v1["units"] == 2
    assert (
        v2
        == units.kendall_units_verdict(
            [(range(5), RISING)] * 2, what="the removable norm with layer depth"
        ).as_dict()
    )
    assert v3["status"] == "not enough units"
    assert v3["test"] == (
        "exact one-sided sign-flip test over seeds, with the 95% t interval over seeds"
    )
    assert v3["interval"] == found["intervals"]["retrained_drop"]
    per_seed = found["per_seed"]
    assert per_seed == [truncation.seed_numbers(r, cfg) for r in results]
    keys = [k for k in per_seed[0] if k not in ("seed", "removable_norm")]
    assert list(found["summary"]) == [*keys, "removable_norm"]
    assert found["summary"]["aggressive_drop"] == pytest.approx(asdict(stats.spread([0.2, 0.2])))
    assert found["summary"]["retrain_epoch"] == asdict(stats.spread([2, 2]))
    for got, v in zip(found["summary"]["removable_norm"], RISING, strict=True):
        assert got == pytest.approx(asdict(stats.spread([v, v])))


def test_finding_1_reason_when_too_little_norm_is_removed():
    results = five(safe_kept=0.95, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                   lost_at_choice=RISING)  # fmt: skip
    found = truncation.findings(results, CFG)
    test = units.paired_unit_verdict(
        [np.ones(N)] * 5, [np.ones(N)] * 5, 0.01, claim="below",
        what="the safe plan's accuracy drop", seed=CFG.seed + 1,
    )  # fmt: skip
    assert test.status == "holds"
    assert found["verdicts"]["1"] == {
        **test.as_dict(), "status": "does not hold",
        "reason": "the safe plan removes only 5.0% of the kernel norm (< 10%)",
    }  # fmt: skip
    # exactly 10 % removed on average (half of one layer of five) is "much"
    exact = five(safe_kept=1.0, safe_wrong=0, agg_wrong=200, retrained_wrong=0,
                 lost_at_choice=RISING)  # fmt: skip
    for r in exact:
        r["combined"]["safe"]["layers"]["conv0"]["norm_kept"] = 0.5
    at = truncation.findings(exact, CFG)
    assert at["per_seed"][0]["safe_norm_lost"] == 0.1
    assert at["verdicts"]["1"]["status"] == "holds"


def test_finding_3_not_significant_names_the_weak_part():
    # aggressive drop 0: its interval is not above the tolerance; re-trained drop 0 holds
    weak_before = truncation.findings(
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=0, retrained_wrong=0, lost_at_choice=RISING),
        CFG,
    )["verdicts"]["3"]  # fmt: skip
    assert weak_before["status"] == "not significant"
    assert weak_before["reason"] == (
        "the aggressive drop lies below 0.01 over 5 seeds (opposite one-sided sign-flip p = "
        "0.0312, 95% t interval [0.0000, 0.0000])"
    )
    # aggressive drop 20 points (holds) but re-trained drop exactly 1 point: on the tolerance
    weak_after = truncation.findings(
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=10,
             lost_at_choice=RISING),
        CFG,
    )["verdicts"]["3"]  # fmt: skip
    assert weak_after["status"] == "not significant"
    assert weak_after["reason"] == (
        "the re-trained drop is not significantly below 0.01 over 5 seeds (sign-flip p = 1, "
        "95% t interval [0.0100, 0.0100])"
    )
    assert weak_after["interval"]["estimate"] == pytest.approx(0.01)
    both = truncation.findings(
        five(safe_kept=0.6, safe_wrong=0, agg_wrong=200, retrained_wrong=0, lost_at_choice=RISING),
        CFG,
    )["verdicts"]["3"]  # fmt: skip
    assert both["reason"] == (
        "the aggressive drop lies above 0.01 over 5 seeds (sign-flip p = 0.0312, 95% t interval "
        "[0.2000, 0.2000]), and the re-trained drop lies below 0.01 over 5 seeds (sign-flip "
        "p = 0.0312, 95% t interval [0.0000, 0.0000])"
    )
