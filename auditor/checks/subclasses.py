"""Unlabeled subclasses: clusters of production samples the reference does not cover.

[Hagele2020]: a model trained without labelled necrosis scored it confidently as a positive
class, and the test error did not reveal the bad performance on the missing subclass;
explanations and the structure of the feature space revealed it. SpRAy [Lapuschkin2019]:
samples with the same prediction but a different strategy. An audit's samples carry a role:
`reference` (validation / training data the model is known to handle) or `production` (the
audited traffic).

1. Embeddings `e_i`: pooled activations of a layer (`auditor.artefacts.embeddings`), in the configured
   metric.
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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import laplacian
from scipy.sparse.linalg import eigsh
from scipy.spatial.distance import jensenshannon

from auditor.artefacts.embeddings import EmbeddingSpace, LayerEmbeddings, save_space
from auditor.artefacts.maps import embedding_maps, save_maps
from auditor.audit.passes import RelevancePass
from auditor.checks.neighbours import (
    INDEX_FILE,
    IndexHandle,
    build_index,
    choose_kind,
    nearest_other,
    search,
)
from auditor.config import AuditConfig, SampleSource, SubclassSettings, SubclassThresholds
from auditor.data.samples import SampleSet
from auditor.results import ArtefactRef, ClusterSummary, Finding, SubclassResult

MIN_SAMPLES = 20
"""Fewer samples than this are not clustered."""
#: seeded k-means restarts on the spectral embedding, the best objective kept: one start can
#: put two centroids on one tight cluster and merge two others (seen with faiss 1.15)
KMEANS_RESTARTS = 10
LAPLACIAN_SHIFT = -1e-3
"""Shift-invert point below the Laplacian's spectrum (>= 0): `L - shift I` factorises."""


def reference_mask(samples: SampleSet, sources: list[SampleSource]) -> np.ndarray:
    """Per sample: does its sample set have the role `reference`?"""
    roles = {s.name: s.role for s in sources}
    return np.array([roles.get(name) == "reference" for name in samples.set_names], dtype=bool)


@dataclass(frozen=True)
class Clustering:
    """Cluster of each sample (0 = largest), the number of clusters and the smallest
    eigenvalues of the graph Laplacian (`k_max + 1` of them)."""

    assignment: np.ndarray
    k: int
    eigenvalues: list[float]


