"""Metrics of a condition (a channel dropout, a probe) against the unmodified model."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from auditor.results import ConditionMetrics


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
    logits: torch.Tensor, base_logits: torch.Tensor, labels: np.ndarray
) -> ConditionMetrics:
    """Accuracy and AP on the labelled samples (label >= 0); over all samples the flip rate
    (predicted class differs from the unmodified model's), the mean drop of the logit of the
    class the unmodified model predicted, and the mean share of its decision margin lost."""
    base_pred = base_logits.argmax(dim=1)
    pred = logits.argmax(dim=1)
    index = base_pred.unsqueeze(1)
    drop = (base_logits.gather(1, index) - logits.gather(1, index)).squeeze(1)
    base_margin = decision_margin(base_logits, base_pred)
    lost = (base_margin - decision_margin(logits, base_pred)) / base_margin.abs().clamp(min=1e-6)
    labelled = labels >= 0
    accuracy = ap = None
    if labelled.any():
        y = labels[labelled]
        accuracy = float((pred.numpy()[labelled] == y).mean())
        ap = average_precision(torch.softmax(logits, dim=1).numpy()[labelled], y)
    return ConditionMetrics(
        accuracy=accuracy,
        average_precision=ap,
        flip_rate=float((pred != base_pred).float().mean()),
        logit_drop=float(drop.mean()),
        n_samples=len(labels),
        n_labelled=int(labelled.sum()),
        margin_drop=float(lost.mean()),
    )


def decision_margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Logit of `classes` minus the largest other logit, per sample."""
    index = classes.unsqueeze(1)
    others = logits.scatter(1, index, float("-inf")).max(dim=1).values
    return logits.gather(1, index).squeeze(1) - others
