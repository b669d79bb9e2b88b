"""to_standard: every compressed layer as the plain modules of its forward plan.

Values are checked against the compressed layer (itself checked against dense torch in
test_layers), in float64 to 1e-10 and float32 to 1e-5 relative; parameters never grow.
"""

import os
import re
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensornet.formats import format_names
from tensornet.nn import TNConv2d, TNLinear, export, to_standard
from tensornet.nn.export import (
    ChannelBias,
    ChannelPermute,
    ChannelsLastConv2d,
    Folded,
    PointwiseConv2d,
    ShiftConv2d,
    conv_sequence,
    linear_chains,
    linear_sequence,
)

F64 = torch.float64
FORMATS = sorted(format_names())
OPTS = {"grouped": {"channel_groups": 2}}
GEOMETRIES = [
    {"stride": 2, "padding": 1, "padding_mode": "reflect"},
    {"padding": "same", "dilation": 2},
    {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1), "padding_mode": "circular"},
    {"padding": 1, "bias": False},
]
# formats whose conv layers have no chain at their parameter count (kept compressed)
NO_CONV_CHAIN = {"ttmatrix"}
UNDER_MUTMUT = os.environ.get("TENSORNET_HYPOTHESIS_PROFILE") == "mutate"


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def plain(module):
    return not any(isinstance(m, (TNConv2d, TNLinear)) for m in module.modules())


