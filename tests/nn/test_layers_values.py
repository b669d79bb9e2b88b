"""TNConv2d / TNLinear values the other layer tests leave open: defaults, exact messages, the
repr, the device and dtype every constructor and conversion keeps, initialisation bounds, and
from_conv / from_linear passing trunc, fraction, legs and options through (against dense torch
computations in float64)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensornet.formats import fraction_ranks, get_format
from tensornet.nn import TNConv2d, TNLinear
from tensornet.nn.functional import plan_names
from tensornet.nn.layers import TNLayer, conv_plan_names

F64 = torch.float64
META = torch.device("meta")


def exact(message):
    """``pytest.raises(match=...)`` for the whole message."""
    return "^" + re.escape(message) + "$"


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# -- defaults --------------------------------------------------------------------------------
def test_conv_defaults_are_nn_conv2d_defaults_and_tt():
    torch.manual_seed(0)
    layer = TNConv2d(4, 6, 3, ranks=2, dtype=F64)
    assert layer.format == "tt" and layer.ranks == (2, 2, 2)
    assert layer.stride == (1, 1) and layer.dilation == (1, 1) and layer.padding == 0
    assert layer.groups == 1 and layer.padding_mode == "zeros"
    assert layer.bias is not None and layer.decomposition_error is None
    x = torch.randn(2, 4, 7, 8, dtype=F64)
    close(layer(x), F.conv2d(x, layer.weight, layer.bias))
    conv = nn.Conv2d(4, 6, 3, dtype=F64)
    assert TNConv2d.from_conv(conv, ranks=2).format == "tt"


def test_linear_defaults_are_svd_with_a_bias():
    torch.manual_seed(1)
    layer = TNLinear(8, 6, ranks=2, dtype=F64)
    assert layer.format == "svd" and layer.ranks == (2,)
    assert layer.bias is not None and layer.decomposition_error is None
    x = torch.randn(5, 8, dtype=F64)
    close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert TNLinear.from_linear(nn.Linear(8, 6), ranks=2).format == "svd"


def test_sizes_of_one_are_accepted():
    torch.manual_seed(2)
    conv = TNConv2d(1, 1, 1, format="svd", ranks=1, dtype=F64)
    x = torch.randn(2, 1, 3, 3, dtype=F64)
    close(conv(x), F.conv2d(x, conv.weight, conv.bias))
    lin = TNLinear(1, 1, ranks=1, dtype=F64)
    x = torch.randn(4, 1, dtype=F64)
    close(lin(x), F.linear(x, lin.weight, lin.bias))


# -- exact messages --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TNConv2d(0, 4, 3, ranks=2), "TNConv2d: in_channels must be a positive int, got 0"),
        (
            lambda: TNConv2d(4, 0, 3, ranks=2),
            "TNConv2d: out_channels must be a positive int, got 0",
        ),
        (lambda: TNLinear(0, 4, ranks=2), "TNLinear: in_features must be a positive int, got 0"),
        (lambda: TNLinear(4, 0, ranks=2), "TNLinear: out_features must be a positive int, got 0"),
        (
            lambda: TNConv2d(4, 4, 3, ranks=2, fraction=0.5),
            "TNConv2d: give ranks or fraction, not both",
        ),
        (
            lambda: TNLinear(4, 4, ranks=2, fraction=0.5),
            "TNLinear: give ranks or fraction, not both",
        ),
    ],
)
def test_size_and_rank_errors_name_the_layer_and_the_field(build, message):
    with pytest.raises(ValueError, match=exact(message)):
        build()


def test_kernel_sizes_that_are_not_ints_are_refused():
    """A float inside a kernel tuple is not silently made an int (nn.Conv2d refuses it too)."""
    for kernel in [(3.0, 3), (3, 3.0)]:
        with pytest.raises(ValueError, match="shape must be positive ints"):
            TNConv2d(4, 4, kernel, format="tucker2", ranks=2)


def test_an_unknown_plan_names_the_first_exact_plan():
    layer = TNConv2d(4, 6, 3, format="tucker2", ranks=2)
    families = tuple(plan_names("conv", layer.structure))
    names = [n for n in conv_plan_names(layer.structure) if n not in families]
    assert len(names) >= 2
    with pytest.raises(ValueError) as info:
        TNConv2d(4, 6, 3, format="tucker2", ranks=2, plan="nope")
    message = str(info.value)
    assert message.startswith("TNConv2d: unknown plan 'nope'; valid plans are 'auto', 'measure'")
    assert message.endswith(f" or one of {len(names)} exact names such as {names[0]!r}")


def test_from_conv_and_from_linear_messages():
    with pytest.raises(
        TypeError, match=exact("TNConv2d.from_conv: expected an nn.Conv2d, got Linear")
    ):
        TNConv2d.from_conv(nn.Linear(4, 4))
    with pytest.raises(
        TypeError, match=exact("TNLinear.from_linear: expected an nn.Linear, got Conv2d")
    ):
        TNLinear.from_linear(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match=r"^TNConv2d\.from_conv: ranks must be positive ints"):
        TNConv2d.from_conv(nn.Conv2d(4, 6, 3), "tucker2", ranks=(0, 2))
    with pytest.raises(ValueError, match=r"^TNLinear\.from_linear: ranks must be positive ints"):
        TNLinear.from_linear(nn.Linear(4, 6), "svd", ranks=(0,))


def test_transposed_flag_is_refused_and_a_missing_flag_is_not_transposed():
    conv = nn.Conv2d(4, 6, 3)
    conv.transposed = True
    with pytest.raises(
        ValueError, match=exact("TNConv2d.from_conv: transposed convolutions are not supported")
    ):
        TNConv2d.from_conv(conv, "tucker2", ranks=2)
    plain = nn.Conv2d(4, 6, 3, dtype=F64)
    del plain.transposed
    layer = TNConv2d.from_conv(plain, "tucker2", ranks=(6, 4))
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    close(layer(x), F.conv2d(x, plain.weight, plain.bias))


def test_linear_input_errors_are_value_errors_with_the_shape():
    layer = TNLinear(4, 3, ranks=2)
    with pytest.raises(ValueError, match=exact("TNLinear expects input (..., 4), got (2, 5)")):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match=exact("TNLinear expects input (..., 4), got ()")):
        layer(torch.tensor(1.0))


# -- repr ------------------------------------------------------------------------------------
def test_conv_repr_shows_only_non_default_arguments():
    layer = TNConv2d(4, 6, 3, format="tucker2", ranks=(2, 3))
    params = 6 * 2 + 4 * 3 + 2 * 3 * 9
    assert layer.structure.num_params == params == 78
    tail = "format=tucker2, ranks=(2, 3), params=78 (dense 216, 2.77x)"
    assert layer.extra_repr() == "4, 6, kernel_size=(3, 3), " + tail
    full = TNConv2d(
        4, 6, 3, stride=2, padding=1, dilation=2, bias=False, padding_mode="reflect",
        format="tucker2", ranks=(2, 3),
    )  # fmt: skip
    assert full.extra_repr() == (
        "4, 6, kernel_size=(3, 3), stride=(2, 2), padding=1, dilation=(2, 2), "
        "padding_mode='reflect', bias=False, " + tail
    )


@pytest.mark.parametrize(
    "stride, padding, dilation, shown",
    [
        ((1, 2), (0, 1), (2, 1), "stride=(1, 2), padding=(0, 1), dilation=(2, 1), "),
        ((2, 1), (1, 0), (1, 2), "stride=(2, 1), padding=(1, 0), dilation=(1, 2), "),
        (1, (0, 0), 1, ""),
        (1, "same", 1, "padding=same, "),
    ],
)
def test_conv_repr_of_each_spatial_argument(stride, padding, dilation, shown):
    layer = TNConv2d(
        4, 6, (3, 3), stride=stride, padding=padding, dilation=dilation, format="tucker2",
        ranks=(2, 3),
    )  # fmt: skip
    tail = "format=tucker2, ranks=(2, 3), params=78 (dense 216, 2.77x)"
    assert layer.extra_repr() == "4, 6, kernel_size=(3, 3), " + shown + tail


def test_linear_repr():
    layer = TNLinear(8, 6, ranks=2)
    tail = "format=svd, ranks=(2,), params=28 (dense 48, 1.71x)"
    assert layer.extra_repr() == "in_features=8, out_features=6, " + tail
    assert TNLinear(8, 6, False, ranks=2).extra_repr() == (
        "in_features=8, out_features=6, bias=False, " + tail
    )
    assert "\n  in_features=8, out_features=6, format=svd" in repr(layer)


# -- device and dtype ------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_layers_and_conversions_stay_on_the_requested_device(bias):
    conv = TNConv2d(4, 6, 3, format="tucker2", ranks=2, bias=bias, device="meta")
    lin = TNLinear(8, 6, bias, ranks=2, device="meta")
    for layer in (conv, lin):
        assert all(p.device == META for p in layer.parameters())
    dense_conv, dense_lin = conv.to_conv(), lin.to_linear()
    for dense in (dense_conv, dense_lin):
        assert all(p.device == META for p in dense.parameters())
        assert (dense.bias is not None) == bias


def test_from_conv_and_from_linear_build_on_the_weight_device(monkeypatch):
    seen = []
    setup = TNLayer._setup

    def spy(self, structure, bias, out_features, plan, device, dtype):
        seen.append((type(self).__name__, device, dtype))
        setup(self, structure, bias, out_features, plan, device, dtype)

    monkeypatch.setattr(TNLayer, "_setup", spy)
    cpu = torch.device("cpu")
    TNConv2d.from_conv(nn.Conv2d(4, 6, 3, dtype=F64), "tucker2", ranks=2)
    TNLinear.from_linear(nn.Linear(8, 6, dtype=F64), ranks=2)
    TNConv2d(4, 6, 3, ranks=2, device="cpu")
    TNLinear(8, 6, ranks=2, device="cpu")
    assert seen == [
        ("TNConv2d", cpu, F64), ("TNLinear", cpu, F64),
        ("TNConv2d", "cpu", None), ("TNLinear", "cpu", None),
    ]  # fmt: skip


def test_set_format_keeps_the_layer_device_dtype_and_grad_flag():
    torch.manual_seed(3)
    layer = TNConv2d(4, 6, 3, format="tucker2", ranks=(3, 3), dtype=F64)
    layer.requires_grad_(False)
    fmt = get_format("tucker2").from_dense(torch.randn(6, 4, 3, 3), None, (2, 2))
    layer._set_format(fmt)
    assert layer.ranks == (2, 2) and layer.decomposition_error is None
    for name, p in layer.factors.items():
        assert p.dtype == F64 and not p.requires_grad
        close(p, fmt.factor_tensors()[name].to(F64), 0.0)
    meta = TNConv2d(4, 6, 3, format="tucker2", ranks=(3, 3), device="meta")
    meta._set_format(fmt)
    assert all(p.device == META for p in meta.factors.values())


def test_bias_is_cast_to_the_output_dtype_under_autocast():
    torch.manual_seed(4)
    layer = TNLinear(8, 6, ranks=2)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = F.linear(x, layer.weight, layer.bias)
    assert float((y.float() - ref).detach().norm() / ref.detach().norm()) < 3e-2


# -- forward ---------------------------------------------------------------------------------
def test_unbatched_input_with_several_channels():
    torch.manual_seed(5)
    layer = TNConv2d(3, 5, 3, padding=1, format="tucker2", ranks=(4, 3), dtype=F64)
    x = torch.randn(3, 6, 7, dtype=F64)
    y = layer(x)
    assert y.shape == (5, 6, 7)
    close(y, F.conv2d(x.unsqueeze(0), layer.weight, layer.bias, padding=1)[0])
    # planned as a batch of one: the batched call with N = 1 reuses the same cached choice
    layer(x.unsqueeze(0))
    assert [key[0] for key in layer._plans] == [(1, 3, 6, 7)]


def test_empty_batches_follow_dilation_and_check_the_height():
    layer = TNConv2d(4, 6, 3, dilation=2, format="tucker2", ranks=2, dtype=F64)
    x = torch.randn(0, 4, 9, 11, dtype=F64)
    y = layer(x)
    assert y.shape == F.conv2d(x, layer.weight, dilation=2).shape == (0, 6, 5, 7)
    small = TNConv2d(4, 6, 3, format="tucker2", ranks=2)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        small(torch.randn(0, 4, 2, 9))


# -- initialisation --------------------------------------------------------------------------
def test_bias_init_is_uniform_within_one_over_sqrt_fan_in():
    torch.manual_seed(6)
    layer = TNLinear(16, 4096, ranks=1)
    bound = 1 / math.sqrt(16)
    b = layer.bias.detach()
    assert float(b.abs().max()) <= bound
    assert float(b.max()) > 0.98 * bound and float(b.min()) < -0.98 * bound
    assert abs(float(b.mean())) < 0.02


@pytest.mark.parametrize("fmt, ranks", [("svd", 32), ("tucker2", (24, 24))])
def test_kernel_init_variance_is_one_third_over_fan_in(fmt, ranks):
    torch.manual_seed(7)
    layer = TNConv2d(64, 64, 3, format=fmt, ranks=ranks, bias=False)
    w = layer.weight.detach().double()
    target = 1 / (3 * 64 * 9)
    assert float(w.pow(2).mean()) == pytest.approx(target, rel=0.12)


# -- from_conv / from_linear pass their arguments through ------------------------------------
def test_trunc_is_passed_to_the_decomposition():
    torch.manual_seed(8)
    lin = nn.Linear(8, 6, dtype=F64)
    layer = TNLinear.from_linear(lin, "svd", trunc=2)
    s = torch.linalg.svdvals(lin.weight.detach())
    assert layer.ranks == (2,)
    assert layer.decomposition_error == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-9)
    conv = nn.Conv2d(4, 6, 3, dtype=F64)
    layer = TNConv2d.from_conv(conv, "svd", trunc=2)
    s = torch.linalg.svdvals(conv.weight.detach().reshape(6, -1))
    assert layer.ranks == (2,)
    assert layer.decomposition_error == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-9)


def test_from_linear_takes_a_fraction():
    lin = nn.Linear(32, 24)
    layer = TNLinear.from_linear(lin, "svd", fraction=0.5)
    expected = fraction_ranks("svd", (24, 32), 0.5, legs=("out", "in"))
    assert layer.ranks == expected and expected[0] < 24
    scratch = TNLinear(32, 24, fraction=0.5)
    assert scratch.ranks == expected


def test_from_linear_passes_legs_and_options():
    """TT with its train in (in, out) order: the legs must be the layer's ("out", "in")."""
    torch.manual_seed(9)
    lin = nn.Linear(8, 6, dtype=F64)
    layer = TNLinear.from_linear(lin, "tt", ranks=100, order=("in", "out"))
    expected = get_format("tt").structure_for((6, 8), (6,), legs=("out", "in"), order=("in", "out"))
    assert layer.structure == expected
    x = torch.randn(3, 8, dtype=F64)
    close(layer(x), lin(x))
