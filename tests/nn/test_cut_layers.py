"""Layers in the ``"cut"`` format: the truncation study's operation run as a compressed layer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensornet.formats import CutNetwork
from tensornet.nn import (
    TNConv1d,
    TNConv2d,
    TNConv3d,
    TNConvTranspose2d,
    TNLinear,
    compress,
    load,
    save,
    to_standard,
    truncate_kernel,
)
from tensornet.nn.functional import conv_candidates, linear_candidates

F64 = torch.float64


def conv(cin=6, cout=10, k=3, **kw):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, dtype=F64, **kw)


def dense_conv(layer, x):
    g = layer.geometry
    return F.conv2d(g.pad(x), layer.weight.detach(), layer.bias, g.stride, 0, g.dilation)


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize(
    "cuts, ranks",
    [
        ([("out", "kh")], 4),
        ([("out",)], 3),
        ([("out", "kh"), ("out",)], (5, 3)),
        ([("out",), ("kh",), ("kw",)], (4, 2, 2)),
        ([("out",), ("in",), ("out", "in")], (5, 4, 6)),
    ],
)
def test_every_candidate_agrees_with_the_dense_conv(cuts, ranks):
    layer = TNConv2d.from_conv(conv(stride=2, padding=1), "cut", cuts=cuts, ranks=ranks)
    assert layer.structure.option("cuts") == tuple(tuple(c) for c in cuts)
    x = torch.randn(2, 6, 9, 8, dtype=F64)
    ref = dense_conv(layer, x)
    plans = conv_candidates(layer.structure, layer.geometry, x.shape)
    assert {"dense", "patches"} <= {p.name for p in plans}
    for plan in plans:
        y = plan(x, layer.factors) + layer.bias.reshape(1, -1, 1, 1)
        assert rel(y, ref) < 1e-8, plan.name
    torch.testing.assert_close(layer(x), ref, rtol=1e-8, atol=1e-10)


def test_one_separable_cut_runs_as_two_one_dimensional_convs():
    layer = TNConv2d.from_conv(conv(padding=1), "cut", cuts=[("out", "kh")], ranks=4)
    x = torch.randn(2, 6, 7, 7, dtype=F64)
    plans = {p.name: p for p in conv_candidates(layer.structure, layer.geometry, x.shape)}
    sep = plans["separable[w=G1 h=G0]"]  # 1 x kw from in to r, then kh x 1 from r to out
    assert len([s for s in sep.steps if type(s).__name__ == "ConvStep"]) == 2
    assert sep.flops < plans["dense"].flops
    y = sep(x, layer.factors) + layer.bias.reshape(1, -1, 1, 1)
    assert rel(y, dense_conv(layer, x)) < 1e-12


def test_the_layer_holds_the_studys_truncated_kernel():
    c = conv()
    layer = TNConv2d.from_conv(c, "cut", cuts=[("out", "kh")], ranks=3)
    truncated, report = truncate_kernel(c, ["out", "kh"], 3)
    torch.testing.assert_close(layer.weight, truncated.weight, rtol=1e-10, atol=1e-12)
    assert layer.decomposition_error == pytest.approx(report.error, rel=1e-9)
    # and the study's truncation runs on the layer itself, through its bond
    smaller, rep2 = truncate_kernel(layer, ["out", "kh"], 2)
    assert smaller.format == "cut" and smaller.ranks == (2,)
    ref, _ = truncate_kernel(truncated, ["out", "kh"], 2)
    torch.testing.assert_close(smaller.weight, ref.weight, rtol=1e-9, atol=1e-11)


def test_default_cut_of_conv_kernels_and_matrices():
    layer = TNConv2d.from_conv(conv(), "cut", fraction=0.4)
    assert layer.structure.option("cuts") == (("out", "kh"),)
    assert layer.num_params - 10 <= 0.4 * 10 * 6 * 9
    torch.manual_seed(1)
    c1 = nn.Conv1d(4, 6, 5, dtype=F64)
    l1 = TNConv1d.from_conv(c1, "cut", ranks=3)
    assert l1.structure.option("cuts") == (("out", "k"),)
    x = torch.randn(2, 4, 11, dtype=F64)
    torch.testing.assert_close(
        l1(x), F.conv1d(x, l1.weight.detach(), l1.bias), rtol=1e-8, atol=1e-10
    )


def test_linear_layers():
    torch.manual_seed(2)
    lin = nn.Linear(12, 8, dtype=F64)
    layer = TNLinear.from_linear(lin, "cut", ranks=3)
    assert layer.structure.option("cuts") == (("out",),)
    s = torch.linalg.svdvals(lin.weight.detach())
    assert layer.decomposition_error == pytest.approx(float(s[3:].norm() / s.norm()), rel=1e-10)
    x = torch.randn(5, 12, dtype=F64)
    ref = x @ layer.weight.detach().T + layer.bias
    for plan in linear_candidates(layer.structure, x.shape):
        torch.testing.assert_close(plan(x, layer.factors) + layer.bias, ref)


def model():
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 6, 3, padding=1),
    ).double()


def test_compress_save_load_and_export(tmp_path):
    net = model()
    spec = ("cut", {"cuts": [["out", "kh"]]})
    small, report = compress(net, spec, fraction=0.5, skip=(), measure_time=False)
    layers = [m for m in small.modules() if isinstance(m, TNConv2d)]
    assert len(layers) == 3 and all(m.format == "cut" for m in layers)
    for m in layers:
        assert m.structure.num_params <= 0.5 * m.weight.numel()
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    out = small(x)
    path = tmp_path / "cut.safetensors"
    save(small, path)
    again = model()
    load(again, path)
    assert isinstance(again[2], TNConv2d) and again[2].structure == small[2].structure
    torch.testing.assert_close(again(x), out, rtol=0, atol=0)
    torch.testing.assert_close(to_standard(small)(x), out, rtol=1e-9, atol=1e-10)


def test_the_format_class_is_the_layers_format():
    layer = TNConv2d.from_conv(conv(), "cut", cuts=[("out", "kh"), ("out",)], ranks=(5, 3))
    fmt = layer.to_format()
    assert isinstance(fmt, CutNetwork) and fmt.cuts == (("out", "kh"), ("out",))
    torch.testing.assert_close(fmt.to_dense(), layer.weight.detach())


def test_conv3d_and_transposed_convs_take_the_default_cut():
    torch.manual_seed(4)
    c3 = nn.Conv3d(4, 6, 3, padding=1, dtype=F64)
    l3 = TNConv3d.from_conv(c3, "cut", ranks=5)
    assert l3.structure.option("cuts") == (("out", "kd"),)
    x = torch.randn(2, 4, 5, 5, 5, dtype=F64)
    ref = F.conv3d(x, l3.weight.detach(), l3.bias, padding=1)
    torch.testing.assert_close(l3(x), ref, rtol=1e-8, atol=1e-10)
    ct = nn.ConvTranspose2d(4, 6, 3, stride=2, dtype=F64)
    lt = TNConvTranspose2d.from_conv(ct, "cut", ranks=5)
    assert lt.structure.option("cuts") == (("in", "kh"),)  # torch's (in, out, kh, kw) layout
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    ref = F.conv_transpose2d(x, lt.weight.detach(), lt.bias, stride=2)
    torch.testing.assert_close(lt(x), ref, rtol=1e-8, atol=1e-10)
