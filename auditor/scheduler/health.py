"""Liveness of the scheduler: a JSON health file and an optional HTTP endpoint.

The health document (the file, and the body of every HTTP answer):

```json
{"status": "running", "pid": 7, "started_at": "...", "heartbeat": "...",
 "running_job": {"id": "nightly", "since": "...", "attempt": 1},
 "jobs": {"nightly": {"next_run": "...", "last_result": {"status": "succeeded", "audit_id": 4,
          "model": "counterfeit", "model_version": "2", "findings": {"high": 1, ...}, ...}}}}
```

`status` is starting | running | stopping | stopped. `GET /healthz` answers 200 while the
daemon runs and its heartbeat is fresh (younger than three heartbeat intervals), else 503.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

DaemonStatus = Literal["starting", "running", "stopping", "stopped"]
JobStatus = Literal["succeeded", "failed", "cancelled", "skipped"]
STALE_AFTER_HEARTBEATS = 3


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobResult:
    """The outcome of one scheduled run of an audit (after its retries)."""

    job_id: str
    status: JobStatus
    attempts: int
    started_at: str
    finished_at: str
    audit_id: int | None = None
    model: str | None = None
    model_version: str | None = None
    findings: dict[str, int] = field(default_factory=dict)
    report_path: str | None = None
    error: str | None = None


class Health:
    """The daemon's state, shared by its threads; every change rewrites the health file
    atomically (write beside it, then rename), so a reader never sees half a document."""

    def __init__(self, path: Path | None, heartbeat_s: float):
        self._path = path
        self._stale_after_s = STALE_AFTER_HEARTBEATS * heartbeat_s
        self._lock = threading.Lock()
        self._beat = datetime.now(UTC)
        self._doc: dict[str, Any] = {
            "status": "starting",
            "pid": os.getpid(),
            "started_at": now_iso(),
            "heartbeat": now_iso(),
            "running_job": None,
            "jobs": {},
        }
        self._write()

    def set_status(self, status: DaemonStatus) -> None:
        with self._lock:
            self._doc["status"] = status
            self._write()

    def beat(self, next_runs: dict[str, str | None]) -> None:
        """A heartbeat, with the next run time of every job."""
        with self._lock:
            self._beat = datetime.now(UTC)
            self._doc["heartbeat"] = self._beat.isoformat(timespec="seconds")
            for job_id, next_run in next_runs.items():
                self._job(job_id)["next_run"] = next_run
            self._write()

    def job_started(self, job_id: str, attempt: int) -> None:
        with self._lock:
            self._doc["running_job"] = {"id": job_id, "since": now_iso(), "attempt": attempt}
            self._write()

    def job_finished(self, result: JobResult) -> None:
        with self._lock:
            running = self._doc["running_job"]
            if running is not None and running["id"] == result.job_id:
                self._doc["running_job"] = None
            self._job(result.job_id)["last_result"] = asdict(result)
            self._write()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._doc))

    def healthy(self) -> bool:
        with self._lock:
            age = (datetime.now(UTC) - self._beat).total_seconds()
            return self._doc["status"] == "running" and age < self._stale_after_s

    def _job(self, job_id: str) -> dict[str, Any]:
        return self._doc["jobs"].setdefault(job_id, {"next_run": None, "last_result": None})

    def _write(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = self._path.with_name(f".{self._path.name}.partial")
        staging.write_text(json.dumps(self._doc, indent=2))
        staging.replace(self._path)


class HealthServer:
    """`GET /healthz` (200 healthy / 503 not) and `GET /status` (always 200), both with the
    health document as JSON, served from a daemon thread."""

    def __init__(self, health: Health, host: str, port: int):
        handler = type("HealthHandler", (_Handler,), {"health": health})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-endpoint", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (the one chosen by the OS when 0 was asked for)."""
        return self._server.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    health: Health

    def do_GET(self) -> None:
        if self.path not in ("/healthz", "/status"):
            self._answer(HTTPStatus.NOT_FOUND, {"error": "GET /healthz or /status"})
            return
        ok = self.path == "/status" or self.health.healthy()
        self._answer(
            HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, self.health.snapshot()
        )

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log: stay silent."""
