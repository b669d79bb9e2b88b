"""Fast value checks of the planned einsum (hyperedges, batch legs) against numpy float64."""

import copy
import pickle

import numpy as np
import opt_einsum as oe
import pytest
import torch

import tensornet as tn
from tensornet.core.einsum import EinsumProgram, einsum, plan_einsum

DT = torch.float64


@pytest.fixture(autouse=True)
def fresh_plan_cache():
    """Every test plans afresh (no plan cached by an earlier test or process)."""
    tn.clear_cache()


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def reference(inputs, tensors, output):
    """numpy.einsum in float64 over the same legs (letters assigned here)."""
    letters = {}
    for legs in (*inputs, output):
        for leg in legs:
            letters.setdefault(leg, chr(ord("a") + len(letters)))
    eq = ",".join("".join(letters[x] for x in legs) for legs in inputs)
    eq += "->" + "".join(letters[x] for x in output)
    return torch.from_numpy(np.asarray(np.einsum(eq, *[t.numpy() for t in tensors])))


# (legs of each operand, their shapes, output legs): hyperedges, batch legs, outer products,
# full traces, output orders unlike the input order
CASES = [
    ([("i", "r"), ("j", "r"), ("k", "r")], [(4, 3), (5, 3), (6, 3)], ("k", "i", "j")),
    ([("b", "i"), ("b", "i", "j"), ("j", "b")], [(2, 3), (2, 3, 4), (4, 2)], ("b",)),
    ([("g", "x", "r"), ("g", "r", "y"), ("g", "x")], [(2, 3, 4), (2, 4, 5), (2, 3)], ("y", "g")),
    ([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")], [(2, 3), (3, 4), (4, 5), (5, 2)], ()),
    ([("p",), ("q",)], [(3,), (4,)], ("q", "p")),
    ([("s", "t", "u"), ("u", "v"), ("v", "s"), ("t", "w")],
     [(2, 3, 4), (4, 5), (5, 2), (3, 2)], ("w",)),
]  # fmt: skip


@pytest.mark.parametrize("optimize", ["auto", "greedy", "optimal"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_einsum_matches_numpy(case, optimize):
    """Every einsum (any optimizer) equals numpy.einsum in float64."""
    inputs, shapes, output = CASES[case]
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    out = einsum(inputs, tensors, output, optimize=optimize)
    torch.testing.assert_close(out, reference(inputs, tensors, output), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_plan_reports_opt_einsums_costs(case):
    """The plan's path and costs are opt_einsum's for the same equation and optimizer."""
    inputs, shapes, output = CASES[case]
    plan, _ = plan_einsum(inputs, shapes, output, optimize="greedy")
    path, info = oe.contract_path(plan.equation, *shapes, shapes=True, optimize="greedy")
    assert plan.path == tuple(tuple(s) for s in path)
    assert (plan.flops, plan.naive_flops) == (int(info.opt_cost), int(info.naive_cost))
    assert plan.largest_intermediate == int(info.largest_intermediate)
    assert plan.optimizer == "greedy"
    assert plan.inputs == tuple(tuple(x) for x in inputs) and plan.output == output


def test_plan_equation_assigns_symbols_in_order_of_appearance():
    """Legs become opt_einsum symbols in order of first appearance; the output follows."""
    plan, _ = plan_einsum([("x", "r"), ("y", "r"), ("z", "r")], [(2, 3)] * 3, ("z", "x", "y"))
    assert plan.equation == "ab,cb,db->dac"


def test_program_steps_keep_only_the_legs_still_needed():
    """Each step keeps the legs a later operand or the output needs, in order of appearance;
    the last step writes the output order."""
    inputs = [("i", "r"), ("j", "r"), ("k", "r")]
    program = EinsumProgram(inputs, [(0, 1), (0, 1)], ("i", "j", "k"))
    assert program.steps == (((1, 0), "ab,cb->abc"), ((1, 0), "abc,db->cad"))
    program = EinsumProgram([("i", "j"), ("j", "k"), ("k", "l")], [(1, 2), (0, 1)], ("l", "i"))
    assert program.steps == (((2, 1), "ab,ca->bc"), ((1, 0), "ab,cb->ac"))


def test_explicit_path_is_followed_and_named():
    """An explicit path (lists, numpy ints) is used as given; the plan says "explicit-path"."""
    inputs, shapes, output = [("a", "b"), ("b", "c"), ("c", "d")], [(2, 30), (30, 40), (40, 5)], (
        "a", "d",
    )  # fmt: skip
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    for path, flops in (([[np.int64(0), 1], [0, 1]], 2 * 2 * 30 * 40 + 2 * 2 * 40 * 5),
                        ([(1, 2), (0, 1)], 2 * 30 * 40 * 5 + 2 * 2 * 30 * 5)):  # fmt: skip
        plan, program = plan_einsum(inputs, shapes, output, optimize=path)
        assert plan.path == tuple(tuple(int(i) for i in s) for s in path)
        assert plan.optimizer == "explicit-path" and plan.flops == flops
        torch.testing.assert_close(program(*tensors), reference(inputs, tensors, output))
        out = einsum(inputs, tensors, output, optimize=path)
        torch.testing.assert_close(out, reference(inputs, tensors, output))


def test_memory_limit_reaches_the_path_search():
    """``memory_limit`` is opt_einsum's: below every intermediate it forces one einsum."""
    inputs, shapes, output = [("a", "b"), ("b", "c"), ("c", "d")], [(2, 30), (30, 40), (40, 5)], (
        "a", "d",
    )  # fmt: skip
    free, _ = plan_einsum(inputs, shapes, output, optimize="greedy")
    limited, program = plan_einsum(inputs, shapes, output, optimize="greedy", memory_limit=10)
    assert free.path == ((1, 2), (0, 1)) and free.flops == 12600
    assert limited.path == ((0, 1, 2),) and limited.flops == 36000 == limited.naive_flops
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    torch.testing.assert_close(program(*tensors), reference(inputs, tensors, output))


def test_single_operand_transposes_and_sums():
    """One operand: a permutation and partial sum; its costs are the operand's size."""
    t = rand(2, 3, 4)
    plan, program = plan_einsum([("a", "b", "c")], [(2, 3, 4)], ("c", "a"))
    assert plan.path == ((0,),) and plan.flops == plan.naive_flops == 24
    assert plan.optimizer == "auto"  # the name given (nothing to search for one operand)
    assert plan_einsum([("a", "b")], [(2, 3)], ("b",), optimize="greedy")[0].optimizer == "greedy"
    assert plan_einsum([("a", "b")], [(2, 3)], ("b",), [(0,)])[0].optimizer == "explicit-path"
    assert plan.largest_intermediate == 8
    torch.testing.assert_close(program(t), t.sum(1).T)
    torch.testing.assert_close(einsum([("a", "b", "c")], [t], ()), t.sum())


def test_fifty_two_legs_in_one_step_and_not_more():
    """A step may join 52 distinct legs (one letter each); a 53rd is refused by name."""
    legs52 = tuple(f"l{k}" for k in range(52))
    t = rand(*([1] * 51 + [2]))
    out = einsum([legs52], [t], legs52[::-1])
    torch.testing.assert_close(out, t.permute(*range(51, -1, -1)))
    legs53 = (*legs52, "extra")
    with pytest.raises(ValueError, match="one einsum step joins more than 52 distinct legs"):
        plan_einsum([legs53], [(1,) * 53], legs53)


def test_repeated_plan_is_cached_and_cache_is_bounded():
    """The same structure and shapes return the cached plan and program, from the one cache
    (1024 entries by default) that ``tn.cache_info`` reports."""
    first = plan_einsum([("i", "j"), ("j", "k")], [(2, 3), (3, 4)], ("i", "k"))
    again = plan_einsum([["i", "j"], ["j", "k"]], [[2, 3], [3, 4]], ["i", "k"])
    assert again[0] is first[0] and again[1] is first[1]
    assert tn.cache_info() == {"hits": 1, "misses": 1, "size": 1, "maxsize": 1024}


def test_einsum_plans_with_the_optimizer_given_auto_by_default():
    """``einsum`` plans (and caches) with its ``optimize``, ``"auto"`` when not given, like
    ``plan_einsum``."""
    inputs, shapes = [("u", "v"), ("v", "w"), ("w", "u")], [(2, 7), (7, 3), (3, 2)]
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    for given, name in ((), "auto"), (("greedy",), "greedy"):
        einsum(inputs, tensors, (), *given)
        hits = tn.cache_info()["hits"]
        plan, _ = plan_einsum(inputs, shapes, (), optimize=name)
        assert tn.cache_info()["hits"] == hits + 1 and plan.optimizer == name
    assert plan_einsum(inputs, shapes, ())[0].optimizer == "auto"


def test_program_refuses_a_path_that_leaves_operands():
    """A path that does not contract everything to one tensor is refused, with the count."""
    with pytest.raises(ValueError, match=r"the path leaves 2 operands uncontracted: \[\(0, 1\)\]"):
        EinsumProgram([("a", "b"), ("b", "c"), ("c", "d")], [(0, 1)], ("a", "d"))


@pytest.mark.parametrize(
    "inputs, shapes, output, message",
    [
        ([], [], (), "einsum needs at least one operand"),
        ([("a",), ("a",)], [(2,)], (), r"einsum: 2 leg lists for 1 shapes"),
        ([("a",), ("a", "b")], [(2,), (2,)], (),
         r"einsum: operand 1 has legs \('a', 'b'\) but shape \(2,\)"),
        ([("a",), ("b", "b")], [(2,), (3, 3)], (),
         r"einsum: operand 1 repeats a leg: \('b', 'b'\)"),
        ([("a", "r"), ("r",)], [(2, 3), (4,)], (), "einsum: leg 'r' has sizes 3 and 4"),
        ([("a", "b")], [(2, 3)], ("a", "c"),
         r"einsum: output \('a', 'c'\) must name distinct legs of the operands"),
        ([("a", "b")], [(2, 3)], ("a", "a"),
         r"einsum: output \('a', 'a'\) must name distinct legs of the operands"),
    ],
)  # fmt: skip
def test_bad_einsums_are_refused_by_name(inputs, shapes, output, message):
    """Malformed leg lists, shapes and outputs are refused up front, naming the culprit."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        plan_einsum(inputs, shapes, output)


def test_program_is_straight_line_code_with_literal_steps():
    """The program is generated code: operand names and equations are literals (nothing for
    ``torch.compile`` to make symbolic); a step that neither permutes nor sums is skipped."""
    program = EinsumProgram([("i", "r"), ("j", "r"), ("k", "r")], [(0, 1), (0, 1)], ("i", "j", "k"))
    assert program.source == (
        "def run(t0, t1, t2):\n"
        "    t3 = einsum('ab,cb->abc', t1, t0)\n"
        "    t4 = einsum('abc,db->cad', t3, t2)\n"
        "    return t4\n"
    )
    same = EinsumProgram([("i", "j")], [(0,)], ("i", "j"))
    assert same.source == "def run(t0):\n    return t0\n"
    t = rand(2, 3)
    assert same(t) is t
    flip = EinsumProgram([("i", "j")], [(0,)], ("j", "i"))
    assert "einsum('ab->ba', t0)" in flip.source
    torch.testing.assert_close(flip(t), t.T)


def test_programs_pickle_and_deep_copy():
    """Pickling or copying a program regenerates its code from the steps."""
    inputs, shapes, output = CASES[5]
    _, program = plan_einsum(inputs, shapes, output)
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    for other in (pickle.loads(pickle.dumps(program)), copy.deepcopy(program)):
        assert other.steps == program.steps and other.source == program.source
        torch.testing.assert_close(other(*tensors), program(*tensors), rtol=0, atol=0)


def test_programs_with_different_steps_compile_through_one_function():
    """One compiled function running programs whose steps take different operand positions
    (Dynamo used to turn the positions into SymInts after the first recompile and fail)."""
    a = EinsumProgram([("i", "j"), ("j", "k"), ("k", "l")], [(1, 2), (0, 1)], ("l", "i"))
    b = EinsumProgram([("i", "j"), ("j", "k"), ("k", "l")], [(0, 1), (0, 1)], ("l", "i"))
    c = EinsumProgram([("i", "j"), ("j", "k"), ("k", "l")], [(0, 2), (0, 1)], ("l", "i"))
    tensors = [rand(2, 3), rand(3, 4, seed=1), rand(4, 5, seed=2)]
    run = torch.compile(lambda program, *ts: program(*ts), backend="eager", fullgraph=True)
    expected = reference([("i", "j"), ("j", "k"), ("k", "l")], tensors, ("l", "i"))
    for program in (a, b, c, a):
        torch.testing.assert_close(run(program, *tensors), expected, rtol=1e-12, atol=1e-12)


def test_one_cache_counts_clears_and_bounds_both_contraction_routes():
    """Planned einsums and network contractions share one cache: ``tn.cache_info`` counts the
    hits and misses of both, ``tn.clear_cache`` empties both, ``tn.set_cache_size`` bounds both."""
    a, b = rand(3, 4, seed=1), rand(4, 5, seed=2)
    net = tn.TensorNetwork([tn.Node(a, ("i", "j")), tn.Node(b, ("j", "k"))])
    hyper = [("i", "r"), ("j", "r"), ("k", "r")]
    tensors = [rand(2, 3, seed=k) for k in range(3)]
    tn.clear_cache()
    net.contract(output=("i", "k"))  # network route: miss
    einsum(hyper, tensors, ("i", "j", "k"))  # einsum route: miss
    assert tn.cache_info() == {"hits": 0, "misses": 2, "size": 2, "maxsize": 1024}
    einsum(hyper, tensors, ("i", "j", "k"))
    assert tn.cache_info()["hits"] == 1 and tn.cache_info()["size"] == 2
    first = plan_einsum(hyper, [(2, 3)] * 3, ("k", "j", "i"))
    tn.clear_cache()
    assert tn.cache_info() == {"hits": 0, "misses": 0, "size": 0, "maxsize": 1024}
    again = plan_einsum(hyper, [(2, 3)] * 3, ("k", "j", "i"))
    assert again[0] is not first[0] and again[0] == first[0]  # planned afresh
    tn.set_cache_size(2)
    try:
        for k in range(1, 4):
            plan_einsum(hyper, [(k, 3)] * 3, ("i", "j", "k"))
        assert tn.cache_info()["size"] == 2
        net.contract(output=("k", "i"))
        assert tn.cache_info()["size"] == 2
        plan_einsum(hyper, [(1, 3)] * 3, ("i", "j", "k"))  # the oldest was dropped: planned again
        assert tn.cache_info()["misses"] == 6
    finally:
        tn.set_cache_size(1024)


def test_einsum_refuses_the_network_policy_and_names_unknown_optimizers():
    message = (
        r"^einsum: optimize must be an opt_einsum optimizer name, an explicit path or a "
        r"PathOptimizer \(the default policy plans networks only\)$"
    )
    with pytest.raises(TypeError, match=message):
        plan_einsum([("a", "b")], [(2, 3)], ("a",), optimize=None)
    with pytest.raises(TypeError, match=message):
        plan_einsum([("a", "b")], [(2, 3)], ("a",), optimize=tn.DefaultOptimizer())
    with pytest.raises(ValueError, match="^optimize='fastest' is not an opt_einsum path optimizer"):
        plan_einsum([("a", "b"), ("b", "c")], [(2, 3), (3, 4)], ("a", "c"), optimize="fastest")


def test_einsum_takes_a_path_optimizer_object():
    inputs, shapes, output = [("a", "b"), ("b", "c"), ("c", "d")], [(2, 30), (30, 40), (40, 5)], (
        "a", "d",
    )  # fmt: skip
    plan, program = plan_einsum(inputs, shapes, output, optimize=oe.paths.BranchBound())
    assert plan.optimizer == "BranchBound" and plan.path == ((0, 1), (0, 1))
    assert plan.flops == 2 * 2 * 30 * 40 + 2 * 2 * 40 * 5  # better than greedy's 12600
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    torch.testing.assert_close(program(*tensors), reference(inputs, tensors, output))
