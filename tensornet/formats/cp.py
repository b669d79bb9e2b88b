"""CP (CANDECOMP/PARAFAC) format fitted by alternating least squares.

A CP tensor ``sum_r w_r a_r o b_r o c_r ...`` shares one rank index between all factors, which a
network (every leg on at most two nodes) cannot express directly. The network is therefore the
exact equivalent chain: ``A0 - A1 - ... - A{d-1}`` whose inner nodes are diagonal in the rank
(``A_k[r, i, r'] = delta_{r r'} a_k[i, r]``) and whose first node carries the weights.
:attr:`CP.num_params` counts the CP parameters (``R * sum(n_k)``, plus ``R`` weights when
normalised), not the padded chain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core.node import Node, as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation
from ..core.validate import is_int
from .base import Dense, Format, Layout, Request
from .steps import relative_error, unfold
from .structure import Factor, Structure, register_format
from .tucker import leading_vectors

__all__ = ["CP", "khatri_rao"]

Init = Literal["svd", "random"]


def khatri_rao(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product; row index of the first matrix varies slowest.

    Examples
    --------
    >>> import torch
    >>> khatri_rao([torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [4.0]])]).flatten()
    tensor([3., 4., 6., 8.])
    """
    out = mats[0]
    for m in mats[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def _solve_gram(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``rhs @ gram^{-1}`` for a Hermitian PSD ``gram`` (pseudo-inverse when singular).

    ``rhs G^{-1} = (G^{-1} rhs^H)^H`` because ``G^H = G``; a plain transpose would solve with
    ``conj(G)`` instead, which is wrong for complex tensors.
    """
    try:
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            return torch.cholesky_solve(rhs.mH, chol).mH
    except RuntimeError:
        pass
    return rhs @ torch.linalg.pinv(gram, hermitian=True)


def _initial_factors(x: torch.Tensor, rank: int, init: Init, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    factors = []
    for k, n in enumerate(x.shape):
        noise = torch.randn(n, rank, generator=g, dtype=torch.float64).to(x.device, x.dtype)
        if init == "random":
            factors.append(noise)
            continue
        u = leading_vectors(x, k, Truncation(max_rank=rank))
        if u.shape[1] < rank:  # more components than the mode's size: pad with noise
            u = torch.cat([u, noise[:, u.shape[1] :]], dim=1)
        factors.append(u)
    return factors


def cp_als(
    x: torch.Tensor,
    rank: int,
    init: Init = "svd",
    max_iter: int = 100,
    tol: float = 1e-8,
    normalize: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """CP-ALS. Returns (weights, factors, relative error after each sweep).

    Stops after ``max_iter`` sweeps or when the error changes by less than ``tol``. The error is
    tracked with ``||x||^2 - 2 <x, y> + ||y||^2`` from quantities ALS computes anyway.
    """
    d = x.ndim
    if d == 1:  # a vector is its own CP tensor (rank 1): nothing to alternate
        weights = torch.linalg.vector_norm(x).reshape(1) if normalize else x.new_ones(1)
        weights = torch.where(weights > 0, weights, torch.ones_like(weights))
        return weights, [x.reshape(-1, 1) / weights], [0.0]
    factors = _initial_factors(x, rank, init, seed)
    weights = x.new_ones(rank)
    norm2 = float(torch.linalg.vector_norm(x.detach())) ** 2
    grams = [f.mH @ f for f in factors]
    unfoldings = [unfold(x, [k]) for k in range(d)]
    history: list[float] = []
    for _ in range(max_iter):
        for k in range(d):
            others = [factors[m] for m in range(d) if m != k]
            gram = math.prod(grams[m] for m in range(d) if m != k)
            mttkrp = unfoldings[k] @ khatri_rao(others).conj()
            a = _solve_gram(gram.conj(), mttkrp)
            if normalize:
                weights = torch.linalg.vector_norm(a, dim=0)
                weights = torch.where(weights > 0, weights, torch.ones_like(weights))
                a = a / weights
            factors[k] = a
            grams[k] = a.mH @ a
        full_gram = gram * grams[d - 1]
        w = weights.to(full_gram.dtype)
        rec2 = float((w.conj() @ full_gram @ w).real)
        inner = float((mttkrp.conj() * factors[d - 1] * w).sum().real)
        err = math.sqrt(max(norm2 - 2 * inner + rec2, 0.0) / norm2) if norm2 > 0 else 0.0
        history.append(err)
        if len(history) > 1 and abs(history[-2] - err) < tol:
            break
    return weights, factors, history


@register_format("cp")
class CP(Format):
    """A tensor as a sum of ``R`` rank-one terms, ``sum_r w_r a_r o b_r o ...``.

    ``CP(factors, weights=None, legs=None, error=None, history=())`` builds one directly.
    :meth:`from_dense` fits it by CP-ALS: ``trunc`` can only set ``max_rank`` (the CP rank; CP
    has no tolerance-driven rank), ``ranks`` is the CP rank and ``fraction`` the largest rank
    with ``R * sum(n_k) <= fraction * size``. Options: ``init`` (``"svd"``: leading singular
    vectors of the unfoldings, or ``"random"``: Gaussian factors from ``seed``); ``max_iter``,
    ``tol`` (ALS stops after ``max_iter`` sweeps or when the error changes by less than
    ``tol``); ``normalize`` (unit-norm factor columns and separate weights, counted as
    parameters); ``out_dims``/``in_dims`` tensorize a matrix or kernel (one factor per mode,
    see :mod:`~tensornet.formats.tensorize`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b, c = (torch.randn(n, 2, generator=g, dtype=torch.float64) for n in (4, 5, 6))
    >>> x = torch.einsum("ir,jr,kr->ijk", a, b, c)
    >>> cp = CP.from_dense(x, ranks=2, max_iter=500, tol=1e-14)
    >>> cp.ranks, cp.num_params, cp.error < 1e-6
    ((2,), 30, True)
    """

    _history: tuple[float, ...] = ()
    tensorizable = True

    @classmethod
    def _parts(
        cls,
        factors: Sequence[torch.Tensor],
        weights: torch.Tensor | None = None,
        legs: Sequence[str] | None = None,
        error: float | None = None,
        history: Sequence[float] = (),
    ) -> tuple[Structure, dict, float | None, dict]:
        factors = tuple(as_tensor(f) for f in factors)
        if not factors:
            raise ValueError("CP: needs at least one factor")
        rank = factors[0].shape[1]
        if any(f.ndim != 2 or f.shape[1] != rank for f in factors):
            raise ValueError(
                f"CP: factors must be (n_k, R) with one R, got {[tuple(f.shape) for f in factors]}"
            )
        legs = tuple(f"d{i}" for i in range(len(factors))) if legs is None else tuple(legs)
        if len(legs) != len(factors):
            raise ValueError(f"CP: legs has {len(legs)} names for {len(factors)} factors")
        shape = tuple(f.shape[0] for f in factors)
        s = cls.structure_for(shape, rank, legs=legs, normalize=weights is not None, what="CP")
        return s, _cp_tensors(factors, weights), error, {"history": tuple(history)}

    def _network_nodes(self) -> list[Node]:
        """The exact chain ``A0 - A1 - ...``: inner nodes diagonal in the rank, weights in A0."""
        factors, legs = self.factors, self._structure.mode_legs
        d = len(factors)
        bonds = fresh_names([f"c{k + 1}" for k in range(d - 1)], legs)
        first = factors[0] * self.weights.to(factors[0].dtype)
        if d == 1:
            return [Node(first.sum(dim=1), legs, name="A0")]
        nodes = [Node(first, (legs[0], bonds[0]), name="A0")]
        for k in range(1, d - 1):
            diag = torch.diag_embed(factors[k]).permute(1, 0, 2)  # (R, n, R), diagonal in R
            nodes.append(Node(diag, (bonds[k - 1], legs[k], bonds[k]), name=f"A{k}"))
        nodes.append(Node(factors[-1].mT, (bonds[-1], legs[-1]), name=f"A{d - 1}"))
        return nodes

    @classmethod
    def _layout(cls, dense: Dense, *, normalize: bool = False) -> Layout:
        """Factors ``A{k}`` of shape ``(n_k, R)`` sharing one rank leg (plus ``R`` weights).

        The rank leg joins every factor (a hyperedge), so the parameter count and every cost
        are CP's true ones, ``R * sum(n_k)`` (plus ``R`` weights when normalised).

        Examples
        --------
        >>> s = CP.structure_for((64, 64, 3, 3), 10)
        >>> s.num_params, s.factors[0].legs, s.max_ranks
        (1340, ('d0', 'r'), (275,))
        """
        shape, legs, what = dense
        per_rank = sum(shape) + (1 if normalize else 0)
        top = max(1, math.prod(shape) // per_rank)
        r_leg = fresh_names(["r"], legs)[0]

        def factors(ranks: tuple[int, ...]) -> list[Factor]:
            (rank,) = ranks
            out = [
                Factor(f"A{k}", (leg, r_leg), (n, rank))
                for k, (leg, n) in enumerate(zip(legs, shape))
            ]
            return out + [Factor("weights", (r_leg,), (rank,))] * bool(normalize)

        return Layout((top,), factors, (("normalize", bool(normalize)),))

    @classmethod
    def _check_ranks(cls, ranks: Any, count: int, what: str) -> tuple[int, ...]:
        return (_check_rank(ranks, what),)

    @classmethod
    def _requested_ranks(cls, full: Structure, ranks: Any, what: str) -> tuple[int, ...]:
        return cls._check_ranks(ranks, 1, what)  # a CP rank has no bound of its own: no clamping

    @classmethod
    def _decompose(
        cls,
        x: torch.Tensor,
        req: Request,
        init: Init = "svd",
        max_iter: int = 100,
        tol: float = 1e-8,
        seed: int = 0,
    ) -> CP:
        """CP-ALS from the unfoldings' leading singular vectors or from Gaussian factors."""
        if init not in ("svd", "random"):
            raise ValueError(f"{req.what}: init must be 'svd' or 'random', got {init!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"{req.what}: max_iter must be a positive int, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"{req.what}: tol must be a number >= 0, got {tol!r}")
        rank = _cp_rank(x, req.trunc, req.caps, req.what)
        normalize = req.full.option("normalize")
        weights, factors, history = cp_als(x, rank, init, max_iter, tol, normalize, seed)
        new = cls._of(req.full, factors, weights if normalize else None, None)
        new._error = relative_error(x, new.to_dense())
        new._history = tuple(history)
        return new

    @classmethod
    def _of(cls, structure: Structure, factors, weights, error: float | None) -> CP:
        s = structure.with_ranks((factors[0].shape[1],))
        return cls(s, _cp_tensors(factors, weights), error)

    # -- views -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """The CP rank."""
        return self.ranks[0]

    @property
    def factors(self) -> tuple[torch.Tensor, ...]:
        """Factor matrices ``(n_k, R)``."""
        return tuple(self._tensors[f"A{k}"] for k in range(len(self._structure.mode_legs)))

    @property
    def weights(self) -> torch.Tensor:
        """Component weights (ones unless fitted with ``normalize=True``)."""
        if self._structure.option("normalize"):
            return self._tensors["weights"]
        return self._tensors["A0"].new_ones(self.rank)

    @property
    def history(self) -> tuple[float, ...]:
        """Relative error after each ALS sweep."""
        return self._history

    def to_dense(self) -> torch.Tensor:
        """The dense tensor, legs in :attr:`legs` order."""
        factors = self.factors
        first = factors[0] * self.weights.to(factors[0].dtype)
        flat = first @ khatri_rao(factors[1:]).mT if len(factors) > 1 else first.sum(1)
        return flat.reshape(self.shape)

    def truncate(self, trunc: Truncation | int | None = None, *, ranks: Any = None) -> CP:
        """Keep the ``max_rank`` (or ``ranks``) components of largest norm (no refit).

        ``error`` is relative to this CP tensor (measured on the dense tensors).
        """
        if ranks is not None:
            trunc = Truncation(max_rank=_check_rank(ranks, "CP.truncate"))
        trunc = Truncation(max_rank=trunc) if isinstance(trunc, int) else trunc
        if trunc is None or trunc.max_rank is None:
            raise ValueError("CP.truncate: only max_rank applies to CP")
        factors, weights = self.factors, self.weights
        size = weights.abs() * math.prod(torch.linalg.vector_norm(f, dim=0) for f in factors)
        keep = torch.argsort(size, descending=True)[: trunc.max_rank]
        normalized = self._structure.option("normalize")
        new = self._of(
            self._structure,
            [f[:, keep] for f in factors],
            weights[keep] if normalized else None,
            None,
        )
        new._error = relative_error(self.to_dense(), new.to_dense())
        return new


def _check_rank(ranks: Any, what: str) -> int:
    if isinstance(ranks, (tuple, list)):
        if len(ranks) != 1:
            raise ValueError(f"{what}: ranks must have 1 entry (the CP rank), got {ranks}")
        ranks = ranks[0]
    if not is_int(ranks) or int(ranks) < 1:
        raise ValueError(f"{what}: ranks must be a positive int, got {ranks!r}")
    return int(ranks)


def _cp_tensors(factors: Sequence[torch.Tensor], weights: torch.Tensor | None) -> dict:
    out = {f"A{k}": f for k, f in enumerate(factors)}
    if weights is not None:
        out["weights"] = weights
    return out


def _cp_rank(
    x: torch.Tensor, trunc: Truncation | None, caps: tuple[int, ...] | None, what: str
) -> int:
    """The CP rank asked for by ``trunc`` (only ``max_rank``) or ``caps``, checked."""
    if trunc is not None:
        if trunc.max_rank is None or not (
            trunc.rel_tol is None and trunc.abs_tol is None and trunc.keep_energy is None
        ):
            raise ValueError(f"{what}: trunc can only set max_rank for CP; got {trunc}")
        rank = trunc.max_rank
    elif caps is not None:
        (rank,) = caps
    else:
        raise ValueError(f"{what}: CP needs a rank: give ranks=, fraction= or trunc=<int>")
    # Every tensor has CP rank <= the product of all but its largest size: beyond it ALS
    # only pays for more columns (and a huge rank is an allocation failure waiting).
    ceiling = math.prod(sorted(x.shape)[:-1]) if x.ndim > 1 else 1
    if rank > ceiling:
        raise ValueError(
            f"{what}: rank {rank} exceeds {ceiling}, the largest CP rank a tensor of shape "
            f"{tuple(x.shape)} can need"
        )
    return rank
