"""allocate(method="auto"): candidates, frontiers, the global choice and its application."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import tensornet.nn as tnn
from tensornet.formats import get_format
from tensornet.nn import alloc_auto, alloc_candidates
from tensornet.nn.alloc_auto import LayerFrontier, choose, layer_frontier, thinned
from tensornet.nn.alloc_candidates import Candidate, family_frontiers, weight_candidates
from tensornet.nn.allocate import allocate

from .test_frontier import _brute

F = C = 16  # the hand-built kernels: 16 x 16 x 3 x 3 (2304 parameters dense)


def _rn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _known(kind: str) -> tuple[torch.Tensor, int]:
    """A kernel that is exactly in one format, and that format's parameter count."""
    g = torch.Generator().manual_seed(1)
    if kind == "tucker2":  # ranks (2, 2): 16*2 + 16*2 + 2*2*9
        w = torch.einsum("abkl,oa,ib->oikl", _rn(g, 2, 2, 3, 3), _rn(g, F, 2), _rn(g, C, 2))
        return w, 100
    if kind == "cp":  # rank 3: 3 * (16 + 16 + 3 + 3)
        a, b, h, v = _rn(g, F, 3), _rn(g, C, 3), _rn(g, 3, 3), _rn(g, 3, 3)
        return torch.einsum("or,ir,kr,lr->oikl", a, b, h, v), 114
    if kind == "tt":  # order in kh kw out, ranks (2, 2, 2): 32 + 12 + 12 + 32
        g0, g1, g2, g3 = _rn(g, C, 2), _rn(g, 2, 3, 2), _rn(g, 2, 3, 2), _rn(g, 2, F)
        return torch.einsum("ia,akb,blc,co->oikl", g0, g1, g2, g3), 88
    # grouped: 4 groups of 4 input channels, rank 2 in each: 2 * (4 * 16 + 16 * 9)
    blocks = [torch.einsum("or,rikl->oikl", _rn(g, F, 2), _rn(g, 2, 4, 3, 3)) for _ in range(4)]
    return torch.cat(blocks, 1), 416


def _one_conv(w: torch.Tensor) -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(w.shape[1], w.shape[0], 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(w)
    return net


@pytest.mark.parametrize("kind", ["tucker2", "cp", "tt", "grouped"])
def test_auto_picks_the_format_a_kernel_is_exactly_in(kind):
    w, params = _known(kind)
    net = _one_conv(w.float())
    alloc = allocate(net, params, "auto", layers=["0"], skip=(), objective="max")
    choice = alloc.layers["0"]
    assert (choice.format, choice.params) == (kind, params)
    assert choice.error < 1e-5 and choice.frobenius_error < 1e-3
    assert alloc.total_params == params
    if kind == "tt":
        assert choice.options == {"order": ("in", "kh", "kw", "out")} and choice.ranks == (2, 2, 2)
    if kind == "grouped":
        assert (choice.groups, choice.ranks) == (4, (2,))
    # the other objective on the same frontier; one parameter less and nothing is exact
    frontier = alloc.frontiers["0"]
    layer = LayerFrontier("0", frontier[-1], frontier)
    for objective in ("sum", "max"):
        (pick,) = choose([layer], params, objective).picks
        assert (frontier[pick].format, frontier[pick].params) == (kind, params)
        (pick,) = choose([layer], params - 1, objective).picks
        assert frontier[pick].error > 1e-3 and frontier[pick].params < params


def test_auto_applied_by_compress_rebuilds_the_chosen_formats_and_errors():
    torch.manual_seed(0)
    w, _ = _known("tt")
    net = nn.Sequential(nn.Conv2d(16, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 8, 3))
    with torch.no_grad():
        net[2].weight.copy_(w.float())
    alloc = allocate(net, 0.5, "auto", skip=(), formats=("svd", "tucker2", "tt"))
    small, report = tnn.compress(net, allocation=alloc)
    assert report.model_params_after == alloc.total_params
    assert report.model_params_after <= alloc.budget
    by_name = {r.name: r for r in report.layers}
    for name, choice in alloc.layers.items():
        if choice.format == "dense":
            assert name not in by_name or by_name[name].kept_dense
            continue
        layer = small.get_submodule(name)
        assert layer.format == choice.format and tuple(layer.ranks) == choice.ranks
        assert by_name[name].error_fro == pytest.approx(choice.frobenius_error, abs=1e-5)
        assert choice.error == pytest.approx(choice.frobenius_error, abs=1e-4)
    # a TT kernel of edge ranks (2, 2) is a Tucker-2 kernel of ranks (2, 2) too
    assert alloc.layers["2"].format in ("tt", "tucker2") and alloc.layers["2"].error < 1e-5


# -- the global choice is optimal over the frontiers (brute force) --------------------------
def test_the_choice_of_allocate_is_optimal_over_its_frontiers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Conv2d(6, 8, 3))
    whole = sum(p.numel() for p in net.parameters())
    for objective in ("sum", "max"):
        alloc = allocate(net, 0.6, "auto", skip=(), formats=("svd",), objective=objective)
        costs = [[c.cost for c in f] for f in alloc.frontiers.values()]
        errors = [[c.error for c in f] for f in alloc.frontiers.values()]
        room = alloc.budget - (whole - sum(f[-1].params for f in alloc.frontiers.values()))
        best_max, best_sum = _brute(costs, errors, room)
        if objective == "max":
            assert alloc.score == best_max == alloc.max_error
        else:
            assert alloc.bound <= best_sum + 1e-12 <= alloc.score + 1e-12
            assert alloc.gap == pytest.approx(alloc.score - alloc.bound)
            assert alloc.score == pytest.approx(sum(c.error**2 for c in alloc.layers.values()))


