"""LRP rules and engine: formulas, conservation, canonization, signal-takes-all, errors."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable

import pytest
import torch
from torch import nn

from auditor.config import load_config
from auditor.errors import ConfigError, RelevanceError
from auditor.model.graph import ModelGraph
from auditor.relevance import LRP, Composite, composite, composites, explain
from auditor.relevance.rules import (
    LRP0,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    stabilize,
)

from .plugins import fresh_registry, install_plugin

torch.set_num_threads(1)
DTYPE = torch.float64
# the module itself: the package's `composites` is the function of the same name
composite_library = importlib.import_module("auditor.relevance.composites")
LRP_0 = Composite("lrp0", LRP0(), LRP0(), 0.0)


def _explain(graph: ModelGraph, rules: Composite, x: torch.Tensor, target=None) -> torch.Tensor:
    return LRP(graph.gm, rules).attribute(x, target)


def _graph(model: nn.Module, x: torch.Tensor) -> ModelGraph:
    return ModelGraph.from_module(model.to(DTYPE).eval(), x[:2])


# --- rules against their formulas, on one dense layer -------------------------------------

Contributions = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, w) -> K x D
Bias = Callable[[torch.Tensor], torch.Tensor] | None  # the modified bias in the denominator


def _reference(x, w, b, relevance, terms: list[tuple[float, Contributions, Bias]], eps):
    """`R_i = sum_t c_t sum_j C_t[j, i] / stab(sum_i' C_t[j, i'] + b'_j) R_j`, one sample."""
    result = torch.zeros_like(x)
    for coefficient, contributions, bias in terms:
        c = contributions(x, w)
        z = c.sum(dim=1) + (bias(b) if bias else 0)
        result += coefficient * (c / stabilize(z, eps)[:, None] * relevance[:, None]).sum(dim=0)
    return result


LOW, HIGH, GAMMA = -1.5, 2.0, 0.3
RULES: dict[str, tuple[Rule, list[tuple[float, Contributions, Bias]]]] = {
    "lrp0": (LRP0(), [(1, lambda x, w: x * w, lambda b: b)]),
    "epsilon": (Epsilon(epsilon=0.5), [(1, lambda x, w: x * w, lambda b: b)]),
    "gamma": (
        Gamma(gamma=GAMMA),
        [(1, lambda x, w: x * (w + GAMMA * w.clamp(min=0)), lambda b: b + GAMMA * b.clamp(min=0))],
    ),
    "zplus": (ZPlus(), [(1, lambda x, w: (x * w).clamp(min=0), None)]),
    "alpha2beta1": (
        AlphaBeta(alpha=2.0, beta=1.0),
        [
            (2, lambda x, w: (x * w).clamp(min=0), None),
            (-1, lambda x, w: (x * w).clamp(max=0), None),
        ],
    ),
    "zbox": (
        ZBox(low=LOW, high=HIGH),
        [(1, lambda x, w: x * w - LOW * w.clamp(min=0) - HIGH * w.clamp(max=0), None)],
    ),
    "wsquare": (WSquare(), [(1, lambda x, w: w.square().expand(len(w), len(x)), None)]),
    "flat": (Flat(), [(1, lambda x, w: torch.ones(len(w), len(x), dtype=x.dtype), None)]),
}


@pytest.mark.parametrize("name", RULES)
def test_rule_matches_its_formula_on_a_dense_layer(name):
    rule, terms = RULES[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, generator=gen, dtype=DTYPE) * 3 - 1  # mixed signs, within [LOW, HIGH]
    if name == "gamma":
        x = x.clamp(min=0)  # gamma is defined for non-negative inputs
    w = torch.randn(5, 7, generator=gen, dtype=DTYPE)
    b = torch.randn(5, generator=gen, dtype=DTYPE)
    relevance = torch.randn(3, 5, generator=gen, dtype=DTYPE)
    leaf = x.clone().requires_grad_(True)
    out = rule(torch.nn.functional.linear, leaf, w, b)
    assert torch.allclose(out, torch.nn.functional.linear(x, w, b))  # forward value untouched
    (got,) = torch.autograd.grad(out, leaf, relevance)
    expected = torch.stack(
        [_reference(x[n], w, b, relevance[n], terms, rule.epsilon) for n in range(len(x))]
    )
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_zplus_is_alpha1_beta0_and_alpha_minus_beta_must_be_one():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 6, 6, generator=gen)
    w = torch.randn(4, 3, 3, 3, generator=gen)
    conv = lambda a, weight, bias: torch.nn.functional.conv2d(a, weight, bias, padding=1)
    grads = []
    for rule in (ZPlus(), AlphaBeta(alpha=1.0, beta=0.0)):
        leaf = x.clone().requires_grad_(True)
        grads.append(
            torch.autograd.grad(rule(conv, leaf, w, None), leaf, torch.ones(2, 4, 6, 6))[0]
        )
    assert torch.equal(grads[0], grads[1])
    with pytest.raises(RelevanceError, match="alpha - beta = 1"):
        AlphaBeta(alpha=2.0, beta=0.5)


def _conv_relevance(rule: Rule, x: torch.Tensor, weight: torch.Tensor, out_relevance: torch.Tensor):
    conv = lambda a, w, b: torch.nn.functional.conv2d(a, w, b, padding=1)
    leaf = x.clone().requires_grad_(True)
    return torch.autograd.grad(rule(conv, leaf, weight, None), leaf, out_relevance)[0]


@pytest.mark.parametrize(
    ("row", "col", "window"),
    [(2, 3, (slice(1, 4), slice(2, 5))), (0, 0, (slice(0, 2), slice(0, 2)))],
)
def test_flat_spreads_one_output_uniformly_over_its_receptive_field(row, col, window):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 6, 6, generator=gen, dtype=DTYPE)
    weight = torch.randn(3, 2, 3, 3, generator=gen, dtype=DTYPE)
    out_relevance = torch.zeros(1, 3, 6, 6, dtype=DTYPE)
    out_relevance[0, 1, row, col] = 1.0
    got = _conv_relevance(Flat(epsilon=0.0), x, weight, out_relevance)
    field_size = 2 * len(range(6)[window[0]]) * len(range(6)[window[1]])  # padding cuts the border
    expected = torch.zeros_like(x)
    expected[0, :, window[0], window[1]] = 1.0 / field_size
    assert torch.allclose(got, expected)


# --- conservation and equivalences on whole networks -----------------------------------------


class _Residual(nn.Module):
    def __init__(self, channels: int, bias: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=bias)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) * 0.5 + x)


class _Net(nn.Module):
    """conv, max-pool, residual block (with a product by a constant), avg-pool, linear."""

    def __init__(self, bias: bool = False, classes: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        self.block = _Residual(6, bias)
        self.head = nn.Conv2d(6, 8, 3, padding=1, bias=bias)
        self.fc = nn.Linear(8, classes, bias=bias)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.stem(x)), 2)
        h = nn.functional.avg_pool2d(self.block(h), 2)
        h = torch.relu(self.head(h)).mean(dim=(2, 3))
        return self.fc(h)


@pytest.fixture(scope="module")
def net() -> tuple[nn.Module, ModelGraph, torch.Tensor]:
    torch.manual_seed(0)
    model = _Net().to(DTYPE)
    with torch.no_grad():
        model.fc.weight[0].abs_()  # class 0 has a positive logit on non-negative features
    x = torch.rand(4, 3, 16, 16, dtype=DTYPE)
    return model, _graph(model, x), x


@pytest.mark.parametrize(
    "rules", [LRP_0, composite("epsilon", 1e-9), composite("epsilon_plus", 1e-9),
              composite("alpha1beta0", 1e-9), composite("epsilon_plus_flat", 1e-9)],
    ids=lambda c: c.name,
)  # fmt: skip
def test_relevance_sums_to_the_explained_logit_on_bias_free_relu_nets(net, rules):
    model, graph, x = net
    target = torch.tensor([0, 1, 2, 0])
    relevance = _explain(graph, rules, x, target)
    logits = model(x).gather(1, target[:, None]).squeeze(1)
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), logits, rtol=1e-4)


def test_lrp0_equals_gradient_times_input_on_bias_free_relu_nets(net):
    model, graph, x = net
    target = torch.tensor([2, 1, 0, 1])
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)
    assert torch.allclose(_explain(graph, LRP_0, x, target), grad * x, rtol=1e-8, atol=1e-12)


class _Chain(nn.Module):
    """conv, ReLU, max-pool, conv, ReLU, avg-pool, global mean, linear (no residual sum, whose
    negative summands would get a negative share)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", ["alpha1beta0", "epsilon_plus_flat"])
