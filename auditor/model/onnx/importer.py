"""Import an ONNX classifier: refuse unsupported operators, translate, check against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import fx

from auditor.errors import ModelLoadError
from auditor.model.onnx.op_table import CONVERTERS
from auditor.model.onnx.parity import check_runtime_parity, random_input
from auditor.model.onnx.reading import ONNX_DOMAINS, model_and_name, op_name, with_input_size
from auditor.model.onnx.translator import UNSUPPORTED_FIX, Translator


def import_onnx(
    model: onnx.ModelProto | str | Path,
    *,
    name: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> fx.GraphModule:
    """Translate an ONNX classifier (one float image input, one output) into an FX graph of
    aten operations with module paths in `nn_module_stack`; `name` labels error messages.
    `input_size` (height, width) stands for a symbolic image size: shape arithmetic is folded
    for it (`auditor.model.onnx.shape_arith`)."""
    proto, name = model_and_name(model, name)
    proto = with_input_size(proto, input_size)
    unsupported = [
        (op_name(node), node.name or f"#{index}")
        for index, node in enumerate(proto.graph.node)
        if node.domain not in ONNX_DOMAINS or node.op_type not in CONVERTERS
    ]
    if unsupported:
        ops = ", ".join(dict.fromkeys(op for op, _ in unsupported))
        nodes = ", ".join(node for _, node in unsupported)
        raise ModelLoadError(
            f"ONNX model {name} uses unsupported operator(s) {ops} (nodes {nodes})",
            UNSUPPORTED_FIX,
        )
    return Translator(proto, name, CONVERTERS).run()


def load_onnx(
    model: onnx.ModelProto | str | Path,
    *,
    check_parity: bool = True,
    example: torch.Tensor | None = None,
    name: str | None = None,
    input_size: tuple[int, int] | None = None,
) -> fx.GraphModule:
    """`import_onnx`, then (unless `check_parity` is false) compare the imported graph with
    ONNX Runtime on `example` (default: `random_input` of the declared shape, `input_size`
    standing for a symbolic height and width) and raise `ModelLoadError` when they
    differ by more than `PARITY_TOLERANCE`."""
    proto, name = model_and_name(model, name)
    gm = import_onnx(proto, name=name, input_size=input_size)
    if check_parity:
        check_runtime_parity(
            proto,
            gm,
            random_input(with_input_size(proto, input_size), name=name)
            if example is None
            else example,
            name=name,
            what="the imported graph",
            fix="the importer mistranslates an operator of this model; provide the pytorch flavour",
        )
    return gm
