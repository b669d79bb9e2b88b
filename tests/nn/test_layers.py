"""TNConv2d / TNLinear: every format reproduces the dense layer, every candidate forward agrees,
gradients are exact, initialisation matches nn.Conv2d's statistics, bad input is refused."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tensornet.formats import format_names
from tensornet.nn import TNConv2d, TNLinear
from tensornet.nn.functional import ConvGeometry, conv_candidates, linear_candidates

F64 = torch.float64
FORMATS = sorted(format_names())
EXACT = [f for f in FORMATS if f != "cp"]  # CP has no exact decomposition at a given rank


def options(fmt, out_channels=8, in_channels=6):
    if fmt == "ttmatrix":
        return {"out_dims": (2, out_channels // 2), "in_dims": (2, in_channels // 2)}
    if fmt == "grouped":
        return {"channel_groups": 2}
    if fmt == "ht":
        return {"tree": ((0, 1), (2, 3))}
    return {}


def dense_conv(layer, x):
    g = layer.geometry
    k = layer.weight
    if g.padding_mode == "zeros":
        return F.conv2d(
            F.pad(x, (g.padding[2], g.padding[3], g.padding[0], g.padding[1])),
            k,
            layer.bias,
            g.stride,
            0,
            g.dilation,
        )
    return F.conv2d(g.pad(x), k, layer.bias, g.stride, 0, g.dilation)


def rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("fmt", EXACT)
def test_full_rank_layer_reproduces_the_conv(fmt):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1, dtype=F64)
    layer = TNConv2d.from_conv(conv, fmt, **options(fmt))
    x = torch.randn(3, 6, 9, 11, dtype=F64)
    assert rel(layer(x), conv(x)) < 1e-10
    assert layer.decomposition_error < 1e-12


geometry = st.fixed_dictionaries(
    {
        "kernel": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
        "padding_mode": st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
        "channels": st.tuples(st.sampled_from([2, 4, 6]), st.sampled_from([2, 4, 8])),
        "fmt": st.sampled_from(EXACT),
    }
)


@given(geometry)
def test_every_format_and_geometry_reproduces_the_dense_conv(g):
    cin, cout = g["channels"]
    kh, kw = g["kernel"]
    conv = nn.Conv2d(
        cin,
        cout,
        (kh, kw),
        g["stride"],
        g["padding"],
        g["dilation"],
        padding_mode=g["padding_mode"],
        dtype=F64,
    )
    layer = TNConv2d.from_conv(conv, g["fmt"], **options(g["fmt"], cout, cin))
    size = 2 * max(g["padding"]) + 2 * max(kh, kw) + 3
    x = torch.randn(2, cin, size, size + 1, dtype=F64)
    assert rel(layer(x), conv(x)) < 1e-8


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "args",
    [
        dict(stride=1, padding=1),
        dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
        dict(padding=1, padding_mode="reflect"),
        dict(padding="same", dilation=2, padding_mode="circular"),
    ],
)
def test_every_candidate_gives_the_same_output(fmt, args):
    torch.manual_seed(1)
    ranks = {"cp": 5}.get(fmt)
    layer = (
        TNConv2d(6, 8, 3, format=fmt, ranks=ranks, dtype=F64, **args, **options(fmt))
        if ranks
        else None
    )
    if layer is None:
        layer = TNConv2d.from_conv(
            nn.Conv2d(6, 8, 3, dtype=F64, **args), fmt, fraction=0.6, **options(fmt)
        )
    x = torch.randn(2, 6, 9, 8, dtype=F64)
    ref = dense_conv(layer, x)
    plans = conv_candidates(layer.structure, layer.geometry, x.shape)
    assert {"dense", "patches"} <= {p.name for p in plans} and len(plans) >= 3
    for plan in plans:
        y = plan(x, layer.factors) + layer.bias.reshape(1, -1, 1, 1)
        assert rel(y, ref) < 1e-12, (plan.name, plan.describe())


@pytest.mark.parametrize("fmt", FORMATS)
def test_forced_plans_and_plan_info(fmt):
    layer = TNConv2d(6, 8, 3, padding=1, format=fmt, fraction=0.5, dtype=F64, **options(fmt))
    x = torch.randn(2, 6, 7, 7, dtype=F64)
    out = layer(x)
    info = layer.plan_info(x.shape)
    assert info.chosen in {r["name"] for r in info.rows}
    assert min(info.rows, key=lambda r: r["seconds"])["name"] == info.chosen
    assert info.chosen in str(info)
    for family in ("dense", "patches"):
        forced = TNConv2d(
            6, 8, 3, padding=1, format=fmt, fraction=0.5, plan=family, dtype=F64, **options(fmt)
        )
        forced.load_state_dict(layer.state_dict())
        torch.testing.assert_close(forced(x), out)
        assert next(iter(forced._plans.values())).name == family
    with pytest.raises(ValueError, match="unknown plan 'magic'; valid plans are 'auto'"):
        TNConv2d(6, 8, 3, format=fmt, fraction=0.5, plan="magic", **options(fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_gradcheck_float64(fmt):
    torch.manual_seed(2)
    ranks = {"cp": 3, "grouped": 2, "svd": 3}.get(fmt)
    kw = {"ranks": ranks} if ranks else {"fraction": 0.7}
    layer = TNConv2d(
        4, 4, 3, stride=1, padding=1, format=fmt, dtype=F64, **kw, **options(fmt, 4, 4)
    )
    x = torch.randn(1, 4, 4, 4, dtype=F64, requires_grad=True)
    params = list(layer.factors.values())

    def f(x, *ps):
        tensors = dict(zip(layer.factors.keys(), ps))
        return layer._plan_for(x)(x, tensors)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("fmt", ["tt", "cp", "tucker2", "grouped"])
def test_every_candidate_has_the_same_gradient(fmt):
    torch.manual_seed(3)
    layer = TNConv2d(4, 6, 3, padding=1, format=fmt, fraction=0.6, dtype=F64, **options(fmt, 6, 4))
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    grads = []
    for plan in conv_candidates(layer.structure, layer.geometry, x.shape):
        layer.zero_grad()
        (plan(x, layer.factors) ** 2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in layer.factors.values()]))
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_round_trip_is_exact(fmt):
    a = TNConv2d(6, 8, 3, format=fmt, fraction=0.5, **options(fmt))
    b = TNConv2d(6, 8, 3, format=fmt, fraction=0.5, **options(fmt))
    assert set(a.state_dict()) == {f"factors.{f.name}" for f in a.structure.factors} | {"bias"}
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 6, 5, 5)
    assert torch.equal(a(x), b(x))
    text = repr(a)
    assert f"format={fmt}" in text and "params=" in text and "x)" in text


@pytest.mark.parametrize("fmt", ["tt", "cp", "tucker2", "svd", "ht", "tr", "grouped"])
def test_initialisation_matches_nn_conv2d_statistics(fmt):
    """Kernel elements have nn.Conv2d's variance 1/(3 fan_in) in expectation over draws (one
    draw is noisy: elements share factors), and so does the output."""
    torch.manual_seed(4)
    x = torch.randn(32, 16, 5, 5)
    w2, out_tn, out_dense = [], [], []
    for _ in range(40):
        layer = TNConv2d(16, 16, 3, bias=False, format=fmt, fraction=0.5, **options(fmt, 16, 16))
        w2.append(float(layer.weight.detach().pow(2).mean()))
        out_tn.append(float(layer(x).detach().pow(2).mean()))
        out_dense.append(float(nn.Conv2d(16, 16, 3, bias=False)(x).detach().pow(2).mean()))
    target = 1 / (3 * 16 * 9)
    assert sum(w2) / len(w2) == pytest.approx(target, rel=0.35)
    assert sum(out_tn) / sum(out_dense) == pytest.approx(1.0, rel=0.35)
    assert layer.bias is None


def test_amp_and_torch_compile():
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", fraction=0.4)
    x = torch.randn(2, 8, 6, 6)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert rel(y.float(), ref) < 3e-2
    compiled = torch.compile(layer, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ref)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in layer.factors.values())


@pytest.mark.parametrize("fmt", ["svd", "ttmatrix", "tt", "ht", "cp", "tucker", "grouped", "tr"])
def test_linear_full_rank_and_candidates(fmt):
    torch.manual_seed(5)
    lin = nn.Linear(12, 8, dtype=F64)
    opts = {
        "ttmatrix": {"out_dims": (2, 4), "in_dims": (3, 4)},
        "ht": {"out_dims": (2, 4), "in_dims": (3, 4)},
        "grouped": {"channel_groups": 3},
    }.get(fmt, {})
    if fmt == "cp":
        layer = TNLinear(12, 8, format="cp", ranks=4, dtype=F64)
        ref_w = layer.weight
        x = torch.randn(5, 3, 12, dtype=F64)
        assert rel(layer(x), F.linear(x, ref_w, layer.bias)) < 1e-12
        return
    layer = TNLinear.from_linear(lin, fmt, **opts)
    x = torch.randn(5, 3, 12, dtype=F64)
    assert rel(layer(x), lin(x)) < 1e-10
    for plan in linear_candidates(layer.structure, (15, 12)):
        y = plan(x.reshape(15, 12), layer.factors) + layer.bias
        assert rel(y, lin(x).reshape(15, 8)) < 1e-10
    torch.testing.assert_close(layer.to_linear()(x), lin(x))


def test_to_conv_gives_the_same_outputs():
    layer = TNConv2d(
        6, 8, 3, stride=2, padding=1, padding_mode="replicate", format="tt", fraction=0.4, dtype=F64
    )
    x = torch.randn(2, 6, 9, 9, dtype=F64)
    torch.testing.assert_close(layer.to_conv()(x), layer(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(groups=3), ValueError, "in_channels=4 is not divisible by groups=3"),
        (dict(format="nope", ranks=2), ValueError, "unknown format"),
        (dict(ranks=0), ValueError, "ranks must be positive"),
        (dict(fraction=0.0), ValueError, "fraction must be in"),
        (dict(fraction=1.5), ValueError, "fraction must be in"),
        (dict(), ValueError, "needs ranks= or fraction="),
        (dict(padding="same", stride=2, ranks=2), ValueError, "same"),
        (dict(padding_mode="mirror", ranks=2), ValueError, "padding_mode"),
    ],
)
def test_bad_construction_is_refused(kwargs, error, match):
    kw = {"format": "tt", **kwargs}
    with pytest.raises(error, match=match):
        TNConv2d(4, 4, 3, **kw)


def test_from_conv_refuses_transposed_convs():
    assert TNConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), "tt", ranks=2).groups == 2
    with pytest.raises(TypeError, match="nn.Conv2d"):
        TNConv2d.from_conv(nn.ConvTranspose2d(4, 4, 3), "tt", ranks=2)
    with pytest.raises(ValueError, match=r"input \(N, 4, H, W\)"):
        TNConv2d(4, 4, 3, format="tt", ranks=2)(torch.randn(1, 3, 5, 5))


def test_geometry_output_size_matches_torch():
    for kernel, stride, pad, dil in [((3, 3), (1, 1), 1, (1, 1)), ((3, 5), (2, 3), (1, 2), (2, 1))]:
        g = ConvGeometry.from_conv_args(kernel, stride, pad, dil)
        y = F.conv2d(torch.randn(1, 1, 17, 19), torch.randn(1, 1, *kernel), None, stride, pad, dil)
        assert g.output_size(17, 19) == tuple(y.shape[2:])
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ConvGeometry.from_conv_args((5, 5)).output_size(3, 3)


def test_params_and_compression_are_reported():
    layer = TNConv2d(64, 64, 3, format="tucker2", fraction=0.25)
    assert layer.structure.num_params <= 0.25 * 64 * 64 * 9
    assert layer.num_params == layer.structure.num_params + 64
    assert math.isclose(layer.dense_params, 64 * 64 * 9 + 64)


@pytest.mark.parametrize("fmt", FORMATS)
def test_candidates_are_priced_from_the_structure_alone(fmt):
    """No tensor exists: format, ranks and input shape give every candidate's cost."""
    from tensornet.formats import fraction_ranks, get_format
    from tensornet.nn import cost
    from tensornet.nn.layers import KERNEL_LEGS, kernel_options

    opts = kernel_options(fmt, options(fmt, 64, 64))
    shape = (64, 64, 3, 3)
    ranks = fraction_ranks(fmt, shape, 0.25, legs=KERNEL_LEGS, **opts)
    structure = get_format(fmt).structure_for(shape, ranks, legs=KERNEL_LEGS, **opts)
    geometry = ConvGeometry.from_conv_args((3, 3), padding=1)
    plans = conv_candidates(structure, geometry, (32, 64, 32, 32))
    best = cost.choose(plans, "cpu", 4)
    assert all(p.cost["seconds"] > 0 and p.flops > 0 for p in plans)
    dense = next(p for p in plans if p.name == "dense")
    assert dense.flops >= 2 * 32 * 64 * 64 * 9 * 32 * 32  # the dense conv's own MACs, twice
    assert best.cost["seconds"] == min(p.cost["seconds"] for p in plans)
    # at a quarter of the parameters some candidate needs fewer FLOPs than the dense conv
    assert min(p.flops for p in plans) < dense.flops


@pytest.mark.parametrize("fmt", FORMATS)
def test_layers_follow_the_device_and_the_chosen_plan_is_per_device(fmt, device):
    torch.manual_seed(6)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    layer = TNConv2d.from_conv(conv, fmt, fraction=0.6, **options(fmt)).to(device)
    x = torch.randn(4, 6, 10, 10, device=device)
    y = layer(x)
    assert y.device.type == device.type and y.dtype == torch.float32
    ref = dense_conv(layer, x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    key = next(iter(layer._plans))
    assert key[2] == device.type
    layer.to(torch.float64)
    assert not layer._plans  # moving or casting forgets the cached choices
