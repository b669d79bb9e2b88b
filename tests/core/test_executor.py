"""The layout-planning executor: values against numpy, copies avoided, batched steps."""

import math

import numpy as np
import opt_einsum as oe
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tensornet.core.contract import einsum_equation
from tensornet.core.executor import Contraction, linear_to_pairs


@st.composite
def einsum_networks(draw):
    """1-6 operands, legs on one or two of them, dims in {1, 2, 3, 5}, any leg order, some
    operands passed as non-contiguous (transposed) tensors, any opt_einsum path."""
    n = draw(st.integers(1, 6))
    node_legs = [[] for _ in range(n)]
    dims = {}
    for i in range(draw(st.integers(0, 14))):
        owners = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2, unique=True))
        dims[f"l{i}"] = draw(st.sampled_from([1, 2, 3, 5]))
        for o in owners:
            node_legs[o].append(f"l{i}")
    for legs in node_legs:
        draw(st.randoms()).shuffle(legs)
    output = [x for legs in node_legs for x in legs if sum(x in y for y in node_legs) == 1]
    draw(st.randoms()).shuffle(output)
    optimizer = draw(st.sampled_from(["greedy", "optimal", "random-greedy"]))
    transpose = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    seed = draw(st.integers(0, 2**31 - 1))
    return node_legs, dims, output, optimizer, transpose, seed


@given(einsum_networks())
def test_compiled_contraction_matches_opt_einsum(case):
    node_legs, dims, output, optimizer, transpose, seed = case
    legs = [tuple(x) for x in node_legs]
    shapes = [tuple(dims[x] for x in leg) for leg in legs]
    eq = einsum_equation(legs, tuple(output))
    path = oe.contract_path(eq, *shapes, shapes=True, optimize=optimizer)[0] if legs else []
    rng = np.random.default_rng(seed)
    arrays = [torch.from_numpy(rng.standard_normal(s)) for s in shapes]
    arrays = [a.mT.contiguous().mT if t and a.dim() > 1 else a for a, t in zip(arrays, transpose)]
    expected = torch.from_numpy(np.asarray(oe.contract(eq, *[a.numpy() for a in arrays])))
    program = Contraction(legs, path, tuple(output), shapes)
    got = program(*arrays)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # without shapes: compiled at the first call, same values
    torch.testing.assert_close(Contraction(legs, path, tuple(output))(*arrays), expected)


def zipper(sites, chi=8, phys=2):
    """Leg names and shapes of an MPS norm, ket and bra site by site, and its zipper path."""
    legs, shapes = [], []
    for i in range(sites):
        for side in "kb":
            left = () if i == 0 else (f"{side}{i}",)
            right = () if i == sites - 1 else (f"{side}{i + 1}",)
            legs.append(left + (f"p{i}",) + right)
            shapes.append(((chi,) if i else ()) + (phys,) + ((chi,) if i < sites - 1 else ()))
    # environment of site 0, then absorb ket i and bra i (the environment is always last)
    path, live = [(0, 1)], 2 * sites - 1
    for _ in range(2 * (sites - 1)):
        path.append((0, live - 1))
        live -= 1
    return legs, shapes, path


def test_mps_zipper_runs_without_copies():
    legs, shapes, path = zipper(10)
    program = Contraction(legs, path, (), shapes)
    assert program.copied == 0  # every operand is read in place, straight or transposed
    assert "permute" not in program.source
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    eq = einsum_equation(legs, ())
    torch.testing.assert_close(program(*tensors), oe.contract(eq, *tensors, backend="torch"))


def test_large_intermediate_with_summed_legs_in_the_middle_is_not_copied():
    # T(a, s, t, b) absorbs the small M(s, t, c): the summed block (s, t) sits in the middle of
    # T, so a tensordot would permute (copy) T; the batched product reads it in place.
    legs = [("a", "s", "t", "b"), ("s", "t", "c")]
    shapes = [(40, 3, 2, 60), (3, 2, 4)]
    program = Contraction(legs, [(0, 1)], ("a", "c", "b"), shapes)
    assert "bmm" in program.source
    assert program.copied <= math.prod(shapes[1])  # at most the small operand
    g = torch.Generator().manual_seed(1)
    t, m = (torch.randn(s, generator=g, dtype=torch.float64) for s in shapes)
    torch.testing.assert_close(program(t, m), torch.einsum("astb,stc->acb", t, m))


def test_result_comes_out_in_the_requested_order_without_a_permute():
    program = Contraction([("i", "j"), ("j", "k")], [(0, 1)], ("k", "i"), [(2, 3), (3, 4)])
    assert "permute" not in program.source
    a, b = torch.randn(2, 3), torch.randn(3, 4)
    out = program(a, b)
    assert out.is_contiguous()
    torch.testing.assert_close(out, (a @ b).T)


def test_legs_of_dimension_one_never_force_a_copy():
    legs = [("x", "i", "y", "j"), ("j", "z", "k")]
    shapes = [(1, 5, 1, 6), (6, 1, 7)]
    program = Contraction(legs, [(0, 1)], ("x", "y", "i", "z", "k"), shapes)
    assert program.copied == 0
    a, b = torch.randn(shapes[0]), torch.randn(shapes[1])
    torch.testing.assert_close(program(a, b), torch.einsum("xiyj,jzk->xyizk", a, b))


def test_gradients_through_batched_and_transposed_steps():
    legs = [("a", "s", "t", "b"), ("s", "t", "c"), ("c", "d")]
    shapes = [(2, 3, 2, 16), (3, 2, 2), (2, 3)]
    program = Contraction(legs, [(0, 1), (0, 1)], ("d", "a", "b"), shapes)
    g = torch.Generator().manual_seed(2)
    ts = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(program, tuple(ts))


def test_paths_with_wide_steps_and_single_operand_steps():
    assert linear_to_pairs(3, [(0, 1, 2)]) == [(2, 1), (3, 0)]
    assert linear_to_pairs(2, [(0,), (0, 1)]) == [(0, 1)]  # (0,) moves tensor 0 last
    legs = [("i", "j"), ("j", "k"), ("k", "l")]
    shapes = [(2, 3), (3, 4), (4, 5)]
    tensors = [torch.randn(s, dtype=torch.float64) for s in shapes]
    program = Contraction(legs, [(0, 1, 2)], ("i", "l"), shapes)
    torch.testing.assert_close(program(*tensors), tensors[0] @ tensors[1] @ tensors[2])


@pytest.mark.parametrize(
    "path, match",
    [([(0, 1)], "leaves 2 tensors"), ([(0, 0)], "names a position twice"),
     ([(0, 5)], "names position 5, but only 3 tensors are left")],
)
def test_bad_paths_are_refused(path, match):
    with pytest.raises(ValueError, match=match):
        Contraction([("i",), ("i", "j"), ("j",)], path, (), [(2,), (2, 3), (3,)])
