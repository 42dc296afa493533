"""Import ONNX classifiers into the auditor's graph of aten operations.

An ONNX model of the standard CNN op set becomes an `fx.GraphModule` called `gm(x) -> logits`
whose nodes are the aten operations `torch.export` emits for the same layers (`aten.conv2d`,
`aten.batch_norm`, `aten.linear`, `aten.relu`, `aten.max_pool2d`, ...), so layer addressing,
graph splitting, BatchNorm folding and every relevance rule apply to it unchanged. The
initializers become buffers of the GraphModule; operations on constants only (a transposed
Gemm weight, an `Identity` of an initializer) are evaluated at import.

Module paths come from the ONNX nodes (see `onnx_module_paths`): the TorchScript-based
`torch.onnx.export` names a node `/layer1/layer1.0/conv1/Conv` after the modules enclosing it,
which maps back to the paths `layer1`, `layer1.0`, `layer1.0.conv1` that `torch.export` records
for the same operation; the torch.export-based exporter (`dynamo=True`) stores those paths in the
node's `pkg.torch.onnx.name_scopes` metadata.

Any operator outside the supported set is refused with one `ModelLoadError` naming them all;
`load_onnx` also checks the imported graph against ONNX Runtime on a random input.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import fx, nn

from auditor.errors import ModelLoadError

aten = torch.ops.aten
Value = fx.Node | torch.Tensor

ONNX_DOMAINS = ("", "ai.onnx")
UNSUPPORTED_FIX = "export the model with the standard CNN op set, or provide the pytorch flavour"
# Largest accepted |imported - ONNX Runtime|, relative to max(1, max |ONNX Runtime output|).
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 2
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def onnx_module_paths(node: onnx.NodeProto) -> list[str]:
    """Module paths enclosing an ONNX node, outermost first: the `NAME_SCOPES` metadata the
    torch.export-based exporter writes (`['', 'layer1', 'layer1.0', <fx node>]`, root and
    node name dropped) where present and readable, else `scope_paths(node.name)`."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            return [str(scope) for scope in scopes[1:-1] if scope]
    return scope_paths(node.name)


def scope_paths(node_name: str) -> list[str]:
    """Module paths enclosing an ONNX node, outermost first, from its "/"-separated name.

    `torch.onnx.export` names a node `/<scope>/.../<scope>/<Op>`, one scope per enclosing
    module; a scope is the module's attribute name, prefixed with its parent's own scope when
    the attribute name is numeric (a `Sequential` child): `/layer2/layer2.0/downsample/
    downsample.0/Conv` -> `layer2`, `layer2.0`, `layer2.0.downsample`,
    `layer2.0.downsample.0`. A scope without that prefix is appended as it stands; a name
    without "/" (`Identity_3`) belongs to the root module (no path).
    """
    scopes = node_name.strip("/").split("/")[:-1]
    paths: list[str] = []
    for scope in scopes:
        parent = paths[-1] if paths else ""
        own = _unqualified(parent)
        if own and scope.startswith(own + "."):
            scope = scope[len(own) + 1 :]
        paths.append(f"{parent}.{scope}" if parent else scope)
    return paths


def import_onnx(model: onnx.ModelProto | str | Path, *, name: str | None = None) -> fx.GraphModule:
    """Translate an ONNX classifier (one float image input, one output) into an FX graph of
    aten operations with module paths in `nn_module_stack`; `name` labels error messages."""
    proto, name = _read(model, name)
    unsupported = [
        (_op_name(node), node.name or f"#{index}")
        for index, node in enumerate(proto.graph.node)
        if node.domain not in ONNX_DOMAINS or node.op_type not in _Importer.CONVERTERS
    ]
    if unsupported:
        ops = ", ".join(dict.fromkeys(op for op, _ in unsupported))
        nodes = ", ".join(node for _, node in unsupported)
        raise ModelLoadError(
            f"ONNX model {name} uses unsupported operator(s) {ops} (nodes {nodes})",
            UNSUPPORTED_FIX,
        )
    return _Importer(proto, name).run()


