"""Unlabeled subclasses: clusters of production samples the reference does not cover.

[Hagele2020]: a model trained without labelled necrosis scored it confidently as a positive
class, and the test error did not reveal the bad performance on the missing subclass;
explanations and the structure of the feature space revealed it. SpRAy [Lapuschkin2019]:
samples with the same prediction but a different strategy. An audit's samples carry a role:
`reference` (validation / training data the model is known to handle) or `production` (the
audited traffic).

1. Embeddings `e_i`: pooled activations of a layer (`auditor.checks.embedding_space`), in the
   configured metric.
2. Clusters (spectral clustering as in SpRAy; Ng, Jordan, Weiss 2001): the symmetric graph `A`
   of each sample's `graph_neighbours` nearest samples (FAISS), its normalised Laplacian
   `L = I - D^-1/2 A D^-1/2` with eigenvalues `l_1 <= l_2 <= ...`; `k = argmax_{2<=k<=k_max}
   (l_{k+1} - l_k)` (eigengap) unless `subclasses.k` is set; the rows of the first `k`
   eigenvectors, scaled to unit length, clustered by FAISS k-means (seeded, fixed iterations).
   Clusters are numbered by size, largest first. The graph keeps local structure: on the demo
   model k-means on the embeddings themselves prefers real vs fake (silhouette 0.87 at k = 2)
   and leaves a planted family of 60 unseen images inside the 'real' cloud at every k up to 10
   (Euclidean), while the graph's clusters hold it apart. Above `cluster_samples` samples a
   seeded subsample is clustered and each other sample joins the cluster of its nearest
   clustered sample.
3. Reference distances: for each sample predicted as class `y`, the distance `d_i` to its
   nearest reference sample `n(i)` predicted as `y` (for reference samples: the nearest other
   one, leave-one-out).
4. Per cluster: size, reference / production members, prediction mix, mean confidence (softmax
   probability of the prevailing class `y`), label purity and error rate where labels exist,
   mean channel relevance profile `R[c]` and, over the members predicted as `y`:
   `distance_ratio = median_{production members i} d_i / median_i d_{n(i)}`, how much farther
   the members lie from their nearest reference samples than those lie from their own nearest
   reference neighbours (a local ratio: a sparse region of the reference is sparse for both; on
   the demo, clean clusters stay below 1.4 where a class-wide median reached 2.4), and
   `profile_distance = JS(mean R of the members, mean R of the reference samples of y)`
   (Jensen-Shannon distance, base 2).
5. Finding `unlabeled_subclass`: a cluster of at least `min_cluster_size` samples whose share of
   reference samples is at most `max_reference_share` times their share of all samples, at
   least `min_prediction_share` of it predicted as one class with mean confidence at least
   `min_confidence`, and either `distance_ratio >= thresholds.distance_ratio` (far from what the
   model was validated on) or `profile_distance >= thresholds.profile_distance` (a different
   strategy). Severity high when both hold, else medium.

Clustering is `auditor.checks.clustering`, the reference distances and per-cluster statistics
`auditor.checks.clusters`; this module turns them into the clusters and findings of an audit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from auditor.checks.clustering import ClusteringParams, spectral_clusters
from auditor.checks.clusters import (
    ClusterStats,
    SubclassSamples,
    cluster_stats,
    reference_distances,
)
from auditor.checks.embedding_space import EmbeddingSpace
from auditor.checks.neighbours import IndexHandle
from auditor.checks.novelty import (
    ClusterNovelty,
    NoveltyCriteria,
    cluster_novelty,
    novel_cluster_finding,
)
from auditor.evidence import UnlabeledSubclassEvidence
from auditor.results import ClusterSummary, Finding


@dataclass(frozen=True)
class SubclassCriteria:
    """When a cluster is an `unlabeled_subclass` (point 5 above; the config's
    `subclasses.thresholds`)."""

    min_cluster_size: int
    max_reference_share: float
    min_prediction_share: float
    min_confidence: float
    distance_ratio: float
    profile_distance: float


def subclass_signals(
    stats: ClusterStats, overall_reference_share: float, thresholds: SubclassCriteria
) -> list[str]:
    """Why a cluster is an unlabeled subclass: "distance" (far from the reference samples of
    its class) and / or "strategy" (a different relevance profile); [] when it is not one
    (too small, not made of production samples, or not predicted confidently as one class)."""
    if not (
        stats.size >= thresholds.min_cluster_size
        and overall_reference_share > 0
        and stats.reference_share <= thresholds.max_reference_share * overall_reference_share
        and stats.prediction_share >= thresholds.min_prediction_share
        and stats.confidence >= thresholds.min_confidence
    ):
        return []
    signals = []
    if stats.distance_ratio is not None and stats.distance_ratio >= thresholds.distance_ratio:
        signals.append("distance")
    if stats.profile_distance is not None and stats.profile_distance >= thresholds.profile_distance:
        signals.append("strategy")
    return signals


def subclass_finding(
    stats: ClusterStats,
    members: np.ndarray,
    audit: SubclassSamples,
    thresholds: SubclassCriteria,
    max_ids: int,
) -> Finding | None:
    """An `unlabeled_subclass` finding for a cluster that shows a signal, else None. Evidence
    lists the production members predicted as the class, nearest the cluster's mean first,
    with their nearest reference samples."""
    overall = float(audit.is_reference.mean())
    signals = subclass_signals(stats, overall, thresholds)
    if not signals:
        return None
    space = audit.space
    shown = members[(space.predicted[members] == stats.class_index) & ~audit.is_reference[members]]
    centre = audit.x[shown].mean(axis=0)
    shown = shown[np.argsort(np.linalg.norm(audit.x[shown] - centre, axis=1), kind="stable")]
    shown = shown[:max_ids]
    nearest = audit.refs.nearest[shown]
    reasons = []
    if "distance" in signals:
        reasons.append(
            f"{stats.distance_ratio:.1f}x farther from their nearest reference "
            f"'{stats.class_name}' samples than those are from their own neighbours"
        )
    if "strategy" in signals:
        reasons.append(
            f"explained unlike the reference '{stats.class_name}' samples (relevance JS "
            f"distance {stats.profile_distance:.2f})"
        )
    return Finding(
        kind="unlabeled_subclass",
        severity="high" if len(signals) == 2 else "medium",
        title=(
            f"{stats.n_production} production samples predicted as '{stats.class_name}' "
            f"({stats.confidence:.0%} confidence) form a cluster " + " and ".join(reasons)
        ),
        evidence=UnlabeledSubclassEvidence(
            **asdict(stats),
            layer=space.layer,
            metric=space.metric,
            overall_reference_share=overall,
            signals=signals,
            members=[space.ids[i] for i in shown],
            nearest_reference=[space.ids[i] if i >= 0 else None for i in nearest],
            member_distances=[float(audit.refs.distance[i]) for i in shown],
            thresholds=asdict(thresholds),
        ),
    )


def _evidence(stats: ClusterStats) -> dict[str, Any]:
    """A cluster's statistics beside its number and size."""
    return {k: v for k, v in asdict(stats).items() if k not in ("cluster", "size")}


