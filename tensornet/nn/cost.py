"""Pricing forward plans and choosing one: a small roofline model per device type.

Each step of a :class:`~tensornet.nn.functional.ForwardPlan` is priced as

``time = flops / rate[kind] + bytes / bandwidth[kind] + overhead[kind]``

where ``kind`` is what runs it (a batched matmul, a dense conv, a grouped conv, a depthwise
conv, an einsum, an unfold, a copy). FLOPs alone mislead: on CPUs a depthwise or grouped conv
runs far below the matmul rate and an unfold is bound by memory, while on GPUs launch overheads
dominate small layers. The default tables were measured (CPU: x86-64, 2 threads, float32; CUDA:
a conservative data-centre GPU guess); :func:`calibrate` measures the current machine and
replaces them. The plan with the lowest estimate wins; the estimate is recorded in
``plan.cost``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from .functional import ForwardPlan

__all__ = ["DeviceCosts", "calibrate", "choose", "costs_for", "estimate", "set_costs"]

KINDS = ("matmul", "conv", "grouped", "depthwise", "einsum", "unfold", "copy")


@dataclass(frozen=True)
class DeviceCosts:
    """Rates (FLOP/s), bandwidths (bytes/s) and per-call overheads (s) by step kind."""

    rate: dict[str, float]
    bandwidth: dict[str, float]
    overhead: dict[str, float]
    source: str = "default"
    measured: dict = field(default_factory=dict, compare=False)

    def step_time(self, kind: str, flops: float, nbytes: float) -> float:
        """Estimated seconds of one step of ``kind``."""
        return flops / self.rate[kind] + nbytes / self.bandwidth[kind] + self.overhead[kind]


# Measured on a 2-core x86-64 machine (torch 2.13 CPU build, float32, 2 threads).
_CPU = DeviceCosts(
    rate={
        "matmul": 60e9,
        "conv": 60e9,
        "grouped": 12e9,
        "depthwise": 6e9,
        "einsum": 25e9,
        "unfold": 1e18,
        "copy": 1e18,
    },
    bandwidth={
        "matmul": 12e9,
        "conv": 8e9,
        "grouped": 4e9,
        "depthwise": 3e9,
        "einsum": 4e9,
        "unfold": 1.5e9,
        "copy": 4e9,
    },
    overhead={
        "matmul": 8e-6,
        "conv": 30e-6,
        "grouped": 30e-6,
        "depthwise": 10e-6,
        "einsum": 25e-6,
        "unfold": 20e-6,
        "copy": 5e-6,
    },
    source="default-cpu",
)
# A conservative guess for a data-centre GPU (cuBLAS/cuDNN), replaced by calibrate().
_CUDA = DeviceCosts(
    rate={
        "matmul": 30e12,
        "conv": 25e12,
        "grouped": 4e12,
        "depthwise": 2e12,
        "einsum": 15e12,
        "unfold": 1e18,
        "copy": 1e18,
    },
    bandwidth={
        "matmul": 1.5e12,
        "conv": 1.2e12,
        "grouped": 0.8e12,
        "depthwise": 0.8e12,
        "einsum": 0.8e12,
        "unfold": 0.6e12,
        "copy": 1e12,
    },
    overhead={
        "matmul": 10e-6,
        "conv": 15e-6,
        "grouped": 15e-6,
        "depthwise": 15e-6,
        "einsum": 25e-6,
        "unfold": 10e-6,
        "copy": 8e-6,
    },
    source="default-cuda",
)
_TABLES: dict[str, DeviceCosts] = {"cpu": _CPU, "cuda": _CUDA}


def costs_for(device_type: str) -> DeviceCosts:
    """The cost table in use for a device type (``"cpu"``, ``"cuda"``; others use CUDA's)."""
    return _TABLES.get(device_type, _CUDA)


def set_costs(device_type: str, costs: DeviceCosts | None) -> None:
    """Install a cost table for ``device_type`` (``None`` restores the default)."""
    if costs is None:
        _TABLES[device_type] = _CPU if device_type == "cpu" else _CUDA
    else:
        _TABLES[device_type] = costs


def estimate(plan: ForwardPlan, itemsize: int, costs: DeviceCosts) -> float:
    """Estimated seconds of one forward of ``plan``."""
    return sum(costs.step_time(s.kind, s.flops, s.elements * itemsize) for s in plan.steps)


def choose(
    plans: Sequence[ForwardPlan], device_type: str, itemsize: int, costs: DeviceCosts | None = None
) -> ForwardPlan:
    """The plan with the lowest estimate; every plan's estimate is stored in ``plan.cost``."""
    table = costs or costs_for(device_type)
    best = None
    for plan in plans:
        seconds = estimate(plan, itemsize, table)
        plan.cost = {
            "seconds": seconds,
            "flops": plan.flops,
            "elements": plan.elements,
            "peak_elements": plan.peak_elements,
            "table": table.source,
        }
        if best is None or seconds < best.cost["seconds"]:
            best = plan
    assert best is not None
    return best


def measure(fn: Callable[[], object], device: torch.device, repeat: int = 5) -> float:
    """Median seconds of ``fn()`` (synchronising CUDA around each call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


# (channels, spatial side, batch) of the layers calibrate() measures
CALIBRATION_CASES = ((64, 16, 16), (128, 8, 8), (32, 32, 8))


def _step_samples(
    device: torch.device,
    dtype: torch.dtype,
    repeat: int,
    cases: Sequence[tuple[int, int, int]] = CALIBRATION_CASES,
) -> list[tuple[str, float, float, float]]:
    """(kind, flops, bytes, seconds) of the steps of real candidate plans on this device."""
    from ..formats import fraction_ranks, get_format
    from .functional import ConvGeometry, conv_candidates

    legs = ("out", "in", "kh", "kw")
    itemsize = torch.empty((), dtype=dtype).element_size()
    samples = []
    formats = {"tucker2": 0.25, "cp": 0.1, "tt": 0.25, "svd": 0.25, "grouped": 0.25}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for (c, n, b), (fmt, frac) in itertools.product(cases, formats.items()):
            opts = {"channel_groups": 4} if fmt == "grouped" else {}
            if fmt == "tt":
                opts = {"order": ("in", "kh", "kw", "out")}
            shape = (c, c, 3, 3)
            cls = get_format(fmt)
            ranks = fraction_ranks(fmt, shape, frac, legs=legs, **opts)
            structure = cls.structure_for(shape, ranks, legs=legs, **opts)
            tensors = {
                f.name: torch.randn(f.shape, generator=gen).to(device=device, dtype=dtype)
                for f in structure.factors
            }
            x = torch.randn(b, c, n, n, generator=gen).to(device=device, dtype=dtype)
            geometry = ConvGeometry.from_conv_args((3, 3), padding=1)
            for plan in conv_candidates(structure, geometry, x.shape, device.type):
                h = x
                for step in plan.steps:
                    h_in = h
                    seconds = measure(
                        lambda s=step, h_in=h_in, t=tensors: s(h_in, t), device, repeat
                    )
                    samples.append((step.kind, step.flops, step.elements * itemsize, seconds))
                    h = step(h_in, tensors)
    return samples


def _fit(points: list[tuple[float, float, float]], base: tuple[float, float, float]):
    """Non-negative least squares of ``t = flops / rate + bytes / bandwidth + overhead``.

    Relative errors count (each row is divided by its time), so small and large steps weigh the
    same. Coefficients the data cannot determine keep their defaults.
    """
    import numpy as np
    from scipy.optimize import nnls

    rate, bandwidth, overhead = base
    a = np.array([[f, b, 1.0] for f, b, _ in points], dtype=float)
    t = np.array([p[2] for p in points], dtype=float)
    scale = np.array([1e-12, 1e-11, 1e-6])  # keep the columns of comparable size
    coef, _ = nnls(a * scale / t[:, None], np.ones_like(t))
    coef = coef * scale
    return (
        1.0 / coef[0] if coef[0] > 0 else rate,
        1.0 / coef[1] if coef[1] > 0 else bandwidth,
        coef[2] if coef[2] > 0 else overhead,
    )


def calibrate(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeat: int = 5,
    cases: Sequence[tuple[int, int, int]] = CALIBRATION_CASES,
) -> DeviceCosts:
    """Measure this machine, fit the cost table, install it for the device type and return it.

    Runs the steps of the candidate plans of a few compressed 3x3 convolutions (about half a
    minute on a 2-core CPU), and fits, per step kind, ``time = flops / rate + bytes /
    bandwidth + overhead`` by non-negative least squares on relative errors. Layers made after
    this (or after ``layer.clear_plans()``) plan with the new table. ``cases`` are the
    ``(channels, spatial side, batch)`` of the measured layers.
    """
    device = torch.device(device)
    base = costs_for(device.type)
    by_kind: dict[str, list[tuple[float, float, float]]] = {}
    for kind, flops, nbytes, seconds in _step_samples(device, dtype, repeat, cases):
        by_kind.setdefault(kind, []).append((flops, nbytes, seconds))
    rate, bandwidth, overhead = dict(base.rate), dict(base.bandwidth), dict(base.overhead)
    for kind, points in by_kind.items():
        if len(points) >= 3:
            rate[kind], bandwidth[kind], overhead[kind] = _fit(
                points, (rate[kind], bandwidth[kind], overhead[kind])
            )
    table = replace(
        base,
        rate=rate,
        bandwidth=bandwidth,
        overhead=overhead,
        source=f"calibrated-{device.type}",
        measured=by_kind,
    )
    set_costs(device.type, table)
    return table
