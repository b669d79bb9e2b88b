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
