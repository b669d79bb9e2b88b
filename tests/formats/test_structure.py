"""Tensor-free structures (tensornet/formats/structure.py): sizes, summed legs, the einsum that
rebuilds the dense tensor, serialisation, the registry and the rank-from-budget solver, checked
against hand counts and dense float64 contractions."""

import math

import numpy as np
import pytest
import torch

from tensornet.formats import TT, Format, Structure, Tucker, format_names, get_format
from tensornet.formats.structure import (
    Factor,
    as_fraction,
    budget_rank,
    fraction_ranks,
    ranks_within,
    register_format,
)
from tensornet.formats.tt import tt_params

from .helpers import F64, gen


def cp_like():
    """A CP-style structure of a 2 x 3 matrix: factors A (a, r), B (b, r) sharing r = 4."""
    return Structure(
        "cp",
        ("a", "b"),
        (2, 3),
        (4,),
        (Factor("A", ("a", "r"), (2, 4)), Factor("B", ("b", "r"), (3, 4))),
        (("a",), ("b",)),
        (2,),
    )


def test_sizes_legs_and_terms_by_hand():
    """num_params, dense_size, compression, mode and summed legs, terms and dims, exactly."""
    s = TT.structure_for((4, 5, 6), (2, 3), legs=("a", "b", "c"))
    assert s.num_params == 4 * 2 + 2 * 5 * 3 + 3 * 6 == tt_params((4, 5, 6), (2, 3)) == 56
    assert s.dense_size == 120 and s.compression == 120 / 56
    assert s.mode_legs == ("a", "b", "c") and s.summed_legs == ("r1", "r2")
    assert s.terms == 6
    assert [s.dim(leg) for leg in ("a", "r1", "b", "r2", "c")] == [4, 2, 5, 3, 6]
    assert [f.size for f in s.factors] == [8, 30, 18]
    assert str(s) == "tt(4, 5, 6) ranks=(2, 3): 56 params (2.14x)"
    big = TT.structure_for((40, 40, 4))
    assert str(big) == f"tt(40, 40, 4) ranks=(40, 4): {big.num_params:,} params (0.798x)"
    assert big.num_params == 8016 and "8,016" in str(big)
    c = cp_like()
    assert c.summed_legs == ("r",) and c.terms == 4 and c.num_params == 20


def test_terms_of_a_tensorized_structure_count_only_summed_legs():
    """Open legs of several factors are not summed: a TT-matrix kernel sums its bonds only."""
    s = get_format("ttmatrix").structure_for(
        (8, 6, 3, 3), (2, 3, 4), legs=("out", "in", "kh", "kw"), out_dims=(2, 2, 2),
        in_dims=(3, 2, 1),
    )  # fmt: skip
    assert s.mode_legs == ("out_0", "out_1", "out_2", "in_0", "in_1", "in_2", "kh", "kw")
    assert s.summed_legs == ("r1", "r2", "r3") and s.terms == 2 * 3 * 4


def test_dim_of_an_unknown_leg_names_it():
    """dim() refuses a leg no factor has, naming the leg and the format."""
    with pytest.raises(ValueError, match=r"^'zz' is not a leg of this tt structure$"):
        TT.structure_for((2, 3)).dim("zz")


def test_inconsistent_structures_are_refused():
    """Factor legs and shapes must agree, shared legs must have one size, modes make the legs."""
    f = Factor("A", ("a", "r"), (2,))
    with pytest.raises(ValueError, match=r"^cp: factor A has legs \('a', 'r'\), shape \(2,\)$"):
        Structure("cp", ("a",), (2,), (1,), (f,), (("a",),), (1,))
    two = (Factor("A", ("a", "r"), (2, 4)), Factor("B", ("b", "r"), (3, 5)))
    with pytest.raises(ValueError, match=r"^cp: leg 'r' has sizes 4 and 5$"):
        Structure("cp", ("a", "b"), (2, 3), (4,), two, (("a",), ("b",)), (2,))
    good = cp_like().factors
    with pytest.raises(ValueError, match=r"^cp: modes \('b',\) of leg 'b' do not make 7$"):
        Structure("cp", ("a", "b"), (2, 7), (4,), good, (("a",), ("b",)), (2,))


def test_option_and_with_ranks():
    """option() reads an option (default when unset); with_ranks keeps format, shape, options."""
    s = TT.structure_for((3, 4, 5), (2, 2), legs=("a", "b", "c"), order=("c", "a", "b"))
    assert s.option("order") == ("c", "a", "b")
    assert s.option("nope") is None and s.option("nope", 7) == 7
    t = s.with_ranks((3, 4))
    assert t == TT.structure_for((3, 4, 5), (3, 4), legs=("a", "b", "c"), order=("c", "a", "b"))
    assert s.with_ranks(None).ranks == s.max_ranks == (5, 4)


