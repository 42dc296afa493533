"""An audit's pooled layer embeddings with what each sample is: the space clusters and
neighbours are found in.

The embedding of sample `i` at a layer with output `z` (C x h x w) is its global average
`e_i[c] = 1/(hw) sum_hw z[c, h, w]` ([Chen2019]: the nearest examples in the metric
`d(h(x), h(x_i))` of a feature layer); at the audited layer that is
`RelevancePass.channel_activation`. The metric `l2` compares `e_i` as they are, `cosine`
compares `e_i / ||e_i||`: between unit vectors the Euclidean distance `sqrt(2 - 2 cos)` orders
neighbours as cosine similarity does, so one Euclidean index serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Metric = Literal["cosine", "l2"]


@dataclass(frozen=True)
class LayerEmbeddings:
    """Pooled activations `N x C` (float32) of the samples at `layer`."""

    layer: str
    vectors: np.ndarray


def prepare(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Contiguous float32 vectors to index: unit length for `cosine` (zero vectors stay zero)."""
    out = np.asarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class EmbeddingSpace:
    """An audit's embeddings with what the neighbours table shows of each sample: id, sample
    set, role (reference / production), label (-1: unknown) and predicted class."""

    layer: str
    metric: Metric
    vectors: np.ndarray
    ids: list[str]
    sets: list[str]
    roles: list[str]
    labels: np.ndarray
    predicted: np.ndarray
    class_names: list[str] | None

    def class_name(self, index: int) -> str:
        """A class index as its name where known; -1 (no label) as '-'."""
        if index < 0:
            return "-"
        names = self.class_names
        return names[index] if names and index < len(names) else str(index)

    def prepared(self) -> np.ndarray:
        return prepare(self.vectors, self.metric)
