"""`Truncation`: the one policy object that says how many singular values to keep.

Every truncating call in tensornet (splits, format construction, cut truncation) takes a
`Truncation` and reports the error it made. The error measures are Frobenius norms:

- ``rel_tol``: ``||T - T_k||_F / ||T||_F <= rel_tol`` (the reference norm can be supplied, which
  multi-step algorithms use to share one tolerance between steps);
- ``abs_tol``: ``||T - T_k||_F <= abs_tol``;
- ``keep_energy``: the kept singular values hold at least this fraction of ``sum s^2``;
- ``max_rank``: at most this many values.

Each set field proposes a rank; the strictest (smallest) wins, and at least one value is kept.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .validate import is_int

__all__ = ["Truncation", "as_truncation"]


def _as_real(field: str, value: Any) -> float:
    """A real number of any library (0-d tensors included) as a Python float."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Truncation.{field} must be a real number, got {type(value).__name__} {value!r}"
        )
    return float(value)


def _check_number(
    field: str, value: Any, *, low: float, low_open: bool, high: float | None
) -> float:
    value = _as_real(field, value)
    if not math.isfinite(value):
        raise ValueError(f"Truncation.{field} must be finite, got {value}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        lo = f"> {low}" if low_open else f">= {low}"
        hi = f" and <= {high}" if high is not None else ""
        raise ValueError(f"Truncation.{field} must be {lo}{hi}, got {value}")
    return value


@dataclass(frozen=True)
class Truncation:
    """How many singular values to keep; any combination of fields, the strictest wins.

    Parameters
    ----------
    max_rank : int, optional
        Keep at most this many values (>= 1; numpy and torch integers are accepted).
    rel_tol : float, optional
        Keep the fewest values whose discarded part has relative Frobenius norm <= rel_tol, in
        [0, 1]: a relative error above 1 cannot be asked for, and 1 already keeps only rank 1.
    abs_tol : float, optional
        Keep the fewest values whose discarded part has Frobenius norm <= abs_tol (>= 0).
    keep_energy : float, optional
        Keep the fewest values holding at least this fraction of ``sum s^2`` (in (0, 1]).

    Examples
    --------
    >>> import torch
    >>> s = torch.tensor([3.0, 2.0, 1.0, 0.1])
    >>> Truncation(rel_tol=0.05).rank(s)
    3
    >>> Truncation(max_rank=2, rel_tol=0.05).rank(s)
    2
    """

    max_rank: int | None = None
    rel_tol: float | None = None
    abs_tol: float | None = None
    keep_energy: float | None = None

    def __post_init__(self) -> None:
        """Validate every field (naming it) and store plain Python numbers."""
        if self.max_rank is not None:
            if not is_int(self.max_rank):
                raise TypeError(
                    f"Truncation.max_rank must be an int, got {type(self.max_rank).__name__} "
                    f"{self.max_rank!r}"
                )
            if int(self.max_rank) < 1:
                raise ValueError(f"Truncation.max_rank must be >= 1, got {self.max_rank}")
            object.__setattr__(self, "max_rank", int(self.max_rank))
        checks = {
            "rel_tol": dict(low=0.0, low_open=False, high=1.0),
            "abs_tol": dict(low=0.0, low_open=False, high=None),
            "keep_energy": dict(low=0.0, low_open=True, high=1.0),
        }
        for field, bounds in checks.items():
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, _check_number(field, value, **bounds))

    def rank(self, s: torch.Tensor, norm: float | torch.Tensor | None = None) -> int:
        """Number of singular values to keep.

        Parameters
        ----------
        s : torch.Tensor
            Singular values in descending order (1-D).
        norm : float, optional
            Reference norm for ``rel_tol``; defaults to ``||s||``, the norm of the matrix itself.
            Multi-step algorithms pass the norm of the whole tensor here.

        Returns
        -------
        int
            Between 1 and ``len(s)``.
        """
        if s.ndim != 1:
            raise ValueError(f"singular values must be 1-D, got shape {tuple(s.shape)}")
        n = s.shape[0]
        if n == 0:
            raise ValueError("cannot truncate an empty spectrum (a dimension of size 0)")
        if not bool(torch.isfinite(s).all()):
            raise ValueError("singular values contain NaN or inf; the tensor is not finite")
        k = n
        if self.max_rank is not None:
            k = min(k, self.max_rank)
        if self.rel_tol is None and self.abs_tol is None and self.keep_energy is None:
            return max(k, 1)
        # tail[j] = sum_{i >= j} s_i^2, the squared error of keeping j values (j = 0..n).
        s2 = s.detach().double().square()
        tail = torch.flip(torch.cumsum(torch.flip(s2, (0,)), 0), (0,))
        tail = torch.cat([tail, tail.new_zeros(1)]).cpu()
        total = float(tail[0])
        limits = []
        if self.abs_tol is not None:
            limits.append(self.abs_tol**2)
        if self.rel_tol is not None:
            ref = total if norm is None else float(norm) ** 2
            limits.append(self.rel_tol**2 * ref)
        if self.keep_energy is not None:
            limits.append((1.0 - self.keep_energy) * total)
        for limit in limits:
            # smallest j with tail[j] <= limit (a tiny relative slack absorbs rounding in cumsum)
            ok = tail <= limit * (1 + 1e-12) + 1e-300
            k = min(k, int(torch.nonzero(ok)[0]))
        return max(k, 1)

    def split(self, steps: int) -> Truncation:
        """The per-step policy of an algorithm that truncates ``steps`` times.

        Tolerances are divided by ``sqrt(steps)`` so that, for algorithms whose errors add in
        squares (TT-SVD, HT-SVD), the total stays within the original tolerance.
        """
        if not is_int(steps) or int(steps) < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        f = math.sqrt(steps)
        return Truncation(
            max_rank=self.max_rank,
            rel_tol=None if self.rel_tol is None else self.rel_tol / f,
            abs_tol=None if self.abs_tol is None else self.abs_tol / f,
            keep_energy=None if self.keep_energy is None else 1 - (1 - self.keep_energy) / steps,
        )


def as_truncation(value: Truncation | int | None, field: str = "trunc") -> Truncation | None:
    """Accept ``None``, a `Truncation`, or an int of any library (shorthand for ``max_rank``).

    Examples
    --------
    >>> import numpy as np
    >>> as_truncation(np.int64(3))
    Truncation(max_rank=3, rel_tol=None, abs_tol=None, keep_energy=None)
    """
    if value is None or isinstance(value, Truncation):
        return value
    if is_int(value):
        if int(value) < 1:
            raise ValueError(f"{field} as an int is a max_rank and must be >= 1, got {value}")
        return Truncation(max_rank=int(value))
    raise TypeError(
        f"{field} must be a Truncation, an int (max_rank) or None, got {type(value).__name__}"
    )
