"""Relevance methods: where a model's evidence for a class lies, at the input or at a layer.

The stable entry points other tools call:

* `explain(model, inputs, method=...)`: relevance maps at the input or at a module's output;
* `channel_relevance(model, inputs, layer=...)`: N x C per-channel scores [Chandrasegaran2022];
* `methods()`: the registered method names with a one-line description each.

Every method is a `RelevanceMethod` class in `base.RELEVANCE_METHODS`: the built-ins register
by decorator in their modules (imported here), plug-ins by entry point in the group
`relevance_auditor.relevance_methods` (README, "Extending the auditor").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.relevance import (  # noqa: F401 -- their built-in methods register
    cam,
    gradients,
    perturbation,
    srd,
)
from auditor.relevance.base import RELEVANCE_METHODS, RelevanceMethod
from auditor.relevance.channels import channel_scores
from auditor.relevance.composites import Composite, composite, composites
from auditor.relevance.graph_cache import graph_of
from auditor.relevance.lrp import LRP

__all__ = [
    "LRP",
    "Composite",
    "RelevanceMethod",
    "channel_relevance",
    "channel_scores",
    "composite",
    "composites",
    "explain",
    "methods",
]


def methods() -> dict[str, str]:
    """Method names with a one-line description each."""
    return {name: cls.description for name, cls in RELEVANCE_METHODS.items()}


def _graph(model: ModelGraph | nn.Module, inputs: torch.Tensor) -> ModelGraph:
    if isinstance(model, ModelGraph):
        return model
    return graph_of(model, inputs[:2])


def _method(
    name: str, graph: ModelGraph, layer: str | None, options: dict[str, Any]
) -> RelevanceMethod:
    if name not in RELEVANCE_METHODS:
        raise RelevanceError(
            f"unknown relevance method '{name}'",
            f"use one of: {', '.join(RELEVANCE_METHODS.names())}",
        )
    cls = RELEVANCE_METHODS.get(name)
    if layer is not None and not cls.supports_layer:
        raise RelevanceError(
            f"relevance method '{name}' explains the input only, not layer '{layer}'",
            "leave layer unset, or use a method such as lrp",
        )
    if not cls.supports_attention and graph.has_attention:
        raise RelevanceError(
            f"relevance method '{name}' does not apply to attention (the model is a "
            "transformer)",
            "use lrp (composite attnlrp or epsilon), gradient_x_input or integrated_gradients",
        )
    return cls(graph, **options)


def explain(
    model: ModelGraph | nn.Module,
    inputs: torch.Tensor,
    *,
    method: str,
    target: torch.Tensor | int | None = None,
    layer: str | None = None,
    reduce: bool = True,
    **options: Any,
) -> torch.Tensor:
    """Relevance of `inputs` (N x C x H x W) for the logit of `target` (per sample, or one
    class for all; default and negative entries: the predicted class), by `method` (see
    `methods()`; "lrp" takes `composite=` and the rule parameters `epsilon`, `gamma`, `mean`,
    `std`).

    Relevance is returned at the input, or at the output of module `layer` when given (only the
    model above that layer is propagated through). `reduce=True` sums 4-D relevance over its
    channels (N x H x W); `reduce=False` keeps them. `model` is a `ModelGraph`, or an
    `nn.Module`, exported with `inputs[:2]` as example on the first call and kept for later
    calls while its weights, structure and input shape are unchanged
    (`auditor.relevance.graph_cache`).
    """
    if isinstance(target, int):
        target = torch.full((len(inputs),), target, dtype=torch.long)
    graph = _graph(model, inputs)
    relevance = _method(method, graph, layer, options).attribute(inputs, target, layer)
    return relevance.sum(dim=1) if reduce and relevance.dim() == 4 else relevance


def channel_relevance(
    model: ModelGraph | nn.Module,
    inputs: torch.Tensor,
    *,
    layer: str,
    method: str = "lrp",
    target: torch.Tensor | int | None = None,
    normalize: bool = True,
    **options: Any,
) -> torch.Tensor:
    """N x C relevance of the channels of `layer` for `target`: the score of
    [Chandrasegaran2022] `R_i[c] = sum_hw R^+ / sum_chw |R|` (`normalize=True`), or the raw
    per-channel sum."""
    relevance = explain(
        model, inputs, method=method, target=target, layer=layer, reduce=False, **options
    )
    return channel_scores(relevance, normalize=normalize)
