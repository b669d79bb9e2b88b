"""Refit the CPU cost table's ``depthwise`` kind to the channels-last depthwise steps.

``python bench/fit_depthwise.py`` times, interleaved on one thread, the depthwise steps of the
CP candidates (a 3x3 depthwise conv, and the 3x1 / 1x3 pair) and the dense conv step of the
same layer, for the ``bench/test_bench_layers.py`` shapes and a few small layers (vanilla_cnn
sizes). Conv steps price at the table's ``conv`` kind; their measured/estimated ratio (the
machine and thread count against the table's) scales the depthwise timings before
:func:`tensornet.nn.cost.fit_costs` fits the ``depthwise`` coefficients alone, so the new
coefficients sit on the table's time scale even when measured on a busy machine.
"""

import statistics
import time

import torch

from tensornet.formats import fraction_ranks, get_format
from tensornet.nn.cost import costs_for, fit_costs
from tensornet.nn.functional import conv_candidates
from tensornet.nn.geometry import ConvGeometry
from tensornet.weights import CONV2D_LEGS

# (channels, side, batch, fraction): the bench shapes, then small layers
CASES = [(256, 8, 32, f) for f in (0.5, 0.25, 0.1)] + [(64, 32, 32, f) for f in (0.5, 0.25, 0.1)]
CASES += [(32, 28, 64, 0.5), (32, 14, 64, 0.25), (64, 14, 64, 0.5), (128, 12, 8, 0.25)]


def steps_of(c, n, b, frac):
    """``[(step, its input)]`` for the depthwise and dense conv steps of a CP layer."""
    cls = get_format("cp")
    shape = (c, c, 3, 3)
    structure = cls.structure_for(shape, fraction_ranks("cp", shape, frac, legs=CONV2D_LEGS))
    gen = torch.Generator().manual_seed(0)
    tensors = {f.name: torch.randn(f.shape, generator=gen) for f in structure.factors}
    x = torch.randn(b, c, n, n, generator=gen)
    geometry = ConvGeometry.from_conv_args((3, 3), padding=1)
    out, seen = [], set()
    for plan in conv_candidates(structure, geometry, x.shape, "cpu"):
        h = x
        for step in plan.steps:
            key = (step.kind, step.label)
            if (
                step.kind in ("depthwise", "conv")
                and key not in seen
                and plan.family in ("dense", "staged", "separable")
            ):
                if step.kind == "depthwise" or plan.family == "dense":
                    seen.add(key)
                    out.append((step, h))
            h = step(h, tensors)
    return out, tensors


def main(repeat=9):
    torch.set_num_threads(1)
    table = costs_for("cpu")
    samples, scales = [], []
    with torch.no_grad():
        for case in CASES:
            pairs, tensors = steps_of(*case)
            runs = [[] for _ in pairs]
            for _ in range(repeat):
                for (step, h), times in zip(pairs, runs):
                    start = time.perf_counter()
                    step(h, tensors)
                    times.append(time.perf_counter() - start)
            for (step, _), times in zip(pairs, runs):
                seconds = statistics.median(times)
                if step.kind == "conv":
                    est = table.step_time("conv", step.flops, 4 * step.elements, step.images)
                    scales.append(est / seconds)
                else:
                    samples.append(([step], seconds))
                print(f"{case} {step.kind:9s} {step.label:32s} {seconds * 1e3:8.3f} ms")
    scale = statistics.median(scales)
    print(
        f"table conv estimate / measured conv: median {scale:.3f} (min {min(scales):.3f}, "
        f"max {max(scales):.3f})"
    )
    fitted = fit_costs([(steps, s * scale) for steps, s in samples], 4, table)
    for name in ("rate", "bandwidth", "overhead", "per_image"):
        print(name, f"{getattr(fitted, name).get('depthwise', 0.0):.4g}")
    worst = max(
        abs(
            fitted.step_time("depthwise", st[0].flops, 4 * st[0].elements, st[0].images)
            / (s * scale)
            - 1
        )
        for st, s in samples
    )
    print(f"worst relative error of the fitted depthwise steps: {worst:.2f}")


if __name__ == "__main__":
    main()
