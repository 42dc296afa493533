"""The findings store: writes audits and their results, reads them back for the dashboard.

One `AuditStore` per process (threads may share it); each method runs in its own transaction.
Returned ORM rows are detached but usable: `get_audit` loads every relationship,
`list_audits` only the model version.

Several auditor processes may write at once. An audit's rows are written by its own process
only, under a row lock on the audit (`SELECT ... FOR UPDATE` on PostgreSQL); rows shared
between audits (models, versions, alert claims) are upserts. On SQLite every write
transaction starts with `BEGIN IMMEDIATE`, so writers queue on the busy timeout instead of
failing when a read would turn into a write; reads start with a plain `BEGIN` (WAL: they never
wait).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from auditor import results
from auditor.errors import ConfigError, StoreError
from auditor.store import liveness, migrate, rows
from auditor.store.schema import (
    AlertRow,
    ArtefactRow,
    AuditRow,
    AuditStatus,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
    ReviewRow,
    ReviewStatus,
    utcnow,
)

INTERRUPTED = "interrupted: the auditor process ended before the audit finished"
SILENT = "interrupted: no heartbeat for {seconds:g} s (the auditor process hung or ended)"
WRITE = "auditor_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class AuditStore:
    """Audits and their results in SQLite or PostgreSQL (schema: `auditor.store.schema`)."""

    def __init__(self, url: str, *, auto_upgrade: bool = True):
        """Connect and check the schema revision. A SQLite database behind the migrations is
        upgraded when `auto_upgrade`; any other one raises `StoreError`, as does a database
        that cannot be reached."""
        self.url = url
        self.engine = migrate.open_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._writes = sessionmaker(
            self.engine, expire_on_commit=False, execution_options={WRITE: True}
        )
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        try:
            with self.engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
        except SQLAlchemyError as err:
            self.engine.dispose()
            raise StoreError(
                f"cannot connect to database {self._display_url}: {migrate.describe(err)}",
                migrate.CONNECT_FIX,
            ) from err
        head = migrate.head()
        if revision == head:
            return
        if auto_upgrade and self.engine.dialect.name == "sqlite":
            migrate.upgrade_locked(url)
            return
        self.engine.dispose()
        raise StoreError(
            f"database {self._display_url} is at schema revision {revision or '(empty)'}, "
            f"this auditor needs {head}",
            "run `auditor db upgrade`",
        )

    @property
    def _display_url(self) -> str:
        return migrate.display_url(self.url)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception;
        database errors become `StoreError`, everything else propagates unchanged. Pass
        `write=False` for transactions that only read."""
        sessions = self._writes if write else self._reads
        try:
            with sessions.begin() as session:
                yield session
        except SQLAlchemyError as err:
            raise StoreError(
                f"database {self._display_url} failed: {migrate.describe(err)}",
                f"check the database server ({migrate.CONNECT_FIX}) and run `auditor db upgrade`",
            ) from err

    # -- the life cycle of an audit ------------------------------------------------------

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
                audit.error = error
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
        """Mark running audits whose owner is gone as `failed`; return how many.

        Stale (see `auditor.store.liveness`): started on this host by a process that has
        ended, or silent (no heartbeat) for `stale_after_s` seconds. Audits of live auditors,
        here or on other hosts, are left alone."""
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
            failed = 0
            for condition, error in (
                (AuditRow.id.in_(gone), INTERRUPTED),
                (silent, SILENT.format(seconds=stale_after_s)),
            ):
                statement = (
                    update(AuditRow)
                    .where(AuditRow.status == "running", condition)
                    .values(status="failed", error=error, finished_at=now)
                )
                failed += session.execute(statement).rowcount
            return failed

    # -- reading audits ------------------------------------------------------------------

    def get_audit(self, audit_id: int) -> AuditRow:
        """One audit with its model version and every result row loaded."""
        query = (
            select(AuditRow)
            .where(AuditRow.id == audit_id)
            .options(
                selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model),
                selectinload(AuditRow.channel_stats),
                selectinload(AuditRow.dropout_results),
                selectinload(AuditRow.probe_results),
                selectinload(AuditRow.findings).selectinload(FindingRow.artefacts),
                selectinload(AuditRow.findings).selectinload(FindingRow.reviews),
                selectinload(AuditRow.clusters),
                selectinload(AuditRow.bootstrap),
                selectinload(AuditRow.drift_stats),
                selectinload(AuditRow.artefacts),
            )
        )
        with self.transaction(write=False) as session:
            audit = session.scalars(query).one_or_none()
        if audit is None:
            raise StoreError(
                f"audit {audit_id} does not exist in database {self._display_url}",
                "pass the id of an existing audit",
            )
        return audit

    def list_audits(self, limit: int = 50) -> list[AuditRow]:
        """The newest audits first, with their model version (result rows not loaded)."""
        query = (
            select(AuditRow)
            .order_by(AuditRow.started_at.desc(), AuditRow.id.desc())
            .limit(limit)
            .options(selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model))
        )
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def findings(self, audit_id: int) -> list[FindingRow]:
        """The findings of one audit, in the order they were reported."""
        query = select(FindingRow).where(FindingRow.audit_id == audit_id).order_by(FindingRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def alerts(self, audit_id: int) -> list[AlertRow]:
        """Every alert raised for one audit (sent, failed or suppressed), oldest first."""
        query = select(AlertRow).where(AlertRow.audit_id == audit_id).order_by(AlertRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def drift_baseline(
        self, model_name: str, layer: str, *, pinned: int | None = None
    ) -> AuditRow | None:
        """The audit a new audit of `model_name` at `layer` is compared with, with its channel
        stats, probe results, clusters and bootstrap loaded: audit `pinned` when given, else
        the newest succeeded audit of that registered model at that layer (None: none yet).
        A pinned audit that is not a succeeded audit of that model and layer is a
        `ConfigError`."""
        query = select(AuditRow).options(
            selectinload(AuditRow.model_version).selectinload(ModelVersionRow.model),
            selectinload(AuditRow.channel_stats),
            selectinload(AuditRow.probe_results),
            selectinload(AuditRow.clusters),
            selectinload(AuditRow.bootstrap),
        )
        if pinned is None:
            query = (
                query.join(AuditRow.model_version)
                .join(ModelVersionRow.model)
                .where(
                    RegisteredModelRow.name == model_name,
                    AuditRow.layer == layer,
                    AuditRow.status == "succeeded",
                )
                .order_by(AuditRow.finished_at.desc(), AuditRow.id.desc())
                .limit(1)
            )
        else:
            query = query.where(AuditRow.id == pinned)
        with self.transaction(write=False) as session:
            audit = session.scalars(query).one_or_none()
        if pinned is not None and not _is_audit_of(audit, model_name, layer):
            state = "does not exist" if audit is None else _describe_audit(audit)
            raise ConfigError(
                f"drift.baseline_audit_id = {pinned}: that audit {state}, not a succeeded audit "
                f"of model {model_name!r} at layer {layer!r}",
                "pin a succeeded audit of this model and layer, or remove drift.baseline_audit_id",
            )
        return audit

    def previous_audit_id(self, audit_id: int) -> int | None:
        """The newest succeeded audit of the same registered model that finished before this
        (finished) audit; None for the first one."""
        with self.transaction(write=False) as session:
            audit = session.get(AuditRow, audit_id)
            if audit is None or audit.model_version is None or audit.finished_at is None:
                return None
            query = (
                select(AuditRow.id)
                .join(AuditRow.model_version)
                .where(
                    ModelVersionRow.model_id == audit.model_version.model_id,
                    AuditRow.status == "succeeded",
                    AuditRow.id != audit_id,
                    AuditRow.finished_at <= audit.finished_at,
                )
                .order_by(AuditRow.finished_at.desc(), AuditRow.id.desc())
                .limit(1)
            )
            return session.scalars(query).one_or_none()

    def artefacts(self, audit_id: int) -> list[ArtefactRow]:
        """The artefacts of one audit (pruned ones keep their row, with `pruned_at`)."""
        query = select(ArtefactRow).where(ArtefactRow.audit_id == audit_id).order_by(ArtefactRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    # -- reviews -------------------------------------------------------------------------

    def add_review(
        self, finding_id: int, status: ReviewStatus, reviewer: str, comment: str | None = None
    ) -> ReviewRow:
        """Record a domain expert's verdict on a finding (the newest one counts)."""
        allowed = get_args(ReviewStatus)
        if status not in allowed:
            raise StoreError(f"review status {status!r} is unknown", f"use one of {allowed}")
        if not reviewer.strip():
            raise StoreError("a review needs a reviewer", "pass the reviewer's name")
        review = ReviewRow(finding_id=finding_id, status=status, reviewer=reviewer, comment=comment)
        with self.transaction() as session:
            if session.get(FindingRow, finding_id) is None:
                raise StoreError(
                    f"finding {finding_id} does not exist in database {self._display_url}",
                    "review a finding of a stored audit",
                )
            session.add(review)
        return review

    def reviews(self, finding_id: int) -> list[ReviewRow]:
        """The reviews of one finding, oldest first."""
        query = select(ReviewRow).where(ReviewRow.finding_id == finding_id).order_by(ReviewRow.id)
        with self.transaction(write=False) as session:
            return list(session.scalars(query))

    def false_alarms(self, fingerprints: Iterable[str]) -> set[str]:
        """The fingerprints whose newest review, over every finding with that fingerprint in
        any audit, says `false_alarm` (the expert's verdict carries over to later audits)."""
        wanted = set(fingerprints)
        if not wanted:
            return set()
        query = (
            select(FindingRow.fingerprint, ReviewRow.status)
            .join(ReviewRow, ReviewRow.finding_id == FindingRow.id)
            .where(FindingRow.fingerprint.in_(wanted))
            .order_by(ReviewRow.created_at, ReviewRow.id)
        )
        with self.transaction(write=False) as session:
            newest = dict(session.execute(query).tuples().all())
        return {fingerprint for fingerprint, status in newest.items() if status == "false_alarm"}


def _is_audit_of(audit: AuditRow | None, model_name: str, layer: str) -> bool:
    return (
        audit is not None
        and audit.status == "succeeded"
        and audit.layer == layer
        and audit.model_version is not None
        and audit.model_version.model.name == model_name
    )


def _describe_audit(audit: AuditRow) -> str:
    model = audit.model_version.model.name if audit.model_version else audit.model_uri
    return f"is a {audit.status} audit of model {model!r} at layer {audit.layer!r}"


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """Let SQLAlchemy emit BEGIN itself (`_sqlite_begin`) instead of the sqlite3 driver, and
    check foreign keys, which SQLite does only when asked, per connection (not during
    migrations: batch table rebuilds would fire the cascades)."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _sqlite_begin(connection: Connection) -> None:
    """`BEGIN IMMEDIATE` for write transactions: the write lock is taken (or waited for, up
    to the busy timeout) at the start, so a transaction that read first never fails on a
    writer that came in between."""
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