def _subsample(n: int, size: int, seed: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _graph(index: IndexHandle, x: np.ndarray, neighbours: int) -> sparse.csr_matrix:
    """Symmetric 0/1 adjacency of each row's `neighbours` nearest other rows."""
    found = search(index, x, neighbours + 1)
    rows = np.repeat(np.arange(len(x)), found.indices.shape[1])
    cols = found.indices.ravel()
    keep = (cols >= 0) & (cols != rows)
    adjacency = sparse.csr_matrix(
        (np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(len(x), len(x))
    )
    return ((adjacency + adjacency.T) > 0).astype(np.float64)


def eigengap_k(eigenvalues: np.ndarray, k_max: int) -> int:
    """`argmax_{2<=k<=k_max} (l_{k+1} - l_k)` over ascending eigenvalues `l_1, l_2, ...`."""
    gaps = np.diff(eigenvalues[: k_max + 1])  # gaps[j] = l_{j+2} - l_{j+1}
    return int(np.argmax(gaps[1:k_max])) + 2


def spectral_clusters(
    x: np.ndarray, settings: SubclassSettings, seed: int, index: IndexHandle
) -> Clustering:
    """Spectral clusters of the rows of `x` (N >= MIN_SAMPLES); `index` indexes all of `x`
    (a subsample gets its own)."""
    rows = _subsample(len(x), settings.cluster_samples, seed)
    clustered = x[rows]
    if len(rows) < len(x):
        kind = choose_kind(len(rows), settings.index, settings.index_threshold)
        index = build_index(clustered, kind, seed=seed)
    neighbours = min(settings.graph_neighbours, len(rows) - 1)
    n_eigen = min(settings.k_max + 1, len(rows) - 1)
    lap = laplacian(_graph(index, clustered, neighbours), normed=True)
    v0 = np.random.default_rng(seed).random(len(rows))
    values, vectors = eigsh(lap, k=n_eigen, sigma=LAPLACIAN_SHIFT, which="LM", v0=v0)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    k = settings.k or eigengap_k(values, n_eigen - 1)
    k = min(k, n_eigen)
    spectral = vectors[:, :k]
    spectral = np.ascontiguousarray(
        spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-12),
        dtype=np.float32,
    )
    kmeans = faiss.Kmeans(
        k, k, niter=settings.kmeans_iterations, seed=seed, min_points_per_centroid=1,
        nredo=KMEANS_RESTARTS,
    )
    kmeans.train(spectral)
    labels = kmeans.index.search(spectral, 1)[1][:, 0]
    assignment = np.empty(len(x), dtype=np.int64)
    assignment[rows] = labels
    others = np.setdiff1d(np.arange(len(x)), rows)
    if len(others):  # `index` holds the clustered rows only
        assignment[others] = labels[search(index, x[others], 1).indices[:, 0]]
    return Clustering(_by_size(assignment), k, [float(v) for v in values])


def _by_size(assignment: np.ndarray) -> np.ndarray:
    """Renumber clusters by size, largest first (ties: the one holding the lower row first)."""
    ids, first, sizes = np.unique(assignment, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    renumber = np.empty(ids.max() + 1, dtype=np.int64)
    renumber[ids[order]] = np.arange(len(ids))
    return renumber[assignment]


@dataclass(frozen=True)
class ReferenceDistances:
    """Per sample: distance `d_i` to the nearest reference sample of its predicted class
    (leave-one-out for reference samples; NaN where that class has fewer than 2 reference
    samples) and that sample's row `n(i)` (-1: none)."""

    distance: np.ndarray
    nearest: np.ndarray


def reference_distances(
    x: np.ndarray,
    predicted: np.ndarray,
    is_reference: np.ndarray,
    settings: SubclassSettings,
    seed: int,
) -> ReferenceDistances:
    distance = np.full(len(x), np.nan)
    nearest = np.full(len(x), -1, dtype=np.int64)
    for y in np.unique(predicted):
        reference = np.flatnonzero(is_reference & (predicted == y))
        if len(reference) < 2:
            continue
        kind = choose_kind(len(reference), settings.index, settings.index_threshold)
        index = build_index(x[reference], kind, seed=seed)
        own = nearest_other(index, x[reference])
        others = np.flatnonzero(~is_reference & (predicted == y))
        found = search(index, x[others], 1)
        for rows, hits in ((reference, own), (others, found)):
            ok = hits.indices[:, 0] >= 0
            distance[rows[ok]] = hits.distances[ok, 0]
            nearest[rows[ok]] = reference[hits.indices[ok, 0]]
    return ReferenceDistances(distance, nearest)


@dataclass(frozen=True)
class ClusterStats:
    """What one cluster holds (see the module docstring); None where undefined."""

    cluster: int
    size: int
    n_reference: int
    n_production: int
    reference_share: float
    predictions: dict[str, int]
    class_index: int
    class_name: str
    prediction_share: float
    confidence: float
    n_labelled: int
    label_purity: float | None
    error_rate: float | None
    member_distance: float | None
    reference_distance: float | None
    reference_members_distance: float | None
    distance_ratio: float | None
    profile_distance: float | None


def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def _js(p: np.ndarray, q: np.ndarray) -> float | None:
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return float(jensenshannon(p, q, base=2))


@dataclass(frozen=True)
class _Audit:
    """Per-sample arrays the cluster statistics read."""

    space: EmbeddingSpace
    x: np.ndarray
    is_reference: np.ndarray
    confidence: np.ndarray
    relevance: np.ndarray
    refs: ReferenceDistances

    def class_profile(self, y: int) -> np.ndarray | None:
        rows = self.is_reference & (self.space.predicted == y)
        return self.relevance[rows].mean(axis=0) if rows.any() else None


def cluster_stats(cluster: int, members: np.ndarray, audit: _Audit) -> ClusterStats:
    space, is_ref = audit.space, audit.is_reference[members]
    predicted = space.predicted[members]
    counts = np.bincount(predicted)
    y = int(counts.argmax())
    of_y = members[predicted == y]
    labels = space.labels[members]
    labelled = labels >= 0
    production_y = of_y[~audit.is_reference[of_y]]
    member_distance = _median(audit.refs.distance[production_y])
    nearest = audit.refs.nearest[production_y]
    reference_distance = _median(audit.refs.distance[nearest[nearest >= 0]])
    profile = audit.class_profile(y)
    return ClusterStats(
        cluster=cluster,
        size=len(members),
        n_reference=int(is_ref.sum()),
        n_production=int((~is_ref).sum()),
        reference_share=float(is_ref.mean()),
        predictions={space.class_name(c): int(n) for c, n in enumerate(counts) if n},
        class_index=y,
        class_name=space.class_name(y),
        prediction_share=float(counts[y] / len(members)),
        confidence=float(audit.confidence[of_y].mean()),
        n_labelled=int(labelled.sum()),
        label_purity=float(np.bincount(labels[labelled]).max() / labelled.sum())
        if labelled.any()
        else None,
        error_rate=float((predicted[labelled] != labels[labelled]).mean())
        if labelled.any()
        else None,
        member_distance=member_distance,
        reference_distance=reference_distance,
        reference_members_distance=_median(audit.refs.distance[of_y[audit.is_reference[of_y]]]),
        distance_ratio=member_distance / max(reference_distance, 1e-12)
        if member_distance is not None and reference_distance is not None
        else None,
        profile_distance=None
        if profile is None
        else _js(audit.relevance[of_y].mean(axis=0), profile),
    )


def subclass_signals(
    stats: ClusterStats, overall_reference_share: float, thresholds: SubclassThresholds
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
    audit: _Audit,
    thresholds: SubclassThresholds,
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
        evidence={
            **asdict(stats),
            "layer": space.layer,
            "metric": space.metric,
            "overall_reference_share": overall,
            "signals": signals,
            "members": [space.ids[i] for i in shown],
            "nearest_reference": [space.ids[i] if i >= 0 else None for i in nearest],
            "member_distances": [float(audit.refs.distance[i]) for i in shown],
            "thresholds": thresholds.model_dump(),
        },
    )


def _evidence(stats: ClusterStats) -> dict[str, Any]:
    """A cluster's statistics beside its number and size."""
    return {k: v for k, v in asdict(stats).items() if k not in ("cluster", "size")}


def subclass_check(
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
    kind = choose_kind(len(x), settings.index, settings.index_threshold)
    index = build_index(x, kind, seed=config.seed)
    artefacts = [
        *save_space(space, artifact_dir, settings.float16_above),
        ArtefactRef("embedding_index", str(index.save(artifact_dir / INDEX_FILE).absolute())),
    ]
    if len(x) < MIN_SAMPLES:
        note = f"{len(x)} samples: at least {MIN_SAMPLES} are needed for clusters and maps"
        return SubclassResult(space.layer, space.metric, 0, [], [], [], [], artefacts, note)
    maps = embedding_maps(x, settings.maps, seed=config.seed, max_samples=settings.map_samples)
    artefacts += save_maps(maps, artifact_dir)
    clustering = spectral_clusters(x, settings, config.seed, index)
    audit = _Audit(
        space=space,
        x=x,
        is_reference=is_reference,
        confidence=probabilities.max(axis=1),
        relevance=base.channel_relevance.numpy().astype(np.float64),
        refs=reference_distances(x, space.predicted, is_reference, settings, config.seed),
    )
    clusters, findings = [], []
    for cluster in range(clustering.assignment.max() + 1):
        members = np.flatnonzero(clustering.assignment == cluster)
        stats = cluster_stats(cluster, members, audit)
        clusters.append(
            ClusterSummary(
                cluster=cluster,
                size=stats.size,
                relevance_profile=[float(v) for v in audit.relevance[members].mean(axis=0)],
                evidence=_evidence(stats),
            )
        )
        finding = subclass_finding(
            stats, members, audit, settings.thresholds, settings.evidence_samples
        )
        if finding:
            findings.append(finding)
    note = None
    if not is_reference.any():
        note = "no reference samples (samples[].role: reference): clusters only, no findings"
    return SubclassResult(
        layer=space.layer,
        metric=space.metric,
        k=clustering.k,
        eigenvalues=clustering.eigenvalues,
        clusters=clusters,
        findings=findings,
        maps=maps,
        artefacts=artefacts,
        note=note,
    )


def report_section(result: SubclassResult) -> dict[str, Any]:
    """The report's `subclasses` entry (findings are in the report's `findings`)."""
    return {
        "layer": result.layer,
        "metric": result.metric,
        "k": result.k,
        "eigenvalues": result.eigenvalues,
        "clusters": [asdict(c) for c in result.clusters],
        "maps": [m.method for m in result.maps],
        "artefacts": [asdict(a) for a in result.artefacts],
        "note": result.note,
    }
