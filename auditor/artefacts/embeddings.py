"""Pooled layer embeddings of an audit's samples, and the files that keep them with the audit.

The embedding of sample `i` at a layer with output `z` (C x h x w) is its global average
`e_i[c] = 1/(hw) sum_hw z[c, h, w]` ([Chen2019]: the nearest examples in the metric
`d(h(x), h(x_i))` of a feature layer); at the audited layer that is
`RelevancePass.channel_activation`. The metric `l2` compares `e_i` as they are, `cosine`
compares `e_i / ||e_i||`: between unit vectors the Euclidean distance `sqrt(2 - 2 cos)` orders
neighbours as cosine similarity does, so one Euclidean index serves both.

Files in an audit's folder: `embeddings.npy` (N x C, float32, or float16 above a size
threshold) and `ids.json` (layer, metric and, per sample, id, set, role, label, predicted class).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from auditor.audit.passes import ForwardTask, RelevancePass, layer_pass
from auditor.audit.worker import WorkerModel
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet
from auditor.errors import SampleError
from auditor.execution import Executor
from auditor.model.graph import ModelGraph
from auditor.results import ArtefactRef

Metric = Literal["cosine", "l2"]
EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.json"


@dataclass(frozen=True)
class LayerEmbeddings:
    """Pooled activations `N x C` (float32) of the samples at `layer`."""

    layer: str
    vectors: np.ndarray


def layer_embeddings(
    executor: Executor,
    model: WorkerModel,
    graph: ModelGraph,
    samples: SampleSet,
    base: RelevancePass,
    config: AuditConfig,
) -> LayerEmbeddings:
    """The embeddings at `subclasses.embedding_layer`: the audited layer's channel means from
    the relevance pass, or one more streamed pass to another (convolutional) layer."""
    layer = config.subclasses.embedding_layer or model.split.layer
    if layer == model.split.layer:
        return LayerEmbeddings(layer, base.channel_activation.numpy().astype(np.float32))
    embedded, _ = layer_pass(
        executor,
        replace(model, split=graph.split(layer)),
        samples.images,
        ForwardTask(f"embeddings at {layer}"),
        config.pass_batch_size,
    )
    return LayerEmbeddings(layer, embedded.channel_activation.numpy().astype(np.float32))


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

    def row(self, sample_id: str) -> int:
        """The row of a sample id, or `SampleError` naming the id."""
        try:
            return self.ids.index(sample_id)
        except ValueError:
            raise SampleError(
                f"sample id '{sample_id}' is not among the {len(self.ids)} samples of this audit",
                f"use an id from {IDS_FILE} in the audit's folder (e.g. '{self.ids[0]}')",
            ) from None

    def class_name(self, index: int) -> str:
        """A class index as its name where known; -1 (no label) as '-'."""
        if index < 0:
            return "-"
        names = self.class_names
        return names[index] if names and index < len(names) else str(index)

    def prepared(self) -> np.ndarray:
        return prepare(self.vectors, self.metric)


def save_space(space: EmbeddingSpace, directory: Path, float16_above: int) -> list[ArtefactRef]:
    """Write `embeddings.npy` (float16 when there are more than `float16_above` samples) and
    `ids.json` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = np.float16 if len(space.ids) > float16_above else np.float32
    vectors_path = directory / EMBEDDINGS_FILE
    np.save(vectors_path, space.vectors.astype(dtype))
    ids_path = directory / IDS_FILE
    ids_path.write_text(
        json.dumps(
            {
                "layer": space.layer,
                "metric": space.metric,
                "ids": space.ids,
                "sets": space.sets,
                "roles": space.roles,
                "labels": space.labels.tolist(),
                "predicted": space.predicted.tolist(),
                "class_names": space.class_names,
            }
        )
    )
    return [
        ArtefactRef("embeddings", str(vectors_path.absolute())),
        ArtefactRef("sample_ids", str(ids_path.absolute())),
    ]


def load_space(directory: Path) -> EmbeddingSpace:
    """Read what `save_space` wrote (embeddings as float32)."""
    meta = json.loads((directory / IDS_FILE).read_text())
    return EmbeddingSpace(
        layer=meta["layer"],
        metric=meta["metric"],
        vectors=np.load(directory / EMBEDDINGS_FILE).astype(np.float32),
        ids=meta["ids"],
        sets=meta["sets"],
        roles=meta["roles"],
        labels=np.asarray(meta["labels"], dtype=np.int64),
        predicted=np.asarray(meta["predicted"], dtype=np.int64),
        class_names=meta["class_names"],
    )