def rel_close(a, b, tol):
    assert (a - b).abs().max().item() <= tol * b.abs().max().item()


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_every_format_and_geometry(fmt):
    torch.manual_seed(0)
    for i, geo in enumerate(GEOMETRIES):
        layer = TNConv2d(8, 6, 3, format=fmt, fraction=0.4, dtype=F64, **geo, **OPTS.get(fmt, {}))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seq = conv_sequence(layer, (2, 8, 9, 9), fallback="chain", measure=False)
        if fmt in NO_CONV_CHAIN:
            assert seq is layer
            msg = str(caught[0].message)
            assert "no chain of plain modules holds at most its parameters; kept" in msg
            assert "fallback" not in msg
            continue
        assert not caught and plain(seq) and isinstance(seq, nn.Sequential)
        assert n_params(seq) <= layer.num_params
        x = torch.randn(3, 8, 11, 10 + i, dtype=F64)  # not the planned shape
        rel_close(seq(x), layer(x), 1e-10)
        # float32 too
        layer32, seq32 = layer.float(), seq.float()
        rel_close(seq32(x.float()), layer32(x.float()), 1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_every_format(fmt):
    torch.manual_seed(1)
    shapes = [{}]
    if fmt == "ttmatrix":
        shapes.append({"out_dims": (2, 3), "in_dims": (4, 2)})
    for bias in (True, False):
        for kw in shapes:
            lin = TNLinear(
                8, 6, bias, format=fmt, fraction=0.5, dtype=F64, **OPTS.get(fmt, {}), **kw
            )
            seq = linear_sequence(lin, (4, 8), fallback="chain", measure=False)
            assert plain(seq) and n_params(seq) <= lin.num_params
            x = torch.randn(2, 5, 8, dtype=F64)  # leading dimensions as nn.Linear takes them
            rel_close(seq(x), lin(x), 1e-10)
            rel_close(seq.float()(x.float()), lin.float()(x.float()), 1e-5)


def test_linear_chains_structure():
    """svd: two nn.Linear; ttmatrix: batch-folded steps and permutes; grouped: a grouped step."""
    svd = TNLinear(8, 6, format="svd", ranks=2)
    seq = linear_sequence(svd, (4, 8), fallback="chain", measure=False)
    assert [type(m) for m in seq] == [nn.Linear, nn.Linear] and type(seq) is nn.Sequential
    assert seq[0].weight.shape == (2, 8) and seq[0].bias is None and seq[1].bias is not None
    torch.testing.assert_close(seq[0].weight, svd.factors["V"].detach())
    names = [p.name for p in linear_chains(svd, (4, 8))]
    assert names == ["chain[V,U]"]  # U first touches no input leg
    tm = TNLinear(8, 6, format="ttmatrix", ranks=2, out_dims=(2, 3), in_dims=(4, 2))
    kinds = {type(m) for m in linear_sequence(tm, (4, 8), fallback="chain", measure=False)}
    assert {Folded, ChannelPermute} <= kinds
    grouped = TNLinear(8, 6, format="grouped", ranks=1, channel_groups=2)
    seq = linear_sequence(grouped, (4, 8), fallback="chain", measure=False)
    grouped_steps = [m for m in seq if isinstance(m, PointwiseConv2d)]
    assert grouped_steps and grouped_steps[0].groups == 2


def test_conv_chain_structure_tucker2_and_cp():
    t2 = TNConv2d(16, 12, 3, padding=1, format="tucker2", ranks=(4, 5))
    seq = conv_sequence(t2, (2, 16, 8, 8), fallback="chain", measure=False)
    assert [m.kernel_size for m in seq] == [(1, 1), (3, 3), (1, 1)]
    assert [(m.in_channels, m.out_channels) for m in seq] == [(16, 5), (5, 4), (4, 12)]
    assert n_params(seq) == t2.num_params
    cp = TNConv2d(16, 12, 3, padding=1, format="cp", ranks=6)
    seq = conv_sequence(cp, (2, 16, 8, 8), fallback="chain", measure=False)
    convs = [m for m in seq.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(m.kernel_size for m in convs) == [(1, 1), (1, 1), (1, 3), (3, 1)]
    assert [m.groups for m in convs if m.kernel_size != (1, 1)] == [6, 6]  # depthwise
    assert any(isinstance(m, ChannelsLastConv2d) for m in convs)  # CPU: as the layer runs it
    assert n_params(seq) == cp.num_params


def test_kept_with_warning_when_slower_by_estimate():
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    shape = (2, 8, 6, 6)
    assert layer.plan_info(shape).chosen == "dense"  # rebuilding wins on a tiny layer
    with pytest.warns(
        UserWarning,
        match=r"conv1 \(format tucker2\).*within 1\.0x.*estimated at \d\.\d\dx its forward "
        r"\(fallback='chain' writes it anyway\); kept as a compressed layer",
    ):
        kept = conv_sequence(layer, shape, measure=False, name="conv1")
    assert kept is layer
    # the warning points at the user's call, also through to_standard
    for fn in (conv_sequence, to_standard):
        with pytest.warns(UserWarning, match="kept as a compressed layer") as rec:
            fn(layer, shape, measure=False)
        assert rec[0].filename == __file__ or UNDER_MUTMUT  # mutmut adds a trampoline frame
    seq = conv_sequence(layer, shape, measure=False, slack=100)
    assert isinstance(seq, nn.Sequential) and len(seq) == 3


def test_caller_level_is_the_first_frame_outside_the_module():
    # called from here: this test's frame is level 1 (under mutmut too: its trampoline frame,
    # between the module's functions, is outside the module as well)
    assert export._caller_level() == 1
    if not UNDER_MUTMUT:  # two frames of the module in between: level 3
        source = "def outer(f):\n    return inner(f)\n\ndef inner(f):\n    return f()\n"
        ns: dict = {}
        exec(compile(source, export.__file__, "exec"), ns)
        assert ns["outer"](export._caller_level) == 3


def test_the_warning_is_issued_at_the_callers_level(monkeypatch):
    here = sys._getframe().f_code

    def level_of_this_test():  # what _caller_level finds outside mutmut
        frame, level = sys._getframe(1), 1  # 1: the frame that calls warnings.warn
        while frame.f_code is not here:
            frame, level = frame.f_back, level + 1
        return level

    monkeypatch.setattr(export, "_caller_level", level_of_this_test)
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    with pytest.warns(UserWarning, match="kept as a compressed layer") as rec:
        line = sys._getframe().f_lineno + 1
        conv_sequence(layer, (2, 8, 6, 6), measure=False)
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)


def test_the_dense_linear_is_a_candidate():
    # full rank: the factors hold 32 parameters, the dense matrix 16 (cheaper than any chain)
    layer = TNLinear(4, 4, format="svd", ranks=4).double()
    with pytest.warns(UserWarning, match=r"fastest plain chain \(dense\)"):
        assert linear_sequence(layer, (8, 4), measure=False) is layer
    seq = linear_sequence(layer, (8, 4), measure=False, fallback="chain")
    assert len(seq) == 1 and type(seq[0]) is nn.Linear
    assert torch.allclose(seq[0].weight, layer.weight, rtol=0, atol=1e-12)
    assert torch.equal(seq[0].bias, layer.bias)
    x = torch.randn(8, 4, dtype=F64)
    assert torch.allclose(seq(x), layer(x), rtol=0, atol=1e-12)


def test_measured_choice(monkeypatch):
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    calls = []

    def fake(fns, repeat):
        calls.append((len(fns), repeat))
        for fn in fns:
            fn()
        # the layer first, then each chain: 1.5x the layer in every round
        return [[1.0] * repeat] + [[1.5] * repeat for _ in fns[1:]]

    monkeypatch.setattr(export, "_times", fake)
    with pytest.warns(UserWarning, match=r"measured at 1\.50x"):
        assert conv_sequence(layer, (2, 8, 6, 6)) is layer
    plans = layer._candidates((2, 8, 6, 6), "cpu")
    n_fits = len(export._fits(layer, plans))
    assert n_fits >= 1 and calls == [(1 + min(3, n_fits), export._REPEAT)]
    assert export._REPEAT >= 9
    calls.clear()
    assert isinstance(conv_sequence(layer, (2, 8, 6, 6), slack=1.5), nn.Sequential)
    calls.clear()
    assert isinstance(conv_sequence(layer, (2, 8, 6, 6), fallback="chain"), nn.Sequential)


def test_measured_picks_the_fastest_chain(monkeypatch):
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(8, 8))  # merges fit too
    own = [1.0, 2.0, 1.0, 1.0]
    runs = [own, [3.0, 6.0, 3.0, 3.0], [0.5, 1.0, 0.5, 0.6], [2.0, 4.0, 2.0, 2.0]]

    monkeypatch.setattr(export, "_times", lambda fns, repeat: ([fn() for fn in fns], runs)[1])
    plans = layer._candidates((2, 8, 6, 6), "cpu")
    export.cost.choose(plans, "cpu", 4)
    chosen = layer._choose((2, 8, 6, 6), torch.device("cpu"), torch.float32)
    plan, mods, ratio = export._pick(layer, plans, chosen, (2, 8, 6, 6), True)
    fits = export._fits(layer, plans)
    fits.sort(key=lambda p: (p.name != chosen.name, p.cost["seconds"]))
    # round by round 0.5, 0.5, 0.5, 0.6: the upper quartile is checked
    assert len(fits) >= 3 and plan is fits[1] and ratio == pytest.approx(0.575)


