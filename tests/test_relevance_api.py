"""The public relevance API: explain, channel_relevance, methods, relevance at a layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditor import relevance
from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.relevance import (
    LRP,
    channel_relevance,
    channel_scores,
    composite,
    composites,
    explain,
    methods,
)
from auditor.relevance.base import check_method_class
from auditor.relevance.graph_cache import graph_of

from .plugins import fresh_registry, install_plugin

torch.set_num_threads(1)


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class _Model(nn.Module):
    """stem (conv, BN, ReLU, max-pool), two residual blocks, global pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block1 = _Block(8)
        self.block2 = _Block(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.block2(self.block1(self.stem(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    model = _Model().eval()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.normal_()
            bn.bias.data.normal_()
    return model


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def graph(model, inputs) -> ModelGraph:
    return ModelGraph.from_module(model, inputs[:2])


def test_an_eager_module_is_exported_once_until_its_weights_or_input_shape_change(inputs):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    model(inputs[:1])
    x = inputs[:3]
    first = graph_of(model, x[:2])
    assert graph_of(model, x[1:]) is first  # same weights and image shape: no export
    before = explain(model, x, method="lrp", composite="epsilon")

    with torch.no_grad():
        model[0].weight.mul_(-2.0)  # in place: the parameter's _version moves
    changed = graph_of(model, x[:2])
    assert changed is not first
    fresh = ModelGraph.from_module(model, x[:2])
    assert torch.allclose(explain(model, x, method="lrp", composite="epsilon"),
                          explain(fresh, x, method="lrp", composite="epsilon"), atol=1e-6)
    assert not torch.allclose(explain(model, x, method="lrp", composite="epsilon"), before)

    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert graph_of(model, x[:2]) is not changed
    model[1] = nn.Sigmoid()  # another structure
    assert graph_of(model, x[:2]).gm.code != changed.gm.code
    wide = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert graph_of(wide, inputs[:2]).input_shape[1:] == (16, 16)
    assert graph_of(wide, torch.rand(2, 3, 24, 24)).input_shape[1:] == (24, 24)
    assert graph_of(wide, inputs[:2]) is graph_of(wide, inputs[2:4])


def test_methods_lists_lrp_with_a_description():
    described = methods()
    assert "lrp" in described and "composite" in described["lrp"]
    assert all(isinstance(d, str) and d for d in described.values())


def test_explain_shapes_at_the_input_and_at_a_layer(graph, inputs):
    x = inputs[:3]
    assert explain(graph, x, method="lrp").shape == (3, 16, 16)
    full = explain(graph, x, method="lrp", reduce=False)
    assert full.shape == (3, 3, 16, 16)
    assert torch.allclose(full.sum(dim=1), explain(graph, x, method="lrp"))
    assert explain(graph, x, method="lrp", layer="block1", reduce=False).shape == (3, 8, 8, 8)
    assert explain(graph, x, method="lrp", layer="block1").shape == (3, 8, 8)


def test_explain_accepts_an_eager_module_and_a_class_index(model, graph, inputs):
    x = inputs[:4]
    from_module = explain(model, x, method="lrp", target=2, composite="epsilon")
    expected = explain(graph, x, method="lrp", target=torch.full((4,), 2), composite="epsilon")
    assert torch.allclose(from_module, expected, atol=1e-6)
    assert not torch.allclose(
        expected, explain(graph, x, method="lrp", target=1, composite="epsilon")
    )


@pytest.mark.parametrize("name", composites())
def test_every_composite_is_batch_independent_and_deterministic(graph, inputs, name):
    batch = explain(graph, inputs, method="lrp", composite=name, reduce=False)
    assert batch.shape == inputs.shape and torch.isfinite(batch).all()
    for i in (0, 17, 31):
        single = explain(graph, inputs[i : i + 1], method="lrp", composite=name, reduce=False)
        assert torch.allclose(single[0], batch[i], rtol=1e-4, atol=1e-6)
    assert torch.equal(batch, explain(graph, inputs, method="lrp", composite=name, reduce=False))


@pytest.mark.parametrize("name", ["epsilon", "epsilon_gamma_box", "epsilon_plus_flat"])
@pytest.mark.parametrize("layer", ["stem", "block1", "block2"])
def test_relevance_at_a_layer_equals_full_lrp_captured_at_that_node(graph, inputs, layer, name):
    x = inputs[:6]
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    options = {"composite": name, "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.2)}
    at_layer = explain(graph, x, method="lrp", target=target, layer=layer, reduce=False, **options)
    rules = composite(name, mean=options["mean"], std=options["std"])
    node = graph.output_node(layer).name
    (_, captured), _ = LRP(graph.gm, rules).relevance_at(x, [node], target)
    assert torch.allclose(at_layer, captured, rtol=1e-4, atol=1e-6)


def test_channel_relevance_is_the_seed_score_of_layer_relevance(graph, inputs):
    x = inputs[:8]
    scores = channel_relevance(graph, x, layer="block2")
    assert scores.shape == (8, 8)
    assert (scores >= 0).all() and (scores.sum(dim=1) <= 1 + 1e-6).all()
    relevance = explain(graph, x, method="lrp", layer="block2", reduce=False)
    raw = channel_relevance(graph, x, layer="block2", normalize=False)
    assert torch.allclose(raw, relevance.sum(dim=(2, 3)))
    positive_share = (
        relevance.clamp(min=0).sum(dim=(2, 3)) / relevance.abs().sum(dim=(1, 2, 3))[:, None]
    )
    assert torch.allclose(scores, positive_share)


def test_channel_scores_hand_computed():
    relevance = torch.tensor([[[[1.0, -1.0]], [[2.0, 0.0]]]])  # 1 sample, 2 channels, 1 x 2
    assert torch.allclose(channel_scores(relevance), torch.tensor([[0.25, 0.5]]))
    assert torch.allclose(channel_scores(relevance, normalize=False), torch.tensor([[0.0, 2.0]]))
    assert torch.allclose(channel_scores(torch.tensor([[3.0, -1.0]])), torch.tensor([[0.75, 0.0]]))


def test_a_plugin_method_is_used_by_explain(monkeypatch, tmp_path, graph, inputs):
    """A distribution declaring a method in `relevance_auditor.relevance_methods` is known to
    `explain` and `methods()` by its entry point name, without an import."""
    fresh_registry(monkeypatch, relevance, "RELEVANCE_METHODS", check_method_class)
    install_plugin(
        tmp_path,
        monkeypatch,
        "team_methods",
        """
        from auditor.relevance.base import RelevanceMethod

        class InputTimesOne(RelevanceMethod):
            name = "input_times_one"
            description = "the input itself"
            supports_layer = False

            def attribute(self, inputs, target=None, layer=None):
                return inputs.clone()
        """,
        {"relevance_auditor.relevance_methods": {"input_times_one": "team_methods:InputTimesOne"}},
    )
    x = inputs[:2]
    assert torch.equal(explain(graph, x, method="input_times_one"), x.sum(dim=1))
    assert methods()["input_times_one"] == "the input itself"
    with pytest.raises(RelevanceError, match="explains the input only"):
        explain(graph, x, method="input_times_one", layer="block1")


def test_unknown_method_and_unknown_layer_are_reported(graph, inputs):
    with pytest.raises(RelevanceError, match="unknown relevance method 'deeplift'.*lrp"):
        explain(graph, inputs[:2], method="deeplift")
    with pytest.raises(Exception, match="did you mean block1"):
        explain(graph, inputs[:2], method="lrp", layer="blok1")


def test_explaining_a_module_in_training_leaves_it_training(inputs):
    """`explain` and `channel_relevance` on an `nn.Module` never touch the caller's model:
    `requires_grad`, train/eval mode, parameters and buffers are as before, and a training step
    afterwards still updates every trainable weight."""
    torch.manual_seed(2)
    model = _Model().train()
    model.block2.bn2.weight.requires_grad_(False)  # a frozen parameter stays frozen
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    modes = {name: m.training for name, m in model.named_modules()}
    state = {name: t.clone() for name, t in model.state_dict().items()}

    explain(model, inputs[:4], method="lrp")
    channel_relevance(model, inputs[:4], layer="block1")

    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires_grad
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(inputs[:8]).logsumexp(dim=1).mean().backward()
    optimizer.step()
    for name, p in model.named_parameters():
        assert torch.equal(p, state[name]) != p.requires_grad, name
