"""Pricing forward plans and choosing one: a small roofline model per device type.

Each step of a :class:`~tensornet.nn.plans.ForwardPlan` is priced as

``time = flops / rate[kind] + bytes / bandwidth[kind] + overhead[kind]
+ images * per_image[kind]``

where ``images`` is the number of independent products the step batches (the batch of a
conv, the broadcast batch of a matmul) and ``kind`` is what runs it (a batched matmul, a dense
conv, a grouped conv, a depthwise conv, an einsum, an unfold, a copy). FLOPs alone mislead: on
CPUs a depthwise or grouped conv runs far below the matmul rate, an unfold is bound by memory,
and a conv over thousands of tiny images (what a tensorized kernel's spatial core becomes) pays
a cost per image, while on GPUs launch overheads dominate small layers. The default CPU table
was fitted by :func:`fit_costs` to the candidate timings of ``bench/test_bench_layers.py`` on
a quiet 2-core x86-64 machine (float32, 2 threads; ``bench/fit_costs.py``); the CUDA table is a
conservative data-centre GPU guess. :func:`calibrate` measures the current machine and
replaces them. The plan with the lowest estimate wins; the estimate is recorded in
``plan.cost``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..weights import CONV2D_LEGS
from .plans import ForwardPlan, Step

__all__ = [
    "DeviceCosts",
    "calibrate",
    "choose",
    "costs_for",
    "estimate",
    "fit_costs",
    "set_costs",
]

KINDS = ("matmul", "conv", "grouped", "depthwise", "einsum", "unfold", "copy")


@dataclass(frozen=True)
class DeviceCosts:
    """Rates (FLOP/s), bandwidths (bytes/s), per-call and per-image overheads (s) by step kind."""

    rate: dict[str, float]
    bandwidth: dict[str, float]
    overhead: dict[str, float]
    source: str = "default"
    measured: dict = field(default_factory=dict, compare=False)
    per_image: dict[str, float] = field(default_factory=dict)

    def step_time(self, kind: str, flops: float, nbytes: float, images: float = 0) -> float:
        """Estimated seconds of one step of ``kind``."""
        return (
            flops / self.rate[kind]
            + nbytes / self.bandwidth[kind]
            + self.overhead[kind]
            + images * self.per_image.get(kind, 0.0)
        )


# Fitted by ``bench/fit_costs.py`` (``fit_costs`` on whole-plan timings) to the 400 candidate
# timings of ``bench/test_bench_layers.py`` on a quiet 2-core x86-64 machine (torch 2.13 CPU
# build, float32, 2 threads); per-call overheads are hand-set lower bounds (see that script).
# 1e18: the fit found no cost in that term. Run ``calibrate()`` on other machines. The
# ``depthwise`` kind (channels-last depthwise convs since they replaced shifted slices) was
# refitted alone by ``bench/fit_depthwise.py`` (one thread, scaled to this table's conv speed).
_CPU = DeviceCosts(
    rate={
        "matmul": 65.9e9,
        "conv": 125e9,
        "grouped": 1e18,
        "depthwise": 44.4e9,
        "einsum": 373e9,
        "unfold": 1e18,
        "copy": 1e18,
    },
    bandwidth={
        "matmul": 12.4e9,
        "conv": 1.87e9,
        "grouped": 1.13e9,
        "depthwise": 59.5e9,
        "einsum": 0.637e9,
        "unfold": 1e18,
        "copy": 3.02e9,
    },
    overhead={
        "matmul": 45e-6,
        "conv": 60e-6,
        "grouped": 40e-6,
        "depthwise": 75e-6,
        "einsum": 25e-6,
        "unfold": 30e-6,
        "copy": 5e-6,
    },
    per_image={
        "matmul": 2.37e-6,
        "conv": 0.978e-6,
        "grouped": 150e-6,
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
    return sum(
        costs.step_time(s.kind, s.flops, s.elements * itemsize, s.images) for s in plan.steps
    )


def choose(
    plans: Sequence[ForwardPlan], device_type: str, itemsize: int, costs: DeviceCosts | None = None
) -> ForwardPlan:
    """The plan with the lowest estimate; every plan's estimate is stored in ``plan.cost``."""
    if not plans:
        raise ValueError("choose: no candidate plans (no registered family builds one here)")
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
) -> list[tuple[list[Step], float]]:
    """``([step], seconds)`` for every step of the candidate plans of a few compressed convs."""
    from ..formats import fraction_ranks, get_format
    from .functional import conv_candidates
    from .geometry import ConvGeometry

    legs = CONV2D_LEGS
    samples = []
    formats = {"tucker2": 0.25, "cp": 0.1, "tt": 0.25, "svd": 0.25, "grouped": 0.25}
    formats["ttmatrix"] = 0.25
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for (c, n, b), (fmt, frac) in itertools.product(cases, formats.items()):
            cls = get_format(fmt)
            opts = {"channel_groups": 4} if fmt == "grouped" else dict(cls.kernel_defaults)
            shape = (c, c, 3, 3)
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
                    samples.append(([step], seconds))
                    h = step(h_in, tensors)
    return samples