# -- budgets met in every measure -------------------------------------------------------------
@pytest.mark.parametrize("measure", ["params", "flops", "time"])
@pytest.mark.parametrize("objective", ["sum", "max"])
def test_budgets_are_met_within_one_percent_in_every_measure(measure, objective):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(8, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
        nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 8, 1),
    )  # fmt: skip
    x = torch.randn(8, 8, 32, 32)
    alloc = allocate(
        net, 0.6, "auto", measure, skip=(), example_input=x, objective=objective,
        formats=("svd", "grouped", "tucker2", "tt"),
    )  # fmt: skip
    assert alloc.total <= alloc.budget
    small, report = tnn.compress(net, allocation=alloc, example_input=x, measure_time=False)
    assert report.model_params_after == alloc.total_params
    flops = alloc.model_flops - report.flops_before + report.flops_after
    assert flops == pytest.approx(alloc.total_flops, rel=1e-9)
    seconds = alloc.model_seconds + sum(
        r.seconds_after - r.seconds_before for r in report.layers
    )  # fmt: skip
    assert seconds == pytest.approx(alloc.total_seconds, rel=1e-6)
    reached = {"params": report.model_params_after, "flops": flops, "time": seconds}[measure]
    assert reached <= alloc.budget * 1.01
    assert any(c.format != "dense" for c in alloc.layers.values())


# -- frontiers of one layer -----------------------------------------------------------------
def test_family_frontiers_and_thinning():
    found = [Candidate("svd", (r,), (), 10 * r, 1.0 / r) for r in range(1, 41)]
    found.append(Candidate("svd", (41,), (), 500, 0.5))  # dominated
    kept = family_frontiers(found)
    assert [c.ranks[0] for c in kept] == list(range(1, 41))
    thin = thinned(kept, 5)
    assert [c.ranks[0] for c in thin] == [1, 11, 21, 30, 40]
    assert thinned(kept[:3], 5) == kept[:3]


def test_the_frontier_of_a_layer_prices_its_candidates_by_the_plan_they_run():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    shape = (4, 16, 16, 16)
    f = layer_frontier("c", conv, shape, "flops", ("svd", "tucker2"))
    assert f.dense.cost == tnn.dense_flops(conv, shape)
    for c in f.frontier:
        again = alloc_auto.price(conv, shape, c)
        assert c.cost == again.flops and c.plan == again.plan
    costs, errors = f.costs, f.errors
    assert all(a < b for a, b in zip(costs, costs[1:]))
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert all(c.plan for c in f.frontier if c.format != "dense")


