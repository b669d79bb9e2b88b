"""Details of the 1-d, 3-d and transposed convs: costs of their plans, argument errors, the
plain-torch forms of export_nd, and the geometry helpers at their edges."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tensornet.formats.structure import Factor, Structure
from tensornet.nn import TNConv1d, TNConv3d, TNConvTranspose2d, dense_flops
from tensornet.nn.export_nd import Lifted1d, nd_sequence
from tensornet.nn.functional import plan_names
from tensornet.nn.geometry_nd import GeometryNd, TransposeGeometry, as_tuple
from tensornet.nn.measure import candidates, dense_structure, kernel_legs
from tensornet.nn.plans_nd import SpatialStep, nd_plans

F64 = torch.float64


@pytest.mark.parametrize(
    "module, shape, out",
    [
        (nn.Conv3d(4, 6, (1, 2, 3), stride=(1, 2, 1), padding=(0, 1, 1)), (3, 4, 5, 6, 7), None),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (3, 4, 5, 6), None),
        (nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2), (3, 4, 11), None),
    ],
)
def test_the_dense_plan_costs_the_dense_op(module, shape, out):
    """One factor (the dense kernel as is): FLOPs are the op's, elements its input and output."""
    plans = candidates(module, dense_structure(*kernel_legs(module)), shape, "cpu")
    dense = next(p for p in plans if p.name == "dense")
    # a 1-d kernel is lifted by a constant unit factor: one multiply per kernel element
    unit = module.weight.numel() if isinstance(module, nn.Conv1d) else 0
    assert dense.flops == dense_flops(module, shape) + unit
    y = module(torch.zeros(shape))
    lifted = (*y.shape[:2], 1, y.shape[2]) if isinstance(module, nn.Conv1d) else y.shape
    assert dense.output_shape == tuple(lifted)
    (step,) = [s for s in dense.steps if s.kind == "conv"]
    if isinstance(module, nn.Conv1d):  # the 2-d plans on (N, C, 1, L): a ConvStep
        assert step.elements == math.prod(shape) + y.numel()
        return
    assert isinstance(step, SpatialStep) and step.images == shape[0] and step.groups == 1
    assert step.elements == math.prod(shape) + y.numel()
    assert step.view == shape


def test_staged_steps_of_a_tucker2_3d_conv_and_their_labels():
    layer = TNConv3d(8, 6, (1, 2, 3), format="tucker2", ranks=(3, 2), dtype=F64)
    info = layer.plan_info((2, 8, 4, 5, 6))
    rows = {r["name"]: r for r in info.rows}
    staged = rows["staged[in=U_in conv=core out=U_out]"]
    assert staged["steps"] == "1x1 8->2 -> 1x2x3 conv 2->3 -> 1x1 3->6"
    out = 4 * 4 * 4
    expected = 2 * 2 * 8 * 2 * 120 + 2 * 2 * 3 * 2 * 6 * out + 2 * 2 * 3 * 6 * out
    assert staged["flops"] == expected
    assert staged["elements"] == 2 * ((8 + 2) * 120 + (2 * 120 + 3 * out) + (3 + 6) * out)
    assert rows["dense"]["steps"] == "1x2x3 conv 8->6"
    up = TNConvTranspose2d(6, 4, 2, stride=2, format="tucker2", ranks=(3, 2), dtype=F64)
    rows = {r["name"]: r for r in up.plan_info((1, 6, 3, 3)).rows}
    assert rows["staged[in=U_in conv=core out=U_out]"]["steps"] == (
        "1x1 6->3 -> 2x2 conv_transpose 3->2 -> 1x1 2->4"
    )
    assert rows["dense"]["flops"] > 2 * 6 * 4 * 4 * 9  # the rebuild of the kernel counts too


def test_grouped_spatial_steps_are_priced_as_grouped():
    layer = TNConv3d(6, 5, 3, format="cp", ranks=3, dtype=F64)
    plans = layer._candidates((2, 6, 3, 3, 3), "cpu")
    grouped = [s for p in plans for s in p.steps if isinstance(s, SpatialStep) and s.groups > 1]
    assert grouped and all(s.kind == "grouped" for s in grouped)
    assert all("(groups 3)" in s.label for s in grouped)
    assert {s.groups for s in grouped} == {3}


