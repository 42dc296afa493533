"""Explanation drift: an audit's explanation statistics against a baseline audit of the model.

The baseline is the audit pinned by `drift.baseline_audit_id`, else the newest succeeded audit
of the same registered model at the same layer. This stage reads it from the store, computes
the statistics and their no-drift ranges of `auditor.checks.drift` against it, and turns each
drifted statistic into an `explanation_drift` finding.

What the pipeline hands over: the per-sample channel relevance `R_i[c]` (N x C); the audit
stores only its bootstrap replicates of the mean (B x C float32, `relevance_bootstraps`):
fixed size whatever N, written in the audit's own transaction, on any database.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditor.checks.drift import (
    DriftBounds,
    ExplanationStats,
    cluster_statistics,
    probe_statistics,
    relevance_bootstrap,
    relevance_statistics,
)
from auditor.config import AuditConfig, DriftSettings
from auditor.evidence import DriftSampleCounts, ExplanationDriftEvidence
from auditor.results import (
    AuditResult,
    ClusterSummary,
    DriftReport,
    DriftStatistic,
    Finding,
    RelevanceBootstrap,
)
from auditor.store import AuditStore
from auditor.store.rows import bootstrap_means
from auditor.store.schema import AuditRow


def drift_bounds(settings: DriftSettings) -> DriftBounds:
    """The statistics' bounds and confidence level of the `drift` config section."""
    t = settings.thresholds
    return DriftBounds(
        spearman_min=t.spearman_min,
        jaccard_min=t.jaccard_min,
        js_distance_max=t.js_distance_max,
        probe_change_max=t.probe_change_max,
        cluster_mix_max=t.cluster_mix_max,
        confidence=settings.confidence,
    )


def current_stats(
    result: AuditResult, bootstrap: RelevanceBootstrap, clusters: Sequence[ClusterSummary]
) -> ExplanationStats:
    """The statistics of the audit being run, from its result, bootstrap and clusters."""
    return ExplanationStats(
        relevance=np.asarray(result.channels.relevance, dtype=np.float64),
        replicates=bootstrap.means,
        k=result.channels.k,
        n_samples=result.n_samples,
        probe_flips={p.name: (p.probed.flip_rate, p.neutral.flip_rate) for p in result.probes},
        cluster_sizes=np.asarray([c.size for c in clusters], dtype=np.int64),
        cluster_profiles=np.asarray([c.relevance_profile for c in clusters], dtype=np.float64),
    )


def stored_stats(audit: AuditRow) -> ExplanationStats:
    """The statistics of a stored audit (it must have a relevance bootstrap)."""
    assert audit.bootstrap is not None and audit.n_samples is not None
    flips: dict[str, dict[str, float]] = {}
    for row in audit.probe_results:
        flips.setdefault(row.probe, {})[row.variant] = row.flip_rate
    return ExplanationStats(
        relevance=np.asarray([s.relevance for s in audit.channel_stats], dtype=np.float64),
        replicates=bootstrap_means(audit.bootstrap),
        k=sum(s.in_top_k for s in audit.channel_stats),
        n_samples=audit.n_samples,
        probe_flips={name: (f["probed"], f["neutral"]) for name, f in flips.items()},
        cluster_sizes=np.asarray([c.size for c in audit.clusters], dtype=np.int64),
        cluster_profiles=np.asarray(
            [c.relevance_profile for c in audit.clusters], dtype=np.float64
        ),
    )


STATISTIC_TITLES = {
    "spearman": "rank correlation of channel relevance",
    "jaccard_top_k": "overlap of the top-k channels",
    "js_distance": "Jensen-Shannon distance of channel relevance",
    "probe_change": "change of the excess flip rate under {probe}",
    "cluster_mix": "change of the cluster mix",
}


def drift_finding(
    statistic: DriftStatistic,
    baseline: AuditRow,
    result: AuditResult,
    settings: DriftSettings,
) -> Finding:
    """An `explanation_drift` finding carrying the statistic, its interval and threshold."""
    name, _, probe = statistic.name.partition(":")
    what = STATISTIC_TITLES[name].format(probe=probe)
    low, high = statistic.interval
    side = "below the minimum" if statistic.bound == "min" else "above the maximum"
    assert baseline.model_version is not None
    return Finding(
        kind="explanation_drift",
        severity=settings.severity,
        title=(
            f"{what} against audit {baseline.id} is {statistic.value:.2f} "
            f"({side} {statistic.threshold:g}; sampling noise: {low:.2f} to {high:.2f} "
            f"at {settings.confidence:.0%})"
        ),
        probe=probe or None,
        evidence=ExplanationDriftEvidence(
            statistic=statistic.name,
            value=statistic.value,
            no_drift_interval=(low, high),
            confidence=settings.confidence,
            threshold=statistic.threshold,
            bound=statistic.bound,
            layer=result.channels.layer,
            baseline_audit_id=baseline.id,
            baseline_model_version=baseline.model_version.version,
            model_version=result.model.version or result.model.uri,
            n_samples=DriftSampleCounts(audit=result.n_samples, baseline=baseline.n_samples),
            n_replicates=settings.bootstrap_replicates,
        ),
    )


def explanation_drift(
    store: AuditStore,
    result: AuditResult,
    channel_relevance: np.ndarray,
    config: AuditConfig,
    clusters: Sequence[ClusterSummary] = (),
) -> DriftReport | None:
    """The audit's relevance bootstrap and its drift against the baseline (None when
    `drift.enabled` is false). Only reads the store; `AuditStore.finish_audit(drift=...)`
    writes the bootstrap and statistics in the audit's transaction, and the report's
    findings must be added to `result.findings` before (the JSON report lists them too).

    `channel_relevance`: the per-sample channel relevance `R_i[c]` (N x C) of the audit."""
    settings = config.drift
    if not settings.enabled:
        return None
    bootstrap = relevance_bootstrap(
        channel_relevance, n_replicates=settings.bootstrap_replicates, seed=config.seed
    )
    layer = result.channels.layer
    baseline = store.drift_baseline(result.model.name, layer, pinned=settings.baseline_audit_id)
    note = _incomparable(baseline, result)
    if note is not None:
        return DriftReport(bootstrap, None, [], [], note=note)
    assert baseline is not None
    current, previous = current_stats(result, bootstrap, clusters), stored_stats(baseline)
    rng = np.random.default_rng([config.seed, bootstrap.seed, baseline.id])
    bounds = drift_bounds(settings)
    statistics = [
        *relevance_statistics(current, previous, bounds),
        *probe_statistics(current, previous, bounds, rng),
        *cluster_statistics(current, previous, bounds, rng),
    ]
    findings = [drift_finding(s, baseline, result, settings) for s in statistics if s.drifted]
    return DriftReport(bootstrap, baseline.id, statistics, findings)


def _incomparable(baseline: AuditRow | None, result: AuditResult) -> str | None:
    """Why the audit cannot be compared with `baseline`; None when it can."""
    layer = result.channels.layer
    if baseline is None:
        return f"no earlier succeeded audit of model {result.model.name!r} at layer {layer!r}"
    if baseline.bootstrap is None:
        return f"baseline audit {baseline.id} has no relevance bootstrap (audited without drift)"
    if len(baseline.channel_stats) != len(result.channels.relevance):
        return (
            f"baseline audit {baseline.id} has {len(baseline.channel_stats)} channels at "
            f"{layer!r}, this audit {len(result.channels.relevance)}"
        )
    return None
