"""The approx-error study at CI size: tau-a, the uncompressed cell, verdicts, resuming, errors."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from studies import approx_error as ae
from studies.common.data import get_dataset


@pytest.fixture(scope="module")
def data():
    return get_dataset("digits", seed=0, limit=150)


def quick_cfg(out, *extra):
    return ae.parse_args(["--quick", "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ae")
    cfg = quick_cfg(out, "--epochs", "2", "--feature-images", "64")
    report = ae.Study(cfg, load_data=lambda seed: data).run()
    return cfg, out, report


def read_cells(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["fraction"] = float(r["fraction"])
        r["repeat"] = int(r["repeat"])
        for k in (*ae.MEASURES, "perf_before", "perf_after", "test_before", "test_after"):
            r[k] = float(r[k])
    return rows


# -- tau-a --------------------------------------------------------------------------------------
def test_tau_a_monotone_anti_monotone_and_ties():
    x = np.arange(7.0)
    assert ae.tau_a(x, x**3) == 1.0
    assert ae.tau_a(x, -np.exp(x)) == -1.0
    # by hand: pairs of x=[1,2,2,3], y=[1,3,2,2]: (0,1)+ (0,2)+ (0,3)+ (1,2) x tied: 0,
    # (1,3) x up y down: -, (2,3) y tied: 0  ->  (3 - 1) / 6
    assert ae.tau_a([1, 2, 2, 3], [1, 3, 2, 2]) == pytest.approx(2 / 6)
    # without ties tau-a equals scipy's tau-b
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert ae.tau_a(a, b) == pytest.approx(sps.kendalltau(a, b).statistic)
    # bootstrap copies of one item are not paired
    assert ae.tau_a([1, 1, 2], [5, 5, 9], ids=[0, 0, 1]) == 1.0


# -- the uncompressed cell ------------------------------------------------------------------------
def test_uncompressed_cell_reproduces_the_base_model(quick_run, data):
    cfg, out, _ = quick_run
    run = ae.SeedRun(cfg, 0, data, print)
    from studies.common.checkpoints import train_or_load
    from studies.common.training import evaluate

    model, _, reused = train_or_load(
        run.build, cfg.training(0), data, run.dir / "checkpoints", run.train_kwargs()
    )
    assert reused
    model.eval()
    base = evaluate(model, data.test)
    ctx = ae.CellContext(ae.replace(cfg, finetune_epochs=0), 0, model, data)
    row = ae.run_cell(ctx, ae.Cell("conv3", "tucker2", 1.0, 0))
    assert row["test_before"] == base and row["test_after"] == base
    for m in ae.MEASURES:
        assert row[m] == 0.0, m
    # full-rank Tucker-2 (through the library, not the dense shortcut) is exact too
    conv = model.get_submodule("conv3")
    full = ae.TNConv2d.from_conv(conv, "tucker2", ranks=tuple(conv.weight.shape[:2]))
    errs = ae.weight_errors(conv.weight, full.weight)
    assert errs["weight_rel"] < 1e-5
    assert ae.feature_errors(conv, full, ctx.inputs("conv3"))["feature_rel"] < 1e-5


# -- numbers, verdicts, resuming ------------------------------------------------------------------
def test_quick_run_numbers(quick_run):
    cfg, out, report = quick_run
    rows = read_cells(out / "seed-0" / "cells.csv")
    layers = ["conv2", "conv3", "conv4"]
    assert len(rows) == len(layers) * len(cfg.methods) * len(cfg.fractions) * cfg.repeats
    assert {r["layer"] for r in rows} == set(layers)  # never the first conv nor the classifier
    for r in rows:
        assert float(r["kernel_kept"]) <= r["fraction"]  # the kernel's share of parameters
        assert int(r["params"]) < int(r["dense_params"])
        assert r["perf_before"] == pytest.approx(1 - r["test_before"])
        assert 0 <= r["weight_rel"] < 1.5
    # Tucker-2 and TT truncations are nested: more parameters, less weight error; deterministic
    for method in ("tucker2", "tt"):
        for layer in layers:
            sel = sorted(
                (r for r in rows if r["method"] == method and r["layer"] == layer),
                key=lambda r: r["fraction"],
            )
            assert sel[0]["weight_rel"] > sel[-1]["weight_rel"]
            same = [r for r in sel if r["fraction"] == sel[0]["fraction"]]
            assert len({r["weight_rel"] for r in same}) == 1
            assert len({r["test_before"] for r in same}) == 1
    text = report.read_text()
    assert "## tau beside the paper's" in text and "0.82" in text
    for name in ("scatter_method_before", "scatter_layer_after"):
        assert (out / "seed-0" / f"{name}.png").stat().st_size > 1000


def test_verdicts_recomputed_from_the_saved_table(quick_run):
    cfg, out, report = quick_run
    found = json.loads((out / "findings.json").read_text())
    text = report.read_text()
    rows = read_cells(out / "seed-0" / "cells.csv")
    assert text.index("**CI size, not evidence") < text.index("Base model")  # a --quick run
    assert "equivalence margin +0.05" in text
    for subset, fractions in (("all", None), ("paper", ae.PAPER_FRACTIONS)):
        groups = {}
        for r in rows:
            if fractions is None or any(math.isclose(r["fraction"], f) for f in fractions):
                groups.setdefault((r["layer"], r["method"], r["fraction"]), []).append(r)
        configs = [sorted(g, key=lambda r: r["repeat"]) for g in groups.values()]
        rng = np.random.default_rng(cfg.seed)
        samples = [[c[int(rng.integers(len(c)))] for c in configs] for _ in range(cfg.pseudo_runs)]
        for perf in ae.PERF:
            v = found["verdicts"][f"{subset}/{perf}"]
            x = [[r["weight_rel"] for r in s] for s in samples]
            y = [[r[f"perf_{perf}"] for r in s] for s in samples]
            p_up = max(sps.kendalltau(a, b, alternative="greater").pvalue for a, b in zip(x, y))
            p_down = max(sps.kendalltau(a, b, alternative="less").pvalue for a, b in zip(x, y))
            taus = []
            for a, b in zip(x, y):
                n = len(a)
                s = sum(
                    np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
                    for i in range(n)
                    for j in range(i + 1, n)
                )
                taus.append(s / (n * (n - 1) / 2))
            assert v["p_value"] == pytest.approx(p_up)
            assert v["statistic"] == pytest.approx(np.mean(taus))
            # one seed: the "no better" parts cannot be decided, so the finding is not
            # "holds"; a negative correlation still makes it "does not hold"
            status = "does not hold" if p_down < 0.05 else "not enough units"
            assert v["status"] == status
            label = "all levels" if subset == "all" else "paper's levels"
            assert f"{label}" in text and f"{perf} fine-tuning: {status}**" in text
            # the pooled table's rel. weight tau is the verdict's statistic
            table = found["tables"][subset]["all"][perf]["weight_rel"]
            assert table["values"] == pytest.approx(taus)


def test_rerun_resumes_without_recomputing(quick_run, data, capsys):
    cfg, out, _ = quick_run
    cells = out / "seed-0" / "cells.jsonl"
    before = (cells.stat().st_mtime_ns, cells.read_bytes())
    ae.Study(cfg, load_data=lambda seed: data).run()
    assert (cells.stat().st_mtime_ns, cells.read_bytes()) == before
    assert "(0 computed, 36 reused)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--fractions", "0,0.5"], "--fractions"),
        (["--methods", "svd"], "--methods"),
        (["--repeats", "0"], "--repeats"),
        (["--dataset", "cifar10"], "needs --data-dir"),
    ],
)
def test_bad_arguments_one_line_exit_2(argv, fragment, capsys, tmp_path):
    code = ae.main([*argv, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err
    assert not (tmp_path / "x").exists()


# -- BatchNorm recalibration ---------------------------------------------------------------------
def test_cells_of_a_batchnorm_model_are_scored_after_recalibration(data):
    import copy

    import tensornet.nn as tnn
    from models import build_model
    from studies.common.calibration import calibration_batches
    from studies.common.training import evaluate
    from tensornet.weights import replace_module

    torch.manual_seed(0)
    model = build_model("garipov", 1, 10, 8).eval()
    cfg = ae.Config(finetune_epochs=0, feature_images=32, calibration_batches=2, batch_size=16)
    assert cfg.recalibrate_bn  # the default
    ctx = ae.CellContext(cfg, 3, model, data)
    layer = ae.middle_layers(model)[0]
    row = ae.run_cell(ctx, ae.Cell(layer, "tucker2", 0.25, 0))
    approx = copy.deepcopy(model)
    replace_module(approx, layer, ae.decompose(model.get_submodule(layer), "tucker2", 0.25, 0))
    assert row["test_before_raw"] == evaluate(approx, data.test)
    batches = calibration_batches(data.train, 3, 16, 2)
    assert [len(b) for b in batches] == [16, 16]
    tnn.recalibrate_bn(approx, batches, progress=False)
    assert (row["val_before"], row["test_before"]) == (
        evaluate(approx, data.val),
        evaluate(approx, data.test),
    )
    assert row["test_after"] == row["test_before"]  # no fine-tuning: recalibrated alike
    assert row["test_before"] != row["test_before_raw"]  # the statistics made a difference
    off = ae.run_cell(ae.CellContext(ae.Config(finetune_epochs=0, feature_images=32,
                                               recalibrate_bn=False), 3, model, data),
                      ae.Cell(layer, "tucker2", 0.25, 0))  # fmt: skip
    assert "test_before_raw" not in off and off["test_before"] == row["test_before_raw"]
    cfg = quick_cfg("x", "--no-recalibrate-bn", "--calibration-batches", "3")
    assert (cfg.recalibrate_bn, cfg.calibration_batches) == (False, 3)
    assert {"recalibrate_bn": False, "calibration_batches": 3}.items() <= cfg.cells(0).items()
