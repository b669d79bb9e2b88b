"""SVD and QR for tensor networks, with backward passes that are exact where the math is defined.

The SVD backward
----------------
For ``A = U S V^H`` the textbook backward couples each pair of singular values through

``M_ij = (A_ij + B_ij) / (2 (s_j - s_i)) + (A_ij - B_ij) / (2 (s_i + s_j))``

with ``A = J - J^H``, ``B = K - K^H``, ``J = U^H dU``, ``K = V^H dV``. Only the first term is
singular for repeated values, and its numerator vanishes for every gauge-invariant loss; the
second term is kept exactly (it is singular only when both values are zero). The first term is
broadened, ``1/x -> x / (x^2 + w^2)`` with ``w = broadening * (s_i + s_j)``, so only pairs that
agree to about ``sqrt(eps)`` relative are touched. At such pairs the limit ``0/0`` is not
determined by ``dU, dS, dV`` alone (two gauge-invariant losses can share them and differ in
gradient), so a value has to be chosen:

- ``degenerate="product"`` (default) gives it the value that is exact for every loss of the
  reconstruction ``U S V^H`` (a split contracted back, a truncated ``U_k S_k V_k^H``);
- ``degenerate="drop"`` sets it to zero, which is exact for losses through ``U V^H``, through the
  projectors ``U U^H`` / ``V V^H`` or through the singular values alone.

The terms ``(1 - U U^H) dU S^{-1}`` (tall) and ``S^{-1} dV^H (1 - V V^H)`` (wide) divide by
single values; :func:`factorize`, which returns the factors of a split with the singular values
already absorbed, evaluates them without any division where the absorbed side allows it, and
puts a tiny floor under ``sqrt(s)`` for ``absorb="both"`` so that exactly-zero values (pruned
channels) keep exact gradients.

What no backward can recover: when an isometric output has more rows than the rank it carries (a
tall ``U`` or ``Q`` of a rank-deficient matrix), the part of the gradient that lies outside its
columns and in the null space of the matrix does not reach the outputs at all (those columns are
arbitrary there, so the isometry is not differentiable); it is set to zero and every other part
stays exact. ``absorb="both"`` has no such part.

float16/bfloat16 inputs are computed in float32 (LAPACK has no half-precision routines) and the
factors cast back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from .truncation import Truncation

__all__ = ["svd", "svdvals", "truncated_svd", "factorize", "qr", "leading_frame"]

_HALF = (torch.float16, torch.bfloat16)
Degenerate = Literal["product", "drop"]
Absorb = Literal["left", "right", "both"] | None
_DEGENERATE = ("product", "drop")


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(_real_dtype(dtype)).eps


def _check_matrix(a: torch.Tensor, what: str) -> None:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"{what} needs a torch.Tensor, got {type(a).__name__}")
    if a.ndim < 2:
        raise ValueError(f"{what} needs a matrix (..., m, n), got shape {tuple(a.shape)}")
    if not (a.is_floating_point() or a.is_complex()):
        raise TypeError(f"{what} needs a floating-point or complex tensor, got {a.dtype}")


def _check_degenerate(degenerate: str) -> None:
    if degenerate not in _DEGENERATE:
        raise ValueError(f"degenerate must be one of {_DEGENERATE}, got {degenerate!r}")


def _broadened(x: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """``1/x`` where ``|x| >> width``, smoothly ``-> 0`` at ``x = 0`` (``x / (x^2 + width^2)``)."""
    return x / (x * x + width * width)


def _safe_inverse(x: torch.Tensor, rel: float) -> torch.Tensor:
    """``1/x`` for ``x >= 0``, broadened at ``rel * max(x)`` (last dimension); never inf/NaN."""
    xmax = x.amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny) if x.shape[-1] else x
    return _broadened(x / xmax, rel) / xmax


def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Zero-pad the last dimension to ``p``."""
    k = x.shape[-1]
    return x if k == p else torch.cat([x, x.new_zeros(*x.shape[:-1], p - k)], -1)