def test_measured_ratio_is_round_by_round_upper_quartile():
    # a chain that wins two lucky rounds of eight is not within 1.1x: its rounds say 1.2x
    own = [1.0] * 8
    chain = [0.8, 0.9] + [1.2] * 6
    median, upper = export._measured_ratio(chain, own)
    assert median == pytest.approx(1.2) and upper == pytest.approx(1.2)
    assert min(chain) / min(own) < 1.0  # what the fastest-run statistic said
    # load that slows a whole round cancels out: the chain is 0.9x in every round
    own = [1.0, 3.0, 1.0, 5.0, 1.0]
    median, upper = export._measured_ratio([0.9 * t for t in own], own)
    assert median == pytest.approx(0.9) and upper == pytest.approx(0.9)


def test_real_timer_interleaves_rounds():
    clock = iter([0.0, 1.0, 2.0, 3.0, 10.0, 10.5, 20.0, 23.0])
    order = []
    real = export.time.perf_counter
    try:
        export.time.perf_counter = lambda: next(clock)
        runs = export._times([lambda: order.append("a"), lambda: order.append("b")], 2)
    finally:
        export.time.perf_counter = real
    assert order == ["a", "b"] * 3  # one warm-up each, then rounds of both in turn
    assert runs == [[1.0, 0.5], [1.0, 3.0]]


def test_to_standard_model_shapes_ties_modes_and_params():
    torch.manual_seed(2)
    conv = TNConv2d(4, 6, 3, padding=1, format="cp", ranks=3, dtype=F64)
    shared = TNLinear(6, 6, format="svd", ranks=2, dtype=F64)
    net = nn.Sequential(
        conv,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        shared,
        nn.ReLU(),
        shared,
        TNLinear(6, 3, format="tt", ranks=2, dtype=F64),
    ).eval()
    net[6].train()
    before = n_params(net)
    out = to_standard(net, (2, 4, 8, 8), fallback="chain", measure=False)
    assert plain(out) and out is not net and not plain(net)
    assert out[3] is out[5]  # still tied
    assert n_params(out) <= before
    assert not out[0].training and out[6].training
    x = torch.randn(3, 4, 7, 7, dtype=F64)
    rel_close(out(x), net(x), 1e-10)
    assert any(isinstance(m, ChannelsLastConv2d) for m in out.modules())
    exported = torch.export.export(out.eval(), (x,))  # channels-last depthwise, chains export
    rel_close(exported.module()(x), net.eval()(x), 1e-10)
    net[6].train()
    same = to_standard(net, fallback="chain", measure=False, inplace=True)
    assert same is net and plain(net)


