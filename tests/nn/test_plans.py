"""Conv geometry and the steps of a forward plan, against torch's own ops and hand counts."""

import pytest
import torch
import torch.nn.functional as F

from tensornet.formats import get_format
from tensornet.formats.structure import Factor
from tensornet.nn.geometry import ConvGeometry
from tensornet.nn.plans import (
    ConvStep,
    EinsumStep,
    ForwardPlan,
    LinearStep,
    MatmulStep,
    PermuteStep,
    Step,
    UnfoldStep,
    WeightExpr,
    _any_batch,
    channels_last_format,
    depthwise_shift,
)

F64 = torch.float64


# -- geometry ----------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_from_conv_args_pairs_and_pads():
    g = ConvGeometry.from_conv_args((3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 3))
    assert g == ConvGeometry((3, 5), (2, 1), (1, 1, 2, 2), (1, 3), "zeros")
    assert ConvGeometry.from_conv_args((3, 3)) == ConvGeometry((3, 3))
    assert ConvGeometry.from_conv_args((3, 3), 2, 1, 2).stride == (2, 2)
    assert ConvGeometry.from_conv_args((3, 3), 2, 1, 2).dilation == (2, 2)
    assert ConvGeometry.from_conv_args((3, 3), padding=0).padding == (0, 0, 0, 0)
    assert ConvGeometry.from_conv_args((3, 3), padding="valid").padding == (0, 0, 0, 0)
    # "same": the total padding d (k - 1) split with the extra pixel at the end
    same = ConvGeometry.from_conv_args((4, 3), padding="same", dilation=(1, 2))
    assert same.padding == (1, 2, 2, 2)
    assert ConvGeometry.from_conv_args((5, 4), padding="same").padding == (2, 2, 1, 2)
    assert ConvGeometry.from_conv_args((7, 3), padding="same").padding == (3, 3, 1, 1)
    reflect = ConvGeometry.from_conv_args((3, 3), padding=1, padding_mode="reflect")
    assert reflect == ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), "reflect")
    assert same.output_size(7, 6) == (7, 6)
    x = torch.randn(1, 2, 7, 6, dtype=F64)
    w = torch.randn(3, 2, 4, 3, dtype=F64)
    ref = F.conv2d(x, w, padding="same", dilation=(1, 2))
    torch.testing.assert_close(F.conv2d(same.pad(x), w, dilation=(1, 2)), ref)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride": 0}, r"^stride must be an int >= 1 or a pair of them, got \(0, 0\)$"),
        ({"stride": (1, 2, 3)}, r"^stride must be an int >= 1"),
        ({"stride": (1,)}, r"^stride must be an int >= 1"),
        ({"stride": True}, r"^stride must be an int >= 1 or a pair of them, got \(True, True\)$"),
        ({"stride": "ab"}, r"^stride must be an int >= 1"),
        ({"stride": (1, 2.0)}, r"^stride must be an int >= 1"),
        ({"stride": (1, False)}, r"^stride must be an int >= 1"),
        ({"dilation": (0, 1)}, r"^dilation must be an int >= 1 or a pair of them, got \(0, 1\)$"),
        ({"padding": -1}, r"^padding must be an int >= 0 or a pair of them, got \(-1, -1\)$"),
        ({"padding": "full"}, r"^padding must be an int, a pair, 'same' or 'valid', got 'full'$"),
        ({"padding": "same", "stride": 2}, r"^padding='same' is not supported for strided"),
        ({"padding_mode": "mirror"}, r"^padding_mode must be 'zeros', 'reflect', 'replicate' or "
                                     r"'circular', got 'mirror'$"),
    ],
)  # fmt: skip
def test_from_conv_args_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvGeometry.from_conv_args((3, 3), **kwargs)


def test_padding_zero_and_pairs_with_zero_are_valid():
    assert ConvGeometry.from_conv_args((3, 3), padding=(0, 1)).padding == (0, 0, 1, 1)


@pytest.mark.parametrize(
    ("args", "rows", "cols"),
    [
        (dict(), 5, 5),
        (dict(stride=2, padding=1), 8, 7),
        (dict(stride=(3, 2), padding=(2, 0), dilation=(2, 1)), 11, 6),
        (dict(dilation=2), 5, 6),
    ],
)
def test_output_size_is_torchs(args, rows, cols):
    g = ConvGeometry.from_conv_args((3, 2), **args)
    x = torch.zeros(1, 1, rows, cols)
    expected = F.conv2d(x, torch.zeros(1, 1, 3, 2), **args).shape[2:]
    assert g.output_size(rows, cols) == tuple(expected)


