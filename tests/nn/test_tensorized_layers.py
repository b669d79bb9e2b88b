"""Tensorized TNLinear and channel-tensorized TNConv2d in tt, tr, tucker, cp and ht.

tltorch's small case (9 = 3 x 3 -> 16 = 4 x 4) in float64: at full rank each layer is the dense
layer; at fraction 0.5 it is the dense layer holding its own rebuilt weight; every forward plan
candidate agrees with the others; gradients pass gradcheck; save/load, ``to_standard`` and
``compress`` (per-layer dims and ``tensorize=``) keep the outputs; spectra are those of the
rebuilt layers.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tensornet import model_spectra
from tensornet.formats import get_format
from tensornet.nn import TNConv2d, TNLinear, compress, load, save, to_standard, truncate_kernel
from tensornet.nn.functional import conv_candidates, linear_candidates

F64 = torch.float64
FORMATS = ("tt", "tr", "tucker", "cp", "ht")
DIMS = {"out_dims": (4, 4), "in_dims": (3, 3)}
ALGO = {"cp": {"max_iter": 300, "tol": 1e-14}}


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def cp_rank3(shape, seed=0):
    """A weight of CP rank 3 over the modes ``4, 4, 3, 3[, kh, kw]`` (CP's "full" rank)."""
    g = torch.Generator().manual_seed(seed)
    modes = (4, 4, 3, 3, *shape[2:])
    fs = [torch.randn(n, 3, generator=g, dtype=F64) for n in modes]
    letters = "abcdef"[: len(modes)]
    return torch.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *fs).reshape(shape)


