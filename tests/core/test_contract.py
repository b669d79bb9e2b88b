"""Planned contraction: values against numpy, caching, plans, many legs, gradients."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.autograd import gradcheck

import tensornet as tn
from tensornet import Node, TensorNetwork


@st.composite
def random_networks(draw, max_elements=2**12):
    """2-7 nodes, up to 60 distinct legs each on one or two nodes, dims kept small."""
    n_nodes = draw(st.integers(2, 7))
    n_legs = draw(st.integers(1, 60))
    node_legs = [[] for _ in range(n_nodes)]
    dims = {}
    product = 1
    for i in range(n_legs):
        owners = draw(st.lists(st.integers(0, n_nodes - 1), min_size=1, max_size=2, unique=True))
        d = draw(st.integers(1, 3))
        if product * d > max_elements:
            d = 1
        product *= d
        leg = draw(st.sampled_from([f"leg{i}", f"ψ{i}", f"x'{i}", f"a b{i}"]))
        dims[leg] = d
        for o in owners:
            node_legs[o].append(leg)
    for legs in node_legs:
        draw(st.randoms()).shuffle(legs)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal([dims[leg] for leg in legs]) for legs in node_legs]
    output = [leg for legs in node_legs for leg in legs if sum(leg in x for x in node_legs) == 1]
    draw(st.randoms()).shuffle(output)
    return node_legs, arrays, output, dtype


def numpy_pairwise(arrays, node_legs, output):
    """Reference: contract left to right with numpy.tensordot (no limit on the number of legs,
    unlike numpy.einsum's 52 labels), then transpose to ``output``."""
    current, legs = arrays[0], list(node_legs[0])
    for array, other in zip(arrays[1:], node_legs[1:]):
        shared = [x for x in legs if x in other]
        current = np.tensordot(
            current, array, axes=([legs.index(x) for x in shared], [other.index(x) for x in shared])
        )
        legs = [x for x in legs if x not in shared] + [x for x in other if x not in shared]
    return np.transpose(current, [legs.index(x) for x in output]) if output else current


@given(random_networks())
def test_random_networks_match_numpy_einsum(case):
    node_legs, arrays, output, dtype = case
    nodes = [Node(torch.from_numpy(a).to(dtype), legs) for a, legs in zip(arrays, node_legs)]
    result = TensorNetwork(nodes).contract(output=output)
    assert result.legs == tuple(output)
    rounded = [n.tensor.double().numpy() for n in nodes]
    expected = numpy_pairwise(rounded, node_legs, output)
    # the rounding error is bounded by eps times the same contraction of absolute values
    scale = numpy_pairwise([np.abs(a) for a in rounded], node_legs, output)
    eps = 1e-5 if dtype == torch.float32 else 1e-12
    assert np.all(np.abs(result.tensor.double().numpy() - expected) <= eps * (scale + 1e-30))
    n_legs = len({leg for legs in node_legs for leg in legs})
    if n_legs <= 52:  # one numpy.einsum call over the whole network
        letters = {
            leg: i for i, leg in enumerate(dict.fromkeys(x for legs in node_legs for x in legs))
        }
        operands = []
        for a, legs in zip(rounded, node_legs):
            operands += [a, [letters[x] for x in legs]]
        direct = np.einsum(*operands, [letters[x] for x in output], optimize="greedy")
        assert np.all(np.abs(result.tensor.double().numpy() - direct) <= eps * (scale + 1e-30))


def test_sixty_legs_in_one_contraction():
    rng = np.random.default_rng(1)
    nodes = []
    for k in range(4):
        legs = [f"open{k}_{j}" for j in range(14)] + [f"bond{k}"] + ([f"bond{k - 1}"] if k else [])
        shape = [2 if leg.startswith("bond") else 1 for leg in legs]
        nodes.append(Node(rng.standard_normal(shape), legs))
    net = TensorNetwork(nodes)
    assert len(net.legs) >= 60
    out = net.contract()
    ref = numpy_pairwise(
        [n.tensor.numpy() for n in nodes], [n.legs for n in nodes], list(net.open_legs)
    )
    np.testing.assert_allclose(out.tensor.numpy(), ref, rtol=1e-12)


def test_repeated_contraction_hits_the_cache():
    tn.clear_cache()
    a = Node(torch.randn(3, 4), ("i", "j"))
    b = Node(torch.randn(4, 5), ("j", "k"))
    net = TensorNetwork([a, b])
    net.contract()
    info = tn.cache_info()
    assert info["misses"] == 1 and info["hits"] == 0
    for _ in range(5):
        net.contract()
    # a new network with the same structure and shapes reuses the compiled expression
    TensorNetwork(
        [Node(torch.randn(3, 4), ("i", "j")), Node(torch.randn(4, 5), ("j", "k"))]
    ).contract()
    info = tn.cache_info()
    assert info["misses"] == 1 and info["hits"] == 6
    net.contract(output=("k", "i"))  # another output order is another plan
    net.to(dtype=torch.float64).contract()  # and so is another dtype
    assert tn.cache_info()["misses"] == 3


def test_cache_is_bounded():
    tn.clear_cache()
    tn.set_cache_size(3)
    try:
        for n in range(2, 8):
            TensorNetwork([Node(torch.ones(n), ("i",)), Node(torch.ones(n), ("i",))]).contract()
        assert tn.cache_info()["size"] == 3
        with pytest.raises(ValueError, match="maxsize must be an int >= 1"):
            tn.set_cache_size(0)
    finally:
        tn.set_cache_size(1024)


def test_plan_reports_cost_before_running():
    nodes = [
        Node(torch.ones(10, 100), ("a", "b")),
        Node(torch.ones(100, 100), ("b", "c")),
        Node(torch.ones(100, 10), ("c", "d")),
    ]
    plan = TensorNetwork(nodes).plan()
    assert plan.largest_intermediate == 1000  # (a,c) or (b,d), never (b,c)-sized
    assert plan.flops < plan.naive_flops
    assert plan.path and plan.optimizer == "default:optimal"  # three tensors: exhaustive
    assert TensorNetwork(nodes).plan(optimize="auto").optimizer == "auto"
    assert "largest intermediate: 1,000 elements" in str(plan)
    with pytest.raises(ValueError, match="above max_intermediate=10"):
        TensorNetwork(nodes).contract(max_intermediate=10)


@pytest.mark.parametrize("optimize", ["greedy", "optimal", "dp", "branch-2", [(0, 1), (0, 1)]])
def test_optimizers_agree(optimize):
    t = [
        torch.randn(3, 4, dtype=torch.float64),
        torch.randn(4, 5, dtype=torch.float64),
        torch.randn(5, 3, dtype=torch.float64),
    ]
    net = TensorNetwork([Node(t[0], ("i", "j")), Node(t[1], ("j", "k")), Node(t[2], ("k", "i"))])
    torch.testing.assert_close(
        net.contract(optimize=optimize).tensor, torch.trace(t[0] @ t[1] @ t[2])
    )


def test_path_optimizer_instance_is_accepted():
    import opt_einsum as oe

    net = TensorNetwork([Node(torch.ones(2, 3), ("i", "j")), Node(torch.ones(3), ("j",))])
    opt = oe.RandomGreedy(max_repeats=4)
    assert net.plan(optimize=opt).optimizer == "RandomGreedy"
    torch.testing.assert_close(net.contract(optimize=opt).tensor, torch.full((2,), 3.0))


@pytest.mark.parametrize(
    "bad, exc", [("fastest", ValueError), (3.5, TypeError), ([("a",)], TypeError)]
)
def test_bad_optimizer_is_named(bad, exc):
    net = TensorNetwork([Node(torch.ones(2), ("i",)), Node(torch.ones(2), ("i",))])
    with pytest.raises(exc, match="optimize"):
        net.contract(optimize=bad)


def test_gradients_reach_every_node():
    torch.manual_seed(0)
    shapes = {
        "A": ((3, 4), ("i", "j")),
        "B": ((4, 2, 5), ("j", "x", "k")),
        "C": ((5, 3), ("k", "i")),
    }
    tensors = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s, _ in shapes.values()]

    def f(*ts):
        nodes = [Node(t, legs, name=n) for t, (n, (_, legs)) in zip(ts, shapes.items())]
        return TensorNetwork(nodes).contract().tensor

    assert gradcheck(f, tuple(tensors))


