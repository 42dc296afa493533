"""Turn evidence into findings (seed 000, case C).

A validated top-k set alone is evidence, not a finding: every model relies on some channels.
* `probe_sensitivity`: removing a cue changes predictions well beyond a neutral perturbation of
  the same size (flip rate under the probe minus flip rate under the neutral perturbation).
* `spurious_channels`: the validated top-k channels (dropping them flips far more predictions
  than dropping random channels) lose their activation under a probe that removes a cue the
  config declares non-semantic, far more than random channel sets do.
"""

from __future__ import annotations

import statistics

from auditor.config import Thresholds
from auditor.results import ChannelTable, DropoutTable, Finding, ProbeResult, Severity


def _severity(excess: float) -> Severity:
    return "high" if excess >= 0.5 else "medium" if excess >= 0.3 else "low"


def dropout_effect(dropout: DropoutTable) -> dict[str, float]:
    """Top-k flip rate against the random-k distribution: difference and standardised effect."""
    random = [r.flip_rate for r in dropout.random_k]
    mean = statistics.fmean(random)
    spread = statistics.pstdev(random)
    return {
        "top_k_flip_rate": dropout.top_k.flip_rate,
        "random_k_flip_rate_mean": mean,
        "random_k_flip_rate_std": spread,
        "bottom_k_flip_rate": dropout.bottom_k.flip_rate,
        "effect": dropout.top_k.flip_rate - mean,
        "effect_size": (dropout.top_k.flip_rate - mean) / max(spread, 0.01),
    }


def probe_sensitivity(probe: ProbeResult, dropout: DropoutTable, thresholds: Thresholds) -> Finding | None:
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
        evidence={
            "flip_rate": probe.probed.flip_rate,
            "neutral_flip_rate": probe.neutral.flip_rate,
            "excess_flip_rate": excess,
            "logit_drop": probe.probed.logit_drop,
            "neutral_logit_drop": probe.neutral.logit_drop,
            "accuracy": probe.probed.accuracy,
            "baseline_accuracy": dropout.baseline.accuracy,
            "perturbation_norm": probe.perturbation_norm,
            "threshold": thresholds.probe_excess_flip,
        },
    )


def spurious_channels(
    probe: ProbeResult,
    channels: ChannelTable,
    dropout: DropoutTable,
    thresholds: Thresholds,
    probe_flagged: bool,
) -> Finding | None:
    effect = dropout_effect(dropout)
    random_drop = statistics.fmean(probe.random_k_activation_drops)
    collapse = probe.top_k_activation_drop - random_drop
    if effect["effect"] < thresholds.dropout_effect or collapse < thresholds.activation_collapse:
        return None
    return Finding(
        kind="spurious_channels",
        severity="high" if probe_flagged else "medium",
        title=(
            f"the {channels.k} most relevant channels of {channels.layer} lose "
            f"{probe.top_k_activation_drop:.0%} of their activation under {probe.name} "
            f"(random channels: {random_drop:.0%})"
        ),
        probe=probe.name,
        evidence={
            "layer": channels.layer,
            "channels": channels.top_k,
            "dropout": effect,
            "top_k_activation_drop": probe.top_k_activation_drop,
            "random_k_activation_drop_mean": random_drop,
            "random_k_activation_drops": probe.random_k_activation_drops,
            "activation_collapse": collapse,
            "thresholds": {
                "dropout_effect": thresholds.dropout_effect,
                "activation_collapse": thresholds.activation_collapse,
            },
        },
    )


def derive_findings(
    channels: ChannelTable,
    dropout: DropoutTable,
    probes: list[ProbeResult],
    thresholds: Thresholds,
    non_semantic: list[str],
) -> list[Finding]:
    """Every finding the evidence supports, probe findings first."""
    findings: list[Finding] = []
    for probe in probes:
        sensitive = probe_sensitivity(probe, dropout, thresholds)
        if sensitive:
            findings.append(sensitive)
        if probe.name in non_semantic:
            spurious = spurious_channels(probe, channels, dropout, thresholds, sensitive is not None)
            if spurious:
                findings.append(spurious)
    return findings
