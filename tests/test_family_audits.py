"""A whole `auditor audit` through the CLI on the families teams deploy most (ResNet-50,
MobileNetV3, ConvNeXt styles of `tests/families`): each model logged to a real MLflow tracking
server in MLflow's default format, audited at the family's default layer, with a report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from auditor.store import AuditStore
from tests.families import FAMILIES, pair
from tests.test_preflight import assert_failed_before_passes

pytestmark = pytest.mark.slow

AUDITOR = str(Path(sys.executable).with_name("auditor"))
SIZE = 32
N = 24  # per sample set


def _samples(path: Path, seed: int, labelled: bool) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "images": rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8),
        "ids": np.array([f"{path.stem}-{i:03d}" for i in range(N)]),
    }
    if labelled:
        arrays["labels"] = rng.integers(0, 5, N)
    np.savez_compressed(path, **arrays)
    return path


def _config(tmp_path: Path, model_uri: str, tracking_uri: str) -> Path:
    config = {
        "model": {"uri": model_uri},
        "samples": [
            {"name": "validation", "uri": str(_samples(tmp_path / "validation.npz", 0, True)),
             "role": "reference"},
            {"name": "production", "uri": str(_samples(tmp_path / "production.npz", 1, False)),
             "role": "production"},
        ],
        "preprocess": {"mean": [0.5] * 3, "std": [0.25] * 3},
        "subclasses": {"enabled": False},
        "gallery": {"samples_per_channel": 2},
        "artifacts_dir": str(tmp_path / "artefacts"),
        "store_url": f"sqlite:///{tmp_path / 'auditor.db'}",
        "tracking_uri": tracking_uri,
        "batch_size": 16,
    }  # fmt: skip
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _audit(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AUDITOR, "audit", "--config", str(config), *args],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_small", "convnext"])
def test_cli_audit_of_a_logged_family_model(mlflow_server, tmp_path, name):
    model, _ = pair(name)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        mlflow.set_experiment(f"families-{name}")
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=np.zeros((2, 3, SIZE, SIZE), np.float32),
                registered_model_name=f"family-{name}",
            )
    finally:
        mlflow.set_tracking_uri(None)
    uri = f"models:/family-{name}/{info.registered_model_version}"
    config = _config(tmp_path, uri, mlflow_server)
    result = _audit(config, "--quiet", "--report", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["flavor"] == "pytorch-pt2"
    channels = report["channels"]
    assert channels["layer"] == FAMILIES[name].layer
    assert len(channels["top_k"]) == channels["k"] > 0
    assert np.isfinite(channels["relevance"]).all() and np.abs(channels["relevance"]).sum() > 0
    assert report["samples"]["sets"] == {"validation": N, "production": N}
    store = AuditStore(f"sqlite:///{tmp_path / 'auditor.db'}")
    try:
        assert store.get_audit(report["audit_id"]).status == "succeeded"
    finally:
        store.close()


class _Mixer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


class _CumulativeHead(nn.Module):
    """A convolutional block, then a channel mixer LRP has no rule for, then the classifier."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mixer = _Mixer()
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mixer(self.layer1(x)).mean(dim=(2, 3)))


def test_an_operation_without_rule_fails_the_audit_before_any_pass(tmp_path):
    model_dir = tmp_path / "model"
    mlflow.pytorch.save_model(
        _CumulativeHead().eval(),
        str(model_dir),
        input_example=np.zeros((2, 3, SIZE, SIZE), np.float32),
    )
    config = yaml.safe_load(
        _config(tmp_path, str(model_dir), f"sqlite:///{tmp_path / 'm.db'}").read_text()
    )
    config["model"]["layer"] = "layer1"
    config["artifacts_dir"] = str(tmp_path / "audit-artifacts")
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    result = _audit(tmp_path / "audit.yaml")
    assert_failed_before_passes(
        result, tmp_path, "aten.cumsum.default at node 'cumsum' in module 'mixer'",
        "LRP supports the ResNet",
    )  # fmt: skip
