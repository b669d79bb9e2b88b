"""allocate: true errors, budgets on the plan that runs, group counts, argument checks."""

import math
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

import models.vgg as vgg
from models import build_model
from tensornet.nn import TNConv2d, TNLinear, allocate, compress, cost
from tensornet.nn.alloc_layer import GroupedLayer, Pricer, layer_seconds
from tensornet.nn.compress import layer_inputs

F64 = torch.float64


def _train(model, epochs=1):
    from studies.common.data import load_digits
    from studies.common.training import train

    train(model, load_digits(seed=0, limit=256), epochs=epochs, lr=3e-3, batch_size=32,
          progress=False)  # fmt: skip
    return model.eval().double()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _train(build_model("resnet20", 1, 10, 8))


@pytest.fixture(scope="module")
def vgg16():
    """VGG-16 at an eighth of its width (8 ... 64 channels), trained briefly on digits."""
    small = tuple(c if c == "M" else c // 8 for c in vgg.CONFIG)
    torch.manual_seed(0)
    with mock.patch.object(vgg, "CONFIG", small):
        model = build_model("vgg16", 1, 10, 8)
    return _train(model)


def dense_errors(w, w2):
    """Relative spectral and Frobenius errors of ``w2`` against ``w`` (float64, matricised)."""
    a, d = w.double().reshape(w.shape[0], -1), (w - w2).double().reshape(w.shape[0], -1)
    spectral = torch.linalg.matrix_norm(d, 2) / torch.linalg.matrix_norm(a, 2)
    return float(spectral), float(d.norm() / a.norm())


def grouped_truncation(w, j, k):
    """Each of the ``k`` input-channel groups of ``w`` truncated to rank ``j`` (numpy SVDs)."""
    f, c = w.shape[:2]
    out = w.detach().double().numpy().copy()
    step = c // k
    for g in range(k):
        block = out[:, g * step : (g + 1) * step].reshape(f, -1)
        u, s, vt = np.linalg.svd(block, full_matrices=False)
        kept = (u[:, :j] * s[:j]) @ vt[:j]
        out[:, g * step : (g + 1) * step] = kept.reshape(out[:, g * step : (g + 1) * step].shape)
    return torch.from_numpy(out)


def check_reported_errors(model, alloc):
    """Every reported error equals the one recomputed from the compressed layer's kernel."""
    small, _ = compress(model, allocation=alloc)
    compressed = 0
    for name, c in alloc.layers.items():
        layer = small.get_submodule(name)
        if c.format == "dense":
            assert not isinstance(layer, (TNConv2d, TNLinear))
            assert c.spectral_error == c.frobenius_error == c.error == 0.0
            continue
        compressed += 1
        assert isinstance(layer, (TNConv2d, TNLinear)) and layer.ranks == c.ranks
        w = model.get_submodule(name).weight.detach()
        spectral, frob = dense_errors(w, layer.weight.detach())
        assert c.spectral_error == pytest.approx(spectral, abs=1e-6), name
        assert c.frobenius_error == pytest.approx(frob, abs=1e-6), name
        assert 0 < c.spectral_error <= 1 and 0 < c.frobenius_error <= 1
    assert compressed > 0
    return small


# -- true errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 8, 3, 3), (12, 4, 1, 1), (20, 12, 2, 1), (9, 6)])
def test_spectral_and_frobenius_errors_equal_the_dense_ones_for_every_j_and_k(shape):
    """Random kernels, every (j, k): both Gram sides of the tail, convs and a linear weight."""
    torch.manual_seed(sum(shape))
    module = (
        nn.Linear(shape[1], shape[0], dtype=F64)
        if len(shape) == 2
        else nn.Conv2d(shape[1], shape[0], shape[2:], dtype=F64)
    )
    w = module.weight.detach()
    ks = [k for k in range(1, shape[1] + 1) if shape[1] % k == 0]
    for objective in ("true", "proxy"):
        layer = GroupedLayer("x", module, ks, "params", objective, None)
        for k in ks:
            m = layer.max_rank(k)
            assert m == min(shape[0], shape[1] // k * math.prod(shape[2:]))
            for j in range(0, m + 2):
                spectral, frob = dense_errors(w, grouped_truncation(w, j, k))
                assert layer.spectral(j, k) == pytest.approx(spectral, abs=1e-10), (k, j)
                assert layer.frob[k][min(j, m)] == pytest.approx(frob, abs=1e-10), (k, j)
                # the proxy is a lower bound, sqrt(sum_g s_(j+1)^2) an upper bound
                assert layer.proxy[k][min(j, m)] <= spectral + 1e-12
                assert spectral <= layer.upper[k][min(j, m)] + 1e-12
                want = spectral if objective == "true" else layer.proxy[k][min(j, m)]
                assert layer.curve(j, k) == pytest.approx(want, abs=1e-10)
        if objective == "true":
            assert layer.evaluations > 0
    # the bounds differ, so the proxy really is the proxy
    assert any(layer.proxy[k][1] < layer.upper[k][1] - 1e-6 for k in ks if k > 1)


@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_rank_for_is_the_smallest_rank_meeting_the_threshold(objective):
    torch.manual_seed(5)
    module = nn.Conv2d(8, 16, 3, dtype=F64)
    full = GroupedLayer("x", module, [1, 2, 4, 8], "params", objective, None)
    for k in full.ks:
        curve = [full.curve(j, k) for j in range(full.max_rank(k) + 1)]
        assert all(a >= b - 1e-15 for a, b in zip(curve, curve[1:]))  # monotone in j
        for eps in sorted(set(curve)) + [0.5 * (curve[1] + curve[2]), 2.0]:
            want = next(j for j in range(1, len(curve)) if curve[j] <= eps)
            assert full.rank_for(eps, k) == want, (k, eps)  # every value known
            fresh = GroupedLayer("x", module, [1, k], "params", objective, None)
            assert fresh.rank_for(eps, k) == want, (k, eps)  # found by bisection
            if objective == "true" and k > 1:
                assert fresh.evaluations < len(curve) - 1 or len(curve) <= 4


def test_reported_errors_match_the_compressed_model_for_every_method(resnet):
    for method, error in (("uniform", "true"), ("energy", "true"), ("alds", "true"),
                          ("alds", "proxy")):  # fmt: skip
        alloc = allocate(resnet, 0.4, method, error=error, seeds=1, iterations=2)
        assert alloc.error == error
        check_reported_errors(resnet, alloc)
        objective = [c.error for c in alloc.layers.values()]
        assert alloc.max_error == max(objective)
        assert alloc.max_spectral_error == max(c.spectral_error for c in alloc.layers.values())
        assert alloc.max_frobenius_error == max(c.frobenius_error for c in alloc.layers.values())
        if error == "true":
            assert objective == [c.spectral_error for c in alloc.layers.values()]
        if method != "alds":
            assert {c.groups for c in alloc.layers.values()} == {1}
    # the proxy underrates grouped layers: it is below the true error there
    grouped = [c for c in alloc.layers.values() if c.groups > 1]
    assert grouped and all(c.error <= c.spectral_error + 1e-12 for c in grouped)
    assert any(c.error < c.spectral_error - 1e-3 for c in grouped)


def test_grouped_choices_are_never_worse_than_one_svd_at_the_same_parameters(resnet):
    for fraction in (0.25, 0.5):
        alloc = allocate(resnet, fraction, "alds", seeds=1, iterations=2)
        assert any(c.groups > 1 for c in alloc.layers.values())
        for name, c in alloc.layers.items():
            if c.format == "dense":
                continue
            w = resnet.get_submodule(name).weight.detach()
            f = w.shape[0]
            j1 = c.params // (f + w[0].numel())  # k = 1 at no more parameters
            s = torch.linalg.svdvals(w.reshape(f, -1))
            k1 = float(s[j1] / s[0]) if j1 < len(s) else 0.0
            assert c.spectral_error <= k1 + 1e-12, (name, c.groups, c.ranks)


@pytest.mark.parametrize("name", ["resnet", "vgg16"])
def test_alds_largest_true_error_is_no_higher_than_uniform(name, request):
    model = request.getfixturevalue(name)
    for fraction in (0.4,):
        uniform = allocate(model, fraction, "uniform")
        alds = allocate(model, fraction, "alds", seeds=1, iterations=2)
        total = sum(p.numel() for p in model.parameters())
        assert alds.total_params <= fraction * total and uniform.total_params <= fraction * total
        assert alds.max_spectral_error <= uniform.max_spectral_error + 1e-12, fraction
        assert alds.max_error == alds.max_spectral_error
        assert alds.max_error < uniform.max_error - 1e-3  # and the search does better


# -- budgets on the plan that runs ------------------------------------------------------------
def running_flops(model, alloc, x):
    """FLOPs of the compressed model's conv/linear layers, from compress's report."""
    small, report = compress(model, allocation=alloc, example_input=x)
    shapes = layer_inputs(model, x, [r.name for r in report.layers])
    for r in report.layers:
        c = alloc.layers[r.name]
        assert (r.flops_after, r.plan, r.flops_before) == (c.flops, c.plan, c.dense_flops)
        layer = small.get_submodule(r.name)
        shape = shapes[r.name]
        info = layer.plan_info(shape if r.kind == "conv" else (math.prod(shape[:-1]), shape[-1]))
        row = next(row for row in info.rows if row["name"] == info.chosen)
        assert c.seconds == pytest.approx(row["seconds"], rel=1e-12)
    kept = alloc.model_flops - sum(r.flops_before for r in report.layers)
    return kept + sum(r.flops_after for r in report.layers), report


def test_flop_budget_is_met_by_the_plans_that_run(resnet):
    x = torch.randn(64, 1, 8, 8, dtype=F64)
    for fraction in (0.5,):
        alloc = allocate(resnet, fraction, "alds", measure="flops", example_input=x, seeds=0,
                         iterations=1)  # fmt: skip
        total, report = running_flops(resnet, alloc, x)
        assert total == alloc.total_flops == alloc.total
        assert 0.9 * fraction * alloc.model_flops <= total <= fraction * alloc.model_flops
        assert alloc.budget == fraction * alloc.model_flops
        assert report.layers and all(r.plan != "dense" for r in report.layers)
        assert all(r.flops_after < r.flops_before for r in report.layers)
        dense = [c for c in alloc.layers.values() if c.format == "dense"]
        # layers whose best plan would be the dense one stay dense (and count as dense)
        assert dense and all(c.flops == c.dense_flops and c.plan is None for c in dense)
        rows = {line.split()[0]: line.split() for line in str(alloc).splitlines()[1:-1]}
        assert all(rows[c.name][6] == "-" and rows[c.name][2] == "-" for c in dense)
    # by parameters, the grouped layers mostly run their dense plan: more FLOPs than dense
    by_params = allocate(resnet, 0.4, "alds", example_input=x, seeds=0, iterations=1)
    total, report = running_flops(resnet, by_params, x)
    assert any(r.plan == "dense" for r in report.layers)
    assert total == by_params.total_flops and total > 0.4 * by_params.model_flops


def test_time_budget_uses_the_cost_models_estimate(resnet):
    x = torch.randn(8, 1, 32, 32, dtype=F64)
    alloc = allocate(resnet, 0.7, "alds", measure="time", example_input=x, seeds=0, iterations=1)
    running_flops(resnet, alloc, x)  # each layer's seconds are its plan's estimate
    names = [n for n, m in resnet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    shapes = layer_inputs(resnet, x, names)
    whole = sum(layer_seconds(resnet.get_submodule(n), shapes[n]) for n in names)
    assert alloc.model_seconds == pytest.approx(whole, rel=1e-12)
    after = alloc.model_seconds + sum(c.seconds - c.dense_seconds for c in alloc.layers.values())
    assert (
        alloc.total_seconds == pytest.approx(after, rel=1e-12)
        and alloc.total == alloc.total_seconds
    )
    assert alloc.total_seconds <= 0.7 * alloc.model_seconds
    assert any(c.format == "grouped" for c in alloc.layers.values())
    last = str(alloc).splitlines()[-1]
    assert last.startswith(
        f"alds (time, error=true): total {alloc.total_seconds * 1e3:.3f} ms of budget "
        f"{alloc.budget * 1e3:.3f} ms; max error {alloc.max_error:.4f}"
    )
    with pytest.raises(ValueError, match="fraction in"):
        allocate(resnet, 2, measure="time", example_input=x)


def test_dense_seconds_price_one_conv_step():
    table = cost.costs_for("cpu")
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    # (2, 8, 9, 9) -> (2, 16, 5, 5): 2 * 2 * 16 * 72 * 25 FLOPs
    flops, elements = 2 * 2 * 16 * 72 * 25, 2 * (8 * 81 + 16 * 25)
    want = table.step_time("conv", flops, 4 * elements, 2)
    assert layer_seconds(conv, (2, 8, 9, 9)) == pytest.approx(want, rel=1e-12)
    lin = nn.Linear(12, 5)
    want = table.step_time("matmul", 2 * 6 * 12 * 5, 4 * 6 * 17, 0)  # as a linear dense plan
    assert layer_seconds(lin, (2, 3, 12)) == pytest.approx(want, rel=1e-12)
    depthwise = nn.Conv2d(8, 8, 3, groups=8)
    want = table.step_time("depthwise", 2 * 2 * 8 * 9 * 49, 4 * 2 * (8 * 81 + 8 * 49), 2)
    assert layer_seconds(depthwise, (2, 8, 9, 9)) == pytest.approx(want, rel=1e-12)
    wide = nn.Conv2d(8, 8, 5, groups=8)  # a 5x5 depthwise conv is no shift: a grouped conv
    want = table.step_time("grouped", 2 * 2 * 8 * 25 * 25, 4 * 2 * (8 * 81 + 8 * 25), 2)
    assert layer_seconds(wide, (2, 8, 9, 9)) == pytest.approx(want, rel=1e-12)
    grouped = nn.Conv2d(8, 16, 3, groups=2)
    want = table.step_time("grouped", 2 * 2 * 16 * 36 * 49, 4 * 2 * (8 * 81 + 16 * 49), 2)
    assert layer_seconds(grouped, (2, 8, 9, 9)) == pytest.approx(want, rel=1e-12)


# -- argument checks, spectra, progress, printing ---------------------------------------------
def tiny():
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 16, 3), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 12), nn.Linear(12, 4),
    )  # fmt: skip