def test_to_standard_of_a_layer_and_default_shapes():
    lin = TNLinear(8, 6, format="svd", ranks=2)
    out = to_standard(lin, fallback="chain", measure=False)
    assert isinstance(out, nn.Sequential) and len(out) == 2
    assert export._shape_of(lin, None) == (1, 8) and export._shape_of(lin, (2, 3, 8)) == (6, 8)
    conv = TNConv2d(8, 6, 3, format="svd", ranks=2)
    assert export._shape_of(conv, None) == (1, 8, 32, 32)
    kept = nn.Sequential(TNConv2d(8, 8, 3, format="ttmatrix", ranks=2, in_dims=(2, 4),
                                  out_dims=(2, 4)))  # fmt: skip
    with pytest.warns(UserWarning, match="0 .format ttmatrix"):
        out = to_standard(kept, (1, 8, 8, 8), measure=False)
    assert isinstance(out[0], TNConv2d)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"slack": 0.9}, ValueError, "slack must be a number >= 1, got 0.9"),
        ({"slack": True}, ValueError, "slack"),
        ({"slack": "1"}, ValueError, "slack"),
        ({"slack": float("nan")}, ValueError, "slack"),
        ({"fallback": "dense"}, ValueError, r"fallback must be one of \('keep', 'chain'\)"),
        ({"measure": 1}, TypeError, "measure must be True or False, got 1"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    layer = TNLinear(8, 6, format="svd", ranks=2)
    for fn in (to_standard, linear_sequence):
        with pytest.raises(err, match=match):
            fn(layer, **kwargs)
    assert isinstance(to_standard(layer, slack=1, measure=False, fallback="chain"), nn.Module)


def test_small_modules():
    x = torch.arange(24.0).reshape(1, 6, 2, 2)
    p = ChannelPermute((2, 3), (1, 0))
    ref = x.reshape(1, 2, 3, 2, 2).permute(0, 2, 1, 3, 4).reshape(1, 6, 2, 2)
    assert torch.equal(p(x), ref) and "sizes=(2, 3), dims=(1, 0)" in repr(p)
    lin = nn.Linear(2, 4)
    f = Folded(3, lin)
    y = torch.randn(5, 6)
    assert torch.equal(f(y), lin(y.reshape(15, 2)).reshape(5, 12)) and "fold=3" in repr(f)
    b = ChannelBias(torch.tensor([1.0, -2.0]))
    assert torch.equal(b(torch.zeros(2, 2, 1, 1)).flatten(), torch.tensor([1.0, -2.0] * 2))
    assert torch.equal(b(torch.zeros(1, 2)), torch.tensor([[1.0, -2.0]]))


@pytest.mark.parametrize("bias", [True, False])
def test_shift_conv_equals_depthwise_conv(bias):
    torch.manual_seed(3)
    conv = ShiftConv2d(5, 5, (3, 2), stride=(2, 1), dilation=(1, 2), groups=5, bias=bias)
    x = torch.randn(2, 5, 9, 8, dtype=F64)
    conv = conv.double()
    ref = F.conv2d(x, conv.weight, conv.bias, (2, 1), 0, (1, 2), 5)
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_equals_conv(bias):
    torch.manual_seed(4)
    conv = PointwiseConv2d(6, 4, 1, groups=2, bias=bias).double()
    x = torch.randn(3, 6, 4, 5, dtype=F64)
    ref = F.conv2d(x, conv.weight, conv.bias, groups=2)
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)
    assert "fold" not in repr(conv) and conv.extra_repr() == nn.Conv2d.extra_repr(conv)
    conv.fold = 3  # three channel blocks in the batch
    y = torch.randn(2, 18, 4, 5, dtype=F64)
    ref = F.conv2d(y.reshape(6, 6, 4, 5), conv.weight, conv.bias, groups=2).reshape(2, 12, 4, 5)
    torch.testing.assert_close(conv(y), ref, rtol=1e-12, atol=1e-12)
    assert "fold=3" in repr(conv)
    z = torch.randn(5, 18, dtype=F64)  # features of a linear layer
    ref = F.conv2d(z.reshape(15, 6, 1, 1), conv.weight, conv.bias, groups=2).reshape(5, 12)
    torch.testing.assert_close(conv(z), ref, rtol=1e-12, atol=1e-12)
    two = y[:, :, :1, :2]  # 1x2 images: the image path
    ref = F.conv2d(two.reshape(6, 6, 1, 2), conv.weight, conv.bias, groups=2)
    torch.testing.assert_close(conv(two), ref.reshape(2, 12, 1, 2), rtol=1e-12, atol=1e-12)
    one = y[:, :, :1, :1]  # 1x1 images take the features path too
    ref = F.conv2d(one.reshape(6, 6, 1, 1), conv.weight, conv.bias, groups=2)
    torch.testing.assert_close(conv(one), ref.reshape(2, 12, 1, 1), rtol=1e-12, atol=1e-12)


