"""Gradient and perturbation relevance methods (Captum-backed) on the model graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet, SmallVGG
from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.cam import GradCam, LayerCamMethod
from auditor.relevance.gradients import (
    GradientXInput,
    GuidedBackprop,
    IntegratedGradientsMethod,
    SmoothGrad,
    SquaredGradient,
)
from auditor.relevance.method_inputs import patch_mask
from auditor.relevance.perturbation import OcclusionMethod

torch.set_num_threads(1)

# every registered method of the Captum-backed modules, with options small enough for a fast test
CASES = [
    ("saliency", {}),
    ("gradient_x_input", {}),
    ("integrated_gradients", {"steps": 8}),
    ("smoothgrad", {"n_samples": 3}),
    ("smoothgrad", {"n_samples": 2, "base": "integrated_gradients", "steps": 4}),
    ("guided_backprop", {}),
    ("grad_cam", {}),
    ("layer_cam", {}),
    ("occlusion", {"patch": 8, "stride": 4}),
    ("shapley_sampling", {"patch": 8, "n_samples": 1}),
    ("kernel_shap", {"patch": 8, "n_samples": 12}),
    ("lime", {"patch": 8, "n_samples": 12}),
]
STOCHASTIC = {"smoothgrad", "shapley_sampling", "kernel_shap", "lime"}
LAYERS = {"resnet": "layer2", "vgg": "features.2"}


def _graph(module: nn.Module, channels: int = 3, size: int = 16) -> ModelGraph:
    return ModelGraph.from_module(module, torch.zeros(2, channels, size, size))


@pytest.fixture(scope="module")
def graphs() -> dict[str, ModelGraph]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {"resnet": _graph(SmallResNet(width=4)), "vgg": _graph(SmallVGG())}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-12)


CAPTUM_MODULES = {
    "auditor.relevance.gradients", "auditor.relevance.cam", "auditor.relevance.perturbation"
}


def test_cases_cover_every_method_of_the_captum_modules():
    names = {name for name, _ in CASES}
    ours = {n for n, cls in RELEVANCE_METHODS.items() if cls.__module__ in CAPTUM_MODULES}
    assert names == ours


@pytest.mark.parametrize("model", ["resnet", "vgg"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_shape_batch_invariance_and_determinism(graphs, images, model, name, options):
    method = RELEVANCE_METHODS.get(name)(graphs[model], **options)
    batch = method.attribute(images)
    assert batch.shape == images.shape
    assert torch.isfinite(batch).all() and batch.abs().sum() > 0
    for i in (0, 5):
        assert _close(method.attribute(images[i : i + 1]), batch[i : i + 1])
    again = RELEVANCE_METHODS.get(name)(graphs[model], **options).attribute(images)
    assert torch.equal(again, batch)
    if name in STOCHASTIC:
        other = RELEVANCE_METHODS.get(name)(graphs[model], **{**options, "seed": 1}).attribute(
            images[:2]
        )
        assert not torch.equal(other, batch[:2])


@pytest.mark.parametrize("model", ["resnet", "vgg"])
@pytest.mark.parametrize(
    ("name", "options"), [(n, o) for n, o in CASES if RELEVANCE_METHODS.get(n).supports_layer]
)
def test_layer_relevance_has_the_layer_shape(graphs, images, model, name, options):
    layer = LAYERS[model]
    activation = graphs[model].split(layer).trunk(images)
    method = RELEVANCE_METHODS.get(name)(graphs[model], **options)
    batch = method.attribute(images, layer=layer)
    assert batch.shape == activation.shape
    assert _close(method.attribute(images[3:4], layer=layer), batch[3:4])


@pytest.mark.parametrize(
    ("name", "options"), [(n, o) for n, o in CASES if not RELEVANCE_METHODS.get(n).supports_layer]
)
def test_input_only_methods_refuse_a_layer(graphs, images, name, options):
    with pytest.raises(RelevanceError, match="explains the input only"):
        RELEVANCE_METHODS.get(name)(graphs["vgg"], **options).attribute(
            images[:1], layer="features.2"
        )


def _input_gradient(graph: ModelGraph, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    logits = graph.gm(x)
    (grad,) = torch.autograd.grad(logits.gather(1, target.reshape(-1, 1)).sum(), x)
    return grad


@pytest.mark.parametrize("model", ["resnet", "vgg"])
def test_saliency_is_the_squared_gradient_and_gxi_is_input_times_gradient(graphs, images, model):
    graph = graphs[model]
    predicted = graph.gm(images).argmax(dim=1)
    grad = _input_gradient(graph, images, predicted)
    assert torch.allclose(SquaredGradient(graph).attribute(images), grad**2, atol=1e-10)
    assert torch.allclose(GradientXInput(graph).attribute(images), images * grad, atol=1e-7)


def test_target_selects_the_class_and_negative_means_predicted(graphs, images):
    graph = graphs["vgg"]
    predicted = graph.gm(images).argmax(dim=1)
    method = GradientXInput(graph)
    default = method.attribute(images)
    assert torch.equal(method.attribute(images, torch.full((8,), -1)), default)
    assert torch.equal(method.attribute(images, predicted), default)
    other = 1 - predicted
    assert torch.allclose(
        method.attribute(images, other), images * _input_gradient(graph, images, other), atol=1e-7
    )


@pytest.mark.parametrize("model", ["resnet", "vgg"])
@pytest.mark.parametrize("baseline", ["zeros", "mean", 0.5])
def test_integrated_gradients_completeness(graphs, images, model, baseline):
    """sum_d R_d = f(x) - f(x0) (Sundararajan et al.), at the input and at a layer."""
    graph = graphs[model]
    x = images[:4]
    method = IntegratedGradientsMethod(graph, baseline=baseline, steps=128)
    reference = {"zeros": torch.zeros_like(x), "mean": x.mean(dim=(2, 3), keepdim=True).expand_as(x),
                 0.5: torch.full_like(x, 0.5)}[baseline]  # fmt: skip
    with torch.no_grad():
        logits = graph.gm(x)
        target = logits.argmax(dim=1)
        diff = (logits - graph.gm(reference)).gather(1, target.reshape(-1, 1)).squeeze(1)
    for layer in (None, LAYERS[model]):
        total = method.attribute(x, layer=layer).flatten(1).sum(dim=1)
        assert torch.allclose(total, diff, rtol=0.02, atol=0.02 * float(diff.abs().max()))


def test_guided_backprop_passes_only_positive_gradients_of_active_units():
    """Model relu(x) -> linear: the gradient is w_t [x > 0]; guided backprop keeps w_t^+ [x > 0]."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    graph = _graph(module, size=4)
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 0, 1, 1])
    weight = module[2].weight[target].reshape(x.shape)
    guided = GuidedBackprop(graph).attribute(x, target)
    assert torch.allclose(guided, weight.clamp(min=0) * (x > 0))
    plain = _input_gradient(graph, x, target)
    assert (plain < 0).any() and (guided >= 0).all()


