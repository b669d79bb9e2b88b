"""Values of the cost model: one step's time, a plan's estimate, the choice, the tables, the
timer and calibration, each against numbers worked out by hand."""

from dataclasses import replace

import pytest
import torch

from tensornet.formats import fraction_ranks, get_format
from tensornet.nn import cost
from tensornet.nn.cost import DeviceCosts, choose, costs_for, estimate, fit_costs, set_costs
from tensornet.nn.functional import conv_candidates
from tensornet.nn.geometry import ConvGeometry
from tensornet.nn.plans import ConvStep, ForwardPlan, Step

KINDS = cost.KINDS
F64 = torch.float64


def table(**per_image) -> DeviceCosts:
    return DeviceCosts(
        rate=dict.fromkeys(KINDS, 1e9),
        bandwidth=dict.fromkeys(KINDS, 1e8),
        overhead=dict.fromkeys(KINDS, 1e-3),
        per_image=per_image,
        source="hand",
    )


def conv_step(flops, elements, images):
    step = ConvStep("conv", flops, elements, "c")
    step.view = (images, 1, 1, 1)
    return step


def test_step_time_adds_the_four_terms():
    t = table(conv=2e-4)
    assert t.step_time("conv", 3e9, 5e8, 7) == pytest.approx(3 + 5 + 1e-3 + 7 * 2e-4, rel=1e-12)
    assert t.step_time("matmul", 3e9, 5e8, 7) == pytest.approx(3 + 5 + 1e-3, rel=1e-12)
    assert t.step_time("conv", 0, 0) == pytest.approx(1e-3, rel=1e-12)


def test_estimate_sums_steps_with_bytes_from_the_item_size():
    t = table(conv=1e-2)
    plan = ForwardPlan("p", [conv_step(2e9, 1e8, 3), Step("copy", 0, 3e8, "x")], (1,))
    # conv: 2 s + 8e8 B / 1e8 + 1e-3 + 3e-2; copy: 24 + 1e-3 (itemsize 8)
    assert estimate(plan, 8, t) == pytest.approx(2 + 8 + 1e-3 + 3e-2 + 24 + 1e-3, rel=1e-12)
    assert estimate(plan, 4, t) == pytest.approx(2 + 4 + 1e-3 + 3e-2 + 12 + 1e-3, rel=1e-12)


def test_choose_records_every_estimate_and_keeps_the_first_of_equals():
    t = table()
    plans = [
        ForwardPlan("slow", [Step("matmul", int(4e9), 0, "")], (1,), peak_elements=5),
        ForwardPlan("fast", [Step("matmul", int(1e9), 10, "")], (1,), peak_elements=6),
        ForwardPlan("same", [Step("matmul", int(1e9), 10, "")], (1,), peak_elements=7),
    ]
    best = choose(plans, "cpu", 4, t)
    assert best is plans[1]
    assert plans[0].cost == {
        "seconds": pytest.approx(4 + 1e-3, rel=1e-12),
        "flops": int(4e9),
        "elements": 0,
        "peak_elements": 5,
        "table": "hand",
    }
    assert plans[2].cost["seconds"] == plans[1].cost["seconds"]
    assert plans[1].cost["seconds"] == pytest.approx(1 + 40 / 1e8 + 1e-3, rel=1e-12)


def test_choose_uses_the_device_table_when_none_is_given():
    plans = [ForwardPlan("a", [Step("copy", 0, 100, "")], (1,))]
    choose(plans, "cpu", 4)
    assert plans[0].cost["table"] == costs_for("cpu").source == "default-cpu"
    choose(plans, "cuda", 4)
    assert plans[0].cost["table"] == "default-cuda"


def test_tables_by_device_type_and_their_restore():
    cpu, cuda = costs_for("cpu"), costs_for("cuda")
    assert cpu.source == "default-cpu" and cuda.source == "default-cuda"
    assert costs_for("mps") is cuda and costs_for("xpu") is cuda  # others use CUDA's
    mine = replace(cpu, source="mine")
    try:
        set_costs("cpu", mine)
        set_costs("cuda", mine)
        assert costs_for("cpu") is mine and costs_for("cuda") is mine
        set_costs("cuda", None)
        assert costs_for("cuda") is cuda and costs_for("cpu") is mine
    finally:
        set_costs("cpu", None)
        set_costs("cuda", None)
    assert costs_for("cpu") is cpu and costs_for("cuda") is cuda


def test_the_default_tables_price_every_kind():
    for t in (costs_for("cpu"), costs_for("cuda")):
        for kind in KINDS:
            assert t.step_time(kind, 1e9, 1e6, 4) > 0
    cpu = costs_for("cpu")
    # per-image costs make a conv over many tiny images dearer than over a few big ones
    assert cpu.step_time("grouped", 1e6, 1e4, 1000) > 100 * cpu.step_time("grouped", 1e6, 1e4, 1)


