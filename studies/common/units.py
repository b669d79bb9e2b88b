"""Verdicts from tests over independent units (seeds), and when no verdict can be given.

The units of a study are its seeds: each seed trains its own model, so only values from
different seeds are independent. A finding about a paired difference (e.g. accuracy lost by a
truncation) is tested on one value per seed (that seed's mean difference over its test images):

- :func:`unit_verdict`: an exact one-sided sign-flip permutation test over the units, with a t
  interval over the units (``scipy.stats.t``) reported and required to agree;
- :func:`paired_unit_verdict`: the same from per-image correctness, with a bootstrap over each
  seed's own test images reported beside (per-unit intervals), never pooled across seeds;
- :func:`kendall_units_verdict`: a trend tested within each seed (Kendall tau-b) and combined
  across seeds by Stouffer's z;
- :func:`equivalence_verdict` / :func:`unit_equivalence_verdict`: "best" and "no better" claims
  against a stated margin (TOST-style);
- :func:`withhold_near_chance`: "no verdict" when compared models are within a margin of chance;
- :func:`evidence_note`: the "CI size, not evidence" line of quick runs.

With fewer units than a test can decide on at its level the status is "not enough units"
(:data:`~studies.common.stats.NOT_ENOUGH_UNITS`): an exact one-sided sign-flip test over ``n``
units cannot reach ``p < 0.05`` for ``n <= 4`` (its smallest p-value is ``2 ** -n``).

Examples
--------
>>> unit_verdict([0.02, 0.03], 0.0, claim="above", what="the gain").status
'not enough units'
>>> v = unit_verdict([0.02, 0.03, 0.025, 0.04, 0.01], 0.0, claim="above", what="the gain")
>>> v.status, v.p_value, v.units
('holds', 0.03125, 5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
from scipy import stats as sps

from .stats import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    NO_VERDICT,
    NOT_ENOUGH_UNITS,
    NOT_SIGNIFICANT,
    Interval,
    Verdict,
    paired_bootstrap,
)

__all__ = [
    "CHANCE_MARGIN",
    "MAX_EXACT_UNITS",
    "chance_level",
    "equivalence_verdict",
    "evidence_note",
    "kendall_units_verdict",
    "min_units",
    "paired_unit_verdict",
    "sign_flip_p",
    "stouffer",
    "t_interval",
    "unit_equivalence_verdict",
    "unit_verdict",
    "withhold_near_chance",
]

CHANCE_MARGIN = 0.05  # "near chance": within 5 accuracy points of it
MAX_EXACT_UNITS = 20  # the sign-flip test enumerates all 2**n sign patterns
CLASSES = {
    "digits": 10, "mnist5k": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
}  # fmt: skip


# -- small pieces -------------------------------------------------------------------------------
def _values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: need a non-empty 1-D sequence of finite values, got {values!r}")
    return x


def min_units(alpha: float = ALPHA) -> int:
    """The fewest units with which an exact one-sided sign-flip test can reach ``p < alpha``.

    >>> min_units(0.05), min_units(0.01)
    (5, 7)
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return math.floor(-math.log2(alpha)) + 1


def sign_flip_p(values: Sequence[float], alternative: Literal["greater", "less"]) -> float:
    """Exact one-sided sign-flip permutation p-value of ``mean(values)`` against zero.

    Under the null hypothesis each unit's value is symmetric about zero, so every one of the
    ``2 ** n`` sign patterns is equally likely; the p-value is the share of patterns whose sum
    is at least (``"greater"``) or at most (``"less"``) the observed sum. Zeros count as either
    sign (they change no sum).

    Parameters
    ----------
    values
        One value per unit, e.g. per-seed mean accuracy differences (at most 20 units).
    alternative
        ``"greater"``: the claim is a positive mean; ``"less"``: a negative one.

    Examples
    --------
    >>> sign_flip_p([1.0, 2.0, 3.0], "greater")   # only the observed pattern reaches 6
    0.125
    >>> sign_flip_p([1.0, -2.0, 3.0], "greater")  # observed 2; sums 6, 4 and 2 of 8 reach it
    0.375
    """
    x = _values(values, "sign_flip_p")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if x.size > MAX_EXACT_UNITS:
        raise ValueError(f"sign_flip_p: at most {MAX_EXACT_UNITS} units, got {x.size}")
    sums = np.zeros(1)
    for v in np.abs(x):
        sums = np.concatenate([sums + v, sums - v])
    observed = x.sum()
    slack = 1e-9 * max(1.0, float(np.abs(x).sum()))  # equal sums up to rounding count as equal
    if alternative == "greater":
        return float(np.mean(sums >= observed - slack))
    return float(np.mean(sums <= observed + slack))


