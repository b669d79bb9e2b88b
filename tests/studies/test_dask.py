"""Sweeps on a Dask cluster: a LocalCluster of 2 worker processes gives the serial run's table.

The model and the evaluation go to each worker once (scattered); cells name the worker's copies;
only this process writes the results file, so resuming works as in a serial run.
"""

import pytest
import torch

distributed = pytest.importorskip("distributed")

from models import build_model  # noqa: E402
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
