"""One stored audit's life cycle: the audit row is created as running and kept alive by its
heartbeat, its results (with drift against the baseline) land in one transaction, its report
is moved into place, and alerts, retention and MLflow logging follow. Any failure before the
commit (bad input, a bug) marks it failed with its error and removes its files; Ctrl-C or
SIGTERM marks it cancelled (`auditor.audit.cancellation`). Once committed, an audit stays
succeeded with its files: a report that cannot be moved into place is a `ReportError`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from auditor import __version__
from auditor.artefacts.report import discard_report, publish_report, stage_report
from auditor.audit.cancellation import cancellation, sigterm_cancels
from auditor.audit.drift import explanation_drift
from auditor.audit.pipeline import run_checks
from auditor.audit.post_audit import after_audit, on_audit_failed
from auditor.audit.preflight import check_outputs
from auditor.config import AuditConfig
from auditor.errors import AuditorError
from auditor.results import AuditOutcome
from auditor.store import AuditStore
from auditor.tracking.run_log import log_audit


def config_hash(config: AuditConfig) -> str:
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()


def make_scratch_dir(audit_id: int, scratch_dir: str | None) -> Path:
    """The audit's own scratch folder, `auditor-audit-<id>-*`, below `scratch_dir` (created if
    missing: the pre-flight found it can be) or the system's temporary folder."""
    if scratch_dir is not None:
        Path(scratch_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"auditor-audit-{audit_id}-", dir=scratch_dir))


def run_audit(config: AuditConfig, *, report_path: Path | None = None) -> AuditOutcome:
    """Run and store one audit; on any failure before the commit the stored audit is marked
    failed (and the `audit_failed` alert rules run) and the error propagates (an `AuditorError`
    carries the one-line message for the user). Ctrl-C or SIGTERM (in the main thread) cancels
    it: it is marked cancelled, without an alert, and `AuditCancelled` is raised instead.

    While it runs, the audit's heartbeat is kept fresh, so that another auditor can tell a
    crashed audit from a running one. Drift against the baseline audit is computed before the
    one transaction that stores the audit, so its findings are part of it; alerts are sent
    after the commit, so no alert announces an audit that was rolled back.
    """
    store = AuditStore(config.store_url)
    try:
        store.mark_stale_running_as_failed(config.heartbeat.stale_after_s)
        audit_id = store.start_audit(
            model_uri=config.model.uri,
            config_yaml=config.to_yaml(),
            config_hash=config_hash(config),
            code_version=__version__,
        )
        artifact_dir = config.audit_artifact_dir(audit_id)
        scratch: Path | None = None  # the samples' scratch folder, below executor.scratch_dir
        committed = False
        try:
            check_outputs(config, artifact_dir, report_path)  # before any folder is made
            scratch = make_scratch_dir(audit_id, config.executor.scratch_dir)
            store.record_work_dirs(audit_id, [artifact_dir, scratch])  # removed if this dies
            with sigterm_cancels(), store.keep_alive(audit_id, config.heartbeat.interval_s):
                start = time.perf_counter()
                run = run_checks(config, artifact_dir, scratch_dir=scratch)
                result = run.result
                clusters = result.subclasses.clusters if result.subclasses else []
                drift = explanation_drift(
                    store, result, run.channel_relevance.numpy(), config, clusters
                )
                if drift is not None:
                    result.findings.extend(drift.findings)
                result.timings["total"] = round(time.perf_counter() - start, 4)
                if report_path is not None:
                    stage_report(report_path, audit_id, result)
                store.finish_audit(
                    audit_id,
                    result,
                    report_path=str(report_path) if report_path else None,
                    drift=drift,
                    clusters=clusters,
                    artefacts=[
                        *(result.subclasses.artefacts if result.subclasses else []),
                        *(result.gallery.artefacts if result.gallery else []),
                    ],
                )
                committed = True
        except BaseException as err:
            if committed:  # stored: its results and files stay, whatever failed after
                raise
            if report_path is not None:
                discard_report(report_path)
            shutil.rmtree(artifact_dir, ignore_errors=True)  # no files of a failed/cancelled audit
            if (cancelled := cancellation(err, audit_id)) is not None:  # Ctrl-C, SIGTERM
                store.cancel_audit(audit_id, cancelled.reason)  # deliberate: no audit_failed alert
                raise cancelled from err
            reason = str(err) if isinstance(err, AuditorError) else f"{type(err).__name__}: {err}"
            store.fail_audit(audit_id, reason or type(err).__name__)
            on_audit_failed(store, audit_id, reason, config)
            raise
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        outcome = AuditOutcome(audit_id=audit_id, result=result, report_path=report_path, drift=drift)
        try:
            if report_path is not None:
                publish_report(report_path, audit_id)  # ReportError: the stored audit stays
        finally:  # stored: its alerts, retention and MLflow run are due with or without a report
            after_audit(store, audit_id, config)
            log_audit(outcome, config)  # no-op unless mlflow_logging.enabled; never raises
        return outcome
    finally:
        store.close()