def test_measure_returns_the_median_of_repeats(monkeypatch):
    ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0, 10.0, 10.0, 10.0, 10.5])
    monkeypatch.setattr(cost.time, "perf_counter", lambda: next(ticks))
    calls = []
    # one warm-up call, then five timed ones: durations 1, 3, 2, 0, 0.5 -> median 1
    assert cost.measure(lambda: calls.append(1), torch.device("cpu"), repeat=5) == 1.0
    assert len(calls) == 6
    ticks2 = iter([0.0, 2.0, 5.0, 5.5])
    monkeypatch.setattr(cost.time, "perf_counter", lambda: next(ticks2))
    assert cost.measure(lambda: None, torch.device("cpu"), repeat=2) == 2.0  # upper median


def test_fit_keeps_base_values_of_kinds_no_sample_uses_and_names_its_source():
    base = table(conv=5.0)
    steps = [Step("copy", 0, int(e), "") for e in (1e3, 1e6, 1e8)]
    fitted = fit_costs([([s], 4 * s.elements / 2e9 + 3e-6) for s in steps], 4, base, "mine")
    assert fitted.source == "mine"
    assert fitted.bandwidth["copy"] == pytest.approx(2e9, rel=1e-6)
    assert fitted.overhead["copy"] == pytest.approx(3e-6, rel=1e-6)
    assert fitted.rate["copy"] == 1e18 and fitted.per_image["copy"] == 0.0
    for kind in set(KINDS) - {"copy"}:
        assert fitted.rate[kind] == 1e9 and fitted.bandwidth[kind] == 1e8
        assert fitted.overhead[kind] == 1e-3
    assert fitted.per_image == {"conv": 5.0, "copy": 0.0}
    assert base.per_image == {"conv": 5.0}  # the base table is not changed


def test_fit_weighs_item_size():
    steps = [Step("copy", 0, int(e), "") for e in (1e3, 1e6, 1e8)]
    fitted = fit_costs([([s], 8 * s.elements / 2e9 + 3e-6) for s in steps], 8, table())
    assert fitted.bandwidth["copy"] == pytest.approx(2e9, rel=1e-6)


def test_fit_caps_a_tiny_coefficient_at_free():
    steps = [Step("copy", int(f), int(e), "") for f, e in ((1e3, 1e3), (1e6, 1e8), (1e9, 1e4))]
    fitted = fit_costs([([s], s.flops / 1e30 + 4 * s.elements / 1e9 + 1e-6) for s in steps])
    assert fitted.rate["copy"] == 1e18


def expected_steps(device_type, c=16):
    """The steps of every candidate of the layers ``_step_samples`` times, case (c, 3, 1)."""
    legs = ("out", "in", "kh", "kw")
    fractions = {"tucker2": 0.25, "cp": 0.1, "tt": 0.25, "svd": 0.25, "grouped": 0.25}
    fractions["ttmatrix"] = 0.25
    options = {"grouped": {"channel_groups": 4}, "tt": {"order": ("in", "kh", "kw", "out")}}
    geometry = ConvGeometry.from_conv_args((3, 3), padding=1)
    out = []
    for fmt, frac in fractions.items():
        opts = options.get(fmt, {})
        ranks = fraction_ranks(fmt, (c, c, 3, 3), frac, legs=legs, **opts)
        s = get_format(fmt).structure_for((c, c, 3, 3), ranks, legs=legs, **opts)
        for plan in conv_candidates(s, geometry, (1, c, 3, 3), device_type):
            out += [(st.kind, st.flops, st.elements, st.label) for st in plan.steps]
    return out


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_step_samples_time_every_step_of_every_candidate(monkeypatch, device):
    timed = []

    def fake(fn, where, repeat):
        y = fn()
        assert isinstance(y, torch.Tensor) and y.device.type == device and y.dtype == F64
        timed.append((where.type, repeat))
        return 0.5

    monkeypatch.setattr(cost, "measure", fake)
    samples = cost._step_samples(torch.device(device), F64, 3, ((16, 3, 1),))
    got = [(st.kind, st.flops, st.elements, st.label) for (st,), _ in samples]
    assert got == expected_steps(device)
    assert all(t == 0.5 for _, t in samples) and timed == [(device, 3)] * len(samples)
    kinds = {k for k, *_ in got}
    assert {"matmul", "conv", "einsum", "unfold"} <= kinds
    assert ("depthwise" in kinds) == (device == "cpu")


def test_calibrate_fits_and_installs_the_measured_table(monkeypatch):
    step = Step("copy", 0, 1000, "")
    samples = [([step], 1e-3), ([Step("copy", 0, 10**6, "")], 2e-3)]
    monkeypatch.setattr(cost, "_step_samples", lambda device, dtype, repeat, cases: samples)
    try:
        t = cost.calibrate("cpu", torch.float64, repeat=1)
        assert costs_for("cpu") is t and t.source == "calibrated-cpu"
        assert t.measured == {"copy": [(0, 8000, 1e-3), (0, 8e6, 2e-3)]}
    finally:
        set_costs("cpu", None)


