"""allocate on small models: reported errors, FLOP and time totals against compress's report
(fast versions of the ResNet checks in test_allocate.py)."""

import pytest
import torch
from torch import nn

from tensornet.nn import allocate
from tensornet.nn.alloc_layer import layer_seconds
from tensornet.nn.compress import layer_inputs

from .test_allocate import check_reported_errors, running_flops, tiny


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
