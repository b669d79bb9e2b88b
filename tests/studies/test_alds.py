"""The ALDS study end to end at CI size: budgets met, formulas, verdicts, resuming, bad input."""

import json

import numpy as np
import pytest
import torch

from studies import alds
from studies.common import stats
from studies.common.data import get_dataset
from studies.common.training import unpack_correct

LIMIT = 300


@pytest.fixture(scope="module")
def data():
    return get_dataset("digits", seed=0, limit=LIMIT)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("alds")
    cfg = alds.parse_args(["--quick", "--limit", str(LIMIT), "--out", str(out), "--device", "cpu"])
    report = alds.Study(cfg, load_data=lambda seed: data).run()
    return cfg, out, report


def cells(out):
    lines = (out / "seed-0" / "cells.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows[0]["kind"] == "config"
    return rows[1:]


def test_budgets_met_and_params_follow_the_formula(quick_run):
    cfg, out, _ = quick_run
    rows = cells(out)
    assert {(r["method"], r["budget"]) for r in rows} == {
        (m, b) for m in alds.METHODS for b in (1.0, *cfg.budgets)
    }
    for r in rows:
        target = r["budget"] * r["model_params"]
        assert abs(r["params"] / target - 1) <= 0.01, (r["method"], r["budget"])
        assert r["params"] <= target + 1e-9
        # the saved ranks and groups give the measured parameter count: j (k f + c k1 k2)
        layers = r["layers"]
        fixed = r["model_params"] - sum(lay["dense_params"] for lay in layers)
        assert fixed + sum(alds.grouped_formula(lay) for lay in layers) == r["params"]
        assert r["params"] == r["allocated_params"]
        if r["method"] != "alds":
            assert all(lay["k"] == 1 for lay in layers)
        # FLOPs are those of the plans the compressed layers run (compress's report agrees);
        # by parameters, a grouped layer may well run its dense plan and cost more than dense
        if r["plan_flops"] is not None:
            before, after = r["plan_flops"]
            assert r["flops"] == r["model_flops"] - before + after
        else:
            assert r["flops"] == r["model_flops"]
    assert any(lay["k"] > 1 for r in rows if r["method"] == "alds" for lay in r["layers"])


def test_uncompressed_cell_reproduces_the_base_model(quick_run):
    _, out, _ = quick_run
    found = json.loads((out / "findings.json").read_text())
    for r in cells(out):
        if r["budget"] == 1.0:
            assert all(lay["format"] == "dense" for lay in r["layers"])
            assert r["params"] == r["model_params"]
            assert r["before"]["test_accuracy"] == found["base"][0]
            assert r["before"]["val_accuracy"] == found["base_val"][0]
            assert r["after"]["test_accuracy"] == found["base"][0]


def test_verdicts_recomputed_from_the_saved_table(quick_run):
    cfg, out, report = quick_run
    found = json.loads((out / "findings.json").read_text())
    rows = cells(out)
    text = report.read_text()
    budgets = sorted(cfg.budgets, reverse=True)
    for i, (phase, label) in enumerate((("before", "One-shot"), ("after", "After re-training"))):
        statuses = []
        for j, other in enumerate(alds.METHODS[1:]):

            def mean_correct(method, phase=phase):
                picked = [
                    unpack_correct(r[phase]["test_correct"])
                    for b in budgets
                    for r in rows
                    if r["method"] == method and r["budget"] == b
                ]
                assert len(picked) == len(budgets)
                return np.mean(picked, axis=0)

            iv = stats.paired_bootstrap(
                [mean_correct("alds")], [mean_correct(other)], seed=cfg.seed + 10 * i + j
            )
            status = (
                stats.HOLDS
                if iv.low > 0
                else stats.DOES_NOT_HOLD
                if iv.high < 0
                else stats.NOT_SIGNIFICANT
            )
            saved = found["comparisons"][phase][other]
            assert saved["verdict"]["status"] == status
            assert saved["advantage"]["estimate"] == pytest.approx(iv.estimate)
            diffs = [
                next(r for r in rows if r["method"] == "alds" and r["budget"] == b)[phase][
                    "test_accuracy"
                ]
                - next(r for r in rows if r["method"] == other and r["budget"] == b)[phase][
                    "test_accuracy"
                ]
                for b in budgets
            ]
            assert saved["cell_differences"] == pytest.approx(diffs)
            statuses.append(status)
        overall = (
            stats.DOES_NOT_HOLD
            if stats.DOES_NOT_HOLD in statuses
            else stats.HOLDS
            if set(statuses) == {stats.HOLDS}
            else stats.NOT_SIGNIFICANT
        )
        assert found["verdicts"][phase] == overall
        assert f"**{label}" in text and f": {overall}.**" in text


def test_paper_number_chosen_on_validation(quick_run):
    cfg, out, _ = quick_run
    found = json.loads((out / "findings.json").read_text())
    rows = cells(out)
    base_val, base_test = found["base_val"][0], found["base"][0]
    for phase in ("before", "after"):
        pick = found["paper_number"][phase][0]
        for method in alds.METHODS:
            ok = [
                r
                for r in rows
                if r["method"] == method
                and (r["budget"] == 1.0 or r[phase]["val_accuracy"] >= base_val - cfg.max_drop)
            ]
            best = min(ok, key=lambda r: r["params"])
            assert pick[method]["budget"] == best["budget"]
            assert pick[method]["test_drop"] == pytest.approx(
                base_test - best[phase]["test_accuracy"]
            )


def test_rerun_resumes_without_recomputing(quick_run, data, capsys):
    cfg, out, _ = quick_run
    path = out / "seed-0" / "cells.jsonl"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    capsys.readouterr()
    alds.Study(cfg, load_data=lambda seed: data).run()
    printed = capsys.readouterr().out
    assert "cells: 0 computed, 9 reused" in printed
    assert "reused checkpoint" in printed
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert (out / "seed-0" / "allocations.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--budgets", "1.5"], "--budgets"),
        (["--budgets", "0.5,0.5"], "distinct"),
        (["--epochs", "-1"], "--epochs"),
        (["--max-drop", "2"], "--max-drop"),
        (["--data-dir", "somewhere"], "--data-dir"),
        (["--dataset", "cifar10"], "needs --data-dir"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, fragment, capsys, tmp_path):
    code = alds.main([*argv, "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and fragment in err, err
    assert not (tmp_path / "never").exists()
