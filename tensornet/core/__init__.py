"""The graph core: nodes, networks, planned contraction, splits and the truncation policy."""

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
