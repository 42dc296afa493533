"""Canonical form of a model graph: the one spelling of each layer idiom the relevance rules bind to.

The same network reaches the auditor in several spellings: torchvision-style modules export
`nn.ReLU(inplace=True)` as `aten.relu_` and `out += identity` as `aten.add_`, eval-mode dropout
stays in the graph as `aten.dropout` / `aten.feature_dropout` with `train=False`, and a program
decomposed by `run_decompositions` holds BatchNorm as `_native_batch_norm_legit_no_training`
plus a `getitem`. `canonicalise` rewrites every graph (exported eager modules, MLflow pt2
programs, imported ONNX graphs) before any rule binds:

* in-place `aten.X_` becomes its functional `aten.X` (same overload); every later reader of
  the mutated tensor is rewired to the new node, so it reads the value it read before.
  An FX rewrite rather than `torch.export`'s functionalisation (`run_decompositions`): that needs
  an `ExportedProgram` (an ONNX import or a split graph is only an `fx.GraphModule`) and it
  also decomposes the graph (`conv2d` -> `convolution`, `linear` -> `permute` + `addmm`), which
  changes the operations layer search and the rules see. The rewrite is exact when the
  mutated tensor is nobody's view and no view of it is read after the mutation (a mutation
  would then reach another tensor); otherwise the graph is refused with the node named;
* an eval-mode dropout (any of `EVAL_DROPOUT_OPS` with `train=False`, in place or not) is the
  identity and is removed first: it mutates nothing, even when its input is a view
  (EfficientNet's `Dropout(inplace=True)` after `flatten`);
* decomposed BatchNorm and LayerNorm become `aten.batch_norm` (inference) and
  `aten.layer_norm`, so `fold_batchnorm` and the rules see one form of each;
* `x * sigmoid(x)` (SiLU as the ONNX exporter writes it) becomes `aten.silu(x)`, so SiLU is an
  activation whatever the artefact, not a product gated by a sigmoid.

Each rewritten node keeps its metadata (module path in `nn_module_stack`), so layers keep
their names.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from auditor.errors import ModelLoadError
from auditor.model.ops import (
    ALIASING_OPS,
    DECOMPOSED_BATCH_NORM_OPS,
    DECOMPOSED_LAYER_NORM_OPS,
    EVAL_DROPOUT_OPS,
)

aten = torch.ops.aten


def canonicalise(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite `gm` in place to its canonical form (see the module docstring) and return it."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        functional = _functional(node.target)
        if (functional or node.target) in EVAL_DROPOUT_OPS and not _dropout_training(node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            continue
        if functional is not None:
            _functionalise(gm.graph, node, functional)
        if node.target in DECOMPOSED_BATCH_NORM_OPS:
            _recompose_batch_norm(gm.graph, node)
        elif node.target in DECOMPOSED_LAYER_NORM_OPS:
            _recompose_layer_norm(gm.graph, node)
        elif node.target is aten.mul.Tensor:
            _recompose_silu(gm.graph, node)
    gm.graph.lint()
    gm.recompile()
    return gm


def _functional(target) -> torch._ops.OpOverload | None:
    """The functional overload of an in-place aten operation (`aten.relu_.default` ->
    `aten.relu.default`), None for any other target or where none exists."""
    if not isinstance(target, torch._ops.OpOverload) or target.namespace != "aten":
        return None
    name = target._schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_") or not target._schema.is_mutable:
        return None
    packet = getattr(aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _functionalise(graph: fx.Graph, node: fx.Node, functional) -> None:
    """Replace in-place `node` by `functional` and point later readers of its mutated first
    argument at it."""
    mutated = node.args[0]
    order = {n: i for i, n in enumerate(graph.nodes)}
    later = [u for u in mutated.users if u is not node and order[u] > order[node]]
    aliased = mutated.op == "call_function" and mutated.target in ALIASING_OPS
    read_views = [
        v for v in mutated.users
        if v is not node and v.target in ALIASING_OPS and order[v] < order[node]
        and any(order[u] > order[node] for u in v.users)
    ]  # fmt: skip
    if aliased or read_views or mutated.op == "placeholder":
        raise ModelLoadError(
            f"the in-place operation {node.target} at node '{node.name}' mutates "
            f"'{mutated.name}', which shares its storage with another tensor",
            "use the out-of-place form there (e.g. nn.ReLU() instead of nn.ReLU(inplace=True))",
        )
    node.target = functional
    for user in later:
        user.replace_input_with(mutated, node)


def _dropout_training(node: fx.Node) -> bool:
    train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
    return bool(train)


def _recompose_batch_norm(graph: fx.Graph, node: fx.Node) -> None:
    """`getitem(_native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps), 0)`
    (or `native_batch_norm` with `training=False`) -> `batch_norm(x, w, b, mean, var, False,
    momentum, eps, False)`. Left as is when training or when another item of the tuple is read
    (the rules then refuse it by name)."""
    if node.target is aten.native_batch_norm.default:
        x, weight, bias, mean, var, training, momentum, eps = node.args
        if training:
            return
    else:
        x, weight, bias, mean, var, momentum, eps = node.args
    items = list(node.users)
    if not all(u.target is operator.getitem and u.args[1] == 0 for u in items):
        return
    with graph.inserting_before(node):
        bn = graph.call_function(
            aten.batch_norm.default, (x, weight, bias, mean, var, False, momentum, eps, False)
        )
    bn.meta = {**node.meta, **(items[0].meta if items else {})}
    for item in items:
        item.replace_all_uses_with(bn)
        graph.erase_node(item)
    graph.erase_node(node)


def _recompose_layer_norm(graph: fx.Graph, node: fx.Node) -> None:
    """`getitem(native_layer_norm(x, shape, w, b, eps), 0)` -> `layer_norm(x, shape, w, b,
    eps)`; left as is when the mean or the inverse deviation (items 1, 2) is read."""
    items = list(node.users)
    if not all(u.target is operator.getitem and u.args[1] == 0 for u in items):
        return
    with graph.inserting_before(node):
        ln = graph.call_function(aten.layer_norm.default, tuple(node.args))
    ln.meta = {**node.meta, **(items[0].meta if items else {})}
    for item in items:
        item.replace_all_uses_with(ln)
        graph.erase_node(item)
    graph.erase_node(node)


def _recompose_silu(graph: fx.Graph, node: fx.Node) -> None:
    """`mul(x, sigmoid(x))` (either order) -> `silu(x)`."""
    a, b = node.args[:2]
    for x, gate in ((a, b), (b, a)):
        if isinstance(gate, fx.Node) and gate.target is aten.sigmoid.default and gate.args[0] is x:
            node.target, node.args = aten.silu.default, (x,)
            if not gate.users:
                graph.erase_node(gate)
            return
