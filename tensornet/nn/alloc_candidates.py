"""Every format a layer could take, at a grid of ranks, scored by its true weight error.

:func:`weight_candidates` lists, for one conv/linear kernel ``W`` (legs ``out, in[, kh, kw]``),
the :class:`Candidate` s of ``allocate(method="auto")``: the layer kept dense, and each format
that fits it at a grid of ranks, with its parameter count and the relative Frobenius error
``||W - W'||_F / ||W||_F`` of the kernel ``compress`` would rebuild (the same ``from_dense``,
options and ranks). Which formats fit:

- every layer: ``svd`` (``out | in kh kw``), ``grouped`` with each group count ``k >= 2``
  dividing ``in`` (``k = 1`` is ``svd``), up to ``max_groups``;
- conv layers with a kernel larger than 1x1 also ``tucker2``, ``tucker`` (all four legs),
  ``tt`` in its three useful mode orders (``in kh kw out``, ``kh kw in out``, ``in out kh kw``:
  every order up to reversal that keeps the spatial legs together), ``ht``, ``tr`` and ``cp``.
  On a 1x1 kernel or a linear layer they would be ``svd`` or worse.

The rank grid (:func:`rank_levels`): on each rank of at most ``m``, every rank up to 16, then
steps of ``2^(1/8)`` (about 9 %), the maximum, and the axis's numerical rank (the fewest
singular values leaving a relative tail ``<= 1e-6``, so an exactly low-rank kernel is hit
exactly). Errors come exactly from spectra where that is cheap:

- ``svd`` and ``grouped``: Eckart-Young-Mirsky on one SVD (per group), every grid rank;
- ``tucker2`` and ``tucker``: truncated HOSVD (what ``from_dense`` computes): with the full
  mode factors ``U_i`` and ``P = W x_i U_i^T``, the kept energy at ranks ``r`` is the sum of
  ``P[:r_1, :r_2, ...]^2`` (a cumulative sum), so every grid point costs one lookup;
- ``tt``, ``ht``, ``tr``: the ranks their own SVD-based truncation chooses at relative errors
  :data:`TOLERANCES`, each decomposed and its rebuilt kernel compared with ``W`` (TR again
  at the ranks found, :data:`REDECOMPOSE`);
- ``cp``: ALS at ranks 1, 2, 3, 4, then doubling, up to half the dense kernel's parameters
  and :data:`MAX_CP_WORK` (ALS is slow on large kernels at large ranks), each compared with
  ``W``.

A layer's decompositions run within :func:`~tensornet.formats.steps.shared_steps`: an SVD
(or Gram frame) of a matrix met before is reused, bitwise, so TT-SVD at every tolerance does its
first step once (and every step after the same ranks), HT-SVD its unfoldings, TR its first
SVD, and CP's starts share their mode frames (a 256 x 256 x 3 x 3 kernel: tt, ht and tr in
2.98 s of CPU instead of 5.43 s, one thread).

Candidates with no fewer parameters than the dense kernel are left out (dense is a candidate).
Errors up to :data:`EXACT` (float32 rounding) count as 0, so that among exact candidates the
cheapest wins, and on a tie the format listed first in :data:`AUTO_FORMATS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.truncation import Truncation
from ..formats import get_format
from ..formats.steps import shared_steps
from .frontier import pareto
from .layers import kernel_options
from .measure import kernel_legs

__all__ = [
    "AUTO_FORMATS",
    "TOLERANCES",
    "TT_ORDERS",
    "Candidate",
    "candidate_kernel",
    "rank_levels",
    "weight_candidates",
]

#: The formats ``auto`` considers by default, in the order ties are broken (first wins).
AUTO_FORMATS = ("svd", "grouped", "tucker2", "tucker", "tt", "ht", "tr", "cp")
#: The useful TT mode orders of a conv kernel (up to reversal, spatial legs together).
TT_ORDERS = (("in", "kh", "kw", "out"), ("kh", "kw", "in", "out"), ("in", "out", "kh", "kw"))
#: Relative errors at which tt / ht / tr choose their ranks (1e-6: a kernel's exact ranks).
TOLERANCES = (1e-6, *np.geomspace(0.02, 0.9, 12).round(4).tolist())
#: The formats whose decomposition at given ranks differs from the one at a tolerance that
#: chose those ranks (TR-SVD splits its first rank otherwise): decomposed again at the ranks.
#: TT-SVD and HT-SVD truncate each step to the same rank either way.
REDECOMPOSE = frozenset({"tr"})
#: The most CP work tried: ranks up to ``MAX_CP_WORK / W.numel()`` (an ALS sweep costs about
#: rank x size; a 256 x 256 x 3 x 3 kernel gets ranks up to 7, a 64 x 64 x 3 x 3 one 113).
MAX_CP_WORK = 2**22
#: The relative tail below which an axis's singular values count as zero (numerical rank).
EXACT = 1e-6


@dataclass(frozen=True)
class Candidate:
    """One way to store a layer: a format at ranks, its size, error and (once priced) costs.

    ``format`` is a registered format or ``"dense"``; ``options`` the format's options as
    sorted ``(name, value)`` pairs (TT's ``order``, grouped's ``channel_groups``); ``error``
    the relative Frobenius error of the rebuilt kernel (or what an ``errors`` function of
    :func:`~tensornet.nn.allocate` returned); ``flops``, ``seconds`` and ``plan`` describe the
    forward plan the cost model runs for it (``None`` until priced); ``cost`` is its cost in the
    allocation's measure.
    """

    format: str
    ranks: tuple[int, ...]
    options: tuple[tuple[str, Any], ...]
    params: int
    error: float
    flops: int | None = None
    seconds: float | None = None
    plan: str | None = None
    cost: float = 0.0

    @property
    def family(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The format and options: candidates of one family differ only in their ranks."""
        return self.format, self.options

    @property
    def label(self) -> str:
        """A short name: ``"tt[in,kh,kw,out]"``, ``"grouped[k=4]"``, ``"svd"``."""
        opts = dict(self.options)
        if "order" in opts:
            return f"{self.format}[{','.join(opts['order'])}]"
        if "channel_groups" in opts:
            return f"{self.format}[k={opts['channel_groups']}]"
        return self.format

    def with_error(self, error: float) -> Candidate:
        """The same candidate with another error."""
        return replace(self, error=float(error))


