"""The ALDS study's verdict code on hand-built cell tables whose numbers are known by construction.

Each seed result has the structure of ``cells.jsonl`` (one row per method and budget, with the
accuracy and per-image test correctness before and after re-training); the paper-style numbers,
the bootstrap intervals, the Wilcoxon p-values and the verdicts are derived here independently
(by hand, with numpy or scipy) and compared.
"""

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from studies.alds import Config
from studies.common import stats
from studies.common.training import pack_correct, unpack_correct
from studies.verdicts import alds

N = 200  # test images per seed
CFG = Config(budgets=(0.5, 0.25), max_drop=0.005, seed=3)
MODEL_PARAMS, MODEL_FLOPS = 1000, 5000


def correct(wrong, start=0):
    """Correctness of N images with images ``start .. start + wrong - 1`` wrong."""
    ok = np.ones(N, dtype=bool)
    ok[start : start + wrong] = False
    return pack_correct(ok)


def phase(wrong, start=0, val=0.99):
    return {
        "val_accuracy": val,
        "test_accuracy": 1 - wrong / N,
        "test_correct": correct(wrong, start),
    }


def cell(method, budget, before, after, params=None, flops=None, max_error=0.0):
    """One cell; ``before``/``after`` are ``phase(...)`` dicts."""
    return {
        "method": method,
        "budget": budget,
        "params": MODEL_PARAMS * budget if params is None else params,
        "model_params": MODEL_PARAMS,
        "flops": MODEL_FLOPS * budget if flops is None else flops,
        "model_flops": MODEL_FLOPS,
        "max_error": max_error,
        "before": before,
        "after": after,
    }


def seed_result(seed, wrong, base_test=1.0, base_val=0.99):
    """``wrong[(method, budget)] = (wrong before, wrong after)``, images from 0 on; budget 1.0
    cells get every image wrong (so that counting them in a comparison would show)."""
    rows = []
    for method in alds.METHODS:
        rows.append(cell(method, 1.0, phase(N), phase(N)))
        for budget in CFG.budgets:
            b, a = wrong[method, budget]
            rows.append(
                cell(method, budget, phase(b), phase(a), max_error=budget / 10 + seed / 100)
            )
    return {
        "seed": seed,
        "base": {"val_accuracy": base_val, "test_accuracy": base_test},
        "rows": rows,
    }


def test_paper_number_picks_the_fewest_parameters_within_the_validation_drop():
    """Per method the cheapest cell whose validation drop is <= max_drop; test plays no part."""
    base = {"val_accuracy": 0.99, "test_accuracy": 0.95}
    rows = [
        cell("alds", 1.0, phase(0, val=0.97), phase(0, val=0.97), params=1000, flops=5000),
        # within the drop before re-training (0.986 >= 0.985), the cheapest such cell
        cell("alds", 0.5, phase(20, val=0.986), phase(20, val=0.986), params=480, flops=2100),
        # outside before (0.98 < 0.985) but within after re-training
        cell("alds", 0.25, phase(4, val=0.98), phase(30, val=0.991), params=240, flops=900),
        # nothing compressed qualifies: the uncompressed cell does, though its own drop is larger
        cell("uniform", 1.0, phase(0, val=0.97), phase(0, val=0.97), params=1000, flops=5000),
        cell("uniform", 0.5, phase(0, val=0.9), phase(0, val=0.9)),
    ]
    before = alds.paper_number(rows, base, 0.005, "before")
    assert set(before) == {"alds", "uniform"}
    assert before["alds"] == pytest.approx(
        {
            "budget": 0.5,
            "params_removed": 1 - 480 / 1000,
            "flops_removed": 1 - 2100 / 5000,
            "test_drop": 0.95 - (1 - 20 / N),
            "val_drop": 0.99 - 0.986,
        }
    )
    assert before["uniform"] == pytest.approx(
        {"budget": 1.0, "params_removed": 0.0, "flops_removed": 0.0, "test_drop": -0.05,
         "val_drop": 0.02}
    )  # fmt: skip
    after = alds.paper_number(rows, base, 0.005, "after")
    assert after["alds"] == pytest.approx(
        {
            "budget": 0.25,
            "params_removed": 1 - 240 / 1000,
            "flops_removed": 1 - 900 / 5000,
            "test_drop": 0.95 - (1 - 30 / N),
            "val_drop": 0.99 - 0.991,
        }
    )
    # a looser drop admits the 0.25 cell before re-training too
    assert alds.paper_number(rows, base, 0.02, "before")["alds"]["budget"] == 0.25


