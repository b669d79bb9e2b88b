"""compress / select_layers at model level: output heads, shared and tied modules, modes,
pruned and parametrized layers, the report's figures and true errors, min_speedup, arguments."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from tensornet.nn import (
    CompressionReport,
    EndLayers,
    LayerReport,
    NoMatchingLayer,
    TNConv2d,
    TNLinear,
    compress,
    cost,
    dense_flops,
    dense_seconds,
    end_layers,
    kernel_errors,
    layer_inputs,
    select_layers,
)
from tensornet.nn.compress import _deepcopy
from tensornet.nn.select import layer_aliases


class TwoHeads(nn.Module):
    """A conv trunk, a shared linear, and two heads: a classifier and a 2-output regressor."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 3 * 3, 32),
            nn.ReLU(),
        )
        self.cls = nn.Linear(32, 10)
        self.reg = nn.Linear(32, 2)

    def forward(self, x):
        h = self.trunk(x)
        return {"logits": self.cls(h), "box": torch.sigmoid(self.reg(h))}


class Branchy(TwoHeads):
    """TwoHeads with data-dependent control flow (fx cannot trace it)."""

    def forward(self, x):
        h = self.trunk(x)
        if h.sum() > 0:
            h = h * 2
        return self.cls(h), self.reg(h)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem_a, self.stem_b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, a, b):
        h = torch.cat([self.stem_a(a), self.stem_b(b)], 1).relu_()
        return self.head(self.mid(h).mean((2, 3)))


X = torch.randn(2, 3, 8, 8)


def _dense_names(model):
    return sorted(n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear))


# -- output / input layers ---------------------------------------------------------------------
def test_both_heads_stay_dense_at_a_quarter_of_the_parameters():
    net = TwoHeads().eval()
    for example in (None, X):
        small, report = compress(net, "tucker2", fraction=0.25, example_input=example)
        assert _dense_names(small) == ["cls", "reg", "trunk.0"]
        assert isinstance(small.cls, nn.Linear) and isinstance(small.reg, nn.Linear)
        assert not isinstance(small.cls, TNLinear) and not isinstance(small.reg, TNLinear)
        assert [r.name for r in report.layers] == ["trunk.2", "trunk.4", "trunk.7"]
        assert isinstance(small.trunk[7], TNLinear) and isinstance(small.trunk[2], TNConv2d)
        out = small(X)
        assert out["logits"].shape == (2, 10) and out["box"].shape == (2, 2)
        assert not report.notes or all("slower" in n for n in report.notes)


def test_end_layers_by_fx_and_by_hooks_agree():
    net = TwoHeads()
    fx, hooks = end_layers(net), end_layers(net, X)
    assert (fx.method, hooks.method) == ("fx", "hooks")
    for ends in (fx, hooks):
        assert ends.first == ("trunk.0",) and ends.last == ("cls", "reg") and ends.note is None
    two = TwoInputs()
    a, b = torch.randn(2, 3, 6, 6), torch.randn(2, 1, 6, 6)
    for ends in (end_layers(two), end_layers(two, (a, b))):
        assert ends.first == ("stem_a", "stem_b") and ends.last == ("head",)
    assert select_layers(two, skip=("first", "last")) == ["mid"]
    assert select_layers(two, skip=("last",), example_input=(a, b)) == ["stem_a", "stem_b", "mid"]


def test_a_layer_feeding_an_output_through_another_path_is_an_output_layer():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x).relu()
            return self.b(h) + h * 2 + h  # a reaches the output directly too

    for ends in (end_layers(Skip()), end_layers(Skip(), torch.randn(3, 4))):
        assert ends.first == ("a",) and ends.last == ("a", "b")


