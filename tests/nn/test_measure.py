"""measure: dense FLOPs, times and structures, spectral norms, forward timing (by hand)."""

import numpy as np
import pytest
import torch
from torch import nn

from tensornet.nn import cost
from tensornet.nn.alloc_layer import grouped_structure
from tensornet.nn.functional import ConvGeometry, conv_candidates
from tensornet.nn.measure import (
    _spectral_norm,
    candidates,
    dense_flops,
    dense_seconds,
    dense_structure,
    forward_time,
    shape_of,
)


def test_dense_flops_on_uneven_inputs_and_rows_of_a_linear():
    conv = nn.Conv2d(6, 4, (3, 2), stride=(2, 1), groups=2)
    flops = dense_flops(conv, (3, 6, 9, 5))  # (9, 5) -> (4, 4); 3 inputs per output
    assert flops == 2 * 3 * 4 * (3 * 3 * 2) * 4 * 4 and type(flops) is int
    assert dense_flops(nn.Linear(4, 3), (2, 5, 4)) == 2 * 10 * 4 * 3


def test_dense_structure_is_the_kernel_as_one_factor():
    legs, shape = ("out", "in", "kh", "kw"), (4, 3, 2, 2)
    s = dense_structure(legs, shape)
    assert (s.format, s.legs, s.shape, s.ranks, s.options) == ("dense", legs, shape, (), ())
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [("weight", legs, shape)]
    assert s.modes == (("out",), ("in",), ("kh",), ("kw",)) and s.num_params == 48


def test_dense_seconds_use_the_cost_table_of_the_device_asked_for():
    conv, shape = nn.Conv2d(8, 12, 3, padding=1), (2, 8, 10, 10)
    for device in ("cpu", "cuda"):
        geo = ConvGeometry.from_conv_args((3, 3), 1, 1)
        plans = conv_candidates(dense_structure(("out", "in", "kh", "kw"), (12, 8, 3, 3)),
                                geo, shape, device)  # fmt: skip
        plan = next(p for p in plans if p.name == "dense")
        want = cost.estimate(plan, 4, cost.costs_for(device))
        assert dense_seconds(conv, shape, device) == pytest.approx(want, rel=1e-12)
    assert dense_seconds(conv, shape, "cuda") != dense_seconds(conv, shape)
    assert dense_seconds(conv, shape, dtype=torch.float64) > dense_seconds(conv, shape)


def test_candidates_are_the_plans_for_the_device_type():
    """A depthwise step runs channels-last on CPU only: the device type changes its price."""
    conv, shape = nn.Conv2d(8, 12, 3, padding=1), (16, 8, 32, 32)
    structure = grouped_structure((12, 8, 3, 3), ("out", "in", "kh", "kw"), 1, 8)
    geo = ConvGeometry.from_conv_args((3, 3), 1, 1)
    table = cost.costs_for("cpu")
    prices = {}
    for device in ("cpu", "cuda"):
        got = candidates(conv, structure, shape, device)
        want = conv_candidates(structure, geo, shape, device)
        prices[device] = [cost.estimate(p, 4, table) for p in got]
        assert [p.name for p in got] == [p.name for p in want]
        assert prices[device] == [cost.estimate(p, 4, table) for p in want]
    assert prices["cpu"] != prices["cuda"]


def test_spectral_norm_exact_up_to_256_then_reproducible_lanczos():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(256, 300, dtype=torch.float64, generator=g)
    assert _spectral_norm(m) == float(torch.linalg.matrix_norm(m, ord=2))  # the full SVD
    big = torch.randn(260, 400, dtype=torch.float64, generator=g)
    exact = float(np.linalg.norm(big.numpy(), 2))
    # Lanczos from a random start ends on another last bit most times here: a fixed start
    # gives one value on every call
    runs = {_spectral_norm(big) for _ in range(20)}
    assert len(runs) == 1 and runs.pop() == pytest.approx(exact, rel=1e-10)
    assert _spectral_norm(torch.zeros(300, 300, dtype=torch.float64)) == 0.0


class Scaled(nn.Module):
    """y = x * factor: a model whose input holds no tensor."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.calls = []

    def forward(self, factor):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.lin(torch.ones(1, 2) * factor)


def test_forward_time_runs_the_model_repeat_plus_one_times_in_eval_mode(monkeypatch):
    model = Scaled().train()
    seconds = forward_time(model, (3.0,))
    assert seconds >= 0 and model.training
    assert model.calls == [(False, False)] * 6  # one warm-up, then the median of 5
    model.calls.clear()
    forward_time(model, (2.0,), repeat=2)
    assert len(model.calls) == 3
    seen = []
    real = cost.measure
    monkeypatch.setattr(cost, "measure", lambda fn, device, repeat=5: seen.append(
        (device, repeat)) or real(fn, device, repeat=repeat))  # fmt: skip
    forward_time(model, (torch.tensor(2.0),), repeat=3)
    assert seen == [(torch.device("cpu"), 3)]


def test_shape_of_inputs_and_tuples_with_plain_values():
    x = torch.ones(2, 3)
    assert shape_of(None) is None and shape_of(x) == (2, 3)
    assert shape_of((x, 4, torch.ones(5))) == ((2, 3), (), (5,))