def test_a_tensorized_spatial_leg_has_no_plans():
    legs = ("out", "in", "kd", "kh", "kw")
    factor = Factor("W", ("o", "i", "a", "b", "kh", "kw"), (2, 2, 2, 2, 3, 3))
    modes = (("o",), ("i",), ("a", "b"), ("kh",), ("kw",))
    s = Structure("tt", legs, (2, 2, 4, 3, 3), (), (factor,), modes, ())
    g = GeometryNd.from_conv_args((4, 3, 3))
    assert nd_plans("dense", "conv3d", s, g, (1, 2, 4, 3, 3), "cpu") == []
    assert nd_plans("staged", "conv3d", s, g, (1, 2, 4, 3, 3), "cpu") == []
    assert plan_names("conv3d", s) == {}
    plain = TNConv3d(2, 2, 3, format="tucker2", ranks=(2, 2)).structure
    names = plan_names("conv3d", plain)
    assert names["dense"] == ("dense",) and "staged[in=U_in conv=core out=U_out]" in names["staged"]


def test_constructor_errors_name_the_field():
    for kw, message in [
        ({"in_channels": 0}, "TNConv3d: in_channels must be a positive int, got 0"),
        ({"out_channels": 2.5}, "TNConv3d: out_channels must be a positive int, got 2.5"),
        ({"ranks": 2, "fraction": 0.5}, "TNConv3d: give ranks or fraction, not both"),
        ({"ranks": None}, "TNConv3d: a compressed layer needs ranks= or fraction="),
        ({"kernel_size": (3, 3)}, "kernel_size must be an int >= 1 or 3 of them"),
    ]:
        args = {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "format": "tt", "ranks": 2}
        args.update(kw)
        with pytest.raises(ValueError, match=message):
            TNConv3d(**args)
    with pytest.raises(ValueError, match="stride must be an int >= 1 or 1 of them"):
        TNConv1d(2, 2, 3, stride=(1, 1), format="tt", ranks=2)
    with pytest.raises(ValueError, match="padding must be an int >= 0 or 1 of them"):
        TNConv1d(2, 2, 3, padding=-1, format="tt", ranks=2)
    small = TNConv3d(4, 4, 3, format="tucker2", fraction=0.25)
    assert small.structure.num_params <= 0.25 * 4 * 4 * 27
    assert TNConv1d(4, 4, 3, format="tucker2", ranks=99).ranks == (4, 4)


def test_from_conv_refuses_nan_kernels_and_biases_and_keeps_the_error():
    conv = nn.Conv3d(2, 3, 2)
    with torch.no_grad():
        conv.bias[0] = math.nan
    with pytest.raises(ValueError, match="TNConv3d.from_conv: conv.bias"):
        TNConv3d.from_conv(conv, "tt", ranks=2)
    with torch.no_grad():
        conv.bias[0] = 0.0
        conv.weight[0, 0, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="TNConv3d.from_conv: conv.weight"):
        TNConv3d.from_conv(conv, "tt", ranks=2)
    up = nn.ConvTranspose2d(4, 3, 3, dtype=F64)
    layer = TNConvTranspose2d.from_conv(up, "tucker2", ranks=(1, 1))
    err = torch.linalg.norm(layer.weight - up.weight) / torch.linalg.norm(up.weight)
    assert layer.decomposition_error == pytest.approx(float(err), rel=1e-9)
    assert 0 < layer.decomposition_error < 1
    torch.testing.assert_close(layer.bias, up.bias)
    assert layer.weight.dtype == F64 and layer.plan == "auto"
    assert TNConvTranspose2d.from_conv(up, "tt", ranks=2, plan="dense").plan == "dense"


