"""The driver every study shares: load each seed's data, run the seeds, write the report.

A study module supplies a per-seed task class (``SeedRun(cfg, seed, data, log)``, see
:class:`studies.common.runner.SeedTask`) and three functions of the seeds' results: its
findings, its figures and its report text. :class:`StudyDriver` does the rest the same way for
every study: the data of each seed from :func:`studies.common.data.get_dataset` (a missing or
bad file is a one-line :class:`~studies.common.cli.StudyError`), the seeds through
:func:`studies.common.runner.run_seeds` (lock, resume, Dask), ``findings.json`` and
``report.md`` written atomically, a timed log.

Examples
--------
>>> class Driver(StudyDriver):
...     def findings(self, results):
...         return {"n": len(results)}
...     def report(self, results, found, seconds):
...         return f"{found['n']} seeds\\n"
>>> import types
>>> cfg = types.SimpleNamespace(out="runs/x", seed=0, seeds=2)
>>> Driver(cfg).seeds()
[0, 1]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tensornet.io import atomic_write_text

from . import cli, runner
from .cli import StudyError
from .data import DatasetSplits, get_dataset

__all__ = ["StudyDriver"]


class StudyDriver:
    """Lock ``cfg.out``, check what is there, run every seed, write findings and the report.

    Subclasses set :attr:`seed_run` and implement :meth:`findings` and :meth:`report`
    (:meth:`figures` is optional). ``cfg`` needs ``out``, ``seed`` and ``seeds``, and for the
    default data ``dataset``, ``data_dir`` and ``limit`` (and ``val_size``, if it has one), and
    for Dask ``workers`` and ``scheduler``.

    Parameters
    ----------
    cfg
        The study's configuration.
    load_data
        ``seed -> DatasetSplits``; default :func:`studies.common.data.get_dataset`.
    """

    #: the per-seed task: ``seed_run(cfg, seed, data, log)``
    seed_run: Callable[..., runner.SeedTask]

    def __init__(self, cfg: Any, load_data: Callable[[int], DatasetSplits] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.started = time.perf_counter()
        self._load = load_data or self._default_load
        self.results: list[dict[str, Any]] = []

    def _default_load(self, seed: int) -> DatasetSplits:
        cfg = self.cfg
        try:
            return get_dataset(
                cfg.dataset,
                cfg.data_dir,
                seed=seed,
                limit=cfg.limit,
                val_size=getattr(cfg, "val_size", None),
            )
        except (FileNotFoundError, ValueError) as exc:  # DataError is a ValueError
            raise StudyError(str(exc)) from None

    def log(self, text: str) -> None:
        """Print ``text`` with the seconds since the start."""
        print(f"{text}  [{time.perf_counter() - self.started:.1f} s]", flush=True)

    def seeds(self) -> list[int]:
        """The seeds of this run."""
        return runner.seed_list(self.cfg.seed, self.cfg.seeds)

    def run(self) -> Path:
        """Run every seed (reusing what is done) and write the report; return its path."""
        cfg = self.cfg
        path = runner.run_seeds(
            self.out,
            self.seeds(),
            self._load,
            lambda seed, data: self.seed_run(cfg, seed, data, self.log),
            self.finish,
            workers=getattr(cfg, "workers", None),
            scheduler=getattr(cfg, "scheduler", None),
            log=self.log,
        )
        self.log(f"report: {path}")
        return path

    def finish(self, results: list[dict[str, Any]]) -> Path:
        """``findings.json``, the figures and ``report.md`` from the seeds' results."""
        self.results = results
        found = self.findings(results)
        runner.write_json(self.out / "findings.json", found)
        self.figures(results, found)
        path = self.out / "report.md"
        seconds = time.perf_counter() - self.started
        atomic_write_text(path, self.report(results, found, seconds))
        return path

    @classmethod
    def main(
        cls, prog: str, parse_args: Callable[[Any], Any], argv: Sequence[str] | None = None
    ) -> int:
        """Parse ``argv`` and run the study: the exit status (2: a bad argument or file).

        A usage error has already been printed as one line by the parser; ``--help`` exits 0.
        """
        try:
            cfg = parse_args(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else cli.EXIT_USAGE

        def body() -> int:
            cls(cfg).run()
            return 0

        return cli.run_cli(prog, body)

    def findings(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """The findings (JSON-able) of the seeds' results."""
        raise NotImplementedError

    def figures(self, results: list[dict[str, Any]], found: dict[str, Any]) -> None:
        """Write the study's figures (none by default)."""

    def report(self, results: list[dict[str, Any]], found: dict[str, Any], seconds: float) -> str:
        """The text of ``report.md``."""
        raise NotImplementedError
