"""Compressed layers and models: tensor-network factors inside ``torch.nn`` modules.

- :class:`TNConv2d`, :class:`TNLinear`: the factors of any registered format as parameters; the
  forward pass is a :class:`ForwardPlan` chosen per input shape by a cost model (:mod:`.cost`)
  among the candidate families of :mod:`.functional` (rebuild-then-conv, sequences of small
  convs, one planned contraction), under the layer's ``plan`` policy.
- :func:`compress`: a compressed copy of a model and a per-layer report (format ``"auto"``:
  :func:`default_format`, never worse than a truncated SVD); :func:`allocate`:
  global rank allocation (uniform, energy, ALDS) under a parameter or FLOP budget.
- :func:`recalibrate_bn`: BatchNorm running statistics recomputed from data after compression.
- :func:`to_standard`: back to plain ``nn.Conv2d``/``nn.Linear`` modules with the same outputs.
- :func:`save` / :func:`load`: safetensors plus a JSON description of each layer (no pickle).
- :func:`truncate_kernel`: a layer's kernel truncated along cuts (the truncation study's step).
- :func:`select_layers`: choosing layers by pattern, list or predicate; :func:`end_layers`: a
  model's input and output layers (what ``skip=("first", "last")`` leaves dense).

This package may import :mod:`tensornet.core`, :mod:`tensornet.io`, :mod:`tensornet.formats`,
:mod:`tensornet.weights`, :mod:`tensornet.runs` and :mod:`tensornet.spectra`, never
``analysis``, ``plot`` or ``cli`` (``tests/test_imports.py``); ``import tensornet`` does not load
it. Modules, each using only those listed before it when loaded:

- :mod:`.geometry`: :class:`ConvGeometry`, conv arithmetic (stride, padding, output sizes).
- :mod:`.plans`: :class:`ForwardPlan` and its steps, each with its FLOPs and bytes known.
- :mod:`.staging`: staged plans, the factors applied to the activation a few at a time.
- :mod:`.functional`: the registry of forward families (a new forward is one registered function).
- :mod:`.grouped_plans`: the forward families of grouped and depthwise convs (``groups > 1``).
- :mod:`.cost`: the cost model that prices plans per device type; :func:`calibrate`.
- :mod:`.planning`: a layer's plan chosen per input shape under its policy and remembered.
- :mod:`.layout`: channels-last plans (a 2-d conv keeps a channels-last input's layout).
- :mod:`.layers`: :class:`TNLayer`, :class:`TNConv2d`, :class:`TNLinear`; :mod:`.convnd`:
  :class:`TNConv1d`, :class:`TNConv3d`; :mod:`.conv_transpose`: :class:`TNConvTranspose2d`
  (their plans: :mod:`.plans_nd`, :mod:`.geometry_nd`); :mod:`.kinds`: the layer kinds
  (per torch layer type its compressed class and conversions).
- :mod:`.batchnorm`: :func:`recalibrate_bn`; :mod:`.defaults`: :func:`default_format`.
- :mod:`.fold`: :func:`fold_batchnorm` (eval-mode BatchNorm folded into the layer before it).
- :mod:`.select`: :func:`select_layers` with what compression supports.
- :mod:`.measure`: the dense side (shapes, FLOPs, times, true kernel errors).
- :mod:`.report`: :class:`CompressionReport`, :class:`LayerReport`.
- :mod:`.covariance`: :func:`input_covariances` (a layer's input rows' second moments, also
  paired with a partly compressed model's), :func:`fit_sequentially`.
- :mod:`.whiten`: :func:`output_error`, :func:`whitened_format`, :func:`whitened_spectrum`:
  data-aware decompositions minimising a layer's output error.
- :mod:`.compress`: :func:`compress`.
- :mod:`.alloc_layer`, :mod:`.alloc_search`, :mod:`.allocate`: one layer as the allocation sees
  it, the searches, and :func:`allocate`.
- :mod:`.export`: :func:`to_standard`; :mod:`.serialize`: :func:`save`, :func:`load`,
  :func:`describe`; :mod:`.truncate`: :func:`truncate_kernel`.

>>> import torch
>>> from torch import nn
>>> import tensornet.nn as tnn
>>> conv = nn.Conv2d(8, 6, 3, padding=1)
>>> layer = tnn.TNConv2d.from_conv(conv, "tucker2", ranks=(6, 8))  # full ranks: exact
>>> x = torch.randn(2, 8, 5, 5)
>>> torch.allclose(layer(x), conv(x), atol=1e-5)
True
>>> small = tnn.TNConv2d.from_conv(conv, "tucker2", ranks=(2, 2))
>>> small.ranks, small.num_params < sum(p.numel() for p in conv.parameters())
((2, 2), True)
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
from .conv_transpose import TNConvTranspose2d
from .convnd import TNConv1d, TNConv3d
from .cost import calibrate, costs_for
from .covariance import InputCovariance, fit_sequentially, input_covariances
from .defaults import default_format
from .export import conv_sequence, to_standard
from .fold import batchnorm_pairs, fold_batchnorm
from .geometry import ConvGeometry
from .kinds import LayerKind, kind_of, register_kind
from .layers import PlanInfo, TNConv2d, TNLayer, TNLinear, kernel_options
from .plans import ForwardPlan
from .select import EndLayers, NoMatchingLayer, end_layers, matches, select_layers
from .serialize import describe, load, save
from .truncate import KernelTruncation, truncate_kernel
from .whiten import (
    compress_layer_whitened,
    output_error,
    whitened_format,
    whitened_spectrum,
)

# a compressed layer is a conv/linear layer for end_layers, and its kernel a Format for spectra
register_layer_type(TNLayer, kernel=TNLayer.to_format)

__all__ = [
    "Allocation",
    "BNRecalibration",
    "CompressionReport",
    "ConvGeometry",
    "EndLayers",
    "ForwardPlan",
    "InputCovariance",
    "KernelTruncation",
    "LayerChoice",
    "LayerKind",
    "LayerReport",
    "NoMatchingLayer",
    "PlanInfo",
    "TNConv1d",
    "TNConv2d",
    "TNConv3d",
    "TNConvTranspose2d",
    "TNLayer",
    "TNLinear",
    "allocate",
    "batchnorm_layers",
    "batchnorm_pairs",
    "calibrate",
    "compress",
    "compress_layer_whitened",
    "conv_sequence",
    "costs_for",
    "default_format",
    "dense_flops",
    "dense_seconds",
    "describe",
    "end_layers",
    "fold_batchnorm",
    "fit_sequentially",
    "input_covariances",
    "kernel_errors",
    "kernel_options",
    "kind_of",
    "layer_inputs",
    "load",
    "matches",
    "output_error",
    "recalibrate_bn",
    "register_kind",
    "save",
    "select_layers",
    "to_standard",
    "truncate_kernel",
    "whitened_format",
    "whitened_spectrum",
]
