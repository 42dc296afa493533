"""Graphs exported for one batch size: MLflow's pt2 export of a batch-1 `input_example`.

`mlflow.pytorch.log_model` exports with `Dim.AUTO` on the batch dimension, and `torch.export`
specialises a dimension whose example size is 1: `x.view(x.size(0), -1)` is recorded as
`view(x, [1, -1])`, and a batch of 64 then fails in the first dense layer. `generalise_batch`
rewrites such reshape targets to read the batch size and checks the rewritten graph on a batch of
two against the graph run once per sample; a graph that still differs is refused, naming the
re-export that fixes it.
"""

from __future__ import annotations

import torch
from torch import fx

from auditor.errors import ModelLoadError
from auditor.model.ops import RESHAPE_OPS

aten = torch.ops.aten

BATCH_FIX = "log the model with an input_example of 2 or more samples (mlflow.pytorch.log_model)"
#: largest |batched - per sample| accepted, relative to max(1, max |per-sample output|)
TOLERANCE = 1e-4


def exported_batch(gm: fx.GraphModule) -> int | None:
    """The batch size the graph's input was specialised to (None: dynamic or not recorded)."""
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    value = placeholder.meta.get("val")
    if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(value.shape[0], int):
        return value.shape[0]
    return None


def generalise_batch(gm: fx.GraphModule, name: str) -> fx.GraphModule:
    """`gm`, exported for batch size 1, rewritten for any batch size: each reshape to a shape
    that starts with the exported batch size 1 reads the batch size instead (`-1`, or
    `aten.sym_size(input, 0)` where the shape has a `-1` already). Verified on two samples
    against the original run per sample; `ModelLoadError` (naming `name`) when they differ."""
    if exported_batch(gm) != 1:
        return gm
    original = fx.GraphModule(gm, _copy(gm.graph))
    for node in list(gm.graph.nodes):
        if node.target not in RESHAPE_OPS or not _batch_one(node.args[0]):
            continue
        shape = list(node.args[1])
        if not shape or shape[0] != 1:
            continue
        if -1 in shape:
            with gm.graph.inserting_before(node):
                shape[0] = gm.graph.call_function(aten.sym_size.int, (node.args[0], 0))
            shape[0].meta["nn_module_stack"] = dict(node.meta.get("nn_module_stack") or {})
        else:
            shape[0] = -1
        node.args = (node.args[0], shape, *node.args[2:])
    gm.recompile()
    _check_batched(original, gm, name)
    return gm


def _batch_one(node: object) -> bool:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == 1


def _copy(graph: fx.Graph) -> fx.Graph:
    copy = fx.Graph()
    out = copy.graph_copy(graph, {})
    copy.output(out)
    return copy


def _check_batched(original: fx.GraphModule, batched: fx.GraphModule, name: str) -> None:
    placeholder = next(n for n in original.graph.nodes if n.op == "placeholder")
    shape = tuple(placeholder.meta["val"].shape[1:])
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.cat([original(x[i : i + 1]) for i in range(2)])
        try:
            actual = batched(x)
        except RuntimeError as err:
            raise ModelLoadError(
                f"model {name} was exported for batch size 1 and fails on a batch of 2 even "
                f"with its reshapes generalised: {str(err).splitlines()[0]}",
                BATCH_FIX,
            ) from err
    scale = max(1.0, float(expected.abs().max()))
    if actual.shape != expected.shape or float((actual - expected).abs().max()) > TOLERANCE * scale:
        raise ModelLoadError(
            f"model {name} was exported for batch size 1 and gives other outputs on a batch of "
            "2 than per sample",
            BATCH_FIX,
        )
