"""CIFAR-style residual networks: ResNet-20 (He et al. 2016), ResNet-18 and ResNet-50.

All three start with a 3x3 stride-1 convolution and no max-pool, and end with a global average
pool, so they run on any input from 1x1 up (a stride-2 3x3 conv with padding 1 maps 1x1 to 1x1).
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _PadShortcut(nn.Module):
    """He et al.'s parameter-free "option A" shortcut: subsample, zero-pad the new channels."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity, padding or projection shortcut."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, shortcut: str = "projection") -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = (
                _PadShortcut(cin, cout, stride)
                if shortcut == "pad"
                else _projection(cin, cout, stride)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a projection shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, shortcut: str = "projection") -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = _projection(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages ``layer1..layerN`` of residual blocks, global average pool, ``fc``.

    Parameters
    ----------
    block
        ``BasicBlock`` or ``Bottleneck``.
    blocks, widths
        Blocks per stage and the stage widths; every stage after the first halves the map.
    in_channels, num_classes
        Input channels and output classes.
    shortcut
        ``"projection"`` (1x1 conv + BN) or ``"pad"`` (parameter-free option A, basic blocks).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: Sequence[int],
        widths: Sequence[int],
        in_channels: int,
        num_classes: int,
        shortcut: str = "projection",
    ) -> None:
        super().__init__()
        if shortcut not in ("projection", "pad"):
            raise ValueError(f"shortcut must be 'projection' or 'pad', got {shortcut!r}")
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            stage = []
            for j in range(n):
                stride = 2 if i > 1 and j == 0 else 1
                stage.append(block(cin, width, stride, shortcut))
                cin = width * block.expansion
            self.add_module(f"layer{i}", nn.Sequential(*stage))
        self.num_stages = len(blocks)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def resnet20(in_channels: int, num_classes: int, image_size: int) -> ResNet:
    """ResNet-20 of He et al. (3 stages x 3 basic blocks, 16/32/64 channels, option-A shortcuts).

    ``image_size`` is accepted for a uniform signature; the network adapts to any size.
    """
    return ResNet(BasicBlock, (3, 3, 3), (16, 32, 64), in_channels, num_classes, shortcut="pad")


def resnet18(in_channels: int, num_classes: int, image_size: int) -> ResNet:
    """CIFAR ResNet-18: 3x3 stride-1 stem, no max-pool, 4 stages x 2 basic blocks (64..512)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), in_channels, num_classes)


def resnet50(in_channels: int, num_classes: int, image_size: int) -> ResNet:
    """CIFAR ResNet-50: 3x3 stride-1 stem, no max-pool, bottleneck stages of 3, 4, 6, 3 blocks."""
    return ResNet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), in_channels, num_classes)
