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
        default=0.3, description="top-k minus random-k mean relative activation drop under a probe"
    )
