"""Reshaping matrices and conv kernels into tensors with one leg per factor of their sizes.

A tensorized weight splits its first two legs (``out``, ``in``) into modes by ``out_dims`` and
``in_dims`` and keeps the others (a kernel's ``kh, kw``) as legs of their own. TT-matrix and HT
pair the out and in modes in their own layouts (one core or leaf per pair). TT, TR, Tucker and
CP (``Format.tensorizable``) are tensorized by the :class:`~tensornet.formats.Format` template
with what is here (:func:`split_layout`): the format decomposes the tensor of modes
``(out_0, ..., in_0, ..., kh, kw)`` exactly as it decomposes any tensor, and the structure
records ``out_dims``/``in_dims`` and maps each dense leg to its modes, so ``to_dense``, layers,
plans, spectra and saved files see the ``(out, in[, kh, kw])`` weight.

The train order of TT and TR (their ``order``) is by default the interleaved one: the kept legs
first, then ``out_0, in_0, out_1, in_1, ...`` (TT-matrix's order with one core per mode), so each
bond separates whole out/in pairs and its rank is bounded by the pairs on the smaller side,
rather than ``min(out, in)`` at the middle bond of an ``out_0, out_1, in_0, in_1`` train.
Options naming legs (``order``, Tucker's ``modes``) may name dense legs, each standing for its
modes: a compressed conv's TT default ``order=("in", "kh", "kw", "out")`` becomes
``in_0, in_1, kh, kw, out_0, out_1``, a chain of convolutions as for an untensorized kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.validate import is_int

__all__ = [
    "Tensorization",
    "balanced_dims",
    "balanced_factors",
    "check_dims",
    "mode_legs",
    "split_layout",
    "tensorization",
    "tensorize_matrix",
]


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


# -- channel tensorization of a format's dense tensor ----------------------------------------
@dataclass(frozen=True)
class Tensorization:
    """The first two dense legs split into modes (``out_dims``, ``in_dims``), the others kept.

    A matrix ``(out, in)`` or kernel ``(out, in, kh, kw)`` becomes the tensor of modes
    ``out_0, ..., out_{n-1}, in_0, ..., in_{m-1}, kh, kw`` (row-major, so
    ``x.reshape(shape)``). A format tensorized by the :class:`~tensornet.formats.Format`
    template (TT, TR, Tucker, CP) decomposes that tensor as it would any other, one leg per mode.

    Attributes
    ----------
    dense_legs : tuple of str
        The dense legs.
    out_dims, in_dims : tuple of int
        Mode sizes of the first and second dense legs.
    modes : tuple of tuple of str
        For each dense leg its mode legs (``out_0, out_1, ...``; a kept leg is its own mode).
    shape : tuple of int
        Sizes of the mode legs, dense leg by dense leg (what the format decomposes).
    """

    dense_legs: tuple[str, ...]
    out_dims: tuple[int, ...]
    in_dims: tuple[int, ...]
    modes: tuple[tuple[str, ...], ...]
    shape: tuple[int, ...]

    @property
    def legs(self) -> tuple[str, ...]:
        """The mode legs, dense leg by dense leg (the axes of ``x.reshape(shape)``)."""
        return tuple(m for group in self.modes for m in group)

    @property
    def options(self) -> tuple[tuple[str, Any], ...]:
        """The structure options that record this tensorization."""
        return (("out_dims", self.out_dims), ("in_dims", self.in_dims))

    def interleaved(self) -> tuple[str, ...]:
        """The default order of a train: kept legs first, then ``out_0, in_0, out_1, in_1, ...``.

        The TT-matrix order with one core per mode: bond ``k`` of the train separates whole
        out/in mode pairs, so its rank is bounded by the product of the pairs on the smaller
        side rather than by ``min(out, in)`` (the middle bond of ``out_0, out_1, in_0, in_1``).

        Examples
        --------
        >>> t = tensorization((16, 9, 3, 3), ("o", "i", "kh", "kw"), (4, 4), (3, 3), "demo")
        >>> t.interleaved()
        ('kh', 'kw', 'o_0', 'i_0', 'o_1', 'i_1')
        """
        rows, cols = self.modes[0], self.modes[1]
        kept = tuple(m for group in self.modes[2:] for m in group)
        pairs = (
            m
            for k in range(max(len(rows), len(cols)))
            for m in (*rows[k : k + 1], *cols[k : k + 1])
        )
        return (*kept, *pairs)

    def expand(self, names: Sequence[str]) -> tuple[str, ...]:
        """Leg names with each split dense leg replaced by its modes (other names kept).

        Examples
        --------
        >>> t = tensorization((16, 9, 3, 3), ("out", "in", "kh", "kw"), (4, 4), (3, 3), "demo")
        >>> t.expand(("in", "kh", "kw", "out"))
        ('in_0', 'in_1', 'kh', 'kw', 'out_0', 'out_1')
        """
        split = dict(zip(self.dense_legs, self.modes))  # a kept leg is its own mode
        return tuple(m for name in names for m in split.get(name, (name,)))


def tensorization(
    shape: Sequence[int],
    legs: Sequence[str],
    out_dims: Sequence[int] | None,
    in_dims: Sequence[int] | None,
    what: str,
) -> Tensorization | None:
    """The split of a dense ``shape`` by ``out_dims``/``in_dims`` (``None`` when neither is given).

    The two may have different lengths (a length of 1 keeps that leg whole, renamed
    ``<leg>_0``); their products must be the first two sizes. ValueError naming the field
    otherwise, or when only one of them is given.

    Examples
    --------
    >>> t = tensorization((16, 9), ("out", "in"), (4, 4), (3, 3), "demo")
    >>> t.legs, t.shape, t.modes
    (('out_0', 'out_1', 'in_0', 'in_1'), (4, 4, 3, 3), (('out_0', 'out_1'), ('in_0', 'in_1')))
    >>> tensorization((16, 9), ("out", "in"), None, None, "demo") is None
    True
    """
    if out_dims is None and in_dims is None:
        return None
    missing = "in_dims" if in_dims is None else "out_dims" if out_dims is None else None
    if missing:
        raise ValueError(
            f"{what}: a tensorized layout needs both out_dims and in_dims; {missing} is missing"
        )
    shape, legs = tuple(shape), tuple(legs)
    if len(shape) < 2:
        raise ValueError(f"{what}: out_dims/in_dims split the first two legs; got shape {shape}")
    out_dims = check_dims(out_dims, shape[0], "out_dims", what)
    in_dims = check_dims(in_dims, shape[1], "in_dims", what)
    modes = (mode_legs(legs[0], len(out_dims)), mode_legs(legs[1], len(in_dims)))
    modes += tuple((leg,) for leg in legs[2:])
    clash = set(modes[0] + modes[1]) & set(legs[2:])
    if clash:
        raise ValueError(
            f"{what}: the mode legs {sorted(clash)} clash with the kept legs {legs[2:]}"
        )
    return Tensorization(legs, out_dims, in_dims, modes, (*out_dims, *in_dims, *shape[2:]))


def balanced_dims(
    out_size: int, in_size: int, modes: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``out_dims`` and ``in_dims`` for a layer: :func:`balanced_factors` of both sizes.

    ``modes`` fixes the number of modes of each; by default (``None``) it is 3 when both sizes
    split into 3 balanced factors of at least 4 (e.g. 64 = 4 x 4 x 4 and up), else 2 when both
    split into 2 factors of at least 2, else ``None``: a size with fewer than two prime
    factors (3 colour channels, 10 classes do split: 5 x 2) is left whole.

    Examples
    --------
    >>> balanced_dims(256, 64), balanced_dims(16, 9), balanced_dims(16, 3)
    (((8, 8, 4), (4, 4, 4)), ((4, 4), (3, 3)), None)
    >>> balanced_dims(16, 9, modes=3)
    ((4, 2, 2), (3, 3, 1))
    """
    if modes is not None:
        if not is_int(modes) or int(modes) < 1:
            raise ValueError(f"balanced_dims: modes must be a positive int, got {modes!r}")
        return balanced_factors(out_size, int(modes)), balanced_factors(in_size, int(modes))
    for d, smallest in ((3, 4), (2, 2)):
        out_dims, in_dims = balanced_factors(out_size, d), balanced_factors(in_size, d)
        if min(out_dims[-1], in_dims[-1]) >= smallest:
            return out_dims, in_dims
    return None


