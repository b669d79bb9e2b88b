"""Saving and loading compressed models: safetensors tensors plus a JSON description per layer.

:func:`save` writes the model's ``state_dict`` with safetensors (atomically) and, in the file's
metadata under ``"tensornet"``, ``{"version": 1, "layers": {name: record}}``: one JSON record per
compressed layer (its kind, the format's :class:`~tensornet.formats.Structure` and the layer's
convolution or linear arguments). A compressed layer that sits at several names (tied weights)
is stored once: its other names get the record ``{"same_as": first_name}`` and no tensors.
Optional user metadata (a JSON object) is stored under ``"user"``.

:func:`load` takes the *uncompressed* architecture (a freshly built model), puts compressed
layers where the records say and loads every tensor. It never unpickles anything and is atomic:

1. it reads only the safetensors header (names, shapes and dtypes of the tensors, no data) and
   checks every record field by field (types, the version, channels and kernel arguments against
   the module it replaces, the structure of the format) and refuses unknown fields;
2. it builds the new layers on the ``meta`` device (no memory) and compares every tensor the
   model would then hold, name by name and shape by shape, with the header: a record whose ranks
   were edited is refused here, before a single factor is allocated;
3. only then it reads the tensors, builds the layers for real and swaps them all in at once. If
   anything fails, the model is left exactly as it was (same modules, bitwise the same tensors).

:func:`read_structures` reads the records without a model (the header only, checked as far as
they can be without one): what ``tensornet spectra`` needs to rebuild each compressed layer's
format from its factors.

Dtypes: every tensor takes the dtype of the tensor it lands in; a new layer takes the dtype and
device of the module it replaces (its weight's, or its first factor's). Floating-point tensors
are cast (exact when widening: a float32 file loads exactly into a float64 model); any other
mismatch (integer, bool or complex against another dtype) is refused. The loaded layers are new
modules: an optimizer built before :func:`load` does not see them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..formats import Structure
from ..io import atomic_path
from ..weights import replace_module
from .kinds import LayerKind, kind_named, layer_kind_of, record_args
from .layers import TNLayer

__all__ = ["describe", "load", "read_structures", "save"]

_KEY = "tensornet"
_USER = "user"
_VERSION = 1
_ALIAS = "same_as"
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


# -- records -----------------------------------------------------------------------------------
def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv_args(m: nn.Module) -> dict[str, Any]:
    """The JSON form of a conv layer's arguments (``nn.Conv2d`` and :class:`TNConv2d` alike)."""
    padding = m.padding if isinstance(m.padding, str) else list(_pair(m.padding))
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(_pair(m.kernel_size)),
        "stride": list(_pair(m.stride)),
        "padding": padding,
        "dilation": list(_pair(m.dilation)),
        "padding_mode": m.padding_mode,
        "bias": m.bias is not None,
        "groups": m.groups,
    }


def _linear_args(m: nn.Module) -> dict[str, Any]:
    """The JSON form of a linear layer's arguments."""
    return {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    }


def _record(m: TNLayer) -> dict[str, Any]:
    kind = layer_kind_of(m)
    args = {"kind": kind.name, **_ARGS.get(kind.name, record_args)(m, kind)}
    return {**args, "structure": m.structure.to_dict(), "plan": m.plan}


def describe(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The JSON-ready record of every compressed layer of ``model`` (by module name).

    A layer reachable under several names (tied weights) is described at its first name; the
    others get ``{"same_as": first_name}``.

    Examples
    --------
    >>> from torch import nn
    >>> from tensornet.nn import TNLinear
    >>> shared = TNLinear(6, 6, format="svd", ranks=2)
    >>> records = describe(nn.Sequential(shared, nn.ReLU(), shared))
    >>> records["0"]["kind"], records["0"]["structure"]["ranks"], records["2"]
    ('linear', [2], {'same_as': '0'})
    """
    out: dict[str, dict[str, Any]] = {}
    first: dict[int, str] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if layer_kind_of(m) is not None:
            if id(m) in first:
                out[name] = {_ALIAS: first[id(m)]}
            else:
                first[id(m)] = name
                out[name] = _record(m)
    return out


def save(model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None):
    """Write ``model`` (compressed or not) to ``path`` as safetensors with layer records.

    ``metadata`` (a JSON-serialisable dict) is stored too and returned by :func:`load`. A
    compressed layer tied at several names is written once. The write is atomic.

    Examples
    --------
    >>> import tempfile, os
    >>> from torch import nn
    >>> from tensornet.nn import TNLinear
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save(nn.Sequential(TNLinear(6, 4, format="svd", ranks=2)), path, {"epoch": 3})
    >>> load(nn.Sequential(nn.Linear(6, 4)), path)
    {'epoch': 3}
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save: metadata must be a dict or None, got {type(metadata).__name__}")
    if isinstance(model, TNLayer):
        raise ValueError("save: the model is itself a compressed layer; wrap it in nn.Sequential")
    layers = describe(model)
    aliases = tuple(f"{name}." for name, rec in layers.items() if _ALIAS in rec)
    tensors = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in model.state_dict().items()
        if not k.startswith(aliases)
    }
    meta = {_KEY: json.dumps({"version": _VERSION, "layers": layers})}
    if metadata:
        meta[_USER] = json.dumps(metadata, default=str)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


