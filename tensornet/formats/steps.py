"""The numerical steps the decompositions share: error budgets, SVD frames, mode products.

Every format's algorithm (TT-SVD, HOSVD, HT-SVD, TR-SVD, ...) is built from these: tolerances
turned into one absolute limit and shared between steps (:func:`error_limit`,
:func:`step_truncation`), the leading left singular vectors of a matricisation by the cheapest
exact route (:func:`left_svd`), and the tensor products around them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from ..core.linalg import leading_frame, qr, truncated_svd
from ..core.network import TensorNetwork
from ..core.split import fresh_names
from ..core.truncation import Truncation

__all__ = [
    "GRAM_MIN_TOL",
    "error_limit",
    "inner",
    "left_svd",
    "left_vectors",
    "mode_product",
    "relative_error",
    "shared_steps",
    "shared_svd",
    "step_truncation",
    "tail_norm",
    "unfold",
]


def error_limit(trunc: Truncation | None, norm: float) -> float | None:
    """All tolerances of ``trunc`` as one absolute Frobenius limit (``None``: no tolerance)."""
    if trunc is None:
        return None
    limits = []
    if trunc.rel_tol is not None:
        limits.append(trunc.rel_tol * norm)
    if trunc.abs_tol is not None:
        limits.append(trunc.abs_tol)
    if trunc.keep_energy is not None:
        limits.append(math.sqrt(1.0 - trunc.keep_energy) * norm)
    return min(limits) if limits else None


def step_truncation(max_rank: int | None, limit: float | None) -> Truncation | None:
    """The truncation of one step: a rank cap and/or an absolute error limit."""
    if max_rank is None and limit is None:
        return None
    return Truncation(max_rank=max_rank, abs_tol=None if limit is None else max(limit, 0.0))


def relative_error(x: torch.Tensor, approx: torch.Tensor) -> float:
    """``||x - approx|| / ||x||`` as a Python float (0 when ``x`` is zero)."""
    norm = float(torch.linalg.vector_norm(x.detach()))
    diff = float(torch.linalg.vector_norm((x - approx).detach()))
    return diff / norm if norm > 0 else diff


def tail_norm(s: torch.Tensor, rank: int) -> float:
    """Frobenius norm of the singular values after the first ``rank``."""
    return float(torch.linalg.vector_norm(s[rank:].detach())) if rank < s.shape[0] else 0.0


def mode_product(x: torch.Tensor, m: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` with ``axis`` multiplied by the matrix ``m`` (new size ``m.shape[0]``)."""
    out = torch.tensordot(m, x, dims=([1], [axis]))
    return torch.movedim(out, 0, axis)


