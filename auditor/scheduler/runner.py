"""One scheduled run of an audit: pre-flight checks, the audit in a child process, retries.

Each audit runs in a fresh process (spawned, not forked: the daemon has threads), so that
it can be stopped when the scheduler must shut down: on SIGTERM the child raises
`AuditStopped` inside the audit, which `run_audit` records as the audit's cancellation (the
job's result is `cancelled` too). The model URI is resolved in the child, at run time: a job
watching `models:/name@alias` audits whichever version the alias points at when the run starts.

Runs that fail because MLflow or the database is unreachable (`MlflowUnreachableError`,
`StoreError`) are retried with exponential backoff (`retry` in the schedule); the
pre-flight checks catch most such outages before an audit is recorded at all.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import get_args
from urllib.parse import urlparse

from auditor.audit.cancellation import AuditCancelled, CancelRequest
from auditor.audit.preflight import check_outputs
from auditor.config import AuditConfig, load_config
from auditor.errors import AuditorError, MlflowUnreachableError, StoreError
from auditor.logs import LOG_FORMAT, configure_logging
from auditor.redaction import redact
from auditor.results import Severity
from auditor.scheduler.config import JobSpec, RetrySettings
from auditor.scheduler.health import Health, JobResult, JobStatus, now_iso
from auditor.store import AuditStore
from auditor.tracking.resolve import REMOTE_SCHEMES, check_tracking_store

logger = logging.getLogger(__name__)

RETRYABLE = (MlflowUnreachableError, StoreError)
POLL_S = 0.5
KILL_AFTER_S = 60.0  # a stopped audit process gets this long to record its cancellation


class AuditStopped(CancelRequest):
    """Raised inside the audit process when the scheduler must stop it. Not an `Exception`, so
    that no `except Exception` on the way (model loading, a library) can swallow it; the
    pipeline records the audit as cancelled, with this message as the reason."""

    def __init__(self) -> None:
        super().__init__(
            "audit stopped: the scheduler shut down before it finished; the job runs again at "
            "its next scheduled time (raise shutdown_grace_s to let audits finish)",
            signal.SIGTERM,
        )


class Shutdown:
    """SIGTERM / SIGINT handling of the daemon and of `--once`: the first signal stops new
    audits from starting and gives the running one `grace_s` seconds to finish; after that
    (or at a second signal) it is stopped, and recorded as cancelled."""

    def __init__(self, grace_s: float):
        self.requested = threading.Event()
        self.forced = threading.Event()
        self._grace_s = grace_s

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (call from the main thread)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def request(self) -> None:
        if self.requested.is_set():
            self.forced.set()
            return
        self.requested.set()
        timer = threading.Timer(self._grace_s, self.forced.set)
        timer.daemon = True
        timer.start()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: shutting down", signal.Signals(signum).name)
        self.request()


@dataclass(frozen=True)
class Attempt:
    """What one attempt reports: the stored audit, or why it failed (or was cancelled)."""

    error: str | None = None
    retryable: bool = False
    cancelled: bool = False  # stopped by the scheduler's shutdown (error says so)
    audit_id: int | None = None
    model: str | None = None
    model_version: str | None = None
    findings: dict[str, int] = field(default_factory=dict)

    @classmethod
    def failed(cls, err: AuditorError) -> Attempt:
        return cls(error=str(err), retryable=isinstance(err, RETRYABLE))


def run_job(spec: JobSpec, retry: RetrySettings, shutdown: Shutdown, health: Health) -> JobResult:
    """Run the audit of `spec`, retried while MLflow or the database is unreachable; the
    result is recorded in `health` and returned."""
    started_at = now_iso()
    delays = retry.delays()
    report_path = None
    for number in range(1, retry.attempts + 1):
        health.job_started(spec.id, number)
        report_path = _report_path(spec)
        attempt = _attempt(spec, report_path, shutdown)
        if attempt.error is None or not attempt.retryable or number == retry.attempts:
            break
        delay = delays[number - 1]
        logger.warning(
            "job %s: attempt %d of %d failed: %s -- retrying in %g s",
            spec.id, number, retry.attempts, attempt.error, delay,
        )  # fmt: skip
        if shutdown.requested.wait(delay):
            break
    result = JobResult(
        job_id=spec.id,
        status=_status(attempt),
        attempts=number,
        started_at=started_at,
        finished_at=now_iso(),
        audit_id=attempt.audit_id,
        model=attempt.model,
        model_version=attempt.model_version,
        findings=attempt.findings,
        report_path=str(report_path) if report_path and attempt.error is None else None,
        error=None if attempt.error is None else redact(attempt.error),
    )
    log = logger.error if attempt.error else logger.info
    log("job %s %s: %s", spec.id, result.status, attempt.error or f"audit {attempt.audit_id}")
    health.job_finished(result)
    return result


def _status(attempt: Attempt) -> JobStatus:
    if attempt.cancelled:
        return "cancelled"
    return "failed" if attempt.error else "succeeded"


def skipped(spec: JobSpec) -> JobResult:
    """The result of a job not started because the scheduler was shutting down."""
    at = now_iso()
    return JobResult(
        job_id=spec.id, status="skipped", attempts=0, started_at=at, finished_at=at,
        error="not started: the scheduler was shutting down",
    )  # fmt: skip


def preflight(config: AuditConfig, report_path: Path | None) -> None:
    """Raise `MlflowUnreachableError` / `StoreError` before an audit process starts when the
    tracking server (if the audit needs it) or the findings database does not answer, and the
    `AuditorError` of an output folder that cannot be written (`check_outputs`)."""
    check_outputs(config, Path(config.artifacts_dir), report_path)
    uris = [config.model.uri, *(s.uri for s in config.samples)]
    if any(urlparse(uri).scheme in REMOTE_SCHEMES for uri in uris):
        check_tracking_store(config.tracking_uri)
    AuditStore(config.store_url).close()


def _report_path(spec: JobSpec) -> Path | None:
    if spec.report_dir is None:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return spec.report_dir / f"{spec.id}-{stamp}.json"


def _attempt(spec: JobSpec, report_path: Path | None, shutdown: Shutdown) -> Attempt:
    try:
        config = load_config(spec.config)  # read at every run: edits apply without a restart
        preflight(config, report_path)
    except AuditorError as err:
        return Attempt.failed(err)
    return _in_child(config, report_path, shutdown)


def _in_child(config: AuditConfig, report_path: Path | None, shutdown: Shutdown) -> Attempt:
    """Run the audit in a spawned process; stop it (SIGTERM, then SIGKILL) once
    `shutdown.forced` is set."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_audit_process, args=(config, report_path, send), name="auditor-audit"
    )
    process.start()
    send.close()
    kill_at: float | None = None
    while not receive.poll(POLL_S):
        if shutdown.forced.is_set() and kill_at is None:
            logger.warning("stopping the running audit (pid %d)", process.pid)
            process.terminate()
            kill_at = time.monotonic() + KILL_AFTER_S
        if kill_at is not None and time.monotonic() > kill_at:
            process.kill()
    try:
        attempt: Attempt = receive.recv()
    except EOFError:
        attempt = Attempt(
            error=f"the audit process ended (exit code {process.exitcode}) before reporting; "
            "the audit is recorded as failed by the next run"
        )
    process.join()
    return attempt