def _scales(
    s: torch.Tensor, mode: str, wide: bool, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, da, db)``: the factors ``U diag(a)`` and ``diag(b) V^H`` of one absorb mode.

    ``a * b == s`` (times ``s`` again for the plain SVD, whose ``S`` is an output of its own);
    ``da, db`` are the derivatives in ``s``. For ``"both"`` the side without a complement (``U`` of
    a wide matrix, ``V`` of a tall one) gets ``sqrt(max(s, tau^2))`` with ``tau^2`` at the
    rounding level of the largest value, the other side ``s / that``: identical to ``sqrt(s)``
    except for values in the rounding noise, and differentiable at ``s = 0``.
    """
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    if mode == "svd":
        return one, one, zero, zero
    if mode == "left":
        return s, one, one, zero
    if mode == "right":
        return one, s, zero, one
    smax = s.amax(-1, keepdim=True) if s.shape[-1] else s.new_zeros(*s.shape[:-1], 1)
    tau2 = torch.clamp(floor * smax, min=torch.finfo(s.dtype).tiny)
    big = torch.sqrt(torch.maximum(s, tau2))
    dbig = torch.where(s > tau2, 0.5 / big, zero)
    small = s / big
    dsmall = 1.0 / big - s * dbig / (big * big)
    return (big, small, dbig, dsmall) if wide else (small, big, dsmall, dbig)


def _factors(
    a: torch.Tensor, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Forward of :class:`_SVDFactors`: ``X = U_k diag(a)``, ``s_k``, ``Yh = diag(b) Vh_k``."""
    scales = _scales(s[..., :k], mode, a.shape[-2] <= a.shape[-1], _eps(a.dtype))
    av, bv = scales[0], scales[1]
    x = u[..., :k] * av.unsqueeze(-2).to(u.dtype)
    yh = bv.unsqueeze(-1).to(vh.dtype) * vh[..., :k, :]
    return x, s[..., :k].clone(), yh, scales


class _SVDFactors(torch.autograd.Function):
    """``(U_k diag(a), s_k, diag(b) Vh_k)`` from a precomputed SVD of ``a``; see the module doc."""

    @staticmethod
    def forward(ctx, a, u, s, vh, k, mode, degenerate, gap, floor, frame):  # type: ignore[override]
        x, sk, yh, scales = _factors(a, u, s, vh, k, mode)
        ctx.save_for_backward(u, s, vh, *scales)
        ctx.opts = (k, mode, degenerate, gap, floor, frame)
        return x, sk, yh

    @staticmethod
    @once_differentiable
    def backward(ctx, gx, gs, gyh):  # type: ignore[override]
        u, s, vh, av, bv, dav, dbv = ctx.saved_tensors
        k, mode, degenerate, gap, floor, frame = ctx.opts
        ga = _svd_backward(
            u, s, vh, k, av, bv, dav, dbv, mode == "svd", gx, gs, gyh, degenerate, gap, floor,
            frame,
        )
        return ga, None, None, None, None, None, None, None, None, None


