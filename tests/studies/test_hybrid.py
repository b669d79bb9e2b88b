"""The hybrid TT/HT study: storage formulas, matched ranks, and the quick run end to end."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from models import build_model
from studies import hybrid
from studies.common import stats
from studies.common.checkpoints import read_metadata
from studies.common.data import get_dataset
from studies.common.report import verdict_text
from studies.common.runner import to_json
from studies.common.training import unpack_correct
from studies.hybrid_cells import (
    CONFIGS,
    DENSE,
    LayerSpec,
    ht_storage,
    layer_specs,
    match_ranks,
    storage_formula,
    tt_storage,
    useful,
)
from tensornet.formats import DimensionTree
from tensornet.nn import TNConv2d, TNLinear

# -- storage formulas and rank matching (no training) ----------------------------------------------


def test_formulas_by_hand():
    # TT: 9*1*2 + 16*2*3 + 8*3*1
    assert tt_storage((9, 16, 8), (2, 3)) == 18 + 96 + 24
    # HT over ((0,1),(2,3)): root 4*5, B(0,1) 2*3*4, B(2,3) 2*2*5, leaves 9*2 16*3 8*2 4*2
    ranks = {(0, 1): 4, (2, 3): 5, 0: 2, 1: 3, 2: 2, 3: 2}
    expected = 20 + 24 + 20 + 18 + 48 + 16 + 8
    assert ht_storage(((0, 1), (2, 3)), (9, 16, 8, 4), ranks) == expected


@pytest.mark.parametrize("fmt", ["ttmatrix", "ht"])
@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_storage_formula_equals_the_layers_parameters(fmt, kind):
    torch.manual_seed(0)
    if kind == "conv":
        module = torch.nn.Conv2d(16, 32, 3)
        spec = LayerSpec("c", "conv", (32, 16, 3, 3), (4, 4, 2), (4, 2, 2))
    else:
        module = torch.nn.Linear(96, 64)
        spec = LayerSpec("f", "fc", (64, 96), (4, 4, 4), (4, 6, 4))
    n = len(spec.structure(fmt).max_ranks)
    ranks = tuple(2 + (k % 3) for k in range(n))
    if fmt == "ht":  # the root's two children carry one rank
        ranks = (ranks[0], ranks[0], *ranks[2:])
    build = TNConv2d.from_conv if kind == "conv" else TNLinear.from_linear
    layer = build(module, fmt, ranks=ranks, **spec.options())
    assert layer.structure.ranks == ranks
    actual = sum(p.numel() for p in layer.factors.values())
    assert storage_formula(layer.structure, spec) == actual == layer.structure.num_params


def test_match_ranks_hits_every_target_within_two_percent():
    model = build_model("hybrid_cnn", 1, 10, 28, widths=(32, 64, 64))
    specs = layer_specs(model)
    for ratio in (3, 7.5, 25, 60):
        for conv_fmt, fc_fmt in CONFIGS.values():
            formats = [conv_fmt if s.kind == "conv" else fc_fmt for s in specs]
            m = match_ranks(specs, formats, ratio)
            assert m["target"] == pytest.approx(sum(s.dense_params for s in specs) / ratio)
            assert abs(m["total"] / m["target"] - 1) <= 0.02, (ratio, formats, m)
            for s, f in zip(specs, formats):
                structure = s.structure(f, m["ranks"][s.name])
                assert useful(structure)  # no rank wasted beyond what its factor can use
                assert structure.num_params == m["params"][s.name]


def test_useful_ranks():
    spec = LayerSpec("f", "fc", (16, 16), (4, 4), (4, 4))
    assert useful(spec.structure("ttmatrix", (16,)))
    assert not useful(spec.structure("ttmatrix", (17,)))  # a bond larger than its core
    assert not useful(spec.structure("ht", (3, 4)))  # the root's two ranks differ
    tree = DimensionTree.balanced(2)
    assert tree.num_modes == 2 and useful(spec.structure("ht", (4, 4)))


# -- the quick run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return get_dataset("digits", seed=0)


def quick_cfg(out, *extra):
    return hybrid.parse_args(["--quick", "--out", str(out), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("hybrid")
    cfg = quick_cfg(out)
    study = hybrid.Study(cfg, load_data=lambda seed: data)
    report = study.run()
    return cfg, out, report, study.results


def read_jsonl(path):
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[0], rows[1:]


def test_quick_run_numbers(quick_run):
    cfg, out, report, _ = quick_run
    seed = out / "seed-0"
    _, rows = read_jsonl(seed / "cells.jsonl")
    assert len(rows) == 1 + len(CONFIGS) * len(cfg.ratios)
    checkpoint = next((seed / "checkpoints").glob("*.safetensors"))
    base = read_metadata(checkpoint)["test_accuracy"]
    # the uncompressed cell reproduces the trained model exactly, image by image
    dense = next(r for r in rows if r["config"] == DENSE)
    assert dense["before"]["test_accuracy"] == base and dense["layers"] == []
    found = json.loads((out / "findings.json").read_text())
    assert found["per_seed"][0]["base_test_accuracy"] == base
    # matched parameter counts, from the saved table: every cell within 2 % of dense / ratio
    with open(seed / "cells.csv") as f:
        table = [r for r in csv.DictReader(f) if r["config"] != DENSE]
    with open(seed / "layers.csv") as f:
        layers = list(csv.DictReader(f))
    dense_total = sum(int(r["dense_params"]) for r in layers) / len(table)
    assert len(table) == len(CONFIGS) * len(cfg.ratios)
    for r in table:
        cell = [x for x in layers if (x["config"], x["ratio"]) == (r["config"], r["ratio"])]
        total = sum(int(x["params"]) for x in cell)
        assert total == int(r["params"])
        assert float(r["target"]) == pytest.approx(dense_total / float(r["ratio"]))
        assert abs(total / float(r["target"]) - 1) <= 0.02, r
        conv_fmt, fc_fmt = CONFIGS[r["config"]]
        assert {x["format"] for x in cell if x["kind"] == "conv"} == {conv_fmt}
        assert {x["format"] for x in cell if x["kind"] == "fc"} == {fc_fmt}
    # configurations sharing a layer's format share its ranks (per-layer matching)
    ranks = {(x["config"], x["ratio"], x["layer"]): (x["format"], x["ranks"]) for x in layers}
    fill = {(r["config"], r["ratio"]) for r in rows if r["global_fill"]}
    for (config, ratio, layer), (fmt, value) in ranks.items():
        for other in CONFIGS:
            twin = ranks[(other, ratio, layer)]
            if twin[0] == fmt and not {(config, float(ratio)), (other, float(ratio))} & fill:
                assert twin[1] == value, (config, other, ratio, layer)
    # storage formulas equal the layers' actual parameter counts, exactly
    assert len(layers) == 3 * len(table)
    for x in layers:
        assert int(x["formula_params"]) == int(x["params"]), x
    for r in rows:
        for x in r["layers"]:
            assert x["formula_params"] == x["params"] == x["structure_params"]
            assert x["ranks"] == x["planned_ranks"]  # the SVDs kept every rank asked for
    # accuracies are means of the stored per-image correctness; the epoch is chosen on val
    for r in rows:
        for stage in ("before", "after"):
            hits = unpack_correct(r[stage]["test_correct"])
            assert hits.mean() == pytest.approx(r[stage]["test_accuracy"])
        best = max(r["finetune"], key=lambda h: (h["val_accuracy"], -h["epoch"]))
        assert r["epoch"] == best["epoch"]
        assert r["after"]["test_accuracy"] == best["test_accuracy"]
    text = report.read_text()
    assert "equal in 24 of 24 compressed layers" in text
    assert "8 of 8 compressed cells within 2%" in text
    assert "the intervals cover test-set sampling only" in text
    assert text.index("**CI size, not evidence") < text.index("## Model")  # a --quick run
    assert (out / "accuracy_vs_ratio.png").stat().st_size > 1000


def test_verdicts_recomputed_from_the_saved_tables(quick_run):
    cfg, out, report, results = quick_run
    _, rows = read_jsonl(out / "seed-0" / "cells.jsonl")
    found = json.loads((out / "findings.json").read_text())
    saved = [{**results[0], "rows": rows}]
    again = to_json(hybrid.findings(saved, cfg))  # NaN (one seed's t bounds) as null
    assert again["verdicts"] == found["verdicts"]
    for v in found["verdicts"].values():  # and read back from JSON, the same verdicts
        assert to_json(stats.Verdict(**v).as_dict()) == v
        assert verdict_text(stats.Verdict(**v)).startswith(v["status"])
    assert again["kernel_error"] == found["kernel_error"]
    assert found["kernel_error"]["conv"]["units"] == 2 * len(cfg.ratios)
    assert found["kernel_error"]["fc"]["units"] == len(cfg.ratios)
    text = report.read_text()
    for number in ("1", "2", "3"):
        assert f"**{number}. " in text
        status = found["verdicts"][f"{number}_after"]["status"]
        assert status in stats.STATUSES
        assert f": {status}" in text.split(f"**{number}. ")[1].split("\n")[0]

    # the estimates, by hand from the accuracies: mean over (pair, ratio) units of a - b
    def by_hand(pairs, stage):
        acc = {(r["config"], r["ratio"]): r[stage]["test_accuracy"] for r in rows}
        return np.mean([acc[(a, q)] - acc[(b, q)] for a, b in pairs for q in cfg.ratios])

    for stage in ("before", "after"):
        for key, pairs in (
            (f"1tt_{stage}", [("hybrid", "tt")]),
            (f"1ht_{stage}", [("hybrid", "ht")]),
            (f"2_{stage}", hybrid.FINDINGS["2"][1]),
            (f"3_{stage}", hybrid.FINDINGS["3"][1]),
        ):
            iv = found["comparisons"][key]["interval"]
            assert iv["estimate"] == pytest.approx(by_hand(pairs, stage))
            assert found["comparisons"][key]["per_seed"] == pytest.approx([iv["estimate"]])
            # one seed: not enough units, unless a compared cell is near chance (no verdict)
            near = any(
                r[stage]["test_accuracy"] <= 0.15
                for r in rows
                if r["config"] in {c for p in pairs for c in p}
            )
            if not key.startswith("1"):
                expected = "no verdict" if near else "not enough units"
                assert found["verdicts"][key]["status"] == expected


def test_rerun_resumes_without_recomputing(quick_run, data, capsys):
    cfg, out, report, _ = quick_run
    cells = out / "seed-0" / "cells.jsonl"
    before = cells.read_bytes()
    study = hybrid.Study(cfg, load_data=lambda seed: data)
    study.run()
    assert "cells: 0 computed, 9 reused" in capsys.readouterr().out
    assert study.results[0]["computed"] == 0 and study.results[0]["reused"]
    assert cells.read_bytes() == before


def assert_one_line_exit_2(code, capsys, *fragments):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--ratios", "1,5"], "--ratios"),
        (["--ratios", "5,5"], "distinct"),
        (["--match-tol", "2"], "--match-tol"),
        (["--widths", "16,32"], "--widths"),
        (["--finetune-epochs", "0"], "--finetune-epochs"),
        (["--conv-modes", "1"], "--conv-modes"),
        (["--dataset", "cifar10"], "--data-dir"),
        (["--device", "cuda:7"], "--device"),
    ],
)
def test_bad_arguments_give_one_line(args, fragment, capsys, tmp_path):
    if args[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    out = tmp_path / "never"
    assert_one_line_exit_2(hybrid.main([*args, "--out", str(out)]), capsys, fragment)
    assert not out.exists()


def test_foreign_cells_file_is_refused(quick_run, tmp_path, capsys):
    _, out, _, _ = quick_run
    target = tmp_path / "other"
    (target / "seed-0").mkdir(parents=True)
    src = (out / "seed-0" / "cells.jsonl").read_text()
    (target / "seed-0" / "cells.jsonl").write_text(src)
    code = hybrid.main(["--quick", "--finetune-lr", "0.01", "--out", str(target)])
    assert_one_line_exit_2(code, capsys, "cells.jsonl", "finetune_lr")
    assert (target / "seed-0" / "cells.jsonl").read_text() == src


def test_cells_total_matches_dense_share():
    specs = layer_specs(build_model("hybrid_cnn", 1, 10, 8))
    dense = sum(s.dense_params for s in specs)
    assert dense == 32 * 16 * 9 + 64 * 32 * 9 + 256 * 256
    assert all(math.prod(s.out_dims) == s.shape[0] for s in specs)


def test_cells_on_a_dask_cluster_match_the_serial_run():
    distributed = pytest.importorskip("distributed")
    from studies.common.data import load_digits
    from studies.hybrid_cells import FineTune, plan_cells, run_cells

    data = load_digits(seed=0, limit=150)
    torch.manual_seed(0)
    model = build_model("hybrid_cnn", 1, 10, 8, widths=(4, 8, 16), hidden=64).eval()
    specs = layer_specs(model)
    cells = plan_cells(specs, (5.0,), 0.02)[1:3]  # TT-only and HT-only at 5x
    tune = FineTune(epochs=1, lr=1e-3, batch_size=64, seed=0)
    serial = {r["key"]: r for r in run_cells(model, data, cells, specs, tune)}
    cluster = distributed.LocalCluster(  # one worker process: the scatter/submit path
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        with distributed.Client(cluster) as client:
            remote = {r["key"]: r for r in run_cells(model, data, cells, specs, tune, client)}
    finally:
        cluster.close()
    assert remote.keys() == serial.keys() == {c.key for c in cells}
    for key, row in serial.items():
        other = remote[key]
        assert other["params"] == row["params"] and other["gap"] == row["gap"]
        assert [x["ranks"] for x in other["layers"]] == [x["ranks"] for x in row["layers"]]
        assert other["before"]["test_correct"] == row["before"]["test_correct"]
        assert len(other["finetune"]) == 1