def t_interval(values: Sequence[float], level: float = 0.95, unit: str = "seed") -> Interval:
    """Two-sided t interval of the mean over units (``scipy.stats.t``, ``n - 1`` degrees).

    With one unit the bounds are NaN (no spread can be estimated).

    >>> iv = t_interval([1.0, 2.0, 3.0])
    >>> round(iv.estimate, 2), round(iv.low, 2), round(iv.high, 2)
    (2.0, -0.48, 4.48)
    """
    x = _values(values, "t_interval")
    mean, n = float(x.mean()), x.size
    method = f"t interval over {n} {unit}s ({n - 1} degrees of freedom)"
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), level, method)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, method)


# -- tests over units -----------------------------------------------------------------------------
def unit_verdict(
    values: Sequence[float],
    threshold: float,
    *,
    claim: Literal["above", "below"],
    what: str,
    unit: str = "seed",
    alpha: float = ALPHA,
    per_unit: Sequence[Interval] = (),
) -> Verdict:
    """Whether the mean over units of ``values`` lies above or below ``threshold``.

    The test is an exact one-sided sign-flip permutation test of ``values - threshold`` over
    the units (:func:`sign_flip_p`) together with the ``1 - alpha`` two-sided t interval over the
    units (:func:`t_interval`). The finding *holds* when the sign-flip p-value on the claimed
    side is below ``alpha`` and the t interval lies entirely on the claimed side; it *does not
    hold* when both say the opposite; otherwise it is *not significant*. With fewer than
    :func:`min_units` units the status is *not enough units* (the test cannot reach ``alpha``),
    whatever the values.

    Parameters
    ----------
    values
        One value per independent unit (seed), e.g. its mean accuracy drop.
    threshold
        The bound of the claim.
    claim
        ``"above"`` or ``"below"``: the side of ``threshold`` the finding puts the mean on.
    what
        What the values are, for the reason sentence.
    unit
        What a unit is, for the texts.
    alpha
        Significance level (the t interval's level is ``1 - alpha``).
    per_unit
        Intervals inside each unit, reported beside (e.g. from :func:`paired_unit_verdict`).

    Returns
    -------
    Verdict
        ``statistic`` is the mean over units, ``p_value`` the claimed side's sign-flip p-value,
        ``interval`` the t interval, ``units`` their number.

    Examples
    --------
    >>> v = unit_verdict([0.01, 0.012, 0.008, 0.011, 0.009], 0.02, claim="below", what="drop")
    >>> v.status, v.reason
    ('holds', 'drop lies below 0.02 over 5 seeds (sign-flip p = 0.0312, 95% t interval [0.0080, 0.0120])')
    """  # noqa: E501
    x = _values(values, what)
    if claim not in ("above", "below"):
        raise ValueError(f"claim must be 'above' or 'below', got {claim!r}")
    n, need = x.size, min_units(alpha)
    iv = t_interval(x, 1 - alpha, unit)
    p = sign_flip_p(x - threshold, "greater" if claim == "above" else "less")
    p_other = sign_flip_p(x - threshold, "less" if claim == "above" else "greater")
    test = (
        f"exact one-sided sign-flip test over {unit}s, with the {100 * (1 - alpha):.0f}% "
        f"t interval over {unit}s"
    )
    t_text = f"{100 * (1 - alpha):.0f}% t interval [{iv.low:.4f}, {iv.high:.4f}]"
    opposite = "below" if claim == "above" else "above"
    if n < need:
        status = NOT_ENOUGH_UNITS
        reason = (
            f"{n} {unit}(s): an exact one-sided sign-flip test needs at least {need} to reach "
            f"p < {alpha:g} (sign-flip p = {p:.3g}, {t_text})"
        )
    elif p < alpha and _side(iv, threshold) == claim:
        status = HOLDS
        reason = (
            f"{what} lies {claim} {threshold:g} over {n} {unit}s (sign-flip p = {p:.3g}, {t_text})"
        )
    elif p_other < alpha and _side(iv, threshold) == opposite:
        status = DOES_NOT_HOLD
        reason = (
            f"{what} lies {opposite} {threshold:g} over {n} {unit}s (opposite one-sided "
            f"sign-flip p = {p_other:.3g}, {t_text})"
        )
    else:
        status = NOT_SIGNIFICANT
        reason = (
            f"{what} is not significantly {claim} {threshold:g} over {n} {unit}s "
            f"(sign-flip p = {p:.3g}, {t_text})"
        )
    return Verdict(
        status, test, reason, statistic=float(x.mean()), p_value=p, interval=iv,
        statistic_name=f"mean over {unit}s", per_unit=tuple(per_unit), units=n,
    )  # fmt: skip