def test_zplus_relevance_is_non_negative_on_positive_inputs(name):
    torch.manual_seed(6)
    model = _Chain().to(DTYPE)
    with torch.no_grad():
        model.fc.weight[0].abs_()
        model.fc.bias[0] = 0.1  # class 0 has a positive logit on non-negative features
    x = torch.rand(4, 3, 16, 16, dtype=DTYPE)
    relevance = _explain(_graph(model, x), composite(name), x, torch.zeros(4, dtype=torch.long))
    assert relevance.min() >= 0 and relevance.sum() > 0


def test_zbox_bounds_the_input_layer_and_conserves(net):
    model, graph, pixels = net
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    shape = (1, 3, 1, 1)
    x = (pixels - torch.tensor(mean, dtype=DTYPE).reshape(shape)) / torch.tensor(
        std, dtype=DTYPE
    ).reshape(shape)
    box = composite("epsilon_gamma_box", 1e-9, mean=mean, std=std)
    relevance = _explain(graph, box, x)
    assert torch.isfinite(relevance).all()
    assert torch.allclose(relevance.sum(dim=(1, 2, 3)), model(x).max(dim=1).values, rtol=1e-3)
    assert isinstance(box.input_layer, ZBox)  # bounds: pixels 0 and 1, normalised
    assert box.input_layer.low == pytest.approx((-2.5, -1.6, -1.0))
    assert box.input_layer.high == pytest.approx((2.5, 2.4, 7 / 3))
    without_box = Composite("gamma_only", box.conv, box.dense, box.epsilon)
    assert not torch.allclose(relevance, _explain(graph, without_box, x))  # zB was applied


