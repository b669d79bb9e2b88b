"""The default plan choice, the size limit, slicing, and the per-network fast path."""

import importlib.util
import math

import numpy as np
import opt_einsum as oe
import pytest
import torch
from torch.autograd import gradcheck

import tensornet as tn
from tensornet import Node, TensorNetwork
from tensornet.core.pathfind import DefaultOptimizer, estimate_seconds, path_costs


def peps_norm(rows, cols, bond, phys=2, seed=0):
    """Nodes of <psi|psi> for a random PEPS: ket and bra layers sharing the physical legs."""
    g = torch.Generator().manual_seed(seed)
    nodes = []
    for i in range(rows):
        for j in range(cols):
            virt = []
            if i > 0:
                virt.append(f"v{i - 1},{j}")
            if i < rows - 1:
                virt.append(f"v{i},{j}")
            if j > 0:
                virt.append(f"h{i},{j - 1}")
            if j < cols - 1:
                virt.append(f"h{i},{j}")
            t = torch.randn(phys, *[bond] * len(virt), generator=g, dtype=torch.float64)
            t = t / math.sqrt(t.numel())
            for side in "kb":
                nodes.append(Node(t, (f"p{i},{j}", *(side + v for v in virt))))
    return TensorNetwork(nodes)


def dense_value(net, output=()):
    """Reference: opt_einsum on numpy arrays (its own tensordot/einsum steps), in the
    network's dtype."""
    symbols = {leg: oe.get_symbol(k) for k, leg in enumerate(net.legs)}
    lhs = ",".join("".join(symbols[x] for x in node.legs) for node in net)
    equation = lhs + "->" + "".join(symbols[x] for x in output)
    return oe.contract(equation, *[node.tensor.numpy() for node in net], optimize="greedy")


def symbolic(net):
    symbols = {leg: oe.get_symbol(k) for k, leg in enumerate(net.legs)}
    inputs = [frozenset(symbols[x] for x in node.legs) for node in net]
    sizes = {symbols[leg]: net.dim(leg) for leg in net.legs}
    return inputs, sizes


# -- the default optimizer --------------------------------------------------------------------
def test_default_choice_follows_size_and_cost():
    tiny = TensorNetwork(Node(torch.ones(2, 2), (f"b{i}", f"b{i + 1}")) for i in range(6))
    assert tiny.plan().optimizer == "default:greedy"  # runs in microseconds: no search
    three = TensorNetwork(Node(torch.ones(9, 9), (f"b{i}", f"b{i + 1}")) for i in range(3))
    assert three.plan().optimizer == "default:optimal"
    ring = TensorNetwork(
        Node(torch.ones(60, 60, 4), (f"r{i}", f"r{(i + 1) % 8}", f"o{i}")) for i in range(8)
    )
    plan = ring.plan()
    assert plan.optimizer in ("default:greedy", "default:dp")  # <= 12 tensors: exact DP tried
    assert plan.search_seconds > 0
    assert plan.estimated_seconds > 0


def test_default_search_on_a_loopy_network_beats_greedy():
    net = peps_norm(4, 4, 4)
    inputs, sizes = symbolic(net)
    greedy = oe.paths.greedy(inputs, frozenset(), sizes)
    for opt in (DefaultOptimizer(), DefaultOptimizer(use_cotengra=False)):
        choice = opt.search(inputs, frozenset(), sizes)
        assert choice.optimizer != "greedy"  # the greedy path is slow enough to search
        assert choice.estimated_seconds <= estimate_seconds(inputs, frozenset(), sizes, greedy)
        assert choice.budget_seconds > 0
        assert (
            path_costs(inputs, frozenset(), sizes, choice.path)[0]
            < path_costs(inputs, frozenset(), sizes, greedy)[0]
        )
    plan = net.plan()
    assert plan.optimizer.startswith("default:") and plan.search_seconds > 0
    np.testing.assert_allclose(net.contract().tensor.numpy(), dense_value(net), rtol=1e-10)


def test_no_budget_means_the_greedy_path():
    net = peps_norm(4, 4, 4)
    plan = net.plan(optimize=DefaultOptimizer(reuse=0))
    assert plan.optimizer == "default:greedy"


def test_explicit_optimize_overrides_the_policy():
    net = peps_norm(3, 3, 2)
    inputs, sizes = symbolic(net)
    plan = net.plan(optimize="greedy")
    assert plan.optimizer == "greedy"
    assert plan.path == tuple(oe.paths.greedy(inputs, frozenset(), sizes))
    assert net.plan(optimize=list(plan.path)).optimizer == "explicit-path"


def test_costs_agree_with_opt_einsum():
    net = peps_norm(3, 3, 2)
    for optimize in ("greedy", "branch-2", None):
        plan = net.plan(optimize=optimize)
        shapes = [node.shape for node in net]
        info = oe.contract_path(plan.equation, *shapes, shapes=True, optimize=list(plan.path))[1]
        assert plan.flops == int(info.opt_cost)
        assert plan.largest_intermediate == int(info.largest_intermediate)
        assert plan.naive_flops == int(info.naive_cost)