def test_module_level_contract_and_plan_without_tensors():
    a = Node(torch.ones(2, 3), ("i", "j"))
    b = Node(torch.ones(3), ("j",))
    assert torch.equal(tn.contract(a, b).tensor, torch.full((2,), 3.0))
    assert torch.equal(tn.contract([a, b]).tensor, torch.full((2,), 3.0))
    with pytest.raises(TypeError, match="takes Node objects"):
        tn.contract(a, torch.ones(3))
    plan = tn.plan_contraction([("i", "j"), ("j", "k")], [(2, 3), (3, 4)], ("i", "k"))
    assert plan.flops > 0 and plan.largest_intermediate == 8


def test_cotengra_optimizer_when_installed():
    ctg = pytest.importorskip("cotengra")
    t = [torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)]
    net = TensorNetwork([Node(t[0], ("i", "j")), Node(t[1], ("j", "k"))])
    opt = ctg.HyperOptimizer(max_repeats=2, methods=["greedy"], progbar=False)
    assert net.plan(optimize=opt).optimizer == "HyperOptimizer"
    torch.testing.assert_close(net.contract(optimize=opt).tensor, t[0] @ t[1])


def pair(n):
    """A fresh two-node network (no per-network memo) whose plan is keyed by ``n``."""
    return TensorNetwork([Node(torch.ones(n), ("i",)), Node(torch.ones(n), ("i",))])


def test_cache_drops_the_least_recently_used_entry():
    tn.clear_cache()
    tn.set_cache_size(3)
    try:
        for n in (2, 3, 4):
            pair(n).contract()
        pair(2).contract()  # 2 is now the most recently used, 3 the least
        pair(5).contract()  # evicts 3
        assert tn.cache_info()["size"] == 3
        before = tn.cache_info()
        for n in (2, 4, 5):
            pair(n).contract()
        after = tn.cache_info()
        assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (3, 0)
        pair(3).contract()
        assert tn.cache_info()["misses"] == after["misses"] + 1
    finally:
        tn.set_cache_size(1024)


def test_a_repeated_contraction_does_no_planning(monkeypatch):
    import importlib

    contract_module = importlib.import_module("tensornet.core.contract")
    calls = []
    real = contract_module.path_costs
    monkeypatch.setattr(
        contract_module, "path_costs", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    tn.clear_cache()
    shapes = [(3, 4), (4, 5), (5, 2)]
    legs = [("i", "j"), ("j", "k"), ("k", "l")]

    def fresh():
        return TensorNetwork([Node(torch.randn(*s), l) for s, l in zip(shapes, legs)])

    fresh().contract()
    assert len(calls) == 1
    for _ in range(3):
        fresh().contract()  # new networks, same structure: served from the cache
    net = fresh()
    for _ in range(3):
        net.contract()  # and the per-network memo
    assert len(calls) == 1
    assert tn.cache_info()["misses"] == 1