def test_output_size_refuses_an_input_smaller_than_the_kernel():
    g = ConvGeometry.from_conv_args((3, 3), dilation=(1, 2), padding=(0, 1))
    assert g.output_size(3, 3) == (1, 1)  # cols 3 + 2 >= 5: just fits
    with pytest.raises(
        ValueError,
        match=r"^input of spatial size 2x3 is smaller than the kernel \(3, 3\) "
        r"\(dilation \(1, 2\), padding \(0, 0, 1, 1\)\)$",
    ):
        g.output_size(2, 3)
    with pytest.raises(ValueError, match="input of spatial size 3x2"):
        g.output_size(3, 2)


def test_axis_parts():
    g = ConvGeometry((3, 5), (2, 3), (1, 2, 3, 4), (2, 1), "reflect")
    assert g.axis("h") == ConvGeometry((3, 1), (2, 1), (1, 2, 0, 0), (2, 1), "reflect")
    assert g.axis("w") == ConvGeometry((1, 5), (1, 3), (0, 0, 3, 4), (1, 1), "reflect")
    for bad in ("W", "x", None):
        with pytest.raises(ValueError, match=f"^axis must be 'h' or 'w', got {bad!r}$"):
            g.axis(bad)


def test_symmetric_zero_padding_and_pad():
    assert ConvGeometry((3, 3), padding=(1, 1, 2, 2)).symmetric_zero_padding
    assert not ConvGeometry((3, 3), padding=(1, 2, 2, 2)).symmetric_zero_padding
    assert not ConvGeometry((3, 3), padding=(1, 1, 2, 3)).symmetric_zero_padding
    assert not ConvGeometry(
        (3, 3), padding=(1, 1, 1, 1), padding_mode="reflect"
    ).symmetric_zero_padding
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert ConvGeometry((3, 3)).pad(x) is x
    padded = ConvGeometry((3, 3), padding=(1, 0, 2, 1)).pad(x)
    torch.testing.assert_close(padded, F.pad(x, (2, 1, 1, 0)))
    only_bottom = ConvGeometry((3, 3), padding=(0, 1, 0, 0), padding_mode="replicate").pad(x)
    torch.testing.assert_close(only_bottom, F.pad(x, (0, 0, 0, 1), mode="replicate"))
    for mode in ("reflect", "circular"):
        g = ConvGeometry((3, 3), padding=(1, 1, 1, 2), padding_mode=mode)
        torch.testing.assert_close(g.pad(x), F.pad(x, (1, 2, 1, 1), mode=mode))


# -- steps -------------------------------------------------------------------------------------
def factors_and_tensors():
    a = Factor("A", ("i", "r"), (3, 2))
    b = Factor("B", ("r", "o"), (2, 4))
    gen = torch.Generator().manual_seed(0)
    tensors = {f.name: torch.randn(f.shape, generator=gen, dtype=F64) for f in (a, b)}
    return (a, b), tensors


def test_weight_expr_contracts_and_counts_flops():
    (a, b), t = factors_and_tensors()
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    assert (w.names, w.legs, w.shape) == (("A", "B"), ("o", "i"), (1, 4, 3))
    assert w.flops == 2 * 3 * 2 * 4
    torch.testing.assert_close(w(t), (t["A"] @ t["B"]).T.reshape(1, 4, 3))
    one = WeightExpr.build([a], ("r", "i"), (2, 3))
    assert one.flops == 0  # a single factor is only transposed
    torch.testing.assert_close(one(t), t["A"].T)


def test_any_batch_frees_the_leading_size():
    assert _any_batch((5, 3, 2)) == (-1, 3, 2)
    assert _any_batch((7,)) == (-1,)
    assert _any_batch(()) == ()


def test_a_plain_step_has_no_images_and_does_not_run():
    s = Step("copy", 1, 2, "x")
    assert s.images == 0
    with pytest.raises(NotImplementedError):
        s(torch.zeros(1), {})


def test_permute_step():
    s = PermuteStep("copy", 0, 24, "permute", (0, 2, 1, 3), (2, 3, 4, 1))
    h = torch.arange(24.0)
    torch.testing.assert_close(s(h, {}), h.reshape(2, 3, 4, 1).permute(0, 2, 1, 3))
    assert s(h, {}).is_contiguous()
    assert s(torch.arange(48.0), {}).shape == (4, 4, 3, 1)  # batch left free


