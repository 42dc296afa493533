"""Embedding clusters, their index and maps, and when a cluster is an unlabeled subclass."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from auditor.config.strict import StrictModel


class SubclassThresholds(StrictModel):
    """When a cluster is an `unlabeled_subclass` [Hagele2020]: it is made of
    production samples, predicted confidently as one class, and far from that class's reference
    samples or explained by a different relevance strategy. Defaults give no finding when
    production is drawn like the reference."""

    min_cluster_size: int = Field(default=10, ge=2, description="members of a flagged cluster")
    max_reference_share: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="the cluster's share of reference samples, relative to their share of all "
        "samples, at most this",
    )
    min_prediction_share: float = Field(
        default=0.9, gt=0.5, le=1, description="share of the members predicted as one class"
    )
    min_confidence: float = Field(
        default=0.9, ge=0, le=1, description="their mean softmax probability of that class"
    )
    distance_ratio: float = Field(
        default=2.0,
        gt=1,
        description="median distance of its production members to their nearest reference "
        "samples of the class, over those reference samples' median distance to their own "
        "nearest reference neighbours",
    )
    profile_distance: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon distance (base 2) of its mean channel relevance to the "
        "class's reference samples' (SpRAy: same prediction, different strategy)",
    )


class NoveltySettings(StrictModel):
    """When a cluster is a `novel_cluster` (`auditor.checks.novelty`): far from every reference
    sample, whatever the model predicts on it, decided against permuted reference / production
    roles."""

    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="false-alarm rate: audits with any novel_cluster finding when production is "
        "drawn like the reference (Bonferroni over the clusters)",
    )
    max_reference_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="effect of interest: the cluster's reference share at most this times the "
        "reference share of all samples",
    )
    permutations: int = Field(
        default=199, ge=19, description="role permutations of the distance test's null"
    )
    max_members: int = Field(
        default=256, ge=10, description="members of a cluster in the distance test (subsample)"
    )
    max_columns: int = Field(
        default=2000, ge=100, description="candidate neighbours in the distance test (subsample)"
    )
    large_share: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="severity high from this share of the production samples in the cluster",
    )


class SubclassSettings(StrictModel):
    """Clusters of pooled layer embeddings, a nearest-neighbour index and 2-D maps of the
    samples; clusters of production samples unlike the reference become findings."""

    enabled: bool = True
    embedding_layer: str | None = Field(
        default=None, description="convolutional layer to embed; default: the audited layer"
    )
    metric: Literal["cosine", "l2"] = Field(
        default="cosine", description="distance between embeddings (cosine: of unit vectors)"
    )
    k: int | None = Field(default=None, ge=2, description="clusters; default: eigengap up to k_max")
    k_max: int = Field(default=10, ge=2)
    graph_neighbours: int = Field(
        default=10, ge=2, description="neighbours per sample in the graph that is clustered"
    )
    cluster_samples: int = Field(
        default=5000,
        ge=100,
        description="cluster a seeded subsample of this size; the other samples join the "
        "cluster of their nearest clustered sample",
    )
    kmeans_iterations: int = Field(default=25, ge=1)
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        default="auto", description="FAISS index; auto: flat up to index_threshold, else hnsw"
    )
    index_threshold: int = Field(default=50_000, ge=1)
    float16_above: int = Field(
        default=100_000, ge=0, description="store the embeddings as float16 above this many samples"
    )
    maps: list[Literal["pca", "tsne"]] = Field(
        default_factory=lambda: ["pca"], description="2-D maps; PCA is always made"
    )
    map_samples: int = Field(
        default=20_000, ge=10, description="maps of a seeded subsample of at most this size"
    )
    evidence_samples: int = Field(
        default=20, ge=1, description="member ids (and their nearest references) in a finding"
    )
    thresholds: SubclassThresholds = Field(default_factory=SubclassThresholds)
    novelty: NoveltySettings = Field(default_factory=NoveltySettings)