def _svd_backward(
    u: torch.Tensor,
    s: torch.Tensor,
    vh: torch.Tensor,
    k: int,
    av: torch.Tensor,
    bv: torch.Tensor,
    dav: torch.Tensor,
    dbv: torch.Tensor,
    s_is_output: bool,
    gx: torch.Tensor,
    gs: torch.Tensor,
    gyh: torch.Tensor,
    degenerate: str,
    gap: float,
    floor: float,
    frame: bool,
) -> torch.Tensor:
    """Gradient of ``A`` from the gradients of ``X = U_k diag(a)``, ``s_k``, ``Yh = diag(b) Vh_k``.

    ``P = U^H gX`` and ``Q = V^H gY`` are the outputs' gradients before the scales are applied;
    the textbook ``J = U^H gU`` and ``K = V^H gV`` are ``P diag(a)`` and ``Q diag(b)``. The
    output gradients are never None: autograd passes zeros for unused outputs (gradients are
    materialized, the default of ``torch.autograd.Function``).
    """
    m, n, p = u.shape[-2], vh.shape[-1], s.shape[-1]
    dt = u.dtype
    if p == 0:  # an empty matrix: nothing depends on it
        return u.new_zeros(*s.shape[:-1], m, n)
    v = vh.mH
    smax = s.amax(-1, keepdim=True)
    smax = torch.where(smax > 0, smax, torch.ones_like(smax))
    pk = u.mH @ gx
    qk = v.mH @ gyh.mH
    pp, qp = _pad(pk, p), _pad(qk, p)
    ap, bp = _pad(av, p), _pad(bv, p)
    cp = s if s_is_output else torch.ones_like(s)
    jm = pp * ap.unsqueeze(-2).to(dt)
    km = qp * bp.unsqueeze(-2).to(dt)
    sn = s / smax  # ratios in units of the largest value, so that no width underflows
    chat = _product_c(pp, qp, cp * ap, cp * bp, dt) if degenerate == "product" else None
    inner = _off_diagonal(jm, km, sn, smax, gap, floor, chat)

    diag = _pad(gs, p)
    if k:
        diag = diag + _pad(dav * pk[..., :k, :].diagonal(dim1=-2, dim2=-1).real, p)
        diag = diag + _pad(dbv * qk[..., :k, :].diagonal(dim1=-2, dim2=-1).real, p)
    diag_c = diag.to(dt)
    if u.is_complex():
        diag_c = diag_c + 1j * _imaginary_diagonal(jm, km, sn, smax, floor, chat)
    inner = inner + torch.diag_embed(diag_c)
    if frame:  # rotations among the kept columns are a gauge of the frame: exactly no gradient
        kept = torch.arange(p, device=u.device) < k
        inner = inner.masked_fill(kept.unsqueeze(-1) & kept.unsqueeze(-2), 0)

    ga = u @ inner @ vh
    if m > p:
        x = cp[..., :k] * bv  # gU S^-1 = gX diag(a / s) = gX diag(1 / (c b))
        gu_s = gx * _safe_inverse(x, floor).unsqueeze(-2).to(dt)
        ga = ga + (gu_s - u @ (u.mH @ gu_s)) @ vh[..., :k, :]
    if n > p:
        x = cp[..., :k] * av  # S^-1 gV^H = diag(b / s) gYh = diag(1 / (c a)) gYh
        gv_s = gyh * _safe_inverse(x, floor).unsqueeze(-1).to(dt)
        ga = ga + u[..., :k] @ (gv_s - (gv_s @ v) @ vh)
    return ga


def _product_c(
    pp: torch.Tensor, qp: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, dt: torch.dtype
) -> torch.Tensor:
    """``C_ij`` as the product ``U^H G V`` of a loss of the reconstruction would give it.

    ``P_ij = C_ij beta_j`` and ``conj(Q_ji) = C_ij alpha_i``; least squares of both, in units of
    the largest weight so that nothing underflows.
    """
    c0 = torch.maximum(alpha.amax(-1, keepdim=True), beta.amax(-1, keepdim=True))
    c0 = c0.clamp_min(torch.finfo(alpha.dtype).tiny)
    alpha, beta = alpha / c0, beta / c0
    num = pp * beta.unsqueeze(-2).to(dt) + qp.mH * alpha.unsqueeze(-1).to(dt)
    den = (beta.unsqueeze(-2) ** 2 + alpha.unsqueeze(-1) ** 2) * c0.unsqueeze(-1)
    return num / torch.where(den > 0, den, torch.ones_like(den)).to(dt)


def _off_diagonal(
    jm: torch.Tensor,
    km: torch.Tensor,
    sn: torch.Tensor,
    smax: torch.Tensor,
    gap: float,
    floor: float,
    chat: torch.Tensor | None,
) -> torch.Tensor:
    """The off-diagonal part of ``U^H gA V``: the broadened ``1 / (s_j -+ s_i)`` terms."""
    dt = jm.dtype
    am, bm = jm - jm.mH, km - km.mH
    si, sj = sn.unsqueeze(-1), sn.unsqueeze(-2)
    delta, sigma = sj - si, si + sj
    w = gap * sigma + floor  # > 0 everywhere
    den_d = delta * delta + w * w
    v2 = floor * floor
    den_s = sigma * sigma + v2
    sm = smax.unsqueeze(-1)
    inner = (am + bm) * (delta / (2 * den_d * sm)).to(dt)
    inner = inner + (am - bm) * (sigma / (2 * den_s * sm)).to(dt)
    if chat is not None:
        chat_h = chat.mH
        inner = inner + (w * w / den_d).to(dt) * (chat + chat_h) / 2
        inner = inner + (v2 / den_s).to(dt) * (chat - chat_h) / 2
    eye = torch.eye(sn.shape[-1], dtype=torch.bool, device=sn.device)
    return inner.masked_fill(eye, 0)


