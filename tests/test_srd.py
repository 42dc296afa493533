"""SRD [Han2024]: sharing ratios against a loop reference, forward/backward equivalence,
conservation, the residual decomposition, batch independence, errors."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from auditor.errors import RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.zoo import SmallResNet, SmallVGG
from auditor.relevance.base import RELEVANCE_METHODS
from auditor.relevance.srd import SRD
from auditor.relevance.srd_ratios import Window, bias_backward, bias_forward, pfv_relevance

torch.set_num_threads(1)
DTYPE = torch.float64


def _graph(model: nn.Module, x: torch.Tensor) -> ModelGraph:
    return ModelGraph.from_module(model.to(DTYPE).eval(), x[:2])


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folded convolutions carry biases."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(0.3 * torch.randn(size, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(size, generator=generator))
            module.bias.data.copy_(0.3 * torch.randn(size, generator=generator))
    return model


def _inputs(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


# --- one convolution layer against a direct, loop-based reference ------------------------


class OneConv(nn.Module):
    def __init__(self, stride: int, padding: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride, padding, dilation, bias=True)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def _loop_sharing_ratios(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """mu[j, i] (output position j, input position i) of one sample by eq. 6 and 11, with
    explicit loops: `v_hat_{i->j} = W_o v_i + b ||v_i|| / sum_{k in RF_j} ||v_k||`."""
    (s, _), (p, _), (d, _) = conv.stride, conv.padding, conv.dilation
    z = conv(x[None])[0].detach()
    _, height, width = x.shape
    out_h, out_w = z.shape[1:]
    mu = torch.zeros(out_h, out_w, height, width, dtype=x.dtype)
    for oh, ow in itertools.product(range(out_h), range(out_w)):
        taps = []
        for kh, kw in itertools.product(range(3), range(3)):
            ih, iw = oh * s - p + kh * d, ow * s - p + kw * d
            if 0 <= ih < height and 0 <= iw < width:
                taps.append((ih, iw, kh, kw))
        total_norm = sum(x[:, ih, iw].norm() for ih, iw, _, _ in taps)
        v_j = z[:, oh, ow]
        for ih, iw, kh, kw in taps:
            v_i = x[:, ih, iw]
            v_hat = conv.weight[:, :, kh, kw] @ v_i + conv.bias * v_i.norm() / total_norm
            mu[oh, ow, ih, iw] += (v_hat @ v_j / v_j.dot(v_j)).detach()
    return mu


GEOMETRIES = [(1, 1, 1), (2, 1, 1), (2, 0, 1), (1, 2, 2)]


@pytest.mark.parametrize("stride,padding,dilation", GEOMETRIES)
def test_conv_sharing_ratios_match_the_loop_reference_and_sum_to_one(stride, padding, dilation):
    torch.manual_seed(0)
    model = OneConv(stride, padding, dilation)
    x = _inputs(1, 5)
    srd = SRD(_graph(model, torch.cat([x, x])))
    # the ERF of a first-layer PFV over the input pixels is its sharing ratios (eq. 1, 2)
    ratios = srd.effective_receptive_fields(x, layer="conv")[0]
    reference = _loop_sharing_ratios(x[0], model.conv)
    torch.testing.assert_close(ratios, reference)
    sums = ratios.sum(dim=(2, 3))
    torch.testing.assert_close(sums, torch.ones_like(sums))  # eq. 6


@pytest.mark.parametrize("stride,padding,dilation", GEOMETRIES)
def test_backward_decomposition_of_one_conv_matches_the_loop_reference(stride, padding, dilation):
    torch.manual_seed(0)
    model = OneConv(stride, padding, dilation)
    x = _inputs(1, 5, seed=3)
    target = 2
    srd = SRD(_graph(model, torch.cat([x, x])))
    relevance = srd.attribute(x, torch.tensor([target]))[0].sum(dim=0)

    # eq. 4 by hand: GAP + linear head, alpha^c - mean_k alpha^k = (W_c - mean_k W_k) / HW
    activation = model.relu(model.conv(x))[0].detach()
    alpha = (model.fc.weight[target] - model.fc.weight.mean(dim=0)).detach() / activation[0].numel()
    encoder_relevance = torch.einsum("k,khw->hw", alpha, activation).clamp(min=0)
    expected = torch.einsum(
        "ab,abhw->hw", encoder_relevance, _loop_sharing_ratios(x[0], model.conv)
    )
    torch.testing.assert_close(relevance, expected)  # eq. 7, 8, 9


def test_bias_sharing_backward_is_the_transpose_of_forward_and_drops_only_0_over_0():
    generator = torch.Generator().manual_seed(2)
    window = Window((3, 3), stride=(2, 2), padding=(1, 1))
    x = torch.randn(2, 4, 7, 7, generator=generator, dtype=DTYPE)
    x[0, :, :3, :3] = 0  # output (0, 0, 0) sees only zero PFVs: eq. 11 is 0/0 there
    bias = torch.randn(5, generator=generator, dtype=DTYPE)
    grad = torch.randn(2, 5, 4, 4, generator=generator, dtype=DTYPE)
    tangent = torch.randn_like(x)
    backward = (tangent * bias_backward(x, bias, grad, window)).sum()
    forward = (bias_forward(x, tangent, bias, window) * grad).sum()
    torch.testing.assert_close(backward, forward)  # appendix C, rule by rule

    collected = pfv_relevance(x, bias_backward(x, bias, grad, window)).sum()
    per_output = torch.einsum("c,nchw->nhw", bias, grad)
    torch.testing.assert_close(collected, per_output.sum() - per_output[0, 0, 0])


# --- whole models -----------------------------------------------------------------------


class Mixed(nn.Module):
    """Input BatchNorm (left unfolded), dilated conv, leaky ReLU, average pooling, a residual
    whose skip is a pooled (non-activation) map, max pooling, a mean head."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=2, dilation=2)
        self.act1 = nn.LeakyReLU(0.1)
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h = self.pool1(self.act1(self.conv1(self.norm(x))))
        h = self.pool2(self.act2(self.conv2(h) + h))
        return self.fc(h.mean(dim=(2, 3)))


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_batchnorm(SmallResNet(num_classes=4, width=8, blocks=(1, 1, 1)))


