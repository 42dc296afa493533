"""Batched passes over a sample set through a model cut at the audited layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from auditor.config import Preprocess
from auditor.graph import SplitModel
from auditor.progress import track
from auditor.relevance import LRP, channel_scores
from auditor.samples import normalize

ImageTransform = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class LayerPass:
    """Logits and, per sample, the spatial mean activation of every channel of the layer."""

    logits: torch.Tensor
    channel_activation: torch.Tensor

    def channel_means(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean activation per channel over all samples, or over the samples `index`."""
        rows = self.channel_activation if index is None else self.channel_activation[index]
        return rows.mean(dim=0)


@dataclass(frozen=True)
class RelevancePass(LayerPass):
    """A layer pass that also kept the activations and the per-sample channel relevance."""

    activations: torch.Tensor
    channel_relevance: torch.Tensor


def _batches(images: np.ndarray, batch_size: int) -> list[tuple[int, torch.Tensor]]:
    return [
        (start, torch.from_numpy(images[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]


def relevance_pass(
    split: SplitModel,
    lrp: LRP,
    images: np.ndarray,
    targets: torch.Tensor | None,
    preprocess: Preprocess,
    batch_size: int,
) -> RelevancePass:
    """One pass: trunk once per batch, then LRP through the head gives the logits and the
    relevance of the layer's channels (seed 000 score) for the explained class (`targets`,
    or the predicted class where None / negative)."""
    logits, acts, scores = [], [], []
    batches = _batches(images, batch_size)
    for start, batch in track(batches, "relevance at layer", len(batches)):
        with torch.no_grad():
            act = split.trunk(normalize(batch, preprocess))
        target = None
        if targets is not None:
            target = targets[start : start + len(batch)]
        relevance, out = lrp.attribute_with_logits(act, target)
        logits.append(out)
        acts.append(act)
        scores.append(channel_scores(relevance))
    activations = torch.cat(acts)
    return RelevancePass(
        logits=torch.cat(logits),
        channel_activation=_spatial_means(activations),
        activations=activations,
        channel_relevance=torch.cat(scores),
    )


def layer_pass(
    split: SplitModel,
    images: np.ndarray,
    transform: ImageTransform,
    preprocess: Preprocess,
    batch_size: int,
    description: str,
) -> LayerPass:
    """Forward pass of transformed images (`transform(batch, start_index)`): logits and the
    per-sample channel means, without keeping activations."""
    logits, means = [], []
    batches = _batches(images, batch_size)
    with torch.no_grad():
        for start, batch in track(batches, description, len(batches)):
            act = split.trunk(normalize(transform(batch, start), preprocess))
            logits.append(split.head(act))
            means.append(_spatial_means(act))
    return LayerPass(logits=torch.cat(logits), channel_activation=torch.cat(means))


def _spatial_means(activations: torch.Tensor) -> torch.Tensor:
    """N x C: each channel's mean over its spatial positions."""
    return activations.flatten(start_dim=2).mean(dim=2)
