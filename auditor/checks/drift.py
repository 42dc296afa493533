"""Explanation drift statistics of two audits and their no-drift (sampling noise) ranges.

Pure numerics: per-channel relevance, its bootstrap replicates, probe flip rates and cluster
sizes in (`ExplanationStats`), typed `DriftStatistic`s out. Statistics of the current audit A
against the baseline B (C channels at the layer, `R[c]` the mean channel relevance of
[Chandrasegaran2022]):

* `spearman` (bound min): Spearman rank correlation of `R_A` and `R_B`;
* `jaccard_top_k` (min): `|T_A & T_B| / |T_A | T_B|` of the top-k channel sets (k of A);
* `js_distance` (max): Jensen-Shannon distance, base 2 (in [0, 1]), of the relevance shares
  `p[c] = R[c]^+ / sum_c R[c]^+`;
* `probe_change:<probe>` (max): `|e_A - e_B|` of the probe's excess flip rate `e` = flip rate
  under the probe minus flip rate under its control, for probes run by both audits;
* `cluster_mix` (max, when both audits have clusters): total variation distance
  `1/2 sum |s_A - s_B|` of the cluster shares, clusters matched one to one by the Euclidean
  distance of their relevance profiles (Hungarian assignment), unmatched ones against 0.

Sampling noise: two audits of the same population differ in every statistic, the more so
the fewer samples they have. Each statistic is therefore also computed on B no-drift
replicates: what it would be if both audits sampled one population, drawn by bootstrap over
samples. For the mean relevance, the pooled mean is kept and the audits' difference is
redrawn from their stored `RelevanceBootstrap` replicates (as a permutation of the samples
between the two audits would, see `relevance_statistics`); proportions (flip rates, cluster
shares) are drawn as a bootstrap over samples draws them: binomial (multinomial) counts of
each audit's N samples at the pooled rates (bootstrap tests from the pooled sample, Efron &
Tibshirani 1993, ch. 16). The statistic's interval is its one-sided no-drift range at
`DriftBounds.confidence`; it drifts only when it lies past both that range (sampling noise
does not explain it) and its bound (the change matters).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon
from scipy.stats import rankdata

from auditor.results import DriftStatistic, RelevanceBootstrap

REPLICATES_PER_CHUNK = 16


@dataclass(frozen=True)
class ExplanationStats:
    """What drift compares of one audit: mean channel relevance, its bootstrap replicates,
    top-k size, sample count, probe flip rates `(probed, neutral)` and clusters."""

    relevance: np.ndarray
    replicates: np.ndarray
    k: int
    n_samples: int
    probe_flips: dict[str, tuple[float, float]]
    cluster_sizes: np.ndarray
    cluster_profiles: np.ndarray


@dataclass(frozen=True)
class DriftBounds:
    """Each statistic's tolerated bound (past it, a change matters) and the level of the
    no-drift ranges."""

    spearman_min: float
    jaccard_min: float
    js_distance_max: float
    probe_change_max: float
    cluster_mix_max: float
    confidence: float


def relevance_bootstrap(
    channel_relevance: np.ndarray, *, n_replicates: int, seed: int
) -> RelevanceBootstrap:
    """Bootstrap replicates of the mean of the rows of `channel_relevance` (N x C): replicate b
    is `w_b @ R / N` with `w_b ~ Multinomial(N, 1/N)` resample counts.

    The generator's seed mixes `seed` with a digest of the matrix: the same audit gets the
    same replicates, different sample sets get independent ones."""
    matrix = np.ascontiguousarray(channel_relevance, dtype=np.float32)
    n = matrix.shape[0]
    digest = hashlib.sha256(matrix.tobytes() + seed.to_bytes(8, "little", signed=True)).digest()
    stream = int.from_bytes(digest[:8], "little") >> 1  # fits a signed 64-bit column
    rng = np.random.default_rng(stream)
    chunks = []
    for start in range(0, n_replicates, REPLICATES_PER_CHUNK):
        size = min(REPLICATES_PER_CHUNK, n_replicates - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float32)
        chunks.append(counts @ matrix / n)
    return RelevanceBootstrap(means=np.concatenate(chunks), n_samples=n, seed=stream)


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of (R x C) arrays: Pearson correlation of the ranks
    (average ranks for ties); an undefined one (a constant row) counts as 0."""
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    return np.divide((ra * rb).sum(axis=-1), norm, out=np.zeros(norm.shape), where=norm > 0)


