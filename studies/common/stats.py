"""Verdicts a reviewer can check: every finding holds, is not significant, or does not hold.

A finding *holds* when a named test supports it at the stated level, *does not hold* when the
same test supports the opposite, and is *not significant* otherwise. Two more statuses say why
no such verdict is given: *not enough units* (fewer independent units, e.g. seeds, than the test
can decide on at its level) and *no verdict* (the compared models are near chance). The kinds
of evidence provided here:

- :func:`kendall_verdict`: a monotone trend (one-sided Kendall tau-b test, its p-value);
- :func:`threshold_verdict` on a :func:`paired_bootstrap` interval: whether a paired difference
  (e.g. accuracy lost by a truncation, per test image) lies below or above a threshold.

Tests over independent units (seeds), the near-chance rule, equivalence margins and per-seed
Kendall tests combined across seeds are in :mod:`studies.common.units`; there the image-level
bootstrap is used only inside one unit (one seed's test images).

Examples
--------
>>> import numpy as np
>>> base = [np.ones(200)]
>>> after = [np.r_[np.ones(198), np.zeros(2)]]   # 2 of 200 images lost: 1 point
>>> iv = paired_bootstrap(base, after, seed=0)
>>> round(iv.estimate, 3), iv.low >= 0, iv.high < 0.05
(0.01, True, True)
>>> threshold_verdict(iv, 0.05, claim="below", test="paired bootstrap").status
'holds'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

__all__ = [
    "all_hold",
    "DOES_NOT_HOLD",
    "HOLDS",
    "NO_VERDICT",
    "NOT_ENOUGH_UNITS",
    "NOT_SIGNIFICANT",
    "STATUSES",
    "Interval",
    "Spread",
    "Verdict",
    "kendall_verdict",
    "paired_bootstrap",
    "seeds_note",
    "spread",
    "threshold_verdict",
]

HOLDS = "holds"
NOT_SIGNIFICANT = "not significant"
DOES_NOT_HOLD = "does not hold"
NOT_ENOUGH_UNITS = "not enough units"
NO_VERDICT = "no verdict"
STATUSES = (HOLDS, NOT_SIGNIFICANT, DOES_NOT_HOLD, NOT_ENOUGH_UNITS, NO_VERDICT)


def all_hold(statuses: Sequence[str]) -> str:
    """A finding made of parts: holds when every part holds, does not hold when any part does not.

    Otherwise the first of "no verdict", "not enough units" and "not significant" among the
    parts: a finding with a part that could not be tested never holds.

    >>> all_hold([HOLDS, NOT_SIGNIFICANT])
    'not significant'
    >>> all_hold([HOLDS, NOT_ENOUGH_UNITS, NOT_SIGNIFICANT])
    'not enough units'
    """
    for status in (DOES_NOT_HOLD, NO_VERDICT, NOT_ENOUGH_UNITS):
        if status in statuses:
            return status
    return HOLDS if all(s == HOLDS for s in statuses) else NOT_SIGNIFICANT


ALPHA = 0.05


@dataclass(frozen=True)
class Spread:
    """Mean and spread of one number over seeds.

    Attributes
    ----------
    mean, std
        Mean and sample standard deviation (``nan`` with one value).
    low, high
        Smallest and largest value.
    n
        Number of values (seeds).
    """

    mean: float
    std: float
    low: float
    high: float
    n: int

    def format(self, fmt: str = ".4f", scale: float = 1.0, unit: str = "") -> str:
        """``mean ± std`` then ``unit`` (or the single value), e.g. ``0.9361 ± 0.0042``.

        >>> spread([0.5, 0.7]).format(".2f")
        '0.60 ± 0.14'
        >>> spread([0.5]).format(".1f", scale=100, unit="%")
        '50.0%'
        """
        mean = format(self.mean * scale, fmt)
        if self.n < 2:
            return mean + unit
        return f"{mean} ± {format(self.std * abs(scale), fmt.lstrip('+'))}{unit}"


def spread(values: Sequence[float]) -> Spread:
    """:class:`Spread` of ``values`` (one per seed; NaN values are ignored).

    >>> s = spread([1.0, 2.0, 3.0])
    >>> s.mean, s.std, s.n
    (2.0, 1.0, 3)
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        nan = float("nan")
        return Spread(nan, nan, nan, nan, 0)
    std = float(x.std(ddof=1)) if x.size > 1 else float("nan")
    return Spread(float(x.mean()), std, float(x.min()), float(x.max()), int(x.size))


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes
    ----------
    estimate
        The statistic on the data as observed.
    low, high
        Interval bounds at ``level``.
    level
        Confidence level, e.g. 0.95.
    method
        How the interval was made, e.g. ``"paired percentile bootstrap over 360 test images"``.

    A bound or estimate of ``None`` is NaN: strict JSON writes NaN (e.g. the bounds of a t
    interval over one seed) as ``null``, and an interval read back is the same interval.
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str

    def __post_init__(self) -> None:
        for name in ("estimate", "low", "high"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, float("nan"))

    def format(self, fmt: str = ".2f", scale: float = 1.0, unit: str = "") -> str:
        """E.g. ``0.31 points, 95% interval [-0.28, 0.83]``.

        >>> Interval(0.01, 0.0, 0.02, 0.95, "bootstrap").format(scale=100, unit=" points")
        '1.00 points, 95% interval [0.00, 2.00]'
        """

        def f(v: float) -> str:
            return format(v * scale, fmt)

        low, high = sorted((self.low, self.high), key=lambda v: v * scale)
        return f"{f(self.estimate)}{unit}, {100 * self.level:.0f}% interval [{f(low)}, {f(high)}]"