def linear(fmt, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(9, 16, dtype=F64)
    if fmt == "cp":
        with torch.no_grad():
            lin.weight.copy_(cp_rank3((16, 9), seed))
    return lin


def conv(fmt, seed=0, **kw):
    torch.manual_seed(seed)
    c = nn.Conv2d(9, 16, 3, dtype=F64, **kw)
    if fmt == "cp":
        with torch.no_grad():
            c.weight.copy_(cp_rank3((16, 9, 3, 3), seed))
    return c


def full(fmt):
    """Sizes for an exact layer: the format's maximal ranks (CP: rank 3, see ``cp_rank3``)."""
    return {"ranks": 3} if fmt == "cp" else {}


# -- linear ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_at_full_rank_is_the_dense_layer(fmt):
    lin = linear(fmt)
    layer = TNLinear.from_linear(lin, fmt, **full(fmt), **DIMS, **ALGO.get(fmt, {}))
    assert layer.structure.option("out_dims") == (4, 4)
    assert layer.structure.modes[:2] == (("out_0", "out_1"), ("in_0", "in_1"))
    x = torch.randn(7, 9, dtype=F64)
    assert rel(layer(x), lin(x)) < 1e-8 and layer.decomposition_error < 1e-8
    assert rel(layer.weight, lin.weight) < 1e-8


@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_at_half_is_a_dense_layer_of_its_rebuilt_weight(fmt):
    lin = linear("tt", seed=1)
    layer = TNLinear.from_linear(lin, fmt, fraction=0.5, **DIMS)
    assert layer.structure.num_params <= 0.5 * 144 and layer.ranks != layer.structure.max_ranks
    own = layer.to_linear()
    x = torch.randn(3, 5, 9, dtype=F64)
    torch.testing.assert_close(layer(x), own(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(own.weight, layer.to_format().to_dense(), rtol=1e-12, atol=1e-14)
    assert layer.decomposition_error == pytest.approx(rel(own.weight, lin.weight), rel=1e-9)
    assert 0 < layer.decomposition_error < 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_linear_plan_agrees(fmt):
    torch.manual_seed(2)
    layer = TNLinear(9, 16, format=fmt, fraction=0.5, dtype=F64, **DIMS)
    x = torch.randn(6, 9, dtype=F64)
    ref = F.linear(x, layer.weight)
    plans = linear_candidates(layer.structure, tuple(x.shape))
    assert {p.family for p in plans} >= {"dense", "direct"}
    for plan in plans:
        torch.testing.assert_close(plan(x, layer.factors), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_gradcheck(fmt):
    torch.manual_seed(3)
    layer = TNLinear(4, 6, format=fmt, fraction=0.9, dtype=F64, out_dims=(3, 2), in_dims=(2, 2))
    names = list(layer.factors)
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    for family in ("dense", "direct"):
        layer.plan = family

        def f(x, *ts, layer=layer):
            params = {f"factors.{n}": t for n, t in zip(names, ts)}
            return torch.func.functional_call(layer, params, (x,))

        ts = [p.detach().clone().requires_grad_() for p in layer.factors.values()]
        assert torch.autograd.gradcheck(f, (x, *ts))


# -- conv ------------------------------------------------------------------------------------
GEOMETRIES = [
    {"padding": 1},
    {"stride": 2, "padding": 2, "dilation": 2},
    {"padding": "same", "padding_mode": "circular"},
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("geo", GEOMETRIES)
def test_conv_at_full_rank_is_the_dense_conv(fmt, geo):
    c = conv(fmt, **geo)
    layer = TNConv2d.from_conv(c, fmt, **full(fmt), **DIMS, **ALGO.get(fmt, {}))
    s = layer.structure
    assert s.modes == (("out_0", "out_1"), ("in_0", "in_1"), ("kh",), ("kw",))
    x = torch.randn(2, 9, 7, 6, dtype=F64)
    assert rel(layer(x), c(x)) < 1e-8


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_at_half_is_f_conv2d_of_its_rebuilt_kernel(fmt):
    c = conv("tt", seed=4, stride=2, padding=1)
    layer = TNConv2d.from_conv(c, fmt, fraction=0.5, **DIMS)
    assert layer.structure.num_params <= 0.5 * 1296
    x = torch.randn(3, 9, 8, 9, dtype=F64)
    ref = F.conv2d(x, layer.to_format().to_dense(), layer.bias, 2, 1)
    torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.to_conv()(x), ref, rtol=1e-12, atol=1e-12)
    assert layer.decomposition_error == pytest.approx(rel(layer.weight, c.weight), rel=1e-9)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_conv_plan_agrees(fmt):
    torch.manual_seed(5)
    layer = TNConv2d(9, 16, 3, padding=1, stride=(1, 2), format=fmt, fraction=0.5,
                     dtype=F64, **DIMS)  # fmt: skip
    x = torch.randn(2, 9, 6, 7, dtype=F64)
    g = layer.geometry
    ref = F.conv2d(g.pad(x), layer.weight, None, g.stride, 0, g.dilation)
    plans = conv_candidates(layer.structure, layer.geometry, tuple(x.shape))
    assert len(plans) >= 3 and {"dense", "patches"} <= {p.family for p in plans}
    for plan in plans:
        torch.testing.assert_close(plan(x, layer.factors), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_gradcheck(fmt):
    torch.manual_seed(6)
    layer = TNConv2d(4, 6, 2, padding=1, format=fmt, fraction=0.9, dtype=F64,
                     out_dims=(3, 2), in_dims=(2, 2))  # fmt: skip
    names = list(layer.factors)
    x = torch.randn(1, 4, 3, 3, dtype=F64, requires_grad=True)

    def f(x, *ts):
        params = {f"factors.{n}": t for n, t in zip(names, ts)}
        return torch.func.functional_call(layer, params, (x,))

    ts = [p.detach().clone().requires_grad_() for p in layer.factors.values()]
    for family in ("dense", "patches"):
        layer.plan = family
        assert torch.autograd.gradcheck(f, (x, *ts))


# -- save/load, export, compress ---------------------------------------------------------------
def dense_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(9, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 9, 3), nn.Flatten(),
        nn.Linear(9 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 9),
    ).to(F64)  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_load_and_to_standard_keep_the_outputs(fmt, tmp_path):
    net = dense_model()
    net[0] = TNConv2d.from_conv(net[0], fmt, fraction=0.5, **DIMS)
    net[2] = TNConv2d.from_conv(net[2], fmt, fraction=0.5, out_dims=(3, 3), in_dims=(4, 4))
    net[6] = TNLinear.from_linear(net[6], fmt, fraction=0.5, out_dims=(3, 3), in_dims=(4, 4))
    x = torch.randn(2, 9, 6, 6, dtype=F64)
    path = tmp_path / "net.safetensors"
    save(net, path)
    fresh = dense_model(seed=1)
    load(fresh, path)
    assert [fresh[i].structure for i in (0, 2, 6)] == [net[i].structure for i in (0, 2, 6)]
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = to_standard(net, (2, 9, 6, 6), fallback="chain", measure=False)
    torch.testing.assert_close(plain(x), net(x), rtol=1e-10, atol=1e-10)
    # layers with no chain of plain modules stay compressed (with a warning): a tensorized
    # Tucker has 5+ factors (export tries their order and its reverse only); a CP conv applies
    # kh and kw as separate factors
    kept = [i for i in (0, 2, 6) if isinstance(plain[i], (TNConv2d, TNLinear))]
    assert kept == {"tucker": [0, 2, 6], "cp": [0, 2]}.get(fmt, [])
    assert len(caught) == len(kept)


def test_compress_takes_dims_per_layer_and_balanced():
    net = dense_model()
    dims = ("tucker", {"out_dims": (4, 4), "in_dims": (3, 3)})
    cp = ("cp", {"max_iter": 5})
    small, _ = compress(net, {"0": dims, "conv": "tt", "linear": cp}, fraction=0.5, skip=())
    assert small[0].structure.option("in_dims") == (3, 3) and small[0].format == "tucker"
    assert small[2].structure.option("out_dims") is None
    balanced, _ = compress(net, {"conv": "tt", "linear": "ht"}, fraction=0.5, skip=(),
                           tensorize="balanced")  # fmt: skip
    assert [balanced[i].format for i in (0, 2, 4, 6)] == ["tt", "tt", "ht", "ht"]
    options = [dict(balanced[i].structure.options) for i in (0, 2, 4, 6)]
    assert [(o["out_dims"], o["in_dims"]) for o in options] == [
        ((4, 4), (3, 3)), ((3, 3), (4, 4)), ((4, 4), (12, 12)), ((3, 3), (4, 4)),
    ]  # fmt: skip
    assert options[0]["order"] == ("in_0", "in_1", "kh", "kw", "out_0", "out_1")
    x = torch.randn(2, 9, 6, 6, dtype=F64)
    for i in (0, 2, 4, 6):
        assert balanced[i].num_params - balanced[i].bias.numel() <= 0.5 * net[i].weight.numel()
    assert torch.isfinite(balanced(x)).all()
    three, _ = compress(net, "tucker", fraction=0.5, skip=(), layers=["4"], tensorize=3)
    assert three[4].structure.option("in_dims") == (6, 6, 4)  # 144 = 2^4 3^2
    kept, _ = compress(net, "tucker2", fraction=0.5, skip=(), layers=["0"], tensorize="balanced")
    assert kept[0].structure.option("out_dims") is None  # tucker2 takes no dims


@pytest.mark.parametrize("bad", ["even", 0, True, 2.5])
def test_compress_refuses_a_bad_tensorize(bad):
    with pytest.raises(ValueError, match="tensorize must be 'balanced', a number of modes"):
        compress(dense_model(), "tt", fraction=0.5, skip=(), tensorize=bad)


def test_compress_tensorize_with_an_allocation_is_refused():
    from tensornet.nn import allocate

    alloc = allocate(dense_model(), 0.5, skip=())
    message = r"^compress: tensorize does not apply to an allocation \(its options do\)$"
    with pytest.raises(ValueError, match=message):
        compress(dense_model(), allocation=alloc, tensorize="balanced")


def test_parameters_match_the_structure_of_the_modes():
    """A tensorized layer stores what the plain format of the tensor of modes stores."""
    layer = TNConv2d(9, 16, 3, format="tt", ranks=4, **DIMS)
    s = layer.structure
    plain = get_format("tt").structure_for(
        (4, 4, 3, 3, 3, 3), s.ranks, legs=s.mode_legs, order=s.option("order")
    )
    assert layer.num_params == plain.num_params + 16
    assert sum(p.numel() for p in layer.factors.values()) == plain.num_params
    assert math.prod(s.shape) == 1296 and layer.weight.shape == (16, 9, 3, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_spectra_are_those_of_the_rebuilt_layers(fmt):
    torch.manual_seed(7)
    net = nn.Sequential(
        TNConv2d(9, 16, 3, format=fmt, fraction=0.5, dtype=F64, **DIMS), nn.Flatten(),
        TNLinear(16, 9, format=fmt, fraction=0.5, dtype=F64, out_dims=(3, 3), in_dims=(4, 4)),
    )  # fmt: skip
    dense = nn.Sequential(net[0].to_conv(), nn.Flatten(), net[2].to_linear())
    ours, ref = model_spectra(net), model_spectra(dense)
    assert ours.compressed == {"0": fmt, "2": fmt} and len(ours) == len(ref) == 8
    for sp in ours:
        other = ref.get(sp.name, sp.label)
        torch.testing.assert_close(sp.values, other.values, rtol=1e-10, atol=1e-12)


def test_truncating_a_bond_of_a_tensorized_train_is_the_best_approximation_of_its_cut():
    """The TT conv's bond after ``in_0, in_1`` induces the cut ``in | out, kh, kw``."""
    torch.manual_seed(8)
    layer = TNConv2d(9, 16, 3, format="tt", fraction=0.5, dtype=F64, **DIMS)
    small, _ = truncate_kernel(layer, ["in"], 2)
    w = layer.weight.detach().permute(1, 0, 2, 3).reshape(9, -1)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    best = (u[:, :2] * s[:2]) @ vh[:2]
    got = small.weight.detach().permute(1, 0, 2, 3).reshape(9, -1)
    torch.testing.assert_close(got, best, rtol=1e-9, atol=1e-10)
    assert small.structure.option("in_dims") == (3, 3) and small.ranks[1] == 2


def test_compress_tensorize_leaves_given_dims_dense_layers_and_prime_sizes_alone():
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(9, 16), nn.Linear(16, 16), nn.Linear(16, 7), nn.Linear(7, 9))
    given = ("tt", {"out_dims": (2, 8), "in_dims": (9,)})
    small, _ = compress(net, {"0": given, "1": "cp", "2": "tt"}, fraction=0.5, skip=(),
                        tensorize="balanced")  # fmt: skip
    assert dict(small[0].structure.options)["out_dims"] == (2, 8)  # the layer's own dims win
    assert small[1].structure.option("in_dims") == (4, 4)
    assert small[2].structure.option("out_dims") is None  # 7 does not split
    assert isinstance(small[3], nn.Linear)  # left dense by the mapping
    two, _ = compress(net, "tt", fraction=0.5, skip=(), layers=["1"], tensorize=np.int64(2))
    assert two[1].structure.option("out_dims") == (4, 4)
    one, _ = compress(net, "tt", fraction=0.5, skip=(), layers=["1"], tensorize=1)
    assert one[1].structure.option("out_dims") == (16,) and one[1].structure.option("in_dims") == (
        16,
    )


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_parameter_counts_next_to_tltorch(fraction):
    """tltorch's FactorizedLinear (16 x 16 -> 16 x 16) at ``rank=fraction``, ours at ``fraction``.

    CP: the same rank; tltorch also stores the R weights. Tucker: the same ranks where tltorch
    keeps to the budget (0.25, 0.5); at 0.1 its ranks go over it (7137 > 6554), ours do not.
    """
    tltorch = pytest.importorskip("tltorch")
    dims = {"out_dims": (16, 16), "in_dims": (16, 16)}
    ours = {
        name: TNLinear(256, 256, format=name, fraction=fraction, **dims).structure.num_params
        for name in ("cp", "tucker")
    }
    theirs = {}
    for name in ("cp", "tucker"):
        layer = tltorch.FactorizedLinear((16, 16), (16, 16), factorization=name, rank=fraction)
        theirs[name] = sum(p.numel() for k, p in layer.named_parameters() if k != "bias")
    rank = ours["cp"] // 64
    assert theirs["cp"] == ours["cp"] + rank and ours["cp"] <= fraction * 65536
    assert ours["tucker"] <= fraction * 65536
    if fraction > 0.1:
        assert theirs["tucker"] == ours["tucker"]
    else:
        assert theirs["tucker"] > fraction * 65536


@pytest.mark.parametrize("given, missing", [("out_dims", "in_dims"), ("in_dims", "out_dims")])
def test_compress_tensorize_keeps_a_layers_own_half_given_dims(given, missing):
    """One dim given for a layer is the layer's (an error to report), not replaced."""
    net = nn.Sequential(nn.Linear(9, 16), nn.Linear(16, 16))
    spec = {"1": ("tt", {given: (4, 4)})}
    with pytest.raises(ValueError, match=f"layer '1': .*{missing} is missing"):
        compress(net, spec, fraction=0.5, skip=(), tensorize="balanced")
