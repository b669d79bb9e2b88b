"""Progress of the studies' long loops (training epochs, cells), with the time left.

On a terminal a tqdm bar (elapsed, time left and rate) sits at the bottom of the screen and the
loop's own lines print above it; elsewhere (CI logs, a file, a pipe) each finished step is one
plain line that ends with ``[cell 3/12, 0:42 elapsed, ~1:52 left]``. One implementation for
every study: base training (:func:`studies.common.training.train`) and each study's cell loop
use :class:`Progress`.

Examples
--------
>>> lines = []
>>> ticks = iter([0.0, 10.0, 30.0])
>>> with Progress(2, "cell", show=None, log=lines.append, clock=lambda: next(ticks),
...               terminal=False) as progress:
...     progress.step("first done")
...     progress.step("second done")
>>> for line in lines:
...     print(line)
first done  [cell 1/2, 0:10 elapsed, ~0:10 left]
second done  [cell 2/2, 0:30 elapsed, ~0:00 left]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Progress", "duration", "eta", "on_terminal", "print_line"]


def duration(seconds: float) -> str:
    """``seconds`` as ``M:SS`` or ``H:MM:SS`` (rounded down to whole seconds).

    >>> duration(42.9), duration(605), duration(3723)
    ('0:42', '10:05', '1:02:03')
    """
    whole = int(max(seconds, 0.0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def eta(done: int, total: int, elapsed: float, unit: str = "cell") -> str:
    """``unit done/total, elapsed, ~time left``, the time left extrapolated from the mean step.

    >>> eta(3, 12, 42.0)
    'cell 3/12, 0:42 elapsed, ~2:06 left'
    >>> eta(0, 5, 1.0, "epoch")
    'epoch 0/5, 0:01 elapsed, ~? left'
    """
    left = duration(elapsed / done * (total - done)) if done > 0 else "?"
    return f"{unit} {done}/{total}, {duration(elapsed)} elapsed, ~{left} left"


def on_terminal() -> bool:
    """Whether progress bars can be drawn: tqdm draws on stderr, so whether it is a terminal."""
    return sys.stderr.isatty()


def print_line(text: str) -> None:
    """Print ``text`` to stdout at once (the default ``log`` of :class:`Progress`)."""
    print(text, flush=True)


class Progress:
    """Progress over ``total`` steps: a tqdm bar on a terminal, one line per step otherwise.

    Parameters
    ----------
    total
        The number of steps this run will do (cells computed, not those reused).
    unit
        What a step is, e.g. ``"cell"`` or ``"epoch"``; it names the bar and starts the suffix.
    show
        ``True``: always a bar; ``False``: no progress output (only ``echo``'d lines);
        ``None``: a bar on a terminal, otherwise one plain line per step with the time left.
    log
        Where lines go, e.g. a study's log (default: stdout).
    echo
        Whether each step's line is also printed with a bar or with ``show=False`` (a cell's
        result line is part of the study's log; a training epoch's line is not).
    clock, terminal
        The time source in seconds and whether stderr is a terminal (default: detected), for
        tests.

    Examples
    --------
    >>> lines = []
    >>> with Progress(3, "epoch", show=False, log=lines.append, echo=False) as progress:
    ...     progress.step("epoch 1 done")
    >>> lines, progress.done
    ([], 1)
    """

    def __init__(
        self,
        total: int,
        unit: str = "cell",
        *,
        show: bool | None = None,
        log: Callable[[str], None] = print_line,
        echo: bool = True,
        clock: Callable[[], float] = time.perf_counter,
        terminal: bool | None = None,
    ) -> None:
        if total < 0:
            raise ValueError(f"Progress: total must be >= 0, got {total}")
        if show is None:
            show = on_terminal() if terminal is None else terminal
            self.mode = "bar" if show else "lines"
        else:
            self.mode = "bar" if show else "off"
        self.total, self.unit, self.log, self.echo = total, unit, log, echo
        self.clock, self.start, self.done = clock, clock(), 0
        self.bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=unit + "s", unit=unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the bar (if any); further steps print lines only."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def suffix(self) -> str:
        """``unit done/total, elapsed, ~time left`` as of now."""
        return eta(self.done, self.total, self.clock() - self.start, self.unit)

    def callback(
        self, describe: Callable[[Mapping[str, Any]], str]
    ) -> Callable[[Mapping[str, Any], int, int], None]:
        """A ``progress(row, done, total)`` callback that steps this progress with the row's line.

        For loops that run elsewhere and report each finished row with the count, such as
        :func:`tensornet.analysis.truncation_sweep`'s ``progress=``; the total they report
        replaces the one given here.

        Examples
        --------
        >>> lines = []
        >>> progress = Progress(0, show=False, log=lines.append)
        >>> report = progress.callback(lambda row: f"chi {row['chi']}")
        >>> report({"chi": 4}, 1, 3)
        >>> lines, progress.total
        (['chi 4'], 3)
        """

        def report(row: Mapping[str, Any], done: int, total: int) -> None:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
            self.step(describe(row))

        return report

    def step(self, line: str = "", postfix: Mapping[str, Any] | None = None) -> None:
        """Count one finished step and show it.

        Parameters
        ----------
        line
            What the step did, e.g. a cell's scores; printed with the time left where there is
            no bar, above the bar when ``echo``.
        postfix
            Short values shown at the end of the bar (e.g. the loss); not used without a bar.
        """
        self.done += 1
        if self.mode == "lines":
            self.log(f"{line}  [{self.suffix()}]" if line else f"[{self.suffix()}]")
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix)
            self.bar.update(1)
            if line and self.echo:
                with self.bar.external_write_mode():
                    self.log(line)
        elif line and self.echo:
            self.log(line)
