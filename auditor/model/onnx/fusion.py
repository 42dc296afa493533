"""Rewrites of ONNX node idioms into the one operation LRP has a rule for.

Exporters before opset 20 spell GELU `x * 0.5 * (1 + erf(x / sqrt 2))` [Hendrycks2016] as
`Div -> Erf -> Add -> Mul -> Mul`; translated node by node, its last products multiply two
input-dependent tensors, neither a gate, and LRP cannot split them. `fuse_erf_gelu` replaces each
such chain, whose intermediate values nothing else reads, by one `Gelu` node (opset 20
semantics), translated to `aten.gelu`, an activation for LRP.
"""

from __future__ import annotations

import math
from collections import Counter

import onnx
from onnx import numpy_helper

TOLERANCE = 1e-4


def fuse_erf_gelu(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The graph's nodes with every erf-GELU chain replaced by one `Gelu` node (named after the
    chain's last node, so that it keeps its module path)."""
    nodes = list(model.graph.node)
    constants = _scalar_constants(model)
    readers = Counter(name for node in nodes for name in node.input)
    readers.update(o.name for o in model.graph.output)
    producer = {out: node for node in nodes for out in node.output}
    fused: dict[int, onnx.NodeProto] = {}
    removed: set[int] = set()
    for last in nodes:
        chain = _chain(last, producer, constants, readers)
        if chain is None:
            continue
        x, members = chain
        gelu = onnx.helper.make_node("Gelu", [x], list(last.output), name=last.name)
        gelu.metadata_props.extend(last.metadata_props)
        fused[id(last)] = gelu
        removed.update(id(n) for n in members if n is not last)
    return [fused.get(id(n), n) for n in nodes if id(n) not in removed]


def _chain(last, producer, constants, readers):
    """(x, the chain's nodes) when the product `last` is `x * 0.5 * (1 + erf(x / sqrt 2))`,
    its three factors multiplied in any order, else None."""
    if last.op_type != "Mul":
        return None
    factors, products = _factors(last, producer, readers, depth=1)
    halves = [f for f in factors if _is(constants, f, 0.5)]
    if len(factors) != 3 or len(halves) != 1:
        return None
    a, b = [f for f in factors if f != halves[0]]
    for x_name, add_name in ((a, b), (b, a)):
        members = _erf_of(producer.get(add_name), x_name, producer, constants)
        if members is not None and all(readers[o] == 1 for n in members for o in n.output):
            return x_name, [*members, *products]
    return None


def _factors(node, producer, readers, depth: int):
    """The factors of a product, expanding inner `Mul` nodes that only it reads, and those
    products (the node first)."""
    factors, products = [], [node]
    for name in node.input:
        child = producer.get(name)
        if depth > 0 and child is not None and child.op_type == "Mul" and readers[name] == 1:
            inner, inner_products = _factors(child, producer, readers, depth - 1)
            factors += inner
            products += inner_products
        else:
            factors.append(name)
    return factors, products


def _erf_of(add_node, x_name, producer, constants):
    """[Div, Erf, Add] when `add_node` is `1 + erf(x / sqrt 2)` (or `x * (1 / sqrt 2)`)."""
    if add_node is None or add_node.op_type != "Add":
        return None
    erf = producer.get(_other(add_node, constants, 1.0) or "")
    if erf is None or erf.op_type != "Erf":
        return None
    scale = producer.get(erf.input[0])
    if scale is None or x_name not in scale.input:
        return None
    if scale.op_type == "Div" and scale.input[0] == x_name and _is(constants, scale.input[1], math.sqrt(2)):
        return [scale, erf, add_node]
    if scale.op_type == "Mul" and _other(scale, constants, 1 / math.sqrt(2)) == x_name:
        return [scale, erf, add_node]
    return None


def _other(node, constants, value: float) -> str | None:
    """The operand of a binary node whose other operand is the scalar constant `value`."""
    a, b = (*node.input, "", "")[:2]
    if _is(constants, b, value):
        return a
    if _is(constants, a, value):
        return b
    return None


def _is(constants: dict[str, float], name: str, value: float) -> bool:
    return name in constants and abs(constants[name] - value) <= TOLERANCE


def _scalar_constants(model: onnx.ModelProto) -> dict[str, float]:
    """Scalar (one-element) float constants of the graph: initializers and Constant nodes."""
    tensors = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    values = {}
    for name, proto in tensors.items():
        array = numpy_helper.to_array(proto)
        if array.size == 1 and array.dtype.kind == "f":
            values[name] = float(array.reshape(-1)[0])
    return values