def _vgg() -> nn.Module:
    torch.manual_seed(0)
    return SmallVGG(num_classes=4, widths=(4, 8))


def _mixed() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_batchnorm(Mixed())


MODELS = {"resnet": _resnet, "vgg": _vgg, "mixed": _mixed}


@pytest.fixture(scope="module", params=list(MODELS))
def explained(request) -> tuple[nn.Module, SRD, torch.Tensor]:
    model = MODELS[request.param]()
    x = _inputs(3, 8)
    return model, SRD(_graph(model, x)), x


def test_forward_and_backward_forms_give_the_same_input_map(explained):
    _, srd, x = explained
    backward = srd.attribute(x).sum(dim=1, keepdim=True)
    forward = srd.attribute_forward(x)
    assert backward.abs().sum() > 0
    torch.testing.assert_close(forward, backward)  # appendix C


def test_every_effective_receptive_field_sums_to_one(explained):
    _, srd, x = explained
    sums = srd.effective_receptive_fields(x).sum(dim=(-2, -1))
    torch.testing.assert_close(sums, torch.ones_like(sums))


def _encoder_relevance(model: nn.Module, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eq. 4 by hand on the eager model: `max(sum_k alpha_k A_i^k, 0)` with `alpha` the spatial
    mean gradient of `y^c - mean_k y^k`, c the predicted class; N x h x w."""
    captured = []
    handle = encoder.register_forward_hook(lambda _m, _i, out: captured.append(out))
    logits = model(x.clone().requires_grad_(True))  # the graph export froze the parameters
    handle.remove()
    weights = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]) - 1 / logits.shape[1]
    (grad,) = torch.autograd.grad(logits, captured[0], weights.to(logits.dtype))
    alpha = grad.mean(dim=(2, 3), keepdim=True)
    return (alpha * captured[0]).sum(dim=1).clamp(min=0).detach()


CUT_LAYERS = {
    "resnet": ("layer3", ["relu", "layer1", "layer2", "layer3"]),
    "vgg": ("features", ["features.0", "features.1", "features.2", "features.3", "features"]),
}


@pytest.mark.parametrize("name", CUT_LAYERS)
def test_relevance_is_conserved_at_every_layer_that_separates_the_model(name):
    model = MODELS[name]()
    x = _inputs(3, 8)
    srd = SRD(graph := _graph(model, x))
    encoder, layers = CUT_LAYERS[name]
    total = _encoder_relevance(model, model.get_submodule(encoder), x).sum(dim=(1, 2))
    assert (total > 0).all()
    for layer in layers:
        relevance = srd.attribute(x, layer=layer)
        output = graph.output_node(layer).meta["val"]
        assert relevance.shape[1:] == output.shape[1:], layer
        torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), total, msg=layer)
    torch.testing.assert_close(srd.attribute(x).sum(dim=(1, 2, 3)), total, msg="input")


def test_residual_branches_share_the_block_by_projection_on_the_summed_vector():
    model = MODELS["resnet"]()
    x = _inputs(3, 8)
    srd = SRD(_graph(model, x))
    block = srd.attribute(x, layer="layer2.0").sum(dim=1)
    residual = srd.attribute(x, layer="layer2.0.bn2").sum(dim=1)
    skip = srd.attribute(x, layer="layer2.0.downsample").sum(dim=1)
    torch.testing.assert_close(residual + skip, block)

    # the residual branch's share of v_j = u_j + u'_j is <u_j, v_j> / ||v_j||^2 (eq. 6)
    block_module = model.layer2[0]
    captured = {}
    hooks = [
        block_module.bn2.register_forward_hook(lambda _m, _i, out: captured.update(u=out)),
        block_module.relu2.register_forward_hook(lambda _m, i, _o: captured.update(v=i[0])),
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    u, v = captured["u"].detach(), captured["v"].detach()
    share = (u * v).sum(dim=1) / (v * v).sum(dim=1)
    torch.testing.assert_close(residual, share * block)


def test_batch_of_32_equals_samples_one_by_one_and_is_deterministic():
    model = MODELS["resnet"]()
    x = _inputs(32, 12, seed=5)
    srd = SRD(_graph(model, x))
    batched = srd.attribute(x)
    single = torch.cat([srd.attribute(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, single)
    assert torch.equal(batched, srd.attribute(x))


def test_relevance_has_the_layer_shape_and_channels_sum_to_the_pfv_relevance():
    model = MODELS["vgg"]()
    x = _inputs(2, 8)
    srd = SRD(_graph(model, x))
    assert srd.attribute(x).shape == x.shape
    # at a pre-activation map, channel c of PFV i holds R_i z_ic^2 / ||z_i||^2
    relevance = srd.attribute(x, layer="features.1")
    z = model.features[0](x).detach()
    split = relevance.sum(dim=1, keepdim=True) * z.square() / z.square().sum(dim=1, keepdim=True)
    torch.testing.assert_close(relevance, split)


def test_target_selects_the_explained_class():
    model = MODELS["vgg"]()
    x = _inputs(2, 8)
    srd = SRD(_graph(model, x))
    predicted = model(x).argmax(dim=1)
    torch.testing.assert_close(srd.attribute(x), srd.attribute(x, torch.full((2,), -1)))
    torch.testing.assert_close(srd.attribute(x), srd.attribute(x, predicted))
    other = (predicted + 1) % 4
    assert not torch.allclose(srd.attribute(x), srd.attribute(x, other))


def test_registered_as_srd():
    assert RELEVANCE_METHODS.get("srd") is SRD
    assert SRD.supports_layer


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc((torch.relu(self.conv(x)) * 2.0).mean(dim=(2, 3)))


class Squared(Scaled):
    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc((h * h).mean(dim=(2, 3)))


class Offset(Scaled):
    def __init__(self):
        super().__init__()
        self.register_buffer("offset", torch.ones(1, 4, 1, 1))

    def forward(self, x):
        return self.fc((self.conv(x) + self.offset).relu().mean(dim=(2, 3)))


def test_a_product_with_a_constant_is_a_scale():
    """`2 * relu(z)` is a bias-free linear map of each PFV: one contributor, ratio 1 [Han2024,
    eq. 6], so the map equals the unscaled model's times the logit's scale."""
    x = _inputs(2, 6)
    scaled = Scaled().eval()
    plain = copy.deepcopy(scaled)
    plain.fc.weight.data *= 2.0
    torch.testing.assert_close(
        SRD(_graph(scaled, x)).attribute(x), SRD(_graph(_Unscaled(plain), x)).attribute(x)
    )


class _Unscaled(nn.Module):
    def __init__(self, scaled: Scaled):
        super().__init__()
        self.conv, self.fc = scaled.conv, scaled.fc

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_unsupported_operations_head_layers_and_options_are_named_in_the_error():
    x = _inputs(2, 6)
    with pytest.raises(RelevanceError, match="aten.mul.Tensor"):
        SRD(_graph(Squared(), x))  # a product of two encoder tensors, neither a gate
    with pytest.raises(RelevanceError, match="aten.add.Tensor with a constant operand"):
        SRD(_graph(Offset(), x)).attribute(x)
    with pytest.raises(RelevanceError, match="SRD takes no options, got composite"):
        SRD(_graph(Scaled(), x), composite="epsilon")
    vgg = SRD(_graph(MODELS["vgg"](), x))
    with pytest.raises(RelevanceError, match="'fc' is not in the encoder"):
        vgg.attribute(x, layer="fc")
