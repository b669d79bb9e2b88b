"""Truncation sweeps in detail: row values vs numpy, grids, the results file, argument checks."""

import contextlib
import json
import math
import os
import re
import sys
import time

import numpy as np
import pytest
import torch

from tensornet import analysis
from tensornet.analysis import (
    Cell,
    ResultStore,
    _evaluate_cell,
    _SweepCell,
    chi_grid,
    replaced_weight,
    truncatable_layers,
    truncation_sweep,
)
from tensornet.runs import map_cells


def small_model():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 2), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5)
    ).double()


def weight_norm_metric(m):
    """A metric that reads the weights in place: their total squared norm."""
    return {"w2": float(sum(p.detach().square().sum() for p in m.parameters()))}


def test_grid_values():
    """Powers of two up to chi_max plus chi_max; or `points` geometric values."""
    assert chi_grid(8) == [1, 2, 4, 8] and chi_grid(7) == [1, 2, 4, 7]
    assert chi_grid(2) == [1, 2] and chi_grid(17) == [1, 2, 4, 8, 16, 17]
    assert chi_grid(100, points=5) == [1, 3, 10, 32, 100]
    assert chi_grid(64, points=1) == [1, 64] and chi_grid(64, points=2) == [1, 64]
    assert chi_grid(3, points=10) == [1, 2, 3]
    for bad, match in ((0, r"got 0"), (2.0, r"got 2.0"), ("4", r"got '4'")):
        with pytest.raises(ValueError, match=rf"^chi_max must be an int >= 1, {match}"):
            chi_grid(bad)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=rf"^points must be an int >= 1, got {bad!r}"):
            chi_grid(8, points=bad)


def test_rows_carry_the_spectrum_values_of_numpy():
    """Every row: chi_max, rel_error, discarded weight, kept norm and entropy of the cut."""
    model = small_model()
    rows = truncation_sweep(model, weight_norm_metric, layers="0", cuts=[("out", "kh")], chis=[1])
    w = model[0].weight.detach().numpy()  # (out, in, kh, kw)
    s = np.linalg.svd(w.transpose(0, 2, 1, 3).reshape(3 * 2, -1), compute_uv=False)
    p = s**2 / np.sum(s**2)
    assert [r["chi"] for r in rows] == [1, 4]
    row = rows[0]
    assert row["kind"] == "cell" and row["layer"] == "0" and row["cut"] == "out,kh|in,kw"
    assert row["key"] == "0\tout,kh|in,kw\t1" and row["chi_max"] == 4
    assert row["discarded_weight"] == pytest.approx(p[1:].sum(), rel=1e-10)
    assert row["rel_error"] == pytest.approx(math.sqrt(p[1:].sum()), rel=1e-10)
    assert row["norm_kept"] == pytest.approx(math.sqrt(p[0]), rel=1e-10)
    assert row["entropy"] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-10)
    # the evaluated model held the rank-1 weight: its norm is the kept norm
    others = sum(float(q.detach().square().sum()) for q in list(model.parameters())[1:])
    assert row["w2"] - others == pytest.approx(s[0] ** 2, rel=1e-10)
    assert rows[1]["rel_error"] < 1e-7 and rows[1]["norm_kept"] == pytest.approx(1.0)


