"""Explanation drift against a baseline audit: thresholds and the bootstrap."""

from __future__ import annotations

from pydantic import Field

from auditor.config.strict import StrictModel
from auditor.results import Severity


class DriftThresholds(StrictModel):
    """Tolerated change of explanation statistics against the baseline audit. A statistic
    drifts when it lies past its threshold and outside its no-drift (sampling noise) range."""

    spearman_min: float = Field(
        default=0.8, ge=-1, le=1, description="rank correlation of per-channel relevance"
    )
    jaccard_min: float = Field(default=0.5, ge=0, le=1, description="overlap of the top-k sets")
    js_distance_max: float = Field(
        default=0.1, ge=0, le=1, description="Jensen-Shannon distance (base 2) of relevance shares"
    )
    probe_change_max: float = Field(
        default=0.2, ge=0, le=1, description="change of a probe's excess flip rate"
    )
    cluster_mix_max: float = Field(
        default=0.2, ge=0, le=1, description="total variation distance of matched cluster shares"
    )


class DriftSettings(StrictModel):
    """Explanation drift against a baseline: a pinned audit, else the model's previous one."""

    enabled: bool = True
    baseline_audit_id: int | None = Field(
        default=None, description="pinned baseline audit; default: previous successful audit"
    )
    bootstrap_replicates: int = Field(default=200, ge=50, le=5000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    severity: Severity = "medium"
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