def _imaginary_diagonal(
    jm: torch.Tensor,
    km: torch.Tensor,
    sn: torch.Tensor,
    smax: torch.Tensor,
    floor: float,
    chat: torch.Tensor | None,
) -> torch.Tensor:
    """The imaginary diagonal of ``U^H gA V`` for complex input (the phase gauge, broadened)."""
    im_j = jm.diagonal(dim1=-2, dim2=-1).imag
    im_k = km.diagonal(dim1=-2, dim2=-1).imag
    im = (im_j - im_k) / 2
    fl2 = floor * floor
    im = im * (sn / ((sn * sn + fl2) * smax))
    if chat is not None:
        im = im + (fl2 / (sn * sn + fl2)) * chat.diagonal(dim1=-2, dim2=-1).imag
    return im


def _full_svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return torch.linalg.svd(a, full_matrices=False)


def _needs_grad(a: torch.Tensor) -> bool:
    return a.requires_grad and torch.is_grad_enabled()


def svd(
    a: torch.Tensor, *, broadening: float | None = None, degenerate: Degenerate = "product"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduced SVD ``a = U diag(S) Vh`` with an exact, finite backward at repeated/zero values.

    The backward is exact for distinct values, and for repeated or zero ones finite and exact
    for the class of losses that ``degenerate`` names.

    Parameters
    ----------
    a : torch.Tensor
        Matrix or batch of matrices ``(..., m, n)``, real or complex.
    broadening : float, optional
        Relative width under which two singular values count as equal in the backward pass
        (default ``sqrt(eps)`` of the dtype).
    degenerate : {"product", "drop"}
        The value of the gradient's ill-defined part at exactly repeated values (see the module
        documentation): ``"product"`` is exact for losses of ``U S V^H``, ``"drop"`` for losses of
        ``U V^H``, of ``U U^H`` / ``V V^H`` or of ``S`` alone.

    Returns
    -------
    U, S, Vh : torch.Tensor
        ``(..., m, k)``, ``(..., k)`` descending, ``(..., k, n)`` with ``k = min(m, n)``.

    Examples
    --------
    >>> import torch
    >>> a = torch.eye(2, dtype=torch.float64, requires_grad=True)  # both values equal
    >>> w = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    >>> u, s, vh = svd(a)
    >>> ((u * s) @ vh * w).sum().backward()  # the reconstruction is the identity map
    >>> torch.allclose(a.grad, w, atol=1e-12)  # so its gradient is w, exactly
    True
    """
    _check_matrix(a, "svd")
    _check_degenerate(degenerate)
    if a.dtype in _HALF:
        out = svd(a.float(), broadening=broadening, degenerate=degenerate)
        return tuple(x.to(a.dtype) for x in out)  # type: ignore[return-value]
    if not _needs_grad(a):
        return torch.linalg.svd(a, full_matrices=False)
    u, s, vh = _full_svd(a)
    gap = _eps(a.dtype) ** 0.5 if broadening is None else float(broadening)
    floor = _eps(a.dtype) ** 2
    x, sk, yh = _SVDFactors.apply(a, u, s, vh, s.shape[-1], "svd", degenerate, gap, floor, False)
    return x, sk, yh


def svdvals(a: torch.Tensor) -> torch.Tensor:
    """Singular values only (``torch.linalg.svdvals``; its backward is already stable).

    Examples
    --------
    >>> import torch
    >>> svdvals(torch.diag(torch.tensor([3.0, 1.0])))
    tensor([3., 1.])
    """
    _check_matrix(a, "svdvals")
    if a.dtype in _HALF:
        return torch.linalg.svdvals(a.float()).to(a.dtype)
    return torch.linalg.svdvals(a)


def _rank(s: torch.Tensor, trunc: Truncation | None, norm: float | torch.Tensor | None) -> int:
    return s.shape[-1] if trunc is None else trunc.rank(s, norm=norm)


def truncated_svd(
    a: torch.Tensor,
    trunc: Truncation | None = None,
    *,
    norm: float | torch.Tensor | None = None,
    degenerate: Degenerate = "product",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of a matrix keeping the rank that ``trunc`` allows.

    Returns ``(U_k, S_k, Vh_k, S)`` where ``S`` is the full spectrum (detached, for error
    reports). ``norm`` is the reference norm for ``trunc.rel_tol`` (default: the norm of ``a``).
    The backward is that of :func:`svd` (exact across a gap at the truncation).

    Examples
    --------
    >>> import torch
    >>> a = torch.diag(torch.tensor([3.0, 2.0, 0.1], dtype=torch.float64))
    >>> u, s, vh, full = truncated_svd(a, Truncation(max_rank=2))
    >>> s.tolist(), full.tolist()
    ([3.0, 2.0], [3.0, 2.0, 0.1])
    """
    _check_matrix(a, "truncated_svd")
    _check_degenerate(degenerate)
    if a.dtype in _HALF:
        out = truncated_svd(a.float(), trunc, norm=norm, degenerate=degenerate)
        return tuple(x.to(a.dtype) for x in out)  # type: ignore[return-value]
    u, s, vh = _full_svd(a)
    k = _rank(s, trunc, norm)
    if not _needs_grad(a):
        return u[..., :k], s[..., :k], vh[..., :k, :], s
    gap, floor = _eps(a.dtype) ** 0.5, _eps(a.dtype) ** 2
    x, sk, yh = _SVDFactors.apply(a, u, s, vh, k, "svd", degenerate, gap, floor, False)
    return x, sk, yh, s