# --- canonization: BatchNorm folding, on VGG- and ResNet-style models -------------------------


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)
    )


class _VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 6), nn.ReLU(), nn.MaxPool2d(2), _conv_bn(6, 8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), nn.ReLU(), _conv_bn(cout, cout))
        self.skip = _conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 6), nn.ReLU())
        self.layer1 = _Block(6, 8, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.layer1(self.stem(x))).flatten(1))


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(3)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=gen))
            bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.randn(c, generator=gen))
            bn.bias.data.copy_(torch.randn(c, generator=gen))
    return model


def _fold_by_hand(model: nn.Module) -> nn.Module:
    """Every Sequential(conv, bn) becomes Sequential(conv with W * s, bias (0 - mu) * s + beta,
    Identity), s = gamma / sqrt(var + eps)."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential) and len(seq) == 2 and isinstance(seq[1], nn.BatchNorm2d):
            conv, bn = seq[0], seq[1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            folded = nn.Conv2d(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding
            )
            folded.weight.data = conv.weight.data * scale.detach().reshape(-1, 1, 1, 1)
            folded.bias.data = ((0 - bn.running_mean) * scale + bn.bias).detach()
            seq[0], seq[1] = folded, nn.Identity()
    return model


@pytest.mark.parametrize("name", composites())
@pytest.mark.parametrize("architecture", [_VGG, _ResNet], ids=["vgg", "resnet"])
def test_batchnorm_canonization_equals_folding_by_hand(architecture, name):
    torch.manual_seed(4)
    model = _randomize_batchnorm(architecture()).to(DTYPE).eval()
    folded = _fold_by_hand(copy.deepcopy(model))
    x = torch.rand(3, 3, 16, 16, dtype=DTYPE)
    assert torch.allclose(model(x), folded(x))
    rules = composite(name)
    relevance = _explain(_graph(model, x), rules, x)
    assert torch.allclose(relevance, _explain(_graph(folded, x), rules, x), rtol=1e-9, atol=1e-12)


# --- products: signal takes all -------------------------------------------------------------


class _Gated(nn.Module):
    """Squeeze-excitation gate: `h * sigmoid(conv(pool(h)))`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.excite = nn.Conv2d(4, 4, 1, bias=False)
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.excite(h.mean(dim=(2, 3), keepdim=True)))
        return self.fc((h * gate).mean(dim=(2, 3)))