# -- checking a file ---------------------------------------------------------------------------
def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _json(text: str, what: str) -> Any:
    """Parse JSON, refusing an object that repeats a key."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"{what}: the key {k!r} appears twice")
            out[k] = v
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not valid JSON ({err})") from None


def _fields(obj: Any, required: tuple[str, ...], what: str, optional: tuple[str, ...] = ()):
    """Refuse a non-object, a missing field or an unknown field."""
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {_short(obj)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{what} lacks the field(s) {missing}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {unknown}; expected {list(required)}")


def _pos_int(v: Any) -> bool:
    return type(v) is int and v >= 1


def _ints(n: int, low: int) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return isinstance(v, list) and len(v) == n and all(type(x) is int and x >= low for x in v)

    return ok


def _padding_ok(v: Any) -> bool:
    return v in ("same", "valid") if isinstance(v, str) else _ints(2, 0)(v)


def _plan_ok(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "in_channels": (_pos_int, "a positive int"),
    "out_channels": (_pos_int, "a positive int"),
    "in_features": (_pos_int, "a positive int"),
    "out_features": (_pos_int, "a positive int"),
    "kernel_size": (_ints(2, 1), "a list of 2 positive ints"),
    "stride": (_ints(2, 1), "a list of 2 positive ints"),
    "dilation": (_ints(2, 1), "a list of 2 positive ints"),
    "padding": (_padding_ok, "'same', 'valid' or a list of 2 ints >= 0"),
    "padding_mode": (lambda v: v in _PADDING_MODES, f"one of {list(_PADDING_MODES)}"),
    "bias": (lambda v: isinstance(v, bool), "true or false"),
    "plan": (_plan_ok, "a non-empty string"),
    "groups": (_pos_int, "a positive int"),
    "format": (_plan_ok, "a non-empty string"),
    "ranks": (lambda v: isinstance(v, list) and all(map(_pos_int, v)), "a list of positive ints"),
    "options": (lambda v: isinstance(v, dict), "a JSON object"),
}
# Record arguments of the kinds that have their own writer here; others: kinds.record_args.
_ARGS: dict[str, Callable[[nn.Module, LayerKind], dict[str, Any]]] = {
    "conv2d": lambda m, kind: _conv_args(m),
    "linear": lambda m, kind: _linear_args(m),
}
_TUPLES = ("kernel_size", "stride", "dilation", "output_padding")


def _checks(kind: LayerKind) -> dict[str, tuple[Callable[[Any], bool], str]]:
    """The field checks of a kind's record (tuples as lists of its number of spatial dims)."""
    n = kind.spatial_dims
    out = dict(_CHECKS)
    if n != 2:
        for key in _TUPLES:
            low = 0 if key == "output_padding" else 1
            out[key] = (_ints(n, low), f"a list of {n} ints >= {low}")
        out["padding"] = (
            lambda v: v in ("same", "valid") if isinstance(v, str) else _ints(n, 0)(v),
            f"'same', 'valid' or a list of {n} ints >= 0",
        )
    out.setdefault("output_padding", (_ints(2, 0), "a list of 2 ints >= 0"))
    return out


def _typed(obj: dict[str, Any], keys: tuple[str, ...], what: str, checks=None) -> None:
    for key in keys:
        ok, expect = (checks or _CHECKS)[key]
        if not ok(obj[key]):
            raise ValueError(f"{what}: field {key!r} must be {expect}, got {_short(obj[key])}")