def test_contract_matches_the_dense_einsum():
    """contract() rebuilds the dense tensor from a dict, a sequence or a dict-like object."""
    s = cp_like()
    a = torch.randn(2, 4, generator=gen(0), dtype=F64)
    b = torch.randn(3, 4, generator=gen(1), dtype=F64)
    ref = a @ b.T
    torch.testing.assert_close(s.contract({"A": a, "B": b}), ref)
    torch.testing.assert_close(s.contract([a, b]), ref)
    torch.testing.assert_close(s.contract((a, b), optimize="greedy"), ref)

    class Keyed:  # a mapping-like container (as nn.ParameterDict) that is not a Mapping
        def __init__(self, d):
            self.d = d

        def keys(self):
            return self.d.keys()

        def __getitem__(self, k):
            return self.d[k]

    torch.testing.assert_close(s.contract(Keyed({"B": b, "A": a})), ref)
    with pytest.raises(ValueError, match=r"^cp: 1 tensors for 2 factors$"):
        s.contract([a])
    with pytest.raises(ValueError, match=r"^cp: factor B must have shape \(3, 4\), got \(4, 3\)$"):
        s.contract([a, b.T])


def test_to_dict_and_from_dict():
    """to_dict is plain JSON data (lists); from_dict inverts it and names a missing field."""
    s = TT.structure_for((3, 4, 5), (2, 2), legs=("a", "b", "c"), order=("c", "a", "b"))
    d = s.to_dict()
    assert d == {
        "format": "tt",
        "legs": ["a", "b", "c"],
        "shape": [3, 4, 5],
        "ranks": [2, 2],
        "options": {"order": ["c", "a", "b"]},
    }
    assert Structure.from_dict(d) == s
    nested = Tucker.structure_for((3, 4), (1, 2)).to_dict()
    assert nested["options"] == {"modes": ["d0", "d1"]}
    no_options = {k: v for k, v in d.items() if k != "options"}
    default_order = TT.structure_for((3, 4, 5), (2, 2), legs=("a", "b", "c"))
    assert Structure.from_dict(no_options) == default_order
    for key in ("format", "legs", "shape", "ranks"):
        partial = {k: v for k, v in d.items() if k != key}
        with pytest.raises(ValueError, match=rf"^structure description lacks the field '{key}'$"):
            Structure.from_dict(partial)


def test_registry():
    """get_format finds classes by name (a class passes through); names are registered once."""
    assert get_format("tt") is TT and get_format(TT) is TT and TT.name == "tt"
    assert "tt" in format_names() and "tucker" in format_names()
    assert isinstance(format_names(), tuple)
    with pytest.raises(ValueError, match=r"^unknown format 'nope'; registered formats are \["):
        get_format("nope")
    with pytest.raises(ValueError, match=r"^unknown format \['tt'\]; registered formats are"):
        get_format(["tt"])  # unhashable
    assert register_format("tt")(TT) is TT  # the same class again is fine
    with pytest.raises(ValueError, match=r"^a format named 'tt' is already registered$"):
        register_format("tt")(Tucker)
    assert get_format("tt") is TT and Tucker.name == "tucker"


def test_register_format_sets_the_name(monkeypatch):
    """A newly registered class gets its name and is found by it."""
    import tensornet.formats.structure as structure

    monkeypatch.setattr(structure, "_REGISTRY", dict(structure._REGISTRY))

    class Demo(TT):
        pass

    assert register_format("demo-format")(Demo) is Demo
    assert Demo.name == "demo-format" and get_format("demo-format") is Demo
    assert "demo-format" in format_names() and issubclass(Demo, Format)


@pytest.mark.parametrize("budget, expected", [(10, 1), (19.9, 1), (20, 2), (55, 5), (1000, 100)])
def test_budget_rank_is_the_largest_cap_within_the_budget(budget, expected):
    """Largest r in [1, high] with count(r) <= budget."""
    assert budget_rank(lambda r: 10 * r, budget, 100, "demo") == expected


@pytest.mark.parametrize("high", [1, 2, 3, 7, 64])
def test_budget_rank_agrees_with_a_linear_search(high):
    """The bisection finds what a linear scan finds, for every budget (nonlinear count)."""
    count = lambda r: r * r + 3 * r  # noqa: E731
    for budget in range(4, count(high) + 5):
        linear = max(r for r in range(1, high + 1) if count(r) <= budget)
        assert budget_rank(count, budget, high, "demo") == linear


def test_budget_rank_never_exceeds_the_largest_rank():
    """However large the budget, the cap is at most high (also for high = 1)."""
    for high in (1, 2, 5):
        assert budget_rank(lambda r: r, 1e9, high, "demo") == high


