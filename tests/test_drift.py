"""Explanation drift: statistics, the sampling-noise test, and baselines from a real store."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from auditor.audit.drift import current_stats, drift_bounds, explanation_drift
from auditor.checks.drift import (
    ExplanationStats,
    cluster_statistics,
    probe_statistics,
    relevance_bootstrap,
    relevance_statistics,
)
from auditor.config import AuditConfig, DriftSettings
from auditor.errors import ConfigError
from auditor.results import AuditResult, ChannelTable, ClusterSummary, ConditionMetrics
from auditor.store import AuditStore

from . import test_store
from .test_store import make_result, start

# the database fixtures of test_store: a SQLite file and a fresh PostgreSQL database
sqlite_url, postgresql_url = test_store.sqlite_url, test_store.postgresql_url
db_url, store = test_store.db_url, test_store.store

C = 32
K = 3
PROFILE = np.r_[np.full(K, 8.0), np.linspace(0.5, 1.5, C - K)]
MOVED = np.r_[np.full(K, 0.5), np.full(K, 12.0), np.linspace(0.5, 1.5, C - 2 * K)]  # new top-3
SETTINGS = DriftSettings()
BOUNDS = drift_bounds(SETTINGS)


def relevance(seed: int, n: int, profile: np.ndarray = PROFILE, noise: float = 0.5) -> np.ndarray:
    """Per-sample channel relevance `R_i[c]` (N x C): gamma noise around `profile`,
    normalised per sample as in [Chandrasegaran2022] (shares of positive relevance)."""
    rng = np.random.default_rng(seed)
    draws = rng.gamma(1 / noise, profile * noise, size=(n, len(profile)))
    return (draws / draws.sum(axis=1, keepdims=True)).astype(np.float32)


def metrics(flip_rate: float, n: int) -> ConditionMetrics:
    return ConditionMetrics(None, None, flip_rate, flip_rate, n, 0)


def result_for(matrix: np.ndarray, flips: tuple[float, float] = (0.3, 0.05)) -> AuditResult:
    """An audit of `skin-lesion-cnn` at layer4 whose channel table is the mean of `matrix` and
    whose grayscale probe flips `flips` (probed, neutral) of its samples."""
    base = make_result()
    mean = matrix.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    n = len(matrix)
    channels = ChannelTable(
        layer="layer4",
        method="lrp",
        relevance=[float(r) for r in mean],
        top_k=[int(c) for c in order[:K]],
        bottom_k=[int(c) for c in order[::-1][:K]],
    )
    probe = replace(base.probes[0], probed=metrics(flips[0], n), neutral=metrics(flips[1], n))
    return replace(base, channels=channels, probes=[probe], n_samples=n, findings=[])


def stats(
    matrix: np.ndarray,
    flips: tuple[float, float] = (0.3, 0.05),
    clusters: list[ClusterSummary] | None = None,
    seed: int = 0,
) -> ExplanationStats:
    bootstrap = relevance_bootstrap(matrix, n_replicates=200, seed=seed)
    return current_stats(result_for(matrix, flips), bootstrap, clusters or [])


def by_name(statistics: list) -> dict:
    return {s.name: s for s in statistics}


def config(**drift: object) -> AuditConfig:
    return AuditConfig.model_validate(
        {
            "model": {"uri": "models:/skin-lesion-cnn@champion"},
            "samples": [{"name": "p", "uri": "p"}],
            "drift": drift,
        }
    )


def test_bootstrap_replicates_resample_the_mean() -> None:
    matrix = relevance(1, 400)
    boot = relevance_bootstrap(matrix, n_replicates=300, seed=7)
    assert boot.means.shape == (300, C) and boot.means.dtype == np.float32
    assert boot.n_samples == 400
    standard_error = matrix.std(axis=0) / np.sqrt(400)
    np.testing.assert_allclose(
        boot.means.mean(axis=0), matrix.mean(axis=0), atol=standard_error.max()
    )
    np.testing.assert_allclose(boot.means.std(axis=0), standard_error, rtol=0.25)

    again = relevance_bootstrap(matrix, n_replicates=300, seed=7)
    np.testing.assert_array_equal(again.means, boot.means)  # same audit, same replicates
    assert again.seed == boot.seed
    other = relevance_bootstrap(relevance(2, 400), n_replicates=300, seed=7)
    assert other.seed != boot.seed  # another sample set draws independent resamples
    assert relevance_bootstrap(matrix, n_replicates=300, seed=8).seed != boot.seed


def test_identical_audits_do_not_drift() -> None:
    same = stats(relevance(1, 200))
    statistics = by_name(relevance_statistics(same, same, BOUNDS))
    assert statistics["spearman"].value == pytest.approx(1.0)
    assert statistics["jaccard_top_k"].value == pytest.approx(1.0)
    assert statistics["js_distance"].value == pytest.approx(0.0, abs=1e-6)
    assert not any(s.drifted for s in statistics.values())


def test_moved_relevance_drifts() -> None:
    before, after = stats(relevance(1, 300)), stats(relevance(2, 300, MOVED), seed=1)
    statistics = by_name(relevance_statistics(after, before, BOUNDS))
    spearman, jaccard, js = (statistics[n] for n in ("spearman", "jaccard_top_k", "js_distance"))
    assert jaccard.value == 0.0 and jaccard.drifted
    assert js.value > 0.3 and js.drifted and js.bound == "max"
    assert js.interval[0] == 0.0 and js.interval[1] < 0.05  # noise alone stays below 0.05
    assert spearman.bound == "min" and spearman.interval[1] == 1.0
    assert spearman.value < min(spearman.threshold, spearman.interval[0])
    assert spearman.drifted


def test_sampling_noise_alone_is_not_drift() -> None:
    """Few, noisy samples of one population: the statistics move far past their thresholds,
    but no further than resampling moves them, so nothing drifts."""
    flat = np.linspace(0.9, 1.1, C)
    a, b = (
        stats(relevance(1, 15, flat, noise=2.0)),
        stats(relevance(2, 15, flat, noise=2.0), seed=1),
    )
    statistics = by_name(relevance_statistics(a, b, BOUNDS))
    assert statistics["spearman"].value < SETTINGS.thresholds.spearman_min
    assert statistics["jaccard_top_k"].value < SETTINGS.thresholds.jaccard_min
    assert statistics["js_distance"].value > SETTINGS.thresholds.js_distance_max
    assert not any(s.drifted for s in statistics.values())

    # the same population audited again and again: no false alarms
    alarms = [
        s.name
        for seed in range(20)
        for s in relevance_statistics(
            stats(relevance(100 + seed, 60)), stats(relevance(200 + seed, 60), seed=1), BOUNDS
        )
        if s.drifted
    ]
    assert alarms == []


def test_probe_change_is_told_from_noise() -> None:
    rng = np.random.default_rng(0)
    big_before = stats(relevance(1, 400), flips=(0.10, 0.05))
    big_after = stats(relevance(2, 400), flips=(0.45, 0.05))
    change = probe_statistics(big_after, big_before, BOUNDS, rng)
    assert [s.name for s in change] == ["probe_change:grayscale"]
    assert change[0].value == pytest.approx(0.35)
    assert change[0].interval[1] < 0.1 and change[0].drifted

    # the same change measured on 10 samples each is within what sampling alone produces
    small_before = stats(relevance(1, 10), flips=(0.1, 0.0))
    small_after = stats(relevance(2, 10), flips=(0.4, 0.0))
    change = probe_statistics(small_after, small_before, BOUNDS, rng)[0]
    assert change.value == pytest.approx(0.3) and change.value > change.threshold
    assert not change.drifted


def clusters(sizes: list[int], profiles: list[float]) -> list[ClusterSummary]:
    return [
        ClusterSummary(cluster=i, size=size, relevance_profile=[p] * C)
        for i, (size, p) in enumerate(zip(sizes, profiles, strict=True))
    ]


def test_cluster_mix_matches_clusters_by_their_relevance_profile() -> None:
    rng = np.random.default_rng(0)
    matrix = relevance(1, 400)
    before = stats(matrix, clusters=clusters([300, 100], [0.1, 0.5]))
    relabelled = stats(matrix, clusters=clusters([100, 300], [0.5, 0.1]))
    (mix,) = cluster_statistics(relabelled, before, BOUNDS, rng)
    assert mix.name == "cluster_mix" and mix.value == pytest.approx(0.0) and not mix.drifted

    grown = stats(matrix, clusters=clusters([100, 300], [0.1, 0.5]))
    (mix,) = cluster_statistics(grown, before, BOUNDS, rng)
    assert mix.value == pytest.approx(0.5) and mix.drifted

    # a new cluster without a partner counts in full: 1/2 (|.75-.6| + |.25-.2| + .2) = 0.2
    split = stats(matrix, clusters=clusters([240, 80, 80], [0.1, 0.5, 0.9]))
    (mix,) = cluster_statistics(split, before, BOUNDS, rng)
    assert mix.value == pytest.approx(0.2)
    assert cluster_statistics(stats(matrix), before, BOUNDS, rng) == []


def test_drift_against_stored_baselines(store: AuditStore) -> None:
    cfg = config(severity="high")

    def audit(matrix: np.ndarray, cfg: AuditConfig = cfg, **finish: object) -> tuple[int, object]:
        result = result_for(matrix)
        drift = explanation_drift(store, result, matrix, cfg)
        if drift is not None:
            result.findings.extend(drift.findings)
        audit_id = start(store)
        store.finish_audit(audit_id, result, drift=drift, **finish)
        return audit_id, drift

    first, drift = audit(relevance(1, 300))
    assert (drift.baseline_audit_id, drift.statistics, drift.findings) == (None, [], [])
    assert drift.note == "no earlier succeeded audit of model 'skin-lesion-cnn' at layer 'layer4'"
    assert store.get_audit(first).bootstrap.n_replicates == 200

    second, drift = audit(relevance(2, 300))  # same population
    assert drift.baseline_audit_id == first and drift.findings == []
    assert [s.name for s in drift.statistics] == [
        "spearman",
        "jaccard_top_k",
        "js_distance",
        "probe_change:grayscale",
    ]
    stored = {s.name: s for s in store.get_audit(second).drift_stats}
    assert stored["js_distance"].baseline_audit_id == first
    assert stored["js_distance"].value == pytest.approx(drift.statistics[2].value)
    assert not any(s.drifted for s in stored.values())

    moved, drift = audit(relevance(3, 300, MOVED))
    assert drift.baseline_audit_id == second
    findings = {f.evidence.statistic: f for f in drift.findings}
    assert set(findings) == {"spearman", "jaccard_top_k", "js_distance"}
    js = findings["js_distance"]
    assert (js.kind, js.severity, js.probe) == ("explanation_drift", "high", None)
    assert js.evidence.threshold == 0.1 and js.evidence.bound == "max"
    low, high = js.evidence.no_drift_interval
    assert low == 0.0 and high < js.evidence.value
    assert js.evidence.baseline_audit_id == second
    assert js.evidence.n_samples.model_dump() == {"audit": 300, "baseline": 300}
    assert f"against audit {second} is {js.evidence.value:.2f}" in js.title
    assert "above the maximum 0.1" in js.title
    stored_findings = store.findings(moved)
    assert [f.kind for f in stored_findings] == ["explanation_drift"] * 3
    assert len({f.fingerprint for f in stored_findings}) == 3  # one per statistic

    # pinned to the first audit, the moved relevance drifts again, with the same fingerprints
    _, drift = audit(relevance(4, 300, MOVED), config(baseline_audit_id=first))
    assert drift.baseline_audit_id == first
    later = store.findings(store.list_audits(limit=1)[0].id)
    assert {f.fingerprint for f in later} == {f.fingerprint for f in stored_findings}

    assert (
        explanation_drift(
            store, result_for(relevance(5, 50)), relevance(5, 50), config(enabled=False)
        )
        is None
    )
    with pytest.raises(
        ConfigError, match="drift.baseline_audit_id = 999: that audit does not exist"
    ):
        explanation_drift(
            store, result_for(relevance(5, 50)), relevance(5, 50), config(baseline_audit_id=999)
        )


def test_incomparable_baselines_are_skipped_with_a_note(store: AuditStore) -> None:
    without_drift = start(store)
    store.finish_audit(without_drift, result_for(relevance(1, 100)))
    matrix = relevance(2, 100)
    drift = explanation_drift(store, result_for(matrix), matrix, config())
    assert (
        drift.note
        == f"baseline audit {without_drift} has no relevance bootstrap (audited without drift)"
    )
    assert drift.statistics == [] and drift.bootstrap.means.shape == (200, C)

    with_drift = start(store)
    store.finish_audit(with_drift, result_for(matrix), drift=drift)
    wider = relevance(3, 100, np.r_[PROFILE, PROFILE])
    drift = explanation_drift(store, result_for(wider), wider, config())
    assert drift.note == f"baseline audit {with_drift} has 32 channels at 'layer4', this audit 64"
    assert drift.findings == []