def test_calibrate_defaults_and_a_cuda_table_keeps_cuda_values(monkeypatch):
    calls = []

    def samples(device, dtype, repeat, cases):
        calls.append((device, dtype, repeat, cases))
        return [([Step("copy", 0, 1000, "")], 1e-3), ([Step("copy", 0, 10**6, "")], 2e-3)]

    monkeypatch.setattr(cost, "_step_samples", samples)
    cuda = costs_for("cuda")
    try:
        t = cost.calibrate()
        assert calls == [(torch.device("cpu"), torch.float32, 5, cost.CALIBRATION_CASES)]
        assert t.measured == {"copy": [(0, 4000, 1e-3), (0, 4e6, 2e-3)]}
        cpu = cost._CPU
        assert {k: t.rate[k] for k in KINDS if k != "copy"} == {
            k: cpu.rate[k] for k in KINDS if k != "copy"
        }
        g = cost.calibrate("cuda")
        assert costs_for("cuda") is g and g.source == "calibrated-cuda"
        assert calls[-1][0] == torch.device("cuda")
        assert {k: g.rate[k] for k in KINDS if k != "copy"} == {
            k: cuda.rate[k] for k in KINDS if k != "copy"
        }
    finally:
        set_costs("cpu", None)
        set_costs("cuda", None)


def test_fit_defaults_sum_repeated_kinds_and_warn_about_nothing():
    import warnings

    pairs = [
        [Step("copy", 0, int(e), ""), Step("copy", 0, int(2 * e), "")] for e in (1e3, 1e5, 1e7)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = fit_costs([(steps, 4 * 3 * steps[0].elements / 1e9 + 2e-6) for steps in pairs])
        flops_only = [Step("einsum", int(f), 1, "") for f in (1e6, 1e8, 1e7)]
        no_bytes = fit_costs([([st], st.flops / 1e10 + 1e-5) for st in flops_only])
    assert no_bytes.bandwidth["einsum"] == 1e18
    assert no_bytes.rate["einsum"] == pytest.approx(1e10, rel=1e-6)
    # each sample is two copies: twice the overhead, three times the first one's bytes
    assert fitted.source == "fitted"
    assert fitted.bandwidth["copy"] == pytest.approx(1e9, rel=1e-6)
    assert fitted.overhead["copy"] == pytest.approx(1e-6, rel=1e-6)
    assert fitted.rate["copy"] == 1e18 and fitted.per_image["copy"] == 0.0


def test_measure_defaults_to_five_runs_and_synchronises_cuda(monkeypatch):
    syncs, calls = [], []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.append(1))
    cost.measure(lambda: calls.append(1), torch.device("cuda"))
    assert len(calls) == 6 and len(syncs) == 6
    cost.measure(lambda: calls.append(1), torch.device("cpu"), repeat=2)
    assert len(calls) == 9 and len(syncs) == 6


def test_choose_refuses_no_plans():
    with pytest.raises(ValueError, match=r"^choose: no candidate plans \(no registered family"):
        choose([], "cpu", 4)


def test_the_cpu_table_prices_channels_last_depthwise_steps_by_flops_and_bytes():
    cpu = costs_for("cpu")
    # 32 images of 284 channels at 8x8, a 3x3 kernel: flops, bytes in + out, one call
    flops, nbytes = 2 * 32 * 284 * 9 * 64, 4 * 32 * 284 * 128
    want = flops / 44.4e9 + nbytes / 59.5e9 + 75e-6
    assert cpu.step_time("depthwise", flops, nbytes, 32) == pytest.approx(want, rel=1e-12)
    # a depthwise tap costs a fraction of a dense conv's multiply-add per output
    assert cpu.rate["depthwise"] > 5 * 5.44e9 and cpu.per_image.get("depthwise", 0.0) == 0.0


@pytest.mark.parametrize(("channels", "side"), [(256, 8), (64, 32)])
def test_cp_layers_run_their_depthwise_plan_on_cpu(channels, side):
    """At a quarter of the parameters a CP conv runs 1x1 / depthwise / 1x1, never dense."""
    legs = ("out", "in", "kh", "kw")
    shape = (channels, channels, 3, 3)
    s = get_format("cp").structure_for(shape, fraction_ranks("cp", shape, 0.25, legs=legs))
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    plans = conv_candidates(s, geo, (32, channels, side, side), "cpu")
    best = choose(plans, "cpu", 4)
    assert best.family in ("staged", "separable") and best.name.endswith("out=A0]")
    assert "depthwise" in {step.kind for step in best.steps}
    dense = next(p for p in plans if p.family == "dense")
    assert best.cost["seconds"] < dense.cost["seconds"] / 2
