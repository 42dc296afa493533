"""The unlabeled-subclass stage of an audit: the embedding pass, the pure clustering and finding
checks (`auditor.checks.subclasses`), and the files the dashboard reads (embeddings, sample ids,
FAISS index, 2-D maps)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from auditor.artefacts.embeddings import INDEX_FILE, save_index, save_space
from auditor.artefacts.maps import embedding_maps, save_maps
from auditor.audit.passes import ForwardTask, RelevancePass, layer_pass
from auditor.audit.stages import PassRunner
from auditor.checks.clustering import MIN_SAMPLES, ClusteringParams
from auditor.checks.embedding_space import EmbeddingSpace, LayerEmbeddings
from auditor.checks.neighbours import build_index, choose_kind
from auditor.checks.novelty import NoveltyCriteria
from auditor.checks.subclasses import SubclassCriteria, subclass_analysis
from auditor.config import AuditConfig, SampleSource, SubclassSettings, SubclassThresholds
from auditor.data.samples import SampleSet
from auditor.execution.progress import sample_bar
from auditor.model.graph import ModelGraph
from auditor.results import ArtefactRef, SubclassResult


def layer_embeddings(
    runner: PassRunner, graph: ModelGraph, base: RelevancePass, layer: str | None
) -> LayerEmbeddings:
    """The embeddings at `layer` (None: the audited layer): the audited layer's channel means
    from the relevance pass, or one more streamed pass to another (convolutional) layer."""
    model = runner.model
    layer = layer or model.split.layer
    if layer == model.split.layer:
        return LayerEmbeddings(layer, base.channel_activation.numpy().astype(np.float32))
    embedded, _ = layer_pass(
        runner.executor,
        replace(model, split=graph.split(layer)),
        runner.images,
        ForwardTask(f"embeddings at {layer}"),
        runner.batch_size,
    )
    return LayerEmbeddings(layer, embedded.channel_activation.numpy().astype(np.float32))


def reference_mask(samples: SampleSet, sources: list[SampleSource]) -> np.ndarray:
    """Per sample: does its sample set have the role `reference`?"""
    roles = {s.name: s.role for s in sources}
    return np.array([roles.get(name) == "reference" for name in samples.set_names], dtype=bool)


def clustering_params(settings: SubclassSettings) -> ClusteringParams:
    """The config's `subclasses` settings as the clustering's parameters."""
    return ClusteringParams(
        cluster_samples=settings.cluster_samples,
        graph_neighbours=settings.graph_neighbours,
        k=settings.k,
        k_max=settings.k_max,
        kmeans_iterations=settings.kmeans_iterations,
        index=settings.index,
        index_threshold=settings.index_threshold,
    )


def subclass_criteria(thresholds: SubclassThresholds) -> SubclassCriteria:
    """The config's `subclasses.thresholds` as the finding's criteria."""
    return SubclassCriteria(**thresholds.model_dump())


def subclass_stage(
    samples: SampleSet,
    base: RelevancePass,
    config: AuditConfig,
    artifact_dir: Path,
    *,
    embeddings: LayerEmbeddings,
) -> SubclassResult:
    """Cluster the samples' embeddings, describe every cluster, flag unlabeled subclasses, and
    write embeddings, sample ids, the FAISS index of all samples and the maps to
    `artifact_dir`."""
    settings = config.subclasses
    probabilities = base.logits.softmax(dim=1).numpy()
    is_reference = reference_mask(samples, config.samples)
    space = EmbeddingSpace(
        layer=embeddings.layer,
        metric=settings.metric,
        vectors=embeddings.vectors,
        ids=samples.ids,
        sets=samples.set_names,
        roles=["reference" if r else "production" for r in is_reference],
        labels=samples.labels,
        predicted=probabilities.argmax(axis=1),
        class_names=samples.class_names,
    )
    x = space.prepared()
    with sample_bar("subclasses", 3, unit="steps") as advance:  # index, maps, clusters
        kind = choose_kind(len(x), settings.index, settings.index_threshold)
        index = build_index(x, kind, seed=config.seed)
        artefacts = [
            *save_space(space, artifact_dir, settings.float16_above),
            ArtefactRef("embedding_index", str(save_index(index, artifact_dir / INDEX_FILE).absolute())),
        ]
        advance(1)
        if len(x) < MIN_SAMPLES:
            note = f"{len(x)} samples: at least {MIN_SAMPLES} are needed for clusters and maps"
            return SubclassResult(space.layer, space.metric, 0, [], [], [], [], artefacts, note)
        maps = embedding_maps(x, settings.maps, seed=config.seed, max_samples=settings.map_samples)
        artefacts += save_maps(maps, artifact_dir)
        advance(1)
        analysis = subclass_analysis(
            space, index, is_reference, probabilities,
            base.channel_relevance.numpy().astype(np.float64),
            clustering_params(settings), subclass_criteria(settings.thresholds),
            NoveltyCriteria(**settings.novelty.model_dump()),
            settings.evidence_samples, config.seed,
        )
        advance(1)
    note = None
    if not is_reference.any():
        note = "no reference samples (samples[].role: reference): clusters only, no findings"
    return SubclassResult(
        layer=space.layer,
        metric=space.metric,
        k=analysis.k,
        eigenvalues=analysis.eigenvalues,
        clusters=analysis.clusters,
        findings=analysis.findings,
        maps=maps,
        artefacts=artefacts,
        note=note,
    )
