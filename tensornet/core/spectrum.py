"""`Spectrum`: the singular values of one bipartition (cut) of a tensor's legs, and what follows.

With ``p_i = s_i^2 / sum_j s_j^2`` (the "entanglement" probabilities across the cut):

- von Neumann entropy ``S = -sum p log p``; Renyi ``S_a = log(sum p^a) / (1 - a)``;
- discarded weight of keeping ``chi`` values ``sum_{i >= chi} p_i``, and the relative Frobenius
  error ``sqrt`` of that (the Eckart-Young-Mirsky optimum);
- effective rank ``exp(S)``;
- normalised entropy ``S / log(chi_max)`` in ``[0, 1]`` (0: rank one, 1: all values equal), which
  compares cuts of different sizes; a cut with ``chi_max = 1`` is *trivial* (it is always rank
  one) and has no normalised entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .truncation import Truncation, as_truncation
from .validate import is_int

__all__ = ["Spectrum", "cut_label", "cuts"]


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Singular values across one cut ``left_legs | right_legs``.

    Parameters
    ----------
    values : torch.Tensor
        Singular values, 1-D, descending (stored detached, as float64 on the CPU so that all
        derived quantities are exact and cheap to read).
    left_legs, right_legs : tuple of str
        The two sides of the cut.
    name : str, optional
        What was cut (a layer name, a bond), for tables and plot legends.

    Examples
    --------
    >>> import torch
    >>> sp = Spectrum(torch.tensor([1.0, 1.0, 0.0]), ("a",), ("b", "c"))
    >>> round(sp.entropy(), 6), sp.effective_rank(), sp.discarded_weight(1)
    (0.693147, 2.0, 0.5)
    >>> sp.label
    'a|bc'
    """

    values: torch.Tensor
    left_legs: tuple[str, ...]
    right_legs: tuple[str, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        """Validate and store the values sorted, detached, as float64 on the CPU."""
        v = torch.as_tensor(self.values).detach()
        if v.ndim != 1:
            raise ValueError(f"Spectrum values must be 1-D, got shape {tuple(v.shape)}")
        if v.is_complex():
            raise TypeError("Spectrum values are singular values and must be real")
        v = v.to(device="cpu", dtype=torch.float64)
        if not torch.isfinite(v).all():
            raise ValueError("Spectrum values must be finite; got NaN or inf")
        if (v < 0).any():
            raise ValueError(f"singular values are >= 0; got {float(v.min())}")
        v, _ = torch.sort(v, descending=True)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "left_legs", tuple(self.left_legs))
        object.__setattr__(self, "right_legs", tuple(self.right_legs))

    # -- basic quantities ------------------------------------------------------------------
    @property
    def chi_max(self) -> int:
        """Number of singular values (the full rank across the cut, zeros included)."""
        return int(self.values.shape[0])

    @property
    def norm(self) -> float:
        """Frobenius norm of the tensor, ``sqrt(sum s^2)``."""
        return float(self.values.square().sum().sqrt())

    @property
    def label(self) -> str:
        """Short cut label: leg names joined, e.g. ``"out|in,kh,kw"`` or ``"o|ihw"``."""
        return cut_label(self.left_legs, self.right_legs)

    def normalized(self) -> torch.Tensor:
        """Singular values divided by the largest (all zeros for a zero tensor)."""
        top = self.values[0] if self.chi_max else torch.tensor(0.0, dtype=torch.float64)
        return self.values / top if float(top) > 0 else torch.zeros_like(self.values)

    def probabilities(self) -> torch.Tensor:
        """``s^2 / sum s^2`` (all zeros for a zero tensor)."""
        s2 = self.values.square()
        total = s2.sum()
        return s2 / total if float(total) > 0 else torch.zeros_like(s2)

    def entropy(self, alpha: float = 1.0, base: float = math.e) -> float:
        """The von Neumann (``alpha=1``) or Renyi entropy of the cut, in units of ``log(base)``.

        ``alpha=0`` gives the log of the number of non-zero values, ``alpha=inf`` the min-entropy
        ``-log max p``. A zero tensor has entropy 0.
        """
        if not (alpha >= 0):
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if base <= 0 or base == 1:
            raise ValueError(f"base must be positive and not 1, got {base}")
        p = self.probabilities()
        p = p[p > 0]
        if p.numel() == 0:
            return 0.0
        if alpha == 1:
            h = float(-(p * p.log()).sum())
        elif math.isinf(alpha):
            h = float(-p.max().log())
        elif alpha == 0:
            h = math.log(p.numel())
        else:
            h = float(torch.log((p**alpha).sum()) / (1 - alpha))
        return max(h, 0.0) / math.log(base) + 0.0  # + 0.0 turns -0.0 into 0.0

    def effective_rank(self) -> float:
        """``exp`` of the von Neumann entropy: 1 for rank one, ``n`` for ``n`` equal values."""
        return math.exp(self.entropy())

    @property
    def trivial(self) -> bool:
        """Whether the cut has at most one value (``chi_max <= 1``, e.g. a size-1 leg)."""
        return self.chi_max <= 1

    def normalized_entropy(self, alpha: float = 1.0) -> float:
        """``entropy(alpha) / log(chi_max)``: 0 for rank one, 1 for ``chi_max`` equal values.

        The raw entropy is at most ``log chi_max``, so it favours small cuts; the ratio compares
        cuts of different sizes fairly. NaN for a :attr:`trivial` cut (``chi_max <= 1``).

        Examples
        --------
        >>> import torch
        >>> wide = Spectrum(torch.tensor([1.0, 1.0, 0.0, 0.0]), ("a",), ("b",))
        >>> small = Spectrum(torch.tensor([1.0, 0.5]), ("c",), ("d",))
        >>> round(wide.entropy(), 3), round(small.entropy(), 3)  # raw: wide looks worse
        (0.693, 0.5)
        >>> round(wide.normalized_entropy(), 3), round(small.normalized_entropy(), 3)
        (0.5, 0.722)
        """
        entropy = self.entropy(alpha)
        if self.trivial:
            return math.nan
        return entropy / math.log(self.chi_max)

    # -- truncation ------------------------------------------------------------------------
    def _check_chi(self, chi: int) -> int:
        if not is_int(chi) or int(chi) < 0:
            raise ValueError(f"chi must be an int >= 0, got {chi!r}")
        return min(int(chi), self.chi_max)

    def discarded_weight(self, chi: int) -> float:
        """Fraction of ``sum s^2`` lost by keeping ``chi`` values."""
        chi = self._check_chi(chi)
        return float(self.probabilities()[chi:].sum())

    def relative_error(self, chi: int) -> float:
        """Relative Frobenius error of the best rank-``chi`` approximation across this cut."""
        return math.sqrt(self.discarded_weight(chi))

    def relative_errors(self) -> torch.Tensor:
        """``relative_error(chi)`` for ``chi = 0 .. chi_max`` (length ``chi_max + 1``)."""
        p = self.probabilities()
        tail = torch.flip(torch.cumsum(torch.flip(p, (0,)), 0), (0,))
        return torch.cat([tail, tail.new_zeros(1)]).clamp_min(0).sqrt()

    def rank_for(self, trunc: Truncation | int) -> int:
        """The number of values a :class:`Truncation` keeps on this spectrum."""
        policy = as_truncation(trunc)
        if policy is None:
            return self.chi_max
        return policy.rank(self.values)

    # -- export ----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """A flat record for tables (CSV/JSON): cut, sizes, norm, entropies, singular values."""
        return {
            "name": self.name,
            "cut": self.label,
            "left_legs": " ".join(self.left_legs),
            "right_legs": " ".join(self.right_legs),
            "chi_max": self.chi_max,
            "norm": self.norm,
            "entropy": self.entropy(),
            "renyi2": self.entropy(alpha=2.0),
            "effective_rank": self.effective_rank(),
            "normalized_entropy": self.normalized_entropy(),
            "singular_values": [float(x) for x in self.values],
        }

    def __repr__(self) -> str:
        """One line: name, cut, size, norm and entropy."""
        name = f"{self.name}: " if self.name else ""
        return (
            f"Spectrum({name}{self.label}, chi_max={self.chi_max}, norm={self.norm:.4g}, "
            f"entropy={self.entropy():.4g})"
        )


