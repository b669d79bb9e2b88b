"""Issue 19 small items on TNConv2d / TNLinear: rank clamps, NaN refusal, numbers of any
library, unbatched and empty input, plan names at construction, the LRU plan cache, and
truncate_kernel through a compressed layer's bonds."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tensornet.core.truncation import Truncation
from tensornet.formats import format_names, fraction_ranks, get_format
from tensornet.formats.structure import as_fraction
from tensornet.nn import TNConv2d, TNLinear, truncate_kernel
from tensornet.nn import layers as layers_module
from tensornet.nn import truncate as truncate_module
from tensornet.nn.layers import PLAN_CACHE_SIZE, clamp_ranks, conv_plan_names
from tensornet.nn.truncate import DENSE_LIMIT, bond_cuts

F64 = torch.float64
FORMATS = sorted(format_names())
LEGS = ("out", "in", "kh", "kw")


def options(fmt):
    if fmt == "ttmatrix":
        return {"out_dims": (4, 4), "in_dims": (2, 4)}
    if fmt == "grouped":
        return {"channel_groups": 2}
    return {}


def dense(layer, x):
    """The dense conv of ``x`` with the layer's rebuilt kernel (batched or not)."""
    g = layer.geometry
    w = layer.weight
    return F.conv2d(g.pad(x), w, layer.bias, g.stride, 0, g.dilation)


# -- a. ranks above the useful maximum are clamped --------------------------------------------
# (16, 8, 3, 3) kernels; TT/TR along the layer order (in, kh, kw, out): sizes 8, 3, 3, 16.
CLAMPED = {
    "tucker": ((16, 8, 3, 3), 16 * 8 * 9 + 16 * 16 + 8 * 8 + 9 + 9),
    "tucker2": ((16, 8), 16 * 8 * 9 + 16 * 16 + 8 * 8),
    "cp": ((38,), 38 * (16 + 8 + 3 + 3)),  # the largest rank within the dense size 1152
    "svd": ((16,), 16 * 16 + 16 * 72),
    "grouped": ((16,), 16 * 2 * 16 + 16 * 2 * 4 * 9),  # min(f, c/k kh kw) = min(16, 36)
    "tt": ((8, 24, 16), 8 * 8 + 8 * 3 * 24 + 24 * 3 * 16 + 16 * 16),
    "tr": ((8, 1, 3, 9), 8 * 8 * 1 + 1 * 3 * 3 + 3 * 3 * 9 + 9 * 16 * 8),
    "ht": ((9, 9, 16, 8, 3, 3), None),
    "ttmatrix": ((9, 16), None),
    "cut": ((24,), 16 * 3 * 24 + 8 * 3 * 24),  # out, kh | in, kw: min(48, 24)
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_ranks_above_the_maximum_are_clamped_the_same_way_everywhere(fmt):
    """Direct constructor, from_conv and the format's clamp_ranks agree, with exact counts."""
    want, params = CLAMPED[fmt]
    layer = TNConv2d(8, 16, 3, format=fmt, ranks=64, dtype=F64, **options(fmt))
    assert layer.ranks == want
    cls = get_format(fmt)
    opts = dict(layers_module.kernel_options(fmt, options(fmt)))
    structure = cls.structure_for((16, 8, 3, 3), want, legs=LEGS, **opts)
    assert layer.structure.num_params == structure.num_params
    assert layer.num_params == structure.num_params + 16
    if params is not None:
        assert layer.structure.num_params == params
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, dtype=F64)
    built = TNConv2d.from_conv(conv, fmt, ranks=64, **options(fmt))
    assert built.ranks == want and built.structure.num_params == structure.num_params
    if fmt != "cp":  # at the maximum every other format is exact
        assert built.decomposition_error < 1e-12
    # ranks below the maximum are kept as given
    small = TNConv2d(8, 16, 3, format=fmt, ranks=1, **options(fmt))
    assert small.ranks == (1,) * len(want)


