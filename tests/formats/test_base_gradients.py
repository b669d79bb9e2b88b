"""The shared frame route of the formats (``left_svd``: Gram/eigh or SVD): exact gradients on
rank-deficient and degenerate inputs, half precision, and ``from_dense`` end to end."""

import pytest
import torch

from tensornet import HT, TT, Truncation, Tucker
from tensornet.formats.steps import left_svd

F64 = torch.float64


def fd_grad(f, a, h=1e-6):
    a = a.detach().contiguous()
    g = torch.zeros(a.shape, dtype=a.dtype)
    flat = g.view(-1)
    for i in range(a.numel()):
        e = torch.zeros(a.numel(), dtype=a.dtype)
        e[i] = h
        flat[i] = (f(a + e.view(a.shape)) - f(a - e.view(a.shape))) / (2 * h)
    return g


def ad_grad(f, a):
    a = a.detach().clone().requires_grad_(True)
    f(a).backward()
    return a.grad


def rel(x, y):
    return float((x - y).norm() / y.norm())


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def orthogonal(n, seed):
    return torch.linalg.qr(randn(n, n, seed=seed))[0]


MATRICES = {
    "random": randn(4, 9, seed=1),
    "pruned_rows": torch.cat([randn(2, 9, seed=2), torch.zeros(2, 9, dtype=F64)]),
    "rank2": randn(4, 2, seed=3) @ randn(2, 9, seed=4),
    # singular values (2, 2, 1, 1): two degenerate pairs
    "degenerate": orthogonal(4, 5) @ torch.diag(torch.tensor([2.0, 2, 1, 1], dtype=F64))
    @ orthogonal(9, 6)[:4],
}
STEPS = {
    "all": None,
    "rank2": Truncation(max_rank=2),  # across the gap after the first pair / at the rank
    "svd route": Truncation(rel_tol=0.5),  # a tolerance takes the SVD route (here: a gap)
}


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name", MATRICES)
def test_left_svd_frame_gradient_is_exact(name, step):
    """A frame used as the formats use it: projected onto and rebuilt through (gauge-free)."""
    m = MATRICES[name]
    r = randn(*m.shape, seed=9)

    def f(x):
        u, _ = left_svd(x, STEPS[step])
        core = u.mH @ x
        return ((u @ core - r) ** 2).sum() + ((core @ core.mH) ** 2).sum()

    g = ad_grad(f, m)
    assert torch.isfinite(g).all()
    assert rel(g, fd_grad(f, m)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_left_svd_half_precision_is_computed_in_float32(dtype):
    m = randn(4, 9, seed=10)
    u, s = left_svd(m.to(dtype), Truncation(max_rank=3))
    assert u.dtype == dtype and s.dtype == dtype
    ref = torch.linalg.svdvals(m.to(dtype).float().double())
    torch.testing.assert_close(s.double(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close((u.mH @ u).double(), torch.eye(3, dtype=F64), rtol=0, atol=2e-2)


def pruned_kernel():
    x = randn(4, 3, 3, seed=11)
    x[[1, 3]] = 0  # pruned output channels: exactly-zero singular values
    return x


def low_rank():
    return torch.einsum("ar,rbc->abc", randn(4, 2, seed=12), randn(2, 3, 3, seed=13))


INPUTS = {"pruned": pruned_kernel, "low_rank": low_rank}
FORMATS = {"TT": TT, "Tucker": Tucker, "HT": HT}


@pytest.mark.parametrize("ranks", [None, 2])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", INPUTS)
def test_from_dense_gradient_is_exact_on_rank_deficient_inputs(kind, fmt, ranks):
    x = INPUTS[kind]()
    r = randn(*x.shape, seed=14)
    cls = FORMATS[fmt]

    def f(t):
        approx = cls.from_dense(t, ranks=ranks).to_dense()
        return ((approx - r) ** 2).sum()

    g = ad_grad(f, x)
    assert torch.isfinite(g).all()
    assert rel(g, fd_grad(f, x)) < 1e-6


def test_ttmatrix_from_matrix_gradient_is_exact_on_a_pruned_matrix():
    from tensornet import TTMatrix

    m = randn(6, 4, seed=15)
    m[[0, 3]] = 0  # pruned rows
    r = None

    def f(t):
        nonlocal r
        approx = TTMatrix.from_matrix(t, (2, 3), (2, 2)).to_dense()
        r = randn(*approx.shape, seed=16) if r is None else r  # whatever layout it returns
        return ((approx - r) ** 2).sum()

    g = ad_grad(f, m)
    assert torch.isfinite(g).all()
    assert rel(g, fd_grad(f, m)) < 1e-6


def test_ht_truncate_gradient_is_finite_and_exact_on_rank_deficient_input():
    """HT.truncate's frames come from the Gramians through leading_frame: exact gradients on
    an HT whose ranks exceed the tensor's (zero and repeated Gramian eigenvalues)."""
    from tensornet.formats import HT

    torch.manual_seed(0)
    x = torch.zeros(3, 3, 2, 2, dtype=torch.float64)
    x[0, 0] = torch.randn(2, 2, dtype=torch.float64)  # rank 1 across most cuts
    x[1, 1] = x[0, 0]  # a repeated singular value
    ht = HT.from_dense(x, ranks=3)  # ranks above the tensor's: zero and repeated eigenvalues
    tensors = ht.factor_tensors()
    free = ["B0", next(n for n in tensors if n.startswith("U"))]  # enough to cross every frame

    def loss(*ts):
        h = HT.from_factors(ht.structure, {**tensors, **dict(zip(free, ts))})
        return h.truncate(2).to_dense().pow(2).sum()

    args = tuple(tensors[n].clone().requires_grad_() for n in free)
    assert torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-6)
