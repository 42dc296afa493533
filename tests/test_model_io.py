"""Model I/O conventions: grayscale and BGR inputs, probability outputs, batch-1 exports, the
default layer of squeeze-excitation models, and products LRP cannot split refused when it binds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from auditor.audit.preflight import check_fit
from auditor.audit.resolve import model_channels
from auditor.config import AuditConfig
from auditor.config.analysis import Preprocess
from auditor.data.samples import normalize
from auditor.errors import ModelLoadError, RelevanceError
from auditor.model.graph import ModelGraph
from auditor.model.onnx import load_onnx
from auditor.relevance.composites import composite
from auditor.relevance.lrp import LRP
from auditor.tracking.resolve import load_model

torch.set_num_threads(1)
aten = torch.ops.aten


def _rgb(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 4, 5, generator=torch.Generator().manual_seed(0))


def test_one_channel_models_get_luminance_with_one_mean() -> None:
    images = _rgb()
    x = normalize(images, Preprocess(channels=1, mean=(0.5,), std=(0.25,)))
    luminance = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    assert x.shape == (2, 1, 4, 5)
    torch.testing.assert_close(x[:, 0], (luminance - 0.5) / 0.25)


def test_bgr_models_get_reversed_channels_normalised_in_their_order() -> None:
    images = _rgb()
    x = normalize(images, Preprocess(channel_order="bgr", mean=(0.1, 0.2, 0.3), std=(1, 2, 4)))
    torch.testing.assert_close(x[:, 0], (images[:, 2] - 0.1) / 1)
    torch.testing.assert_close(x[:, 2], (images[:, 0] - 0.3) / 4)


def test_mean_and_std_take_one_value_or_one_per_channel() -> None:
    with pytest.raises(ValueError, match="takes 1 value"):
        Preprocess(mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="per-channel values"):
        Preprocess(channels=1, mean=(0.1, 0.2, 0.3))
    assert model_channels(Preprocess(), (1, 28, 28)).channels == 1
    assert model_channels(Preprocess(channels=3), (1, 28, 28)).channels == 3  # the config wins
    assert model_channels(Preprocess(), None).channels is None


class _Tiny(nn.Module):
    def __init__(self, ending: nn.Module | None = None, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        self.ending = ending or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ending(self.fc(self.pool(self.features(x)).flatten(1)))


@pytest.mark.parametrize(
    ("ending", "outputs", "scores"),
    [
        (nn.Softmax(dim=1), "auto", "logits before the final Softmax"),
        (nn.Sigmoid(), "probabilities", "logits before the final Sigmoid"),
        (nn.Softmax(dim=1), "logits", "logits"),
        (None, "auto", "logits"),
    ],
)
def test_probability_outputs_are_audited_on_their_logits(ending, outputs, scores) -> None:
    torch.manual_seed(0)
    model = _Tiny(ending).eval()
    x = _rgb(3)
    graph = ModelGraph.from_module(model, x, outputs)
    assert graph.scores == scores
    expected = model(x) if scores == "logits" else model.fc(model.pool(model.features(x)).flatten(1))
    with torch.no_grad():
        torch.testing.assert_close(graph.gm(x), expected)


def test_probabilities_without_an_ending_are_audited_as_log_probabilities() -> None:
    class Probabilities(_Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = super().forward(x)
            return torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)

    model = Probabilities().eval()
    x = _rgb(3)
    graph = ModelGraph.from_module(model, x, "probabilities")
    assert graph.scores == "log-probabilities"
    with torch.no_grad():
        torch.testing.assert_close(graph.gm(x), torch.log(model(x)))


class _SqueezeExcitation(nn.Module):
    """A block gated by its own global pool [Hu2018]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(channels, 2, 1), nn.Conv2d(2, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        gate = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * gate


class _SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1, self.block2 = _SqueezeExcitation(4), _SqueezeExcitation(4)
        self.last = nn.Sequential(nn.Conv2d(4, 6, 1), nn.Hardswish())
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.block2(self.block1(self.stem(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def test_default_layer_of_a_squeeze_excitation_model_is_its_last_block() -> None:
    graph = ModelGraph.from_module(_SENet().eval(), _rgb())
    assert graph.default_layer() == "last"  # not block1's input, whose pool is a gate
    split = graph.split("last")
    head = LRP(split.head, composite("epsilon_plus"))  # the head has no gate left to split
    assert head.gm is not None


def test_a_product_lrp_cannot_split_is_refused_when_it_binds() -> None:
    class Squared(_Tiny):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.features(x)
            features = features * torch.relu(features)  # neither operand is a gate
            return self.fc(self.pool(features).flatten(1))

    graph = ModelGraph.from_module(Squared().eval(), _rgb())
    with pytest.raises(RelevanceError) as err:
        LRP(graph.gm, composite("epsilon_plus"))
    assert "cannot tell the gate from the signal" in str(err.value)
    assert "at node 'mul'" in err.value.what and "\n" not in str(err.value)


class _ViewFlatten(nn.Module):
    """digit_recognizer's idiom: `x.view(x.size(0), -1)` before the dense layers."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(x.view(x.size(0), -1))


class _FirstRows(_ViewFlatten):
    """Slices its output by the batch size: a batch-1 export keeps one row whatever the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[: x.size(0)]


def _saved(model: nn.Module, tmp_path: Path, batch: int) -> ModelGraph:
    directory = tmp_path / f"model-{batch}"
    example = np.zeros((batch, 1, 8, 8), np.float32)
    mlflow.pytorch.save_model(model.eval(), str(directory), input_example=example, pip_requirements=["torch"])
    loaded = load_model(str(directory), tracking_uri="", trusted=False)
    return ModelGraph.from_program(loaded.program)


@pytest.mark.parametrize("batch", [1, 2])
def test_view_flatten_exports_split_and_run_on_any_batch(tmp_path: Path, batch: int) -> None:
    torch.manual_seed(0)
    model = _ViewFlatten()
    graph = _saved(model, tmp_path, batch)
    assert graph.input_shape == (1, 8, 8) and graph.default_layer() == "features"
    split = graph.split("features")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.trunk(x)), model(x))


def test_batch_one_export_that_cannot_be_generalised_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        _saved(_FirstRows(), tmp_path, 1)
    assert "exported for batch size 1" in err.value.what
    assert err.value.fix.startswith("log the model with an input_example of 2 or more samples")


def test_onnx_export_fixed_at_batch_one_is_named_in_the_preflight(tmp_path: Path) -> None:
    """A static-batch ONNX export folds `x.size(0)` to 1: two samples fail, one runs; the
    pre-flight says so rather than suggesting another image size."""
    torch.manual_seed(0)
    path = tmp_path / "static.onnx"
    torch.onnx.export(_ViewFlatten().eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      opset_version=13, input_names=["x"], output_names=["y"])  # fmt: skip
    graph = ModelGraph(load_onnx(path))
    config = AuditConfig.model_validate(
        {"model": {"uri": str(path)}, "samples": [{"name": "s", "uri": "unused.npz"}]}
    )
    config.preprocess = model_channels(config.preprocess, graph.input_shape)
    samples = SimpleNamespace(images=np.random.default_rng(0).random((4, 3, 8, 8), np.float32))
    with pytest.raises(ModelLoadError) as err:
        check_fit(graph, graph.split(graph.default_layer()), samples, config)
    assert "exported for batch size 1" in err.value.what
    assert "dynamic batch dimension" in err.value.fix and "preprocess.size" not in err.value.fix