def test_untraceable_model_uses_hooks_or_falls_back_to_the_last_registered_layer():
    net = Branchy().eval()
    ends = end_layers(net, X)
    assert ends.method == "hooks" and ends.last == ("cls", "reg") and ends.first == ("trunk.0",)
    order = end_layers(net)
    assert order.method == "order" and order.first == ("trunk.0",) and order.last == ("reg",)
    assert "torch.fx could not trace" in order.note and "give example_input" in order.note
    with pytest.warns(UserWarning, match="first/last registered"):
        small, report = compress(net, "svd", fraction=0.5)
    assert isinstance(small.cls, TNLinear) and isinstance(small.reg, nn.Linear)
    assert any("first/last registered" in n for n in report.notes)
    assert "note: " in str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small, report = compress(net, "svd", fraction=0.5, example_input=X, measure_time=False)
    assert type(small.cls) is nn.Linear and type(small.reg) is nn.Linear
    # a forward that fails (wrong input) and no fx: both reasons are given
    bad = end_layers(net, torch.randn(2, 5, 8, 8))
    assert bad.method == "order" and "forward with hooks failed (RuntimeError" in bad.note
    assert "give example_input" not in bad.note
    with pytest.warns(UserWarning, match="could not trace"):
        assert select_layers(net, skip=("last",)) == [
            "trunk.0",
            "trunk.2",
            "trunk.4",
            "trunk.7",
            "cls",
        ]


def test_outputs_without_autograd_fall_back_to_fx():
    net = TwoHeads()
    with torch.inference_mode():
        ends = end_layers(net, X)
    assert ends.method == "fx" and ends.last == ("cls", "reg")
    assert ends.note == (
        "the forward with hooks failed (RuntimeError: no layer output reaches a model output "
        "through autograd); found by torch.fx"
    )
    assert end_layers(nn.Sequential(nn.ReLU()), torch.randn(2)) == EndLayers((), (), "hooks")


def test_end_layers_leave_the_model_as_it_was():
    net = TwoHeads().train()
    net.trunk[0].eval()
    state = copy.deepcopy(net.state_dict())
    end_layers(net, X)
    modes = [m.training for m in net.modules()]
    assert modes.count(False) == 1 and not net.trunk[0].training
    assert not net.trunk._forward_hooks and not net.cls._forward_pre_hooks
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_compressed_layers_count_as_layers_for_end_layers():
    net = TwoHeads()
    small, _ = compress(net, "svd", fraction=0.5, layers=["trunk.7", "cls"], skip=())
    assert isinstance(small.cls, TNLinear)
    assert end_layers(small).last == ("cls", "reg") and end_layers(small).method == "fx"
    assert end_layers(small, X).last == ("cls", "reg")


# -- patterns ------------------------------------------------------------------------------------
def test_unmatched_skip_or_format_pattern_raises_naming_the_layers():
    net = TwoHeads()
    with pytest.raises(NoMatchingLayer, match=r"skip entry 'head\*' .*trunk\.0, trunk\.2"):
        compress(net, "tt", fraction=0.5, skip=("last", "head*"))
    with pytest.raises(NoMatchingLayer, match=r"format pattern 'fc' .*layers are: trunk\.0"):
        compress(net, {"conv": "tt", "fc": "svd"}, fraction=0.5)
    with pytest.raises(TypeError, match="format mapping keys"):
        compress(net, {"conv": "tt", 3: "svd"}, fraction=0.5)
    with pytest.raises(NoMatchingLayer, match="skip entry"):
        select_layers(net, skip=("nothing",))
    # kind keys are not patterns: "linear" in a conv-only model is fine
    convs = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    small, report = compress(convs, {"linear": "svd", "conv": "tucker2"}, fraction=0.5)
    assert [r.format for r in report.layers] == ["tucker2"]
    # a pattern matching a layer that is skipped is allowed
    _, report = compress(net, {"cls": "svd", "conv": "tt"}, fraction=0.5)
    assert [r.name for r in report.layers] == ["trunk.2", "trunk.4"]


# -- shared and tied -------------------------------------------------------------------------
class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.inp = nn.Linear(8, 16)
        self.block = nn.Linear(16, 16)
        self.again = self.block  # one module, two names
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x).relu()
        return self.out(self.again(self.block(h).relu()).relu())


