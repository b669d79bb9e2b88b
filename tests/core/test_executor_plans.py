"""The executor's compiled programs, pinned: which operand is read in place (straight,
transposed, batched) or copied, how many elements each call copies, and the values (float64,
numpy.einsum) of the same programs; plus its refusals of bad paths and shapes."""

import numpy as np
import pytest
import torch

import tensornet.core.executor as executor
from tensornet.core.executor import Contraction, linear_to_pairs

# name: (legs, path, output, shapes, elements copied per call, the compiled program's lines)
PLANS = {
    "chain": (
        [("i", "j"), ("j", "k"), ("k", "l")],
        [(0, 1), (0, 1)],
        ("l", "i"),
        [(2, 3), (3, 4), (4, 5)],
        0,
        (
            "def run(t0, t1, t2):",
            "    t3 = mm(t1.reshape(3, 4).T, t0.reshape(2, 3).T)",
            "    t4 = mm(t2.reshape(4, 5).T, t3.reshape(4, 2))",
            "    del t3",
            "    return t4.reshape((5, 2))",
        ),
    ),
    "middle": (
        [("a", "s", "t", "b"), ("s", "t", "c")],
        [(0, 1)],
        ("a", "c", "b"),
        [(40, 3, 2, 60), (3, 2, 4)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = bmm(t1.reshape(6, 4).T.expand(40, 4, 6), t0.reshape(40, 6, 60))",
            "    return t2.reshape((40, 4, 60))",
        ),
    ),
    "wide": (
        [("a", "s", "b"), ("x", "s")],
        [(0, 1)],
        ("a", "x", "b"),
        [(4, 5, 8), (100, 5)],
        160,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(100, 5), t0.permute((1, 0, 2)).reshape(5, 32))",
            "    return t2.reshape((100, 4, 8)).permute((1, 0, 2))",
        ),
    ),
    "ring": (
        [("a", "b", "x"), ("b", "c", "y"), ("c", "d", "z"), ("d", "a", "w")],
        [(0, 1), (0, 1), (0, 1)],
        ("x", "y", "z", "w"),
        [(3, 4, 2), (4, 5, 2), (5, 6, 2), (6, 3, 2)],
        204,
        (
            "def run(t0, t1, t2, t3):",
            "    t4 = mm(t1.reshape(4, 10).T, t0.permute((1, 0, 2)).reshape(4, 6))",
            "    t5 = mm(t3.reshape(6, 6).T, t2.permute((1, 0, 2)).reshape(6, 10))",
            "    t6 = mm(t4.reshape((5, 2, 3, 2)).permute((3, 1, 2, 0)).reshape(4, 15), t5.reshape((3, 2, 5, 2)).permute((0, 2, 3, 1)).reshape(15, 4))",  # noqa: E501
            "    del t5, t4",
            "    return t6.reshape((2, 2, 2, 2))",
        ),
    ),
    "copy": (
        [("i", "s", "j", "t"), ("s", "t", "k")],
        [(0, 1)],
        ("i", "j", "k"),
        [(3, 4, 5, 6), (4, 6, 2)],
        360,
        (
            "def run(t0, t1):",
            "    t2 = mm(t0.permute((0, 2, 1, 3)).reshape(15, 24), t1.reshape(24, 2))",
            "    return t2.reshape((3, 5, 2))",
        ),
    ),
    "single": (
        [("i", "j")],
        [],
        ("j", "i"),
        [(2, 3)],
        0,
        (
            "def run(t0):",
            "    return t0.reshape((2, 3)).permute((1, 0))",
        ),
    ),
    "outer": (
        [("i",), ("j",)],
        [(0, 1)],
        ("j", "i"),
        [(2,), (3,)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(3, 1), t0.reshape(2, 1).T)",
            "    return t2.reshape((3, 2))",
        ),
    ),
    "narrow_middle": (
        [("a", "s", "b"), ("s", "c")],
        [(0, 1)],
        ("a", "c", "b"),
        [(40, 6, 8), (6, 4)],
        1920,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(6, 4).T, t0.permute((1, 0, 2)).reshape(6, 320))",
            "    return t2.reshape((4, 40, 8)).permute((1, 0, 2))",
        ),
    ),
    "wide_rows_narrow": (
        [("a", "s", "b"), ("s", "c")],
        [(0, 1)],
        ("a", "c", "b"),
        [(40, 6, 20), (6, 100)],
        4800,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(6, 100).T, t0.permute((1, 0, 2)).reshape(6, 800))",
            "    return t2.reshape((100, 40, 20)).permute((1, 0, 2))",
        ),
    ),
    "wide_rows_wide": (
        [("a", "s", "b"), ("s", "c")],
        [(0, 1)],
        ("a", "c", "b"),
        [(4, 6, 300), (6, 100)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = bmm(t1.reshape(6, 100).T.expand(4, 100, 6), t0.reshape(4, 6, 300))",
            "    return t2.reshape((4, 100, 300))",
        ),
    ),
    "ones": (
        [("x", "i", "y", "j"), ("j", "z", "k")],
        [(0, 1)],
        ("x", "y", "i", "z", "k"),
        [(1, 5, 1, 6), (6, 1, 7)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = mm(t0.reshape(5, 6), t1.reshape(6, 7))",
            "    return t2.reshape((1, 1, 5, 1, 7))",
        ),
    ),
    "mps3": (
        [("p0", "k1"), ("p0", "b1"), ("k1", "p1"), ("b1", "p1")],
        [(0, 1), (0, 1), (0, 1)],
        (),
        [(2, 4), (2, 4), (4, 2), (4, 2)],
        0,
        (
            "def run(t0, t1, t2, t3):",
            "    t4 = mm(t1.reshape(2, 4).T, t0.reshape(2, 4))",
            "    t5 = mm(t3.reshape(4, 2), t2.reshape(4, 2).T)",
            "    t6 = mm(t5.reshape(1, 16), t4.reshape(1, 16).T)",
            "    del t5, t4",
            "    return t6.reshape(())",
        ),
    ),
    "head": (
        [("s", "a"), ("b", "s")],
        [(0, 1)],
        ("b", "a"),
        [(3, 4), (5, 3)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(5, 3), t0.reshape(3, 4))",
            "    return t2.reshape((5, 4))",
        ),
    ),
    "final_order": (
        [("a", "b", "s"), ("s", "c", "d")],
        [(0, 1)],
        ("d", "a", "c", "b"),
        [(2, 3, 4), (4, 5, 6)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = mm(t1.reshape(4, 30).T, t0.reshape(6, 4).T)",
            "    return t2.reshape((5, 6, 2, 3)).permute((1, 2, 0, 3))",
        ),
    ),
    # a middle block with exactly MIN_BATCH_INNER elements after it: batched
    "batch_at_16": (
        [("a", "s", "b"), ("s", "c")],
        [(0, 1)],
        ("a", "c", "b"),
        [(40, 6, 16), (6, 4)],
        0,
        (
            "def run(t0, t1):",
            "    t2 = bmm(t1.reshape(6, 4).T.expand(40, 4, 6), t0.reshape(40, 6, 16))",
            "    return t2.reshape((40, 4, 16))",
        ),
    ),
    # both operands hold the summed block at an end, in different orders: one is copied
    "summed_orders": (
        [("i", "s", "t"), ("t", "s", "k")],
        [(0, 1)],
        ("i", "k"),
        [(5, 3, 4), (4, 3, 6)],
        60,
        (
            "def run(t0, t1):",
            "    t2 = mm(t0.permute((0, 2, 1)).reshape(5, 12), t1.reshape(12, 6))",
            "    return t2.reshape((5, 6))",
        ),
    ),
}


