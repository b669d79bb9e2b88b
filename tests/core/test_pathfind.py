"""Fast checks of the default path choice: costs equal to opt_einsum's, the roofline estimate,
which search runs for which size and budget, and exact paths where the search is exact."""

import itertools
import math
import random
import re
import time

import opt_einsum as oe
import pytest
from opt_einsum import paths as oe_paths
from opt_einsum.testing import rand_equation

import tensornet.core.pathfind as pathfind
from tensornet.core.pathfind import DefaultOptimizer, estimate_seconds, path_costs


def network(n, seed, n_out=0):
    """A random opt_einsum network (``n`` an equation: that one, dimensions 2, 3, ...):
    (equation, shapes, inputs, output, size_dict)."""
    if isinstance(n, str):
        eq = n
        sizes = {x: 2 + k for k, x in enumerate(sorted(set(eq) - set(",->")))}
        shapes = [tuple(sizes[x] for x in legs) for legs in eq.split("->")[0].split(",")]
    else:
        eq, shapes, sizes = rand_equation(
            n, 3, n_out=n_out, d_min=2, d_max=8, seed=seed, return_size_dict=True
        )
    lhs, out = eq.split("->")
    return eq, shapes, [frozenset(x) for x in lhs.split(",")], frozenset(out), sizes


def reference_seconds(equation, shapes, sizes, path):
    """The roofline model from opt_einsum's contraction list: per step the larger of
    FLOPs / 2e10 and bytes moved (operands and result, 8 bytes each) / 3e9, plus 4 us."""
    _, info = oe.contract_path(equation, *shapes, shapes=True, optimize=list(path))
    total = 0.0
    for _, removed, step, _, _ in info.contraction_list:
        operands, result = step.split("->")
        operands = operands.split(",")
        union = set("".join(operands))
        flops = math.prod(sizes[x] for x in union) * (max(1, len(operands) - 1) + bool(removed))
        moved = 8 * sum(math.prod(sizes[x] for x in legs) for legs in (*operands, result))
        total += max(flops / 2e10, moved / 3e9) + 4e-6
    return total


PATHS = [
    (6, 0, 1, "greedy"),
    (5, 1, 2, "greedy"),
    (4, 2, 0, [(0, 1, 2), (0, 1)]),  # a three-operand step
    (5, 3, 1, [(0, 3), (1, 2, 3), (0, 1)]),
    ("abc->b", 0, 0, [(0,)]),
    ("ar,br,cr->abc", 0, 0, [(0, 1), (0, 1)]),  # a summed hyperedge on three operands
    ("ar,br,cr->abr", 0, 0, [(1, 2), (0, 1)]),
]


@pytest.mark.parametrize("n, seed, n_out, optimize", PATHS)
def test_costs_and_estimate_agree_with_opt_einsums_contraction_list(n, seed, n_out, optimize):
    """FLOPs and the largest intermediate are opt_einsum's; the run-time estimate is the
    roofline model over opt_einsum's own steps."""
    eq, shapes, inputs, output, sizes = network(n, seed, n_out)
    path, info = oe.contract_path(eq, *shapes, shapes=True, optimize=optimize)
    flops, largest = path_costs(inputs, output, sizes, path)
    assert flops == int(info.opt_cost)
    assert largest == int(info.largest_intermediate)
    seconds = estimate_seconds(inputs, output, sizes, path)
    assert seconds == pytest.approx(reference_seconds(eq, shapes, sizes, path), rel=1e-12)


def test_costs_of_three_operand_steps_and_empty_results():
    """A step joining three operands counts (3 - 1 + 1) x its size in FLOPs (compute bound
    here); an intermediate of size 0 is the largest when all are empty."""
    ins = [frozenset("ab"), frozenset("bc"), frozenset("ca")]
    sizes = dict(a=100, b=100, c=100)
    assert path_costs(ins, frozenset(), sizes, [(0, 1, 2)]) == (3 * 10**6, 1)
    expected = 3 * 10**6 / 2e10 + 4e-6  # bytes: (3e4 + 1) x 8 / 3e9 = 8e-5 s < 1.5e-4 s
    assert estimate_seconds(ins, frozenset(), sizes, [(0, 1, 2)]) == pytest.approx(expected)
    empty = dict(a=0, b=3, c=4)
    assert path_costs([frozenset("ab"), frozenset("bc")], frozenset("ac"), empty, [(0, 1)]) == (
        0, 0,
    )  # fmt: skip