def test_the_issue_example_and_linear_layers():
    layer = TNConv2d(8, 16, 3, format="tucker", ranks=64)
    assert layer.structure.num_params == 1490 < 16_779_136  # was 16.8 M
    lin = TNLinear(12, 10, format="svd", ranks=100)
    assert lin.ranks == (10,) and lin.structure.num_params == 10 * 22
    torch.manual_seed(1)
    dense_lin = nn.Linear(12, 10, dtype=F64)
    from_lin = TNLinear.from_linear(dense_lin, "tt", ranks=100)
    assert from_lin.ranks == (10,) and from_lin.decomposition_error < 1e-12
    cp = TNLinear.from_linear(dense_lin, "cp", ranks=(100,), max_iter=3)  # from_dense options
    assert cp.ranks == (120 // 22,)
    assert clamp_ranks("tucker2", (16, 8, 3, 3), (3, 64), LEGS, {}, "demo") == (3, 8)
    with pytest.raises(ValueError, match="^TNConv2d: ranks must have 2 entries"):
        TNConv2d(8, 16, 3, format="tucker2", ranks=(1, 2, 3))
    with pytest.raises(ValueError, match="^TNLinear.from_linear: ranks must be positive"):
        TNLinear.from_linear(dense_lin, "svd", ranks=0)


@given(
    st.sampled_from(["tt", "tucker", "tucker2", "svd", "ht", "tr", "grouped"]),
    st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3)),
    st.integers(1, 40),
)
def test_clamped_ranks_are_idempotent_never_larger_and_exact_at_the_top(fmt, shape, r):
    cls = get_format(fmt)
    clamped = cls.clamp_ranks(shape, r, legs=LEGS)
    assert cls.clamp_ranks(shape, clamped, legs=LEGS) == clamped
    assert all(c <= r for c in clamped)
    asked = cls.structure_for(shape, (r,) * len(clamped), legs=LEGS)
    assert cls.structure_for(shape, clamped, legs=LEGS).num_params <= asked.num_params
    if clamped == cls.clamp_ranks(shape, 10**6, legs=LEGS):  # every rank at its top: exact
        x = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(r))
        fmt_obj = cls.from_dense(x, ranks=r, legs=LEGS)
        assert fmt_obj.ranks == clamped or fmt != "tr"  # TR-SVD may find lower ranks
        assert all(a <= b for a, b in zip(fmt_obj.ranks, clamped))
        assert fmt_obj.error < 1e-10 and frob(fmt_obj.to_dense(), x) < 1e-10


def test_format_clamp_ranks_is_structure_max_ranks():
    tops = get_format("tt").structure_for((5, 6, 7)).max_ranks
    assert get_format("tt").clamp_ranks((5, 6, 7), 100) == tops == (5, 7)
    assert get_format("tt").clamp_ranks((5, 6, 7), (2, 100)) == (2, 7)
    with pytest.raises(ValueError, match="^TT.clamp_ranks: ranks must have 2 entries"):
        get_format("tt").clamp_ranks((5, 6, 7), (1, 2, 3))
    with pytest.raises(ValueError, match="^mine: ranks must be positive"):
        get_format("cp").clamp_ranks((5, 6), -1, what="mine")


# -- b. NaN / inf refused ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_weights_and_bias_are_refused(bad):
    conv = nn.Conv2d(4, 6, 3)
    lin = nn.Linear(5, 3)
    with torch.no_grad():
        conv.bias[2] = bad
        lin.bias[0] = bad
    with pytest.raises(ValueError, match=r"^TNConv2d.from_conv: conv: bias holds NaN or inf"):
        TNConv2d.from_conv(conv, "tucker2", ranks=2)
    with pytest.raises(ValueError, match=r"^TNLinear.from_linear: linear: bias holds NaN or inf"):
        TNLinear.from_linear(lin, "svd", ranks=2)
    with torch.no_grad():
        conv.bias.zero_()
        lin.bias.zero_()
        conv.weight[0, 1, 2, 0] = bad
        lin.weight[1, 1] = bad
    with pytest.raises(ValueError, match=r"^TNConv2d.from_conv: conv.weight holds NaN or inf"):
        TNConv2d.from_conv(conv, "cp", ranks=2)
    with pytest.raises(ValueError, match=r"^TNLinear.from_linear: linear.weight holds NaN"):
        TNLinear.from_linear(lin, "svd", ranks=2)


