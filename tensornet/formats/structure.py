"""Tensor-free descriptions of formats: factors, legs, shapes, parameter counts and a registry.

A :class:`Structure` says everything about a decomposition except its numbers: which dense
tensor it stands for (legs and shape), its ranks, and its factors (name, legs and shape of each).
Parameter counts, maximal ranks, the einsum that rebuilds the dense tensor and the cost of any
contraction with it follow from the structure alone, so a layer's forward passes can be priced
before anything is decomposed. Factor legs may be shared by more than two factors (CP's rank leg,
the group leg of channel-grouped low rank): the structure is an einsum, not necessarily a network.

Every format registers under a short name (``"tt"``, ``"tucker2"``, ...):
:func:`get_format` returns its class, whose ``structure_for(shape, ranks, legs=..., **options)``
builds a structure and whose ``from_dense`` / ``from_factors`` build the format with tensors.
:func:`fraction_ranks` is the one solver from a parameter fraction to ranks for every format.

Examples
--------
>>> s = get_format("tt").structure_for((16, 8, 3, 3), (4, 4, 3), legs=("out", "in", "kh", "kw"))
>>> [(f.name, f.legs, f.shape) for f in s.factors][:2]
[('G0', ('out', 'r1'), (16, 4)), ('G1', ('r1', 'in', 'r2'), (4, 8, 4))]
>>> s.num_params, s.dense_size
(237, 1152)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.einsum import plan_einsum
from ..core.validate import is_int

if TYPE_CHECKING:
    from .base import Format

__all__ = [
    "Factor",
    "as_fraction",
    "Structure",
    "budget_rank",
    "format_names",
    "fraction_ranks",
    "get_format",
    "ranks_within",
    "register_format",
]


@dataclass(frozen=True)
class Factor:
    """One stored tensor of a format: its name, leg names and shape."""

    name: str
    legs: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


def _freeze(value: Any) -> Any:
    """Options as hashable values: lists become tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Structure:
    """A decomposition without its tensors.

    Attributes
    ----------
    format : str
        Registry name of the format.
    legs, shape : tuple
        The dense tensor's leg names and shape.
    ranks : tuple of int
        The format's ranks (their meaning is the format's: TT bonds, Tucker modes, ...).
    factors : tuple of Factor
        The stored tensors.
    modes : tuple of tuple of str
        For each dense leg, the factor legs it is reshaped into (row-major, first slowest); a
        leg that is not tensorized maps to itself.
    max_ranks : tuple of int
        Per rank, the largest value that can still help (beyond it, exact or larger than dense).
    options : tuple of (str, value)
        The format options that, with shape, legs and ranks, rebuild this structure.
    """

    format: str
    legs: tuple[str, ...]
    shape: tuple[int, ...]
    ranks: tuple[int, ...]
    factors: tuple[Factor, ...]
    modes: tuple[tuple[str, ...], ...]
    max_ranks: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()
    _dims: dict = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        dims: dict[str, int] = {}
        for f in self.factors:
            if len(f.legs) != len(f.shape):
                raise ValueError(
                    f"{self.format}: factor {f.name} has legs {f.legs}, shape {f.shape}"
                )
            for leg, d in zip(f.legs, f.shape):
                if dims.setdefault(leg, d) != d:
                    raise ValueError(f"{self.format}: leg {leg!r} has sizes {dims[leg]} and {d}")
        for leg, n, group in zip(self.legs, self.shape, self.modes):
            if math.prod(dims[m] for m in group) != n:
                raise ValueError(f"{self.format}: modes {group} of leg {leg!r} do not make {n}")
        object.__setattr__(self, "_dims", dims)

    # -- sizes -------------------------------------------------------------------------------
    def dim(self, leg: str) -> int:
        """Size of any factor leg."""
        try:
            return self._dims[leg]
        except KeyError:
            raise ValueError(f"{leg!r} is not a leg of this {self.format} structure") from None

    @property
    def num_params(self) -> int:
        """Elements of all factors: the format's true storage."""
        return sum(f.size for f in self.factors)

    @property
    def dense_size(self) -> int:
        """Number of elements of the dense tensor."""
        return math.prod(self.shape)

    @property
    def compression(self) -> float:
        """Dense size divided by :attr:`num_params`."""
        return self.dense_size / self.num_params

    @property
    def mode_legs(self) -> tuple[str, ...]:
        """All open factor legs, dense leg by dense leg (the order :meth:`contract` reshapes)."""
        return tuple(m for group in self.modes for m in group)

    @property
    def summed_legs(self) -> tuple[str, ...]:
        """Factor legs that are summed when the dense tensor is rebuilt (bonds, ranks)."""
        open_ = set(self.mode_legs)
        out: list[str] = []
        for f in self.factors:
            out.extend(leg for leg in f.legs if leg not in open_ and leg not in out)
        return tuple(out)

    @property
    def terms(self) -> int:
        """Products summed in each dense element (product of the summed legs' sizes)."""
        return math.prod(self._dims[leg] for leg in self.summed_legs)

    def option(self, name: str, default: Any = None) -> Any:
        """The value of one option (``default`` when it is not set)."""
        return dict(self.options).get(name, default)

    # -- building ----------------------------------------------------------------------------
    def with_ranks(self, ranks: Sequence[int] | int | None) -> Structure:
        """The same format, shape and options with other ranks (``None``: the maximal ones)."""
        return get_format(self.format).structure_for(
            self.shape, ranks, legs=self.legs, **dict(self.options)
        )

    def contract(
        self, tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], optimize: str = "auto"
    ) -> torch.Tensor:
        """The dense tensor (legs in :attr:`legs` order) from factor tensors (planned einsum)."""
        if isinstance(tensors, Mapping) or hasattr(tensors, "keys"):  # nn.ParameterDict too
            tensors = [tensors[f.name] for f in self.factors]
        tensors = list(tensors)
        if len(tensors) != len(self.factors):
            raise ValueError(
                f"{self.format}: {len(tensors)} tensors for {len(self.factors)} factors"
            )
        for f, t in zip(self.factors, tensors):
            if tuple(t.shape) != f.shape:
                raise ValueError(
                    f"{self.format}: factor {f.name} must have shape {f.shape}, got "
                    f"{tuple(t.shape)}"
                )
        _, program = plan_einsum(
            [f.legs for f in self.factors],
            [f.shape for f in self.factors],
            self.mode_legs,
            optimize,
        )
        return program(*tensors).reshape(self.shape)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (format, legs, shape, ranks, options)."""
        return {
            "format": self.format,
            "legs": list(self.legs),
            "shape": list(self.shape),
            "ranks": list(self.ranks),
            "options": {k: _thaw(v) for k, v in self.options},
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Structure:
        """Inverse of :meth:`to_dict` (ValueError naming the missing or bad field)."""
        for key in ("format", "legs", "shape", "ranks"):
            if key not in data:
                raise ValueError(f"structure description lacks the field {key!r}")
        options = {k: _freeze(v) for k, v in dict(data.get("options", {})).items()}
        return get_format(data["format"]).structure_for(
            tuple(data["shape"]), tuple(data["ranks"]), legs=tuple(data["legs"]), **options
        )

    def __str__(self) -> str:
        return (
            f"{self.format}{self.shape} ranks={self.ranks}: {self.num_params:,} params "
            f"({self.compression:.3g}x)"
        )


def chain_factors(
    groups: Sequence[Sequence[str]],
    group_dims: Sequence[Sequence[int]],
    bonds: Sequence[str],
    ranks: Sequence[int],
    ring: bool = False,
) -> tuple[Factor, ...]:
    """Factors ``G0, G1, ...`` of a train: core ``k`` has legs ``(bond k-1, *group k, bond k)``.

    An open train has ``len(groups) - 1`` bonds and no outer bond on its end cores; a ring has
    ``len(groups)`` bonds, bond ``k`` joining core ``k`` to core ``k + 1`` (mod d), and bond
    ``d - 1`` closes it (core 0's first leg).
    """
    d = len(groups)
    out = []
    for k in range(d):
        legs, shape = list(groups[k]), list(group_dims[k])
        if ring:
            legs = [bonds[k - 1], *legs, bonds[k]]
            shape = [ranks[k - 1], *shape, ranks[k]]
        else:
            if k > 0:
                legs.insert(0, bonds[k - 1])
                shape.insert(0, ranks[k - 1])
            if k < d - 1:
                legs.append(bonds[k])
                shape.append(ranks[k])
        out.append(Factor(f"G{k}", tuple(legs), tuple(shape)))
    return tuple(out)


# -- registry --------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Format]] = {}


def register_format(name: str) -> Callable[[type[Format]], type[Format]]:
    """Class decorator: register a :class:`~tensornet.formats.Format` subclass under ``name``.

    The class defines ``_layout``, ``_decompose`` and ``truncate`` (see
    :class:`~tensornet.formats.Format`); the shared contract test then runs over it
    (``tests/formats/test_common.py`` shows a whole example format).
    """

    def deco(cls: type[Format]) -> type[Format]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a format named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_format(name: str | type[Format]) -> type[Format]:
    """The format class registered as ``name`` (a class is returned unchanged)."""
    if isinstance(name, type):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown format {name!r}; registered formats are {sorted(_REGISTRY)}"
        ) from None


def format_names() -> tuple[str, ...]:
    """Names of all registered formats."""
    return tuple(_REGISTRY)


# -- ranks from a parameter budget -----------------------------------------------------------
def budget_rank(count: Callable[[int], int], budget: float, high: int, what: str) -> int:
    """Largest cap ``r`` in ``[1, high]`` with ``count(r) <= budget`` (``count`` nondecreasing).

    Raising the cap by one (``r + 1``) would go over the budget unless ``r == high``, which is what
    "within one rank step" means for ``fraction``.

    Examples
    --------
    >>> budget_rank(lambda r: 10 * r, budget=55, high=100, what="demo")
    5
    """
    if not is_int(high) or int(high) < 1:
        raise ValueError(f"{what}: the largest rank must be a positive int, got {high!r}")
    high = int(high)
    if count(1) > budget:
        raise ValueError(
            f"{what}: fraction too small: even rank 1 needs {count(1):,} parameters, "
            f"above the budget of {budget:,.0f}"
        )
    lo, hi = 1, max(high, 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def as_fraction(fraction: Any, what: str) -> float:
    """``fraction`` as a Python float in ``(0, 1]``, else ``ValueError`` naming ``what``.

    Real numbers of any library are accepted: Python and numpy ints and floats
    (``np.float32(0.5)``, ``np.array(0.5)``) and 0-d real torch tensors (``torch.tensor(0.5)``);
    ``bool``, complex numbers, tensors with more than one element, NaN and values outside
    ``(0, 1]`` are refused.

    Examples
    --------
    >>> import numpy as np, torch
    >>> as_fraction(np.float32(0.5), "demo"), as_fraction(torch.tensor(0.25), "demo")
    (0.5, 0.25)
    >>> as_fraction(True, "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: fraction must be a number in (0, 1], got True
    """
    value = fraction
    if isinstance(value, torch.Tensor):
        if value.ndim != 0 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(
                f"{what}: fraction must be a number in (0, 1], got a {value.dtype} tensor of "
                f"shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what}: fraction must be a number in (0, 1], got {fraction!r}")
    if not (0 < value <= 1):
        raise ValueError(f"{what}: fraction must be in (0, 1], got {fraction}")
    return float(value)


def fraction_ranks(
    fmt: str | type[Format],
    shape: Sequence[int],
    fraction: float,
    *,
    legs: Sequence[str] | None = None,
    what: str | None = None,
    **options: Any,
) -> tuple[int, ...]:
    """Ranks of ``fmt`` for ``shape`` that keep at most ``fraction`` of the dense parameters.

    One cap ``r`` for every rank (each rank is ``min(r, its maximal rank)``), the largest whose
    structure stays within ``fraction * prod(shape)`` parameters. Works from the structure's
    parameter count alone, so it is the same solver for every format.

    Examples
    --------
    >>> fraction_ranks("tucker2", (64, 64, 3, 3), 0.25, legs=("out", "in", "kh", "kw"))
    (25, 25)
    """
    cls = get_format(fmt)
    what = what or f"{cls.name}: fraction"
    fraction = as_fraction(fraction, what)
    return ranks_within(cls.structure_for(tuple(shape), None, legs=legs, **options), fraction, what)


def ranks_within(full: Structure, fraction: float, what: str) -> tuple[int, ...]:
    """The solver of :func:`fraction_ranks` on a structure at maximal ranks (``full``).

    ``fraction`` must already be checked (:func:`as_fraction`): ``from_dense`` checks it once.

    Examples
    --------
    >>> full = get_format("tucker2").structure_for((64, 64, 3, 3), legs=("o", "i", "h", "w"))
    >>> ranks_within(full, 0.25, "demo")
    (25, 25)
    """
    tops = full.max_ranks
    if not tops:
        return ()

    def count(r: int) -> int:
        return full.with_ranks(tuple(min(r, t) for t in tops)).num_params

    r = budget_rank(count, fraction * full.dense_size, max(tops), what)
    return tuple(min(r, t) for t in tops)
