"""alloc_candidates: every format that fits a layer, its rank grid and its true weight errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tensornet.formats import get_format
from tensornet.nn import alloc_candidates
from tensornet.nn.alloc_candidates import candidate_kernel, rank_levels, weight_candidates


def test_rank_levels():
    assert rank_levels(1) == [1]
    assert rank_levels(16) == list(range(1, 17))
    levels = rank_levels(100)
    assert levels[:16] == list(range(1, 17)) and levels[-1] == 100
    steps = np.diff(levels[16:]) / np.asarray(levels[16:-1])
    assert all(s <= 2 ** (1 / 8) - 1 + 1 / 16 for s in steps)
    assert rank_levels(40, fine=4, step=2) == [1, 2, 3, 4, 8, 16, 32, 40]


def test_every_candidate_error_is_the_error_of_the_kernel_compress_builds():
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 8, 3).double()
    found = weight_candidates(conv)
    assert {c.format for c in found} == {
        "dense", "svd", "grouped", "tucker2", "tucker", "tt", "ht", "tr", "cp",
    }  # fmt: skip
    dense = conv.weight.numel()
    for c in found:
        approx = candidate_kernel(conv, c)
        w = conv.weight.detach()
        err = float(torch.linalg.vector_norm(approx - w) / w.norm())
        assert c.error == pytest.approx(err, abs=1e-6), c
        assert c.params == (
            dense if c.format == "dense" else
            get_format(c.format).structure_for(
                conv.weight.shape, c.ranks, legs=("out", "in", "kh", "kw"), **dict(c.options)
            ).num_params
        )  # fmt: skip
        assert c.format == "dense" or c.params < dense
    orders = {dict(c.options)["order"] for c in found if c.format == "tt"}
    assert orders == set(alloc_candidates.TT_ORDERS)
    groups = {dict(c.options)["channel_groups"] for c in found if c.format == "grouped"}
    assert groups == {2, 3, 6}


def test_linear_and_pointwise_layers_get_svd_grouped_and_dense_only():
    for layer in (nn.Linear(12, 8), nn.Conv2d(12, 8, 1)):
        formats = {c.format for c in weight_candidates(layer)}
        assert formats == {"dense", "svd", "grouped"}


def test_exact_svd_and_tucker_errors_match_eckart_young_and_hosvd():
    torch.manual_seed(4)
    conv = nn.Conv2d(5, 7, 3).double()
    w = conv.weight.detach()
    s = torch.linalg.svdvals(w.reshape(7, -1))
    for c in weight_candidates(conv, ("svd",))[1:]:
        (r,) = c.ranks
        assert c.error == pytest.approx(float(s[r:].norm() / s.norm()), abs=1e-12)
    tucker = weight_candidates(conv, ("tucker",))[1:]
    assert len(tucker) > 5
    for c in tucker:
        t = get_format("tucker").from_dense(w, ranks=c.ranks, legs=("out", "in", "kh", "kw"))
        assert c.error == pytest.approx(float((t.to_dense() - w).norm() / w.norm()), abs=1e-10)


def test_labels_errors_and_frontiers_by_cost():
    tt = alloc_candidates.Candidate(
        "tt", (2, 2, 2), (("order", ("in", "kh", "kw", "out")),), 88, 0.5
    )
    grouped = alloc_candidates.Candidate("grouped", (2,), (("channel_groups", 4),), 416, 0.25)
    svd = alloc_candidates.Candidate("svd", (3,), (), 96, 0.125, cost=5.0)
    assert [c.label for c in (tt, grouped, svd)] == ["tt[in,kh,kw,out]", "grouped[k=4]", "svd"]
    assert tt.family == ("tt", (("order", ("in", "kh", "kw", "out")),))
    moved = tt.with_error(np.float64(0.75))
    assert moved.error == 0.75 and type(moved.error) is float and moved.ranks == tt.ranks
    # by cost, a cheaper but larger candidate stays on its family's frontier
    cheap = alloc_candidates.Candidate("svd", (4,), (), 128, 0.0625, cost=4.0)
    kept = alloc_candidates.family_frontiers([svd, cheap], key="cost")
    assert kept == [cheap]
    assert alloc_candidates.family_frontiers([svd, cheap]) == [svd, cheap]


def test_exactly_low_rank_kernels_get_their_rank_on_the_grid_and_zero_error():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(40, 3, dtype=torch.float64, generator=g) @ torch.randn(
        3, 40, dtype=torch.float64, generator=g
    )
    layer = nn.Linear(40, 40, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    svd = weight_candidates(layer, ("svd",))[1:]
    ranks = [c.ranks[0] for c in svd]
    assert ranks == [1, 2, 3] and svd[-1].error == 0.0 and svd[1].error > 0
    # rank 17 and up (past the fine range) are on the grid only where they pay
    assert all(c.params < 1600 for c in svd)
    many = nn.Linear(64, 64)
    ranks = [c.ranks[0] for c in weight_candidates(many, ("svd",))[1:]]
    assert ranks == [r for r in rank_levels(64) if r * 128 < 64 * 64]


def test_the_dense_candidate_the_size_cut_the_group_cap_and_small_spatial_kernels():
    from tensornet.nn.alloc_candidates import Candidate, weight_candidates

    torch.manual_seed(0)
    square = nn.Linear(4, 4, bias=False)  # svd rank 2: 2 * (4 + 4) = 16, the dense size
    found = weight_candidates(square)
    assert found[0] == Candidate("dense", (), (), 16, 0.0)
    assert all(c.params < 16 for c in found[1:]) and found[1:]
    wide = nn.Linear(130, 4)  # group counts dividing 130: 2, 5, 10, 13, 26 up to 64, then 65
    groups = {dict(c.options)["channel_groups"] for c in weight_candidates(wide, ("grouped",))[1:]}
    assert max(groups) == 26
    for size in ((2, 1), (3, 1)):  # spatial kernels of 2 and 3 taps: the spatial formats too
        formats = {c.format for c in weight_candidates(nn.Conv2d(4, 6, size), ("svd", "tucker2"))}
        assert formats == {"dense", "svd", "tucker2"}
