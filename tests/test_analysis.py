"""Truncation sweeps: values against theory, resumability, executors."""

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import tensornet as tn
from tensornet.analysis import ResultStore, chi_grid, truncate_layers, truncation_sweep

UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"  # a trampoline frame


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 3), torch.nn.Flatten()
    ).double()
    x = torch.randn(16, 2, 7, 7, dtype=torch.float64)
    reference = model(x).detach()

    def evaluate(m):
        with torch.no_grad():
            return {"output_error": float((m(x) - reference).norm() / reference.norm())}

    return model, evaluate


def test_rows_follow_theory(setup):
    model, evaluate = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = truncation_sweep(model, evaluate, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored
    assert len({r["key"] for r in rows}) == len(rows)
    for (layer, _cut), group in _groups(rows).items():
        weight = model.get_submodule(layer).weight.detach().double().numpy()
        legs = tn.KERNEL_LEGS[weight.ndim]
        left = [legs.index(x) for x in group[0]["cut"].split("|")[0].split(",")]
        right = [i for i in range(weight.ndim) if i not in left]
        rows_ = int(np.prod([weight.shape[i] for i in left]))
        s = np.linalg.svd(weight.transpose(left + right).reshape(rows_, -1), compute_uv=False)
        assert group[0]["chi_max"] == len(s)
        for row in group:
            # Eckart-Young-Mirsky: the best rank-chi error is the tail of the numpy spectrum
            tail = np.linalg.norm(s[row["chi"] :]) / np.linalg.norm(s)
            assert row["rel_error"] == pytest.approx(tail, rel=1e-5, abs=1e-7)
            kept = np.linalg.norm(s[: row["chi"]]) / np.linalg.norm(s)
            assert row["norm_kept"] == pytest.approx(kept, rel=1e-5, abs=1e-7)
        errors = [r["rel_error"] for r in group]
        assert errors == sorted(errors, reverse=True)  # errors fall as chi grows
        full = group[-1]
        assert full["chi"] == full["chi_max"] and full["rel_error"] < 1e-7
        assert full["output_error"] < 1e-7  # full rank leaves the model unchanged


def _groups(rows):
    out = {}
    for r in rows:
        out.setdefault((r["layer"], r["cut"]), []).append(r)
    return out


def test_resume_after_interruption_gives_identical_rows(setup, tmp_path):
    model, evaluate = setup
    path = tmp_path / "results.jsonl"
    calls = {"n": 0}

    def flaky(m):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return evaluate(m)

    with pytest.raises(KeyboardInterrupt):
        truncation_sweep(model, flaky, results=path, config={"seed": 1}, progress=False)
    assert len(path.read_text().splitlines()) == 1 + 8  # config header + 8 finished cells
    with path.open("ab") as f:  # a torn half-line from a killed writer
        f.write(b'{"kind": "cell", "key": "x')
    calls["n"] = -(10**9)
    resumed = truncation_sweep(model, flaky, results=path, config={"seed": 1}, progress=False)
    fresh = truncation_sweep(model, evaluate, progress=False)
    assert calls["n"] == -(10**9) + len(fresh) - 8  # only the unfinished cells ran
    assert [r["key"] for r in resumed] == [r["key"] for r in fresh]
    for a, b in zip(resumed, fresh):
        assert {k: a[k] for k in b} == pytest.approx(b)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    keys = [x["key"] for x in lines if x["kind"] == "cell"]
    assert len(keys) == len(set(keys)) == len(fresh)  # no duplicated rows
    # a third run does nothing
    calls["n"] = 0
    truncation_sweep(model, flaky, results=path, config={"seed": 1}, progress=False)
    assert calls["n"] == 0


def test_config_mismatch_refuses_to_mix(tmp_path):
    path = tmp_path / "r.jsonl"
    ResultStore(path, {"a": 1})
    with pytest.raises(ValueError, match="another configuration"):
        ResultStore(path, {"a": 2})


def test_executor_matches_local(setup):
    model, evaluate = setup
    local = truncation_sweep(
        model, evaluate, cuts=[("out",), ("out", "in")], chis=[1, 3], progress=False
    )
    with ThreadPoolExecutor(2) as pool:
        pooled = truncation_sweep(
            model,
            evaluate,
            cuts=[("out",), ("out", "in")],
            chis=[1, 3],
            executor=pool,
            progress=False,
        )
    assert [r["key"] for r in pooled] == [r["key"] for r in local]
    assert [r["output_error"] for r in pooled] == pytest.approx([r["output_error"] for r in local])
    assert {r["cut"] for r in local} == {"out|in,kh,kw", "out,in|kh,kw"}


def test_bad_layers_are_named(setup):
    model, evaluate = setup
    with pytest.raises(ValueError, match="no conv/linear layer matches 'zzz'"):
        truncation_sweep(model, evaluate, layers="zzz")
    with pytest.raises(ValueError, match=r"layers \['9'\] are not conv/linear layers"):
        truncation_sweep(model, evaluate, layers=["9"])


def test_chi_grid():
    assert chi_grid(1) == [1]
    assert chi_grid(9) == [1, 2, 4, 8, 9]
    with pytest.raises(ValueError, match="chi_max"):
        chi_grid(0)


def test_truncate_layers_in_place_reports_errors(setup):
    model, _ = setup
    w = model[0].weight.detach().clone()
    report = truncate_layers(model, {"0": [(("out",), 2), (("out", "in"), 3)]})
    expected = tn.truncate(w, [["out"], ["out", "in"]], tn.Truncation(max_rank=2))
    assert report["0"]["step_errors"][0] == pytest.approx(expected.step_errors[0])
    new = model[0].weight.detach()
    assert report["0"]["error"] == pytest.approx(float((new - w).norm() / w.norm()))
    assert report["0"]["norm_kept"] == pytest.approx(float(new.norm() / w.norm()))
    assert math.isclose(tn.spectrum(new, ["out"]).values[2:].max().item(), 0.0, abs_tol=1e-10)


def test_truncate_layers_takes_steps_and_plan_as_its_deprecated_name(setup):
    model, _ = setup
    w = model[0].weight.detach().clone()
    steps = {"0": [(("out",), 2)]}
    by_keyword = truncate_layers(model, steps=steps)
    expected = tn.truncate(w, ["out"], 2)
    assert by_keyword["0"]["error"] == pytest.approx(expected.error, rel=1e-12)
    torch.testing.assert_close(model[0].weight.detach(), expected.tensor)
    with torch.no_grad():
        model[0].weight.copy_(w)
    old = r"^truncate_layers\(plan=\.\.\.\) is deprecated; use truncate_layers\(steps=\.\.\.\)$"
    with pytest.warns(DeprecationWarning, match=old) as caught:
        by_old_name = truncate_layers(model, plan=steps)
    assert caught[0].filename == __file__ or UNDER_MUTMUT  # the caller's line is blamed
    assert by_old_name == by_keyword
    torch.testing.assert_close(model[0].weight.detach(), expected.tensor)
    both = r"^truncate_layers: give steps only \(plan is its deprecated name\)$"
    with pytest.raises(TypeError, match=both):
        truncate_layers(model, steps, plan=steps)
    missing = r"^truncate_layers: missing steps \(layer name -> \[\(left_legs, trunc\), \.\.\.\]\)$"
    with pytest.raises(TypeError, match=missing):
        truncate_layers(model)


def test_rows_match_the_weight_actually_placed_in_the_model():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten()).double()
    original = model[0].weight.detach().clone()

    def evaluate(m):
        w = m[0].weight.detach()
        return {
            "measured_error": float((w - original).norm() / original.norm()),
            "measured_kept": float(w.norm() / original.norm()),
        }

    rows = truncation_sweep(model, evaluate, chis=[1, 2], progress=False)
    for row in rows:
        assert row["rel_error"] == pytest.approx(row["measured_error"], rel=1e-9, abs=1e-12)
        assert row["norm_kept"] == pytest.approx(row["measured_kept"], rel=1e-9)
    # chis stop below full rank, yet every (layer, cut) still has its full-rank cell
    for group in _groups(rows).values():
        assert group[-1]["chi"] == group[-1]["chi_max"] and group[-1]["measured_error"] < 1e-12


