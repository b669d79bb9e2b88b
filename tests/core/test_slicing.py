"""Fast checks of sliced contraction: the leg choice, chunk sizes, and slices summing to the
unsliced result (float64, numpy/opt_einsum references)."""

import math

import numpy as np
import opt_einsum as oe
import pytest
import torch
from opt_einsum.testing import rand_equation

from tensornet.core.slicing import (
    SlicedContraction,
    _over_limit,
    choose_chunks,
    choose_sliced_legs,
)

DT = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def parse(equation):
    lhs, out = equation.split("->")
    return [frozenset(x) for x in lhs.split(",")], frozenset(out), lhs.split(","), out


def reference_over_limit(equation, shapes, size_dict, path, limit):
    """(largest, excess, legs above, FLOPs) from opt_einsum's own contraction list."""
    _, info = oe.contract_path(equation, *shapes, shapes=True, optimize=list(path))
    largest, excess, over = 0, 0, frozenset()
    for step in info.contraction_list:
        result = step[2].split("->")[1]
        size = math.prod(size_dict[x] for x in result)
        largest = max(largest, size)
        if size > limit:
            excess += size - limit
            over |= frozenset(result)
    return largest, excess, over, int(info.opt_cost)


# random networks (opt_einsum's generator; some with a leg on every operand), pairwise paths
NETWORKS = [
    rand_equation(n, reg, n_out=n_out, d_min=2, d_max=5, seed=seed, global_dim=glob,
                  return_size_dict=True)
    for n, reg, n_out, seed, glob in [(4, 2, 1, 0, False), (5, 3, 2, 1, False), (5, 3, 0, 2, True),
                                      (6, 3, 1, 3, False), (4, 3, 2, 4, True)]
] + [
    # a summed leg on three operands, joined two at a time; a leg of size 0
    ("ar,br,cr->abc", [(2, 5), (3, 5), (4, 5)], dict(a=2, b=3, c=4, r=5)),
    ("ab,bc->ac", [(0, 3), (3, 4)], dict(a=0, b=3, c=4)),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(NETWORKS)))
def test_intermediate_sizes_and_flops_agree_with_opt_einsum(case):
    """Largest intermediate, elements above the limit, their legs and the FLOPs of a pairwise
    path are what opt_einsum's contraction list says."""
    equation, shapes, size_dict = NETWORKS[case]
    path, info = oe.contract_path(equation, *shapes, shapes=True, optimize="greedy")
    inputs, output, _, _ = parse(equation)
    for limit in (-1, 0, 10, int(info.largest_intermediate) // 2, int(info.largest_intermediate)):
        got = _over_limit(inputs, output, size_dict, path, limit)
        assert got == reference_over_limit(equation, shapes, size_dict, path, limit)


@pytest.mark.parametrize("case", range(len(NETWORKS) - 1))  # not the empty one
def test_sliced_contraction_equals_the_whole(case):
    """Chunks chosen for half the largest intermediate keep every intermediate within it, and
    the slices add up to the unsliced numpy result."""
    equation, shapes, size_dict = NETWORKS[case]
    path, info = oe.contract_path(equation, *shapes, shapes=True, optimize="greedy")
    inputs, output, lhs, out = parse(equation)
    limit = max(int(info.largest_intermediate) // 2, math.prod(size_dict[x] for x in out))
    chosen = choose_chunks(inputs, output, size_dict, path, limit)
    assert chosen and all(leg not in output and 1 <= c < size_dict[leg] for leg, c in chosen)
    sizes = {**size_dict, **dict(chosen)}
    assert _over_limit(inputs, output, sizes, path, limit)[0] <= limit
    tensors = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    inner_shapes = [tuple(sizes[x] for x in legs) for legs in lhs]
    inner = oe.contract_expression(equation, *inner_shapes, optimize=list(path))
    legs = [leg for leg, _ in chosen]
    program = SlicedContraction(
        inner, [tuple(x) for x in lhs], legs, [size_dict[x] for x in legs], [c for _, c in chosen]
    )
    assert program.slices == math.prod(size_dict[x] // c for x, c in chosen)
    expected = np.einsum(equation, *[t.numpy() for t in tensors])
    np.testing.assert_allclose(program(*tensors).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_greedy_slices_the_leg_that_removes_most_excess():
    """b (size 100) and c (size 10) both shrink the outer product; only b brings it under."""
    ins = [frozenset("ab"), frozenset("bc"), frozenset("cd")]
    sizes = dict(a=2, b=100, c=10, d=2)
    assert choose_sliced_legs(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)], limit=100) == ("b",)
    # under a tighter limit both are needed, b first
    assert choose_sliced_legs(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)], limit=4) == (
        "b", "c",
    )  # fmt: skip
    assert choose_chunks(ins, frozenset("ad"), sizes, [(0, 2), (0, 1)], limit=4) == (
        ("b", 1), ("c", 1),
    )  # fmt: skip


