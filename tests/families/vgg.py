"""VGG-11-BN style [Simonyan2015] in torchvision's idioms: `features` from the layer plan
(conv, BatchNorm, in-place ReLU, 'M' max pooling), `avgpool` to a fixed grid, a `classifier`
of Linear, in-place ReLU and Dropout."""

from __future__ import annotations

import torch
from torch import nn

#: VGG-11's plan (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M) at 1/16 width and
#: without the last pooling: 32x32 ends on a 2x2 grid as 224x224 ends on 7x7
VGG11_PLAN: tuple[int | str, ...] = (4, "M", 8, "M", 16, 16, "M", 32, 32, "M", 32, 32)


def make_layers(plan: tuple[int | str, ...], batch_norm: bool, inplace: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=inplace))
        channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self, features: nn.Sequential, grid: int, channels: int, hidden: int, classes: int,
        inplace: bool = True,
    ):  # fmt: skip
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((grid, grid))
        self.classifier = nn.Sequential(
            nn.Linear(channels * grid * grid, hidden), nn.ReLU(inplace), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace), nn.Dropout(),
            nn.Linear(hidden, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg11_bn(inplace: bool = True, classes: int = 5) -> VGG:
    return VGG(make_layers(VGG11_PLAN, True, inplace), 2, 32, 32, classes, inplace)


class TinyVGG(nn.Module):
    """A shallower VGG with the other torchvision idioms: in-place ReLU or LeakyReLU, Dropout2d
    inside `features`, AdaptiveAvgPool2d(2) that really pools (4x4 -> 2x2 at 16x16 inputs)."""

    def __init__(self, inplace: bool = True, leaky: bool = False, classes: int = 5):
        super().__init__()

        def act() -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=inplace) if leaky else nn.ReLU(inplace=inplace)

        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), act(), nn.Dropout2d(0.3),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4, 32), act(), nn.Dropout(0.5), nn.Linear(32, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)
