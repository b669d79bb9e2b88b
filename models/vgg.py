"""CIFAR-style VGG-16: 13 conv + BN + ReLU layers and a small classifier."""

from collections import OrderedDict

import torch
from torch import nn

# Channel counts of the 13 convolutions; "M" is a 2x2 max-pool.
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 for small images: ``features.conv1..conv13`` then ``classifier`` (512-512-classes).

    A max-pool that would shrink the map below 1x1 is skipped, and a global average pool before
    the classifier makes the head independent of the input size (identity on CIFAR's 1x1 map).

    Parameters
    ----------
    in_channels, num_classes, image_size
        Input channels, output classes and the (square) input side length.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        previous, size, conv, pool = in_channels, image_size, 0, 0
        for item in CONFIG:
            if item == "M":
                pool += 1
                if size >= 2:
                    layers.append((f"pool{pool}", nn.MaxPool2d(2)))
                    size //= 2
                continue
            conv += 1
            layers += [
                (f"conv{conv}", nn.Conv2d(previous, int(item), 3, padding=1, bias=False)),
                (f"bn{conv}", nn.BatchNorm2d(int(item))),
                (f"relu{conv}", nn.ReLU(inplace=True)),
            ]
            previous = int(item)
        layers.append(("avgpool", nn.AdaptiveAvgPool2d(1)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Sequential(
            nn.Linear(previous, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