def test_equal_default_optimizers_share_a_cached_plan():
    tn.clear_cache()
    net = peps_norm(2, 3, 2)
    net.plan(optimize=DefaultOptimizer(reuse=3.0))
    net.plan(optimize=DefaultOptimizer(reuse=3.0))
    assert tn.cache_info()["misses"] == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reuse": -1}, "reuse"),
        ({"fraction": float("nan")}, "fraction"),
        ({"max_seconds": "1"}, "max_seconds"),
        ({"use_cotengra": "yes"}, "use_cotengra"),
    ],
)
def test_bad_default_optimizer_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DefaultOptimizer(**kwargs)


def test_default_optimizer_works_as_an_opt_einsum_optimizer():
    shapes = [(4, 5), (5, 6), (6, 7), (7, 4), (4, 3)]
    path, info = oe.contract_path(
        "ab,bc,cd,de,ef->af", *shapes, shapes=True, optimize=DefaultOptimizer()
    )
    assert len(path) == 4 and info.opt_cost > 0


def test_cotengra_is_used_by_default_when_installed():
    pytest.importorskip("cotengra")
    net = peps_norm(4, 4, 4)
    inputs, sizes = symbolic(net)
    expected = "cotengrust-greedy" if importlib.util.find_spec("cotengrust") else "cotengra-hyper"
    assert net.plan().optimizer == f"default:{expected}"
    choice = DefaultOptimizer(use_cotengra=True).search(inputs, frozenset(), sizes)
    assert choice.optimizer == expected


