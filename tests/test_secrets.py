"""Secrets never leave the auditor: a real `auditor audit` with a database password in
`AUDITOR_DB_URL`, a tracking server password in the tracking URI and a webhook token in the
sink's environment variable writes none of them into the database, the MLflow run, its
output, the report or the artefact folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from sqlalchemy import create_engine, inspect, make_url, text

from auditor.redaction import MASK, redact, register_secret
from tests import test_store

from .conftest import Scenario, audit_config

postgresql_url = test_store.postgresql_url

AUDITOR = str(Path(sys.executable).with_name("auditor"))
DB_SECRET = "pg-Secret-4f1c"
TRACKING_SECRET = "trk-Secret-9a2b"
WEBHOOK_SECRET = "hook-Secret-77e0"


def test_redact_masks_url_passwords_credential_parameters_and_registered_secrets():
    assert redact("postgresql+psycopg://postgres:pw@db:5432/a") == (
        f"postgresql+psycopg://postgres:{MASK}@db:5432/a"
    )
    assert redact("http://u:p@ss@host/x and http://host:5000 a@b") == (
        f"http://u:{MASK}@host/x and http://host:5000 a@b"
    )
    assert redact("https://h/hook?token=abc&x=1") == f"https://h/hook?token={MASK}&x=1"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    register_secret("registered-value-31")
    assert redact("sent to https://h/registered-value-31/x") == f"sent to https://h/{MASK}/x"


def run_audit_cli(config: dict, tmp_path: Path, env: dict[str, str]) -> list[str]:
    """Run `auditor db upgrade` and `auditor audit` as users do; return their outputs."""
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    outputs = []
    for args in (["db", "upgrade"], ["audit", "--config", str(path), "--report", str(tmp_path / "r.json"), "--quiet"]):
        result = subprocess.run(
            [AUDITOR, *args], capture_output=True, text=True, timeout=600,
            stdin=subprocess.DEVNULL, check=False, env={**os.environ, **env},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    assert "review it: auditor dashboard" in outputs[-2]
    return outputs


def database_text(url: str) -> str:
    """Every value of every row of every table, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = inspect(connection).get_table_names()
            assert {"audits", "findings", "alerts"} <= set(tables)
            rows = [row for table in tables for row in connection.execute(text(f'SELECT * FROM "{table}"'))]
    finally:
        engine.dispose()
    return "\n".join(str(value) for row in rows for value in row)  # a Row's repr truncates


def mlflow_text(server: str, tmp_path: Path) -> str:
    """Params, tags and every artefact file of the audit's MLflow run."""
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    assert run.data.tags["auditor.audit_id"]
    local = Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, dst_path=str(tmp_path / "run"), tracking_uri=server
    ))  # fmt: skip
    files = [p for p in local.rglob("*") if p.is_file()]
    assert {"audit.yaml", "report.json"} <= {p.name for p in files}
    return "\n".join([repr(run.data.params), repr(run.data.tags), *(files_text(files))])


def files_text(files: list[Path]) -> list[str]:
    return [p.read_bytes().decode("latin-1") for p in files]


def assert_nowhere(secret: str, texts: dict[str, str]) -> None:
    leaks = {name: body[max(0, body.index(secret) - 300) : body.index(secret) + 100]
             for name, body in texts.items() if secret in body}  # fmt: skip
    assert not leaks, f"{secret} found in {leaks}"


def audited_outputs(
    config: dict, tmp_path: Path, env: dict[str, str], db_url: str, server: str
) -> dict[str, str]:
    outputs = run_audit_cli(config, tmp_path, env)
    artefacts = [p for p in (tmp_path / "audit-artifacts").rglob("*") if p.is_file()]
    assert artefacts  # the gallery and the embeddings were written
    return {
        "stdout/stderr": "\n".join(outputs),
        "database": database_text(db_url),
        "mlflow run": mlflow_text(server, tmp_path),
        "report": (tmp_path / "r.json").read_text(),
        "artefact folder": "\n".join(files_text(artefacts)),
    }


def secret_config(scenario: Scenario, tmp_path: Path, tracking_uri: str) -> dict:
    """An audit with MLflow logging (experiment: the test's folder name) and a webhook alert on
    every finding, without `store_url`."""
    config = audit_config(
        scenario,
        tmp_path,
        samples=[("validation", scenario.validation)],
        mlflow_logging={"enabled": True, "experiment": tmp_path.name},
        dropout={"dose_response_fractions": [], "random_repeats": 2, "bootstrap_replicates": 100},
        drift={"enabled": False},
        gallery={"samples_per_channel": 2, "channels": "top_k"},
        alerts={
            "sinks": [{"name": "hook", "type": "webhook", "url_env": "AUDITOR_TEST_HOOK", "timeout_s": 2}],
            "rules": [{"event": "finding", "min_severity": "low", "new_only": False, "sinks": ["hook"]}],
        },
    )
    del config["store_url"]
    config["tracking_uri"] = tracking_uri
    return config


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two audits in subprocesses on a shared machine
def test_database_password_from_the_environment_is_stored_logged_and_printed_nowhere(
    mlflow_server, shortcut_scenario, postgresql_url, tmp_path
):
    db_url = with_password(postgresql_url, DB_SECRET)  # trust auth: any password
    env = {
        "AUDITOR_DB_URL": db_url,
        "AUDITOR_TEST_HOOK": f"http://127.0.0.1:9/hooks/{WEBHOOK_SECRET}",  # refused: failed alert
    }
    config = secret_config(shortcut_scenario, tmp_path, mlflow_server)
    texts = audited_outputs(config, tmp_path, env, db_url, mlflow_server)

    assert_nowhere(DB_SECRET, texts)
    assert_nowhere(WEBHOOK_SECRET, texts)
    assert "postgres:***@127.0.0.1:5432" in texts["stdout/stderr"]
    assert "review it: auditor dashboard\n" in texts["stdout/stderr"]  # reads AUDITOR_DB_URL
    assert "AUDITOR_TEST_HOOK" in texts["database"]  # the variable's name stays


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two audits in subprocesses on a shared machine
def test_tracking_server_password_and_webhook_url_are_stored_logged_and_printed_nowhere(
    mlflow_server, shortcut_scenario, tmp_path
):
    db_url = f"sqlite:///{tmp_path / 'auditor.db'}"
    tracking_uri = mlflow_server.replace("http://", f"http://auditor:{TRACKING_SECRET}@")  # ignored
    env = {
        "AUDITOR_DB_URL": db_url,
        "AUDITOR_TEST_HOOK": f"http://127.0.0.1:9/hooks/{WEBHOOK_SECRET}",
    }
    config = secret_config(shortcut_scenario, tmp_path, tracking_uri)
    texts = audited_outputs(config, tmp_path, env, db_url, mlflow_server)

    assert_nowhere(TRACKING_SECRET, texts)
    assert_nowhere(WEBHOOK_SECRET, texts)
    assert f"auditor:{MASK}@127.0.0.1" in texts["database"]  # the stored config, masked
