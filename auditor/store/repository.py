"""The findings store: writes audits and their results, reads them back for the dashboard.

One `AuditStore` per process; each method runs in its own transaction. Returned ORM rows
are detached but fully usable: `get_audit` loads every relationship, `list_audits` only
the model version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from auditor import results
from auditor.errors import StoreError
from auditor.store import migrate
from auditor.store.schema import (
    AuditRow,
    ChannelStatRow,
    DropoutCondition,
    DropoutResultRow,
    FindingRow,
    ModelVersionRow,
    ProbeResultRow,
    ProbeVariant,
    RegisteredModelRow,
    utcnow,
)

INTERRUPTED = "interrupted: the auditor process ended before the audit finished"


def finding_fingerprint(finding: results.Finding, model_name: str, layer: str) -> str:
    """sha256 of kind, probe, model name, layer and the sorted `evidence["channels"]`:
    the same finding in consecutive audits of a model gets the same fingerprint."""
    channels = finding.evidence.get("channels")
    key = [
        finding.kind,
        finding.probe,
        model_name,
        layer,
        None if channels is None else sorted(int(c) for c in channels),
    ]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


class AuditStore:
    """Audits and their results in SQLite or PostgreSQL (schema: `auditor.store.schema`)."""

    def __init__(self, url: str, *, auto_upgrade: bool = True):
        """Connect and check the schema revision. A SQLite database behind the migrations is
        upgraded when `auto_upgrade`; any other one raises `StoreError`, as does a database
        that cannot be reached."""
        self.url = url
        self.engine = migrate.open_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _enforce_foreign_keys)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
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
            migrate.upgrade(url)
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
    def _transaction(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any exception;
        database errors become `StoreError`, everything else propagates unchanged."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as err:
            raise StoreError(
                f"database {self._display_url} failed: {migrate.describe(err)}",
                f"check the database server ({migrate.CONNECT_FIX}) and run `auditor db upgrade`",
            ) from err

    def start_audit(
        self, *, model_uri: str, config_yaml: str, config_hash: str, code_version: str
    ) -> int:
        """Record a `running` audit and return its id."""
        audit = AuditRow(
            model_uri=model_uri,
            status="running",
            config_yaml=config_yaml,
            config_hash=config_hash,
            code_version=code_version,
        )
        with self._transaction() as session:
            session.add(audit)
        return audit.id

    def finish_audit(
        self, audit_id: int, result: results.AuditResult, *, report_path: str | None = None
    ) -> None:
        """Write every result of a running audit and mark it `succeeded`, in one transaction:
        if anything raises, nothing of it is written and the exception propagates."""
        with self._transaction() as session:
            audit = self._audit_for_update(session, audit_id)
            audit.model_version_id = _upsert_model_version(session, result.model)
            audit.channel_stats = _channel_rows(result.channels)
            audit.dropout_results = _dropout_rows(result.dropout, result.channels)
            audit.probe_results = [row for p in result.probes for row in _probe_rows(p)]
            audit.findings = [
                FindingRow(
                    kind=f.kind,
                    severity=f.severity,
                    title=f.title,
                    probe=f.probe,
                    evidence=f.evidence,
                    fingerprint=finding_fingerprint(f, result.model.name, result.channels.layer),
                )
                for f in result.findings
            ]
            audit.status = "succeeded"
            audit.finished_at = utcnow()
            audit.timings = result.timings
            audit.n_samples = result.n_samples
            audit.n_labelled = result.n_labelled
            audit.layer = result.channels.layer
            audit.report_path = report_path

    def fail_audit(self, audit_id: int, error: str) -> None:
        """Mark a running audit `failed` with its error message."""
        with self._transaction() as session:
            audit = self._audit_for_update(session, audit_id)
            audit.status = "failed"
            audit.error = error
            audit.finished_at = utcnow()

    def _audit_for_update(self, session: Session, audit_id: int) -> AuditRow:
        audit = session.get(AuditRow, audit_id, with_for_update=True)
        if audit is None or audit.status != "running":
            state = "does not exist" if audit is None else f"is already {audit.status}"
            raise StoreError(
                f"audit {audit_id} in database {self._display_url} {state}",
                "finish only audits returned by start_audit, once",
            )
        return audit

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
                selectinload(AuditRow.findings),
            )
        )
        with self._transaction() as session:
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
        with self._transaction() as session:
            return list(session.scalars(query))

    def findings(self, audit_id: int) -> list[FindingRow]:
        """The findings of one audit, in the order they were reported."""
        query = select(FindingRow).where(FindingRow.audit_id == audit_id).order_by(FindingRow.id)
        with self._transaction() as session:
            return list(session.scalars(query))

    def mark_stale_running_as_failed(self) -> int:
        """Mark audits left `running` by a crashed process as `failed`; return how many."""
        statement = (
            update(AuditRow)
            .where(AuditRow.status == "running")
            .values(status="failed", error=INTERRUPTED, finished_at=utcnow())
        )
        with self._transaction() as session:
            return session.execute(statement).rowcount


def _enforce_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    """SQLite checks foreign keys only when asked, per connection (not during migrations:
    batch table rebuilds would fire the cascades)."""
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _upsert_model_version(session: Session, model: results.ModelRef) -> int:
    """Id of the row of `model`, inserted or updated (uri, flavour, run) in place.

    A model without a version (a local file) is keyed by its URI instead."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(RegisteredModelRow)
        .values(name=model.name)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    model_id = session.scalars(
        select(RegisteredModelRow.id).where(RegisteredModelRow.name == model.name)
    ).one()
    values = {"uri": model.uri, "flavor": model.flavor, "run_id": model.run_id}
    statement = (
        insert(ModelVersionRow)
        .values(model_id=model_id, version=model.version or model.uri, **values)
        .on_conflict_do_update(index_elements=["model_id", "version"], set_=values)
        .returning(ModelVersionRow.id)
    )
    return session.scalars(statement).one()


