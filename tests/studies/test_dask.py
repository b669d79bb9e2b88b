"""Sweeps on a Dask cluster: a LocalCluster of 2 worker processes gives the serial run's table.

The model and the evaluation go to each worker once (scattered); cells name the worker's copies;
only this process writes the results file, so resuming works as in a serial run.
"""

import csv

import pytest
import torch

distributed = pytest.importorskip("distributed")

from models import build_model  # noqa: E402
from studies import truncation  # noqa: E402
from studies.common.data import load_digits  # noqa: E402
from studies.common.training import SplitAccuracy  # noqa: E402
from tensornet.analysis import Cell, truncation_sweep  # noqa: E402

CUTS = [("out",), ("in",), ("out", "in")]
CHIS = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def setup():
    data = load_digits(seed=0, limit=150)
    torch.manual_seed(0)
    model = build_model("vanilla_cnn", 1, 10, 8, widths=(8, 8, 16, 16)).eval()
    return model, SplitAccuracy(data.val, data.test)


def close(a, b):
    """Rows equal: identical keys, labels and accuracies; errors of the float32 SVDs equal to
    float32 rounding (workers run one thread, the driver several, so LAPACK sums differ)."""
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("accuracy"):
            assert a[k] == b[k], k
        elif isinstance(a[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
        else:
            assert a[k] == b[k], k


class Spy:
    """A Client stand-in that records what is sent to the cluster."""

    def __init__(self, client):
        self.client, self.scattered, self.submitted = client, [], []

    def scatter(self, data, **kw):
        self.scattered.append((data, kw))
        return self.client.scatter(data, **kw)

    def submit(self, fn, *args, **kw):
        self.submitted.append(args)
        return self.client.submit(fn, *args, **kw)

    def cancel(self, *args, **kw):
        return self.client.cancel(*args, **kw)


def test_cluster_sweep_equals_the_serial_sweep(client, setup, tmp_path):
    model, evaluate = setup
    serial = truncation_sweep(model, evaluate, cuts=CUTS, chis=CHIS, progress=False)
    spy = Spy(client)
    path = tmp_path / "sweep.jsonl"
    rows = truncation_sweep(
        model, evaluate, cuts=CUTS, chis=CHIS, results=path, executor=spy, progress=False
    )
    assert len(rows) == len(serial) > 20
    for a, b in zip(serial, rows):
        close(a, b)
    assert set(client.run(lambda: "up")) == set(client.scheduler_info()["workers"])
    assert len(client.scheduler_info()["workers"]) == 2
    # the model and the evaluation were scattered once, to every worker ...
    assert len(spy.scattered) == 1
    ((sent, options),) = spy.scattered
    assert sent[0] is model and sent[1] is evaluate and options["broadcast"] is True
    # ... and no cell carries them: each task gets the two futures and its Cell
    assert len(spy.submitted) == len(rows)
    for args in spy.submitted:
        assert [type(a) for a in args] == [distributed.Future, distributed.Future, Cell]
    # only the driver wrote the results: one header and one line per cell, each once
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(rows)
    # a rerun finds every cell done and sends nothing
    again = Spy(client)
    assert (
        truncation_sweep(
            model, evaluate, cuts=CUTS, chis=CHIS, results=path, executor=again, progress=False
        )
        == rows
    )
    assert again.submitted == [] and again.scattered == []


def test_study_on_a_running_scheduler_matches_the_serial_study(client, tmp_path):
    argv = ["--quick", "--limit", "150", "--epochs", "1", "--chis", "1,4", "--device", "cpu"]
    assert truncation.main([*argv, "--out", str(tmp_path / "serial")]) == 0
    address = client.scheduler.address
    assert truncation.main([*argv, "--out", str(tmp_path / "dask"), "--scheduler", address]) == 0
    with open(tmp_path / "serial" / "seed-0" / "sweep.csv") as f:
        serial = list(csv.DictReader(f))
    with open(tmp_path / "dask" / "seed-0" / "sweep.csv") as f:
        on_cluster = list(csv.DictReader(f))
    assert [(r["layer"], r["cut"], r["chi"]) for r in serial] == [
        (r["layer"], r["cut"], r["chi"]) for r in on_cluster
    ]
    for a, b in zip(serial, on_cluster):
        assert a["val_accuracy"] == b["val_accuracy"] and a["test_accuracy"] == b["test_accuracy"]
        for k in ("rel_error", "norm_kept", "entropy"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5, abs=1e-6)


def test_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    from studies.common import runner

    monkeypatch.setattr(runner, "SCHEDULER_TIMEOUT", "2s")
    out = tmp_path / "o"
    code = truncation.main(
        ["--quick", "--limit", "50", "--epochs", "1", "--out", str(out), "--device", "cpu",
         "--scheduler", "tcp://127.0.0.1:9"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot connect" in err
    assert not out.exists()


def test_map_cells_on_worker_processes_gives_the_in_process_table(client):
    """runs.map_cells: the same cells give the same results here and on worker processes."""
    import operator

    from tensornet.runs import map_cells

    cells = [0.5, -2.0, 3.25, 1e-3, 7.0]
    here = list(map_cells(operator.mul, cells, shared=(3.0,)))
    there = sorted(map_cells(operator.mul, cells, executor=client, shared=(3.0,)))
    assert here == [1.5, -6.0, 9.75, 3.0 * 1e-3, 21.0] and there == sorted(here)
