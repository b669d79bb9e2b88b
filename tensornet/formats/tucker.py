"""Tucker format: HOSVD, HOOI and partial Tucker (e.g. Tucker-2 on a kernel's channel modes).

The network is a star: a node ``"core"`` whose legs are one rank leg per decomposed mode (and
the dense leg itself for modes left alone), and one factor node ``"U_<leg>"`` per decomposed
mode with legs ``(<leg>, <rank leg>)``. Factors have orthonormal columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from ..core.linalg import qr
from ..core.node import Node, as_tensor
from ..core.split import fresh_names
from ..core.truncation import Truncation, as_truncation
from .base import Dense, Format, Layout, Request, check_ranks
from .steps import error_limit, left_vectors, mode_product, relative_error, step_truncation, unfold
from .structure import Factor, Structure, register_format

__all__ = ["Tucker", "Tucker2"]

Method = Literal["hosvd", "hooi"]


def projection_error(x: torch.Tensor, core: torch.Tensor, approx: Any) -> float:
    """Relative error of an orthogonal projection: ``sqrt(||x||^2 - ||core||^2) / ||x||``.

    The difference of squares cancels when the error is below ~1e-4, so then the error is
    measured directly on ``approx()`` (the reconstruction).
    """
    nx = float(torch.linalg.vector_norm(x.detach()))
    if nx == 0:
        return 0.0
    nc = float(torch.linalg.vector_norm(core.detach()))
    rel2 = max(nx * nx - nc * nc, 0.0) / (nx * nx)
    if rel2 > 1e-8:
        return math.sqrt(rel2)
    return relative_error(x, approx())


def leading_vectors(x: torch.Tensor, axis: int, step: Truncation | None) -> torch.Tensor:
    """Leading left singular vectors of the mode-``axis`` unfolding (how many: ``step``)."""
    return left_vectors(unfold(x, [axis]), step)


def hosvd(
    x: torch.Tensor,
    axes: Sequence[int],
    trunc: Truncation | None,
    max_ranks: Sequence[int] | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Truncated HOSVD over ``axes``: factors from each unfolding, core by projection.

    Tolerances are shared as ``limit / sqrt(N)`` per mode, since the HOSVD error squared is at
    most the sum of the per-mode squared tails.
    """
    norm = float(torch.linalg.vector_norm(x.detach()))
    limit = error_limit(trunc, norm)
    cap = None if trunc is None else trunc.max_rank
    factors = []
    for i, axis in enumerate(axes):
        r = max_ranks[i] if max_ranks is not None else None
        r = min(v for v in (r, cap) if v is not None) if (r or cap) else None
        lim = None if limit is None else limit / math.sqrt(len(axes))
        factors.append(leading_vectors(x, axis, step_truncation(r, lim)))
    core = x
    for axis, u in zip(axes, factors):
        core = mode_product(core, u.mH, axis)
    return core, factors


