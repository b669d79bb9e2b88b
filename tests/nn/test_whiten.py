"""Data-aware (whitened) decompositions: input covariances against the patches themselves,
output errors against the direct ||X (W - W')^T|| / ||X W^T||, whitened svd / tucker2 against
the plain ones (a property) and against dense least-squares optima, layers and compress(data=),
(rows and covariances: test_covariance.py; the trained CNN on digits:
test_whiten_trained.py)."""

import copy
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import tensornet.nn as tnn
from tensornet.formats import get_format
from tensornet.nn import covariance, whiten
from tensornet.nn.whiten import (
    DEFAULT_RIDGE,
    InputCovariance,
    compress_layer_whitened,
    input_covariances,
    layer_rows,
    output_error,
    whitened_format,
    whitened_spectrum,
)

from .test_covariance import small_net

F64 = torch.float64
CONV_LEGS = ("out", "in", "kh", "kw")


def correlated(n, d, seed=0, scale=3.0):
    """``n`` rows in ``d`` features with a strongly non-white covariance."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=F64) * torch.logspace(0, -scale, d, dtype=F64)
    return torch.randn(n, d, generator=g, dtype=F64) @ mix


OUTPUT_CONVS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 2), padding_mode="circular", stride=2),
]


def direct_error(rows, w, approx):
    w, approx = w.reshape(w.shape[0], -1), approx.reshape(w.shape[0], -1)
    return float((rows @ (w - approx).T).norm() / (rows @ w.T).norm())


# -- output errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw", OUTPUT_CONVS)
def test_output_error_is_the_direct_error_on_the_patches(kw):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, dtype=F64, **kw)
    net = nn.Sequential(conv)
    x = torch.randn(3, 3, 9, 8, dtype=F64)
    cov = input_covariances(net, x)["0"]
    rows = layer_rows(conv, x)
    w = conv.weight.detach()
    fmt = get_format("tucker2").from_dense(w, ranks=(2, 2), legs=CONV_LEGS)
    expected = direct_error(rows, w, fmt.to_dense())
    # the kernel and its approximation in any form: tensors, Formats, layers
    layer = tnn.TNConv2d.from_conv(conv, "tucker2", ranks=(2, 2))
    for a, b in ((w, fmt), (conv, layer), (conv, fmt.to_dense()), (w, layer.to_conv())):
        assert output_error(a, b, cov) == pytest.approx(expected, rel=1e-10)
    assert output_error(w, fmt, cov.matrix) == pytest.approx(expected, rel=1e-10)
    # the outputs of the layers themselves, bias cancelling
    with torch.no_grad():
        y, y2 = conv(x), layer(x)
    assert float((y - y2).norm() / (y - conv.bias.reshape(1, -1, 1, 1)).norm()) == pytest.approx(
        expected, rel=1e-8
    )


def test_output_error_of_a_linear_layer_and_degenerate_cases():
    x = correlated(50, 6)
    lin = nn.Linear(6, 4, dtype=F64)
    w = lin.weight.detach()
    w2 = w + 0.1 * torch.randn(4, 6, dtype=F64)
    assert output_error(lin, w2, x.T @ x) == pytest.approx(direct_error(x, w, w2), rel=1e-10)
    assert output_error(w, w, x.T @ x) == 0.0
    zero = torch.zeros(6, 6, dtype=F64)
    assert output_error(w, w2, zero) == 0.0
    assert output_error(torch.zeros(4, 6, dtype=F64), w2, x.T @ x) == math.inf
    assert output_error(torch.zeros(4, 6, dtype=F64), torch.zeros(4, 6), x.T @ x) == 0.0
    # rounding can make tr(D C D^T) a hair negative: never a NaN
    assert output_error(w, w * (1 + 1e-17), x.T @ x) == 0.0


def test_output_error_refuses_bad_input():
    w = torch.randn(4, 6, dtype=F64)
    c = torch.eye(6, dtype=F64)
    with pytest.raises(TypeError, match="approx must be a tensor, a Format"):
        output_error(w, [1.0], c)
    with pytest.raises(TypeError, match="layer_or_kernel must be"):
        output_error("w", w, c)
    with pytest.raises(ValueError, match="at least 2 dimensions, got 1"):
        output_error(w[0], w[0], c)
    with pytest.raises(ValueError, match=r"approx has shape \(4, 5\), the kernel \(4, 6\)"):
        output_error(w, w[:, :5], c)
    with pytest.raises(ValueError, match=r"covariance has shape \(5, 5\); the kernel needs"):
        output_error(w, w, torch.eye(5))
    with pytest.raises(TypeError, match="covariance must be an InputCovariance or a tensor"):
        output_error(w, w, [[1.0]])


# -- whitened decompositions -----------------------------------------------------------------
@given(
    out=st.integers(2, 6),
    cin=st.integers(1, 4),
    k=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
    fmt=st.sampled_from(["svd", "tucker2"]),
)
def test_whitened_output_error_is_never_above_the_plain_one(out, cin, k, seed, fmt):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, cin, k, k, generator=g, dtype=F64)
    d = cin * k * k
    x = correlated(max(3, d // 2 + 1), d, seed)  # full rank or not
    c = x.T @ x
    ranks = 1 if fmt == "svd" else (max(1, out // 2), max(1, cin // 2))
    plain = get_format(fmt).from_dense(w, ranks=ranks, legs=CONV_LEGS)
    white = whitened_format(w, fmt, c, ranks=ranks)
    assert white.structure == plain.structure
    assert output_error(w, white, c) <= output_error(w, plain, c) + 1e-12
    assert output_error(w, white, c) == pytest.approx(
        direct_error(x, w, white.to_dense()), rel=1e-6, abs=1e-9
    )


@pytest.mark.parametrize("r", [1, 2, 4])
def test_whitened_svd_is_the_least_squares_optimum(r):
    """With X of full column rank the best rank-r W' is X^+ trunc_r(X W^T) (Eckart-Young on
    the outputs), unique when the singular values are distinct."""
    x = correlated(60, 12, seed=r)
    w = torch.randn(5, 3, 2, 2, dtype=F64)
    w2 = w.reshape(5, -1)
    u, s, vh = torch.linalg.svd(x @ w2.T, full_matrices=False)
    best = (u[:, :r] * s[:r]) @ vh[:r]
    optimum = torch.linalg.lstsq(x, best).solution.T
    fmt = whitened_format(w, "svd", x.T @ x, ranks=r, ridge=0)
    torch.testing.assert_close(fmt.to_dense().reshape(5, -1), optimum, rtol=1e-7, atol=1e-9)
    assert output_error(w, fmt, x.T @ x) == pytest.approx(float(s[r:].norm() / s.norm()))
    assert fmt.error == pytest.approx(float((w2 - optimum).norm() / w2.norm()))
    # the default ridge moves it by little
    near = whitened_format(w, "svd", x.T @ x, ranks=r)
    assert output_error(w, near, x.T @ x) == pytest.approx(float(s[r:].norm() / s.norm()), rel=1e-3)


def test_whitened_linear_svd_and_a_float32_kernel():
    x = correlated(40, 6)
    w = torch.randn(4, 6, dtype=F64)
    s = torch.linalg.svdvals(x @ w.T)
    fmt = whitened_format(w, "svd", InputCovariance(x.T @ x, 40), 2, ridge=0)
    assert fmt.legs == ("out", "in")
    assert output_error(w, fmt, x.T @ x) == pytest.approx(float(s[2:].norm() / s.norm()))
    f32 = whitened_format(w.float(), "svd", x.T @ x, ranks=2, ridge=0)
    assert f32.dtype == torch.float32
    assert output_error(w, f32, x.T @ x) == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-4)


def test_tucker2_with_the_full_in_rank_is_the_svd_optimum():
    """r_in = in leaves only the out factor, which the first step finds exactly."""
    x = correlated(80, 18, seed=3)
    w = torch.randn(6, 2, 3, 3, dtype=F64)
    s = torch.linalg.svdvals(x @ w.reshape(6, -1).T)
    for r in (1, 3):
        fmt = whitened_format(w, "tucker2", x.T @ x, ranks=(r, 2), ridge=0, sweeps=0)
        assert output_error(w, fmt, x.T @ x) == pytest.approx(float(s[r:].norm() / s.norm()))


def test_tucker2_core_is_the_least_squares_optimum_given_the_in_factor():
    """Full out rank: the core is the dense least-squares solve for the plain in factor V."""
    x = correlated(80, 27, seed=4)
    w = torch.randn(4, 3, 3, 3, dtype=F64)
    plain = get_format("tucker2").from_dense(w, ranks=(4, 2), legs=CONV_LEGS)
    v = plain.factors[1]
    m = torch.einsum("jb,st->jsbt", v, torch.eye(9, dtype=F64)).reshape(27, 18)  # V kron I
    g = torch.linalg.lstsq(x @ m, x @ w.reshape(4, -1).T).solution.T  # W' = G M^T
    fmt = whitened_format(w, "tucker2", x.T @ x, ranks=(4, 2), ridge=0, sweeps=0)
    torch.testing.assert_close(fmt.to_dense().reshape(4, -1), g @ m.T)
    assert fmt.error == pytest.approx(float((w.reshape(4, -1) - g @ m.T).norm() / w.norm()))
    u = fmt.factors[0]
    torch.testing.assert_close(u.T @ u, torch.eye(4, dtype=F64))


def test_tucker2_sweeps_only_lower_the_error_and_factors_stay_orthonormal():
    x = correlated(100, 36, seed=5)
    # seeded: how much the sweeps gain depends on the kernel (1e-4 to 0.1 over seeds 0-5)
    w = torch.randn(8, 4, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    c = x.T @ x
    errors = [
        output_error(w, whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=n), c)
        for n in (0, 1, 2, 4)
    ]
    plain = get_format("tucker2").from_dense(w, ranks=(3, 2), legs=CONV_LEGS)
    assert errors[0] < output_error(w, plain, c)
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0] - 1e-3  # the in-factor steps do help
    fmt = whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=4)
    for f in fmt.factors:
        torch.testing.assert_close(f.T @ f, torch.eye(f.shape[1], dtype=F64))
    big = whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=4, ridge=DEFAULT_RIDGE)
    assert output_error(w, big, c) == pytest.approx(errors[-1], rel=1e-3)


def test_tucker2_with_an_out_rank_above_the_in_rank_times_the_kernel():
    """r_out = 3 > r_in kh kw = 1: the out factor is completed by orthonormal columns."""
    x = correlated(50, 4, seed=8)
    w = torch.randn(6, 4, 1, 1, dtype=F64)
    c = x.T @ x
    plain = get_format("tucker2").from_dense(w, ranks=(3, 1), legs=CONV_LEGS)
    fmt = whitened_format(w, "tucker2", c, ranks=(3, 1))
    assert fmt.ranks == (3, 1)
    u = fmt.factors[0]
    torch.testing.assert_close(u.T @ u, torch.eye(3, dtype=F64))
    assert output_error(w, fmt, c) <= output_error(w, plain, c)


def test_a_zero_kernel_stays_zero_with_no_error():
    """For tucker2 the in-factor step then meets a zero (singular) Hessian: least-norm."""
    x = correlated(40, 12)
    for fmt, ranks in (("svd", 2), ("tucker2", (2, 2))):
        got = whitened_format(torch.zeros(4, 3, 2, 2, dtype=F64), fmt, x.T @ x, ranks=ranks)
        assert got.error == 0.0
        assert float(got.to_dense().abs().max()) == 0.0


def test_tucker2_sweeps_are_skipped_above_the_unknowns_limit(monkeypatch):
    x = correlated(100, 36, seed=5)
    w = torch.randn(8, 4, 3, 3, dtype=F64)
    c = x.T @ x
    none = whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=0)
    monkeypatch.setattr(whiten, "MAX_SWEEP_UNKNOWNS", 7)  # in * r_in = 8
    skipped = whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=3)
    torch.testing.assert_close(skipped.to_dense(), none.to_dense())
    monkeypatch.setattr(whiten, "MAX_SWEEP_UNKNOWNS", 8)
    swept = whitened_format(w, "tucker2", c, ranks=(3, 2), sweeps=3)
    assert output_error(w, swept, c) < output_error(w, none, c)


@pytest.mark.parametrize(
    "fmt, opts",
    [
        ("tt", {}),
        ("cp", {}),
        ("svd", {"left": ("out", "kh")}),
        ("tucker2", {"modes": ("out", "kh")}),
        ("tucker", {}),
    ],
)
def test_other_formats_and_cuts_are_the_plain_decomposition(fmt, opts):
    torch.manual_seed(0)
    w = torch.randn(4, 3, 2, 2, dtype=F64)
    x = correlated(40, 12)
    ranks = 2
    if fmt == "tucker2":
        ranks = (2, 1)
    plain = get_format(fmt).from_dense(w, ranks=ranks, legs=CONV_LEGS, **opts)
    got = whitened_format(w, fmt, x.T @ x, ranks=ranks, **opts)
    torch.testing.assert_close(got.to_dense(), plain.to_dense())
    assert got.error == plain.error


def test_a_zero_covariance_gives_the_plain_decomposition_and_a_singular_one_needs_a_ridge():
    w = torch.randn(4, 3, 2, 2, dtype=F64)
    plain = get_format("svd").from_dense(w, ranks=2, legs=CONV_LEGS)
    zero = whitened_format(w, "svd", torch.zeros(12, 12, dtype=F64), ranks=2)
    torch.testing.assert_close(zero.to_dense(), plain.to_dense())
    x = correlated(5, 12)  # rank 5 of 12
    singular = r"whitened_format: the covariance is singular \(the data spans fewer than its 12 "
    with pytest.raises(ValueError, match=singular + r"directions\); use ridge > 0"):
        whitened_format(w, "svd", x.T @ x, ranks=2, ridge=0)
    fmt = whitened_format(w, "svd", x.T @ x, ranks=2)
    s = torch.linalg.svdvals(x @ w.reshape(4, -1).T)
    assert output_error(w, fmt, x.T @ x) == pytest.approx(
        float(s[2:].norm() / s.norm()), rel=1e-3, abs=1e-6
    )
    # the unexcited directions stay near the plain kernel's (the ridge keeps them), so the
    # kernel does not blow up
    assert fmt.error < 2


def test_the_plain_decomposition_is_returned_when_the_ridge_makes_things_worse():
    """A huge ridge turns the whitened svd into the plain one's metric, plus rounding: the
    guard returns whichever has the lower output error, here the plain one exactly."""
    x = correlated(40, 12)
    w = torch.randn(4, 3, 2, 2, dtype=F64)
    plain = get_format("svd").from_dense(w, ranks=2, legs=CONV_LEGS)
    got = whitened_format(w, "svd", x.T @ x, ranks=2, ridge=1e12)
    assert output_error(w, got, x.T @ x) <= output_error(w, plain, x.T @ x)


def test_whitened_format_refuses_bad_input():
    w = torch.randn(4, 6)
    c = torch.eye(6)
    for ridge in (-1.0, True, "1", float("nan"), math.inf):
        with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
            whitened_format(w, "svd", c, ranks=2, ridge=ridge)
    for sweeps in (-1, True, 1.0):
        with pytest.raises(ValueError, match="sweeps must be an int >= 0"):
            whitened_format(w, "svd", c, ranks=2, sweeps=sweeps)
    with pytest.raises(TypeError, match="kernel must be a tensor"):
        whitened_format(w.numpy(), "svd", c, ranks=2)
    with pytest.raises(ValueError, match=r"whitened_format: covariance has shape \(5, 5\)"):
        whitened_format(w, "svd", torch.eye(5), ranks=2)
    with pytest.raises(ValueError, match="at most one of trunc, ranks, fraction"):
        whitened_format(w, "svd", c, ranks=2, fraction=0.5)


def test_sizes_come_from_the_plain_decomposition():
    w = torch.randn(8, 4, 3, 3, dtype=F64)
    c = correlated(100, 36).T @ correlated(100, 36)
    for sizes in ({"fraction": 0.3}, {"trunc": 3}, {"ranks": (3, 2)}):
        plain = get_format("tucker2").from_dense(w, legs=CONV_LEGS, **sizes)
        assert whitened_format(w, "tucker2", c, **sizes).ranks == plain.ranks
    assert whitened_format(w, "tucker2", c, legs=("a", "b", "c", "e"), ranks=2).legs == (
        "a",
        "b",
        "c",
        "e",
    )


# -- layers and compress ----------------------------------------------------------------------
def test_compressed_layers_fit_their_outputs_better_and_keep_everything_else():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, dtype=F64)
    lin = nn.Linear(12, 5, dtype=F64)
    xc = torch.einsum(
        "nchw,cd->ndhw",
        torch.randn(8, 4, 7, 7, dtype=F64),
        torch.randn(4, 4, dtype=F64) * torch.tensor([1, 0.1, 0.01, 1e-3]),
    )
    xl = correlated(30, 12)
    for module, x, fmt, ranks in ((conv, xc, "tucker2", (3, 2)), (lin, xl, "svd", 2)):
        cov = input_covariances(nn.Sequential(module), x)["0"]
        plain = (
            tnn.TNLinear.from_linear(module, fmt, ranks=ranks)
            if module is lin
            else tnn.TNConv2d.from_conv(module, fmt, ranks=ranks, plan="dense")
        )
        layer = compress_layer_whitened(module, fmt, cov, ranks=ranks, plan="dense")
        assert type(layer) is type(plain) and layer.structure == plain.structure
        assert layer.plan == "dense"
        torch.testing.assert_close(layer.bias, module.bias)
        with torch.no_grad():
            y, y2 = module(x), layer(x)
        bias = module.bias.detach().reshape(-1, *[1] * (y.ndim - 2))
        err = float((y2 - y).norm() / (y - bias).norm())
        assert err == pytest.approx(output_error(module, layer, cov), rel=1e-8)
        assert err < output_error(module, plain, cov) - 0.01
        w = module.weight.detach()
        weight_error = float((w - layer.weight.detach()).norm() / w.norm())
        assert layer.decomposition_error == pytest.approx(weight_error)
    with pytest.raises(TypeError, match="compress_layer_whitened: expected an nn.Conv2d or "
                       "nn.Linear, got Conv1d"):  # fmt: skip
        compress_layer_whitened(nn.Conv1d(2, 2, 3), "svd", torch.eye(6), ranks=1)
    with pytest.raises(ValueError, match="compress_layer_whitened: ridge"):
        compress_layer_whitened(lin, "svd", torch.eye(12), ranks=1, ridge=-1)
    with pytest.raises(ValueError, match="compress_layer_whitened: covariance has shape"):
        compress_layer_whitened(lin, "svd", torch.eye(5), ranks=1)


def test_compressed_layers_take_the_defaults_and_options_of_from_conv_and_from_linear():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, dtype=F64)
    lin = nn.Linear(12, 6, dtype=F64)
    xc = torch.randn(6, 4, 5, 5, dtype=F64)
    cov_c = input_covariances(nn.Sequential(conv), xc)["0"]
    cov_l = InputCovariance(correlated(40, 12).T @ correlated(40, 12), 40)
    # defaults: plan "auto", two tucker2 sweeps (a linear weight's tucker2 too)
    for module, cov in ((conv, cov_c), (lin, cov_l)):
        layer = compress_layer_whitened(module, "tucker2", cov, ranks=(3, 2))
        assert layer.plan == "auto" and layer.format == "tucker2"
        w = module.weight.detach()
        two = whitened_format(w, "tucker2", cov, ranks=(3, 2), sweeps=2)
        three = whitened_format(w, "tucker2", cov, ranks=(3, 2), sweeps=3)
        torch.testing.assert_close(layer.weight.detach(), two.to_dense())
        assert not torch.allclose(layer.weight.detach(), three.to_dense())
    # format options reach from_conv / from_linear (structure options of plain formats)
    tt = compress_layer_whitened(conv, "tt", cov_c, ranks=2, order=("out", "in", "kh", "kw"))
    assert (
        tt.structure
        == tnn.TNConv2d.from_conv(conv, "tt", ranks=2, order=("out", "in", "kh", "kw")).structure
    )
    dims = {"out_dims": (2, 3), "in_dims": (3, 4)}
    mpo = compress_layer_whitened(lin, "ttmatrix", cov_l, ranks=2, **dims)
    assert mpo.structure == tnn.TNLinear.from_linear(lin, "ttmatrix", ranks=2, **dims).structure
    assert mpo.structure != tnn.TNLinear.from_linear(lin, "ttmatrix", ranks=2).structure
    assert tt.structure != tnn.TNConv2d.from_conv(conv, "tt", ranks=2).structure


def test_compress_with_data_fits_the_dense_outputs_and_the_model_saves(tmp_path):
    net = small_net().eval()
    x = torch.randn(16, 3, 9, 9, dtype=F64)
    covs = input_covariances(net, x)
    plain, _ = tnn.compress(net, "svd", skip=(), ranks=2, measure_time=False)
    white, report = tnn.compress(net, "svd", skip=(), ranks=2, data=[(x, None)])
    assert "3 layers fitted in turn to the dense outputs on data" in report.notes[-1]
    assert output_error(net[0], white[0], covs["0"]) < output_error(net[0], plain[0], covs["0"])
    with torch.no_grad():
        y = net(x)
        assert (white(x) - y).norm() < 0.8 * (plain(x) - y).norm()
    # the last layer is fitted to the dense outputs from the inputs it gets
    work = copy.deepcopy(white)
    work[6] = net[6]
    paired = input_covariances(net, x, ["6"], compressed=work)["6"]
    fitted = whitened_format(net[6].weight.detach(), "svd", paired, ranks=2)
    torch.testing.assert_close(white[6].weight.detach(), fitted.to_dense())
    alone = whitened_format(net[6].weight.detach(), "svd", covs["6"], ranks=2)
    assert output_error(net[6], fitted, paired) < output_error(net[6], alone, paired)
    tnn.save(white, tmp_path / "white.safetensors")
    again = small_net().eval()
    tnn.load(again, tmp_path / "white.safetensors")
    torch.testing.assert_close(again(x), white(x))


def test_compress_with_data_keeps_plans_options_and_shared_layers():
    torch.manual_seed(0)
    shared = nn.Linear(6, 6, dtype=F64)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, dtype=F64), nn.Flatten(), nn.Linear(4 * 3 * 3, 6, dtype=F64),
        nn.Tanh(), shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(6, 3, dtype=F64),
    ).eval()  # fmt: skip
    x = torch.randn(30, 2, 5, 5, dtype=F64)
    order = ("out", "in", "kh", "kw")
    spec = {"conv": ("tt", {"order": order}), "linear": "svd"}
    small, _ = tnn.compress(net, spec, skip=(), ranks=2, data=x, plan="dense")
    assert small[0].structure.option("order") == order
    assert all(small[i].plan == "dense" for i in (0, 2, 4, 8))
    assert small[4] is small[6]  # still one module
    # the last layer was fitted to the inputs of a model with the shared layer compressed at
    # both of its places
    work = copy.deepcopy(small)
    work[8] = net[8]
    paired = input_covariances(net, x, ["8"], compressed=work)["8"]
    fitted = whitened_format(net[8].weight.detach(), "svd", paired, ranks=2)
    torch.testing.assert_close(small[8].weight.detach(), fitted.to_dense())


def test_compress_with_data_leaves_large_layers_plain(monkeypatch):
    net = small_net().eval()
    x = torch.randn(4, 3, 9, 9, dtype=F64)
    plain, _ = tnn.compress(net, "svd", skip=(), ranks=2)
    monkeypatch.setattr(covariance, "MAX_FEATURES", 27)
    white, report = tnn.compress(net, "svd", skip=(), ranks=2, data=x)
    for name in ("4", "6"):
        torch.testing.assert_close(
            white.get_submodule(name).weight, plain.get_submodule(name).weight
        )
    assert not torch.allclose(white[0].weight, plain[0].weight)


def test_a_paired_covariance_gives_the_best_fit_of_the_dense_outputs():
    """Inputs X differing from the dense X0: the whitened svd of W* = W K^T C^-1 is the best
    rank-r fit of X0 W^T from X (Pythagoras + Eckart-Young), and output_error measures
    ||X0 W^T - X W'^T|| / ||X0 W^T||."""
    x0 = correlated(50, 8, seed=1)
    x = x0 + 0.3 * correlated(50, 8, seed=2)
    w = torch.randn(5, 8, dtype=F64)
    cov = InputCovariance(x.T @ x, 50, x.T @ x0, x0.T @ x0)
    y0 = x0 @ w.T
    q = torch.linalg.qr(x)[0]
    inside = q @ (q.T @ y0)
    s = torch.linalg.svdvals(inside)
    for r in (1, 3):
        fmt = whitened_format(w, "svd", cov, ranks=r, ridge=0)
        approx = fmt.to_dense()
        direct = float((y0 - x @ approx.T).norm() / y0.norm())
        assert output_error(w, approx, cov) == pytest.approx(direct, rel=1e-9)
        best = math.sqrt(float((y0 - inside).norm()) ** 2 + float(s[r:].norm()) ** 2)
        assert direct == pytest.approx(best / float(y0.norm()), rel=1e-9)
        plain = get_format("svd").from_dense(w, ranks=r)
        assert direct < output_error(w, plain, cov)
    no_target = InputCovariance(x.T @ x, 50, x.T @ x0)  # X0^T X0 taken as X^T X
    a, b = x @ w.T, x0 @ w.T
    expected = math.sqrt(2 * float(a.norm()) ** 2 - 2 * float((a * b).sum())) / float(a.norm())
    assert output_error(w, w, no_target) == pytest.approx(expected)


