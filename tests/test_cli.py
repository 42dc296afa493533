"""`auditor audit` as users run it: a subprocess against a real MLflow tracking server, every
kind of bad input ending in one clear line, a non-zero exit and no half-written audit, and an
audit stopped mid-way by SIGTERM or Ctrl-C (SIGINT) stored as cancelled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from auditor.store import AuditStore

from .conftest import Scenario, audit_config

pytestmark = pytest.mark.slow

AUDITOR = str(Path(sys.executable).with_name("auditor"))


def auditor(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AUDITOR, *args],
        check=False,  # the tests assert the exit status themselves
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def registered(mlflow_server: str, shortcut_scenario: Scenario) -> dict[str, str]:
    """The shortcut detector registered as `counterfeit@production` on the tracking server,
    with its sample sets logged as artefacts of the training run."""
    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment("cli-test")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            info = mlflow.pytorch.log_model(
                shortcut_scenario.model,
                name="model",
                input_example=np.zeros((2, 3, 64, 64), np.float32),
                registered_model_name="counterfeit",
            )
            mlflow.log_artifact(str(shortcut_scenario.validation), artifact_path="samples")
            mlflow.log_artifact(str(shortcut_scenario.production), artifact_path="samples")
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias("counterfeit", "production", str(info.registered_model_version))
    return {
        "tracking_uri": mlflow_server,
        "model": "models:/counterfeit@production",
        "validation": f"runs:/{run.info.run_id}/samples/validation.npz",
        "production": f"runs:/{run.info.run_id}/samples/production.npz",
    }


def server_config(registered: dict[str, str], scenario: Scenario, tmp_path: Path, **overrides) -> dict:
    config = audit_config(scenario, tmp_path, **overrides)
    config["tracking_uri"] = registered["tracking_uri"]
    config["model"]["uri"] = overrides.get("model", {}).get("uri", registered["model"])
    config["samples"] = [
        {"name": "validation", "uri": registered["validation"]},
        {"name": "production", "uri": registered["production"]},
    ]
    return config


def test_audit_against_a_real_tracking_server(registered, shortcut_scenario, tmp_path):
    config = write_config(tmp_path, server_config(registered, shortcut_scenario, tmp_path))
    result = auditor("audit", "--config", str(config), "--report", str(tmp_path / "r.json"), "--quiet")

    assert result.returncode == 0, result.stderr
    assert "spurious_channels" in result.stdout and "probe_sensitivity" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == {
        "uri": "models:/counterfeit@production",
        "name": "counterfeit",
        "version": "1",
        "flavor": "pytorch-pt2",
        "run_id": report["model"]["run_id"],
        "scores": "logits",
    }
    assert report["samples"]["sets"] == {"validation": 300, "production": 300}
    store = AuditStore(f"sqlite:///{tmp_path / 'auditor.db'}")
    audit = store.get_audit(report["audit_id"])
    store.close()
    assert audit.status == "succeeded"
    assert audit.model_version.model.name == "counterfeit" and audit.model_version.version == "1"
    assert {f.kind for f in audit.findings} == {f["kind"] for f in report["findings"]}


def assert_clean_failure(result: subprocess.CompletedProcess, tmp_path: Path, *needles: str) -> None:
    """One line on stderr naming the problem, exit 2, and (where an audit was started) the
    audit stored as failed with its error and not one result row."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]
    db = tmp_path / "auditor.db"
    if not db.exists():
        return
    store = AuditStore(f"sqlite:///{db}")
    audits = store.list_audits()
    assert len(audits) == 1
    audit = store.get_audit(audits[0].id)
    store.close()
    assert audit.status == "failed" and audit.error
    assert not (audit.channel_stats or audit.dropout_results or audit.probe_results or audit.findings)


def test_config_that_does_not_validate(shortcut_scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path)
    config["model"]["colour"] = "red"
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "model.colour", "audit.yaml")
    assert not (tmp_path / "auditor.db").exists()


def test_missing_config_file(tmp_path):
    result = auditor("audit", "--config", str(tmp_path / "nope.yaml"))
    assert_clean_failure(result, tmp_path, "nope.yaml", "does not exist")


def test_unknown_layer_name(shortcut_scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path, model={"layer": "layer9"})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "layer9", "did you mean")