def two_seeds():
    """ALDS beats uniform before re-training; energy beats ALDS after; other pairs tie."""
    results = []
    for seed, extra in ((0, 0), (1, 10)):
        wrong = {}
        for budget in CFG.budgets:
            wrong["alds", budget] = (0, 20)
            wrong["uniform", budget] = (30 + extra, 20)
            wrong["energy", budget] = (20 + extra, 0)
        results.append(
            seed_result(seed, wrong, base_test=1.0 - seed / N, base_val=0.99 - seed / 100)
        )
    return results


def test_compare_bootstraps_the_per_image_advantage_averaged_over_the_budgets():
    results = two_seeds()
    # seed 0: ALDS right everywhere, uniform wrong on 30 images at both budgets; seed 1: 40
    ref = [np.ones(N), np.ones(N)]
    oth = [np.r_[np.zeros(30), np.ones(N - 30)], np.r_[np.zeros(40), np.ones(N - 40)]]
    out = alds.compare(results, "uniform", "before", seed=7)
    expected = stats.paired_bootstrap(ref, oth, seed=7)
    assert out["advantage"] == pytest.approx(
        {"estimate": 35 / N, "low": expected.low, "high": expected.high, "level": 0.95,
         "method": expected.method}
    )  # fmt: skip
    assert out["advantage"]["method"] == expected.method  # 200 test images and 2 seeds
    assert out["cell_differences"] == pytest.approx([0.15, 0.15, 0.2, 0.2])
    assert (out["wins"], out["ties"], out["losses"]) == (4, 0, 0)
    assert out["wilcoxon_p"] == pytest.approx(
        sps.wilcoxon([0.15, 0.15, 0.2, 0.2], alternative="greater").pvalue
    )
    v = out["verdict"]
    assert v["status"] == "holds" and v["interval"] == out["advantage"]
    assert v["test"] == (
        "paired bootstrap of the test-accuracy advantage over budgets x seeds x images"
    )
    assert v["reason"] == (
        "the 95% interval of ALDS's accuracy advantage over uniform lies above 0"
    )


def test_compare_verdict_does_not_hold_when_alds_loses_and_counts_ties():
    results = two_seeds()
    out = alds.compare(results, "energy", "after", seed=1)
    assert out["advantage"]["estimate"] == pytest.approx(-20 / N)
    assert out["verdict"]["status"] == "does not hold"
    assert "over energy lies below 0" in out["verdict"]["reason"]
    assert (out["wins"], out["ties"], out["losses"]) == (0, 0, 4)
    assert out["wilcoxon_p"] == pytest.approx(
        sps.wilcoxon([-0.1] * 4, alternative="greater").pvalue
    )
    # ALDS and uniform are equally right after re-training: all ties, no Wilcoxon p-value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no test on zero cells, so no small-sample warning
        tie = alds.compare(results, "uniform", "after", seed=1)
    assert (tie["wins"], tie["ties"], tie["losses"]) == (0, 4, 0)
    assert math.isnan(tie["wilcoxon_p"]) and tie["advantage"]["estimate"] == 0
    assert tie["verdict"]["status"] == "not significant"


def test_compare_mixed_cells_count_wins_ties_and_losses():
    wrong = {
        ("alds", 0.5): (0, 0), ("uniform", 0.5): (10, 0), ("energy", 0.5): (0, 0),
        ("alds", 0.25): (10, 0), ("uniform", 0.25): (0, 0), ("energy", 0.25): (0, 0),
    }  # fmt: skip
    result = seed_result(0, wrong)
    out = alds.compare([result], "uniform", "before", seed=0)
    assert out["cell_differences"] == pytest.approx([0.05, -0.05])
    assert (out["wins"], out["ties"], out["losses"]) == (1, 0, 1)
    assert out["verdict"]["status"] == "not significant"
    assert "contains 0" in out["verdict"]["reason"]
    assert out["advantage"]["estimate"] == 0 and "seeds" not in out["advantage"]["method"]


@pytest.mark.parametrize(
    "statuses, combined",
    [
        (["holds", "holds"], "holds"),
        (["holds", "not significant"], "not significant"),
        (["not significant", "holds"], "not significant"),
        (["holds", "does not hold"], "does not hold"),
        (["not significant", "does not hold"], "does not hold"),
        (["does not hold", "holds"], "does not hold"),
        (["not significant", "not significant"], "not significant"),
    ],
)
def test_combine_needs_both_comparisons(statuses, combined):
    """Both must hold for the finding to hold; one that does not hold sinks it."""
    assert alds.combine([{"status": s} for s in statuses]) == combined


