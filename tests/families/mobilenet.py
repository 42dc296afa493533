"""MobileNetV2 [Sandler2018] and MobileNetV3-small [Howard2019] in torchvision's idioms:
`features` of `Conv2dNormActivation` and inverted residual blocks (1x1 expand, depthwise, 1x1
linear projection, `x + self.conv(x)` when the shape is kept), in-place ReLU6 (V2) or
ReLU / hardswish with hardsigmoid squeeze-excitation gates (V3), a Dropout classifier."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from tests.families.layers import Conv2dNormActivation, SqueezeExcitation, make_divisible


class InvertedResidual(nn.Module):
    """MobileNetV2's block: `self.conv` = [1x1 expand], depthwise 3x3, 1x1 projection, BN."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, inplace: bool = True):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        act = partial(nn.ReLU6)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                Conv2dNormActivation(inp, hidden_dim, 1, activation_layer=act, inplace=inplace)
            )
        layers += [
            Conv2dNormActivation(
                hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, activation_layer=act,
                inplace=inplace,
            ),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    #: (expansion t, channels c, repeats n, stride s) rows of torchvision's table, reduced
    SETTING = ((1, 8, 1, 1), (4, 8, 2, 2), (4, 16, 2, 2), (4, 24, 1, 1))

    def __init__(self, inplace: bool = True, classes: int = 5, stem: int = 8, last: int = 64):
        super().__init__()
        act = nn.ReLU6
        features: list[nn.Module] = [
            Conv2dNormActivation(3, stem, stride=2, activation_layer=act, inplace=inplace)
        ]
        channels = stem
        for t, c, n, s in self.SETTING:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t, inplace))
                channels = c
        features.append(
            Conv2dNormActivation(channels, last, 1, activation_layer=act, inplace=inplace)
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(last, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))  # functional, as torchvision's
        x = torch.flatten(x, 1)
        return self.classifier(x)


@dataclass(frozen=True)
class InvertedResidualConfig:
    """One row of MobileNetV3's table: input, kernel, expanded and output channels, squeeze-
    excitation, activation ("RE" ReLU, "HS" hardswish), stride."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    activation: str
    stride: int


class MobileNetV3Block(nn.Module):
    """torchvision's V3 `InvertedResidual`: expand, depthwise, squeeze-excitation with a
    hardsigmoid gate, linear projection; `result += input` when the shape is kept."""

    def __init__(self, cnf: InvertedResidualConfig, inplace: bool = True):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        act = nn.Hardswish if cnf.activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(
                Conv2dNormActivation(
                    cnf.input_channels,
                    cnf.expanded_channels,
                    1,
                    activation_layer=act,
                    inplace=inplace,
                )
            )
        layers.append(
            Conv2dNormActivation(
                cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, cnf.stride,
                groups=cnf.expanded_channels, activation_layer=act, inplace=inplace,
            )
        )  # fmt: skip
        if cnf.use_se:
            squeeze = make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(
                SqueezeExcitation(cnf.expanded_channels, squeeze, scale_activation=nn.Hardsigmoid)
            )
        layers.append(
            Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, 1, activation_layer=None)
        )
        self.block = nn.Sequential(*layers)
        self.inplace = inplace

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.block(input)
        if self.use_res_connect:
            if self.inplace:
                result += input
            else:
                result = result + input
        return result


class MobileNetV3(nn.Module):
    #: MobileNetV3-small's first rows (16,3,16,16,SE,RE,2), (16,3,72,24,-,RE,2), ... reduced
    SMALL = (
        InvertedResidualConfig(8, 3, 8, 8, True, "RE", 2),
        InvertedResidualConfig(8, 3, 24, 8, False, "RE", 2),
        InvertedResidualConfig(8, 3, 24, 8, False, "RE", 1),
        InvertedResidualConfig(8, 5, 32, 16, True, "HS", 2),
        InvertedResidualConfig(16, 5, 48, 16, True, "HS", 1),
    )

    def __init__(self, inplace: bool = True, classes: int = 5, last_channel: int = 64):
        super().__init__()
        setting = self.SMALL
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3,
                setting[0].input_channels,
                stride=2,
                activation_layer=nn.Hardswish,
                inplace=inplace,
            )
        ]
        layers += [MobileNetV3Block(cnf, inplace) for cnf in setting]
        last_in = setting[-1].out_channels
        layers.append(
            Conv2dNormActivation(
                last_in, 6 * last_in, 1, activation_layer=nn.Hardswish, inplace=inplace
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=inplace),
            nn.Dropout(p=0.2, inplace=inplace), nn.Linear(last_channel, classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(inplace: bool = True, classes: int = 5) -> MobileNetV2:
    return MobileNetV2(inplace, classes)


def mobilenet_v3_small(inplace: bool = True, classes: int = 5) -> MobileNetV3:
    return MobileNetV3(inplace, classes)
