"""The ALDS report's sections for the automatic allocations and BatchNorm recalibration."""

import types

from studies.alds_report import auto_section, recalibration_section


def _comparison(estimate, status, seeds_status="not enough units"):
    iv = {"estimate": estimate, "low": estimate - 0.01, "high": estimate + 0.01,
          "level": 0.95, "method": "percentile"}  # fmt: skip
    seeds = {**iv, "low": estimate - 0.05, "high": estimate + 0.05, "method": "t"}
    return {
        "advantage": iv, "wins": 3, "ties": 0, "losses": 0, "wilcoxon_p": 0.125,
        "verdict": {"status": status}, "over_seeds": {"status": seeds_status, "interval": seeds},
    }  # fmt: skip


def _phases(before, after):
    return {
        "before": {"budgets": {"0.5": _comparison(0.2, before)}, "verdict": before},
        "after": {"budgets": {"0.5": _comparison(0.1, after)}, "verdict": after},
    }


def test_auto_section_one_table_per_method_with_both_tests():
    found = {"auto": {"auto-data": _phases("holds", "not significant"),
                      "auto": _phases("does not hold", "holds")}}  # fmt: skip
    text = "\n".join(auto_section(found))
    assert text.startswith("## Finding: `auto` keeps at least ALDS's test accuracy")
    assert "**`auto` with data vs ALDS.** compress-only: **holds**, re-trained: **not " in text
    assert (
        "**`auto` (weights only) vs ALDS.** compress-only: **does not hold**, re-trained: " in text
    )
    assert text.index("`auto` with data vs") < text.index("`auto` (weights only) vs")
    rows = [line for line in text.splitlines() if line.startswith("| compress-only")]
    assert rows[0] == (
        "| compress-only | 0.5 | 20.00 points, 95% interval [19.00, 21.00] | 3/0/0 | 0.125 | "
        "holds | 20.00, 95% interval [15.00, 25.00] | not enough units |"
    )
    assert "| re-trained | 0.5 | 10.00 points" in text and len(rows) == 2
    assert "| phase | budget | advantage | seeds won/tied/lost | Wilcoxon p | verdict |" in text
    assert "at least 5 seeds to decide" in text
    assert auto_section({"auto": {}}) == []


def test_recalibration_section_on_and_off():
    on = types.SimpleNamespace(recalibrate_bn=True, calibration_batches=4, batch_size=32)
    spread = {"mean": 0.5, "std": 0.1, "low": 0.4, "high": 0.6, "n": 3}
    found = {"recalibration": [{"method": "alds", "budget": 0.25, "without": spread,
                                "with": {**spread, "mean": 0.9}}]}  # fmt: skip
    text = "\n".join(recalibration_section(on, found))
    assert "on 4 training batches of 32" in text
    assert "| alds | 0.25 | 50.00 ± 10.00 | 90.00 ± 10.00 |" in text
    off = types.SimpleNamespace(recalibrate_bn=False)
    assert "`--no-recalibrate-bn`" in recalibration_section(off, found)[0]


INTRO = (
    '`auto` is `tensornet.nn.allocate(method="auto")`: per layer every format (svd, grouped, '
    "Tucker-2, Tucker, TT in three mode orders, HT, TR, CP, or dense) at a grid of ranks; the "
    "global choice minimises the sum of squared relative layer errors under the parameter "
    "budget. *With data*, each candidate's error is its layer's output error on the "
    "calibration batches and svd / Tucker-2 factors are whitened by them. Per budget and "
    "phase: the 95 % paired-bootstrap interval (seeds, then test images) of its test-accuracy "
    "advantage over ALDS; *holds* when it lies above 0, *does not hold* when below 0, *not "
    "significant* otherwise; the one-sided Wilcoxon p over the seeds' cells beside. The "
    "finding holds in a phase when it holds at every budget. Beside it, the test over seeds "
    "alone (one value per seed, its mean advantage; an exact sign-flip test, which needs at "
    "least 5 seeds to decide, and the 95 % t interval over seeds)."
)
HEAD = (
    "| phase | budget | advantage | seeds won/tied/lost | Wilcoxon p | verdict | over seeds: "
    "t interval | test over seeds |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def test_auto_section_is_this_text_line_by_line():
    """The whole section, pinned (a method without a label is named as it is)."""
    found = {"auto": {"auto-data": _phases("holds", "not significant"),
                      "other": _phases("holds", "holds")}}  # fmt: skip
    rows = {
        "before": "| compress-only | 0.5 | 20.00 points, 95% interval [19.00, 21.00] | 3/0/0 | "
        "0.125 | holds | 20.00, 95% interval [15.00, 25.00] | not enough units |\n",
        "after": "| re-trained | 0.5 | 10.00 points, 95% interval [9.00, 11.00] | 3/0/0 | 0.125 "
        "| {} | 10.00, 95% interval [5.00, 15.00] | not enough units |",
    }
    assert auto_section(found) == [
        "## Finding: `auto` keeps at least ALDS's test accuracy at every budget", "", INTRO, "",
        "**`auto` with data vs ALDS.** compress-only: **holds**, re-trained: **not significant**.",
        "", HEAD + rows["before"] + rows["after"].format("not significant"), "",
        "**other vs ALDS.** compress-only: **holds**, re-trained: **holds**.", "",
        HEAD + rows["before"] + rows["after"].format("holds"), "",
    ]  # fmt: skip


def test_recalibration_section_is_this_text():
    on = types.SimpleNamespace(recalibrate_bn=True, calibration_batches=4, batch_size=32)
    spread = {"mean": 0.5, "std": 0.1, "low": 0.4, "high": 0.6, "n": 3}
    found = {"recalibration": [{"method": "alds", "budget": 0.25, "without": spread,
                                "with": {**spread, "mean": 0.9123}}]}  # fmt: skip
    assert recalibration_section(on, found) == [
        "- Every compressed model is scored after recomputing its BatchNorm statistics on 4 "
        "training batches of 32 (no labels, no weight change: `tensornet.nn.recalibrate_bn`), "
        "after compression and again after re-training. Its effect on the compress-only test "
        "accuracy (%, mean ± std over seeds):",
        "",
        "| method | budget | without | with |\n| --- | --- | --- | --- |\n"
        "| alds | 0.25 | 50.00 ± 10.00 | 91.23 ± 10.00 |",
        "",
    ]
    off = types.SimpleNamespace(recalibrate_bn=False)
    assert recalibration_section(off, found) == [
        "- Compressed models are scored with the BatchNorm statistics of the trained model (no "
        "recalibration, `--no-recalibrate-bn`): a model near chance has collapsed.",
        "",
    ]