def hooi(
    x: torch.Tensor,
    axes: Sequence[int],
    factors: list[torch.Tensor],
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """Higher-order orthogonal iteration from ``factors``; stops when the error changes by < tol.

    Returns the core, the factors and the relative error after every sweep.
    """
    norm2 = float(torch.linalg.vector_norm(x.detach())) ** 2
    factors = list(factors)
    history: list[float] = []
    core = x
    for _ in range(max_iter):
        for i, axis in enumerate(axes):
            y = x
            for j, other in enumerate(axes):
                if j != i:
                    y = mode_product(y, factors[j].mH, other)
            step = Truncation(max_rank=factors[i].shape[1])
            factors[i] = leading_vectors(y, axis, step)
            core = mode_product(y, factors[i].mH, axis)
        err = math.sqrt(
            max(norm2 - float(torch.linalg.vector_norm(core.detach())) ** 2, 0.0) / norm2
        )
        history.append(err)
        if len(history) > 1 and abs(history[-2] - err) < tol:
            break
    return core, factors, history


@register_format("tucker")
class Tucker(Format):
    """A tensor in Tucker format: a core times one orthonormal factor per decomposed mode.

    ``Tucker(core, factors, legs, modes=None, error=None, history=())`` builds one directly.
    Options of :meth:`from_dense`: ``modes`` (the legs to decompose, default all: partial
    Tucker, e.g. Tucker-2 on ``("out", "in")``); ``method`` (``"hosvd"``, or ``"hooi"``, which
    starts from the HOSVD and iterates); ``max_iter``, ``tol`` (HOOI stops after ``max_iter``
    sweeps or when the error changes by less than ``tol``). Tolerances of ``trunc`` are divided
    by ``sqrt(N)`` per mode so that the total relative error is at most ``rel_tol``.
    ``out_dims``/``in_dims`` tensorize a matrix or kernel (one factor per mode, see
    :mod:`~tensornet.formats.tensorize`); ``modes`` then names dense legs (each standing for its
    modes: ``("out", "in")`` is a tensorized Tucker-2) or mode legs, default all.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(5, 6, 7, dtype=torch.float64)
    >>> t = Tucker.from_dense(x, ranks=(2, 3, 4))
    >>> t.ranks, t.network.open_legs, t.num_params
    ((2, 3, 4), ('d0', 'd1', 'd2'), 80)
    >>> k = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    >>> t2 = Tucker.from_dense(k, ranks=(4, 3), legs=("out", "in", "kh", "kw"), modes=("out", "in"))
    >>> t2.node("core").legs
    ('r_out', 'r_in', 'kh', 'kw')
    """

    _history: tuple[float, ...] = ()
    tensorizable = True
    leg_options = ("modes",)

    @classmethod
    def _parts(
        cls,
        core: torch.Tensor,
        factors: Sequence[torch.Tensor],
        legs: Sequence[str],
        modes: Sequence[str] | None = None,
        error: float | None = None,
        history: Sequence[float] = (),
    ) -> tuple[Structure, dict, float | None, dict]:
        legs = tuple(legs)
        modes = legs if modes is None else tuple(modes)
        if len(factors) != len(modes):
            raise ValueError(f"Tucker: {len(factors)} factors for {len(modes)} modes")
        core, factors = as_tensor(core), [as_tensor(u) for u in factors]
        sizes = dict(zip(legs, core.shape))
        sizes.update((m, u.shape[0]) for m, u in zip(modes, factors))
        ranks = tuple(u.shape[1] for u in factors)
        s = cls.structure_for(
            tuple(sizes[leg] for leg in legs), ranks, legs=legs, modes=modes, what=cls.__name__
        )
        tensors = {"core": core, **{f"U_{m}": u for m, u in zip(modes, factors)}}
        return s, tensors, error, {"history": tuple(history)}

    @classmethod
    def _default_modes(cls, legs: tuple[str, ...]) -> tuple[str, ...]:
        return legs

    @classmethod
    def _check_modes(cls, modes: Any, legs: tuple[str, ...], what: str) -> tuple[str, ...]:
        modes = cls._default_modes(legs) if modes is None else tuple(modes)
        if not modes or len(set(modes)) != len(modes) or any(m not in legs for m in modes):
            raise ValueError(f"{what}: modes {modes} must be distinct legs among {legs}")
        return modes

    @classmethod
    def _layout(cls, dense: Dense, *, modes: Sequence[str] | None = None) -> Layout:
        """A core and one factor per decomposed mode (``modes``, default all legs).

        Examples
        --------
        >>> s = Tucker.structure_for((8, 6, 3, 3), (4, 3), legs=("out", "in", "kh", "kw"),
        ...                          modes=("out", "in"))
        >>> [(f.name, f.legs, f.shape) for f in s.factors][0]
        ('core', ('r_out', 'r_in', 'kh', 'kw'), (4, 3, 3, 3))
        """
        shape, legs, what = dense
        modes = cls._check_modes(modes, legs, what)
        total = math.prod(shape)
        dims = dict(zip(legs, shape))
        tops = tuple(min(dims[m], total // dims[m]) for m in modes)
        rank_legs = dict(zip(modes, fresh_names([f"r_{m}" for m in modes], legs)))

        def factors(ranks: tuple[int, ...]) -> list[Factor]:
            rank = dict(zip(modes, ranks))
            core = Factor(
                "core",
                tuple(rank_legs.get(leg, leg) for leg in legs),
                tuple(rank.get(leg, n) for leg, n in zip(legs, shape)),
            )
            return [core, *(Factor(f"U_{m}", (m, rank_legs[m]), (dims[m], rank[m])) for m in modes)]

        return Layout(tops, factors, (("modes", modes),))

    @classmethod
    def _decompose(
        cls,
        x: torch.Tensor,
        req: Request,
        method: Method = "hosvd",
        max_iter: int = 50,
        tol: float = 1e-10,
    ) -> Tucker:
        """HOSVD (tolerances shared as ``eps / sqrt(N)`` per mode), then HOOI if asked."""
        if method not in ("hosvd", "hooi"):
            raise ValueError(f"{req.what}: method must be 'hosvd' or 'hooi', got {method!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"{req.what}: max_iter must be a positive int, got {max_iter!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"{req.what}: tol must be a number >= 0, got {tol!r}")
        modes = req.full.option("modes")
        axes = [req.full.legs.index(m) for m in modes]
        core, factors = hosvd(x, axes, req.trunc, req.caps)
        history: list[float] = []
        if method == "hooi":
            core, factors, history = hooi(x, axes, factors, max_iter, tol)
        new = cls._of(req.full, core, factors, None)
        err = projection_error(x, core, new.to_dense)
        new._error = err
        new._history = tuple(history) if history else (err,)
        return new

    @classmethod
    def _of(
        cls, structure: Structure, core: torch.Tensor, factors: Sequence[torch.Tensor], error
    ) -> Tucker:
        modes = structure.option("modes")
        s = structure.with_ranks(tuple(u.shape[1] for u in factors))
        return cls(s, {"core": core, **{f"U_{m}": u for m, u in zip(modes, factors)}}, error)

    # -- views -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        """The node called ``name`` in the network."""
        return self._network.node(name)

    @property
    def modes(self) -> tuple[str, ...]:
        """The decomposed legs."""
        return self._structure.option("modes")

    @property
    def core(self) -> torch.Tensor:
        """The core, legs in dense order (rank legs in place of decomposed modes)."""
        return self._tensors["core"]

    @property
    def factors(self) -> tuple[torch.Tensor, ...]:
        """Factor matrices ``(n_k, r_k)`` in ``modes`` order."""
        return tuple(self._tensors[f"U_{m}"] for m in self.modes)

    @property
    def history(self) -> tuple[float, ...]:
        """Relative error after each HOOI sweep (one entry for HOSVD)."""
        return self._history

    def truncate(
        self, trunc: Truncation | int | None = None, *, ranks: Sequence[int] | int | None = None
    ) -> Tucker:
        """Re-orthonormalise the factors, then truncate by an HOSVD of the core.

        ``ranks`` caps each mode's rank; ``error`` is relative to this Tucker tensor.
        """
        max_ranks = None
        if ranks is not None:
            max_ranks = check_ranks(ranks, len(self.modes), f"{type(self).__name__}.truncate")
        qs, core = [], self.core
        axes = [self._structure.mode_legs.index(m) for m in self.modes]
        for axis, u in zip(axes, self.factors):
            q, r = qr(u)
            qs.append(q)
            core = mode_product(core, r, axis)
        new_core, vs = hosvd(core, axes, as_truncation(trunc), max_ranks)

        def approx() -> torch.Tensor:
            out = new_core
            for axis, v in zip(axes, vs):
                out = mode_product(out, v, axis)
            return out

        err = projection_error(core, new_core, approx)
        return self._of(self._structure, new_core, [q @ v for q, v in zip(qs, vs)], err)


def tucker_params(shape: Sequence[int], axes: Sequence[int], ranks: Sequence[int]) -> int:
    """Core size plus factor sizes."""
    core = list(shape)
    for a, r in zip(axes, ranks):
        core[a] = r
    return math.prod(core) + sum(shape[a] * r for a, r in zip(axes, ranks))


@register_format("tucker2")
class Tucker2(Tucker):
    """Tucker over the first two legs only (a kernel's ``out`` and ``in``): Tucker-2.

    The spatial modes stay whole in the core, so a convolution becomes 1x1 conv, small full
    conv, 1x1 conv (Kim et al. 2016).

    Examples
    --------
    >>> import torch
    >>> k = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    >>> t = Tucker2.from_dense(k, ranks=(4, 2), legs=("out", "in", "kh", "kw"))
    >>> t.modes, t.core.shape
    (('out', 'in'), torch.Size([4, 2, 3, 3]))
    """

    tensorizable = False  # Tucker with out_dims/in_dims and modes=("out", "in") is one

    @classmethod
    def _default_modes(cls, legs: tuple[str, ...]) -> tuple[str, ...]:
        return legs[:2]