def test_a_cut_that_applies_to_no_layer_is_named(setup):
    model, evaluate = setup
    with pytest.raises(ValueError, match=r"cuts \[\('kd',\)\] apply to none of the layers"):
        truncation_sweep(model, evaluate, cuts=[("out",), ("kd",)], progress=False)  # kd: 3-d
    with pytest.raises(TypeError, match="every cut is a non-empty sequence of leg names"):
        truncation_sweep(model, evaluate, cuts=[("out", 1)], progress=False)


def test_chis_accept_numpy_and_torch_integers_and_refuse_floats(setup):
    import numpy as np

    model, evaluate = setup
    rows = truncation_sweep(
        model, evaluate, layers="0", cuts=[("out",)], chis=[np.int64(1), torch.tensor(3)],
        progress=False,
    )
    assert [r["chi"] for r in rows] == [1, 3, 6]  # 6: full rank, always swept
    assert rows[0]["rel_error"] == pytest.approx(
        tn.spectrum(model[0].weight.detach(), ["out"]).relative_error(1), abs=1e-12
    )
    with pytest.raises(TypeError, match=r"chis must hold ints, got float 2.5"):
        truncation_sweep(model, evaluate, chis=[2.5], progress=False)
    assert chi_grid(np.int64(12), points=np.int32(3)) == [1, 3, 12]


def test_nan_weights_are_named(setup):
    model, evaluate = setup
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"layer '2' weight holds NaN or inf values \(1 of"):
        truncation_sweep(model, evaluate, progress=False)
    with pytest.raises(ValueError, match=r"layer '2' weight holds NaN or inf"):
        truncate_layers(model, {"2": [(("out",), 2)]})


def test_result_store_writes_strict_json(tmp_path):
    import json

    from tensornet.analysis import ResultStore

    store = ResultStore(tmp_path / "rows.jsonl")
    store.add({"key": "a", "accuracy": float("nan"), "loss": [float("inf"), 1.0]})
    line = (tmp_path / "rows.jsonl").read_text().strip().splitlines()[-1]  # after the header
    assert "NaN" not in line and "Infinity" not in line
    row = json.loads(line)
    assert row["accuracy"] is None and row["loss"] == [None, 1.0]
