"""allocate on small models: reported errors, FLOP and time totals against compress's report
(fast versions of the ResNet checks in test_allocate.py)."""

import io
import re
import sys

import pytest
import torch
from torch import nn

from tensornet.nn import Allocation, LayerChoice, alloc_search, allocate
from tensornet.nn.alloc_layer import GroupedLayer, layer_seconds
from tensornet.nn.compress import layer_inputs
from tensornet.nn.select import select_layers

from .test_allocate import check_reported_errors, running_flops, tiny

allocate_module = sys.modules["tensornet.nn.allocate"]  # the package's `allocate` is the function


def wide():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 48, 3, padding=1),
        nn.Conv2d(48, 48, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 4),
    )  # fmt: skip


def test_reported_errors_match_the_compressed_model_on_a_small_model():
    net = tiny().double()
    for method, error in (("uniform", "true"), ("energy", "true"), ("alds", "true"),
                          ("alds", "proxy")):  # fmt: skip
        alloc = allocate(net, 0.4, method, error=error, seeds=1, iterations=2)
        assert (alloc.method, alloc.measure, alloc.error) == (method, "params", error)
        check_reported_errors(net, alloc)
        choices = list(alloc.layers.values())
        assert alloc.max_error == max(c.error for c in choices)
        assert alloc.max_spectral_error == max(c.spectral_error for c in choices)
        assert alloc.max_frobenius_error == max(c.frobenius_error for c in choices)
        if error == "true":
            assert [c.error for c in choices] == [c.spectral_error for c in choices]
        total = sum(p.numel() for p in net.parameters())
        assert alloc.model_params == total and alloc.budget == 0.4 * total
        kept = total - sum(c.dense_params for c in choices)
        assert alloc.total_params == alloc.total == kept + sum(c.params for c in choices)
        assert alloc.total_params <= alloc.budget
        assert (alloc.total_flops, alloc.model_flops, alloc.total_seconds) == (None, None, None)
        for c in choices:
            assert (c.flops, c.seconds, c.plan, c.dense_flops, c.dense_seconds) == (None,) * 5
            assert c.options == ({"channel_groups": c.groups} if c.format == "grouped" else {})
            assert c.dense_params == net.get_submodule(c.name).weight.numel()


def test_flop_budget_and_totals_are_those_of_the_running_plans():
    model, x = wide(), torch.randn(8, 3, 16, 16)
    alloc = allocate(model, 0.5, "alds", "flops", example_input=x, seeds=0, iterations=1)
    total, report = running_flops(model, alloc, x)
    assert total == alloc.total_flops == alloc.total <= 0.5 * alloc.model_flops
    assert alloc.budget == 0.5 * alloc.model_flops
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    shapes = layer_inputs(model, x, names)
    seconds = [layer_seconds(model.get_submodule(n), shapes[n]) for n in names]
    assert alloc.model_seconds == pytest.approx(sum(seconds), rel=1e-12)
    after = alloc.model_seconds + sum(c.seconds - c.dense_seconds for c in alloc.layers.values())
    assert alloc.total_seconds == pytest.approx(after, rel=1e-12)
    assert report.layers and any(c.format == "grouped" for c in alloc.layers.values())
    absolute = allocate(model, alloc.total_flops, "alds", "flops", example_input=x, seeds=0,
                        iterations=1)  # fmt: skip
    assert absolute.budget == alloc.total_flops and absolute.total_flops <= alloc.total_flops


def test_time_budget_and_its_printed_total():
    model, x = wide(), torch.randn(8, 3, 16, 16)
    alloc = allocate(model, 0.7, "alds", "time", example_input=x, seeds=0, iterations=1)
    running_flops(model, alloc, x)
    assert alloc.budget == pytest.approx(0.7 * alloc.model_seconds, rel=1e-12)
    assert alloc.total == alloc.total_seconds <= alloc.budget
    assert any(c.format == "grouped" for c in alloc.layers.values())
    assert str(alloc).splitlines()[-1].startswith(
        f"alds (time, error=true): total {alloc.total_seconds * 1e3:.3f} ms of budget "
        f"{alloc.budget * 1e3:.3f} ms; max error {alloc.max_error:.4f}"
    )