def test_budgets_of_every_number_type_give_the_same_allocation():
    net = tiny()
    want = allocate(net, 0.4, "uniform")
    for b in (np.float32(0.4), np.float64(0.4), torch.tensor(0.4, dtype=F64)):
        got = allocate(net, b, "uniform")
        assert got.layers == want.layers and got.budget == pytest.approx(want.budget, rel=1e-6)
    count = int(0.4 * sum(p.numel() for p in net.parameters()))
    for b in (count, np.int64(count), torch.tensor(count)):
        got = allocate(net, b, "uniform")
        assert got.budget == count and got.layers == want.layers
    for bad in (float("inf"), float("nan"), -np.inf, 0, -1, "half", True, np.bool_(True), None,
                torch.tensor([0.4]), torch.tensor(True), 0.4 + 0j, torch.tensor(0.4j)):  # fmt: skip
        with pytest.raises(ValueError, match="budget must be a finite fraction"):
            allocate(net, bad)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"iterations": -1}, ValueError, "allocate: iterations must be >= 0, got -1"),
        ({"iterations": 1.5}, TypeError, "allocate: iterations must be an int"),
        ({"seeds": -3}, ValueError, "allocate: seeds must be >= 0, got -3"),
        ({"seeds": True}, TypeError, "allocate: seeds must be an int"),
        ({"seed": -1}, ValueError, "allocate: seed must be >= 0"),
        ({"max_groups": 0}, ValueError, "allocate: max_groups must be >= 1, got 0"),
        ({"method": "greedy"}, ValueError, "method must be one of .'uniform', 'energy', 'alds'"),
        ({"method": None}, ValueError, "allocate: method must be one of"),
        ({"measure": "bytes"}, ValueError, "measure must be one of .'params', 'flops', 'time'"),
        ({"error": "bound"}, ValueError, "allocate: error must be one of .'true', 'proxy'"),
        ({"progress": "yes"}, TypeError, "allocate: progress must be a bool or None, got 'yes'"),
        ({"measure": "flops"}, ValueError, "measure='flops' needs example_input"),
        ({"measure": "time"}, ValueError, "measure='time' needs example_input"),
        ({"budget": 0.01}, ValueError, r"allocate: the budget \(\d.* parameters\) is below"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(kwargs, err, match):
    kwargs = {"budget": 0.5, **kwargs}
    with pytest.raises(err, match=match):
        allocate(tiny(), **kwargs)


def test_accepted_edge_arguments():
    net = tiny()
    whole = allocate(net, 1, "uniform")  # 1 is the whole model, not one parameter
    assert whole.budget == sum(p.numel() for p in net.parameters())
    assert all(c.format == "dense" for c in whole.layers.values())
    x = torch.randn(2, 3, 10, 10)
    timed = allocate(net, 1.0, "uniform", "time", example_input=x)
    assert timed.budget == timed.model_seconds and timed.total_seconds <= timed.model_seconds
    alloc = allocate(net, 0.5, "alds", iterations=0, seeds=0, max_groups=1, seed=0)
    assert {c.groups for c in alloc.layers.values()} == {1}
    assert len(alloc.history) == 5  # the five fixed starts, all k = 1 here
    two = allocate(net, 0.5, "alds", iterations=np.int64(1), seeds=torch.tensor(1), max_groups=2)
    assert {c.groups for c in two.layers.values()} <= {1, 2} and len(two.history) == 6
    unused = nn.ModuleDict({"a": nn.Conv2d(3, 8, 3), "b": nn.Conv2d(8, 8, 3)})
    unused.forward = lambda x: unused["a"](x)
    with pytest.raises(ValueError, match=r"allocate: layers \['b'\] did not run on example_input"):
        allocate(unused, 0.9, measure="flops", skip=(), example_input=torch.randn(2, 3, 10, 10))


def test_uniform_and_energy_compute_only_single_group_spectra():
    net = tiny()
    calls = []
    real_svdvals, real_svd = torch.linalg.svdvals, torch.linalg.svd

    def svdvals(a, *args, **kw):
        calls.append(("svdvals", tuple(a.shape)))
        return real_svdvals(a, *args, **kw)

    def svd(a, *args, **kw):
        calls.append(("svd", tuple(a.shape)))
        return real_svd(a, *args, **kw)

    with (
        mock.patch.object(torch.linalg, "svdvals", svdvals),
        mock.patch.object(torch.linalg, "svd", svd),
    ):
        for method in ("uniform", "energy"):
            calls.clear()
            allocate(net, 0.5, method)
            assert calls == [("svdvals", (1, 16, 72)), ("svdvals", (1, 16, 144)),
                             ("svdvals", (1, 12, 256))]  # fmt: skip
        calls.clear()
        allocate(net, 0.5, "alds", error="proxy", seeds=0, iterations=0, max_groups=2)
        assert [c for c in calls if c[0] == "svdvals"] == [
            ("svdvals", (1, 16, 72)), ("svdvals", (2, 16, 36)), ("svdvals", (1, 16, 144)),
            ("svdvals", (2, 16, 72)), ("svdvals", (1, 12, 256)), ("svdvals", (2, 12, 128)),
        ]  # fmt: skip


def test_progress_bars_only_when_asked(capsys):
    net = tiny()
    allocate(net, 0.5, "alds", seeds=0, iterations=0, progress=False)
    assert capsys.readouterr().err == ""
    allocate(net, 0.5, "alds", seeds=0, iterations=0, progress=True)
    err = capsys.readouterr().err
    assert "allocate: spectra" in err and "allocate: alds starts" in err
    allocate(net, 0.5, "uniform", progress=None)  # not a terminal: quiet
    assert capsys.readouterr().err == ""


def test_allocation_prints_true_errors_and_running_plans():
    net = tiny()
    alloc = allocate(net, 0.5, "alds", seeds=0, iterations=1)
    text = str(alloc)
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "k", "j", "params", "spectral", "frob"]
    for line, c in zip(lines[1:], alloc.layers.values()):
        j = str(c.ranks[0]) if c.ranks else "-"
        assert line.split() == [c.name, str(c.groups), j, f"{c.params:,}",
                                f"{c.spectral_error:.4f}", f"{c.frobenius_error:.4f}"]  # fmt: skip
    assert lines[-1] == (
        f"alds (params, error=true): total {alloc.total_params:,} of budget "
        f"{alloc.budget:,.0f}; max error {alloc.max_error:.4f} (true spectral "
        f"{alloc.max_spectral_error:.4f}, Frobenius {alloc.max_frobenius_error:.4f})"
    )
    torch.manual_seed(0)
    wide = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 48, 3, padding=1),
        nn.Conv2d(48, 48, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 4),
    )  # fmt: skip
    x = torch.randn(8, 3, 16, 16)
    timed = allocate(wide, 0.5, "alds", "flops", example_input=x, seeds=0, iterations=1)
    lines = str(timed).splitlines()
    assert lines[0].split() == ["layer", "k", "j", "params", "MFLOP", "ms", "plan", "spectral",
                                "frob"]  # fmt: skip
    for line, c in zip(lines[1:], timed.layers.values()):
        parts = line.split()
        assert parts[4:7] == [
            f"{c.flops / 1e6:.2f}",
            f"{c.seconds * 1e3:.3f}",
            (c.plan or "-")[:12],
        ]
    assert f"total {timed.total_flops:,} of budget" in lines[-1]
    assert timed.total == timed.total_flops


