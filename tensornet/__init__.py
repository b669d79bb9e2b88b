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
    Node,
    Plan,
    SplitInfo,
    TensorNetwork,
    Truncation,
    as_tensor,
    as_truncation,
    cache_info,
    clear_cache,
    contract,
    plan_contraction,
    qr,
    qr_split,
    set_cache_size,
    split,
    svd,
    svdvals,
    truncated_svd,
    truncation_error,
)

__version__ = "0.1.0"

__all__ = [
    "Bond",
    "Node",
    "Plan",
    "SplitInfo",
    "TensorNetwork",
    "Truncation",
    "as_tensor",
    "as_truncation",
    "cache_info",
    "clear_cache",
    "contract",
    "plan_contraction",
    "qr",
    "qr_split",
    "set_cache_size",
    "split",
    "svd",
    "svdvals",
    "truncated_svd",
    "truncation_error",
]
