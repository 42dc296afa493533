"""Writing an audit's life cycle: start, heartbeats, results on success, failure, stale audits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from auditor import results
from auditor.errors import StoreError
from auditor.redaction import redact
from auditor.store import liveness, rows
from auditor.store.connection import StoreConnection
from auditor.store.schema import AuditRow, AuditStatus, utcnow

INTERRUPTED = "interrupted: the auditor process ended before the audit finished"
SILENT = "interrupted: no heartbeat for {seconds:g} s (the auditor process hung or ended)"


class AuditWrites(StoreConnection):
    """The writes of an audit's life cycle; an audit's rows are written by its own process
    only, under a row lock on the audit (`SELECT ... FOR UPDATE` on PostgreSQL)."""

    def start_audit(
        self, *, model_uri: str, config_yaml: str, config_hash: str, code_version: str
    ) -> int:
        """Record a `running` audit owned by this process (host, pid, heartbeat now) and
        return its id."""
        audit = AuditRow(
            model_uri=model_uri,
            status="running",
            config_yaml=config_yaml,
            config_hash=config_hash,
            code_version=code_version,
            owner_host=liveness.HOST,
            owner_pid=os.getpid(),
            heartbeat_at=utcnow(),
        )
        with self.transaction() as session:
            session.add(audit)
        liveness.register(audit.id)
        return audit.id

    def record_work_dirs(self, audit_id: int, folders: Sequence[Path]) -> None:
        """Note the folders a running audit writes: if it dies, the recovery that marks it
        failed (`mark_stale_running_as_failed`) removes them."""
        with self.transaction() as session:
            audit = self._audit_for_update(session, audit_id)
            audit.work_dirs = [str(Path(f).absolute()) for f in folders]

    def beat(self, audit_id: int) -> bool:
        """Refresh the heartbeat of a running audit; False once it is no longer running."""
        statement = (
            update(AuditRow)
            .where(AuditRow.id == audit_id, AuditRow.status == "running")
            .values(heartbeat_at=utcnow())
        )
        with self.transaction() as session:
            return session.execute(statement).rowcount == 1

    def keep_alive(self, audit_id: int, interval_s: float) -> liveness.Heartbeat:
        """A context manager that refreshes the audit's heartbeat every `interval_s` seconds
        while its block runs (wrap the whole audit in it)."""
        return liveness.Heartbeat(
            lambda: self.beat(audit_id), interval_s, name=f"audit-{audit_id}-heartbeat"
        )

    def finish_audit(
        self,
        audit_id: int,
        result: results.AuditResult,
        *,
        report_path: str | None = None,
        drift: results.DriftReport | None = None,
        clusters: Sequence[results.ClusterSummary] = (),
        artefacts: Sequence[results.ArtefactRef] = (),
    ) -> None:
        """Write every result of a running audit and mark it `succeeded`, in one transaction:
        if anything raises, nothing of it is written and the exception propagates.

        `drift` stores the relevance bootstrap and the drift statistics (its findings must
        already be in `result.findings`); the report (by its absolute path) and `artefacts`
        are registered as the audit's artefacts (for retention), linked to a finding where
        they name one."""
        with self.transaction() as session:
            audit = self._audit_for_update(session, audit_id)
            audit.model_version_id = rows.upsert_model_version(session, result.model)
            audit.channel_stats = rows.channel_rows(result.channels)
            audit.dropout_results = rows.dropout_rows(result.dropout, result.channels)
            audit.probe_results = [row for p in result.probes for row in rows.probe_rows(p)]
            audit.findings = rows.finding_rows(result)
            audit.clusters = rows.cluster_rows(clusters)
            if drift is not None:
                audit.bootstrap = rows.bootstrap_row(drift.bootstrap)
                audit.drift_stats = rows.drift_rows(drift)
            report = (
                [results.ArtefactRef("report", str(Path(report_path).absolute()))]
                if report_path
                else []
            )
            with session.no_autoflush:  # linked to a finding, not yet added along the audit
                audit.artefacts = rows.artefact_rows([*report, *artefacts], audit.findings)
            audit.status = "succeeded"
            audit.finished_at = utcnow()
            audit.timings = result.timings
            audit.n_samples = result.n_samples
            audit.n_labelled = result.n_labelled
            audit.layer = result.channels.layer
            audit.report_path = report_path
        liveness.unregister(audit_id)

    def fail_audit(self, audit_id: int, error: str) -> None:
        """Mark a running audit `failed` with its error message."""
        self._end_audit(audit_id, "failed", error)

    def cancel_audit(self, audit_id: int, reason: str) -> None:
        """Mark a running audit `cancelled` (stopped on purpose: Ctrl-C, SIGTERM, the
        scheduler's shutdown) with the reason in `error`."""
        self._end_audit(audit_id, "cancelled", reason)

    def _end_audit(self, audit_id: int, status: AuditStatus, error: str) -> None:
        try:
            with self.transaction() as session:
                audit = self._audit_for_update(session, audit_id)
                audit.status = status
                audit.error = redact(error)
                audit.finished_at = utcnow()
        finally:
            liveness.unregister(audit_id)

    def _audit_for_update(self, session: Session, audit_id: int) -> AuditRow:
        audit = session.get(AuditRow, audit_id, with_for_update=True)
        if audit is None or audit.status != "running":
            state = "does not exist" if audit is None else f"is already {audit.status}"
            raise StoreError(
                f"audit {audit_id} in database {self._display_url} {state}",
                "finish only audits returned by start_audit, once",
            )
        return audit

    def mark_stale_running_as_failed(self, stale_after_s: float = 600.0) -> int:
        """Mark running audits whose owner is gone as `failed`, remove the folders they
        recorded (`record_work_dirs`: a failed audit keeps no files); return how many.

        Stale (see `auditor.store.liveness`): started on this host by a process that has
        ended, or silent (no heartbeat) for `stale_after_s` seconds. Audits of live auditors,
        here or on other hosts, are left alone, and so are their folders."""
        now = utcnow()
        silent = func.coalesce(AuditRow.heartbeat_at, AuditRow.started_at) < now - timedelta(
            seconds=stale_after_s
        )
        running = select(AuditRow.id, AuditRow.owner_host, AuditRow.owner_pid).where(
            AuditRow.status == "running"
        )
        with self.transaction() as session:
            gone = [
                audit_id
                for audit_id, host, pid in session.execute(running)
                if liveness.owner_gone(audit_id, host, pid)
            ]
            failed: list[list[str] | None] = []  # the recorded folders of each failed audit
            for condition, error in (
                (AuditRow.id.in_(gone), INTERRUPTED),
                (silent, SILENT.format(seconds=stale_after_s)),
            ):
                statement = (
                    update(AuditRow)
                    .where(AuditRow.status == "running", condition)
                    .values(status="failed", error=error, finished_at=now)
                    .returning(AuditRow.work_dirs)
                )
                failed.extend(session.execute(statement).scalars())
        for folder in (f for dirs in failed for f in dirs or []):  # once no longer running
            shutil.rmtree(folder, ignore_errors=True)
        return len(failed)
