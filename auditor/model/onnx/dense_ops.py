"""Converters of dense layers, normalisation, activations, elementwise ops and constants."""

from __future__ import annotations

import math
from typing import Any

import torch

from auditor.model.onnx.translator import Translator, Value

aten = torch.ops.aten


def constant(t: Translator, ins: list, attrs: dict[str, Any]) -> torch.Tensor:
    (key, value), *_ = attrs.items()
    if key == "value":
        return value
    if key in ("value_float", "value_floats", "value_int", "value_ints"):
        return torch.tensor(value, dtype=torch.float32 if "float" in key else torch.int64)
    raise t.unsupported(f"a Constant of kind {key}")


def batch_norm(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    if attrs.get("training_mode", 0):
        raise t.unsupported("BatchNormalization in training mode")
    x, scale, bias, mean, var = ins[:5]
    momentum = 1.0 - attrs.get("momentum", 0.9)
    eps = attrs.get("epsilon", 1e-5)
    return t.call(aten.batch_norm.default, x, scale, bias, mean, var, False, momentum, eps, False)


def gemm(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """alpha * A' @ B' + beta * C as `aten.linear(A', weight, bias)`: weight = B'^T
    (scaled by alpha), bias = beta * C when C is a constant vector."""
    a, b, c = (*ins, None)[:3]
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if attrs.get("transA", 0):
        a = t.call(aten.t.default, a)
    weight = b if attrs.get("transB", 0) else t.call(aten.t.default, b)
    if alpha != 1.0:
        weight = t.call(aten.mul.Tensor, weight, alpha)
    if c is not None and beta != 1.0:
        c = t.call(aten.mul.Tensor, c, beta)
    vector = isinstance(c, torch.Tensor) and c.dim() <= 2 and c.shape[:-1] in ((), (1,))
    out_features = _out_features(weight)
    if vector and out_features is not None and c.shape[-1:] == (out_features,):
        return t.call(aten.linear.default, a, weight, c if c.dim() == 1 else c[0])
    out = t.call(aten.linear.default, a, weight, None)
    return out if c is None else t.call(aten.add.Tensor, out, c)


def matmul(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    a, b = ins
    if isinstance(b, torch.Tensor) and b.dim() == 2:
        return t.call(aten.linear.default, a, t.call(aten.t.default, b), None)
    return t.call(aten.matmul.default, a, b)


def add(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.add.Tensor, *ins)


def mul(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.mul.Tensor, *ins)


def relu(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.relu.default, ins[0])


def leaky_relu(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.leaky_relu.default, ins[0], attrs.get("alpha", 0.01))


def sigmoid(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.sigmoid.default, ins[0])


def hard_sigmoid(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """`max(0, min(1, alpha x + beta))` as `aten.hardsigmoid(6 (alpha x + beta - 1/2))`
    (torch's `clamp(y / 6 + 1/2, 0, 1)`), so that LRP sees the gate it is (`GATE_OPS`);
    torch's own alpha = 1/6, beta = 1/2 need no affine step."""
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    x = ins[0]
    scale, shift = 6.0 * alpha, 6.0 * (beta - 0.5)
    if abs(scale - 1.0) > 1e-6:
        x = t.call(aten.mul.Tensor, x, scale)
    if abs(shift) > 1e-6:
        x = t.call(aten.add.Tensor, x, shift)
    return t.call(aten.hardsigmoid.default, x)


def layer_norm(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """LayerNormalization over the axes from `axis` on (normalised shape: the scale's)."""
    x, scale, bias = (*ins, None)[:3]
    axis = attrs.get("axis", -1)
    if isinstance(scale, torch.Tensor):
        normalized = list(scale.shape)
    else:
        normalized = (t.shape(0) or [])[axis:]
    if len(normalized) != (t.rank(0) - axis if axis >= 0 else -axis) or None in normalized:
        raise t.unsupported("a LayerNormalization whose scale does not span the normalised axes")
    if attrs.get("stash_type", 1) != 1 or len(t.node.output) > 1 and any(t.node.output[1:]):
        raise t.unsupported("the LayerNormalization statistics outputs")
    eps = attrs.get("epsilon", 1e-5)
    return t.call(aten.layer_norm.default, x, normalized, scale, bias, eps)


def erf(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.erf.default, ins[0])


def gelu(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.gelu.default, ins[0], approximate=attrs.get("approximate", "none"))


def hardswish(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.hardswish.default, ins[0])


def clip(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Clip as `aten.hardtanh` (an activation for LRP), an absent bound being infinite."""
    if t.opset < 11:
        low, high = attrs.get("min", -math.inf), attrs.get("max", math.inf)
    else:
        low_in, high_in = (t.static(v, "Clip bound") for v in (*ins[1:], None, None)[:2])
        low = -math.inf if low_in is None else float(low_in)
        high = math.inf if high_in is None else float(high_in)
    if (low, high) == (-math.inf, math.inf):
        return ins[0]
    return t.call(aten.hardtanh.default, ins[0], low, high)


def identity(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return ins[0]


def _out_features(weight: Value) -> int | None:
    return weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None
