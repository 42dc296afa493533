"""Models and samples resolved through a real MLflow tracking server on loopback."""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from auditor.errors import MlflowUnreachableError, ModelLoadError, SampleError
from auditor.tracking.resolve import check_tracking_server, download_samples, load_model

pytestmark = pytest.mark.slow

UNREACHABLE = "http://127.0.0.1:1"
EXAMPLE = np.zeros((2, 3, 16, 16), np.float32)


class TinyCNN(nn.Module):
    """A few conv layers and a linear head: enough to exercise export and loading."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass(frozen=True)
class Logged:
    """What the module fixture logged to the server."""

    tracking_uri: str
    eager: TinyCNN
    run_id: str
    pickle_run_id: str
    pickle_model_uri: str
    samples: np.ndarray


@pytest.fixture(scope="module")
def logged(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """Log a pt2 model (registered as `tiny`, alias `production`), a pickled model and an npz."""
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(mlflow_server)  # also sets MLFLOW_TRACKING_URI for the process
    try:
        torch.manual_seed(0)
        eager = TinyCNN().eval()
        samples = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
        npz = tmp_path_factory.mktemp("artefacts") / "x.npz"
        np.savez(npz, images=samples)
        with mlflow.start_run() as run:
            mlflow.pytorch.log_model(
                eager, name="model", input_example=EXAMPLE, registered_model_name="tiny"
            )
            mlflow.log_artifact(str(npz), artifact_path="samples")
        with mlflow.start_run() as pickle_run:
            info = mlflow.pytorch.log_model(eager, name="model", serialization_format="pickle")
        MlflowClient(mlflow_server).set_registered_model_alias("tiny", "production", "1")
        yield Logged(
            mlflow_server, eager, run.info.run_id, pickle_run.info.run_id, info.model_uri, samples
        )
    finally:
        mlflow.set_tracking_uri(None)
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _assert_same_outputs(model: nn.Module, eager: nn.Module) -> None:
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager(x))


def test_alias_loads_exported_program(logged: Logged) -> None:
    loaded = load_model("models:/tiny@production", tracking_uri=logged.tracking_uri, trusted=False)
    assert isinstance(loaded.program, torch.export.ExportedProgram) and loaded.module is None
    _assert_same_outputs(loaded.program.module(), logged.eager)
    ref = loaded.ref
    assert (ref.name, ref.version, ref.flavor, ref.run_id) == (
        "tiny",
        "1",
        "pytorch-pt2",
        logged.run_id,
    )
    assert ref.uri == "models:/tiny@production"
    np.testing.assert_array_equal(loaded.input_example, EXAMPLE)


def test_version_number_loads(logged: Logged) -> None:
    loaded = load_model("models:/tiny/1", tracking_uri=logged.tracking_uri, trusted=False)
    assert loaded.ref.version == "1" and loaded.program is not None
    _assert_same_outputs(loaded.program.module(), logged.eager)


def test_runs_uri_and_local_directory(logged: Logged, tmp_path: Path) -> None:
    uri = f"runs:/{logged.run_id}/model"
    loaded = load_model(uri, tracking_uri=logged.tracking_uri, trusted=False)
    assert (loaded.ref.name, loaded.ref.version, loaded.ref.run_id) == (
        "model",
        None,
        logged.run_id,
    )
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))
    loaded = load_model(local, tracking_uri=UNREACHABLE, trusted=False)
    assert loaded.ref.flavor == "pytorch-pt2" and loaded.ref.version is None
    _assert_same_outputs(loaded.program.module(), logged.eager)


def test_untrusted_pt2_with_pickle_payload_is_refused(
    logged: Logged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{logged.run_id}/model", dst_path=str(tmp_path)
    )
    with zipfile.ZipFile(Path(local) / "data" / "model.pt2", "a") as archive:
        archive.writestr("model/data/extra.pkl", pickle.dumps({"payload": 1}))
    with pytest.raises(ModelLoadError, match="failed MLflow's pickle-free check") as info:
        load_model(local, tracking_uri=UNREACHABLE, trusted=False)
    assert "model.trusted: true" in str(info.value) and "\n" not in str(info.value)
    assert load_model(local, tracking_uri=UNREACHABLE, trusted=True).program is not None


@pytest.mark.parametrize(
    "uri", ["models:/tiny@nope", "models:/tiny/7", "models:/missing@production"]
)
def test_unknown_model_does_not_resolve(logged: Logged, uri: str) -> None:
    with pytest.raises(ModelLoadError, match=f"model URI {uri} does not resolve") as info:
        load_model(uri, tracking_uri=logged.tracking_uri, trusted=False)
    assert "\n" not in str(info.value) and "check the name and alias" in str(info.value)


def test_pickled_model_needs_trust(logged: Logged, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    uri = f"runs:/{logged.pickle_run_id}/model"
    with pytest.raises(ModelLoadError, match=f"model URI {uri} is a pickled") as info:
        load_model(uri, tracking_uri=logged.tracking_uri, trusted=False)
    assert "model.trusted: true" in str(info.value)
    loaded = load_model(uri, tracking_uri=logged.tracking_uri, trusted=True)
    assert loaded.program is None and loaded.ref.flavor == "pytorch-pickle"
    _assert_same_outputs(loaded.module, logged.eager)
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in os.environ


def test_logged_model_id_uri(logged: Logged) -> None:
    loaded = load_model(logged.pickle_model_uri, tracking_uri=logged.tracking_uri, trusted=True)
    assert loaded.ref.name == "model" and loaded.ref.run_id == logged.pickle_run_id


def test_download_samples(logged: Logged, tmp_path: Path) -> None:
    path = download_samples(
        f"runs:/{logged.run_id}/samples/x.npz", tracking_uri=logged.tracking_uri, into=tmp_path
    )
    assert path.is_relative_to(tmp_path)
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["images"], logged.samples)


def test_download_missing_samples(logged: Logged, tmp_path: Path) -> None:
    uri = f"runs:/{logged.run_id}/samples/nope.npz"
    with pytest.raises(SampleError, match=f"sample URI {uri} could not be downloaded"):
        download_samples(uri, tracking_uri=logged.tracking_uri, into=tmp_path)


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(
        MlflowUnreachableError, match=f"MLflow tracking server {UNREACHABLE} is unreachable"
    ):
        check_tracking_server(UNREACHABLE)
    with pytest.raises(MlflowUnreachableError, match="MLFLOW_TRACKING_URI"):
        load_model("models:/tiny@production", tracking_uri=UNREACHABLE, trusted=False)
    with pytest.raises(MlflowUnreachableError):
        download_samples("runs:/abc/samples/x.npz", tracking_uri=UNREACHABLE, into=tmp_path)
    assert time.monotonic() - start < 10


def test_a_missing_local_tracking_store_is_named_and_not_created(tmp_path: Path) -> None:
    """MLflow creates an empty store on first use and then reports the model as missing; an
    audit only reads, so a missing SQLite file or store folder is the error, and stays absent."""
    for uri in (f"sqlite:///{tmp_path}/absent/mlflow.db", str(tmp_path / "mlruns")):
        with pytest.raises(MlflowUnreachableError, match=r"tracking store .* does not exist"):
            load_model("models:/tiny@production", tracking_uri=uri, trusted=False)
        with pytest.raises(MlflowUnreachableError, match="MLFLOW_TRACKING_URI"):
            download_samples("runs:/abc/samples/x.npz", tracking_uri=uri, into=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_local_paths_need_no_server(tmp_path: Path) -> None:
    check_tracking_server(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(SampleError, match="does not exist"):
        download_samples(str(tmp_path / "missing.npz"), tracking_uri=UNREACHABLE, into=tmp_path)
    with pytest.raises(ModelLoadError, match="holds no MLmodel file"):
        load_model(str(tmp_path), tracking_uri=UNREACHABLE, trusted=True)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing"), tracking_uri=UNREACHABLE, trusted=True)


def test_corrupt_pt2_archive(logged: Logged, tmp_path: Path) -> None:
    uri = f"runs:/{logged.run_id}/model"
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path))
    (Path(local) / "data" / "model.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(ModelLoadError, match="the pt2 archive cannot be loaded") as info:
        load_model(local, tracking_uri=UNREACHABLE, trusted=True)
    assert "\n" not in str(info.value)
