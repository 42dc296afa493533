"""Tiny nets in torchvision's layer idioms (in-place ReLU, `out += identity`, a downsample
`Sequential`, Dropout / Dropout2d in the classifier) for `tests/test_canonical.py`, built from
the conformance zoo's blocks (`tests/families`), each buildable in place or out of place with
the same parameter names, so one state dict fits both."""

from __future__ import annotations

import torch
from torch import nn

from tests.families import randomise_statistics
from tests.families.resnet import BasicBlock, Bottleneck, ResNet
from tests.families.vgg import TinyVGG

NETS = {
    "basic": lambda inplace: ResNet(BasicBlock, (2, 1), (8, 16), inplace, small_stem=True),
    "bottleneck": lambda inplace: ResNet(Bottleneck, (2, 1), (8, 16), inplace, small_stem=True),
    "vgg": lambda inplace: TinyVGG(inplace),
    "vgg_leaky": lambda inplace: TinyVGG(inplace, leaky=True),
}
"""Each net as a function of `inplace`: the in-place and out-of-place builds share weights."""


def pair(name: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(in-place net, out-of-place net) with the same random weights and non-trivial BatchNorm
    statistics, in eval mode."""
    torch.manual_seed(seed)
    inplace = randomise_statistics(NETS[name](True))
    functional = NETS[name](False)
    functional.load_state_dict(inplace.state_dict())
    return inplace.eval(), functional.eval()
