"""The node-by-node translation of one ONNX graph into an FX graph of aten operations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import onnx
import torch
from torch import fx, nn

from auditor.errors import ModelLoadError
from auditor.model.graph import INPUT_SHAPE
from auditor.model.onnx.fusion import fuse_erf_gelu
from auditor.model.onnx.module_paths import has_scopes, onnx_module_paths
from auditor.model.onnx.reading import (
    ONNX_DOMAINS,
    attribute,
    declared_shape,
    graph_inputs,
    identifier,
    inferred_shapes,
    tensor,
)

Value = fx.Node | torch.Tensor
#: translates one ONNX node: (translator, inputs (None: absent), attributes) -> its output
Converter = Callable[["Translator", list, dict[str, Any]], Value]
UNSUPPORTED_FIX = "export the model with the standard CNN op set, or provide the pytorch flavour"


class Translator:
    """Translates one ONNX graph node by node, each by the converter of its op type;
    `values` maps ONNX value names to graph nodes (computed at run time) or tensors
    (constants). A converter reads the current `node`, the `opset` and the inputs' shapes,
    and emits operations with `call`."""

    def __init__(self, model: onnx.ModelProto, name: str, converters: Mapping[str, Converter]):
        self.model = model
        self.name = name
        self.converters = converters
        self.opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 1)
        self.shapes = inferred_shapes(model)
        self.scoped = has_scopes(model.graph)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, Value] = {}
        self._buffers: dict[int, tuple[torch.Tensor, fx.Node]] = {}
        self._hints: dict[int, str] = {}
        self.node = onnx.NodeProto()
        self.stack: dict[str, tuple[str, str]] = {}

    def run(self) -> fx.GraphModule:
        for init in self.model.graph.initializer:
            self._store(init.name, tensor(init))
        inputs = graph_inputs(self.model)
        outputs = self.model.graph.output
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"ONNX model {self.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "the auditor needs one image batch in and the logits out",
                "export the model with one input and one output",
            )
        (value,) = inputs
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ModelLoadError(
                f"ONNX model {self.name}: input '{value.name}' is not float32",
                "export the model with a float32 image input",
            )
        placeholder = self.graph.placeholder(identifier(value.name))
        placeholder.meta[INPUT_SHAPE] = tuple(declared_shape(value)[1:])
        self.values[value.name] = placeholder
        for node in fuse_erf_gelu(self.model):
            self._convert(node)
        result = self._value(outputs[0].name)
        if not isinstance(result, fx.Node):
            raise ModelLoadError(
                f"ONNX model {self.name}: the output does not depend on the input",
                "export the trained classifier, not a constant graph",
            )
        self.graph.output(result)
        gm = fx.GraphModule(self.root, self.graph, class_name="OnnxModel")
        gm.graph.lint()
        return gm

    def _convert(self, node: onnx.NodeProto) -> None:
        self.node = node
        self.stack = {path: (path, "") for path in onnx_module_paths(node, self.scoped)}
        ins = [self._value(name) if name else None for name in node.input]
        attrs = {a.name: attribute(a) for a in node.attribute}
        result = self.converters[node.op_type](self, ins, attrs)
        self._store(node.output[0], result)

    # -- values and emission -----------------------------------------------------------------

    def _value(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise ModelLoadError(
                f"ONNX model {self.name}: node {self._where()} reads '{name}', which no "
                "imported node produces",
                UNSUPPORTED_FIX,
            ) from None

    def _store(self, name: str, value: Value) -> None:
        if isinstance(value, torch.Tensor):
            self._hints.setdefault(id(value), name)
        self.values[name] = value

    def call(self, target: Callable, *args: Any, **kwargs: Any) -> Value:
        """`target(*args, **kwargs)` as a graph node, or evaluated now when no argument is a
        node."""
        nodes: list[fx.Node] = []
        fx.node.map_aggregate(args, lambda a: nodes.append(a) if isinstance(a, fx.Node) else None)
        if not nodes:
            with torch.no_grad():
                return target(*args, **kwargs)
        args = fx.node.map_aggregate(
            args, lambda a: self._buffer(a) if isinstance(a, torch.Tensor) else a
        )
        node = self.graph.call_function(target, args, kwargs)
        node.meta["nn_module_stack"] = dict(self.stack)
        return node

    def _buffer(self, tensor: torch.Tensor) -> fx.Node:
        """A `get_attr` node reading `tensor`, registered once as a buffer of the module (the
        tensor is kept referenced, so that its id is not reused)."""
        if id(tensor) not in self._buffers:
            base = identifier(self._hints.get(id(tensor)) or f"{self.node.name}_constant")
            name, index = base, 1
            while hasattr(self.root, name):
                name, index = f"{base}_{index}", index + 1
            self.root.register_buffer(name, tensor.detach().contiguous())
            self._buffers[id(tensor)] = (tensor, self.graph.get_attr(name))
        return self._buffers[id(tensor)][1]

    # -- what converters read ----------------------------------------------------------------

    def static(self, value: Value | None, what: str) -> torch.Tensor | None:
        """A constant input, as a tensor (None where the optional input is absent)."""
        if isinstance(value, fx.Node):
            raise self.unsupported(f"a computed {what} (only constants are imported)")
        return value

    def rank(self, index: int) -> int:
        """The rank of the current node's input `index`; `ModelLoadError` where unknown."""
        shape = self.shape(index)
        if shape is None:
            raise ModelLoadError(
                f"ONNX model {self.name}: the rank of input {index} of node {self._where()} "
                "is unknown",
                "export the model with shape information (onnx.shape_inference)",
            )
        return len(shape)

    def shape(self, index: int) -> list[int | None] | None:
        """The shape of the current node's input `index` (None where unknown)."""
        value = self.values.get(self.node.input[index])
        if isinstance(value, torch.Tensor):
            return list(value.shape)
        return self.shapes.get(self.node.input[index])

    def _where(self) -> str:
        return f"{self.node.name or '(unnamed)'} ({self.node.op_type})"

    def unsupported(self, what: str) -> ModelLoadError:
        """The error refusing a feature of the current node."""
        return ModelLoadError(
            f"ONNX model {self.name}: node {self._where()} uses {what}, which the auditor "
            "does not import",
            UNSUPPORTED_FIX,
        )