def test_matmul_and_linear_steps():
    (a, b), t = factors_and_tensors()
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    step = MatmulStep("matmul", 10, 20, "m", w, (5, 2, 1, 3, 6))
    assert step.images == 10 and step.run_view == (-1, 2, 1, 3, 6)
    h = torch.randn(5, 2, 3, 6, dtype=F64)
    expected = torch.einsum("oi,bpil->bpol", w(t)[0], h).unsqueeze(2)
    torch.testing.assert_close(step(h, t), expected)
    lin = LinearStep(MatmulStep("matmul", 7, 8, "lin", w, (1, 5, 1, 3, 1)))
    assert (lin.kind, lin.flops, lin.elements, lin.label) == ("matmul", 7, 8, "lin")
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(lin(x, t), x @ w(t)[0].T)


def conv_weight(co, ci, kh, kw, seed=0):
    gen = torch.Generator().manual_seed(seed)
    f = Factor("K", ("o", "i", "h", "w"), (co, ci, kh, kw))
    return WeightExpr.build([f], f.legs, f.shape), {
        "K": torch.randn(f.shape, generator=gen, dtype=F64)
    }


@pytest.mark.parametrize(
    "geometry",
    [
        ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1)),
        ConvGeometry((3, 2), (2, 1), (1, 0, 2, 1), (1, 2)),
        ConvGeometry((3, 3), (1, 2), (1, 1, 1, 1), (2, 1), "reflect"),
    ],
)
@pytest.mark.parametrize("shift", [False, True])
def test_conv_step_is_a_grouped_conv(geometry, shift):
    groups = 4
    w, t = conv_weight(groups, 1, *geometry.kernel)
    step = ConvStep("grouped", 0, 0, "c", w, (3, groups, 7, 8), geometry, groups, shift)
    assert step.images == 3 and step.run_view == (-1, groups, 7, 8)
    x = torch.randn(3 * groups * 7 * 8, dtype=F64)
    padded = geometry.pad(x.reshape(3, groups, 7, 8))
    ref = F.conv2d(padded, t["K"], None, geometry.stride, 0, geometry.dilation, groups)
    torch.testing.assert_close(step(x, t), ref)


def test_conv_step_with_groups_one():
    g = ConvGeometry((3, 3), (2, 2), (1, 1, 1, 1))
    w, t = conv_weight(5, 4, 3, 3)
    step = ConvStep("conv", 0, 0, "c", w, (2, 4, 6, 6), g)
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    torch.testing.assert_close(step(x, t), F.conv2d(x, t["K"], None, 2, 1))


@pytest.mark.parametrize(
    ("stride", "dilation"), [((1, 1), (1, 1)), ((2, 3), (1, 2)), ((1, 2), (3, 1))]
)
def test_depthwise_shift_is_a_depthwise_conv(stride, dilation):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 11, 10, generator=gen, dtype=F64)
    w = torch.randn(3, 1, 3, 2, generator=gen, dtype=F64)
    g = ConvGeometry((3, 2), stride, (0, 0, 0, 0), dilation)
    ref = F.conv2d(x, w, None, stride, 0, dilation, groups=3)
    torch.testing.assert_close(depthwise_shift(x, w, g), ref)


def test_unfold_step_both_paddings():
    x = torch.randn(2, 3, 6, 5, dtype=F64)
    sym = ConvGeometry((3, 2), (2, 1), (1, 1, 0, 0), (1, 2))
    step = UnfoldStep("unfold", 0, 0, "u", sym, (2, 3, 6, 5))
    assert step.run_view == (-1, 3, 6, 5)
    torch.testing.assert_close(step(x.flatten(), {}), F.unfold(x, (3, 2), (1, 2), (1, 0), (2, 1)))
    asym = ConvGeometry((3, 3), (1, 1), (0, 1, 1, 2), (1, 1), "replicate")
    step = UnfoldStep("unfold", 0, 0, "u", asym, (2, 3, 6, 5))
    ref = F.unfold(F.pad(x, (1, 2, 0, 1), mode="replicate"), (3, 3))
    torch.testing.assert_close(step(x, {}), ref)
    strided = ConvGeometry((3, 2), (2, 3), (0, 1, 1, 2), (2, 1))
    step = UnfoldStep("unfold", 0, 0, "u", strided, (2, 3, 6, 5))
    ref = F.unfold(F.pad(x, (1, 2, 0, 1)), (3, 2), (2, 1), 0, (2, 3))
    torch.testing.assert_close(step(x, {}), ref)