def test_guided_backprop_differs_from_the_gradient_and_keeps_the_model(graphs, images):
    graph = graphs["vgg"]
    predicted = graph.gm(images).argmax(dim=1)
    guided = GuidedBackprop(graph).attribute(images)
    assert not torch.allclose(guided, _input_gradient(graph, images, predicted))
    assert torch.equal(graph.gm(images).argmax(dim=1), predicted)  # the graph is not rewritten


@pytest.mark.parametrize("cls", [GradCam, LayerCamMethod])
@pytest.mark.parametrize("model", ["resnet", "vgg"])
def test_cam_maps_are_nonnegative_upsampled_layer_maps(graphs, images, cls, model):
    graph = graphs[model]
    at_input = cls(graph).attribute(images)
    assert (at_input >= 0).all() and at_input.shape == images.shape
    assert torch.equal(at_input[:, 0], at_input[:, 2])  # one map, split evenly over channels
    terms = cls(graph).attribute(images, layer=graph.default_layer())
    cam = terms.sum(dim=1, keepdim=True).clamp(min=0)
    upsampled = nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(at_input.sum(dim=1, keepdim=True), upsampled, atol=1e-6)
    assert not torch.equal(cls(graph, cam_layer=LAYERS[model]).attribute(images), at_input)


def test_grad_cam_terms_are_averaged_gradient_times_activation(graphs, images):
    graph = graphs["resnet"]
    split = graph.split("layer2")
    activation = split.trunk(images).detach().requires_grad_(True)
    logits = split.head(activation)
    target = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, target.reshape(-1, 1)).sum(), activation)
    expected = grad.mean(dim=(2, 3), keepdim=True) * activation.detach()
    assert torch.allclose(GradCam(graph).attribute(images, layer="layer2"), expected, atol=1e-7)
    layer_cam = LayerCamMethod(graph).attribute(images, layer="layer2")
    assert torch.allclose(layer_cam, grad.clamp(min=0) * activation.detach(), atol=1e-7)


def test_occlusion_gives_relevance_only_where_the_logit_looks():
    """Logit 0 = sum of the top-left 4 x 4 patch: occluding other patches changes nothing."""
    linear = nn.Linear(3 * 16 * 16, 2, bias=False)
    region = torch.zeros(3, 16, 16)
    region[:, :4, :4] = 1
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[0] = region.flatten()
    graph = _graph(nn.Sequential(nn.Flatten(), linear))
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3)) + 0.5
    relevance = OcclusionMethod(graph, patch=4).attribute(x, torch.zeros(4, dtype=torch.long))
    inside = region.bool().expand_as(x)
    # outside: zero up to the float rounding of logits computed in batches of another size
    assert relevance[~inside].abs().max() < 1e-4
    assert (relevance[inside] > 0.1).all()
    expected = (x * region).flatten(1).sum(dim=1)  # filling the whole patch with 0 drops it all
    assert torch.allclose(relevance[:, 0, 0, 0], expected)


def test_patch_mask_tiles_the_image():
    mask = patch_mask(5, 6, 4)
    assert mask.shape == (1, 1, 5, 6)
    assert mask[0, 0].tolist()[0] == [0, 0, 0, 0, 1, 1]
    assert mask[0, 0].tolist()[4] == [2, 2, 2, 2, 3, 3]


def test_sampling_leaves_the_global_rng_alone(graphs, images):
    state = torch.get_rng_state()
    SmoothGrad(graphs["vgg"], n_samples=2).attribute(images[:2])
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_options_are_clear_errors(graphs, images):
    with pytest.raises(RelevanceError, match="no option stepz"):
        IntegratedGradientsMethod(graphs["vgg"], stepz=3)
    with pytest.raises(RelevanceError, match="unknown baseline"):
        IntegratedGradientsMethod(graphs["vgg"], baseline="median").attribute(images[:1])
    with pytest.raises(RelevanceError, match="cannot smooth 'occlusion'"):
        SmoothGrad(graphs["vgg"], base="occlusion")
    with pytest.raises(RelevanceError, match="N x C x H x W"):
        SquaredGradient(graphs["vgg"]).attribute(images[0])