def _novelty(novel: ClusterNovelty) -> dict[str, Any]:
    """A cluster's novelty test for its summary (NaN, where undefined, as None)."""
    keys = ("share_p_value", "distance_ratio", "distance_p_value", "production_share", "novel")
    values = {k: getattr(novel, k) for k in keys}
    return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in values.items()}


@dataclass(frozen=True)
class SubclassAnalysis:
    """The clusters of an audit's samples, described, and the unlabeled subclasses among them."""

    k: int
    eigenvalues: list[float]
    clusters: list[ClusterSummary]
    findings: list[Finding]


def subclass_analysis(
    space: EmbeddingSpace,
    index: IndexHandle,
    is_reference: np.ndarray,
    probabilities: np.ndarray,
    relevance: np.ndarray,
    clustering: ClusteringParams,
    criteria: SubclassCriteria,
    novelty: NoveltyCriteria,
    max_ids: int,
    seed: int,
) -> SubclassAnalysis:
    """Cluster the prepared embeddings of `space` (indexed by `index`), describe every cluster
    and flag the unlabeled subclasses and, among the other clusters, the novel ones
    (`auditor.checks.novelty`; `max_ids` members named per finding); `probabilities`
    (N x classes) are the softmax of the logits, `relevance` the per-sample channel relevance."""
    x = space.prepared()
    clusters_found = spectral_clusters(x, clustering, seed, index)
    samples = SubclassSamples(
        space=space,
        x=x,
        is_reference=is_reference,
        confidence=probabilities.max(axis=1),
        relevance=relevance,
        refs=reference_distances(
            x, space.predicted, is_reference, clustering.index, clustering.index_threshold, seed
        ),
    )
    assignment = clusters_found.assignment
    novelties = cluster_novelty(
        x, assignment, is_reference, samples.confidence,
        [space.class_name(int(c)) for c in space.predicted], novelty, seed,
    )
    clusters, findings = [], []
    for cluster, novel in enumerate(novelties):
        members = np.flatnonzero(assignment == cluster)
        stats = cluster_stats(cluster, members, samples)
        clusters.append(
            ClusterSummary(
                cluster=cluster,
                size=stats.size,
                relevance_profile=[float(v) for v in samples.relevance[members].mean(axis=0)],
                evidence={**_evidence(stats), "novelty": _novelty(novel)},
            )
        )
        finding = subclass_finding(stats, members, samples, criteria, max_ids)
        if finding is None and novel.novel:  # the subclass finding is the more specific one
            finding = novel_cluster_finding(
                novel, space, x, members, is_reference, novelty, max_ids
            )
        if finding:
            findings.append(finding)
    return SubclassAnalysis(clusters_found.k, clusters_found.eigenvalues, clusters, findings)
