"""`Node`: one tensor whose dimensions carry names ("legs").

A node is immutable: every method that changes something (`rename`, `transpose`, `to`, ...)
returns a new node that shares storage with the old one where it can. Immutability is what lets a
`TensorNetwork` cache its structure and lets contraction plans be reused safely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["Node", "as_tensor"]


def as_tensor(data: Any) -> torch.Tensor:
    """Return ``data`` as a torch tensor, converting numpy arrays and nested sequences.

    Tensors (including ``nn.Parameter``) are returned as they are, so gradients keep flowing.
    numpy arrays share memory with the result where torch allows it.
    """
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        if not data.flags.writeable:
            data = data.copy()
        return torch.from_numpy(np.ascontiguousarray(data))
    try:
        return torch.as_tensor(data)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"cannot convert {type(data).__name__} to a torch tensor: {exc}") from None


def _check_tags(tags: Any, what: str) -> frozenset[str]:
    if isinstance(tags, str):
        return frozenset((tags,))
    try:
        tags = frozenset(tags)
    except TypeError:
        raise TypeError(
            f"{what}: tags must be a str or an iterable of str, got {type(tags).__name__} {tags!r}"
        ) from None
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"{what}: every tag must be a str, got {type(tag).__name__} {tag!r}")
    return tags


def _check_legs(legs: Any, shape: tuple[int, ...], what: str) -> tuple[str, ...]:
    if isinstance(legs, str):
        raise TypeError(
            f"{what}: legs must be a sequence of leg names, got the single string {legs!r}; "
            f"write ({legs!r},) for one leg"
        )
    try:
        legs = tuple(legs)
    except TypeError:
        raise TypeError(
            f"{what}: legs must be a sequence of str, got {type(legs).__name__}"
        ) from None
    for leg in legs:
        if not isinstance(leg, str) or not leg:
            raise TypeError(f"{what}: every leg name must be a non-empty str, got {leg!r}")
    if len(legs) != len(shape):
        raise ValueError(
            f"{what}: {len(legs)} leg names {legs} for a tensor of shape {tuple(shape)} "
            f"({len(shape)} dimensions)"
        )
    if len(set(legs)) != len(legs):
        dup = sorted({leg for leg in legs if legs.count(leg) > 1})
        raise ValueError(f"{what}: leg names must be unique within a node; repeated: {dup}")
    return legs


class Node:
    """A tensor with one name per dimension.

    Parameters
    ----------
    tensor : torch.Tensor or array-like
        The data. numpy arrays and nested sequences are converted with :func:`as_tensor`.
    legs : sequence of str
        One unique, non-empty name per dimension of ``tensor``.
    name : str, optional
        A label; a :class:`~tensornet.TensorNetwork` uses it to address the node and assigns one
        when it is missing.
    tags : iterable of str, optional
        Free-form labels for selecting nodes.

    Examples
    --------
    >>> import torch
    >>> a = Node(torch.ones(2, 3), ("i", "j"), name="A")
    >>> a.dim("j"), a.transpose(("j", "i")).shape
    (3, (3, 2))
    """

    __slots__ = ("_tensor", "_legs", "_name", "_tags")

    def __init__(
        self,
        tensor: Any,
        legs: Sequence[str],
        name: str | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Node name must be a str or None, got {type(name).__name__}")
        what = f"Node {name!r}" if name is not None else "Node"
        tensor = as_tensor(tensor)
        self._legs = _check_legs(legs, tuple(tensor.shape), what)
        self._tensor = tensor
        self._name = name
        self._tags = _check_tags(tags, what)

    @classmethod
    def _trusted(
        cls, tensor: torch.Tensor, legs: tuple[str, ...], name: str | None, tags: frozenset[str]
    ) -> Node:
        """Build without validation (internal: inputs are known to be consistent)."""
        node = cls.__new__(cls)
        node._tensor, node._legs, node._name, node._tags = tensor, legs, name, tags
        return node

    # -- read-only views -------------------------------------------------------------------
    @property
    def tensor(self) -> torch.Tensor:
        """The underlying torch tensor (not a copy)."""
        return self._tensor

    @property
    def legs(self) -> tuple[str, ...]:
        """Leg names, one per dimension, in tensor order."""
        return self._legs

    @property
    def name(self) -> str | None:
        """The node's label (``None`` until a network names it)."""
        return self._name

    @property
    def tags(self) -> frozenset[str]:
        """Free-form labels."""
        return self._tags

    @property
    def shape(self) -> tuple[int, ...]:
        """Dimensions in leg order."""
        return tuple(self._tensor.shape)

    @property
    def ndim(self) -> int:
        """Number of legs."""
        return self._tensor.ndim

    @property
    def dtype(self) -> torch.dtype:
        """The tensor's dtype."""
        return self._tensor.dtype

    @property
    def device(self) -> torch.device:
        """The tensor's device."""
        return self._tensor.device

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._tensor.numel()

    def axis(self, leg: str) -> int:
        """Position of ``leg`` among the tensor's dimensions."""
        try:
            return self._legs.index(leg)
        except ValueError:
            raise ValueError(
                f"{self.describe()} has no leg {leg!r}; its legs are {self._legs}"
            ) from None

    def dim(self, leg: str) -> int:
        """Dimension of ``leg``."""
        return self._tensor.shape[self.axis(leg)]

    def dims(self) -> dict[str, int]:
        """Mapping leg -> dimension."""
        return dict(zip(self._legs, self._tensor.shape))

    # -- derived nodes ---------------------------------------------------------------------
    def with_tensor(self, tensor: Any) -> Node:
        """Same legs, name and tags around a new tensor of the same number of dimensions."""
        return Node(tensor, self._legs, self._name, self._tags)

    def with_name(self, name: str | None) -> Node:
        """Same tensor and legs under another name."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Node name must be a str or None, got {type(name).__name__}")
        return Node._trusted(self._tensor, self._legs, name, self._tags)

    def with_tags(self, tags: Iterable[str]) -> Node:
        """Same tensor and legs with another set of tags."""
        return Node._trusted(self._tensor, self._legs, self._name, _check_tags(tags, "with_tags"))

    def rename(self, mapping: Mapping[str, str]) -> Node:
        """Rename legs; legs missing from ``mapping`` keep their names.

        Raises ValueError for a key that is not a leg, or when the result repeats a name.
        """
        for old in mapping:
            if old not in self._legs:
                raise ValueError(
                    f"cannot rename leg {old!r}: {self.describe()} has legs {self._legs}"
                )
        legs = tuple(mapping.get(leg, leg) for leg in self._legs)
        return Node(self._tensor, legs, self._name, self._tags)

    def transpose(self, legs: Sequence[str]) -> Node:
        """Reorder the dimensions so that the legs come in the order given."""
        legs = tuple(legs)
        if sorted(legs) != sorted(self._legs):
            raise ValueError(
                f"transpose of {self.describe()} needs a permutation of its legs {self._legs}, "
                f"got {legs}"
            )
        if legs == self._legs:
            return self
        perm = [self._legs.index(leg) for leg in legs]
        return Node._trusted(self._tensor.permute(perm), legs, self._name, self._tags)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Node:
        """Move and/or cast the tensor (``torch.Tensor.to`` semantics)."""
        tensor = self._tensor.to(device=device, dtype=dtype)
        if tensor is self._tensor:
            return self
        return Node._trusted(tensor, self._legs, self._name, self._tags)

    def conj(self) -> Node:
        """Complex conjugate (a no-op view for real tensors)."""
        return Node._trusted(self._tensor.conj(), self._legs, self._name, self._tags)

    def detach(self) -> Node:
        """The same node with the tensor detached from autograd."""
        return Node._trusted(self._tensor.detach(), self._legs, self._name, self._tags)

    def matricize(self, row_legs: Sequence[str]) -> torch.Tensor:
        """The tensor as a matrix with ``row_legs`` (in that order) as rows, the rest as columns."""
        row_legs = tuple(row_legs)
        for leg in row_legs:
            self.axis(leg)
        col_legs = tuple(leg for leg in self._legs if leg not in row_legs)
        t = self.transpose(row_legs + col_legs).tensor
        rows = int(np.prod([self.dim(leg) for leg in row_legs], dtype=np.int64))
        cols = int(np.prod([self.dim(leg) for leg in col_legs], dtype=np.int64))
        return t.reshape(rows, cols)

    def describe(self) -> str:
        """``node 'A'`` (or ``node`` when unnamed), for messages.

        Examples
        --------
        >>> import torch
        >>> Node(torch.ones(2), ("i",), name="A").describe()
        "node 'A'"
        """
        return f"node {self._name!r}" if self._name is not None else "node"

    _describe = describe  # the former private name, for callers on other branches

    def __repr__(self) -> str:
        """``Node('A', [i=2, j=3], float32)``: name, legs and dims, dtype (device, tags)."""
        dims = ", ".join(f"{leg}={d}" for leg, d in zip(self._legs, self._tensor.shape))
        extra = f", tags={sorted(self._tags)}" if self._tags else ""
        dt = str(self._tensor.dtype).replace("torch.", "")
        dev = "" if self._tensor.device.type == "cpu" else f", device={self._tensor.device}"
        return f"Node({self._name!r}, [{dims}], {dt}{dev}{extra})"