def einsum_reference(legs, tensors, output):
    letters = {}
    for x in (*legs, output):
        for leg in x:
            letters.setdefault(leg, chr(ord("a") + len(letters)))
    eq = ",".join("".join(letters[x] for x in y) for y in legs)
    eq += "->" + "".join(letters[x] for x in output)
    return torch.from_numpy(np.asarray(np.einsum(eq, *[t.numpy() for t in tensors])))


@pytest.mark.parametrize("name", list(PLANS))
def test_compiled_program_and_copies_are_as_planned(name):
    """Each step reads its operands in place where their summed legs form a block at one end
    (or a batched product reads a middle block), copies otherwise, and writes the result in
    the order the next step or the output wants; the program computes numpy's einsum."""
    legs, path, output, shapes, copied, lines = PLANS[name]
    program = Contraction(legs, path, output, shapes)
    assert program.source == "\n".join(lines) + "\n"
    assert program.copied == copied
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    expected = einsum_reference(legs, tensors, output)
    torch.testing.assert_close(program(*tensors), expected, rtol=1e-12, atol=1e-12)
    # operands stored transposed (not contiguous) give the same values
    flipped = [t.mT.contiguous().mT if t.dim() > 1 else t for t in tensors]
    torch.testing.assert_close(program(*flipped), expected, rtol=1e-12, atol=1e-12)