def test_ties_in_excess_go_to_fewer_flops_then_to_the_name():
    """Equal excess: the leg whose slices repeat fewer FLOPs wins, then the first name."""
    # cae,cb,d,edb->a along (d·edb)(cb·)(cae·), limit 6: slicing b or e each leaves no excess;
    # all slices together cost 288 FLOPs for b and 144 for e
    ins = [frozenset(x) for x in ("cae", "cb", "d", "edb")]
    sizes = dict(a=4, b=4, c=3, d=3, e=2)
    assert choose_sliced_legs(ins, frozenset("a"), sizes, [(2, 3), (1, 2), (0, 1)], 6) == ("e",)
    # ab·cd then ·bd, limit 12: b and d (both size 3) leave no excess at 108 FLOPs each: b
    ins = [frozenset("ab"), frozenset("cd"), frozenset("bd")]
    sizes = dict(a=2, b=3, c=2, d=3)
    assert _over_limit(ins, frozenset("ac"), sizes, [(0, 1), (0, 1)], 12) == (
        36, 24, frozenset("abcd"), 108,
    )  # fmt: skip
    assert choose_sliced_legs(ins, frozenset("ac"), sizes, [(0, 1), (0, 1)], limit=12) == ("b",)


def test_less_excess_beats_fewer_flops():
    """The leg that leaves fewer elements above the limit wins even if its slices cost more."""
    # cebda,e,cb,d->a, limit 4: slicing e leaves 4 elements above (288 FLOPs), d leaves 5 (264)
    ins = [frozenset(x) for x in ("cebda", "e", "cb", "d")]
    sizes = dict(a=3, b=3, c=2, d=2, e=3)
    path = [(0, 2), (0, 2), (0, 1)]
    assert choose_sliced_legs(ins, frozenset("a"), sizes, path, 4) == ("e", "d")
    assert choose_chunks(ins, frozenset("a"), sizes, path, 4) == (("e", 1), ("d", 1))


def test_impossible_limits_are_refused_with_the_sizes():
    """A result (or an intermediate of only kept legs) above the limit cannot be sliced."""
    ins = [frozenset("ab"), frozenset("bc")]
    sizes = dict(a=30, b=2, c=40)
    with pytest.raises(
        ValueError,
        match="^cannot slice the contraction below 1,000 elements: "
        "an intermediate of 1,200 elements has no summed leg left to slice$",
    ):
        choose_sliced_legs(ins, frozenset("ac"), sizes, [(0, 1)], limit=1000)
    with pytest.raises(ValueError, match="below 1,000 elements"):
        choose_chunks(ins, frozenset("ac"), sizes, [(0, 1)], limit=1000)


def test_no_slicing_needed_gives_nothing():
    """Within the limit: no legs, no chunks."""
    ins = [frozenset("ab"), frozenset("bc")]
    sizes = dict(a=3, b=4, c=5)
    assert choose_sliced_legs(ins, frozenset("ac"), sizes, [(0, 1)], limit=15) == ()
    assert choose_chunks(ins, frozenset("ac"), sizes, [(0, 1)], limit=15) == ()


def test_chunks_are_the_largest_divisor_that_fits():
    """The sliced leg is cut into the largest divisor chunk that keeps the limit."""
    ins = [frozenset("ab"), frozenset("bc"), frozenset("cd")]
    sizes = dict(a=2, b=100, c=100, d=2)
    path = [(0, 2), (0, 1)]
    for limit, chunk in ((400, 1), (999, 2), (1600, 4), (2000, 5), (3999, 5), (4000, 10)):
        assert choose_chunks(ins, frozenset("ad"), sizes, path, limit) == (("b", chunk),)
    sizes = dict(a=2, b=12, c=12, d=2)
    assert choose_chunks(ins, frozenset("ad"), sizes, path, limit=4 * 12 * 3) == (("b", 3),)


def test_sliced_runs_narrow_every_operand_holding_a_sliced_leg():
    """A leg on three operands, at different axes, sliced in chunks: same as one einsum."""
    a, b, c = rand(4, 6), rand(3, 6, 2, seed=1), rand(6, 5, seed=2)
    full = torch.einsum("ix,jxk,xl->ijkl", a, b, c)
    for chunk in (1, 2, 3, 6):
        program = SlicedContraction(
            lambda *t: torch.einsum("ix,jxk,xl->ijkl", *t),
            [("i", "x"), ("j", "x", "k"), ("x", "l")], ["x"], [6], [chunk],
        )  # fmt: skip
        assert program.slices == 6 // chunk
        torch.testing.assert_close(program(a, b, c), full)
    # two sliced legs on one operand, default chunks of 1
    m, v = rand(3, 4, seed=3), rand(4, seed=4)
    program = SlicedContraction(
        lambda x, y: torch.einsum("pq,q->", x, y), [("p", "q"), ("q",)], ["q", "p"], [4, 3]
    )
    assert program.slices == 12 and program.chunks == (1, 1)
    torch.testing.assert_close(program(m, v), m.mv(v).sum())