def factorize(
    a: torch.Tensor,
    trunc: Truncation | None = None,
    absorb: Absorb = "both",
    *,
    norm: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``a ~ left @ diag(s_k)? @ right``: the two factors of a (truncated) SVD split.

    ``absorb`` puts the kept singular values into ``left`` (``"left"``: ``U_k S_k`` and
    ``Vh_k``), ``right``, both (``"both"``: ``U_k sqrt(S_k)`` and ``sqrt(S_k) Vh_k``) or neither
    (``None``: ``U_k``, ``Vh_k``; the values are then the middle factor ``s_k``). The backward is
    exact for every loss of ``left @ right`` (or ``left @ diag(s_k) @ right``), including at
    repeated values, and for ``"both"`` also at exactly-zero values.

    Returns
    -------
    left, s_k, right, s : torch.Tensor
        ``(m, k)``, ``(k,)``, ``(k, n)`` and the full spectrum (detached).

    Examples
    --------
    >>> import torch
    >>> a = torch.zeros(3, 4, dtype=torch.float64)
    >>> a[0, 0] = 4.0  # rank one: two exactly-zero values
    >>> left, s, right, full = factorize(a.requires_grad_(True))
    >>> (left @ right).sum().backward()  # finite, and exact: the product is the identity map
    >>> a.grad
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]], dtype=torch.float64)
    """
    _check_matrix(a, "factorize")
    if absorb not in ("left", "right", "both", None):
        raise ValueError(f"absorb must be 'left', 'right', 'both' or None, got {absorb!r}")
    if a.dtype in _HALF:
        out = factorize(a.float(), trunc, absorb, norm=norm)
        return tuple(x.to(a.dtype) for x in out)  # type: ignore[return-value]
    u, s, vh = _full_svd(a)
    k = _rank(s, trunc, norm)
    mode = "svd" if absorb is None else absorb
    gap, floor = _eps(a.dtype) ** 0.5, _eps(a.dtype) ** 2
    if not _needs_grad(a):
        with torch.no_grad():
            x, sk, yh, _ = _factors(a, u, s, vh, k, mode)
        return x, sk, yh, s
    x, sk, yh = _SVDFactors.apply(a, u, s, vh, k, mode, "product", gap, floor, False)
    return x, sk, yh, s


class _GramFrame(torch.autograd.Function):
    """Leading eigenvectors of ``m m^H`` as a frame of ``m`` (rows <= cols); see leading_frame."""

    @staticmethod
    def forward(ctx, m, evecs, lam, k, gap, floor):  # type: ignore[override]
        ctx.save_for_backward(m, evecs, lam)
        ctx.opts = (k, gap, floor)
        return evecs[:, :k].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, gu):  # type: ignore[override]
        m, e, lam = ctx.saved_tensors
        k, gap, floor = ctx.opts
        r = e.shape[0]
        j = e.mH @ _pad(gu, r)
        am = j - j.mH
        li, lj = lam.unsqueeze(-1), lam.unsqueeze(-2)
        lmax = torch.clamp(lam.abs().amax(), min=torch.finfo(lam.dtype).tiny)
        li, lj = li / lmax, lj / lmax
        d = lj - li  # eigenvalue gaps in units of the largest; d_ij = lam_j - lam_i
        f = _broadened(d, gap * (li.abs() + lj.abs()) + floor) / lmax
        kept = torch.arange(r, device=m.device) < k
        f = f.masked_fill(kept.unsqueeze(-1) & kept.unsqueeze(-2), 0)
        f = f.masked_fill(torch.eye(r, dtype=torch.bool, device=m.device), 0)
        return e @ ((f.to(e.dtype) * am) @ (e.mH @ m)), None, None, None, None, None


def leading_frame(
    m: torch.Tensor,
    rank: Callable[[torch.Tensor], int] | int | None = None,
    *,
    method: Literal["svd", "gram"] = "svd",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U_k, S)``: an orthonormal frame of the leading left singular vectors, and the spectrum.

    For the multilinear algorithms of the formats (HOSVD, TT-SVD, HT-SVD), which use ``U_k`` as a
    frame: projecting onto it and rebuilding through it. Their results do not change when the
    kept columns are rotated among themselves, so the backward gives such rotations exactly no
    gradient (no ``0/0`` at repeated or zero values), and treats values below
    ``sqrt(eps) * max(S)`` as zero where it would otherwise divide rounding noise by them.

    Parameters
    ----------
    m : torch.Tensor
        A matrix ``(rows, cols)``.
    rank : int or callable(S) -> int, optional
        How many columns to keep (default all).
    method : {"svd", "gram"}
        ``"gram"`` (rows <= cols only): eigenvectors of ``m m^H``, several times faster; the
        small singular values are then accurate to about ``sqrt(eps) * max(S)`` only.

    Examples
    --------
    >>> import torch
    >>> m = torch.randn(3, 8, dtype=torch.float64)
    >>> u, s = leading_frame(m, 2, method="gram")
    >>> u.shape, torch.allclose(s, torch.linalg.svdvals(m))
    (torch.Size([3, 2]), True)
    """
    _check_matrix(m, "leading_frame")
    if m.ndim != 2:
        raise ValueError(f"leading_frame needs a matrix, got shape {tuple(m.shape)}")
    if m.dtype in _HALF:
        u, s = leading_frame(m.float(), rank, method=method)
        return u.to(m.dtype), s.to(m.dtype)
    eps = _eps(m.dtype)
    if method == "gram":
        if m.shape[0] > m.shape[1]:
            raise ValueError(f"method='gram' needs rows <= cols, got shape {tuple(m.shape)}")
        with torch.no_grad():
            lam, e = torch.linalg.eigh(m @ m.mH)
            lam, e = lam.flip(-1), e.flip(-1)
            s = lam.clamp_min(0).sqrt()
        k = _resolve_rank(rank, s)
        if not _needs_grad(m):
            return e[:, :k], s
        return _GramFrame.apply(m, e, lam, k, eps**0.5, eps), s
    if method != "svd":
        raise ValueError(f"method must be 'svd' or 'gram', got {method!r}")
    u, s, vh = _full_svd(m)
    k = _resolve_rank(rank, s)
    if not _needs_grad(m):
        return u[:, :k], s
    x, _, _ = _SVDFactors.apply(m, u, s, vh, k, "svd", "drop", eps**0.5, eps**0.5, True)
    return x, s


