"""Grouped and depthwise TNConv2d: exact at full rank, every plan agrees, save/load, export."""

import json
import os
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tensornet.formats import get_format
from tensornet.nn import (
    TNConv2d,
    compress,
    default_format,
    describe,
    grouped_plans,
    load,
    save,
    select_layers,
    to_standard,
)
from tensornet.nn.functional import candidates, families, plan_names
from tensornet.nn.geometry import ConvGeometry
from tensornet.nn.grouped_plans import GROUP, GROUPED_KIND, block_structure, grouped_kind
from tensornet.nn.measure import dense_seconds
from tensornet.nn.select import unsupported_reason
from tensornet.nn.truncate import truncate_kernel
from tensornet.weights import CONV2D_LEGS as KERNEL_LEGS

F64 = torch.float64
UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"
TOL = dict(atol=1e-8, rtol=1e-8)
FULL = 10**4  # ranks clamped to their useful maximum: exact


def _geometries(count, seed=0):
    """A seeded random grid of grouped conv geometries (channels, groups, kernel, stride...)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        groups = (2, 4, "depthwise")[i % 3]
        if groups == "depthwise":
            cin = rng.choice((3, 4, 6))
            groups, cout = cin, cin * rng.choice((1, 1, 2))
        else:
            cin, cout = groups * rng.choice((1, 2, 3)), groups * rng.choice((1, 2))
        kernel = rng.choice(((3, 3), (1, 3), (2, 3), (3, 1), (1, 1)))
        stride = rng.choice((1, 2, (2, 1)))
        dilation = rng.choice((1, 1, 2, (1, 2)))
        padding = rng.choice((0, 1, (1, 0), (2, 1)) + (("same", "valid") if stride == 1 else ()))
        mode = rng.choice(("zeros", "zeros", "reflect", "replicate", "circular"))
        if mode != "zeros" and isinstance(padding, str):
            padding = 1
        out.append((cin, cout, groups, kernel, stride, padding, dilation, mode))
    return out


def _conv(cin, cout, groups, kernel, stride, padding, dilation, mode, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias, mode, dtype=F64)


def _input(conv, seed=1, batch=2, size=(7, 6)):
    torch.manual_seed(seed)
    return torch.randn(batch, conv.in_channels, *size, dtype=F64)


def _every_plan(layer, x):
    """Each candidate plan's output (with the bias) for ``x``."""
    out = {}
    for plan in layer._candidates(tuple(x.shape), "cpu"):
        y = plan(x, layer.factors)
        out[plan.name] = y + layer.bias.reshape(1, -1, 1, 1) if layer.bias is not None else y
    return out


@pytest.mark.parametrize("case", _geometries(18))
@pytest.mark.parametrize("fmt", ["svd", "tucker2", "tt"])
def test_full_rank_reproduces_the_grouped_conv_with_every_plan(case, fmt):
    conv = _conv(*case)
    x = _input(conv)
    layer = TNConv2d.from_conv(conv, fmt, ranks=FULL)
    assert layer.groups == conv.groups and layer.kind == GROUPED_KIND
    ref = conv(x)
    torch.testing.assert_close(layer(x), ref, **TOL)
    outs = _every_plan(layer, x)
    assert {"dense"} < set(outs) and any(n.startswith("staged") for n in outs)
    assert any(n.startswith("patches") for n in outs)
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, **TOL, msg=name)


@pytest.mark.parametrize("fmt", ["tucker", "ht", "tr", "ttmatrix", "grouped"])
def test_other_formats_are_exact_at_full_rank_too(fmt):
    conv = _conv(8, 8, 2, (3, 3), 1, 1, 1, "zeros")
    opts = {"channel_groups": 2} if fmt == "grouped" else {}
    layer = TNConv2d.from_conv(conv, fmt, ranks=FULL, **opts)
    x = _input(conv)
    for name, y in _every_plan(layer, x).items():
        torch.testing.assert_close(y, conv(x), **TOL, msg=name)


