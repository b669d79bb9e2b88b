"""The hybrid study's verdict code on hand-built cell tables whose numbers are known by design.

Each seed result has the structure of ``cells.jsonl`` (one row per configuration and ratio, with
the accuracy and per-image test correctness before and after fine-tuning and the compressed
layers' storage and weight errors); intervals, Wilcoxon tests and verdicts are derived here
independently (by hand, with numpy or scipy) and compared.
"""

import copy
import json
from dataclasses import asdict

import numpy as np
import pytest
from scipy import stats as sps

from studies.common import stats, units
from studies.common.training import pack_correct
from studies.hybrid import Config
from studies.verdicts import hybrid

N = 100  # test images
RATIOS = (5.0, 20.0)
CFG = Config(ratios=RATIOS, match_tol=0.02, seed=2)
# wrong test images (from image 0 on) per configuration: (after, before) fine-tuning
WRONG = {"hybrid": (0, 30), "tt": (20, 10), "ht": (10, 10), "reverse": (10, 0)}
# relative weight errors per (configuration, layer)
ERRORS = {"conv1": {"tt": 0.1, "ht": 0.3}, "fc1": {"tt": 0.4, "ht": 0.2}}


def stage(wrong, val=0.9):
    ok = np.arange(N) >= wrong
    return {"val_accuracy": val, "test_accuracy": 1 - wrong / N, "test_correct": pack_correct(ok)}


def layers(config, ratio, seed):
    out = []
    for name, kind in (("conv1", "conv"), ("fc1", "fc")):
        fmt = "tt" if config in ("tt", "hybrid" if kind == "conv" else "reverse") else "ht"
        out.append(
            {"layer": name, "kind": kind,
             "rel_error": ERRORS[name][fmt] + ratio / 1000 + seed / 100,
             "params": 100, "formula_params": 100, "structure_params": 100}
        )  # fmt: skip
    return out


def seed_result(seed, wrong=WRONG, gaps=None, shift=0):
    rows = [{"config": "dense", "ratio": 1.0, "gap": 0.0, "layers": [],
             "before": stage(shift), "after": stage(shift + 1)}]  # fmt: skip
    for config, (after, before) in wrong.items():
        for ratio in RATIOS:
            rows.append(
                {"config": config, "ratio": ratio, "gap": (gaps or {}).get((config, ratio), 0.01),
                 "layers": layers(config, ratio, seed),
                 "before": stage(before + shift), "after": stage(after + shift)}
            )  # fmt: skip
    base = {"val_accuracy": 0.95 - seed / 100, "test_accuracy": 0.96 - seed / 100}
    return {"seed": seed, "base": base, "rows": rows}


def correct_of(wrong):
    return (np.arange(N) >= wrong).astype(float)


def test_cell_finds_the_row_by_configuration_and_ratio():
    result = seed_result(0)
    assert hybrid._cell(result, "tt", 20) is result["rows"][4]
    assert hybrid._cell(result, "dense", 1)["after"]["test_accuracy"] == 0.99
    with pytest.raises(KeyError, match="no cell tt at ratio 7 in seed 0"):
        hybrid._cell(result, "tt", 7.0)
    with pytest.raises(KeyError, match="no cell cp at ratio 5 in seed 0"):
        hybrid._cell(result, "cp", 5)


def test_compare_tests_the_seeds_mean_differences():
    results = [seed_result(s, shift=s) for s in range(5)]
    pairs = [("hybrid", "tt"), ("ht", "reverse")]
    out = hybrid.compare(results, pairs, RATIOS, "after", seed=9, what="d")
    # per seed: the mean over its (pair, ratio) cells; differences 0.2, 0.2, 0, 0 -> 0.1
    refs = [np.mean([correct_of(w + s) for w in (0, 0, 10, 10)], axis=0) for s in range(5)]
    others = [np.mean([correct_of(w + s) for w in (20, 20, 10, 10)], axis=0) for s in range(5)]
    expected = units.paired_unit_verdict(refs, others, 0.0, claim="above", what="d", seed=9)
    assert out["verdict"] == expected.as_dict() and expected.status == "holds"
    assert out["interval"] == asdict(expected.interval)
    assert out["interval"]["estimate"] == pytest.approx(0.1)
    assert out["per_seed"] == pytest.approx([0.1] * 5)
    assert out["per_seed_intervals"] == [asdict(iv) for iv in expected.per_unit]
    assert out["per_seed_intervals"][0] == asdict(
        stats.paired_bootstrap([refs[0]], [others[0]], seed=9)
    )
    assert out["differences"] == pytest.approx([0.2, 0.2, 0.0, 0.0] * 5)
    assert (out["wins"], out["losses"]) == (10, 0)
    assert out["pairs"] == [["hybrid", "tt"], ["ht", "reverse"]] and out["stage"] == "after"
    assert "wilcoxon" not in out  # the cells of one seed are not independent units