def load_onnx(
    model: onnx.ModelProto | str | Path,
    *,
    check_parity: bool = True,
    example: torch.Tensor | None = None,
    name: str | None = None,
) -> fx.GraphModule:
    """`import_onnx`, then (unless `check_parity` is false) compare the imported graph with
    ONNX Runtime on `example` (default: `random_input`) and raise `ModelLoadError` when they
    differ by more than `PARITY_TOLERANCE`."""
    proto, name = _read(model, name)
    gm = import_onnx(proto, name=name)
    if check_parity:
        check_runtime_parity(
            proto,
            gm,
            random_input(proto, name=name) if example is None else example,
            name=name,
            what="the imported graph",
            fix="the importer mistranslates an operator of this model; provide the pytorch flavour",
        )
    return gm


def random_input(
    model: onnx.ModelProto, *, name: str = "", shape: Sequence[int] | None = None
) -> torch.Tensor:
    """A deterministic standard-normal batch of `shape`, by default the model's declared input
    shape with `PARITY_BATCH` samples for a dynamic batch dimension."""
    if shape is not None:
        return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))
    (value,) = _graph_inputs(model)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in _dims(value)]
    if dims and dims[0] is None:
        dims[0] = PARITY_BATCH
    if any(d is None for d in dims):
        raise ModelLoadError(
            f"ONNX model {name or model.graph.name} declares no fixed size for input "
            f"'{value.name}' (shape {dims})",
            "give an example input (MLflow: log the model with an input_example)",
        )
    return random_input(model, shape=dims)


def check_runtime_parity(
    model: onnx.ModelProto,
    run: Callable[[torch.Tensor], torch.Tensor],
    example: torch.Tensor,
    *,
    name: str,
    what: str,
    fix: str,
) -> float:
    """Run `run` (a torch version of `model`) and ONNX Runtime on `example`; return the max
    absolute difference of their outputs, or raise `ModelLoadError` (saying `what` differs)
    when it exceeds `PARITY_TOLERANCE` times max(1, max |ONNX Runtime output|)."""
    example = example.detach().to(torch.float32)
    expected = _runtime_output(model, example, name)
    try:
        with torch.no_grad():
            actual = run(example)
    except RuntimeError as err:  # an operation refuses the input: a mistranslated graph
        raise ModelLoadError(
            f"ONNX model {name}: {what} fails on an input of shape {tuple(example.shape)}: "
            f"{str(err).splitlines()[0]}",
            fix,
        ) from err
    if actual.shape != expected.shape:
        raise ModelLoadError(
            f"ONNX model {name}: {what} returns shape {tuple(actual.shape)}, ONNX Runtime "
            f"{tuple(expected.shape)}",
            fix,
        )
    diff = float((actual - expected).abs().max())
    tolerance = PARITY_TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= tolerance:
        raise ModelLoadError(
            f"ONNX model {name}: {what} differs from ONNX Runtime by {diff:.3g} "
            f"(tolerance {tolerance:.3g}) on a random input",
            fix,
        )
    return diff