def cut_label(left_legs: Sequence[str], right_legs: Sequence[str]) -> str:
    """``"out|in,kh,kw"``; single-letter legs are joined without commas (``"o|ihw"``)."""
    sep = "" if all(len(leg) == 1 for leg in (*left_legs, *right_legs)) else ","
    return sep.join(left_legs) + "|" + sep.join(right_legs)


def cuts(legs: Sequence[str]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every bipartition of ``legs`` into two non-empty sides, each once: ``2^(n-1) - 1`` cuts.

    The left side is the smaller one (for equal halves, the one holding ``legs[0]``); cuts are
    ordered by the size of the left side, then by leg order.

    Examples
    --------
    >>> [("".join(a), "".join(b)) for a, b in cuts("oihw")][:5]
    [('o', 'ihw'), ('i', 'ohw'), ('h', 'oiw'), ('w', 'oih'), ('oi', 'hw')]
    >>> len(cuts("oihw"))
    7
    """
    from itertools import combinations

    legs = tuple(legs)
    if len(set(legs)) != len(legs):
        raise ValueError(f"legs repeat: {legs}")
    n = len(legs)
    out = []
    for size in range(1, n // 2 + 1):
        for left in combinations(legs, size):
            if 2 * size == n and legs[0] not in left:
                continue
            out.append((left, tuple(leg for leg in legs if leg not in left)))
    return out
