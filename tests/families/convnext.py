"""ConvNeXt style [Liu2022] in torchvision's idioms: `CNBlock` (7x7 depthwise convolution,
`Permute` to channels-last, LayerNorm over channels, Linear, GELU, Linear, `Permute` back,
layer scale, stochastic depth, `result += input`), a patchify stem and downsampling layers with
`LayerNorm2d`, a classifier of `LayerNorm2d`, `Flatten`, `Linear`."""

from __future__ import annotations

import torch
from torch import nn

from tests.families.layers import LayerNorm2d, Permute, StochasticDepth


class CNBlock(nn.Module):
    def __init__(
        self, dim: int, layer_scale: float, stochastic_depth_prob: float, inplace: bool = True
    ):
        super().__init__()
        self.inplace = inplace
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.layer_scale * self.block(input)
        result = self.stochastic_depth(result)
        if self.inplace:
            result += input
        else:
            result = result + input
        return result


class ConvNeXt(nn.Module):
    def __init__(
        self, dims: tuple[int, ...] = (8, 16), depths: tuple[int, ...] = (1, 2),
        classes: int = 5, layer_scale: float = 1e-6, inplace: bool = True,
    ):  # fmt: skip
        super().__init__()
        norm = lambda c: LayerNorm2d(c, eps=1e-6)
        layers: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4, bias=True), norm(dims[0]))
        ]
        total, block_id = sum(depths), 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            stage = []
            for _ in range(depth):
                stage.append(CNBlock(dim, layer_scale, 0.1 * block_id / total, inplace))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(dims):
                layers.append(
                    nn.Sequential(norm(dim), nn.Conv2d(dim, dims[i + 1], kernel_size=2, stride=2))
                )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x)


def convnext(inplace: bool = True, classes: int = 5) -> ConvNeXt:
    return ConvNeXt(classes=classes, inplace=inplace)