def test_compare_seeds_are_the_units():
    # two seeds: not enough units, however large the difference
    two = hybrid.compare([seed_result(0), seed_result(1)], [("hybrid", "tt")], RATIOS, "after")
    assert two["verdict"]["status"] == "not enough units" and two["verdict"]["units"] == 2
    one = hybrid.compare([seed_result(0)], [("hybrid", "ht")], [20.0], "before")
    assert one["interval"]["estimate"] == pytest.approx(-0.2)
    assert one["differences"] == pytest.approx([-0.2]) and (one["wins"], one["losses"]) == (0, 1)
    assert one["interval"]["method"] == "t interval over 1 seeds (0 degrees of freedom)"
    assert one["verdict"]["reason"].startswith("1 seed(s): ")
    default = hybrid.compare([seed_result(0)], [("hybrid", "tt")], RATIOS, "after")
    assert default["verdict"]["test"].startswith("exact one-sided sign-flip test over seeds")
    five = [seed_result(s, shift=s) for s in range(5)]
    reason = hybrid.compare(five, [("hybrid", "tt")], RATIOS, "after")["verdict"]["reason"]
    assert reason.startswith("the accuracy difference lies above 0 over 5 seeds")
    # the per-seed bootstraps are seeded: 0 unless told otherwise
    default = hybrid.compare(five, [("hybrid", "tt")], RATIOS, "before")
    assert default == hybrid.compare(five, [("hybrid", "tt")], RATIOS, "before", seed=0)
    assert default != hybrid.compare(five, [("hybrid", "tt")], RATIOS, "before", seed=1)
    same = hybrid.compare([seed_result(0)], [("ht", "ht")], RATIOS, "after")
    assert (same["wins"], same["losses"]) == (0, 0) and same["differences"] == [0.0, 0.0]


def test_verdict_of_withholds_near_chance_cells():
    results = [seed_result(s) for s in range(5)]
    comp = hybrid.compare(results, [("hybrid", "tt")], RATIOS, "after", what="x")
    v = hybrid._verdict_of(results, comp, RATIOS, 0.1)
    assert v == stats.Verdict(**comp["verdict"]) and v.status == "holds"
    # TT-only at ratio 20 in every seed at 14 % accuracy (86 of 100 wrong): near 10 % chance
    for r in results:
        r["rows"][4]["after"] = stage(86)
    comp = hybrid.compare(results, [("hybrid", "tt")], RATIOS, "after", what="x")
    v = hybrid._verdict_of(results, comp, RATIOS, 0.1)
    assert v.status == "no verdict"
    assert v.reason.startswith(
        "compared models within 5 points of chance (10%): TT-only at 20x 14.0% (the test alone: "
    )
    assert hybrid._verdict_of(results, comp, RATIOS, 0.01).status == "holds"
    assert hybrid._verdict_of(results, comp, [5.0], 0.1).status == "holds"  # that ratio only
    # the mean over seeds decides: one seed at 14 %, the others at 80 %
    for r in results[1:]:
        r["rows"][4]["after"] = stage(20)
    comp = hybrid.compare(results, [("hybrid", "tt")], RATIOS, "after", what="x")
    assert hybrid._verdict_of(results, comp, RATIOS, 0.1).status == "holds"
    for r in results:
        r["rows"][1]["before"] = stage(88)  # hybrid at 5x before fine-tuning
    before = hybrid.compare(results, [("hybrid", "tt")], RATIOS, "before", what="x")
    reason = hybrid._verdict_of(results, before, RATIOS, 0.1).reason
    assert f"{hybrid.LABELS['hybrid']} at 5x 12.0% (the test alone: does not hold" in reason


def verdict(status, test="t", reason="r"):
    return stats.Verdict(status, test, reason)


@pytest.mark.parametrize(
    "statuses, combined",
    [
        (["holds", "holds"], "holds"),
        (["holds", "not significant"], "not significant"),
        (["not significant", "holds"], "not significant"),
        (["holds", "does not hold"], "does not hold"),
        (["does not hold", "not significant"], "does not hold"),
        (["not significant", "not significant"], "not significant"),
        (["holds", "not enough units"], "not enough units"),
        (["no verdict", "holds"], "no verdict"),
    ],
)
def test_both_needs_every_part(statuses, combined):
    parts = [verdict(s, test=f"test {i}", reason=f"part {i}") for i, s in enumerate(statuses)]
    # the deciding part's reason first
    reason = "part 1; part 0" if statuses[1] == combined != statuses[0] else "part 0; part 1"
    assert hybrid._both(parts) == stats.Verdict(
        combined, "test 0 (each comparison separately)", reason
    )
    parts = [stats.Verdict(s, "t", "r", units=3 + i) for i, s in enumerate(statuses)]
    assert hybrid._both(parts).units == 3


