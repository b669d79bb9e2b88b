"""Reshaping matrices and conv kernels into tensors with one leg per factor of their sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.validate import is_int

__all__ = ["balanced_factors", "check_dims", "tensorize_matrix", "mode_legs"]


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def balanced_factors(n: int, d: int) -> tuple[int, ...]:
    """``d`` factors of ``n`` (descending) whose sizes are as equal as the primes allow.

    Primes are dealt largest first to the currently smallest factor; sizes of 1 pad when ``n``
    has fewer than ``d`` prime factors.

    Examples
    --------
    >>> balanced_factors(256, 3), balanced_factors(1000, 3), balanced_factors(7, 2)
    ((8, 8, 4), (10, 10, 10), (7, 1))
    """
    if not is_int(n) or int(n) < 1:
        raise ValueError(f"balanced_factors: n must be a positive int, got {n!r}")
    if not is_int(d) or int(d) < 1:
        raise ValueError(f"balanced_factors: d must be a positive int, got {d!r}")
    n, d = int(n), int(d)
    sizes = [1] * d
    for p in sorted(_prime_factors(n), reverse=True):
        i = min(range(d), key=lambda j: sizes[j])
        sizes[i] *= p
    return tuple(sorted(sizes, reverse=True))


def check_dims(dims: Sequence[int], total: int, field: str, what: str) -> tuple[int, ...]:
    """``dims`` as positive Python ints whose product is ``total`` (ValueError naming ``field``).

    Integers of any library are accepted.

    Examples
    --------
    >>> import numpy as np
    >>> check_dims(np.array([2, 3]), 6, "row_dims", "demo")
    (2, 3)
    """
    if isinstance(dims, (str, bytes)):
        raise ValueError(f"{what}: {field} must be a sequence of ints, got {dims!r}")
    try:
        dims = tuple(dims)
    except TypeError:
        raise ValueError(f"{what}: {field} must be a sequence of ints, got {dims!r}") from None
    if not dims or any(not is_int(n) or int(n) < 1 for n in dims):
        raise ValueError(f"{what}: {field} must be positive ints, got {dims}")
    dims = tuple(int(n) for n in dims)
    if math.prod(dims) != total:
        raise ValueError(
            f"{what}: {field} {dims} multiply to {math.prod(dims)}, not the size {total}"
        )
    return dims


def mode_legs(leg: str, count: int) -> tuple[str, ...]:
    """Names of the legs a dense leg is split into: ``leg_0, leg_1, ...``."""
    return tuple(f"{leg}_{k}" for k in range(count))


def tensorize_matrix(
    w: torch.Tensor, row_dims: Sequence[int], col_dims: Sequence[int]
) -> torch.Tensor:
    """``w`` (M, N) as a tensor ``(m_1, n_1, m_2, n_2, ...)`` (row and column modes paired)."""
    d = len(row_dims)
    t = w.reshape(*row_dims, *col_dims)
    perm = [i for k in range(d) for i in (k, d + k)]
    return t.permute(perm)
