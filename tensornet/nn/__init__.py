"""Compressed layers and models: tensor-network factors inside ``torch.nn`` modules.

- :class:`TNConv2d`, :class:`TNLinear`: the factors of any registered format as parameters; the
  forward pass is chosen per input shape by a cost model (:mod:`.cost`) among the candidates of
  :mod:`.functional` (rebuild-then-conv, sequences of small convs, one planned contraction).
- :func:`compress`: a compressed copy of a model and a per-layer report; :func:`allocate`:
  global rank allocation (uniform, energy, ALDS) under a parameter or FLOP budget.
- :func:`recalibrate_bn`: BatchNorm running statistics recomputed from data after compression.
- :func:`to_standard`: back to plain ``nn.Conv2d``/``nn.Linear`` modules with the same outputs.
- :func:`save` / :func:`load`: safetensors plus a JSON description of each layer (no pickle).
- :func:`truncate_kernel`: a layer's kernel truncated along cuts (the truncation study's step).
- :func:`select_layers`: choosing layers by pattern, list or predicate.
"""

from .allocate import Allocation, LayerChoice, allocate
from .batchnorm import BNRecalibration, batchnorm_layers, recalibrate_bn
from .compress import CompressionReport, LayerReport, compress, dense_flops, layer_inputs
from .cost import calibrate, costs_for
from .export import conv_sequence, to_standard
from .functional import ConvGeometry, ForwardPlan
from .layers import PlanInfo, TNConv2d, TNLayer, TNLinear, kernel_options
from .select import NoMatchingLayer, matches, select_layers
from .serialize import describe, load, save
from .truncate import KernelTruncation, truncate_kernel

__all__ = [
    "Allocation",
    "BNRecalibration",
    "CompressionReport",
    "ConvGeometry",
    "ForwardPlan",
    "KernelTruncation",
    "LayerChoice",
    "LayerReport",
    "NoMatchingLayer",
    "PlanInfo",
    "TNConv2d",
    "TNLayer",
    "TNLinear",
    "allocate",
    "batchnorm_layers",
    "calibrate",
    "compress",
    "conv_sequence",
    "costs_for",
    "dense_flops",
    "describe",
    "kernel_options",
    "layer_inputs",
    "load",
    "matches",
    "recalibrate_bn",
    "save",
    "select_layers",
    "to_standard",
    "truncate_kernel",
]
