"""Reference CNNs for the studies, all built as ``build_model(name, in_channels, num_classes,
image_size, **kw)`` and all running on inputs from 8x8 (digits) to 32x32 (CIFAR)."""

from collections.abc import Callable

from torch import nn

from .garipov import GaripovNet
from .hybrid import HybridCNN
from .resnet import ResNet, resnet18, resnet20, resnet50
from .vanilla import VanillaCNN
from .vgg import VGG16

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vanilla_cnn": VanillaCNN,
    "garipov": GaripovNet,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16": VGG16,
    "hybrid_cnn": HybridCNN,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(
    name: str, in_channels: int, num_classes: int, image_size: int, **kw: object
) -> nn.Module:
    """Build a reference model by name.

    Parameters
    ----------
    name
        One of ``MODEL_NAMES``.
    in_channels, num_classes, image_size
        Input channels, output classes and the (square) input side length.
    **kw
        Model-specific options, e.g. ``widths`` for ``vanilla_cnn``.

    Returns
    -------
    nn.Module
        A freshly initialised model (deterministic given ``torch.manual_seed``).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if image_size < 1 or in_channels < 1 or num_classes < 1:
        raise ValueError("in_channels, num_classes and image_size must be positive")
    return _BUILDERS[name](in_channels, num_classes, image_size, **kw)


__all__ = [
    "MODEL_NAMES",
    "GaripovNet",
    "HybridCNN",
    "ResNet",
    "VGG16",
    "VanillaCNN",
    "build_model",
]
