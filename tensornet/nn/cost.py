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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

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


def calibrate(
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, repeat: int = 5
) -> DeviceCosts:
    """Measure the rates, bandwidths and overheads of this machine and install them.

    Runs each kind of step at a compute-heavy and a memory-heavy size (about a second on a
    2-core CPU) and fits ``time = flops / rate + bytes / bandwidth + overhead`` through the
    points. Returns the table, which :func:`costs_for` then returns for this device type.
    """
    device = torch.device(device)
    base = costs_for(device.type)
    itemsize = torch.empty((), dtype=dtype).element_size()
    opts = {"device": device, "dtype": dtype}
    rate, bandwidth, overhead, measured = (
        dict(base.rate),
        dict(base.bandwidth),
        dict(base.overhead),
        {},
    )

    def fit(kind: str, cases: list[tuple[Callable[[], object], float, float]]) -> None:
        points = [(flops, nbytes, measure(fn, device, repeat)) for fn, flops, nbytes in cases]
        measured[kind] = points
        (f0, b0, t0), (f1, b1, t1) = points[0], points[-1]
        tiny = measure(cases[0][0] if len(cases) < 3 else cases[1][0], device, repeat)
        overhead[kind] = max(min(tiny, t0, t1) * 0.05, 1e-6)
        if f0 > 0:
            rate[kind] = max(f0 / max(t0 - b0 / bandwidth[kind] - overhead[kind], 1e-9), 1e6)
        bandwidth[kind] = max(b1 / max(t1 - f1 / rate[kind] - overhead[kind], 1e-9), 1e6)

    b, c, n = 16, 64, 32
    x = torch.randn(b, c, n, n, **opts)
    w = torch.randn(c, c, **opts)
    k = torch.randn(c, c, 3, 3, **opts)
    kd = torch.randn(c, 1, 3, 1, **opts)
    kg = torch.randn(c, 8, 3, 3, **opts)
    x8 = torch.randn(b, 8, n, n, **opts)
    el = x.numel()
    fit(
        "matmul",
        [
            (lambda: torch.matmul(w, x.view(b, c, -1)), 2 * c * el, 2 * el * itemsize),
            (
                lambda: torch.matmul(w[:4, :4], x8.view(b * 2, 4, -1)),
                2 * 16 * x8.numel(),
                2 * x8.numel() * itemsize,
            ),
        ],
    )
    fit(
        "conv",
        [
            (lambda: F.conv2d(x, k, padding=1), 2 * c * 9 * el, 2 * el * itemsize),
            (
                lambda: F.conv2d(x8, k[:8, :8], padding=1),
                2 * 8 * 9 * x8.numel(),
                2 * x8.numel() * itemsize,
            ),
        ],
    )
    fit(
        "grouped",
        [
            (lambda: F.conv2d(x, kg, padding=1, groups=8), 2 * 8 * 9 * el, 2 * el * itemsize),
            (lambda: F.conv2d(x, kg, padding=1, groups=8), 2 * 8 * 9 * el, 2 * el * itemsize),
        ],
    )
    from .functional import ConvGeometry, _depthwise_shift

    geo = ConvGeometry((3, 1), padding=(1, 1, 0, 0))
    if device.type == "cpu":
        dw = lambda: _depthwise_shift(geo.pad(x), kd, geo)  # noqa: E731
    else:
        dw = lambda: F.conv2d(x, kd, padding=(1, 0), groups=c)  # noqa: E731
    fit("depthwise", [(dw, 2 * 3 * el, 2 * el * itemsize), (dw, 2 * 3 * el, 2 * el * itemsize)])
    fit(
        "unfold",
        [
            (lambda: F.unfold(x8, 3, padding=1), 0, 10 * x8.numel() * itemsize),
            (lambda: F.unfold(x, 3, padding=1), 0, 10 * el * itemsize),
        ],
    )
    xt = x.view(b, c, -1)
    fit(
        "copy",
        [
            (lambda: xt.permute(0, 2, 1).contiguous(), 0, 2 * el * itemsize),
            (lambda: xt.permute(0, 2, 1).contiguous(), 0, 2 * el * itemsize),
        ],
    )
    table = replace(
        base,
        rate=rate,
        bandwidth=bandwidth,
        overhead=overhead,
        source=f"calibrated-{device.type}",
        measured=measured,
    )
    set_costs(device.type, table)
    return table
