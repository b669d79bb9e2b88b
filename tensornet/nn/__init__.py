"""Compressed layers and models: tensor-network factors inside ``torch.nn`` modules.

- :class:`TNConv2d`, :class:`TNLinear`: the factors of any registered format as parameters; the
  forward pass is chosen per input shape by a cost model (:mod:`.cost`) among the candidates of
  :mod:`.functional` (rebuild-then-conv, sequences of small convs, one planned contraction).
- :func:`compress`: a compressed copy of a model and a per-layer report (format ``"auto"``:
  :func:`default_format`, never worse than a truncated SVD); :func:`allocate`:
  global rank allocation (uniform, energy, ALDS) under a parameter or FLOP budget.
- :func:`recalibrate_bn`: BatchNorm running statistics recomputed from data after compression.
- :func:`to_standard`: back to plain ``nn.Conv2d``/``nn.Linear`` modules with the same outputs.
- :func:`save` / :func:`load`: safetensors plus a JSON description of each layer (no pickle).
- :func:`truncate_kernel`: a layer's kernel truncated along cuts (the truncation study's step).
- :func:`select_layers`: choosing layers by pattern, list or predicate; :func:`end_layers`: a
  model's input and output layers (what ``skip=("first", "last")`` leaves dense).
"""

from ..weights import layer_inputs, register_layer_type
from .allocate import Allocation, LayerChoice, allocate
from .batchnorm import BNRecalibration, batchnorm_layers, recalibrate_bn
from .compress import (
    CompressionReport,
    LayerReport,
    compress,
    dense_flops,
    dense_seconds,
    kernel_errors,
)
from .cost import calibrate, costs_for
from .defaults import default_format
from .export import conv_sequence, to_standard
from .geometry import ConvGeometry
from .layers import PlanInfo, TNConv2d, TNLayer, TNLinear, kernel_options
from .plans import ForwardPlan
from .select import EndLayers, NoMatchingLayer, end_layers, matches, select_layers
from .serialize import describe, load, save
from .truncate import KernelTruncation, truncate_kernel

register_layer_type(TNLayer)  # a compressed layer is a conv/linear layer for end_layers

__all__ = [
    "Allocation",
    "BNRecalibration",
    "CompressionReport",
    "ConvGeometry",
    "EndLayers",
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
    "default_format",
    "dense_flops",
    "dense_seconds",
    "describe",
    "end_layers",
    "kernel_errors",
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
