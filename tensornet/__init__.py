"""tensornet: tensor networks on PyTorch, and compressed CNN layers built on them.

One graph core (:class:`Node`, :class:`TensorNetwork`) with contraction planned by opt_einsum,
SVD/QR splits with a single :class:`Truncation` policy, and an SVD whose backward is stable; tensor
formats that are networks on that core; spectra along cuts; compressed layers and models.

Parts, bottom to top (each imports only its own floor and those below it; enforced by
``tests/test_imports.py``):

- :mod:`.core`: nodes, networks, planned contraction, splits, gauges, the truncation policy.
- :mod:`.io`: atomic file writes.
- :mod:`.formats`: TT, TT-matrix, TR, HT, Tucker, Tucker-2, CP, low rank, grouped low rank.
- :mod:`.weights`: a model's weights and layers (kernel legs, selection, replacing a module);
  :mod:`.runs`: the append-only result store and ``map_cells`` over executors.
- :mod:`.spectra`: dense spectra along cuts of kernels and models; truncation along cuts.
- :mod:`.nn`: compressed layers (``TNConv2d``, ``TNLinear``), ``compress``, ``allocate``, export.
- :mod:`.analysis`: resumable truncation sweeps; :mod:`.plot`: figures; :mod:`.cli`: the command.

``import tensornet`` loads the core, the formats, :mod:`.spectra` and :mod:`.weights` only; the
heavier packages (:mod:`.nn`, :mod:`.analysis`, :mod:`.plot`, :mod:`.cli`) are imported on first
use, as ``import tensornet.nn`` or as the attribute ``tensornet.nn``. Two words have more than one
reading in the API; README.md's "Names" section defines each (``truncate`` always lowers ranks by
SVD and reports the error it made; ``plan`` is a contraction path in the core and a forward plan
or plan policy in :mod:`.nn`).

>>> import torch, tensornet as tn
>>> a = tn.Node(torch.randn(2, 3), ("i", "j"))
>>> b = tn.Node(torch.randn(3, 4), ("j", "k"))
>>> tn.contract(a, b).legs
('i', 'k')
>>> tt = tn.TT.from_dense(torch.randn(4, 4, 4, dtype=torch.float64), tn.Truncation(max_rank=2))
>>> tt.ranks, tt.error <= 1.0
((2, 2), True)
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
