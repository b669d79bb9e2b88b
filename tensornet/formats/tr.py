"""Tensor ring (TR): a closed train of cores ``G_k[r_k, n_k, r_{k+1}]`` with ``r_d = r_0``.

The dense tensor is ``X[i_0, ..., i_{d-1}] = trace(G_0[:, i_0, :] G_1[:, i_1, :] ...)``. As a
network it is a loop (core ``k`` carries bonds ``r{k}`` and ``r{k+1 mod d}``), so contraction runs
through the planner like any other network, while tree-only operations (gauges, bond spectra)
refuse it by naming the closing bond.

TR-SVD (Zhao et al. 2016): the first unfolding ``n_0 x rest`` is truncated to rank
``r_0 r_1`` and its left factor becomes the first core, split as ``(r_0, n_0, r_1)``; the rest,
with ``r_0`` moved to the end, is decomposed by TT-SVD, whose last core closes the ring. Every step
is an orthogonal projection, so the reported error is exact, and tolerances are shared as
``eps / sqrt(d - 1)`` per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..core.node import as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_order, check_ranks
from .steps import error_limit, relative_error, shared_svd, step_truncation, tail_norm
from .structure import Structure, chain_factors, register_format
from .tt import tt_svd

__all__ = ["TR", "tr_params"]


def tr_params(sizes: Sequence[int], ranks: Sequence[int]) -> int:
    """``sum_k r_k n_k r_{k+1}`` with ``r_d = r_0``.

    >>> tr_params((4, 5, 6), (2, 3, 4))
    132
    """
    d = len(sizes)
    return sum(ranks[k] * sizes[k] * ranks[(k + 1) % d] for k in range(d))


def _balanced_pair(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a * b = n``, ``a <= b`` and ``b - a`` smallest."""
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a, n // a