def rank_levels(m: int, fine: int = 16, step: float = 2 ** (1 / 8)) -> list[int]:
    """The grid of ranks up to ``m``: every rank up to ``fine``, then steps of ``step``, ``m``.

    Examples
    --------
    >>> rank_levels(5)
    [1, 2, 3, 4, 5]
    >>> rank_levels(40, fine=4, step=2)
    [1, 2, 3, 4, 8, 16, 32, 40]
    """
    out = list(range(1, min(m, fine) + 1))
    r = float(fine)
    while True:
        r *= step
        if math.ceil(r) >= m:
            break
        if math.ceil(r) > out[-1]:
            out.append(math.ceil(r))
    if out[-1] != m:
        out.append(m)
    return out


def _tails(s: np.ndarray) -> np.ndarray:
    """``sqrt(sum_(i >= r) s_i^2)`` for ``r = 0 .. len(s)`` (along the last axis)."""
    sq = np.square(s)
    tail = np.cumsum(sq[..., ::-1], axis=-1)[..., ::-1]
    return np.sqrt(np.concatenate([tail, np.zeros(sq.shape[:-1] + (1,))], axis=-1))


def _numerical_rank(tail: np.ndarray, norm: float) -> int:
    """The fewest values whose relative tail is ``<= EXACT`` (at least 1)."""
    return max(1, int(np.count_nonzero(tail[:-1] > EXACT * norm)))


def _grid(m: int, tail: np.ndarray, norm: float) -> list[int]:
    return sorted({*rank_levels(m), min(m, _numerical_rank(tail, norm))})


@lru_cache(maxsize=65536)
def _params(fmt: str, shape: tuple, legs: tuple, ranks: tuple, options: tuple) -> int:
    return get_format(fmt).structure_for(shape, ranks, legs=legs, **dict(options)).num_params


class _Kernel:
    """A layer's kernel in float64 with its legs, norm and the format options it runs with."""

    def __init__(self, module: nn.Module) -> None:
        self.legs, self.shape = kernel_legs(module)
        self.w = module.weight.detach().to(device="cpu", dtype=torch.float64)
        self.conv = len(self.shape) == 4
        self.dense = self.w.numel()
        norm = float(torch.linalg.vector_norm(self.w))
        self.norm = norm if norm > 0 else 1.0

    def options(self, fmt: str, **given: Any) -> tuple[tuple[str, Any], ...]:
        """The options ``compress`` would build ``fmt`` with (conv kernels: its defaults)."""
        opts = kernel_options(fmt, given) if self.conv else dict(given)
        return tuple(sorted(opts.items()))

    def candidate(self, fmt: str, ranks: Sequence[int], options: tuple, error: float) -> Candidate:
        ranks = tuple(int(r) for r in ranks)
        params = _params(fmt, self.shape, self.legs, ranks, options)
        error = float(error) if error > EXACT else 0.0  # rounding: exact ties go to the cheapest
        return Candidate(fmt, ranks, options, params, error)

    def error_of(self, approx: torch.Tensor) -> float:
        return float(torch.linalg.vector_norm(self.w - approx)) / self.norm


