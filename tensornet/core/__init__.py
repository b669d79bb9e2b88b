"""The graph core: nodes, networks, planned contraction, splits and the truncation policy.

Everything else in tensornet is built on this package, which knows nothing of formats, layers
or models. It imports nothing from tensornet outside ``core``, except for
:meth:`TensorNetwork.draw`, which loads :mod:`tensornet.plot` when called. Modules, each
using only those listed before it when loaded:

- :mod:`.validate`: argument checks that name the culprit (field, leg, node, device).
- :mod:`.truncation`: :class:`Truncation`, the one policy for how many singular values to keep.
- :mod:`.node`: :class:`Node`, an immutable tensor with named legs.
- :mod:`.linalg`: :func:`svd`, :func:`qr`, :func:`truncated_svd` with stable backward passes.
- :mod:`.spectrum`: :class:`Spectrum` of one cut (entropies, discarded weight); :func:`cuts`.
- :mod:`.split`: :func:`split` (truncated SVD) and :func:`qr_split` of one node along a cut.
- :mod:`.pathfind`: :class:`DefaultOptimizer`, the default contraction-path search.
- :mod:`.executor`: a pairwise path run as matrix products on layouts planned ahead.
- :mod:`.slicing`: sliced contraction under a memory limit.
- :mod:`.contract`: the planner (:class:`Plan`, :func:`plan_contraction`), its one LRU cache
  (:func:`cache_info`, :func:`clear_cache`, :func:`set_cache_size`) and the size limit.
- :mod:`.netcontract`: what :meth:`TensorNetwork.contract` adds (output check, per-network memo).
- :mod:`.einsum`: planned einsum with hyperedges and batch legs, for formats and layers.
- :mod:`.gauge`: tree gauges, exact bond spectra and bond truncation.
- :mod:`.network`: :class:`TensorNetwork`, :class:`Bond` and :func:`contract`.

>>> import torch
>>> from tensornet.core import Node, TensorNetwork, Truncation, split
>>> net = TensorNetwork([Node(torch.ones(2, 3), ("i", "j")), Node(torch.ones(3, 4), ("j", "k"))])
>>> [bond.leg for bond in net.bonds], net.open_legs
(['j'], ('i', 'k'))
>>> net.plan().path  # the contraction path, with its cost, before anything runs
((0, 1),)
>>> net.contract().tensor.sum().item()
24.0
>>> left, right, info = split(net.contract(), ["i"], trunc=Truncation(max_rank=1))
>>> info.rank, round(float(info.error), 6)
(1, 0.0)
"""

from .contract import (
    DefaultOptimizer,
    Plan,
    cache_info,
    clear_cache,
    get_max_intermediate,
    plan_contraction,
    set_cache_size,
    set_max_intermediate,
)
from .linalg import qr, svd, svdvals, truncated_svd
from .network import Bond, TensorNetwork, contract
from .node import Node, as_tensor
from .spectrum import Spectrum, cuts
from .split import SplitInfo, qr_split, split, truncation_error
from .truncation import Truncation, as_truncation

__all__ = [
    "Bond",
    "DefaultOptimizer",
    "Node",
    "Plan",
    "SplitInfo",
    "Spectrum",
    "TensorNetwork",
    "Truncation",
    "as_tensor",
    "as_truncation",
    "cache_info",
    "clear_cache",
    "contract",
    "cuts",
    "get_max_intermediate",
    "plan_contraction",
    "qr",
    "qr_split",
    "set_cache_size",
    "set_max_intermediate",
    "split",
    "svd",
    "svdvals",
    "truncated_svd",
    "truncation_error",
]
