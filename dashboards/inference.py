"""The audited model rerun for the sample explorer: prediction and heatmap of one sample by any
relevance method, and its nearest samples in a layer's feature space (FAISS).

The model and the samples come from the config the audit ran with (its `model.uri`,
`tracking_uri` and sample sources), loaded as the auditor loads them
(`auditor.tracking.resolve.load_model`, `auditor.audit.pipeline.build_graph`, `auditor.data.samples`). The
samples' images are read from disk as they are shown (their scratch folder is removed when the
loaded samples are garbage-collected); feature spaces are streamed passes of the local executor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import yaml

from auditor.audit.passes import ForwardTask, layer_pass
from auditor.audit.resolve import build_graph
from auditor.audit.worker import WorkerModel
from auditor.checks.embedding_space import prepare
from auditor.checks.neighbours import IndexHandle, build_index, search
from auditor.config import AuditConfig
from auditor.data.samples import SampleSet, load_samples, normalize
from auditor.execution import LocalExecutor, progress
from auditor.model.graph import ModelGraph
from auditor.relevance import explain
from auditor.tracking.resolve import load_model

LRP_METHOD = "lrp"
progress.enabled = False  # no terminal progress bars from the dashboard's server


@dataclass(frozen=True)
class AuditedModel:
    """The model graph and samples of one audit, with the config they were loaded by."""

    config: AuditConfig
    graph: ModelGraph
    samples: SampleSet


@dataclass(frozen=True)
class FeatureSpace:
    """Unit-length pooled activations of every sample at `layer`, indexed for search."""

    layer: str
    vectors: np.ndarray
    index: IndexHandle


def load_audited(config_yaml: str) -> AuditedModel:
    """Load the audit's model and samples (`AuditorError` with a one-line message on failure)."""
    config = AuditConfig.model_validate(yaml.safe_load(config_yaml))
    loaded = load_model(
        config.model.uri,
        tracking_uri=config.tracking_uri,
        trusted=config.model.trusted,
        input_size=config.preprocess.size,
    )
    samples = load_samples(
        config.samples, tracking_uri=config.tracking_uri, preprocess=config.preprocess
    )
    try:
        graph = build_graph(loaded, samples, config)
    except BaseException:
        samples.close()
        raise
    return AuditedModel(config, graph, samples)


def _inputs(model: AuditedModel, row: int) -> torch.Tensor:
    images = torch.from_numpy(model.samples.images[row : row + 1])
    return normalize(images, model.config.preprocess)


def probabilities(model: AuditedModel, row: int) -> np.ndarray:
    """Softmax over the classes for sample `row`."""
    with torch.no_grad():
        logits = model.graph.gm(_inputs(model, row))
    return logits.softmax(dim=1)[0].numpy()


def heatmap(model: AuditedModel, row: int, method: str, composite: str | None = None) -> np.ndarray:
    """H x W relevance of sample `row` for its predicted class by `method` (LRP: with the
    named composite, its box bounds from the preprocessing)."""
    options = {}
    if method == LRP_METHOD:
        preprocess = model.config.preprocess
        options = {"composite": composite, "mean": preprocess.mean, "std": preprocess.std}
    relevance = explain(model.graph, _inputs(model, row), method=method, **options)
    return relevance[0].detach().numpy()


def feature_layers(model: AuditedModel) -> list[str]:
    """Top-level modules with a 4-D output (N x C x h x w): the layers a feature space can be
    pooled from (a graph without shape metadata offers every top-level module)."""
    graph = model.graph

    def four_d(layer: str) -> bool:
        value = graph.output_node(layer).meta.get("val")
        return value is None or value.dim() == 4

    return [layer for layer in graph.layers if "." not in layer and four_d(layer)]


def feature_space(model: AuditedModel, layer: str) -> FeatureSpace:
    """Pooled activations of all samples at `layer` (cosine metric), in an exact index."""
    config = model.config
    worker = WorkerModel(
        model.graph.split(layer), config.preprocess, config.relevance.composite,
        config.relevance.epsilon,
    )  # fmt: skip
    with LocalExecutor() as executor:
        pooled, _ = layer_pass(
            executor, worker, model.samples.images, ForwardTask(f"embeddings at {layer}"),
            config.pass_batch_size,
        )  # fmt: skip
    vectors = prepare(pooled.channel_activation.numpy(), "cosine")
    return FeatureSpace(layer, vectors, build_index(vectors, "flat", seed=config.seed))


def nearest(index: IndexHandle, vectors: np.ndarray, row: int, k: int) -> list[tuple[int, float]]:
    """The `k` rows nearest to `row` (itself left out): (row, distance), nearest first."""
    found = search(index, vectors[[row]], k + 1)
    hits = zip(found.indices[0], found.distances[0])
    return [(int(i), float(d)) for i, d in hits if i >= 0 and i != row][:k]
