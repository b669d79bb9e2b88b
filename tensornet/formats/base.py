"""What every tensor format shares: dense legs, the network, sizes, errors and rank budgets.

A format object is immutable; `truncate`, `to` and friends return new objects. The factors live
as :class:`~tensornet.Node` objects in a :class:`~tensornet.TensorNetwork` whose open legs are the
dense tensor's legs, so contraction, cuts and spectra work on ``fmt.network`` unchanged.
"""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch

from ..core.network import TensorNetwork
from ..core.node import Node, as_tensor
from ..core.truncation import Truncation, as_truncation
from ..core.validate import check_finite, is_int
from .structure import Factor, Structure, as_fraction, budget_rank, ranks_within
from .tensorize import Tensorization, split_layout

__all__ = ["Dense", "Format", "Layout", "Request", "budget_rank"]

F = TypeVar("F", bound="Format")


@dataclass(frozen=True)
class Request:
    """What :meth:`Format.from_dense` checked before handing over to a format's ``_decompose``.

    Attributes
    ----------
    full : Structure
        The structure at maximal ranks; its options are the format's, checked. For a layout
        tensorized by the template (``out_dims``/``in_dims``) it is the plain structure of the
        tensor of modes, which ``_decompose`` receives as ``x``.
    trunc : Truncation or None
        Tolerances and/or a rank cap.
    caps : tuple of int or None
        Rank caps from ``ranks`` (lowered to the maximal ranks) or ``fraction`` (``None``: only
        ``trunc`` decides).
    what : str
        The caller, for messages (``"TT.from_dense"``).
    """

    full: Structure
    trunc: Truncation | None
    caps: tuple[int, ...] | None
    what: str


class Dense(NamedTuple):
    """A checked dense shape, its leg names and the caller (for messages): ``_layout``'s input."""

    shape: tuple[int, ...]
    legs: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class Layout:
    """A format's layout of one dense shape before its ranks are chosen (``_layout`` returns it).

    Attributes
    ----------
    max_ranks : tuple of int
        Per rank, the largest value that can still help.
    factors : callable
        ``factors(ranks)``: the factors at those (checked) ranks.
    options : tuple of (str, value)
        The options that, with shape, legs and ranks, rebuild the structure.
    modes : tuple of tuple of str, optional
        For each dense leg, the factor legs it is reshaped into (default: each leg itself).
    """

    max_ranks: tuple[int, ...]
    factors: Callable[[tuple[int, ...]], Sequence[Factor]]
    options: tuple[tuple[str, Any], ...] = ()
    modes: tuple[tuple[str, ...], ...] | None = None