def weight_candidates(
    module: nn.Module, formats: Iterable[str] = AUTO_FORMATS, max_groups: int = 64
) -> list[Candidate]:
    """The dense layer and every candidate of ``formats`` that fits it, by weight error.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> layer = nn.Conv2d(4, 6, 3)
    >>> found = weight_candidates(layer, ("svd", "tt"))
    >>> found[0].format, found[0].error, sorted({c.format for c in found})
    ('dense', 0.0, ['dense', 'svd', 'tt'])
    >>> all(c.params < found[0].params for c in found[1:])
    True
    """
    k = _Kernel(module)
    out = [Candidate("dense", (), (), k.dense, 0.0)]
    spatial = k.conv and math.prod(k.shape[2:]) > 1
    with shared_steps():  # the decompositions at several tolerances share their SVDs
        for fmt in formats:
            if fmt in ("svd", "grouped") or spatial:
                out += family_frontiers(
                    [c for c in _BUILDERS[fmt](k, max_groups) if c.params < k.dense]
                )
    return out


def family_frontiers(found: Sequence[Candidate], key: str = "params") -> list[Candidate]:
    """Per family (format and options), its Pareto frontier of error against ``key``.

    ``key`` is ``"params"`` or ``"cost"``; the candidates kept stay in the order given.

    Examples
    --------
    >>> points = ((1, 10, 0.5), (2, 20, 0.6), (3, 30, 0.1))
    >>> found = [Candidate("svd", (r,), (), p, e) for r, p, e in points]
    >>> [c.ranks for c in family_frontiers(found)]
    [(1,), (3,)]
    """
    families: dict[Any, list[int]] = {}
    for i, c in enumerate(found):
        families.setdefault(c.family, []).append(i)
    keep = set()
    for members in families.values():
        sizes = [getattr(found[i], key) for i in members]
        keep.update(members[j] for j in pareto(sizes, [found[i].error for i in members]))
    return [c for i, c in enumerate(found) if i in keep]


# -- formats whose errors come from spectra --------------------------------------------------
def _svd(k: _Kernel, _: int) -> list[Candidate]:
    s = torch.linalg.svdvals(k.w.reshape(k.shape[0], -1)).numpy()
    tail = _tails(s)
    opts = k.options("svd")
    return [k.candidate("svd", (r,), opts, tail[r] / k.norm) for r in _grid(len(s), tail, k.norm)]