def wide4():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 48, 3, padding=1),
        nn.Conv2d(48, 48, 3, padding=1), nn.Conv2d(48, 48, 3, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 4),
    )  # fmt: skip


def test_dense_choices_count_and_print_as_dense():
    """Small inputs favour dense plans: such layers are dense choices, priced as dense."""
    model, x = wide4(), torch.randn(2, 3, 8, 8)
    alloc = allocate(model, 0.5, "alds", "flops", example_input=x, seeds=0, iterations=1)
    dense = [c for c in alloc.layers.values() if c.format == "dense"]
    grouped = [c for c in alloc.layers.values() if c.format == "grouped"]
    assert dense and grouped
    for c in dense:
        weight = model.get_submodule(c.name).weight
        assert (c.ranks, c.groups, c.params, c.dense_params) == ((), 1, weight.numel(),
                                                                 weight.numel())  # fmt: skip
        assert (c.flops, c.seconds, c.plan) == (c.dense_flops, c.dense_seconds, None)
        assert c.spectral_error == c.frobenius_error == c.error == 0.0 and c.options == {}
    for c in grouped:
        assert c.plan and c.flops < c.dense_flops and c.params < c.dense_params
    lines = str(alloc).splitlines()
    for line, c in zip(lines[1:], alloc.layers.values()):
        j = str(c.ranks[0]) if c.ranks else "-"
        assert line.split() == [
            c.name, str(c.groups), j, f"{c.params:,}", f"{c.flops / 1e6:.2f}",
            f"{c.seconds * 1e3:.3f}", (c.plan or "-")[:12], f"{c.spectral_error:.4f}",
            f"{c.frobenius_error:.4f}",
        ]  # fmt: skip
        assert (j == "-") == (c.format == "dense") and (c.plan is None) == (c.format == "dense")
    check_reported_errors(model, alloc)


def test_time_budgets_above_one_are_refused():
    x = torch.randn(2, 3, 10, 10)
    for budget in (1.5, 3):
        message = (
            f"allocate: budget for measure='time' must be a fraction in (0, 1], got {budget!r}"
        )
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            allocate(tiny(), budget, measure="time", example_input=x)


def rank_one_needs(model):
    """Parameters of the model with every chosen layer at grouped rank 1 (k = 1)."""
    names = select_layers(model, None, ("first", "last"))
    layers = [GroupedLayer(n, model.get_submodule(n), [1], "params", "true", None) for n in names]
    fixed = sum(p.numel() for p in model.parameters()) - sum(s.dense for s in layers)
    return fixed, sum(s.cost(1, 1) for s in layers)


def test_the_least_feasible_budget_and_the_message_below_it():
    net = tiny()
    fixed, least = rank_one_needs(net)
    alloc = allocate(net, fixed + least, "uniform")  # exactly enough: every layer at rank 1
    assert {c.ranks for c in alloc.layers.values()} == {(1,)}
    assert alloc.total_params == fixed + least
    for budget in (fixed + least - 1, 1.5):
        message = (
            f"allocate: the budget ({budget:,.6g} parameters) is below what the model needs at "
            f"rank 1 in every chosen layer ({fixed + least:,.6g}: {fixed:,.6g} in the layers and "
            "parameters that are not compressed)"
        )
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            allocate(net, budget, "uniform")


def test_infeasible_flop_budget_message_word_for_word():
    with pytest.raises(ValueError) as err:
        allocate(tiny(), 0.5, measure="flops", example_input=torch.randn(2, 3, 10, 10))
    assert str(err.value).endswith(
        " in the layers and parameters that are not compressed); a layer whose rank-1 form "
        "would run its dense plan, or cost no less than dense, counts as dense (small inputs "
        "favour dense plans)"
    )
    assert re.match(r"^allocate: the budget \([\d,.e+]+ FLOPs\) is below", str(err.value))