def test_unbatched_inputs_and_the_expected_shapes():
    three = TNConv3d(2, 3, 2, format="tt", ranks=2, dtype=F64)
    x = torch.randn(2, 3, 3, 3, dtype=F64)
    torch.testing.assert_close(three(x), three(x.unsqueeze(0)).squeeze(0))
    with pytest.raises(ValueError, match=r"TNConv3d expects input \(N, 2, S0, S1, S2\) or \(2,"):
        three(torch.zeros(2, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="expects input"):
        three(torch.zeros(2, 3, 3))
    up = TNConvTranspose2d(2, 3, 2, format="tt", ranks=2, bias=False, dtype=F64)
    with pytest.raises(ValueError, match=r"\(N, 2, S0, S1\) or \(2, S0, S1\), got \(1, 3, 4, 4\)"):
        up(torch.zeros(1, 3, 4, 4, dtype=F64))
    assert up.bias is None and "bias=False" in repr(up)


def test_geometry_edges():
    assert GeometryNd.from_conv_args((3,)).output_size((3,)) == (1,)
    with pytest.raises(ValueError, match=r"input of spatial size \(2,\) is smaller than"):
        GeometryNd.from_conv_args((3,)).output_size((2,))
    assert GeometryNd.from_conv_args((2, 2), padding="same").padding == ((0, 1), (0, 1))
    assert not GeometryNd.from_conv_args((2, 2), padding="same").symmetric_zero_padding
    assert GeometryNd.from_conv_args((3, 3), padding=1).symmetric_zero_padding
    assert not GeometryNd.from_conv_args(
        (3,), padding=1, padding_mode="reflect"
    ).symmetric_zero_padding
    with pytest.raises(ValueError, match="must be an int >= 1"):
        as_tuple(True, 2, "stride")
    with pytest.raises(ValueError, match="must be an int >= 1"):
        as_tuple(1.0, 2, "stride")
    assert as_tuple(0, 2, "padding", low=0) == (0, 0)
    g = GeometryNd.from_conv_args((2, 1, 3), padding=(1, 0, 2), padding_mode="circular")
    x = torch.arange(2 * 3 * 4 * 5, dtype=F64).reshape(1, 2, 3, 4, 5)
    ref = torch.nn.functional.pad(x, (2, 2, 0, 0, 1, 1), mode="circular")
    assert torch.equal(g.pad(x), ref)
    t = TransposeGeometry.from_conv_args(
        (3, 2), stride=(1, 3), dilation=(2, 1), output_padding=(1, 2)
    )
    assert t.output_size((4, 4)) == (4 - 1 + 4 + 1 + 1, 3 * 3 + 1 + 2 + 1)


def test_nd_sequence_keeps_a_layer_no_chain_fits_and_checks_options():
    layer = TNConv3d(4, 4, 3, padding=1, format="tt", ranks=1, dtype=F64)
    with pytest.warns(UserWarning, match="no chain of plain modules holds at most its param"):
        assert nd_sequence(layer, (1, 4, 4, 4, 4), measure=False) is layer
    assert isinstance(nd_sequence(layer, fallback="chain", measure=False), TNConv3d)
    for kw, error in [
        ({"slack": 0.5}, ValueError),
        ({"slack": True}, ValueError),
        ({"fallback": "dense"}, ValueError),
        ({"measure": 1}, TypeError),
    ]:
        with pytest.raises(error):
            nd_sequence(layer, **kw)


def test_nd_sequence_writes_chains_with_the_padding_and_folds():
    torch.manual_seed(7)
    layer = TNConv3d(
        4, 6, 3, padding=(1, 0, 2), padding_mode="reflect", format="tucker2", ranks=2, dtype=F64
    )
    seq = nd_sequence(layer, (2, 4, 5, 5, 5), fallback="chain", measure=False)
    assert isinstance(seq, nn.Sequential)
    assert any(isinstance(m, nn.ReflectionPad3d) for m in seq.modules())
    x = torch.randn(2, 4, 5, 5, 5, dtype=F64)
    torch.testing.assert_close(seq(x), layer(x), atol=1e-10, rtol=0)
    assert sum(p.numel() for p in seq.parameters()) <= layer.num_params
    one = TNConv1d(4, 6, 3, padding=1, format="tucker2", ranks=(2, 2), dtype=F64)
    lifted = nd_sequence(one, fallback="chain", measure=False)
    assert isinstance(lifted, Lifted1d)
    x = torch.randn(3, 4, 9, dtype=F64)
    torch.testing.assert_close(lifted(x), one(x), atol=1e-10, rtol=0)
    up = TNConvTranspose2d(4, 2, 3, stride=2, format="tucker2", ranks=(4, 2), dtype=F64)
    for plan in ("dense", "staged"):
        up.plan = plan
        chain = nd_sequence(up, (2, 4, 3, 3), fallback="chain", measure=False)
        assert isinstance(chain, nn.Sequential)
        assert any(isinstance(m, nn.ConvTranspose2d) for m in chain.modules())
        x = torch.randn(2, 4, 3, 3, dtype=F64)
        torch.testing.assert_close(chain(x), up(x), atol=1e-10, rtol=0)


def test_measured_plans_of_every_new_kind():
    torch.manual_seed(8)
    for layer, shape in [
        (TNConv1d(4, 4, 3, padding=1, format="tucker2", ranks=(2, 2), plan="measure"), (2, 4, 9)),
        (
            TNConv3d(4, 4, 3, padding=1, format="tucker2", ranks=(2, 2), plan="measure"),
            (2, 4, 4, 4, 4),
        ),
        (TNConvTranspose2d(4, 4, 3, format="tucker2", ranks=(2, 2), plan="measure"), (2, 4, 4, 4)),
    ]:
        x = torch.randn(shape)
        y = layer(x)
        torch.testing.assert_close(y, layer.to_conv()(x), atol=1e-5, rtol=1e-5)
        chosen = next(iter(layer._plans.values()))
        assert "measured" in chosen.cost and chosen.cost["timings"]


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"kernel": (0, 3)}, "kernel_size"),
        ({"stride": (1, 0)}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"padding": (1, -1)}, "padding"),
        ({"output_padding": (-1, 0)}, "output_padding"),
    ],
)
def test_geometry_errors_name_the_field(kw, field):
    args = {"kernel": (3, 3), **kw}
    with pytest.raises(ValueError, match=rf"^{field} must be an int >= \d or 2 of them"):
        TransposeGeometry.from_conv_args(args.pop("kernel"), **args)
    if field != "output_padding":
        args = {"kernel": (3, 3), **kw}
        with pytest.raises(ValueError, match=rf"^{field} must be an int >= \d or 2 of them"):
            GeometryNd.from_conv_args(args.pop("kernel"), **args)