def test_estimate_weighs_memory_traffic_against_flops():
    """A step that streams a big operand past a tiny one costs its bytes, not its FLOPs."""
    ins = [frozenset("ab"), frozenset("b")]
    sizes = dict(a=1000, b=1000)
    # 2e6 FLOPs = 1e-4 s; (1e6 + 1e3 + 1e3) * 8 bytes = 2.67e-3 s at 3e9 B/s
    expected = (1_000_000 + 1_000 + 1_000) * 8 / 3e9 + 4e-6
    assert estimate_seconds(ins, frozenset("a"), sizes, [(0, 1)]) == pytest.approx(expected)
    ins = [frozenset("abc"), frozenset("bcd")]
    sizes = dict(a=100, b=100, c=100, d=100)
    # 2e8 FLOPs = 1e-2 s; 2e6 elements * 8 bytes = 5.3e-3 s: compute bound
    expected = 2 * 100**4 / 2e10 + 4e-6
    assert estimate_seconds(ins, frozenset("ad"), sizes, [(0, 1)]) == pytest.approx(expected)


def brute_force_min_flops(inputs, output, sizes):
    """The fewest FLOPs over every pairwise path (small networks only)."""

    def paths(k):
        if k == 1:
            yield []
            return
        for pair in itertools.combinations(range(k), 2):
            for rest in paths(k - 1):
                yield [pair, *rest]

    return min(path_costs(inputs, output, sizes, p)[0] for p in paths(len(inputs)))


@pytest.mark.parametrize("n, seed", [(3, 0), (4, 1), (4, 5)])
def test_up_to_four_tensors_the_path_is_optimal(n, seed):
    """Three or four tensors: opt_einsum's exhaustive search, the fewest FLOPs of all paths."""
    _, _, inputs, output, sizes = network(n, seed, n_out=1)
    choice = DefaultOptimizer().search(inputs, output, sizes)
    assert choice.optimizer == "optimal" and choice.budget_seconds == 0.0
    assert choice.path == tuple(oe_paths.optimal(inputs, output, sizes))
    assert path_costs(inputs, output, sizes, choice.path)[0] == brute_force_min_flops(
        inputs, output, sizes
    )
    assert choice.estimated_seconds == estimate_seconds(inputs, output, sizes, choice.path)


def test_one_or_two_tensors_need_no_search():
    """Zero, one or two tensors: the only path, named "trivial"."""
    sizes = dict(a=2, b=3)
    for inputs, path in (([], ()), ([frozenset("ab")], ((0,),)),
                         ([frozenset("ab"), frozenset("b")], ((0, 1),))):  # fmt: skip
        choice = DefaultOptimizer().search(inputs, frozenset("a"), sizes)
        assert (choice.path, choice.optimizer, choice.budget_seconds) == (path, "trivial", 0.0)
        assert choice.estimated_seconds == estimate_seconds(inputs, frozenset("a"), sizes, path)


@pytest.mark.parametrize(
    "settings",
    [{}, {"reuse": 1e6}, {"reuse": 3.0, "fraction": 0.5}, {"reuse": 1e9, "max_seconds": 0.0009}],
)
def test_budget_is_a_share_of_the_greedy_run_time_capped(settings):
    """budget = min(max_seconds, fraction x reuse x greedy estimate); the defaults are
    reuse 20, fraction 0.2, max_seconds 10."""
    _, _, inputs, output, sizes = network(6, 18)
    greedy = oe_paths.greedy(inputs, output, sizes)
    greedy_seconds = estimate_seconds(inputs, output, sizes, greedy)
    opt = DefaultOptimizer(**{"max_seconds": 0.5, **settings}) if settings else DefaultOptimizer()
    expected = min(opt.max_seconds, opt.fraction * opt.reuse * greedy_seconds)
    assert opt.search(inputs, output, sizes).budget_seconds == expected
    assert (DefaultOptimizer().reuse, DefaultOptimizer().fraction) == (20.0, 0.2)
    assert DefaultOptimizer().max_seconds == 10.0 and DefaultOptimizer().use_cotengra is None


