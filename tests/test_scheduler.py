"""`auditor schedule`: the schedule file, the persistent job store, retries, the health file and
endpoint, `--once` against a real tracking server whose alias moves, and the daemon's
SIGTERM handling as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from mlflow import MlflowClient

from auditor.errors import ConfigError
from auditor.scheduler.config import RetrySettings, ScheduleConfig, load_schedule
from auditor.scheduler.daemon import JOBSTORE_TABLE, make_scheduler, sync_jobs
from auditor.scheduler.health import Health, HealthServer
from auditor.scheduler.runner import Shutdown, run_job
from auditor.store import AuditStore

from .conftest import Scenario, audit_config
from .registry import register

AUDITOR = str(Path(sys.executable).with_name("auditor"))
DAEMON_TIMEOUT_S = 240


def write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def write_schedule(folder: Path, jobs: list[dict[str, Any]], **settings: Any) -> Path:
    settings.setdefault("jobstore_url", f"sqlite:///{folder / 'scheduler.db'}")
    return write_yaml(folder / "schedule.yaml", {"jobs": jobs, **settings})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def stored_audits(db: Path) -> list:
    """Every audit in the findings database, oldest first (none while it does not exist)."""
    if not db.exists():
        return []
    store = AuditStore(f"sqlite:///{db}")
    try:
        return [store.get_audit(a.id) for a in reversed(store.list_audits())]
    finally:
        store.close()


# --- the schedule file -----------------------------------------------------------------------


def test_schedule_paths_are_relative_to_the_schedule_file(tmp_path):
    folder = tmp_path / "ops"
    folder.mkdir()
    path = write_yaml(
        folder / "schedule.yaml",
        {
            "jobs": [
                {
                    "id": "nightly",
                    "config": "audits/a.yaml",
                    "cron": "0 2 * * *",
                    "report_dir": "reports",
                },
                {"id": "hourly", "config": "/abs/b.yaml", "interval": {"hours": 1}},
            ],
            "health": {"file": "health.json", "port": 0},
        },
    )
    schedule = load_schedule(path)
    assert schedule.job("nightly").config == folder / "audits/a.yaml"
    assert schedule.job("nightly").report_dir == folder / "reports"
    assert schedule.job("hourly").config == Path("/abs/b.yaml")
    assert schedule.health.file == folder / "health.json"
    assert str(schedule.job("hourly").trigger("UTC")) == "interval[1:00:00]"


@pytest.mark.parametrize(
    ("job", "settings", "needle"),
    [
        ({"cron": "0 25 * * *"}, {}, "jobs.0.cron"),
        ({"cron": "0 2 * * *", "interval": {"hours": 1}}, {}, "exactly one of cron and interval"),
        ({}, {}, "exactly one of cron and interval"),
        ({"interval": {"hours": 0}}, {}, "longer than 0"),
        ({"cron": "0 2 * * *"}, {"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"cron": "0 2 * * *", "colour": "red"}, {}, "jobs.0.colour"),
    ],
)
def test_bad_schedule_is_one_line_naming_the_field(tmp_path, job, settings, needle):
    path = write_schedule(tmp_path, [{"id": "a", "config": "a.yaml", **job}], **settings)
    with pytest.raises(ConfigError) as caught:
        load_schedule(path)
    message = str(caught.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_retry_delays_double_up_to_the_cap():
    retry = RetrySettings(attempts=5, initial_delay_s=30, max_delay_s=100)
    assert retry.delays() == [30, 60, 100, 100]
    assert RetrySettings(attempts=1).delays() == []


# --- the persistent job store ------------------------------------------------------------------


def test_job_store_keeps_next_runs_across_restarts(tmp_path):
    """An unchanged job keeps its stored next run time (so a run that fell due while the daemon
    was down still starts, once, within the misfire grace time); a changed one starts afresh,
    a removed one goes."""

    def restart(jobs: list[dict[str, Any]]) -> dict[str, Any]:
        schedule = load_schedule(write_schedule(tmp_path, jobs, misfire_grace_time_s=600))
        scheduler = make_scheduler(schedule)
        scheduler.start(paused=True)
        sync_jobs(scheduler, schedule)
        jobs_now = {job.id: job for job in scheduler.get_jobs()}
        scheduler.shutdown()
        return jobs_now

    every_5_min = {"id": "often", "config": "a.yaml", "interval": {"minutes": 5}}
    first = restart([every_5_min, {"id": "gone", "config": "b.yaml", "cron": "0 2 * * *"}])
    often = first["often"]
    assert (often.coalesce, often.max_instances, often.misfire_grace_time) == (True, 1, 600)
    time.sleep(1.1)

    second = restart([every_5_min, {"id": "new", "config": "c.yaml", "cron": "30 * * * *"}])
    assert set(second) == {"often", "new"}
    assert second["often"].next_run_time == often.next_run_time

    third = restart([{**every_5_min, "interval": {"minutes": 6}}])
    assert set(third) == {"often"}
    assert third["often"].next_run_time > often.next_run_time + timedelta(minutes=1)
    with sqlite3.connect(tmp_path / "scheduler.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert tables == {JOBSTORE_TABLE}


# --- retries, health ------------------------------------------------------------------------


def test_unreachable_mlflow_is_retried_with_backoff(tmp_path):
    config = {
        "model": {"uri": "models:/watched@production"},
        "samples": [{"name": "production", "uri": "runs:/0123/samples/production.npz"}],
        "tracking_uri": "http://127.0.0.1:1",
        "store_url": f"sqlite:///{tmp_path / 'auditor.db'}",
    }
    write_yaml(tmp_path / "audit.yaml", config)
    schedule = ScheduleConfig.model_validate(
        {
            "jobs": [{"id": "watch", "config": str(tmp_path / "audit.yaml"), "cron": "0 2 * * *"}],
            "retry": {"attempts": 3, "initial_delay_s": 0.2, "max_delay_s": 0.3},
        }
    )
    health = Health(tmp_path / "health.json", heartbeat_s=10)
    start = time.monotonic()
    result = run_job(schedule.jobs[0], schedule.retry, Shutdown(grace_s=0), health)

    assert time.monotonic() - start >= 0.2 + 0.3
    assert (result.status, result.attempts, result.audit_id) == ("failed", 3, None)
    assert "http://127.0.0.1:1" in result.error and "unreachable" in result.error
    assert not (tmp_path / "auditor.db").exists()  # caught before an audit was recorded
    document = json.loads((tmp_path / "health.json").read_text())
    assert document["running_job"] is None
    assert document["jobs"]["watch"]["last_result"]["attempts"] == 3


def test_health_endpoint_answers_probes(tmp_path):
    health = Health(tmp_path / "health.json", heartbeat_s=10)
    server = HealthServer(health, "127.0.0.1", 0)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 503  # still starting
        health.set_status("running")
        health.beat({"nightly": "2030-01-01T02:00:00+00:00"})
        answer = requests.get(f"{url}/healthz", timeout=5)
        assert answer.status_code == 200
        assert answer.json()["jobs"]["nightly"]["next_run"] == "2030-01-01T02:00:00+00:00"
        assert answer.json() == json.loads((tmp_path / "health.json").read_text())
        health.set_status("stopping")
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 503
        assert requests.get(f"{url}/status", timeout=5).status_code == 200
        assert requests.get(f"{url}/other", timeout=5).status_code == 404
    finally:
        server.stop()


# --- the command ------------------------------------------------------------------------------


def schedule_command(schedule: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AUDITOR, "schedule", "--config", str(schedule), *args],
        check=False, capture_output=True, text=True, timeout=DAEMON_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_bad_audit_config_stops_the_command_at_start(tmp_path):
    config = {"model": {"uri": "models:/watched@production", "colour": "red"}, "samples": []}
    write_yaml(tmp_path / "audit.yaml", config)
    schedule = write_schedule(tmp_path, [{"id": "a", "config": "audit.yaml", "cron": "0 2 * * *"}])
    result = schedule_command(schedule)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "model.colour" in lines[0] and "audit.yaml" in lines[0]


@pytest.mark.slow
def test_once_audits_the_version_the_alias_points_at(
    mlflow_server, shortcut_scenario: Scenario, tmp_path
):
    assert register(mlflow_server, shortcut_scenario.model, "watched", alias="production") == "1"
    assert register(mlflow_server, shortcut_scenario.model, "watched") == "2"
    for name, uri in [
        ("watch", "models:/watched@production"),
        ("broken", "models:/watched@no-such-alias"),
    ]:
        config = audit_config(
            shortcut_scenario,
            tmp_path,
            samples=[("validation", shortcut_scenario.validation)],
            model={"uri": uri},
        )
        config["tracking_uri"] = mlflow_server
        write_yaml(tmp_path / f"{name}.yaml", config)
    watch = {"id": "watch", "config": "watch.yaml", "cron": "0 2 * * *", "report_dir": "reports"}
    broken = {"id": "broken", "config": "broken.yaml", "cron": "0 2 * * *"}
    settings = {"retry": {"attempts": 3, "initial_delay_s": 0}, "health": {"file": "health.json"}}

    first = schedule_command(write_schedule(tmp_path, [watch, broken], **settings), "--once")
    assert first.returncode == 3, first.stderr  # one job failed
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["status"] == "stopped"
    assert health["jobs"]["watch"]["last_result"]["status"] == "succeeded"
    failed = health["jobs"]["broken"]["last_result"]
    assert failed["status"] == "failed" and failed["attempts"] == 1  # bad input: not retried
    assert "models:/watched@no-such-alias" in failed["error"]
    assert "watch" in first.stdout and "failed" in first.stdout

    MlflowClient(mlflow_server).set_registered_model_alias("watched", "production", "2")
    second = schedule_command(write_schedule(tmp_path, [watch], **settings), "--once")
    assert second.returncode == 0, second.stderr

    audits = stored_audits(tmp_path / "auditor.db")
    succeeded = [a for a in audits if a.status == "succeeded"]
    assert [a.model_version.version for a in succeeded] == ["1", "2"]
    assert {a.model_version.model.name for a in succeeded} == {"watched"}
    assert [a.status for a in audits if a.model_uri.endswith("no-such-alias")] == ["failed"]
    last = json.loads((tmp_path / "health.json").read_text())["jobs"]["watch"]["last_result"]
    assert (last["model_version"], last["audit_id"]) == ("2", succeeded[1].id)
    reports = sorted((tmp_path / "reports").glob("watch-*.json"))
    assert [json.loads(r.read_text())["model"]["version"] for r in reports] == ["1", "2"]


@pytest.mark.slow
@pytest.mark.parametrize(("grace_s", "expected"), [(600, "succeeded"), (0, "cancelled")])
def test_sigterm_lets_the_running_audit_finish_or_stops_it(
    shortcut_scenario, tmp_path, grace_s, expected
):
    config = audit_config(
        shortcut_scenario, tmp_path, samples=[("validation", shortcut_scenario.validation)]
    )
    write_yaml(tmp_path / "audit.yaml", config)
    port = free_port()
    schedule = write_schedule(
        tmp_path,
        [{"id": "watch", "config": "audit.yaml", "interval": {"seconds": 1}}],
        shutdown_grace_s=grace_s,
        health={"file": "health.json", "port": port, "heartbeat_s": 1},
    )
    db = tmp_path / "auditor.db"
    with open(tmp_path / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(
            [AUDITOR, "schedule", "--config", str(schedule)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(
            lambda: any(a.status == "running" for a in stored_audits(db)),
            DAEMON_TIMEOUT_S,
            "a running audit",
        )
        probe = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert probe.status_code == 200 and probe.json()["running_job"]["id"] == "watch"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=DAEMON_TIMEOUT_S) == 0, (tmp_path / "daemon.log").read_text()
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()

    [audit] = stored_audits(db)  # no further run started after the signal
    assert audit.status == expected
    health = json.loads((tmp_path / "health.json").read_text())
    assert health["status"] == "stopped" and health["running_job"] is None
    last = health["jobs"]["watch"]["last_result"]
    assert last["status"] == expected
    if expected == "cancelled":
        assert audit.error.startswith("audit stopped: the scheduler shut down")
        assert not audit.findings and last["error"].startswith("audit stopped")
    else:
        assert audit.findings
    assert last["audit_id"] == audit.id
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
