"""core/contract.py in detail: plan text, optimizer keys, equations, the LRU cache, settings."""

import re

import opt_einsum as oe
import pytest

import tensornet as tn
from tensornet.core.contract import (
    Plan,
    _equation,
    _is_network,
    _LRUCache,
    _optimizer_key,
    short_legs,
)


def says(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def plan(n_inputs=2, n_steps=1, n_out=2, sliced=(), slices=1):
    return Plan(
        equation="", inputs=tuple((f"a{i}", "b") for i in range(n_inputs)),
        output=tuple(f"o{i}" for i in range(n_out)), path=tuple((0, 1) for _ in range(n_steps)),
        flops=1000, naive_flops=25000, largest_intermediate=12345, optimizer="greedy",
        search_seconds=0.0021, sliced=sliced, slices=slices,
    )  # fmt: skip


def test_plan_text_small():
    assert str(plan()) == "\n".join([
        "Plan[greedy]: 2 tensors -> (o0 o1)",
        "  inputs: (a0 b), (a1 b)",
        "  flops: 1000 (naive 2.5e+04, speedup 25x)",
        "  largest intermediate: 12,345 elements",
        "  path: [(0, 1)]",
        "  search: 2.1 ms",
    ])  # fmt: skip
    assert plan().speedup == 25.0


def test_plan_text_elides_past_eight_and_shows_slices():
    text = str(plan(n_inputs=9, n_steps=9, n_out=9, sliced=("k", "m"), slices=1500))
    lines = text.split("\n")
    assert lines[0] == "Plan[greedy]: 9 tensors -> (o0 o1 o2 o3 o4 o5 o6 o7 ...)"
    assert lines[1].endswith("(a7 b), ... (9 tensors)") and "(a8 b)" not in lines[1]
    assert lines[4].endswith("(0, 1), ... (9 steps)]") and lines[4].count("(0, 1)") == 8
    assert lines[-1] == "  sliced: ('k', 'm') (1,500 slices)"
    exactly_eight = str(plan(n_inputs=8, n_steps=8, n_out=8))
    assert "..." not in exactly_eight and "sliced" not in exactly_eight
    assert Plan("", (), (), (), 0, 0, 0, "x").speedup == 0.0  # flops 0 counts as 1


def test_optimizer_keys_and_messages():
    assert _optimizer_key(None) == ("default", "default")
    assert _optimizer_key("greedy") == ("greedy", "greedy")
    policy = tn.DefaultOptimizer()
    assert _optimizer_key(policy) == (("default", policy), "default")
    rg = oe.RandomGreedy(max_repeats=2)
    assert _optimizer_key(rg) == (("optimizer", id(rg)), "RandomGreedy")
    assert _optimizer_key([[0, 1], (0, 1)]) == (("path", ((0, 1), (0, 1))), "explicit-path")
    unknown = (
        r"^optimize='fastest' is not an opt_einsum path optimizer; choose one of "
        r"\[.*'greedy'.*\], None \(the default policy\), an explicit path, or a PathOptimizer$"
    )
    with pytest.raises(ValueError, match=unknown):
        _optimizer_key("fastest")
    with says(TypeError, "optimize as an explicit path must be a sequence of index tuples, "
              "got [(0, 'x')]"):  # fmt: skip
        _optimizer_key([(0, "x")])
    with says(TypeError, "optimize must be None (the default policy), an opt_einsum optimizer "
              "name, an explicit path or a PathOptimizer, got float"):  # fmt: skip
        _optimizer_key(1.5)


def test_equations_and_the_network_test():
    assert _equation((("i", "j"), ("j", "k")), ("i", "k")) == "ab,bc->ac"
    assert _equation((("x",),), ()) == "a->"
    assert _is_network((("i", "j"), ("j", "k")), ("i", "k"))
    assert not _is_network((("i", "j"), ("j", "k")), ("i",))  # an open leg summed away
    assert not _is_network((("i", "j"), ("j", "k")), ("i", "j", "k"))  # a bond kept
    assert not _is_network((("i", "j"), ("j",), ("j",)), ("i",))  # a hyperedge
    assert _is_network((), ())


def test_short_legs():
    assert short_legs(("a", "b")) == "('a', 'b')"
    assert short_legs(["a", "b"]) == "['a', 'b']"
    many = tuple(f"x{i}" for i in range(10))
    assert short_legs(many, shown=3) == "('x0', 'x1', 'x2', ... 7 more)"
    assert short_legs(list(many), shown=3) == "['x0', 'x1', 'x2', ... 7 more]"
    assert short_legs(many[:8]) == repr(many[:8])  # eight are shown by default
    assert short_legs(many[:9]).endswith("'x7', ... 1 more)")


def test_lru_cache_order_counts_and_clear():
    cache = _LRUCache(maxsize=2)
    state = (cache.maxsize, cache.hits, cache.misses, cache.generation, len(cache))
    assert state == (2, 0, 0, 0, 0)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert (cache.hits, cache.misses) == (3, 1)
    cache.put("a", 10)  # an update refreshes a
    cache.resize(1)
    assert len(cache) == 1 and cache.get("a") == 10 and cache.maxsize == 1
    cache.clear()
    assert (len(cache), cache.hits, cache.misses, cache.generation) == (0, 0, 0, 1)


def test_settings_messages_and_state():
    before = tn.get_max_intermediate()
    try:
        with says(TypeError, "max intermediate must be an int or None, got True"):
            tn.set_max_intermediate(True)
        with says(TypeError, "max intermediate must be an int or None, got 2.0"):
            tn.set_max_intermediate(2.0)
        with says(ValueError, "max intermediate must be >= 1, got 0"):
            tn.set_max_intermediate(0)
        with says(TypeError, "slicing must be True, False or None, got 1"):
            tn.set_max_intermediate(10, slicing=1)
        tn.set_max_intermediate(1, slicing=True)
        assert tn.get_max_intermediate() == 1
        tn.set_max_intermediate(None)
        assert tn.get_max_intermediate() is None
        with says(ValueError, "cache maxsize must be an int >= 1, got 0"):
            tn.set_cache_size(0)
        with says(ValueError, "cache maxsize must be an int >= 1, got True"):
            tn.set_cache_size(True)
        tn.set_cache_size(7)
        assert tn.cache_info()["maxsize"] == 7
    finally:
        tn.set_max_intermediate(before, slicing=False)
        tn.set_cache_size(512)


def chain(n=8, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    a = tn.Node(torch.randn(2, n, generator=g, dtype=torch.float64), ("i", "j"), name="A")
    b = tn.Node(torch.randn(n, n, generator=g, dtype=torch.float64), ("j", "k"), name="B")
    c = tn.Node(torch.randn(n, 2, generator=g, dtype=torch.float64), ("k", "l"), name="C")
    return tn.TensorNetwork([a, b, c])


def test_a_sliced_plan_keeps_the_plan_and_scales_its_costs():
    tn.clear_cache()
    net = chain()
    whole = net.plan()
    sliced = net.plan(max_intermediate=4, slicing=True)
    assert sliced.equation == whole.equation and sliced.optimizer == whole.optimizer
    assert sliced.path == whole.path and sliced.info is whole.info
    assert sliced.search_seconds == whole.search_seconds
    assert sliced.estimated_seconds == pytest.approx(whole.estimated_seconds * sliced.slices)
    assert sliced.flops >= whole.flops and sliced.flops % sliced.slices == 0
    hits = tn.cache_info()["hits"]
    assert net.plan(max_intermediate=4, slicing=True) == sliced  # the sliced plan is cached
    assert tn.cache_info()["hits"] > hits
    other = chain(n=16).plan(max_intermediate=4, slicing=True)  # a different network: own entry
    assert other.flops > sliced.flops and other.slices != sliced.slices


def test_a_one_node_network_plans_a_single_step():
    import torch

    a = tn.Node(torch.ones(2, 3, dtype=torch.float64), ("i", "j"), name="A")
    plan = tn.TensorNetwork([a]).plan(output=("j", "i"))
    assert plan.path == ((0,),)
    assert tn.TensorNetwork([a]).contract(output=("j", "i")).tensor.shape == (3, 2)


def test_limit_messages_name_the_limit_and_the_fix():
    net = chain()
    with says(ValueError, "max_intermediate must be >= 1, got 0"):
        net.contract(max_intermediate=0)
    with says(TypeError, "max_intermediate must be an int, got 2.5"):
        net.contract(max_intermediate=2.5)
    with pytest.raises(ValueError, match=r"above max_intermediate=4 \(plan by .*pass a larger "
                       r"max_intermediate=\(\.\.\.\)"):  # fmt: skip
        net.contract(max_intermediate=4)
    result_too_big = (
        r"^the result alone has 4 elements \(legs \('i', 'l'\)\), above max_intermediate=1; "
        r"slicing cannot help, pass a larger max_intermediate=\(\.\.\.\)$"
    )
    with pytest.raises(ValueError, match=result_too_big):
        net.contract(max_intermediate=1, slicing=True)  # 1 is allowed (and too small)
    before = tn.get_max_intermediate()
    try:
        tn.set_max_intermediate(8)
        with pytest.raises(ValueError, match=r"above the limit of 8 elements .*raise it with "
                           r"tn\.set_max_intermediate\(\.\.\.\)"):  # fmt: skip
            net.contract()
    finally:
        tn.set_max_intermediate(before)
