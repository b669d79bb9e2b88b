"""Measuring dense layers and whole models: input shapes, FLOPs, times, true kernel errors.

What :func:`~tensornet.nn.compress` reports and :func:`~tensornet.nn.allocate` budgets is
priced here against the dense layer: :func:`dense_flops` counts its multiply-adds,
:func:`dense_seconds` asks the cost model (:mod:`tensornet.nn.cost`) for the dense plan's time,
:func:`kernel_errors` compares a kernel with its approximation in float64, and
:func:`layer_inputs` / :func:`forward_time` run the model once (eval mode, no gradients, every
module's mode restored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..formats.structure import Factor, Structure
from ..weights import eval_mode, layer_inputs
from ..weights import kernel_legs as weight_legs
from . import cost, functional
from .functional import ConvGeometry, linear_candidates
from .geometry_nd import GeometryNd
from .grouped_plans import grouped_kind
from .kinds import kind_of

__all__ = [
    "dense_flops",
    "dense_seconds",
    "dense_structure",
    "forward_time",
    "kernel_errors",
    "layer_inputs",
]


def shape_of(example_input: Any) -> tuple | None:
    if example_input is None:
        return None
    if isinstance(example_input, tuple):
        return tuple(tuple(getattr(a, "shape", ())) for a in example_input)
    return tuple(example_input.shape)


def dense_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 per multiply-add) of a dense ``nn.Conv2d``/``nn.Linear`` on ``input_shape``.

    Examples
    --------
    >>> from torch import nn
    >>> dense_flops(nn.Linear(4, 3), (5, 4)), dense_flops(nn.Conv2d(2, 3, 3), (1, 2, 5, 5))
    (120, 972)
    """
    if isinstance(module, nn.Linear):
        n = math.prod(input_shape[:-1])
        return 2 * n * module.in_features * module.out_features
    spatial = tuple(input_shape[2:])
    if getattr(module, "transposed", False):  # every input position meets the whole kernel
        per = module.out_channels // module.groups * math.prod(module.kernel_size)
        return 2 * input_shape[0] * module.in_channels * per * math.prod(spatial)
    geo = GeometryNd.from_conv_args(
        module.kernel_size, module.stride, module.padding, module.dilation, module.padding_mode
    )
    per = module.in_channels // module.groups * math.prod(module.kernel_size)
    return 2 * input_shape[0] * module.out_channels * per * math.prod(geo.output_size(spatial))


def kernel_legs(module: nn.Module) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The legs and shape of a conv/linear layer's kernel (``out, in[, kh, kw]``).

    Examples
    --------
    >>> from torch import nn
    >>> kernel_legs(nn.Linear(4, 3)), kernel_legs(nn.Conv2d(2, 5, 3))
    ((('out', 'in'), (3, 4)), (('out', 'in', 'kh', 'kw'), (5, 2, 3, 3)))
    """
    shape = tuple(module.weight.shape)
    return weight_legs(len(shape)), shape


def dense_structure(legs: tuple[str, ...], shape: tuple[int, ...]) -> Structure:
    """A one-factor structure: its ``dense`` plan is the plain conv/linear, no rebuild."""
    return Structure(
        "dense", legs, shape, (), (Factor("weight", legs, shape),), tuple((g,) for g in legs), ()
    )


def candidates(
    module: nn.Module, structure: Structure, input_shape: Sequence[int], device_type: str
) -> list:
    """The forward plans of ``structure`` in the place of ``module`` for ``input_shape``."""
    if isinstance(module, nn.Linear):
        n = math.prod(input_shape[:-1])
        return linear_candidates(structure, (n, input_shape[-1]))
    kind = kind_of(module)
    if kind is None or not isinstance(module, nn.Conv2d):
        if kind is None:  # an unsupported conv (ConvTranspose3d...): no plans
            return []
        tn = kind.tn_type
        return tn.plans_for(structure, tn.geometry_of(module), tuple(input_shape), device_type)
    geo = ConvGeometry.from_conv_args(
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        module.padding_mode,
        module.groups,
    )
    kind = grouped_kind(module.groups)  # a grouped conv: the plans of .grouped_plans
    return functional.candidates(kind, structure, geo, tuple(input_shape), device_type)


def dense_seconds(
    module: nn.Module, input_shape: Sequence[int], device: Any = None, dtype: Any = None
) -> float:
    """The cost model's estimated forward time of a dense ``nn.Conv2d``/``nn.Linear``.

    Priced like a compressed layer's ``dense`` plan with the kernel stored as is (one
    ``F.conv2d``/``F.linear``, no rebuild), with the cost table of the device type.

    Examples
    --------
    >>> from torch import nn
    >>> dense_seconds(nn.Linear(64, 64), (32, 64)) > 0
    True
    """
    weight = module.weight
    device = torch.device(device) if device is not None else weight.device
    itemsize = torch.empty((), dtype=dtype or weight.dtype).element_size()
    plans = candidates(module, dense_structure(*kernel_legs(module)), input_shape, device.type)
    plan = next((p for p in plans if p.name == "dense"), None)
    if plan is None:  # no plans for this kind: one conv of its FLOPs over input and output
        elements = 2 * math.prod(input_shape)
        table = cost.costs_for(device.type)
        flops = dense_flops(module, input_shape)
        return table.step_time("conv", flops, elements * itemsize, input_shape[0])
    return cost.choose([plan], device.type, itemsize).cost["seconds"]


def kernel_errors(dense: torch.Tensor, approx: torch.Tensor) -> tuple[float, float]:
    """True relative errors ``||W - W'|| / ||W||``: (Frobenius, spectral), in float64.

    Both kernels are matricised as ``(out, rest)`` (a conv kernel ``out | in kh kw``). A zero
    ``W`` gives 0 when ``W'`` is zero too, else inf.

    Examples
    --------
    >>> import torch
    >>> w = torch.eye(3)
    >>> kernel_errors(w, torch.diag(torch.tensor([1.0, 1.0, 0.0])))
    (0.5773502691896258, 1.0)
    """
    if dense.shape != approx.shape:
        raise ValueError(
            f"kernel_errors: shapes differ: {tuple(dense.shape)} vs {tuple(approx.shape)}"
        )
    w = dense.detach().to(torch.float64).reshape(dense.shape[0], -1)
    diff = w - approx.detach().to(device=w.device, dtype=torch.float64).reshape(w.shape)
    out = []
    for norm in (torch.linalg.matrix_norm, _spectral_norm):
        num, den = float(norm(diff)), float(norm(w))
        out.append(num / den if den > 0 else (0.0 if num == 0 else math.inf))
    return out[0], out[1]


# Up to this smaller side, spectral norms by a full SVD; above, by Lanczos (scipy's svds).
_EXACT_SIDE = 256


def _spectral_norm(m: torch.Tensor) -> float:
    """Largest singular value of a float64 matrix (Lanczos above ``_EXACT_SIDE``)."""
    side = min(m.shape)
    if side <= _EXACT_SIDE:
        return float(torch.linalg.matrix_norm(m, ord=2))
    if not bool(m.any()):
        return 0.0
    from scipy.sparse.linalg import svds

    a = m.cpu().numpy()
    return float(svds(a, k=1, return_singular_vectors=False, v0=np.ones(side))[0])


def forward_time(model: nn.Module, example_input: Any, repeat: int = 5) -> float:
    """Median seconds of one forward (eval mode, no grad; modes restored)."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
    with eval_mode(model), torch.no_grad():
        return cost.measure(lambda: model(*args), device, repeat=repeat)
