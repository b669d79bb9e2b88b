"""GaripovNet (Garipov et al. 2016; used by Schuurmans, Batselier, Kooij, ICLR 2023)."""

from collections import OrderedDict

import torch
from torch import nn

WIDTHS = (64, 64, 128, 128, 128, 128)


class GaripovNet(nn.Module):
    """Six 3x3 conv + BN + ReLU layers, max-pool(3, 2) after conv2 and conv4, avg-pool(4), linear.

    On 32x32 (CIFAR) and 28x28 (MNIST) inputs the pools bring the map to 7x7 / 6x6 and the unpadded
    avg-pool(4) to 1x1, so the classifier is linear 128 -> num_classes as in the paper.
    Deviations for other sizes (documented, not in the paper): a max-pool is skipped when the map
    is smaller than its 3x3 kernel, and the final pool becomes a global average when avg-pool(4)
    would not give exactly 1x1 (maps smaller than 4 or at least 8 on a side).

    Parameters
    ----------
    in_channels, num_classes, image_size
        Input channels, output classes and the (square) input side length.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        size = image_size
        layers: list[tuple[str, nn.Module]] = []
        previous = in_channels
        for i, width in enumerate(WIDTHS, start=1):
            layers += [
                (f"conv{i}", nn.Conv2d(previous, width, 3, padding=1, bias=False)),
                (f"bn{i}", nn.BatchNorm2d(width)),
                (f"relu{i}", nn.ReLU(inplace=True)),
            ]
            if i in (2, 4) and size >= 3:
                layers.append((f"pool{i}", nn.MaxPool2d(3, 2)))
                size = (size - 3) // 2 + 1
            previous = width
        if 4 <= size < 8:
            layers.append(("avgpool", nn.AvgPool2d(4)))
        else:
            layers.append(("avgpool", nn.AdaptiveAvgPool2d(1)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.fc = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))
