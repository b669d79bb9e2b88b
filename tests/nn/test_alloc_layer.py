"""alloc_layer: grouped costs against the layers that run them, dense seconds, the rank search."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tensornet.nn import TNConv2d, TNLinear, cost
from tensornet.nn.alloc_layer import GroupedLayer, Pricer, layer_seconds

F64 = torch.float64


def running(layer, shape):
    info = layer.plan_info(shape)
    row = next(r for r in info.rows if r["name"] == info.chosen)
    return info.chosen, row["flops"], row["seconds"]


@pytest.mark.parametrize(
    "module, shape, pairs",
    [
        (nn.Conv2d(8, 12, 3, padding=1), (16, 8, 32, 32), [(1, 1), (3, 1), (2, 2), (1, 8), (2, 4)]),
        (nn.Conv2d(8, 12, 3, padding=1), (2, 8, 10, 10), [(1, 8), (2, 2)]),
        (nn.Conv2d(6, 6, 3), (4, 6, 12, 12), [(1, 6), (1, 3), (4, 1)]),
        (nn.Linear(32, 48), (4, 3, 32), [(1, 1), (4, 2), (2, 8)]),
    ],
)
def test_pricer_prices_the_plan_the_grouped_layer_runs(module, shape, pairs):
    """``price(j, k)`` is the running plan of the grouped layer built at ``(j, k)``."""
    torch.manual_seed(0)
    pricer = Pricer(module, shape)
    linear = isinstance(module, nn.Linear)
    for j, k in pairs:
        if linear:
            layer = TNLinear.from_linear(module, "grouped", ranks=j, channel_groups=k)
            want = running(layer, (math.prod(shape[:-1]), shape[-1]))
        else:
            layer = TNConv2d.from_conv(module, "grouped", ranks=j, channel_groups=k)
            want = running(layer, shape)
        assert pricer.price(j, k) == want, (j, k)
        assert pricer.price(j, k) is pricer.price(j, k)  # cached


def test_layer_seconds_prices_grouped_and_depthwise_convs():
    table = cost.costs_for("cpu")
    shape = (2, 6, 9, 9)

    def want(kind, module, rows, cols):
        out = module.out_channels
        flops = 2 * 2 * out * module.weight[0].numel() * rows * cols
        return table.step_time(kind, flops, 4 * 2 * (6 * 81 + out * rows * cols), 2)

    cases = [
        (nn.Conv2d(6, 6, 3, groups=6), "depthwise", 7, 7),
        (nn.Conv2d(6, 6, (1, 9), groups=6), "depthwise", 9, 1),  # 9 taps: still a shift
        (nn.Conv2d(6, 6, (2, 5), groups=6), "grouped", 8, 5),  # 10 taps: a grouped conv
        (nn.Conv2d(6, 12, 3, groups=6), "grouped", 7, 7),  # one input, two outputs per group
        (nn.Conv2d(6, 6, 3, groups=3), "grouped", 7, 7),  # two inputs per group
        (nn.Conv2d(6, 6, 3, groups=6, padding=1, padding_mode="circular"), "depthwise", 9, 9),
    ]
    for module, kind, rows, cols in cases:
        got = layer_seconds(module, shape)
        assert got == pytest.approx(want(kind, module, rows, cols), rel=1e-12), module


def expected_search(layer, curve, known, eps, k):
    """rank_for's answer and evaluations: bracket by proxy and upper bound, by the known true
    errors, then a plain bisection that evaluates each unknown rank once."""
    m = layer.max_rank(k)
    lo = max(1, int(np.sum(layer.proxy[k][:-1] > eps)))
    hi = max(1, int(np.sum(layer.upper[k][:-1] > eps)))
    inside = [j for j in sorted(known) if lo <= j < hi]
    below = [j for j in inside if curve[j] <= eps]
    if below:
        hi = below[0]
    above = [j for j in inside if j < hi and curve[j] > eps]
    if above:
        lo = above[-1] + 1
    seen, evaluations = set(known) | {m}, 0
    while lo < hi:
        mid = (lo + hi) // 2
        evaluations += mid not in seen
        seen.add(mid)
        if curve[mid] <= eps:
            hi = mid
        else:
            lo = mid + 1
    return lo, evaluations


def test_rank_for_evaluates_only_inside_the_narrowed_bracket():
    torch.manual_seed(5)
    # random groups have alike spectra: the proxy and the upper bound bracket several ranks
    module = nn.Conv2d(8, 24, 3, dtype=F64)
    full = GroupedLayer("x", module, [1, 2, 4], "params", "true", None)
    widths = []
    for k in (2, 4):
        m = full.max_rank(k)
        curve = [full.spectral(j, k) for j in range(m + 1)]
        mids = [0.5 * (a + b) for a, b in zip(curve[1:], curve[2:])]
        for e in mids:
            widths.append(np.sum(full.upper[k][:-1] > e) - np.sum(full.proxy[k][:-1] > e))
        for known in ([], [3], [1, 6], [2, 4, 7], [5, 9], [4, 8, 12], list(range(1, m, 3))):
            bounds = set(full.upper[k][1:-1]) | set(full.proxy[k][1:-1])  # ties with brackets
            for eps in sorted(set(curve[1:-1]) | set(mids) | bounds | {0.0, 2.0}):
                layer = GroupedLayer("x", module, [1, k], "params", "true", None)
                for j in known:
                    layer.spectral(j, k)
                before = layer.evaluations
                got = layer.rank_for(eps, k)
                want, evaluations = expected_search(layer, curve, known, eps, k)
                assert got == want == next(j for j in range(1, m + 1) if curve[j] <= eps)
                assert layer.evaluations - before == evaluations, (k, known, eps)
    assert max(widths) >= 5


def test_a_pricer_keeps_the_cost_table_it_was_made_with():
    """Dense and grouped prices of one allocation come from one table, even if it changes."""
    conv, shape = nn.Conv2d(8, 12, 3, padding=1), (16, 8, 32, 32)
    pricer = Pricer(conv, shape)
    base = cost.costs_for("cpu")
    slow = cost.DeviceCosts(
        dict(base.rate), dict(base.bandwidth), {k: 1.0 for k in base.overhead}, "test"
    )
    cost.set_costs("cpu", slow)
    try:
        got = [pricer.price(j, k) for j, k in ((1, 8), (2, 2), (3, 1))]
    finally:
        cost.set_costs("cpu", None)
    want = [Pricer(conv, shape).price(j, k) for j, k in ((1, 8), (2, 2), (3, 1))]
    assert got == want
    assert pricer.costs is base


def test_small_and_rank_one_kernels_keep_their_true_norms():
    """Norms below 1 and a rank-one kernel (exact zero singular values) are not replaced by 1."""
    torch.manual_seed(3)
    small = nn.Conv2d(4, 6, 3, dtype=F64)
    one = nn.Conv2d(4, 6, 3, dtype=F64)
    with torch.no_grad():
        small.weight.mul_(0.01)
        one.weight.zero_()
        one.weight[2] = torch.arange(36, dtype=F64).reshape(4, 3, 3) * 1e-3  # one output row
    for module in (small, one):
        w = module.weight.detach().reshape(6, -1).numpy()
        s = np.linalg.svd(w, compute_uv=False)
        layer = GroupedLayer("x", module, [1, 2], "params", "true", None)
        assert layer.evaluations == 0
        assert layer.norm2 == pytest.approx(s[0], rel=1e-12) and s[0] < 1
        assert layer.normf == pytest.approx(np.linalg.norm(w), rel=1e-12)
        np.testing.assert_allclose(layer.energy, np.cumsum(s**2) / np.sum(s**2), rtol=1e-12)
        tails = np.sqrt(np.append(np.cumsum((s**2)[::-1])[::-1], 0.0)) / np.linalg.norm(w)
        np.testing.assert_allclose(layer.frob[1], tails, rtol=1e-10, atol=1e-15)
        for k in (1, 2):  # every curve is 0 at full rank
            assert layer.proxy[k][-1] == layer.upper[k][-1] == layer.frob[k][-1] == 0.0
    assert list(GroupedLayer("x", one, [1], "params", "true", None).s[1][0][1:]) == [0.0] * 5


def test_a_dense_choice_has_no_error():
    """At ``j (f + c k1 k2) >= f c k1 k2`` the layer stays dense: error 0, though j < max rank."""
    torch.manual_seed(4)
    layer = GroupedLayer("x", nn.Conv2d(4, 8, 3, dtype=F64), [1, 2], "params", "true", None)
    assert (layer.params(6, 1), layer.params(7, 1), layer.dense) == (264, 308, 288)
    assert layer.error(6, 1) == layer.curve(6, 1) > 0 and not layer.is_dense(6, 1)
    assert layer.is_dense(7, 1) and layer.curve(7, 1) > 0 and layer.error(7, 1) == 0.0
    assert layer.cost(7, 1) == 288 and layer.cost(6, 1) == 264