def test_a_shared_module_is_compressed_once_and_stays_shared():
    net = Shared()
    assert layer_aliases(net) == {
        "inp": ("inp",),
        "block": ("block", "again"),
        "out": ("out",),
    }
    x = torch.randn(5, 8)
    small, report = compress(net, "svd", fraction=0.5, example_input=x)
    assert small.block is small.again and isinstance(small.block, TNLinear)
    (r,) = report.layers
    assert r.name == "block" and r.aliases == ("block", "again")
    before = sum(p.numel() for p in net.parameters())
    assert report.model_params_before == before
    assert report.model_params_after == before - 16 * 17 + small.block.num_params
    assert report.model_params_after == sum(p.numel() for p in small.parameters())
    assert r.params_before == 16 * 17 and r.params_after == small.block.num_params
    ref = net.out(small.block(small.block(net.inp(x).relu()).relu()).relu())
    torch.testing.assert_close(small(x), ref)
    # a pattern on the second name selects the module; explicit names too
    assert select_layers(net, "again") == ["block"] == select_layers(net, ["again"])
    assert select_layers(net, lambda n, m: n == "again") == ["block"]
    with pytest.raises(NoMatchingLayer, match="not conv/linear layers"):
        select_layers(net, ["again", "nope"])
    small, report = compress(net, "svd", fraction=0.5, skip=("again",))
    assert [r.name for r in report.layers] == ["inp", "out"]
    assert small.block is small.again and type(small.block) is nn.Linear


def test_layers_with_tied_parameters_stay_dense():
    net = Shared()
    net.out = nn.Linear(16, 16)
    net.out.weight = net.block.weight  # tied across two modules
    small, report = compress(net, "svd", fraction=0.5, skip=())
    assert type(small.block) is nn.Linear and type(small.out) is nn.Linear
    assert small.block.weight is small.out.weight and isinstance(small.inp, TNLinear)
    assert [r.name for r in report.layers] == ["inp"]
    assert "layer 'block' shares parameters with ['out'] (tied): left dense" in report.notes
    assert "layer 'out' shares parameters with ['block'] (tied): left dense" in report.notes


# -- modes -------------------------------------------------------------------------------------
def test_new_layers_take_the_mode_of_the_layer_they_replace():
    net = TwoHeads().eval()
    small, _ = compress(net, "tt", fraction=0.5, example_input=X)
    assert not any(m.training for m in small.modules())
    net.train()
    net.trunk[4].eval()
    modes = {n: m.training for n, m in net.named_modules()}
    small, _ = compress(net, "tt", fraction=0.5, example_input=X)
    assert {n: m.training for n, m in net.named_modules()} == modes  # original untouched
    assert small.trunk[2].training and not small.trunk[4].training
    assert all(m.training for m in small.trunk[2].modules())
    assert small.trunk[7].training


def test_layer_inputs_restore_each_module_mode_and_take_a_tuple():
    two = TwoInputs().train()
    two.mid.eval()
    shapes = layer_inputs(two, (torch.randn(2, 3, 6, 6), torch.randn(2, 1, 6, 6)), ["mid", "head"])
    assert shapes == {"mid": (2, 16, 6, 6), "head": (2, 16)}
    assert two.training and two.stem_a.training and not two.mid.training


