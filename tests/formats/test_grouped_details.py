"""Channel-grouped low rank in detail: structures, padding, round trips, truncation, messages."""

import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import Grouped
from tensornet.formats.grouped import grouped_params
from tensornet.formats.structure import Structure

from .helpers import F64, decaying, gen, rel_err


def group_blocks(w, k):
    """Group g's slice of the kernel folded to ``f x (c/k ...)`` (the reference layout)."""
    c = w.shape[1]
    return [w[:, g * c // k : (g + 1) * c // k].reshape(w.shape[0], -1) for g in range(k)]


def best_group_approx(w, k, j):
    """The rank-j SVD of every group's slice, put back together (the optimum per group)."""
    out = torch.empty_like(w)
    c = w.shape[1]
    for g, block in enumerate(group_blocks(w, k)):
        u, s, vh = torch.linalg.svd(block, full_matrices=False)
        part = (u[:, :j] * s[:j]) @ vh[:j]
        out[:, g * c // k : (g + 1) * c // k] = part.reshape(w.shape[0], c // k, *w.shape[2:])
    return out


def test_params_formula_counts_both_factors():
    """j (k f + c k1 k2), as the stored factors count it."""
    assert grouped_params((6, 4, 3, 2), 2, 5) == 5 * (2 * 6 + 4 * 6)
    assert grouped_params((6, 4), 4, 1) == 4 * 6 + 4
    fmt = Grouped.from_dense(
        torch.randn(6, 4, 3, 2, generator=gen(1), dtype=F64), 3, channel_groups=2
    )
    assert fmt.num_params == grouped_params((6, 4, 3, 2), 2, 3) == fmt.structure.num_params


def test_structure_factors_modes_and_maximal_rank():
    """U (f, k, j), V (k, j, c/k, ...), input leg = (group, channel), max rank min(f, c/k k1 k2)."""
    s = Grouped.structure_for((5, 6, 2), legs=("o", "i", "h"), channel_groups=3)
    assert s.format == "grouped" and s.ranks == (4,) and s.max_ranks == (4,)  # min(5, 2 * 2)
    assert [(f.name, f.legs, f.shape) for f in s.factors] == [
        ("U", ("o", "i_g", "r"), (5, 3, 4)),
        ("V", ("i_g", "r", "i_c", "h"), (3, 4, 2, 2)),
    ]
    assert s.modes == (("o",), ("i_g", "i_c"), ("h",)) and s.option("channel_groups") == 3
    t = Grouped.structure_for((3, 8, 3, 3), 2)
    assert t.max_ranks == (3,) and t.option("channel_groups") == 1 and t.num_params == 2 * (3 + 72)
    assert t.factors[1].shape == (1, 2, 8, 3, 3)
    # fresh names against the dense legs
    n = Grouped.structure_for((3, 4), 1, legs=("r", "x"))
    assert n.factors[0].legs == ("r", "x_g", "r2") and n.factors[1].legs == ("x_g", "r2", "x_c")
    m = Grouped.structure_for((3, 4), 1, legs=("x_g", "x"))
    assert m.factors[0].legs == ("x_g", "x_g2", "r") and m.factors[1].legs == ("x_g2", "r", "x_c")


def test_from_dense_is_the_optimal_rank_per_group_and_reports_spectra():
    """Each group is its own truncated SVD; spectra are the groups' singular values."""
    w = torch.randn(4, 6, 2, generator=gen(2), dtype=F64)
    fmt = Grouped.from_dense(w, ranks=2, channel_groups=3, legs=("o", "i", "h"))
    torch.testing.assert_close(fmt.to_dense(), best_group_approx(w, 3, 2))
    spectra = torch.stack([torch.linalg.svdvals(b) for b in group_blocks(w, 3)])
    torch.testing.assert_close(fmt.spectra, spectra)
    assert fmt.groups == 3 and fmt.ranks == (2,) and fmt.shape == (4, 6, 2)
    assert fmt.legs == ("o", "i", "h") and fmt.options == {"channel_groups": 3}
    tails = math.sqrt(float(spectra[:, 2:].square().sum()))
    assert fmt.error == pytest.approx(tails / float(w.norm()), rel=1e-10)
    # singular values split evenly between U and V in every group
    u, v = fmt.factor_tensors().values()
    torch.testing.assert_close(u.norm(dim=0), v.reshape(3, 2, -1).norm(dim=2))


def test_ranks_above_the_maximum_are_lowered_and_exact():
    """Ranks above the maximum ``min(f, c/k * prod(rest))`` are lowered to it (exact there)."""
    w = torch.randn(3, 4, generator=gen(3), dtype=F64)  # two groups of 3 x 2: rank 2
    for asked in (3, 64, (5,)):
        fmt = Grouped.from_dense(w, ranks=asked, channel_groups=2)
        assert fmt.ranks == (2,) and fmt.error == 0.0 and fmt.num_params == 2 * (3 * 2 + 2 * 2)
        u, v = fmt.factor_tensors().values()
        assert u.shape == (3, 2, 2) and v.shape == (2, 2, 2)
        assert rel_err(w, fmt.to_dense()) < 1e-12
    full = Grouped.from_dense(w, channel_groups=2)  # default: the maximal rank, no tail
    assert full.ranks == (2,) and full.error == 0.0 and rel_err(w, full.to_dense()) < 1e-12
    zero = Grouped.from_dense(torch.zeros(3, 4, dtype=F64), ranks=1, channel_groups=2)
    assert zero.error == 0.0 and zero.truncate(ranks=1).error == 0.0


def test_fraction_is_a_parameter_budget():
    """The largest j with j (k f + c k1 k2) <= fraction * size."""
    w = torch.randn(8, 4, 3, 3, generator=gen(4), dtype=F64)  # size 288, j (2*8 + 36) = 52 j
    fmt = Grouped.from_dense(w, fraction=0.5, channel_groups=2)
    assert fmt.ranks == (2,)  # 104 <= 144 < 156
    torch.testing.assert_close(fmt.to_dense(), best_group_approx(w, 2, 2))


def test_round_trip_through_the_structure_dict_and_the_network_view():
    """to_dict / from_dict / from_factors rebuild the tensor; the network is the same tensor."""
    w = torch.randn(5, 4, 3, generator=gen(5), dtype=F64)
    fmt = Grouped.from_dense(w, ranks=2, channel_groups=2, legs=("o", "i", "k"))
    data = fmt.structure.to_dict()
    assert data["options"] == {"channel_groups": 2} and data["legs"] == ["o", "i", "k"]
    again = Grouped.from_factors(Structure.from_dict(data), fmt.factor_tensors(), error=0.5)
    torch.testing.assert_close(again.to_dense(), fmt.to_dense())
    assert again.error == 0.5 and again.spectra is None and again.legs == fmt.legs
    net = fmt.network.contract(output=fmt.structure.mode_legs).tensor.reshape(w.shape)
    torch.testing.assert_close(net, fmt.to_dense())
    assert fmt.network.node("V").tensor.shape == (4, 2, 2, 3)  # block diagonal over groups


def test_to_casts_factors_and_keeps_error_and_spectra():
    """to(dtype) casts both factors; the error, spectra and legs are kept."""
    w = torch.randn(4, 4, 2, generator=gen(6), dtype=F64)
    fmt = Grouped.from_dense(w, ranks=1, channel_groups=2)
    f32 = fmt.to(dtype=torch.float32)
    assert all(t.dtype == torch.float32 for t in f32.factor_tensors().values())
    assert f32.error == fmt.error and f32.legs == fmt.legs and f32.groups == 2
    torch.testing.assert_close(f32.spectra, fmt.spectra)
    torch.testing.assert_close(f32.to_dense().double(), fmt.to_dense(), rtol=1e-5, atol=1e-6)
    assert Grouped.from_factors(fmt.structure, fmt.factor_tensors()).to(dtype=F64).spectra is None


def test_truncate_is_optimal_per_group_with_one_shared_rank():
    """Re-truncation equals the direct grouped SVD of the product; error relative to it."""
    w = decaying((6, 4, 3), seed=7)
    fmt = Grouped.from_dense(w, ranks=3, channel_groups=2)
    dense = fmt.to_dense()
    for small in (fmt.truncate(1), fmt.truncate(ranks=1), fmt.truncate(Truncation(max_rank=1))):
        assert small.ranks == (1,) and small.groups == 2 and small.shape == (6, 4, 3)
        torch.testing.assert_close(small.to_dense(), best_group_approx(dense, 2, 1))
        assert small.error == pytest.approx(rel_err(dense, small.to_dense()), rel=1e-9)
        spectra = torch.stack([torch.linalg.svdvals(b) for b in group_blocks(dense, 2)])
        torch.testing.assert_close(small.spectra, spectra[:, :3])
    same = fmt.truncate()
    assert same.ranks == (3,) and same.error == 0.0
    tol = fmt.truncate(Truncation(rel_tol=0.3))
    assert tol.error <= 0.3 and (tol.ranks[0] == 1 or fmt.truncate(tol.ranks[0] - 1).error > 0.3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Grouped.structure_for((4,), 1), r"^Grouped.structure_for: needs at least 2 legs"),
        (
            lambda: Grouped.from_dense(torch.ones(4, dtype=F64)),
            r"^Grouped.from_dense: needs at least 2",
        ),
        (
            lambda: Grouped.structure_for((2, 4), channel_groups=True),
            r"^Grouped.structure_for: channel_groups must be a positive int, got True",
        ),
        (
            lambda: Grouped.structure_for((2, 4), channel_groups=0),
            r"^Grouped.structure_for: channel_groups must be a positive int, got 0",
        ),
        (
            lambda: Grouped.structure_for((2, 4), channel_groups=2.0),
            r"^Grouped.structure_for: channel_groups must be a positive int, got 2.0",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), channel_groups=3),
            r"^Grouped.from_dense: channel_groups=3 must divide the 4 channels of the second leg",
        ),
        (
            lambda: Grouped(torch.ones(2, 2), torch.ones(2, 1, 3), ("a", "b")),
            r"^Grouped: U must be \(f, k, j\) and V \(k, j, c/k, ...\); got \(2, 2\) and \(2, 1, 3",
        ),
        (
            lambda: Grouped(torch.ones(2, 2, 1), torch.ones(2, 1), ("a", "b")),
            r"^Grouped: U must be .*got \(2, 2, 1\) and \(2, 1\)",
        ),
        (
            lambda: Grouped(torch.ones(2, 2, 1), torch.ones(2, 2, 3), ("a", "b")),
            r"^Grouped: U must be",
        ),
        (
            lambda: Grouped(torch.ones(2, 2, 1), torch.ones(2, 1, 3), ("a", "b", "c")),
            r"^Grouped: 3 legs for factors of a 2-way kernel",
        ),
        (
            lambda: Grouped.structure_for((2, 4), (1, 1)),
            r"^Grouped.structure_for: ranks must have 1",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), ranks=0),
            r"^Grouped.from_dense: ranks",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64)).truncate(ranks=(1, 1)),
            r"^Grouped.truncate: ranks must have 1",
        ),
        (
            lambda: Grouped.from_factors(
                Grouped.structure_for((2, 4), 1),
                {"U": torch.ones(2, 1, 2), "V": torch.ones(1, 2, 4)},
            ),
            r"^Grouped.from_factors: ",
        ),
    ],
)
def test_bad_inputs_name_the_call_and_the_culprit(call, match):
    """Errors say which call failed and what was wrong with which field."""
    with pytest.raises(ValueError, match=match):
        call()