def test_alerts_of_the_log_sink_and_undelivered_warnings_reach_stderr(
    shortcut_scenario, tmp_path, monkeypatch
):
    """Loading the PyTorch model imports `mlflow.pytorch`, whose Lightning autolog module runs
    `logging.basicConfig(level=ERROR)`: the auditor's own log handler still prints the log
    sink's alert and the warning that the (unreachable) webhook sink did not deliver it."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    monkeypatch.setenv("AUDITOR_TEST_DEAD_HOOK", dead)
    alerts = {
        "sinks": [
            {"name": "log", "type": "log"},
            {"name": "dead", "type": "webhook", "url_env": "AUDITOR_TEST_DEAD_HOOK", "timeout_s": 2},
        ],
        "rules": [{"event": "audit_failed", "sinks": ["log", "dead"]}],
    }
    config = audit_config(shortcut_scenario, tmp_path, model={"layer": "layer9"}, alerts=alerts)
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))

    assert result.returncode == 2, result.stderr
    assert "WARNING auditor.alerts: [high] audit 1 failed: " in result.stderr
    assert "WARNING auditor.alerts: alert for audit 1 not delivered: " in result.stderr
    store = AuditStore(f"sqlite:///{tmp_path / 'auditor.db'}")
    sent = [(a.sink, a.status) for a in store.alerts(1)]
    store.close()
    assert sent == [("log", "sent"), ("dead", "failed")]


def test_model_uri_that_does_not_exist(registered, shortcut_scenario, tmp_path):
    config = server_config(registered, shortcut_scenario, tmp_path, model={"uri": "models:/no-such-model@production"})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "models:/no-such-model@production")


def test_mlflow_unreachable(shortcut_scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path, model={"uri": "models:/counterfeit@production"})
    config["tracking_uri"] = "http://127.0.0.1:1"
    start = time.monotonic()
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "http://127.0.0.1:1", "unreachable")
    assert time.monotonic() - start < 120  # fails fast instead of retrying for minutes


def test_corrupt_sample_file(shortcut_scenario, tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    config = audit_config(shortcut_scenario, tmp_path, samples=[("broken", bad)])
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "broken.npz")


def test_wrongly_shaped_sample_file(shortcut_scenario, tmp_path):
    bad = tmp_path / "flat.npz"
    np.savez(bad, images=np.zeros((4, 64, 64), np.uint8))
    config = audit_config(shortcut_scenario, tmp_path, samples=[("flat", bad)])
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "flat.npz", "shape")


def test_samples_that_do_not_fit_the_model(shortcut_scenario, tmp_path):
    config = audit_config(shortcut_scenario, tmp_path, preprocess={"size": [32, 48]})
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert_clean_failure(result, tmp_path, "do not fit", "preprocess.size")


# --- cancellation: SIGTERM / SIGINT while the audit runs -------------------------------------

CANCEL_TIMEOUT_S = 240


def running_audit(db: Path) -> int | None:
    """The id of the running audit in the findings database (None before there is one)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            row = connection.execute("SELECT id FROM audits WHERE status = 'running'").fetchone()
    except sqlite3.OperationalError:  # the child is still creating the schema
        return None
    return None if row is None else row[0]


