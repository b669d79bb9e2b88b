"""Tensor train (TT) / matrix product state: TT-SVD, rounding, canonical forms, sums.

Core ``k`` is a node ``"G{k}"`` with legs ``(r{k}, <mode legs>, r{k+1})``; the first and last
cores have no outer bond. A core usually carries one mode leg; :class:`~tensornet.formats.TTMatrix`
uses the same machinery with a row and a column leg per core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import torch

from ..core.linalg import qr, truncated_svd
from ..core.node import as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_order, check_ranks
from .steps import error_limit, left_svd, step_truncation, tail_norm
from .structure import Structure, chain_factors, register_format

__all__ = ["TT"]

Budget = Literal["uniform", "adaptive"]
F = TypeVar("F", bound=Format)


def _step_limit(
    limit: float | None, steps: int, spent2: float, budget: Budget, floor: float
) -> float | None:
    """Absolute error allowed in one step.

    ``"uniform"``: ``limit / sqrt(steps)`` each step. ``"adaptive"``: whatever is left of
    ``limit`` after the previous steps (errors add in squares). Both keep the total <= limit.
    ``floor`` (a few ulps of the norm) lets a step drop singular values that are rounding noise
    after an earlier step used up the whole budget.
    """
    if limit is None:
        return None
    if budget == "uniform":
        return limit / math.sqrt(steps)
    return math.sqrt(max(limit * limit - spent2, 0.0)) + floor


def _noise_floor(t: torch.Tensor, norm: float, d: int) -> float:
    eps = torch.finfo(t.real.dtype if t.is_complex() else t.dtype).eps
    return 4 * eps * norm * math.sqrt(d)


def _check_budget(budget: Any, what: str) -> Budget:
    if budget not in ("uniform", "adaptive"):
        raise ValueError(f"{what}: budget must be 'uniform' or 'adaptive', got {budget!r}")
    return budget


def _min(*values: int | None) -> int | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def tt_max_ranks(sizes: Sequence[int]) -> tuple[int, ...]:
    """Largest useful rank at each bond: min(prod of sizes left, prod of sizes right)."""
    return tuple(
        min(math.prod(sizes[: k + 1]), math.prod(sizes[k + 1 :])) for k in range(len(sizes) - 1)
    )


def tt_params(sizes: Sequence[int], ranks: Sequence[int]) -> int:
    """``sum_k r_{k-1} n_k r_k`` with ``r_0 = r_d = 1``."""
    r = (1, *ranks, 1)
    return sum(r[k] * n * r[k + 1] for k, n in enumerate(sizes))


def tt_svd(
    x: torch.Tensor,
    sizes: Sequence[int],
    trunc: Truncation | None,
    max_ranks: Sequence[int] | None = None,
    budget: Budget = "uniform",
) -> tuple[list[torch.Tensor], float]:
    """TT-SVD of ``x`` viewed as ``sizes`` (consecutive groups); cores ``(r, n, r')``.

    Returns the cores and the relative error, which is exact: the steps are orthogonal projections,
    so their errors add in squares.
    """
    d = len(sizes)
    norm = float(torch.linalg.vector_norm(x.detach()))
    limit = error_limit(trunc, norm)
    cap = None if trunc is None else trunc.max_rank
    floor = _noise_floor(x, norm, d)
    cores, spent2, r = [], 0.0, 1
    c = x.reshape(-1)
    for k in range(d - 1):
        c = c.reshape(r * sizes[k], -1)
        step = step_truncation(
            _min(cap, None if max_ranks is None else max_ranks[k]),
            _step_limit(limit, d - 1, spent2, budget, floor),
        )
        u, s_full = left_svd(c, step)
        new_r = u.shape[1]
        spent2 += tail_norm(s_full, new_r) ** 2
        cores.append(u.reshape(r, sizes[k], new_r))
        c = u.mH @ c
        r = new_r
    cores.append(c.reshape(r, sizes[-1], 1))
    return cores, (math.sqrt(spent2) / norm if norm > 0 else 0.0)


def right_orthogonalize(cores: list[torch.Tensor], stop: int = 0) -> list[torch.Tensor]:
    """Make cores ``stop+1 .. d-1`` right-orthonormal (LQ sweep from the right)."""
    cores = list(cores)
    for k in range(len(cores) - 1, stop, -1):
        r0, n, r1 = cores[k].shape
        q, rr = qr(cores[k].reshape(r0, n * r1).mT)  # c^T = Q R  =>  c = R^T Q^T
        cores[k] = q.mT.reshape(-1, n, r1)
        cores[k - 1] = torch.tensordot(cores[k - 1], rr.mT, dims=([2], [0]))
    return cores


def left_orthogonalize(cores: list[torch.Tensor], stop: int | None = None) -> list[torch.Tensor]:
    """Make cores ``0 .. stop-1`` left-orthonormal (QR sweep from the left)."""
    cores = list(cores)
    stop = len(cores) - 1 if stop is None else stop
    for k in range(stop):
        r0, n, r1 = cores[k].shape
        q, rr = qr(cores[k].reshape(r0 * n, r1))
        cores[k] = q.reshape(r0, n, -1)
        cores[k + 1] = torch.tensordot(rr, cores[k + 1], dims=([1], [0]))
    return cores


def tt_round(
    cores: list[torch.Tensor],
    trunc: Truncation | None,
    max_ranks: Sequence[int] | None = None,
    budget: Budget = "adaptive",
) -> tuple[list[torch.Tensor], float]:
    """Round a TT: right-orthogonalise, then truncate left to right. Returns (cores, rel. error)."""
    d = len(cores)
    cores = right_orthogonalize(cores)
    norm = float(torch.linalg.vector_norm(cores[0].detach()))
    limit = error_limit(trunc, norm)
    cap = None if trunc is None else trunc.max_rank
    floor = _noise_floor(cores[0], norm, d)
    spent2 = 0.0
    for k in range(d - 1):
        r0, n, r1 = cores[k].shape
        step = step_truncation(
            _min(cap, None if max_ranks is None else max_ranks[k]),
            _step_limit(limit, d - 1, spent2, budget, floor),
        )
        u, s, vh, s_full = truncated_svd(cores[k].reshape(r0 * n, r1), step)
        spent2 += tail_norm(s_full, s.shape[0]) ** 2
        cores[k] = u.reshape(r0, n, -1)
        cores[k + 1] = torch.tensordot(s.to(vh.dtype)[:, None] * vh, cores[k + 1], dims=([1], [0]))
    return cores, (math.sqrt(spent2) / norm if norm > 0 else 0.0)


@register_format("tt")
class TT(Format):
    """A tensor in tensor-train (MPS) format, stored as a chain of nodes ``G0 - G1 - ...``.

    Build it with :meth:`from_dense` (TT-SVD), :meth:`from_cores`, or ``TT(cores, groups,
    legs=None, error=None)``: core ``k`` of shape ``(r_{k-1}, *mode dims of groups[k], r_k)``
    with ``r_0 = r_d = 1``; ``groups`` the mode legs of each core (one leg each for a plain TT);
    ``legs`` the order of the dense legs for :meth:`to_dense` (default: the train order).

    Options of :meth:`from_dense`: ``order`` (the legs along the train, default the dense order);
    ``budget`` (``"uniform"``: tolerances shared as ``eps / sqrt(d - 1)`` per step, so the total
    relative error is at most ``rel_tol``; ``"adaptive"``: each step gets what the previous
    left). ``ranks`` caps the ``d - 1`` bonds; ``fraction`` is one cap for all bonds.
    ``out_dims``/``in_dims`` tensorize a matrix or kernel (one core per mode, see
    :mod:`~tensornet.formats.tensorize`): ``order`` then names dense legs (each standing for
    its modes) or mode legs, default ``kh, kw, out_0, in_0, out_1, in_1, ...``.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(4, 5, 6, dtype=torch.float64)
    >>> tt = TT.from_dense(x, legs=("a", "b", "c"))
    >>> tt.ranks, tt.network.open_legs
    ((4, 6), ('a', 'b', 'c'))
    >>> bool(torch.allclose(tt.to_dense(), x))
    True
    >>> TT.from_dense(x, ranks=(2, 2)).ranks
    (2, 2)
    """

    kernel_defaults = {"order": ("in", "kh", "kw", "out")}
    tensorizable = True
    leg_options = ("order",)

    @classmethod
    def _parts(
        cls,
        cores: Sequence[torch.Tensor],
        groups: Sequence[Sequence[str]],
        legs: Sequence[str] | None = None,
        error: float | None = None,
    ) -> tuple[Structure, dict, float | None, dict]:
        groups = tuple(tuple(g) for g in groups)
        flat = tuple(leg for g in groups for leg in g)
        legs = flat if legs is None else tuple(legs)
        if sorted(legs) != sorted(flat) or len(set(flat)) != len(flat):
            raise ValueError(f"TT: legs {legs} must be a permutation of the mode legs {flat}")
        if len(cores) != len(groups) or not cores:
            raise ValueError(f"TT: {len(cores)} cores for {len(groups)} mode groups")
        cores = [as_tensor(c) for c in cores]
        d = len(cores)
        dims = {}
        for k, core in enumerate(cores):
            if core.ndim != len(groups[k]) + 2:
                raise ValueError(
                    f"TT: core {k} needs {len(groups[k]) + 2} dims (r, modes..., r'), "
                    f"got shape {tuple(core.shape)}"
                )
            if (k == 0 and core.shape[0] != 1) or (k == d - 1 and core.shape[-1] != 1):
                raise ValueError(f"TT: boundary ranks must be 1, core {k} has {tuple(core.shape)}")
            dims.update(zip(groups[k], core.shape[1:-1]))
        ranks = tuple(c.shape[-1] for c in cores[:-1])
        s = cls.structure_for(
            tuple(dims[leg] for leg in legs), ranks, legs=legs, groups=groups, what="TT"
        )
        return s, _core_tensors(s, cores), error, {}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_cores(cls, cores: Sequence[torch.Tensor], legs: Sequence[str] | None = None) -> TT:
        """A TT from cores of shape ``(r_{k-1}, n_k, r_k)`` (``r_0 = r_d = 1``).

        Examples
        --------
        >>> import torch
        >>> tt = TT.from_cores([torch.ones(1, 2, 3), torch.ones(3, 4, 1)])
        >>> tt.ranks, tt.shape, tt.legs
        ((3,), (2, 4), ('d0', 'd1'))
        """
        legs = tuple(f"d{i}" for i in range(len(cores))) if legs is None else tuple(legs)
        if len(legs) != len(cores):
            raise ValueError(f"TT.from_cores: legs has {len(legs)} names for {len(cores)} cores")
        return cls(cores, [(leg,) for leg in legs])

    @classmethod
    def _layout(
        cls,
        dense: Dense,
        *,
        order: Sequence[str] | None = None,
        groups: Sequence[Sequence[str]] | None = None,
    ) -> Layout:
        """Cores along ``order`` (default: the dense order), bond ``k`` after core ``k``.

        ``groups`` (the mode legs of each core, in train order) lets a core carry several legs,
        as the train of a :class:`~tensornet.formats.TTMatrix` does; it sets ``order``.

        Examples
        --------
        >>> s = TT.structure_for((4, 5, 6), (2, 3))
        >>> [f.shape for f in s.factors], s.num_params == tt_params((4, 5, 6), (2, 3))
        ([(4, 2), (2, 5, 3), (3, 6)], True)
        """
        shape, legs, what = dense
        if groups is not None:
            groups = tuple(tuple(g) for g in groups)
            order = tuple(leg for g in groups for leg in g)
        order = check_order(order, legs, what)
        if groups is None or all(len(g) == 1 for g in groups):
            groups, extra = tuple((leg,) for leg in order), ()
        else:
            extra = (("groups", groups),)
        dims = dict(zip(legs, shape))
        group_dims = [tuple(dims[leg] for leg in g) for g in groups]
        tops = tt_max_ranks([math.prod(g) for g in group_dims])
        bonds = fresh_names([f"r{k + 1}" for k in range(len(groups) - 1)], legs)
        return Layout(
            tops,
            lambda ranks: chain_factors(groups, group_dims, bonds, ranks),
            (("order", order), *extra),
        )

    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request, budget: Budget = "uniform") -> TT:
        """TT-SVD along the structure's order."""
        budget = _check_budget(budget, req.what)
        order = req.full.option("order")
        x = x.permute([req.full.legs.index(leg) for leg in order])
        cores, err = tt_svd(x, tuple(x.shape), req.trunc, req.caps, budget)
        return from_chain(cls, req.full, cores, err)

    def _rebuilt(self, cores: Sequence[torch.Tensor], error: float | None) -> TT:
        return from_chain(type(self), self._structure, cores, error)

    # -- views -------------------------------------------------------------------------------
    @property
    def order(self) -> tuple[str, ...]:
        """Mode legs along the train (for one-leg cores: the leg order)."""
        return self._structure.option("order")

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """Mode legs of each core."""
        return self._groups

    @property
    def _groups(self) -> tuple[tuple[str, ...], ...]:
        return self._structure.option("groups") or tuple((leg,) for leg in self.order)

    @property
    def bond_legs(self) -> tuple[str, ...]:
        """Names of the bond legs between consecutive cores."""
        return self._bonds

    @property
    def _bonds(self) -> tuple[str, ...]:
        return tuple(f.legs[-1] for f in self._structure.factors[:-1])

    def core(self, k: int) -> torch.Tensor:
        """Core ``k`` as ``(r_{k-1}, *mode dims, r_k)`` (boundary ranks 1 included)."""
        d = len(self._groups)
        t = self._network.node(f"G{k}").tensor  # the factor layout: (r, *group k, r')
        return t.reshape((1,) * (k == 0) + tuple(t.shape) + (1,) * (k == d - 1))

    @property
    def cores(self) -> tuple[torch.Tensor, ...]:
        """All cores, each ``(r_{k-1}, *mode dims, r_k)``."""
        return tuple(self.core(k) for k in range(len(self._groups)))

    def _cores3(self) -> list[torch.Tensor]:
        return [c.reshape(c.shape[0], -1, c.shape[-1]) for c in self.cores]

    # -- algorithms --------------------------------------------------------------------------
    def round(
        self,
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        budget: Budget = "adaptive",
    ) -> TT:
        """TT rounding: right-orthogonalise, then truncate in one left-to-right SVD sweep.

        The error relative to this TT is at most ``trunc.rel_tol``. With the default
        ``budget="adaptive"`` each step may use what the earlier steps left of the tolerance;
        ``"uniform"`` gives each of the ``d - 1`` steps ``eps / sqrt(d - 1)``.

        Examples
        --------
        >>> import torch
        >>> x = torch.randn(3, 4, 5, dtype=torch.float64)
        >>> tt = TT.from_dense(x)
        >>> (tt + tt).ranks, (tt + tt).round(Truncation(rel_tol=1e-12)).ranks
        ((6, 10), (3, 5))
        """
        what = "TT.round"
        trunc = as_truncation(trunc)
        budget = _check_budget(budget, what)
        max_ranks = None if ranks is None else check_ranks(ranks, len(self._groups) - 1, what)
        cores, err = tt_round(self._cores3(), trunc, max_ranks, budget)
        return self._rebuilt(cores, err)

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> TT:
        """Same as :meth:`round` (adaptive budget)."""
        return self.round(trunc, ranks)

    def canonical(self, center: int) -> TT:
        """The same tensor in the canonical form centred at core ``center``.

        Cores left of ``center`` are left-orthonormal and cores right of it right-orthonormal
        (``center = 0``: right-canonical; ``center = d - 1``: left-canonical).

        Examples
        --------
        >>> import torch
        >>> tt = TT.from_dense(torch.randn(3, 4, 5, dtype=torch.float64)).canonical(2)
        >>> g = tt.core(0).reshape(3, -1)
        >>> bool(torch.allclose(g.T @ g, torch.eye(3, dtype=torch.float64)))
        True
        """
        d = len(self._groups)
        if isinstance(center, bool) or not isinstance(center, int) or not (-d <= center < d):
            raise ValueError(f"TT.canonical: center must be an int in [0, {d}), got {center!r}")
        center %= d
        cores = left_orthogonalize(self._cores3(), center)
        cores = right_orthogonalize(cores, center)
        return self._rebuilt(cores, self._error)

    def left_canonical(self) -> TT:
        """Every core but the last left-orthonormal."""
        return self.canonical(len(self._groups) - 1)

    def right_canonical(self) -> TT:
        """Every core but the first right-orthonormal."""
        return self.canonical(0)

    def norm(self) -> float:
        """Frobenius norm, from the centre core of a canonical form (no dense tensor)."""
        return float(torch.linalg.vector_norm(right_orthogonalize(self._cores3())[0].detach()))

    def add(self, other: TT, trunc: Truncation | int | None = None) -> TT:
        """``self + other`` (ranks add), rounded with ``trunc`` when one is given."""
        total = self + other
        return total if trunc is None else total.round(trunc)

    def __add__(self, other: TT) -> TT:
        if not isinstance(other, TT):
            return NotImplemented
        if other._groups != self._groups or other.shape != self.shape:
            raise ValueError(
                f"TT addition needs the same legs and sizes along the train: {self._groups} "
                f"{self.shape} vs {other._groups} {other.shape}"
            )
        a, b = self._cores3(), other._cores3()
        d = len(a)
        if d == 1:
            return self._rebuilt([a[0] + b[0]], None)
        cores = [torch.cat([a[0], b[0]], dim=2)]
        for k in range(1, d - 1):
            ra0, n, ra1 = a[k].shape
            rb0, _, rb1 = b[k].shape
            c = a[k].new_zeros(ra0 + rb0, n, ra1 + rb1)
            c[:ra0, :, :ra1] = a[k]
            c[ra0:, :, ra1:] = b[k]
            cores.append(c)
        cores.append(torch.cat([a[-1], b[-1]], dim=0))
        return self._rebuilt(cores, None)

    def __mul__(self, scalar: float) -> TT:
        if isinstance(scalar, torch.Tensor) and scalar.ndim != 0:
            raise TypeError(
                f"a TT can be multiplied by a scalar only, got a tensor of shape "
                f"{tuple(scalar.shape)}"
            )
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float, complex, torch.Tensor)):
            return NotImplemented
        cores = self._cores3()
        cores[0] = cores[0] * scalar
        return self._rebuilt(cores, self._error)

    __rmul__ = __mul__

    def __neg__(self) -> TT:
        return self * -1.0

    def __sub__(self, other: TT) -> TT:
        if not isinstance(other, TT):
            return NotImplemented
        return self + (-other)


def _core_tensors(structure: Structure, cores: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cores ``(r, *modes, r')`` (any grouping of the modes) as the structure's factors."""
    return {f.name: c.reshape(f.shape) for f, c in zip(structure.factors, cores)}


def from_chain(
    cls: type[F], structure: Structure, cores: Sequence[torch.Tensor], error: float | None
) -> F:
    """A train format of ``structure``'s shape and options with these cores (and their ranks).

    Cores are ``(r, *modes, r')`` with the boundary ranks 1, the modes grouped in any way.
    """
    s = structure.with_ranks(tuple(c.shape[-1] for c in cores[:-1]))
    return cls(s, _core_tensors(s, cores), error)
