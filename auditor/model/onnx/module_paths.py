"""Module paths of ONNX nodes, from the exporter's name scopes, as `torch.export` records them."""

from __future__ import annotations

import ast

import onnx

NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def has_scopes(graph: onnx.GraphProto) -> bool:
    """Whether the exporter recorded module scopes: some node has `NAME_SCOPES` metadata or a
    "/"-separated name (`torch.onnx.export`). Other toolchains (paddle2onnx's `Conv.0`, tf2onnx,
    hand-written graphs' `layer_19_conv`) name nodes without them."""
    return any(
        "/" in node.name or any(p.key == NAME_SCOPES for p in node.metadata_props)
        for node in graph.node
    )


def onnx_module_paths(node: onnx.NodeProto, scoped: bool = True) -> list[str]:
    """Module paths enclosing an ONNX node, outermost first: the `NAME_SCOPES` metadata the
    torch.export-based exporter writes (`['', 'layer1', 'layer1.0', <fx node>]`, root and
    node name dropped) where present and readable, else `scope_paths(node.name)`. In a graph
    without scopes (`scoped` false, see `has_scopes`) a node is addressed by its own name."""
    if not scoped:
        return [node.name] if node.name else []
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


def _unqualified(path: str) -> str:
    """The scope name torch.onnx.export gives the module at `path`: its last non-numeric
    atom with the numeric atoms after it (`layer2.0.downsample.0` -> `downsample.0`)."""
    atoms = path.split(".")
    for index in range(len(atoms) - 1, -1, -1):
        if not atoms[index].isnumeric():
            return ".".join(atoms[index:])
    return path
