"""Import an ONNX classifier: refuse unsupported operators, translate, check against ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import fx

from auditor.errors import ModelLoadError
from auditor.model.onnx.op_table import CONVERTERS
from auditor.model.onnx.parity import check_runtime_parity, random_input
from auditor.model.onnx.reading import ONNX_DOMAINS, model_and_name, op_name
from auditor.model.onnx.translator import UNSUPPORTED_FIX, Translator


def import_onnx(model: onnx.ModelProto | str | Path, *, name: str | None = None) -> fx.GraphModule:
    """Translate an ONNX classifier (one float image input, one output) into an FX graph of
    aten operations with module paths in `nn_module_stack`; `name` labels error messages."""
    proto, name = model_and_name(model, name)
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
) -> fx.GraphModule:
    """`import_onnx`, then (unless `check_parity` is false) compare the imported graph with
    ONNX Runtime on `example` (default: `random_input`) and raise `ModelLoadError` when they
    differ by more than `PARITY_TOLERANCE`."""
    proto, name = model_and_name(model, name)
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