def split_layout(
    shape: tuple[int, ...],
    legs: tuple[str, ...],
    options: Mapping[str, Any],
    leg_options: Sequence[str],
    what: str,
) -> tuple[Tensorization | None, dict[str, Any]]:
    """The split asked for by ``options`` (``out_dims``/``in_dims``) and the other options.

    What :meth:`Format.structure_for <tensornet.formats.Format.structure_for>` does for a
    ``tensorizable`` format. ``None`` when neither dim is given. Otherwise the options named
    by ``leg_options`` (TT's and TR's ``order``, Tucker's ``modes``) name mode legs: a split
    dense leg in them stands for its modes, and when unset they are every mode leg in the
    :meth:`~Tensorization.interleaved` order.

    Examples
    --------
    >>> split, opts = split_layout((16, 9), ("out", "in"), {"out_dims": (4, 4),
    ...                            "in_dims": (3, 3)}, ("order",), "demo")
    >>> split.shape, opts
    ((4, 4, 3, 3), {'order': ('out_0', 'in_0', 'out_1', 'in_1')})
    >>> split_layout((16, 9), ("out", "in"), {"order": ("in", "out")}, ("order",), "demo")
    (None, {'order': ('in', 'out')})
    """
    options = dict(options)
    split = tensorization(
        shape, legs, options.pop("out_dims", None), options.pop("in_dims", None), what
    )
    if split is not None:
        for key in leg_options:
            value = options.get(key)
            if value is None:
                options[key] = split.interleaved()
            elif not isinstance(value, str):
                options[key] = split.expand(value)
    return split, options