def _max_ranks(sizes: Sequence[int]) -> tuple[int, ...]:
    """Ranks beyond which TR-SVD cannot use more.

    ``r_0 r_1 <= min(n_0, N / n_0)`` (balanced between the two), and for ``k >= 2`` the bounds
    of the remaining train's unfoldings.
    """
    total = math.prod(sizes)
    a = max(1, math.isqrt(min(sizes[0], total // sizes[0])))
    out = [a, a]
    for k in range(2, len(sizes)):
        out.append(min(a * math.prod(sizes[1:k]), a * math.prod(sizes[k:])))
    return tuple(out)


def _bond_legs(d: int, taken: Sequence[str]) -> tuple[str, ...]:
    return fresh_names([f"r{k}" for k in range(d)], taken)


@register_format("tr")
class TR(Format):
    """A tensor in tensor-ring format (a loop of cores).

    Options: ``order`` (the legs around the ring, default the dense order); ``out_dims`` and
    ``in_dims`` tensorize a matrix or kernel as for :class:`~tensornet.formats.TT` (one core
    per mode, default order ``kh, kw, out_0, in_0, out_1, in_1, ...``).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(4, 6, 5, dtype=torch.float64)
    >>> tr = TR.from_dense(x, ranks=(2, 2, 10))
    >>> tr.ranks, tr.network.is_tree
    ((2, 2, 10), False)
    >>> bool(torch.allclose(tr.to_dense(), x))
    True
    """

    kernel_defaults = {"order": ("in", "kh", "kw", "out")}
    tensorizable = True
    leg_options = ("order",)

    @classmethod
    def _parts(
        cls,
        cores: Sequence[torch.Tensor],
        order: Sequence[str],
        legs: Sequence[str] | None = None,
        error: float | None = None,
    ) -> tuple[Structure, dict, float | None, dict]:
        order = tuple(order)
        legs = check_order(order if legs is None else tuple(legs), order, "TR")
        d = len(order)
        if d < 2 or len(cores) != d:
            raise ValueError(f"TR: needs d >= 2 cores, one per leg; got {len(cores)} for {order}")
        cores = [as_tensor(c) for c in cores]
        for k, core in enumerate(cores):
            if core.ndim != 3:
                raise ValueError(f"TR: core {k} must be (r, n, r'), got {tuple(core.shape)}")
        dims = {leg: c.shape[1] for leg, c in zip(order, cores)}
        s = cls.structure_for(
            tuple(dims[leg] for leg in legs),
            tuple(c.shape[0] for c in cores),
            legs=legs,
            order=order,
            what="TR",
        )
        return s, {f"G{k}": c for k, c in enumerate(cores)}, error, {}

    # -- structure ---------------------------------------------------------------------------
    @classmethod
    def _layout(cls, dense: Dense, *, order: Sequence[str] | None = None) -> Layout:
        """A ring of cores along ``order``: ranks ``(r_0, ..., r_{d-1})``, ``r_k`` before core k.

        Examples
        --------
        >>> s = TR.structure_for((4, 5, 6), (2, 3, 4))
        >>> [(f.legs, f.shape) for f in s.factors][0], s.num_params
        ((('r0', 'd0', 'r1'), (2, 4, 3)), 132)
        """
        shape, legs, what = dense
        if len(shape) < 2:
            raise ValueError(f"{what}: a tensor ring needs at least 2 legs, got shape {shape}")
        order = check_order(order, legs, what)
        sizes = [shape[legs.index(leg)] for leg in order]
        bonds = _bond_legs(len(sizes), legs)  # chain bond k (after core k) is r_{k+1}
        return Layout(
            _max_ranks(sizes),
            lambda ranks: chain_factors(
                [(leg,) for leg in order],
                [(n,) for n in sizes],
                bonds[1:] + bonds[:1],
                ranks[1:] + ranks[:1],
                ring=True,
            ),
            (("order", order),),
        )

    @classmethod
    def _clamp(cls, full: Structure, ranks: Any, what: str) -> tuple[int, ...]:
        """TR-SVD's bound on ``ranks`` (what ``clamp_ranks`` and ``from_dense`` apply).

        Ring order ``n_0, ..., n_{d-1}``. The first pair is bounded together: ``r_0 <= m`` and
        ``r_1 <= m // r_0`` with ``m = min(n_0, N / n_0)`` (the rank of the first unfolding),
        then ``r_k <= min(r_1 n_1 ... n_{k-1}, r_0 n_k ... n_{d-1})`` for ``k >= 2``. A ring has
        gauge freedom, so this is TR-SVD's bound rather than a bound on every ring; with
        ``r_0 = r_1`` it gives :attr:`Structure.max_ranks`.

        Examples
        --------
        >>> TR.clamp_ranks((16, 8, 3, 3), 64)
        (16, 1, 8, 24)
        >>> TR.clamp_ranks((16, 8, 3, 3), (4, 4, 64, 64))
        (4, 4, 32, 12)
        """
        sizes = [full.dim(leg) for leg in full.option("order")]
        given = check_ranks(ranks, len(sizes), what)
        total = math.prod(sizes)
        m = min(sizes[0], total // sizes[0])
        r0 = min(given[0], m)
        r1 = min(given[1], m // r0)
        out = [r0, r1]
        for k in range(2, len(sizes)):
            top = min(r1 * math.prod(sizes[1:k]), r0 * math.prod(sizes[k:]))
            out.append(min(given[k], top))
        return tuple(out)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def _decompose(cls, x: torch.Tensor, req: Request) -> TR:
        """TR-SVD along the structure's order (``caps``: ``r_0, r_1`` as given, then caps)."""
        x_ord = x.permute([req.full.legs.index(leg) for leg in req.full.option("order")])
        cores, err = tr_svd(x_ord, req.trunc, req.caps)
        return cls._of(req.full, cores, err)

    @classmethod
    def _of(cls, structure: Structure, cores: Sequence[torch.Tensor], error) -> TR:
        s = structure.with_ranks(tuple(c.shape[0] for c in cores))
        return cls(s, {f"G{k}": c for k, c in enumerate(cores)}, error)

    # -- views -------------------------------------------------------------------------------
    @property
    def order(self) -> tuple[str, ...]:
        """Legs in the order of the cores."""
        return self._structure.option("order")

    @property
    def ranks(self) -> tuple[int, ...]:
        """``(r_0, ..., r_{d-1})``: ``r_k`` joins core ``k - 1`` and core ``k`` (mod d)."""
        return self._structure.ranks

    @property
    def cores(self) -> tuple[torch.Tensor, ...]:
        """Cores ``(r_k, n_k, r_{k+1})``."""
        return tuple(self._tensors[f"G{k}"] for k in range(len(self.order)))

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> TR:
        """TR-SVD of this tensor with ``trunc``/``ranks``; ``error`` is relative to this one.

        The ring is contracted to dense first (a tensor ring has no exact local gauge), so this is
        for tensors that fit in memory, as every layer kernel does.
        """
        order = self.order
        dense = self._network.contract(output=order).tensor
        given = None if ranks is None else check_ranks(ranks, len(order), "TR.truncate")
        cores, _ = tr_svd(dense, as_truncation(trunc), given)
        new = self._of(self._structure, cores, None)
        new._error = relative_error(dense, new._network.contract(output=order).tensor)
        return new


def tr_svd(
    x: torch.Tensor, trunc: Truncation | None, ranks: Sequence[int] | None
) -> tuple[list[torch.Tensor], float]:
    """TR-SVD of ``x`` (cores along its axes). Returns the cores and the exact relative error."""
    sizes = tuple(x.shape)
    d = len(sizes)
    norm = float(torch.linalg.vector_norm(x.detach()))
    limit = error_limit(trunc, norm)
    step_limit = None if limit is None else limit / math.sqrt(d - 1)
    cap = None if trunc is None else trunc.max_rank
    first = x.reshape(sizes[0], -1)
    if ranks is not None:
        r0, r1 = ranks[0], ranks[1]
        keep = r0 * r1
        step = step_truncation(keep, None)
    else:
        step = step_truncation(None if cap is None else cap * cap, step_limit)
    u, s, vh, s_full = shared_svd(first, step)
    if ranks is None:
        keep = s.shape[0]
        while cap is not None and _balanced_pair(keep)[1] > cap:  # e.g. 3 = 1 x 3 for cap 2
            keep -= 1
        u, s, vh = u[:, :keep], s[:keep], vh[:keep]
        r0, r1 = _balanced_pair(keep)
    spent2 = tail_norm(s_full, s.shape[0]) ** 2
    rest = s.to(vh.dtype)[:, None] * vh
    if u.shape[1] < keep:  # the unfolding has a smaller rank than asked: pad with zeros
        u = torch.cat([u, u.new_zeros(u.shape[0], keep - u.shape[1])], dim=1)
        rest = torch.cat([rest, rest.new_zeros(keep - rest.shape[0], rest.shape[1])], dim=0)
    g0 = u.reshape(sizes[0], r0, r1).permute(1, 0, 2)
    rest = rest.reshape(r0, r1, *sizes[1:])
    rest = torch.movedim(rest, 0, -1)  # (r1, n_1, ..., n_{d-1}, r0)
    if d == 2:
        cores = [g0, rest]
    else:
        tt_sizes = [r1 * sizes[1], *sizes[2:-1], sizes[-1] * r0]
        caps = None
        if ranks is not None:
            caps = list(ranks[2:])
        elif cap is not None:
            caps = [cap] * (d - 2)
        budget = None if limit is None else math.sqrt(max(limit**2 - spent2, 0.0))
        inner = None if budget is None else Truncation(abs_tol=budget)
        tt_cores, tt_err = tt_svd(rest, tt_sizes, inner, caps)
        spent2 += (tt_err * float(torch.linalg.vector_norm(rest.detach()))) ** 2
        cores = [g0]
        for k, c in enumerate(tt_cores):
            if k == 0:
                cores.append(c.reshape(r1, sizes[1], c.shape[-1]))
            elif k == len(tt_cores) - 1:
                cores.append(c.reshape(c.shape[0], sizes[-1], r0))
            else:
                cores.append(c.reshape(c.shape[0], sizes[k + 1], c.shape[-1]))
    return cores, (math.sqrt(spent2) / norm if norm > 0 else 0.0)