# -- pruned and parametrized -----------------------------------------------------------------
def test_pruned_model_compresses_from_the_effective_weight():
    net = TwoHeads()
    prune.l1_unstructured(net.trunk[0], "weight", amount=0.5)
    prune.l1_unstructured(net.trunk[2], "weight", amount=0.5)
    masked = (net.trunk[2].weight_orig * net.trunk[2].weight_mask).detach()
    with torch.no_grad():
        net.trunk[2].weight_orig.mul_(1.5)  # stale `weight` until the next forward
    masked = masked * 1.5
    small, report = compress(net, "tucker2", fraction=0.5)
    layer = small.trunk[2]
    assert isinstance(layer, TNConv2d) and not layer._forward_pre_hooks
    assert not hasattr(layer, "weight_mask")
    r = report.layers[0]
    assert r.name == "trunk.2" and r.params_before == 8 * 16 * 9 + 16
    assert (r.error_fro, r.error_spectral) == pytest.approx(kernel_errors(masked, layer.weight))
    assert any("torch.nn.utils.prune" in n and "trunk.2" in n for n in report.notes)
    # the pruned first layer is copied, still pruned, on its own parameters
    first = small.trunk[0]
    assert hasattr(first, "weight_orig") and first.weight_orig is not net.trunk[0].weight_orig
    torch.testing.assert_close(first.weight, first.weight_orig * first.weight_mask)
    assert first.weight.grad_fn is not None
    torch.testing.assert_close(first(X), net.trunk[0](X))
    assert hasattr(net.trunk[2], "weight_orig")  # the original keeps its pruning


def test_deepcopy_of_weight_norm_and_parametrized_models():
    net = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(net[1])
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(net)
    twin = _deepcopy(net)
    assert twin[1].weight_g is not net[1].weight_g
    torch.testing.assert_close(twin[1].weight, net[1].weight)
    small, report = compress(net, "svd", ranks=6)
    assert isinstance(small[1], TNLinear) and "weight_norm" in " ".join(report.notes)
    assert report.layers[0].error_fro < 1e-6  # full rank: exact on the effective weight

    class Sym(nn.Module):
        def forward(self, w):
            return w.triu() + w.triu(1).T

    net = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2))
    parametrize.register_parametrization(net[1], "weight", Sym())
    small, report = compress(net, "svd", ranks=2)
    (r,) = report.layers
    assert isinstance(small[1], TNLinear) and "parametrize" in " ".join(report.notes)
    assert r.params_before == 42
    assert r.error_fro == pytest.approx(kernel_errors(net[1].weight, small[1].weight)[0])
    assert parametrize.is_parametrized(net[1])


# -- report ------------------------------------------------------------------------------------
def _np_errors(dense, approx):
    w = dense.detach().double().reshape(dense.shape[0], -1).numpy()
    d = w - approx.detach().double().reshape(w.shape).numpy()
    return (
        np.linalg.norm(d, "fro") / np.linalg.norm(w, "fro"),
        np.linalg.norm(d, 2) / np.linalg.norm(w, 2),
    )


@pytest.mark.parametrize("fmt", ["tt", "cp", "grouped", {"conv": "tucker2", "linear": "svd"}])
def test_report_errors_equal_a_recomputation(fmt):
    net = TwoHeads()
    opts = {"channel_groups": 2} if fmt == "grouped" else {}
    small, report = compress(net, fmt, fraction=0.3, skip=("first", "reg"), **opts)
    assert len(report.layers) == 4
    for r in report.layers:
        fro, spec = _np_errors(net.get_submodule(r.name).weight, small.get_submodule(r.name).weight)
        assert r.error_fro == pytest.approx(fro, abs=1e-6) and r.error_fro > 1e-3
        assert r.error_spectral == pytest.approx(spec, abs=1e-6) and r.error_spectral > 1e-3


def test_kernel_errors():
    torch.manual_seed(3)
    big = torch.randn(300, 400) * torch.logspace(0, -2, 400)  # Lanczos above 256 rows
    approx = big + 1e-2 * torch.randn(300, 400)
    fro, spec = _np_errors(big, approx)
    assert kernel_errors(big, approx) == pytest.approx((fro, spec), rel=1e-9)
    assert kernel_errors(big, big) == (0.0, 0.0)
    assert kernel_errors(torch.zeros(300, 300), torch.zeros(300, 300)) == (0.0, 0.0)
    w = torch.diag(torch.tensor([3.0, 4.0]))
    assert kernel_errors(w, torch.diag(torch.tensor([3.0, 0.0]))) == pytest.approx((0.8, 1.0))
    assert kernel_errors(torch.zeros(2, 2), torch.zeros(2, 2)) == (0.0, 0.0)
    assert kernel_errors(torch.zeros(2, 2), torch.ones(2, 2)) == (math.inf, math.inf)
    with pytest.raises(ValueError, match=r"shapes differ: \(2, 2\) vs \(4,\)"):
        kernel_errors(w, torch.zeros(4))


