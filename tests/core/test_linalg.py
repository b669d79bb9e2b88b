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


# -- messages, half precision, factorize, leading_frame, one-sided gradients ----------------------
from tensornet.core.linalg import factorize, leading_frame, svdvals  # noqa: E402

DT = torch.float64


def _rand(*shape, seed=0, dtype=DT):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: qr([[1.0]]), TypeError, "^qr needs a torch.Tensor, got list$"),
        (lambda: svdvals(torch.ones(3)), ValueError,
         r"^svdvals needs a matrix \(\.\.\., m, n\), got shape \(3,\)$"),
        (lambda: factorize(torch.ones(2, 2, dtype=torch.int64)), TypeError,
         "^factorize needs a floating-point or complex tensor, got torch.int64$"),
        (lambda: truncated_svd(torch.ones(2)), ValueError, "^truncated_svd needs a matrix"),
        (lambda: leading_frame(torch.ones(2)), ValueError, "^leading_frame needs a matrix "),
        (lambda: svd(torch.ones(2, 2), degenerate="x"), ValueError,
         r"^degenerate must be one of \('product', 'drop'\), got 'x'$"),
        (lambda: truncated_svd(torch.ones(2, 2), degenerate="y"), ValueError, "got 'y'$"),
        (lambda: factorize(torch.ones(2, 2), absorb="up"), ValueError,
         "^absorb must be 'left', 'right', 'both' or None, got 'up'$"),
        (lambda: leading_frame(torch.ones(2, 3, 4)), ValueError,
         r"^leading_frame needs a matrix, got shape \(2, 3, 4\)$"),
        (lambda: leading_frame(torch.ones(5, 3), method="gram"), ValueError,
         r"^method='gram' needs rows <= cols, got shape \(5, 3\)$"),
        (lambda: leading_frame(torch.ones(3, 5), method="qr"), ValueError,
         "^method must be 'svd' or 'gram', got 'qr'$"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_half_precision_is_computed_in_float32_and_cast_back():
    a16 = _rand(5, 3, seed=1, dtype=torch.float32).half()
    ref = a16.float()
    u, s, vh = svd(a16)
    assert u.dtype == s.dtype == vh.dtype == torch.float16
    torch.testing.assert_close(s.float(), torch.linalg.svdvals(ref), rtol=2e-3, atol=2e-3)
    torch.testing.assert_close((u.float() * s.float()) @ vh.float(), ref, rtol=0, atol=1e-2)
    assert svdvals(a16).dtype == torch.float16
    torch.testing.assert_close(svdvals(a16).float(), torch.linalg.svdvals(ref), rtol=2e-3, atol=0)
    parts = truncated_svd(a16, Truncation(max_rank=2))
    assert [p.dtype for p in parts] == [torch.float16] * 4 and parts[1].shape == (2,)
    left, sk, right, full = factorize(a16.bfloat16(), Truncation(max_rank=3), absorb="left")
    assert left.dtype == right.dtype == full.dtype == torch.bfloat16
    torch.testing.assert_close((left.float() @ right.float()), ref, rtol=0, atol=5e-2)
    q, r = qr(a16)
    assert q.dtype == r.dtype == torch.float16
    torch.testing.assert_close(q.float() @ r.float(), ref, rtol=0, atol=1e-2)
    f, fs = leading_frame(a16.T.contiguous(), 2, method="gram")
    assert f.dtype == fs.dtype == torch.float16 and f.shape == (3, 2)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
@pytest.mark.parametrize("grad", [False, True])
def test_factorize_puts_the_values_where_absorb_says(shape, grad):
    """left/right are U_k S_k / Vh_k, U_k / S_k Vh_k, U_k sqrt(S_k) / sqrt(S_k) Vh_k, U_k / Vh_k."""
    a = _rand(*shape, seed=2)
    u, s, vh = (torch.from_numpy(x) for x in np.linalg.svd(a.numpy(), full_matrices=False))
    k = 3
    expected = {
        "left": (u[:, :k] * s[:k], vh[:k]),
        "right": (u[:, :k], s[:k, None] * vh[:k]),
        "both": (u[:, :k] * s[:k].sqrt(), s[:k, None].sqrt() * vh[:k]),
        None: (u[:, :k], vh[:k]),
    }
    x = a.clone().requires_grad_(grad)
    for absorb, (el, er) in expected.items():
        left, sk, right, full = factorize(x, Truncation(max_rank=k), absorb)
        np.testing.assert_allclose(full.numpy(), s.numpy(), rtol=1e-12)
        np.testing.assert_allclose(sk.detach().numpy(), s[:k].numpy(), rtol=1e-12)
        sign = torch.sign((right.detach()[:, 0]) * er[:, 0])
        torch.testing.assert_close(left.detach() * sign, el, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(right.detach() * sign[:, None], er, rtol=1e-10, atol=1e-12)
    left, _, right, _ = factorize(x)  # no truncation: exact
    torch.testing.assert_close(left.detach() @ right.detach(), a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("absorb", ["left", "right", "both", None])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_factorize_gradcheck_through_the_product(absorb, shape):
    a = _rand(*shape, seed=3).requires_grad_(True)

    def product(x):
        left, sk, right, _ = factorize(x, Truncation(max_rank=2), absorb)
        mid = left * sk if absorb is None else left
        return mid @ right, sk

    assert gradcheck(product, (a,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (3, 3)])
def test_svd_gradcheck_of_each_output_alone(shape, dtype):
    """The backward with only dU, only dVh or only dS given (the others None)."""
    a = _rand(*shape, seed=4, dtype=dtype).requires_grad_(True)
    w = _rand(*shape, seed=5, dtype=dtype)
    assert gradcheck(lambda x: svd(x)[1], (a,), fast_mode=True)
    assert gradcheck(lambda x: (svd(x)[0].abs() ** 2)[:, :3], (a,), fast_mode=True)
    assert gradcheck(lambda x: (svd(x)[2].abs() ** 2)[:3], (a,), fast_mode=True)
    # a phase-invariant loss of U alone and of Vh alone: the projectors onto 2 leading vectors
    assert gradcheck(lambda x: (lambda u: u[:, :2] @ u[:, :2].mH)(svd(x)[0]), (a,), fast_mode=True)
    assert gradcheck(lambda x: (lambda v: v[:2].mH @ v[:2])(svd(x)[2]), (a,), fast_mode=True)

    def weighted_product(x):
        u, s, v = svd(x)
        return ((u * s.to(dtype)) @ v * w).sum()

    assert gradcheck(weighted_product, (a,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (3, 3)])
def test_qr_gradcheck_of_q_and_r_alone(shape, dtype):
    """The QR backward with only dQ or only dR given, real and complex, tall, wide, square."""
    a = _rand(*shape, seed=6, dtype=dtype).requires_grad_(True)
    assert gradcheck(lambda x: qr(x)[0], (a,), fast_mode=True)
    assert gradcheck(lambda x: qr(x)[1], (a,), fast_mode=True)
    assert gradcheck(lambda x: torch.matmul(*qr(x)), (a,), fast_mode=True)


def test_qr_without_gradients_is_torch_qr():
    a = _rand(5, 3, seed=7)
    q, r = qr(a)
    ref = torch.linalg.qr(a, mode="reduced")
    assert torch.equal(q, ref.Q) and torch.equal(r, ref.R)
    torch.testing.assert_close(q.mT @ q, torch.eye(3, dtype=DT), rtol=0, atol=1e-12)


def test_broadening_is_the_width_it_says():
    """An explicit broadening equal to the default changes nothing; a wide one damps gradients."""
    values = [3.0, 2.9, 1.0]
    a = rotated_diag(values)
    w = _rand(3, 3, seed=8)

    def grad(**kwargs):
        x = a.clone().requires_grad_(True)
        u, _, _ = svd(x, **kwargs)
        ((u[:, :1] @ u[:, :1].T) * w).sum().backward()
        return x.grad

    exact = grad()
    default = grad(broadening=torch.finfo(DT).eps ** 0.5)
    torch.testing.assert_close(default, exact, rtol=0, atol=0)
    ref = a.clone().requires_grad_(True)
    u, _, _ = torch.linalg.svd(ref)
    ((u[:, :1] @ u[:, :1].T) * w).sum().backward()
    torch.testing.assert_close(exact, ref.grad, rtol=1e-10, atol=1e-12)
    assert float((grad(broadening=1.0) - exact).norm()) > 0.1 * float(exact.norm())


def rotated_diag(values, seed=9):
    n = len(values)
    q1 = torch.linalg.qr(_rand(n, n, seed=seed))[0]
    q2 = torch.linalg.qr(_rand(n, n, seed=seed + 1))[0]
    return q1 @ torch.diag(torch.tensor(values, dtype=DT)) @ q2.T


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_leading_frame_spans_the_leading_subspace(method):
    """The frame is orthonormal, spans numpy's leading left singular vectors; S is the spectrum."""
    m = _rand(4, 7, seed=10)
    u, s, _ = np.linalg.svd(m.numpy(), full_matrices=False)
    for rank, k in ((None, 4), (2, 2), (lambda sv: int((sv > s[1] * 0.99).sum()), 2)):
        frame, spectrum = leading_frame(m, rank, method=method)
        assert frame.shape == (4, k)
        np.testing.assert_allclose(spectrum.numpy(), s, rtol=1e-10)
        proj = frame @ frame.T
        np.testing.assert_allclose(proj.numpy(), u[:, :k] @ u[:, :k].T, atol=1e-10)
        torch.testing.assert_close(frame.T @ frame, torch.eye(k, dtype=DT), rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["svd", "gram"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_leading_frame_gradient_of_the_projection_is_exact(method, dtype):
    """``U_k U_k^H M`` (a HOSVD step) has the gradient torch computes at distinct values."""
    m = _rand(3, 6, seed=11, dtype=dtype).requires_grad_(True)
    w = _rand(3, 6, seed=12, dtype=dtype)

    def loss(x, frame_fn):
        u = frame_fn(x)
        return ((u @ (u.mH @ x)) * w).abs().square().sum()

    ours = torch.autograd.grad(loss(m, lambda x: leading_frame(x, 2, method=method)[0]), m)[0]
    ref = torch.autograd.grad(loss(m, lambda x: torch.linalg.svd(x)[0][:, :2]), m)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-6 if method == "gram" else 1e-9, atol=1e-9)

    def projector(x):
        u = leading_frame(x, 2, method=method)[0]
        return u @ u.mH

    assert gradcheck(projector, (m,), fast_mode=True)


def test_leading_frame_rotations_of_repeated_values_get_no_gradient():
    """At a repeated leading pair the frame's projector is smooth: finite, exact gradient."""
    m = torch.cat([rotated_diag([2.0, 2.0, 1.0]), torch.zeros(3, 2, dtype=DT)], 1)
    w = _rand(3, 3, seed=13)
    for method in ("svd", "gram"):
        x = m.clone().requires_grad_(True)
        u, _ = leading_frame(x, 2, method=method)
        ((u @ u.T) * w).sum().backward()
        assert torch.isfinite(x.grad).all()
        # the projector onto the (2, 2) block is that of the exact block, so the gradient is its
        # derivative: w projected across the gap, divided by the gap's squares
        uf, sf, vhf = torch.linalg.svd(m)
        p, q = uf[:, :2], uf[:, 2:]
        sym = (w + w.T) / 2
        c = p.T @ sym @ q  # (2, 1)
        expected = torch.zeros(3, 5, dtype=DT)
        for i in range(2):
            for j in range(1):
                si, sj = sf[i], sf[2 + j]
                # d(P) along dA: sum over kept i, dropped j of terms in u_i u_j^T
                coef = 2 * c[i, j] / (si**2 - sj**2)
                expected += coef * (
                    si * torch.outer(q[:, j], vhf[i]) + sj * torch.outer(p[:, i], vhf[2 + j])
                )
        torch.testing.assert_close(x.grad, expected, rtol=1e-6, atol=1e-8)


def test_batched_matrices_of_very_different_scales_each_keep_exact_gradients():
    """Widths and floors are relative to each matrix's own largest value, not the batch's."""
    base = torch.stack([rotated_diag([3.0, 2.0, 1.0], seed=20)[:, :2]] * 2)  # tall 3 x 2
    scales = torch.tensor([1e-200, 1.0], dtype=DT)[:, None, None]
    a = base * scales
    w = _rand(3, 3, seed=21)
    r = _rand(3, 2, seed=22)

    def losses(u, s, vh, x_scale):
        proj = u[:, :1] @ u[:, :1].T  # scale-free
        rec = (u * s) @ vh / x_scale
        return (proj * w).sum() + ((rec - r) ** 2).sum() + (u.abs() ** 2)[:, 0].sum()

    x = a.clone().requires_grad_(True)
    u, s, vh = svd(x)
    sum(losses(u[i], s[i], vh[i], scales[i]) for i in range(2)).backward()
    assert torch.isfinite(x.grad).all()
    for i in range(2):
        y = base[i].clone().requires_grad_(True)  # the same matrix at unit scale
        losses(*svd(y), 1.0).backward()
        torch.testing.assert_close(x.grad[i] * scales[i], y.grad, rtol=1e-9, atol=1e-12)


def test_batched_empty_matrices_have_zero_gradients_of_the_batch_shape():
    a = torch.zeros(2, 3, 0, 4, dtype=DT, requires_grad=True)
    u, s, vh = svd(a)
    assert u.shape == (2, 3, 0, 0) and vh.shape == (2, 3, 0, 4)
    (u.sum() + s.sum() + vh.sum() + a.sum()).backward()
    assert a.grad.shape == (2, 3, 0, 4)


def test_complex_polar_factor_with_drop_passes_gradcheck():
    """``degenerate="drop"`` on complex input (the ill-defined part is then zero, not estimated)."""
    a = _rand(3, 3, seed=23, dtype=torch.complex128).requires_grad_(True)

    def polar(x):
        u, s, vh = svd(x, degenerate="drop")
        return u @ vh, s

    assert gradcheck(polar, (a,), fast_mode=True)


@pytest.mark.parametrize("shape", [(2, 4, 3), (2, 3, 3), (2, 3, 4)])
def test_batched_complex_qr_gradcheck(shape):
    a = _rand(*shape, seed=24, dtype=torch.complex128).requires_grad_(True)
    assert gradcheck(lambda x: qr(x)[0], (a,), fast_mode=True)
    assert gradcheck(lambda x: qr(x)[1], (a,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_reference_norm_sets_the_relative_tolerance(dtype):
    """``norm`` replaces ||a|| in ``rel_tol``: a larger reference norm keeps fewer values."""
    a = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=DT)).to(dtype)
    trunc = Truncation(rel_tol=0.3)
    norm = float(a.double().norm())
    assert truncated_svd(a, trunc)[1].shape == (2,)  # tail (1, .5): 0.24 of 4.58
    assert truncated_svd(a, trunc, norm=4 * norm)[1].shape == (1,)  # tail of (2, 1, .5) / 18.3
    assert factorize(a, trunc)[1].shape == (2,)
    left, sk, right, _ = factorize(a, trunc, absorb="right", norm=4 * norm)
    assert sk.shape == (1,) and left.shape == (4, 1) and right.shape == (1, 4)
    assert left.dtype == dtype
    torch.testing.assert_close(
        (left @ right).double(), torch.diag(torch.tensor([4.0, 0, 0, 0], dtype=DT)), rtol=0, atol=0
    )


def test_half_precision_gradients_honour_broadening_and_truncation():
    a = rotated_diag([3.0, 2.9, 1.0], seed=25).to(torch.float32)
    w = _rand(3, 3, seed=26).float()

    def grad(dtype, **kwargs):
        x = a.to(dtype).detach().clone().requires_grad_(True)
        u, _, _ = svd(x, **kwargs)
        ((u[:, :1].float() @ u[:, :1].float().T) * w).sum().backward()
        return x.grad.float()

    exact = grad(torch.float32)
    torch.testing.assert_close(grad(torch.bfloat16), exact, rtol=0.1, atol=0.1)
    assert float((grad(torch.bfloat16, broadening=1.0) - exact).norm()) > 0.1 * float(exact.norm())
    x = a.half()
    left, sk, right, full = factorize(x, Truncation(max_rank=2), absorb="left")
    assert sk.shape == (2,) and full.shape == (3,) and left.shape == (3, 2)


def test_leading_frame_defaults_and_small_values():
    """Default method is the SVD; gram takes square matrices; values below 1 are not clamped."""
    m = 0.01 * _rand(3, 3, seed=27)
    s = np.linalg.svd(m.numpy(), compute_uv=False)
    frame, spectrum = leading_frame(m, 2)
    ref, _ = leading_frame(m, 2, method="svd")
    assert torch.equal(frame, ref)
    for method in ("svd", "gram"):
        frame, spectrum = leading_frame(m, None, method=method)
        np.testing.assert_allclose(spectrum.numpy(), s, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^method='gram' needs rows <= cols, got shape \(3, 2\)$"):
        leading_frame(m[:, :2].half(), 1, method="gram")
    np.testing.assert_allclose(svdvals(m).numpy(), s, rtol=1e-12)


def test_leading_frame_gradient_ignores_rotations_of_the_kept_columns():
    """A loss that depends on the gauge of U_k: torch's gradient has a rotation part, ours not."""
    m = _rand(3, 5, seed=28)
    w = _rand(3, 2, seed=29)
    x = m.clone().requires_grad_(True)
    (leading_frame(x, 2)[0] * w).sum().backward()
    y = m.clone().requires_grad_(True)
    (torch.linalg.svd(y, full_matrices=False)[0][:, :2] * w).sum().backward()
    assert float((x.grad - y.grad).norm()) > 0.1 * float(y.grad.norm())


def test_broadened_inverse_values():
    """``x / (x^2 + w^2)``: 1/x far from 0, 0 at 0, half of 1/x where |x| equals the width."""
    from tensornet.core.linalg import _broadened

    x = torch.tensor([0.0, 1.0, -1.0, 2.0, 1e3], dtype=DT)
    torch.testing.assert_close(
        _broadened(x, 1.0), torch.tensor([0.0, 0.5, -0.5, 0.4, 1e3 / (1e6 + 1)], dtype=DT)
    )


def test_svd_errors_name_svd():
    message = r"^svd needs a matrix \(\.\.\., m, n\), got shape \(3,\)$"
    with pytest.raises(ValueError, match=message):
        svd(torch.ones(3))


@pytest.mark.parametrize(
    "shape, rank", [((2, 5, 3), None), ((2, 3, 5), None), ((2, 4, 4), None), ((5, 3), 2),
                    ((3, 5), 2)],
)  # fmt: skip
def test_both_split_scales_have_exact_gradients(shape, rank):
    """``absorb="both"``: the gauge-invariant Gram matrices ``X^H X`` and ``Yh Yh^H`` are
    ``diag(s_k)`` on both sides, so their gradients test the scales' derivatives directly. A
    batch holds matrices of very different sizes of values (scales are per matrix)."""
    a = _rand(*shape, seed=25)
    if a.ndim == 3:
        a[1] *= 1e-3
    a.requires_grad_(True)
    trunc = None if rank is None else Truncation(max_rank=rank)

    def grams(x):
        left, _, right, _ = factorize(x, trunc, "both")
        return left.mH @ left, right @ right.mH, left @ right

    assert gradcheck(grams, (a,), fast_mode=True)
    left, sk, right, full = factorize(a.detach(), trunc, "both")
    torch.testing.assert_close(left.mH @ left, torch.diag_embed(sk), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(right @ right.mH, torch.diag_embed(sk), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(full, torch.linalg.svdvals(a.detach()), rtol=1e-12, atol=0)


def test_both_split_of_tiny_values_in_float64_is_still_the_square_root():
    """Values far below float32's rounding level stay ``sqrt(s)`` on both sides in float64."""
    a = torch.diag(torch.tensor([1.0, 1e-9, 1e-13], dtype=DT))[:, :3]
    left, sk, right, _ = factorize(a, None, "both")
    np.testing.assert_allclose(left.norm(dim=0).numpy(), np.sqrt([1.0, 1e-9, 1e-13]), rtol=1e-12)
    np.testing.assert_allclose(right.norm(dim=1).numpy(), np.sqrt([1.0, 1e-9, 1e-13]), rtol=1e-12)


def test_half_precision_keeps_absorb_and_degenerate():
    """The float32 round trip of half inputs passes every option on."""
    a16 = _rand(5, 3, seed=26, dtype=torch.float32).half()
    for absorb in ("left", "right", None):
        half = factorize(a16, Truncation(max_rank=2), absorb)
        ref = factorize(a16.float(), Truncation(max_rank=2), absorb)
        for h, r in zip(half, ref):
            torch.testing.assert_close(h.float(), r.half().float(), rtol=0, atol=0)
    # repeated values 2, 2 and a loss through one column pair: "drop" and "product" differ
    base = torch.diag(torch.tensor([2.0, 2.0, 1.0]))
    w = _rand(3, 3, seed=27, dtype=torch.float32)

    def grad(x, fn, degenerate):
        x = x.clone().requires_grad_(True)
        u, *_, vh = fn(x, degenerate)
        (w.to(x.dtype) * (u[:, :1] @ vh[:1])).sum().backward()
        return x.grad.float()

    calls = {
        "svd": lambda x, d: svd(x, degenerate=d),
        "truncated_svd": lambda x, d: truncated_svd(x, Truncation(max_rank=3), degenerate=d),
    }
    for fn in calls.values():
        drop, product = grad(base, fn, "drop"), grad(base, fn, "product")
        assert (drop - product).abs().max() > 0.03
        for degenerate, ref in (("drop", drop), ("product", product)):
            torch.testing.assert_close(grad(base.half(), fn, degenerate), ref, rtol=0, atol=5e-3)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])
def test_complex_both_split_is_exact_at_zero_values(shape):
    """Complex input with exactly-zero values: ``absorb="both"`` keeps the product's gradient
    exact, the phase (imaginary diagonal) part included."""
    m, n = shape
    g = torch.Generator().manual_seed(28)
    ur = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.complex128))[0]
    vr = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.complex128))[0]
    d = torch.zeros(m, n, dtype=torch.complex128)
    d[0, 0], d[1, 1] = 3.0, 1.0  # two zero values
    a = (ur @ d @ vr).requires_grad_(True)
    w = torch.randn(m, n, generator=g, dtype=torch.complex128)

    def loss(x):
        left, _, right, _ = factorize(x, None, "both")
        prod = left @ right
        return (w.conj() * prod).real.sum() + (prod.abs() ** 2).sum()

    loss(a).backward()
    expected = w + 2 * a.detach()  # d/d conj(a) of Re<w, a> + |a|^2, as torch reports it
    torch.testing.assert_close(a.grad, expected, rtol=1e-10, atol=1e-10)


def test_truncated_svd_gradient_is_exact_for_close_but_distinct_values():
    """Values 1e-4 apart (relative) are far outside the float64 broadening: exact gradient."""
    a = rotated_diag([2.0, 2.0 * (1 - 1e-4), 1.0], seed=29)
    w = _rand(3, 3, seed=30)

    def loss(x):
        u, _, _, _ = truncated_svd(x, Truncation(max_rank=3))
        return (w * (u[:, :1] @ u[:, :1].T)).sum()  # the leading projector

    x = a.clone().requires_grad_(True)
    loss(x).backward()
    h = 1e-8
    fd = torch.zeros_like(a)
    for i in range(3):
        for j in range(3):
            e = torch.zeros_like(a)
            e[i, j] = h
            fd[i, j] = (loss(a + e) - loss(a - e)) / (2 * h)
    assert float(x.grad.abs().max()) > 100  # the close pair dominates the gradient
    torch.testing.assert_close(x.grad, fd, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 3, 5)])
def test_both_split_floors_are_per_matrix_in_a_batch(shape):
    """A batch of a unit and a 1e-200 matrix: each keeps ``sqrt(s)`` on both sides (the floor
    under ``sqrt`` follows each matrix's own largest value, not the batch's)."""
    a = _rand(*shape, seed=31)
    a[1] *= 1e-200
    left, sk, right, _ = factorize(a, None, "both")
    expected = torch.stack([torch.linalg.svdvals(a[0]), torch.linalg.svdvals(a[1] * 1e200)])
    scale = torch.tensor([1.0, 1e-200], dtype=DT)[:, None]
    torch.testing.assert_close(left.norm(dim=-2) ** 2 / scale, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(right.norm(dim=-1) ** 2 / scale, expected, rtol=1e-12, atol=0)