def test_linear_chain_orders():
    four = TNLinear(16, 16, format="ttmatrix", ranks=1, out_dims=(2,) * 4, in_dims=(2,) * 4)
    assert len(linear_chains(four, (3, 16))) == 24  # every order (each core holds an input leg)
    five = TNLinear(32, 32, format="ttmatrix", ranks=1, out_dims=(2,) * 5, in_dims=(2,) * 5)
    names = [p.name for p in linear_chains(five, (3, 32))]
    assert names == ["chain[G0,G1,G2,G3,G4]", "chain[G4,G3,G2,G1,G0]"]
    seq = linear_sequence(five, (3, 32), fallback="chain", measure=False)
    x = torch.randn(3, 32)
    rel_close(seq(x), five(x), 1e-5)


def test_model_without_compressed_layers():
    net = nn.Sequential(nn.Linear(3, 2))
    out = to_standard(net, (1, 3))
    assert out is not net and torch.equal(out[0].weight, net[0].weight)


# -- defaults, devices and the chains as plans ------------------------------------------------
def slower_chains(monkeypatch):
    """``_times`` faked: every chain 1.5x the layer in every round (each function run once).

    Returns the list of what each timed function returned, one list per call.
    """
    seen = []

    def fake(fns, repeat):
        seen.append([fn() for fn in fns])
        return [[1.0] * repeat] + [[1.5] * repeat for _ in fns[1:]]

    monkeypatch.setattr(export, "_times", fake)
    return seen


def test_defaults_measure_with_slack_one(monkeypatch):
    """Without arguments, the chains are measured (faked here) and must be within 1.0x."""
    slower_chains(monkeypatch)
    lin = TNLinear(8, 6, format="svd", ranks=2)
    shapes = []
    lin.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    head = "to_standard: {} (format svd) has no plain-torch form within 1.0x of its time at no "
    tail = (
        "more parameters: its fastest plain chain (chain[V,U]) is measured at 1.50x its forward "
        "(fallback='chain' writes it anyway); kept as a compressed layer"
    )
    with pytest.warns(UserWarning, match="^" + re.escape(head.format("TNLinear") + tail) + "$"):
        assert linear_sequence(lin, (2, 3, 8)) is lin
    assert shapes and set(shapes) == {(6, 8)}  # timed on the input shape asked for
    net = nn.Sequential(lin)
    with pytest.warns(UserWarning, match="^" + re.escape(head.format("0") + tail) + "$"):
        out = to_standard(net)
    assert out[0] is not lin and isinstance(out[0], TNLinear)  # a copy, kept compressed
    assert export._REPEAT == 15  # the rounds of the interleaved figures in the module notes
    conv = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    conv.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    shapes.clear()
    with pytest.warns(UserWarning, match=r"^to_standard: TNConv2d \(format tucker2\) has no .*"
                      r"within 1\.0x.* is measured at 1\.50x its forward"):  # fmt: skip
        assert conv_sequence(conv, (2, 8, 6, 5)) is conv
    assert shapes and set(shapes) == {(2, 8, 6, 5)}