def test_report_flops_times_and_totals():
    net = TwoHeads()
    small, report = compress(net, "tucker2", fraction=0.3, example_input=X, skip=("first", "reg"))
    by = {r.name: r for r in report.layers}
    conv = by["trunk.2"]
    assert conv.flops_before == 2 * 2 * 16 * 8 * 9 * 64 == dense_flops(net.trunk[2], X[:, :8].shape)
    info = small.trunk[2].plan_info((2, 8, 8, 8))
    row = next(r for r in info.rows if r["name"] == info.chosen)
    assert (conv.plan, conv.flops_after, conv.seconds_after) == (
        info.chosen,
        row["flops"],
        row["seconds"],
    )
    table = cost.costs_for("cpu")
    lin = by["cls"]
    n_flops = 2 * 2 * 32 * 10
    expected = table.step_time("matmul", n_flops, 4 * 2 * (32 + 10))
    assert lin.flops_before == n_flops and lin.seconds_before == pytest.approx(expected, rel=1e-12)
    assert dense_seconds(net.cls, (2, 32)) == pytest.approx(expected, rel=1e-12)
    assert dense_seconds(net.cls, (1, 2, 32), "cpu", torch.float64) == pytest.approx(
        table.step_time("matmul", n_flops, 8 * 2 * 42), rel=1e-12
    )
    conv_est = table.step_time("conv", conv.flops_before, 4 * (2 * 8 * 64 + 2 * 16 * 64), 2)
    assert conv.seconds_before == pytest.approx(conv_est, rel=1e-9)
    assert report.flops_before == sum(r.flops_before for r in report.layers)
    assert report.flops_after == sum(r.flops_after for r in report.layers)
    assert report.seconds_before == pytest.approx(sum(r.seconds_before for r in report.layers))
    assert report.seconds_after == pytest.approx(sum(r.seconds_after for r in report.layers))
    assert report.params_before == sum(r.params_before for r in report.layers)
    assert report.params_after == sum(r.params_after for r in report.layers)
    assert report.forward_before > 0 and report.forward_after > 0
    assert report.input_shape == (2, 3, 8, 8)
    assert report.slower == [r.name for r in report.layers if r.seconds_after > r.seconds_before]
    text = str(report)
    assert "model forward (measured, median)" in text and "est. ms" in text
    line = next(s for s in text.splitlines() if s.startswith("cls "))
    assert f"{lin.error_fro:6.3f}" in line and f"{lin.seconds_before * 1e3:.3f}->" in line
    assert f"{lin.flops_before / 1e6:.1f}->" in line
    rows = report.rows()
    assert rows[0]["name"] == "trunk.2" and "error_spectral" in rows[0]
    _, plain = compress(net, "tucker2", fraction=0.3, skip=("first", "reg"))
    assert plain.flops_before is None and plain.seconds_after is None
    assert plain.forward_before is None and plain.layers[0].speedup is None
    assert plain.input_shape is None
    assert "model forward" not in str(plain) and "MFLOP," not in str(plain)
    _, quiet = compress(net, "tucker2", fraction=0.3, example_input=X, measure_time=False)
    assert quiet.forward_before is None and quiet.flops_before is not None
    _, two = compress(
        TwoInputs(),
        "tt",
        fraction=0.5,
        skip=(),
        example_input=(
            torch.randn(1, 3, 6, 6),
            torch.randn(1, 1, 6, 6),
        ),
    )
    assert two.input_shape == ((1, 3, 6, 6), (1, 1, 6, 6)) and two.flops_before > 0


