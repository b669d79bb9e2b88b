"""Spectra of cuts of a format's dense tensor, taken through its network.

A cut of the dense tensor is a bipartition of its legs (``["out"]`` against ``in, kh, kw``).
On the format's network each dense leg is one or several open (mode) legs
(:attr:`Structure.modes`). Where the network is a tree and one bond splits it into the cut's two
sides, the spectrum is the bond's, exact through the tree gauge (QR sweeps on the factors; the
dense tensor is never built). Any other cut (a ring, a TT-matrix's mixed modes, a cut no bond
induces) contracts the network, refused with a ValueError above ``max_elements``.

Either way the values are the singular values of the dense tensor matricised along the cut,
``chi_max`` of them (zeros past the bond's rank included), computed in float64 (complex128 for
complex factors).

Examples
--------
>>> import torch
>>> from tensornet.formats import Tucker2
>>> legs = ("out", "in", "kh", "kw")
>>> fmt = Tucker2.from_dense(torch.randn(8, 6, 3, 3, dtype=torch.float64), ranks=(3, 2), legs=legs)
>>> res = format_cut(fmt, ["out"], max_elements=10)  # a bond's cut: no dense kernel
>>> res.spectrum.label, res.spectrum.chi_max, res.rank, int((res.spectrum.values > 0).sum())
('out|in,kh,kw', 8, 3, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..core.gauge import bond_sides
from ..core.network import TensorNetwork
from ..core.spectrum import Spectrum
from .base import Format

__all__ = ["DENSE_LIMIT", "FormatCut", "cut_bond", "format_cut"]

#: Default size guard: a cut that needs the dense tensor is refused above this many elements.
DENSE_LIMIT = 2**26


class FormatCut(NamedTuple):
    """The spectrum of one cut of a format, the network bond inducing it and that bond's rank.

    ``bond`` and ``rank`` are ``None`` where no bond of a tree network induces the cut (the
    spectrum then came from the contracted dense tensor).
    """

    spectrum: Spectrum
    bond: str | None
    rank: int | None


def _check_cut(fmt: Format, left_legs: Sequence[str] | str) -> tuple[tuple[str, ...], tuple]:
    if not isinstance(fmt, Format):
        raise TypeError(f"fmt must be a Format (TT, Tucker2, ...), got {type(fmt).__name__}")
    if isinstance(left_legs, str):
        left_legs = (left_legs,)
    try:
        left = tuple(left_legs)
    except TypeError:
        raise TypeError(
            f"left_legs must be leg names of {fmt.legs}, got {type(left_legs).__name__}"
        ) from None
    for leg in left:
        if leg not in fmt.legs:
            raise ValueError(f"left_legs: {leg!r} is not a leg of the {fmt.name} format {fmt.legs}")
    if not left or len(left) == len(fmt.legs) or len(set(left)) != len(left):
        raise ValueError(
            f"left_legs {left} must be a non-empty proper subset of the legs {fmt.legs} "
            "without repeats"
        )
    return left, tuple(leg for leg in fmt.legs if leg not in left)


def _modes(fmt: Format, legs: Sequence[str]) -> tuple[str, ...]:
    modes = dict(zip(fmt.legs, fmt.structure.modes))
    return tuple(m for leg in legs for m in modes[leg])


def cut_bond(fmt: Format, left_legs: Sequence[str] | str) -> str | None:
    """The bond of ``fmt.network`` whose removal splits it into the cut's two sides, or None.

    Only tree networks have such bonds (a ring's bond leaves the network connected).

    Examples
    --------
    >>> import torch
    >>> from tensornet.formats import TT
    >>> tt = TT.from_dense(torch.randn(4, 3, 2), ranks=(2, 2), legs=("a", "b", "c"))
    >>> cut_bond(tt, ["a"]) is not None, cut_bond(tt, ["a", "c"])
    (True, None)
    """
    left, _ = _check_cut(fmt, left_legs)
    return _inducing_bond(fmt.network, set(_modes(fmt, left)))


def _inducing_bond(net: TensorNetwork, wanted: set[str]) -> str | None:
    """The bond of a tree ``net`` with the open legs ``wanted`` on one side, or None."""
    if not net.is_tree:
        return None
    for bond in net.bonds:
        a, b = bond_sides(net, bond.leg)
        if wanted in (set(a), set(b)):
            return bond.leg
    return None


def _precise(fmt: Format) -> Format:
    """``fmt`` with float64 (complex128) factors, for values exact to float64 rounding."""
    target = torch.complex128 if fmt.dtype.is_complex else torch.float64
    return fmt if fmt.dtype == target else fmt.to(dtype=target)


def format_cut(
    fmt: Format, left_legs: Sequence[str] | str, max_elements: int = DENSE_LIMIT
) -> FormatCut:
    """Spectrum of the dense tensor of ``fmt`` along the cut ``left_legs | rest``.

    Parameters
    ----------
    fmt : Format
        Any registered format.
    left_legs : str or sequence of str
        One side of the cut (dense leg names, :attr:`Format.legs`).
    max_elements : int
        Size guard for cuts no bond induces: the dense tensor (and any intermediate of its
        contraction) may hold at most this many elements, else ValueError. Bond-induced cuts of
        tree networks never build it.

    Returns
    -------
    FormatCut
        The spectrum (legs in :attr:`Format.legs` order, ``chi_max`` values in float64), the
        bond that induced the cut and its rank (``None`` when the network was contracted).

    Examples
    --------
    >>> import torch
    >>> from tensornet.formats import TR
    >>> tr = TR.from_dense(torch.randn(4, 3, 5, dtype=torch.float64), ranks=(2, 2, 2))
    >>> res = format_cut(tr, [tr.legs[0]])  # a ring: contracted (within the size guard)
    >>> res.bond, res.spectrum.chi_max
    (None, 4)
    """
    left, right = _check_cut(fmt, left_legs)
    dims = dict(zip(fmt.legs, fmt.shape))
    chi_max = min(math.prod(dims[leg] for leg in left), math.prod(dims[leg] for leg in right))
    with torch.no_grad():
        net = _precise(fmt).network
        bond = _inducing_bond(net, set(_modes(fmt, left)))
        if bond is not None:
            values = net.spectrum(bond).values[:chi_max]
        else:
            values = net.cut(_modes(fmt, left), max_elements=max_elements).values
    values = torch.cat([values, values.new_zeros(chi_max - values.shape[0])])
    rank = None if bond is None else net.dim(bond)
    return FormatCut(Spectrum(values, left, right), bond, rank)