def _structure(rec: dict[str, Any], legs: tuple[str, ...], shape: list[int], what: str):
    """The record's structure, checked field by field and against the layer's shape."""
    data = rec["structure"]
    keys = ("format", "legs", "shape", "ranks", "options")
    _fields(data, keys, f"{what}: field 'structure'")
    _typed(data, ("format", "ranks", "options"), f"{what}: structure")
    if data["legs"] != list(legs) or data["shape"] != shape:
        raise ValueError(
            f"{what}: structure legs {data['legs']} and shape {data['shape']} do not match the "
            f"layer ({list(legs)}, {shape})"
        )
    try:
        return Structure.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what}: bad structure ({err})") from None


class _Shell:
    """Mixin: a layer built without its random initialisation, which the file's values replace.

    On the meta device ``normal_`` alone costs ~10 ms a factor (8x a whole load of ResNet-20).
    :func:`load` turns a shell into the plain layer (its second base) once it is filled.
    """

    def reset_parameters(self) -> None:
        """Leave the parameters as they are."""


_SHELLS: dict[type, type] = {}


def _shell(cls: type) -> type:
    """``cls`` without random initialisation (one subclass per class, made once)."""
    if cls not in _SHELLS:
        _SHELLS[cls] = type(f"_{cls.__name__}Shell", (_Shell, cls), {})
    return _SHELLS[cls]


def _checked_fields(rec: Any, what: str) -> tuple[LayerKind, dict[str, Any]]:
    """A record's kind and the record with its fields checked (missing defaults filled in)."""
    if not isinstance(rec, dict):
        raise ValueError(f"{what} must be a JSON object, got {_short(rec)}")
    try:
        kind = kind_named(rec.get("kind"))
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None
    optional = tuple(kind.defaults)
    required = ("kind", *(a for a in kind.fields if a not in optional), "structure", "plan")
    _fields(rec, required, what, optional)
    rec = {**kind.defaults, **rec}  # files written before a field existed (conv2d's groups)
    _typed(rec, (*kind.fields, "plan"), what, _checks(kind))
    return kind, rec


def _check_record(rec: Any, module: nn.Module, what: str) -> Callable[..., TNLayer]:
    """Check one record against the module it replaces; return a builder of its layer."""
    kind, rec = _checked_fields(rec, what)
    args = kind.fields
    if not isinstance(module, (kind.torch_type, kind.tn_type)):
        raise ValueError(
            f"{what}: the record is a {kind.name} layer but the model has a "
            f"{type(module).__name__} there"
        )
    if "groups" not in args and getattr(module, "groups", 1) != 1:
        raise ValueError(f"{what}: the model's layer has groups={module.groups}, the record 1")
    for key, value in _ARGS.get(kind.name, record_args)(module, kind).items():
        if rec[key] != value:
            raise ValueError(
                f"{what}: field {key!r} is {_short(rec[key])} but the model's "
                f"{type(module).__name__} has {value!r}"
            )
    structure = _structure(rec, kind.legs, kind.kernel_shape(rec), what)
    layer_args = {k: rec[k] for k in args}

    def build(**kw: Any) -> TNLayer:
        return kind.build(
            layer_args, _shell(kind.tn_type), plan=rec["plan"], _structure=structure, **kw
        )

    return build


def _header(path: str, what: str) -> tuple[dict[str, str], dict[str, tuple[tuple, str]]]:
    """The file's metadata and, per tensor, its shape and dtype name (no data is read)."""
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {}
            for k in f.keys():
                s = f.get_slice(k)
                tensors[k] = (tuple(s.get_shape()), s.get_dtype())
    except SafetensorError as err:
        raise ValueError(f"{what}: not a safetensors file ({err})") from None
    return meta, tensors