def unfold(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """The matricisation with ``axes`` (in order) as rows and the other axes as columns."""
    axes = list(axes)
    rest = [i for i in range(x.ndim) if i not in axes]
    rows = math.prod(x.shape[i] for i in axes)
    return x.permute(axes + rest).reshape(rows, -1)


def left_vectors(m: torch.Tensor, step: Truncation | None) -> torch.Tensor:
    """Leading left singular vectors of the matrix ``m`` (how many: ``step``)."""
    return left_svd(m, step)[0]


# Below this relative tolerance the Gram route cannot resolve the singular values it would cut.
GRAM_MIN_TOL = 1e-6


def left_svd(m: torch.Tensor, step: Truncation | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U_k, S)`` of ``m``: the kept left singular vectors and the whole spectrum.

    Three routes, all giving an orthonormal ``U_k`` (so projections stay exact):

    - ``rows <= cols`` and no tolerance finer than ``GRAM_MIN_TOL * ||m||``: eigenvectors of
      ``m m^H``, several times faster than an SVD; singular values come out accurate to about
      ``sqrt(eps) * ||m||``, which such a tolerance (or a plain rank cap) never needs;
    - wide matrices otherwise: ``m = R^T Q^T`` and the SVD of the small square ``R^T``;
    - else the SVD of ``m``.

    All routes are differentiable through :func:`~tensornet.core.linalg.leading_frame`: the frame
    is used gauge-invariantly by every format (projections onto it, rebuilt through it), so
    repeated and zero singular values (rank-deficient inputs, pruned channels) give finite
    gradients equal to finite differences wherever the decomposition is differentiable.
    float16/bfloat16 inputs are computed in float32.
    """
    rows, cols = m.shape
    rank = None if step is None else step.rank
    gram = rows <= cols and _gram_is_enough(m, step)
    found = _remembered(("frame", gram), m, lambda x: _left_frame(x, None, gram))
    if found is None:
        return _left_frame(m, rank, gram)
    u, s = found
    k = s.shape[-1] if rank is None else int(rank(s))
    return u[:, :k].clone(), s.clone()


def shared_svd(
    m: torch.Tensor, trunc: Truncation | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`~tensornet.core.linalg.truncated_svd` of ``m``, shared within :func:`shared_steps`.

    Examples
    --------
    >>> import torch
    >>> m = torch.randn(5, 7, dtype=torch.float64)
    >>> with shared_steps():
    ...     u, s, vh, full = shared_svd(m, Truncation(max_rank=2))
    ...     again = shared_svd(m.clone(), Truncation(max_rank=3))  # the same values: reused
    >>> u.shape, again[0].shape, torch.equal(again[0][:, :2], u), torch.equal(full, again[3])
    (torch.Size([5, 2]), torch.Size([5, 3]), True, True)
    """
    found = _remembered(("svd",), m, truncated_svd)
    if found is None:
        return truncated_svd(m, trunc)
    u, _, vh, s = found
    k = s.shape[-1] if trunc is None else trunc.rank(s)
    return u[:, :k].clone(), s[:k].clone(), vh[:k].clone(), s.clone()


def _remembered(kind: tuple, m: torch.Tensor, compute: Callable[[torch.Tensor], tuple]) -> Any:
    """``compute(m)`` as first computed within :func:`shared_steps` (None where not shared)."""
    shared = _SHARED.get()
    if shared is None or m.device.type != "cpu" or m.dtype not in _SHARED_DTYPES:
        return None
    if m.requires_grad and torch.is_grad_enabled():
        return None
    seen = shared.setdefault((kind, tuple(m.shape), m.dtype, float(m.detach().sum())), [])
    found = next((result for known, result in seen if torch.equal(known, m)), None)
    if found is None:
        found = compute(m.detach())
        seen.append((m.detach().clone(), found))
    return found


def _left_frame(
    m: torch.Tensor, rank: Callable[[torch.Tensor], int] | None, gram: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`left_svd`'s route: the Gram frame, or the SVD (of ``R^T`` for wide matrices)."""
    if gram:
        return leading_frame(m, rank, method="gram")
    rows, cols = m.shape
    if 2 * rows <= cols and not (m.requires_grad and torch.is_grad_enabled()):
        _, r = qr(m.mT)  # the same frame and spectrum from the small square R^T
        m = r.mT
    return leading_frame(m, rank, method="svd")


#: The dtypes whose decompositions :func:`shared_steps` shares (half ones are computed in float32).
_SHARED_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
#: The decompositions :func:`left_svd` has made within :func:`shared_steps` (None: outside).
_SHARED: ContextVar[dict | None] = ContextVar("shared_steps", default=None)


@contextmanager
def shared_steps() -> Iterator[None]:
    """Within it, :func:`left_svd` (and :func:`shared_svd`) decompose a matrix only once.

    For decompositions repeated on one tensor at several tolerances or ranks (TT-SVD at each
    tolerance shares its first step and every step after the same ranks; HOSVD, HT-SVD and
    CP's start at any ranks share their unfoldings): a matrix with the same values, shape,
    dtype and route (Gram or SVD) gets the frame and spectrum computed the first time, cut to
    this call's rank, so the results are bitwise those computed afresh (a matrix is found by
    its sum, then compared value by value). CPU tensors without a gradient only (the others
    are decomposed as outside); the store lives until the outermost such block ends (nested
    blocks share it).

    Examples
    --------
    >>> import torch
    >>> from tensornet.core.truncation import Truncation
    >>> m = torch.randn(4, 9, dtype=torch.float64)
    >>> with shared_steps():
    ...     u2, s = left_svd(m, Truncation(max_rank=2))
    ...     u3, _ = left_svd(m.clone(), Truncation(max_rank=3))  # the same values: reused
    >>> torch.equal(u2, u3[:, :2]), torch.equal(u3, left_svd(m, Truncation(max_rank=3))[0])
    (True, True)
    """
    if _SHARED.get() is not None:  # nested: the outer block's store
        yield
        return
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _gram_is_enough(m: torch.Tensor, step: Truncation | None) -> bool:
    if step is None or (step.abs_tol is None and step.rel_tol is None and step.keep_energy is None):
        return True
    if step.rel_tol is not None or step.keep_energy is not None:
        return False
    return step.abs_tol >= GRAM_MIN_TOL * float(torch.linalg.vector_norm(m.detach()))


def inner(a: TensorNetwork, b: TensorNetwork) -> torch.Tensor:
    """``<a, b>`` of two networks with the same open legs (bonds of ``b`` renamed apart)."""
    if sorted(a.open_legs) != sorted(b.open_legs):
        raise ValueError(f"inner: open legs differ: {a.open_legs} vs {b.open_legs}")
    taken = set(a.legs) | set(b.legs)
    bonds = [bd.leg for bd in b.bonds]
    new = fresh_names([leg + "~" for leg in bonds], tuple(taken))
    b = b.conj().rename(dict(zip(bonds, new)))
    nodes = list(a) + [node.with_name(f"{node.name}~") for node in b]
    return TensorNetwork(nodes).contract(output=()).tensor