# -- the errors hook and argument checks -------------------------------------------------------
def test_an_errors_function_replaces_the_weight_errors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    seen = []

    def errors(name, module, candidates):
        assert module is net.get_submodule(name)
        seen.append(name)
        return [0.0 if c.format in ("dense", "tucker2") else 1.0 + c.error for c in candidates]

    alloc = allocate(net, 0.7, "auto", errors=errors, formats=("svd", "tucker2"))
    assert seen == ["1"]
    choice = alloc.layers["1"]
    assert choice.format == "tucker2" and choice.error == 0.0 and choice.frobenius_error > 0
    with pytest.raises(ValueError, match="one per candidate"):
        allocate(net, 0.7, "auto", errors=lambda n, m, c: [0.0])
    with pytest.raises(ValueError, match="finite numbers"):
        allocate(net, 0.7, "auto", errors=lambda n, m, c: [math.nan] * len(c))


def test_auto_arguments_are_checked():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    bad = [
        ({"objective": "mean"}, ValueError, "objective"),
        ({"formats": ("svd", "ttmatrix")}, ValueError, "formats"),
        ({"formats": ()}, ValueError, "formats"),
        ({"formats": 3}, TypeError, "formats"),
        ({"weights": {"9": 1.0}}, ValueError, "weights"),
        ({"weights": {"1": 0.0}}, ValueError, "weights"),
        ({"weights": {"1": True}}, ValueError, "weights"),
        ({"weights": [1.0]}, TypeError, "weights"),
        ({"weights": {"1": 1.0}, "objective": "max"}, ValueError, "objective='sum'"),
        ({"errors": 3}, TypeError, "errors"),
    ]
    for kwargs, kind, match in bad:
        with pytest.raises(kind, match=match):
            allocate(net, 0.5, "auto", **kwargs)
    for kwargs in ({"objective": "sum"}, {"formats": ("svd",)}, {"weights": {}}):
        with pytest.raises(ValueError, match="method='auto' only"):
            allocate(net, 0.5, "alds", **kwargs)
    with pytest.raises(ValueError, match="below what the model needs"):
        allocate(net, 10, "auto")


def test_weights_and_formats_reach_the_choice():
    torch.manual_seed(0)
    net = nn.Sequential(*(nn.Conv2d(a, b, 3) for a, b in ((3, 8), (8, 8), (8, 8), (8, 4))))
    plain = allocate(net, 0.5, "auto", formats="svd")
    assert {c.format for c in plain.layers.values()} <= {"svd", "dense"}
    heavy = allocate(net, 0.5, "auto", formats="svd", weights={"1": 100.0})
    assert heavy.layers["1"].error < plain.layers["1"].error
    assert heavy.layers["2"].error > plain.layers["2"].error
    text = str(heavy)
    assert "objective=sum" in text and "gap" in text and "svd" in text


def test_prices_without_an_input_and_checked_formats():
    c = Candidate("svd", (2,), (), 32, 0.5)
    assert alloc_auto.price(nn.Linear(8, 8), None, c) is c
    assert alloc_auto.check_formats(None) == alloc_candidates.AUTO_FORMATS
    assert alloc_auto.check_formats(["tt", "svd", "tt"]) == ("tt", "svd")
    assert alloc_auto.check_formats("cp") == ("cp",)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    for bad in ([-1.0], [True]):
        with pytest.raises(ValueError, match="finite numbers"):
            allocate(net, 0.7, "auto", errors=lambda n, m, c, bad=bad: bad * len(c))


def test_unnamed_layers_weigh_one_and_dense_choices_have_no_error():
    def frontier(name):
        points = (
            Candidate("svd", (1,), (), 10, 0.5, cost=10.0),
            Candidate("dense", (), (), 20, 0.0, cost=20.0),
        )
        return LayerFrontier(name, points[1], points)

    layers = [frontier("a"), frontier("b")]
    assert choose(layers, 30.0, "sum", {"a": 1.5}).picks == (1, 0)
    assert choose(layers, 30.0, "sum", {"a": 0.5}).picks == (0, 1)
    conv = nn.Conv2d(3, 4, 3)
    assert alloc_auto.chosen_errors(conv, Candidate("dense", (), (), 108, 0.0)) == (0.0, 0.0)
    frob, spectral = alloc_auto.chosen_errors(
        conv, Candidate("svd", (1,), (("left", ("out",)),), 31, 0.5)
    )
    assert 0 < frob < 1 and 0 < spectral < 1


