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
- :mod:`.analysis`: resumable truncation sweeps; :mod:`.plot`: figures; :mod:`.cli`: the command;
  :mod:`.checkpoints`: checkpoints read without unpickling (``nn.save`` files as kernel formats).

``import tensornet`` loads nothing but this file: every name below (``tn.Node``, ``tn.TT``,
``tn.model_spectra``...) and every part (``tn.nn``, ``tn.plot``...) is imported on first use, so
``tensornet spectra --help`` answers without importing torch. Two words have more than one
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

__version__ = "0.1.0"

# Every public name and subpackage is loaded on first use (PEP 562), so ``import tensornet`` costs
# nothing and ``tensornet spectra --help`` never imports torch.
_NAMES: dict[str, str] = {
    "Bond": "core",
    "DefaultOptimizer": "core",
    "Node": "core",
    "Plan": "core",
    "Spectrum": "core",
    "SplitInfo": "core",
    "TensorNetwork": "core",
    "Truncation": "core",
    "as_tensor": "core",
    "as_truncation": "core",
    "cache_info": "core",
    "clear_cache": "core",
    "contract": "core",
    "cuts": "core",
    "get_max_intermediate": "core",
    "plan_contraction": "core",
    "qr": "core",
    "qr_split": "core",
    "set_cache_size": "core",
    "set_max_intermediate": "core",
    "split": "core",
    "svd": "core",
    "svdvals": "core",
    "truncated_svd": "core",
    "truncation_error": "core",
    "CP": "formats",
    "HT": "formats",
    "TR": "formats",
    "TT": "formats",
    "DimensionTree": "formats",
    "Format": "formats",
    "Grouped": "formats",
    "LowRank": "formats",
    "Structure": "formats",
    "TTMatrix": "formats",
    "Tucker": "formats",
    "Tucker2": "formats",
    "balanced_factors": "formats",
    "format_names": "formats",
    "get_format": "formats",
    "KERNEL_LEGS": "spectra",
    "NoMatchingLayer": "spectra",
    "SpectrumTable": "spectra",
    "TruncationResult": "spectra",
    "kernel_spectra": "spectra",
    "model_spectra": "spectra",
    "spectrum": "spectra",
    "truncate": "spectra",
    "weight_spectra": "spectra",
}
_LAZY = (
    "analysis",
    "checkpoints",
    "cli",
    "core",
    "formats",
    "io",
    "nn",
    "plot",
    "runs",
    "spectra",
    "weights",
)


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES) | set(_LAZY))


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
