"""When the evidence of dropout and probes becomes a finding."""

from __future__ import annotations

from pydantic import Field

from auditor.config.strict import StrictModel


class Thresholds(StrictModel):
    """When evidence becomes a finding. Defaults give no finding on clean control models."""

    dropout_effect: float = Field(
        default=0.15,
        description="top-k minus mean random-k margin drop for a validated top-k set "
        "(the top-k must also beat every random-k set)",
    )
    probe_excess_flip: float = Field(
        default=0.2, description="probe flip rate minus neutral-perturbation flip rate"
    )
    activation_collapse: float = Field(
        default=0.3,
        description="share of its activation the top-k loses under a probe (a minimum "
        "effect; beyond random channel sets is tested at false_alarm_rate)",
    )
    false_alarm_rate: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="the stated false-alarm rate of the decisions (their significance level)",
    )
