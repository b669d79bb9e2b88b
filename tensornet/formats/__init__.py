"""Tensor formats as networks: TT/MPS, TT-matrix, TR, HT, Tucker, Tucker-2, CP, low rank, grouped.

Every format is a registered, tensor-free :class:`Structure` (factors, legs, shapes, parameter
count, maximal ranks) plus its tensors, held as nodes of a :class:`~tensornet.TensorNetwork`, so
contraction, cuts, spectra and plots work on ``fmt.network`` unchanged. All formats share one
contract: ``from_dense(x, trunc, ranks, fraction)`` (a template in :class:`Format` that validates
once and calls the format's ``_decompose``), ``structure_for(shape, ranks)``,
``from_factors``/``factor_tensors``, ``to_dense``, ``truncate``, ``network``, ``ranks``,
``num_params``, ``compression``, ``error`` and ``to``. ``get_format(name)`` looks a format up by
its registered name; a new format is one file that registers itself.

This package imports from :mod:`tensornet.core` only (never from ``nn``, ``spectra`` or above:
it knows nothing of ``torch.nn``). Modules, each using only those listed before it when loaded:

- :mod:`.structure`: :class:`Structure`, :class:`Factor`, the registry
  (:func:`register_format`, :func:`get_format`, :func:`format_names`) and the fraction -> ranks
  solver (:func:`fraction_ranks`, :func:`budget_rank`).
- :mod:`.tensorize`: :func:`balanced_factors`, reshaping to one leg per factor of a size, and
  the channel split (``out_dims``/``in_dims``) the base template applies for TT, TR, Tucker, CP.
- :mod:`.base`: :class:`Format`, what every format shares (network, sizes, errors, budgets).
- :mod:`.steps`: steps the decompositions share (error budgets, SVD frames, mode products).
- :mod:`.lowrank`: :class:`LowRank` (``"svd"``), the truncated SVD across one cut.
- :mod:`.tt`: :class:`TT` (MPS), TT-SVD and rounding; :mod:`.tr`: :class:`TR`, tensor ring.
- :mod:`.ttmatrix`: :class:`TTMatrix` (MPO) for matrices and tensorized kernels.
- :mod:`.ht`: :class:`HT` over a :class:`DimensionTree`, HT-SVD.
- :mod:`.tucker`: :class:`Tucker` (HOSVD, HOOI) and :class:`Tucker2`.
- :mod:`.cp`: :class:`CP` by alternating least squares; :func:`khatri_rao`.
- :mod:`.grouped`: :class:`Grouped`, channel-grouped low rank (ALDS).
- :mod:`.cutformat`: :class:`CutNetwork` (``"cut"``), a tensor truncated along compatible cuts
  (one factor per region, one bond per cut; one cut: the truncated SVD across it).
- :mod:`.cuts`: :func:`format_cut`, the spectrum of a cut of any format's dense tensor, exact
  through the tree gauge where a bond induces the cut (no dense tensor).

>>> import torch
>>> from tensornet.formats import TT, get_format
>>> x = torch.randn(6, 5, 4, dtype=torch.float64)
>>> tt = TT.from_dense(x, ranks=(6, 4))  # full ranks: exact
>>> tt.ranks, bool(torch.allclose(tt.to_dense(), x))
((6, 4), True)
>>> small = tt.truncate(2)  # ranks lowered by SVD; the error is reported
>>> small.ranks, 0.0 < small.error < 1.0
((2, 2), True)
>>> get_format("tucker2").structure_for((8, 4, 3, 3), (2, 2)).num_params  # 8*2 + 4*2 + 2*2*3*3
60
"""

from .base import Format
from .cp import CP, khatri_rao
from .cutformat import CutNetwork, CutTree, cut_tree
from .cuts import FormatCut, cut_bond, format_cut
from .grouped import Grouped
from .ht import HT, DimensionTree
from .lowrank import LowRank
from .structure import (
    Factor,
    Structure,
    budget_rank,
    format_names,
    fraction_ranks,
    get_format,
    register_format,
)
from .tensorize import balanced_factors
from .tr import TR
from .tt import TT
from .ttmatrix import TTMatrix
from .tucker import Tucker, Tucker2

__all__ = [
    "CP",
    "CutNetwork",
    "CutTree",
    "DimensionTree",
    "Factor",
    "Format",
    "FormatCut",
    "Grouped",
    "HT",
    "LowRank",
    "Structure",
    "TR",
    "TT",
    "TTMatrix",
    "Tucker",
    "Tucker2",
    "balanced_factors",
    "budget_rank",
    "cut_bond",
    "cut_tree",
    "format_cut",
    "format_names",
    "fraction_ranks",
    "get_format",
    "khatri_rao",
    "register_format",
]
