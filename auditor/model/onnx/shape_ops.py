"""Converters of the shape operations: concat, flatten, reshape, transpose, softmax."""

from __future__ import annotations

from typing import Any

import torch

from auditor.model.onnx.shape_arith import reshape_target
from auditor.model.onnx.translator import Translator, Value

aten = torch.ops.aten


def concat(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.cat.default, [v for v in ins if v is not None], attrs["axis"])


def flatten(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """ONNX Flatten(axis) -> 2-D (prod dims[:axis], prod dims[axis:])."""
    axis = attrs.get("axis", 1)
    if axis < 0:
        axis += t.rank(0)
    if axis == 0:
        flat = t.call(aten.flatten.using_ints, ins[0], 0, -1)
        return t.call(aten.unsqueeze.default, flat, 0)
    out = t.call(aten.flatten.using_ints, ins[0], axis, -1)
    return out if axis == 1 else t.call(aten.flatten.using_ints, out, 0, axis - 1)


def reshape(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Reshape to a constant shape (folded shape arithmetic included: `reshape_target`); a 0
    copies the input's dimension (unless `allowzero`), read at run time when it is not static."""
    shape = reshape_target(t, ins[0], t.static(ins[1], "Reshape shape"))
    if not attrs.get("allowzero", 0):
        dims = t.shape(0) or []
        for i, size in enumerate(shape):
            if isinstance(size, int) and size == 0:
                known = dims[i] if i < len(dims) else None
                shape[i] = known if known is not None else t.call(aten.sym_size.int, ins[0], i)
    return t.call(aten.reshape.default, ins[0], shape)


def transpose(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    perm = attrs.get("perm") or list(reversed(range(t.rank(0))))
    return t.call(aten.permute.default, ins[0], perm)


def softmax(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Softmax along `axis` (before opset 13 it spans all axes from `axis` on, which is the
    same only for the last axis)."""
    if t.opset >= 13:
        return t.call(aten.softmax.int, ins[0], attrs.get("axis", -1))
    axis, rank = attrs.get("axis", 1), t.rank(0)
    if axis % rank != rank - 1:
        raise t.unsupported(f"a Softmax over axes {axis}.. (opset {t.opset})")
    return t.call(aten.softmax.int, ins[0], -1)
