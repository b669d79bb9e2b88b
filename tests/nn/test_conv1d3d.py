"""TNConv1d and TNConv3d: exact at full rank against torch over random geometries, every plan
agrees with every other, gradcheck, save/load and to_standard round trips (float64)."""

from __future__ import annotations

import os
import random

import pytest
import torch
from torch import nn

from tensornet.nn import TNConv1d, TNConv3d, load, save, to_standard
from tensornet.nn.convnd import conv_options, lift
from tensornet.nn.geometry_nd import GeometryNd, as_tuple

FULL = {"tucker2": 10**6, "tt": 10**6, "tucker": 10**6, "svd": 10**6, "tr": 10**6}
MODES = ("zeros", "reflect", "replicate", "circular")


def _geometries(n: int, count: int, seed: int):
    """Random torch conv arguments (stride, padding incl. modes and 'same', dilation)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = tuple(rng.randint(1, 3) for _ in range(n))
        d = tuple(rng.randint(1, 2) for _ in range(n))
        mode = rng.choice(MODES)
        if rng.random() < 0.2:
            s, p = 1, "same"
        else:
            s = tuple(rng.randint(1, 2) for _ in range(n))
            p = tuple(rng.randint(0, 2) for _ in range(n))
        out.append(
            {"kernel_size": k, "stride": s, "padding": p, "dilation": d, "padding_mode": mode}
        )
    return out


def _every_plan(layer, x):
    """The layer's output under each of its candidate plans."""
    outs = {}
    for row in layer.plan_info(tuple(x.shape)).rows:
        layer.plan = row["name"]
        outs[row["name"]] = layer(x)
    layer.plan = "auto"
    return outs


@pytest.mark.parametrize("args", _geometries(1, 8, seed=1))
@pytest.mark.parametrize("fmt", ["tucker2", "tt"])
def test_conv1d_full_rank_equals_torch_under_every_plan(args, fmt):
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 4, dtype=torch.float64, **args)
    layer = TNConv1d.from_conv(conv, fmt, ranks=FULL[fmt])
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    outs = _every_plan(layer, x)
    assert len(outs) >= 3  # dense, staged..., patches: the 2-d plans on the lifted structure
    for name, y in outs.items():
        torch.testing.assert_close(y, conv(x), atol=1e-8, rtol=0, msg=name)
    assert layer.weight.shape == (4, 3, *conv.kernel_size)
    torch.testing.assert_close(layer.weight, conv.weight, atol=1e-10, rtol=0)


@pytest.mark.parametrize("args", _geometries(3, 6, seed=2))
@pytest.mark.parametrize("fmt", ["tucker2", "tt", "tucker"])
def test_conv3d_full_rank_equals_torch_under_every_plan(args, fmt):
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, dtype=torch.float64, **args)
    layer = TNConv3d.from_conv(conv, fmt, ranks=FULL[fmt])
    x = torch.randn(2, 2, 5, 6, 5, dtype=torch.float64)
    outs = _every_plan(layer, x)
    assert "dense" in outs and any(n.startswith("staged") for n in outs)
    for name, y in outs.items():
        torch.testing.assert_close(y, conv(x), atol=1e-8, rtol=0, msg=name)


@pytest.mark.parametrize("cls, shape", [(TNConv1d, (2, 4, 9)), (TNConv3d, (2, 4, 4, 3, 5))])
def test_low_rank_plans_agree_with_the_rebuilt_kernel(cls, shape):
    """CP (not exact at any rank): every plan equals the torch conv with the layer's own kernel."""
    torch.manual_seed(1)
    layer = cls(4, 5, 3, padding=1, format="cp", ranks=3, dtype=torch.float64)
    x = torch.randn(*shape, dtype=torch.float64)
    ref = layer.to_conv()(x)
    outs = _every_plan(layer, x)
    assert len(outs) >= 2
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("cls, shape", [(TNConv1d, (2, 3, 6)), (TNConv3d, (1, 3, 3, 3, 4))])
def test_gradcheck_through_the_staged_plan(cls, shape):
    torch.manual_seed(2)
    layer = cls(3, 2, 2, padding=1, format="tucker2", ranks=(2, 2), dtype=torch.float64)
    layer.plan = "staged"
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    names = list(layer.factors)
    factors = [layer.factors[n].detach().clone().requires_grad_() for n in names]

    def f(x, *tensors):
        state = {f"factors.{n}": t for n, t in zip(names, tensors)}
        return torch.func.functional_call(layer, state, (x,))

    assert torch.autograd.gradcheck(f, (x, *factors))
    dense = torch.autograd.grad(layer.to_conv()(x).square().sum(), x)[0]
    torch.testing.assert_close(torch.autograd.grad(layer(x).square().sum(), x)[0], dense)


