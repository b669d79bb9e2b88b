import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from tensornet import Truncation, qr, svd, truncated_svd


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5), (3, 4, 6)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck_distinct_values(shape, dtype):
    torch.manual_seed(0)
    a = torch.randn(*shape, dtype=dtype, requires_grad=True)

    def gauge_invariant(a):
        u, s, vh = svd(a)
        k = 2
        low_rank = (u[..., :k] * s[..., None, :k].to(u.dtype)) @ vh[..., :k, :]
        return low_rank, s, (u.abs() ** 2)[..., :k].sum(-1)

    assert gradcheck(gauge_invariant, (a,))


def test_forward_matches_torch_and_reconstructs(device):
    a = torch.randn(7, 5, dtype=torch.float64, device=device, requires_grad=True)
    u, s, vh = svd(a)
    torch.testing.assert_close(s, torch.linalg.svdvals(a.detach()))
    torch.testing.assert_close(u @ torch.diag(s) @ vh, a.detach())


@pytest.mark.parametrize(
    "matrix",
    [
        torch.eye(4, dtype=torch.float64),  # every value repeated
        torch.zeros(3, 5, dtype=torch.float64),  # every value zero
        torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64)),
        torch.ones(4, 6, dtype=torch.float32),  # rank one, zeros below
    ],
)
def test_degenerate_and_zero_values_give_finite_gradients(matrix):
    a = matrix.clone().requires_grad_(True)
    u, s, vh = svd(a)
    loss = (u[..., :2] @ vh[:2]).sum() + u.sum() + vh.sum() + s.sum()
    loss.backward()
    assert torch.isfinite(a.grad).all()
    # torch's own backward is not finite here: that is what the broadening is for
    b = matrix.clone().requires_grad_(True)
    u, s, vh = torch.linalg.svd(b, full_matrices=False)
    (u.sum() + vh.sum()).backward()
    assert not torch.isfinite(b.grad).all()


def test_gradient_of_singular_values_is_uv():
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    u, s, vh = svd(a)
    s[0].backward()
    torch.testing.assert_close(a.grad, torch.outer(u[:, 0], vh[0]).detach())


def test_truncated_svd_keeps_policy_rank():
    a = torch.randn(8, 6, dtype=torch.float64)
    u, s, vh, full = truncated_svd(a, Truncation(max_rank=3))
    assert u.shape == (8, 3) and s.shape == (3,) and vh.shape == (3, 6) and full.shape == (6,)


def test_qr_is_exact_and_q_orthonormal():
    for shape in [(6, 4), (4, 6)]:
        a = torch.randn(*shape, dtype=torch.float64)
        q, r = qr(a)
        torch.testing.assert_close(q @ r, a)
        torch.testing.assert_close(q.mT @ q, torch.eye(q.shape[1], dtype=a.dtype))


def test_svd_rejects_vectors_and_ints():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        svd(torch.ones(3))
    with pytest.raises(TypeError, match="floating-point"):
        svd(torch.ones(3, 3, dtype=torch.int64))


@pytest.mark.parametrize(
    "dtype, values",
    [
        (torch.float64, [1.0, 1e-8, 5e-9, 1e-9]),
        (torch.float32, [1.0, 1e-4, 5e-5, 1e-5]),
    ],
)
def test_small_well_separated_values_keep_exact_gradients(dtype, values):
    """A graded spectrum: the broadening must not damp gradients of small distinct values."""
    g = torch.Generator().manual_seed(3)
    q1, _ = torch.linalg.qr(torch.randn(6, 4, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(5, 4, generator=g, dtype=torch.float64))
    base = q1 @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ q2.T
    weight = torch.randn(6, 6, generator=g, dtype=torch.float64)

    def grad(svd_fn, a):
        a = a.clone().requires_grad_(True)
        u, _, _ = svd_fn(a)
        projector = torch.outer(u[:, 1], u[:, 1])  # gauge invariant, depends on s_1 vs s_2, s_3
        (projector * weight.to(a.dtype)).sum().backward()
        return a.grad.double()

    ours = grad(svd, base.to(dtype))
    reference = grad(lambda a: torch.linalg.svd(a, full_matrices=False), base)  # float64 torch
    rel = float((ours - reference).norm() / reference.norm())
    assert rel < (1e-8 if dtype == torch.float64 else 1e-2)


@pytest.mark.parametrize(
    "trunc, rank", [(Truncation(max_rank=3), 3), (Truncation(rel_tol=0.3), None)]
)
def test_truncated_svd_is_the_eckart_young_mirsky_optimum(trunc, rank):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 6, generator=g, dtype=torch.float64)
    ref = np.linalg.svd(a.numpy(), compute_uv=False)
    u, s, vh, full = truncated_svd(a, trunc)
    np.testing.assert_allclose(full.numpy(), ref, rtol=1e-12)
    tails = [np.linalg.norm(ref[k:]) / np.linalg.norm(ref) for k in range(len(ref) + 1)]
    k = rank if rank is not None else min(k for k, e in enumerate(tails) if e <= 0.3)
    assert s.shape == (k,) and u.shape == (8, k) and vh.shape == (k, 6)
    np.testing.assert_allclose(s.numpy(), ref[:k], rtol=1e-12)
    torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=torch.float64))
    torch.testing.assert_close(vh @ vh.T, torch.eye(k, dtype=torch.float64))
    err = float(torch.linalg.norm(a - (u * s) @ vh))
    assert err == pytest.approx(np.linalg.norm(ref[k:]), rel=1e-10)


def test_degenerate_inputs_give_the_exact_gradients_of_gauge_invariant_losses():
    # nuclear norm at the identity: d sum(s) / dA = U V^T = I
    a = torch.eye(4, dtype=torch.float64, requires_grad=True)
    svd(a)[1].sum().backward()
    torch.testing.assert_close(a.grad, torch.eye(4, dtype=torch.float64))
    # squared Frobenius norm from the values (a repeated pair and a zero): d sum(s^2) / dA = 2A
    d = torch.diag(torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    b = d.clone().requires_grad_(True)
    svd(b)[1].square().sum().backward()
    torch.testing.assert_close(b.grad, 2 * d)
    # the rank-3 part (the repeated pair inside, a gap to the dropped zero): the derivative of
    # sum(W * A_3) is W less its component on the dropped pair u4 v4^T = e4 e4^T
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = d.clone().requires_grad_(True)
    u, s, vh = svd(c)
    ((u[:, :3] * s[:3]) @ vh[:3] * w).sum().backward()
    expected = w.clone()
    expected[3, 3] = 0
    torch.testing.assert_close(c.grad, expected, atol=1e-8, rtol=0)
