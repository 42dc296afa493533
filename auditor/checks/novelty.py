"""Novel clusters: clusters of production samples far from every reference sample, whatever the
model predicts on them (an unlabeled subclass [Hagele2020] needs one confident class; a new
sub-population often gets a mixed, hesitant prediction and is no less a gap in the validation).

Null hypothesis: within the audit, the roles (reference / production) are exchangeable, i.e.
production is drawn like the reference. The clusters are found from the embeddings alone, so
under the null a cluster's roles are a random draw of its size from all roles.

1. Reference share. A cluster of `n` samples with `r` reference members, among `N` samples of
   which `K` are reference: under permuted roles `r` is hypergeometric, so
   `p_share = P(X <= r), X ~ Hypergeom(N, K, n)` exactly. Tested at `alpha / clusters`
   (Bonferroni over the clusters of the audit).
2. Distance. `T = median over the cluster's production members i of min_{reference j != i}
   ||x_i - x_j||` (the prepared embeddings: unit vectors for cosine). Its null is `T` under
   `permutations` random role permutations (the same number of reference samples; members
   and candidate neighbours capped at `max_members` / `max_columns`, seeded subsamples),
   `p_distance = (1 + #{T_b >= T}) / (B + 1)` [Phipson2010]; `distance_ratio = T / median T_b`.
3. Effect of interest: the cluster's reference share is at most `max_reference_ratio` times
   the reference share of all samples (a statistically clear but small deficit in a large audit
   is no finding).

A cluster is `novel_cluster` when `p_share <= alpha / clusters`, `p_distance <= alpha` and the
effect holds. A false alarm needs the first test to fail in some cluster, so the rate of audits
with any novel_cluster finding when production is drawn like the reference is at most `alpha`.

Severity: `high` when the model is not less confident on the production members than on the
reference samples (one-sided Mann-Whitney U [Mann1947], at `alpha`: the model gives no sign it is
outside its validated domain) or the cluster holds at least `large_share` of the production
samples; `medium` otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import hypergeom, mannwhitneyu

from auditor.checks.embedding_space import EmbeddingSpace
from auditor.evidence import NovelClusterEvidence
from auditor.results import Finding


@dataclass(frozen=True)
class NoveltyCriteria:
    """When a cluster is novel (module docstring); the config's `subclasses.novelty`."""

    alpha: float
    max_reference_ratio: float
    permutations: int
    max_members: int
    max_columns: int
    large_share: float


@dataclass(frozen=True)
class ClusterNovelty:
    """One cluster's novelty statistics (module docstring). `confidence`: the production
    members' mean top softmax probability, `reference_confidence` the reference samples';
    `confidence_p_value`: one-sided Mann-Whitney p-value that the members are less confident."""

    cluster: int
    size: int
    n_reference: int
    n_production: int
    reference_share: float
    overall_reference_share: float
    production_share: float
    share_p_value: float
    member_distance: float
    null_member_distance: float
    distance_ratio: float
    distance_p_value: float
    n_permutations: int
    confidence: float
    reference_confidence: float
    confidence_p_value: float
    predictions: dict[str, int]
    novel: bool
    severity: str


def share_p_value(n_reference: int, size: int, n_all_reference: int, n_all: int) -> float:
    """`P(X <= n_reference)`, `X ~ Hypergeom(n_all, n_all_reference, size)`: the exact
    permutation p-value of a cluster's reference count."""
    return float(hypergeom.cdf(n_reference, n_all, n_all_reference, size))


def _subsample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= size:
        return rows
    return np.sort(rng.choice(rows, size=size, replace=False))


def _median_nearest(
    is_ref_sorted: np.ndarray, production: np.ndarray, dist_sorted: np.ndarray
) -> float:
    """Median over the `production` rows of the distance to the first reference column in each
    row's distance order (self excluded by the order)."""
    first = is_ref_sorted.argmax(axis=1)
    found = is_ref_sorted[np.arange(len(first)), first]
    d = dist_sorted[np.arange(len(first)), first]
    keep = production & found
    return float(np.median(d[keep])) if keep.any() else float("nan")


@dataclass(frozen=True)
class DistanceTest:
    """`T`, the median of its null and `p_distance` (module docstring, point 2)."""

    member_distance: float
    null_member_distance: float
    p_value: float


def distance_test(
    x: np.ndarray,
    members: np.ndarray,
    is_reference: np.ndarray,
    criteria: NoveltyCriteria,
    rng: np.random.Generator,
) -> DistanceTest:
    """`T`, the median of its permutation null and `p_distance` (module docstring, point 2)."""
    rows = _subsample(members, criteria.max_members, rng)
    others = np.setdiff1d(np.arange(len(x)), rows)
    columns = np.concatenate([rows, _subsample(others, criteria.max_columns - len(rows), rng)])
    dist = np.sqrt(
        np.maximum(
            (x[rows] ** 2).sum(1)[:, None]
            + (x[columns] ** 2).sum(1)[None]
            - 2 * x[rows] @ x[columns].T,
            0.0,
        )
    )
    dist[np.arange(len(rows)), np.arange(len(rows))] = np.inf  # a sample is not its neighbour
    order = np.argsort(dist, axis=1, kind="stable")[:, :-1]  # the last column is the sample
    dist_sorted = np.take_along_axis(dist, order, axis=1)
    roles = is_reference[columns]
    observed = _median_nearest(roles[order], ~roles[: len(rows)], dist_sorted)
    null = np.empty(criteria.permutations)
    for b in range(criteria.permutations):
        permuted = rng.permutation(roles)
        null[b] = _median_nearest(permuted[order], ~permuted[: len(rows)], dist_sorted)
    null = null[np.isfinite(null)]
    exceed = int((null >= observed).sum()) if np.isfinite(observed) else len(null)
    return DistanceTest(
        member_distance=observed,
        null_member_distance=float(np.median(null)) if len(null) else float("nan"),
        p_value=(1 + exceed) / (len(null) + 1),
    )


