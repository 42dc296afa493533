"""A probe's effect: on the predictions, against its neutral twin, and on the activation of the
top-k channels, against random channel sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from auditor.checks.metrics import condition_metrics
from auditor.results import OcclusionMap, ProbeResult, ProbeShift


def relative_drop(original: torch.Tensor, probed: torch.Tensor, channels: Sequence[int]) -> float:
    """Relative loss of the summed mean activation of a channel set under a probe,
    `(sum_c a_c - sum_c a'_c) / sum_c a_c`, clipped to [-1, 1] (1: silenced, 0: unchanged,
    -1: doubled or more). The clip keeps sets that are nearly silent on the original samples
    from dominating an average over random sets with huge negative values."""
    index = list(channels)
    before = float(original[index].sum())
    change = (before - float(probed[index].sum())) / max(abs(before), 1e-12)
    return min(1.0, max(-1.0, change))


def probe_shift(
    name: str,
    before: torch.Tensor,
    after: torch.Tensor,
    top_k: list[int],
    random_sets: list[list[int]],
) -> ProbeShift:
    """Relative activation drop of the top-k and of each random set, from the mean activation
    per channel without (`before`) and with the probe (`after`)."""
    return ProbeShift(
        probe=name,
        top_k_activation_drop=relative_drop(before, after, top_k),
        random_k_activation_drops=[relative_drop(before, after, s) for s in random_sets],
    )


def probe_result(
    name: str,
    logits: torch.Tensor,
    probed_logits: torch.Tensor,
    neutral_logits: torch.Tensor,
    labels: np.ndarray,
    groups: Sequence[str] | None,
    change_norms: np.ndarray,
    shift: ProbeShift,
    occlusion: OcclusionMap | None,
) -> ProbeResult:
    """The probe's and its neutral twin's metrics against the unmodified `logits`, the mean
    size of the probe's change, and its activation shift (and occlusion map, for a scan)."""
    return ProbeResult(
        name=name,
        probed=condition_metrics(probed_logits, logits, labels, groups),
        neutral=condition_metrics(neutral_logits, logits, labels, groups),
        perturbation_norm=float(change_norms.mean()),
        top_k_activation_drop=shift.top_k_activation_drop,
        random_k_activation_drops=shift.random_k_activation_drops,
        occlusion=occlusion,
    )