def test_network_view_names_and_devices():
    """The padded network has nodes U and V joined by one band leg; to(device) moves everything."""
    w = torch.randn(4, 4, 2, generator=gen(8), dtype=F64)
    fmt = Grouped.from_dense(w, ranks=1, channel_groups=2, legs=("o", "i", "h"))
    assert fmt.network.node("U").legs == ("o", "r_band")
    assert fmt.network.node("V").legs == ("r_band", "i_g", "i_c", "h")
    moved = fmt.to(device="meta")
    assert {t.device.type for t in moved.factor_tensors().values()} == {"meta"}
    assert moved.spectra.device.type == "meta"


def test_defaults_small_norms_and_structure_built_factors():
    """One group by default; errors are relative at any scale; structure shapes are ints."""
    w = 1e-3 * torch.randn(4, 6, 2, generator=gen(9), dtype=F64)
    assert Grouped.from_dense(w, ranks=2).groups == 1
    fmt = Grouped.from_dense(w, ranks=(2,), channel_groups=2)
    spectra = torch.stack([torch.linalg.svdvals(b) for b in group_blocks(w, 2)])
    want = math.sqrt(float(spectra[:, 2:].square().sum())) / float(w.norm())
    assert fmt.ranks == (2,) and fmt.error == pytest.approx(want, rel=1e-9)
    full = Grouped.from_dense(w, channel_groups=2)
    assert full.truncate(2).error == pytest.approx(want, rel=1e-9)
    # random factors in the structure's layout give a tensor of the structure's shape
    s = Grouped.structure_for((4, 6, 2), 2, channel_groups=3)
    tensors = {f.name: torch.randn(*f.shape, generator=gen(10), dtype=F64) for f in s.factors}
    u, v = tensors["U"], tensors["V"]
    dense = torch.einsum("ogr,grch->ogch", u, v).reshape(4, 6, 2)
    torch.testing.assert_close(Grouped.from_factors(s, tensors).to_dense(), dense)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Grouped.structure_for((2, 0)), r"^Grouped.structure_for: shape must be positive"),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), legs=("a",)),
            r"^Grouped.from_dense: legs has 1 names",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), 1, ranks=1),
            r"^Grouped.from_dense: give at most one of trunc, ranks, fraction",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), 1, fraction=0.5),
            r"^Grouped.from_dense: give at most one of trunc, ranks, fraction",
        ),
        (
            lambda: Grouped.from_dense(torch.ones(2, 4, dtype=F64), fraction=0.1),
            r"^Grouped.from_dense: fraction too small",
        ),
    ],
)
def test_more_bad_inputs_name_the_call(call, match):
    """Messages of the shared validators carry the calling method's name."""
    with pytest.raises(ValueError, match=match):
        call()
