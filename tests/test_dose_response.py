"""Dose-response of channel dropout on the counterfeit detector's cached activations."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from auditor.checks.dose_response import dose_ks, dose_response
from auditor.checks.dropout import head_logits
from auditor.checks.metrics import margin_lost
from auditor.config import Preprocess
from auditor.demo.train import MEAN, STD
from auditor.graph import ModelGraph
from auditor.passes import RelevancePass, relevance_pass
from auditor.relevance import LRP, composite
from auditor.results import DoseResponse
from auditor.samples import load_sample_set, normalize

from .conftest import Scenario

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


@pytest.fixture(scope="module")
def first_pass(shortcut_scenario: Scenario):
    """The pipeline's first pass over the labelled validation set: the model cut at its
    default layer, cached activations and the mean channel relevance (LRP epsilon-plus)."""
    preprocess = Preprocess(mean=MEAN, std=STD)
    samples = load_sample_set(
        shortcut_scenario.validation, name="validation", preprocess=preprocess
    )
    example = normalize(torch.from_numpy(samples.images[:2]), preprocess)
    graph = ModelGraph.from_module(shortcut_scenario.model, example)
    split = graph.split(graph.default_layer())
    lrp = LRP(split.head, composite("epsilon_plus", 1e-6))
    base: RelevancePass = relevance_pass(split, lrp, samples.images, None, preprocess, 64)
    relevance = base.channel_relevance.mean(dim=0).numpy().astype(float)
    return split.head, base.activations, samples.labels, relevance


@pytest.fixture(scope="module")
def curve(first_pass) -> DoseResponse:
    head, activations, labels, relevance = first_pass
    ks = dose_ks(len(relevance), FRACTIONS)
    return dose_response(
        head, activations, labels, relevance, ks, random_repeats=19, seed=0, batch_size=64,
        n_boot=300,
    )  # fmt: skip


def test_ks_from_fractions():
    assert dose_ks(32, FRACTIONS) == [2, 3, 6, 10, 16]
    assert dose_ks(8, [0.01, 0.05, 0.5, 0.5]) == [1, 4]


def test_top_k_loses_margin_monotonically_and_beats_random_k_at_every_k(curve: DoseResponse):
    assert [p.k for p in curve.points] == [2, 3, 6, 10, 16] and curve.n_channels == 32
    top = curve.curve("top_k", "margin_drop")
    random = curve.curve("random_k", "margin_drop")
    bottom = curve.curve("bottom_k", "margin_drop")
    assert all(a < b for a, b in pairwise(top))
    assert all(t > r for t, r in zip(top, random, strict=True))
    assert all(b <= r + 1e-9 for b, r in zip(bottom, random, strict=True))
    for point in curve.points:
        assert len(point.random_k) == 19
        assert point.statistics.ci_low > 0  # the gap is no accident of the samples
        assert point.statistics.effect == pytest.approx(
            point.top_k.margin_drop - point.random_k_mean["margin_drop"], abs=1e-9
        )
        assert point.random_k_spread["margin_drop"] >= 0
        assert point.top_k.accuracy is not None and set(point.top_k.per_class_recall) == {0, 1}
    # once k is large the top-k set beats every random set: p at its floor 1 / 20
    assert curve.points[-1].statistics.p_value == pytest.approx(1 / 20)


def test_dose_response_is_deterministic_and_reuses_the_dropout_conditions(first_pass, curve):
    head, activations, labels, relevance = first_pass
    again = dose_response(
        head, activations, labels, relevance, [6], random_repeats=19, seed=0, batch_size=32,
        n_boot=300,
    )  # fmt: skip
    assert again.points[0] == curve.points[2]
    top, bottom = curve.points[2].top_k, curve.points[2].bottom_k
    order = np.argsort(-relevance, kind="stable")
    base = head_logits(head, activations, [], 64)
    margins = np.stack([
        margin_lost(head_logits(head, activations, drop, 64), base)
        for drop in [order[:6].tolist(), order[::-1][:6].tolist(), []]
    ])  # fmt: skip
    assert margins.shape == (3, len(labels))
    assert margins[0].mean() == pytest.approx(top.margin_drop)
    assert margins[1].mean() == pytest.approx(bottom.margin_drop)
    assert np.abs(margins[2]).max() < 1e-6  # nothing dropped: nothing lost