@dataclass(frozen=True)
class Verdict:
    """The outcome of testing one finding.

    Attributes
    ----------
    status
        One of :data:`STATUSES`: ``"holds"``, ``"not significant"``, ``"does not hold"``,
        ``"not enough units"`` or ``"no verdict"``.
    test
        The test, named, e.g. ``"one-sided Kendall tau-b test (depth vs removable norm)"``.
    statistic, p_value
        The test statistic and its p-value, where the test has them.
    statistic_name
        How to call the statistic in text, e.g. ``"tau"``.
    interval
        The confidence interval, where the test is an interval.
    reason
        One sentence on why this status.
    per_unit
        Intervals inside each unit (e.g. a bootstrap over one seed's test images), reported
        beside a test over units.
    units
        The number of independent units the test used, where it is a test over units.

    Intervals may be given as their :meth:`as_dict` dicts (a verdict read back from JSON).
    """

    status: str
    test: str
    reason: str
    statistic: float | None = None
    p_value: float | None = None
    interval: Interval | None = None
    statistic_name: str = "statistic"
    per_unit: tuple[Interval, ...] = ()
    units: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if isinstance(self.interval, dict):
            object.__setattr__(self, "interval", Interval(**self.interval))
        per_unit = tuple(Interval(**iv) if isinstance(iv, dict) else iv for iv in self.per_unit)
        object.__setattr__(self, "per_unit", per_unit)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the interval as a nested dict)."""
        return asdict(self)


def seeds_note(n_seeds: int) -> str:
    """What the statistics cover, given the number of seeds.

    >>> seeds_note(1)[:38]
    'One seed: verdicts over seeds say "not'
    """
    if n_seeds == 1:
        return (
            'One seed: verdicts over seeds say "not enough units"; the intervals cover '
            "test-set sampling only, not training variation (rerun with --seeds N to include "
            "it); no spread across seeds is reported."
        )
    return (
        f"{n_seeds} seeds: numbers are mean ± standard deviation over seeds; verdicts test "
        "the per-seed values over the seeds (the seeds are the independent units); bootstrap "
        "intervals resample test images within one seed only."
    )


def paired_bootstrap(
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    *,
    n_boot: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``mean(reference - other)``, paired per item.

    Each seed contributes two equally long arrays (e.g. per-image correctness, 0/1, of the
    untruncated and the truncated model on that seed's test set); the statistic is the mean over
    seeds of each seed's mean difference. A bootstrap replicate draws the seeds with
    replacement (when there are several), then each drawn seed's items with replacement.

    Parameters
    ----------
    reference, other
        One array per seed; ``reference[s]`` and ``other[s]`` have the same length.
    n_boot
        Bootstrap replicates; the interval is deterministic given ``seed``.
    level
        Two-sided confidence level.
    seed
        Seed of the resampling.

    Returns
    -------
    Interval

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> a = [rng.integers(0, 2, 500).astype(float) for _ in range(3)]
    >>> iv = paired_bootstrap(a, a)   # identical: no difference at all
    >>> (iv.estimate, iv.low, iv.high)
    (0.0, 0.0, 0.0)
    """
    if len(reference) != len(other) or not reference:
        raise ValueError("reference and other need one array per seed, and at least one seed")
    diffs = []
    for s, (a, b) in enumerate(zip(reference, other)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or a.size == 0:
            raise ValueError(f"seed {s}: arrays must be 1-D, non-empty and equally long")
        diffs.append(a - b)
    n_seeds = len(diffs)
    rng = np.random.default_rng(seed)
    # slots[b, j]: the seed in slot j of replicate b (no resampling with a single seed)
    slots = (
        rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        if n_seeds > 1
        else np.zeros((n_boot, 1), dtype=np.int64)
    )
    means = np.empty(slots.shape)
    for s, d in enumerate(diffs):
        where = np.nonzero(slots == s)
        draws = rng.integers(0, d.size, size=(len(where[0]), d.size))
        means[where] = d[draws].mean(axis=1)
    replicates = means.mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    sizes = sorted({d.size for d in diffs})
    items = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    method = f"paired percentile bootstrap ({n_boot} replicates) over {items} test images" + (
        f" and {n_seeds} seeds" if n_seeds > 1 else ""
    )
    estimate = float(np.mean([d.mean() for d in diffs]))
    return Interval(estimate, float(low), float(high), level, method)


def threshold_verdict(
    interval: Interval,
    threshold: float,
    *,
    claim: Literal["below", "above"],
    test: str,
    what: str = "the difference",
) -> Verdict:
    """Whether an interval lies entirely on the claimed side of ``threshold``.

    Parameters
    ----------
    interval
        E.g. from :func:`paired_bootstrap`.
    threshold
        The bound of the claim, e.g. the tolerated accuracy drop.
    claim
        ``"below"``: the finding says the quantity is below ``threshold``; ``"above"``: above.
    test
        Name of the test, written into the verdict.
    what
        What the quantity is, for the reason sentence.

    Returns
    -------
    Verdict
        holds when the whole interval is on the claimed side, does not hold when it is on the
        other side, not significant when it straddles ``threshold``.

    Examples
    --------
    >>> iv = Interval(0.02, 0.01, 0.03, 0.95, "bootstrap")
    >>> threshold_verdict(iv, 0.005, claim="below", test="t").status
    'does not hold'
    """
    level = f"{100 * interval.level:.0f}%"
    inside = interval.low < threshold < interval.high
    below = interval.high < threshold
    if inside or interval.low == threshold or interval.high == threshold:
        status = NOT_SIGNIFICANT
        reason = f"the {level} interval of {what} contains {threshold:g}"
    elif below == (claim == "below"):
        status = HOLDS
        reason = f"the {level} interval of {what} lies {claim} {threshold:g}"
    else:
        status = DOES_NOT_HOLD
        side = "above" if below is False else "below"
        reason = f"the {level} interval of {what} lies {side} {threshold:g}"
    return Verdict(status=status, test=test, reason=reason, interval=interval)


def kendall_verdict(
    x: Sequence[float], y: Sequence[float], *, alpha: float = ALPHA, what: str = "y with x"
) -> Verdict:
    """One-sided Kendall tau-b test of the claim that ``y`` increases with ``x``.

    holds when ``p(tau > 0) < alpha``; does not hold when the opposite one-sided test is
    significant (``y`` decreases with ``x``); not significant otherwise, including when there
    are too few points or no variation (tau undefined).

    Parameters
    ----------
    x, y
        Paired observations (ties allowed: tau-b).
    alpha
        Significance level.
    what
        Description of the trend, for the reason sentence.

    Examples
    --------
    >>> v = kendall_verdict([0, 1, 2, 3, 4, 5], [0.1, 0.2, 0.3, 0.5, 0.6, 0.9])
    >>> v.status, round(v.statistic, 2), round(v.p_value, 4)
    ('holds', 1.0, 0.0014)
    """
    test = "one-sided Kendall tau-b test"
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Verdict(
            NOT_SIGNIFICANT, test, f"too few points or no variation to test {what}", None, None
        )
    up = sps.kendalltau(x, y, alternative="greater")
    down = sps.kendalltau(x, y, alternative="less")
    tau, p_up, p_down = float(up.statistic), float(up.pvalue), float(down.pvalue)
    if p_up < alpha:
        status, reason = HOLDS, f"{what} increases (tau = {tau:.2f}, p = {p_up:.3g} < {alpha})"
    elif p_down < alpha:
        status = DOES_NOT_HOLD
        reason = f"{what} decreases (tau = {tau:.2f}, opposite one-sided p = {p_down:.3g})"
    else:
        status = NOT_SIGNIFICANT
        reason = f"tau = {tau:.2f}, p = {p_up:.3g} >= {alpha} over {x.size} points"
    return Verdict(status, test, reason, statistic=tau, p_value=p_up, statistic_name="tau")