def test_geometry_defaults_asymmetric_sizes_and_padded_groups():
    t = TransposeGeometry.from_conv_args((3, 3))
    assert (t.stride, t.padding, t.output_padding, t.dilation) == ((1, 1), (0, 0), (0, 0), (1, 1))
    g = GeometryNd.from_conv_args((3, 3))
    assert (g.stride, g.padding, g.dilation, g.padding_mode) == (
        (1, 1), ((0, 0), (0, 0)), (1, 1), "zeros"
    )  # fmt: skip
    assert GeometryNd.from_conv_args((4,), padding="same").output_size((1,)) == (1,)
    assert GeometryNd.from_conv_args((2,), padding="same").output_size((1,)) == (1,)
    with pytest.raises(
        ValueError, match="^padding=.same. is not supported for strided convolutions$"
    ):
        GeometryNd.from_conv_args((3,), stride=2, padding="same")
    zeros = GeometryNd.from_conv_args((2, 2, 2), padding="same")
    x = torch.randn(1, 4, 3, 3, 3, dtype=F64)
    assert torch.equal(zeros.pad(x), torch.nn.functional.pad(x, (0, 1, 0, 1, 0, 1)))
    w = torch.randn(6, 2, 2, 2, 2, dtype=F64)
    ref = torch.nn.functional.conv3d(zeros.pad(x), w, groups=2)
    torch.testing.assert_close(zeros.conv(x, w, 2), ref)
    same = GeometryNd.from_conv_args((2, 2, 2), padding=1)
    ref = torch.nn.functional.conv3d(x, w, padding=1, groups=2)
    torch.testing.assert_close(same.conv(x, w, 2), ref)


