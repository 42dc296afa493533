"""Turn evidence into findings [Chandrasegaran2022].

A validated top-k set alone is evidence, not a finding: every model relies on some channels.
* `probe_sensitivity`: removing a cue changes predictions well beyond a neutral perturbation of
  the same size (flip rate under the probe minus flip rate under the neutral perturbation).
* `spurious_channels`: for the samples predicted as one class, the validated top-k channels
  (dropping them costs far more of the decision margin than dropping random channels) lose
  their activation under a probe that removes a cue the config declares non-semantic, far more
  than random channel sets do.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import numpy as np

from auditor.checks.statistics import effect_size
from auditor.evidence import (
    ChannelThresholds,
    DropoutEffect,
    DropoutTest,
    ProbeSensitivityEvidence,
    SpuriousChannelsEvidence,
)
from auditor.results import (
    ChannelTable,
    ClassAnalysis,
    DropoutTable,
    Finding,
    ProbeResult,
    ProbeShift,
    Severity,
)


@dataclass(frozen=True)
class FindingThresholds:
    """When evidence is a finding (the config's `thresholds`): the top-k margin drop beyond the
    random mean that validates a channel set, the flip rate beyond the neutral twin's that
    makes a probe sensitive, and the activation collapse of validated channels under a
    non-semantic probe."""

    dropout_effect: float
    probe_excess_flip: float
    activation_collapse: float


def _severity(excess: float) -> Severity:
    return "high" if excess >= 0.5 else "medium" if excess >= 0.3 else "low"


def dropout_effect(dropout: DropoutTable) -> DropoutEffect:
    """The top-k margin drop against the random-k distribution ([Chandrasegaran2022]: top-k vs
    random-k vs bottom-k): difference to the random mean, standardised effect
    (`auditor.checks.statistics.effect_size`), and the top-k's rank."""
    random = [r.margin_drop for r in dropout.random_k]
    mean = statistics.fmean(random)
    tested = None if dropout.statistics is None else DropoutTest(**asdict(dropout.statistics))
    return DropoutEffect(
        statistics=tested,
        top_k_margin_drop=dropout.top_k.margin_drop,
        random_k_margin_drop_mean=mean,
        random_k_margin_drop_max=max(random),
        bottom_k_margin_drop=dropout.bottom_k.margin_drop,
        top_k_flip_rate=dropout.top_k.flip_rate,
        random_k_flip_rate_mean=statistics.fmean(r.flip_rate for r in dropout.random_k),
        effect=dropout.top_k.margin_drop - mean,
        effect_size=effect_size(dropout.top_k.margin_drop, np.array(random)),
    )


def validated(dropout: DropoutTable, thresholds: FindingThresholds) -> bool:
    """Top-k dropout hurts far more than random-k: by at least `dropout_effect` of the margin,
    and more than every random set."""
    effect = dropout_effect(dropout)
    return (
        effect.effect >= thresholds.dropout_effect
        and effect.top_k_margin_drop > effect.random_k_margin_drop_max
    )


def probe_sensitivity(probe: ProbeResult, dropout: DropoutTable, thresholds: FindingThresholds) -> Finding | None:
    excess = probe.probed.flip_rate - probe.neutral.flip_rate
    if excess < thresholds.probe_excess_flip:
        return None
    return Finding(
        kind="probe_sensitivity",
        severity=_severity(excess),
        title=(
            f"{probe.name} flips {probe.probed.flip_rate:.0%} of predictions; "
            f"a neutral perturbation of the same size flips {probe.neutral.flip_rate:.0%}"
        ),
        probe=probe.name,
        evidence=ProbeSensitivityEvidence(
            flip_rate=probe.probed.flip_rate,
            neutral_flip_rate=probe.neutral.flip_rate,
            excess_flip_rate=excess,
            margin_drop=probe.probed.margin_drop,
            neutral_margin_drop=probe.neutral.margin_drop,
            accuracy=probe.probed.accuracy,
            baseline_accuracy=dropout.baseline.accuracy,
            perturbation_norm=probe.perturbation_norm,
            threshold=thresholds.probe_excess_flip,
        ),
    )


def spurious_channels(
    analysis: ClassAnalysis,
    shift: ProbeShift,
    layer: str,
    thresholds: FindingThresholds,
    probe_flagged: bool,
) -> Finding | None:
    """The validated top-k channels of one predicted class collapse under a probe that removes a
    non-semantic cue, far more than random channel sets on the same samples."""
    if not validated(analysis.dropout, thresholds) or shift.collapse < thresholds.activation_collapse:
        return None
    random_mean = shift.top_k_activation_drop - shift.collapse
    return Finding(
        kind="spurious_channels",
        severity="high" if probe_flagged else "medium",
        title=(
            f"the {len(analysis.top_k)} most relevant channels of {layer} for class "
            f"'{analysis.class_name}' lose {shift.top_k_activation_drop:.0%} of their activation "
            f"under {shift.probe} (random channels: {random_mean:.0%})"
        ),
        probe=shift.probe,
        evidence=SpuriousChannelsEvidence(
            layer=layer,
            class_index=analysis.class_index,
            class_name=analysis.class_name,
            n_samples=analysis.n_samples,
            channels=analysis.top_k,
            dropout=dropout_effect(analysis.dropout),
            top_k_activation_drop=shift.top_k_activation_drop,
            random_k_activation_drop_mean=random_mean,
            random_k_activation_drops=shift.random_k_activation_drops,
            activation_collapse=shift.collapse,
            thresholds=ChannelThresholds(
                dropout_effect=thresholds.dropout_effect,
                activation_collapse=thresholds.activation_collapse,
            ),
        ),
    )


def derive_findings(
    channels: ChannelTable,
    dropout: DropoutTable,
    probes: list[ProbeResult],
    classes: list[ClassAnalysis],
    thresholds: FindingThresholds,
    non_semantic: list[str],
) -> list[Finding]:
    """Every finding the evidence supports: per probe its sensitivity, then per class the
    spurious channels under each non-semantic probe."""
    findings: list[Finding] = []
    flagged: set[str] = set()
    for probe in probes:
        sensitive = probe_sensitivity(probe, dropout, thresholds)
        if sensitive:
            findings.append(sensitive)
            flagged.add(probe.name)
    for analysis in classes:
        for shift in analysis.probe_shifts:
            if shift.probe not in non_semantic:
                continue
            finding = spurious_channels(
                analysis, shift, channels.layer, thresholds, shift.probe in flagged
            )
            if finding:
                findings.append(finding)
    return findings