def _grouped(k: _Kernel, max_groups: int) -> list[Candidate]:
    f, c = k.shape[:2]
    out = []
    for groups in range(2, min(c, max_groups) + 1):
        if c % groups:
            continue
        blocks = k.w.reshape(f, groups, c // groups, -1).movedim(1, 0).reshape(groups, f, -1)
        tails = _tails(torch.linalg.svdvals(blocks).numpy())  # (groups, m + 1)
        tail = np.sqrt(np.square(tails).sum(axis=0))
        opts = k.options("grouped", channel_groups=groups)
        out += [
            k.candidate("grouped", (j,), opts, tail[j] / k.norm)
            for j in _grid(len(tail) - 1, tail, k.norm)
        ]
    return out


def _tucker(k: _Kernel, fmt: str) -> list[Candidate]:
    """Truncated HOSVD at every grid point: energies of the projected kernel's corners."""
    opts = k.options(fmt)
    axes = [0, 1] if fmt == "tucker2" else [0, 1, 2, 3]  # the decomposed legs
    p, grids = k.w, []
    for axis in axes:  # p: the kernel projected on every mode's full factor
        unfolded = k.w.movedim(axis, 0).reshape(k.shape[axis], -1)
        u, s, _ = torch.linalg.svd(unfolded, full_matrices=False)
        p = torch.tensordot(p, u, dims=([axis], [0])).movedim(-1, axis)
        grids.append(_grid(len(s), _tails(s.numpy()), k.norm))
    energy = p.square()
    rest = [a for a in range(energy.ndim) if a not in axes]
    energy = energy.sum(dim=rest) if rest else energy
    for axis in range(energy.ndim):
        energy = energy.cumsum(axis)
    energy = energy.numpy()
    mesh = np.meshgrid(*[np.asarray(g) for g in grids], indexing="ij")
    ranks = np.stack([m.ravel() for m in mesh], axis=-1)  # (points, modes)
    kept = energy[tuple((ranks - 1).T)]
    errors = np.sqrt(np.maximum(k.norm**2 - kept, 0.0)) / k.norm
    sizes = [k.shape[a] for a in axes]
    whole = math.prod(n for a, n in enumerate(k.shape) if a not in axes)
    params = ranks.prod(axis=1) * whole + ranks @ np.asarray(sizes)  # core + factors
    cheap = np.flatnonzero(params < k.dense)
    keep = cheap[pareto(params[cheap].tolist(), errors[cheap].tolist())]
    return [k.candidate(fmt, ranks[i], opts, errors[i]) for i in keep]


def _cheaper(k: _Kernel, fmt: str, ranks: Sequence[int], opts: tuple) -> bool:
    return _params(fmt, k.shape, k.legs, tuple(int(r) for r in ranks), opts) < k.dense


# -- formats scored by decomposing -----------------------------------------------------------
def _by_tolerance(k: _Kernel, fmt: str, **given: Any) -> list[Candidate]:
    """The ranks ``fmt``'s own truncation picks at each of :data:`TOLERANCES`, decomposed."""
    opts = k.options(fmt, **given)
    seen, out = set(), []
    for tol in TOLERANCES:
        found = get_format(fmt).from_dense(
            k.w, trunc=Truncation(rel_tol=tol), legs=k.legs, **dict(opts)
        )
        ranks = tuple(found.ranks)
        if ranks in seen or found.num_params >= k.dense:
            continue
        seen.add(ranks)
        if fmt in REDECOMPOSE:  # compress decomposes at these ranks: a different result
            found = get_format(fmt).from_dense(k.w, ranks=ranks, legs=k.legs, **dict(opts))
        out.append(k.candidate(fmt, ranks, opts, k.error_of(found.to_dense())))
    return out


def _cp(k: _Kernel, _: int) -> list[Candidate]:
    opts = k.options("cp")
    ceiling = math.prod(sorted(k.shape)[:-1])
    per_rank = _params("cp", k.shape, k.legs, (1,), opts)
    top = min(ceiling, k.dense // (2 * per_rank), MAX_CP_WORK // k.dense)
    out = []
    for r in rank_levels(top, fine=4, step=2) if top >= 1 else []:
        if not _cheaper(k, "cp", (r,), opts):
            break
        found = get_format("cp").from_dense(k.w, ranks=(r,), legs=k.legs, **dict(opts))
        out.append(k.candidate("cp", (r,), opts, k.error_of(found.to_dense())))
    return out


_BUILDERS = {
    "svd": _svd,
    "grouped": _grouped,
    "tucker2": lambda k, _: _tucker(k, "tucker2"),
    "tucker": lambda k, _: _tucker(k, "tucker"),
    "tt": lambda k, _: [c for o in TT_ORDERS for c in _by_tolerance(k, "tt", order=o)],
    "ht": lambda k, _: _by_tolerance(k, "ht"),
    "tr": lambda k, _: _by_tolerance(k, "tr"),
    "cp": _cp,
}


def candidate_kernel(module: nn.Module, candidate: Candidate) -> torch.Tensor:
    """The kernel ``compress`` would rebuild for ``candidate`` (the layer's dtype and device).

    What an ``errors`` function of :func:`~tensornet.nn.allocate` can compare with the layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> layer = nn.Linear(6, 4, bias=False)
    >>> layer.weight.data = torch.outer(torch.arange(1.0, 5.0), torch.ones(6))  # rank 1
    >>> best = weight_candidates(layer, ("svd",))[-1]
    >>> best.ranks, best.error, bool(torch.allclose(candidate_kernel(layer, best), layer.weight))
    ((1,), 0.0, True)
    """
    w = module.weight.detach()
    if candidate.format == "dense":
        return w.clone()
    legs, _ = kernel_legs(module)
    fmt = get_format(candidate.format)
    found = fmt.from_dense(w, ranks=candidate.ranks, legs=legs, **dict(candidate.options))
    return found.to_dense().reshape(w.shape)
