"""Logging stored audits to a real MLflow tracking server: metrics, report and tables on a run
tagged with the audited model, linked to the model version, and never failing the audit."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from auditor.artefacts.report import build_report
from auditor.audit.lifecycle import run_audit
from auditor.config import AuditConfig
from auditor.results import AuditOutcome
from auditor.tracking.run_log import audit_metrics, log_audit

from .conftest import Scenario, audit_config
from .registry import register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def audited(
    mlflow_server: str, shortcut_scenario: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AuditOutcome, AuditConfig]:
    """One stored audit of the shortcut detector, registered as `logged-detector@production`."""
    version = register(
        mlflow_server, shortcut_scenario.model, "logged-detector", alias="production"
    )
    assert version == "1"
    tmp = tmp_path_factory.mktemp("mlflow-log")
    raw = audit_config(
        shortcut_scenario,
        tmp,
        samples=[("validation", shortcut_scenario.validation)],
        model={"uri": "models:/logged-detector@production"},
        mlflow_logging={"enabled": True, "experiment": "audits-under-test"},
    )
    raw["tracking_uri"] = mlflow_server
    config = AuditConfig.model_validate(raw)
    return run_audit(config), config


def test_audit_is_logged_with_metrics_artefacts_and_tags(audited, mlflow_server, tmp_path):
    outcome, config = audited
    run_id = log_audit(outcome, config)

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "audits-under-test" and run.info.status == "FINISHED"
    assert {k: v for k, v in run.data.tags.items() if k.startswith("auditor.")} == {
        "auditor.audit_id": str(outcome.audit_id),
        "auditor.model_name": "logged-detector",
        "auditor.model_version": "1",
        "auditor.model_uri": "models:/logged-detector@production",
    }
    result = outcome.result
    metrics = run.data.metrics
    assert metrics["dropout.top_k.flip_rate"] == pytest.approx(result.dropout.top_k.flip_rate)
    assert metrics["dropout.random_k.flip_rate"] == pytest.approx(
        result.dropout.random_k_mean["flip_rate"]
    )
    assert metrics["dropout.baseline.accuracy"] == pytest.approx(result.dropout.baseline.accuracy)
    assert metrics["probe.grayscale.flip_rate"] == pytest.approx(result.probes[0].probed.flip_rate)
    assert metrics["probe.grayscale.neutral.flip_rate"] == pytest.approx(
        result.probes[0].neutral.flip_rate
    )
    high = sum(f.severity == "high" for f in result.findings)
    assert high >= 1  # the shortcut detector has a colour shortcut
    assert metrics["findings.high"] == high
    assert metrics["findings.total"] == len(result.findings)
    assert run.data.params["layer"] == result.channels.layer
    assert run.data.params["model_version"] == "1"

    listed = {a.path for a in client.list_artifacts(run_id)}
    assert listed == {"report.json", "audit.yaml", "dropout.csv", "probes.csv", "channels.csv", "findings.html"}
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, dst_path=str(tmp_path), tracking_uri=mlflow_server
        )
    )
    report = json.loads((local / "report.json").read_text())
    assert report == json.loads(json.dumps(build_report(outcome.audit_id, result)))
    page = (local / "findings.html").read_text()  # the HTML report, as `auditor report --html` writes it
    assert f"Relevance audit {outcome.audit_id}" in page and "data:image/png;base64," in page
    with (local / "dropout.csv").open() as handle:
        dropout = list(csv.DictReader(handle))
    repeats = len(result.dropout.random_sets)
    assert [r["condition"] for r in dropout] == [
        "baseline",
        "top_k",
        *["random_k"] * repeats,
        "bottom_k",
    ]
    assert dropout[1]["channels"] == " ".join(map(str, result.channels.top_k))
    assert float(dropout[1]["flip_rate"]) == pytest.approx(result.dropout.top_k.flip_rate)
    with (local / "probes.csv").open() as handle:
        probes = list(csv.DictReader(handle))
    assert [(p["probe"], p["variant"]) for p in probes] == [
        ("grayscale", "probed"),
        ("grayscale", "neutral"),
    ]

    version = client.get_model_version("logged-detector", "1")
    assert {k: v for k, v in version.tags.items() if k.startswith("auditor.")} == {
        "auditor.last_audit_id": str(outcome.audit_id),
        "auditor.last_audit_run_id": run_id,
        "auditor.last_audit_status": "succeeded",
        "auditor.last_audit_findings": str(len(result.findings)),
    }
    # MLflow 3: the metrics are linked to the version's logged model (its page shows them)
    model_id = version.source.removeprefix("models:/")  # the REST API leaves model_id empty
    logged = client.get_logged_model(model_id)
    linked = {m.key: m.value for m in logged.metrics or [] if m.run_id == run_id}
    assert linked["dropout.top_k.flip_rate"] == pytest.approx(result.dropout.top_k.flip_rate)
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]


def test_disabled_logging_logs_nothing(audited, mlflow_server):
    outcome, config = audited
    disabled = config.model_copy(
        update={
            "mlflow_logging": config.mlflow_logging.model_copy(
                update={"enabled": False, "experiment": "never-created"}
            )
        }
    )
    assert log_audit(outcome, disabled) is None
    assert MlflowClient(mlflow_server).get_experiment_by_name("never-created") is None


def test_unreachable_server_only_warns(audited, caplog):
    outcome, config = audited
    unreachable = config.model_copy(update={"tracking_uri": "http://127.0.0.1:1"})
    with caplog.at_level(logging.WARNING, logger="auditor.tracking.run_log"):
        assert log_audit(outcome, unreachable) is None
    [record] = caplog.records
    message = record.getMessage()
    assert f"audit {outcome.audit_id}" in message and "http://127.0.0.1:1" in message
    assert "unreachable" in message and "the audit itself is stored" in message


def test_metrics_of_a_report_without_labels_skip_undefined_values(audited):
    outcome, _ = audited
    report = build_report(outcome.audit_id, outcome.result)
    report["dropout"]["top_k"] = {**report["dropout"]["top_k"], "accuracy": None}
    metrics = audit_metrics(report)
    assert "dropout.top_k.accuracy" not in metrics and "dropout.top_k.flip_rate" in metrics
    assert all(isinstance(v, float) for v in metrics.values())