def test_linear_layers_callable_chis_and_plain_float_metrics():
    """A linear layer's cut out|in; chis from a function of the spectrum; a float metric."""
    model = small_model()
    seen = []

    def chis(sp):
        seen.append((sp.label, sp.chi_max))
        return [1, sp.chi_max // 2]

    rows = truncation_sweep(model, lambda m: 0.5, layers="2", chis=chis)
    assert seen == [("out|in", 5)]  # a matrix has one cut
    assert [(r["cut"], r["chi"]) for r in rows] == [("out|in", 1), ("out|in", 2), ("out|in", 5)]
    assert all(r["metric"] == 0.5 for r in rows)
    w = model[2].weight.detach().numpy()
    s = np.linalg.svd(w, compute_uv=False)
    assert rows[1]["rel_error"] == pytest.approx(np.linalg.norm(s[2:]) / np.linalg.norm(s))
    with pytest.raises(TypeError, match=r"^chis\(out\|in\) of layer '2' must hold ints, got float"):
        truncation_sweep(model, lambda m: 0.0, layers="2", chis=lambda sp: [1.5])


def test_string_cuts_and_cuts_that_do_not_apply():
    """A leg name is a one-leg cut; full or empty cuts apply to no layer and are named."""
    model = small_model()
    rows = truncation_sweep(model, lambda m: 0.0, layers="0", cuts=["in"], chis=[2])
    assert {r["cut"] for r in rows} == {"in|out,kh,kw"}
    whole = ("out", "in", "kh", "kw")
    with pytest.raises(ValueError, match=r"^cuts \[\('out', 'in', 'kh', 'kw'\)\] apply to none"):
        truncation_sweep(model, lambda m: 0.0, layers="0", cuts=[whole], chis=[1])
    with pytest.raises(ValueError, match=r"their legs: \{'0': \('out', 'in', 'kh', 'kw'\)\}"):
        truncation_sweep(model, lambda m: 0.0, layers="0", cuts=[("x",)], chis=[1])
    with pytest.raises(TypeError, match=r"^cuts must be a sequence of left-leg tuples such as"):
        truncation_sweep(model, lambda m: 0.0, cuts="out")
    with pytest.raises(
        TypeError, match=r"^every cut is a non-empty sequence of leg names, got \(\)"
    ):
        truncation_sweep(model, lambda m: 0.0, cuts=[()])


@pytest.mark.parametrize(
    "chis, error, match",
    [
        ("12", TypeError, r"^chis must be a sequence of ints, got '12'"),
        (b"1", TypeError, r"^chis must be a sequence of ints, got b'1'"),
        (3, TypeError, r"^chis must be a sequence of ints, got 3"),
        (object(), TypeError, r"^chis must be a sequence of ints, got object$"),
        ([1, 0], ValueError, r"^chis must be >= 1, got 0"),
        ([1, "2"], TypeError, r"^chis must hold ints, got str '2'"),
    ],
)
def test_bad_chis_are_named(chis, error, match):
    """chis must be a sequence of ints >= 1; the message names what was wrong."""
    with pytest.raises(error, match=match):
        truncation_sweep(small_model(), lambda m: 0.0, chis=chis)


def test_replaced_weight_restores_even_on_errors():
    """The weight is swapped in for the block and restored afterwards, also after an exception."""
    model = small_model()
    before = model[0].weight.detach().clone()
    zero = torch.zeros_like(before)
    with pytest.raises(RuntimeError, match="inside"):
        with replaced_weight(model, "0", zero):
            assert float(model[0].weight.detach().abs().max()) == 0.0
            raise RuntimeError("inside")
    assert torch.equal(model[0].weight.detach(), before)
    with pytest.raises(ValueError, match=r"^layer '0': weight shape \(3, 2\) != \(3, 2, 2, 2\)"):
        with replaced_weight(model, "0", torch.zeros(3, 2, dtype=torch.float64)):
            pass


def test_cell_key():
    """A cell's key is layer, cut and chi joined by tabs."""
    assert Cell("conv", ("out",), "out|in", 3).key == "conv\tout|in\t3"


def test_result_store_file_format(tmp_path):
    """Header row with the config; rows appended; reopened stores know their done keys."""
    path = tmp_path / "deep" / "er" / "r.jsonl"  # parent folders are created
    store = ResultStore(path, {"b": 2, "a": (1, 2), "p": tmp_path})
    assert store.config == {"a": [1, 2], "b": 2, "p": str(tmp_path)} and store.rows == []
    store.add({"key": "k1", "v": 1.0})
    store.add({"note": "no key", "x": -math.inf, "nested": {"y": math.nan}})
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"kind": "config", "config": {"a": [1, 2], "b": 2, "p": str(tmp_path)}}
    assert lines[1] == {"key": "k1", "v": 1.0}
    assert lines[2] == {"note": "no key", "x": None, "nested": {"y": None}}
    assert store.done == {"k1"}
    again = ResultStore(path, {"a": [1, 2], "b": 2, "p": str(tmp_path)})
    assert again.rows == lines[1:] and again.done == {"k1"}
    # a torn last line is cut off the file itself
    with open(path, "ab") as f:
        f.write(b'{"key": "k2", "v"')
    size = os.path.getsize(path)
    torn = ResultStore(path, {"a": [1, 2], "b": 2, "p": str(tmp_path)})
    assert torn.done == {"k1"} and os.path.getsize(path) == size - len(b'{"key": "k2", "v"')
    assert ResultStore(tmp_path / "plain.jsonl").config == {}


