"""Relevance methods: where a model's evidence for a class lies, at the input or at a layer."""

from __future__ import annotations

import torch

from auditor.graph import ModelGraph
from auditor.relevance.channels import channel_scores
from auditor.relevance.lrp import LRP, Composite, composite

__all__ = ["LRP", "Composite", "channel_relevance", "channel_scores", "composite", "methods"]

_METHODS = {
    "lrp": "layer-wise relevance propagation with a rule composite (epsilon, epsilon_plus)",
}


def methods() -> dict[str, str]:
    """Method names with a one-line description each."""
    return dict(_METHODS)


def channel_relevance(
    model: ModelGraph,
    inputs: torch.Tensor,
    *,
    layer: str,
    method: str = "lrp",
    target: torch.Tensor | None = None,
    composite_name: str = "epsilon_plus",
    epsilon: float = 1e-6,
    normalize: bool = True,
) -> torch.Tensor:
    """N x C relevance of the channels of `layer` for `target` (default: predicted class).

    Only the part of the model above `layer` is propagated through: the trunk runs once
    without gradients, LRP runs on the head.
    """
    if method not in _METHODS:
        raise ValueError(f"unknown relevance method '{method}' (known: {', '.join(_METHODS)})")
    split = model.split(layer)
    with torch.no_grad():
        activation = split.trunk(inputs)
    relevance = LRP(split.head, composite(composite_name, epsilon)).attribute(activation, target)
    return channel_scores(relevance, normalize=normalize)
