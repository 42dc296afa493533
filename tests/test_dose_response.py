"""Dose-response of channel dropout on the counterfeit detector's cached activations, and the
same points from the audit's streamed dropout pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from itertools import pairwise

import numpy as np
import pytest
import torch

from auditor.audit.passes import (
    Condition,
    RelevancePass,
    cached_logits,
    dropout_pass,
    head_logits,
    relevance_pass,
)
from auditor.audit.worker import WorkerModel
from auditor.checks.dose_response import dose_ks, dose_response, dose_sets
from auditor.checks.metrics import margin_lost
from auditor.config import Preprocess
from auditor.data.samples import SampleSet, load_sample_set, normalize
from auditor.demo.train import MEAN, STD
from auditor.execution import LocalExecutor
from auditor.model.graph import ModelGraph
from auditor.results import DoseResponse

from .conftest import Scenario

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class FirstPass:
    """The model cut at its default layer, the samples, the layer activations held in memory
    and the mean channel relevance (LRP epsilon-plus)."""

    model: WorkerModel
    samples: SampleSet
    activations: torch.Tensor
    relevance: np.ndarray

    @property
    def head(self):
        return self.model.split.head

    @property
    def labels(self) -> np.ndarray:
        return self.samples.labels


@pytest.fixture(scope="module")
def first_pass(shortcut_scenario: Scenario):
    """The pipeline's first pass over the labelled validation set, plus the activations at the
    layer (kept here, unlike the audit, to measure the dropout conditions on them)."""
    preprocess = Preprocess(mean=MEAN, std=STD)
    with load_sample_set(
        shortcut_scenario.validation, name="validation", preprocess=preprocess
    ) as samples:
        example = normalize(torch.from_numpy(samples.images[:2]), preprocess)
        graph = ModelGraph.from_module(shortcut_scenario.model, example)
        model = WorkerModel(graph.split(graph.default_layer()), preprocess, "epsilon_plus", 1e-6)
        base: RelevancePass = relevance_pass(
            LocalExecutor(), model, samples.images, None, 64, gallery_size=1
        )
        relevance = base.channel_relevance.mean(dim=0).numpy().astype(float)
        activations = torch.cat(
            [model.trunk(torch.from_numpy(batch)) for _, batch in samples.images.batches(64)]
        )
        yield FirstPass(model, samples, activations, relevance)


def _numbers(value, path: str = "") -> dict[str, object]:
    """Every leaf of a (nested) result, by its path."""
    if is_dataclass(value):
        value = asdict(value)
    if isinstance(value, list):
        value = dict(enumerate(value))
    if not isinstance(value, dict):
        return {path: value}
    leaves: dict[str, object] = {}
    for key, item in value.items():
        leaves.update(_numbers(item, f"{path}/{key}"))
    return leaves


def _sets(relevance: np.ndarray, ks: list[int]):
    return dose_sets(relevance, ks, random_repeats=19, seed=0)


@pytest.fixture(scope="module")
def curve(first_pass: FirstPass) -> DoseResponse:
    relevance = first_pass.relevance
    ks = dose_ks(len(relevance), FRACTIONS)
    return dose_response(
        cached_logits(first_pass.head, first_pass.activations, 64), first_pass.labels,
        _sets(relevance, ks), len(relevance), seed=0, n_boot=300,
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


def test_dose_sets_rank_by_relevance_and_draw_randoms_outside_the_top_k(first_pass, curve):
    relevance = first_pass.relevance
    order = np.argsort(-relevance, kind="stable")
    for point in _sets(relevance, [2, 6]):
        assert point.top_k == order[: point.k].tolist()
        assert point.bottom_k == order[::-1][: point.k].tolist()
        assert len(point.random_sets) == 19
        assert all(len(s) == point.k and not set(s) & set(point.top_k) for s in point.random_sets)
        assert point.drops == [point.top_k, *point.random_sets, point.bottom_k]
    assert _sets(relevance, [6]) == _sets(relevance, [2, 6])[1:]  # each k seeded by itself


def test_dose_response_is_deterministic_and_reuses_the_dropout_conditions(first_pass, curve):
    head, activations = first_pass.head, first_pass.activations
    labels, relevance = first_pass.labels, first_pass.relevance
    again = dose_response(
        cached_logits(head, activations, 64), labels, _sets(relevance, [6]), len(relevance),
        seed=0, n_boot=300,
    )  # fmt: skip
    assert again.points[0] == curve.points[2]
    # another batch size changes the head's float32 rounding only (not bit for bit: BLAS)
    rebatched = dose_response(
        cached_logits(head, activations, 32), labels, _sets(relevance, [6]), len(relevance),
        seed=0, n_boot=300,
    )  # fmt: skip
    assert _numbers(rebatched.points[0]) == pytest.approx(_numbers(curve.points[2]), rel=1e-6)
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


def test_streamed_dropout_pass_gives_the_cached_points(first_pass, curve):
    """The audit measures the conditions in one streamed pass (trunk once per batch, head per
    condition) instead of on cached activations: the same dose-response."""
    relevance, samples = first_pass.relevance, first_pass.samples
    sets = _sets(relevance, [6])
    predicted = cached_logits(first_pass.head, first_pass.activations, 64)([]).argmax(dim=1)
    dropped = dropout_pass(
        LocalExecutor(), first_pass.model, samples.images,
        [Condition(tuple(drop)) for drop in [[], *sets[0].drops]],
        predicted.numpy(), 2, 64,
    )  # fmt: skip
    streamed = dose_response(
        dropped.of(None), first_pass.labels, sets, len(relevance), seed=0, n_boot=300
    )
    assert streamed.points[0] == curve.points[2]
