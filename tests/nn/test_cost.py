"""The cost model: the fit recovers known coefficients, calibration installs a table, and the
measuring policy keeps the fastest candidate it timed."""

import pytest
import torch

from tensornet.nn import TNConv2d, calibrate, costs_for
from tensornet.nn.cost import _fit, estimate, set_costs
from tensornet.nn.functional import conv_candidates


def test_fit_recovers_rate_bandwidth_and_overhead():
    rate, bandwidth, overhead = 40e9, 5e9, 20e-6
    points = [(f, b, f / rate + b / bandwidth + overhead)
              for f, b in [(1e6, 1e5), (1e9, 1e6), (1e7, 1e8), (5e8, 5e7), (1e5, 1e4)]]
    got = _fit(points, (1.0, 1.0, 1.0))
    assert got == pytest.approx((rate, bandwidth, overhead), rel=1e-6)


def test_estimate_is_the_sum_of_step_times():
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    plan = conv_candidates(layer.structure, layer.geometry, (2, 8, 6, 6))[1]
    table = costs_for("cpu")
    expected = sum(table.step_time(s.kind, s.flops, 4 * s.elements) for s in plan.steps)
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