def test_result_store_refuses_other_files(tmp_path):
    """A file without the config header, or of another config, is named and left alone."""
    other = tmp_path / "other.jsonl"
    other.write_text('{"kind": "cell", "key": "x"}\n')
    with pytest.raises(ValueError, match=r"other.jsonl is not a tensornet results file"):
        ResultStore(other)
    assert other.read_text() == '{"kind": "cell", "key": "x"}\n'
    mine = tmp_path / "mine.jsonl"
    ResultStore(mine, {"a": 1})
    with pytest.raises(
        ValueError,
        match=r"mine.jsonl holds results of another configuration \(\{'a': 1\}\); "
        r"use another results path or delete it$",
    ):
        ResultStore(mine, {"a": 2})
    one_line = tmp_path / "one.jsonl"
    one_line.write_text('{"kind": "config", "config": {}}')  # header without its newline
    assert ResultStore(one_line).rows == []


def test_progress_bar_is_shown_on_request(capsys):
    """progress=True draws the tqdm bar on stderr; progress=False does not."""
    model = small_model()
    truncation_sweep(model, lambda m: 0.0, layers="2", cuts=[("out",)], chis=[1], progress=True)
    assert "truncation sweep" in capsys.readouterr().err
    truncation_sweep(model, lambda m: 0.0, layers="2", cuts=[("out",)], chis=[1], progress=False)
    assert "truncation sweep" not in capsys.readouterr().err
    truncation_sweep(model, lambda m: 0.0, layers="2", cuts=[("out",)], chis=[1])  # not a tty
    assert "truncation sweep" not in capsys.readouterr().err


def test_in_process_dask_client_gives_the_local_rows():
    """A distributed.Client runs the cells remotely; the table equals the local one."""
    model = small_model()
    local = truncation_sweep(model, weight_norm_metric, layers="2", chis=[1, 3])
    with dask_client() as client:
        remote = truncation_sweep(
            model, weight_norm_metric, layers="2", chis=[1, 3], executor=client
        )
        assert [r["key"] for r in remote] == [r["key"] for r in local]
        for a, b in zip(remote, local):
            assert a.keys() == b.keys() and a["key"] == b["key"] and a["cut"] == b["cut"]
            for k in ("chi", "chi_max", "rel_error", "norm_kept", "entropy", "w2"):
                assert a[k] == pytest.approx(b[k], rel=1e-12), k
        none = truncation_sweep(model, weight_norm_metric, layers="2", cuts=[], executor=client)
        assert none == []


def test_rows_are_sorted_json_lines_with_plain_file_permissions(tmp_path):
    """Each row is one line with sorted keys; the file is rw-r--r-- under umask 022."""
    path = tmp_path / "rows.jsonl"
    old = os.umask(0o022)
    try:
        store = ResultStore(path, {"z": 1, "a": 2})
    finally:
        os.umask(old)
    store.add({"key": "k", "b": 1, "a": 2})
    assert store.rows == [{"key": "k", "b": 1, "a": 2}] and store.done == {"k"}
    assert path.read_text().splitlines() == [
        '{"config": {"a": 2, "z": 1}, "kind": "config"}',
        '{"a": 2, "b": 1, "key": "k"}',
    ]
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_a_file_holding_only_a_torn_line_is_restarted(tmp_path):
    """A first line torn before its newline is dropped entirely; the header starts the file."""
    path = tmp_path / "torn.jsonl"
    path.write_bytes(b'{"kind": "con')
    store = ResultStore(path, {"a": 1})
    assert store.rows == []
    assert path.read_text() == '{"config": {"a": 1}, "kind": "config"}\n'


