"""A probe's effect: on the predictions, against its control, per predicted class (paired
flips, exact McNemar test [McNemar1947]), and on the activation of a class's top-k channels,
against random channel sets.

The activation shift is signed and direction-aware, so that a gain is never read as a loss
([Chandrasegaran2022] compare the activations of the relevant channels on original and
grey-scaled images). From the per-sample spatial means `a_ij` of channel j without and `a'_ij`
with the probe, over the samples i of one predicted class:

* standardised loss of channel j: `z_j = (m_j - m'_j) / s_j`, with `m_j = mean_i a_ij`,
  `m'_j = mean_i a'_ij` and `s_j = sd_i a_ij` (the channel's spread over those samples, floored
  at `SPREAD_FLOOR` of the mean spread so a silent channel cannot dominate): > 0 the channel
  loses activation, < 0 it gains, in units of its own spread (signed activations, e.g. after
  Hardswish, need no special case: no ratio of signed sums is taken);
* the set statistic: `Z(S) = mean_{j in S} z_j`;
* its null: `Z` over `n_null` random k-sets drawn from all the layer's channels (every k-set
  when there are fewer), on the same samples and the same probe: a permutation null, exact when
  no channel set is special (the top-k is one of the sets it draws; drawing from the channels
  outside the top-k only would shift the null away from the top-k's and make p too small), and
  a probe that shifts every channel (JPEG, a brightness change) shifts the null with it;
* p-value `(1 + #{Z_null >= Z_top}) / (1 + n_null)` [Phipson2010] and effect size
  `(Z_top - mean Z_null) / sd Z_null`.

For reading, the share of activation lost, `L(S) = sum_{j in S} (m_j - m'_j) / sum_{j in S}
|m_j|` (magnitudes in the denominator, never clipped; < 0 is a gain), of the top-k and of the
dropout's random sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np
import torch

from auditor.checks.metrics import condition_metrics
from auditor.checks.statistics import effect_size, empirical_p_value, mcnemar_p_value
from auditor.results import ActivationTest, ClassFlips, OcclusionMap, ProbeResult, ProbeShift

#: floor of a channel's spread `s_j`, as a share of the mean spread over the layer's channels
SPREAD_FLOOR = 1e-3
#: smallest floor of the spread in activation units (a layer that is silent everywhere)
_MIN_SPREAD = 1e-12


def standardised_losses(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per channel, `z_j = (m_j - m'_j) / s_j` from per-sample channel means without
    (`before`, N x C) and with the probe (`after`, N x C); see the module docstring."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    spread = before.std(axis=0, ddof=1) if len(before) > 1 else np.zeros(before.shape[1])
    floor = max(_MIN_SPREAD, SPREAD_FLOOR * float(spread.mean()))
    return (before.mean(axis=0) - after.mean(axis=0)) / np.maximum(spread, floor)


def relative_loss(before: np.ndarray, after: np.ndarray, channels: Sequence[int]) -> float:
    """`sum_c (m_c - m'_c) / sum_c |m_c|` over `channels`, from the channel means without
    (`before`, C) and with the probe (`after`, C): 1 silenced, 0 unchanged, < 0 a gain."""
    index = list(channels)
    m, m_after = np.asarray(before, dtype=float)[index], np.asarray(after, dtype=float)[index]
    return float((m - m_after).sum() / max(float(np.abs(m).sum()), _MIN_SPREAD))


def null_channel_sets(n_channels: int, k: int, n_draws: int, seed: int) -> np.ndarray:
    """Random k-sets (rows of channel indices) of a layer's `n_channels` channels: `n_draws`
    seeded draws without replacement within a set, or every k-set when there are at most
    `n_draws`."""
    if not 0 < k <= n_channels:
        raise ValueError(f"cannot draw sets of {k} of {n_channels} channels")
    if comb(n_channels, k) <= n_draws:
        return np.array(list(combinations(range(n_channels), k)), dtype=int).reshape(-1, k)
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n_draws, n_channels)), axis=1)[:, :k]


def activation_test(
    losses: np.ndarray, top_k: Sequence[int], n_null: int, seed: int
) -> ActivationTest:
    """The top-k's mean standardised loss against random k-sets (`null_channel_sets`)."""
    observed = float(losses[list(top_k)].mean())
    null = losses[null_channel_sets(len(losses), len(top_k), n_null, seed)].mean(axis=1)
    return ActivationTest(
        statistic=observed,
        null_mean=float(null.mean()),
        null_sd=float(null.std(ddof=1)) if len(null) > 1 else 0.0,
        n_null=len(null),
        p_value=empirical_p_value(observed, null),
        effect_size=effect_size(observed, null),
    )


def probe_shift(
    name: str,
    before: torch.Tensor,
    after: torch.Tensor,
    top_k: list[int],
    random_sets: list[list[int]],
    *,
    n_null: int,
    seed: int,
) -> ProbeShift:
    """The activation shift of `top_k` under probe `name` from per-sample channel means
    without (`before`, N x C) and with it (`after`): its share of activation lost, that of
    each of the dropout's `random_sets`, and its test against `n_null` random sets."""
    a, b = before.double().numpy(), after.double().numpy()
    m, m_after = a.mean(axis=0), b.mean(axis=0)
    return ProbeShift(
        probe=name,
        top_k_activation_drop=relative_loss(m, m_after, top_k),
        random_k_activation_drops=[relative_loss(m, m_after, s) for s in random_sets],
        test=activation_test(standardised_losses(a, b), top_k, n_null, seed),
    )


def class_flips(
    logits: torch.Tensor, probed_logits: torch.Tensor, control_logits: torch.Tensor
) -> list[ClassFlips]:
    """Per class predicted on the unmodified `logits`, the probe's and the control's flips on
    its samples and their paired McNemar test (`ClassFlips`)."""
    predicted = logits.argmax(dim=1).numpy()
    flipped = probed_logits.argmax(dim=1).numpy() != predicted
    control = control_logits.argmax(dim=1).numpy() != predicted
    out = []
    for c in np.unique(predicted):
        members = predicted == c
        only_probe = int((flipped & ~control & members).sum())
        only_control = int((control & ~flipped & members).sum())
        out.append(
            ClassFlips(
                class_index=int(c),
                n_samples=int(members.sum()),
                flip_rate=float(flipped[members].mean()),
                control_flip_rate=float(control[members].mean()),
                flips_only_probe=only_probe,
                flips_only_control=only_control,
                p_value=mcnemar_p_value(only_probe, only_control),
            )
        )
    return out


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
    """The probe's and its control's metrics against the unmodified `logits`, the mean
    size of the probe's change, and its activation shift (and occlusion map, for a scan)."""
    return ProbeResult(
        name=name,
        probed=condition_metrics(probed_logits, logits, labels, groups),
        neutral=condition_metrics(neutral_logits, logits, labels, groups),
        perturbation_norm=float(change_norms.mean()),
        top_k_activation_drop=shift.top_k_activation_drop,
        random_k_activation_drops=shift.random_k_activation_drops,
        occlusion=occlusion,
        per_class=class_flips(logits, probed_logits, neutral_logits),
    )