class Format(ABC):
    """Base class of the tensor formats (TT, TT-matrix, HT, Tucker, CP, TR, low rank, grouped).

    A format is a registered, tensor-free :class:`~tensornet.formats.Structure` plus one tensor
    per factor: ``cls(structure, tensors, error=None)`` builds any format, and the network, legs,
    shape, ranks, options and sizes all follow from the structure. A format file defines
    ``_layout`` (the one description of its layout, which :meth:`structure_for` turns into a
    structure), ``_decompose`` (the algorithm behind :meth:`from_dense`), :meth:`truncate` and
    its layer defaults (:attr:`kernel_defaults`); ``_network_nodes`` is overridden only where the
    structure is not already a network (CP's shared rank leg, the grouped formats' shared group
    leg). ``tests/formats/test_common.py`` holds a whole example format in a few lines.

    The contract every registered format meets (``tests/formats/test_common.py``):

    - ``from_dense(x, trunc=None, ranks=None, fraction=None, *, legs=None, **options)``: at most
      one of ``trunc`` (tolerances and/or a rank cap), ``ranks`` (caps per rank) and
      ``fraction`` (parameter budget, solved by :func:`~tensornet.formats.fraction_ranks`);
    - ``structure_for(shape, ranks=None, *, legs=None, what=None, **options)``: the structure
      without tensors (``ranks=None``: the maximal ranks);
    - ``from_factors(structure, tensors)`` and :meth:`factor_tensors`: the tensors in the
      structure's factor layout, both ways;
    - :meth:`to_dense`, :meth:`truncate`, :attr:`ranks`, :attr:`num_params` (the structure's
      true storage), :attr:`error`, :attr:`network`.

    Formats that had a direct constructor of their own (``TT(cores, groups)``,
    ``CP(factors, weights)``, ...) keep it: arguments other than a structure go to the format's
    ``_parts``, which turns them into a structure and its tensors.
    """

    name: ClassVar[str] = ""
    # Options of a compressed conv layer in this format (kernel legs ``out, in, kh, kw``)
    # unless the caller gives them: e.g. TT orders its train so the forward is a chain of convs.
    kernel_defaults: ClassVar[Mapping[str, Any]] = {}
    # ``out_dims``/``in_dims`` split the first two legs into modes through this template (HT,
    # TT-matrix: in their own layouts); ``leg_options`` name legs (see formats/tensorize.py).
    tensorizable: ClassVar[bool] = False
    leg_options: ClassVar[tuple[str, ...]] = ()
    _structure: Structure
    _tensors: dict[str, torch.Tensor]
    _network: TensorNetwork
    _error: float | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], Structure):
            structure, tensors, error, records = *_generic_args(*args, **kwargs), {}
        else:
            structure, tensors, error, records = self._parts(*args, **kwargs)
        what = type(self).__name__
        if structure.format != self.name:
            raise ValueError(f"{what}: got a {structure.format!r} structure, not {self.name!r}")
        factor_shapes_match(structure, tensors, what)
        self._structure = structure
        self._tensors = {f.name: as_tensor(tensors[f.name]) for f in structure.factors}
        self._error = error
        for key, value in records.items():
            setattr(self, "_" + key, value)
        self._network = TensorNetwork(self._network_nodes())

    @classmethod
    def _parts(cls, *args: Any, **kwargs: Any) -> tuple[Structure, dict, float | None, dict]:
        """A format's own constructor arguments as (structure, tensors, error, records)."""
        raise TypeError(f"{cls.__name__}(structure, tensors, error=None): got no Structure")

    def _network_nodes(self) -> list[Node]:
        """The factors as nodes: one node per factor, its legs the factor's legs."""
        return [Node(self._tensors[f.name], f.legs, name=f.name) for f in self._structure.factors]

    # -- what each format defines -------------------------------------------------------------
    @classmethod
    @abstractmethod
    def _layout(cls, dense: Dense) -> Layout:
        """The format's layout of a checked dense shape; its options are keyword-only."""

    @classmethod
    @abstractmethod
    def _decompose(cls: type[F], x: torch.Tensor, req: Request, **options: Any) -> F:
        """The algorithm of :meth:`from_dense` on a checked input ``x`` (a floating tensor).

        ``options`` are the algorithm's own options (``budget``, ``method``, ...), unchecked.
        """

    @abstractmethod
    def truncate(self: F, trunc: Truncation | int | None = None, *, ranks: Any = None) -> F:
        """A smaller approximation of this tensor; ``error`` is relative to this one."""

    # -- construction shared by every format ---------------------------------------------------
    @classmethod
    def structure_for(
        cls,
        shape: Sequence[int],
        ranks: Sequence[int] | int | None = None,
        *,
        legs: Sequence[str] | None = None,
        what: str | None = None,
        **options: Any,
    ) -> Structure:
        """The structure of this format for a dense ``shape`` at ``ranks`` (no tensors).

        Parameters
        ----------
        shape : sequence of int
            The dense tensor's shape.
        ranks : int or sequence of int, optional
            The format's ranks (an int sets every rank); ``None``: the maximal ranks.
        legs : sequence of str, optional
            Dense leg names (default ``d0, d1, ...``, or the format's own defaults).
        what : str, optional
            The caller, for messages (default ``"<Format>.structure_for"``).
        **options
            The format's options (the keyword-only arguments of its ``_layout``).

        Examples
        --------
        >>> from tensornet.formats import get_format
        >>> s = get_format("tucker2").structure_for((8, 6, 3, 3), (4, 3))
        >>> s.ranks, s.max_ranks, [f.shape for f in s.factors]
        ((4, 3), (8, 6), [(4, 3, 3, 3), (8, 4), (6, 3)])
        """
        what = what or f"{cls.__name__}.structure_for"
        shape, legs = check_shape(shape, legs, what, cls._default_legs)
        split, options = cls._tensorized(shape, legs, options, what)
        if split is None:
            layout = cls._layout(Dense(shape, legs, what), **options)
            modes, recorded = layout.modes or tuple((leg,) for leg in legs), layout.options
        else:
            layout = cls._layout(Dense(split.shape, split.legs, what), **options)
            modes, recorded = split.modes, layout.options + split.options
        tops = layout.max_ranks
        ranks = tops if ranks is None else cls._check_ranks(ranks, len(tops), what)
        factors = tuple(layout.factors(ranks))
        return Structure(cls.name, legs, shape, ranks, factors, modes, tops, recorded)

    @classmethod
    def _tensorized(
        cls, shape: tuple[int, ...], legs: tuple[str, ...], options: Mapping[str, Any], what: str
    ) -> tuple[Tensorization | None, dict[str, Any]]:
        """:func:`~tensornet.formats.tensorize.split_layout` where :attr:`tensorizable`."""
        if not cls.tensorizable:
            return None, dict(options)
        return split_layout(shape, legs, options, cls.leg_options, what)

    @classmethod
    def structure_options(cls) -> tuple[str, ...]:
        """The names of the format's structure options (the keyword-only arguments of ``_layout``).

        Other options of ``from_dense`` belong to the algorithm (``init``, ``budget``, ...).

        Examples
        --------
        >>> from tensornet.formats import get_format
        >>> get_format("ttmatrix").structure_options()
        ('out_dims', 'in_dims', 'd')
        """
        params = inspect.signature(cls._layout).parameters.values()
        names = tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)
        return names + ("out_dims", "in_dims") * cls.tensorizable

    @classmethod
    def _default_legs(cls, ndim: int) -> tuple[str, ...]:
        """Dense leg names when none are given."""
        return _numbered(ndim)

    @classmethod
    def _check_ranks(cls, ranks: Any, count: int, what: str) -> tuple[int, ...]:
        return check_ranks(ranks, count, what)

    @classmethod
    def from_dense(
        cls: type[F],
        x: Any,
        trunc: Truncation | int | None = None,
        ranks: Sequence[int] | int | None = None,
        fraction: float | None = None,
        *,
        legs: Sequence[str] | None = None,
        **options: Any,
    ) -> F:
        """Decompose a dense tensor (see the format's class docstring for its options).

        Parameters
        ----------
        x : tensor, array-like or Node
            The dense tensor (a Node brings its leg names). NaN/inf and empty legs are refused.
        trunc : Truncation or int, optional
            Tolerances and/or a rank cap (an int is a rank cap).
        ranks : int or sequence of int, optional
            Caps per rank (an int caps every rank), lowered to the structure's ``max_ranks``.
        fraction : float, optional
            Parameter budget as a fraction of the dense size: one cap for every rank, the
            largest whose structure stays within the budget.
        legs : sequence of str, optional
            Dense leg names (default ``d0, d1, ...``).
        **options
            The structure's options (those of ``structure_for``) and the algorithm's.

        Examples
        --------
        >>> import torch
        >>> from tensornet.formats import get_format
        >>> x = torch.randn(4, 5, 6, dtype=torch.float64)
        >>> get_format("tt").from_dense(x, ranks=2).ranks
        (2, 2)
        """
        what = f"{cls.__name__}.from_dense"
        trunc, fraction = _request(trunc, ranks, fraction, what)
        x, legs = cls._dense_input(x, legs, what)
        shaping = {k: options.pop(k) for k in cls.structure_options() if k in options}
        full = cls.structure_for(tuple(x.shape), None, legs=legs, what=what, **shaping)
        caps = None
        if ranks is not None:
            caps = cls._requested_ranks(full, ranks, what)
        elif fraction is not None:
            caps = ranks_within(full, fraction, what)
        split, inner = cls._tensorized(full.shape, full.legs, dict(full.options), what)
        if split is None:
            return cls._decompose(x, Request(full, trunc, caps, what), **options)
        # the format decomposes the tensor of modes as a plain tensor, then carries the split
        of_modes = cls.structure_for(split.shape, None, legs=split.legs, what=what, **inner)
        req = Request(of_modes, trunc, caps, what)
        fmt = copy.copy(cls._decompose(x.reshape(split.shape), req, **options))
        fmt._structure = full.with_ranks(fmt.ranks)  # same factors, network and records
        return fmt

    @classmethod
    def _dense_input(
        cls, x: Any, legs: Sequence[str] | None, what: str
    ) -> tuple[torch.Tensor, tuple[str, ...]]:
        return dense_input(x, legs, what)

    @classmethod
    def _requested_ranks(cls, full: Structure, ranks: Any, what: str) -> tuple[int, ...]:
        """``ranks=`` of :meth:`from_dense` as caps (default: lowered to the maximal ranks)."""
        return cls._clamp(full, ranks, what)

    @classmethod
    def _clamp(cls, full: Structure, ranks: Any, what: str) -> tuple[int, ...]:
        given = check_ranks(ranks, len(full.max_ranks), what)
        return tuple(min(r, t) for r, t in zip(given, full.max_ranks))

    @classmethod
    def from_factors(
        cls: type[F],
        structure: Structure,
        tensors: Mapping[str, torch.Tensor],
        error: float | None = None,
    ) -> F:
        """The format with the given factor tensors (layout of ``structure.factors``).

        The structure is checked by rebuilding it with this format's ``structure_for``.

        Examples
        --------
        >>> import torch
        >>> from tensornet.formats import get_format
        >>> tt = get_format("tt").from_dense(torch.randn(3, 4, 5, dtype=torch.float64))
        >>> again = type(tt).from_factors(tt.structure, tt.factor_tensors())
        >>> bool(torch.equal(again.to_dense(), tt.to_dense()))
        True
        """
        what = f"{cls.__name__}.from_factors"
        own = cls.structure_for(
            structure.shape,
            structure.ranks,
            legs=structure.legs,
            what=what,
            **dict(structure.options),
        )
        factor_shapes_match(own, tensors, what)
        return cls(own, tensors, error)

    @classmethod
    def clamp_ranks(
        cls,
        shape: Sequence[int],
        ranks: Sequence[int] | int,
        *,
        legs: Sequence[str] | None = None,
        what: str | None = None,
        **options: Any,
    ) -> tuple[int, ...]:
        """``ranks`` with each rank lowered to its useful maximum (``structure.max_ranks``).

        The one rule every compressed layer applies to requested ranks (direct constructors,
        ``from_conv``, ``from_linear``), so that no layer holds factors that cannot help: the
        maximum is the structure's own ``max_ranks`` (``structure_for(shape).max_ranks``):

        - Tucker / Tucker-2 rank ``i``: ``min(n_i, prod of the other sizes)``;
        - TT / TT-matrix bond ``k``: ``min(prod of the sizes left of it, prod right of it)``;
        - HT node ``t``: ``min(prod of its sizes, prod of the others)``;
        - low rank (svd) and grouped ``j``: ``min(f, c/k * kh * kw)``;
        - CP: the rank at which the factors hold as many parameters as the dense tensor (a CP
          rank has no maximum of its own; beyond that the layer would be larger than dense);
        - TR: the pair ``r_0 r_1`` is bounded together (TR-SVD's first unfolding).

        ``from_dense`` of the formats with a hard bound (all but CP) clamps the same way.

        Examples
        --------
        >>> from tensornet.formats import get_format
        >>> get_format("tucker").clamp_ranks((16, 8, 3, 3), 64)
        (16, 8, 3, 3)
        >>> get_format("cp").clamp_ranks((16, 8, 3, 3), 64)  # 38 * (16 + 8 + 3 + 3) <= 1152
        (38,)
        """
        what = what or f"{cls.__name__}.clamp_ranks"
        full = cls.structure_for(tuple(shape), None, legs=legs, what=what, **options)
        return cls._clamp(full, ranks, what)

    def _like(
        self: F, ranks: Sequence[int], tensors: Mapping[str, torch.Tensor], error: float | None
    ) -> F:
        """The same format with other ranks and tensors (same shape, legs and options)."""
        return type(self)(self._structure.with_ranks(tuple(ranks)), tensors, error)

    # -- shared read-only views ------------------------------------------------------------
    @property
    def structure(self) -> Structure:
        """The tensor-free description of this object (format, shape, ranks, factors)."""
        return self._structure

    @property
    def options(self) -> dict[str, Any]:
        """The options that, with shape, legs and ranks, rebuild :attr:`structure`."""
        return dict(self._structure.options)

    @property
    def ranks(self) -> tuple[int, ...]:
        """The format's ranks."""
        return self._structure.ranks

    def factor_tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by factor name, in the layout of ``structure.factors``."""
        return dict(self._tensors)

    @property
    def network(self) -> TensorNetwork:
        """The factors as a network; its open legs are the (mode) legs of the dense tensor."""
        return self._network

    @property
    def legs(self) -> tuple[str, ...]:
        """Names of the dense tensor's legs, in the order :meth:`to_dense` returns them."""
        return self._structure.legs

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the dense tensor."""
        return self._structure.shape

    @property
    def num_params(self) -> int:
        """Number of stored parameters (elements of all factors of the structure)."""
        return self._structure.num_params

    @property
    def dense_size(self) -> int:
        """Number of elements of the dense tensor."""
        return self._structure.dense_size

    @property
    def compression(self) -> float:
        """Dense size divided by :attr:`num_params`."""
        return self._structure.compression

    @property
    def error(self) -> float | None:
        """Relative Frobenius error made when this object was computed (``None`` if unknown).

        For :meth:`from_dense` it is ``||X - X_approx|| / ||X||``; for :meth:`truncate` it is
        measured against the format object that was truncated.
        """
        return self._error

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the factors contract to."""
        return self._network.dtype

    @property
    def device(self) -> torch.device:
        """The device of the factors."""
        return self._network.device

    def to_dense(self) -> torch.Tensor:
        """Contract the network into the dense tensor (legs in :attr:`legs` order)."""
        out = self._network.contract(output=self._structure.mode_legs).tensor
        return out.reshape(self.shape)

    def to(
        self: F, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> F:
        """The same format with every factor moved and/or cast."""
        new = copy.copy(self)
        new._tensors = {k: t.to(device=device, dtype=dtype) for k, t in self._tensors.items()}
        new._network = TensorNetwork(new._network_nodes())
        return new

    def __repr__(self) -> str:
        err = "" if self._error is None else f", error={self._error:.3g}"
        return (
            f"{type(self).__name__}(shape={self.shape}, legs={self.legs}, ranks={self.ranks}, "
            f"params={self.num_params:,}, compression={self.compression:.3g}{err})"
        )


def _generic_args(
    structure: Structure, tensors: Mapping[str, torch.Tensor], error: float | None = None
) -> tuple[Structure, Mapping[str, torch.Tensor], float | None]:
    return structure, tensors, error


# -- helpers shared by the formats -----------------------------------------------------------
def dense_input(x: Any, legs: Sequence[str] | None, what: str) -> tuple[torch.Tensor, tuple]:
    """The input of a ``from_dense`` as a floating tensor plus its leg names, checked.

    Every format's ``from_dense`` starts here, so what is refused here is refused everywhere
    before any work: tensors holding NaN or inf (ValueError naming the input: ``x``, or the
    Node's name), modes of size 0 (ValueError naming the leg), 0-d tensors, bad ``legs``.
    Integer inputs are converted to the default float dtype.

    Parameters
    ----------
    x : Node, tensor or array-like
        The dense tensor.
    legs : sequence of str, optional
        Its leg names (default ``d0, d1, ...``; taken from the Node when ``x`` is one).
    what : str
        The caller, for messages (``"TT.from_dense"``).

    Returns
    -------
    (torch.Tensor, tuple of str)

    Examples
    --------
    >>> import torch
    >>> t, legs = dense_input(torch.ones(2, 3, dtype=torch.int64), None, "demo")
    >>> t.dtype, legs
    (torch.float32, ('d0', 'd1'))
    >>> dense_input(torch.tensor([1.0, float("nan")]), None, "demo")
    Traceback (most recent call last):
    ...
    ValueError: demo: x holds NaN or inf values (1 of 2 entries); refusing to work on it
    """
    if isinstance(x, Node):
        if legs is not None:
            raise ValueError(f"{what}: legs= is taken from the Node; do not pass both")
        t, legs = x.tensor, x.legs
        label = f"{what}: {x.describe()}"
    else:
        t = as_tensor(x)
        if t.ndim == 0:
            raise ValueError(f"{what}: x must have at least one dimension")
        if legs is None:
            legs = tuple(f"d{i}" for i in range(t.ndim))
        else:
            if isinstance(legs, str):
                raise ValueError(
                    f"{what}: legs must be a sequence of names, got the string {legs!r}"
                )
            legs = tuple(legs)
            if len(legs) != t.ndim:
                raise ValueError(f"{what}: legs has {len(legs)} names for a {t.ndim}-way tensor")
            if len(set(legs)) != len(legs) or not all(isinstance(leg, str) and leg for leg in legs):
                raise ValueError(f"{what}: legs must be unique non-empty strings, got {legs}")
        label = f"{what}: x"
    if not (t.is_floating_point() or t.is_complex()):
        t = t.to(torch.get_default_dtype())
    for leg, size in zip(legs, t.shape):
        if size == 0:
            raise ValueError(
                f"{what}: leg {leg!r} has size 0 (shape {tuple(t.shape)}); a format of an "
                "empty tensor has nothing to represent"
            )
    check_finite(t, label)
    return t, tuple(legs)


def choose(
    trunc: Truncation | int | None, ranks: Any, fraction: float | None, what: str
) -> Truncation | None:
    """Check that at most one of trunc / ranks / fraction is given; validate fraction.

    ``fraction`` may be any real number of any library (``np.float32``, a 0-d tensor: see
    :func:`~tensornet.formats.structure.as_fraction`); ``trunc`` an int of any library or a
    :class:`~tensornet.core.truncation.Truncation` (whose fields accept the same numbers).

    Examples
    --------
    >>> import numpy as np
    >>> choose(np.int64(3), None, None, "demo").max_rank
    3
    >>> choose(None, None, np.float32(0.5), "demo") is None
    True
    """
    return _request(trunc, ranks, fraction, what)[0]


def _request(
    trunc: Truncation | int | None, ranks: Any, fraction: Any, what: str
) -> tuple[Truncation | None, float | None]:
    """:func:`choose`, also returning ``fraction`` as a checked Python float (or ``None``)."""
    given = [
        name
        for name, v in (("trunc", trunc), ("ranks", ranks), ("fraction", fraction))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"{what}: give at most one of trunc, ranks, fraction; got {given}")
    if fraction is not None:
        fraction = as_fraction(fraction, what)
    return as_truncation(trunc), fraction


def check_ranks(ranks: Any, count: int, what: str) -> tuple[int, ...]:
    """``ranks`` as a tuple of ``count`` positive Python ints (an int is repeated).

    Integers of any library are accepted (``numpy.int64``, 0-d torch tensors, numpy arrays and
    1-d tensors of integers).

    Examples
    --------
    >>> import numpy as np
    >>> check_ranks(np.int64(2), 3, "demo"), check_ranks(np.array([1, 2]), 2, "demo")
    ((2, 2, 2), (1, 2))
    """
    if is_int(ranks):
        ranks = (ranks,) * count
    if isinstance(ranks, (str, bytes)):
        raise ValueError(f"{what}: ranks must be an int or a sequence of ints, got {ranks!r}")
    try:
        ranks = tuple(ranks)
    except TypeError:
        raise ValueError(f"{what}: ranks must be an int or a sequence of ints") from None
    if len(ranks) != count:
        raise ValueError(f"{what}: ranks must have {count} entries, got {len(ranks)}: {ranks}")
    for r in ranks:
        if not is_int(r) or int(r) < 1:
            raise ValueError(f"{what}: ranks must be positive ints, got {ranks}")
    return tuple(int(r) for r in ranks)


# -- helpers for structure_for ---------------------------------------------------------------
def check_shape(
    shape: Sequence[int],
    legs: Sequence[str] | None,
    what: str,
    default: Callable[[int], tuple[str, ...]] | None = None,
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``shape`` as positive ints and ``legs`` as matching unique names.

    Legs default to ``default(len(shape))`` (when given), else ``d0, d1, ...``.
    """
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{what}: shape must be a sequence of ints, got {shape!r}") from None
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"{what}: shape must be positive ints, got {shape}")
    shape = tuple(int(n) for n in shape)
    if legs is None:
        return shape, (default or _numbered)(len(shape))
    if isinstance(legs, str):
        raise ValueError(f"{what}: legs must be a sequence of names, got the string {legs!r}")
    legs = tuple(legs)
    if len(legs) != len(shape):
        raise ValueError(f"{what}: legs has {len(legs)} names for shape {shape}")
    if len(set(legs)) != len(legs) or not all(isinstance(leg, str) and leg for leg in legs):
        raise ValueError(f"{what}: legs must be unique non-empty strings, got {legs}")
    return shape, legs


def _numbered(ndim: int) -> tuple[str, ...]:
    return tuple(f"d{i}" for i in range(ndim))


def check_order(order: Sequence[str] | None, legs: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``order`` as a permutation of ``legs`` (default: ``legs``)."""
    if order is None:
        return legs
    order = tuple(order)
    if sorted(order) != sorted(legs) or len(order) != len(legs):
        raise ValueError(f"{what}: order {order} must be a permutation of the legs {legs}")
    return order


def factor_shapes_match(structure: Structure, tensors: Mapping[str, torch.Tensor], what: str):
    """Check that ``tensors`` has one tensor per factor with the factor's shape."""
    names = [f.name for f in structure.factors]
    missing = [n for n in names if n not in tensors]
    extra = [n for n in tensors if n not in names]
    if missing or extra:
        raise ValueError(
            f"{what}: tensors must be the factors {names}; missing {missing}, unexpected {extra}"
        )
    for f in structure.factors:
        t = tensors[f.name]
        if tuple(t.shape) != f.shape:
            raise ValueError(
                f"{what}: factor {f.name} (legs {f.legs}) must have shape {f.shape}, "
                f"got {tuple(t.shape)}"
            )