class SerialExecutor:
    """An executor interface that runs the tasks one after another in this thread."""

    def __init__(self):
        self.mapped = []

    def map(self, fn, items):
        items = list(items)
        self.mapped.extend(items)
        return map(fn, items)


def test_cells_run_on_the_executor_given_and_in_process_on_the_model_itself():
    """With an executor every cell goes through its ``map`` on a copy of the model; without
    one, ``evaluate`` gets the caller's model itself (a large model is never duplicated)."""
    model = small_model()
    seen = []

    def evaluate(m):
        seen.append(m is model)
        return weight_norm_metric(m)

    local = truncation_sweep(model, evaluate, layers="2", chis=[1, 2])
    assert seen == [True] * len(local) and len(local) == 3
    seen.clear()
    executor = SerialExecutor()
    pooled = truncation_sweep(model, evaluate, layers="2", chis=[1, 2], executor=executor)
    assert seen == [False] * len(local)
    assert [(c.layer, c.cut, c.chi) for c in executor.mapped] == [
        (r["layer"], r["cut"], r["chi"]) for r in local
    ]
    assert [r["w2"] for r in pooled] == [r["w2"] for r in local]


def dask_client():
    distributed = pytest.importorskip("distributed")
    return distributed.Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"
    )


@pytest.mark.parametrize("kind", ["serial", "dask"])
def test_executor_cells_run_on_private_copies(kind):
    """Cells sent through an executor never touch the caller's model, even while running; on
    Dask, neither the scattered model, which every cell on a worker shares."""
    model = small_model()
    original = model[0].weight.detach().clone()
    seen = []

    def evaluate(m):
        seen.append(float((model[0].weight.detach() - original).abs().max()))
        return {"own": float(m[0].weight.detach().norm())}

    runner = dask_client() if kind == "dask" else contextlib.nullcontext(SerialExecutor())
    with runner as executor:
        rows = truncation_sweep(model, evaluate, layers="0", chis=[1], executor=executor)
    local = truncation_sweep(
        model, lambda m: {"own": float(m[0].weight.detach().norm())}, layers="0", chis=[1]
    )
    assert seen and max(seen) == 0.0
    assert [r["own"] for r in rows] == pytest.approx([r["own"] for r in local], rel=1e-12)


