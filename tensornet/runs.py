"""Run machinery shared by sweeps and studies: an append-only result store and one map over cells.

A run is a list of independent cells (one layer at one chi, one method at one budget, ...). Two
pieces make such runs resumable and portable:

- :class:`ResultStore`: one JSON-lines file per run, a config header then one row per finished
  cell; each row is a single appended, fsync'ed line (a torn last line from a killed run is
  discarded), so a rerun skips the finished cells and rebuilds the same table.
- :func:`map_cells`: ``fn(*shared, cell)`` for every cell, in this process, on a
  ``concurrent.futures`` executor, or on a Dask ``distributed.Client`` (the shared objects are
  scattered to every worker once, then the cells are submitted and gathered as they finish).
  Dask is imported only when a client is given.

Only the caller writes results, whichever engine runs the cells.

Examples
--------
>>> def square(offset, cell):
...     return {"key": str(cell), "value": cell * cell + offset}
>>> store = ResultStore(None)  # in memory; pass a path to resume a killed run
>>> for row in map_cells(square, store.todo([1, 2, 3], str), shared=(10,)):
...     store.add(row)
>>> [row["value"] for row in store.table([3, 1], str)]
[19, 11]
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["ResultStore", "map_cells"]


def _strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


class ResultStore:
    """Append-only JSON-lines results: one row per finished cell, with a header row of config.

    Parameters
    ----------
    path : path or None
        The results file (created with its directory when missing). ``None`` keeps the rows in
        memory only (a run that cannot be resumed, with the same interface).
    config : mapping, optional
        Written as the header; reopening a file with another config raises ValueError instead
        of mixing results.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.jsonl")
    >>> ResultStore(path, {"seed": 0}).add({"key": "a", "value": 1.0})
    >>> ResultStore(path, {"seed": 0}).done
    {'a'}
    """

    def __init__(
        self, path: str | os.PathLike | None, config: Mapping[str, Any] | None = None
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.config = json.loads(json.dumps(dict(config or {}), sort_keys=True, default=str))
        self.rows: list[dict] = []
        if self.path is not None:
            self._open()
        self.done = {row["key"] for row in self.rows if "key" in row}

    def _open(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        rows = self._read()
        if rows and rows[0].get("kind") == "config":
            if rows[0]["config"] != self.config:
                raise ValueError(
                    f"{self.path} holds results of another configuration ({rows[0]['config']}); "
                    "use another results path or delete it"
                )
            self.rows = rows[1:]
        else:
            if rows:
                raise ValueError(f"{self.path} is not a tensornet results file (no config header)")
            self._append({"kind": "config", "config": self.config})

    def _read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            data = f.read()
        complete, _, torn = data.rpartition(b"\n")
        if torn:  # a killed run left half a line: drop it so the next append starts clean
            with open(self.path, "r+b") as f:
                f.truncate(len(complete) + (1 if complete else 0))
        return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]

    def _append(self, row: Mapping[str, Any]) -> None:
        # strict JSON: a NaN/inf metric is written as null, which every JSON reader accepts
        line = (json.dumps(_strict_json(row), sort_keys=True, allow_nan=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def add(self, row: Mapping[str, Any]) -> None:
        """Record one finished cell (its ``key`` marks it done)."""
        if self.path is not None:
            self._append(row)
        self.rows.append(dict(row))
        if "key" in row:
            self.done.add(row["key"])

    def todo(self, cells: Iterable[Any], key: Callable[[Any], str]) -> list[Any]:
        """The cells whose ``key(cell)`` has no row yet, in order."""
        return [cell for cell in cells if key(cell) not in self.done]

    def table(self, cells: Iterable[Any], key: Callable[[Any], str]) -> list[dict]:
        """The row of each cell, in the order of ``cells`` (KeyError for a cell not done)."""
        by_key = {row["key"]: row for row in self.rows if "key" in row}
        return [by_key[key(cell)] for cell in cells]


def map_cells(
    fn: Callable[..., Any],
    cells: Iterable[Any],
    *,
    executor: Any = None,
    shared: Sequence[Any] = (),
) -> Iterator[Any]:
    """``fn(*shared, cell)`` for every cell, here, on a futures executor or on a Dask cluster.

    Parameters
    ----------
    fn : callable
        ``fn(*shared, cell) -> result``. Off this process it must be picklable (a module-level
        function or a picklable object); where cells share objects (threads, a Dask worker)
        it must not change them (work on a copy).
    cells : iterable
        The cells, each passed as the last argument.
    executor : None, concurrent.futures.Executor or distributed.Client, optional
        None runs the cells here, in order. An object with ``map`` (threads, processes, or any
        executor with that interface) runs ``executor.map``: results in cell order. A Dask
        client (an object with ``scatter`` and ``submit``) gets the ``shared`` objects once
        per worker (scattered, never pickled into a task), then one task per cell; results come
        as they finish, and stopping early cancels what is left.
    shared : sequence, optional
        Objects every cell needs (a model, a dataset): the leading arguments of ``fn``.

    Returns
    -------
    iterator
        The results (in cell order, except on Dask).

    Examples
    --------
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(map_cells(pow, [1, 2, 3], executor=pool, shared=(2,)))
    [2, 4, 8]
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(shared, (str, bytes)) or not isinstance(shared, Sequence):
        raise TypeError(f"shared must be a sequence of objects, got {type(shared).__name__}")
    cells, shared = list(cells), tuple(shared)
    if executor is None:
        return (fn(*shared, cell) for cell in cells)
    if hasattr(executor, "scatter") and hasattr(executor, "submit"):  # distributed.Client
        return _on_dask(executor, fn, cells, shared)
    if not hasattr(executor, "map"):
        raise TypeError(
            "executor must be None, a concurrent.futures.Executor (anything with map) or a "
            f"distributed.Client, got {type(executor).__name__}"
        )
    return iter(executor.map(functools.partial(fn, *shared), cells))


def _on_dask(client: Any, fn: Callable, cells: list, shared: tuple) -> Iterator[Any]:
    """Scatter ``shared`` once, submit every cell, yield results as they finish."""
    if not cells:
        return
    from distributed import as_completed

    # hash=False: each run scatters its own copies, so cancelling one run leaves another's alone
    remote = client.scatter(list(shared), broadcast=True, hash=False) if shared else []
    futures = [client.submit(fn, *remote, cell, pure=False) for cell in cells]
    try:
        for future in as_completed(futures):
            yield future.result()
            future.release()
    finally:  # an interrupted run leaves nothing running on the cluster
        client.cancel([*futures, *remote])