def test_slices_do_not_write_into_the_inputs():
    """The running sum is a copy: an inner step returning a view of an input leaves it intact."""
    x = rand(3, 4)
    before = x.clone()
    program = SlicedContraction(lambda t: t[:, 0], [("a", "b")], ["b"], [4])
    torch.testing.assert_close(program(x), before.sum(1))
    torch.testing.assert_close(x, before)


def test_gradients_flow_through_the_slices():
    """With gradients on, each slice's part joins the graph: exact gradients of the sum."""
    a = rand(3, 4).requires_grad_(True)
    b = rand(4, 2, seed=1).requires_grad_(True)
    program = SlicedContraction(lambda x, y: x @ y, [("i", "k"), ("k", "j")], ["k"], [4], [2])
    program(a, b).sum().backward()
    torch.testing.assert_close(a.grad, b.detach().sum(1).expand(3, 4))
    torch.testing.assert_close(b.grad, a.detach().sum(0)[:, None].expand(4, 2))
    with torch.no_grad():
        torch.testing.assert_close(program(a, b), a @ b)


@pytest.mark.parametrize("chunk", [0, 4, -2])
def test_chunks_must_divide_the_leg(chunk):
    """A chunk that does not divide its leg (or is below 1) is refused, naming the leg."""
    with pytest.raises(ValueError, match=f"^chunk {chunk} of sliced leg 'x' does not divide 6$"):
        SlicedContraction(lambda t: t, [("x",)], ["x"], [6], [chunk])


def test_repr_names_legs_slice_count_and_inner():
    """The repr gives the sliced legs, the slice count (with thousands separators), the inner."""

    class Inner:
        def __repr__(self):
            return "inner"

    program = SlicedContraction(Inner(), [("x", "y")], ["x", "y"], [50, 40], [1, 2])
    assert repr(program) == "SlicedContraction(legs ('x', 'y'), 1,000 slices, inner)"


def test_chunks_of_several_legs_cannot_grow():
    """With several legs sliced, each chunk is the largest divisor that keeps the limit given
    the others' chunks (growing any one breaks it); a leg no longer needed once later legs are
    cut is not sliced at all."""
    cases = [
        ("bef,agc,fd,eh,bchdg->a", dict(a=10, b=10, c=8, d=4, e=10, f=9, g=4, h=3),
         [(1, 4), (0, 2), (1, 2), (0, 1)], 30, ("b", "d", "f"), (("b", 1), ("d", 1), ("f", 3))),
        ("ehg,afce,b,dgh,fbcd->a", dict(a=3, b=12, c=7, d=2, e=5, f=2, g=9, h=7),
         [(0, 3), (1, 2), (0, 2), (0, 1)], 6, ("d", "e", "c"), (("e", 1), ("c", 1))),
    ]  # fmt: skip
    for equation, sizes, path, limit, legs, chunks in cases:
        inputs, output, _, _ = parse(equation)
        assert choose_sliced_legs(inputs, output, sizes, path, limit) == legs
        got = choose_chunks(inputs, output, sizes, path, limit)
        assert got == chunks
        cut = {**sizes, **dict.fromkeys(legs, 1), **dict(got)}
        # legs left out run whole
        cut.update({x: sizes[x] for x in legs if x not in dict(got)})
        assert _over_limit(inputs, output, cut, path, limit)[0] <= limit
        for leg, c in got:
            bigger = [d for d in range(c + 1, sizes[leg] + 1) if sizes[leg] % d == 0]
            assert all(
                _over_limit(inputs, output, {**cut, leg: d}, path, limit)[0] > limit for d in bigger
            )


def test_slices_accumulate_in_place_unless_gradients_are_needed():
    """Without gradients one copy of the first slice receives the others in place (no new
    tensor per slice); with gradients the sum is built out of place, without copies."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    a = rand(3, 4)
    b = rand(4, 2, seed=1)
    program = SlicedContraction(lambda x, y: x @ y, [("i", "k"), ("k", "j")], ["k"], [4])
    for grad, expected in ((False, ["clone", "add_", "add_", "add_"]),
                           (True, ["add", "add", "add"])):  # fmt: skip
        x, y = a.clone().requires_grad_(grad), b.clone().requires_grad_(grad)
        with Ops() as ops:
            out = program(x, y)
        sums = [n.split(".")[0] for n in ops.names if n.split(".")[0] in ("clone", "add", "add_")]
        assert sums == expected
        torch.testing.assert_close(out.detach(), a @ b)
    with torch.no_grad(), Ops() as ops:
        program(a.clone().requires_grad_(True), b)
    assert [n.split(".")[0] for n in ops.names].count("add_") == 3
