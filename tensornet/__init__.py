"""tensornet: tensor networks on PyTorch.

One graph core (:class:`Node`, :class:`TensorNetwork`) with contraction planned by opt_einsum,
SVD/QR splits with a single :class:`Truncation` policy, and an SVD whose backward is stable.

>>> import torch, tensornet as tn
>>> a = tn.Node(torch.randn(2, 3), ("i", "j"))
>>> b = tn.Node(torch.randn(3, 4), ("j", "k"))
>>> tn.contract(a, b).legs
('i', 'k')

``import tensornet`` loads the core, the formats, :mod:`.spectra` and :mod:`.weights` only; the
heavier packages (:mod:`.nn`, :mod:`.analysis`, :mod:`.plot`, :mod:`.cli`) are imported on first
use, as ``import tensornet.nn`` or as the attribute ``tensornet.nn``.
"""

import importlib

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
from .formats import (
    CP,
    HT,
    TR,
    TT,
    DimensionTree,
    Format,
    Grouped,
    LowRank,
    Structure,
    TTMatrix,
    Tucker,
    Tucker2,
    balanced_factors,
    format_names,
    get_format,
)
from .spectra import (
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

_LAZY = ("analysis", "cli", "io", "nn", "plot", "weights")


def __getattr__(name: str):
    """``tensornet.nn`` and the other heavy subpackages, imported on first use."""
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CP",
    "HT",
    "KERNEL_LEGS",
    "TR",
    "TT",
    "TTMatrix",
    "Tucker",
    "Tucker2",
    "Grouped",
    "LowRank",
    "Structure",
    "format_names",
    "get_format",
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
