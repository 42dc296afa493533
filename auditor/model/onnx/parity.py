"""The runtime parity check: a torch version of an ONNX model against ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
import onnxruntime as ort
import torch

from auditor.errors import ModelLoadError
from auditor.model.onnx.reading import declared_shape, graph_inputs

# Largest accepted |imported - ONNX Runtime|, relative to max(1, max |ONNX Runtime output|).
PARITY_TOLERANCE = 1e-4
PARITY_BATCH = 2


def random_input(
    model: onnx.ModelProto, *, name: str = "", shape: Sequence[int] | None = None
) -> torch.Tensor:
    """A deterministic standard-normal batch of `shape`, by default the model's declared input
    shape with `PARITY_BATCH` samples for a dynamic batch dimension."""
    if shape is not None:
        return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(0))
    (value,) = graph_inputs(model)
    declared = declared_shape(value)
    if declared and declared[0] is None:
        declared[0] = PARITY_BATCH
    if any(d is None for d in declared):
        raise ModelLoadError(
            f"ONNX model {name or model.graph.name} declares no fixed size for input "
            f"'{value.name}' (shape {declared})",
            "set preprocess.size to the model's input size, or log the model with an input_example",
        )
    return random_input(model, shape=declared)


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