def test_finite_layers_without_bias_still_build():
    conv = nn.Conv2d(4, 6, 3, bias=False)
    assert TNConv2d.from_conv(conv, "tucker2", ranks=2).bias is None
    lin = nn.Linear(5, 3, bias=False)
    assert TNLinear.from_linear(lin, "svd", ranks=2).bias is None


# -- c, h. numbers of any library ---------------------------------------------------------------
def as_kind(value, kind):
    return {
        "float": float,
        "np32": np.float32,
        "np64": np.float64,
        "t32": lambda v: torch.tensor(v, dtype=torch.float32),
        "t64": lambda v: torch.tensor(v, dtype=F64),
    }[kind](value)


@given(
    st.integers(1, 64),
    st.sampled_from(["np32", "np64", "t32", "t64"]),
    st.sampled_from(["tt", "tucker2", "cp", "svd"]),
)
def test_numpy_and_0d_fractions_give_the_ranks_of_python_floats(k, kind, fmt):
    fraction = k / 64  # exact in float32 too
    shape = (16, 8, 3, 3)
    assert as_fraction(as_kind(fraction, kind), "x") == fraction
    assert type(as_fraction(as_kind(fraction, kind), "x")) is float
    try:
        want = fraction_ranks(fmt, shape, fraction, legs=LEGS)
    except ValueError as err:  # too small for rank 1: other numbers fail the same way
        with pytest.raises(ValueError, match=re_escape(str(err))):
            fraction_ranks(fmt, shape, as_kind(fraction, kind), legs=LEGS)
        return
    assert fraction_ranks(fmt, shape, as_kind(fraction, kind), legs=LEGS) == want
    layer = TNConv2d(8, 16, 3, format=fmt, fraction=as_kind(fraction, kind))
    assert layer.ranks == TNConv2d(8, 16, 3, format=fmt, fraction=fraction).ranks


def re_escape(text):
    return "^" + re.escape(text) + "$"


@pytest.mark.parametrize("fmt", ["tt", "tucker", "grouped", "tr", "ht", "svd"])
def test_from_dense_takes_numpy_fractions_and_numpy_tolerances(fmt):
    torch.manual_seed(3)
    w = torch.randn(8, 4, 3, 3, dtype=F64)
    cls = get_format(fmt)
    opts = options(fmt)
    want = cls.from_dense(w, fraction=0.5, legs=LEGS, **opts).ranks
    for value in (np.float32(0.5), torch.tensor(0.5), np.float64(0.5)):
        assert cls.from_dense(w, fraction=value, legs=LEGS, **opts).ranks == want
    if fmt != "grouped":
        tol = cls.from_dense(w, Truncation(rel_tol=0.25), legs=LEGS, **opts).ranks
        for value in (np.float32(0.25), torch.tensor(0.25, dtype=F64)):
            assert cls.from_dense(w, Truncation(rel_tol=value), legs=LEGS, **opts).ranks == tol


@pytest.mark.parametrize(
    "value, match",
    [
        (True, r"must be a number in \(0, 1\], got True"),
        (np.bool_(True), r"must be a number in \(0, 1\], got (np\.)?True"),
        (
            torch.tensor(True),
            r"must be a number in \(0, 1\], got a torch.bool tensor of shape \(\)$",
        ),
        (
            torch.tensor([0.5]),
            r"must be a number in \(0, 1\], got a torch.float32 tensor of shape \(1,\)$",
        ),
        (torch.tensor(0.5 + 0j), r"must be a number in \(0, 1\]"),
        ("0.5", r"must be a number in \(0, 1\], got '0.5'"),
        (float("nan"), r"must be in \(0, 1\], got nan"),
        (np.float32(1.5), r"must be in \(0, 1\], got 1.5"),
        (torch.tensor(0.0), r"must be in \(0, 1\], got 0.0$"),
        (0, r"must be in \(0, 1\], got 0$"),
    ],
)
def test_bad_fractions_are_refused_everywhere(value, match):
    with pytest.raises(ValueError, match="^demo: fraction " + match):
        as_fraction(value, "demo")
    with pytest.raises(ValueError, match="^TNConv2d: fraction " + match):
        TNConv2d(8, 16, 3, format="tt", fraction=value)
    with pytest.raises(ValueError, match="^TT.from_dense: fraction " + match):
        get_format("tt").from_dense(torch.randn(4, 5), fraction=value)


