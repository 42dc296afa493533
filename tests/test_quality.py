"""Quality metrics of attribution maps (region perturbation [Samek2017], [Han2024, Appendix E])."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from auditor.model.graph import ModelGraph
from auditor.relevance.gradients import GradientXInput
from auditor.relevance.quality import (
    aopc,
    attribution_localisation,
    fidelity,
    heatmaps,
    pointing_game,
    region_perturbation,
    sparseness,
    stability,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def linear() -> tuple[ModelGraph, torch.Tensor]:
    """A linear classifier `f(x) = W x + b` on 3 x 16 x 16 images, and 4 images."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    graph = ModelGraph.from_module(module, torch.zeros(2, 3, 16, 16))
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return graph, images


def _random_map(like: torch.Tensor, seed: int = 2) -> torch.Tensor:
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(seed))


def test_region_perturbation_curve(linear):
    graph, x = linear
    relevance = GradientXInput(graph).attribute(x)
    curve = region_perturbation(graph.gm, x, relevance, patch=4)
    logits = graph.gm(x)
    assert curve.shape == (4, 17)  # f(x) and 16 regions removed one by one
    assert torch.allclose(curve[:, 0], logits.max(dim=1).values)
    bias = graph.gm(torch.zeros_like(x))[0]
    assert torch.allclose(curve[:, -1], bias[logits.argmax(dim=1)], atol=1e-6)
    steps = region_perturbation(graph.gm, x, relevance, patch=4, steps=3, output="probability")
    assert steps.shape == (4, 4) and ((steps >= 0) & (steps <= 1)).all()


def test_aopc_is_higher_for_a_faithful_attribution(linear):
    """Gradient x input is each pixel's exact contribution to a linear logit: removing its
    regions first drops the logit fastest, beating random and reversed orders."""
    graph, x = linear
    relevance = GradientXInput(graph).attribute(x)
    good = aopc(region_perturbation(graph.gm, x, relevance, patch=4))
    rand = aopc(region_perturbation(graph.gm, x, _random_map(x), patch=4))
    worst = aopc(region_perturbation(graph.gm, x, -relevance, patch=4))
    assert (good > rand).all() and (rand > worst).all()
    assert (good > 0).all()


def test_aopc_of_a_hand_made_curve():
    curve = torch.tensor([[4.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.allclose(aopc(curve), torch.tensor([(0 + 2 + 3 + 3) / 4, 0.0]))


def test_fidelity_is_one_for_exact_contributions_and_low_for_noise(linear):
    graph, x = linear
    relevance = GradientXInput(graph).attribute(x)  # |values| << 1: clamping changes nothing
    exact = fidelity(graph.gm, x, relevance, subset_size=50, n_subsets=16)
    assert torch.allclose(exact, torch.ones(4), atol=1e-4)
    noise = fidelity(graph.gm, x, _random_map(x) * 0.01, subset_size=50, n_subsets=16)
    assert (noise < 0.8).all()
    again = fidelity(graph.gm, x, _random_map(x) * 0.01, subset_size=50, n_subsets=16)
    assert torch.equal(noise, again)
    other = fidelity(graph.gm, x, _random_map(x) * 0.01, subset_size=50, n_subsets=16, seed=1)
    assert not torch.equal(noise, other)


def _map(*points: tuple[int, int, float], size: int = 4) -> torch.Tensor:
    grid = torch.zeros(size, size)
    for row, col, value in points:
        grid[row, col] = value
    return grid


def test_pointing_game_on_hand_made_maps():
    maps = torch.stack([
        _map((1, 1, 0.9), (3, 3, 0.5)),  # maximum inside the mask
        _map((3, 3, 0.9), (0, 0, 0.5)),  # maximum outside
        _map((0, 0, 5.0), (3, 3, 7.0)),  # both clamp to 1: a tie, half of it inside
    ])  # fmt: skip
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 0.5]
    assert pointing_game(maps, masks, clamp=None).tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=2).tolist() == [1.0, 1.0, 1.0]
    channels = maps.unsqueeze(1).expand(3, 3, 4, 4) / 3  # N x C x H x W is summed over C
    assert pointing_game(channels, masks).tolist() == [1.0, 0.0, 0.5]


def test_attribution_localisation_on_hand_made_maps():
    maps = torch.stack([
        _map((0, 0, 0.5), (1, 1, 0.25), (3, 3, 0.25), (0, 1, -0.9), (2, 2, -0.9)),
        _map((0, 0, 10.0), (3, 3, 1.0)),
        _map((0, 0, -1.0)),
    ])  # fmt: skip
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    result = attribution_localisation(maps, masks)
    assert result[:2].tolist() == [0.75, 0.5]  # negatives ignored; 10 clamps to 1
    assert math.isnan(result[2])  # no positive relevance
    unclamped = attribution_localisation(maps, masks, clamp=None)
    assert unclamped[1].item() == pytest.approx(10 / 11)


def test_sparseness_is_the_gini_index():
    d = 64
    one_hot = torch.zeros(1, 8, 8)
    one_hot[0, 3, 5] = 0.7
    uniform = torch.full((1, 8, 8), -0.3)
    assert sparseness(one_hot).item() == pytest.approx(1 - 1 / d)
    assert sparseness(uniform).item() == pytest.approx(0.0, abs=1e-6)
    ramp = torch.arange(d, dtype=torch.float32).reshape(1, 8, 8) / d
    assert 0.0 < sparseness(ramp).item() < sparseness(one_hot).item()
    assert math.isnan(sparseness(torch.zeros(1, 8, 8)).item())


def test_stability_is_the_worst_lipschitz_ratio():
    x = torch.zeros(3, 1, 8, 8)
    assert torch.equal(stability(lambda v: torch.ones_like(v), x), torch.zeros(3))
    identity = stability(lambda v: v, x, n_samples=4)
    assert torch.allclose(identity, torch.ones(3))
    doubled = stability(lambda v: 2 * v, x, n_samples=4, clamp=None)
    assert torch.allclose(doubled, torch.full((3,), 2.0))
    state = torch.get_rng_state()
    assert torch.equal(stability(lambda v: v**2, x + 0.5), stability(lambda v: v**2, x + 0.5))
    assert torch.equal(torch.get_rng_state(), state)


def test_heatmaps_sum_channels_and_clamp():
    attributions = torch.tensor([[[[0.6]], [[0.7]]]])
    assert heatmaps(attributions).item() == pytest.approx(1.3)
    assert heatmaps(attributions, 1.0).item() == 1.0