def wait_while_running(process: subprocess.Popen, condition, what: str):
    """Poll `condition()` until it is truthy; fail if the audit process ends first."""
    deadline = time.monotonic() + CANCEL_TIMEOUT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the audit process ended (exit {process.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {CANCEL_TIMEOUT_S} s waiting for {what}")


@pytest.mark.parametrize(
    ("signum", "exit_status", "reason"),
    [
        (signal.SIGTERM, 143, "cancelled: terminated (SIGTERM) before the audit finished"),
        (signal.SIGINT, 130, "cancelled: interrupted (SIGINT, Ctrl-C) before the audit finished"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_signal_cancels_the_running_audit(shortcut_scenario, tmp_path, signum, exit_status, reason):
    """The signal arrives mid-audit: SIGTERM once the audit has written files into its artefact
    folder (during the subclass maps / gallery), SIGINT as soon as the audit is running. Either
    way: one line on stderr, exit 128 + signal, the audit stored as cancelled with no result row
    and no alert (an `audit_failed` rule is configured), its folder and report not left behind."""
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this process (started in the background), so in its child")
    config = audit_config(
        shortcut_scenario,
        tmp_path,
        alerts={
            "sinks": [{"name": "log", "type": "log"}],
            "rules": [{"event": "audit_failed", "sinks": ["log"]}],
        },
    )
    report = tmp_path / "r.json"
    db = tmp_path / "auditor.db"
    artifacts = tmp_path / "audit-artifacts"
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            [AUDITOR, "audit", "--config", str(write_config(tmp_path, config)),
             "--report", str(report), "--quiet"],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        audit_id = wait_while_running(process, lambda: running_audit(db), "the audit ran")
        if signum == signal.SIGTERM:
            folder = artifacts / f"audit-{audit_id}"
            wait_while_running(process, folder.exists, "the audit wrote its first files")
        process.send_signal(signum)
        returncode = process.wait(timeout=CANCEL_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    stderr = (tmp_path / "stderr").read_text()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == exit_status, stderr
    name = signal.Signals(signum).name
    assert lines == [f"audit {audit_id} cancelled ({name}): stored as cancelled, without results"]
    store = AuditStore(f"sqlite:///{db}")
    try:
        [listed] = store.list_audits()
        audit = store.get_audit(listed.id)
        alerts = store.alerts(audit.id)
    finally:
        store.close()
    assert (audit.id, audit.status, audit.error) == (audit_id, "cancelled", reason)
    assert audit.finished_at is not None and audit.model_version is None
    assert not (
        audit.channel_stats or audit.dropout_results or audit.probe_results or audit.findings
        or audit.clusters or audit.bootstrap or audit.drift_stats or audit.artefacts
    )  # fmt: skip
    assert alerts == []  # a cancellation is no failure: the audit_failed rule stays silent
    assert not (artifacts / f"audit-{audit_id}").exists()
    assert not report.exists() and not list(tmp_path.glob(".r.json*"))



def test_the_next_audit_removes_the_files_of_a_killed_audit(shortcut_scenario, tmp_path):
    """kill -9 leaves the audit running in the store with its artefact folder and its samples'
    scratch folder; the next audit marks it failed and removes both (a failed audit keeps no
    files)."""
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    config = audit_config(shortcut_scenario, tmp_path, executor={"scratch_dir": str(scratch_root)})
    db = tmp_path / "auditor.db"
    artifacts = tmp_path / "audit-artifacts"
    with open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            [AUDITOR, "audit", "--config", str(write_config(tmp_path, config)), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        killed = wait_while_running(process, lambda: running_audit(db), "the audit ran")
        folder = artifacts / f"audit-{killed}"
        wait_while_running(process, folder.exists, "the audit wrote its first files")
        extracted = wait_while_running(
            process, lambda: list(scratch_root.rglob("images.npy")),
            "the audit extracted its samples",
        )  # fmt: skip
        process.kill()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert folder.exists() and extracted[0].exists()  # what the killed audit left behind

    config["model"]["layer"] = "layer9"  # the next audit fails fast, after the recovery
    result = auditor("audit", "--config", str(write_config(tmp_path, config)))
    assert result.returncode == 2, result.stderr
    store = AuditStore(f"sqlite:///{db}")
    try:
        audit = store.get_audit(killed)
    finally:
        store.close()
    assert (audit.status, audit.error) == (
        "failed", "interrupted: the auditor process ended before the audit finished"
    )  # fmt: skip
    assert not folder.exists()
    assert list(scratch_root.iterdir()) == []


def test_a_report_path_that_is_a_folder_is_refused_before_the_first_pass(shortcut_scenario, tmp_path):
    """The report path is a folder: the pre-flight refuses it before any pass, with one line
    naming the report path and the fix, exit status 2, and the audit is stored as failed with
    that error and keeps no files (before: the report failed after the commit and the
    succeeded audit's folder was deleted; the after-commit case is
    tests/test_audit.py::test_a_report_that_cannot_be_moved_into_place_leaves_the_stored_audit_alone)."""
    report = tmp_path / "r.json"
    (report / "taken").mkdir(parents=True)
    config = write_config(tmp_path, audit_config(shortcut_scenario, tmp_path))
    result = auditor("audit", "--config", str(config), "--report", str(report), "--quiet")

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(report) in lines[0] and "-- fix:" in lines[0]
    store = AuditStore(f"sqlite:///{tmp_path / 'auditor.db'}")
    try:
        [listed] = store.list_audits()
        audit = store.get_audit(listed.id)
    finally:
        store.close()
    assert audit.status == "failed" and str(report) in (audit.error or "")
    assert not audit.findings and not audit.artefacts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    """The live processes below `pid` (from /proc: each process's parent)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_to_the_dashboard_command_stops_streamlit(tmp_path):
    """SIGTERM to `auditor dashboard` (what Kubernetes and compose send) stops Streamlit with
    it: no Streamlit process of the command survives and the port closes."""
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    AuditStore(url).close()
    port = _free_port()
    command = subprocess.Popen(
        [AUDITOR, "dashboard", "--db", url, "--port", str(port), "--host", "127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # the process group, to clean up whatever survives
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _serves(port):
            assert command.poll() is None, "the dashboard command exited before serving"
            assert time.monotonic() < deadline, "the dashboard did not serve within 120 s"
            time.sleep(0.5)
        streamlit = {command.pid, *_descendants(command.pid)}
        command.send_signal(signal.SIGTERM)
        command.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in streamlit) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in streamlit if _alive(pid)], "streamlit outlived the command"
        assert not _serves(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command.pid, signal.SIGKILL)
        command.wait(timeout=10)


def dashboard_command(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`auditor dashboard ARGS` run in `tmp_path` with HOME there too (its only secrets files
    are the ones the test writes); returns the result and how long it took."""
    start = time.monotonic()
    result = subprocess.run(
        [AUDITOR, "dashboard", *args], cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    return result, time.monotonic() - start


def test_dashboard_refuses_a_public_address_without_a_login(tmp_path):
    url = f"sqlite:///{tmp_path / 'auditor.db'}"
    AuditStore(url).close()
    port = _free_port()
    result, seconds = dashboard_command(tmp_path, "--db", url, "--port", str(port), "--host", "0.0.0.0")

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the dashboard would serve 0.0.0.0 without a login")
    assert "-- fix:" in line and ".streamlit/secrets.toml" in line and "--host 127.0.0.1" in line
    assert "dashboard on" not in result.stdout and not _serves(port)  # nothing started
    assert seconds < 60


def test_dashboard_on_a_public_address_reads_the_login_from_secrets_toml(tmp_path):
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[dashboard]\npassword = "pw"\n')
    # past the login check, the command stops at the database (so that no server starts)
    result, _ = dashboard_command(tmp_path, "--db", "mysql://x/y", "--host", "0.0.0.0")

    assert result.returncode == 2
    assert "mysql is not supported" in result.stderr and "login" not in result.stderr
