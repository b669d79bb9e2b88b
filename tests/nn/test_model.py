"""Model level: compress, allocate, to_standard, save/load, truncate_kernel, select_layers."""

import copy

import pytest
import torch
from torch import nn

from models import build_model
from tensornet.nn import (
    NoMatchingLayer,
    TNConv2d,
    TNLinear,
    allocate,
    compress,
    load,
    save,
    select_layers,
    to_standard,
    truncate_kernel,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_model("resnet20", 3, 10, 32).eval()


def small_cnn():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 24),
        nn.ReLU(),
        nn.Linear(24, 5),
    )


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_compress_resnet20_report_and_original_untouched(resnet):
    before = copy.deepcopy(resnet)
    x = torch.randn(2, 3, 32, 32)
    small, report = compress(resnet, "tucker2", fraction=0.25, example_input=x)
    assert same_state(resnet, before) and not any(isinstance(m, TNConv2d) for m in resnet.modules())
    names = select_layers(resnet, None, ("first", "last"))
    assert [r.name for r in report.layers] == names and len(names) == 18  # 19 convs + fc
    for r in report.layers:
        assert r.params_after < r.params_before
        # FLOPs are those of the plan the cost model chose: a factorized plan does fewer; the
        # rebuild-then-conv plan (cheapest for tiny inputs) does the dense conv plus the rebuild
        if r.plan == "dense":
            assert r.flops_after > r.flops_before
        else:
            assert r.flops_after < r.flops_before
        assert isinstance(small.get_submodule(r.name), TNConv2d)
    assert report.model_params_after == sum(p.numel() for p in small.parameters())
    assert report.model_params_after < 0.35 * report.model_params_before
    assert small(x).shape == (2, 10)
    text = str(report)
    assert "model:" in text and names[0] in text