@pytest.mark.parametrize("fmt", ["ttmatrix", "ht"])
@pytest.mark.parametrize("in_dims", [(2, 1), (1, 2)])
def test_the_group_as_a_mode_of_a_channel_tensorized_format(fmt, in_dims):
    conv = _conv(8, 12, 4, (3, 3), 1, 1, 1, "zeros")
    layer = TNConv2d.from_conv(conv, fmt, ranks=FULL, out_dims=(4, 3), in_dims=in_dims)
    assert [layer.structure.dim(m) for m in layer.structure.modes[0]] == [4, 3]  # the groups
    block, views = block_structure(layer.structure, 4)
    assert [block.dim(m) for m in block.modes[0]] == [4, 1, 3]
    x = _input(conv)
    outs = _every_plan(layer, x)
    assert len(outs) >= 4
    for name, y in outs.items():
        torch.testing.assert_close(y, conv(x), **TOL, msg=name)


@pytest.mark.parametrize("case", _geometries(9, seed=3))
@pytest.mark.parametrize("fmt", ["cp", "tucker2", "tt"])
def test_every_candidate_agrees_at_low_rank(case, fmt):
    """At low rank the factors are not exact: every plan equals the rebuilt kernel's conv."""
    conv = _conv(*case)
    layer = TNConv2d.from_conv(conv, fmt, ranks=2)
    x = _input(conv)
    g = layer.geometry
    ref = F.conv2d(g.pad(x), layer.weight, layer.bias, g.stride, 0, g.dilation, conv.groups)
    outs = _every_plan(layer, x)
    assert len(outs) >= 2
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, **TOL, msg=name)


def test_a_layer_built_from_scratch_holds_the_grouped_kernel():
    layer = TNConv2d(8, 12, 3, padding=1, groups=4, format="tucker2", ranks=(2, 2), dtype=F64)
    assert layer.structure.shape == (12, 2, 3, 3) and layer.weight.shape == (12, 2, 3, 3)
    x = torch.randn(3, 8, 5, 5, dtype=F64)
    ref = F.conv2d(x, layer.weight, layer.bias, padding=1, groups=4)
    torch.testing.assert_close(layer(x), ref, **TOL)
    torch.testing.assert_close(layer(x[0]), ref[0], **TOL)  # unbatched
    empty = layer(x[:0])
    assert empty.shape == (0, 12, 5, 5)
    assert layer.extra_repr() == (
        "8, 12, kernel_size=(3, 3), padding=1, groups=4, format=tucker2, ranks=(2, 2), "
        "params=64 (dense 216, 3.38x)"
    )
    fan_in = 2 * 9  # in / groups * kh * kw, as nn.Conv2d
    bound = 1 / fan_in**0.5
    assert float(layer.bias.detach().abs().max()) <= bound


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groups=3), "in_channels=8 is not divisible by groups=3"),
        (dict(groups=4, out=6), "out_channels=6 is not divisible by groups=4"),
        (dict(groups=0), "groups must be a positive int, got 0"),
        (dict(groups=2.0), "groups must be a positive int"),
    ],
)
def test_bad_groups_are_refused(kwargs, match):
    out = kwargs.pop("out", 8)
    with pytest.raises(ValueError, match=match):
        TNConv2d(8, out, 3, format="svd", ranks=2, **kwargs)


def test_numpy_groups_become_a_python_int():
    np = pytest.importorskip("numpy")
    layer = TNConv2d(4, 4, 3, groups=np.int64(2), format="svd", ranks=2)
    assert type(layer.groups) is int and layer.geometry.groups == 2


@pytest.mark.parametrize("plan", ["dense", "staged", "separable", "patches"])
def test_gradcheck_on_a_tiny_grouped_layer(plan):
    fmt = "cp" if plan == "separable" else "tucker2"
    layer = TNConv2d(4, 4, 3, padding=1, groups=2, format=fmt, ranks=2, plan=plan, dtype=F64)
    x = torch.randn(1, 4, 4, 4, dtype=F64, requires_grad=True)
    params = tuple(layer.factors.values())

    def run(x, *tensors):  # the plan on the input and the given factors
        return layer._plan_for(x)(x, dict(zip(layer.factors, tensors)))

    assert layer._plan_for(x).family == plan
    assert torch.autograd.gradcheck(run, (x, *(p.detach().requires_grad_() for p in params)))


