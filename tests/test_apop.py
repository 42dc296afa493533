"""Activation-pattern-only prediction (APOP, [Han2024, Appendix D])."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet, SmallVGG
from auditor.relevance.apop import apop, fill_like, gather_pool, pattern_forward, record_pattern

torch.set_num_threads(1)


def _graph(module: nn.Module, shape: tuple[int, ...]) -> ModelGraph:
    return ModelGraph.from_module(module, torch.zeros(2, *shape))


def _pattern_model() -> ModelGraph:
    """Unit k of the hidden ReLU is on exactly for class k, and logit k = hidden unit k:
    hidden = relu(w x + 1) with w_0 = (+1 left half, -1 right half) / 8 and w_1 = -w_0."""
    first, second = nn.Linear(16, 2), nn.Linear(2, 2)
    half = torch.cat([torch.ones(4, 2), -torch.ones(4, 2)], dim=1).flatten() / 8
    with torch.no_grad():
        first.weight.copy_(torch.stack([half, -half]))
        first.bias.fill_(1.0)
        second.weight.copy_(torch.eye(2))
        second.bias.zero_()
    return _graph(nn.Sequential(nn.Flatten(), first, nn.ReLU(), second), (1, 4, 4))


def _pattern_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: left half +1, right half -1 (class 1 mirrored), plus small noise."""
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    left = torch.cat([torch.ones(4, 2), -torch.ones(4, 2)], dim=1)
    images = torch.stack([left if y == 0 else -left for y in labels]).unsqueeze(1)
    noise = 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    return images + noise, labels


@pytest.fixture(scope="module")
def zoo() -> dict[str, ModelGraph]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {
            "resnet": _graph(SmallResNet(width=4), (3, 16, 16)),
            "vgg": _graph(SmallVGG(), (3, 16, 16)),
        }


@pytest.mark.parametrize("model", ["resnet", "vgg"])
@pytest.mark.parametrize("relu_after", [False, True])
def test_replaying_a_batchs_own_pattern_reproduces_its_logits(zoo, model, relu_after):
    graph = zoo[model]
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pattern, logits = record_pattern(graph.gm, x)
    assert torch.allclose(logits, graph.gm(x))
    assert len(pattern.relu_masks) == (7 if model == "resnet" else 2)
    assert len(pattern.pool_indices) == (0 if model == "resnet" else 2)
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in pattern.relu_masks.values())
    replayed = pattern_forward(graph.gm, pattern, x, relu_after=relu_after)
    assert torch.allclose(replayed, logits, atol=1e-6)


def test_max_pool_is_replaced_by_the_recorded_positions():
    graph = _graph(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), (2, 4, 4))
    x, y = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    pattern, pooled = record_pattern(graph.gm, x)
    (indices,) = pattern.pool_indices.values()
    assert torch.equal(gather_pool(x, indices).flatten(1), pooled)
    expected = y.flatten(2).gather(2, indices.flatten(2)).flatten(1)
    assert torch.equal(pattern_forward(graph.gm, pattern, y), expected)
    assert not torch.equal(expected, nn.functional.max_pool2d(y, 2).flatten(1))


@pytest.mark.parametrize("fill", ["zeros", "ones"])
@pytest.mark.parametrize("relu_after", [False, True])
def test_apop_accuracy_matches_when_the_pattern_decides(fill, relu_after):
    images, labels = _pattern_data()
    result = apop(_pattern_model(), images, labels, fill=fill, relu_after=relu_after)
    assert result.original_accuracy == 1.0
    assert result.accuracy == 1.0
    assert torch.equal(result.predictions, labels)
    assert (result.fill, result.relu_after) == (fill, relu_after)


def test_without_labels_apop_reports_agreement_with_the_original_predictions():
    images, labels = _pattern_data()
    result = apop(_pattern_model(), images, fill="zeros", batch_size=3)
    assert result.original_accuracy is None
    assert result.accuracy == 1.0
    assert torch.equal(result.original_predictions, labels)


@pytest.mark.parametrize("model", ["resnet", "vgg"])
@pytest.mark.parametrize("fill", ["zeros", "ones", "normal"])
def test_every_fill_runs_on_the_zoo(zoo, model, fill):
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    result = apop(zoo[model], x, labels, fill=fill, batch_size=4)
    assert 0.0 <= result.accuracy <= 1.0 and 0.0 <= result.original_accuracy <= 1.0
    assert result.predictions.shape == (6,)
    assert torch.equal(result.original_predictions, zoo[model].gm(x).argmax(dim=1))
    assert apop(zoo[model], x, labels, fill=fill, top_k=2).accuracy == 1.0  # 2 classes
    again = apop(zoo[model], x, labels, fill=fill, batch_size=4)
    assert again.accuracy == result.accuracy and torch.equal(again.predictions, result.predictions)


def test_normal_fill_is_seeded_and_leaves_the_global_rng_alone():
    model, data = _pattern_model(), _pattern_data()
    state = torch.get_rng_state()
    x = torch.zeros(3, 1, 4, 4)
    first = fill_like(x, "normal", torch.Generator().manual_seed(5))
    assert torch.equal(first, fill_like(x, "normal", torch.Generator().manual_seed(5)))
    assert not torch.equal(first, fill_like(x, "normal", torch.Generator().manual_seed(6)))
    apop(model, *data, fill="normal")
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_requests_are_clear_errors():
    images, labels = _pattern_data()
    with pytest.raises(RelevanceError, match="unknown APOP fill"):
        apop(_pattern_model(), images, labels, fill="twos")
    linear = _graph(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (1, 4, 4))
    with pytest.raises(RelevanceError, match="ReLU or max-pool"):
        apop(linear, images, labels)