def _channel_rows(table: results.ChannelTable) -> list[ChannelStatRow]:
    order = sorted(range(len(table.relevance)), key=lambda c: -table.relevance[c])
    rank = {channel: position + 1 for position, channel in enumerate(order)}
    top, bottom = set(table.top_k), set(table.bottom_k)
    return [
        ChannelStatRow(
            layer=table.layer,
            channel=channel,
            relevance=value,
            rank=rank[channel],
            in_top_k=channel in top,
            in_bottom_k=channel in bottom,
        )
        for channel, value in enumerate(table.relevance)
    ]


def _dropout_rows(
    dropout: results.DropoutTable, channels: results.ChannelTable
) -> list[DropoutResultRow]:
    """Baseline, top-k, each random-k repeat with its channel set, bottom-k."""
    random_runs = zip(dropout.random_k, dropout.random_sets, strict=True)
    runs: list[tuple[DropoutCondition, int, results.ConditionMetrics, list[int]]] = [
        ("baseline", 0, dropout.baseline, []),
        ("top_k", 0, dropout.top_k, channels.top_k),
        *(("random_k", repeat, m, dropped) for repeat, (m, dropped) in enumerate(random_runs)),
        ("bottom_k", 0, dropout.bottom_k, channels.bottom_k),
    ]
    return [
        DropoutResultRow(
            condition=condition,
            repeat=repeat,
            k=len(dropped),
            channels=list(dropped),
            **results.metrics_dict(metrics),
        )
        for condition, repeat, metrics, dropped in runs
    ]


def _probe_rows(probe: results.ProbeResult) -> list[ProbeResultRow]:
    """The probed and the neutral variant of one probe."""
    variants: list[tuple[ProbeVariant, results.ConditionMetrics]] = [
        ("probed", probe.probed),
        ("neutral", probe.neutral),
    ]
    return [
        ProbeResultRow(
            probe=probe.name,
            variant=variant,
            accuracy=metrics.accuracy,
            average_precision=metrics.average_precision,
            flip_rate=metrics.flip_rate,
            logit_drop=metrics.logit_drop,
            perturbation_norm=probe.perturbation_norm,
            top_k_activation_drop=probe.top_k_activation_drop,
            random_k_activation_drops=list(probe.random_k_activation_drops),
        )
        for variant, metrics in variants
    ]
