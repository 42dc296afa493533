"""Production samples the way teams log them, audited with `auditor audit` from a real MLflow
server: a Parquet table of image bytes logged as an artefact, a Parquet table of image URIs
(artefacts of the run), and a dataset logged with `mlflow.log_input` and resolved from the
registered model version's run. The group column feeds the per-group metrics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.data.http_dataset_source import HTTPDatasetSource
from PIL import Image

from .conftest import Scenario, audit_config
from .test_cli import auditor, write_config

pytestmark = pytest.mark.slow
MODEL = "parquet-detector"
N_URI_ROWS = 60  # production samples logged one PNG artefact each


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _npz_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    with np.load(path) as data:
        labels = data["labels"] if "labels" in data.files else None
        return data["images"], labels, [str(i) for i in data["ids"]]


@pytest.fixture(scope="module")
def logged(mlflow_server: str, shortcut_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The detector registered on the server; its training run holds the validation set as a
    Parquet artefact of PNG bytes with a `site` column, PNG artefacts of production images
    with a Parquet table of their `runs:/` URIs, and the other production images as a dataset
    logged with `mlflow.log_input` (context `production`, source: the table's HTTP URL)."""
    root = tmp_path_factory.mktemp("parquet-logged")
    images, labels, ids = _npz_rows(shortcut_scenario.validation)
    sites = np.where(np.arange(len(ids)) % 3 == 0, "site-A", "site-B")
    pd.DataFrame(
        {"png": [_png(p) for p in images], "y": labels, "key": ids, "site": sites}
    ).to_parquet(root / "validation.parquet", row_group_size=64)
    prod, _, prod_ids = _npz_rows(shortcut_scenario.production)
    (root / "png").mkdir()
    for i in range(N_URI_ROWS):
        Image.fromarray(prod[i]).save(root / "png" / f"{prod_ids[i]}.png")
    pd.DataFrame({"png": [_png(p) for p in prod[N_URI_ROWS:]], "key": prod_ids[N_URI_ROWS:]}).to_parquet(
        root / "production.parquet", row_group_size=64
    )
    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment("parquet-test")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.pytorch.log_model(
                shortcut_scenario.model, name="model", registered_model_name=MODEL,
                input_example=np.zeros((2, 3, 64, 64), np.float32),
            )  # fmt: skip
            mlflow.log_artifact(str(root / "validation.parquet"), artifact_path="samples")
            mlflow.log_artifact(str(root / "production.parquet"), artifact_path="samples")
            mlflow.log_artifacts(str(root / "png"), artifact_path="png")
            run_id = run.info.run_id
            uris = [f"runs:/{run_id}/png/{prod_ids[i]}.png" for i in range(N_URI_ROWS)]
            pd.DataFrame({"location": uris}).to_parquet(root / "uris.parquet")
            mlflow.log_artifact(str(root / "uris.parquet"), artifact_path="samples")
            served = f"{mlflow_server}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts"
            source = HTTPDatasetSource(url=f"{served}/samples/production.parquet")
            table = pd.read_parquet(root / "production.parquet")
            mlflow.log_input(mlflow.data.from_pandas(table, source=source, name="prod-june"), context="production")
            mlflow.log_input(mlflow.data.from_pandas(table.head(2), name="scratch"), context="debugging")
    finally:
        mlflow.set_tracking_uri(previous)
    return {"tracking_uri": mlflow_server, "run_id": run_id}


def test_parquet_bytes_uris_and_logged_dataset_audited_from_the_server(logged, shortcut_scenario, tmp_path):
    run = f"runs:/{logged['run_id']}"
    config = audit_config(
        shortcut_scenario, tmp_path,
        subclasses={"enabled": False}, gallery={"enabled": False},
        dropout={"dose_response_fractions": [], "bootstrap_replicates": 200},
    )  # fmt: skip
    config["tracking_uri"] = logged["tracking_uri"]
    config["model"]["uri"] = f"models:/{MODEL}/1"
    config["samples"] = [
        {
            "name": "validation", "uri": f"{run}/samples/validation.parquet", "role": "reference",
            "columns": {"image": "png", "label": "y", "id": "key", "group": "site"},
            "class_names": ["real", "fake"],
        },
        {"name": "production-uris", "uri": f"{run}/samples/uris.parquet", "columns": {"image": "location"}},
        {
            "name": "production", "uri": f"dataset:models:/{MODEL}/1?context=production",
            "columns": {"image": "png", "id": "key"},
        },
    ]  # fmt: skip
    result = auditor("audit", "--config", str(write_config(tmp_path, config)), "--report", str(tmp_path / "r.json"), "--quiet")
    assert result.returncode == 0, result.stderr

    report = json.loads((tmp_path / "r.json").read_text())
    n_prod = len(_npz_rows(shortcut_scenario.production)[2])
    assert report["samples"]["sets"] == {
        "validation": 300, "production-uris": N_URI_ROWS, "production": n_prod - N_URI_ROWS,
    }  # fmt: skip
    assert report["samples"]["n_labelled"] == 300
    kinds = {f["kind"] for f in report["findings"]}
    assert {"spurious_channels", "probe_sensitivity"} <= kinds  # the npz audit's findings
    per_group = report["probes"]["grayscale"]["probed"]["per_group"]
    assert set(per_group) == {"site-A", "site-B"}
    assert per_group["site-A"]["n_samples"] == 100 and per_group["site-B"]["n_samples"] == 200


def test_dataset_reference_errors_are_one_line(logged, shortcut_scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path)
    config["tracking_uri"] = logged["tracking_uri"]
    config["samples"] = [{"name": "p", "uri": f"dataset:runs:/{logged['run_id']}"}]
    result = auditor("audit", "--config", str(write_config(tmp_path, config)), "--quiet")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "logged 2 datasets matching the reference" in line and "prod-june (production)" in line
    assert "-- fix: add ?name=<dataset name> or ?context=<context>" in line
