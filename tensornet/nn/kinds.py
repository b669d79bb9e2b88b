"""The layer kinds compression knows: per torch layer type, its compressed class and conversions.

One :class:`LayerKind` per supported torch layer (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``,
``nn.Conv3d``, ``nn.ConvTranspose2d``): its compressed class, how to build that from a trained
module (``from_module``) and back (``to_module``), its record in a saved file (``name`` and the
argument fields), and why an instance cannot be compressed (``unsupported``). ``compress``,
``save``/``load``, ``to_standard``, ``select_layers`` and ``allocate`` dispatch on
:func:`kind_of` / :func:`kind_named` instead of chains of ``isinstance``; a new kind is one
:func:`register_kind` call.

Examples
--------
>>> from torch import nn
>>> kind_of(nn.Conv1d(2, 4, 3)).name, kind_of(nn.ConvTranspose2d(2, 4, 3)).tn_type.__name__
('conv1d', 'TNConvTranspose2d')
>>> kind_of(nn.ReLU()) is None, [k.name for k in kinds()]
(True, ['linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose2d'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..weights import KERNEL_LEGS
from .conv_transpose import TRANSPOSED_LEGS, TNConvTranspose2d
from .convnd import TNConv1d, TNConv3d
from .layers import TNConv2d, TNLayer, TNLinear

__all__ = [
    "LayerKind",
    "kind_named",
    "kind_of",
    "kinds",
    "layer_kind_of",
    "record_args",
    "register_kind",
    "unsupported_reason",
]

_CONV_FIELDS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "padding_mode",
    "bias",
)
_LINEAR_FIELDS = ("in_features", "out_features", "bias")


def _only_ungrouped(module: nn.Module) -> str | None:
    groups = getattr(module, "groups", 1)
    return None if groups == 1 else f"groups={groups} is not supported (only groups=1)"


@dataclass(frozen=True)
class LayerKind:
    """One supported torch layer type and everything compression does with it.

    Attributes
    ----------
    name
        The ``"kind"`` of its record in a saved file (``"conv2d"``, ``"linear"``, ...).
    torch_type, tn_type
        The torch layer and its compressed class.
    family
        ``"conv"`` or ``"linear"``: the key of a ``compress`` format mapping that covers it.
    legs
        The kernel's leg names (torch's layout).
    fields
        The layer arguments its record holds (lists for tuples), as ``tn_type`` takes them.
    from_module
        ``(module, format, trunc=, ranks=, fraction=, plan=, **options) -> tn layer``.
    to_module
        ``tn layer -> torch layer`` with the rebuilt kernel.
    unsupported
        ``module -> why it cannot be compressed`` (``None``: it can).
    defaults
        Fields a record may lack (written before they existed) and their values.
    """

    name: str
    torch_type: type
    tn_type: type
    family: str
    legs: tuple[str, ...]
    fields: tuple[str, ...]
    from_module: Callable[..., TNLayer]
    to_module: Callable[[TNLayer], nn.Module]
    unsupported: Callable[[nn.Module], str | None] = _only_ungrouped
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial kernel legs (0 for a linear layer)."""
        return len(self.legs) - 2

    def kernel_shape(self, args: dict[str, Any]) -> list[int]:
        """The kernel shape a record's arguments give (torch's layout)."""
        if self.family == "linear":
            return [args["out_features"], args["in_features"]]
        channels = [args["out_channels"], args["in_channels"] // args.get("groups", 1)]
        if self.legs[0] == "in":
            channels.reverse()
        return [*channels, *args["kernel_size"]]

    def build(self, args: dict[str, Any], cls: type | None = None, **kw: Any) -> TNLayer:
        """The compressed layer (``cls``: a subclass of ``tn_type``) from record arguments."""
        plain = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        return (cls or self.tn_type)(**plain, **kw)


_KINDS: dict[str, LayerKind] = {}


def register_kind(kind: LayerKind, replace: bool = False) -> LayerKind:
    """Add a layer kind (ValueError if its name or torch type is taken, unless ``replace``).

    Examples
    --------
    >>> register_kind(kind_named("linear"))
    Traceback (most recent call last):
    ...
    ValueError: register_kind: a kind 'linear' is already registered
    """
    if not isinstance(kind, LayerKind):
        raise TypeError(f"register_kind: expected a LayerKind, got {type(kind).__name__}")
    taken = [k for k in _KINDS.values() if kind.name == k.name or kind.torch_type is k.torch_type]
    if taken and not replace:
        raise ValueError(f"register_kind: a kind {taken[0].name!r} is already registered")
    for k in taken:
        del _KINDS[k.name]
    _KINDS[kind.name] = kind
    return kind


def kinds() -> tuple[LayerKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def kind_named(name: Any) -> LayerKind:
    """The kind of a record's ``"kind"`` (ValueError listing the known ones)."""
    if isinstance(name, str) and name in _KINDS:
        return _KINDS[name]
    raise ValueError(f"field 'kind' must be one of {list(_KINDS)}, got {name!r}")


def _by_type(module: Any, attr: str) -> LayerKind | None:
    """The kind whose ``attr`` class is nearest in ``module``'s class hierarchy."""
    table = {getattr(k, attr): k for k in _KINDS.values()}
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls]
    return None


def kind_of(module: nn.Module) -> LayerKind | None:
    """The kind of a torch layer (subclasses included; ``None`` for other modules)."""
    return _by_type(module, "torch_type")


def layer_kind_of(layer: nn.Module) -> LayerKind | None:
    """The kind of a compressed layer (``None`` for other modules)."""
    return _by_type(layer, "tn_type")


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be compressed (``None`` if it can).

    Examples
    --------
    >>> from torch import nn
    >>> unsupported_reason(nn.ConvTranspose3d(2, 2, 3)).split(";")[0]
    'ConvTranspose3d is not supported (no compressed layer'
    >>> unsupported_reason(nn.Conv1d(4, 4, 3, groups=2))
    'groups=2 is not supported (only groups=1)'
    """
    kind = kind_of(module)
    if kind is not None:
        return kind.unsupported(module)
    if not isinstance(module, nn.modules.conv._ConvNd):
        return f"{type(module).__name__} is not a conv or linear layer"
    known = ", ".join(k.torch_type.__name__ for k in _KINDS.values())
    return f"{type(module).__name__} is not supported (no compressed layer; supported: {known})"


def _tuple(value: Any, n: int) -> list[int]:
    return [value] * n if isinstance(value, int) else list(value)


def record_args(module: nn.Module, kind: LayerKind) -> dict[str, Any]:
    """The JSON form of a layer's arguments (torch and compressed layers alike).

    Examples
    --------
    >>> from torch import nn
    >>> record_args(nn.Conv1d(2, 4, 3, padding=1), kind_named("conv1d"))["padding"]
    [1]
    """
    if kind.family == "linear":
        return {
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    n = kind.spatial_dims
    out: dict[str, Any] = {}
    for key in kind.fields:
        value = getattr(module, key) if key != "bias" else module.bias is not None
        if key in ("kernel_size", "stride", "dilation", "output_padding") or (
            key == "padding" and not isinstance(value, str)
        ):
            value = _tuple(value, n)
        out[key] = value
    return out


def _from_conv(cls: type) -> Callable[..., TNLayer]:
    return cls.from_conv


register_kind(
    LayerKind(
        "linear",
        nn.Linear,
        TNLinear,
        "linear",
        KERNEL_LEGS[2],
        _LINEAR_FIELDS,
        TNLinear.from_linear,
        TNLinear.to_linear,
        lambda module: None,
    )
)
_GROUPED_FIELDS = (*_CONV_FIELDS[:6], "groups", *_CONV_FIELDS[6:])
for _name, _torch, _tn, _legs, _fields in (
    ("conv1d", nn.Conv1d, TNConv1d, KERNEL_LEGS[3], _CONV_FIELDS),
    ("conv2d", nn.Conv2d, TNConv2d, KERNEL_LEGS[4], _GROUPED_FIELDS),
    ("conv3d", nn.Conv3d, TNConv3d, KERNEL_LEGS[5], _CONV_FIELDS),
    (
        "conv_transpose2d",
        nn.ConvTranspose2d,
        TNConvTranspose2d,
        TRANSPOSED_LEGS,
        (*_CONV_FIELDS[:4], "output_padding", *_CONV_FIELDS[4:]),
    ),
):
    # a kind recording groups takes any (grouped and depthwise Conv2d: .grouped_plans); files
    # written before the field existed are ungrouped
    _grouped = "groups" in _fields
    register_kind(
        LayerKind(
            _name, _torch, _tn, "conv", _legs, _fields, _from_conv(_tn), _tn.to_conv,
            (lambda module: None) if _grouped else _only_ungrouped,
            {"groups": 1} if _grouped else {},
        )
    )  # fmt: skip