def test_depthwise_plans_and_their_step_kinds():
    conv = _conv(6, 6, 6, (3, 3), 1, 1, 1, "zeros")
    layer = TNConv2d.from_conv(conv, "svd", ranks=FULL)
    info = layer.plan_info((2, 6, 8, 8))
    steps = {r["name"]: r["steps"] for r in info.rows}
    assert steps["dense"] == "3x3 conv 6->6 (groups 6)"
    dense = next(p for p in layer._candidates((2, 6, 8, 8), "cpu") if p.name == "dense")
    assert [s.kind for s in dense.steps] == ["depthwise"] and dense.steps[0].channels_last
    conv_plan = next(p for p in layer._candidates((2, 6, 8, 8), "cpu") if p.name == "dense[conv]")
    assert [s.kind for s in conv_plan.steps] == ["grouped"] and not conv_plan.steps[0].channels_last
    cuda = [p for p in layer._candidates((2, 6, 8, 8), "cuda") if p.family == "dense"]
    assert [p.name for p in cuda] == ["dense"] and not cuda[0].steps[0].channels_last
    assert cuda[0].steps[0].kind == "grouped"
    x = _input(conv)
    for name, y in _every_plan(layer, x).items():
        torch.testing.assert_close(y, conv(x), **TOL, msg=name)


def test_block_structure_splits_the_output_leg_by_group():
    s = get_format("tucker2").structure_for((8, 3, 3, 3), (4, 3), legs=KERNEL_LEGS)
    block, views = block_structure(s, 2)
    assert block.shape == (8, 6, 3, 3) and views == {"U_out": (2, 4, 4)}
    assert block.modes[0] == (GROUP, "out") and block.modes[1] == (GROUP, "in")
    assert dict((f.name, f.legs) for f in block.factors)["U_out"] == (GROUP, "out", "r_out")
    assert block_structure(s, 3) is None  # 8 outputs do not split in 3 groups


def test_a_tensorized_output_leg_that_does_not_split_keeps_the_dense_plan():
    conv = _conv(16, 16, 4, (3, 3), 1, 1, 1, "zeros")
    layer = TNConv2d.from_conv(conv, "ttmatrix", ranks=FULL, out_dims=(2, 8), in_dims=(2, 2))
    x = _input(conv)
    outs = _every_plan(layer, x)
    assert list(outs) == ["dense"]
    torch.testing.assert_close(outs["dense"], conv(x), **TOL)


def test_the_grouped_kind_is_registered_with_the_conv_families():
    assert grouped_kind(1) == "conv" and grouped_kind(3) == GROUPED_KIND
    assert families(GROUPED_KIND) == ("dense", "staged", "separable", "patches")
    s = get_format("cp").structure_for((4, 2, 3, 3), (2,), legs=KERNEL_LEGS)
    names = plan_names(GROUPED_KIND, s)
    assert names == {**plan_names("conv", s), "dense": ("dense", "dense[conv]")}
    geo = ConvGeometry.from_conv_args((3, 3), padding=1, groups=2)
    with pytest.raises(ValueError, match="input channels 3 and kernel"):
        candidates(GROUPED_KIND, s, geo, (1, 3, 5, 5))


def test_dense_seconds_prices_a_grouped_conv_as_its_grouped_plan():
    from tensornet.nn.alloc_layer import layer_seconds

    for conv in (nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 3, groups=2)):
        shape = (4, 8, 10, 10)
        assert dense_seconds(conv, shape) == pytest.approx(layer_seconds(conv, shape))


# -- conversions ---------------------------------------------------------------------------------
def test_to_conv_gives_a_grouped_conv_with_the_same_outputs():
    conv = _conv(6, 12, 3, (3, 2), 2, 1, (1, 2), "reflect")
    layer = TNConv2d.from_conv(conv, "tt", fraction=0.5)
    back = layer.to_conv()
    assert back.groups == 3 and back.weight.shape == conv.weight.shape
    x = _input(conv)
    torch.testing.assert_close(back(x), layer(x), **TOL)


@pytest.mark.parametrize("fmt, ranks", [("tucker2", (4, 2)), ("svd", (3,)), ("cp", (3,))])
def test_to_standard_gives_plain_modules_with_the_same_outputs(fmt, ranks):
    conv = _conv(8, 8, 2, (3, 3), 1, 1, 1, "zeros")
    net = nn.Sequential(TNConv2d.from_conv(conv, fmt, ranks=ranks))
    x = _input(conv)
    for plan in ("dense", "staged"):
        net[0].plan = plan
        plain = to_standard(net, tuple(x.shape), fallback="chain", measure=False)
        assert not any(isinstance(m, TNConv2d) for m in plain.modules())
        torch.testing.assert_close(plain(x), net(x), **TOL)