def test_the_whitened_spectrum_prices_every_rank_of_the_whitened_svd():
    x = correlated(60, 12, seed=7)
    w = torch.randn(5, 3, 2, 2, dtype=F64)
    s = whitened_spectrum(w, InputCovariance(x.T @ x, 60))
    torch.testing.assert_close(s, torch.linalg.svdvals(x @ w.reshape(5, -1).T))
    for r in (1, 2, 4):
        fmt = whitened_format(w, "svd", x.T @ x, ranks=r, ridge=0)
        assert output_error(w, fmt, x.T @ x) == pytest.approx(float(s[r:].norm() / s.norm()))
    layer = nn.Linear(12, 5, dtype=F64)
    torch.testing.assert_close(
        whitened_spectrum(layer, x.T @ x), torch.linalg.svdvals(x @ layer.weight.detach().T)
    )
    # rounding: a covariance with slightly negative eigenvalues gives no NaN
    low = correlated(3, 12)
    assert torch.isfinite(whitened_spectrum(w, low.T @ low)).all()
    with pytest.raises(TypeError, match="whitened_spectrum: kernel must be a tensor"):
        whitened_spectrum(None, x.T @ x)
    with pytest.raises(ValueError, match="whitened_spectrum: covariance has shape"):
        whitened_spectrum(w, torch.eye(3))


