"""The relevance engine's promises that span artefact formats and training: the same relevance
for one model as an eager module, as a `torch.export` program saved and loaded through MLflow,
and as an ONNX export; and relevance that finds a planted feature."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from auditor.model.graph import ModelGraph
from auditor.model.onnx import load_onnx
from auditor.model.zoo import SmallResNet
from auditor.relevance import explain
from auditor.relevance.quality import attribution_localisation
from auditor.tracking.resolve import load_model

SIZE = 32


@pytest.fixture(scope="module")
def resnet() -> SmallResNet:
    torch.manual_seed(0)
    model = SmallResNet(num_classes=3, width=8).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    # logits from the features, not from the dense bias: SRD's class ratio [Han2024, eq. 4]
    # is max(Phi_c - mean_k Phi_k, 0), all zero where a bias alone decides the class
    model.fc.bias.data.zero_()
    return model


@pytest.fixture(scope="module")
def three_formats(resnet: SmallResNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelGraph]:
    """The same model as an eager module (exported here), as MLflow's default pt2 artefact
    loaded back through the auditor, and as an ONNX file imported into the aten graph."""
    root = tmp_path_factory.mktemp("formats")
    example = torch.rand(2, 3, SIZE, SIZE)
    mlflow.pytorch.save_model(resnet, str(root / "mlflow-model"), input_example=example.numpy())
    loaded = load_model(str(root / "mlflow-model"), tracking_uri=f"sqlite:///{root / 'm.db'}", trusted=False)
    assert loaded.program is not None  # MLflow 3's default: a torch.export program
    onnx_path = root / "model.onnx"
    torch.onnx.export(
        resnet, (example,), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["images"], dynamic_axes={"images": {0: "batch"}},
    )
    return {
        "eager": ModelGraph.from_module(resnet, example),
        "mlflow_pt2": ModelGraph.from_program(loaded.program),
        "onnx": ModelGraph(load_onnx(onnx_path)),
    }


@pytest.mark.parametrize(
    ("method", "options"),
    [("lrp", {"composite": "epsilon_plus"}), ("lrp", {"composite": "epsilon_gamma_box"}), ("srd", {})],
)
@pytest.mark.parametrize("layer", [None, "layer2"])
def test_same_relevance_for_every_artefact_format(three_formats, method, options, layer):
    x = torch.rand(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    maps = {
        name: explain(graph, x, method=method, layer=layer, reduce=False, **options)
        for name, graph in three_formats.items()
    }
    scale = maps["eager"].abs().max()
    assert scale > 0
    for name in ("mlflow_pt2", "onnx"):
        assert maps[name].shape == maps["eager"].shape
        torch.testing.assert_close(maps[name], maps["eager"], atol=1e-4 * float(scale), rtol=1e-3)


def planted_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images whose label says only whether a faint cross is drawn in the top-left
    quadrant; a distractor cross anywhere else appears in both classes alike."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 1.0, (n, 3, SIZE, SIZE)).astype(np.float32) * 0.6
    labels = rng.integers(0, 2, n)
    half = SIZE // 2

    def cross(i: int, top: int, left: int) -> None:
        images[i, :, top + 3, left : left + 7] = 1.0
        images[i, :, top : top + 7, left + 3] = 1.0

    for i in range(n):
        if labels[i]:
            cross(i, int(rng.integers(1, half - 8)), int(rng.integers(1, half - 8)))
        cross(i, int(rng.integers(half, SIZE - 8)), int(rng.integers(half, SIZE - 8)))
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    mask[:, :half, :half] = True
    return torch.from_numpy(images), torch.from_numpy(labels), mask


def test_relevance_finds_a_planted_feature():
    torch.manual_seed(0)
    images, labels, _ = planted_data(1200, seed=0)
    model = SmallResNet(num_classes=2, width=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for batch in torch.randperm(len(images), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model((images[batch] - 0.5) / 0.5), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()

    test_x, test_y, mask = planted_data(64, seed=1)
    test_x = (test_x - 0.5) / 0.5
    with torch.no_grad():
        assert (model(test_x).argmax(1) == test_y).float().mean() > 0.9
    positive = test_y == 1  # the planted cross is in the image: relevance should sit on it
    graph = ModelGraph.from_module(model, test_x[:2])
    chance = mask[0].float().mean().item()  # 0.25: share of the image inside the region
    for method, options in [("lrp", {"composite": "epsilon_plus"}), ("srd", {})]:
        relevance = explain(graph, test_x[positive], method=method, target=1, reduce=False, **options)
        relevance = relevance / relevance.abs().amax(dim=(1, 2, 3), keepdim=True)
        inside = attribution_localisation(relevance, mask[positive]).mean().item()
        assert inside > chance + 0.3, (method, inside)
