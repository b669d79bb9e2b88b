"""Report helpers: Markdown tables that render, CSV text, and the verdict sentence.

Examples
--------
>>> print(md_table(["layer", "out|in,kh,kw"], [["conv1", "0.5"]]))
| layer | out\\|in,kh,kw |
| --- | --- |
| conv1 | 0.5 |
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import NO_VERDICT, Verdict

__all__ = ["configuration", "md_cell", "md_table", "rows_to_csv", "verdict_text"]


def md_cell(value: Any) -> str:
    """One Markdown table cell: ``|`` escaped, line breaks flattened.

    >>> md_cell("oi|hw")
    'oi\\\\|hw'
    """
    return " ".join(str(value).split()).replace("|", "\\|")


def md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; every cell (the header's too) is escaped with :func:`md_cell`.

    Raises
    ------
    ValueError
        A row does not have one cell per column.
    """
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells for {len(header)} columns")
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---" for _ in header) + " |")
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rows_to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with these ``columns`` (other keys ignored, missing ones empty).

    >>> rows_to_csv([{"a": 1, "b": 2, "c": 3}], ["a", "b"]).splitlines()
    ['a,b', '1,2']
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def verdict_text(verdict: Verdict, scale: float = 100.0, unit: str = " points") -> str:
    """The verdict with its evidence, e.g. ``holds (one-sided Kendall tau-b test: tau = 0.62,
    p = 0.003)``.

    Parameters
    ----------
    verdict
        The verdict.
    scale, unit
        How an interval is shown (default: fractions as accuracy points).

    Examples
    --------
    >>> from studies.common.stats import Verdict
    >>> verdict_text(Verdict("not significant", "one-sided Kendall tau-b test", "few points",
    ...                      statistic=0.33, p_value=0.375, statistic_name="tau"))
    'not significant (one-sided Kendall tau-b test: tau = 0.33, p = 0.375)'

    A withheld verdict ("no verdict") leads with its reason (which models are near chance).
    """
    evidence = []
    if verdict.statistic is not None:
        evidence.append(f"{verdict.statistic_name} = {verdict.statistic:.2f}")
    if verdict.p_value is not None:
        evidence.append(f"p = {verdict.p_value:.3g}")
    if verdict.interval is not None:
        iv = verdict.interval
        evidence.append(
            f"estimate {iv.estimate * scale:.2f}{unit}, {100 * iv.level:.0f}% interval "
            f"[{iv.low * scale:.2f}, {iv.high * scale:.2f}]{unit}"
        )
    if verdict.units is not None:
        evidence.append(f"{verdict.units} units")
    status = verdict.status
    if status == NO_VERDICT:
        status = f"{status}: {verdict.reason}"
    return f"{status} ({verdict.test}: {', '.join(evidence) or verdict.reason})"


def configuration(cfg: Any) -> list[str]:
    """The report's closing "Configuration" section: every field of the dataclass ``cfg`` and
    the versions of Python, torch and tensornet, as lines.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     out: str = "runs/x"
    >>> lines = configuration(C())
    >>> lines[:4], lines[4].startswith("python = "), lines[-2:]
    (['## Configuration', '', '```', "out = 'runs/x'"], True, ['```', ''])
    """
    import platform
    from dataclasses import asdict

    import torch

    import tensornet

    lines = ["## Configuration", "", "```"]
    lines += [f"{key} = {value!r}" for key, value in asdict(cfg).items()]
    lines += [
        f"python = {platform.python_version()}, torch = {torch.__version__}, "
        f"tensornet = {tensornet.__version__}",
        "```",
        "",
    ]
    return lines
