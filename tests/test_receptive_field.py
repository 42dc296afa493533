"""Receptive fields of layer units, against hand-computed (size, stride, padding) arithmetic:
a unit at (h, w) after layers with cumulative jump j and start s sees rows [s + j h, s + j h + r)."""

from __future__ import annotations

import torch
from torch import nn

from auditor.model.graph import ModelGraph
from auditor.model.receptive_field import receptive_fields
from auditor.model.zoo import SmallResNet, SmallVGG

torch.set_num_threads(1)


class ConvStack(nn.Module):
    """conv 3x3 s1 p1 -> conv 3x3 s2 p1 -> conv 5x5 s1 p2: r = 3, 5, 13; j = 1, 2, 2;
    s = -1, -2, -6, so unit (h, w) sees rows [2h - 6, 2h + 7)."""

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(4, 5, 5, 1, 2), nn.ReLU(),
        )  # fmt: skip
        for conv in self.features[::2]:
            nn.init.constant_(conv.bias, bias)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _trunk(model: nn.Module, layer: str, size: int):
    graph = ModelGraph.from_module(model.eval(), torch.randn(2, 3, size, size))
    return graph.split(layer).trunk


def _hand(h: int, w: int, jump: int, start: int, size: int, image: int):
    clip = lambda v: min(max(v, 0), image)
    return (clip(start + jump * h), clip(start + jump * w),
            clip(start + jump * h + size), clip(start + jump * w + size))  # fmt: skip


def test_plain_conv_stack_matches_arithmetic():
    trunk = _trunk(ConvStack(), "features", 20)
    positions = [(0, 5, 4), (3, 0, 0), (4, 9, 9), (1, 2, 7)]
    expected = [_hand(h, w, jump=2, start=-6, size=13, image=20) for _, h, w in positions]
    assert receptive_fields(trunk, (3, 20, 20), positions) == expected
    assert expected[0] == (4, 2, 17, 15) and expected[2] == (12, 12, 20, 20)


def test_small_vgg_max_pooling_sees_its_whole_window():
    # conv3 p1 (r 3, s -1), pool 2 (r 4, j 2), conv3 p1 (r 8, s -3), pool 2 (r 10, j 4)
    trunk = _trunk(SmallVGG(), "features", 32)
    positions = [(0, 0, 0), (3, 3, 5), (15, 7, 7)]
    boxes = receptive_fields(trunk, (3, 32, 32), positions)
    assert boxes == [_hand(h, w, jump=4, start=-3, size=10, image=32) for _, h, w in positions]
    assert boxes[1] == (9, 17, 19, 27)


def test_small_resnet_stages_union_of_residual_paths():
    # stem r 3; layer1 r 7 (s -3); layer2: conv s2 r 9, conv r 13, j 2, s -6;
    # layer3: r 17 then 25, j 4, s -12 (the 1x1 downsample paths are contained)
    model = SmallResNet(width=4)
    expected = {"layer1": (1, -3, 7), "layer2": (2, -6, 13), "layer3": (4, -12, 25)}
    for layer, (jump, start, size) in expected.items():
        trunk = _trunk(model, layer, 64)
        positions = [(0, 0, 0), (1, 5, 9), (2, 15, 15)]
        boxes = receptive_fields(trunk, (3, 64, 64), positions)
        assert boxes == [_hand(h, w, jump, start, size, 64) for _, h, w in positions], layer


def test_independent_of_weights_and_dead_units():
    """A ReLU that is off everywhere would hide every pixel from the gradient; the theoretical
    receptive field does not depend on it."""
    positions = [(0, 5, 4), (2, 9, 0)]
    alive = receptive_fields(_trunk(ConvStack(), "features", 20), (3, 20, 20), positions)
    dead = _trunk(ConvStack(bias=-1e3), "features", 20)
    with torch.no_grad():
        assert dead(torch.rand(1, 3, 20, 20)).abs().sum() == 0
    assert receptive_fields(dead, (3, 20, 20), positions) == alive


def test_batching_and_duplicates_do_not_change_boxes():
    trunk = _trunk(SmallVGG(), "features", 32)
    positions = [(0, 1, 2), (5, 6, 7), (0, 1, 2), (9, 0, 7)]
    one_by_one = [receptive_fields(trunk, (3, 32, 32), [p])[0] for p in positions]
    assert receptive_fields(trunk, (3, 32, 32), positions, batch_size=2) == one_by_one
    assert one_by_one[0] == one_by_one[2]