def _records(meta: dict[str, str], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked top level of the metadata: layer records and user metadata."""
    if _KEY not in meta:
        raise ValueError(f"{what}: no {_KEY!r} metadata; not a file written by tensornet.nn.save")
    unknown = sorted(set(meta) - {_KEY, _USER})
    if unknown:
        raise ValueError(f"{what}: unknown metadata field(s) {unknown}; expected {[_KEY, _USER]}")
    top = _json(meta[_KEY], f"{what}: metadata {_KEY!r}")
    _fields(top, ("version", "layers"), f"{what}: metadata {_KEY!r}")
    if type(top["version"]) is not int or top["version"] != _VERSION:
        raise ValueError(
            f"{what}: field 'version' must be {_VERSION} (this tensornet reads version "
            f"{_VERSION}), got {_short(top['version'])}"
        )
    if not isinstance(top["layers"], dict):
        raise ValueError(
            f"{what}: field 'layers' must be a JSON object, got {_short(top['layers'])}"
        )
    user = _json(meta[_USER], f"{what}: metadata {_USER!r}") if _USER in meta else {}
    if not isinstance(user, dict):
        raise ValueError(f"{what}: metadata {_USER!r} must be a JSON object, got {_short(user)}")
    return top["layers"], user


def _check_names(model: nn.Module, layers: dict[str, Any], what: str) -> dict[str, str]:
    """Check the layer names against the model; return each alias's target."""
    aliases: dict[str, str] = {}
    for name, rec in layers.items():
        if not name:
            raise ValueError(f"{what}: a layer record has the empty name (the model itself)")
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{what}: the model has no module {name!r}") from None
        outer = [n for n in layers if name.startswith(f"{n}.")]
        if outer:
            raise ValueError(f"{what}: layer {name!r} lies inside layer {outer[0]!r}")
        target = _alias_target(rec, layers, f"{what}: layer {name!r}")
        if target is not None:
            aliases[name] = target
    return aliases


def _alias_target(rec: Any, layers: dict[str, Any], what: str) -> str | None:
    """The layer a tied layer's record names (``None`` for a full record); checked."""
    if not (isinstance(rec, dict) and _ALIAS in rec):
        return None
    _fields(rec, (_ALIAS,), what)
    target = layers.get(rec[_ALIAS]) if isinstance(rec[_ALIAS], str) else None
    if not isinstance(target, dict) or _ALIAS in target:
        raise ValueError(
            f"{what}: field {_ALIAS!r} must name a layer with a full record, got "
            f"{_short(rec[_ALIAS])}"
        )
    return rec[_ALIAS]


def _home(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of a replacement for ``module`` (a conv or linear layer): its weight's."""
    t = next(module.parameters())  # a layer's weight, or a compressed layer's first factor
    return t.device, t.dtype


def _swap(model: nn.Module, new: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
    """Put ``new[name]`` at every name; return what :func:`_unswap` needs to undo it."""
    return [(name, replace_module(model, name, layer)) for name, layer in new.items()]


def _unswap(model: nn.Module, undo: list[tuple[str, nn.Module]]) -> None:
    for name, old in reversed(undo):
        replace_module(model, name, old)


def _file_key(key: str, aliases: dict[str, str]) -> str:
    for alias, target in aliases.items():
        if key.startswith(f"{alias}."):
            return target + key[len(alias) :]
    return key


def _listed(keys: Iterator[str] | set[str]) -> str:
    keys = sorted(keys)
    return ", ".join(map(repr, keys[:5])) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _compare(
    expected: dict[str, tuple[tuple, torch.dtype]],
    header: dict[str, tuple[tuple, str]],
    what: str,
) -> None:
    """Every tensor the model will hold against the file's header: names, shapes, dtypes."""
    missing = set(expected) - set(header)
    if missing:
        raise ValueError(f"{what}: the file lacks the tensor(s) {_listed(missing)}")
    extra = set(header) - set(expected)
    if extra:
        raise ValueError(f"{what}: the file has tensor(s) the model does not: {_listed(extra)}")
    for key, (shape, dtype) in expected.items():
        file_shape, file_dtype = header[key]
        if file_shape != shape:
            raise ValueError(
                f"{what}: tensor {key!r} has shape {file_shape} in the file but the model "
                f"needs {shape}"
            )
        have = _DTYPES.get(file_dtype)
        if have is None:
            raise ValueError(f"{what}: tensor {key!r} has the unsupported dtype {file_dtype}")
        if have != dtype and not (have.is_floating_point and dtype.is_floating_point):
            raise ValueError(
                f"{what}: tensor {key!r} is {have} in the file but the model holds {dtype}; "
                f"only floating-point tensors are cast"
            )


# -- loading -----------------------------------------------------------------------------------
def load(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load a file written by :func:`save` into ``model`` (the uncompressed architecture).

    The compressed layers the file records replace the modules of the same names (new modules,
    in the train/eval mode of the module they replace), then every tensor is loaded strictly.
    Everything is checked before anything is allocated or changed, and a failed load leaves the
    model as it was (see the module docstring, also for the dtype rules). Returns the user
    metadata. Raises ``ValueError`` naming the field, layer or tensor that is wrong.

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
    path = os.fspath(path)
    what = f"load({path!r})"
    meta, header = _header(path, what)
    layers, user = _records(meta, what)
    aliases = _check_names(model, layers, what)
    builders: dict[str, tuple[Callable, torch.device, torch.dtype, bool]] = {}
    for name in layers:
        module = model.get_submodule(name)
        build = _check_record(layers[aliases.get(name, name)], module, f"{what}: layer {name!r}")
        if name in aliases:
            continue
        builders[name] = (build, *_home(module), module.training)
    # the state the model would have, from layers on the meta device: no memory is used
    ghosts = {}
    for name, (build, _, dtype, _) in builders.items():
        try:
            ghosts[name] = build(device="meta", dtype=dtype)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{what}: layer {name!r}: {err}") from None
    undo = _swap(model, {**ghosts, **{a: ghosts[t] for a, t in aliases.items()}})
    try:
        expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    finally:
        _unswap(model, undo)
    by_file: dict[str, tuple[tuple, torch.dtype]] = {}
    for k, spec in expected.items():
        by_file.setdefault(_file_key(k, aliases), spec)
    _compare(by_file, header, what)
    # everything is checked: read the tensors, build the layers, then change the model at once
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in by_file}
    state = {k: tensors[_file_key(k, aliases)] for k in expected}
    new = {}
    for name, (_, device, _, training) in builders.items():
        layer = ghosts[name].to_empty(device=device).train(training)
        layer.__class__ = type(layer).__bases__[1]  # the shell becomes the plain layer
        new[name] = layer
    _commit(model, {**new, **{a: new[t] for a, t in aliases.items()}}, state)
    return user


def _commit(model: nn.Module, new: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    """Swap the new layers in and load ``state``; on any error put everything back."""
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    undo = _swap(model, new)
    try:
        model.load_state_dict(state)  # strict; the names and shapes are already checked
    except BaseException:
        _unswap(model, undo)
        for k, v in model.state_dict().items():  # detached: copying needs no no_grad
            v.copy_(backup[k])
        raise


# -- reading without a model -------------------------------------------------------------------
def _record_structure(rec: Any, what: str) -> Structure:
    """A full record's structure, checked on its own (kind, fields, types, shape; no module)."""
    kind, rec = _checked_fields(rec, what)
    return _structure(rec, kind.legs, kind.kernel_shape(rec), what)


def read_structures(path: str | os.PathLike) -> tuple[dict[str, Structure], dict[str, str]]:
    """The structure of every compressed layer a :func:`save` file records, without a model.

    Reads the safetensors header only (no tensor data) and checks every record as :func:`load`
    does, short of comparing it with a model. Returns the structures by layer name and the
    aliases (a tied layer's name -> the name whose record and factors it shares). Each layer's
    factors are the tensors ``f"{name}.factors.{factor.name}"`` for ``structure.factors``.
    Raises ``ValueError`` naming the file and the field or layer that cannot be read (no
    ``tensornet`` metadata, an unknown version, kind or format, a bad field).

    Examples
    --------
    >>> import tempfile, os
    >>> from torch import nn
    >>> from tensornet.nn import TNLinear
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> shared = TNLinear(6, 6, format="svd", ranks=2)
    >>> save(nn.Sequential(shared, nn.ReLU(), shared), path)
    >>> structures, aliases = read_structures(path)
    >>> structures["0"].format, structures["0"].ranks, aliases
    ('svd', (2,), {'2': '0'})
    """
    what = os.fspath(path)
    meta, _ = _header(what, what)
    layers, _ = _records(meta, what)
    structures: dict[str, Structure] = {}
    aliases: dict[str, str] = {}
    for name, rec in layers.items():
        here = f"{what}: layer {name!r}"
        target = _alias_target(rec, layers, here)
        if target is not None:
            aliases[name] = target
        else:
            structures[name] = _record_structure(rec, here)
    return structures, aliases
