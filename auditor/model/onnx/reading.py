"""Reading ONNX files and the protobuf helpers the importer needs (inputs, shapes, attributes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from auditor.errors import ModelLoadError

ONNX_DOMAINS = ("", "ai.onnx")


def read_onnx(path: str | Path, *, name: str | None = None) -> onnx.ModelProto:
    """Load an ONNX file (with its external data); `ModelLoadError` if it cannot be read."""
    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx.load raises OSError, protobuf's DecodeError, ...
        raise ModelLoadError(
            f"ONNX model {name or path} cannot be read: {str(err).splitlines()[0]}",
            "check the path and that the file is an ONNX model",
        ) from err


def model_and_name(
    model: onnx.ModelProto | str | Path, name: str | None
) -> tuple[onnx.ModelProto, str]:
    """The model and the name error messages give it (its file, or its graph's name)."""
    if isinstance(model, onnx.ModelProto):
        return model, name or model.graph.name or "(in memory)"
    return read_onnx(model, name=name), name or str(model)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs (IR < 4 also lists the initializers as inputs)."""
    constants = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in constants]


def dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    """The declared dimensions of a value's tensor type."""
    return list(value.type.tensor_type.shape.dim)


def inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of the graph's values from ONNX shape inference (a dimension is None when it is
    dynamic); values that inference cannot type are left out."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:
        graph = model.graph
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in dims(v)]
        for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.tensor_type.HasField("shape")
    }


def with_input_size(model: onnx.ModelProto, size: tuple[int, int] | None) -> onnx.ModelProto:
    """The model with the symbolic height and width of its image input set to `size` (a copy;
    the model itself when there is nothing to set), so that shape inference and the folding of
    shape arithmetic see the audited input size. Declared sizes are kept."""
    (value,) = graph_inputs(model) or [None]
    if size is None or value is None or len(dims(value)) != 4:
        return model
    symbolic = [i for i, d in enumerate(dims(value)[2:], start=2) if not d.HasField("dim_value")]
    if not symbolic:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    (target,) = [v for v in copy.graph.input if v.name == value.name]
    for index in symbolic:
        target.type.tensor_type.shape.dim[index].dim_value = int(size[index - 2])
    return copy


def declared_shape(value: onnx.ValueInfoProto) -> list[int | None]:
    """A value's declared shape, None per symbolic dimension (`-1`, `None`, a name)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims(value)]


def tensor(proto: onnx.TensorProto) -> torch.Tensor:
    """An ONNX tensor (initializer or attribute) as a torch tensor."""
    return torch.from_numpy(np.array(numpy_helper.to_array(proto)))


def attribute(attr: onnx.AttributeProto) -> Any:
    """An attribute's value in Python: ints, floats, lists, str, or a tensor."""
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return tensor(value)
    return value


def op_name(node: onnx.NodeProto) -> str:
    """The node's operator, qualified by its domain outside the standard one."""
    return node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}.{node.op_type}"


def identifier(name: str) -> str:
    """A Python identifier for an ONNX value name (buffer and placeholder names)."""
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else f"v_{name}"