def test_defaults_reach_the_search_and_the_spectra(monkeypatch):
    calls, built, bars = [], [], []
    real = alloc_search.SEARCHES["alds"]
    monkeypatch.setitem(
        alloc_search.SEARCHES, "alds", lambda *a, **kw: calls.append(kw) or real(*a, **kw)
    )
    real_layer = allocate_module.GroupedLayer
    monkeypatch.setattr(
        allocate_module, "GroupedLayer", lambda *a: built.append(a) or real_layer(*a)
    )
    monkeypatch.setattr(
        allocate_module, "progress", lambda items, show, desc: bars.append((show, desc)) or items
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 130), nn.Linear(130, 16), nn.Linear(16, 4))
    alloc = allocate(model, 0.6, progress=False)
    assert calls == [{"iterations": 4, "seeds": 4, "seed": 0, "show": False}]
    assert len(alloc.history) == 5 + 4
    (name, _, ks, measure, objective, pricer), = built
    assert (name, ks, measure, objective, pricer) == (
        "1", [1, 2, 5, 10, 13, 26], "params", "true", None
    )  # divisors of 130 up to max_groups=64
    assert bars == [(False, "allocate: spectra")]
    built.clear()
    allocate(model, 0.6, error="proxy", layers=["1"], skip=(), seeds=0, iterations=0)
    assert [b[4] for b in built] == ["proxy"]


def test_progress_default_follows_the_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    settings = allocate_module._settings("alds", "params", "true", 0.5, 1, 1, 0, 4, None)
    assert settings.search["show"] is True
    settings = allocate_module._settings("alds", "params", "true", 0.5, 1, 1, 0, 4, False)
    assert settings.search["show"] is False


def test_a_layer_selection_limits_the_allocation():
    alloc = allocate(tiny(), 0.6, "uniform", layers=["2", "4"], skip=())
    assert list(alloc.layers) == ["2", "4"]


def test_model_flops_count_every_conv_and_linear_layer_that_runs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    alloc = allocate(model, 0.9, "uniform", example_input=x)  # FLOPs counted, params budget
    per_pixel = 8 * 27 + 8 * 36 + 16 * 72 + 16 * 144  # out * in/groups * 9 per output pixel
    assert alloc.model_flops == 2 * 2 * 64 * per_pixel + 2 * 2 * 16 * 4
    assert list(alloc.layers) == ["1", "2", "3"]  # the grouped conv is compressed too
    assert alloc.layers["1"].dense_params == 8 * 4 * 9  # its kernel: (out, in / groups, kh, kw)


def test_printed_megaflops_and_milliseconds_round_from_the_exact_counts():
    choice = LayerChoice("fc", "grouped", (3,), 2, 120, 1_005_001, 0.25, 400, 0.25, 0.125,
                         0.0010005001, "direct", 2_000_000, 0.002)  # fmt: skip
    alloc = Allocation("alds", "flops", 1.5e6, {"fc": choice}, 120, 1_005_001, 400, 2_000_000)
    row = str(alloc).splitlines()[1].split()
    assert row == ["fc", "2", "3", "120", "1.01", "1.001", "direct", "0.2500", "0.1250"]


def test_a_dense_choice_has_one_group_whatever_was_searched():
    torch.manual_seed(4)
    layer = GroupedLayer("c", nn.Conv2d(4, 8, 3, dtype=torch.float64), [1, 2], "params", "true",
                         None)  # fmt: skip
    assert layer.params(6, 2) == 312 >= layer.dense == 288 and layer.params(5, 2) == 260
    c = allocate_module._choice(layer, 6, 2)
    assert (c.format, c.ranks, c.groups, c.params, c.options) == ("dense", (), 1, 288, {})
    c = allocate_module._choice(layer, 5, 2)
    assert (c.format, c.ranks, c.groups, c.params) == ("grouped", (5,), 2, 260)
    assert c.options == {"channel_groups": 2} and c.spectral_error == layer.spectral(5, 2) > 0
