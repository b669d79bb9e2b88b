"""core/contract.py in detail: plan text, optimizer keys, equations, the LRU cache, settings."""

import re

import opt_einsum as oe
import pytest
import torch

import tensornet as tn
from tensornet.core.contract import (
    Plan,
    _is_network,
    _LRUCache,
    compiled,
    einsum_equation,
    limit_state,
    optimizer_key,
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
    assert optimizer_key(None) == ("default", "default")
    assert optimizer_key("greedy") == ("greedy", "greedy")
    policy = tn.DefaultOptimizer()
    assert optimizer_key(policy) == (("default", policy), "default")
    rg = oe.RandomGreedy(max_repeats=2)
    assert optimizer_key(rg) == (("optimizer", id(rg)), "RandomGreedy")
    assert optimizer_key([[0, 1], (0, 1)]) == (("path", ((0, 1), (0, 1))), "explicit-path")
    unknown = (
        r"^optimize='fastest' is not an opt_einsum path optimizer; choose one of "
        r"\[.*'greedy'.*\], None \(the default policy\), an explicit path, or a PathOptimizer$"
    )
    with pytest.raises(ValueError, match=unknown):
        optimizer_key("fastest")
    with says(TypeError, "optimize as an explicit path must be a sequence of index tuples, "
              "got [(0, 'x')]"):  # fmt: skip
        optimizer_key([(0, "x")])
    with says(TypeError, "optimize must be None (the default policy), an opt_einsum optimizer "
              "name, an explicit path or a PathOptimizer, got float"):  # fmt: skip
        optimizer_key(1.5)


def test_explicit_paths_are_checked_before_planning():
    """A path that cannot contract the tensors down to one is refused with the step at fault
    (the executor's path check, run before planning)."""

    def plan_path(path, n):
        legs = tuple((f"a{i}", f"a{i + 1}") for i in range(n))
        compiled(legs, ((2, 2),) * n, ("a0", f"a{n}"), path)

    plan_path(((0, 1), (0, 1)), 3)
    plan_path(((1,), (2, 0), (0, 1)), 3)  # a one-tensor step keeps the count
    plan_path((), 1)
    plan_path(((0,),), 1)
    with says(ValueError, "optimize path step 0 (0, 7) names position 7, but only 3 tensors are "
              "left; path ((0, 7), (0, 1))"):  # fmt: skip
        plan_path(((0, 7), (0, 1)), 3)
    with says(ValueError, "optimize path step 1 (0, 2) names position 2, but only 2 tensors are "
              "left; path ((0, 1), (0, 2))"):  # fmt: skip
        plan_path(((0, 1), (0, 2)), 3)
    with says(ValueError, "optimize path step 0 (1, 1) names a position twice; path ((1, 1),)"):
        plan_path(((1, 1),), 2)
    with says(ValueError, "optimize path step 1 () names no tensor; path ((0, 1), ())"):
        plan_path(((0, 1), ()), 3)
    with says(ValueError, "optimize path step 0 (-1, 0) names position -1, but only 2 tensors "
              "are left; path ((-1, 0),)"):  # fmt: skip
        plan_path(((-1, 0),), 2)
    with says(ValueError, "optimize path ((0, 1),) leaves 2 tensors of 3, not one; each step "
              "must contract tensors until one is left"):  # fmt: skip
        plan_path(((0, 1),), 3)
    with says(ValueError, "optimize path () leaves 2 tensors of 2, not one; each step must "
              "contract tensors until one is left"):  # fmt: skip
        plan_path((), 2)
    a, b = tn.Node(torch.ones(2, 3), ("i", "j")), tn.Node(torch.ones(3, 4), ("j", "k"))
    with says(ValueError, "optimize path () leaves 2 tensors of 2, not one; each step must "
              "contract tensors until one is left"):  # fmt: skip
        tn.contract([a, b], optimize=[])


def test_equations_and_the_network_test():
    assert einsum_equation((("i", "j"), ("j", "k")), ("i", "k")) == "ab,bc->ac"
    assert einsum_equation((("x",),), ()) == "a->"
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
        tn.set_cache_size(1024)


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


def chain_on(device="cpu", dtype=torch.float64, n=8):
    return chain(n).to(dtype=dtype, device=device)


@pytest.mark.parametrize("route", ["no limit", "limit", "sliced"])
def test_every_route_keys_its_plans_by_dtype_and_device(route):
    """float32, float64 and another device (meta) are three plans on every route; a repeat of
    each is a hit, so nothing is planned twice (sliced plans are cached too)."""
    before = limit_state()
    limit = {"no limit": None, "limit": 10**6, "sliced": 8}[route]
    tn.set_max_intermediate(limit, slicing=route == "sliced")
    tn.clear_cache()
    try:
        first = [chain_on("cpu", dt).contract().tensor for dt in (torch.float64, torch.float32)]
        first.append(chain_on("meta", torch.float64).contract().tensor)
        misses = tn.cache_info()["misses"]
        # compiled() once per kind; sliced: also the sliced plan and its inner slice plan
        assert misses == (9 if route == "sliced" else 3)
        again = [chain_on("cpu", dt).contract().tensor for dt in (torch.float64, torch.float32)]
        again.append(chain_on("meta", torch.float64).contract().tensor)
        assert tn.cache_info()["misses"] == misses
        assert tn.cache_info()["hits"] == (6 if route == "sliced" else 3)
        for x, y in zip(first, again):
            assert x.dtype == y.dtype and x.device == y.device
        torch.testing.assert_close(again[1], first[0].float(), rtol=1e-5, atol=1e-5)
        if route == "sliced":
            plan = chain().plan()
            assert plan.sliced and plan.largest_intermediate <= 8
        assert chain().plan(optimize=[(0, 1), (0, 1)]).optimizer == "explicit-path"
    finally:
        tn.set_max_intermediate(*before)


def test_a_one_entry_cache_keeps_the_latest():
    tn.clear_cache()
    tn.set_cache_size(1)
    try:
        chain(4).contract()
        chain(5).contract()
        chain(5).contract()
        assert tn.cache_info() == {"hits": 1, "misses": 2, "size": 1, "maxsize": 1}
    finally:
        tn.set_cache_size(1024)


def test_plan_text_of_two_steps():
    text = str(plan(n_inputs=3, n_steps=2)).replace("\n  search: 2.1 ms", "")
    assert text.endswith("  path: [(0, 1), (0, 1)]")
    slow = Plan(equation="", inputs=(("a",),), output=(), path=((0,),), flops=1, naive_flops=1,
                largest_intermediate=1, optimizer="x", search_seconds=0.0999)  # fmt: skip
    assert str(slow).endswith("  search: 99.9 ms")


def test_the_refusal_ends_with_every_way_out():
    with says(ValueError, "contraction needs an intermediate of 16 elements, above "
              "max_intermediate=4 (plan by greedy); pass slicing=True to contract it in slices "
              "(tn.set_max_intermediate(..., slicing=True) for every contraction), pass a larger "
              "max_intermediate=(...), or try another optimize="):  # fmt: skip
        chain(8).contract(max_intermediate=4, optimize="greedy")


def test_a_limit_equal_to_the_largest_intermediate_is_enough():
    net = chain(8)
    largest = net.plan(optimize="greedy").largest_intermediate
    plan = net.plan(optimize="greedy", max_intermediate=largest, slicing=True)
    assert plan.sliced == () and plan.largest_intermediate == largest
    net.contract(optimize="greedy", max_intermediate=largest)  # not refused


class FixedPath(oe.paths.PathOptimizer):
    """An optimizer that always answers one (poor) path: contract A with C first."""

    def __call__(self, inputs, output, size_dict, memory_limit=None):
        return [(0, 2), (0, 1)]


def test_plan_fields_follow_the_optimizer():
    net = chain(8)
    default = net.plan()
    assert default.info is None and default.estimated_seconds > 0
    assert 0 <= default.search_seconds < 10
    greedy = net.plan(optimize="greedy")
    assert type(greedy.info).__name__ == "PathInfo" and greedy.estimated_seconds == 0.0
    assert greedy.info.opt_cost > 0
    assert 0 <= greedy.search_seconds < 10
    sliced = net.plan(optimize="greedy", max_intermediate=8, slicing=True)
    assert sliced.info is greedy.info
    explicit = net.plan(optimize=[(0, 1), (0, 1)])
    assert explicit.info is None and explicit.estimated_seconds == 0.0
    fixed = net.plan(optimize=FixedPath())
    assert fixed.path == ((0, 2), (0, 1)) and fixed.optimizer == "FixedPath"
    torch.testing.assert_close(
        net.contract(optimize=FixedPath()).tensor, net.contract().tensor, rtol=1e-12, atol=1e-12
    )


def test_naive_flops_of_two_operands():
    """Naive cost: the product of every dimension times (operands - 1, plus one if any leg is
    summed): 2*3*4 * (1 + 1) for a matrix product."""
    plan = tn.plan_contraction([("i", "j"), ("j", "k")], [(2, 3), (3, 4)], ("i", "k"))
    assert plan.naive_flops == 48
    outer = tn.plan_contraction([("i",), ("k",)], [(2,), (4,)], ("i", "k"))
    assert outer.naive_flops == 8


def test_plan_contraction_passes_optimize_on_and_one_operand_paths_are_filled_in():
    legs, shapes = [("i", "j"), ("j", "k")], [(2, 3), (3, 4)]
    plan = tn.plan_contraction(legs, shapes, ("i", "k"), optimize=[(0, 1)])
    assert plan.optimizer == "explicit-path" and plan.path == ((0, 1),)
    one = tn.plan_contraction([("i", "j")], [(2, 3)], ("j", "i"), optimize=[])
    assert one.path == ((0,),) and one.optimizer == "explicit-path"
    node = tn.Node(torch.arange(6.0).reshape(2, 3), ("i", "j"))
    out = tn.contract([node], output=("j", "i"), optimize=[])
    torch.testing.assert_close(out.tensor, node.tensor.T)


def test_programs_are_compiled_when_planned_and_follow_the_plan():
    """A network's program is compiled at planning time (in the cache, not at the first call);
    an einsum that is not a network runs opt_einsum's expression along the planned path."""
    _, program = compiled((("i", "j"), ("j", "k")), ((2, 3), (3, 4)), ("i", "k"))
    assert program.shapes == ((2, 3), (3, 4)) and "mm" in program.source
    hyper = (("i", "j"), ("i", "j"), ("i", "k"))  # i on three operands: not a network
    _, program = compiled(hyper, ((2, 3), (2, 3), (2, 4)), ("i",), [(0, 2), (0, 1)])
    assert [tuple(sorted(step[0])) for step in program.expression.contraction_list] == [
        (0, 2), (0, 1)
    ]


def test_sliced_plans_of_one_path_name_their_own_optimizer():
    """Two optimizers that find the same path each get a sliced plan that names them."""
    tn.clear_cache()
    net = chain()
    default = net.plan(max_intermediate=8, slicing=True)
    explicit = net.plan(optimize=list(default.path), max_intermediate=8, slicing=True)
    assert default.optimizer.startswith("default:") and explicit.optimizer == "explicit-path"
    assert explicit.sliced == default.sliced and explicit.slices == default.slices
    assert explicit.estimated_seconds == 0.0 and default.estimated_seconds > 0
    torch.testing.assert_close(
        net.contract(optimize=list(default.path), max_intermediate=8, slicing=True).tensor,
        net.contract().tensor, rtol=1e-12, atol=1e-12,
    )  # fmt: skip
