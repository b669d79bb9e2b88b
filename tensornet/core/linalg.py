"""SVD and QR for tensor networks.

`svd` is ``torch.linalg.svd(full_matrices=False)`` with a backward that stays finite when singular
values are repeated or zero. The textbook backward divides by ``s_j^2 - s_i^2`` and by ``s_j``;
here both inverses are broadened, ``1/x -> x / (x^2 + w^2)``, with a width ``w`` at the level of the
dtype's rounding error relative to the largest singular value (for ``s_j^2 - s_l^2`` the width
scales with ``s_j + s_l``, so small but well-separated values keep their exact gradient). For
well-separated values this changes nothing measurable (gradcheck passes in float64); for
degenerate ones the ill-defined gauge contributions are dropped instead of becoming NaN or inf.
float16/bfloat16 inputs are computed in float32 (LAPACK has no half-precision routines) and the
factors cast back.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .truncation import Truncation

__all__ = ["svd", "svdvals", "truncated_svd", "qr"]

_HALF = (torch.float16, torch.bfloat16)


def _broadened_inverse(x: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    return x / (x * x + width * width)


class _SVD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, rel_width: float | None):  # type: ignore[override]
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        ctx.save_for_backward(u, s, vh)
        ctx.rel_width = rel_width
        ctx.shape = a.shape
        return u, s, vh

    @staticmethod
    @once_differentiable
    def backward(ctx, gu, gs, gvh):  # type: ignore[override]
        u, s, vh = ctx.saved_tensors
        m, n = ctx.shape[-2], ctx.shape[-1]
        rel = ctx.rel_width if ctx.rel_width is not None else torch.finfo(s.dtype).eps
        # Work in units of the largest singular value so the widths never underflow.
        smax = s.amax(dim=-1, keepdim=True)
        smax = torch.where(smax > 0, smax, torch.ones_like(smax))
        sn = s / smax
        s_inv = _broadened_inverse(sn, torch.tensor(rel, dtype=s.dtype)) / smax
        v = vh.mH
        gv = gvh.mH if gvh is not None else None
        uh = u.mH

        inner = torch.zeros(*s.shape, s.shape[-1], dtype=u.dtype, device=u.device)
        if gs is not None:
            inner = inner + torch.diag_embed(gs.to(u.dtype))
        if gu is not None or gv is not None:
            s2 = sn * sn
            e = s2.unsqueeze(-2) - s2.unsqueeze(-1)  # e[j, l] = (s_l^2 - s_j^2) / smax^2
            # e = (s_l - s_j)(s_l + s_j): broadening by rel * (s_l + s_j) smooths differences
            # s_l - s_j below ~rel * smax only, however small the two values themselves are.
            width = rel * (sn.unsqueeze(-2) + sn.unsqueeze(-1)) + rel * rel
            f = _broadened_inverse(e, width)
            f = f / smax.unsqueeze(-1) / smax.unsqueeze(-1)
            s_row, s_col = s.unsqueeze(-2).to(u.dtype), s.unsqueeze(-1).to(u.dtype)
            im_diag = None
            if gu is not None:
                uhgu = uh @ gu
                inner = inner + (f * (uhgu - uhgu.mH)) * s_row
                if u.is_complex():
                    im_diag = uhgu.diagonal(dim1=-2, dim2=-1).imag
            if gv is not None:
                vhgv = vh @ gv
                inner = inner + s_col * (f * (vhgv - vhgv.mH))
                if u.is_complex():
                    d = -vhgv.diagonal(dim1=-2, dim2=-1).imag
                    im_diag = d if im_diag is None else im_diag + d
            if im_diag is not None:
                # Phase (gauge) direction; for gauge-invariant losses both halves agree.
                scale = 0.5 if (gu is not None and gv is not None) else 1.0
                inner = inner + torch.diag_embed(1j * scale * im_diag * s_inv)

        ga = u @ inner @ vh
        if gu is not None and m > s.shape[-1]:
            gu_s = gu * s_inv.unsqueeze(-2).to(u.dtype)
            ga = ga + (gu_s - u @ (uh @ gu_s)) @ vh
        if gv is not None and n > s.shape[-1]:
            gv_s = gv * s_inv.unsqueeze(-2).to(u.dtype)
            ga = ga + u @ (gv_s - v @ (vh @ gv_s)).mH
        return ga, None


def svd(
    a: torch.Tensor, *, broadening: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduced SVD ``a = U diag(S) Vh`` with a backward that is finite for degenerate spectra.

    Parameters
    ----------
    a : torch.Tensor
        Matrix or batch of matrices ``(..., m, n)``, real or complex.
    broadening : float, optional
        Relative width of the broadened inverses in the backward pass; defaults to the dtype's
        machine epsilon.

    Returns
    -------
    U, S, Vh : torch.Tensor
        ``(..., m, k)``, ``(..., k)`` descending, ``(..., k, n)`` with ``k = min(m, n)``.

    Examples
    --------
    >>> import torch
    >>> a = torch.eye(3, dtype=torch.float64, requires_grad=True)  # all values degenerate
    >>> u, s, vh = svd(a)
    >>> (u[:, :2] @ vh[:2]).sum().backward()
    >>> bool(torch.isfinite(a.grad).all())
    True
    """
    if a.ndim < 2:
        raise ValueError(f"svd needs a matrix (..., m, n), got shape {tuple(a.shape)}")
    if not (a.is_floating_point() or a.is_complex()):
        raise TypeError(f"svd needs a floating-point or complex tensor, got {a.dtype}")
    if a.dtype in _HALF:
        return tuple(x.to(a.dtype) for x in svd(a.float(), broadening=broadening))
    if not a.requires_grad or not torch.is_grad_enabled():
        return torch.linalg.svd(a, full_matrices=False)
    return _SVD.apply(a, broadening)


def svdvals(a: torch.Tensor) -> torch.Tensor:
    """Singular values only (``torch.linalg.svdvals``; its backward is already stable)."""
    if a.dtype in _HALF:
        return torch.linalg.svdvals(a.float()).to(a.dtype)
    return torch.linalg.svdvals(a)


def truncated_svd(
    a: torch.Tensor,
    trunc: Truncation | None = None,
    *,
    norm: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of a matrix keeping the rank that ``trunc`` allows.

    Returns ``(U_k, S_k, Vh_k, S)`` where ``S`` is the full spectrum (for error reports).
    ``norm`` is the reference norm for ``trunc.rel_tol`` (default: the norm of ``a``).
    """
    u, s, vh = svd(a)
    k = s.shape[-1] if trunc is None else trunc.rank(s, norm=norm)
    return u[..., :k], s[..., :k], vh[..., :k, :], s


def qr(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced QR ``a = Q R`` (``torch.linalg.qr``), ``k = min(m, n)`` columns in ``Q``."""
    if a.ndim < 2:
        raise ValueError(f"qr needs a matrix (..., m, n), got shape {tuple(a.shape)}")
    if a.dtype in _HALF:
        q, r = torch.linalg.qr(a.float(), mode="reduced")
        return q.to(a.dtype), r.to(a.dtype)
    return torch.linalg.qr(a, mode="reduced")
