"""TNConvTranspose2d: exact at full rank against nn.ConvTranspose2d over random geometries,
every plan agrees with every other, gradcheck, save/load and to_standard round trips."""

from __future__ import annotations

import os
import random

import pytest
import torch
from torch import nn

from tensornet.nn import TNConvTranspose2d, load, save, to_standard
from tensornet.nn.geometry_nd import TransposeGeometry


def _geometries(count: int, seed: int):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        k = (rng.randint(1, 3), rng.randint(1, 3))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        d = (rng.randint(1, 2), rng.randint(1, 2))
        p = (rng.randint(0, 1), rng.randint(0, 1))
        op = tuple(rng.randint(0, max(si, di) - 1) for si, di in zip(s, d))
        out.append(
            {"kernel_size": k, "stride": s, "padding": p, "output_padding": op, "dilation": d}
        )
    return out


def _every_plan(layer, x):
    outs = {}
    for row in layer.plan_info(tuple(x.shape)).rows:
        layer.plan = row["name"]
        outs[row["name"]] = layer(x)
    layer.plan = "auto"
    return outs


@pytest.mark.parametrize("args", _geometries(10, seed=5))
@pytest.mark.parametrize("fmt", ["tucker2", "tt", "tucker"])
def test_full_rank_equals_torch_under_every_plan(args, fmt):
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(3, 4, dtype=torch.float64, **args)
    layer = TNConvTranspose2d.from_conv(up, fmt, ranks=10**6)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    outs = _every_plan(layer, x)
    assert "dense" in outs and any(n.startswith("staged") for n in outs)
    for name, y in outs.items():
        torch.testing.assert_close(y, up(x), atol=1e-8, rtol=0, msg=name)
    assert layer.structure.legs == ("in", "out", "kh", "kw")
    torch.testing.assert_close(layer.weight, up.weight, atol=1e-10, rtol=0)


def test_cp_plans_agree_with_the_rebuilt_kernel_and_stage_channels():
    torch.manual_seed(1)
    layer = TNConvTranspose2d(6, 5, 3, stride=2, format="cp", ranks=3, dtype=torch.float64)
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    ref = layer.to_conv()(x)
    outs = _every_plan(layer, x)
    assert len(outs) >= 3
    for name, y in outs.items():
        torch.testing.assert_close(y, ref, atol=1e-10, rtol=0, msg=name)
    info = layer.plan_info((2, 6, 4, 4))
    staged = next(r for r in info.rows if r["name"] == "staged[in=A0 conv=A2,A3 out=A1]")
    assert "1x1 6->3" in staged["steps"] and "(groups 3)" in staged["steps"]


def test_gradcheck_through_the_staged_plan():
    torch.manual_seed(2)
    layer = TNConvTranspose2d(
        3, 2, 2, stride=2, format="tucker2", ranks=(2, 2), dtype=torch.float64, plan="staged"
    )
    x = torch.randn(1, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    names = list(layer.factors)
    factors = [layer.factors[n].detach().clone().requires_grad_() for n in names]

    def f(x, *tensors):
        state = {f"factors.{n}": t for n, t in zip(names, tensors)}
        return torch.func.functional_call(layer, state, (x,))

    assert torch.autograd.gradcheck(f, (x, *factors))


def test_geometry_and_bad_arguments():
    g = TransposeGeometry.from_conv_args((3, 3), stride=2, padding=1, output_padding=1)
    assert g.output_size((4, 5)) == (8, 10)
    with pytest.raises(ValueError, match="output_padding"):
        TransposeGeometry.from_conv_args((3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="gives the output size"):
        TransposeGeometry.from_conv_args((1, 1), padding=2).output_size((2, 2))
    with pytest.raises(ValueError, match="padding_mode must be 'zeros'"):
        TNConvTranspose2d(2, 2, 3, padding_mode="reflect", format="tt", ranks=2)
    with pytest.raises(ValueError, match="padding must be ints"):
        TNConvTranspose2d(2, 2, 3, padding="same", format="tt", ranks=2)
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        TNConvTranspose2d.from_conv(nn.ConvTranspose2d(2, 2, 3, groups=2), "tt", ranks=2)
    layer = TNConvTranspose2d(2, 3, 3, format="tt", ranks=2, dtype=torch.float64)
    assert layer(torch.zeros(0, 2, 4, 4, dtype=torch.float64)).shape == (0, 3, 6, 6)
    x = torch.randn(2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer(x.unsqueeze(0)).squeeze(0))
    assert "output_padding" not in repr(layer)
    wide = TNConvTranspose2d(2, 3, 3, stride=2, output_padding=1, format="tt", ranks=2)
    assert "output_padding=(1, 1)" in repr(wide)


def test_save_load_and_to_standard_round_trips(tmp_path):
    torch.manual_seed(3)
    up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, dtype=torch.float64)
    model = nn.Sequential(TNConvTranspose2d.from_conv(up, "tucker2", ranks=(2, 2)))
    path = os.fspath(tmp_path / "m.safetensors")
    save(model, path)
    fresh = nn.Sequential(
        nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, dtype=torch.float64)
    )
    load(fresh, path)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    assert type(fresh[0]) is TNConvTranspose2d and torch.equal(fresh(x), model(x))
    other = nn.Sequential(nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, dtype=torch.float64))
    with pytest.raises(ValueError, match="field 'output_padding' is \\[1, 1\\]"):
        load(other, path)
    plain = to_standard(model, (2, 4, 5, 5), fallback="chain", measure=False)
    assert not any(isinstance(m, TNConvTranspose2d) for m in plain.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in plain.modules())
    assert sum(p.numel() for p in plain.parameters()) <= model[0].num_params
    torch.testing.assert_close(plain(x), model(x), atol=1e-10, rtol=0)
    back = model[0].to_conv()
    assert type(back) is nn.ConvTranspose2d and back.output_padding == (1, 1)
    torch.testing.assert_close(back(x), model(x), atol=1e-10, rtol=0)
