"""EfficientNet-B0 style [Tan2019] in torchvision's idioms: `MBConv` blocks (1x1 expand with
SiLU, depthwise with SiLU, squeeze-excitation with a sigmoid gate and SiLU inside
[Hu2018], 1x1 linear projection), stochastic depth [Huang2016] (the identity in eval mode)
and `result += input`, stages as nested `Sequential`s, a Dropout classifier."""

from __future__ import annotations

import torch
from torch import nn

from tests.families.layers import Conv2dNormActivation, SqueezeExcitation, StochasticDepth


class MBConv(nn.Module):
    def __init__(
        self, input_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int,
        stochastic_depth_prob: float, inplace: bool = True,
    ):  # fmt: skip
        super().__init__()
        self.use_res_connect = stride == 1 and input_channels == out_channels
        self.inplace = inplace
        expanded = input_channels * expand_ratio
        layers: list[nn.Module] = []
        if expanded != input_channels:
            layers.append(
                Conv2dNormActivation(
                    input_channels, expanded, 1, activation_layer=nn.SiLU, inplace=inplace
                )
            )
        layers.append(
            Conv2dNormActivation(
                expanded, expanded, kernel, stride, groups=expanded, activation_layer=nn.SiLU,
                inplace=inplace,
            )
        )  # fmt: skip
        squeeze = max(1, input_channels // 4)
        layers.append(SqueezeExcitation(expanded, squeeze, activation=nn.SiLU))
        layers.append(Conv2dNormActivation(expanded, out_channels, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            if self.inplace:
                result += input
            else:
                result = result + input
        return result


class EfficientNet(nn.Module):
    #: (expand ratio, kernel, stride, in, out, layers) of B0's first stages, reduced
    SETTING = ((1, 3, 1, 8, 8, 1), (6, 3, 2, 8, 12, 2), (6, 5, 2, 12, 16, 2))

    def __init__(self, inplace: bool = True, classes: int = 5, last: int = 64):
        super().__init__()
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3, self.SETTING[0][3], stride=2, activation_layer=nn.SiLU, inplace=inplace
            )
        ]
        total = sum(s[-1] for s in self.SETTING)
        block_id = 0
        for expand, kernel, stride, cin, cout, n in self.SETTING:
            stage = []
            for i in range(n):
                p = 0.2 * block_id / total
                stage.append(
                    MBConv(
                        cin if i == 0 else cout,
                        cout,
                        expand,
                        kernel,
                        stride if i == 0 else 1,
                        p,
                        inplace,
                    )
                )
                block_id += 1
            layers.append(nn.Sequential(*stage))
        layers.append(
            Conv2dNormActivation(
                self.SETTING[-1][4], last, 1, activation_layer=nn.SiLU, inplace=inplace
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.2, inplace=inplace), nn.Linear(last, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet_b0(inplace: bool = True, classes: int = 5) -> EfficientNet:
    return EfficientNet(inplace, classes)
