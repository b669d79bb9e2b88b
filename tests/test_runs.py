"""Run machinery: one table from every engine (here, threads, processes, Dask), resumable stores."""

import json
import math
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

from tensornet.runs import ResultStore, map_cells

ROOT = Path(__file__).resolve().parent.parent
CELLS = [(layer, chi) for layer in ("a", "b", "c") for chi in (1, 2, 4)]


def key(cell):
    return f"{cell[0]}\t{cell[1]}"


def score(weights, scale, cell):
    """A deterministic cell: a value any engine must reproduce bit for bit."""
    layer, chi = cell
    w = weights[layer]
    return {"key": key(cell), "layer": layer, "chi": chi, "value": scale * math.fsum(w[:chi])}


WEIGHTS = {"a": [0.1, 0.2, 0.3, 0.4], "b": [1.5, -2.5, 3.25, 1e-3], "c": [7.0, 0.0, -1.0, 2.0]}
EXPECTED = [score(WEIGHTS, 3.0, cell) for cell in CELLS]


def table(executor):
    store = ResultStore(None)
    for row in map_cells(score, store.todo(CELLS, key), executor=executor, shared=(WEIGHTS, 3.0)):
        store.add(row)
    return store.table(CELLS, key)


def test_every_engine_gives_the_same_table():
    """In process, on threads and on processes: the same rows, in cell order from map."""
    assert table(None) == EXPECTED
    assert [r["value"] for r in EXPECTED[:3]] == pytest.approx([0.3, 0.9, 3.0])
    with ThreadPoolExecutor(2) as pool:
        assert table(pool) == EXPECTED
        assert list(map_cells(score, CELLS, executor=pool, shared=(WEIGHTS, 3.0))) == EXPECTED
    with ProcessPoolExecutor(2) as pool:
        assert table(pool) == EXPECTED


class Spy:
    """A Client stand-in that records what reaches the cluster."""

    def __init__(self, client):
        self.client, self.scattered, self.submitted, self.cancelled = client, [], [], []

    def scatter(self, data, **kw):
        self.scattered.append((data, kw))
        return self.client.scatter(data, **kw)

    def submit(self, fn, *args, **kw):
        self.submitted.append((args, kw))
        return self.client.submit(fn, *args, **kw)

    def cancel(self, futures, **kw):
        self.cancelled.append(list(futures))
        return self.client.cancel(futures, **kw)


def test_a_dask_cluster_gives_the_same_table_scattering_the_shared_objects_once():
    distributed = pytest.importorskip("distributed")
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=":0"
    ) as client:
        spy = Spy(client)
        assert table(spy) == EXPECTED
        ((sent, options),) = spy.scattered
        assert sent[0] is WEIGHTS and sent[1] == 3.0
        assert options == {"broadcast": True, "hash": False}
        assert len(spy.submitted) == len(CELLS)
        for (args, kw), cell in zip(spy.submitted, CELLS):
            assert [type(a) for a in args[:2]] == [distributed.Future] * 2 and args[2] == cell
            assert kw == {"pure": False}
        assert len(spy.cancelled) == 1 and len(spy.cancelled[0]) == len(CELLS) + 2
        # nothing shared: nothing scattered; no cells: nothing sent at all
        plain = Spy(client)
        got = sorted(map_cells(abs, [-2, 3, -5], executor=plain), key=abs)
        assert got == [2, 3, 5] and plain.scattered == []
        assert all(args == ((c,), {"pure": False}) for args, c in zip(plain.submitted, [-2, 3, -5]))
        idle = Spy(client)
        assert list(map_cells(score, [], executor=idle, shared=(WEIGHTS, 3.0))) == []
        assert idle.scattered == idle.submitted == idle.cancelled == []


def test_cells_are_taken_once_and_arguments_are_checked_before_work():
    """Any iterable of cells (consumed once); bad arguments are refused by name at the call."""
    assert list(map_cells(pow, iter([1, 2, 3]), shared=[2])) == [2, 4, 8]
    assert list(map_cells(abs, (c for c in [-1, -2]))) == [1, 2]
    with pytest.raises(TypeError, match="^fn must be callable, got int$"):
        map_cells(3, CELLS)
    with pytest.raises(TypeError, match="^shared must be a sequence of objects, got str$"):
        map_cells(score, CELLS, shared="ab")
    with pytest.raises(TypeError, match="^shared must be a sequence of objects, got dict$"):
        map_cells(score, CELLS, shared={"a": 1})
    with pytest.raises(TypeError, match=r"^executor must be None, .* got object$"):
        map_cells(score, CELLS, executor=object())


def test_an_in_memory_store_has_the_file_store_interface(tmp_path):
    store = ResultStore(None, {"a": 1})
    assert store.path is None and store.config == {"a": 1} and store.rows == []
    store.add({"key": "x", "v": 1})
    store.add({"note": "no key"})
    assert store.done == {"x"} and store.rows == [{"key": "x", "v": 1}, {"note": "no key"}]
    assert store.todo(["x", "y", "z"], str) == ["y", "z"]
    assert store.table(["x"], str) == [{"key": "x", "v": 1}]
    with pytest.raises(KeyError):
        store.table(["y"], str)
    assert list(tmp_path.iterdir()) == []


def test_a_file_store_reopens_with_its_rows_and_nan_as_null(tmp_path):
    path = tmp_path / "deep" / "er" / "cells.jsonl"
    store = ResultStore(path, {"seed": 0})
    store.add({"key": "x", "v": float("nan"), "w": [float("inf"), 1.0]})
    store.add({"key": "y", "v": 2.0})
    again = ResultStore(path, {"seed": 0})
    assert again.rows == [{"key": "x", "v": None, "w": [None, 1.0]}, {"key": "y", "v": 2.0}]
    assert again.done == {"x", "y"} and again.table(["y", "x"], str)[0]["v"] == 2.0
    assert json.loads(path.read_text().splitlines()[0]) == {"config": {"seed": 0}, "kind": "config"}


KILLED_RUN = """
import os, sys
from tensornet.runs import ResultStore, map_cells

def square(offset, cell):
    if cell == 3:
        os.kill(os.getpid(), 9)  # killed mid-run, after cells 0, 1, 2 were written
    return {"key": str(cell), "value": cell * cell + offset}

store = ResultStore(sys.argv[1], {"offset": 10})
for row in map_cells(square, store.todo(range(6), str), shared=(10,)):
    store.add(row)
"""


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    """Cells finished before the kill are skipped; a torn last line is discarded and redone."""
    path = tmp_path / "cells.jsonl"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILLED_RUN))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(path)], cwd=ROOT, env=env, timeout=120)
    assert done.returncode == -9
    assert len(path.read_text().splitlines()) == 1 + 3
    with open(path, "ab") as f:  # as if the kill had come in the middle of a write
        f.write(b'{"key": "3", "val')
    computed = []

    def square(offset, cell):
        computed.append(cell)
        return {"key": str(cell), "value": cell * cell + offset}

    store = ResultStore(path, {"offset": 10})
    assert store.done == {"0", "1", "2"}
    for row in map_cells(square, store.todo(range(6), str), shared=(10,)):
        store.add(row)
    assert computed == [3, 4, 5]
    expected = [{"key": str(c), "value": c * c + 10} for c in range(6)]
    assert store.table(range(6), str) == expected
    assert ResultStore(path, {"offset": 10}).table(range(6), str) == expected
    assert len(path.read_text().splitlines()) == 1 + 6 and path.read_bytes().endswith(b"}\n")
