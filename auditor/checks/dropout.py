"""Channel dropout validation [Chandrasegaran2022]: drop the top-k relevant channels, k random
channels (repeated, averaged) and the bottom-k channels at the audited layer, and compare.

The checks measure through `logits_of(drop)`: the head's logits with channels `drop` zeroed
at the layer. In an audit these come from one streamed pass that runs the trunk once per
batch and the head once per condition (`auditor.audit.passes.dropout_pass`);
`auditor.audit.passes.cached_logits` gives the same from activations held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.checks.metrics import condition_metrics, condition_metrics_and_margins
from auditor.checks.statistics import dropout_evidence
from auditor.results import ConditionMetrics, DropoutStatistics, DropoutTable


def rank_channels(relevance: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """(top-k, bottom-k) channel indices by mean relevance; ties broken by channel index."""
    order = np.lexsort((np.arange(len(relevance)), -relevance))
    return [int(c) for c in order[:k]], [int(c) for c in order[::-1][:k]]


def random_channel_sets(
    n_channels: int, k: int, exclude: Sequence[int], repeats: int, seed: int
) -> list[list[int]]:
    """`repeats` sets of k channels drawn without replacement from the channels outside
    `exclude` (the top-k), seeded so that two audits draw the same sets."""
    pool = np.setdiff1d(np.arange(n_channels), np.asarray(exclude, dtype=int))
    if len(pool) < k:
        raise ValueError(f"cannot draw {k} random channels from {len(pool)} outside the top-k")
    rng = np.random.default_rng(seed)
    return [sorted(int(c) for c in rng.choice(pool, size=k, replace=False)) for _ in range(repeats)]


LogitsOf = Callable[[Sequence[int]], torch.Tensor]


def dropout_conditions(
    top_k: list[int], bottom_k: list[int], random_sets: list[list[int]]
) -> list[list[int]]:
    """The channel sets `dropout_validation` drops (the first, none: the baseline)."""
    return [[], top_k, *random_sets, bottom_k]


def dropout_validation(
    logits_of: LogitsOf,
    labels: np.ndarray,
    *,
    top_k: list[int],
    bottom_k: list[int],
    random_sets: list[list[int]],
    seed: int | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> DropoutTable:
    """Metrics of every condition against the baseline (`dropout_conditions`). With a `seed`,
    the table also carries the statistics of the top-k against the random sets (bootstrap
    interval over samples, empirical p-value, effect size;
    `auditor.checks.statistics.dropout_evidence`), from the per-sample margins of the same
    logits."""
    base = logits_of([])
    measured = measure_sets(
        logits_of, base, labels, top_k=top_k, bottom_k=bottom_k, random_sets=random_sets,
        seed=seed, n_boot=n_boot, confidence=confidence,
    )
    return DropoutTable(
        k=len(top_k),
        baseline=condition_metrics(base, base, labels),
        top_k=measured.top_k,
        random_k=measured.random_k,
        bottom_k=measured.bottom_k,
        random_sets=random_sets,
        statistics=measured.statistics,
    )


@dataclass(frozen=True)
class MeasuredSets:
    """Metrics of dropping a top-k set, its random sets and the bottom-k set, with the top-k
    statistics against the random sets (None without a seed)."""

    top_k: ConditionMetrics
    random_k: list[ConditionMetrics]
    bottom_k: ConditionMetrics
    statistics: DropoutStatistics | None


def measure_sets(
    logits_of: LogitsOf,
    base: torch.Tensor,
    labels: np.ndarray,
    *,
    top_k: list[int],
    bottom_k: list[int],
    random_sets: list[list[int]],
    seed: int | None,
    n_boot: int,
    confidence: float,
) -> MeasuredSets:
    """Each set's metrics against the unmodified logits `base`; with a `seed`, the bootstrap
    statistics of the top-k margins against the random sets' (`dropout_evidence`)."""

    def measure(drop: Sequence[int]) -> tuple[ConditionMetrics, np.ndarray]:
        return condition_metrics_and_margins(logits_of(drop), base, labels)

    top, top_margins = measure(top_k)
    randoms = [measure(s) for s in random_sets]
    statistics = None
    if seed is not None:
        statistics = dropout_evidence(
            top_margins, np.stack([margins for _, margins in randoms]),
            seed=seed, n_boot=n_boot, confidence=confidence,
        )
    return MeasuredSets(
        top_k=top,
        random_k=[metrics for metrics, _ in randoms],
        bottom_k=measure(bottom_k)[0],
        statistics=statistics,
    )