def fit_costs(
    samples: Sequence[tuple[Sequence[Step], float]],
    itemsize: int = 4,
    base: DeviceCosts | None = None,
    source: str = "fitted",
) -> DeviceCosts:
    """Fit a cost table to measured run times of steps or whole plans.

    Every sample is a sequence of steps (one step, or a whole plan's) and the seconds it took.
    The model is linear in its coefficients (``1 / rate``, ``1 / bandwidth``, ``overhead`` and
    ``per_image`` of every step kind), so it is fitted jointly by non-negative least squares on
    relative errors (each row divided by its time: small and large samples weigh the same). A
    kind no sample uses keeps ``base``'s coefficients; a coefficient the fit sets to zero means
    that term costs nothing (rate or bandwidth ``1e18``).

    Parameters
    ----------
    samples
        ``(steps, seconds)`` pairs.
    itemsize
        Bytes per element of the measured runs (4 for float32).
    base
        The table whose values unmeasured kinds keep (default: the current CPU table).
    source
        The new table's ``source``.

    Examples
    --------
    >>> from tensornet.nn.plans import Step
    >>> steps = [Step("matmul", f, e, "") for f, e in [(1e6, 1e4), (1e9, 1e6), (1e7, 1e8)]]
    >>> table = fit_costs([([s], s.flops / 1e11 + 4 * s.elements / 1e10 + 1e-5) for s in steps])
    >>> round(table.rate["matmul"] / 1e11, 6), round(table.overhead["matmul"] / 1e-5, 6)
    (1.0, 1.0)
    """
    import numpy as np
    from scipy.optimize import nnls

    base = base or costs_for("cpu")
    kinds = sorted({step.kind for steps, _ in samples for step in steps})
    column = {kind: 4 * i for i, kind in enumerate(kinds)}
    a = np.zeros((len(samples), 4 * len(kinds)))
    t = np.array([seconds for _, seconds in samples], dtype=float)
    for row, (steps, _) in enumerate(samples):
        for step in steps:
            j = column[step.kind]
            a[row, j : j + 4] += (step.flops, step.elements * itemsize, 1.0, step.images)
    scale = np.tile([1e-12, 1e-11, 1e-6, 1e-7], len(kinds))  # columns of comparable size
    coef, _ = nnls(a * scale / t[:, None], np.ones_like(t))
    coef = coef * scale
    rate, bandwidth = dict(base.rate), dict(base.bandwidth)
    overhead, per_image = dict(base.overhead), dict(base.per_image)
    for kind, j in column.items():
        rate[kind] = float(min(1e18, 1.0 / coef[j])) if coef[j] > 0 else 1e18
        bandwidth[kind] = float(min(1e18, 1.0 / coef[j + 1])) if coef[j + 1] > 0 else 1e18
        overhead[kind] = float(coef[j + 2])
        per_image[kind] = float(coef[j + 3])
    return replace(
        base, rate=rate, bandwidth=bandwidth, overhead=overhead, per_image=per_image, source=source
    )


def calibrate(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeat: int = 5,
    cases: Sequence[tuple[int, int, int]] = CALIBRATION_CASES,
) -> DeviceCosts:
    """Measure this machine, fit the cost table, install it for the device type and return it.

    Runs the steps of the candidate plans of a few compressed 3x3 convolutions (about half a
    minute on a 2-core CPU), and fits the table with :func:`fit_costs`. Layers made after
    this (or after ``layer.clear_plans()``) plan with the new table. ``cases`` are the
    ``(channels, spatial side, batch)`` of the measured layers.
    """
    device = torch.device(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    samples = _step_samples(device, dtype, repeat, cases)
    measured: dict[str, list[tuple[float, float, float]]] = {}
    for (step,), seconds in samples:
        measured.setdefault(step.kind, []).append((step.flops, step.elements * itemsize, seconds))
    table = replace(
        fit_costs(samples, itemsize, costs_for(device.type), f"calibrated-{device.type}"),
        measured=measured,
    )
    set_costs(device.type, table)
    return table
