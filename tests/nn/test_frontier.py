"""frontier: Pareto frontiers and the global choice over them, checked by brute force."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from tensornet.nn.frontier import minimax, pareto, weighted_sum


def _random_frontiers(rng: np.random.Generator, layers: int) -> tuple[list, list]:
    costs, errors = [], []
    for _ in range(layers):
        n = int(rng.integers(1, 6))
        c = np.cumsum(rng.integers(1, 20, n)).astype(float)
        e = np.sort(rng.random(n))[::-1]
        e = e + np.arange(n)[::-1] * 1e-9  # strictly decreasing
        costs.append(c.tolist())
        errors.append(e.tolist())
    return costs, errors


def _brute(costs, errors, budget, weights=None):
    """(least largest error, least weighted sum of squares) over every combination."""
    weights = weights or [1.0] * len(costs)
    best_max = best_sum = math.inf
    for picks in itertools.product(*[range(len(c)) for c in costs]):
        if sum(c[i] for c, i in zip(costs, picks)) > budget:
            continue
        best_max = min(best_max, max(e[i] for e, i in zip(errors, picks)))
        value = sum(w * e[i] ** 2 for w, e, i in zip(weights, errors, picks))
        best_sum = min(best_sum, value)
    return best_max, best_sum


@pytest.mark.parametrize("seed", range(40))
def test_the_global_choice_is_optimal_on_small_problems(seed):
    rng = np.random.default_rng(seed)
    costs, errors = _random_frontiers(rng, int(rng.integers(1, 5)))
    least, most = sum(c[0] for c in costs), sum(c[-1] for c in costs)
    budget = float(rng.uniform(least, most + 5))
    weights = rng.uniform(0.5, 2.0, len(costs)).tolist()
    best_max, best_sum = _brute(costs, errors, budget, weights)
    mm = minimax(costs, errors, budget)
    assert mm.cost <= budget and mm.objective == best_max and mm.gap == 0
    assert max(e[i] for e, i in zip(errors, mm.picks)) == best_max
    ws = weighted_sum(costs, errors, budget, weights)
    assert ws.cost <= budget + 1e-9
    assert ws.bound <= best_sum + 1e-12 <= ws.objective + 2e-12
    assert ws.objective - best_sum <= ws.gap + 1e-12
    value = sum(w * e[i] ** 2 for w, e, i in zip(weights, errors, ws.picks))
    assert ws.objective == pytest.approx(value)


def test_minimax_spends_the_leftover_on_the_largest_errors():
    costs = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    errors = [[0.9, 0.5, 0.1], [0.4, 0.3, 0.2]]
    choice = minimax(costs, errors, 5.0)  # level 0.4 costs 3; 2 more: layer 0 to 0.1, then 1
    assert choice.picks == (2, 1) and choice.objective == 0.3 and choice.cost == 5.0


def test_weighted_sum_weights_move_the_budget():
    costs = [[1.0, 2.0], [1.0, 2.0]]
    errors = [[0.5, 0.0], [0.5, 0.0]]
    assert weighted_sum(costs, errors, 3.0, [1.0, 2.0]).picks == (0, 1)
    assert weighted_sum(costs, errors, 3.0, [2.0, 1.0]).picks == (1, 0)
    assert weighted_sum(costs, errors, 4.0).picks == (1, 1)


def test_frontier_inputs_are_checked():
    with pytest.raises(ValueError, match="below the cheapest"):
        minimax([[2.0]], [[0.1]], 1.0)
    with pytest.raises(ValueError, match="below the cheapest"):
        weighted_sum([[2.0]], [[0.1]], 1.0)
    with pytest.raises(ValueError, match="increase"):
        minimax([[2.0, 1.0]], [[0.1, 0.0]], 5.0)
    with pytest.raises(ValueError, match="as many"):
        minimax([[1.0, 2.0]], [[0.1]], 5.0)
    with pytest.raises(ValueError, match="weights"):
        weighted_sum([[1.0]], [[0.1]], 5.0, [0.0])


def test_pareto_keeps_the_cheapest_of_equal_errors_and_drops_dominated_points():
    assert pareto([3, 1, 2, 2, 5], [0.1, 0.5, 0.3, 0.2, 0.1]) == [1, 3, 0]
    assert pareto([1, 1], [0.2, 0.2]) == [0]
    assert pareto([2, 1], [0.2, 0.2]) == [1]


def test_messages_name_what_is_wrong():
    def refused(call, message):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call()

    one = "frontier: give one (non-empty) frontier of costs and errors per layer"
    refused(lambda: minimax([], [], 1.0), one)
    refused(lambda: minimax([[1.0], [2.0]], [[0.1]], 5.0), one)
    many = "frontier: every frontier needs as many costs as errors (>= 1)"
    refused(lambda: minimax([[1.0, 2.0]], [[0.1]], 5.0), many)
    refused(lambda: minimax([[]], [[]], 5.0), many)
    order = "frontier: costs must increase and errors decrease along a frontier"
    refused(lambda: minimax([[1.0, 1.0]], [[0.2, 0.1]], 5.0), order)
    refused(lambda: minimax([[1.0, 2.0]], [[0.1, 0.1]], 5.0), order)
    refused(lambda: weighted_sum([[1.0, 2.0, 3.0]], [[0.5, 0.1, 0.2]], 5.0), order)
    refused(lambda: weighted_sum([[1.0]], [[0.1]], 5.0, [1.0, 1.0]),
            "frontier: weights must be one positive number per layer")  # fmt: skip
    refused(
        lambda: minimax([[2.0]], [[0.1]], 1.99),
        "frontier: the budget 1.99 is below the cheapest choice 2",
    )
    assert minimax([[2.0]], [[0.1]], 2.0).picks == (0,)  # the cheapest exactly fits
    assert weighted_sum([[2.0]], [[0.1]], 2.0).picks == (0,)


def test_minimax_leftover_goes_to_the_largest_error_first():
    # level 0.3 costs 6; the 1 left pays one step: layer 0 (error 0.3) before layer 2 (0.1)
    costs = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    errors = [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.4, 0.1, 0.0]]
    choice = minimax(costs, errors, 7.0)
    assert choice.picks == (2, 1, 1) and choice.cost == 7.0 and choice.objective == 0.3
    # a layer upgraded again and again while it stays the worst
    choice = minimax([[1.0, 2.0, 3.0, 4.0], [1.0, 10.0]], [[0.9, 0.8, 0.7, 0.6], [0.85, 0.1]], 8.0)
    assert choice.picks == (3, 0) and choice.cost == 5.0 and choice.objective == 0.85


def test_weighted_sum_takes_part_of_a_straight_run_of_a_frontier():
    # layer 0's three points lie on one line (slope -0.5), as does layer 1's step
    costs = [[1.0, 2.5, 3.0], [1.0, 2.125]]
    errors = [[1.0, 0.5, 0.0], [0.75, 0.0]]
    choice = weighted_sum(costs, errors, 3.75)
    assert choice.picks == (1, 0) and choice.objective == 0.8125 and choice.bound == 0.6875
    assert _brute(costs, errors, 3.75)[1] == 0.8125


def test_the_repair_spends_the_leftover_by_error_drop_per_unit_cost():
    # neither middle point is on its hull; the hull steps (cost 4) do not fit the 3 left
    costs = [[1.0, 4.0, 5.0], [1.0, 2.0, 5.0]]
    errors = [[1.0, math.sqrt(0.7), 0.0], [1.0, math.sqrt(0.8), 0.0]]
    choice = weighted_sum(costs, errors, 5.0)
    assert choice.picks == (0, 1)  # layer 1: 0.2 per unit before layer 0: 0.1 per unit
    assert choice.objective == pytest.approx(1.8) and choice.bound == pytest.approx(1.25)
    assert choice.cost == 3.0 and choice.gap == pytest.approx(0.55)
    single = weighted_sum([[1.0, 2.0, 10.0]], [[1.0, math.sqrt(0.9), 0.0]], 5.0)
    assert single.picks == (1,) and single.bound == pytest.approx(1 - 4 / 9)


def test_after_the_hull_the_best_drop_per_unit_cost_among_all_points():
    # layer 0's hull step (cost 3) does not fit the 1 left; its middle point (off the hull,
    # 0.3 per unit) beats layer 1's step (0.2 per unit), though that step comes first on the hulls
    costs = [[1.0, 2.0, 4.0, 6.0], [1.0, 2.0]]
    errors = [[math.sqrt(v) for v in (2.0, 1.7, 1.0, 0.5)], [1.0, math.sqrt(0.8)]]
    choice = weighted_sum(costs, errors, 3.0)
    assert choice.picks == (1, 0) and choice.objective == pytest.approx(2.7)
    assert choice.objective == pytest.approx(_brute(costs, errors, 3.0)[1])
    assert choice.bound == pytest.approx(3.0 - 1 / 3)
