"""Channels-last plans of 2-d convs: every plan on a channels-last input, same values and layout."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensornet.formats import get_format
from tensornet.nn import TNConv2d, TNConv3d, TNConvTranspose2d, TNLinear, fold_batchnorm
from tensornet.nn.functional import ConvGeometry, conv_candidates
from tensornet.nn.layers import conv_plan_names
from tensornet.nn.layout import CHANNELS_LAST, CONTIGUOUS, channels_last_plan, input_layout
from tensornet.nn.plans import ConvStep, LayoutStep, MatmulStep, PointwiseStep, WeightExpr

F64 = torch.float64
CL = torch.channels_last
FORMATS = [
    ("tucker2", {}),
    ("tt", {}),
    ("cp", {}),
    ("tucker", {}),
    ("svd", {}),
    ("grouped", {"channel_groups": 2}),
]


def test_input_layout():
    x = torch.zeros(2, 3, 4, 5)
    assert input_layout(x) == CONTIGUOUS
    assert input_layout(x.contiguous(memory_format=CL)) == CHANNELS_LAST
    assert input_layout(x.permute(0, 1, 3, 2)) == CONTIGUOUS  # neither layout
    assert input_layout(torch.zeros(2, 3, 1, 1).contiguous(memory_format=CL)) == CONTIGUOUS
    assert input_layout(torch.zeros(2, 1, 4, 4).contiguous(memory_format=CL)) == CONTIGUOUS
    assert input_layout(torch.zeros(3, 4, 5)) == CONTIGUOUS
    assert (
        input_layout(torch.zeros(1, 2, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d))
        == CONTIGUOUS
    )


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize(("stride", "groups"), [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize(("fmt", "opts"), FORMATS)
def test_every_plan_on_a_channels_last_input_gives_the_same_values_channels_last(
    fmt, opts, stride, groups, dtype
):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, stride=stride, padding=1, groups=groups).to(dtype)
    layer = TNConv2d.from_conv(conv, fmt, fraction=0.5, **opts)
    x = torch.randn(3, 8, 7, 7, dtype=dtype)
    xc = x.contiguous(memory_format=CL)
    tol = 1e-12 if dtype == F64 else 1e-5
    ran = 0
    for name in conv_plan_names(layer.structure):
        layer.plan = name
        try:
            ref = layer(x)
        except ValueError:  # a named plan impossible for this shape
            continue
        out = layer(xc)
        assert out.is_contiguous(memory_format=CL), name
        assert (out - ref).abs().max() <= tol * ref.abs().max(), name
        ran += 1
    assert ran >= 3


def test_channels_last_plans_are_cached_apart_and_contiguous_input_stays_contiguous():
    layer = TNConv2d(6, 4, 3, padding=1, format="tucker2", ranks=(2, 3), dtype=F64)
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    y = layer(x)
    yc = layer(x.contiguous(memory_format=CL))
    assert y.is_contiguous() and not y.is_contiguous(memory_format=CL)
    assert yc.is_contiguous(memory_format=CL) and not yc.is_contiguous()
    keys = list(layer._plans)
    assert [k[-1] for k in keys] == [CONTIGUOUS, CHANNELS_LAST]
    assert keys[0][:-1] == keys[1][:-1] == ((2, 6, 5, 5), F64, "cpu", "auto")
    plain, last = layer._plans.values()
    assert plain.memory_format == torch.contiguous_format
    assert last.memory_format == CL


def _tucker2_plans(shape=(2, 6, 5, 5)):
    s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3), legs=("out", "in", "kh", "kw"))
    geo = ConvGeometry.from_conv_args((3, 3), padding=1)
    return s, {p.name: p for p in conv_candidates(s, geo, shape)}


def test_the_rewrite_keeps_kinds_and_costs_and_the_plan_fields():
    s, plans = _tucker2_plans()
    staged = plans["staged[in=U_in conv=core out=U_out]"]
    new = channels_last_plan(staged, (2, 6, 5, 5))
    assert [type(t).__name__ for t in new.steps] == ["PointwiseStep", "ConvStep", "PointwiseStep"]
    assert [t.kind for t in new.steps] == [t.kind for t in staged.steps]
    assert [t.flops for t in new.steps] == [t.flops for t in staged.steps]
    assert [t.elements for t in new.steps] == [t.elements for t in staged.steps]
    assert [t.label for t in new.steps] == [t.label for t in staged.steps]
    assert [t.images for t in new.steps] == [t.images for t in staged.steps]
    assert new.steps[1].channels_last and not staged.steps[1].channels_last
    assert (new.name, new.family, new.output_shape) == (staged.name, staged.family, (2, 8, 5, 5))
    assert new.peak_elements == staged.peak_elements
    assert new.fuses_bias
    assert new.memory_format == CL and staged.memory_format == torch.contiguous_format
    assert new.steps[0].batch == 2 and new.steps[0].groups == 1


def test_a_plan_that_cannot_stay_channels_last_copies_in_and_out():
    s, plans = _tucker2_plans()
    patches = plans["patches"]
    new = channels_last_plan(patches, (2, 6, 5, 5))
    assert isinstance(new.steps[0], LayoutStep)
    assert new.steps[1:] == patches.steps
    assert new.steps[0].kind == "copy" and new.steps[0].flops == 0
    assert new.steps[0].label == "to channels-first"
    assert new.steps[0].elements == 2 * (2 * 6 * 5 * 5 + 2 * 8 * 5 * 5)
    tensors = {f.name: torch.randn(f.shape, dtype=F64) for f in s.factors}
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    bias = torch.randn(8, dtype=F64)
    out = new(x.contiguous(memory_format=CL), tensors, bias)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, patches(x, tensors, bias), rtol=1e-12, atol=1e-12)


def test_folded_legs_and_permutes_are_not_rewritten():
    w = WeightExpr(("a",), ("g", "o", "i"), (1, 3, 2), 0, None)
    folded = MatmulStep("matmul", 0, 0, "mm", w, (2, 3, 1, 2, 25))
    assert channels_last_plan_step(folded) is None
    conv = ConvStep("conv", 0, 0, "c", w, (6, 2, 5, 5), ConvGeometry((3, 3)))
    assert channels_last_plan_step(conv) is None  # 6 images: folded legs (batch 2)
    plain = ConvStep("conv", 0, 0, "c", w, (2, 2, 5, 5), ConvGeometry((3, 3)))
    assert channels_last_plan_step(plain).channels_last
    grouped = MatmulStep("matmul", 7, 9, "mm", w, (2, 1, 3, 2, 25))
    pw = channels_last_plan_step(grouped)
    assert isinstance(pw, PointwiseStep)
    assert (pw.groups, pw.batch, pw.weight, pw.images) == (3, 2, w, 6)
    assert (pw.kind, pw.flops, pw.elements, pw.label) == ("matmul", 7, 9, "mm")


def channels_last_plan_step(step):
    from tensornet.nn.layout import _channels_last_step

    return _channels_last_step(step, 2)


@pytest.mark.parametrize("groups", [1, 3])
def test_pointwise_step_is_the_matmul(groups):
    torch.manual_seed(1)
    w = torch.randn(groups, 4, 2, dtype=F64)
    expr = WeightExpr(("w",), ("g", "o", "i"), (groups, 4, 2), 0, lambda t: t)
    mm = MatmulStep("matmul", 0, 0, "mm", expr, (2, 1, groups, 2, 30))
    pw = PointwiseStep("matmul", 0, 0, "pw", expr, 2, groups)
    assert pw.images == mm.images == 2 * groups
    x = torch.randn(2, 2 * groups, 5, 6, dtype=F64)
    bias = torch.randn(4 * groups, dtype=F64)
    ref = mm(x, {"w": w}, bias).reshape(2, 4 * groups, 5, 6)
    torch.testing.assert_close(pw(x.contiguous(memory_format=CL), {"w": w}, bias), ref)
    torch.testing.assert_close(pw(x, {"w": w}), mm(x, {"w": w}).reshape(2, -1, 5, 6))
    x32 = x.float().contiguous(memory_format=CL)
    out = pw(x32, {"w": w.float()})
    assert out.is_contiguous(memory_format=CL)


def test_gradients_flow_through_a_channels_last_plan():
    torch.manual_seed(2)
    layer = TNConv2d(4, 5, 3, padding=1, format="tucker2", ranks=(3, 2))
    ref = copy.deepcopy(layer)
    x = torch.randn(2, 4, 6, 6)
    layer(x.contiguous(memory_format=CL)).square().sum().backward()
    ref(x).square().sum().backward()
    for name, p in layer.factors.items():
        torch.testing.assert_close(p.grad, ref.factors[name].grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-5)


def test_measure_times_channels_last_candidates_on_a_channels_last_input(monkeypatch):
    from tensornet.nn import cost

    outputs = []

    def fake(fn, device, repeat=5):
        outputs.append(fn())
        return float(len(outputs))  # the first timed plan wins

    layer = TNConv2d(6, 4, 3, padding=1, format="tucker2", ranks=(2, 3), plan="measure")
    inputs = []
    real = layer._plan_tensors
    monkeypatch.setattr(cost, "measure", fake)
    monkeypatch.setattr(layer, "_plan_tensors", lambda x: inputs.append(x) or real(x))
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=CL)
    out = layer(x)
    assert out.is_contiguous(memory_format=CL)
    assert len(outputs) >= 2 and all(o.is_contiguous(memory_format=CL) for o in outputs)
    assert [input_layout(t) for t in inputs] == [CHANNELS_LAST]
    assert inputs[0].shape == x.shape
    chosen = next(iter(layer._plans.values()))
    assert chosen.memory_format == CL and chosen.cost["measured"] == 1.0


def test_only_2d_convs_take_channels_last_plans():
    lin = TNLinear(6, 4, format="svd", ranks=2)
    assert not lin.channels_last_plans
    conv3 = TNConv3d(2, 3, 3, format="tucker2", ranks=(2, 2))
    assert not conv3.channels_last_plans
    assert TNConv2d.channels_last_plans
    up = TNConvTranspose2d(4, 3, 2, stride=2, format="cp", ranks=2)
    y = up(torch.randn(2, 4, 3, 3).contiguous(memory_format=CL))
    assert y.is_contiguous() and [k[-1] for k in up._plans] == [CONTIGUOUS]


def test_a_whole_model_channels_last_and_folded_matches_the_original():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(3, 3), bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        TNConv2d(8, 6, 3, stride=2, padding=1, format="cp", ranks=4),
        nn.BatchNorm2d(6),
    ).double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    fast = fold_batchnorm(net).to(memory_format=CL)
    x = torch.randn(2, 3, 9, 9, dtype=F64)
    with torch.no_grad():
        ref = net(x)
        out = fast(x.contiguous(memory_format=CL))
    assert out.is_contiguous(memory_format=CL)
    assert (out - ref).abs().max() <= 1e-10 * ref.abs().max()
    assert F.relu(out).shape == (2, 6, 5, 5)


@pytest.mark.parametrize("fmt", ["tucker2", "cp"])
def test_gradcheck_on_a_channels_last_float64_input(fmt):
    torch.manual_seed(4)
    ranks = (2, 2) if fmt == "tucker2" else 2
    layer = TNConv2d(3, 4, 3, padding=1, format=fmt, ranks=ranks, dtype=F64)
    x = torch.randn(2, 3, 4, 4, dtype=F64).contiguous(memory_format=CL).requires_grad_()
    assert layer(x).is_contiguous(memory_format=CL)
    assert torch.autograd.gradcheck(layer, (x,))
    # the factors' gradients are those of the channels-first forward
    ref = copy.deepcopy(layer)
    layer(x).sum().backward()
    ref(x.detach().contiguous()).sum().backward()
    for name, p in layer.factors.items():
        torch.testing.assert_close(p.grad, ref.factors[name].grad, rtol=1e-10, atol=1e-12)
