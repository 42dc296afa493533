"""Converters of ONNX shape arithmetic (Shape, Gather, Slice, Unsqueeze, Squeeze, Cast, Div,
Sub): folded to constants for the audited input size, or emitted as aten indexing on activations.

Exporters compute reshape targets at run time: the legacy `torch.onnx.export` spells
`x.view(x.size(0), -1)` as `Shape -> Gather(0) -> Unsqueeze -> Concat([., -1]) -> Reshape`,
paddle2onnx as `Shape -> Slice(0:1) -> Concat -> Reshape`. With the image size known (declared,
or `preprocess.size` for a symbolic one) every such value is a constant except the batch size;
`Shape` gives that dimension as the sentinel `BATCH`, the arithmetic runs on constants at import,
and `Reshape` turns the sentinel back into the batch size (`-1`, or `aten.sym_size` of its input).
A shape computed *from* the batch size (the sentinel divided or multiplied) is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch

from auditor.model.onnx.translator import Translator, Value

aten = torch.ops.aten

#: the dynamic batch dimension in a folded shape: no real size, and any arithmetic on it leaves
#: a value < -1 that `reshape_target` refuses
BATCH = -(2**40)


def shape(t: Translator, ins: list, attrs: dict[str, Any]) -> torch.Tensor:
    """The input's shape as an int64 constant (`start`/`end` as in ONNX), the dynamic batch
    dimension as `BATCH`; `ModelLoadError` where another dimension is unknown."""
    dims = t.shape(0)
    if dims is None or any(d is None for d in dims[1:]):
        raise t.unsupported(
            f"the Shape of a tensor of unknown size {dims} (set preprocess.size to the "
            "model's input size)"
        )
    sizes = [BATCH if d is None else int(d) for d in dims]
    return torch.tensor(sizes[slice(attrs.get("start"), attrs.get("end"))], dtype=torch.int64)


def gather(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """`Gather(data, indices, axis)`: numpy's `take`; on an activation, `aten.select` for a
    scalar index and `aten.index_select` for a list of them."""
    data, indices = ins
    indices = t.static(indices, "Gather index").to(torch.int64)
    axis = attrs.get("axis", 0)
    if isinstance(data, torch.Tensor):
        axis %= data.dim()
        picked = data.index_select(axis, indices.reshape(-1) % data.shape[axis])
        return picked.reshape((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]))
    if indices.dim() == 0:
        return t.call(aten.select.int, data, axis, int(indices))
    if indices.dim() == 1:
        return t.call(aten.index_select.default, data, axis, indices)
    raise t.unsupported("a Gather with a multi-dimensional index on an activation")


def unsqueeze(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    axes = _axes(t, ins, attrs, "Unsqueeze axes")
    rank = t.rank(0) + len(axes)
    out = ins[0]
    for axis in sorted(a % rank for a in axes):
        out = t.call(aten.unsqueeze.default, out, axis)
    return out


def squeeze(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    axes = _axes(t, ins, attrs, "Squeeze axes")
    if axes is None:
        return t.call(aten.squeeze.default, ins[0])
    rank = t.rank(0)
    return t.call(aten.squeeze.dims, ins[0], sorted(a % rank for a in axes))


def slice_(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """`Slice(data, starts, ends, axes, steps)` (inputs from opset 10, attributes before),
    positive steps only on activations."""
    if t.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends, axes, steps = (
            None if v is None else t.static(v, "Slice bound").tolist()
            for v in (*ins[1:], None, None)[:4]
        )
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    out = ins[0]
    if isinstance(out, torch.Tensor):
        index = [slice(None)] * out.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            index[axis] = slice(start, end, step)
        return _sliced(out, index)
    rank = t.rank(0)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step <= 0:
            raise t.unsupported("a Slice with a negative step on an activation")
        out = t.call(aten.slice.Tensor, out, axis % rank, start, end, step)
    return out


def cast(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Cast a constant to any type; an activation only to float32 (the identity here)."""
    dtype = _torch_dtype(attrs["to"])
    if isinstance(ins[0], torch.Tensor):
        return ins[0].to(dtype)
    if dtype is not torch.float32:
        raise t.unsupported(f"a Cast of an activation to {dtype}")
    return ins[0]


def div(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    """Division; integer constants divide as ONNX does (truncating)."""
    a, b = ins
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return t.call(aten.div.Tensor, a, b)


def sub(t: Translator, ins: list, attrs: dict[str, Any]) -> Value:
    return t.call(aten.sub.Tensor, *ins)


def reshape_target(t: Translator, x: Value, target: torch.Tensor) -> list[int | Value]:
    """A folded Reshape shape with `BATCH` turned back into the batch size: `-1` where the
    shape has no other `-1`, else `aten.sym_size(x, 0)`."""
    shape = [int(s) for s in target.tolist()]
    if any(s < -1 and s != BATCH for s in shape) or shape.count(BATCH) > 1:
        raise t.unsupported(f"a Reshape to a shape computed from the batch size ({shape})")
    if BATCH not in shape:
        return list(shape)
    fill: int | Value = -1 if -1 not in shape else t.call(aten.sym_size.int, x, 0)
    return [fill if s == BATCH else s for s in shape]


def _axes(t: Translator, ins: list, attrs: dict[str, Any], what: str) -> list[int] | None:
    """Axes of Unsqueeze / Squeeze: an input from opset 13, an attribute before."""
    if t.opset < 13:
        return attrs.get("axes")
    value = t.static((*ins, None)[1], what)
    return None if value is None else [int(a) for a in value.tolist()]


def _sliced(value: torch.Tensor, index: list[slice]) -> torch.Tensor:
    """numpy-style slicing of a constant (negative steps included)."""
    return torch.from_numpy(value.numpy()[tuple(index)].copy())


def _torch_dtype(onnx_type: int) -> torch.dtype:
    numpy_type = onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
    return torch.from_numpy(np.zeros(0, numpy_type)).dtype