def test_truncation_fields_stay_strict():
    with pytest.raises(TypeError, match="rel_tol must be a real number"):
        Truncation(rel_tol=torch.tensor(True))
    with pytest.raises(ValueError, match="rel_tol must be finite"):
        Truncation(rel_tol=np.float32("nan"))
    assert Truncation(max_rank=np.int32(3), rel_tol=torch.tensor(0.5)).max_rank == 3


def test_cp_ranks_accept_numpy_and_torch_integers():
    for r in (np.int64(3), torch.tensor(3), (np.int32(3),)):
        layer = TNConv2d(4, 6, 3, format="cp", ranks=r)
        assert layer.ranks == (3,) and type(layer.ranks[0]) is int
    with pytest.raises(ValueError, match="^TNConv2d: ranks must be an int or a sequence"):
        TNConv2d(4, 6, 3, format="cp", ranks=np.float64(3.0))


# -- d. unbatched and empty input -----------------------------------------------------------
LAYERS: dict = {}


def layer_for(fmt, padding_mode="zeros"):
    key = (fmt, padding_mode)
    if key not in LAYERS:
        torch.manual_seed(5)
        LAYERS[key] = TNConv2d(
            6, 8, 3, stride=(1, 2), padding=1, padding_mode=padding_mode, format=fmt,
            fraction=0.6, dtype=F64, **options_small(fmt),
        )  # fmt: skip
    return LAYERS[key]


def options_small(fmt):
    if fmt == "ttmatrix":
        return {"out_dims": (2, 4), "in_dims": (2, 3)}
    return options(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unbatched_and_empty_conv_input_equal_the_dense_conv(fmt):
    layer = layer_for(fmt)
    x = torch.randn(6, 7, 9, dtype=F64)
    y = layer(x)
    ref = dense(layer, x.unsqueeze(0)).squeeze(0)
    assert y.shape == ref.shape == (8, 7, 5)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, layer(x.unsqueeze(0))[0], rtol=1e-12, atol=1e-12)
    empty = torch.randn(0, 6, 7, 9, dtype=F64, requires_grad=True)
    out = layer(empty)
    assert out.shape == dense(layer, empty.detach()).shape == (0, 8, 7, 5)
    assert out.dtype == F64
    out.sum().backward()  # differentiable, zero gradients
    assert all(float(p.grad.abs().max()) == 0.0 for p in layer.factors.values())
    layer.zero_grad(set_to_none=True)


def test_empty_input_with_padding_modes_and_the_size_check():
    layer = layer_for("tucker2", "reflect")
    x = torch.randn(0, 6, 5, 4, dtype=F64)
    assert layer(x).shape == dense(layer, x).shape == (0, 8, 5, 2)
    assert layer(torch.randn(6, 5, 4, dtype=F64)).shape == (8, 5, 2)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        TNConv2d(6, 8, 3, format="tucker2", ranks=2)(torch.randn(0, 6, 2, 2))


@pytest.mark.parametrize("shape", [(6, 7), (1, 1, 6, 7, 7), (5, 7, 7), (2, 5, 7, 7), (6,)])
def test_bad_conv_input_is_refused(shape):
    layer = TNConv2d(6, 8, 3, format="tucker2", ranks=2)
    with pytest.raises(ValueError, match=r"^TNConv2d expects input \(N, 6, H, W\) or \(6, H, W\)"):
        layer(torch.randn(shape))


