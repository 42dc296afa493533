"""Alert rules and the sinks they feed (each sink validated by its registered type)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from auditor.alerts.sinks import AlertSink
from auditor.config.strict import StrictModel
from auditor.results import Severity


class AlertRule(StrictModel):
    """When to alert: explanation drift, a finding at or above `min_severity` (only one
    absent from the model's previous audit when `new_only`), or a failed audit."""

    event: Literal["drift", "finding", "audit_failed"]
    min_severity: Severity = "high"
    new_only: bool = True
    sinks: list[str] = Field(min_length=1)
    cooldown_s: float | None = Field(
        default=None, ge=0, description="per rule; default: alerts.cooldown_s"
    )


class AlertSettings(StrictModel):
    """Alert sinks and the rules that feed them; an alert with the fingerprint of one sent to
    the same sink within the cooldown is stored as suppressed instead of sent."""

    cooldown_s: float = Field(default=86400, ge=0)
    sinks: list[AlertSink] = Field(
        default_factory=list, description="each validated by the settings model of its `type`"
    )
    rules: list[AlertRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_sinks(self) -> AlertSettings:
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"alert sink names must be unique, got {names}")
        for rule in self.rules:
            unknown = sorted(set(rule.sinks) - set(names))
            if unknown:
                raise ValueError(f"alert rule names unknown sinks {unknown}; defined: {names}")
        return self