# -- min_speedup -------------------------------------------------------------------------------
def test_min_speedup_keeps_slow_layers_dense():
    net = TwoHeads()
    x = torch.randn(1, 3, 8, 8)
    _, flagged = compress(net, "svd", fraction=0.5, example_input=x, skip=("first", "last"))
    speed = {r.name: r.speedup for r in flagged.layers}
    slow = [n for n, s in speed.items() if s < 1]
    assert slow and flagged.slower == slow
    assert any("slower than dense" in n and slow[0] in n for n in flagged.notes)
    assert " slower" in next(s for s in str(flagged).splitlines() if s.startswith(slow[0]))
    name = slow[0]
    s = speed[name]
    small, report = compress(
        net, "svd", fraction=0.5, example_input=x, min_speedup=s * 1.001, measure_time=False
    )
    r = next(r for r in report.layers if r.name == name)
    assert r.kept_dense and r.format == "dense" and r.ranks == () and r.plan is None
    assert r.params_after == r.params_before and r.flops_after == r.flops_before
    assert r.seconds_after == r.seconds_before and r.error_fro == 0 == r.error_spectral
    assert type(small.get_submodule(name)) is type(net.get_submodule(name))
    assert any(f"layer {name!r} kept dense" in n for n in report.notes)
    assert "kept dense" in str(report)
    small, report = compress(
        net, "svd", fraction=0.5, example_input=x, min_speedup=s * 0.999, measure_time=False
    )
    r = next(r for r in report.layers if r.name == name)
    assert not r.kept_dense and isinstance(small.get_submodule(name), (TNConv2d, TNLinear))


def test_min_speedup_with_a_cost_table_where_compressed_is_slow():
    conv = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 32, 3), nn.Conv2d(32, 4, 3))
    x = torch.randn(4, 3, 12, 12)
    base = cost.costs_for("cpu")
    slow = cost.DeviceCosts(
        dict(base.rate),
        dict(base.bandwidth),
        {k: 1.0 for k in base.overhead},  # every call costs a second: fewer steps win
        "test",
    )
    cost.set_costs("cpu", slow)
    try:
        small, report = compress(
            conv, "cp", fraction=0.2, example_input=x, min_speedup=1.0, measure_time=False
        )
    finally:
        cost.set_costs("cpu", None)
    (r,) = report.layers
    assert r.kept_dense and type(small[1]) is nn.Conv2d


@pytest.mark.parametrize("value", [0, -1.0, math.inf, float("nan"), True, np.bool_(True), "2"])
def test_min_speedup_is_checked(value):
    with pytest.raises(ValueError, match="min_speedup must be a number > 0"):
        compress(TwoHeads(), "tt", fraction=0.5, example_input=X, min_speedup=value)


def test_min_speedup_needs_an_example_input():
    with pytest.raises(ValueError, match="min_speedup needs example_input"):
        compress(TwoHeads(), "tt", fraction=0.5, min_speedup=1.0)


# -- arguments -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fraction", [np.float32(0.3), np.float64(0.3), torch.tensor(0.3), np.array(0.3)]
)
def test_fraction_as_numpy_or_tensor_number(fraction):
    net = TwoHeads()
    _, ref = compress(net, "tt", fraction=0.3)
    _, report = compress(net, "tt", fraction=fraction)
    assert [r.ranks for r in report.layers] == [r.ranks for r in ref.layers]


@pytest.mark.parametrize(
    "fraction, message",
    [
        (torch.tensor([0.3]), r"fraction must be a number in \(0, 1\], got a torch.float32 tensor"),
        (torch.tensor(True), "torch.bool tensor"),
        (torch.tensor(1.5), r"fraction must be in \(0, 1\]"),
        (np.float32(0.0), r"fraction must be in \(0, 1\]"),
        (torch.tensor(0.3 + 0j), "torch.complex64 tensor"),
        (np.bool_(True), "fraction must be a number"),
    ],
)
def test_bad_fractions(fraction, message):
    with pytest.raises(ValueError, match=message):
        compress(TwoHeads(), "tt", fraction=fraction)


