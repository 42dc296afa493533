"""The `relevance-auditor` MLflow evaluator end to end: `mlflow.models.evaluate` on a registered
model of the real tracking server, with a DataFrame of PNG files, gives the audit's metrics and
artefacts, identical to auditing the same images from their .npz file."""

from __future__ import annotations

import html
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from auditor_plugins.evaluator import RelevanceAuditEvaluator, evaluation_config, write_sample_file
from mlflow import MlflowClient
from mlflow.models.evaluation import list_evaluators
from PIL import Image

from auditor.artefacts.report import build_report
from auditor.audit.pipeline import audit
from auditor.config import AuditConfig, Preprocess
from auditor.data.samples import load_sample_set
from auditor.errors import ConfigError, SampleError
from auditor.store import AuditStore
from auditor.tracking.run_log import audit_metrics

from .conftest import Scenario
from .registry import global_tracking_uri, register

NORMALISE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def png_dataframe(npz: Path, folder: Path, n: int) -> pd.DataFrame:
    """The first `n` images of a sample file as PNG files, in a DataFrame with their labels."""
    folder.mkdir()
    with np.load(npz) as data:
        images, labels = data["images"][:n], data["labels"][:n]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"{i:04d}.png"))
        Image.fromarray(image).save(paths[-1])
    return pd.DataFrame({"image": paths, "label": labels})


def test_the_evaluator_is_registered_for_classifiers():
    assert "relevance-auditor" in list_evaluators()
    assert RelevanceAuditEvaluator.can_evaluate(model_type="classifier", evaluator_config={})
    assert not RelevanceAuditEvaluator.can_evaluate(model_type="regressor", evaluator_config={})


@pytest.mark.slow
def test_evaluate_audits_a_dataframe_of_png_files(
    mlflow_server, shortcut_scenario: Scenario, tmp_path
):
    version = register(mlflow_server, shortcut_scenario.model, "evaluated")
    data = png_dataframe(shortcut_scenario.validation, tmp_path / "png", n=200)
    store_url = f"sqlite:///{tmp_path / 'findings.db'}"
    settings = {
        "preprocess": NORMALISE, "seed": 3, "store_url": store_url,
        "subclasses": {"enabled": False}, "artifacts_dir": str(tmp_path / "audit-artifacts"),
    }  # fmt: skip
    with global_tracking_uri(mlflow_server):
        result = mlflow.models.evaluate(
            f"models:/evaluated/{version}",
            data=data,
            targets="label",
            model_type="classifier",
            evaluators=["relevance-auditor"],
            evaluator_config={"relevance-auditor": settings},
        )

    # the same images audited from an .npz file give the same numbers
    npz = tmp_path / "same.npz"
    with np.load(shortcut_scenario.validation) as source:
        np.savez(npz, images=source["images"][:200], labels=source["labels"][:200])
    client = MlflowClient(mlflow_server)
    model_id = client.get_model_version("evaluated", version).source.removeprefix("models:/")
    direct = AuditConfig.model_validate(
        {
            "model": {"uri": f"models:/{model_id}"},
            "samples": [{"name": "evaluation", "uri": str(npz)}],
            "preprocess": NORMALISE,
            "seed": 3,
            "tracking_uri": mlflow_server,
        }
    )
    expected = audit_metrics(build_report(0, audit(direct)))
    assert result.metrics == pytest.approx(expected)
    assert result.metrics["findings.high"] >= 1  # the colour shortcut

    run = client.get_run(result.run_id)
    assert run.data.metrics == pytest.approx(expected)
    listed = {a.path for a in client.list_artifacts(result.run_id, "relevance_audit")}
    assert listed == {
        f"relevance_audit/{name}"
        for name in ("report.json", "audit.yaml", "dropout.csv", "probes.csv", "channels.csv", "findings.html")
    }
    report = result.artifacts["relevance_audit_report"].content
    assert report["model"]["uri"] == f"models:/{model_id}"
    # the evaluation is an audit of the findings database, like any other
    store = AuditStore(store_url)
    (stored,) = store.list_audits()
    assert stored.status == "succeeded" and report["audit_id"] == stored.id
    assert sorted(f.kind for f in store.findings(stored.id)) == sorted(f["kind"] for f in report["findings"])
    assert store.artefacts(stored.id)  # the galleries the dashboard shows
    store.close()
    page = result.artifacts["relevance_audit_findings"].content  # the HTML report of the stored audit
    assert page.startswith("<!DOCTYPE html>") and f"Relevance audit {stored.id}" in page
    assert all(html.escape(f["title"]) in page for f in report["findings"])
    assert run.data.tags["auditor.audit_id"] == str(stored.id)
    assert report["samples"] == {"n": 200, "n_labelled": 200, "sets": {"evaluation": 200}}
    dropout = result.artifacts["relevance_audit_dropout"].content
    assert list(dropout["condition"])[:2] == ["baseline", "top_k"]
    local = mlflow.artifacts.download_artifacts(
        result.artifacts["relevance_audit_report"].uri, dst_path=str(tmp_path / "dl"),
        tracking_uri=mlflow_server,
    )  # fmt: skip
    assert json.loads(Path(local).read_text()) == report
    linked = client.get_logged_model(model_id).metrics or []
    assert {m.key for m in linked if m.run_id == result.run_id} == set(expected)


