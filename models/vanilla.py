"""The plain four-layer CNN of the truncation study (Singh, Jahromi, Orus 2024)."""

from collections.abc import Sequence

import torch
from torch import nn


class VanillaCNN(nn.Module):
    """Four 3x3 conv + ReLU layers, a 2x2 max-pool after conv2 and conv4, one linear classifier.

    A pool is skipped when the feature map is already smaller than 2x2, so the network runs on
    anything from 1x1 up.

    Parameters
    ----------
    in_channels, num_classes, image_size
        Input channels, output classes and the (square) input side length.
    widths
        Output channels of conv1..conv4.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        widths: Sequence[int] = (32, 32, 64, 64),
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"vanilla_cnn needs 4 widths, got {tuple(widths)}")
        w1, w2, w3, w4 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1)
        self.conv2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.conv3 = nn.Conv2d(w2, w3, 3, padding=1)
        self.conv4 = nn.Conv2d(w3, w4, 3, padding=1)
        self.pool2 = image_size >= 2
        size = image_size // 2 if self.pool2 else image_size
        self.pool4 = size >= 2
        size = size // 2 if self.pool4 else size
        self.fc = nn.Linear(w4 * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        if self.pool2:
            x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        if self.pool4:
            x = nn.functional.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))