def test_plan_and_flags_are_checked_before_work():
    net = TwoHeads()
    before = copy.deepcopy(net.state_dict())
    for plan, message in [
        ("fast", r"plan='fast' is not a forward plan of conv layer 'trunk.2'"),
        ("direct", r"plan='direct' is not a forward plan of conv layer"),
        ("", "plan must be 'auto', 'measure' or a plan name"),
        (3, "plan must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            compress(net, "tt", fraction=0.5, plan=plan, inplace=True)
    with pytest.raises(ValueError, match="plan='staged' is not a forward plan of linear layer"):
        compress(net, "tt", fraction=0.5, plan="staged", skip=("last",))
    with pytest.raises(TypeError, match="inplace must be a bool"):
        compress(net, "tt", fraction=0.5, inplace=1)
    with pytest.raises(TypeError, match="measure_time must be a bool"):
        compress(net, "tt", fraction=0.5, measure_time="yes")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    small, report = compress(
        net,
        "tt",
        fraction=0.5,
        plan="staged",
        skip=("first", "last", "trunk.7"),
        example_input=X,
        measure_time=False,
    )
    assert all(r.plan.startswith("staged") for r in report.layers)
    small, report = compress(
        net,
        "svd",
        fraction=0.5,
        plan="direct",
        layers="trunk.7",
        example_input=X,
        measure_time=False,
    )
    assert [r.plan for r in report.layers] == ["direct"]
    small, report = compress(
        net, "tucker2", fraction=0.5, plan="dense", example_input=X, measure_time=False
    )
    assert {r.plan for r in report.layers} == {"dense"}
    small, report = compress(
        net,
        "tucker2",
        fraction=0.5,
        plan="measure",
        layers="trunk.2",
        example_input=X,
        measure_time=False,
    )
    assert small.trunk[2].plan == "measure"


def test_integer_inputs_and_non_tensor_outputs():
    class Lookup(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x, idx):
            h = self.a(x) + self.b(self.emb(idx))
            return {"out": self.c(h), "count": idx.numel(), "tag": "y"}

    net = Lookup()
    ends = end_layers(net, (torch.randn(5, 4), torch.randint(0, 10, (5,))))
    assert ends.method == "hooks" and ends.first == ("a",) and ends.last == ("c",)
    assert select_layers(net, skip="last") == ["a", "b"]


def test_format_as_a_function_and_bad_format_values():
    net = TwoHeads()

    def pick(name, module):
        return ("tt", {}) if isinstance(module, nn.Conv2d) else None

    small, report = compress(net, pick, fraction=0.5)
    assert [(r.name, r.format) for r in report.layers] == [("trunk.2", "tt"), ("trunk.4", "tt")]
    assert (
        report.layers[0].compression == report.layers[0].params_before / small.trunk[2].num_params
    )
    with pytest.raises(ValueError, match="layer 'trunk.2': a format must be a name or"):
        compress(net, {"conv": 3}, fraction=0.5)


def test_allocation_dense_choices_and_the_default_skip_do_not_apply():
    from tensornet.nn import Allocation, LayerChoice

    net = TwoHeads()
    choices = {
        "trunk.0": LayerChoice("trunk.0", "dense", (), 1, 224, None, 0.0, 224),
        "trunk.2": LayerChoice("trunk.2", "grouped", (4,), 2, 0, None, 0.0, 1168),
        "cls": LayerChoice("cls", "grouped", (2,), 1, 0, None, 0.0, 330),
    }
    alloc = Allocation("uniform", "params", 0.5, choices, 0, None, 0, None)
    small, report = compress(net, allocation=alloc)
    assert [r.name for r in report.layers] == ["trunk.2", "cls"]  # cls: "last" not skipped
    assert type(small.trunk[0]) is nn.Conv2d and isinstance(small.cls, TNLinear)
    assert small.trunk[2].format == "grouped" and small.trunk[2].ranks == (4,)


def test_compress_on_each_device(device):
    net = TwoHeads().to(device)
    x = X.to(device)
    small, report = compress(net, "tucker2", fraction=0.5, example_input=x, min_speedup=1e-6)
    assert [r.name for r in report.layers] == ["trunk.2", "trunk.4", "trunk.7"]
    assert small.trunk[2].weight.device == x.device and small(x)["logits"].device == x.device
    for r in report.layers:
        assert r.seconds_before > 0 and r.seconds_after > 0 and not r.kept_dense
        fro, spec = _np_errors(
            net.get_submodule(r.name).weight.cpu(), small.get_submodule(r.name).weight.cpu()
        )
        assert (r.error_fro, r.error_spectral) == pytest.approx((fro, spec), abs=1e-6)
    table = cost.costs_for(x.device.type)
    n_flops = 2 * 2 * (16 * 9) * 32
    assert report.layers[2].seconds_before == pytest.approx(
        table.step_time("matmul", n_flops, 4 * 2 * (144 + 32)), rel=1e-12
    )
    assert report.forward_before > 0 and report.forward_after > 0


def test_a_layer_the_example_does_not_run():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.spare, self.b = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(self.a(x).relu())

    x = torch.randn(3, 8)
    small, report = compress(
        Unused(), "svd", ranks=2, skip=(), example_input=x, min_speedup=1e3, measure_time=False
    )
    spare = next(r for r in report.layers if r.name == "spare")
    assert spare.flops_before is None and spare.seconds_after is None and not spare.kept_dense
    assert isinstance(small.spare, TNLinear) and type(small.a) is nn.Linear
    assert "layer 'spare' did not run on example_input: no FLOPs or times" in report.notes
    assert report.flops_before is None and report.seconds_before is None


def test_report_text():
    net = TwoHeads()
    small, report = compress(
        net, "tt", fraction=0.3, example_input=X, skip=("first", "reg"), min_speedup=1e-9
    )
    report.forward_before, report.forward_after = 2e-3, 1e-3
    lines = str(report).splitlines()
    assert lines[0] == (
        "layer                  format    ranks                     params         MFLOP"
        "         est. ms  err F  err 2"
    )
    assert lines[1] == "-" * len(lines[0])
    r = report.layers[0]
    ranks = ",".join(map(str, r.ranks))
    assert lines[2] == (
        f"trunk.2                tt        {ranks:<14} "
        f"{f'{r.params_before:,}->{r.params_after:,}':>17}"
        f" {f'{r.flops_before / 1e6:.1f}->{r.flops_after / 1e6:.1f}':>13}"
        f" {f'{r.seconds_before * 1e3:.3f}->{r.seconds_after * 1e3:.3f}':>15}"
        f" {r.error_fro:6.3f} {r.error_spectral:6.3f}" + (" slower" if r.slower else "")
    )
    total = next(s for s in lines if s.startswith("layers: "))
    assert total == (
        f"layers: {report.params_before:,} -> {report.params_after:,} parameters, "
        f"{report.flops_before / 1e6:.1f}->{report.flops_after / 1e6:.1f} MFLOP, "
        f"{report.seconds_before * 1e3:.3f}->{report.seconds_after * 1e3:.3f} ms estimated "
        "for input (2, 3, 8, 8)"
    )
    model = next(s for s in lines if s.startswith("model: "))
    assert model == (
        f"model: {report.model_params_before:,} -> {report.model_params_after:,} parameters "
        f"({100 * report.params_ratio:.1f}%)"
    )
    assert "model forward (measured, median): 2.000 -> 1.000 ms (2.00x)" in lines
    bare = CompressionReport(
        [LayerReport("x", "conv", "tt", (100, 200, 300, 400, 500), 10, 5, None, None, None)], 20, 15
    )
    lines = str(bare).splitlines()
    assert lines[2] == f"x{'':21} tt        100,200,300...{'10->5':>18}{'':30} {0:6.3f} {0:6.3f}"
    assert lines[3:] == ["layers: 10 -> 5 parameters", "model: 20 -> 15 parameters (75.0%)"]
