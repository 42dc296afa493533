"""Converters of convolution, pooling and mean reduction, with ONNX padding resolved for torch."""

from __future__ import annotations

import math
from typing import Any

import torch

from auditor.model.onnx.translator import Translator, Value

aten = torch.ops.aten


def conv(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    x, w, b = (*ins, None)[:3]
    kernel = attrs.get("kernel_shape") or list(t.shape(1) or [])[2:]
    _require_2d(t, kernel)
    stride, dilation = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    x, padding = _pad(t, x, attrs, kernel, stride, dilation, fill=0.0, bounded=False)
    return t.call(aten.conv2d.default, x, w, b, stride, padding, dilation, attrs.get("group", 1))


def max_pool(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    if len(t.node.output) > 1 and t.node.output[1]:
        raise t.unsupported("the Indices output")
    kernel = attrs["kernel_shape"]
    _require_2d(t, kernel)
    stride, dilation = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
    x, padding = _pad(t, ins[0], attrs, kernel, stride, dilation, fill=-math.inf)
    ceil = bool(attrs.get("ceil_mode", 0))
    return t.call(aten.max_pool2d.default, x, kernel, stride, padding, dilation, ceil)


def average_pool(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    kernel = attrs["kernel_shape"]
    _require_2d(t, kernel)
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise t.unsupported("a dilated AveragePool")
    stride = attrs.get("strides", [1, 1])
    if list(kernel) == [1, 1] and list(stride) == [1, 1] and not any(attrs.get("pads", [0])):
        return ins[0]  # the identity: an adaptive pooling to the map's own size, as exported
    include_pad = bool(attrs.get("count_include_pad", 0))
    fill = 0.0 if include_pad else None
    x, padding = _pad(t, ins[0], attrs, kernel, stride, [1, 1], fill=fill)
    ceil = bool(attrs.get("ceil_mode", 0))
    return t.call(aten.avg_pool2d.default, x, kernel, stride, padding, ceil, include_pad)


def global_average_pool(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    if t.rank(0) != 4:
        raise t.unsupported("a GlobalAveragePool over other than 2 spatial dimensions")
    return t.call(aten.adaptive_avg_pool2d.default, ins[0], [1, 1])


def reduce_mean(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Mean over `axes` (an input from opset 18, an attribute before; none: all axes)."""
    axes = attrs.get("axes") if t.opset < 18 else t.static((*ins, None)[1], "axes")
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return ins[0]
        axes = range(t.rank(0))
    keepdim = bool(attrs.get("keepdims", 1))
    return t.call(aten.mean.dim, ins[0], [int(a) for a in axes], keepdim)


def _require_2d(t: Translator, kernel: list[int]) -> None:
    if len(kernel) != 2:
        raise t.unsupported(f"a {len(kernel)}-D kernel (only 2-D images are supported)")


def _pad(
    t: Translator,
    x: Value,
    attrs: dict[str, Any],
    kernel: list[int],
    stride: list[int],
    dilation: list[int],
    fill: float | None,
    bounded: bool = True,
) -> tuple[Value, list[int]]:
    """(input, torch padding): symmetric pads go to the operation itself (for pooling
    (`bounded`) only up to half the window, torch's limit); others are applied first by
    `aten.constant_pad_nd` with the value `fill` (None: refused)."""
    top, left, bottom, right = _pads(t, attrs, kernel, stride, dilation)
    windows = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    within = not bounded or (2 * top <= windows[0] and 2 * left <= windows[1])
    if top == bottom and left == right and within:
        return x, [top, left]
    if fill is None:
        raise t.unsupported(f"padding {[top, left, bottom, right]} outside the image")
    return t.call(aten.constant_pad_nd.default, x, [left, right, top, bottom], fill), [0, 0]


def _pads(
    t: Translator, attrs: dict[str, Any], kernel: list[int], stride: list[int], dilation: list[int]
) -> list[int]:
    """ONNX pads [top, left, bottom, right], resolving `auto_pad`."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return list(attrs.get("pads", [0, 0, 0, 0]))
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    size = (t.shape(0) or [None] * 4)[2:]
    if any(s is None for s in size):
        raise t.unsupported(f"auto_pad={auto_pad} on an input of unknown size")
    total = [
        max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
        for s, k, st, d in zip(size, kernel, stride, dilation)
    ]
    small = [t // 2 for t in total]
    large = [t - t // 2 for t in total]
    return small + large if auto_pad == "SAME_UPPER" else large + small