@given(
    st.integers(0, 3),
    st.integers(3, 7),
    st.integers(3, 7),
    st.booleans(),
    st.sampled_from(["tucker2", "tt", "cp", "grouped", "svd"]),
)
def test_conv_input_shapes_property(n, h, w, unbatched, fmt):
    layer = layer_for(fmt)
    x = torch.randn(n, 6, h, w, dtype=F64)
    ref = dense(layer, x)
    if unbatched:
        if n == 0:
            return
        x, ref = x[0], ref[0]
    y = layer(x)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("plan", ["dense", "direct"])
@pytest.mark.parametrize("shape", [(0, 12), (2, 0, 12), (12,), (3, 4, 12), (0, 3, 12), (5, 12)])
def test_linear_takes_any_leading_dims(plan, shape):
    torch.manual_seed(6)
    layer = TNLinear(12, 10, format="tt", ranks=3, plan=plan, dtype=F64)
    x = torch.randn(shape, dtype=F64)
    y = layer(x)
    ref = F.linear(x, layer.weight, layer.bias)
    assert y.shape == ref.shape == (*shape[:-1], 10)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


# -- e. plan names at construction -------------------------------------------------------------
def test_plan_names_are_checked_at_construction():
    with pytest.raises(
        ValueError,
        match=r"^TNConv2d: unknown plan 'magic'; valid plans are 'auto', 'measure', 'dense', "
        r"'staged', 'separable', 'patches' or one of \d+ exact names such as 'staged\[",
    ):
        TNConv2d(6, 8, 3, format="cp", ranks=2, plan="magic")
    with pytest.raises(
        ValueError, match=r"^TNLinear: unknown plan 'staged'; valid plans are 'auto', "
        r"'measure', 'dense', 'direct'$",
    ):  # fmt: skip
        TNLinear(6, 8, format="svd", ranks=2, plan="staged")
    for bad in ("", 3, None):
        with pytest.raises(ValueError, match=r"^TNLinear: plan must be one of 'auto', 'measure'"):
            TNLinear(6, 8, format="svd", ranks=2, plan=bad)
    conv = nn.Conv2d(6, 8, 3)
    with pytest.raises(ValueError, match="^TNConv2d: unknown plan 'fast'"):
        TNConv2d.from_conv(conv, "tucker2", ranks=2, plan="fast")
    with pytest.raises(ValueError, match="^TNLinear: unknown plan 'fast'"):
        TNLinear.from_linear(nn.Linear(6, 8), "svd", ranks=2, plan="fast")


def test_plan_is_checked_when_set_later():
    layer = TNConv2d(6, 8, 3, padding=1, format="tucker2", ranks=2, dtype=F64)
    x = torch.randn(1, 6, 5, 5, dtype=F64)
    y = layer(x)
    with pytest.raises(ValueError, match="^TNConv2d: unknown plan 'nope'; valid plans are 'auto'"):
        layer.plan = "nope"
    assert layer.plan == "auto"
    layer.plan = "patches"
    torch.testing.assert_close(layer(x), y)
    assert [k[3] for k in layer._plans] == ["auto", "patches"]
    assert layer._plans[next(reversed(layer._plans))].name == "patches"


def test_every_plan_name_of_the_structure_is_accepted_and_runs():
    torch.manual_seed(7)
    ref = TNConv2d(6, 8, 3, padding=1, format="tucker2", ranks=(3, 2), dtype=F64)
    names = conv_plan_names(ref.structure)
    assert names[:3] == ("dense", "staged", "patches")  # the core holds kh and kw: no separable
    exact = [n for n in names if "[" in n]
    assert exact and all(n.split("[")[0] in names for n in exact)
    x = torch.randn(2, 6, 5, 5, dtype=F64)
    buildable = {p.name for p in ref._candidates(tuple(x.shape), "cpu")}
    for name in exact:  # all accepted at construction
        TNConv2d(6, 8, 3, padding=1, format="tucker2", ranks=(3, 2), plan=name)
    assert "staged[in=U_in conv=core out=U_out]" in buildable
    for name in sorted(buildable & set(exact)):
        layer = TNConv2d(6, 8, 3, padding=1, format="tucker2", ranks=(3, 2), plan=name, dtype=F64)
        layer.load_state_dict(ref.state_dict())
        torch.testing.assert_close(layer(x), dense(ref, x), rtol=1e-10, atol=1e-10)
        assert next(iter(layer._plans.values())).name == name


