"""Dose-response of channel dropout: top-k vs random-k vs bottom-k over several k.

[Chandrasegaran2022] validate one top-k set and also report other values of k: a ranking that
tracks what the model uses loses margin faster with k under top-k dropout than under random-k,
and bottom-k stays near zero. The conditions are measured through `logits_of(drop)` (see
`auditor.checks.dropout`): in an audit, the same streamed pass as the dropout validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from auditor.checks.dropout import LogitsOf, measure_sets, random_channel_sets, rank_channels
from auditor.results import DosePoint, DoseResponse

_K_SEED_STRIDE = 104_729  # decorrelates the random sets drawn for different k


def dose_ks(n_channels: int, fractions: Sequence[float]) -> list[int]:
    """k = round(f * C) per fraction, at least 1 and at most C // 2 (random-k is drawn outside
    the top-k), without repeats, ascending."""
    return sorted({min(n_channels // 2, max(1, round(f * n_channels))) for f in fractions})


@dataclass(frozen=True)
class DoseSets:
    """The channel sets dropped at one k."""

    k: int
    top_k: list[int]
    random_sets: list[list[int]]
    bottom_k: list[int]

    @property
    def drops(self) -> list[list[int]]:
        return [self.top_k, *self.random_sets, self.bottom_k]


def dose_sets(
    relevance: np.ndarray, ks: Sequence[int], *, random_repeats: int, seed: int
) -> list[DoseSets]:
    """For each k: the top-k and bottom-k channels of `relevance` (C) and `random_repeats`
    random sets of k outside the top-k (seeded by `seed` and k)."""
    out = []
    for k in ks:
        top, bottom = rank_channels(relevance, k)
        randoms = random_channel_sets(
            len(relevance), k, exclude=top, repeats=random_repeats, seed=seed + _K_SEED_STRIDE * k
        )
        out.append(DoseSets(k, top, randoms, bottom))
    return out


def dose_response(
    logits_of: LogitsOf,
    labels: np.ndarray,
    sets: Sequence[DoseSets],
    n_channels: int,
    *,
    seed: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> DoseResponse:
    """For each k of `sets` (`dose_sets`): metrics of dropping its top-k, random and bottom-k
    channels (`logits_of(drop)`, see `auditor.checks.dropout`) on the samples with `labels`
    (-1: unknown), and the top-k `DropoutStatistics` (bootstrap and p-value seeded by `seed`
    and k)."""
    base = logits_of([])
    points = []
    for point in sets:
        measured = measure_sets(
            logits_of, base, labels,
            top_k=point.top_k, bottom_k=point.bottom_k, random_sets=point.random_sets,
            seed=seed + _K_SEED_STRIDE * point.k, n_boot=n_boot, confidence=confidence,
        )
        points.append(
            DosePoint(
                k=point.k,
                top_k=measured.top_k,
                random_k=measured.random_k,
                bottom_k=measured.bottom_k,
                statistics=measured.statistics,
            )
        )
    return DoseResponse(n_channels=n_channels, points=points)
