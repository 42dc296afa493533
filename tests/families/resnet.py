"""ResNet-18 / ResNet-50 style [He2016] in torchvision's idioms: `BasicBlock` and `Bottleneck`
with one in-place `relu` module used several times, `out += identity`, a `downsample`
`Sequential`; the 7x7 stride-2 stem with max pooling, `layer1..layer4`, `avgpool`, `fc`."""

from __future__ import annotations

import torch
from torch import nn


def _add(out: torch.Tensor, identity: torch.Tensor, inplace: bool) -> torch.Tensor:
    if inplace:
        out += identity
        return out
    return out + identity


def _downsample(inplanes: int, planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == planes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class BasicBlock(nn.Module):
    """torchvision's `BasicBlock`: two 3x3 convolutions, one `relu` module used twice."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(_add(out, identity, self.inplace))


class Bottleneck(nn.Module):
    """torchvision's `Bottleneck` (ResNet V1.5: stride on the 3x3): 1x1 reduce, 3x3, 1x1
    expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=inplace)
        self.downsample = _downsample(inplanes, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(_add(out, identity, self.inplace))


class ResNet(nn.Module):
    """Stem, one stage `layer<i>` per entry of `layers` (blocks, width; stride 2 from the second
    stage on), global average pooling, `fc`. `small_stem`: a 3x3 stride-1 stem and 2x2 max
    pooling (the tiny nets of `tests/torchvision_style.py`) instead of 7x7 stride 2 and 3x3."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, ...],
        widths: tuple[int, ...],
        inplace: bool = True,
        classes: int = 5,
        small_stem: bool = False,
    ):
        super().__init__()
        stem = widths[0]
        if small_stem:
            self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=inplace)
        self.maxpool = nn.MaxPool2d(2) if small_stem else nn.MaxPool2d(3, 2, 1)
        inplanes = stem
        for i, (blocks, planes) in enumerate(zip(layers, widths), start=1):
            stride = 1 if i == 1 else 2
            stage = [block(inplanes, planes, stride, inplace)]
            inplanes = planes * block.expansion
            stage += [block(inplanes, planes, 1, inplace) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(inplace: bool = True, classes: int = 5) -> ResNet:
    """ResNet-18's stage plan (2, 2, 2, 2 basic blocks) at widths 8..32."""
    return ResNet(BasicBlock, (2, 2, 2, 2), (8, 8, 16, 32), inplace, classes)


def resnet50(inplace: bool = True, classes: int = 5) -> ResNet:
    """ResNet-50's bottleneck stages, shortened to (2, 2, 2, 1) blocks at widths 4..16 (x4)."""
    return ResNet(Bottleneck, (2, 2, 2, 1), (4, 4, 8, 16), inplace, classes)