def _runtime_output(model: onnx.ModelProto, example: torch.Tensor, name: str) -> torch.Tensor:
    """The model's first output computed by ONNX Runtime (one CPU thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: example.numpy()}
        return torch.from_numpy(session.run(None, feed)[0])
    except Exception as err:  # onnxruntime raises its own exception types per failure
        raise ModelLoadError(
            f"ONNX Runtime cannot run ONNX model {name} on an input of shape "
            f"{tuple(example.shape)}: {str(err).splitlines()[0]}",
            "check the model with onnx.checker, or give an example input of the right shape",
        ) from err


class _Importer:
    """Translates one ONNX graph node by node; `values` maps ONNX value names to graph nodes
    (computed at run time) or tensors (constants)."""

    CONVERTERS: ClassVar[dict[str, str]] = {
        "Conv": "_conv",
        "BatchNormalization": "_batch_norm",
        "Relu": "_relu",
        "LeakyRelu": "_leaky_relu",
        "Sigmoid": "_sigmoid",
        "Clip": "_clip",
        "HardSwish": "_hardswish",
        "MaxPool": "_max_pool",
        "AveragePool": "_average_pool",
        "GlobalAveragePool": "_global_average_pool",
        "ReduceMean": "_reduce_mean",
        "Gemm": "_gemm",
        "MatMul": "_matmul",
        "Add": "_add",
        "Mul": "_mul",
        "Concat": "_concat",
        "Flatten": "_flatten",
        "Reshape": "_reshape",
        "Transpose": "_transpose",
        "Softmax": "_softmax",
        "Identity": "_identity",
        "Dropout": "_identity",
        "Constant": "_constant",
    }

    def __init__(self, model: onnx.ModelProto, name: str):
        self.model = model
        self.name = name
        self.opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 1)
        self.shapes = _inferred_shapes(model)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, Value] = {}
        self._buffers: dict[int, tuple[torch.Tensor, fx.Node]] = {}
        self._hints: dict[int, str] = {}
        self.node = onnx.NodeProto()
        self.stack: dict[str, tuple[str, str]] = {}

    def run(self) -> fx.GraphModule:
        for init in self.model.graph.initializer:
            self._store(init.name, _tensor(init))
        inputs = _graph_inputs(self.model)
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
        self.values[value.name] = self.graph.placeholder(_identifier(value.name))
        for node in self.model.graph.node:
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
        self.stack = {path: (path, "") for path in onnx_module_paths(node)}
        ins = [self._value(name) if name else None for name in node.input]
        attrs = {a.name: _attribute(a) for a in node.attribute}
        result = getattr(self, self.CONVERTERS[node.op_type])(ins, attrs)
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

    def _call(self, target: Callable, *args: Any) -> Value:
        """`target(*args)` as a graph node, or evaluated now when no argument is a node."""
        nodes: list[fx.Node] = []
        fx.node.map_aggregate(args, lambda a: nodes.append(a) if isinstance(a, fx.Node) else None)
        if not nodes:
            with torch.no_grad():
                return target(*args)
        args = fx.node.map_aggregate(
            args, lambda a: self._buffer(a) if isinstance(a, torch.Tensor) else a
        )
        node = self.graph.call_function(target, args)
        node.meta["nn_module_stack"] = dict(self.stack)
        return node

    def _buffer(self, tensor: torch.Tensor) -> fx.Node:
        """A `get_attr` node reading `tensor`, registered once as a buffer of the module (the
        tensor is kept referenced, so that its id is not reused)."""
        if id(tensor) not in self._buffers:
            base = _identifier(self._hints.get(id(tensor)) or f"{self.node.name}_constant")
            name, index = base, 1
            while hasattr(self.root, name):
                name, index = f"{base}_{index}", index + 1
            self.root.register_buffer(name, tensor.detach().contiguous())
            self._buffers[id(tensor)] = (tensor, self.graph.get_attr(name))
        return self._buffers[id(tensor)][1]

    def _constant(self, ins: list, attrs: dict[str, Any]) -> torch.Tensor:
        (key, value), *_ = attrs.items()
        if key == "value":
            return value
        if key in ("value_float", "value_floats", "value_int", "value_ints"):
            return torch.tensor(value, dtype=torch.float32 if "float" in key else torch.int64)
        raise self._unsupported(f"a Constant of kind {key}")

    def _static(self, value: Value | None, what: str) -> torch.Tensor | None:
        """A constant input, as a tensor (None where the optional input is absent)."""
        if isinstance(value, fx.Node):
            raise self._unsupported(f"a computed {what} (only constants are imported)")
        return value

    def _rank(self, index: int) -> int:
        shape = self._shape(index)
        if shape is None:
            raise ModelLoadError(
                f"ONNX model {self.name}: the rank of input {index} of node {self._where()} "
                "is unknown",
                "export the model with shape information (onnx.shape_inference)",
            )
        return len(shape)

    def _shape(self, index: int) -> list[int | None] | None:
        value = self.values.get(self.node.input[index])
        if isinstance(value, torch.Tensor):
            return list(value.shape)
        return self.shapes.get(self.node.input[index])

    def _where(self) -> str:
        return f"{self.node.name or '(unnamed)'} ({self.node.op_type})"

    def _unsupported(self, what: str) -> ModelLoadError:
        return ModelLoadError(
            f"ONNX model {self.name}: node {self._where()} uses {what}, which the auditor "
            "does not import",
            UNSUPPORTED_FIX,
        )

    # -- convolution and pooling -------------------------------------------------------------

    def _conv(self, ins: list, attrs: dict[str, Any]) -> Value:
        x, w, b = (*ins, None)[:3]
        kernel = attrs.get("kernel_shape") or list(self._shape(1) or [])[2:]
        self._require_2d(kernel)
        stride, dilation = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
        x, padding = self._pad(x, attrs, kernel, stride, dilation, fill=0.0, bounded=False)
        return self._call(
            aten.conv2d.default, x, w, b, stride, padding, dilation, attrs.get("group", 1)
        )

    def _max_pool(self, ins: list, attrs: dict[str, Any]) -> Value:
        if len(self.node.output) > 1 and self.node.output[1]:
            raise self._unsupported("the Indices output")
        kernel = attrs["kernel_shape"]
        self._require_2d(kernel)
        stride, dilation = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1])
        x, padding = self._pad(ins[0], attrs, kernel, stride, dilation, fill=-math.inf)
        ceil = bool(attrs.get("ceil_mode", 0))
        return self._call(aten.max_pool2d.default, x, kernel, stride, padding, dilation, ceil)

    def _average_pool(self, ins: list, attrs: dict[str, Any]) -> Value:
        kernel = attrs["kernel_shape"]
        self._require_2d(kernel)
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self._unsupported("a dilated AveragePool")
        stride = attrs.get("strides", [1, 1])
        include_pad = bool(attrs.get("count_include_pad", 0))
        fill = 0.0 if include_pad else None
        x, padding = self._pad(ins[0], attrs, kernel, stride, [1, 1], fill=fill)
        ceil = bool(attrs.get("ceil_mode", 0))
        return self._call(aten.avg_pool2d.default, x, kernel, stride, padding, ceil, include_pad)

    def _global_average_pool(self, ins: list, attrs: dict[str, Any]) -> Value:
        if self._rank(0) != 4:
            raise self._unsupported("a GlobalAveragePool over other than 2 spatial dimensions")
        return self._call(aten.adaptive_avg_pool2d.default, ins[0], [1, 1])

    def _reduce_mean(self, ins: list, attrs: dict[str, Any]) -> Value:
        """Mean over `axes` (an input from opset 18, an attribute before; none: all axes)."""
        axes = attrs.get("axes") if self.opset < 18 else self._static((*ins, None)[1], "axes")
        if axes is None or len(axes) == 0:
            if attrs.get("noop_with_empty_axes", 0):
                return ins[0]
            axes = range(self._rank(0))
        keepdim = bool(attrs.get("keepdims", 1))
        return self._call(aten.mean.dim, ins[0], [int(a) for a in axes], keepdim)

    def _require_2d(self, kernel: list[int]) -> None:
        if len(kernel) != 2:
            raise self._unsupported(f"a {len(kernel)}-D kernel (only 2-D images are supported)")

    def _pad(
        self,
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
        top, left, bottom, right = self._pads(attrs, kernel, stride, dilation)
        windows = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
        within = not bounded or (2 * top <= windows[0] and 2 * left <= windows[1])
        if top == bottom and left == right and within:
            return x, [top, left]
        if fill is None:
            raise self._unsupported(f"padding {[top, left, bottom, right]} outside the image")
        return self._call(aten.constant_pad_nd.default, x, [left, right, top, bottom], fill), [0, 0]

    def _pads(
        self, attrs: dict[str, Any], kernel: list[int], stride: list[int], dilation: list[int]
    ) -> list[int]:
        """ONNX pads [top, left, bottom, right], resolving `auto_pad`."""
        auto_pad = attrs.get("auto_pad", "NOTSET")
        if auto_pad == "NOTSET":
            return list(attrs.get("pads", [0, 0, 0, 0]))
        if auto_pad == "VALID":
            return [0, 0, 0, 0]
        size = (self._shape(0) or [None] * 4)[2:]
        if any(s is None for s in size):
            raise self._unsupported(f"auto_pad={auto_pad} on an input of unknown size")
        total = [
            max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
            for s, k, st, d in zip(size, kernel, stride, dilation)
        ]
        small = [t // 2 for t in total]
        large = [t - t // 2 for t in total]
        return small + large if auto_pad == "SAME_UPPER" else large + small

    # -- dense, elementwise, normalisation ---------------------------------------------------

    def _batch_norm(self, ins: list, attrs: dict[str, Any]) -> Value:
        if attrs.get("training_mode", 0):
            raise self._unsupported("BatchNormalization in training mode")
        x, scale, bias, mean, var = ins[:5]
        momentum = 1.0 - attrs.get("momentum", 0.9)
        eps = attrs.get("epsilon", 1e-5)
        return self._call(
            aten.batch_norm.default, x, scale, bias, mean, var, False, momentum, eps, False
        )

    def _gemm(self, ins: list, attrs: dict[str, Any]) -> Value:
        """alpha * A' @ B' + beta * C as `aten.linear(A', weight, bias)`: weight = B'^T
        (scaled by alpha), bias = beta * C when C is a constant vector."""
        a, b, c = (*ins, None)[:3]
        alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
        if attrs.get("transA", 0):
            a = self._call(aten.t.default, a)
        weight = b if attrs.get("transB", 0) else self._call(aten.t.default, b)
        if alpha != 1.0:
            weight = self._call(aten.mul.Tensor, weight, alpha)
        if c is not None and beta != 1.0:
            c = self._call(aten.mul.Tensor, c, beta)
        vector = isinstance(c, torch.Tensor) and c.dim() <= 2 and c.shape[:-1] in ((), (1,))
        out_features = _out_features(weight)
        if vector and out_features is not None and c.shape[-1:] == (out_features,):
            return self._call(aten.linear.default, a, weight, c if c.dim() == 1 else c[0])
        out = self._call(aten.linear.default, a, weight, None)
        return out if c is None else self._call(aten.add.Tensor, out, c)

    def _matmul(self, ins: list, attrs: dict[str, Any]) -> Value:
        a, b = ins
        if isinstance(b, torch.Tensor) and b.dim() == 2:
            return self._call(aten.linear.default, a, self._call(aten.t.default, b), None)
        return self._call(aten.matmul.default, a, b)

    def _add(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.add.Tensor, *ins)

    def _mul(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.mul.Tensor, *ins)

    def _relu(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.relu.default, ins[0])

    def _leaky_relu(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.leaky_relu.default, ins[0], attrs.get("alpha", 0.01))

    def _sigmoid(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.sigmoid.default, ins[0])

    def _hardswish(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.hardswish.default, ins[0])

    def _clip(self, ins: list, attrs: dict[str, Any]) -> Value:
        """Clip as `aten.hardtanh` (an activation for LRP), an absent bound being infinite."""
        if self.opset < 11:
            low, high = attrs.get("min", -math.inf), attrs.get("max", math.inf)
        else:
            low_in, high_in = (self._static(v, "Clip bound") for v in (*ins[1:], None, None)[:2])
            low = -math.inf if low_in is None else float(low_in)
            high = math.inf if high_in is None else float(high_in)
        if (low, high) == (-math.inf, math.inf):
            return ins[0]
        return self._call(aten.hardtanh.default, ins[0], low, high)

    def _identity(self, ins: list, attrs: dict[str, Any]) -> Value:
        return ins[0]

    # -- shapes ------------------------------------------------------------------------------

    def _concat(self, ins: list, attrs: dict[str, Any]) -> Value:
        return self._call(aten.cat.default, [v for v in ins if v is not None], attrs["axis"])

    def _flatten(self, ins: list, attrs: dict[str, Any]) -> Value:
        """ONNX Flatten(axis) -> 2-D (prod dims[:axis], prod dims[axis:])."""
        axis = attrs.get("axis", 1)
        if axis < 0:
            axis += self._rank(0)
        if axis == 0:
            flat = self._call(aten.flatten.using_ints, ins[0], 0, -1)
            return self._call(aten.unsqueeze.default, flat, 0)
        out = self._call(aten.flatten.using_ints, ins[0], axis, -1)
        return out if axis == 1 else self._call(aten.flatten.using_ints, out, 0, axis - 1)

    def _reshape(self, ins: list, attrs: dict[str, Any]) -> Value:
        """Reshape to a constant shape; a 0 copies the input's dimension (unless
        `allowzero`), read at run time when it is not static."""
        shape: list[int | Value] = [int(s) for s in self._static(ins[1], "Reshape shape").tolist()]
        if not attrs.get("allowzero", 0):
            dims = self._shape(0) or []
            for i, size in enumerate(shape):
                if size == 0:
                    known = dims[i] if i < len(dims) else None
                    shape[i] = (
                        known if known is not None else self._call(aten.sym_size.int, ins[0], i)
                    )
        return self._call(aten.reshape.default, ins[0], shape)

    def _transpose(self, ins: list, attrs: dict[str, Any]) -> Value:
        perm = attrs.get("perm") or list(reversed(range(self._rank(0))))
        return self._call(aten.permute.default, ins[0], perm)

    def _softmax(self, ins: list, attrs: dict[str, Any]) -> Value:
        """Softmax along `axis` (before opset 13 it spans all axes from `axis` on, which is the
        same only for the last axis)."""
        if self.opset >= 13:
            return self._call(aten.softmax.int, ins[0], attrs.get("axis", -1))
        axis, rank = attrs.get("axis", 1), self._rank(0)
        if axis % rank != rank - 1:
            raise self._unsupported(f"a Softmax over axes {axis}.. (opset {self.opset})")
        return self._call(aten.softmax.int, ins[0], -1)


def read_onnx(path: str | Path, *, name: str | None = None) -> onnx.ModelProto:
    """Load an ONNX file (with its external data); `ModelLoadError` if it cannot be read."""
    try:
        return onnx.load(str(path))
    except Exception as err:  # onnx.load raises OSError, protobuf's DecodeError, ...
        raise ModelLoadError(
            f"ONNX model {name or path} cannot be read: {str(err).splitlines()[0]}",
            "check the path and that the file is an ONNX model",
        ) from err


def _read(model: onnx.ModelProto | str | Path, name: str | None) -> tuple[onnx.ModelProto, str]:
    """The model and the name error messages give it (its file, or its graph's name)."""
    if isinstance(model, onnx.ModelProto):
        return model, name or model.graph.name or "(in memory)"
    return read_onnx(model, name=name), name or str(model)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs (IR < 4 also lists the initializers as inputs)."""
    constants = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in constants]


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes of the graph's values from ONNX shape inference (a dimension is None when it is
    dynamic); values that inference cannot type are left out."""
    try:
        graph = onnx.shape_inference.infer_shapes(model).graph
    except onnx.shape_inference.InferenceError:
        graph = model.graph
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in _dims(v)]
        for v in (*graph.input, *graph.value_info, *graph.output)
        if v.type.tensor_type.HasField("shape")
    }


def _tensor(proto: onnx.TensorProto) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_helper.to_array(proto)))


def _attribute(attr: onnx.AttributeProto) -> Any:
    """An attribute's value in Python: ints, floats, lists, str, or a tensor."""
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return _tensor(value)
    return value


def _out_features(weight: Value) -> int | None:
    return weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}.{node.op_type}"


def _identifier(name: str) -> str:
    """A Python identifier for an ONNX value name (buffer and placeholder names)."""
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else f"v_{name}"


def _unqualified(path: str) -> str:
    """The scope name torch.onnx.export gives the module at `path`: its last non-numeric
    atom with the numeric atoms after it (`layer2.0.downsample.0` -> `downsample.0`)."""
    atoms = path.split(".")
    for index in range(len(atoms) - 1, -1, -1):
        if not atoms[index].isnumeric():
            return ".".join(atoms[index:])
    return path
