"""Small plain-torch networks written in torchvision's layer idioms (in-place ReLU, `out +=
identity`, a downsample `Sequential`, Dropout / Dropout2d in the classifier), each buildable
in place or out of place with the same parameter names, so one state dict fits both."""

from __future__ import annotations

import torch
from torch import nn


def _add(out: torch.Tensor, identity: torch.Tensor, inplace: bool) -> torch.Tensor:
    if inplace:
        out += identity
        return out
    return out + identity


class BasicBlock(nn.Module):
    """torchvision's `BasicBlock`: one `relu` module used twice, `out += identity`."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(_add(out, identity, self.inplace))


class Bottleneck(nn.Module):
    """torchvision's `Bottleneck` (1x1 reduce, 3x3, 1x1 expand by 4)."""

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
        self.downsample = None
        if stride != 1 or inplanes != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, width, 1, stride, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(_add(out, identity, self.inplace))


class TinyResNet(nn.Module):
    """Stem, two stages of `block`, global average pooling, `fc` (torchvision's names)."""

    def __init__(self, block: type[nn.Module], inplace: bool = True, classes: int = 5):
        super().__init__()
        expansion = getattr(block, "expansion", 1)
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(block(8, 8, 1, inplace), block(8 * expansion, 8, 1, inplace))
        self.layer2 = nn.Sequential(block(8 * expansion, 16, 2, inplace))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 * expansion, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinyVGG(nn.Module):
    """VGG-style: `features` (conv, BN, in-place ReLU / LeakyReLU, Dropout2d, max pooling) and a
    `classifier` with Dropout, as torchvision's VGG."""

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


NETS = {
    "basic": lambda inplace: TinyResNet(BasicBlock, inplace),
    "bottleneck": lambda inplace: TinyResNet(Bottleneck, inplace),
    "vgg": lambda inplace: TinyVGG(inplace),
    "vgg_leaky": lambda inplace: TinyVGG(inplace, leaky=True),
}
"""Each net as a function of `inplace`: the in-place and out-of-place builds share weights."""


def pair(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(in-place net, out-of-place net) with the same random weights and non-trivial BatchNorm
    statistics, in eval mode."""
    torch.manual_seed(seed)
    inplace = NETS[name](True)
    for module in inplace.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    functional = NETS[name](False)
    functional.load_state_dict(inplace.state_dict())
    return inplace.eval(), functional.eval()