def test_einsum_step_and_forward_plan():
    (a, b), t = factors_and_tensors()
    from tensornet.core.einsum import plan_einsum

    _, program = plan_einsum([("n", "i"), a.legs, b.legs], [(5, 3), a.shape, b.shape], ("n", "o"))
    ein = EinsumStep("einsum", 11, 12, "e", ("A", "B"), program, (5, 3))
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(ein(x.flatten(), t), x @ t["A"] @ t["B"])
    permute = PermuteStep("copy", 3, 4, "p", (0, 2, 1), (5, 4, 1))
    plan = ForwardPlan("mine", [ein, permute], (5, 4))
    assert plan.run_shape == (-1, 4) and plan.family == "" and plan.cost == {}
    assert (plan.flops, plan.elements) == (14, 16)
    assert plan.describe() == "e -> p"
    torch.testing.assert_close(plan(x, t), x @ t["A"] @ t["B"])
    y = plan(torch.cat([x, x]), t)  # the batch is free
    assert y.shape == (10, 4)


def test_real_structure_weight_expr_matches_the_structure():
    s = get_format("tucker2").structure_for((6, 4, 3, 3), (3, 2), legs=("o", "i", "h", "w"))
    gen = torch.Generator().manual_seed(3)
    t = {f.name: torch.randn(f.shape, generator=gen, dtype=F64) for f in s.factors}
    w = WeightExpr.build(s.factors, ("o", "i", "h", "w"), (6, 4, 3, 3))
    torch.testing.assert_close(w(t), s.contract(t))


def test_a_channels_last_matmul_writes_the_same_values_pixels_major():
    (a, b), t = factors_and_tensors()
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    step = MatmulStep("matmul", 10, 20, "m", w, (5, 1, 1, 3, 6), channels_last=True)
    h = torch.randn(5, 3, 6, dtype=F64)
    y = step(h, t)
    torch.testing.assert_close(y, torch.einsum("oi,bil->bol", w(t)[0], h).reshape(5, 1, 1, 4, 6))
    assert y.stride()[-2:] == (1, 4)  # the 4 output channels of one pixel are adjacent
    bias = torch.randn(4, dtype=F64)
    torch.testing.assert_close(step(h, t, bias), y + bias.reshape(1, 1, 1, 4, 1))


def test_steps_add_a_bias_per_output_channel():
    (a, b), t = factors_and_tensors()
    bias = torch.randn(4, dtype=F64)
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    h = torch.randn(5, 3, 6, dtype=F64)
    step = MatmulStep("matmul", 10, 20, "m", w, (5, 1, 1, 3, 6))
    ref = torch.einsum("oi,bil->bol", w(t)[0], h) + bias.reshape(4, 1)
    torch.testing.assert_close(step(h, t, bias), ref.reshape(5, 1, 1, 4, 6))
    lin = LinearStep(MatmulStep("matmul", 7, 8, "lin", w, (1, 5, 1, 3, 1)))
    x = torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(lin(x, t, bias), x @ w(t)[0].T + bias)
    g = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    cw, ct = conv_weight(4, 1, 3, 3)
    xc = torch.randn(2, 4, 5, 5, dtype=F64)
    for shift in (False, True):
        conv = ConvStep("grouped", 0, 0, "c", cw, (2, 4, 5, 5), g, 4, shift)
        ref = F.conv2d(xc, ct["K"], bias, 1, 1, 1, 4)
        torch.testing.assert_close(conv(xc, ct, bias), ref)


def test_a_plan_adds_the_bias_in_its_last_step_or_at_the_end():
    (a, b), t = factors_and_tensors()
    bias = torch.randn(4, dtype=F64)
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    h = torch.randn(5, 3, 6, dtype=F64)
    ref = torch.einsum("oi,bil->bol", w(t)[0], h) + bias.reshape(4, 1)
    plain = MatmulStep("matmul", 1, 1, "m", w, (5, 1, 1, 3, 6))
    folded = MatmulStep("matmul", 1, 1, "m", w, (5, 1, 1, 3, 6), channels_last=True)
    permute = PermuteStep("copy", 0, 0, "p", (0, 1, 2), (5, 4, 6))
    for steps, fused in (([plain], True), ([folded], False), ([plain, permute], False)):
        plan = ForwardPlan("p", steps, (5, 4, 6))
        assert plan.fuses_bias == fused
        torch.testing.assert_close(plan(h, t, bias), ref)
        torch.testing.assert_close(plan(h, t), ref - bias.reshape(4, 1))
    grouped = MatmulStep("matmul", 1, 1, "m", w, (5, 2, 1, 3, 6))  # a folded leg: channels
    assert not ForwardPlan("p", [grouped], (5, 8, 6)).fuses_bias
    g = ConvGeometry((3, 3), (1, 1), (1, 1, 1, 1))
    cw, _ = conv_weight(4, 1, 3, 3)
    assert ForwardPlan(
        "c", [ConvStep("conv", 0, 0, "c", cw, (2, 1, 5, 5), g)], (2, 4, 5, 5)
    ).fuses_bias
    assert not ForwardPlan(
        "c", [ConvStep("conv", 0, 0, "c", cw, (6, 1, 5, 5), g)], (2, 12, 5, 5)
    ).fuses_bias
    assert not ForwardPlan("e", [], (2, 4)).fuses_bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_channels_last_conv_step_has_the_gradient_of_the_conv(dtype):
    g = ConvGeometry((3, 1), (1, 1), (1, 1, 0, 0))
    w, t = conv_weight(4, 1, 3, 1)
    t = {"K": t["K"].to(dtype).requires_grad_()}
    step = ConvStep("depthwise", 0, 0, "c", w, (2, 4, 5, 5), g, 4, channels_last=True)
    x = torch.randn(2, 4, 5, 5, dtype=dtype, requires_grad=True)
    y = step(x, t)
    assert y.is_contiguous(memory_format=torch.channels_last) == (dtype == torch.float32)
    (y**2).sum().backward()
    k = t["K"].detach().requires_grad_()
    x2 = x.detach().requires_grad_()
    (F.conv2d(x2, k, None, 1, (1, 0), 1, 4) ** 2).sum().backward()
    tol = 1e-10 if dtype == F64 else 1e-4
    torch.testing.assert_close(t["K"].grad, k.grad, rtol=tol, atol=tol)
    torch.testing.assert_close(x.grad, x2.grad, rtol=tol, atol=tol)
    assert channels_last_format(torch.zeros(1, dtype=torch.bfloat16)) == torch.channels_last


