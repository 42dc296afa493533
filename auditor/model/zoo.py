"""Small image classifiers in plain torch (torchvision cannot be imported on these machines).

Module attribute names are part of the contract: the auditor addresses layers by module
path (``layer3``, ``layer3.0.conv2``), and its default audited layer is the output of the
last residual stage of :class:`SmallResNet`. Both models are ``torch.export``-able with a
dynamic batch dimension: their forward passes have no Python control flow on shapes.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus skip, ReLU after the add.

    The skip is the identity when stride and width are unchanged, otherwise a 1x1
    convolution + BatchNorm projection (``downsample``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class SmallResNet(nn.Module):
    """A small ResNet: stem, residual stages ``layer1..layerN``, global pool, linear head.

    Stage ``i`` (1-based) has ``width * 2**(i-1)`` channels and ``blocks[i-1]`` basic
    blocks; every stage after the first halves the spatial size (stride 2 in its first
    block). The head is ``pool`` (adaptive average) -> ``flatten`` -> ``fc``.
    """

    def __init__(
        self,
        num_classes: int = 2,
        width: int = 16,
        blocks: tuple[int, ...] = (1, 1, 1),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        channels = width
        for index, count in enumerate(blocks):
            out_channels = width * 2**index
            stage = [BasicBlock(channels, out_channels, 1 if index == 0 else 2)]
            stage += [BasicBlock(out_channels, out_channels) for _ in range(count - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            channels = out_channels
        self.num_stages = len(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``N x C x H x W`` (normalised) to logits ``N x num_classes``."""
        out = self.relu(self.bn1(self.conv1(x)))
        for index in range(self.num_stages):
            out = self.get_submodule(f"layer{index + 1}")(out)
        return self.fc(self.flatten(self.pool(out)))


class SmallVGG(nn.Module):
    """A tiny VGG-style model without BatchNorm: ``features`` then a linear head.

    ``features`` is a Sequential of (conv3x3, ReLU, maxpool 2x2) triples, one per entry
    of ``widths``; the head is ``pool`` (adaptive average) -> ``flatten`` -> ``fc``.
    """

    def __init__(
        self, num_classes: int = 2, widths: tuple[int, ...] = (8, 16), in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels in widths:
            layers += [nn.Conv2d(channels, out_channels, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``N x C x H x W`` (normalised) to logits ``N x num_classes``."""
        return self.fc(self.flatten(self.pool(self.features(x))))


class SmallHardSwishNet(nn.Module):
    """A tiny MobileNet-style model with signed activations: ``features`` is a Sequential of
    (conv3x3 stride 2, BatchNorm, Hardswish) triples, one per entry of ``widths``; the head is
    ``pool`` (adaptive average) -> ``flatten`` -> ``fc``. Hardswish outputs are negative on
    part of their range (down to -3/8), so channel means can be negative [Howard2019]."""

    def __init__(
        self, num_classes: int = 2, widths: tuple[int, ...] = (8, 16, 32), in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels in widths:
            layers += [
                nn.Conv2d(channels, out_channels, 3, 2, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.Hardswish(),
            ]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``N x C x H x W`` (normalised) to logits ``N x num_classes``."""
        return self.fc(self.flatten(self.pool(self.features(x))))