def test_costs_rank_search_and_dense_rule_on_priced_layers():
    """is_dense, cost and largest_rank of priced layers against brute force over j."""

    torch.manual_seed(4)
    cases = [
        (nn.Conv2d(32, 48, 3, padding=1), (16, 32, 16, 16), [1, 2, 4, 8]),
        (nn.Linear(128, 256), (4, 4, 128), [1, 2]),
    ]
    for module, shape, ks in cases:
        for measure in ("flops", "time"):
            pricer = Pricer(module, shape)
            layer = GroupedLayer("x", module, ks, measure, "true", pricer)
            dense = pricer.dense_flops if measure == "flops" else pricer.dense_seconds
            assert layer.dense_cost() == dense
            for k in ks:
                seen_compressed = False
                for j in range(1, layer.max_rank(k) + 1):
                    plan, flops, seconds = pricer.price(j, k)
                    value = flops if measure == "flops" else seconds
                    want = layer.params(j, k) >= layer.dense or plan == "dense" or value >= dense
                    assert layer.is_dense(j, k) == want
                    assert layer.cost(j, k) == (dense if want else value)
                    seen_compressed |= not want
                if k == 1 and (measure == "flops" or isinstance(module, nn.Conv2d)):
                    assert seen_compressed, (type(module).__name__, measure)
                for cap in (0.0, 0.3 * dense, 0.6 * dense, 0.999 * dense):
                    fits = [
                        j for j in range(1, layer.max_rank(k) + 1)
                        if not layer.is_dense(j, k) and layer.cost(j, k) <= cap
                    ]  # fmt: skip
                    assert layer.largest_rank(k, cap) == (max(fits) if fits else None), (k, cap)
    # the one-factor structure prices the plain layer: no kernel to rebuild
    conv, shape = cases[0][0], cases[0][1]
    assert Pricer(conv, shape).dense_flops == 2 * 16 * 48 * 32 * 9 * 256
    params = GroupedLayer("x", conv, [1, 2], "params", "true", None)
    for j in range(1, 20):
        per = 48 + 32 * 9
        assert params.cost(j, 1) == min(j * per, conv.weight.numel())
        assert params.largest_rank(1, j * per) == (j if j * per < conv.weight.numel() else None)
        assert params.largest_rank(1, j * per - 1) == (j - 1 if j > 1 else None)


