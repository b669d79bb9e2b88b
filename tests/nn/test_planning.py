"""A layer's forward choice: the policies, the measured shortlist, plan_info, the LRU cache and
the plan a traced graph reads."""

import re

import pytest
import torch

from tensornet.nn import TNConv2d, TNLinear, cost
from tensornet.nn.layers import conv_plan_names
from tensornet.nn.planning import PlanInfo, _prepare_plan, flat_names

F64 = torch.float64


def cp_layer(plan="auto", **kwargs):
    torch.manual_seed(0)
    return TNConv2d(6, 8, 3, padding=1, format="cp", ranks=3, plan=plan, dtype=F64, **kwargs)


def test_flat_names():
    assert flat_names({}) == ()
    assert flat_names({"dense": ("dense",), "patches": ("patches",)}) == ("dense", "patches")
    names = {"a": ("a[1]", "a[2]"), "b": ("b",), "c": ("a[1]", "c[0]")}
    assert flat_names(names) == ("a", "b", "c", "a[1]", "a[2]", "c[0]")


def test_plan_info_str():
    rows = (
        {"name": "slow", "steps": "x -> y", "flops": 3e6, "seconds": 2e-3},
        {"name": "quick-one", "steps": "z", "flops": 1.5e6, "seconds": 1.25e-4},
    )
    text = str(PlanInfo((2, 3), "quick-one", rows))
    assert text.splitlines() == [
        "input (2, 3): chosen quick-one",
        "* quick-one      0.125 ms        1.50 MFLOP  z",
        "  slow           2.000 ms        3.00 MFLOP  x -> y",
    ]


def test_auto_is_the_cheapest_estimate_and_a_family_its_cheapest_member():
    layer = cp_layer()
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    plans = layer._candidates(tuple(x.shape), "cpu")
    best = cost.choose(plans, "cpu", 8)
    assert layer._choose(tuple(x.shape), x.device, F64).name == best.name
    for family in ("staged", "separable"):
        layer.plan = family
        chosen = layer._choose(tuple(x.shape), x.device, F64)
        members = [p for p in plans if p.family == family]
        assert chosen.family == family
        assert chosen.name == min(members, key=lambda p: p.cost["seconds"]).name
    exact = [p.name for p in plans if p.family == "separable"][-1]
    layer.plan = exact
    assert layer._choose(tuple(x.shape), x.device, F64).name == exact


def test_float32_prices_half_the_bytes():
    layer = cp_layer()
    info64 = layer.plan_info((2, 6, 5, 5))
    info32 = layer.plan_info((2, 6, 5, 5), dtype=torch.float32)
    plans = layer._candidates((2, 6, 5, 5), "cpu")
    cost.choose(plans, "cpu", 4)
    assert [r["seconds"] for r in info32.rows] == [p.cost["seconds"] for p in plans]
    assert all(a["seconds"] > b["seconds"] for a, b in zip(info64.rows, info32.rows))


def test_plan_info_rows_are_the_priced_candidates():
    layer = cp_layer(plan="patches")
    info = layer.plan_info([2, 6, 5, 5], device="cpu")
    assert info.input_shape == (2, 6, 5, 5) and info.chosen == "patches"
    plans = layer._candidates((2, 6, 5, 5), "cpu")
    cost.choose(plans, "cpu", 8)
    assert [r["name"] for r in info.rows] == [p.name for p in plans]
    for row, p in zip(info.rows, plans):
        assert row == {
            "name": p.name,
            "steps": p.describe(),
            "flops": p.flops,
            "elements": p.elements,
            "peak_elements": p.peak_elements,
            "seconds": p.cost["seconds"],
        }
    assert layer._plans == {}  # plan_info does not fill the cache


