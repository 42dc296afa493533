"""How audits are recorded and kept: MLflow logging, artefact retention, heartbeats."""

from __future__ import annotations

from pydantic import Field, model_validator

from auditor.config.strict import StrictModel


class MlflowLogging(StrictModel):
    """Log each audit to an MLflow run (metrics, report, tables) and tag the audited version."""

    enabled: bool = False
    experiment: str = Field(default="relevance-audits", min_length=1)


class RetentionSettings(StrictModel):
    """Prune the artefacts (files) of old audits; their statistics and findings stay."""

    artefact_days: float | None = Field(
        default=None, gt=0, description="prune artefacts of audits older than this; null: never"
    )
    keep_last: int = Field(default=3, ge=0, description="never prune the newest audits of a model")


class HeartbeatSettings(StrictModel):
    """A running audit refreshes its heartbeat; one silent for `stale_after_s` (or whose
    process is gone, on the same host) is marked failed by the next auditor that starts."""

    interval_s: float = Field(default=30, gt=0)
    stale_after_s: float = Field(default=600, gt=0)

    @model_validator(mode="after")
    def _timeout_spans_beats(self) -> HeartbeatSettings:
        if self.stale_after_s < 3 * self.interval_s:
            raise ValueError("stale_after_s must be at least 3 * interval_s")
        return self