def _resolve_rank(rank: Callable[[torch.Tensor], int] | int | None, s: torch.Tensor) -> int:
    if rank is None:
        return s.shape[-1]
    if callable(rank):
        return int(rank(s))
    return int(rank)


# -- QR --------------------------------------------------------------------------------------
def _apply_inv_h(z: torch.Tensor, r: torch.Tensor, rel: float) -> torch.Tensor:
    """``z @ R^{-H}`` through the SVD of ``R``, inverse values broadened at ``rel * max(sigma)``.

    Exact for a well-conditioned ``R``; the minimum-norm answer (no inf) where it is singular.
    """
    w, sig, zh = torch.linalg.svd(r)
    inv = _safe_inverse(sig, rel)
    return ((z @ w) * inv.unsqueeze(-2).to(z.dtype)) @ zh


def _qr_tall_backward(
    q: torch.Tensor, r: torch.Tensor, gq: torch.Tensor, gr: torch.Tensor, rel: float
) -> torch.Tensor:
    """Backward of the reduced QR of a tall or square matrix (``R`` square).

    ``gA = Q gR + (1 - Q Q^H) gQ R^{-H} + Q L R^{-H}`` with ``L`` the lower triangle of
    ``N - N^H``, ``N = Q^H gQ - gR R^H``. For every loss of the product ``Q R`` both ``N`` and
    (for square ``Q``) the middle term vanish, so no inverse of ``R`` enters: exact even for a
    singular ``R``.
    """
    m, n = q.shape[-2], q.shape[-1]
    nm = q.mH @ gq - gr @ r.mH
    low = (nm - nm.mH).tril(-1)
    if q.is_complex():
        low = low + torch.diag_embed(1j * nm.diagonal(dim1=-2, dim2=-1).imag)
    z = q @ low
    if m > n:
        z = z + gq - q @ (q.mH @ gq)
    return q @ gr + _apply_inv_h(z, r, rel)


