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
    assert cfg.methods == alds.ALL_METHODS and cfg.auto_formats == alds.QUICK_AUTO_FORMATS
    assert {(r["method"], r["budget"]) for r in rows} == {
        (m, b) for m in alds.ALL_METHODS for b in (1.0, *cfg.budgets)
    }
    for r in rows:
        target = r["budget"] * r["model_params"]
        assert abs(r["params"] / target - 1) <= 0.01, (r["method"], r["budget"])
        assert r["params"] <= target + 1e-9
        layers = r["layers"]
        fixed = r["model_params"] - sum(lay["dense_params"] for lay in layers)
        assert fixed + sum(lay["params"] for lay in layers) == r["params"]
        assert r["params"] == r["allocated_params"]
        if r["method"] in alds.AUTO_METHODS:
            continue
        # the saved ranks and groups give the measured parameter count: j (k f + c k1 k2)
        assert fixed + sum(alds.grouped_formula(lay) for lay in layers) == r["params"]
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
    labels = (("before", "Compress-only"), ("after", "After re-training"))
    for i, (phase, label) in enumerate(labels):
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
            near = [  # a compared model within 5 points of chance (10 classes) withholds it
                r[phase]["test_accuracy"] <= 0.15
                for r in rows
                if r["method"] in ("alds", other) and r["budget"] in budgets
            ]
            status = stats.NO_VERDICT if any(near) else status
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
        overall = (  # does not hold > no verdict > not significant > holds
            stats.DOES_NOT_HOLD
            if stats.DOES_NOT_HOLD in statuses
            else stats.NO_VERDICT
            if stats.NO_VERDICT in statuses
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
    assert "cells: 0 computed, 15 reused" in printed
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
        (["--methods", "alds,magic"], "--methods"),
        (["--methods", "alds,alds"], "distinct methods"),
        (["--calibration-batches", "0"], "--calibration-batches"),
        (["--auto-formats", "svd,peps"], "--auto-formats"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, fragment, capsys, tmp_path):
    code = alds.main([*argv, "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and fragment in err, err
    assert not (tmp_path / "never").exists()


# -- auto methods and BatchNorm recalibration ----------------------------------------------------
def test_the_auto_finding_is_recomputed_from_the_saved_cells(quick_run):
    cfg, out, report = quick_run
    found = json.loads((out / "findings.json").read_text())
    rows = cells(out)
    assert sorted(found["auto"]) == ["auto", "auto-data"]
    for a, method in enumerate(("auto-data", "auto")):
        for i, phase in enumerate(("before", "after")):
            statuses = []
            for j, budget in enumerate(sorted(cfg.budgets, reverse=True)):
                pick = {r["method"]: r for r in rows if r["budget"] == budget}
                mine = unpack_correct(pick[method][phase]["test_correct"])
                theirs = unpack_correct(pick["alds"][phase]["test_correct"])
                iv = stats.paired_bootstrap(
                    [mine], [theirs], seed=cfg.seed + 100 * (a + 1) + 10 * i + j
                )
                saved = found["auto"][method][phase]["budgets"][f"{budget:g}"]
                assert saved["advantage"]["estimate"] == pytest.approx(mine.mean() - theirs.mean())
                assert (saved["advantage"]["low"], saved["advantage"]["high"]) == pytest.approx(
                    (iv.low, iv.high)
                )
                statuses.append(saved["verdict"]["status"])
            assert found["auto"][method][phase]["verdict"] == stats.all_hold(statuses)
    text = report.read_text()
    assert "## Finding: `auto` keeps at least ALDS's test accuracy at every budget" in text
    assert "**`auto` with data vs ALDS.** compress-only: **" in text


def test_compressed_cells_are_scored_after_recalibration_and_without_it(quick_run):
    cfg, out, report = quick_run
    assert cfg.recalibrate_bn and cfg.calibration_batches == 8
    found = json.loads((out / "findings.json").read_text())
    rows = cells(out)
    for r in rows:
        compressed = any(lay["format"] != "dense" for lay in r["layers"])
        assert (r["before_raw"] is not None) == compressed, (r["method"], r["budget"])
    effect = {(e["method"], e["budget"]): e for e in found["recalibration"]}
    for r in rows:
        if r["before_raw"] is not None:
            e = effect[r["method"], r["budget"]]
            assert e["without"]["mean"] == r["before_raw"]["test_accuracy"]
            assert e["with"]["mean"] == r["before"]["test_accuracy"]
    assert "Its effect on the compress-only test accuracy" in report.read_text()


def _context(cfg, data, width=4):
    torch.manual_seed(0)
    model = alds.build_resnet(width, data.in_channels, data.num_classes).eval()
    return alds.CellContext(cfg, 0, model, data)


def test_auto_cells_reuse_the_candidates_and_choose_as_a_fresh_allocation(data):
    import tensornet.nn as tnn

    ctx = _context(alds.Config(auto_formats=("svd", "tucker2")), data)
    first = ctx.allocate("auto", 0.5)
    second = ctx.allocate("auto", 0.3)
    assert ctx.frontiers == {"auto": first}
    kw = {"example_input": ctx.example, "progress": False, "formats": ("svd", "tucker2")}
    fresh = tnn.allocate(ctx.model, 0.3, "auto", **kw)
    assert second.layers == fresh.layers and second.total_params == fresh.total_params
    with_data = ctx.allocate("auto-data", 0.5)
    assert ctx.frontiers["auto-data"] is with_data
    scored = tnn.allocate(ctx.model, 0.5, "auto", data=ctx.calibration(), **kw)
    assert with_data.layers == scored.layers
    assert with_data.frontiers != first.frontiers  # output errors, not weight errors


def test_calibration_batches_and_recalibrated_scores(data):
    import tensornet.nn as tnn

    cfg = alds.Config(batch_size=16, calibration_batches=3)
    ctx = _context(cfg, data)
    batches = ctx.calibration()
    assert [len(b) for b in batches] == [16, 16, 16]
    x = data.train.tensors[0]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat(batches), x[order[:48]])
    assert all(torch.equal(a, b) for a, b in zip(batches, ctx.calibration()))
    model = ctx.model
    reference = __import__("copy").deepcopy(model)
    tnn.recalibrate_bn(reference, batches, progress=False)
    reference.eval()
    assert ctx.recalibrated_scores(model) == ctx.scores(reference)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    ref_bn = next(m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, ref_bn.running_mean)
    off = _context(alds.Config(recalibrate_bn=False), data)
    kept = off.model.state_dict()
    assert off.recalibrated_scores(off.model) == off.scores(off.model)
    assert all(torch.equal(kept[k], v) for k, v in off.model.state_dict().items())


def test_methods_subset_runs_only_those_cells_and_findings(tmp_path, data):
    cfg = alds.parse_args(
        ["--quick", "--limit", "300", "--out", str(tmp_path), "--methods", "auto,alds",
         "--budgets", "0.5", "--retrain-epochs", "0", "--no-recalibrate-bn", "--epochs", "1",
         "--auto-formats", "svd,tucker2"]
    )  # fmt: skip
    assert cfg.methods == ("alds", "auto") and not cfg.recalibrate_bn
    assert cfg.auto_formats == ("svd", "tucker2")
    alds.Study(cfg, load_data=lambda seed: data).run()
    found = json.loads((tmp_path / "findings.json").read_text())
    assert found["methods"] == ["alds", "auto"]
    assert sorted(found["auto"]) == ["auto"] and found["comparisons"]["before"] == {}
    assert found["recalibration"] == []
    rows = cells(tmp_path)
    assert all(r["before_raw"] is None for r in rows)
    used = {lay["format"] for r in rows if r["method"] == "auto" for lay in r["layers"]}
    assert used <= {"svd", "tucker2", "dense"} and used != {"dense"}
    assert "no recalibration, `--no-recalibrate-bn`" in (tmp_path / "report.md").read_text()


def test_run_cell_records_the_allocation_the_scores_and_the_retraining(data):
    import copy

    import tensornet.nn as tnn
    from studies.common.calibration import recalibrated
    from studies.common.training import split_scores

    cfg = alds.Config(auto_formats=("svd",), retrain_epochs=2, calibration_batches=2,
                      batch_size=16, iterations=1, random_starts=0)  # fmt: skip
    ctx = _context(cfg, data, width=2)
    for method in ("alds", "auto-data"):
        row = alds.run_cell(ctx, (method, 0.5))
        alloc = ctx.allocate(method, 0.5)  # auto-data: the same choice again, from its frontiers
        assert (row["key"], row["method"], row["budget"]) == (f"{method}\t0.5", method, 0.5)
        assert row["target_params"] == alloc.budget and row["model_params"] == alloc.model_params
        assert row["params"] == row["allocated_params"] == alloc.total_params
        assert (row["flops"], row["model_flops"]) == (alloc.total_flops, alloc.model_flops)
        expected_error = alloc.max_error if method == "alds" else alloc.max_spectral_error
        assert row["max_error"] == expected_error
        assert [lay["name"] for lay in row["layers"]] == list(alloc.layers)
        for lay, c in zip(row["layers"], alloc.layers.values()):
            assert (lay["format"], lay["label"], lay["ranks"], lay["k"], lay["params"]) == (
                c.format, c.label, list(c.ranks), c.groups, c.params)  # fmt: skip
            assert lay["j"] == (c.ranks[0] if c.ranks else 0)
            assert (lay["error"], lay["spectral_error"], lay["frobenius_error"]) == (
                c.error, c.spectral_error, c.frobenius_error)  # fmt: skip
            assert lay["dense_params"] == c.dense_params
            assert lay["shape"] == list(ctx.model.get_submodule(c.name).weight.shape)
        batches = ctx.calibration() if method == "auto-data" else None
        small, rep = tnn.compress(ctx.model, allocation=alloc, example_input=ctx.example,
                                  measure_time=False, data=batches)  # fmt: skip
        assert row["plan_flops"] == [rep.flops_before, rep.flops_after]
        assert row["before_raw"] == split_scores(small.eval(), data)
        assert row["before"] == split_scores(recalibrated(copy.deepcopy(small),
                                                          ctx.calibration()), data)  # fmt: skip
        assert [h["epoch"] for h in row["retrain"]] == [1, 2]
        best = max(row["retrain"], key=lambda h: (h["val_accuracy"], -h["epoch"]))
        assert row["after"]["epoch"] == best["epoch"]
        assert row["after"]["test_accuracy"] == best["test_accuracy"]
        assert row["seconds"] > 0
    dense = alds.run_cell(ctx, ("alds", 1.0))  # nothing compressed: the model itself
    assert dense["before_raw"] is None and dense["retrain"] == [] and dense["plan_flops"] is None
    assert dense["before"] == split_scores(ctx.model, data)
    assert dense["after"] == {"epoch": 0, **dense["before"]}


def test_cells_pass_the_studys_settings_to_allocate_compress_and_train(data, monkeypatch):
    from studies import alds_cells

    calls = {"allocate": [], "compress": [], "train": []}
    for name, module in (("allocate", alds_cells.tnn), ("compress", alds_cells.tnn),
                         ("train", alds_cells)):  # fmt: skip
        original = getattr(module, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name].append((args, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    cfg = alds.Config(auto_formats=("svd",), retrain_epochs=1, calibration_batches=2,
                      batch_size=16, iterations=2, random_starts=3, retrain_lr=3e-4)  # fmt: skip
    ctx = _context(cfg, data, width=2)
    ctx.seed = 5
    assert ctx.example.shape[0] == 1  # FLOPs are per image
    row = alds.run_cell(ctx, ("alds", 0.5))
    (args, kw), = calls["allocate"]  # fmt: skip
    assert args == (ctx.model, 0.5, "alds") and kw["example_input"] is not None
    assert {k: kw[k] for k in ("error", "iterations", "seeds", "seed", "progress")} == {
        "error": "proxy",
        "iterations": 2,
        "seeds": 3,
        "seed": 5,
        "progress": False,
    }
    (args, kw), = calls["compress"]  # fmt: skip
    assert kw["data"] is None and kw["measure_time"] is False
    (args, kw), = calls["train"]  # fmt: skip
    assert {k: kw[k] for k in ("epochs", "lr", "batch_size", "seed", "device", "progress")} == {
        "epochs": 1,
        "lr": 3e-4,
        "batch_size": 16,
        "seed": 1006,
        "device": "cpu",
        "progress": False,
    }
    assert 0 < row["seconds"] < 60
    for c in calls.values():
        c.clear()
    for budget in (0.6, 0.5):
        alds.run_cell(ctx, ("auto-data", budget))
    first, second = calls["allocate"]
    assert first[0] == (ctx.model, 0.6, "auto") and second[0] == (ctx.model, 0.5, "auto")
    assert first[1]["formats"] == ("svd",) and first[1]["progress"] is False
    assert [torch.equal(a, b) for a, b in zip(first[1]["data"], ctx.calibration())] == [True] * 2
    assert second[1]["reuse"] is ctx.frontiers["auto-data"] and "data" not in second[1]
    assert second[1]["progress"] is False
    assert all(len(kw["data"]) == 2 for _, kw in calls["compress"])


def test_cells_without_recalibration_or_retraining(data):
    cfg = alds.Config(auto_formats=("svd",), retrain_epochs=0, recalibrate_bn=False,
                      batch_size=16, iterations=1, random_starts=0)  # fmt: skip
    ctx = _context(cfg, data, width=2)
    row = alds.run_cell(ctx, ("alds", 0.5))
    assert row["before_raw"] is None and row["retrain"] == []
    assert row["after"] == {"epoch": 0, **row["before"]}
    import tensornet.nn as tnn
    from studies.common.training import split_scores

    small, _ = tnn.compress(ctx.model, allocation=ctx.allocate("alds", 0.5),
                            example_input=ctx.example, measure_time=False)  # fmt: skip
    assert row["before"] == split_scores(small.eval(), data)  # the statistics as trained
    once = alds.run_cell(_context(alds.Config(**{**cfg.__dict__, "retrain_epochs": 1}), data,
                                  width=2), ("alds", 0.5))  # fmt: skip
    assert [h["epoch"] for h in once["retrain"]] == [1] and once["after"]["epoch"] == 1


def test_grouped_formula_and_map_cells(data):
    conv = {"format": "grouped", "j": 3, "k": 2, "shape": [8, 4, 3, 5], "dense_params": 480}
    assert alds.grouped_formula(conv) == 3 * (2 * 8 + 4 * 15)
    linear = {"format": "grouped", "j": 2, "k": 1, "shape": [10, 6], "dense_params": 60}
    assert alds.grouped_formula(linear) == 2 * (10 + 6)
    assert alds.grouped_formula({**conv, "format": "dense"}) == 480
    ctx = _context(alds.Config(), data, width=2)
    rows = list(alds.map_cells(ctx, [("alds", 1.0), ("uniform", 1.0)], None))
    assert [r["key"] for r in rows] == ["alds\t1", "uniform\t1"]
    direct = alds.run_cell(ctx, ("uniform", 1.0))
    assert {k: v for k, v in rows[1].items() if k != "seconds"} == {
        k: v for k, v in direct.items() if k != "seconds"
    }  # each cell is run_cell's row


def test_the_report_says_when_no_compressed_budget_qualified(quick_run):
    _, out, report = quick_run
    found = json.loads((out / "findings.json").read_text())
    text = report.read_text()
    none = [
        f"{m} ({label})"
        for phase, label in (("before", "compress-only"), ("after", "one-shot"))
        for m in found["methods"]
        if all(p[m]["budget"] == 1.0 for p in found["paper_number"][phase])
    ]
    sentence = "No compressed budget qualified in any seed for: "
    if none:
        assert f"{sentence}{', '.join(none)}; their row is the uncompressed model" in text
    else:
        assert sentence not in text
    assert "**Compress-only (r = 0, before re-training):" in text
    assert "**After re-training (one-shot, r = e):" in text