def test_transpose_output_padding_and_size_boundaries():
    with pytest.raises(ValueError, match="output_padding"):
        TransposeGeometry.from_conv_args((3, 3), stride=1, dilation=2, output_padding=2)
    ok = TransposeGeometry.from_conv_args((3, 3), stride=1, dilation=2, output_padding=1)
    assert ok.output_size((2, 2)) == (2 - 1 + 4 + 1 + 1,) * 2
    assert TransposeGeometry.from_conv_args((1, 1)).output_size((1, 1)) == (1, 1)


def _expanding(rank: int) -> Structure:
    """An in-channel factor widening 2 channels to ``rank``, then a 1x1x1 core."""
    legs = ("out", "in", "kd", "kh", "kw")
    factors = (
        Factor("A", ("in", "r"), (2, rank)),
        Factor("C", ("r", "kd", "kh", "kw", "out"), (rank, 1, 1, 1, 2)),
    )
    modes = tuple((leg,) for leg in legs)
    return Structure("tt", legs, (2, 2, 1, 1, 1), (rank,), factors, modes, (rank,))


def test_an_intermediate_larger_than_the_patches_drops_the_plan():
    """The limit is (kernel size + 1) x the larger of input and output: 2x for 1x1x1."""
    g = GeometryNd.from_conv_args((1, 1, 1))
    shape = (3, 2, 2, 2, 2)
    at_limit = [p.name for p in nd_plans("staged", "conv3d", _expanding(4), g, shape, "cpu")]
    above = [p.name for p in nd_plans("staged", "conv3d", _expanding(5), g, shape, "cpu")]
    assert at_limit == ["staged[in=A conv=C]"] and above == []


def test_grouped_step_costs_peaks_and_families():
    layer = TNConv3d(6, 5, 3, format="cp", ranks=3, dtype=F64)
    plans = {p.name: p for p in layer._candidates((2, 6, 3, 3, 3), "cpu")}
    assert all(p.family == name.split("[")[0] for name, p in plans.items())
    staged = plans["staged[in=A1 conv=A2,A3,A4 out=A0]"]
    grouped = staged.steps[1]
    conv_flops = grouped.flops - grouped.weight.flops  # the rebuild of its kernel apart
    assert (conv_flops, grouped.elements, grouped.images) == (2 * 2 * 3 * 27, 2 * 3 * 28, 2)
    assert staged.peak_elements == 2 * 6 * 27
    folded = plans["staged[in=A0,A1 conv=A2,A3,A4]"]  # out and rank: 5 out channels folded
    step = folded.steps[-1]
    assert isinstance(step, SpatialStep) and step.images == 2 * 5 and isinstance(step.images, int)
    assert step.flops - step.weight.flops == 2 * 10 * 3 * 27  # a 3 -> 1 conv per image
    assert step.label == "3x3x3 conv 3->1" and folded.peak_elements == 2 * 15 * 27
    two = TNConv3d(4, 4, 2, format="cp", ranks=2)
    labels = [s.label for p in two._candidates((1, 4, 3, 3, 3), "cpu") for s in p.steps]
    assert "2x2x2 conv 2->2 (groups 2)" in labels


@pytest.mark.parametrize("cls", [TNConv1d, TNConv3d, TNConvTranspose2d])
def test_constructor_defaults_fraction_options_and_device(cls):
    plain = cls(4, 6, 3, ranks=2)
    assert plain.format == "tt" and plain.plan == "auto" and plain.bias is not None
    assert plain.geometry.stride == (1,) * len(plain.geometry.stride)
    dense = math.prod(plain.structure.shape)
    small = cls(4, 6, 3, format="tucker2", fraction=0.3)
    assert (
        small.structure.num_params
        <= 0.3 * dense
        < cls(4, 6, 3, format="tucker2", fraction=0.9).structure.num_params
    )
    order = ("out", *plain.legs[2:], "in") if plain.legs[0] == "out" else ("out", "kh", "kw", "in")
    ordered = cls(4, 6, 3, ranks=2, order=order)
    assert ordered.structure.option("order") == order
    meta = cls(4, 6, 3, ranks=2, device="meta", dtype=F64)
    assert all(p.device.type == "meta" and p.dtype == F64 for p in meta.parameters())
    assert cls(4, 6, 3, ranks=2, bias=False).bias is None


