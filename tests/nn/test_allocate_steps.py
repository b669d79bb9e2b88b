"""allocate's pieces: grouped costs priced from the structure, the searches, the steps."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from tensornet.formats import get_format
from tensornet.formats.grouped import grouped_params
from tensornet.nn import alloc_search
from tensornet.nn.alloc_layer import GroupedLayer
from tensornet.nn.alloc_search import _fill, _global, _local, _max_error, _total

F64 = torch.float64


def layer_of(shape):
    torch.manual_seed(sum(shape))
    if len(shape) == 2:
        return nn.Linear(shape[1], shape[0], dtype=F64)
    return nn.Conv2d(shape[1], shape[0], shape[2:], dtype=F64)


@pytest.mark.parametrize("shape", [(24, 12, 3, 3), (16, 8, 1, 1), (10, 6), (8, 4, 2, 3)])
def test_alds_prices_grouped_layers_by_the_structure_count(shape):
    """ALDS's own count ``j (k f + c k1 k2)`` equals the grouped format's for every (k, j)."""
    module = layer_of(shape)
    f, c, rest = shape[0], shape[1], math.prod(shape[2:])
    ks = [k for k in range(1, c + 1) if c % k == 0]
    layer = GroupedLayer("x", module, ks, "params", "true", None)
    legs = ("out", "in", "kh", "kw")[: len(shape)]
    grouped = get_format("grouped")
    for k in ks:
        top = layer.max_rank(k)
        for j in sorted({1, min(2, top), top // 2 or 1, top}):
            formula = j * (k * f + c * rest)
            built = grouped.from_dense(module.weight.detach(), ranks=j, channel_groups=k, legs=legs)
            assert layer.params(j, k) == formula == built.num_params, (k, j)
            assert formula == grouped_params(shape, k, j)
            dense = f * c * rest
            assert layer.is_dense(j, k) == (formula >= dense), (k, j)
            assert layer.cost(j, k) == min(formula, dense), (k, j)


# -- the searches against brute force and plain reimplementations ----------------------------
def three_layers(objective="true"):
    """Small layers with several group counts each: W (8, 6), (6, 4, 2, 2), (7, 5)."""
    modules = [layer_of((8, 6)), layer_of((6, 4, 2, 2)), layer_of((7, 5))]
    out = []
    for i, m in enumerate(modules):
        c = m.weight.shape[1]
        ks = [k for k in range(1, c + 1) if c % k == 0]
        out.append(GroupedLayer(f"l{i}", m, ks, "params", objective, None))
    return out


def brute_min_max(layers, ks, budget):
    """The least largest error of any ranks within budget at fixed group counts."""
    best = None
    for js in itertools.product(*(range(1, s.max_rank(k) + 1) for s, k in zip(layers, ks))):
        if _total(layers, js, ks) <= budget:
            err = max(s.error(j, k) for s, j, k in zip(layers, js, ks))
            best = err if best is None else min(best, err)
    return best


def naive_fill(layers, js, ks, budget, by_error):
    """One rank at a time: on the largest error (or round-robin), dropping what cannot grow."""
    js, alive = list(js), list(range(len(layers)))
    spent = _total(layers, js, ks)
    while alive:
        if by_error:
            i = min(alive, key=lambda i: (-layers[i].error(js[i], ks[i]), i))
            order = [i]
        else:
            order = list(alive)
        for i in order:
            s, j, k = layers[i], js[i], ks[i]
            step = s.cost(j + 1, k) - s.cost(j, k)
            if s.is_dense(j, k) or s.error(j, k) == 0.0 or spent + step > budget:
                alive.remove(i)
            else:
                js[i], spent = j + 1, spent + step
    return js


@pytest.mark.parametrize("objective", ["true", "proxy"])
@pytest.mark.parametrize("ks", [(1, 1, 1), (2, 2, 5), (3, 4, 1)])
def test_global_step_reaches_the_brute_force_min_max(objective, ks):
    layers = three_layers(objective)
    ks = list(ks)
    ones = _total(layers, [1, 1, 1], ks)
    assert _global(layers, ks, ones - 1) is None
    assert _global(layers, ks, ones) == [1, 1, 1]
    zero = [s.rank_for(0.0, k) for s, k in zip(layers, ks)]
    full = _total(layers, zero, ks)
    assert _global(layers, ks, full) == zero and _max_error(layers, zero, ks) == 0.0
    for frac in (0.15, 0.3, 0.45, 0.6, 0.8):
        budget = ones + frac * (full - ones)
        js = _global(layers, ks, budget)
        assert _total(layers, js, ks) <= budget
        assert _max_error(layers, js, ks) == pytest.approx(brute_min_max(layers, ks, budget))
        assert js == naive_fill(layers, js, ks, budget, by_error=True)  # nothing left to add


def test_bisection_stops_when_the_ranks_differ_by_one(monkeypatch):
    layers = three_layers()
    ks = [1, 1, 1]
    calls = []
    real = GroupedLayer.rank_for
    monkeypatch.setattr(
        GroupedLayer, "rank_for", lambda self, eps, k: calls.append(eps) or real(self, eps, k)
    )
    ones = _total(layers, [1, 1, 1], ks)
    full = _total(layers, [s.max_rank(1) for s in layers], ks)
    _global(layers, ks, 0.5 * (ones + full))
    assert len(calls) <= 3 * 12  # 7 steps here; float resolution would take some 60


@pytest.mark.parametrize("by_error", [True, False])
def test_fill_spends_one_rank_at_a_time(by_error):
    layers = three_layers()
    for ks in ([1, 1, 1], [2, 4, 5]):
        ones = _total(layers, [1, 1, 1], ks)
        for extra in (0, 7, 40, 90, 150, 10_000):
            got = _fill(layers, [1, 1, 1], ks, ones + extra, by_error)
            assert got == naive_fill(layers, [1, 1, 1], ks, ones + extra, by_error), (ks, extra)


def ratio_reference(layers, budget, ranks_at, breaks):
    """Largest grid parameter whose ranks fit, then the round-robin fill."""
    ones = [1] * len(layers)
    fits = [t for t in breaks if _total(layers, ranks_at(t), ones) <= budget]
    return naive_fill(layers, ranks_at(max(fits)), ones, budget, by_error=False)


@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_uniform_and_energy_against_a_grid_search(objective):
    # maximal ranks 12, 3 and 6: a rank ratio is not one more rank in every layer
    layers = [
        GroupedLayer(f"l{i}", layer_of(shape), [1], "params", objective, None)
        for i, shape in enumerate([(16, 12), (3, 8), (10, 6, 1, 1)])
    ]
    ones = [1] * 3
    low = _total(layers, ones, ones)
    dense = sum(s.dense for s in layers)

    def uniform_at(t):
        return [max(1, round(t * s.max_rank(1))) for s in layers]

    def energy_at(t):
        return [max(1, int(np.searchsorted(s.energy, t - 1e-15)) + 1) for s in layers]

    # just below and at every point where some layer's ranks change
    cuts = sorted({(r - 0.5) / s.max_rank(1) for s in layers for r in range(1, 13)})
    cuts += [float(e) for s in layers for e in s.energy]
    grid = sorted({min(max(t + d, 0.0), 1.0) for t in cuts for d in (-1e-9, 0.0, 1e-9)} | {0, 1})
    budgets = [low + frac * (dense - low) for frac in (0.0, 0.2, 0.5, 0.8, 1.0, 1.5)]
    budgets += [_total(layers, uniform_at(t), ones) for t in (0.3, 0.55, 0.75, 1.0)]
    budgets += [_total(layers, energy_at(t), ones) for t in (0.5, 0.9, 0.99)]
    for budget in budgets:
        js, ks, history = alloc_search.uniform(layers, budget)
        assert (ks, history) == ([1, 1, 1], [])
        assert js == ratio_reference(layers, budget, uniform_at, grid), budget
        js, ks, _ = alloc_search.energy(layers, budget)
        assert js == ratio_reference(layers, budget, energy_at, grid), budget


def brute_local(layer, j, k):
    """At no more than the cost of (j, k): the least error of the largest fitting rank per k."""
    best = (layer.error(j, k), k, j)
    if layer.is_dense(j, k):
        return best
    cap = layer.cost(j, k)
    for k2 in layer.ks:
        fits = [
            j2
            for j2 in range(1, layer.max_rank(k2) + 1)
            if not layer.is_dense(j2, k2) and layer.cost(j2, k2) <= cap
        ]
        if fits:
            best = min(best, (layer.error(fits[-1], k2), k2, fits[-1]))
    return best


@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_local_step_takes_the_best_group_count_at_each_cost(objective):
    layers = three_layers(objective)
    for js, ks in (([1, 1, 1], [1, 1, 1]), ([3, 2, 2], [2, 4, 5]), ([5, 5, 4], [1, 1, 1])):
        got_js, got_ks = _local(layers, js, ks)
        for s, j, k, j2, k2 in zip(layers, js, ks, got_js, got_ks):
            assert (s.error(j2, k2), k2, j2) == brute_local(s, j, k), (s.name, j, k)
            assert s.cost(j2, k2) <= s.cost(j, k) and s.error(j2, k2) <= s.error(j, k)


def reference_alds(layers, budget, iterations, seeds, seed):
    """ALDS written plainly: every start, its alternations, the best kept, then the last steps."""
    rng = np.random.default_rng(seed)
    starts = [[min(s.ks, key=lambda k: (abs(k - t), k)) for s in layers] for t in (1, 3, 5, 7, 9)]
    starts += [[int(rng.choice(s.ks)) for s in layers] for _ in range(seeds)]
    best, history = None, []
    for ks in starts:
        js = _global(layers, ks, budget)
        if js is None:
            continue
        here = (_max_error(layers, js, ks), js, ks)
        for _ in range(iterations):
            ks2 = _local(layers, js, ks)[1]
            js2 = _global(layers, ks2, budget)
            if js2 is None:
                break
            js, ks = js2, ks2
            if _max_error(layers, js, ks) < here[0]:
                here = (_max_error(layers, js, ks), js, ks)
        history.append(here[0])
        best = here if best is None or here[0] < best[0] else best
    js, ks = _local(layers, best[1], best[2])
    js, ks = _local(layers, _fill(layers, js, ks, budget), ks)
    return js, ks, history


@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_alds_against_a_plain_reimplementation(objective):
    layers = three_layers(objective)
    ones = _total(layers, [1, 1, 1], [1, 1, 1])
    dense = sum(s.dense for s in layers)
    for frac, iterations, seeds, seed in ((0.2, 4, 2, 0), (0.4, 0, 0, 1), (0.6, 2, 5, 3)):
        budget = ones + frac * (dense - ones)
        got = alloc_search.alds(
            layers, budget, iterations=iterations, seeds=seeds, seed=seed, show=False
        )
        assert got == reference_alds(layers, budget, iterations, seeds, seed), frac
        js, ks, history = got
        assert len(history) <= 5 + seeds and (frac < 0.5 or len(history) == 5 + seeds)
        assert _total(layers, js, ks) <= budget
        assert _max_error(layers, js, ks) <= min(history) + 1e-12
        assert _local(layers, js, ks) == (js, ks)  # every group count the best at its cost


def test_alds_skips_starts_that_do_not_fit():
    """A start whose group counts cannot meet the budget at rank 1 is left out of the history."""
    layers = three_layers()
    budget = _total(layers, [1, 1, 1], [1, 1, 1])  # only k = 1 everywhere fits at rank 1
    assert _total(layers, [1, 1, 1], [2, 2, 5]) > budget
    js, ks, history = alloc_search.alds(layers, budget, iterations=2, seeds=3, seed=0, show=False)
    assert (js, ks) == ([1, 1, 1], [1, 1, 1])
    assert len(history) < 8 and history == reference_alds(layers, budget, 2, 3, 0)[2]


# -- one layer's spectra and curves --------------------------------------------------------
@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_layer_norms_energy_and_when_spectra_are_computed(objective):
    module = layer_of((6, 4, 2, 2))
    w = module.weight.detach().reshape(6, -1).numpy()
    layer = GroupedLayer("x", module, [1, 2, 4], "params", objective, None)
    s = np.linalg.svd(w, compute_uv=False)
    assert layer.norm2 == pytest.approx(s[0], rel=1e-12)
    assert layer.normf == pytest.approx(np.linalg.norm(w), rel=1e-12)
    np.testing.assert_allclose(layer.energy, np.cumsum(s**2) / np.sum(s**2), rtol=1e-12)
    assert (layer.f, layer.c, layer.rest, layer.dense) == (6, 4, 4, 96)
    assert sorted(layer.u) == ([2, 4] if objective == "true" else [])
    np.testing.assert_allclose(layer.s[1][0], s, rtol=1e-12)
    before = layer.evaluations
    assert layer.spectral(3, 1) == pytest.approx(s[3] / s[0], rel=1e-12)  # k = 1: from s
    assert layer.spectral(layer.max_rank(2), 2) == 0.0
    assert layer.evaluations == before
    first = layer.spectral(1, 2)
    assert layer.evaluations == before + 1 and 2 in layer.u  # vectors on demand
    assert layer.spectral(1, 2) == first and layer.evaluations == before + 1  # cached
    assert [layer.nearest_k(t) for t in (1, 2, 3, 5, 9)] == [1, 2, 2, 4, 4]


def test_a_zero_kernel_has_unit_norms_and_flat_energy():
    module = layer_of((4, 4))
    with torch.no_grad():
        module.weight.zero_()
    layer = GroupedLayer("z", module, [1, 2], "params", "true", None)
    assert (layer.norm2, layer.normf) == (1.0, 1.0)
    assert list(layer.energy) == [1.0] * 4
    assert layer.spectral(1, 2) == 0.0 and layer.frob[2][1] == 0.0


def test_local_step_prefers_fewer_groups_at_equal_error():
    """A zero kernel has error 0 everywhere: the tie goes to the smallest group count."""
    module = layer_of((8, 8))
    with torch.no_grad():
        module.weight.zero_()
    layer = GroupedLayer("z", module, [1, 2, 4], "params", "true", None)
    js, ks = _local([layer], [1], [4])
    assert ks == [1] and js == [layer.largest_rank(1, layer.cost(1, 4))]
    assert layer.error(js[0], 1) == 0.0


def test_rank_for_with_some_true_errors_already_known():
    """The known values narrow the bisection; the answer is the brute-force smallest rank."""
    module = layer_of((12, 8, 3, 3))
    full = GroupedLayer("x", module, [1, 2, 4], "params", "true", None)
    for k in (2, 4):
        curve = [full.spectral(j, k) for j in range(full.max_rank(k) + 1)]
        for known in ([3], [1, 6], [2, 4, 7], [5]):
            for eps in sorted(set(curve))[1:-1] + [0.5 * (curve[2] + curve[3]), 0.0, 2.0]:
                layer = GroupedLayer("x", module, [1, k], "params", "true", None)
                for j in known:
                    layer.spectral(j, k)
                want = next(j for j in range(1, len(curve)) if curve[j] <= eps)
                assert layer.rank_for(eps, k) == want, (k, known, eps)


def test_alds_starts_and_progress_on_layers_with_many_group_counts(monkeypatch):
    """Group counts 1..24: the starts near 5, 7 and 9 groups are 4, 6 and 6 (12) or 8 (24)."""
    first, second = layer_of((16, 24)), layer_of((10, 12, 1, 1))
    with torch.no_grad():  # a decaying spectrum: the second layer has the larger errors
        first.weight.mul_(torch.logspace(0, -3, 24, dtype=F64))
    layers = [
        GroupedLayer("l0", first, [1, 2, 3, 4, 6, 8, 12, 24], "params", "true", None),
        GroupedLayer("l1", second, [1, 2, 3, 4, 6, 12], "params", "true", None),
    ]
    assert [[s.nearest_k(t) for s in layers] for t in (1, 3, 5, 7, 9)] == [
        [1, 1], [3, 3], [4, 4], [6, 6], [8, 6]
    ]  # fmt: skip
    shown = []
    real = alloc_search.progress
    monkeypatch.setattr(
        alloc_search, "progress", lambda items, show, desc: shown.append((show, desc)) or items
    )
    ones = _total(layers, [1, 1], [1, 1])
    dense = sum(s.dense for s in layers)
    for frac in (0.1, 0.25, 0.4, 0.5, 0.7):
        budget = ones + frac * (dense - ones)
        for iterations in (0, 1, 3):
            got = alloc_search.alds(
                layers, budget, iterations=iterations, seeds=2, seed=7, show=True
            )
            assert got == reference_alds(layers, budget, iterations, 2, 7), (frac, iterations)
    assert set(shown) == {(True, "allocate: alds starts")}
    assert list(real([1, 2], False, "x")) == [1, 2]


def test_local_step_on_larger_layers_moves_to_better_group_counts():
    shapes_ks = [
        ((16, 24), [1, 2, 3, 4, 6, 8, 12, 24]),
        ((12, 8, 3, 3), [1, 2, 4, 8]),
        ((10, 12, 1, 1), [1, 2, 3, 4, 6, 12]),
    ]
    layers = [
        GroupedLayer(f"l{i}", layer_of(shape), ks, "params", "true", None)
        for i, (shape, ks) in enumerate(shapes_ks)
    ]
    moved = 0
    for js, ks in (([2, 3, 2], [4, 2, 3]), ([4, 1, 3], [2, 8, 2]), ([1, 6, 1], [6, 1, 12])):
        got_js, got_ks = _local(layers, js, ks)
        for s, j, k, j2, k2 in zip(layers, js, ks, got_js, got_ks):
            assert (s.error(j2, k2), k2, j2) == brute_local(s, j, k), (s.name, j, k)
            moved += (j2, k2) != (j, k)
    assert moved >= 2


def test_progress_bars_and_single_group_methods():
    bar = alloc_search.progress([1, 2], True, "here")
    assert (bar.disable, bar.desc, bar.leave) == (False, "here", False) and list(bar) == [1, 2]
    assert alloc_search.progress([1], False, "here").disable
    layers = three_layers()
    budget = 2 * _total(layers, [1, 1, 1], [1, 1, 1])
    for search in (alloc_search.uniform, alloc_search.energy):
        assert search(layers, budget)[1:] == ([1, 1, 1], [])
    assert alloc_search.SEARCHES == {
        "uniform": alloc_search.uniform,
        "energy": alloc_search.energy,
        "alds": alloc_search.alds,
    }


def larger_layers(objective="true"):
    return [
        GroupedLayer(f"l{i}", layer_of(shape), ks, "params", objective, None)
        for i, (shape, ks) in enumerate(
            [((16, 24), [1, 2, 4]), ((12, 8, 3, 3), [1, 2]), ((10, 12, 1, 1), [1, 3])]
        )
    ]


@pytest.mark.parametrize("objective", ["true", "proxy"])
def test_global_step_is_the_filled_ranks_of_the_least_common_threshold(objective):
    """Exactly: the smallest threshold whose ranks fit (from every curve value), then filled."""
    layers = larger_layers(objective)
    for ks in ([1, 1, 1], [2, 2, 3], [4, 1, 1]):

        def ranks(eps, ks=ks):
            return [s.rank_for(eps, k) for s, k in zip(layers, ks)]

        values = sorted(
            {0.0} | {s.curve(j, k) for s, k in zip(layers, ks) for j in range(1, s.max_rank(k))}
        )
        ones, full = _total(layers, [1, 1, 1], ks), _total(layers, ranks(0.0), ks)
        budgets = [ones + f * (full - ones) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
        budgets += [_total(layers, ranks(e), ks) for e in values[1::7]]
        for budget in budgets:
            least = min(e for e in values if _total(layers, ranks(e), ks) <= budget)
            want = naive_fill(layers, ranks(least), ks, budget, by_error=True)
            assert _global(layers, ks, budget) == want, (ks, budget)


@pytest.mark.parametrize("by_error", [True, False])
def test_fill_on_larger_layers_and_a_zero_kernel(by_error):
    layers = larger_layers()
    zero = layer_of((8, 8))
    with torch.no_grad():
        zero.weight.zero_()
    layers.append(GroupedLayer("z", zero, [1, 2], "params", "true", None))
    for ks in ([1, 1, 1, 1], [2, 2, 3, 2]):
        start = [1, 1, 1, 1]
        ones = _total(layers, start, ks)
        for extra in (30, 100, 250, 500, 900, 1500):
            got = _fill(layers, start, ks, ones + extra, by_error)
            assert got == naive_fill(layers, start, ks, ones + extra, by_error), (ks, extra)
            assert got[3] == 1  # a zero kernel has nothing to gain
