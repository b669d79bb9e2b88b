"""Reading checkpoints for the command line, never unpickling objects.

:func:`load_state_dict` reads a state_dict (safetensors, or ``torch.save`` loaded with
``weights_only=True``). :func:`load_kernels` reads the same files, and a file written by
:func:`tensornet.nn.save` as the kernels of its layers: each compressed layer's format is
rebuilt from the ``tensornet`` records of the file's metadata and its factor tensors (no layer
module is built), so that its spectra come from its network and its factors are never taken
for layers. Problems the user can fix raise :class:`CLIError`, naming the file.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import re
import stat
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when a file is read, not for --help
    import torch

    from .formats import Format, Structure

__all__ = ["CLIError", "load_kernels", "load_state_dict"]

NESTED_KEYS = ("state_dict", "model_state_dict")
#: The safetensors metadata key of :func:`tensornet.nn.save`'s layer records.
RECORDS_KEY = "tensornet"

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class CLIError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


# -- loading ---------------------------------------------------------------------------------
def _looks_like_safetensors(path: Path) -> bool:
    """Whether ``path`` looks like safetensors: an 8-byte little-endian length, then JSON."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1


def _natural_key(name: str) -> list[Any]:
    """Sort key reading digit runs as numbers: ``layer2`` before ``layer10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors in their saved order, else in natural order of their names; the metadata.

    safetensors stores tensors sorted by dtype and name; a writer that keeps the order puts it
    in the metadata as ``order`` (a JSON list of the names, as the studies' checkpoints do).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            meta = f.metadata() or {}
            try:
                order = json.loads(meta.get("order", "null"))
            except ValueError:
                order = None
            if not (isinstance(order, list) and sorted(map(str, order)) == sorted(names)):
                order = sorted(names, key=_natural_key)
            return {name: f.get_tensor(name) for name in order}, meta
    except SafetensorError as e:
        raise CLIError(f"cannot read {path} as safetensors: {e}") from None


def _pickled_globals(path: Path) -> list[str]:
    """The globals (``module.name``) a plain pickle file names, read without unpickling."""
    found: list[str] = []
    strings: list[str] = []
    try:
        with path.open("rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not (or no longer) a pickle: what was read so far is the answer
        pass
    return found


def _load_torch(path: Path) -> object:
    import torch

    try:
        with warnings.catch_warnings():  # e.g. torch's pickle-protocol warning: one line only
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # A global the restricted unpickler refused is a pickled Python object (a class or a
        # function the file would call), not damage: name it. torch reads only its own format,
        # so for a plain pickle the globals are listed from its opcodes, without unpickling.
        named = re.findall(r"GLOBAL ([\w.]+)", f"{e} {e.__context__}") or [
            g for g in _pickled_globals(path) if not g.startswith(("torch.", "collections."))
        ]
        if named:
            raise CLIError(
                f"{path} contains pickled Python objects ({named[0]}); refusing to unpickle an "
                "untrusted file (only tensors and plain containers are read)"
            ) from None
        raise CLIError(f"cannot read {path}: not a PyTorch checkpoint (corrupt file?)") from None
    except (RuntimeError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CLIError(f"cannot read {path}: not a PyTorch checkpoint ({reason})") from None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a safetensors or ``torch.save`` file, never unpickling objects.

    A checkpoint holding the weights under ``"state_dict"`` or ``"model_state_dict"`` (Lightning,
    training loops) is unwrapped; values that are not tensors are dropped.

    Raises
    ------
    CLIError
        The file is missing, unreadable, holds pickled objects, or is not a mapping of tensors.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.pt")
    >>> torch.save({"epoch": 3, "state_dict": {"fc.weight": torch.ones(2, 3)}}, path)
    >>> {k: tuple(v.shape) for k, v in load_state_dict(path).items()}
    {'fc.weight': (2, 3)}
    """
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors (see :func:`load_state_dict`) and its safetensors metadata (or {})."""
    import torch

    if not path.exists():
        raise CLIError(f"no such file: {path}")
    if not path.is_file():  # reading a FIFO would block forever, a device never end
        mode = path.stat().st_mode
        kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
        raise CLIError(f"{path} is {kind}, not a checkpoint file; refused")
    meta: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors" or _looks_like_safetensors(path):
            obj, meta = _load_safetensors(path)
        else:
            obj = _load_torch(path)
    except OSError as e:  # a folder, no permission, ...
        raise CLIError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(obj, Mapping):
        raise CLIError(f"{path} holds a {type(obj).__name__}, not a state_dict (names -> tensors)")
    for key in NESTED_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CLIError(f"{path} holds no tensors; expected a state_dict (names -> tensors)")
    return state, meta


# -- compressed checkpoints ------------------------------------------------------------------
def load_kernels(path: str | Path) -> dict[str, torch.Tensor | Format]:
    """The tensors of a checkpoint, each compressed layer's factors as one kernel Format.

    Any file :func:`load_state_dict` reads; in a file written by :func:`tensornet.nn.save`,
    the factors of every compressed layer (tied names included) are replaced by its kernel,
    the :class:`~tensornet.formats.Format` of its record's structure, under
    ``"<layer>.weight"``: the name the layer's dense weight would have (a tied layer's bias is
    repeated at each of its names, as in its ``state_dict``). Other tensors (dense layers,
    biases, norms) are kept. Names come in natural order (``layer2`` before
    ``layer10``). No module is built and nothing is unpickled.

    Raises
    ------
    CLIError
        As :func:`load_state_dict`; and, naming the file and the layer, when its records cannot
        be interpreted (an unknown version, kind or format, a bad field) or a compressed
        layer's factors are missing, of the wrong shape, not finite, or joined by tensors the
        layer does not have.

    Examples
    --------
    >>> import tempfile, os
    >>> from torch import nn
    >>> import tensornet.nn as tnn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    >>> net[0] = tnn.TNConv2d.from_conv(net[0], "tucker2", ranks=(4, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "small.safetensors")
    >>> tnn.save(net, path)
    >>> {name: getattr(w, "ranks", tuple(w.shape)) for name, w in load_kernels(path).items()}
    {'0.bias': (8,), '0.weight': (4, 2), '2.bias': (2,), '2.weight': (2, 8)}
    """
    path = Path(path)
    state, meta = _read(path)
    if RECORDS_KEY not in meta:
        return state
    from .nn.serialize import read_structures

    try:
        structures, aliases = read_structures(path)
    except ValueError as e:
        raise CLIError(f"cannot interpret the compressed layers of {e}") from None
    kernels = _kernels(path, state, structures)
    kernels.update({alias: kernels[target] for alias, target in aliases.items()})
    kept = {}
    for key, value in state.items():
        layer = next((name for name in kernels if key.startswith(f"{name}.")), None)
        if layer is None or key == f"{layer}.bias" and layer not in aliases:
            kept[key] = value
        elif layer in aliases or not key.startswith(f"{layer}.factors."):
            raise CLIError(
                f"{path}: tensor {key!r} is not one the compressed layer {layer!r} holds"
                + (f" (it shares the factors of {aliases[layer]!r})" if layer in aliases else "")
            )
    for alias, target in aliases.items():  # a tied layer's bias, as its state_dict has it
        if f"{target}.bias" in kept:
            kept[f"{alias}.bias"] = kept[f"{target}.bias"]
    merged = {**kept, **{f"{name}.weight": fmt for name, fmt in kernels.items()}}
    return {k: merged[k] for k in sorted(merged, key=_natural_key)}


def _kernels(
    path: Path, state: Mapping[str, torch.Tensor], structures: Mapping[str, Structure]
) -> dict[str, Format]:
    """Each recorded layer's Format, from its structure and its factor tensors in ``state``."""
    from .core.validate import check_finite
    from .formats import get_format

    kernels: dict[str, Format] = {}
    for name, structure in structures.items():
        prefix = f"{name}.factors."
        factors = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            for k, v in factors.items():
                check_finite(v, f"tensor {prefix + k!r}")
            kernels[name] = get_format(structure.format).from_factors(structure, factors)
        except (ValueError, TypeError) as e:
            raise CLIError(f"{path}: compressed layer {name!r}: {e}") from None
    return kernels