def test_nd_sequence_slack_decides_between_chain_and_layer():
    layer = TNConv3d(8, 8, 3, padding=1, format="tucker2", ranks=(2, 2))
    shape = (1, 8, 3, 3, 3)  # tiny: the cost model runs the dense kernel, larger than the layer
    assert layer.plan_info(shape).chosen == "dense"
    with pytest.warns(UserWarning, match=r"^to_standard: conv9 \(format tucker2\) has no plain"):
        assert nd_sequence(layer, shape, measure=False, name="conv9") is layer
    with pytest.warns(
        UserWarning, match=r"staged\[in=U_in conv=core out=U_out\]\) is estimated at"
    ):
        nd_sequence(layer, shape, measure=False)
    assert isinstance(nd_sequence(layer, shape, slack=100.0, measure=False), nn.Sequential)
    with pytest.warns(UserWarning, match="TNConv3d"):
        nd_sequence(layer, shape, slack=1.0, measure=False)


def test_nd_sequence_details_of_the_written_modules():
    from tensornet.nn.export_nd import _default_shape

    one = TNConv1d(3, 4, 2, padding="same", bias=False, format="tucker2", ranks=(2, 2), dtype=F64)
    three = TNConv3d(3, 4, 2, padding="same", format="tucker2", ranks=(4, 3), dtype=F64)
    up = TNConvTranspose2d(3, 4, 2, format="tucker2", ranks=(3, 4), bias=False, dtype=F64)
    assert _default_shape(one) == (1, 3, 32) and _default_shape(three) == (1, 3, 8, 8, 8)
    assert _default_shape(up) == (1, 3, 8, 8)
    for layer, shape in [(one, (2, 3, 7)), (three, (2, 3, 4, 5, 3)), (up, (2, 3, 4, 5))]:
        seq = nd_sequence(layer, fallback="chain", measure=False)
        assert not any(isinstance(m, type(layer)) for m in seq.modules())
        x = torch.randn(*shape, dtype=F64)
        torch.testing.assert_close(seq(x), layer(x), atol=1e-10, rtol=0)
        biases = [m for m in seq.modules() if type(m).__name__ == "ChannelBias"]
        assert len(biases) == (layer.bias is not None)
    pads = [m for m in nd_sequence(three, fallback="chain", measure=False).modules()]
    assert any(isinstance(m, nn.ZeroPad3d) and m.padding == (0, 1, 0, 1, 0, 1) for m in pads)
    lifted = Lifted1d(nn.Identity())
    assert lifted(torch.ones(2, 3, 5)).shape == (2, 3, 5)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (
            TNConv3d(
                4, 2, 2, padding=(1, 0, 1), dilation=(1, 2, 1), format="cp", ranks=2, dtype=F64
            ),
            (2, 4, 3, 4, 3),
        ),
        (
            TNConvTranspose2d(4, 2, 3, stride=2, dilation=2, format="cp", ranks=2, dtype=F64),
            (2, 4, 3, 3),
        ),
        (
            TNConv3d(
                4, 6, 2, format="ttmatrix", ranks=2, out_dims=(2, 3), in_dims=(2, 2), dtype=F64
            ),
            (2, 4, 3, 3, 3),
        ),
    ],
)
def test_every_plan_written_as_modules_gives_the_layer(layer, shape):
    from tensornet.nn.export_nd import _modules

    torch.manual_seed(10)
    x = torch.randn(*shape, dtype=F64)
    plans = layer._candidates(shape, "cpu")
    folded = 0
    for plan in plans:
        mods = nn.Sequential(*_modules(layer, plan, shape[0]))
        folded += any(type(m).__name__ == "Folded" for m in mods.modules())
        torch.testing.assert_close(mods(x), layer(x), atol=1e-10, rtol=0, msg=plan.name)
    assert folded >= 1 and len(plans) >= 4
    permutes = [m for p in plans for m in nn.Sequential(*_modules(layer, p, shape[0])).modules()]
    assert any(type(m).__name__ == "ChannelPermute" for m in permutes) == (
        layer.format == "ttmatrix"
    )