def test_unbatched_empty_and_bad_inputs():
    torch.manual_seed(3)
    one = TNConv1d(3, 4, 3, format="tucker2", ranks=(2, 2), dtype=torch.float64)
    x = torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(one(x), one(x.unsqueeze(0)).squeeze(0))
    assert one(torch.zeros(0, 3, 7, dtype=torch.float64)).shape == (0, 4, 5)
    with pytest.raises(ValueError, match=r"TNConv1d expects input \(N, 3, S0\)"):
        one(torch.zeros(2, 4, 7))
    three = TNConv3d(2, 3, 3, format="tt", ranks=2, dtype=torch.float64)
    assert three(torch.zeros(0, 2, 3, 3, 3, dtype=torch.float64)).shape == (0, 3, 1, 1, 1)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        three(torch.zeros(1, 2, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="only groups=1"):
        TNConv3d(2, 2, 3, groups=2, format="tt", ranks=2)
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        TNConv1d.from_conv(nn.Conv1d(2, 2, 3, groups=2), "tt", ranks=2)
    with pytest.raises(TypeError, match=r"expected an nn.Conv3d, got Conv1d"):
        TNConv3d.from_conv(nn.Conv1d(2, 2, 3), "tt", ranks=2)


def test_structure_speaks_its_own_dimension():
    layer = TNConv1d(4, 6, 5, format="tt", ranks=2)
    assert layer.structure.legs == ("out", "in", "k") and layer.structure.shape == (6, 4, 5)
    assert "__unit" not in layer.state_dict() and "__unit" not in dict(layer.named_parameters())
    lifted = lift(layer.structure)
    assert lifted.shape == (6, 4, 1, 5) and lifted.num_params == layer.structure.num_params + 1
    assert conv_options("tt", ("out", "in", "kd", "kh", "kw")) == {
        "order": ("in", "kd", "kh", "kw", "out")
    }
    assert conv_options("tt", ("out", "in", "k"), {"order": ("out", "in", "k")}) == {
        "order": ("out", "in", "k")
    }
    assert conv_options("svd", ("out", "in", "k")) == {}
    assert "kernel_size=(5,)" in repr(layer) and "format=tt" in repr(layer)
    g = TNConv3d(
        2,
        2,
        (1, 2, 3),
        stride=(1, 2, 1),
        padding=(0, 1, 2),
        padding_mode="reflect",
        dilation=(2, 1, 1),
        bias=False,
        format="tt",
        ranks=2,
    )
    text = repr(g)
    for part in (
        "stride=(1, 2, 1)",
        "padding=(0, 1, 2)",
        "dilation=(2, 1, 1)",
        "padding_mode='reflect'",
        "bias=False",
    ):
        assert part in text


def test_geometry_nd_matches_torch_sizes_and_names_bad_fields():
    g = GeometryNd.from_conv_args((3, 2), stride=(2, 1), padding="valid")
    assert g.output_size((7, 5)) == (3, 4) and g.padding == ((0, 0), (0, 0))
    same = GeometryNd.from_conv_args((4,), padding="same", dilation=2)
    assert same.padding == ((3, 3),) and same.output_size((9,)) == (9,)
    assert as_tuple([1, 2], 2, "x") == (1, 2)
    for args, message in [
        ({"stride": 0}, "stride must be an int >= 1"),
        ({"padding": "full"}, "padding must be an int"),
        ({"padding": "same", "stride": 2}, "padding='same' is not supported for strided"),
        ({"padding_mode": "wrap"}, "padding_mode must be one of"),
        ({"dilation": (1, 2, 3)}, "dilation must be an int >= 1 or 2 of them"),
    ]:
        with pytest.raises(ValueError, match=message):
            GeometryNd.from_conv_args((3, 3), **args)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv1d(3, 4, 3, stride=2, padding=1, padding_mode="reflect", dtype=torch.float64),
        nn.Conv1d(3, 4, 2, padding="same", dilation=2, bias=False, dtype=torch.float64),
        nn.Conv3d(2, 3, (1, 2, 3), padding=(0, 1, 1), padding_mode="circular", dtype=torch.float64),
    ],
)
def test_save_load_and_to_standard_round_trips(conv, tmp_path):
    torch.manual_seed(4)
    cls = TNConv1d if isinstance(conv, nn.Conv1d) else TNConv3d
    layer = cls.from_conv(conv, "tucker2", ranks=(2, 2))
    model = nn.Sequential(layer)
    path = os.fspath(tmp_path / "m.safetensors")
    save(model, path)
    fresh = nn.Sequential(type(conv)(**_kwargs(conv), dtype=torch.float64))
    load(fresh, path)
    assert type(fresh[0]) is cls
    shape = (2, conv.in_channels, *([7] * (len(conv.kernel_size))))
    x = torch.randn(*shape, dtype=torch.float64)
    assert torch.equal(fresh(x), model(x))
    plain = to_standard(model, shape, fallback="chain", measure=False)
    assert not isinstance(plain[0], cls)
    assert sum(p.numel() for p in plain.parameters()) <= layer.num_params + 1
    torch.testing.assert_close(plain(x), model(x), atol=1e-10, rtol=0)
    back = layer.to_conv()
    assert type(back) is type(conv)
    torch.testing.assert_close(back(x), model(x), atol=1e-10, rtol=0)


def _kwargs(conv):
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }
