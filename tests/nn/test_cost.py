"""The cost model: the fit recovers known coefficients, calibration installs a table, and the
measuring policy keeps the fastest candidate it timed."""

import pytest
import torch

from tensornet.nn import TNConv2d, calibrate, costs_for
from tensornet.nn.cost import estimate, fit_costs, set_costs
from tensornet.nn.functional import conv_candidates
from tensornet.nn.plans import ConvStep, MatmulStep, Step


def test_fit_recovers_rate_bandwidth_overhead_and_per_image_cost_of_every_kind():
    truth = {"matmul": (40e9, 5e9, 20e-6, 2e-6), "conv": (90e9, 2e9, 60e-6, 1e-6)}
    sizes = [(1e6, 1e5, 1), (1e9, 1e6, 64), (1e7, 1e8, 8), (5e8, 5e7, 4096), (1e5, 1e4, 2),
             (3e8, 2e6, 512)]

    def step(kind, f, e, images):
        cls = MatmulStep if kind == "matmul" else ConvStep
        s = cls(kind, int(f), int(e), "")
        s.view = (images, 1, 1, 1, 1)
        return s

    def seconds(steps):
        return sum(f / truth[s.kind][0] + 4 * e / truth[s.kind][1] + truth[s.kind][2]
                   + s.images * truth[s.kind][3] for s in steps for f, e in [(s.flops, s.elements)])

    singles = [[step(k, *size)] for k in truth for size in sizes]
    pairs = [[step("matmul", *a), step("conv", *b)] for a, b in zip(sizes, sizes[::-1])]
    table = fit_costs([(steps, seconds(steps)) for steps in singles + pairs], itemsize=4)
    for kind, (rate, bandwidth, overhead, per_image) in truth.items():
        got = (table.rate[kind], table.bandwidth[kind], table.overhead[kind],
               table.per_image[kind])
        assert got == pytest.approx((rate, bandwidth, overhead, per_image), rel=1e-5)
    assert table.rate["depthwise"] == costs_for("cpu").rate["depthwise"]  # unmeasured: kept


def test_fit_sets_an_absent_term_to_free():
    steps = [Step("einsum", int(f), int(e), "") for f, e in [(1e6, 1e4), (1e8, 1e6), (1e7, 1e8)]]
    table = fit_costs([([s], s.flops / 1e10 + 1e-5) for s in steps])
    assert table.rate["einsum"] == pytest.approx(1e10, rel=1e-6)
    assert table.bandwidth["einsum"] == 1e18 and table.overhead["einsum"] == pytest.approx(1e-5)


def test_a_conv_over_many_tiny_images_pays_per_image():
    """The spatial core of a tensorized kernel becomes a conv over batch x rank tiny images;
    the default CPU table must price it above the dense conv it replaces (bench: 60 vs 27 ms)."""
    layer = TNConv2d(256, 256, 3, padding=1, format="ttmatrix", fraction=0.25)
    plans = {p.name: p for p in conv_candidates(layer.structure, layer.geometry, (32, 256, 8, 8))}
    staged = next(p for name, p in plans.items() if name.startswith("staged"))
    assert any(s.images >= 32 * 256 for s in staged.steps)
    table = costs_for("cpu")
    assert estimate(staged, 4, table) > estimate(plans["dense"], 4, table)


def test_estimate_is_the_sum_of_step_times():
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    plan = conv_candidates(layer.structure, layer.geometry, (2, 8, 6, 6))[1]
    table = costs_for("cpu")
    expected = sum(table.step_time(s.kind, s.flops, 4 * s.elements, s.images) for s in plan.steps)
    assert estimate(plan, 4, table) == pytest.approx(expected)


def test_calibrate_installs_a_table_and_restore():
    before = costs_for("cpu")
    try:
        table = calibrate("cpu", repeat=1, cases=((8, 6, 2),))
        assert costs_for("cpu") is table and table.source == "calibrated-cpu"
        assert all(v > 0 for v in table.rate.values())
        assert set(table.measured) <= set(table.rate)
    finally:
        set_costs("cpu", None)
    assert costs_for("cpu") == before


def test_measure_policy_picks_the_fastest_timed_candidate():
    layer = TNConv2d(8, 8, 3, padding=1, format="cp", ranks=4, plan="measure",
                     dtype=torch.float64)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    ref = TNConv2d(8, 8, 3, padding=1, format="cp", ranks=4, dtype=torch.float64)
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), ref(x))
    chosen = next(iter(layer._plans.values()))
    timings = chosen.cost["timings"]
    assert len(timings) >= 2 and chosen.name in timings
    assert chosen.cost["measured"] == min(timings.values())


@pytest.mark.parametrize("fmt", ["cp", "tt", "tr", "tucker", "ht", "ttmatrix", "svd", "tucker2"])
def test_candidate_names_are_unique(fmt):
    """Timings and choices are keyed by name: two plans (e.g. h-then-w and w-then-h separable
    convs) must never share one."""
    layer = TNConv2d(8, 8, 3, padding=1, format=fmt, fraction=0.3)
    names = [p.name for p in conv_candidates(layer.structure, layer.geometry, (2, 8, 6, 6))]
    assert len(names) == len(set(names))