def test_layers_compression_does_not_support_are_still_swept():
    """Spectra work on any weight: Conv1d and grouped convs are truncatable, rows follow the SVD."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3), torch.nn.Conv2d(4, 4, 1, groups=2), torch.nn.Linear(3, 2)
    ).double()
    assert truncatable_layers(model) == ["0", "1", "2"]
    assert truncatable_layers(model, "1") == ["1"]  # explicit: no "cannot be compressed" error
    rows = truncation_sweep(model, weight_norm_metric, layers="0", cuts=[("out",)], chis=[1])
    w = model[0].weight.detach().numpy().reshape(4, -1)
    s = np.linalg.svd(w, compute_uv=False)
    assert [r["chi"] for r in rows] == [1, 4]
    assert rows[0]["rel_error"] == pytest.approx(math.sqrt((s[1:] ** 2).sum() / (s**2).sum()))


def test_each_cut_is_factorized_once_for_all_its_chis(monkeypatch):
    """A local sweep computes one SVD per (layer, cut), not one per cell."""
    calls, svd = [], analysis.svd

    def counting_svd(a, *args, **kwargs):
        calls.append(tuple(a.shape))
        return svd(a, *args, **kwargs)

    monkeypatch.setattr(analysis, "svd", counting_svd)
    model = small_model()
    rows = truncation_sweep(
        model, weight_norm_metric, layers="0", cuts=[("out",), ("out", "in")], chis=[1, 2]
    )
    assert [(r["cut"], r["chi"]) for r in rows] == [
        ("out|in,kh,kw", 1), ("out|in,kh,kw", 2), ("out|in,kh,kw", 3),
        ("out,in|kh,kw", 1), ("out,in|kh,kw", 2), ("out,in|kh,kw", 4),
    ]  # fmt: skip
    assert calls == [(3, 8), (6, 4)]
    local = truncation_sweep(
        small_model(), weight_norm_metric, layers="0", cuts=[("out",), ("out", "in")],
        chis=[1, 2], executor=SerialExecutor(),
    )  # fmt: skip
    for a, b in zip(rows, local):
        assert a.keys() == b.keys() and a["key"] == b["key"]
        for k in ("rel_error", "norm_kept", "entropy", "w2"):
            assert a[k] == pytest.approx(b[k], rel=1e-12), k


def test_progress_bar_on_a_terminal_counts_the_cells(capsys, monkeypatch):
    """By default the bar is drawn when stderr is a terminal, with the number of cells as total."""
    model = small_model()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    truncation_sweep(model, lambda m: 0.0, layers="2", cuts=[("out",)], chis=[1])
    err = capsys.readouterr().err
    assert re.search(r"(^|\r)truncation sweep: 100%\|[^|]*\| 2/2 \[", err), err


def test_sweep_refuses_a_results_file_of_another_config(tmp_path):
    """The config reaches the results file: a rerun with another one is refused, not mixed in."""
    path = tmp_path / "rows.jsonl"
    model = small_model()
    first = truncation_sweep(model, lambda m: 0.0, layers="2", chis=[1], results=path,
                             config={"seed": 1})  # fmt: skip
    assert json.loads(path.read_text().splitlines()[0]) == {"config": {"seed": 1}, "kind": "config"}
    again = truncation_sweep(model, lambda m: 1.0, layers="2", chis=[1], results=path,
                             config={"seed": 1})  # fmt: skip
    assert again == first  # resumed from the file, nothing evaluated again
    with pytest.raises(ValueError, match=r"holds results of another configuration"):
        truncation_sweep(model, lambda m: 0.0, layers="2", chis=[1], results=path,
                         config={"seed": 2})  # fmt: skip


def test_unused_cut_message_says_what_a_cut_is():
    model = small_model()
    with pytest.raises(ValueError) as info:
        truncation_sweep(model, lambda m: 0.0, layers="2", cuts=[("kh",)])
    assert str(info.value) == (
        "cuts [('kh',)] apply to none of the layers swept (their legs: {'2': ('out', 'in')}); a "
        "cut names legs of KERNEL_LEGS on one side, and leaves at least one leg on the other"
    )


def test_a_stopped_dask_sweep_leaves_another_sweep_of_the_same_model_running():
    """Each sweep scatters its own copy: cancelling one (early stop) cannot cancel the other's."""
    model = small_model()

    def slow(m):
        time.sleep(0.02)
        return weight_norm_metric(m)

    cells = [Cell("0", ("out",), "out|in,kh,kw", chi) for chi in (1, 2, 3)] * 2
    expected = [_evaluate_cell(small_model(), slow, c)["w2"] for c in cells]
    with dask_client() as client:
        first = map_cells(_SweepCell(private=True), cells, executor=client, shared=(model, slow))
        second = map_cells(_SweepCell(private=True), cells, executor=client, shared=(model, slow))
        next(first)
        got = [next(second)["w2"]]
        first.close()  # cancels its futures and its scattered model
        got += [row["w2"] for row in second]
    assert sorted(got) == pytest.approx(sorted(expected), rel=1e-12)


def test_truncation_sweep_calls_a_progress_callable(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 2))
    calls = []
    path = tmp_path / "sweep.jsonl"

    def sweep():
        return truncation_sweep(
            model,
            lambda m: 0.5,
            layers="0",
            cuts=[("out",)],
            chis=[1, 3],
            results=path,
            progress=lambda row, done, total: calls.append(
                (row["chi"], done, total, len(path.read_text().splitlines()))
            ),
        )

    rows = sweep()
    assert [r["chi"] for r in rows] == [1, 3]  # conv2d 3x2x2x2 across "out": rank 3
    assert calls == [(1, 1, 2, 2), (3, 2, 2, 3)]  # called once the row is stored (after the header)
    assert capsys.readouterr().err == ""  # the callable replaces the bar
    calls.clear()
    assert sweep() == rows and calls == []  # reused cells are not reported