def test_covariances_and_factors_on_the_model_device(device):
    torch.manual_seed(0)
    net = small_net().to(device)
    x = torch.randn(8, 3, 9, 9, dtype=F64)  # on the CPU: moved to the model
    covs = input_covariances(net, [(x, None)])
    assert covs["4"].matrix.device.type == device.type
    cpu = input_covariances(small_net(), x)
    torch.testing.assert_close(covs["4"].matrix.cpu(), cpu["4"].matrix)
    w = net[4].weight.detach()
    for fmt, ranks in (("svd", 2), ("tucker2", (2, 3))):
        got = whitened_format(w, fmt, covs["4"], ranks=ranks)
        assert got.device.type == device.type
        ref = whitened_format(w.cpu(), fmt, cpu["4"], ranks=ranks)
        assert output_error(w, got, covs["4"]) == pytest.approx(
            output_error(w.cpu(), ref, cpu["4"]), rel=1e-6
        )
    spectrum = whitened_spectrum(w, covs["4"])
    assert spectrum.device.type == device.type
    torch.testing.assert_close(spectrum.cpu(), whitened_spectrum(w.cpu(), cpu["4"]))
    # a covariance kept on the CPU goes to the kernel's device
    torch.testing.assert_close(whitened_spectrum(w, cpu["4"]), spectrum)
