"""Tensor ring, plain low rank and channel-grouped low rank against dense float64 and theory."""

import math

import pytest
import torch

from tensornet import Truncation
from tensornet.formats import TR, Grouped, LowRank
from tensornet.formats.grouped import grouped_params
from tensornet.formats.tr import tr_params

from .helpers import F64, decaying, gen, rel_err


def random_tr_dense(sizes, ranks, seed=0):
    g = gen(seed)
    d = len(sizes)
    cores = [
        torch.randn(ranks[k], sizes[k], ranks[(k + 1) % d], generator=g, dtype=F64)
        for k in range(d)
    ]
    out = cores[0]
    for c in cores[1:]:
        out = torch.tensordot(out, c, dims=([out.ndim - 1], [0]))
    return torch.diagonal(out, dim1=0, dim2=-1).sum(-1)  # trace over the closing bond


def test_tr_svd_at_full_ranks_is_exact():
    """TR-SVD is exact when no step truncates (it does not in general find the minimal ring
    ranks: the first split mixes the two boundary bonds)."""
    sizes, ranks = (4, 5, 6, 3), (2, 2, 3, 2)
    x = random_tr_dense(sizes, ranks, seed=1)
    tr = TR.from_dense(x, ranks=(2, 2, 10, 6))
    assert rel_err(x, tr.to_dense()) < 1e-12 and tr.error < 1e-12
    assert not tr.network.is_tree
    assert tr.num_params == tr_params(sizes, tr.ranks)
    # the ring's value is a trace of core products, whatever the contraction order
    manual = torch.einsum("aib,bjc,ckd,dla->ijkl", *tr.cores)
    torch.testing.assert_close(manual, x)


def test_tr_svd_error_is_exact_and_meets_the_tolerance():
    x = decaying((5, 6, 4, 5), seed=2, rate=0.5)
    for tol in (0.05, 0.2, 0.5):
        tr = TR.from_dense(x, Truncation(rel_tol=tol))
        err = rel_err(x, tr.to_dense())
        assert err <= tol + 1e-12
        assert tr.error == pytest.approx(err, rel=1e-8, abs=1e-12)  # errors add in squares
        assert tr.ranks[0] * tr.ranks[1] <= min(5, 6 * 4 * 5)


def test_tr_truncate_lowers_ranks_and_reports_the_error():
    x = decaying((5, 6, 4, 5), seed=3)
    tr = TR.from_dense(x)
    small = tr.truncate(Truncation(max_rank=2))
    assert max(small.ranks) <= 2
    assert small.error == pytest.approx(rel_err(tr.to_dense(), small.to_dense()), rel=1e-8)
    with pytest.raises(ValueError, match="at least 2 legs"):
        TR.from_dense(torch.ones(4, dtype=F64))


def test_lowrank_is_eckart_young_for_any_cut():
    x = torch.randn(6, 5, 4, generator=gen(4), dtype=F64)
    for left, rank in ((("d0",), 3), (("d1", "d2"), 2), ("d2", 1)):
        lr = LowRank.from_dense(x, ranks=rank, left=left)
        rows = [i for i, leg in enumerate(("d0", "d1", "d2")) if leg in left]
        cols = [i for i in range(3) if i not in rows]
        m = x.permute(rows + cols).reshape(math.prod(x.shape[i] for i in rows), -1)
        s = torch.linalg.svdvals(m)
        best = float(s[rank:].norm() / s.norm())
        assert lr.error == pytest.approx(best, rel=1e-10)
        assert rel_err(x, lr.to_dense()) == pytest.approx(best, rel=1e-10)
    u, v = (t.norm() for t in lr.factor_tensors().values())
    assert float(u) == pytest.approx(float(v), rel=1e-10)  # singular values split evenly


def test_lowrank_truncate_of_a_product_is_optimal():
    x = torch.randn(8, 7, generator=gen(5), dtype=F64)
    lr = LowRank.from_dense(x, ranks=5)
    small = lr.truncate(ranks=2)
    direct = LowRank.from_dense(lr.to_dense(), ranks=2)
    torch.testing.assert_close(small.to_dense(), direct.to_dense())
    assert small.error == pytest.approx(rel_err(lr.to_dense(), small.to_dense()), rel=1e-8)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_grouped_is_one_optimal_svd_per_group(k):
    w = torch.randn(10, 8, 3, 3, generator=gen(6), dtype=F64)
    j = 3
    fmt = Grouped.from_dense(w, ranks=j, channel_groups=k)
    assert fmt.num_params == grouped_params(w.shape, k, j) == j * (k * 10 + 8 * 9)
    approx = fmt.to_dense()
    tails2 = 0.0
    for g in range(k):
        block = w[:, g * 8 // k : (g + 1) * 8 // k].reshape(10, -1)
        s = torch.linalg.svdvals(block)
        tails2 += float(s[j:].square().sum())
        got = approx[:, g * 8 // k : (g + 1) * 8 // k].reshape(10, -1)
        assert torch.linalg.matrix_rank(got) == j
        assert float((block - got).norm()) == pytest.approx(float(s[j:].norm()), rel=1e-9)
    assert fmt.error == pytest.approx(math.sqrt(tails2) / float(w.norm()), rel=1e-10)
    # the padded network is the same tensor
    net = fmt.network.contract(output=fmt.structure.mode_legs).tensor.reshape(w.shape)
    torch.testing.assert_close(net, approx)


def test_grouped_tolerance_picks_the_smallest_shared_rank():
    w = decaying((12, 8, 3, 3), seed=7)
    for tol in (0.1, 0.3):
        fmt = Grouped.from_dense(w, Truncation(rel_tol=tol), channel_groups=2)
        assert fmt.error <= tol
        if fmt.ranks[0] > 1:
            fewer = Grouped.from_dense(w, ranks=fmt.ranks[0] - 1, channel_groups=2)
            assert fewer.error > tol
    with pytest.raises(ValueError, match="channel_groups=3 must divide"):
        Grouped.from_dense(w, ranks=2, channel_groups=3)