def test_kernel_errors_pair_tt_and_ht_per_layer_kind():
    results = [seed_result(0), seed_result(1)]
    out = hybrid.kernel_errors(results)
    tt_conv = [0.1 + r / 1000 + s / 100 for s in (0, 1) for r in RATIOS]
    ht_conv = [0.3 + r / 1000 + s / 100 for s in (0, 1) for r in RATIOS]
    diff = np.subtract(tt_conv, ht_conv)
    assert out["conv"] == pytest.approx(
        {"units": 4, "tt_mean": np.mean(tt_conv), "ht_mean": np.mean(ht_conv), "tt_lower": 4,
         "wilcoxon_p": sps.wilcoxon(diff).pvalue}
    )  # fmt: skip
    tt_fc = [0.4 + r / 1000 + s / 100 for s in (0, 1) for r in RATIOS]
    assert out["fc"]["units"] == 4 and out["fc"]["tt_lower"] == 0
    assert out["fc"]["tt_mean"] == pytest.approx(np.mean(tt_fc))
    assert out["fc"]["ht_mean"] == pytest.approx(np.mean(tt_fc) - 0.2)
    # one layer worse, one better, one equal: two-sided p over the non-zero differences
    rows = seed_result(0)["rows"]
    rows[3]["layers"][0]["rel_error"] = 0.9  # tt at ratio 5, conv1 (ht: 0.305)
    rows[4]["layers"][0]["rel_error"] = 0.32  # tt at ratio 20, conv1 (ht: 0.32)
    mixed = hybrid.kernel_errors([{"seed": 0, "rows": rows}])["conv"]
    assert mixed["tt_lower"] == 0 and mixed["units"] == 2
    assert mixed["wilcoxon_p"] == pytest.approx(sps.wilcoxon([0.9 - 0.305, 0.0]).pvalue)


def test_kernel_errors_without_units_or_differences():
    only_dense = {"seed": 0, "rows": seed_result(0)["rows"][:1]}
    out = hybrid.kernel_errors([only_dense])
    assert out == {
        kind: {"units": 0, "tt_mean": None, "ht_mean": None, "tt_lower": 0, "wilcoxon_p": None}
        for kind in ("conv", "fc")
    }
    result = seed_result(0)
    for row in result["rows"]:
        for layer in row["layers"]:
            layer["rel_error"] = 0.5
    equal = hybrid.kernel_errors([result])["fc"]
    assert equal == {"units": 2, "tt_mean": 0.5, "ht_mean": 0.5, "tt_lower": 0, "wilcoxon_p": None}


def test_seed_numbers_quote_the_cells():
    numbers = hybrid.seed_numbers(seed_result(1, shift=2), CFG)
    assert numbers["seed"] == 1
    assert numbers["base_val_accuracy"] == 0.94 and numbers["base_test_accuracy"] == 0.95
    assert numbers["dense_cell_test_accuracy"] == pytest.approx(1 - 2 / N)
    assert numbers["dense_finetuned_test_accuracy"] == pytest.approx(1 - 3 / N)
    expected = {
        f"{config}\t{ratio:g}\t{st}": 1 - (WRONG[config][i] + 2) / N
        for config in ("tt", "ht", "hybrid", "reverse")
        for ratio in RATIOS
        for i, st in enumerate(("after", "before"))
    }
    assert numbers["accuracy"] == pytest.approx(expected)
    assert "hybrid\t5\tafter" in numbers["accuracy"]