def test_evaluator_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="evaluator_config sets samples, tracking_uri"):
        evaluation_config({"samples": [], "tracking_uri": "x"}, "models:/m/1", tmp_path / "s.npz", "")
    assert evaluation_config({"store_url": "sqlite:///x.db"}, "models:/m/1", tmp_path / "s.npz", "").store_url == "sqlite:///x.db"
    with pytest.raises(ConfigError, match=r"evaluator_config: preprocess\.colour: Extra inputs"):
        evaluation_config({"preprocess": {"colour": 1}}, "models:/m/1", tmp_path / "s.npz", "")


def test_sample_file_from_a_dataframe(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    for i, size in enumerate([(8, 6), (8, 6), (4, 4)]):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    frame = pd.DataFrame({"path": [str(folder / f"{i}.png") for i in range(3)]})
    out = tmp_path / "s.npz"

    write_sample_file(frame, [1, None, 0.0], "path", out, size=(8, 6), tracking_uri="")
    with np.load(out) as data:
        # the folder audits' reader: float32 N x 3 x H x W in [0, 1], resized to (8, 6)
        assert data["images"].shape == (3, 3, 8, 6) and data["images"].dtype == np.float32
        np.testing.assert_allclose(data["images"].max(axis=(1, 2, 3)), [0, 40 / 255, 80 / 255])
        assert data["labels"].tolist() == [1, -1, 0]  # missing label: unknown
    with pytest.raises(SampleError, match="different sizes.*preprocess"):
        write_sample_file(frame, None, "path", out, size=None, tracking_uri="")
    with pytest.raises(SampleError, match="'fake', which is not a class index"):
        write_sample_file(frame, [1, "fake", 0], "path", out, size=(8, 6), tracking_uri="")
    with pytest.raises(ConfigError, match="no column 'image'.*image_column"):
        write_sample_file(frame, None, "image", out, size=None, tracking_uri="")
    (folder / "1.png").write_bytes(b"not a png")
    with pytest.raises(SampleError, match="1.png cannot be read"):
        write_sample_file(frame, None, "path", out, size=(8, 6), tracking_uri="")


def test_the_evaluator_reads_image_files_as_a_folder_audit_does(tmp_path):
    """One image reader: the same PNG files resized to one size through the evaluator's sample
    file and as a sample folder give identical arrays (the evaluator resized with PIL on uint8)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(20, 14), (9, 11), (8, 6)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    frame = pd.DataFrame({"image": [str(folder / f"{i}.png") for i in range(3)]})
    preprocess = Preprocess(size=(10, 12))
    out = write_sample_file(frame, None, "image", tmp_path / "s.npz", size=(10, 12), tracking_uri="")
    with (
        load_sample_set(out, name="evaluation", preprocess=preprocess) as evaluated,
        load_sample_set(folder, name="folder", preprocess=preprocess) as audited,
    ):
        assert evaluated.images.shape == audited.images.shape == (3, 3, 10, 12)
        np.testing.assert_array_equal(np.asarray(evaluated.images), np.asarray(audited.images))