def test_layer_frontier_passes_max_groups_and_defaults_as_allocate():
    import inspect

    layer = nn.Linear(16, 16)
    f = layer_frontier("fc", layer, None, "params", ("grouped",), max_groups=2)
    assert {dict(c.options).get("channel_groups") for c in f.frontier} <= {None, 2}
    default = inspect.signature(layer_frontier).parameters["max_groups"].default
    assert default == inspect.signature(allocate).parameters["max_groups"].default


def test_prices_are_the_cost_models_choice_on_the_layers_device():
    from tensornet.nn import cost, measure

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    shape = (4, 16, 16, 16)
    for c in weight_candidates(conv, ("cp", "tucker2", "tt"))[1:]:
        priced = alloc_auto.price(conv, shape, c)
        s = get_format(c.format).structure_for(
            conv.weight.shape, c.ranks, legs=("out", "in", "kh", "kw"), **dict(c.options)
        )
        best = cost.choose(measure.candidates(conv, s, shape, "cpu"), "cpu", 4)
        assert (priced.plan, priced.flops) == (best.name, best.flops)
        assert priced.seconds == best.cost["seconds"]


# -- several budgets from one set of candidates ------------------------------------------------
def _four_convs() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(4, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
        nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 8, 1),
    )  # fmt: skip


@pytest.mark.parametrize("measure", ["params", "flops"])
def test_reuse_chooses_as_a_fresh_allocation_at_each_budget(measure):
    net, x = _four_convs(), torch.randn(2, 4, 32, 32)
    kw = {"skip": (), "example_input": x, "formats": ("svd", "tucker2", "cp")}
    first = allocate(net, 0.8, "auto", measure, **kw)
    assert sorted(first.dense) == sorted(first.layers)
    assert all(first.dense[n].format == "dense" for n in first.dense)
    for budget, objective in ((0.6, "sum"), (0.5, "max"), (0.8, "sum")):
        fresh = allocate(net, budget, "auto", measure, objective=objective, **kw)
        again = allocate(
            net, budget, "auto", measure, skip=(), example_input=x, objective=objective,
            reuse=first,
        )  # fmt: skip
        assert again.budget == fresh.budget and again.objective == objective
        assert again.layers == fresh.layers
        assert (again.total_params, again.total_flops) == (fresh.total_params, fresh.total_flops)
        assert again.frontiers == fresh.frontiers and again.dense == fresh.dense
        assert again.score == fresh.score and again.bound == fresh.bound


def test_reuse_is_checked_before_any_work():
    net, x = _four_convs(), torch.randn(2, 4, 8, 8)
    auto = allocate(net, 0.5, "auto", skip=(), formats=("svd",))
    alds = allocate(net, 0.5, "alds", skip=())
    with pytest.raises(TypeError, match="reuse must be an Allocation of method 'auto'"):
        allocate(net, 0.4, "auto", skip=(), reuse=alds)
    with pytest.raises(TypeError, match="reuse must be an Allocation"):
        allocate(net, 0.4, "auto", skip=(), reuse=auto.frontiers)
    with pytest.raises(ValueError, match="measure='params', not 'flops'"):
        allocate(net, 0.4, "auto", "flops", skip=(), example_input=x, reuse=auto)
    with pytest.raises(ValueError, match=r"layers \['0', '1', '2', '3'\], not of the chosen"):
        allocate(net, 0.4, "auto", reuse=auto)  # skips first and last
    for key, value in (("formats", ("svd",)), ("data", x), ("errors", lambda *a: [])):
        with pytest.raises(ValueError, match=f"{key} cannot be given with reuse"):
            allocate(net, 0.4, "auto", skip=(), reuse=auto, **{key: value})
    with pytest.raises(ValueError, match="reuse apply to method='auto' only"):
        allocate(net, 0.4, "alds", skip=(), reuse=auto)
    partial = allocate(net, 0.4, "auto", skip=(), reuse=auto)
    object.__setattr__(partial, "dense", {"0": auto.dense["0"]})
    with pytest.raises(ValueError, match="holds the frontiers"):
        allocate(net, 0.4, "auto", skip=(), reuse=partial)


