"""Running a study in an output folder: one run at a time, seeds, resuming, executors.

- :class:`OutputLock`: a second run on the same ``--out`` refuses instead of interleaving.
- :func:`remove_stale_temporaries`: leftovers of atomic writes that a kill interrupted.
- :func:`seed_dir`, :func:`seed_list`: one sub-folder per seed, each resumable on its own.
- :func:`read_json`, :func:`write_json`: study artefacts as strict JSON (NaN/inf become null),
  written atomically; a file that is not JSON or not ours is a :class:`StudyError` naming it.
- :func:`check_results_file`: a ``truncation_sweep`` results file checked before it is appended
  to (garbage lines, a foreign file, another configuration).
- :func:`check_json_artefact`: the same for a JSON result with a ``config`` entry.
- :func:`dask_executor`: a local Dask cluster of N worker processes, or a running scheduler.
- :func:`run_seeds`: all of the above in the right order around a study's seeds.

Examples
--------
>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> with OutputLock(out):
...     write_json(out / "x.json", {"accuracy": float("nan")})
>>> (out / "x.json").read_text()
'{\\n "accuracy": null\\n}'
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tensornet.io import atomic_write_text

from .cli import StudyError

__all__ = [
    "OutputLock",
    "SeedTask",
    "check_json_artefact",
    "check_results_file",
    "config_changes",
    "dask_executor",
    "read_json",
    "remove_stale_temporaries",
    "run_seeds",
    "seed_dir",
    "seed_list",
    "to_json",
    "write_json",
]

T = TypeVar("T")
LOCK_NAME = ".lock"
SCHEDULER_TIMEOUT = "15s"  # how long to try reaching a --scheduler


class OutputLock:
    """An exclusive lock on an output folder, held for the life of a run.

    The lock is an ``flock`` on ``OUT/.lock``: the operating system releases it when the process
    ends, however it ends (a killed run never leaves a stale lock). The file itself stays.

    Parameters
    ----------
    out
        The output folder; created if missing.

    Raises
    ------
    StudyError
        On entry, when another process holds the lock, or the folder cannot be used.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl

        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StudyError(f"--out {self.out}: cannot use it ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StudyError(
                f"--out {self.out}: another run is using it (lock {self.path} is held); wait for "
                "it to finish or use another --out"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def remove_stale_temporaries(out: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left under ``out``.

    :func:`tensornet.io.atomic_path` writes ``.NAME.XXXXXXXX.tmp`` next to ``NAME`` and renames
    it into place; a run killed in between leaves the temporary file. Call this only while
    holding the :class:`OutputLock`, so no live write is removed.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for path in Path(out).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def seed_list(first: int, count: int) -> list[int]:
    """The seeds of a run: ``first, first + 1, ..., first + count - 1``.

    >>> seed_list(3, 2)
    [3, 4]
    """
    return list(range(first, first + count))


def seed_dir(out: str | os.PathLike, seed: int) -> Path:
    """The folder holding everything of one seed: ``OUT/seed-SEED``.

    >>> seed_dir("runs/x", 2).as_posix()
    'runs/x/seed-2'
    """
    return Path(out) / f"seed-{seed}"


def to_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON ``null``), recursively.

    Tuples become lists; mappings keep their keys.

    >>> to_json({"a": [1.0, float("inf")], "b": (float("nan"),)})
    {'a': [1.0, None], 'b': [None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN/inf as ``null``), atomically, keys sorted."""
    text = json.dumps(to_json(obj), indent=1, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text)


def read_json(path: str | os.PathLike, what: str, remedy: str) -> Any:
    """Read a JSON artefact, or fail with one line naming it.

    Parameters
    ----------
    path
        The file.
    what
        What the file should be, e.g. ``"the combined-truncation results"``.
    remedy
        What the user should do when it is unreadable, e.g. ``"delete it to recompute"``.

    Raises
    ------
    StudyError
        The file is empty, not UTF-8 or not JSON.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not a text file, so not {what}; {remedy}") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read it ({exc.strerror or exc}); {remedy}") from None
    if not text.strip():
        raise StudyError(f"{path}: empty file, not {what}; {remedy}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudyError(
            f"{path}: not valid JSON (line {exc.lineno}), so not {what}; {remedy}"
        ) from None


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names of the settings that differ between two configurations (sorted).

    >>> config_changes({"epochs": 3, "lr": 0.1}, {"epochs": 15, "lr": 0.1, "seed": 0})
    ['epochs', 'seed']
    """
    keys = set(saved) | set(current)
    return sorted(k for k in keys if saved.get(k, "<unset>") != current.get(k, "<unset>"))


def check_results_file(path: str | os.PathLike, config: Mapping[str, Any]) -> None:
    """Check a sweep results file (JSON lines with a config header) before it is reused.

    A missing file is fine (the sweep starts afresh), and so is a torn last line (a killed
    append, which :class:`tensornet.analysis.ResultStore` drops). Anything else that would make
    the rerun fail or mix results is a :class:`StudyError` naming the file.

    Parameters
    ----------
    path
        The ``sweep.jsonl`` of one seed.
    config
        The configuration the current run would store in its header.
    """
    path = Path(path)
    if not path.exists():
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    complete = data.rpartition(b"\n")[0]
    remedy = "delete it to recompute the sweep"
    rows = []
    for number, line in enumerate(complete.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise StudyError(
                f"{path}: line {number} is not a JSON record (the file is damaged); {remedy}"
            ) from None
    if not rows:
        if data.strip():  # a single torn line and nothing else: nothing of value
            return
        raise StudyError(f"{path}: empty file, not a sweep results file; {remedy}")
    head = rows[0]
    if not (isinstance(head, dict) and head.get("kind") == "config" and "config" in head):
        raise StudyError(
            f"{path}: not a results file of this study (no config header); use another --out "
            "or delete it"
        )
    saved = json.loads(json.dumps(head["config"], sort_keys=True, default=str))
    wanted = json.loads(json.dumps(dict(config), sort_keys=True, default=str))
    if saved != wanted:
        changed = ", ".join(config_changes(saved, wanted)) or "?"
        raise StudyError(
            f"{path}: made with another configuration (changed: {changed}); use another --out, "
            "or delete the file to recompute"
        )
    for number, row in enumerate(rows[1:], start=2):
        if not isinstance(row, dict) or "key" not in row:
            raise StudyError(f"{path}: line {number} is not a sweep cell; {remedy}")


def check_json_artefact(
    path: str | os.PathLike, what: str, keys: Collection[str], config: Mapping[str, Any]
) -> None:
    """Check a JSON result (a dict with ``keys``, among them ``"config"``) before it is reused.

    A missing file is fine. One that is unreadable, not ours (``keys`` missing) or made with
    another configuration is a :class:`StudyError` naming the file, the changed settings and
    what to do.
    """
    path = Path(path)
    if not path.exists():
        return
    saved = read_json(path, what, "delete it to recompute")
    if not (isinstance(saved, dict) and {"config", *keys} <= set(saved)):
        raise StudyError(f"{path}: not {what} of this study; use another --out or delete it")
    changed = config_changes(saved["config"], json.loads(json.dumps(to_json(dict(config)))))
    if changed:
        raise StudyError(
            f"{path}: made with another configuration (changed: {', '.join(changed)}); use "
            "another --out, or delete the file to recompute"
        )


class SeedTask(Protocol):
    """One seed's part of a study, as :func:`run_seeds` drives it."""

    def check(self) -> None:
        """Raise :class:`StudyError` for any file of this seed that cannot be reused."""

    def run(self, executor: Any) -> Any:
        """Compute (or reuse) this seed's results; ``executor`` is a Dask client or None."""


def run_seeds(
    out: str | os.PathLike,
    seeds: Sequence[int],
    load: Callable[[int], Any],
    task: Callable[[int, Any], SeedTask],
    finish: Callable[[list[Any]], T],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    log: Callable[[str], None] = print,
) -> T:
    """Run a study's seeds in ``out``, in the order that keeps every promise of the study CLI.

    1. Load the first seed's data (a bad dataset fails before ``out`` is touched) and connect
       to ``scheduler`` (an unreachable one, too).
    2. Take the :class:`OutputLock` (a second run refuses).
    3. ``task(seed, data).check()`` for every seed: a corrupt, foreign or stale file fails
       before anything is written.
    4. Remove stale temporaries; start the local cluster of ``workers`` processes.
    5. ``task(seed, data).run(executor)`` for each seed, then ``finish(results)``, still
       under the lock (e.g. the report).

    Parameters
    ----------
    out
        The output folder.
    seeds
        The seeds, in order.
    load
        ``seed -> data``.
    task
        ``(seed, data) -> SeedTask``.
    finish
        Called with the list of the seeds' results; its value is returned.
    workers, scheduler
        Where the seeds' parallel parts run (see :func:`dask_executor`).
    log
        Progress messages.
    """
    first = load(seeds[0])
    with contextlib.ExitStack() as stack:
        executor = None
        if scheduler is not None:
            executor = stack.enter_context(dask_executor(scheduler=scheduler))
        stack.enter_context(OutputLock(out))
        for seed in seeds:
            task(seed, first if seed == seeds[0] else load(seed)).check()
        for path in remove_stale_temporaries(out):
            log(f"removed {path}, left by an interrupted run")
        if workers is not None:
            executor = stack.enter_context(dask_executor(workers=workers))
        results = []
        for seed in seeds:
            data = first if seed == seeds[0] else load(seed)
            first = None  # let the first seed's data go once it is done
            results.append(task(seed, data).run(executor))
        return finish(results)


@contextlib.contextmanager
def dask_executor(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: a local cluster of ``workers`` processes, or ``scheduler``'s.

    Yields ``None`` when neither is given (run in this process). The local cluster has one
    thread per worker and no dashboard, and is shut down on exit, also after Ctrl-C.

    Parameters
    ----------
    workers
        Start a ``LocalCluster`` with this many worker processes.
    scheduler
        Connect to a running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.

    Raises
    ------
    StudyError
        ``distributed`` is not installed, or the scheduler cannot be reached.
    """
    if workers is None and scheduler is None:
        yield None
        return
    try:
        import distributed
    except ImportError:
        raise StudyError(
            "--workers/--scheduler need Dask: pip install 'tensornet[dask]' (the distributed "
            "package)"
        ) from None
    import logging

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "bokeh"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise StudyError(
                    f"--scheduler {scheduler}: cannot connect ({reason[:200]})"
                ) from None
            stack.callback(client.close)
        else:
            cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            stack.callback(cluster.close)
            client = distributed.Client(cluster)
            stack.callback(client.close)
        yield client