def test_a_forced_plan_missing_for_a_shape_names_the_families():
    layer = cp_layer()
    layer.plan = next(n for n in conv_plan_names(layer.structure) if n.startswith("separable["))
    with pytest.raises(ValueError, match="^choose: no candidate plans"):
        layer._select([], (2, 6, 5, 5), torch.device("cpu"), F64)
    plans = layer._candidates((2, 6, 5, 5), "cpu")
    patches = [p for p in plans if p.family in ("patches", "dense")]
    message = f"plan={layer.plan!r} is not a candidate here; candidates: ['dense', 'patches']"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        layer._select(patches, (2, 6, 5, 5), torch.device("cpu"), F64)


def test_measure_times_the_shortlist_within_four_times_the_best(monkeypatch):
    layer = cp_layer(plan="measure")
    shape = (2, 6, 5, 5)
    plans = layer._candidates(shape, "cpu")
    cost.choose(plans, "cpu", 8)
    best = min(p.cost["seconds"] for p in plans)
    expected = {p.name for p in plans if p.cost["seconds"] <= 4 * best}
    assert 1 < len(expected) < len(plans)
    timed = {}

    def fake(fn, device, repeat):
        assert repeat == 3
        y = fn()
        assert y.shape == (2, 8, 5, 5)
        timed[len(timed)] = True
        return 10.0 - len(timed)  # the last one timed is the fastest

    monkeypatch.setattr(cost, "measure", fake)
    chosen = layer._choose(shape, torch.device("cpu"), F64)
    assert set(chosen.cost["timings"]) == expected
    assert chosen.cost["measured"] == min(chosen.cost["timings"].values()) == 10.0 - len(expected)


def test_the_cache_is_keyed_by_shape_dtype_and_policy_and_cleared_by_moves():
    layer = cp_layer()
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    layer(x)
    layer(x[:1])
    assert list(layer._plans) == [
        ((2, 6, 5, 5), F64, "cpu", "auto", "contiguous"),
        ((1, 6, 5, 5), F64, "cpu", "auto", "contiguous"),
    ]
    layer(x)  # a hit moves to the end
    assert list(layer._plans)[-1][0] == (2, 6, 5, 5)
    layer.clear_plans()
    assert len(layer._plans) == 0
    layer(x)
    layer.float()
    assert len(layer._plans) == 0
    layer(x.float())
    assert list(layer._plans) == [((2, 6, 5, 5), torch.float32, "cpu", "auto", "contiguous")]


def test_linear_plans_flatten_the_leading_dims():
    layer = TNLinear(6, 4, format="svd", ranks=2, dtype=F64)
    layer(torch.randn(2, 3, 6, dtype=F64))
    assert list(layer._plans)[0][0] == (6, 6)


def test_the_traced_plan_is_the_cached_plan_in_an_attribute_of_its_own():
    layer = cp_layer()
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    assert layer._traced_plan(x) is layer._cached_plan((2, 6, 5, 5), F64, x.device)
    cpu = torch.device("cpu")
    first = _prepare_plan(layer, (1, 6, 5, 5), F64, cpu, "auto")
    again = _prepare_plan(layer, (1, 6, 5, 5), F64, cpu, "auto")
    other = _prepare_plan(layer, (1, 6, 5, 5), F64, cpu, "dense")
    assert first == again and first != other
    assert {first, other} == {"_traced_plan1", "_traced_plan2"}
    assert getattr(layer, first) is layer._cached_plan((1, 6, 5, 5), F64, cpu)
    assert layer._traced_names[((1, 6, 5, 5), F64, "cpu", "dense", "contiguous")] == other
    last = _prepare_plan(layer, (1, 6, 5, 5), F64, cpu, "auto", "channels_last")
    assert last not in (first, other)
    assert getattr(layer, last).memory_format == torch.channels_last
    assert getattr(layer, first).memory_format == torch.contiguous_format


def test_a_cached_plan_is_priced_in_the_input_dtype():
    layer = cp_layer()
    layer(torch.randn(2, 6, 5, 5, dtype=F64))
    plan = next(iter(layer._plans.values()))
    table = cost.costs_for("cpu")
    assert plan.cost["seconds"] == pytest.approx(cost.estimate(plan, 8, table), rel=1e-12)
    assert cost.estimate(plan, 8, table) != pytest.approx(cost.estimate(plan, 4, table))