class _Attention(nn.Module):
    """Tokens `v` (one per pixel) mixed by `softmax(q k^T) @ v`."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 1, bias=False)
        self.fc = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        v = torch.relu(self.embed(x)).flatten(2).transpose(1, 2)
        weights = torch.softmax(v @ v.transpose(1, 2), dim=-1)
        return self.fc((weights @ v).mean(dim=1))


@pytest.mark.parametrize("architecture", [_Gated, _Attention], ids=["gate", "attention"])
def test_signal_takes_all_relevance_of_products(architecture):
    torch.manual_seed(5)
    model = architecture().to(DTYPE)
    x = torch.rand(2, 3, 6, 6, dtype=DTYPE)
    graph = _graph(model, x)
    gate = next(
        n.name
        for n in graph.gm.graph.nodes
        if "softmax" in str(n.target) or "sigmoid" in str(n.target)
    )
    (at_input, at_gate), logits = LRP(graph.gm, LRP_0).relevance_at(x, [gate])
    assert torch.count_nonzero(at_gate) == 0  # the gate is held constant
    assert torch.allclose(at_input.sum(dim=(1, 2, 3)), logits.max(dim=1).values, rtol=1e-8)


# --- errors ----------------------------------------------------------------------------------


class _Cumulative(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.cumsum(x, dim=1))


def test_unsupported_operation_is_named_in_the_error():
    x = torch.rand(2, 4, dtype=DTYPE)
    with pytest.raises(RelevanceError, match=r"no rule for operation aten\.cumsum"):
        LRP(_graph(_Cumulative(), x).gm, composite("epsilon")).attribute(x)


def test_unknown_composite_lists_the_known_ones():
    with pytest.raises(RelevanceError, match="epsilon_gamma_box"):
        composite("gamma_everywhere")


def test_a_plugin_composite_serves_explain_and_the_config(monkeypatch, tmp_path, net):
    """A distribution declaring a composite in `relevance_auditor.composites` is built by
    `composite`, used by `explain(method="lrp")` and accepted by the audit config."""
    fresh_registry(
        monkeypatch, composite_library, "COMPOSITES", composite_library.check_composite_builder
    )
    install_plugin(
        tmp_path,
        monkeypatch,
        "team_composites",
        """
        from auditor.relevance.composites import Composite, RuleParams
        from auditor.relevance.rules import Epsilon, Gamma

        def gamma_everywhere(p: RuleParams) -> Composite:
            '''gamma on every convolution, epsilon on dense layers'''
            return Composite(
                "gamma_everywhere", Gamma(gamma=p.gamma, epsilon=p.epsilon),
                Epsilon(epsilon=p.epsilon), p.epsilon,
            )
        """,
        {"relevance_auditor.composites": {"gamma_everywhere": "team_composites:gamma_everywhere"}},
    )
    model, graph, x = net
    built = composite("gamma_everywhere", 1e-9, gamma=0.5)
    assert built.conv == Gamma(gamma=0.5, epsilon=1e-9)
    assert composites()["gamma_everywhere"] == "gamma on every convolution, epsilon on dense layers"
    heatmap = explain(graph, x, method="lrp", composite="gamma_everywhere", epsilon=1e-9, gamma=0.5)
    assert torch.allclose(heatmap, _explain(graph, built, x).sum(dim=1))
    assert torch.allclose(heatmap.sum(dim=(1, 2)), model(x).max(dim=1).values, rtol=1e-3)

    path = tmp_path / "audit.yaml"
    base = "model: {uri: m}\nsamples: [{name: p, uri: p}]\n"
    path.write_text(base + "relevance: {composite: gamma_everywhere}\n")
    assert load_config(path).relevance.composite == "gamma_everywhere"
    path.write_text(base + "relevance: {composite: gamma_nowhere}\n")
    with pytest.raises(ConfigError, match="unknown LRP composite 'gamma_nowhere'; known: alpha1"):
        load_config(path)


# --- gamma and z+ on signed inputs (after SiLU, hardswish, leaky ReLU) --------------------


def _signed_gamma_reference(x, w, b, relevance, gamma: float, eps: float) -> torch.Tensor:
    """The generalised gamma rule output by output, one sample of a dense layer: an output
    z_j > 0 spreads R_j over `x_i w_ji + gamma (x_i w_ji)^+` normalised by their sum plus
    `b_j + gamma b_j^+`, an output z_j < 0 over the `^-` parts; gamma = inf keeps only
    `(x_i w_ji)^+` (`^-`), bias ignored."""
    result = torch.zeros_like(x)
    for j in range(len(w)):
        contributions = x * w[j]
        z = contributions.sum() + b[j]
        if z == 0:
            continue
        part = contributions.clamp(min=0) if z > 0 else contributions.clamp(max=0)
        b_part = b[j].clamp(min=0) if z > 0 else b[j].clamp(max=0)
        if gamma == float("inf"):
            c, denominator = part, part.sum()
        else:
            c = contributions + gamma * part
            denominator = c.sum() + b[j] + gamma * b_part
        result += c / stabilize(denominator, eps) * relevance[j]
    return result


def _signed_layer(seed: int, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 9, generator=gen, dtype=DTYPE)  # signed, like SiLU outputs
    w = torch.randn(6, 9, generator=gen, dtype=DTYPE)
    b = torch.randn(6, generator=gen, dtype=DTYPE) if bias else torch.zeros(6, dtype=DTYPE)
    relevance = torch.randn(4, 6, generator=gen, dtype=DTYPE)
    return x, w, b, relevance


def _dense_relevance(rule: Rule, x, w, b, relevance) -> torch.Tensor:
    leaf = x.clone().requires_grad_(True)
    out = rule(torch.nn.functional.linear, leaf, w, b)
    assert torch.allclose(out, torch.nn.functional.linear(x, w, b))  # forward value untouched
    return torch.autograd.grad(out, leaf, relevance)[0]


@pytest.mark.parametrize(
    "rule", [Gamma(gamma=GAMMA), composite("epsilon_plus").conv], ids=["gamma", "zplus"]
)
def test_gamma_and_zplus_follow_the_generalised_rule_on_signed_inputs(rule):
    x, w, b, relevance = _signed_layer(3)
    assert (x < 0).any() and (torch.nn.functional.linear(x, w, b) < 0).any()
    got = _dense_relevance(rule, x, w, b, relevance)
    expected = torch.stack(
        [
            _signed_gamma_reference(x[n], w, b, relevance[n], rule.gamma, rule.epsilon)
            for n in range(len(x))
        ]
    )
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", [GAMMA, float("inf")])
def test_generalised_gamma_conserves_relevance_on_signed_convolutions(gamma):
    gen = torch.Generator().manual_seed(4)
    x = torch.nn.functional.silu(torch.randn(2, 3, 6, 6, generator=gen, dtype=DTYPE) * 2)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=DTYPE)
    out_relevance = torch.randn(2, 4, 6, 6, generator=gen, dtype=DTYPE)
    got = _conv_relevance(Gamma(gamma=gamma, epsilon=1e-12), x, weight, out_relevance)
    assert torch.allclose(got.sum(dim=(1, 2, 3)), out_relevance.sum(dim=(1, 2, 3)), rtol=1e-8)


def test_gamma_and_zplus_are_unchanged_on_non_negative_inputs():
    """After a ReLU the rules are those of before: gamma `w + gamma w^+` on every output, and
    epsilon_plus's z+ exactly alpha1-beta0."""
    x, w, b, relevance = _signed_layer(5)
    x = x.clamp(min=0)
    got = _dense_relevance(Gamma(gamma=GAMMA), x, w, b, relevance)
    _, [(_, classic, classic_bias)] = RULES["gamma"]
    expected = torch.stack(
        [
            _reference(x[n], w, b, relevance[n], [(1, classic, classic_bias)], 1e-6)
            for n in range(len(x))
        ]
    )
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    conv_x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    weight, out_relevance = torch.randn(4, 3, 3, 3), torch.randn(2, 4, 6, 6)
    assert torch.equal(
        _conv_relevance(composite("epsilon_plus").conv, conv_x, weight, out_relevance),
        _conv_relevance(ZPlus(), conv_x, weight, out_relevance),
    )
