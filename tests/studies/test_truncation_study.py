"""The truncation study end to end at CI size: its numbers, its report, and resuming."""

import csv
import json
import shutil

import pytest

from studies import truncation
from studies.common.checkpoints import read_metadata
from studies.common.data import get_dataset


@pytest.fixture(scope="module")
def data():
    return get_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("run")
    cfg = truncation.parse_args(["--quick", "--out", str(out), "--device", "cpu"])
    report = truncation.Study(cfg).run(data)
    return cfg, out, report


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_quick_run_numbers_are_consistent(quick_run):
    cfg, out, report = quick_run
    rows = read_csv(out / "sweep.csv")
    combined = json.loads((out / "combined.json").read_text())
    base = combined["config"]["base_accuracy"]
    checkpoint = next((out / "checkpoints").glob("*.safetensors"))
    # the untruncated model's accuracy is the trained model's, as recorded at training time
    assert read_metadata(checkpoint)["test_accuracy"] == pytest.approx(base, abs=1e-9)
    by_pair = {}
    for r in rows:
        by_pair.setdefault((r["layer"], r["cut"]), []).append(r)
    assert len(by_pair) == 4 * len(cfg.cuts)
    for group in by_pair.values():
        group.sort(key=lambda r: int(r["chi"]))
        errors = [float(r["rel_error"]) for r in group]
        assert errors == sorted(errors, reverse=True)  # errors fall as chi grows
        full = group[-1]
        assert int(full["chi"]) == int(full["chi_max"])
        assert float(full["rel_error"]) < 1e-6  # full rank: no error ...
        assert float(full["accuracy"]) == pytest.approx(base, abs=1e-12)  # ... and same accuracy
    # projected re-training: every planned cut still has at most its planned chi
    aggressive = combined["aggressive"]
    assert aggressive["plan"] and len(aggressive["retrain_accuracy"]) == cfg.retrain_epochs
    for layer, steps in aggressive["plan"].items():
        for (_, chi), rank in zip(steps, aggressive["ranks_after_retrain"][layer]):
            assert rank <= chi
    text = report.read_text()
    for finding in ("**1.", "**2.", "**3."):
        assert finding in text
    # the findings quote this run's numbers, not placeholders
    assert f"gives accuracy {combined['safe']['accuracy']:.4f}" in text
    assert f"drops accuracy from {base:.4f} to {aggressive['accuracy']:.4f}" in text
    assert ", ".join(f"{a:.4f}" for a in aggressive["retrain_accuracy"]) in text
    per_cut = [r for r in rows if int(r["chi"]) < int(r["chi_max"])]
    assert per_cut and all(0 < float(r["norm_kept"]) < 1 for r in per_cut)
    assert f"{base:.4f}" in text
    for png in (
        "entropy_heatmap.png",
        "accuracy_vs_chi.png",
        "accuracy_vs_norm.png",
        "recovery.png",
    ):
        assert (out / png).stat().st_size > 1000


def test_rerun_reuses_everything(quick_run, data, capsys):
    cfg, out, _ = quick_run
    before = (out / "sweep.csv").read_text()
    truncation.Study(cfg).run(data)
    assert "reused checkpoint" in capsys.readouterr().out
    assert (out / "sweep.csv").read_text() == before


def test_interrupted_sweep_resumes_to_identical_results(quick_run, data, tmp_path, monkeypatch):
    cfg, out, _ = quick_run
    fresh = tmp_path / "resume"
    fresh.mkdir()
    shutil.copytree(out / "checkpoints", fresh / "checkpoints")  # same trained model
    cfg2 = truncation.parse_args(["--quick", "--out", str(fresh), "--device", "cpu"])
    study = truncation.Study(cfg2)
    calls = {"n": 0}
    real = truncation.Study.accuracy

    def flaky(self, model):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real(self, model)

    monkeypatch.setattr(truncation.Study, "accuracy", flaky)
    with pytest.raises(KeyboardInterrupt):
        study.run(data)
    monkeypatch.setattr(truncation.Study, "accuracy", real)
    truncation.Study(cfg2).run(data)
    assert (fresh / "sweep.csv").read_text() == (out / "sweep.csv").read_text()
    lines = (fresh / "sweep.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines[1:]]
    assert len(keys) == len(set(keys))


def test_bad_data_dir_is_one_line_exit_2(tmp_path, capsys):
    code = truncation.main(
        ["--dataset", "cifar10", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "error" in err