@pytest.mark.parametrize("n, seed", [(5, 17), (6, 18), (12, 4)])
def test_five_to_twelve_tensors_with_budget_use_exact_dp(n, seed):
    """With a budget, 5..12 tensors try dynamic programming, which wins here (and its
    path is opt_einsum's DP path); without a budget the greedy path stays."""
    _, _, inputs, output, sizes = network(n, seed)
    greedy = tuple(oe_paths.greedy(inputs, output, sizes))
    dp = tuple(oe_paths.DynamicProgramming(minimize="flops")(inputs, output, sizes))
    choice = DefaultOptimizer(reuse=1e9, max_seconds=0.5).search(inputs, output, sizes)
    assert choice.optimizer == "dp" and choice.path == dp
    assert choice.estimated_seconds == estimate_seconds(inputs, output, sizes, dp)
    assert choice.estimated_seconds < estimate_seconds(inputs, output, sizes, greedy)
    for opt in (DefaultOptimizer(reuse=0), DefaultOptimizer(reuse=1e9, max_seconds=0.0009)):
        choice = opt.search(inputs, output, sizes)
        assert choice.optimizer == "greedy" and choice.path == greedy
        assert choice.estimated_seconds == estimate_seconds(inputs, output, sizes, greedy)


def test_search_time_is_measured():
    """search_seconds is the wall time of the search itself."""
    _, _, inputs, output, sizes = network(12, 4)
    before = time.perf_counter()
    choice = DefaultOptimizer(reuse=1e9, max_seconds=0.5).search(inputs, output, sizes)
    assert 0 < choice.search_seconds <= time.perf_counter() - before


def only(missing):
    """A stand-in for ``_have`` that reports ``missing`` modules as not installed."""
    real = pathfind._have
    return lambda module: module not in missing and real(module)


@pytest.mark.parametrize(
    "missing, use_cotengra, name",
    [
        ((), None, "cotengrust-greedy"),
        (("cotengrust",), None, "cotengra-hyper"),
        (("cotengrust",), True, "cotengra-hyper"),
        ((), False, "random-greedy"),
        (("cotengra", "cotengrust"), None, "random-greedy"),
    ],
)
def test_more_than_twelve_tensors_use_a_randomized_search(monkeypatch, missing, use_cotengra, name):
    """13 tensors: cotengrust's greedy trials, else cotengra's hyper-optimizer, else
    opt_einsum's RandomGreedy; each beats the greedy path here."""
    pytest.importorskip("cotengrust")
    pytest.importorskip("cotengra")  # imported here, not inside the timed search
    monkeypatch.setattr(pathfind, "_have", only(missing))
    _, _, inputs, output, sizes = network(13, 6)
    greedy = oe_paths.greedy(inputs, output, sizes)
    greedy_seconds = estimate_seconds(inputs, output, sizes, greedy)
    opt = DefaultOptimizer(reuse=1e9, max_seconds=0.5, use_cotengra=use_cotengra)
    now = time.perf_counter()
    ((found, path, seconds),) = opt._random_search(
        inputs, output, sizes, now + 0.2, 0.0, now, greedy_seconds
    )
    assert found == name and seconds == estimate_seconds(inputs, output, sizes, path)
    assert sorted(len(s) for s in path) == [2] * 12
    if name == "cotengrust-greedy":  # the default: seeded trials, reliably better here
        choice = opt.search(inputs, output, sizes)
        assert choice.optimizer == name
        assert choice.estimated_seconds == estimate_seconds(inputs, output, sizes, choice.path)
        assert choice.estimated_seconds < greedy_seconds