def _side(interval: Interval, threshold: float) -> str | None:
    """``"above"`` / ``"below"`` when the whole interval lies on that side of ``threshold``."""
    if interval.low > threshold:
        return "above"
    if interval.high < threshold:
        return "below"
    return None


def paired_unit_verdict(
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    threshold: float,
    *,
    claim: Literal["above", "below"],
    what: str,
    seed: int = 0,
    alpha: float = ALPHA,
) -> Verdict:
    """:func:`unit_verdict` on ``mean(reference[s] - other[s])`` per seed ``s``.

    Each seed's interval from a paired bootstrap over its own test images
    (:func:`~studies.common.stats.paired_bootstrap` with that seed alone, resampling seed
    ``seed + s``) is reported beside, in ``per_unit``; the verdict is the test over seeds.

    Parameters
    ----------
    reference, other
        One array per seed of per-image values (e.g. 0/1 correctness), paired per image.
    threshold, claim, what, alpha
        As in :func:`unit_verdict`.
    seed
        Seed of the per-seed bootstraps.

    Examples
    --------
    >>> import numpy as np
    >>> base = [np.ones(100)] * 5
    >>> cut = [np.r_[np.ones(100 - k), np.zeros(k)] for k in (1, 2, 1, 0, 1)]
    >>> v = paired_unit_verdict(base, cut, 0.05, claim="below", what="the drop")
    >>> v.status, round(v.statistic, 3), len(v.per_unit)
    ('holds', 0.01, 5)
    """
    if len(reference) != len(other) or not reference:
        raise ValueError("reference and other need one array per seed, and at least one seed")
    per_unit = tuple(
        paired_bootstrap([a], [b], seed=seed + s) for s, (a, b) in enumerate(zip(reference, other))
    )
    values = [iv.estimate for iv in per_unit]
    return unit_verdict(values, threshold, claim=claim, what=what, alpha=alpha, per_unit=per_unit)