def test_budget_rank_refusals():
    """A bad largest rank and a budget below rank 1 are refused, naming the caller."""
    with pytest.raises(ValueError, match=r"^demo: the largest rank must be a positive int, got 0"):
        budget_rank(lambda r: r, 10, 0, "demo")
    with pytest.raises(ValueError, match=r"^demo: the largest rank must be .*, got 2.5"):
        budget_rank(lambda r: r, 10, 2.5, "demo")
    with pytest.raises(
        ValueError,
        match=r"^demo: fraction too small: even rank 1 needs 1,500 parameters, above the budget "
        r"of 1,200$",
    ):
        budget_rank(lambda r: 1500 * r, 1200.4, 5, "demo")


def test_fraction_ranks_by_brute_force():
    """fraction_ranks: the largest uniform cap whose TT fits the budget, capped per bond."""
    shape = (6, 7, 8, 5)
    tops = TT.structure_for(shape).max_ranks
    for fraction in (0.05, 0.2, 0.6, 1.0):
        budget = fraction * math.prod(shape)
        fits = [r for r in range(1, max(tops) + 1)
                if tt_params(shape, [min(r, t) for t in tops]) <= budget]  # fmt: skip
        expected = tuple(min(max(fits), t) for t in tops)
        assert fraction_ranks("tt", shape, fraction) == expected
        assert fraction_ranks(TT, list(shape), fraction) == expected
    assert fraction_ranks("tt", (5,), 0.5) == ()  # one core: no ranks to choose


def test_fraction_ranks_passes_legs_and_options():
    """legs and format options reach structure_for (a Tucker-2 budget differs from Tucker)."""
    shape, legs = (12, 10, 3, 3), ("o", "i", "h", "w")
    two = fraction_ranks("tucker", shape, 0.3, legs=legs, modes=("o", "i"))
    assert len(two) == 2
    assert fraction_ranks("tucker2", shape, 0.3, legs=legs) == two
    assert len(fraction_ranks("tucker", shape, 0.3, legs=legs)) == 4


@pytest.mark.parametrize(
    "fraction, match",
    [
        (True, r"^tt: fraction: fraction must be a number in \(0, 1\], got True$"),
        ("0.5", r"^tt: fraction: fraction must be a number in \(0, 1\], got '0.5'$"),
        (0, r"^tt: fraction: fraction must be in \(0, 1\], got 0$"),
        (1.5, r"^tt: fraction: fraction must be in \(0, 1\], got 1.5$"),
        (1e-4, r"^tt: fraction: fraction too small"),
    ],
)
def test_fraction_ranks_refusals(fraction, match):
    """Bad fractions are refused; the default caller in messages is '<format>: fraction'."""
    with pytest.raises(ValueError, match=match):
        fraction_ranks("tt", (6, 7, 8), fraction)


def test_fraction_ranks_names_the_given_caller():
    with pytest.raises(ValueError, match=r"^Demo\.call: fraction must be in"):
        fraction_ranks("tt", (6, 7, 8), 2, what="Demo.call")


def test_as_fraction_takes_0d_real_tensors_only():
    """A 0-d real tensor is its value; 1-d and complex tensors are refused naming the caller."""
    assert as_fraction(torch.tensor(0.25), "demo") == 0.25
    assert isinstance(as_fraction(torch.tensor(0.5, dtype=F64), "demo"), float)
    assert as_fraction(np.array(0.75), "demo") == 0.75 and as_fraction(np.int64(1), "demo") == 1.0
    refusals = [
        (torch.tensor([0.5]), r"got a torch.float32 tensor of shape \(1,\)$"),
        (torch.tensor(0.5 + 0j), r"got a torch.complex64 tensor of shape \(\)$"),
        (torch.tensor([[0.5]], dtype=F64), r"got a torch.float64 tensor of shape \(1, 1\)$"),
        (torch.tensor(True), r"got a torch.bool tensor of shape \(\)$"),
        (np.array([0.5]), r"got array\(\[0.5\]\)$"),
        (np.array(True), r"got array\(True\)$"),
        (np.array(1.5), r"(?<=must be )in \(0, 1\], got 1.5$"),
    ]
    for bad, match in refusals:
        with pytest.raises(
            ValueError, match=r"^demo: fraction must be (a number in \(0, 1\], )?" + match
        ):
            as_fraction(bad, "demo")
    x = torch.randn(6, 5, 4, generator=gen(7), dtype=F64)
    by_tensor = TT.from_dense(x, fraction=torch.tensor(0.4))
    assert by_tensor.ranks == TT.from_dense(x, fraction=0.4).ranks


def test_ranks_within_is_fraction_ranks_on_the_full_structure():
    """The solver on a full structure gives fraction_ranks' answer, within the budget."""
    legs = ("o", "i", "h", "w")
    full = get_format("tucker2").structure_for((64, 64, 3, 3), legs=legs)
    assert ranks_within(full, 0.25, "demo") == (25, 25)
    assert ranks_within(full, 0.25, "demo") == fraction_ranks(
        "tucker2", full.shape, 0.25, legs=legs
    )
    assert full.with_ranks((25, 25)).num_params <= 0.25 * full.dense_size
    assert full.with_ranks((26, 26)).num_params > 0.25 * full.dense_size