# -- the size limit and slicing ---------------------------------------------------------------
def chain(n=4, bond=30, end=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    nodes = [Node(torch.randn(end, bond, generator=g, dtype=dtype), ("i", "b0"))]
    for k in range(n - 2):
        nodes.append(
            Node(torch.randn(bond, bond, generator=g, dtype=dtype), (f"b{k}", f"b{k + 1}"))
        )
    nodes.append(Node(torch.randn(bond, end, generator=g, dtype=dtype), (f"b{n - 2}", "l")))
    return TensorNetwork(nodes)


def test_a_huge_result_is_refused_before_any_planning():
    # an MPS of 60 sites, physical dim 2, bond dim 1: tiny tensors, a 2**60-element result
    net = TensorNetwork(
        Node(torch.ones(2, 1, 1), (f"o{k}", f"c{k}", f"c{k + 1}")) for k in range(60)
    )
    tn.clear_cache()
    with pytest.raises(ValueError, match=r"1,152,921,504,606,846,976 elements") as err:
        net.contract()
    assert "more)" in str(err.value)  # the 60 output legs are shortened
    assert "tn.set_max_intermediate" in str(err.value)
    assert tn.cache_info()["misses"] == 0  # nothing was planned


def test_to_dense_of_a_format_obeys_the_limit():
    cores = [torch.ones(1, 2, 1, dtype=torch.float64) for _ in range(40)]
    fmt = tn.TT.from_cores(cores)
    with pytest.raises(ValueError, match="above the limit of 268,435,456 elements"):
        fmt.to_dense()


def test_limit_is_configurable_and_names_itself():
    net = chain()
    assert tn.get_max_intermediate() == 2**28
    assert net.plan().largest_intermediate == 60
    try:
        tn.set_max_intermediate(50)
        with pytest.raises(ValueError, match="above the limit of 50 elements") as err:
            net.contract()
        assert "slicing=True" in str(err.value)
        assert net.plan().largest_intermediate == 60  # plans are reported, not refused
        tn.set_max_intermediate(None)
        net.contract()  # no limit
    finally:
        tn.set_max_intermediate(2**28, slicing=False)
    with pytest.raises(ValueError, match="above max_intermediate=50"):
        net.contract(max_intermediate=50)
    with pytest.raises(TypeError, match="max intermediate must be an int"):
        tn.set_max_intermediate(2.5)
    with pytest.raises(ValueError, match="max_intermediate must be >= 1"):
        net.contract(max_intermediate=0)
    with pytest.raises(TypeError, match="slicing must be"):
        net.contract(slicing="yes")


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_sliced_contraction_equals_the_whole(dtype):
    net = peps_norm(3, 3, 3).to(dtype=dtype)
    full = net.plan()
    limit = full.largest_intermediate // 8
    sliced = net.plan(max_intermediate=limit, slicing=True)
    assert sliced.sliced and sliced.slices > 1
    assert sliced.largest_intermediate <= limit
    assert sliced.path == full.path
    assert "sliced:" in str(sliced)
    got = net.contract(max_intermediate=limit, slicing=True).tensor
    np.testing.assert_allclose(got.numpy(), dense_value(net), rtol=1e-10)
    with pytest.raises(ValueError, match="slicing=True"):
        net.contract(max_intermediate=limit)


def test_slicing_turned_on_globally_keeps_open_legs():
    net = chain(n=5, bond=20, end=3)
    try:
        tn.set_max_intermediate(40, slicing=True)
        got = net.contract(output=("l", "i"))
        assert net.plan(output=("l", "i")).sliced
    finally:
        tn.set_max_intermediate(2**28, slicing=False)
    np.testing.assert_allclose(got.tensor.numpy(), dense_value(net, ("l", "i")), rtol=1e-10)


def test_slicing_cannot_go_below_the_result():
    net = chain(n=3, bond=4, end=10)
    with pytest.raises(ValueError, match="result alone has 100 elements"):
        net.contract(max_intermediate=50, slicing=True)


def test_gradients_through_a_sliced_contraction():
    g = torch.Generator().manual_seed(3)
    shapes = {
        "A": ((3, 6), ("i", "j")),
        "B": ((6, 5, 2), ("j", "k", "x")),
        "C": ((5, 3), ("k", "i")),
    }
    tensors = [
        torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
        for s, _ in shapes.values()
    ]

    def f(*ts):
        nodes = [Node(t, legs, name=n) for t, (n, (_, legs)) in zip(ts, shapes.items())]
        return TensorNetwork(nodes).contract(max_intermediate=4, slicing=True).tensor

    assert (
        TensorNetwork([Node(t, legs) for t, (_, legs) in zip(tensors, shapes.values())])
        .plan(max_intermediate=4, slicing=True)
        .sliced
    )
    assert gradcheck(f, tuple(tensors))


# -- the per-network fast path ----------------------------------------------------------------
def test_repeated_calls_are_memoized_but_follow_clear_cache():
    tn.clear_cache()
    net = chain()
    net.contract()
    for _ in range(3):
        net.contract()
    assert tn.cache_info() == {"hits": 3, "misses": 1, "size": 1, "maxsize": 1024}
    tn.clear_cache()
    net.contract()
    assert tn.cache_info()["misses"] == 1


def test_in_place_dtype_change_is_noticed():
    t = torch.nn.Parameter(torch.randn(3, 4))
    net = TensorNetwork([Node(t, ("i", "j")), Node(torch.randn(4, 2), ("j", "k"))])
    assert net.contract().tensor.dtype == torch.float32
    t.data = t.data.double()  # what Module.double() does to parameters
    out = net.contract()
    assert out.tensor.dtype == torch.float64
    torch.testing.assert_close(out.tensor, t.data @ net.node("n1").tensor.double())


def test_mixed_dtypes_are_promoted_on_repeat_calls():
    net = TensorNetwork(
        [
            Node(torch.ones(2, 3, dtype=torch.float32), ("i", "j")),
            Node(torch.ones(3, dtype=torch.float64), ("j",)),
        ]
    )
    for _ in range(2):
        out = net.contract()
        assert out.tensor.dtype == torch.float64
        torch.testing.assert_close(out.tensor, torch.full((2,), 3.0, dtype=torch.float64))


def test_output_errors_shorten_long_leg_lists():
    net = TensorNetwork([Node(torch.ones([1] * 30), [f"leg{k}" for k in range(30)])])
    with pytest.raises(ValueError, match=r"missing \['leg1', .*, \.\.\. 21 more\]"):
        net.contract(output=("leg0",))


def test_einsums_that_are_not_networks_run_through_opt_einsum():
    from tensornet.core.contract import compiled

    # a leg on three operands and a kept shared leg (batch)
    inputs = (("b", "i"), ("b", "i", "j"), ("j", "b"))
    shapes = ((2, 3), (2, 3, 4), (4, 2))
    _, program = compiled(inputs, shapes, ("b",))
    ts = [torch.randn(s, dtype=torch.float64) for s in shapes]
    torch.testing.assert_close(program(*ts), torch.einsum("bi,bij,jb->b", *ts))


def test_slices_are_chunks_when_that_is_enough():
    from tensornet.core.slicing import SlicedContraction, choose_chunks

    net = chain(n=3, bond=12, end=4)  # (i,b0) (b0,b1) (b1,l); the path's largest is 48
    plan = net.plan(optimize=[(0, 1), (0, 1)])
    assert plan.largest_intermediate == 48
    sliced = net.plan(optimize=[(0, 1), (0, 1)], max_intermediate=24, slicing=True)
    assert sliced.sliced == ("b1",) and sliced.slices == 2  # halves of b1, not 12 values
    got = net.contract(optimize=[(0, 1), (0, 1)], max_intermediate=24, slicing=True)
    np.testing.assert_allclose(got.tensor.numpy(), dense_value(net, ("i", "l")), rtol=1e-12)
    inputs, sizes = symbolic(net)
    assert choose_chunks(inputs, frozenset(), sizes, [(0, 1), (0, 1)], limit=10**6) == ()
    with pytest.raises(ValueError, match="does not divide"):
        SlicedContraction(lambda *t: t[0], [("a",)], ["a"], [6], [4])
