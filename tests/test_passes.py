"""Streamed passes: each reads one batch of images at a time and keeps no activations, yet
gives what one pass over all images at once gives (logits, channel means and relevance, the
gallery's top samples per channel, the dropout conditions' logits)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from auditor.audit.passes import Condition, RelevancePass, dropout_pass, relevance_pass
from auditor.audit.worker import WorkerModel
from auditor.config import Preprocess
from auditor.data.images import ArrayImages
from auditor.data.samples import normalize
from auditor.execution import BatchResult, LocalExecutor, progress
from auditor.execution.base import collect
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet
from auditor.relevance import LRP, channel_scores, composite

N, BATCH = 30, 8
PREPROCESS = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class CountingImages(ArrayImages):
    """Records the largest number of images read at once."""

    most = 0

    def read(self, rows):
        self.most = max(self.most, len(rows))
        return super().read(rows)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    module = SmallResNet(width=8).eval()
    images = np.random.default_rng(0).random((N, 3, 16, 16), dtype=np.float32)
    graph = ModelGraph.from_module(module, normalize(torch.from_numpy(images[:2]), PREPROCESS))
    split = graph.split(graph.default_layer())
    model = WorkerModel(split, PREPROCESS, "epsilon_plus", 1e-6)
    with torch.no_grad():
        activations = split.trunk(normalize(torch.from_numpy(images), PREPROCESS))
    return images, split, model, activations


def test_relevance_pass_reads_one_batch_at_a_time_and_equals_one_big_pass(setup):
    images, split, model, activations = setup
    source = CountingImages(images)
    base = relevance_pass(LocalExecutor(), model, source, None, BATCH, gallery_size=4)
    assert source.most == BATCH
    assert not hasattr(base, "activations")
    assert isinstance(base, RelevancePass)
    relevance, logits = LRP(split.head, composite("epsilon_plus", 1e-6)).attribute_with_logits(activations, None)
    torch.testing.assert_close(base.logits, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(base.channel_relevance, channel_scores(relevance), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(base.channel_activation, activations.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    scores = activations.clamp(min=0).sum(dim=(2, 3)).numpy()
    for channel in range(scores.shape[1]):
        expected = np.lexsort((np.arange(N), -scores[:, channel]))[:4]
        assert base.top_activations.top(channel)[0].tolist() == expected.tolist()


def test_dropout_pass_gives_the_head_logits_of_each_condition(setup):
    images, split, model, activations = setup
    predicted = (np.arange(N) % 2).astype(np.int64)
    drop = [1, 3, 5]
    conditions = [Condition(()), Condition(tuple(drop)), Condition(tuple(drop), 1)]
    dropped = dropout_pass(LocalExecutor(), model, ArrayImages(images), conditions, predicted, 2, BATCH)
    mask = torch.ones(activations.shape[1])
    mask[drop] = 0
    with torch.no_grad():
        plain = split.head(activations)
        masked = split.head(activations * mask.view(1, -1, 1, 1))
    torch.testing.assert_close(dropped.of(None)([]), plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dropped.of(None)([5, 1, 3]), masked, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dropped.of(1)(drop), masked[predicted == 1], rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError):
        dropped.of(0)(drop)  # a condition that was not measured


def test_collect_places_rows_whatever_order_batches_arrive():
    results = [
        BatchResult(np.array([4, 5]), {"x": np.array([[4.0], [5.0]])}),
        BatchResult(np.array([0, 1, 2, 3]), {"x": np.array([[0.0], [1.0], [2.0], [3.0]])}),
    ]
    assert collect(iter(results), 6)["x"][:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_pass_shows_samples_done_rate_and_eta(setup, monkeypatch):
    images, _, model, _ = setup
    screen = io.StringIO()
    monkeypatch.setattr(progress, "_console", Console(file=screen, width=200))
    monkeypatch.setattr(progress, "enabled", True)
    relevance_pass(LocalExecutor(), model, ArrayImages(images), None, BATCH, gallery_size=2)
    line = screen.getvalue()
    assert "relevance at layer" in line and f"{N}/{N} samples" in line
    assert re.search(r"[\d,]+/s", line) and "eta" in line