def test_modules_are_made_on_the_layers_device():
    """Every module of a chain is made where the factors live (here the meta device)."""
    for layer, fn in [
        (TNLinear(8, 6, format="svd", ranks=2), linear_sequence),
        (TNLinear(8, 6, format="grouped", ranks=1, channel_groups=2), linear_sequence),
        (TNConv2d(8, 6, 3, padding=1, format="cp", ranks=3), conv_sequence),
        (TNConv2d(8, 6, 3, padding=1, format="tucker2", ranks=2), conv_sequence),
    ]:
        shape = (4, 8) if isinstance(layer, TNLinear) else (2, 8, 6, 6)
        seq = fn(layer.to("meta"), shape, fallback="chain", measure=False)
        assert plain(seq) and n_params(seq) > 0
        assert {p.device.type for p in seq.parameters()} == {"meta"}
        # the plans are those of the layer's device: off the CPU, depthwise steps are plain convs
        assert not any(isinstance(m, (ShiftConv2d, ChannelsLastConv2d)) for m in seq.modules())


def test_linear_chains_are_plans_of_the_layer():
    """Each chain, run as a plan, is the layer's map; its final permute is priced as a copy."""
    torch.manual_seed(5)
    lin = TNLinear(6, 8, bias=False, format="ttmatrix", ranks=2, out_dims=(2, 4), in_dims=(3, 2),
                   dtype=F64)  # fmt: skip
    x = torch.randn(5, 6, dtype=F64)
    tensors = {k: v.detach() for k, v in lin.factors.items()}
    plans = linear_chains(lin, (5, 6))
    assert [p.name for p in plans] == ["chain[G0,G1]", "chain[G1,G0]"]
    for plan in plans:
        assert plan.output_shape == (5, 8)
        torch.testing.assert_close(plan(x, tensors), lin(x), rtol=1e-12, atol=1e-12)
    # chain[G1,G0] ends with the output legs in the wrong order: one permute of the output
    last = plans[1].steps[-1]
    assert type(last).__name__ == "PermuteStep" and plans[1].describe().endswith("-> permute")
    assert (last.kind, last.flops, last.elements) == ("copy", 0, 2 * 5 * 8)
    # G1 (r 2, o1 4, i1 2) on (5 i0 3 | i1 2): 15 images 2->8; then G0 on (5 o1 4 | i0 3, r 2):
    # 20 images 6->2; each permute reads and writes the whole activation (120, then 40)
    assert [s.flops for s in plans[1].steps] == [2 * 15 * 8 * 2, 0, 2 * 20 * 2 * 6, 0]
    assert plans[1].elements == 15 * (2 + 8) + 2 * 120 + 20 * (6 + 2) + 2 * 40


def test_to_standard_passes_shapes_slack_and_measure_to_each_layer(monkeypatch):
    slower_chains(monkeypatch)
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4))
    shapes = []
    layer.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    net = nn.Sequential(nn.Conv2d(3, 8, 1), layer)
    out = to_standard(net, (2, 3, 6, 5), slack=1.5)  # 1.5x is within slack 1.5
    assert plain(out) and isinstance(out[1], nn.Sequential)
    assert shapes and set(shapes) == {(2, 8, 6, 5)}  # traced, then timed on that shape

    def no_timing(fns, repeat):
        raise AssertionError("timed with measure=False")

    monkeypatch.setattr(export, "_times", no_timing)
    assert plain(to_standard(net, (2, 3, 6, 5), fallback="chain", measure=False))


def test_to_standard_on_the_layers_device():
    net = nn.Sequential(TNConv2d(4, 6, 3, padding=1, format="cp", ranks=3)).to("meta")
    out = to_standard(net, (2, 4, 6, 6), fallback="chain", measure=False)
    assert plain(out) and {p.device.type for p in out.parameters()} == {"meta"}


