"""Choosing levels (chi, thresholds, budgets) on the validation split, never on the test split.

A study sweeps a level per group (e.g. chi per layer and cut), scores every candidate on the
validation split, picks per group the cheapest candidate whose validation score stays within a
tolerated drop of the reference, and only then reads the test score of what it picked.

Examples
--------
>>> rows = [
...     {"layer": "a", "chi": 1, "val_accuracy": 0.80, "test_accuracy": 0.95},
...     {"layer": "a", "chi": 2, "val_accuracy": 0.94, "test_accuracy": 0.90},
...     {"layer": "a", "chi": 4, "val_accuracy": 0.95, "test_accuracy": 0.95},
... ]
>>> pick = cheapest_within(rows, ["layer"], "chi", "val_accuracy", reference=0.95, drop=0.01)
>>> pick[("a",)]["chi"]   # chi 1 looks fine on test, but validation rules it out
2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["cheapest_within"]


def cheapest_within(
    rows: Sequence[Mapping[str, Any]],
    group_by: Sequence[str],
    cost: str,
    score: str,
    *,
    reference: float,
    drop: float,
    always: Callable[[Mapping[str, Any]], bool] | None = None,
) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    """Per group, the row of least ``cost`` whose ``score`` is at least ``reference - drop``.

    Parameters
    ----------
    rows
        Candidates, e.g. the rows of a truncation sweep.
    group_by
        Columns naming a group, e.g. ``["layer", "cut"]``.
    cost
        Column to minimise, e.g. ``"chi"`` (ties: the first row).
    score
        The **validation** metric, e.g. ``"val_accuracy"``.
    reference
        The reference's validation score (the untruncated model's).
    drop
        Tolerated decrease of the score, e.g. 0.01 for one point of accuracy.
    always
        Rows for which this returns True qualify whatever their score (e.g. the full-rank row,
        which is the untruncated model up to rounding), so every group gets a pick.

    Returns
    -------
    dict
        Group key (a tuple of the ``group_by`` values) -> the chosen row. Groups where no row
        qualifies are absent.
    """
    best: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    floor = reference - drop - 1e-12
    for row in rows:
        if not (row[score] >= floor or (always is not None and always(row))):
            continue
        key = tuple(row[g] for g in group_by)
        if key not in best or row[cost] < best[key][cost]:
            best[key] = row
    return best
