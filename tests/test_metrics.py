"""Condition metrics: flip rate, margin lost per sample, recall per class, metrics per group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.checks.metrics import (
    condition_metrics,
    condition_metrics_and_margins,
    margin_lost,
)
from auditor.results import GroupMetrics, metrics_dict

# unmodified model: samples 0-2 predicted class 0 (margins 2, 1, 4), samples 3-5 class 1 (margin 2)
BASE = torch.tensor([[2.0, 0.0], [1.0, 0.0], [4.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
# condition: sample 1 flips to class 1 (margin 1 -> -1), sample 2 loses half its margin,
# sample 5 flips to class 0 (margin 2 -> -2); the others are untouched
PROBED = torch.tensor([[2.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
LABELS = np.array([0, 0, 1, 1, 1, -1])
GROUPS = ["site-a", "site-a", "site-b", "site-b", "", "site-b"]


def test_margin_lost_per_sample():
    lost = margin_lost(PROBED, BASE)
    assert lost.dtype == np.float64 and lost.shape == (6,)
    np.testing.assert_allclose(lost, [0.0, 2.0, 0.5, 0.0, 0.0, 2.0])


def test_condition_metrics_keep_their_scalars_and_return_the_per_sample_margins():
    metrics, lost = condition_metrics_and_margins(PROBED, BASE, LABELS)
    assert metrics == condition_metrics(PROBED, BASE, LABELS)
    assert metrics.margin_drop == pytest.approx(lost.mean()) == pytest.approx(4.5 / 6)
    assert metrics.flip_rate == pytest.approx(2 / 6)
    # predictions 0 1 0 1 1 0 against labels 0 0 1 1 1 (the sixth is unlabelled)
    assert metrics.accuracy == pytest.approx(3 / 5)
    assert (metrics.n_samples, metrics.n_labelled) == (6, 5)
    assert metrics.logit_drop == pytest.approx((0 + 1 + 2 + 0 + 0 + 2) / 6)


def test_recall_per_class_on_the_labelled_samples():
    metrics = condition_metrics(PROBED, BASE, LABELS)
    # class 0: samples 0, 1 -> predicted 0, 1; class 1: samples 2, 3, 4 -> predicted 0, 1, 1
    assert metrics.per_class_recall == {0: pytest.approx(0.5), 1: pytest.approx(2 / 3)}
    assert condition_metrics(BASE, BASE, LABELS).per_class_recall == {
        0: 1.0,
        1: pytest.approx(2 / 3),
    }


def test_metrics_per_group_leave_out_the_empty_group():
    metrics = condition_metrics(PROBED, BASE, LABELS, groups=GROUPS)
    assert list(metrics.per_group) == ["site-a", "site-b"]
    assert metrics.per_group["site-a"] == GroupMetrics(
        n_samples=2, n_labelled=2, accuracy=0.5, flip_rate=0.5, margin_drop=1.0
    )
    site_b = metrics.per_group["site-b"]
    # samples 2, 3, 5: predictions 0, 1, 0; labelled 2, 3 (labels 1, 1); flip on 5
    assert (site_b.n_samples, site_b.n_labelled) == (3, 2)
    assert site_b.accuracy == pytest.approx(0.5)
    assert site_b.flip_rate == pytest.approx(1 / 3)
    assert site_b.margin_drop == pytest.approx(2.5 / 3)


def test_without_labels_or_groups_the_breakdowns_are_empty():
    unlabelled = np.full(6, -1)
    metrics = condition_metrics(PROBED, BASE, unlabelled, groups=["g"] * 6)
    assert metrics.accuracy is None and metrics.per_class_recall == {}
    assert metrics.per_group["g"].accuracy is None and metrics.per_group["g"].n_labelled == 0
    assert condition_metrics(PROBED, BASE, LABELS).per_group == {}


def test_store_columns_leave_out_the_breakdowns():
    columns = metrics_dict(condition_metrics(PROBED, BASE, LABELS, groups=GROUPS))
    assert set(columns) == {
        "accuracy", "average_precision", "flip_rate", "logit_drop", "n_samples", "n_labelled",
        "margin_drop",
    }  # fmt: skip