@pytest.mark.parametrize("kernel", [(1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
def test_one_sided_padding(kernel, mode):
    """'same' padding of an even kernel pads one side only (a padding module before the conv)."""
    torch.manual_seed(6)
    layer = TNConv2d(6, 4, kernel, padding="same", padding_mode=mode, format="tucker2",
                     ranks=(2, 3), dtype=F64)  # fmt: skip
    seq = conv_sequence(layer, (2, 6, 5, 7), fallback="chain", measure=False)
    pads = [m for m in seq.modules() if isinstance(m, (nn.ZeroPad2d, nn.ReplicationPad2d))]
    assert len(pads) == 1 and pads[0].padding == (0, kernel[1] - 1, 0, kernel[0] - 1)
    x = torch.randn(3, 6, 5, 6, dtype=F64)
    assert seq(x).shape == (3, 4, 5, 6)
    rel_close(seq(x), layer(x), 1e-10)


def test_every_fitting_chain_computes_the_layer():
    """Not just the chosen one: each candidate chain, with the bias where it can go."""
    torch.manual_seed(7)
    layer = TNConv2d(8, 8, 3, padding=1, format="ht", fraction=0.6, out_dims=(2, 4),
                     in_dims=(2, 4), dtype=F64)  # fmt: skip
    plans = export._fits(layer, layer._candidates((2, 8, 5, 5), "cpu"))
    x = torch.randn(3, 8, 5, 6, dtype=F64)
    ends = set()
    for plan in plans:
        mods = export._plan_modules(layer, plan, 2)
        rel_close(nn.Sequential(*mods)(x), layer(x), 1e-10)
        ends.add(tuple(type(m).__name__ + str(getattr(m, "fold", "")) for m in mods[-2:]))
    # a folded 1x1 conv holds one block's channels: the bias goes after it
    assert ("PointwiseConv2d2", "ChannelBias") in ends and len(plans) >= 3


def test_the_estimate_is_for_the_layers_dtype():
    """float64: the layer's plan and the chains are both priced at 8 bytes an element."""
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4), dtype=F64)
    shape = (2, 8, 6, 6)
    plans = layer._candidates(shape, "cpu")
    own = export.cost.choose(plans, "cpu", 8)  # the layer's own choice (plan="auto")
    fits = sorted(export._fits(layer, plans), key=lambda p: p.cost["seconds"])
    ratio = fits[0].cost["seconds"] / own.cost["seconds"]
    assert ratio > 1
    with pytest.warns(UserWarning, match=rf"is estimated at {ratio:.2f}x its forward"):
        assert conv_sequence(layer, shape, measure=False) is layer


def test_what_is_timed_is_the_layer_and_each_chain_on_one_input(monkeypatch):
    seen = slower_chains(monkeypatch)
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(8, 8), dtype=F64)
    with pytest.warns(UserWarning, match=r"measured at 1\.50x"):
        conv_sequence(layer, (2, 8, 6, 6))
    (outputs,) = seen
    assert len(outputs) == 4  # the layer and the three cheapest chains
    first = outputs[0][0]
    assert first.shape == (2, 8, 6, 6) and first.dtype == F64
    for out in outputs[1:]:
        rel_close(out[0], first, 1e-10)


def test_measured_on_the_layers_device(monkeypatch):
    """The timing input lives where the factors do (here the meta device: faked timer)."""
    slower_chains(monkeypatch)
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4)).to("meta")
    seq = conv_sequence(layer, (2, 8, 6, 6), slack=1.5)
    assert plain(seq) and {p.device.type for p in seq.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measured_on_cuda_synchronises(monkeypatch):
    calls = []
    real = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (calls.append(1), real(*a))[1])
    slower_chains(monkeypatch)
    layer = TNConv2d(8, 8, 3, padding=1, format="tucker2", ranks=(4, 4)).cuda()
    with pytest.warns(UserWarning, match=r"measured at 1\.50x"):
        assert conv_sequence(layer, (2, 8, 6, 6)) is layer
    assert len(calls) >= 2  # after the layer and after each chain


def test_a_step_with_shift_set_exports_as_a_shift_conv():
    """Plans run CPU depthwise steps channels-last; a step marked ``shift`` still exports."""
    torch.manual_seed(2)
    layer = TNConv2d(6, 5, 3, padding=1, format="cp", ranks=4, dtype=F64)
    shape = (2, 6, 7, 7)
    plans = {p.name: p for p in layer._candidates(shape, "cpu")}
    plan = plans["separable[in=A1 h=A2 w=A3 out=A0]"]
    for step in plan.steps:
        if step.kind == "depthwise":
            step.shift, step.channels_last = True, False
    mods = export._plan_modules(layer, plan, shape[0])
    seq = nn.Sequential(*mods)
    assert sum(isinstance(m, export.ShiftConv2d) for m in seq.modules()) == 2
    x = torch.randn(shape, dtype=F64)
    rel_close(seq(x), layer(x), 1e-10)