def test_linear_layers_are_priced_by_their_plans():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                        nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 4))  # fmt: skip
    x = torch.randn(64, 64)
    alloc = allocate(net, 0.6, "uniform", "flops", example_input=x)
    total, report = running_flops(net, alloc, x)
    assert total == alloc.total_flops <= 0.6 * alloc.model_flops
    assert [r.plan for r in report.layers] == ["direct", "direct"]
    assert alloc.model_flops == 2 * 64 * (64 * 512 + 2 * 512 * 512 + 512 * 4)


def test_zero_and_rank_deficient_kernels():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3),
                        nn.Conv2d(8, 2, 1))  # fmt: skip
    with torch.no_grad():
        net[1].weight.zero_()
        net[2].weight.copy_(torch.randn(8, 1, 1, 1) * torch.randn(1, 8, 3, 3))  # rank 1
    for method in ("uniform", "energy", "alds"):
        alloc = allocate(net, 0.5, method)
        for name in ("1", "2"):
            c = alloc.layers[name]
            assert c.error == c.spectral_error < 1e-7 and c.frobenius_error < 1e-7
        assert alloc.layers["1"].format == "grouped"
        if method != "uniform":  # nothing to gain above rank 1 (uniform keeps its ratio)
            assert alloc.layers["1"].ranks == (1,)
    layer = GroupedLayer("x", net[1], [1, 2], "params", "true", None)
    assert layer.norm2 == layer.normf == 1.0 and list(layer.energy) == [1.0] * 8


def test_infeasible_flop_budget_explains_dense_plans():
    x = torch.randn(2, 3, 10, 10)
    with pytest.raises(ValueError, match=r"budget \(.* FLOPs\) is below .* counts as dense"):
        allocate(tiny(), 0.5, measure="flops", example_input=x)
    with pytest.raises(ValueError, match=r"budget \(.* seconds\) is below .* counts as dense"):
        allocate(tiny(), 0.5, measure="time", example_input=x)