def _top_k_mask(relevance: np.ndarray, k: int) -> np.ndarray:
    """Membership of the top-k channels per row; ties broken by channel index, as in
    `auditor.checks.dropout.rank_channels`."""
    order = np.argsort(-relevance, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(relevance.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def _jaccard_top_k(k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Row-wise Jaccard overlap of the top-k channel sets."""

    def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ma, mb = _top_k_mask(a, k), _top_k_mask(b, k)
        return (ma & mb).sum(axis=-1) / (ma | mb).sum(axis=-1)

    return jaccard


def _shares(relevance: np.ndarray) -> np.ndarray:
    """`R^+ / sum R^+` per row; a row without positive relevance is uniform."""
    positive = np.clip(relevance, 0.0, None)
    total = positive.sum(axis=-1, keepdims=True)
    uniform = np.full_like(positive, 1.0 / positive.shape[-1])
    return np.divide(positive, total, out=uniform, where=total > 0)


def _js_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return jensenshannon(_shares(a), _shares(b), base=2, axis=-1)


def no_drift_range(
    null: np.ndarray, bound: Literal["min", "max"], confidence: float, limits: tuple[float, float]
) -> tuple[float, float]:
    """The one-sided range holding `confidence` of the statistic's no-drift replicates `null`:
    `[q(1 - confidence), upper limit]` for a `min` statistic, `[lower limit, q(confidence)]`
    for a `max` one."""
    if bound == "min":
        return float(np.quantile(null, 1.0 - confidence)), limits[1]
    return limits[0], float(np.quantile(null, confidence))


@dataclass(frozen=True)
class StatisticSpec:
    """A statistic's name, threshold, tolerated side and range."""

    name: str
    threshold: float
    bound: Literal["min", "max"]
    limits: tuple[float, float]

    def measure(self, value: float, null: np.ndarray, confidence: float) -> DriftStatistic:
        interval = no_drift_range(null, self.bound, confidence, self.limits)
        return DriftStatistic(self.name, float(value), interval, self.threshold, self.bound)


def _pooled(a: np.ndarray, n_a: int, b: np.ndarray, n_b: int) -> np.ndarray:
    """The sample-weighted mean `(n_A a + n_B b) / (n_A + n_B)`: both audits' common value
    under no drift."""
    return (n_a * a + n_b * b) / (n_a + n_b)


def relevance_statistics(
    current: ExplanationStats, baseline: ExplanationStats, bounds: DriftBounds
) -> list[DriftStatistic]:
    """Spearman, top-k Jaccard and Jensen-Shannon distance.

    No-drift replicates keep the pooled mean `M` and redraw the difference: with bootstrap
    noise `D*_b = (R*_A,b - R_A) - (R*_B,b - R_B)`, the pair is `M + w_B D*_b`, `M - w_A D*_b`
    (`w_A = n_A / (n_A + n_B)`), which is how the observed pair splits around `M` when both
    audits sample one population. (Shifting each audit's replicates to `M` instead would add
    the noise of `M` to both sides and make noisy audits look alike.)"""
    pairs = min(len(current.replicates), len(baseline.replicates))
    n_a, n_b = current.n_samples, baseline.n_samples
    pooled = _pooled(current.relevance, n_a, baseline.relevance, n_b)
    noise = (current.replicates[:pairs] - current.relevance) - (
        baseline.replicates[:pairs] - baseline.relevance
    )
    null_a = pooled + n_b / (n_a + n_b) * noise
    null_b = pooled - n_a / (n_a + n_b) * noise
    specs = [
        (StatisticSpec("spearman", bounds.spearman_min, "min", (-1.0, 1.0)), _spearman),
        (
            StatisticSpec("jaccard_top_k", bounds.jaccard_min, "min", (0.0, 1.0)),
            _jaccard_top_k(current.k),
        ),
        (StatisticSpec("js_distance", bounds.js_distance_max, "max", (0.0, 1.0)), _js_distance),
    ]
    return [
        spec.measure(f(current.relevance, baseline.relevance), f(null_a, null_b), bounds.confidence)
        for spec, f in specs
    ]


def _excess(flip_rates: np.ndarray) -> np.ndarray:
    """Probe flip rate minus neutral flip rate, from `(..., 2)` arrays `(probed, neutral)`."""
    return flip_rates[..., 0] - flip_rates[..., 1]


def probe_statistics(
    current: ExplanationStats,
    baseline: ExplanationStats,
    bounds: DriftBounds,
    rng: np.random.Generator,
) -> list[DriftStatistic]:
    """`|e_A - e_B|` of each probe run by both audits. No-drift replicates: each audit's flip
    counts drawn as binomials of its N samples at the pooled flip rates."""
    n_replicates = len(current.replicates)
    n_a, n_b = current.n_samples, baseline.n_samples
    statistics = []
    for probe in sorted(current.probe_flips.keys() & baseline.probe_flips.keys()):
        rates_a = np.asarray(current.probe_flips[probe])
        rates_b = np.asarray(baseline.probe_flips[probe])
        pooled = _pooled(rates_a, n_a, rates_b, n_b)
        flips_a = rng.binomial(n_a, pooled, size=(n_replicates, 2)) / n_a
        flips_b = rng.binomial(n_b, pooled, size=(n_replicates, 2)) / n_b
        value = abs(_excess(rates_a) - _excess(rates_b))
        null = np.abs(_excess(flips_a) - _excess(flips_b))
        spec = StatisticSpec(f"probe_change:{probe}", bounds.probe_change_max, "max", (0.0, 2.0))
        statistics.append(spec.measure(value, null, bounds.confidence))
    return statistics


def matched_shares(current: ExplanationStats, baseline: ExplanationStats) -> np.ndarray:
    """Cluster shares of both audits (2 x U) over the union of their clusters: pairs matched
    by the Euclidean distance of their relevance profiles (Hungarian assignment) share a
    column, unmatched clusters have a share of 0 in the other audit."""
    cost = np.linalg.norm(
        current.cluster_profiles[:, None, :] - baseline.cluster_profiles[None, :, :], axis=-1
    )
    rows, cols = linear_sum_assignment(cost)
    order_a = [*rows, *np.setdiff1d(np.arange(len(current.cluster_sizes)), rows)]
    order_b = [*cols, *np.setdiff1d(np.arange(len(baseline.cluster_sizes)), cols)]
    union = len(order_a) + len(order_b) - len(rows)
    shares = np.zeros((2, union))
    shares[0, : len(order_a)] = current.cluster_sizes[order_a] / current.cluster_sizes.sum()
    columns_b = [*range(len(cols)), *range(len(order_a), union)]
    shares[1, columns_b] = baseline.cluster_sizes[order_b] / baseline.cluster_sizes.sum()
    return shares


def cluster_statistics(
    current: ExplanationStats,
    baseline: ExplanationStats,
    bounds: DriftBounds,
    rng: np.random.Generator,
) -> list[DriftStatistic]:
    """The cluster-mix change `1/2 sum |s_A - s_B|` (none unless both audits have clusters).
    No-drift replicates: each audit's cluster sizes drawn as multinomials of its N samples at
    the pooled shares."""
    if len(current.cluster_sizes) == 0 or len(baseline.cluster_sizes) == 0:
        return []
    shares = matched_shares(current, baseline)
    n_a, n_b = int(current.cluster_sizes.sum()), int(baseline.cluster_sizes.sum())
    pooled = _pooled(shares[0], n_a, shares[1], n_b)
    n_replicates = len(current.replicates)
    null_a = rng.multinomial(n_a, pooled, size=n_replicates) / n_a
    null_b = rng.multinomial(n_b, pooled, size=n_replicates) / n_b
    spec = StatisticSpec("cluster_mix", bounds.cluster_mix_max, "max", (0.0, 1.0))
    value = 0.5 * np.abs(shares[0] - shares[1]).sum()
    return [spec.measure(value, 0.5 * np.abs(null_a - null_b).sum(axis=-1), bounds.confidence)]