def test_findings_tables_paper_numbers_comparisons_and_verdicts():
    results = two_seeds()
    found = alds.findings(results, CFG)
    assert found["seeds"] == [0, 1] and found["note"] == alds.seeds_note(2)
    assert "two-stage paired bootstrap" in found["note"]
    assert found["base"] == [1.0, 1.0 - 1 / N] and found["base_val"] == [0.99, 0.98]
    # the table: budget-major (1.0, 0.5, 0.25), the methods in order
    assert [(t["budget"], t["method"]) for t in found["table"]] == [
        (b, m) for b in (1.0, 0.5, 0.25) for m in alds.METHODS
    ]
    row = found["table"][3 + 1]  # 0.5, uniform
    assert row["params_kept"]["mean"] == pytest.approx(0.5)
    assert row["flops_kept"]["mean"] == pytest.approx(0.5) and row["flops_kept"]["n"] == 2
    assert row["max_error"]["mean"] == pytest.approx(0.05 + 0.005)  # seeds 0 and 1
    assert row["max_error"]["std"] == pytest.approx(np.std([0.05, 0.06], ddof=1))
    # uniform at 0.5 before re-training: 30 and 40 of 200 wrong; base 1.0 and 1 - 1/200
    acc = [1 - 30 / N, 1 - 40 / N]
    drops = [1.0 - acc[0], (1.0 - 1 / N) - acc[1]]
    assert row["before_accuracy"] == pytest.approx(
        {"mean": np.mean(acc), "std": np.std(acc, ddof=1), "low": min(acc), "high": max(acc),
         "n": 2}
    )  # fmt: skip
    assert row["before_drop"]["mean"] == pytest.approx(np.mean(drops))
    assert row["before_drop"]["std"] == pytest.approx(np.std(drops, ddof=1))
    assert row["after_accuracy"]["mean"] == pytest.approx(1 - 20 / N)
    assert row["after_drop"]["mean"] == pytest.approx(np.mean([20 / N, 19 / N]))
    # paper numbers per phase and seed, from paper_number with the configured max_drop
    for ph in ("before", "after"):
        assert found["paper_number"][ph] == [
            {"seed": r["seed"], **alds.paper_number(r["rows"], r["base"], 0.005, ph)}
            for r in results
        ]
    # the comparisons, each with its own bootstrap seed
    for i, ph in enumerate(("before", "after")):
        for j, other in enumerate(("uniform", "energy")):
            expected = alds.compare(results, other, ph, 3 + 10 * i + j)
            assert json.dumps(found["comparisons"][ph][other]) == json.dumps(expected)  # NaN p
    assert list(found["comparisons"]["before"]) == ["uniform", "energy"]
    assert found["verdicts"] == {"before": "holds", "after": "does not hold"}


def test_findings_quote_the_configured_drop():
    """The paper-style number uses --max-drop: cells 1 point below the base need max_drop >= 1."""
    wrong = {(m, b): (0, 0) for m in alds.METHODS for b in CFG.budgets}
    results = [seed_result(0, wrong, base_val=1.0)]  # every cell: validation accuracy 0.99
    tight = alds.findings(results, CFG)["paper_number"]["before"][0]
    loose = alds.findings(results, Config(budgets=(0.5, 0.25), max_drop=0.02, seed=3))
    assert tight["alds"]["budget"] == 1.0 and tight["seed"] == 0
    assert loose["paper_number"]["before"][0]["alds"]["budget"] == 0.25


# -- the automatic allocations against ALDS, budget by budget ----------------------------------
def with_auto(results, wrong):
    """Add auto-data and auto rows: ``wrong[(method, budget)] = (before, after)``, images from
    100 on (ALDS's wrong images start at 0, so the two never share a wrong image)."""
    for res in results:
        for method in ("auto", "auto-data"):
            res["rows"].append(cell(method, 1.0, phase(N), phase(N)))
            for budget in CFG.budgets:
                b, a = wrong[method, budget]
                res["rows"].append(cell(method, budget, phase(b, 100), phase(a, 100)))
    return results