# -- f. the LRU plan cache --------------------------------------------------------------------
def test_plan_cache_is_lru_and_a_hit_does_not_replan(monkeypatch):
    layer = TNLinear(6, 4, format="svd", ranks=2)
    assert layer.plan_cache_size == PLAN_CACHE_SIZE == 32
    layer.plan_cache_size = 3
    calls = []
    real = layer._choose

    def counting(shape, device, dtype, *layout):
        calls.append(shape[0])
        return real(shape, device, dtype, *layout)

    monkeypatch.setattr(layer, "_choose", counting)
    for n in (1, 2, 3):
        layer(torch.randn(n, 6))
    assert calls == [1, 2, 3]
    layer(torch.randn(1, 6))  # a hit: no planning, 1 becomes the most recent
    assert calls == [1, 2, 3]
    layer(torch.randn(4, 6))  # evicts 2, the least recently used
    assert calls == [1, 2, 3, 4]
    assert [k[0][0] for k in layer._plans] == [3, 1, 4]
    layer(torch.randn(3, 6))  # still cached
    assert calls == [1, 2, 3, 4]
    layer(torch.randn(2, 6))  # was evicted: planned again, evicting 1
    assert calls == [1, 2, 3, 4, 2]
    assert [k[0][0] for k in layer._plans] == [4, 3, 2]


def test_plan_cache_default_bound():
    layer = TNLinear(3, 2, format="svd", ranks=1)
    for n in range(1, 41):
        layer(torch.randn(n, 3))
    assert len(layer._plans) == 32
    assert [k[0][0] for k in layer._plans] == list(range(9, 41))


# -- g. truncate_kernel on compressed layers ---------------------------------------------------
CUTS = [
    ("tucker2", ["out"]),
    ("tucker2", ["in"]),
    ("tucker", ["in"]),
    ("svd", ["out"]),
    ("tt", ["in"]),
    ("tt", ["out"]),
    ("tt", ["in", "kh"]),
    ("ht", ["in", "out"]),
    ("ht", ["kw"]),
]


