"""The truncation study end to end at CI size: its numbers, its verdicts, and resuming."""

import csv
import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from studies import truncation
from studies.common import stats
from studies.common.checkpoints import read_metadata
from studies.common.data import get_dataset
from studies.common.training import SplitAccuracy


@pytest.fixture(scope="module")
def data():
    return get_dataset("digits", seed=0)


def quick_cfg(out, *extra):
    return truncation.parse_args(["--quick", "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("run")
    cfg = quick_cfg(out)
    report = truncation.Study(cfg, load_data=lambda seed: data).run()
    return cfg, out, report


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def sweep_rows(path):
    """sweep.csv with numbers as numbers."""
    rows = read_csv(path)
    for r in rows:
        for k in ("chi", "chi_max"):
            r[k] = int(r[k])
        for k in ("val_accuracy", "test_accuracy", "norm_kept", "rel_error"):
            r[k] = float(r[k])
    return rows


def fresh_copy(quick_run, tmp_path, name="copy"):
    """A copy of the quick run's output folder (same checkpoint, sweep and results)."""
    _, out, _ = quick_run
    target = tmp_path / name
    shutil.copytree(out, target)
    return target


def snapshot(folder):
    """Every file under ``folder`` with its bytes: compares equal iff nothing changed."""
    if not folder.exists():
        return None
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_one_line_exit_2(code, capsys, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "error:" in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# -- numbers and verdicts -------------------------------------------------------------------------


def test_quick_run_numbers_are_consistent(quick_run):
    cfg, out, report = quick_run
    seed = out / "seed-0"
    rows = sweep_rows(seed / "sweep.csv")
    combined = json.loads((seed / "combined.json").read_text())
    base = combined["base"]["test_accuracy"]
    checkpoint = next((seed / "checkpoints").glob("*.safetensors"))
    # the untruncated model's accuracy is the trained model's, as recorded at training time
    assert read_metadata(checkpoint)["test_accuracy"] == pytest.approx(base, abs=1e-9)
    assert np.mean([c == "1" for c in combined["base"]["test_correct"]]) == pytest.approx(base)
    by_pair = {}
    for r in rows:
        by_pair.setdefault((r["layer"], r["cut"]), []).append(r)
    assert len(by_pair) == 4 * len(cfg.cuts)
    for group in by_pair.values():
        group.sort(key=lambda r: r["chi"])
        errors = [r["rel_error"] for r in group]
        assert errors == sorted(errors, reverse=True)  # errors fall as chi grows
        full = group[-1]
        assert full["chi"] == full["chi_max"] and full["rel_error"] < 1e-6
        assert full["test_accuracy"] == pytest.approx(base, abs=1e-12)  # full rank: same model
        assert full["val_accuracy"] == pytest.approx(combined["base"]["val_accuracy"], abs=1e-12)
    # projected re-training: every planned cut still has at most its planned chi
    aggressive = combined["aggressive"]
    assert aggressive["plan"] and len(aggressive["retrain"]) == cfg.retrain_epochs
    for layer, steps in aggressive["plan"].items():
        for (_, chi), rank in zip(steps, aggressive["ranks_after_retrain"][layer]):
            assert rank <= chi
    text = report.read_text()
    for finding in ("**1.", "**2.", "**3."):
        assert finding in text
    assert "the intervals cover test-set sampling only" in text
    assert text.index("**CI size, not evidence") < text.index("## Model")  # a --quick run
    assert f"**{base:.4f}**" in text
    for png in ("entropy_heatmap", "accuracy_vs_chi", "accuracy_vs_chi_val", "accuracy_vs_norm"):
        assert (seed / f"{png}.png").stat().st_size > 1000
        assert f"(seed-0/{png}.png)" in text


def recompute_choice(rows, base_val, drop):
    """Independently of the study: per (layer, cut) the smallest chi within drop on validation."""
    best = {}
    for r in sorted(rows, key=lambda r: r["chi"]):
        key = (r["layer"], r["cut"])
        if key not in best and (
            r["val_accuracy"] >= base_val - drop - 1e-12 or r["chi"] == r["chi_max"]
        ):
            best[key] = r
    return best


def plan_from_choice(choice, combined_cuts):
    plan = {}
    for (layer, cut), r in choice.items():
        left = cut.split("|")[0].split(",")
        if left in [list(c) for c in combined_cuts] and r["chi"] < r["chi_max"]:
            plan.setdefault(layer, []).append([left, r["chi"]])
    return plan


def test_verdicts_recomputed_from_the_run_tables_match_the_report(quick_run):
    """Rebuild every verdict from sweep.csv and combined.json and compare with the report."""
    cfg, out, report = quick_run
    found = json.loads((out / "findings.json").read_text())
    text = report.read_text()
    rows = sweep_rows(out / "seed-0" / "sweep.csv")
    combined = json.loads((out / "seed-0" / "combined.json").read_text())
    base = combined["base"]
    # the plans are the validation choices, made independently here
    for level, drop in (("safe", cfg.tolerance), ("aggressive", cfg.aggressive_drop)):
        choice = recompute_choice(rows, base["val_accuracy"], drop)
        expected = plan_from_choice(choice, cfg.combined_cuts)
        got = {k: sorted(v) for k, v in combined[level]["plan"].items()}
        assert got == {k: sorted(v) for k, v in expected.items()}
    # finding 2: Kendall tau straight from scipy on the removable norm per layer
    choice = recompute_choice(rows, base["val_accuracy"], cfg.tolerance)
    layers = sorted({r["layer"] for r in rows}, key=lambda n: int(n[-1]))
    removable = [
        np.mean([1 - r["norm_kept"] for (l, _), r in choice.items() if l == n and r["chi_max"] > 1])
        for n in layers
    ]
    # (one seed: Stouffer's z of a single p-value is that p-value)
    tau = sps.kendalltau(range(len(layers)), removable, alternative="greater")
    v2 = found["verdicts"]["2"]
    assert v2["statistic"] == pytest.approx(tau.statistic)
    assert v2["p_value"] == pytest.approx(tau.pvalue)
    status2 = "holds" if tau.pvalue < 0.05 else None
    if status2 is None:
        down = sps.kendalltau(range(len(layers)), removable, alternative="less").pvalue
        status2 = "does not hold" if down < 0.05 else "not significant"
    assert v2["status"] == status2
    assert f"mean tau over seeds = {tau.statistic:.2f}, p = {tau.pvalue:.3g}" in text

    # findings 1 and 3: the intervals from the stored per-image correctness
    def bits(entry):
        return [np.array([c == "1" for c in entry["test_correct"]], dtype=float)]

    agg = combined["aggressive"]
    retrained = agg["retrain"][agg["retrain_epoch"] - 1]
    assert (
        agg["retrain_epoch"]
        == max(agg["retrain"], key=lambda h: (h["val_accuracy"], -h["epoch"]))["epoch"]
    )
    for key, entry, offset in (
        ("safe_drop", combined["safe"], 1),
        ("aggressive_drop", agg, 2),
        ("retrained_drop", retrained, 3),
    ):
        iv = stats.paired_bootstrap(bits(base), bits(entry), seed=cfg.seed + offset)
        drop = base["test_accuracy"] - entry["test_accuracy"]
        assert found["intervals"][key]["estimate"] == pytest.approx(drop)
        assert found["per_seed_intervals"][key] == [dataclasses.asdict(iv)]
    # one seed: findings 1 and 3 cannot be decided over seeds (or are withheld near chance)
    safe_norm = np.mean(
        [1 - v["norm_kept"] for v in combined["safe"]["layers"].values()]
        + [0.0] * (len(layers) - len(combined["safe"]["layers"]))
    )
    status1 = "not enough units" if safe_norm >= 0.1 else "does not hold"
    status3 = "not enough units"
    near = [a <= 0.15 for a in (base["test_accuracy"], combined["safe"]["test_accuracy"])]
    status1 = "no verdict" if any(near) else status1
    status2 = "no verdict" if near[0] else status2
    status3 = "no verdict" if near[0] or retrained["test_accuracy"] <= 0.15 else status3
    assert [found["verdicts"][k]["status"] for k in "123"] == [status1, status2, status3]
    for number, status in zip("123", (status1, status2, status3)):
        pattern = ": no verdict: compared models" if status == "no verdict" else f": {status} \\("
        assert re.search(rf"\*\*{number}\. [^*]*{pattern}", text), (number, status)


def test_levels_are_chosen_on_validation_not_test(quick_run, data, tmp_path, monkeypatch):
    """A model whose test accuracy never drops under truncation: choosing by test would truncate
    every cut to chi 1; choosing by validation must not."""
    out = tmp_path / "disagree"
    out.mkdir()
    shutil.copytree(quick_run[1] / "seed-0" / "checkpoints", out / "seed-0" / "checkpoints")
    real = SplitAccuracy.__call__

    def test_always_perfect(self, model):
        return {**real(self, model), "test_accuracy": 1.0}

    monkeypatch.setattr(SplitAccuracy, "__call__", test_always_perfect)
    cfg = quick_cfg(out)
    truncation.Study(cfg, load_data=lambda seed: data).run()
    rows = sweep_rows(out / "seed-0" / "sweep.csv")
    assert {r["test_accuracy"] for r in rows} == {1.0}
    combined = json.loads((out / "seed-0" / "combined.json").read_text())
    choice = recompute_choice(rows, combined["base"]["val_accuracy"], cfg.tolerance)
    expected = plan_from_choice(choice, cfg.combined_cuts)
    got = combined["safe"]["plan"]
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    chis = [chi for steps in got.values() for _, chi in steps]
    assert chis and max(chis) > 1  # by test, every planned chi would have been 1


def test_several_seeds_report_mean_and_spread(tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = ["--quick", "--seeds", "2", "--limit", "120", "--epochs", "2", "--chis", "1,4,16"]
    assert truncation.main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    found = json.loads((out / "findings.json").read_text())
    assert found["seeds"] == [0, 1] and len(found["per_seed"]) == 2
    accs = [n["safe_test_accuracy"] for n in found["per_seed"]]
    spread = found["summary"]["safe_test_accuracy"]
    assert spread["mean"] == pytest.approx(np.mean(accs))
    assert spread["std"] == pytest.approx(np.std(accs, ddof=1))
    text = (out / "report.md").read_text()
    assert "2 seeds: numbers are mean ± standard deviation" in text
    assert stats.Spread(**found["summary"]["safe_drop"]).format(".2f", 100, " points") in text
    assert (
        found["intervals"]["safe_drop"]["method"]
        == "t interval over 2 seeds (1 degrees of freedom)"
    )
    assert len(found["per_seed_intervals"]["safe_drop"]) == 2
    for seed in (0, 1):
        assert (out / f"seed-{seed}" / "combined.json").is_file()
    # the two seeds differ (split, initial weights, shuffling)
    a, b = (json.loads((out / f"seed-{s}" / "combined.json").read_text()) for s in (0, 1))
    assert a["base"]["test_correct"] != b["base"]["test_correct"]
    # a third seed resumes the first two and only adds its own
    capsys.readouterr()
    assert truncation.main([*argv, "--seeds", "3", "--out", str(out), "--device", "cpu"]) == 0
    log = capsys.readouterr().out
    assert log.count("reused checkpoint") == 2
    assert json.loads((out / "findings.json").read_text())["seeds"] == [0, 1, 2]


def test_report_tables_render(quick_run):
    """Every Markdown table row has as many cells as its header (no unescaped '|')."""
    text = quick_run[2].read_text()
    tables = re.findall(r"((?:^\|.*\|$\n?)+)", text, re.M)
    assert len(tables) >= 3
    for table in tables:
        counts = {len(re.split(r"(?<!\\)\|", line)) for line in table.strip().splitlines()}
        assert len(counts) == 1, table
    assert "out\\|in,kh,kw" in text


# -- resuming -------------------------------------------------------------------------------------


def test_rerun_reuses_everything(quick_run, data, capsys):
    cfg, out, _ = quick_run
    before = (out / "seed-0" / "sweep.csv").read_text()
    combined = (out / "seed-0" / "combined.json").read_text()
    stamps = {n: (out / "seed-0" / n).stat().st_mtime_ns for n in ("combined.json",)}
    capsys.readouterr()
    truncation.Study(cfg, load_data=lambda seed: data).run()
    assert "reused checkpoint" in capsys.readouterr().out
    # combined.json is reused, not recomputed to the same bytes (sweep.csv is re-rendered from
    # the reused sweep.jsonl, so only its contents are compared)
    assert {n: (out / "seed-0" / n).stat().st_mtime_ns for n in stamps} == stamps
    assert (out / "seed-0" / "sweep.csv").read_text() == before
    assert (out / "seed-0" / "combined.json").read_text() == combined


def test_ctrl_c_says_how_to_resume_and_the_rerun_is_identical(
    quick_run, tmp_path, monkeypatch, capsys
):
    _, out, _ = quick_run
    fresh = tmp_path / "resume"
    fresh.mkdir()
    shutil.copytree(out / "seed-0" / "checkpoints", fresh / "seed-0" / "checkpoints")
    calls = {"n": 0}
    real = SplitAccuracy.__call__

    def interrupted(self, model):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real(self, model)

    monkeypatch.setattr(SplitAccuracy, "__call__", interrupted)
    argv = ["--quick", "--out", str(fresh), "--device", "cpu"]
    capsys.readouterr()
    assert truncation.main(argv) == 130
    err = capsys.readouterr().err
    assert err == "python -m studies truncation: interrupted; rerun with the same --out to resume\n"
    # a kill in the middle of an atomic write leaves its temporary file: the rerun removes it
    stale = fresh / "seed-0" / ".combined.json.abcd1234.tmp"
    stale.write_text("{")
    monkeypatch.setattr(SplitAccuracy, "__call__", real)
    assert truncation.main(argv) == 0
    assert not stale.exists()
    assert (fresh / "seed-0" / "sweep.csv").read_text() == (
        out / "seed-0" / "sweep.csv"
    ).read_text()
    lines = (fresh / "seed-0" / "sweep.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines[1:]]
    assert len(keys) == len(set(keys)) == len(read_csv(out / "seed-0" / "sweep.csv"))


# -- one line and exit 2 for every bad argument or file -------------------------------------------

BAD_ARGS = {
    "--chis 0": (["--chis", "0"], "--chis"),
    "--chis x": (["--chis", "1,x"], "--chis"),
    "--limit 0": (["--limit", "0"], "--limit"),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size"),
    "--epochs -1": (["--epochs", "-1"], "--epochs"),
    "--epochs 0": (["--epochs", "0"], "--epochs"),
    "--retrain-epochs 0": (["--retrain-epochs", "0"], "--retrain-epochs"),
    "--tolerance 2": (["--tolerance", "2"], "--tolerance"),
    "--tolerance 0": (["--tolerance", "0"], "--tolerance"),
    "--tolerance nan": (["--tolerance", "nan"], "--tolerance"),
    "--aggressive-drop below tolerance": (
        ["--tolerance", "0.05", "--aggressive-drop", "0.02"],
        "must exceed --tolerance",
    ),
    "--lr -1": (["--lr", "-1"], "--lr"),
    "--seeds 0": (["--seeds", "0"], "--seeds"),
    "--seed -1": (["--seed", "-1"], "--seed"),
    "--workers 0": (["--workers", "0"], "--workers"),
    "--workers and --scheduler": (
        ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
        "not both",
    ),
    "--device cuda": (["--device", "cuda:7"], "--device"),
    "--device bogus": (["--device", "tpu"], "--device"),
    "--cuts bad leg": (["--cuts", "out;depth"], "--cuts"),
    "--cuts all legs": (["--cuts", "out,in,kh,kw"], "--cuts"),
    "--model": (["--model", "alexnet"], "--model"),
    "--dataset": (["--dataset", "svhn"], "--dataset"),
    "--data-dir for digits": (["--data-dir", "/tmp"], "not used with --dataset digits"),
    "cifar without --data-dir": (["--dataset", "cifar10"], "needs --data-dir"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_exit_2_with_one_line_and_touch_nothing(case, tmp_path, capsys):
    argv, fragment = BAD_ARGS[case]
    out = tmp_path / "out"
    assert truncation.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m studies truncation: error: "), err
    assert fragment in err, err
    assert not out.exists()


def test_out_that_is_a_file_and_bad_dataset_dir(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert_one_line_exit_2(truncation.main(["--out", str(target)]), capsys, "not a folder")
    code = truncation.main(
        ["--dataset", "cifar10", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert_one_line_exit_2(code, capsys, "data_batch_1")
    assert not (tmp_path / "o").exists()


def test_bad_dataset_files_exit_2_naming_the_file(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"")
    out = tmp_path / "o"
    code = truncation.main(["--dataset", "cifar10", "--data-dir", str(folder), "--out", str(out)])
    assert_one_line_exit_2(code, capsys, str(folder / "data_batch_1"), "empty")
    assert not out.exists()


def corrupt_combined_empty(out):
    (out / "seed-0" / "combined.json").write_text("")
    return "combined.json", "empty"


def corrupt_combined_foreign(out):
    (out / "seed-0" / "combined.json").write_text('{"accuracy": [1, 2]}')
    return "combined.json", "not a combined-truncation result"


def corrupt_checkpoint(out):
    path = next((out / "seed-0" / "checkpoints").glob("*.safetensors"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.name, "not a readable checkpoint"


def corrupt_sweep_middle(out):
    path = out / "seed-0" / "sweep.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = b"\x00garbage{\n"
    path.write_bytes(b"".join(lines))
    return "sweep.jsonl", "line 6 is not a JSON record"


def corrupt_sweep_foreign(out):
    (out / "seed-0" / "sweep.jsonl").write_text('{"hello": "world"}\n')
    return "sweep.jsonl", "not a results file of this study"


CORRUPT = {
    "empty combined.json": corrupt_combined_empty,
    "foreign combined.json": corrupt_combined_foreign,
    "truncated checkpoint": corrupt_checkpoint,
    "garbage in the middle of sweep.jsonl": corrupt_sweep_middle,
    "foreign sweep.jsonl": corrupt_sweep_foreign,
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_artefacts_give_one_line_naming_the_file(case, quick_run, tmp_path, capsys):
    out = fresh_copy(quick_run, tmp_path)
    name, fragment = CORRUPT[case](out)
    before = snapshot(out)
    code = truncation.main(["--quick", "--out", str(out), "--device", "cpu"])
    err = assert_one_line_exit_2(code, capsys, name, fragment)
    assert "delete" in err or "another --out" in err  # says what to do
    assert snapshot(out) == before


def test_changed_configuration_is_refused_naming_the_change(quick_run, tmp_path, capsys):
    out = fresh_copy(quick_run, tmp_path)
    before = snapshot(out)
    code = truncation.main(["--quick", "--out", str(out), "--device", "cpu", "--tolerance", "0.02"])
    assert_one_line_exit_2(code, capsys, "combined.json", "changed: tolerance", "another --out")
    code = truncation.main(["--quick", "--out", str(out), "--device", "cpu", "--chis", "1,2"])
    assert_one_line_exit_2(code, capsys, "sweep.jsonl", "changed: chis")
    assert snapshot(out) == before


def test_a_second_run_on_the_same_out_refuses(quick_run, tmp_path, capsys):
    from studies.common.runner import OutputLock

    out = fresh_copy(quick_run, tmp_path)
    before = snapshot(out)
    with OutputLock(out):  # another run holds --out
        code = truncation.main(["--quick", "--out", str(out), "--device", "cpu"])
    assert_one_line_exit_2(code, capsys, "another run is using it", ".lock")
    assert snapshot(out) == before
