"""A small CNN with a hidden fully connected layer: the base model of the hybrid TT/HT study."""

from collections.abc import Sequence

import torch
from torch import nn


class HybridCNN(nn.Module):
    """Three 3x3 conv + ReLU layers and two linear layers (a hidden one and the classifier).

    ``conv1 -> conv2 -> pool -> conv3 -> pool -> adaptive avg-pool -> fc1 -> ReLU -> fc2``. The
    two 2x2 max-pools are skipped when the map is already smaller than 2x2; the adaptive pool
    brings the map to at most ``pooled`` x ``pooled``, so ``fc1`` has
    ``widths[2] * pooled**2`` inputs on any image from 8x8 (digits) to 32x32 (CIFAR). Both
    ``conv2``/``conv3`` and ``fc1`` are large enough to compress with tensorized formats (the
    hybrid TT/HT study of Wu et al. 2020 needs conv and FC layers of some size); ``conv1`` and
    ``fc2`` are the usual first and last layers left dense.

    Parameters
    ----------
    in_channels, num_classes, image_size
        Input channels, output classes and the (square) input side length.
    widths
        Output channels of conv1..conv3.
    hidden
        Width of the hidden linear layer ``fc1``.
    pooled
        Side of the feature map fed to ``fc1`` (at most; smaller maps are kept).

    Examples
    --------
    >>> net = HybridCNN(1, 10, 8)
    >>> net.fc1, net(torch.zeros(2, 1, 8, 8)).shape
    (Linear(in_features=256, out_features=256, bias=True), torch.Size([2, 10]))
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        widths: Sequence[int] = (16, 32, 64),
        hidden: int = 256,
        pooled: int = 4,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"hybrid_cnn needs 3 positive widths, got {tuple(widths)}")
        if hidden < 1 or pooled < 1:
            raise ValueError(f"hybrid_cnn: hidden and pooled must be >= 1, got {hidden}, {pooled}")
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1)
        self.conv2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.conv3 = nn.Conv2d(w2, w3, 3, padding=1)
        size = image_size
        self.pool2 = size >= 2
        size = size // 2 if self.pool2 else size
        self.pool3 = size >= 2
        size = size // 2 if self.pool3 else size
        self.side = min(size, pooled)
        self.fc1 = nn.Linear(w3 * self.side * self.side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        if self.pool2:
            x = nn.functional.max_pool2d(x, 2)
        x = torch.relu(self.conv3(x))
        if self.pool3:
            x = nn.functional.max_pool2d(x, 2)
        x = nn.functional.adaptive_avg_pool2d(x, self.side)
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
