"""shared_steps: decompositions of a matrix seen before in the block are reused, bitwise."""

import pytest
import torch

import tensornet.formats.steps as steps
from tensornet.core.linalg import truncated_svd
from tensornet.core.truncation import Truncation
from tensornet.formats import get_format
from tensornet.formats.steps import left_svd, shared_steps, shared_svd
from tensornet.nn.alloc_candidates import TOLERANCES

F64 = torch.float64


def _counting(monkeypatch):
    calls = []
    frame = steps._left_frame

    def counted(m, rank, gram):
        calls.append((tuple(m.shape), gram))
        return frame(m, rank, gram)

    monkeypatch.setattr(steps, "_left_frame", counted)
    return calls


@pytest.mark.parametrize("shape", [(5, 40), (30, 40), (40, 7)])
@pytest.mark.parametrize("step", [None, Truncation(max_rank=3), Truncation(abs_tol=1e-12)])
def test_left_svd_in_a_block_is_bitwise_the_one_outside(shape, step):
    m = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    want_u, want_s = left_svd(m, step)
    with shared_steps():
        left_svd(m.clone(), None)  # decomposed first at another rank
        u, s = left_svd(m, step)
    assert torch.equal(u, want_u) and torch.equal(s, want_s)


def test_a_matrix_seen_before_is_not_decomposed_again(monkeypatch):
    calls = _counting(monkeypatch)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(6, 50, generator=g, dtype=F64)
    same_sum = m.flip(0)  # the same sum, other values: decomposed on its own
    with shared_steps():
        a = left_svd(m, Truncation(max_rank=2))[0]
        b = left_svd(m.clone(), Truncation(max_rank=4))[0]
        c = left_svd(same_sum, Truncation(max_rank=2))[0]
        with shared_steps():  # nested: the outer store
            left_svd(m, Truncation(max_rank=5))
        left_svd(m, Truncation(abs_tol=0.0))  # another route (SVD, not Gram): decomposed
    assert len(calls) == 3
    assert torch.equal(b[:, :2], a) and not torch.allclose(c, a)
    left_svd(m, Truncation(max_rank=2))  # after the block: nothing kept
    assert len(calls) == 4 and steps._SHARED.get() is None


def test_outside_a_block_and_for_gradients_or_half_dtypes_nothing_is_shared(monkeypatch):
    calls = _counting(monkeypatch)
    m = torch.randn(4, 9, dtype=F64)
    left_svd(m, None), left_svd(m, None)
    with shared_steps():
        g = m.clone().requires_grad_()
        u, _ = left_svd(g, Truncation(max_rank=2))
        u.sum().backward()  # the frame stays differentiable
        left_svd(g, Truncation(max_rank=2))
        h = m.to(torch.bfloat16)
        left_svd(h, None), left_svd(h, None)
    assert len(calls) == 6 and g.grad is not None and torch.isfinite(g.grad).all()


def test_shared_svd_is_truncated_svd_and_reused(monkeypatch):
    m = torch.randn(7, 30, generator=torch.Generator().manual_seed(2), dtype=F64)
    trunc = Truncation(max_rank=3)
    want = truncated_svd(m, trunc)
    calls = []

    def counted(a, t=None):
        calls.append(1)
        return truncated_svd(a, t)

    monkeypatch.setattr(steps, "truncated_svd", counted)
    with shared_steps():
        got = shared_svd(m, trunc)
        again = shared_svd(m.clone(), Truncation(max_rank=5))
    assert len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(calls) == 1
    assert again[0].shape == (7, 5) and torch.equal(again[3], want[3])
    assert all(torch.equal(a, b) for a, b in zip(shared_svd(m, trunc), want[:3]))


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("tt", {"order": ("in", "kh", "kw", "out")}),
        ("tt", {"order": ("kh", "kw", "in", "out")}),
        ("ht", {}),
        ("tr", {}),
        ("tucker", {}),
    ],
)
def test_decompositions_at_every_tolerance_are_bitwise_the_same_in_a_block(fmt, options):
    g = torch.Generator().manual_seed(3)
    scales = torch.logspace(0, -2, 12, dtype=F64)
    w = (torch.randn(12, 12, generator=g, dtype=F64) * scales) @ torch.randn(
        12, 10 * 9, generator=g, dtype=F64
    )
    w = w.reshape(12, 10, 3, 3)
    legs = ("out", "in", "kh", "kw")
    f = get_format(fmt)
    want = [f.from_dense(w, trunc=Truncation(rel_tol=t), legs=legs, **options) for t in TOLERANCES]
    with shared_steps():
        got = [
            f.from_dense(w, trunc=Truncation(rel_tol=t), legs=legs, **options) for t in TOLERANCES
        ]
        again = [f.from_dense(w, ranks=x.ranks, legs=legs, **options) for x in got]
    for a, b in zip(got, want):
        assert a.ranks == b.ranks and a.error == b.error
        assert torch.equal(a.to_dense(), b.to_dense())
    for a, b in zip(again, got):
        plain = f.from_dense(w, ranks=b.ranks, legs=legs, **options)
        assert torch.equal(a.to_dense(), plain.to_dense())


def test_shared_svd_without_a_truncation_keeps_everything():
    m = torch.randn(6, 9, generator=torch.Generator().manual_seed(4), dtype=F64)
    want = truncated_svd(m)
    with shared_steps():
        first = shared_svd(m, None)
        again = shared_svd(m.clone(), None)
    for got in (first, again):
        assert got[0].shape == (6, 6) and got[2].shape == (6, 9)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
