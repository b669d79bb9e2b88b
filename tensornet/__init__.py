"""tensornet: tensor networks on PyTorch.

One graph core (:class:`Node`, :class:`TensorNetwork`) with contraction planned by opt_einsum,
SVD/QR splits with a single :class:`Truncation` policy, and an SVD whose backward is stable.

>>> import torch, tensornet as tn
>>> a = tn.Node(torch.randn(2, 3), ("i", "j"))
>>> b = tn.Node(torch.randn(3, 4), ("j", "k"))
>>> tn.contract(a, b).legs
('i', 'k')
"""

from .core import (
    Bond,
    DefaultOptimizer,
    Node,
    Plan,
    Spectrum,
    SplitInfo,
    TensorNetwork,
    Truncation,
    as_tensor,
    as_truncation,
    cache_info,
    clear_cache,
    contract,
    cuts,
    get_max_intermediate,
    plan_contraction,
    qr,
    qr_split,
    set_cache_size,
    set_max_intermediate,
    split,
    svd,
    svdvals,
    truncated_svd,
    truncation_error,
)
from .formats import CP, HT, TT, DimensionTree, Format, TTMatrix, Tucker, balanced_factors
from .spectrum import (
    KERNEL_LEGS,
    NoMatchingLayer,
    SpectrumTable,
    TruncationResult,
    kernel_spectra,
    model_spectra,
    spectrum,
    truncate,
    weight_spectra,
)

__version__ = "0.1.0"

__all__ = [
    "CP",
    "HT",
    "KERNEL_LEGS",
    "TT",
    "TTMatrix",
    "Tucker",
    "DimensionTree",
    "Format",
    "balanced_factors",
    "Bond",
    "DefaultOptimizer",
    "NoMatchingLayer",
    "Node",
    "Plan",
    "SplitInfo",
    "Spectrum",
    "SpectrumTable",
    "TensorNetwork",
    "Truncation",
    "TruncationResult",
    "as_tensor",
    "as_truncation",
    "cache_info",
    "clear_cache",
    "contract",
    "cuts",
    "get_max_intermediate",
    "kernel_spectra",
    "model_spectra",
    "plan_contraction",
    "qr",
    "qr_split",
    "set_cache_size",
    "set_max_intermediate",
    "spectrum",
    "split",
    "svd",
    "svdvals",
    "truncate",
    "truncated_svd",
    "truncation_error",
    "weight_spectra",
]