class _QR(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):  # type: ignore[override]
        q, r = torch.linalg.qr(a, mode="reduced")
        ctx.save_for_backward(a, q, r)
        return q, r

    @staticmethod
    @once_differentiable
    def backward(ctx, gq, gr):  # type: ignore[override]
        a, q, r = ctx.saved_tensors
        m, n = a.shape[-2], a.shape[-1]
        rel = _eps(a.dtype) ** 0.5
        if m >= n:
            return _qr_tall_backward(q, r, gq, gr, rel)
        # wide: A = [X | Y], X = Q U (square), Y = Q V, so V = Q^H Y
        u_ = r[..., :m]
        gu, gv = gr[..., :m], gr[..., m:]
        gy = q @ gv
        gx = _qr_tall_backward(q, u_, gq + a[..., m:] @ gv.mH, gu, rel)
        return torch.cat([gx, gy], dim=-1)


def qr(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced QR ``a = Q R`` (``torch.linalg.qr``), ``k = min(m, n)`` columns in ``Q``.

    The backward never divides by ``R`` for losses of the product ``Q R`` (splits contracted
    back, canonical forms), so it stays exact and finite for rank-deficient square and wide
    matrices; for a tall rank-deficient matrix, see the module documentation. Elsewhere ``R^{-1}``
    is applied with its inverse values broadened at ``sqrt(eps)`` of the largest.

    Examples
    --------
    >>> import torch
    >>> a = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)  # rank 0
    >>> q, r = qr(a)
    >>> (q @ r).sum().backward()
    >>> a.grad
    tensor([[1., 1., 1.],
            [1., 1., 1.],
            [1., 1., 1.]], dtype=torch.float64)
    """
    _check_matrix(a, "qr")
    if a.dtype in _HALF:
        q, r = qr(a.float())
        return q.to(a.dtype), r.to(a.dtype)
    if not _needs_grad(a):
        return torch.linalg.qr(a, mode="reduced")
    return _QR.apply(a)