def test_greedy_trials_stop_after_the_minimum_once_the_search_has_paid(monkeypatch):
    """Past its deadline one trial runs; with time left but nothing more worth searching
    (factor 0) exactly MIN_TRIALS + 1 run; the best-scoring path is kept."""
    cotengrust = pytest.importorskip("cotengrust")
    calls = []
    real = cotengrust.optimize_greedy

    def counting(*args, **kwargs):
        ssa = real(*args, **kwargs)
        calls.append({**kwargs, "jittered": args[2], "ssa": ssa})
        return ssa

    monkeypatch.setattr(cotengrust, "optimize_greedy", counting)
    _, _, inputs, output, sizes = network(13, 2)
    now = time.perf_counter()
    found = DefaultOptimizer._greedy_trials(inputs, output, sizes, now - 1, now, 1.0, 1.0)
    assert len(calls) == 1 and found[0][0] == "cotengrust-greedy"
    calls.clear()
    now = time.perf_counter()
    ((name, path, seconds),) = DefaultOptimizer._greedy_trials(
        inputs, output, sizes, now + 20, now, 1.0, 0.0
    )
    assert len(calls) == pathfind.MIN_TRIALS + 1 == 129
    assert [c["seed"] for c in calls] == list(range(129))
    assert all(c["use_ssa"] for c in calls)
    # the trial parameters span cotengra's "greedy" hyper-parameter space
    costmods = [c["costmod"] for c in calls]
    temperatures = [c["temperature"] for c in calls]
    assert 0.1 <= min(costmods) < 0.3 and 3.7 < max(costmods) <= 4.0
    assert 1e-3 <= min(temperatures) < 3e-3 and 0.7 < max(temperatures) <= 1.0
    assert len({c["costmod"] for c in calls}) == len(calls)
    assert calls[0]["costmod"] == random.Random(0).uniform(0.1, 4.0)  # seeded
    # the first of the best-scoring trials is kept
    tried = [tuple(tuple(s) for s in oe_paths.ssa_to_linear(c["ssa"])) for c in calls]
    scores = [estimate_seconds(inputs, output, sizes, p) for p in tried]
    assert path == tried[scores.index(min(scores))]
    # trials with a tiny jitter strength leave the sizes almost as they are
    assert any(max(v / sizes[k] for k, v in c["jittered"].items()) < 1.01 for c in calls)
    stretch = [v / sizes[k] for c in calls for k, v in c["jittered"].items()]
    assert all(x >= 1 for x in stretch) and max(stretch) > 2 and min(stretch) < 1.01
    assert seconds == estimate_seconds(inputs, output, sizes, path)
    again = DefaultOptimizer._greedy_trials(inputs, output, sizes, now + 20, now, 1.0, 0.0)
    assert again[0][1] == path  # a fixed seed: equal budgets, equal paths


def test_works_as_an_opt_einsum_path_optimizer():
    """Called as opt_einsum's PathOptimizer it returns its search's path as a list."""
    eq, shapes, inputs, output, sizes = network(5, 17)
    opt = DefaultOptimizer(reuse=1e9, max_seconds=0.5)
    path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize=opt)
    assert path == list(opt.search(inputs, output, sizes).path)
    assert opt(inputs, output, sizes) == list(opt.search(inputs, output, sizes).path)


@pytest.mark.parametrize("field", ["reuse", "fraction", "max_seconds"])
def test_bad_settings_are_refused_by_name(field):
    """Negative, boolean, non-numeric and non-finite settings are refused, naming the field."""
    for value in (-1, -0.5, True, "1", None):
        got = re.escape(repr(value))
        with pytest.raises(
            ValueError, match=rf"^DefaultOptimizer: {field} must be a number >= 0, got {got}$"
        ):
            DefaultOptimizer(**{field: value})
    for value in (float("inf"), float("nan")):
        with pytest.raises(
            ValueError, match=rf"^DefaultOptimizer: {field} must be finite, got {value!r}$"
        ):
            DefaultOptimizer(**{field: value})
    assert getattr(DefaultOptimizer(**{field: 0}), field) == 0


def test_bad_use_cotengra_is_refused(monkeypatch):
    """use_cotengra must be None/True/False; True without cotengra is an ImportError."""
    with pytest.raises(
        ValueError, match=r"^DefaultOptimizer: use_cotengra must be None, True or False, got 'y'$"
    ):
        DefaultOptimizer(use_cotengra="y")
    monkeypatch.setattr(pathfind, "_have", only(("cotengra",)))
    with pytest.raises(
        ImportError, match=r"^DefaultOptimizer\(use_cotengra=True\) needs cotengra installed$"
    ):
        DefaultOptimizer(use_cotengra=True)
    assert DefaultOptimizer(use_cotengra=False).use_cotengra is False


def test_randomized_searches_are_configured_serial_and_seeded(monkeypatch):
    """cotengra's hyper-optimizer runs greedy trials scored by "combo", serially, quietly,
    with a fixed seed, within the time left; opt_einsum's RandomGreedy likewise."""
    ctg = pytest.importorskip("cotengra")
    _, _, inputs, output, sizes = network(13, 6)
    made = {}

    class Hyper(ctg.HyperOptimizer):
        def __init__(self, **kwargs):
            made["hyper"] = kwargs
            super().__init__(**kwargs)

        def search(self, inputs, output, size_dict, **kwargs):
            made["search"] = (inputs, output, size_dict)
            return super().search(inputs, output, size_dict, **kwargs)

    monkeypatch.setattr(ctg, "HyperOptimizer", Hyper)
    monkeypatch.setattr(pathfind, "_have", only(("cotengrust",)))
    DefaultOptimizer(reuse=1e9, max_seconds=0.2).search(inputs, output, sizes)
    kwargs = made["hyper"]
    assert 0 < kwargs.pop("max_time") <= 0.2
    assert kwargs == dict(
        methods=["greedy"], minimize="combo", max_repeats=4096, parallel=False,
        progbar=False, optlib="random", seed=0,
    )  # fmt: skip
    assert made["search"] == ([tuple(sorted(x)) for x in inputs], tuple(sorted(output)), sizes)

    class Random(oe.RandomGreedy):
        def __init__(self, **kwargs):
            made["random"] = kwargs
            super().__init__(**kwargs)

    monkeypatch.setattr(pathfind.oe, "RandomGreedy", Random)
    DefaultOptimizer(reuse=1e9, max_seconds=0.2, use_cotengra=False).search(inputs, output, sizes)
    kwargs = made["random"]
    assert 0 < kwargs.pop("max_time") <= 0.2
    assert kwargs == dict(max_repeats=4096, parallel=False)