def _audit_process(config: AuditConfig, report_path: Path | None, send: Connection) -> None:
    """Body of the audit process: Ctrl-C is the daemon's to handle; SIGTERM stops the audit,
    which `run_audit` then records as cancelled."""
    from auditor.audit.lifecycle import run_audit
    from auditor.execution import progress  # only the audit process needs the pipeline

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    configure_logging(logging.INFO, LOG_FORMAT)  # the audit's alerts, whatever mlflow does to root
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # the libraries' records
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    progress.enabled = False
    try:
        outcome = run_audit(config, report_path=report_path)
    except AuditCancelled as err:  # stopped in the audit: stored as cancelled
        send.send(Attempt(error=err.reason, cancelled=True, audit_id=err.audit_id))
        return
    except AuditorError as err:
        send.send(Attempt.failed(err))
        return
    except AuditStopped as err:  # stopped before the audit was stored
        send.send(Attempt(error=str(err), cancelled=True))
        return
    except BaseException as err:
        send.send(Attempt(error=f"internal error: {type(err).__name__}: {err}"))
        raise  # the traceback goes to the daemon's log
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the audit is over: report it
    result = outcome.result
    severities = [f.severity for f in result.findings]
    send.send(
        Attempt(
            audit_id=outcome.audit_id,
            model=result.model.name,
            model_version=result.model.version,
            findings={s: severities.count(s) for s in get_args(Severity)},
        )
    )


def _raise_stopped(_signum: int, _frame: FrameType | None) -> None:
    raise AuditStopped()