def frob(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("fmt, cut", CUTS)
def test_truncate_kernel_through_a_bond_is_eckart_young(fmt, cut):
    torch.manual_seed(8)
    layer = TNConv2d(8, 12, 3, format=fmt, ranks=64, dtype=F64)  # the maximal ranks
    before = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    w = layer.weight.detach()
    small, res = truncate_kernel(layer, [cut], 2)
    assert type(small) is TNConv2d and small is not layer
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
    new = small.weight.detach()
    assert res.error == pytest.approx(frob(new, w), rel=1e-12, abs=1e-15)
    assert res.norm_kept == pytest.approx(float(new.norm() / w.norm()), rel=1e-12)
    # the same as truncating the dense kernel along the cut (the optimum)
    ref, dres = truncate_kernel(layer.to_conv(), [cut], 2)
    assert res.error == pytest.approx(dres.error, rel=1e-9, abs=1e-12)
    torch.testing.assert_close(new, ref.weight.detach(), rtol=1e-9, atol=1e-10)
    assert res.ranks == (2,) and res.step_errors == pytest.approx(dres.step_errors, rel=1e-9)
    assert res.spectra[0].values.tolist() == pytest.approx(dres.spectra[0].values.tolist())
    assert small.structure.num_params < layer.structure.num_params
    assert small.decomposition_error is None
    x = torch.randn(2, 8, 6, 6, dtype=F64)
    torch.testing.assert_close(small(x), dense(small, x), rtol=1e-10, atol=1e-10)
    assert all(p.requires_grad for p in small.parameters())


def test_truncate_kernel_several_cuts_policies_and_inplace():
    torch.manual_seed(9)
    layer = TNConv2d(8, 12, 3, format="tucker2", ranks=(10, 6), dtype=F64)
    w = layer.weight.detach().clone()
    policy = Truncation(rel_tol=0.4)
    same, res = truncate_kernel(layer, [["out"], ["in"]], [3, policy], inplace=True)
    assert same is layer and layer.ranks[0] == 3 and res.ranks[0] == 3
    assert layer.ranks[1] == res.ranks[1] == res.spectra[1].rank_for(policy) < 6
    assert res.error == pytest.approx(frob(layer.weight.detach(), w), rel=1e-12)
    assert res.error >= max(res.step_errors) - 1e-12
    assert res.cuts == (("out",), ("in",))
    assert len(layer._plans) == 0
    # complement cuts name the same bond; a chi above the bond rank changes nothing
    lin = TNLinear(10, 7, format="svd", ranks=5, dtype=F64)
    wl = lin.weight.detach()
    same_l, res_l = truncate_kernel(lin, ["in"], 9)
    assert same_l.ranks == (5,) and res_l.ranks == (5,) and res_l.error < 1e-12
    torch.testing.assert_close(same_l.weight.detach(), wl)
    low, res_low = truncate_kernel(lin, "out", 2)
    assert low.ranks == (2,) and res_low.error == pytest.approx(frob(low.weight.detach(), wl))


@pytest.mark.parametrize(
    "fmt, cut, match",
    [
        ("cp", ["out"], r"the cut \['out'\]; it has no bond that cuts the kernel\. Truncate"),
        ("tr", ["out"], r"the cut \['out'\]; it has no bond that cuts the kernel"),
        ("grouped", ["out"], r"the cut \['out'\]; it has no bond that cuts the kernel"),
        ("tucker2", ["kh"], r"the cut \['kh'\]; its bonds cut \[\['out'\], \['in'\]\]\. Trunc"),
    ],
)
def test_truncate_kernel_refuses_cuts_without_a_bond(fmt, cut, match):
    layer = TNConv2d(8, 12, 3, format=fmt, ranks=2, **options(fmt))
    head = rf"^truncate_kernel\(TNConv2d, format '{fmt}'\): no bond of the format induces "
    with pytest.raises(ValueError, match=head + match):
        truncate_kernel(layer, [cut], 2)


def test_truncate_kernel_refuses_unknown_legs_and_huge_kernels(monkeypatch):
    layer = TNConv2d(8, 12, 3, format="tucker2", ranks=2)
    with pytest.raises(ValueError, match=r"cut \['out', 'x'\] names legs \['x'\] not in"):
        truncate_kernel(layer, [["out", "x"]], 2)
    assert DENSE_LIMIT == 2**26
    monkeypatch.setattr(truncate_module, "DENSE_LIMIT", 8 * 12 * 9 - 1)
    with pytest.raises(ValueError, match="the kernel has 864 elements, above the 863 this"):
        truncate_kernel(layer, ["out"], 2)
    monkeypatch.setattr(truncate_module, "DENSE_LIMIT", 8 * 12 * 9)
    assert truncate_kernel(layer, ["out"], 1)[0].ranks == (1, 2)


def test_bond_cuts_per_format():
    def cuts(fmt, **opts):
        s = get_format(fmt).structure_for((16, 8, 3, 3), None, legs=LEGS, **opts)
        return {i: sorted(c) for i, c in bond_cuts(s).items()}

    assert cuts("tucker") == {0: ["out"], 1: ["in"], 2: ["kh"], 3: ["kw"]}
    assert cuts("tt", order=("in", "kh", "kw", "out")) == {
        0: ["in"], 1: ["kw", "out"], 2: ["out"]
    }  # fmt: skip
    ht = cuts("ht")
    assert ht == {0: ["in", "out"], 1: ["in", "out"], 2: ["out"], 3: ["in"], 4: ["kh"], 5: ["kw"]}
    assert cuts("cp") == cuts("tr") == cuts("grouped", channel_groups=2) == {}
    assert cuts("ttmatrix", out_dims=(4, 4), in_dims=(2, 4)) == {0: ["in", "out"]}
    assert math.prod((16, 8, 3, 3)) == 1152


def test_truncate_kernel_of_a_zero_or_frozen_layer():
    layer = TNConv2d(4, 6, 3, format="svd", ranks=3, dtype=F64)
    with torch.no_grad():
        for p in layer.factors.values():
            p.zero_()
    layer.requires_grad_(False)
    small, res = truncate_kernel(layer, ["out"], 1)
    assert res.error == 0.0 and res.step_errors == (0.0,) and res.norm_kept == 1.0
    assert small.ranks == (1,) and not any(p.requires_grad for p in small.factors.values())
    assert all(p.dtype == F64 for p in small.factors.values())


def test_layer_sizes_take_integers_of_any_library():
    conv = TNConv2d(
        np.int64(4), torch.tensor(6), np.int32(3), stride=(np.int64(2), 1),
        padding=torch.tensor(1), dilation=[np.int64(1), 1], format="tucker2", ranks=2,
    )  # fmt: skip
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4, 6, (3, 3))
    assert type(conv.in_channels) is int and conv.stride == (2, 1) and conv.padding == 1
    assert conv(torch.randn(1, 4, 5, 5)).shape == (1, 6, 3, 5)
    lin = TNLinear(np.int64(5), torch.tensor(3), format="svd", ranks=2)
    assert (lin.in_features, lin.out_features) == (5, 3) and type(lin.out_features) is int
    for bad in (True, 0, np.float64(4.0), torch.tensor(4.0)):
        with pytest.raises(ValueError, match="^TNConv2d: in_channels must be a positive int"):
            TNConv2d(bad, 6, 3, format="tucker2", ranks=2)
        with pytest.raises(ValueError, match="^TNLinear: out_features must be a positive int"):
            TNLinear(5, bad, format="svd", ranks=2)