def test_no_randomized_search_without_time_for_it(monkeypatch):
    """A budget too short for one hyper-optimizer trial (5 ms) or one RandomGreedy run (1 ms)
    starts neither: the greedy path stays."""
    pytest.importorskip("cotengra")
    _, _, inputs, output, sizes = network(13, 6)
    monkeypatch.setattr(pathfind, "_have", only(("cotengrust",)))
    opt = DefaultOptimizer(reuse=1e9, max_seconds=0.004)
    assert opt.search(inputs, output, sizes).optimizer == "greedy"
    now = time.perf_counter()
    assert opt._random_search(inputs, output, sizes, now + 0.004, 0.0, now, 1.0) == []
    assert opt._random_search(inputs, output, sizes, now + 1.0, 0.1, now, 1.0) == []
    fast = DefaultOptimizer(use_cotengra=False)
    now = time.perf_counter()
    assert fast._random_search(inputs, output, sizes, now + 0.0009, 0.0, now, 1.0) == []
    assert fast._random_search(inputs, output, sizes, now + 1.0, 0.6, now, 1.0) == []


def test_greedy_trials_stop_when_the_search_has_paid_for_itself(monkeypatch):
    """After MIN_TRIALS the trials stop once they have run ``factor`` x the best estimate;
    a factor that large keeps them going to the deadline."""
    cotengrust = pytest.importorskip("cotengrust")
    calls = []
    real = cotengrust.optimize_greedy

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cotengrust, "optimize_greedy", counting)
    _, _, inputs, output, sizes = network(13, 6)
    now = time.perf_counter()
    DefaultOptimizer._greedy_trials(inputs, output, sizes, now + 20, now, 1.0, 1.0)
    assert len(calls) == 129  # 1 x a best estimate of ~1e-4 s is spent within 129 trials
    calls.clear()
    now = time.perf_counter()
    DefaultOptimizer._greedy_trials(inputs, output, sizes, now + 1.0, now, 1.0, 1e9)
    assert len(calls) > 129


def test_greedy_trials_get_the_worth_factor(monkeypatch):
    """The trials may run fraction x reuse times the best estimate."""
    pytest.importorskip("cotengrust")
    got = []

    def recording(inputs, output, size_dict, deadline, start, best_seconds, factor):
        got.append(factor)
        return []

    monkeypatch.setattr(DefaultOptimizer, "_greedy_trials", staticmethod(recording))
    _, _, inputs, output, sizes = network(13, 6)
    choice = DefaultOptimizer(reuse=1e6, fraction=0.25, max_seconds=1.0).search(
        inputs, output, sizes
    )
    assert got == [0.25 * 1e6]
    assert choice.optimizer == "greedy"  # nothing found: the greedy path stays
    assert choice.path == tuple(oe_paths.greedy(inputs, output, sizes))


def test_randomized_searches_start_only_with_time_for_their_trials():
    """cotengra's hyper-optimizer needs 20 greedy runs' time left, RandomGreedy two."""
    pytest.importorskip("cotengra")
    _, _, inputs, output, sizes = network(13, 6)
    opt = DefaultOptimizer(use_cotengra=True)
    real = pathfind._have
    try:
        pathfind._have = only(("cotengrust",))
        now = time.perf_counter()
        found = opt._random_search(inputs, output, sizes, now + 0.205, 0.01, now, 1.0)
        assert [f[0] for f in found] == ["cotengra-hyper"]
    finally:
        pathfind._have = real
    now = time.perf_counter()
    found = DefaultOptimizer(use_cotengra=False)._random_search(
        inputs, output, sizes, now + 0.25, 0.1, now, 1.0
    )
    assert [f[0] for f in found] == ["random-greedy"]