def test_conv_helpers_plain_ints_and_lift():
    import numpy as np

    from tensornet.nn.convnd import lift, plain_ints

    assert type(plain_ints(np.int64(3))) is int and plain_ints(("same", np.int32(2))) == ("same", 2)
    assert all(type(v) is int for v in plain_ints([np.int64(1), 2]))
    assert plain_ints(2.5) == 2.5
    s = TNConv1d(4, 6, 3, format="tt", ranks=2).structure
    lifted = lift(s)
    assert lifted.legs == ("out", "in", "__unit_kh", "k") and lifted.format == s.format
    assert (lifted.ranks, lifted.max_ranks, lifted.options) == (s.ranks, s.max_ranks, s.options)


def test_messages_name_the_layer_and_channels_of_one_are_fine():
    with pytest.raises(ValueError, match="^TNConv3d"):
        TNConv3d(2, 2, 3, format="tt", ranks=0)
    with pytest.raises(ValueError, match="^TNConv3d"):
        TNConv3d(2, 2, 3, format="tt", fraction=2.0)
    with pytest.raises(ValueError, match=r"^TNConv3d.from_conv"):
        TNConv3d.from_conv(nn.Conv3d(2, 2, 3), "tt", ranks=0)
    with pytest.raises(ValueError, match="^dilation must be an int >= 1 or 1 of them"):
        TNConv1d(2, 2, 3, dilation=0, format="tt", ranks=2)
    assert TNConv3d(1, 1, 1, format="tt", ranks=1).weight.shape == (1, 1, 1, 1, 1)


@pytest.mark.parametrize("cls, torch_cls", [(TNConv1d, nn.Conv1d), (TNConv3d, nn.Conv3d)])
def test_from_conv_by_trunc_fraction_and_options(cls, torch_cls):
    torch.manual_seed(11)
    conv = torch_cls(4, 6, 3, dtype=F64)
    assert cls.from_conv(conv).format == "tt"
    by_trunc = cls.from_conv(conv, "tucker2", trunc=2)
    assert by_trunc.ranks == (2, 2) and by_trunc.decomposition_error > 0
    by_fraction = cls.from_conv(conv, "tucker2", fraction=0.3)
    assert by_fraction.structure.num_params <= 0.3 * conv.weight.numel()
    order = ("out", *cls.legs[2:], "in")
    assert cls.from_conv(conv, "tt", ranks=2, order=order).structure.option("order") == order


def test_empty_unbatched_and_single_batches_keep_their_shapes_and_dtypes():
    one = TNConv1d(2, 3, 3, dilation=2, format="tt", ranks=2, dtype=F64)
    empty = one(torch.zeros(0, 2, 9, dtype=torch.float32))
    assert empty.shape == (0, 3, 5) and empty.dtype == torch.float32
    three = TNConv3d(2, 3, 2, format="tt", ranks=2, dtype=F64)
    empty = three(torch.zeros(0, 2, 3, 3, 3, dtype=torch.float32))
    assert empty.shape == (0, 3, 2, 2, 2) and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="smaller than the kernel"):
        three(torch.zeros(0, 2, 1, 3, 3, dtype=F64))
    assert three(torch.randn(1, 2, 3, 3, 3, dtype=F64)).shape == (1, 3, 2, 2, 2)
    three.clear_plans()
    three(torch.randn(2, 3, 3, 3, dtype=F64))  # unbatched: planned as a batch of one
    assert [key[0] for key in three._plans] == [(1, 2, 3, 3, 3)]