def test_compressed_resnet20_trains(resnet):
    torch.manual_seed(2)
    small, _ = compress(resnet, "tt", fraction=0.25)
    small.train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.Adam(small.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(small(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_mixed_formats_and_inplace():
    net = small_cnn()
    x = torch.randn(2, 3, 8, 8)
    fmt = {
        "conv": "tt",
        "7": ("ttmatrix", {"out_dims": (4, 6), "in_dims": (12, 12)}),
        "linear": "svd",
    }  # first match wins
    out, report = compress(net, fmt, skip=("first",), fraction=0.5, inplace=True)
    assert out is net
    kinds = {r.name: (r.kind, r.format) for r in report.layers}
    assert kinds == {
        "2": ("conv", "tt"),
        "4": ("conv", "tt"),
        "7": ("linear", "ttmatrix"),
        "9": ("linear", "svd"),
    }
    assert isinstance(net[7], TNLinear) and net(x).shape == (2, 5)


def test_failed_compress_leaves_the_model_unchanged():
    net = small_cnn()
    before = copy.deepcopy(net)
    with pytest.raises(ValueError, match="fraction too small"):
        compress(net, "ttmatrix", fraction=0.001, skip=(), inplace=True)
    assert same_state(net, before) and all(
        not isinstance(m, (TNConv2d, TNLinear)) for m in net.modules()
    )
    with pytest.raises(NoMatchingLayer, match="no conv/linear layer matches"):
        compress(net, "tt", layers="encoder.*", fraction=0.5)
    with pytest.raises(ValueError, match="unknown format"):
        compress(net, "tensor-train", fraction=0.5)
    with pytest.raises(ValueError, match="ranks must be positive"):
        compress(net, "tt", ranks=0)
    with pytest.raises(ValueError, match="fraction must be in"):
        compress(net, "tt", fraction=1.5)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(net, "tt")
    other = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ConvTranspose3d(8, 8, 3), nn.Conv2d(8, 4, 3))
    assert select_layers(other) == ["0", "2"]  # default selection leaves ConvTranspose3d alone
    with pytest.raises(ValueError, match="ConvTranspose3d is not supported"):
        compress(other, "tt", layers="1", fraction=0.5)
    assert same_state(net, before)


def test_allocations_meet_the_budget_and_alds_has_the_smallest_max_error(resnet):
    total = sum(p.numel() for p in resnet.parameters())
    results = {}
    for method in ("uniform", "energy", "alds"):
        alloc = allocate(resnet, 0.4, method, seeds=2)
        assert 0.99 * 0.4 * total <= alloc.total_params <= 0.4 * total, method
        results[method] = alloc
    assert results["alds"].max_error <= results["uniform"].max_error
    assert results["alds"].max_error <= results["energy"].max_error
    assert any(c.groups > 1 for c in results["alds"].layers.values())
    # applying the allocation gives exactly the predicted parameter count
    small, report = compress(resnet, allocation=results["alds"])
    assert sum(p.numel() for p in small.parameters()) == results["alds"].total_params
    assert {r.format for r in report.layers} <= {"grouped"}


def test_flop_budget(resnet):
    x = torch.randn(1, 3, 32, 32)
    alloc = allocate(resnet, 0.5, "alds", measure="flops", example_input=x, seeds=1)
    assert 0.99 * 0.5 * alloc.model_flops <= alloc.total_flops <= 0.5 * alloc.model_flops
    with pytest.raises(ValueError, match="example_input"):
        allocate(resnet, 0.5, measure="flops")
    for bad in (0, -1, "half"):
        with pytest.raises(ValueError, match="budget"):
            allocate(resnet, bad)
    with pytest.raises(ValueError, match="method"):
        allocate(resnet, 0.5, "greedy")
    with pytest.raises(ValueError, match="is below what the model needs"):
        allocate(resnet, 0.01)


def test_to_standard_same_outputs_and_exports(resnet):
    small, _ = compress(resnet.double(), {"conv": "tucker2"}, fraction=0.3)
    resnet.float()
    small.eval()
    plain = to_standard(small, input_shape=(2, 3, 32, 32), fallback="chain")
    assert not any(isinstance(m, (TNConv2d, TNLinear)) for m in plain.modules())
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    torch.testing.assert_close(plain(x), small(x), rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in plain.parameters()) <= sum(p.numel() for p in small.parameters())
    exported = torch.export.export(plain, (x,))
    torch.testing.assert_close(exported.module()(x), small(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", ["cp", "tt", "grouped", "svd"])
def test_to_standard_per_format(fmt):
    opts = {"channel_groups": 2} if fmt == "grouped" else {}
    layer = TNConv2d(
        8,
        6,
        3,
        stride=2,
        padding=1,
        padding_mode="reflect",
        format=fmt,
        fraction=0.4,
        dtype=F64,
        **opts,
    )
    plain = to_standard(nn.Sequential(layer), fallback="chain")
    x = torch.randn(2, 8, 9, 9, dtype=F64)
    torch.testing.assert_close(plain(x), layer(x), rtol=1e-10, atol=1e-10)
    assert len(plain[0]) > 1


def test_save_load_round_trip_is_exact(tmp_path, resnet):
    small, _ = compress(resnet, {"conv": "tt", "linear": "svd"}, fraction=0.3, skip=("first",))
    path = tmp_path / "small.safetensors"
    save(small, path, metadata={"note": "test"})
    torch.manual_seed(9)
    fresh = build_model("resnet20", 3, 10, 32).eval()
    assert load(fresh, path) == {"note": "test"}
    assert same_state(fresh, small)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), small.eval()(x))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves nothing behind
    with pytest.raises(ValueError, match="no module"):
        load(nn.Sequential(nn.Conv2d(3, 3, 1)), path)


def test_truncate_kernel_is_eckart_young_along_one_cut():
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 10, 3, dtype=F64)
    small, res = truncate_kernel(conv, ["out"], 3)
    s = torch.linalg.svdvals(conv.weight.detach().reshape(10, -1))
    assert res.error == pytest.approx(float(s[3:].norm() / s.norm()), rel=1e-10)
    assert torch.linalg.matrix_rank(small.weight.detach().reshape(10, -1)) == 3
    assert not torch.equal(conv.weight, small.weight)  # a copy by default
    two, res2 = truncate_kernel(conv, [["out"], ["out", "in"]], [3, 5])
    assert res2.ranks == (3, 5) and len(res2.spectra) == 2
    assert res2.error >= res.error - 1e-12
    assert res2.norm_kept == pytest.approx(float(two.weight.norm() / conv.weight.norm()))
    with pytest.raises(ValueError, match="2 chi values for 1 cuts"):
        truncate_kernel(conv, ["out"], [2, 3])


def test_alds_min_max_error_against_brute_force():
    """ALDS on two compressible layers, against an exhaustive search over (j, k) per layer.

    With error="proxy", the error of every choice is recomputed here from numpy SVDs (EYM:
    ``max_g sigma_(j+1)(W_g) / ||W||_2``); ALDS's maximum layer error must be at most the best
    single-group (k = 1) allocation's (the global step is exact for fixed k, and the best
    iterate is kept) and at least the best over all (j, k).
    """
    import itertools

    import numpy as np

    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 8, 3), nn.Conv2d(8, 12, 3), nn.Conv2d(12, 8, 3), nn.Conv2d(8, 2, 1)
    )
    layers = ["1", "2"]
    weights = {n: net.get_submodule(n).weight.detach().double().numpy() for n in layers}
    fixed = sum(p.numel() for p in net.parameters()) - sum(w.size for w in weights.values())

    def options(w):
        f, c = w.shape[:2]
        rest = int(np.prod(w.shape[2:]))
        norm = np.linalg.norm(w.reshape(f, -1), 2)
        out = [(w.size, 0.0, 1)]  # dense
        for k in [k for k in range(1, c + 1) if c % k == 0]:
            groups = w.reshape(f, k, c // k, rest).transpose(1, 0, 2, 3).reshape(k, f, -1)
            s = np.stack([np.linalg.svd(g, compute_uv=False) for g in groups])
            for j in range(1, s.shape[1] + 1):
                params = j * (k * f + c * rest)
                if params < w.size:
                    err = s[:, j].max() / norm if j < s.shape[1] else 0.0
                    out.append((params, float(err), k))
        return out

    opts = [options(weights[n]) for n in layers]
    total = sum(p.numel() for p in net.parameters())
    for fraction in (0.3, 0.5, 0.7):
        budget = fraction * total - fixed
        feasible = [c for c in itertools.product(*opts) if sum(o[0] for o in c) <= budget]
        best_any = min(max(o[1] for o in c) for c in feasible)
        best_k1 = min(max(o[1] for o in c) for c in feasible if all(o[2] == 1 for o in c))
        alloc = allocate(net, fraction, "alds", skip=("first", "last"), error="proxy")
        assert set(alloc.layers) == set(layers)
        assert best_any - 1e-12 <= alloc.max_error <= best_k1 + 1e-12, fraction
        for name, choice in alloc.layers.items():  # the reported error is the EYM quantity
            match = [o for o in options(weights[name]) if o[0] == choice.params]
            if choice.format == "dense":
                assert choice.error == 0.0
            else:
                assert any(abs(o[1] - choice.error) < 1e-9 and o[2] == choice.groups for o in match)
        assert min(alloc.history) == pytest.approx(alloc.max_error)
