"""Tensor formats as networks.

TT/MPS, TT-matrix, HT, Tucker (and Tucker-2), CP, tensor ring, plain low rank and
channel-grouped low rank.

Every format is a registered, tensor-free :class:`Structure` (factors, legs, shapes, parameter
count, maximal ranks) plus its tensors, and shares one contract: ``from_dense(x, trunc, ranks,
fraction)``, ``structure_for(shape, ranks)``, ``from_factors``/``factor_tensors``, ``to_dense``,
``truncate``, ``network``, ``ranks``, ``num_params``, ``compression``, ``error`` and ``to``.
``get_format(name)`` looks a format up by its registered name.
"""

from .base import Format
from .cp import CP, khatri_rao
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
    "DimensionTree",
    "Factor",
    "Format",
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
    "format_names",
    "fraction_ranks",
    "get_format",
    "khatri_rao",
    "register_format",
]