def test_repr_counts_tensors_steps_and_copies():
    """The repr names the operand and step counts, the output and the copies per call."""
    legs, path, output, shapes, _, _ = PLANS["ring"]
    assert repr(Contraction(legs, path, output, shapes)) == (
        "Contraction(4 tensors, 3 steps, -> ('x', 'y', 'z', 'w'), copies 204 elements per call)"
    )
    big = Contraction(
        [("i", "s", "j"), ("s", "k")], [(0, 1)], ("i", "j", "k"), [(30, 7, 5), (7, 2)]
    )
    assert repr(big).endswith("copies 1,050 elements per call)")


def test_without_shapes_compiles_once_per_shapes(monkeypatch):
    """Without shapes nothing is compiled up front; each new set of shapes compiles once."""
    calls = []
    real = executor._compile

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(executor, "_compile", counting)
    program = Contraction([("i", "j"), ("j", "k")], [(0, 1)], ("i", "k"))
    assert (program.shapes, program.source, program.copied) == (None, "", 0) and not calls
    for n in (3, 3, 4, 3):
        a, b = torch.randn(2, n, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
        torch.testing.assert_close(program(a, b), a @ b)
    assert calls == [((2, 3), (3, 5)), ((2, 4), (4, 5))]
    fixed = Contraction([("i", "j"), ("j", "k")], [(0, 1)], ("i", "k"), [(2, 3), (3, 5)])
    assert fixed.shapes == ((2, 3), (3, 5)) and len(calls) == 3
    fixed(torch.randn(2, 3), torch.randn(3, 5))
    assert len(calls) == 3


def test_linear_paths_become_single_assignment_pairs():
    """Wide steps fold left to right, one-operand steps only move the tensor last."""
    assert linear_to_pairs(3, [(0, 1, 2)]) == [(2, 1), (3, 0)]
    assert linear_to_pairs(4, [(1, 3), (0, 1), (0, 1)]) == [(3, 1), (2, 0), (5, 4)]
    assert linear_to_pairs(2, [(1,), (0, 1)]) == [(1, 0)]
    assert linear_to_pairs(1, []) == []


@pytest.mark.parametrize(
    "path, message",
    [
        ([(0, 1)], r"path \(\(0, 1\),\) leaves 2 tensors of 3, not one; each step must "
                   r"contract tensors until one is left"),
        ([(0, 0)], r"path step 0 \(0, 0\) names a position twice; path \(\(0, 0\),\)"),
        ([(0, 3)], r"path step 0 \(0, 3\) names position 3, but only 3 tensors are left; "
                   r"path \(\(0, 3\),\)"),
        ([(-1, 0)], r"path step 0 \(-1, 0\) names position -1, but only 3 tensors are left; "
                    r"path \(\(-1, 0\),\)"),
        ([(0, 1), (0, 2)], r"path step 1 \(0, 2\) names position 2, but only 2 tensors are "
                           r"left; path \(\(0, 1\), \(0, 2\)\)"),
        ([(0, 1), ()], r"path step 1 \(\) names no tensor; path \(\(0, 1\), \(\)\)"),
    ],
)
def test_bad_paths_are_refused_naming_the_step(path, message):
    """A path naming a tensor twice, a dead or unknown one, or leaving several, is refused."""
    with pytest.raises(ValueError, match=f"^{message}$"):
        Contraction([("i",), ("i", "j"), ("j",)], path, (), [(2,), (2, 3), (3,)])
    with pytest.raises(ValueError, match=f"^{message}$"):
        Contraction([("i",), ("i", "j"), ("j",)], path, ())  # checked before any shapes


@pytest.mark.parametrize(
    "shapes, output, message",
    [
        ([(2, 3), (3, 4)], ("i", "k"), r"2 shapes for 3 operands"),
        ([(2, 3), (3,), (4, 5)], ("i", "l"), r"operand with legs \('j', 'k'\) has shape \(3,\)"),
        ([(2, 3), (4, 4), (4, 5)], ("i", "l"), r"leg 'j' has dimensions 3 and 4"),
        ([(2, 3), (3, 4), (4, 5)], ("i",),
         r"output \('i',\) does not match the legs left after the path \('[il]', '[il]'\)"),
        ([(2, 3), (3, 4), (4, 5)], ("i", "l", "l"),
         r"output \('i', 'l', 'l'\) does not match the legs left after the path .*"),
        ([(2, 3), (3, 4), (4, 5)], ("i", "k"),
         r"output \('i', 'k'\) does not match the legs left after the path .*"),
    ],
)  # fmt: skip
def test_bad_shapes_and_outputs_are_refused_by_name(shapes, output, message):
    """Shapes that do not fit the legs, and outputs other than the legs left, are refused."""
    legs = [("i", "j"), ("j", "k"), ("k", "l")]
    with pytest.raises(ValueError, match=f"^{message}$"):
        Contraction(legs, [(0, 1), (0, 1)], output, shapes)


# random networks (opt_einsum's generator, dims 1..6, greedy paths): elements copied per call,
# permutes and batched products in the compiled program
RANDOM_PLANS = [
    (6, 0, 2, 720, 2, 0),
    (7, 1, 1, 8, 1, 0),
    (8, 2, 3, 32512, 4, 0),
    (9, 3, 0, 192, 2, 0),
    (10, 4, 2, 390, 6, 0),
    (8, 5, 4, 420, 4, 0),
    (7, 6, 2, 1162, 4, 0),
    (9, 7, 3, 768, 5, 1),
    (10, 8, 1, 3072, 4, 0),
    (6, 9, 3, 420, 2, 0),
    (8, 10, 2, 220, 2, 0),
    (10, 11, 3, 360, 3, 0),
]


@pytest.mark.parametrize("n, seed, n_out, copied, permutes, batched", RANDOM_PLANS)
def test_random_networks_copy_as_planned(n, seed, n_out, copied, permutes, batched):
    """Longer paths: the look-ahead's layout choices give these copies per call, and the
    program equals numpy's einsum."""
    import opt_einsum as oe
    from opt_einsum.testing import rand_equation

    eq, shapes = rand_equation(n, 3, n_out=n_out, d_min=1, d_max=6, seed=seed)
    lhs, out = eq.split("->")
    legs = [tuple(x) for x in lhs.split(",")]
    path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize="greedy")
    program = Contraction(legs, path, tuple(out), shapes)
    assert program.copied == copied
    assert program.source.count("permute") == permutes
    assert program.source.count("bmm") == batched
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    expected = torch.from_numpy(np.asarray(np.einsum(eq, *[t.numpy() for t in tensors])))
    torch.testing.assert_close(program(*tensors), expected, rtol=1e-10, atol=1e-10)
