"""Counterfactual confirmation of a finding's cue (`auditor.checks.counterfactual`)."""

from __future__ import annotations

from pydantic import Field

from auditor.config.strict import StrictModel


class CounterfactualSettings(StrictModel):
    """Transplant a `spurious_channels` finding's cue into samples of another class and test,
    against a control transplant, how often the prediction moves to the finding's class."""

    enabled: bool = True
    recipients: int = Field(
        default=64, ge=4, description="samples of other classes the cue is transplanted into"
    )
    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="McNemar test level: a cue that moves predictions no more than its control "
        "is confirmed at most at this rate",
    )


class ConsolidationSettings(StrictModel):
    """Merge findings about the same cue and class into one verdict; a flagged localized cue
    (`patch_occlusion` at a cell) explains another probe's finding when that probe's flips
    vanish with the cell occluded (`auditor.checks.consolidation`)."""

    enabled: bool = True
    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="McNemar test level: a probe whose flips do not drop with the cell occluded "
        "is called explained by it at most at this rate",
    )