# -- equivalence ----------------------------------------------------------------------------------
def equivalence_verdict(
    interval: Interval,
    margin: float,
    *,
    test: str,
    what: str = "the difference",
    side: Literal["both", "upper", "lower"] = "both",
) -> Verdict:
    """TOST-style verdict of an equivalence claim: the quantity lies within ``margin`` of zero.

    ``side="both"``: holds when the whole interval lies inside ``(-margin, +margin)``, does not
    hold when it lies entirely outside (above ``+margin`` or below ``-margin``), not significant
    otherwise. ``side="upper"`` ("no better": below ``+margin``) and ``side="lower"`` ("no
    worse": above ``-margin``) check one bound only. For a TOST at level ``alpha`` pass a
    ``1 - 2 alpha`` interval.

    Examples
    --------
    >>> iv = Interval(0.01, -0.02, 0.03, 0.9, "bootstrap")
    >>> v = equivalence_verdict(iv, 0.05, test="TOST", what="tau(a) - tau(b)")
    >>> v.status, v.reason
    ('holds', 'the 90% interval of tau(a) - tau(b) lies within ±0.05 (the equivalence margin)')
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if side not in ("both", "upper", "lower"):
        raise ValueError(f"side must be 'both', 'upper' or 'lower', got {side!r}")
    low_ok = side == "upper" or interval.low > -margin
    high_ok = side == "lower" or interval.high < margin
    # entirely outside the band (on a side whose bound is not checked, that is "holds" first)
    outside = interval.low > margin or interval.high < -margin
    band = {"both": f"within ±{margin:g}", "upper": f"below +{margin:g}",
            "lower": f"above -{margin:g}"}[side]  # fmt: skip
    level = f"{100 * interval.level:.0f}%"
    if low_ok and high_ok:
        status, verb = HOLDS, "lies"
    elif outside:
        status, verb = DOES_NOT_HOLD, "lies entirely outside"
    else:
        status, verb = NOT_SIGNIFICANT, "is not entirely"
    reason = f"the {level} interval of {what} {verb} {band} (the equivalence margin)"
    return Verdict(status, f"{test}, equivalence margin ±{margin:g}", reason, interval=interval)


def unit_equivalence_verdict(
    values: Sequence[float],
    margin: float,
    *,
    what: str,
    unit: str = "seed",
    alpha: float = ALPHA,
    side: Literal["both", "upper", "lower"] = "both",
    per_unit: Sequence[Interval] = (),
) -> Verdict:
    """:func:`equivalence_verdict` over units: the ``1 - 2 alpha`` t interval of the values.

    "not enough units" below :func:`min_units` units, as for :func:`unit_verdict` (a TOST is two
    one-sided tests, each needing that many).

    >>> unit_equivalence_verdict([0.01, -0.01], 0.05, what="d").status
    'not enough units'
    >>> unit_equivalence_verdict([0.01, -0.01, 0.0, 0.005, -0.005], 0.05, what="d").status
    'holds'
    """
    x = _values(values, what)
    iv = t_interval(x, 1 - 2 * alpha, unit)
    v = equivalence_verdict(
        iv, margin, test=f"TOST over {unit}s (t interval)", what=what, side=side
    )
    if x.size < min_units(alpha):
        need = min_units(alpha)
        reason = f"{x.size} {unit}(s): each one-sided test needs at least {need} ({v.reason})"
        v = replace(v, status=NOT_ENOUGH_UNITS, reason=reason)
    return replace(v, statistic=float(x.mean()), units=int(x.size), per_unit=tuple(per_unit))


# -- trends within seeds, combined --------------------------------------------------------------
def stouffer(p_values: Sequence[float]) -> float:
    """Stouffer's combined one-sided p-value.

    ``1 - Phi(sum z_i / sqrt(k))`` with ``z_i = Phi^-1(1 - p_i)`` over the ``k`` p-values.

    >>> round(stouffer([0.05, 0.05]), 4)   # z = 1.645 twice: 2.326, p = 0.01
    0.01
    """
    p = _values(p_values, "stouffer")
    if np.any((p <= 0) | (p > 1)):
        raise ValueError(f"stouffer: p-values must lie in (0, 1], got {p_values!r}")
    z = sps.norm.isf(p)
    return float(sps.norm.sf(z.sum() / math.sqrt(p.size)))


def kendall_units_verdict(
    units: Sequence[tuple[Sequence[float], Sequence[float]]],
    *,
    what: str = "y with x",
    unit: str = "seed",
    alpha: float = ALPHA,
) -> Verdict:
    """A monotone trend tested within each unit and combined across units by Stouffer's z.

    Each unit (seed) gives its points ``(x, y)``; its one-sided Kendall tau-b p-values (scipy:
    exact without ties) for an increase and for a decrease are combined across units with equal
    weights by :func:`stouffer`. Points of different seeds are never compared with each other.
    Stouffer's z is used rather than a sign-flip test over the per-seed taus because the
    latter ignores how strong each seed's evidence is and cannot reach ``p < 0.05`` with fewer
    than 5 seeds, however many points each has; Stouffer's z uses each seed's exact test and is
    valid when the seeds are independent (they train separate models).

    holds when the combined p-value for an increase is below ``alpha``, does not hold when the
    one for a decrease is, not significant otherwise. Units with fewer than 3 finite points or
    no variation are left out; "not enough units" when none is left or when even perfectly
    ordered units (each p = ``1 / n_i!``) could not reach ``alpha`` combined.

    Parameters
    ----------
    units
        Per unit, its ``(x, y)`` sequences.
    what, unit, alpha
        Texts and the significance level.

    Returns
    -------
    Verdict
        ``statistic`` is the mean per-unit tau-b, ``p_value`` the combined p-value for an
        increase, ``units`` the number of units tested.

    Examples
    --------
    >>> v = kendall_units_verdict([([0, 1, 2, 3], [1, 2, 3, 4]), ([0, 1, 2, 3], [1, 3, 2, 4])])
    >>> v.status, round(v.statistic, 3), round(v.p_value, 4)   # p 1/24 and 1/6 combined
    ('holds', 0.833, 0.0282)
    """
    taus, ups, downs, floors = [], [], [], []
    for x, y in units:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"kendall_units_verdict: x and y of a {unit} differ in shape")
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        taus.append(float(sps.kendalltau(x, y).statistic))
        ups.append(float(sps.kendalltau(x, y, alternative="greater").pvalue))
        downs.append(float(sps.kendalltau(x, y, alternative="less").pvalue))
        floors.append(1 / math.factorial(x.size))
    test = (
        f"one-sided Kendall tau-b test within each {unit}, combined across {unit}s by "
        "Stouffer's z (equal weights)"
    )
    name = f"mean tau over {unit}s"
    if not taus or stouffer(floors) >= alpha:
        reason = (
            f"{len(taus)} testable {unit}(s) (3 or more points with variation): even perfect "
            f"orders could not reach p < {alpha:g} combined"
        )
        tau = float(np.mean(taus)) if taus else None
        return Verdict(NOT_ENOUGH_UNITS, test, reason, tau, None, None, name, units=len(taus))
    tau, p_up, p_down = float(np.mean(taus)), stouffer(ups), stouffer(downs)
    per = ", ".join(f"{t:.2f}" for t in taus)
    if p_up < alpha:
        status, verb, p = HOLDS, "increases", p_up
    elif p_down < alpha:
        status, verb, p = DOES_NOT_HOLD, "decreases", p_down
    else:
        status, verb, p = NOT_SIGNIFICANT, "shows no significant trend", p_up
    reason = f"{what} {verb} within {unit}s (tau per {unit}: {per}; combined p = {p:.3g})"
    return Verdict(status, test, reason, tau, p_up, None, name, units=len(taus))


# -- when no verdict is given -------------------------------------------------------------------
def chance_level(dataset: str) -> float:
    """Accuracy of guessing: ``1 / number of classes`` of a study dataset.

    >>> chance_level("mnist5k"), chance_level("cifar100")
    (0.1, 0.01)
    """
    if dataset not in CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; chance is known for {', '.join(CLASSES)}")
    return 1 / CLASSES[dataset]


def withhold_near_chance(
    verdict: Verdict,
    accuracies: Mapping[str, float],
    chance: float,
    margin: float = CHANCE_MARGIN,
) -> Verdict:
    """``verdict`` withheld ("no verdict") when a compared model is within ``margin`` of chance.

    A model is near chance when its accuracy is at most ``chance + margin``. The withheld
    verdict keeps its test and evidence; its reason names the models and what the test said.

    Parameters
    ----------
    verdict
        The verdict of the comparison.
    accuracies
        The compared models' accuracies (e.g. means over seeds), by name.
    chance, margin
        Chance accuracy (:func:`chance_level`) and the margin (fractions, 0.05 = 5 points).

    Examples
    --------
    >>> v = Verdict("holds", "t", "the gain lies above 0")
    >>> w = withhold_near_chance(v, {"hybrid": 0.13, "TT-only": 0.09}, 0.1)
    >>> w.status, w.reason
    ('no verdict', 'compared models within 5 points of chance (10%): hybrid 13.0%, TT-only 9.0% (the test alone: holds, the gain lies above 0)')
    >>> withhold_near_chance(v, {"hybrid": 0.9, "TT-only": 0.8}, 0.1) is v
    True
    """  # noqa: E501
    if not margin >= 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    near = {k: a for k, a in accuracies.items() if a <= chance + margin}
    if not near:
        return verdict
    models = ", ".join(f"{k} {100 * a:.1f}%" for k, a in near.items())
    reason = (
        f"compared models within {100 * margin:g} points of chance ({100 * chance:g}%): "
        f"{models} (the test alone: {verdict.status}, {verdict.reason})"
    )
    return replace(verdict, status=NO_VERDICT, reason=reason)


def evidence_note(quick: bool) -> str | None:
    """The line at the top of a ``--quick`` report (and its findings.json field), else None.

    >>> evidence_note(True)[:27]
    'CI size, not evidence: this'
    >>> evidence_note(False) is None
    True
    """
    if not quick:
        return None
    return (
        "CI size, not evidence: this --quick run (small models, few epochs and seeds) checks "
        "that the study runs end to end; its verdicts are not evidence for or against the paper."
    )
