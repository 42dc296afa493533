"""What each cluster of samples holds: reference distances and the per-cluster statistics.

* Reference distances: for each sample predicted as class `y`, the distance `d_i` to its
  nearest reference sample `n(i)` predicted as `y` (for reference samples: the nearest other
  one, leave-one-out).
* Per cluster: size, reference / production members, prediction mix, mean confidence (softmax
  probability of the prevailing class `y`), label purity and error rate where labels exist and,
  over the members predicted as `y`: `distance_ratio = median_{production members i} d_i /
  median_i d_{n(i)}` and `profile_distance = JS(mean R of the members, mean R of the reference
  samples of y)` (Jensen-Shannon distance, base 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

from auditor.checks.embedding_space import EmbeddingSpace
from auditor.checks.neighbours import IndexSetting, build_index, choose_kind, nearest_other, search


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
    index_setting: IndexSetting,
    index_threshold: int,
    seed: int,
) -> ReferenceDistances:
    distance = np.full(len(x), np.nan)
    nearest = np.full(len(x), -1, dtype=np.int64)
    for y in np.unique(predicted):
        reference = np.flatnonzero(is_reference & (predicted == y))
        if len(reference) < 2:
            continue
        kind = choose_kind(len(reference), index_setting, index_threshold)
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
class SubclassSamples:
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


def cluster_stats(cluster: int, members: np.ndarray, audit: SubclassSamples) -> ClusterStats:
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
