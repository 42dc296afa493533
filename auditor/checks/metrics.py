"""Metrics of a condition (a channel dropout, a probe) against the unmodified model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from auditor.results import ConditionMetrics, GroupMetrics


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """AP of the positive class for two classes; macro AP over the classes present otherwise."""
    present = np.unique(labels)
    if len(present) < 2:
        return None
    if probabilities.shape[1] == 2:
        return float(average_precision_score(labels == 1, probabilities[:, 1]))
    return float(
        np.mean([average_precision_score(labels == c, probabilities[:, c]) for c in present])
    )


def condition_metrics(
    logits: torch.Tensor,
    base_logits: torch.Tensor,
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
) -> ConditionMetrics:
    """Accuracy, AP and recall per class on the labelled samples (label >= 0); over all samples
    the flip rate (predicted class differs from the unmodified model's), the mean drop of the
    logit of the class the unmodified model predicted, and the mean share of its decision margin
    lost (`margin_lost`); with `groups`, accuracy / flip rate / margin lost per group value."""
    return condition_metrics_and_margins(logits, base_logits, labels, groups)[0]


def condition_metrics_and_margins(
    logits: torch.Tensor,
    base_logits: torch.Tensor,
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
) -> tuple[ConditionMetrics, np.ndarray]:
    """`condition_metrics` and the per-sample share of margin lost (float64, N) it averages,
    for statistics over samples (`auditor.checks.statistics`)."""
    base_pred = base_logits.argmax(dim=1)
    pred = logits.argmax(dim=1)
    index = base_pred.unsqueeze(1)
    drop = (base_logits.gather(1, index) - logits.gather(1, index)).squeeze(1)
    lost = margin_lost(logits, base_logits)
    flipped = (pred != base_pred).numpy()
    predicted = pred.numpy()
    labelled = labels >= 0
    accuracy = ap = None
    if labelled.any():
        y = labels[labelled]
        accuracy = float((predicted[labelled] == y).mean())
        ap = average_precision(torch.softmax(logits, dim=1).numpy()[labelled], y)
    metrics = ConditionMetrics(
        accuracy=accuracy,
        average_precision=ap,
        flip_rate=float(flipped.mean()),
        logit_drop=float(drop.mean()),
        n_samples=len(labels),
        n_labelled=int(labelled.sum()),
        margin_drop=float(lost.mean()),
        per_class_recall=per_class_recall(predicted, labels),
        per_group=per_group_metrics(predicted, labels, flipped, lost, groups),
    )
    return metrics, lost


def margin_lost(logits: torch.Tensor, base_logits: torch.Tensor) -> np.ndarray:
    """Per sample, the share of the decision margin of the unmodified model's class `y*` lost,
    `(m - m') / |m|` with `m = z_y* - max_{j != y*} z_j` (0: untouched, 1: on the boundary,
    > 1: flipped); float64, N."""
    base_pred = base_logits.argmax(dim=1)
    base_margin = decision_margin(base_logits, base_pred)
    lost = (base_margin - decision_margin(logits, base_pred)) / base_margin.abs().clamp(min=1e-6)
    return lost.double().numpy()


def per_class_recall(predicted: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """For every class among the labels (>= 0): the share of its samples predicted as it."""
    return {
        int(c): float((predicted[labels == c] == c).mean()) for c in np.unique(labels[labels >= 0])
    }


def per_group_metrics(
    predicted: np.ndarray,
    labels: np.ndarray,
    flipped: np.ndarray,
    lost: np.ndarray,
    groups: Sequence[str] | None,
) -> dict[str, GroupMetrics]:
    """Accuracy (labelled members only), flip rate and mean margin lost per group value, in
    sorted order; the empty group (samples of sets without groups) is left out."""
    if groups is None:
        return {}
    values = np.asarray(groups, dtype=object)
    out: dict[str, GroupMetrics] = {}
    for group in sorted(set(values) - {""}):
        members = values == group
        labelled = members & (labels >= 0)
        out[str(group)] = GroupMetrics(
            n_samples=int(members.sum()),
            n_labelled=int(labelled.sum()),
            accuracy=float((predicted[labelled] == labels[labelled]).mean())
            if labelled.any()
            else None,
            flip_rate=float(flipped[members].mean()),
            margin_drop=float(lost[members].mean()),
        )
    return out


def decision_margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Logit of `classes` minus the largest other logit, per sample."""
    index = classes.unsqueeze(1)
    others = logits.scatter(1, index, float("-inf")).max(dim=1).values
    return logits.gather(1, index).squeeze(1) - others