class _Recording(MatmulStep):
    """A matmul step that records the bias it was given."""

    def __call__(self, h, tensors, bias=None):
        self.seen = bias
        return super().__call__(h, tensors, bias)


def test_a_fusing_plan_hands_the_bias_to_its_last_step_only_when_there_is_one():
    (a, b), t = factors_and_tensors()
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    h = torch.randn(5, 3, 6, dtype=F64)
    bias = torch.randn(4, dtype=F64)
    step = _Recording("matmul", 1, 1, "m", w, (5, 1, 1, 3, 6))
    plan = ForwardPlan("p", [step], (5, 4, 6))
    plan(h, t, bias)
    assert step.seen is bias
    plan(h, t)
    assert step.seen is None
    lin = LinearStep(MatmulStep("matmul", 7, 8, "lin", w, (1, 5, 1, 3, 1)))
    assert ForwardPlan("l", [lin], (5, 4)).fuses_bias


def test_the_bias_keeps_the_output_dtype_and_goes_to_each_group():
    (a, b), t = factors_and_tensors()
    w = WeightExpr.build([a, b], ("o", "i"), (1, 4, 3))
    permute = PermuteStep("copy", 0, 0, "p", (0, 1, 2), (5, 4, 6))
    plan = ForwardPlan(
        "p", [MatmulStep("matmul", 1, 1, "m", w, (5, 1, 1, 3, 6)), permute], (5, 4, 6)
    )
    t32 = {k: v.float() for k, v in t.items()}
    y = plan(torch.randn(5, 3, 6), t32, torch.randn(4, dtype=F64))
    assert y.dtype == torch.float32
    # two groups of 2 output channels each: the bias (G co) reaches group g's channels
    g = Factor("K", ("g", "o", "i"), (2, 2, 3))
    kw = WeightExpr.build([g], g.legs, (2, 2, 3))
    k = {"K": torch.randn(2, 2, 3, dtype=F64)}
    grouped = MatmulStep("matmul", 1, 1, "m", kw, (5, 1, 2, 3, 6))
    x = torch.randn(5, 6, 6, dtype=F64)
    bias = torch.randn(4, dtype=F64)
    ref = torch.einsum("goi,bgil->bgol", k["K"], x.reshape(5, 2, 3, 6))
    got = ForwardPlan("g", [grouped], (5, 4, 6))(x, k, bias)
    torch.testing.assert_close(got, ref.reshape(5, 4, 6) + bias.reshape(4, 1))


def test_a_conv_step_with_asymmetric_padding_adds_the_bias():
    g = ConvGeometry((3, 3), (1, 1), (0, 1, 1, 2), (1, 1), "replicate")
    w, t = conv_weight(5, 4, 3, 3)
    bias = torch.randn(5, dtype=F64)
    step = ConvStep("conv", 0, 0, "c", w, (2, 4, 6, 6), g)
    x = torch.randn(2, 4, 6, 6, dtype=F64)
    ref = F.conv2d(F.pad(x, (1, 2, 0, 1), mode="replicate"), t["K"], bias)
    torch.testing.assert_close(step(x, t, bias), ref)
