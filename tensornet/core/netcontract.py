"""What :meth:`TensorNetwork.contract` needs besides planning: the output check and a memo.

- :func:`output_legs`: the requested order of the open legs, checked against the network.
- A per-network memo of compiled programs: everything that depends only on a network's structure
  and the arguments of ``contract`` is kept on the network, so a repeated call checks dtypes and
  devices (a tensor may change them in place, as ``module.to`` does) and that the contraction
  cache was not cleared since, then runs the program. The memo is a plain dict owned by the
  network; these functions read and fill it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

from . import contract as _contract
from .contract import short_legs

__all__ = ["cast", "memo_key", "output_legs", "remember", "run_memoized"]


def output_legs(
    open_legs: tuple[str, ...],
    owners: Mapping[str, Sequence[str]],
    output: Sequence[str] | str | None,
) -> tuple[str, ...]:
    """``output`` as a tuple: every open leg once (default: ``open_legs``), ValueError if not."""
    if output is None:
        return open_legs
    if isinstance(output, str):
        output = (output,)
    output = tuple(output)
    if output == open_legs:
        return output
    for leg in output:
        if leg not in owners:
            raise ValueError(f"output leg {leg!r} is not a leg of this network")
        if len(owners[leg]) != 1:
            raise ValueError(
                f"output leg {leg!r} is a bond between nodes {tuple(owners[leg])}, not an open leg"
            )
    if len(set(output)) != len(output):
        raise ValueError(f"output repeats a leg: {short_legs(output)}")
    missing = [leg for leg in open_legs if leg not in output]
    if missing:
        raise ValueError(f"output must list every open leg; missing {short_legs(missing)}")
    return output


def memo_key(*arguments: Any) -> tuple | None:
    """The memo key of ``contract``'s arguments (with the global size limit), None if unhashable."""
    key = (*arguments, _contract.limit_state())
    try:
        hash(key)
    except TypeError:  # an unhashable argument (a list): no memo
        return None
    return key


def cast(tensors: Sequence[torch.Tensor], dtype: torch.dtype, needed: bool) -> Sequence:
    """``tensors`` promoted to ``dtype`` where they differ (unchanged unless ``needed``)."""
    if not needed:
        return tensors
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


def run_memoized(
    memo: Mapping[Hashable, tuple], key: tuple | None, tensors: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, tuple[str, ...]] | None:
    """``(result, output legs)`` from the memo's program, or None when it cannot serve."""
    hit = None if key is None else memo.get(key)
    if hit is None or hit[0] != _contract.cache_generation():
        return None
    _, program, out, dtype, device, dtypes, needed = hit
    for t, t_dtype in zip(tensors, dtypes):
        if t.dtype is not t_dtype or t.device != device:
            return None  # a tensor changed dtype/device in place (module.to): plan again
    _contract.count_hit()
    return program(*cast(tensors, dtype, needed)), out


def remember(
    memo: dict,
    key: tuple | None,
    program: Any,
    out: tuple[str, ...],
    dtype: torch.dtype,
    device: torch.device,
    tensors: Sequence[torch.Tensor],
) -> bool:
    """Keep ``program`` for ``key`` (if any); returns whether the tensors need a cast."""
    needed = any(t.dtype != dtype for t in tensors)
    if key is not None:
        dtypes = tuple(t.dtype for t in tensors)
        memo[key] = (_contract.cache_generation(), program, out, dtype, device, dtypes, needed)
    return needed
