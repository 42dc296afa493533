"""The graphs that the public API exports from eager modules, kept for the next call.

Exporting an `nn.Module` (`ModelGraph.from_module`, torch.export) costs seconds (2.5 s for a
ResNet-18 layout at 64 x 64), more than explaining a batch. `graph_of(module, example)` exports
once and returns the same graph while the module is unchanged: the cache is keyed by the module
object (held weakly: it does not keep the module alive) and, per module, by

* the weights: for every parameter and buffer, its name, identity, storage address and
  `_version` (the counter every in-place write bumps: optimiser steps, `load_state_dict`,
  `with torch.no_grad(): p.mul_(2)`), so changed or replaced weights re-export;
* the structure: every submodule's path and type (a swapped activation re-exports);
* the example's shape without the batch axis, and its dtype (the graph is exported with a
  dynamic batch dimension only).

Not seen: a plain Python attribute read by `forward` (a float scale, a flag) changed in place;
pass a `ModelGraph` (`ModelGraph.from_module`) to control exporting yourself.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable

import torch
from torch import nn

from auditor.model.graph import ModelGraph

#: input shapes whose graph is kept per module (the most recently used ones)
PER_MODULE = 4

_graphs: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Hashable, tuple[Hashable, ModelGraph]]] = (
    weakref.WeakKeyDictionary()
)


def weights_key(module: nn.Module) -> Hashable:
    """The weights and structure the exported graph depends on (see the module docstring)."""
    tensors = [
        (name, id(t), t.data_ptr(), t._version)
        for name, t in (*module.named_parameters(), *module.named_buffers())
    ]
    structure = [(name, type(m).__qualname__) for name, m in module.named_modules()]
    return tuple(tensors), tuple(structure)


def graph_of(module: nn.Module, example: torch.Tensor) -> ModelGraph:
    """The module's graph exported on `example` (N x ...), or the one exported before for the
    same weights, structure and input shape. One graph is kept per input shape: a graph of
    older weights is dropped when the new one is exported."""
    shape, weights = (tuple(example.shape[1:]), example.dtype), weights_key(module)
    kept = _graphs.setdefault(module, OrderedDict())
    if shape in kept and kept[shape][0] == weights:
        kept.move_to_end(shape)
        return kept[shape][1]
    kept.pop(shape, None)
    graph = ModelGraph.from_module(module, example)
    kept[shape] = (weights, graph)
    while len(kept) > PER_MODULE:
        kept.popitem(last=False)
    return graph