def test_cpu_plans_of_a_1d_cp_layer_run_depthwise_steps_channels_last():
    from tensornet.nn.plans import ConvStep

    layer = TNConv1d(4, 4, 3, format="cp", ranks=3)
    steps = [s for p in layer._candidates((2, 4, 9), "cpu") for s in p.steps]
    assert any(isinstance(s, ConvStep) and s.channels_last for s in steps)
    steps = [s for p in layer._candidates((2, 4, 9), "cuda") for s in p.steps]
    assert not any(isinstance(s, ConvStep) and (s.channels_last or s.shift) for s in steps)


def test_extra_repr_shows_what_differs_from_the_defaults():
    plain = repr(TNConv3d(2, 2, 3, format="tt", ranks=2, bias=False))
    assert "kernel_size=(3, 3, 3), bias=False, format=tt, ranks=" in plain
    for part in ("stride", "padding", "dilation", "padding_mode"):
        assert f"{part}=" not in plain
    wide = repr(TNConv3d(2, 2, 3, stride=2, padding=1, dilation=2, format="tt", ranks=2))
    assert "stride=(2, 2, 2), padding=(1, 1, 1), dilation=(2, 2, 2), format=tt" in wide
    up = repr(TNConvTranspose2d(2, 2, 3, stride=2, output_padding=1, format="tt", ranks=2))
    assert "stride=(2, 2), output_padding=(1, 1), format=tt" in up
    assert "output_padding" not in repr(TNConvTranspose2d(2, 2, 3, format="tt", ranks=2))


def test_nd_sequence_defaults_messages_and_the_1d_decisions():
    import inspect

    params = inspect.signature(nd_sequence).parameters
    assert (params["slack"].default, params["fallback"].default, params["measure"].default) == (
        1.0, "keep", True
    )  # fmt: skip
    layer = TNConv3d(4, 4, 3, format="tt", ranks=1)
    for kw, message in [
        ({"slack": 0.5}, r"^slack must be a number >= 1, got 0.5$"),
        ({"fallback": "x"}, r"^fallback must be one of \('keep', 'chain'\), got 'x'$"),
    ]:
        with pytest.raises(ValueError, match=message):
            nd_sequence(layer, **kw)
    with pytest.raises(TypeError, match=r"^measure must be True or False, got 1$"):
        nd_sequence(layer, measure=1)
    with pytest.warns(
        UserWarning, match="holds at most its parameters; kept as a compressed layer$"
    ):
        nd_sequence(layer, (1, 4, 3, 3, 3), measure=False)
    # the layer's own plan is a chain within its parameters: written at ratio 1 (slack 1.0)
    big = TNConv3d(16, 16, 3, padding=1, format="tucker2", ranks=(4, 4))
    assert big.plan_info((8, 16, 8, 8, 8)).chosen == "staged[in=U_in conv=core out=U_out]"
    seq = nd_sequence(big, (8, 16, 8, 8, 8), measure=False)
    assert isinstance(seq, nn.Sequential)
    one = TNConv1d(8, 8, 3, format="tucker2", ranks=(2, 2))
    with pytest.warns(UserWarning, match=r"^to_standard: c1 \(format tucker2\) has no plain"):
        assert nd_sequence(one, (1, 8, 3), measure=False, name="c1") is one
    forced = TNConv1d(
        8, 8, 3, format="tucker2", ranks=(2, 2), plan="staged[in=U_in conv=core,__unit out=U_out]"
    )
    chain = nd_sequence(forced, (1, 8, 3), measure=False, fallback="chain")
    convs = [m for m in chain.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3


def test_lifted1d_takes_unbatched_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, (1, 3)).double()
    lifted = Lifted1d(conv)
    x = torch.randn(2, 10, dtype=torch.float64)
    one_d = nn.functional.conv1d(x.unsqueeze(0), conv.weight.squeeze(2), conv.bias)[0]
    y = lifted(x)
    assert y.shape == (3, 8)
    torch.testing.assert_close(y, one_d, rtol=1e-12, atol=1e-12)  # the Conv1d it stands for
