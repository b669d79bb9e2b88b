"""Compressed layers and models: tensor-network factors inside ``torch.nn`` modules.

- :class:`TNConv2d`, :class:`TNLinear`: the factors of any registered format as parameters; the
  forward pass is chosen per input shape by a cost model (:mod:`.cost`) among the candidates of
  :mod:`.functional`.
"""

from .cost import calibrate, costs_for
from .functional import ConvGeometry, ForwardPlan
from .layers import PlanInfo, TNConv2d, TNLinear, kernel_options

__all__ = [
    "ConvGeometry",
    "ForwardPlan",
    "PlanInfo",
    "TNConv2d",
    "TNLinear",
    "calibrate",
    "costs_for",
    "kernel_options",
]
