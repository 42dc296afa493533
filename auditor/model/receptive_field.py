"""The input region that a position of an audited layer sees: its theoretical receptive field
([Chandrasegaran2022]: find `(h*, w*) = argmax_hw R_i[0, c, h, w]` and identify the region in
input space that corresponds to this `(h*, w*)`).

Computed from the graph, not from layer arithmetic, so residual branches, concatenations and
any padding count: the trunk (image -> layer) runs as a *linearised* copy in which no path can
cancel another or switch off, and the support of the gradient of one layer unit is its
receptive field:

* convolution / dense weights are replaced by the positive constant `1 / fan_in`, biases
  dropped (the support of a unit then does not depend on the trained weights);
* elementwise activations (ReLU, ...) and BatchNorm are the identity (the gradient of a ReLU
  that is off would hide pixels the unit can see);
* max pooling becomes the mean over the same window (its gradient reaches the whole window,
  not only the winner); adaptive max pooling becomes adaptive average pooling;
* subtraction becomes addition and negation the identity (no two paths cancel); padding fills
  with 0 (a `-inf` max-pool pad would poison the sums);
* the input is a batch of ones, in float64 (deep stacks of averages underflow in float32).

Every remaining operation (sums, means, concatenation, reshapes, products of the now positive
values) has a non-negative gradient, so `d z[c, h, w] / d x` is positive exactly on the
pixels that unit depends on. The box is the bounding box of that support, rows
`top <= y < bottom`, columns `left <= x < right` (exclusive ends, like slices), within the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from auditor.model.ops import MAX_POOL_OPS, POINTWISE_OPS, WEIGHTED_OPS

aten = torch.ops.aten

#: (top, left, bottom, right) in input pixels, bottom and right exclusive
Box = tuple[int, int, int, int]
#: (channel, row, column) of a unit of the layer
Position = tuple[int, int, int]



def _positive_weight(weight: torch.Tensor) -> torch.Tensor:
    """`1 / fan_in` in the shape of `weight` (out x in/groups x kernel...)."""
    return torch.full(weight.shape, 1.0 / weight[0].numel(), dtype=torch.float64)


def _window_mean(x: torch.Tensor, kernel, stride=(), padding=0, dilation=1, ceil_mode=False):
    """Mean over every max-pooling window (same output shape as `max_pool2d` with these
    arguments): a depthwise convolution with `1 / window` weights, zero-padded on the bottom
    and right where `ceil_mode` adds a partial window."""
    pair = lambda v: [v, v] if isinstance(v, int) else list(v) * (2 // len(v))
    kernel = pair(kernel)
    stride = pair(stride) if stride else kernel
    padding, dilation = pair(padding), pair(dilation)
    channels = x.shape[1]
    expected = F.max_pool2d(
        torch.zeros(1, 1, *x.shape[2:]), kernel, stride, padding, dilation, ceil_mode
    ).shape[2:]
    weight = torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=x.dtype)
    out = F.conv2d(x, weight, None, stride, padding, dilation, channels)
    extra = [(e - o) * s for e, o, s in zip(expected, out.shape[2:], stride)]
    if any(extra):
        x = F.pad(x, [0, extra[1], 0, extra[0]])
        out = F.conv2d(x, weight, None, stride, padding, dilation, channels)
    return out[:, :, : expected[0], : expected[1]]


class _Linearised(fx.Interpreter):
    """Runs a trunk graph with every operation replaced by its non-cancelling linear twin."""

    def call_function(self, target, args, kwargs) -> Any:
        args = tuple(_float64(a) for a in args)
        if target in WEIGHTED_OPS:
            args = _positive_weights(target, args)
        elif target in POINTWISE_OPS:
            return args[0]
        elif target in MAX_POOL_OPS:
            pooled = _window_mean(*args, **kwargs)
            return (pooled, None) if target is aten.max_pool2d_with_indices.default else pooled
        elif target is aten.adaptive_max_pool2d.default:
            return (aten.adaptive_avg_pool2d.default(*args), None)
        elif target is aten.sub.Tensor:
            target = aten.add.Tensor
        elif target is aten.constant_pad_nd.default:
            args = (*args[:2], 0.0)
        return target(*args, **kwargs)


def _float64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.float64)
    return value


def _positive_weights(target, args: tuple) -> tuple:
    """A weighted operation's arguments with positive weights and without bias."""
    if target is aten.addmm.default:  # bias + x @ w.T
        bias, x, weight_t = args
        return (torch.zeros_like(bias), x, _positive_weight(weight_t.t()).t())
    x, weight, *rest = args
    if rest:
        rest[0] = None
    return (x, _positive_weight(weight), *rest)


def _bounding_box(support: torch.Tensor) -> Box:
    """Bounding box of the True pixels of an H x W mask (the whole image if none)."""
    rows, cols = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
    if len(rows) == 0:
        return (0, 0, *support.shape)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def receptive_fields(
    trunk: fx.GraphModule,
    image_shape: Sequence[int],
    positions: Sequence[Position],
    batch_size: int = 64,
) -> list[Box]:
    """The input box of each layer unit `(c, h, w)` of `trunk` (image -> layer activation) for
    images of `image_shape` (channels x height x width); units are batched, `batch_size` at a
    time, each against its own input copy."""
    unique = list(dict.fromkeys(tuple(int(v) for v in p) for p in positions))
    boxes: dict[Position, Box] = {}
    interpreter = _Linearised(trunk)
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        with torch.enable_grad():
            x = torch.ones(len(chunk), *image_shape, dtype=torch.float64, requires_grad=True)
            out = interpreter.run(x)
            seed = torch.zeros_like(out)
            for row, (c, h, w) in enumerate(chunk):
                seed[row, c, h, w] = 1.0
            (grad,) = torch.autograd.grad(out, x, seed)
        support = grad.abs().sum(dim=1) > 0
        boxes.update({p: _bounding_box(s) for p, s in zip(chunk, support)})
    return [boxes[tuple(int(v) for v in p)] for p in positions]