def test_to_standard_of_the_dense_plan_is_a_grouped_conv():
    conv = _conv(8, 8, 2, (3, 3), 1, 1, 1, "zeros")
    net = nn.Sequential(TNConv2d.from_conv(conv, "svd", ranks=FULL, plan="dense"))
    assert net[0].num_params > conv.weight.numel() + 8  # so the dense kernel may be written
    x = _input(conv)
    plain = to_standard(net, tuple(x.shape), measure=False)
    assert [(type(m), m.groups) for m in plain[0]] == [(nn.Conv2d, 2)]
    torch.testing.assert_close(plain(x), conv(x), **TOL)


def _old_record(src, dst):
    """The file as written before records held groups (every layer groups=1 then)."""
    with safe_open(os.fspath(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    data = json.loads(meta["tensornet"])
    for rec in data["layers"].values():
        rec.pop("groups", None)
    meta["tensornet"] = json.dumps(data)
    save_file(tensors, os.fspath(dst), metadata=meta)
    return dst


def _block(dtype=F64):
    """A MobileNet-style block: pointwise, depthwise, grouped 3x3, pointwise."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),
        nn.Conv2d(8, 6, 1),
    ).to(dtype)


def test_save_and_load_record_the_groups(tmp_path):
    net = _block()
    net[2] = TNConv2d.from_conv(net[2], "svd", ranks=2)
    net[4] = TNConv2d.from_conv(net[4], "tucker2", ranks=(4, 2), plan="staged")
    records = describe(net)
    assert records["2"]["groups"] == 8 and records["4"]["groups"] == 4
    path = tmp_path / "net.safetensors"
    save(net, path)
    fresh = _block()
    load(fresh, path)
    assert isinstance(fresh[4], TNConv2d) and fresh[4].groups == 4 and fresh[4].plan == "staged"
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    torch.testing.assert_close(fresh(x), net(x), **TOL)
    with pytest.raises(ValueError, match="field 'groups' is 1 but the model's Conv2d has 8"):
        load(_block(), _old_record(path, tmp_path / "old.safetensors"))


def test_an_old_record_without_groups_loads_as_groups_one(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    net[0] = TNConv2d.from_conv(net[0], "tt", ranks=(2, 2, 2))
    save(net, tmp_path / "new.safetensors")
    old = _old_record(tmp_path / "new.safetensors", tmp_path / "old.safetensors")
    fresh = nn.Sequential(nn.Conv2d(3, 4, 3))
    load(fresh, old)
    assert fresh[0].groups == 1
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(fresh(x), net(x))


@pytest.mark.parametrize("bad", [0, "2", 2.0, True])
def test_a_bad_groups_field_is_refused(tmp_path, bad):
    net = _block()
    net[4] = TNConv2d.from_conv(net[4], "svd", ranks=2)
    path = tmp_path / "net.safetensors"
    save(net, path)
    with safe_open(os.fspath(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    data = json.loads(meta["tensornet"])
    data["layers"]["4"]["groups"] = bad
    meta["tensornet"] = json.dumps(data)
    save_file(tensors, os.fspath(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="field 'groups' must be a positive int"):
        load(_block(), tmp_path / "bad.safetensors")


# -- compress, select, allocate --------------------------------------------------------------------
def test_grouped_and_depthwise_convs_are_supported():
    assert unsupported_reason(nn.Conv2d(4, 4, 3, groups=2)) is None
    assert unsupported_reason(nn.Conv2d(4, 4, 3, groups=4)) is None
    assert select_layers(_block()) == ["0", "2", "4", "5"]


def test_compress_a_mobilenet_block_is_exact_at_full_rank():
    net = _block()
    x = torch.randn(2, 4, 9, 9, dtype=F64)
    for fmt in ("tucker2", "svd", "tt"):
        small, report = compress(net, fmt, ranks=FULL, skip=(), example_input=x)
        assert [r.name for r in report.layers] == ["0", "2", "4", "5"]
        assert small[2].groups == 8 and small[4].groups == 4
        torch.testing.assert_close(small(x), net(x), **TOL)
        assert all(r.flops_before > 0 and r.seconds_after > 0 for r in report.layers)


def test_compress_by_default_keeps_depthwise_convs_dense():
    net = _block()
    assert default_format(net[2]) is None and default_format(net[4]) == ("svd", {})
    assert default_format(nn.Conv2d(4, 8, 3, groups=4)) == ("svd", {})  # two outputs a group
    assert default_format(nn.Conv2d(2, 2, 3, groups=2)) is None
    assert default_format(nn.Conv2d(1, 1, 3)) == ("svd", {})  # one channel, groups=1
    small, report = compress(net, fraction=0.5, skip=())
    assert [r.name for r in report.layers] == ["0", "4", "5"]
    assert report.notes == [
        "layer '2' left dense: format='auto' does not compress a depthwise conv (no factored "
        "form runs fewer multiply-adds); name a format to compress it"
    ]
    assert type(small[2]) is nn.Conv2d and isinstance(small[4], TNConv2d)
    x = torch.randn(2, 4, 9, 9, dtype=F64)
    torch.testing.assert_close(small[2](x[:, :1].repeat(1, 8, 1, 1)),
                               net[2](x[:, :1].repeat(1, 8, 1, 1)))  # fmt: skip
    small, report = compress(net, "svd", fraction=0.5, skip=())  # named: compressed
    assert [r.name for r in report.layers] == ["0", "2", "4", "5"] and report.notes == []
    _, report = compress(net, {"conv": "auto"}, fraction=0.5, skip=())  # auto as an answer
    assert [r.name for r in report.layers] == ["0", "4", "5"]


def test_truncate_a_grouped_layer_keeps_its_groups():
    conv = _conv(8, 8, 2, (3, 3), 1, 1, 1, "zeros")
    layer = TNConv2d.from_conv(conv, "tt", ranks=FULL)
    small, result = truncate_kernel(layer, [("out",)], 2)
    assert small.groups == 2 and small.ranks[-1] == 2 and result.ranks == (2,)
    x = _input(conv)
    ref = F.conv2d(x, small.weight, small.bias, padding=1, groups=2)
    torch.testing.assert_close(small(x), ref, **TOL)
    dense, _ = truncate_kernel(conv, [("out",)], 2)
    assert type(dense) is nn.Conv2d and dense.groups == 2
    torch.testing.assert_close(dense.weight, small.weight, **TOL)


@pytest.mark.parametrize(
    ("method", "measure"),
    [("uniform", "params"), ("alds", "params"), ("uniform", "flops"), ("uniform", "time")],
)
def test_allocate_and_compress_accept_grouped_convs(method, measure):
    from tensornet.nn import allocate

    net = _block(torch.float32)
    x = torch.randn(2, 4, 9, 9)
    budget = 0.7 if measure == "params" else 0.95  # the depthwise conv saves no FLOPs
    alloc = allocate(net, budget, method, measure=measure, skip=(), example_input=x)
    assert set(alloc.layers) == {"0", "2", "4", "5"}
    assert alloc.layers["4"].dense_params == 8 * 2 * 9  # (out, in / groups, kh, kw)
    small, report = compress(net, allocation=alloc)
    assert sum(p.numel() for p in small.parameters()) == alloc.total_params
    compressed = [i for i, m in enumerate(small) if isinstance(m, TNConv2d)]
    assert compressed and (measure != "params" or {2, 4} & set(compressed))
    h = x.double()
    for dense, layer in zip(net.double(), small.double()):
        if isinstance(layer, TNConv2d):  # each layer is its own rebuilt kernel's conv
            g = layer.geometry
            ref = F.conv2d(g.pad(h), layer.weight, layer.bias, g.stride, 0, g.dilation, g.groups)
            assert layer.groups == dense.groups
            torch.testing.assert_close(layer(h), ref, **TOL)
        h = dense(h)


@pytest.mark.skipif(UNDER_MUTMUT, reason="Dynamo does not trace mutmut's trampoline")
@pytest.mark.parametrize("plan", ["staged[in=U_in conv=core out=U_out]", "patches", "dense"])
def test_grouped_plans_compile_and_export_with_free_batch(plan):
    torch.manual_seed(3)
    layer = TNConv2d(8, 6, 3, padding=1, groups=2, format="tucker2", ranks=(2, 2), plan=plan)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    x3, x5 = torch.randn(3, 8, 6, 6), torch.randn(5, 8, 6, 6)
    ref3, ref5 = layer(x3), layer(x5)
    assert {p.name for p in layer._plans.values()} == {plan}
    torch.testing.assert_close(compiled(x3), ref3)
    torch.testing.assert_close(compiled(x5), ref5)
    batch = torch.export.Dim("batch", min=1, max=64)
    run = torch.export.export(layer, (x3,), dynamic_shapes={"x": {0: batch}}).module()
    torch.testing.assert_close(run(x5), ref5)


def test_a_depthwise_layer_runs_either_dense_plan():
    conv = _conv(6, 6, 6, (3, 3), 1, 1, 1, "zeros")
    x = _input(conv)
    for plan in ("dense", "dense[conv]"):
        layer = TNConv2d.from_conv(conv, "svd", ranks=FULL, plan=plan)
        torch.testing.assert_close(layer(x), conv(x), **TOL)
        assert [p.name for p in layer._plans.values()] == [plan]


# -- the plans counted by hand -------------------------------------------------------------------
def _cp(shape=(8, 3, 3, 3), rank=3):
    return get_format("cp").structure_for(shape, rank, legs=KERNEL_LEGS)


def test_the_dense_plan_counts():
    s = _cp()
    geo = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1, groups=2)
    (plan,) = [p for p in candidates(GROUPED_KIND, s, geo, (2, 6, 7, 7)) if p.family == "dense"]
    (step,) = plan.steps
    weight_flops = step.weight.flops
    assert weight_flops > 0  # four CP factors contracted into the kernel
    assert step.flops == 2 * 2 * 8 * 3 * 9 * 16 + weight_flops
    assert step.elements == 2 * 6 * 49 + 2 * 8 * 16 and step.images == 2
    assert (step.kind, step.groups, step.shift, step.view) == ("grouped", 2, False, (2, 6, 7, 7))
    assert step.label == "3x3 conv 6->8 (groups 2)" and step.weight.shape == (8, 3, 3, 3)
    assert plan.peak_elements == 2 * 6 * 49 and plan.output_shape == (2, 8, 4, 4)
    same = ConvGeometry.from_conv_args((3, 3), padding=1, groups=2)
    wide = [p for p in candidates(GROUPED_KIND, s, same, (1, 6, 3, 3)) if p.family == "dense"]
    assert wide[0].peak_elements == 8 * 9  # the output is the larger side
    t = {f.name: torch.randn(f.shape, dtype=F64) for f in s.factors}
    x = torch.randn(2, 6, 7, 7, dtype=F64)
    ref = F.conv2d(x, s.contract(t), stride=2, padding=1, groups=2)
    torch.testing.assert_close(plan(x, t), ref, **TOL)


@pytest.mark.parametrize(
    ("kernel", "out", "device", "shifted"),
    [((3, 3), 6, "cpu", True), ((1, 9), 6, "cpu", True), ((5, 5), 6, "cpu", True),
     ((3, 3), 12, "cpu", False), ((3, 3), 6, "cuda", False)],
)  # fmt: skip
def test_which_dense_plans_run_channels_last(kernel, out, device, shifted):
    s = get_format("svd").structure_for((out, 1, *kernel), 2, legs=KERNEL_LEGS)
    geo = ConvGeometry.from_conv_args(kernel, groups=6)
    plans = [
        p for p in candidates(GROUPED_KIND, s, geo, (1, 6, 9, 9), device) if p.family == "dense"
    ]
    assert [p.name for p in plans] == (["dense", "dense[conv]"] if shifted else ["dense"])
    assert [p.steps[0].channels_last for p in plans] == ([True, False] if shifted else [False])
    assert not any(p.steps[0].shift for p in plans)
    assert [p.steps[0].kind for p in plans] == (
        ["depthwise", "grouped"] if shifted else ["grouped"]
    )


def test_the_patches_plan_counts():
    from tensornet.core.einsum import plan_einsum

    s = _cp()
    geo = ConvGeometry.from_conv_args((3, 3), stride=2, padding=1, groups=2)
    (plan,) = [p for p in candidates(GROUPED_KIND, s, geo, (2, 6, 7, 7)) if p.family == "patches"]
    unfold, ein = plan.steps
    positions = 16
    assert (unfold.kind, unfold.flops, unfold.label) == ("unfold", 0, "unfold 3x3")
    assert unfold.elements == 2 * 6 * (49 + 9 * positions) and unfold.view == (2, 6, 7, 7)
    assert unfold.geometry.groups == 1 and unfold.geometry.padding == geo.padding
    limit = (9 + 1) * max(2 * 6 * 49, 2 * 8 * positions)
    patch_shape = (2, 2, 3, 3, 3, positions)
    block, views = block_structure(s, 2)
    inputs = [("__batch", GROUP, "in", "kh", "kw", "__patches")] + [f.legs for f in block.factors]
    shapes = [patch_shape] + [f.shape for f in block.factors]
    output = ("__batch", GROUP, "out", "__patches")
    ref, _ = plan_einsum(inputs, shapes, output, memory_limit=limit)
    assert (ein.kind, ein.flops, ein.label) == ("einsum", ref.flops, "einsum(patches, factors)")
    assert ein.elements == 2 * (6 * 9 + 8) * positions and ein.view == patch_shape
    assert plan.peak_elements == max(2 * 6 * 9 * positions, ref.largest_intermediate)
    assert plan.output_shape == (2, 8, 4, 4) and views == {"A0": (2, 4, 3)}
    t = {f.name: torch.randn(f.shape, dtype=F64) for f in s.factors}
    x = torch.randn(2, 6, 7, 7, dtype=F64)
    ref = F.conv2d(x, s.contract(t), stride=2, padding=1, groups=2)
    torch.testing.assert_close(plan(x, t), ref, **TOL)


def test_the_staged_plans_share_the_input_factor_and_group_the_output_factor():
    s = get_format("tucker2").structure_for((8, 3, 3, 3), (4, 2), legs=KERNEL_LEGS)
    geo = ConvGeometry.from_conv_args((3, 3), padding=1, groups=2)
    plans = {p.name: p for p in candidates(GROUPED_KIND, s, geo, (5, 6, 4, 4))}
    staged = plans["staged[in=U_in conv=core out=U_out]"]
    first, conv, last = staged.steps
    assert first.view == (5, 2, 1, 3, 16) and first.weight.shape == (1, 2, 3)  # groups in batch
    assert conv.view == (10, 2, 4, 4) and conv.groups == 1 and conv.kind == "conv"
    assert conv.geometry.groups == 1 and conv.geometry.padding == geo.padding
    assert last.view == (5, 1, 2, 4, 16) and last.weight.shape == (2, 4, 4)  # per group
    merged = plans["staged[in=U_in conv=core,U_out]"]
    assert [s.groups for s in merged.steps if hasattr(s, "groups")] == [2]
    assert merged.steps[-1].kind == "grouped" and merged.steps[-1].weight.shape == (8, 2, 3, 3)
    t = {f.name: torch.randn(f.shape, dtype=F64) for f in s.factors}
    x = torch.randn(5, 6, 4, 4, dtype=F64)
    ref = F.conv2d(x, s.contract(t), padding=1, groups=2)
    for plan in (staged, merged):
        torch.testing.assert_close(plan(x, t), ref, **TOL)


def test_no_plans_for_a_tensorized_spatial_leg():
    from tensornet.formats.structure import Factor, Structure

    legs = ("out", "in", "kh", "kw")
    factors = (Factor("K", ("out", "in", "h1", "h2", "kw"), (4, 2, 2, 2, 3)),)
    s = Structure("dense", legs, (4, 2, 4, 3), (), factors,
                  (("out",), ("in",), ("h1", "h2"), ("kw",)), ())  # fmt: skip
    geo = ConvGeometry.from_conv_args((4, 3), groups=2)
    assert plan_names(GROUPED_KIND, s) == {}
    assert candidates(GROUPED_KIND, s, geo, (1, 4, 6, 6)) == []


def test_a_leg_held_by_two_factors_has_no_block_structure():
    from tensornet.formats.structure import Factor, Structure

    factors = (Factor("A", ("out", "r"), (4, 2)), Factor("B", ("out", "r", "in", "kh", "kw"),
                                                         (4, 2, 2, 3, 3)))  # fmt: skip
    modes = (("out",), ("in",), ("kh",), ("kw",))
    s = Structure("x", KERNEL_LEGS, (4, 2, 3, 3), (2,), factors, modes, (2,))
    assert block_structure(s, 2) is None
    geo = ConvGeometry.from_conv_args((3, 3), groups=2)
    plans = candidates(GROUPED_KIND, s, geo, (1, 4, 5, 5))
    assert [p.family for p in plans] == ["dense"]
    t = {"A": torch.randn(4, 2, dtype=F64), "B": torch.randn(4, 2, 2, 3, 3, dtype=F64)}
    x = torch.randn(1, 4, 5, 5, dtype=F64)
    torch.testing.assert_close(plans[0](x, t), F.conv2d(x, s.contract(t), groups=2), **TOL)


@pytest.mark.parametrize("shape, channels", [((5, 2, 3, 3), 4), ((4, 2, 3, 3), 6)])
def test_plans_refuse_channels_that_do_not_match_the_groups(shape, channels):
    s = get_format("svd").structure_for(shape, 2, legs=KERNEL_LEGS)
    geo = ConvGeometry.from_conv_args((3, 3), groups=2)
    builders = (grouped_plans._dense, grouped_plans._staged, grouped_plans._separable)
    for build in (*builders, grouped_plans._patches):
        with pytest.raises(ValueError) as err:
            build(s, geo, (1, channels, 5, 5), "cpu")
        assert str(err.value) == (
            f"grouped conv plans: input channels {channels} and kernel {shape} do not match "
            "groups=2"
        )


def test_the_largest_intermediate_a_plan_may_build():
    s = _cp((8, 3, 3, 2))
    geo = ConvGeometry.from_conv_args((3, 2), stride=2, padding=1, groups=2)
    # input 2 x 6 x 7 x 7 = 588; output 2 x 8 x 4 x 4 = 256 (rows (7+2-3)//2+1, cols (7+2-2)//2+1)
    assert grouped_plans.max_elements(s, geo, (2, 6, 7, 7)) == (3 * 2 + 1) * 588
    wide = ConvGeometry.from_conv_args((3, 2), padding=2, groups=2)  # output 2 x 8 x 9 x 10
    assert grouped_plans.max_elements(s, wide, (2, 6, 7, 7)) == (3 * 2 + 1) * 2 * 8 * 9 * 10


@pytest.mark.parametrize("bad", [0, -2, 2.0, True, "2"])
def test_the_geometry_takes_a_positive_int_of_groups(bad):
    assert ConvGeometry.from_conv_args((3, 3)).groups == 1
    assert ConvGeometry.from_conv_args((3, 3), 1, 1, 1, "zeros", 4).groups == 4
    with pytest.raises(ValueError, match=rf"^groups must be a positive int, got {bad!r}$"):
        ConvGeometry.from_conv_args((3, 3), groups=bad)


def test_a_views_program_refuses_a_wrong_number_of_tensors():
    viewed = grouped_plans._Viewed(lambda *ts: ts, [None, (2, 3)])
    a, b = torch.zeros(4), torch.arange(6.0)
    out = viewed(a, b)
    assert out[0] is a and out[1].shape == (2, 3)
    with pytest.raises(ValueError, match="zip"):
        viewed(a)


def test_the_staged_depthwise_steps_run_channels_last_on_cpus_only():
    """CP's rank leg makes its kh and kw steps depthwise: channels-last convs on CPUs."""
    s = _cp((8, 3, 3, 3), rank=4)
    geo = ConvGeometry.from_conv_args((3, 3), padding=1, groups=2)

    def shifts(device):
        plans = candidates(GROUPED_KIND, s, geo, (2, 6, 5, 5), device)
        return {st.channels_last for p in plans if p.family == "separable" for st in p.steps
                if hasattr(st, "channels_last") and st.kind != "matmul"}  # fmt: skip

    assert shifts("cpu") == {True, False} and shifts("cuda") == {False}


def test_a_linear_record_takes_no_groups_field(tmp_path):
    from tensornet.nn import TNLinear

    net = nn.Sequential(TNLinear(6, 4, format="svd", ranks=2))
    save(net, tmp_path / "lin.safetensors")
    with safe_open(os.fspath(tmp_path / "lin.safetensors"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    data = json.loads(meta["tensornet"])
    data["layers"]["0"]["groups"] = 1
    meta["tensornet"] = json.dumps(data)
    save_file(tensors, os.fspath(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"has unknown field\(s\) \['groups'\]"):
        load(nn.Sequential(nn.Linear(6, 4)), tmp_path / "bad.safetensors")
