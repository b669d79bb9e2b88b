"""Tensor formats as networks: TT/MPS, TT-matrix, Hierarchical Tucker, Tucker and CP.

Every format keeps its factors as nodes of a :class:`~tensornet.TensorNetwork` whose open legs
are the dense tensor's legs, and shares one contract: ``from_dense(x, trunc, ranks, fraction)``,
``to_dense``, ``network``, ``ranks``, ``num_params``, ``compression``, ``error``, ``truncate``
and ``to``.
"""

from .base import Format, budget_rank
from .cp import CP, khatri_rao
from .ht import HT, DimensionTree
from .tensorize import balanced_factors
from .tt import TT
from .ttmatrix import TTMatrix
from .tucker import Tucker

__all__ = [
    "CP",
    "DimensionTree",
    "Format",
    "HT",
    "TT",
    "TTMatrix",
    "Tucker",
    "balanced_factors",
    "budget_rank",
    "khatri_rao",
]