def test_auto_findings_compare_each_budget_separately():
    wrong = {}
    for budget in CFG.budgets:
        wrong["auto", budget] = (20, 20)  # ties ALDS everywhere except 0.25 before
        wrong["auto-data", budget] = (0, 0)  # right everywhere: beats ALDS where ALDS errs
    wrong["auto", 0.25] = (40, 20)
    results = with_auto(two_seeds(), wrong)  # ALDS: 0 wrong before, 20 after
    found = alds.auto_findings(results, CFG, alds.methods_in(results))
    assert list(found) == ["auto-data", "auto"]
    for phase_name, alds_wrong in (("before", 0), ("after", 20)):
        data = found["auto-data"][phase_name]
        assert list(data["budgets"]) == ["0.5", "0.25"]
        for c in data["budgets"].values():
            assert c["advantage"]["estimate"] == pytest.approx(alds_wrong / N)
            assert c["cell_differences"] == pytest.approx([alds_wrong / N] * 2)  # 2 seeds
        status = "holds" if alds_wrong else "not significant"
        assert data["verdict"] == status
    before = found["auto"]["before"]["budgets"]
    assert before["0.5"]["advantage"]["estimate"] == pytest.approx(-20 / N)
    assert before["0.25"]["advantage"]["estimate"] == pytest.approx(-40 / N)
    assert before["0.25"]["verdict"]["status"] == "does not hold"
    assert found["auto"]["before"]["verdict"] == "does not hold"
    # the per-budget comparison is compare() restricted to that budget, seeded per cell
    again = alds.compare(results, "alds", "before", CFG.seed + 200 + 1, "auto", [0.25])
    assert again == before["0.25"]
    for j, budget in enumerate((0.5, 0.25)):  # "after" seeds differ from "before" ones
        again = alds.compare(results, "alds", "after", CFG.seed + 200 + 10 + j, "auto", [budget])
        saved = found["auto"]["after"]["budgets"][f"{budget:g}"]
        assert json.dumps(saved, sort_keys=True) == json.dumps(again, sort_keys=True)  # NaN p
    seeds = before["0.25"]["over_seeds"]  # 2 seeds: too few for the test over seeds
    assert seeds["status"] == "not enough units" and seeds["units"] == 2
    assert seeds["statistic"] == pytest.approx(-40 / N)
    assert [u["estimate"] for u in seeds["per_unit"]] == pytest.approx([-40 / N, -40 / N])
    alone = [stats.paired_bootstrap(
        [unpack_correct(r["before"]["test_correct"]) for r in res["rows"]
         if r["method"] == "auto" and r["budget"] == 0.25],
        [unpack_correct(r["before"]["test_correct"]) for r in res["rows"]
         if r["method"] == "alds" and r["budget"] == 0.25], seed=CFG.seed + 201 + s)
        for s, res in enumerate(results)]  # fmt: skip
    assert [(u["low"], u["high"]) for u in seeds["per_unit"]] == [(a.low, a.high) for a in alone]
    assert (
        "auto with data's accuracy advantage over ALDS"
        in (found["auto-data"]["after"]["budgets"]["0.5"]["verdict"]["reason"])
    )
    assert alds.auto_findings(results, CFG, ["auto", "auto-data"]) == {}  # no ALDS: nothing
    whole = alds.findings(results, CFG)["auto"]
    assert json.dumps(whole, sort_keys=True) == json.dumps(found, sort_keys=True)  # NaN p


def test_the_test_over_seeds_names_the_methods_and_tests_against_zero():
    wrong = {(m, b): (0, 0) for m in ("auto", "auto-data") for b in CFG.budgets}
    results = []
    for seed in range(5):  # ALDS wrong on 1..5 images before re-training, auto-data on none
        rows = {}
        for budget in CFG.budgets:
            rows["alds", budget] = (seed + 1, 0)
            rows["uniform", budget] = rows["energy", budget] = (0, 0)
        results.append(seed_result(seed, rows))
    results = with_auto(results, wrong)
    out = alds.compare(results, "alds", "before", 4, "auto-data", [0.5])
    seeds = out["over_seeds"]
    assert seeds["units"] == 5 and seeds["status"] == "holds"
    assert seeds["statistic"] == pytest.approx(3 / N)  # mean of 1..5 images over N
    assert seeds["p_value"] == pytest.approx(1 / 32)  # all 5 signs positive
    assert seeds["reason"].startswith(
        "auto with data's accuracy advantage over ALDS lies above 0 over 5 seeds"
    )
    plain = alds.compare(results, "alds", "before", 4, "auto", [0.5])  # a name of its own
    assert plain["over_seeds"]["reason"].startswith("auto's accuracy advantage over ALDS")
    assert plain["verdict"]["reason"].startswith("the 95% interval of auto's accuracy advant")
    other = alds.compare(results, "uniform", "before", 4)
    assert other["over_seeds"]["reason"].startswith(
        "ALDS's accuracy advantage over uniform lies below 0 over 5 seeds"
    )