def test_tr_and_ttmatrix_clamps():
    tr = get_format("tr")
    with pytest.raises(ValueError, match="^TR.clamp_ranks: ranks must have 3 entries"):
        tr.clamp_ranks((2, 3, 4), (1, 2))
    with pytest.raises(ValueError, match="^mine: ranks must have 3 entries"):
        tr.clamp_ranks((2, 3, 4), (1, 2), what="mine")
    assert tr.clamp_ranks((4, 6), 9) == (4, 1)  # r0 r1 <= min(4, 6): r0 first
    tops = tr.structure_for((4, 6)).max_ranks
    assert tr.clamp_ranks((4, 6), tops) == tops == (2, 2)
    assert tr.clamp_ranks((9, 9, 9), (1, 9, 99)) == (1, 9, 9)  # r2 <= min(9 * 9, 1 * 9)
    lin = TNLinear(64, 36, format="ttmatrix", ranks=100, out_dims=(6, 6), in_dims=(8, 8))
    assert lin.ranks == (48,)  # min(6 * 8, 6 * 8)
    s = get_format("ttmatrix").structure_for(
        (36, 64), (48,), legs=("out", "in"), out_dims=(6, 6), in_dims=(8, 8)
    )
    assert lin.structure.num_params == s.num_params


def test_conv_plan_names_of_a_tensorized_spatial_leg_are_empty():
    from tensornet.formats.structure import Factor, Structure

    s = Structure(
        "custom", LEGS, (2, 2, 4, 1), (1,),
        (Factor("A", ("out", "in", "h1", "h2", "kw"), (2, 2, 2, 2, 1)),),
        (("out",), ("in",), ("h1", "h2"), ("kw",)), (1,),
    )  # fmt: skip
    assert conv_plan_names(s) == ()


def test_truncate_kernel_in_place_on_a_dense_layer_reports_the_error_it_made():
    # in place, the original weight's storage is overwritten: the error must be taken before
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3).double()
    w = conv.weight.detach().clone()
    same, res = truncate_kernel(conv, ["out"], 2, inplace=True)
    assert same is conv
    new = conv.weight.detach()
    assert res.error == pytest.approx(float((new - w).norm() / w.norm()), rel=1e-12)
    assert res.error > 0.1
    assert res.norm_kept == pytest.approx(float(new.norm() / w.norm()), rel=1e-12)