def cluster_novelty(
    x: np.ndarray,
    assignment: np.ndarray,
    is_reference: np.ndarray,
    confidence: np.ndarray,
    prediction_names: list[str],
    criteria: NoveltyCriteria,
    seed: int,
) -> list[ClusterNovelty]:
    """Every cluster's novelty statistics and decision (module docstring). `x`: prepared
    embeddings; `confidence`: per sample, the top softmax probability; `prediction_names`:
    per sample, the name of the predicted class."""
    rng = np.random.default_rng(seed)
    n_all, n_ref = len(x), int(is_reference.sum())
    overall = n_ref / n_all
    n_clusters = int(assignment.max()) + 1
    names = np.asarray(prediction_names)
    out = []
    for cluster in range(n_clusters):
        members = np.flatnonzero(assignment == cluster)
        r = int(is_reference[members].sum())
        production = members[~is_reference[members]]
        p_share = share_p_value(r, len(members), n_ref, n_all)
        share = r / len(members)
        if len(production) and 0 < n_ref < n_all:
            test = distance_test(x, members, is_reference, criteria, rng)
            conf_p = float(
                mannwhitneyu(
                    confidence[production], confidence[is_reference], alternative="less"
                ).pvalue
            )
        else:
            test, conf_p = DistanceTest(float("nan"), float("nan"), 1.0), 1.0
        production_share = len(production) / max(n_all - n_ref, 1)
        novel = (
            0 < n_ref < n_all
            and p_share <= criteria.alpha / n_clusters
            and test.p_value <= criteria.alpha
            and share <= criteria.max_reference_ratio * overall
        )
        quiet = conf_p > criteria.alpha
        labels, counts = np.unique(names[production], return_counts=True)
        out.append(
            ClusterNovelty(
                cluster=cluster,
                size=len(members),
                n_reference=r,
                n_production=len(production),
                reference_share=share,
                overall_reference_share=overall,
                production_share=production_share,
                share_p_value=p_share,
                member_distance=test.member_distance,
                null_member_distance=test.null_member_distance,
                distance_ratio=test.member_distance / max(test.null_member_distance, 1e-12),
                distance_p_value=test.p_value,
                n_permutations=criteria.permutations,
                confidence=float(confidence[production].mean())
                if len(production)
                else float("nan"),
                reference_confidence=float(confidence[is_reference].mean())
                if n_ref
                else float("nan"),
                confidence_p_value=conf_p,
                predictions={str(k): int(v) for k, v in zip(labels, counts, strict=True)},
                novel=novel,
                severity="high" if quiet or production_share >= criteria.large_share else "medium",
            )
        )
    return out


def nearest_reference(
    x: np.ndarray, rows: np.ndarray, is_reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each of `rows`: its nearest reference sample (any class, never itself) and the
    Euclidean distance to it in the prepared embeddings."""
    reference = np.flatnonzero(is_reference)
    d = np.linalg.norm(x[rows][:, None, :] - x[reference][None], axis=2)
    d[rows[:, None] == reference[None]] = np.inf
    best = d.argmin(axis=1)
    return reference[best], d[np.arange(len(rows)), best]


def novel_cluster_finding(
    stats: ClusterNovelty,
    space: EmbeddingSpace,
    x: np.ndarray,
    members: np.ndarray,
    is_reference: np.ndarray,
    criteria: NoveltyCriteria,
    max_ids: int,
) -> Finding:
    """The `novel_cluster` finding of a novel cluster: its statistics, and its production
    members nearest the cluster's mean with their nearest reference samples."""
    shown = members[~is_reference[members]]
    centre = x[shown].mean(axis=0)
    shown = shown[np.argsort(np.linalg.norm(x[shown] - centre, axis=1), kind="stable")][:max_ids]
    nearest, distance = nearest_reference(x, shown, is_reference)
    mix = ", ".join(f"{n} '{name}'" for name, n in stats.predictions.items())
    return Finding(
        kind="novel_cluster",
        severity=stats.severity,
        title=(
            f"{stats.n_production} production samples ({stats.production_share:.0%} of "
            f"production) form a cluster with a reference share of {stats.reference_share:.2f} "
            f"(all samples {stats.overall_reference_share:.2f}), {stats.distance_ratio:.1f}x "
            f"farther from the reference than under permuted roles; predicted {mix} at "
            f"{stats.confidence:.0%} confidence"
        ),
        evidence=NovelClusterEvidence(
            **{k: v for k, v in asdict(stats).items() if k not in ("novel", "severity")},
            alpha=criteria.alpha,
            max_reference_ratio=criteria.max_reference_ratio,
            layer=space.layer,
            metric=space.metric,
            members=[space.ids[i] for i in shown],
            nearest_reference=[space.ids[i] for i in nearest],
            member_distances=[float(d) for d in distance],
        ),
    )