def test_auto_messages_history_progress_and_choice_fields(capsys):
    net, x = _four_convs(), torch.randn(2, 4, 32, 32)
    first = allocate(net, 0.5, "auto", skip=(), formats=("svd",))
    fixed = "allocate: formats, data cannot be given with reuse (the reused allocation's " \
        "candidates fixed them)"  # fmt: skip
    with pytest.raises(ValueError, match=f"^{re.escape(fixed)}$"):
        allocate(net, 0.4, "auto", skip=(), reuse=first, formats=("svd",), data=x)
    both = "allocate: give errors or data, not both (data sets the errors)"
    with pytest.raises(ValueError, match=f"^{re.escape(both)}$"):
        allocate(net, 0.4, "auto", skip=(), errors=lambda *a: [], data=x)
    only = "allocate: objective, weights apply to method='auto' only"
    with pytest.raises(ValueError, match=f"^{re.escape(only)}$"):
        allocate(net, 0.4, "alds", skip=(), objective="sum", weights={"1": 1.0})
    with pytest.raises(ValueError, match="objective must be one of"):
        allocate(net, 0.4, "auto", skip=(), objective="median")
    assert first.history == [first.score]
    capsys.readouterr()
    allocate(net, 0.5, "auto", skip=(), formats=("svd",), progress=True)
    assert re.search(r"(?<![A-Za-z])allocate: candidates:", capsys.readouterr().err)
    sum_only = "allocate: weights apply to objective='sum' only"
    with pytest.raises(ValueError, match=f"^{re.escape(sum_only)}$"):
        allocate(net, 0.4, "auto", skip=(), objective="max", weights={"1": 1.0})
    grouped = allocate(net, 0.3, "auto", "flops", skip=(), formats=("grouped",), example_input=x)
    for name, c in grouped.layers.items():
        picked = next(f for f in grouped.frontiers[name] if f.format == c.format
                      and f.ranks == c.ranks and f.options == c.format_options)  # fmt: skip
        assert c.groups == dict(picked.options).get("channel_groups", 1)
        assert c.plan == picked.plan and c.format_options == picked.options
    assert any(c.format == "grouped" and c.groups > 1 for c in grouped.layers.values())
    assert any(c.format == "dense" and c.groups == 1 for c in grouped.layers.values()) or all(
        c.format == "grouped" for c in grouped.layers.values()
    )


def test_auto_allocation_prints_formats_ranks_and_its_objective():
    net, x = _four_convs(), torch.randn(2, 4, 32, 32)
    alloc = allocate(net, 0.5, "auto", skip=(), formats=("svd", "tt"))
    lines = str(alloc).splitlines()
    assert lines[0].split() == ["layer", "format", "ranks", "params", "spectral", "frob"]
    for line, c in zip(lines[1:], alloc.layers.values()):
        assert line.split() == [c.name, c.label[:20], ",".join(map(str, c.ranks)) or "-",
                                f"{c.params:,}", f"{c.spectral_error:.4f}",
                                f"{c.frobenius_error:.4f}"]  # fmt: skip
    assert lines[-1] == (
        f"auto (params, objective=sum): total {alloc.total_params:,} of budget "
        f"{alloc.budget:,.0f}; max error {alloc.max_error:.4f} (true spectral "
        f"{alloc.max_spectral_error:.4f}, Frobenius {alloc.max_frobenius_error:.4f}); "
        f"objective {alloc.score:.4g}, gap {alloc.gap:.3g}"
    )
    timed = allocate(net, 0.7, "auto", "time", skip=(), formats=("svd",), example_input=x)
    last = str(timed).splitlines()[-1]
    assert f"total {timed.total * 1e3:.3f} ms of budget {timed.budget * 1e3:.3f} ms" in last
    assert timed.total == timed.total_seconds and alloc.total == alloc.total_params
    assert str(timed).splitlines()[0].split()[4:7] == ["MFLOP", "ms", "plan"]
    many = allocate(net, 0.9, "auto", skip=(), formats=("ht",))  # several ranks, comma-joined
    shown = {c.name: c for c in many.layers.values() if c.format == "ht"}
    assert shown
    for line in str(many).splitlines()[1:-1]:
        name, label, ranks = line.split()[:3]
        if name in shown:
            full = ",".join(map(str, shown[name].ranks))
            assert (label, ranks) == ("ht", full[:14])
