"""Saving and loading compressed models: safetensors tensors plus a JSON description per layer.

:func:`save` writes the model's ``state_dict`` with safetensors (atomically) and, in the file's
metadata under ``"tensornet"``, one small JSON record per compressed layer: its kind, the
format's :class:`~tensornet.formats.Structure` and the layer's convolution arguments. :func:`load`
takes the *uncompressed* architecture (a freshly built model), puts compressed layers where the
record says, and loads the tensors strictly. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..formats import Structure
from ..io import atomic_path
from .layers import TNConv2d, TNLayer, TNLinear

__all__ = ["describe", "load", "save"]

_KEY = "tensornet"
_VERSION = 1


def describe(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The JSON-ready record of every compressed layer of ``model`` (by module name)."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, TNConv2d):
            padding = m.padding if isinstance(m.padding, str) else list(_pair(m.padding))
            out[name] = {
                "kind": "conv2d",
                "structure": m.structure.to_dict(),
                "in_channels": m.in_channels,
                "out_channels": m.out_channels,
                "kernel_size": list(m.kernel_size),
                "stride": list(m.stride),
                "padding": padding,
                "dilation": list(m.dilation),
                "padding_mode": m.padding_mode,
                "bias": m.bias is not None,
                "plan": m.plan,
            }
        elif isinstance(m, TNLinear):
            out[name] = {
                "kind": "linear",
                "structure": m.structure.to_dict(),
                "in_features": m.in_features,
                "out_features": m.out_features,
                "bias": m.bias is not None,
                "plan": m.plan,
            }
    return out


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None):
    """Write ``model`` (compressed or not) to ``path`` as safetensors with layer records.

    ``metadata`` (JSON-serialisable) is stored too and returned by :func:`load`.
    """
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {_KEY: json.dumps({"version": _VERSION, "layers": describe(model)})}
    if metadata:
        meta["user"] = json.dumps(metadata, default=str)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _build(record: dict[str, Any], what: str) -> TNLayer:
    try:
        structure = Structure.from_dict(record["structure"])
        if record["kind"] == "conv2d":
            padding = record["padding"]
            return TNConv2d(
                record["in_channels"],
                record["out_channels"],
                tuple(record["kernel_size"]),
                tuple(record["stride"]),
                padding if isinstance(padding, str) else tuple(padding),
                tuple(record["dilation"]),
                1,
                record["bias"],
                record["padding_mode"],
                plan=record.get("plan", "auto"),
                _structure=structure,
            )
        if record["kind"] == "linear":
            return TNLinear(
                record["in_features"],
                record["out_features"],
                record["bias"],
                plan=record.get("plan", "auto"),
                _structure=structure,
            )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{what}: malformed layer record ({err})") from None
    raise ValueError(f"{what}: unknown layer kind {record.get('kind')!r}")


def load(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a file written by :func:`save` into ``model`` (the uncompressed architecture).

    The compressed layers the file records replace the modules of the same names, then every
    tensor is loaded strictly (names and shapes must match). Returns the user metadata.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> from torch import nn
    >>> from tensornet.nn import compress
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    >>> small, _ = compress(net, "tt", fraction=0.5)
    >>> path = os.path.join(tempfile.mkdtemp(), "small.safetensors")
    >>> save(small, path)
    >>> fresh = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3))
    >>> _ = load(fresh, path)
    >>> x = torch.randn(1, 3, 9, 9)
    >>> bool(torch.equal(fresh(x), small(x)))
    True
    """
    what = f"load({os.fspath(path)!r})"
    with safe_open(os.fspath(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        record = json.loads(meta.get(_KEY, '{"layers": {}}'))
        user = json.loads(meta["user"]) if "user" in meta else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: the tensornet metadata is not valid JSON ({err})") from None
    layers = {
        name: _build(rec, f"{what}: layer {name!r}")
        for name, rec in record.get("layers", {}).items()
    }
    for name in layers:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{what}: the model has no module {name!r}") from None
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    state = load_file(os.fspath(path), device=str(device))
    for name, layer in layers.items():
        first = f"{name}.factors.{layer.structure.factors[0].name}"
        dtype = state[first].dtype if first in state else None
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.to(device=device, dtype=dtype))
    model.load_state_dict(state, strict=True)
    return user