def test_the_seeds_note_says_what_the_verdicts_are():
    assert alds.seeds_note(3) == (
        "3 seed(s): numbers are mean ± standard deviation over seeds; each verdict is a "
        "two-stage paired bootstrap (seeds resampled, then test images within each), so its "
        "interval covers training variation only as far as the seeds sampled do; the test over "
        "seeds alone (exact sign-flip, at least 5 seeds to decide) is reported beside the "
        "automatic allocations' verdicts."
    )


def test_findings_hold_the_methods_run_and_the_recalibration_effect():
    results = with_auto(two_seeds(), {(m, b): (0, 0) for m in ("auto", "auto-data")
                                      for b in CFG.budgets})  # fmt: skip
    for res, raw in zip(results, (0.1, 0.3)):
        for r in res["rows"]:
            shift = 0.0 if r["budget"] == 0.5 else 0.4  # the 0.25 cells: 0.5 and 0.7
            r["before_raw"] = {"test_accuracy": raw + shift} if r["budget"] < 1 else None
    found = alds.findings(results, CFG)
    assert found["methods"] == ["alds", "uniform", "energy", "auto", "auto-data"]
    assert {(t["method"], t["budget"]) for t in found["table"]} == {
        (m, b) for m in found["methods"] for b in (1.0, *CFG.budgets)
    }
    effect = found["recalibration"]
    assert [(e["method"], e["budget"]) for e in effect] == [
        (m, b) for m in found["methods"] for b in (0.5, 0.25)
    ]
    assert [e["without"]["mean"] for e in effect] == pytest.approx([0.2, 0.6] * 5)
    assert effect[0]["with"]["mean"] == pytest.approx(1.0)  # ALDS right everywhere before
    dropped = [dict(res, rows=[r for r in res["rows"] if r["method"] != "auto"])
               for res in results]  # fmt: skip
    assert alds.methods_in([results[0], dropped[1]]) == ["alds", "uniform", "energy", "auto-data"]
    no_alds = [dict(res, rows=[r for r in res["rows"] if r["method"] != "alds"])
               for res in results]  # fmt: skip
    found = alds.findings(no_alds, CFG)
    assert found["comparisons"] == {"before": {}, "after": {}} and found["auto"] == {}


def test_the_test_over_seeds_bootstraps_each_seed_with_the_comparisons_seed(monkeypatch):
    seen = []
    original = alds.units.paired_unit_verdict
    monkeypatch.setattr(
        alds.units, "paired_unit_verdict", lambda *a, **k: seen.append(k) or original(*a, **k)
    )
    alds.compare(two_seeds(), "uniform", "before", seed=17)
    assert [(k["seed"], k["claim"]) for k in seen] == [(17, "above")]


def test_verdicts_are_withheld_when_a_compared_model_is_near_chance():
    results = []
    for seed in range(2):
        wrong = {}
        for budget in CFG.budgets:
            wrong["alds", budget] = (0, 0)
            wrong["uniform", budget] = (175, 0)  # 12.5 % before re-training: near chance
            wrong["energy", budget] = (20, 0)
        results.append(seed_result(seed, wrong))
    results = with_auto(results, {("auto", b): (0, 0) for b in CFG.budgets}
                        | {("auto-data", b): (0, 0) for b in CFG.budgets})  # fmt: skip
    found = alds.findings(results, CFG)
    before = found["comparisons"]["before"]
    assert before["uniform"]["verdict"]["status"] == "no verdict"
    assert "uniform at 0.5 12.5%" in before["uniform"]["verdict"]["reason"]
    assert before["energy"]["verdict"]["status"] == "holds"  # 90 %: far from chance
    assert found["verdicts"]["before"] == "no verdict"
    assert found["comparisons"]["after"]["uniform"]["verdict"]["status"] != "no verdict"
    near = alds.withheld_near_chance(
        {"verdict": {"status": "holds", "test": "t", "reason": "r", "interval": None}},
        results, ("auto", "alds"), "before", [0.25], chance=0.96,
    )  # fmt: skip
    assert near["verdict"]["status"] == "no verdict"
    assert "auto at 0.25 100.0%, ALDS at 0.25 100.0%" in near["verdict"]["reason"]
