"""Dose-response of channel dropout: top-k vs random-k vs bottom-k over several k.

Seed 000 (case C) validates one top-k set and notes "different top-k values": a ranking that
tracks what the model uses loses margin faster with k under top-k dropout than under random-k,
and bottom-k stays near zero. The trunk's cost is paid once: every condition runs only the head
on the cached layer activations (`auditor.checks.dropout.head_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import fx

from auditor.checks.dropout import head_logits, random_channel_sets, rank_channels
from auditor.checks.metrics import condition_metrics_and_margins
from auditor.checks.statistics import dropout_evidence
from auditor.results import DosePoint, DoseResponse

_K_SEED_STRIDE = 104_729  # decorrelates the random sets drawn for different k


def dose_ks(n_channels: int, fractions: Sequence[float]) -> list[int]:
    """k = round(f * C) per fraction, at least 1 and at most C // 2 (random-k is drawn outside
    the top-k), without repeats, ascending."""
    return sorted({min(n_channels // 2, max(1, round(f * n_channels))) for f in fractions})


def dose_response(
    head: fx.GraphModule,
    activations: torch.Tensor,
    labels: np.ndarray,
    relevance: np.ndarray,
    ks: Sequence[int],
    *,
    random_repeats: int,
    seed: int,
    batch_size: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> DoseResponse:
    """For each k: drop the top-k channels of `relevance` (C), `random_repeats` random sets of k
    outside the top-k (seeded by `seed` and k) and the bottom-k, on the cached `activations`
    (N x C x h x w) of the samples with `labels` (-1: unknown); metrics per condition and the
    top-k `DropoutStatistics` (bootstrap and p-value seeded by `seed` and k)."""
    base = head_logits(head, activations, [], batch_size)

    def measure(drop: Sequence[int]):
        return condition_metrics_and_margins(
            head_logits(head, activations, drop, batch_size), base, labels
        )

    points = []
    for k in ks:
        top, bottom = rank_channels(relevance, k)
        random_sets = random_channel_sets(
            len(relevance),
            k,
            exclude=top,
            repeats=random_repeats,
            seed=seed + _K_SEED_STRIDE * k,
        )
        top_metrics, top_margins = measure(top)
        randoms = [measure(s) for s in random_sets]
        points.append(
            DosePoint(
                k=k,
                top_k=top_metrics,
                random_k=[m for m, _ in randoms],
                bottom_k=measure(bottom)[0],
                statistics=dropout_evidence(
                    top_margins,
                    np.stack([lost for _, lost in randoms]),
                    seed=seed + _K_SEED_STRIDE * k,
                    n_boot=n_boot,
                    confidence=confidence,
                ),
            )
        )
    return DoseResponse(n_channels=len(relevance), points=points)