def test_findings_comparisons_verdicts_and_summaries():
    gaps = {("tt", 5.0): 0.02, ("ht", 20.0): -0.03, ("reverse", 5.0): 0.021}
    results = [seed_result(0, gaps=gaps), seed_result(1, shift=5)]
    results[1]["rows"][2]["global_fill"] = True
    results[1]["rows"][3]["layers"][1]["structure_params"] = 99  # one layer's formula is off
    five = [*results, *(seed_result(s, shift=s) for s in range(2, 5))]
    cfg = Config(ratios=RATIOS, match_tol=0.02, seed=2, quick=True)
    found = hybrid.findings(five, cfg)
    # every comparison with its own bootstrap seed: cfg.seed + 10 * number + stage index
    expected = {}
    names = {"2": "HT-FC - TT-FC", "3": "TT-conv - HT-conv"}
    for k, st in enumerate(("after", "before")):
        for b in ("tt", "ht"):
            expected[f"1{b}_{st}"] = hybrid.compare(
                five, [("hybrid", b)], RATIOS, st, 2 + 10 + k, f"hybrid - {hybrid.LABELS[b]}"
            )
        for number in ("2", "3"):
            pairs = hybrid.FINDINGS[number][1]
            expected[f"{number}_{st}"] = hybrid.compare(
                five, pairs, RATIOS, st, 2 + 10 * int(number) + k, names[number]
            )
    assert json.dumps(found["comparisons"], sort_keys=True) == json.dumps(expected, sort_keys=True)
    v = found["verdicts"]
    assert {k: x["status"] for k, x in v.items()} == {
        "1_after": "holds", "2_after": "holds", "3_after": "not significant",
        "1_before": "does not hold", "2_before": "does not hold", "3_before": "does not hold",
    }  # fmt: skip
    assert v["1_after"]["test"] == (
        "exact one-sided sign-flip test over seeds, with the 95% t interval over seeds "
        "(each comparison separately)"
    )
    assert v["1_after"]["reason"] == (
        "hybrid - TT-only lies above 0 over 5 seeds (sign-flip p = 0.0312, 95% t interval "
        "[0.2000, 0.2000]); hybrid - HT-only lies above 0 over 5 seeds (sign-flip p = 0.0312, "
        "95% t interval [0.1000, 0.1000])"
    )
    assert v["1_after"]["units"] == 5
    assert v["2_after"]["reason"].startswith("HT-FC - TT-FC lies above 0 over 5 seeds")
    assert v["3_before"]["reason"] == (
        "TT-conv - HT-conv lies below 0 over 5 seeds (opposite one-sided sign-flip p = 0.0312, "
        "95% t interval [-0.1500, -0.1500])"
    )
    assert v["3_after"] == found["comparisons"]["3_after"]["verdict"]
    assert found["evidence"] == units.evidence_note(True)
    # two seeds: nothing can be decided
    two = hybrid.findings(results, CFG)
    assert {x["status"] for x in two["verdicts"].values()} == {"not enough units"}
    assert two["evidence"] is None
    # before fine-tuning, the hybrid near chance: those verdicts are withheld
    five = copy.deepcopy(five)
    for r in five:
        for row in r["rows"][1:3]:
            row["before"] = stage(88)
    near = hybrid.findings(five, cfg)["verdicts"]
    assert [near[f"{n}_before"]["status"] for n in "123"] == ["no verdict"] * 3
    assert [near[f"{n}_after"]["status"] for n in "123"] == [
        "holds", "holds", "not significant"
    ]  # fmt: skip
    assert (
        hybrid.findings(five, Config(ratios=RATIOS, dataset="cifar100"))["verdicts"]["1_before"][
            "status"
        ]
        == "does not hold"
    )
    # summaries over seeds
    found = two
    assert found["seeds"] == [0, 1] and found["note"] == stats.seeds_note(2)
    assert found["per_seed"] == [hybrid.seed_numbers(r, CFG) for r in results]
    summary = found["summary"]
    assert summary["base_test_accuracy"]["mean"] == pytest.approx(0.955)
    assert summary["base_val_accuracy"]["mean"] == pytest.approx(0.945)
    assert summary["base_val_accuracy"]["n"] == 2
    assert len(summary["accuracy"]) == 4 * 2 * 2
    cell = summary["accuracy"]["tt\t20\tbefore"]
    assert cell["mean"] == pytest.approx(1 - 12.5 / N) and cell["low"] == pytest.approx(0.85)
    assert found["kernel_error"] == hybrid.kernel_errors(results)
    # storage and matching
    assert found["storage"] == {"layers": 2 * 16, "formula_equal": 2 * 16 - 1}
    assert found["matching"] == {
        "cells": 16, "within_tol": 14, "max_abs_gap": 0.03, "global_fill": 1,
    }  # fmt: skip


def test_findings_matching_tolerance_comes_from_the_configuration():
    results = [seed_result(0, gaps={("tt", 5.0): 0.04})]
    strict = hybrid.findings(results, CFG)["matching"]
    loose = hybrid.findings(results, Config(ratios=RATIOS, match_tol=0.05, seed=2))["matching"]
    assert (strict["within_tol"], loose["within_tol"]) == (7, 8)
    assert strict["max_abs_gap"] == 0.04 and strict["global_fill"] == 0
