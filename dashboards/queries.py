"""The dashboard's SQL over the findings store, as plain functions of an `AuditStore`.

Every function runs a fixed number of statements, whatever the number of audits, and returns
at most a bounded number of rows (limits, pagination), so that pages stay quick with hundreds
of audits. Results are the frozen records of `dashboards.query_results` (picklable:
`dashboards.data` caches them); the review queue is in `dashboards.review_queries`.

A finding's verdict is the newest review over every finding with its fingerprint, in any
audit (as `AuditStore.false_alarms` reads it): an expert's verdict carries over to the same
finding in later audits, and the review page says where it came from.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from auditor.store import (
    AlertRow,
    AuditRow,
    AuditStore,
    DriftStatRow,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
)
from dashboards.query_results import (
    MAIN_DRIFT_STATISTIC,
    AlertItem,
    AuditSummary,
    DriftPoint,
    ModelCard,
)
from dashboards.review_queries import newest_verdicts


def _audits() -> Select:
    return (
        select(
            AuditRow.id,
            RegisteredModelRow.name,
            ModelVersionRow.version,
            AuditRow.model_uri,
            AuditRow.status,
            AuditRow.started_at,
            AuditRow.finished_at,
            AuditRow.layer,
            AuditRow.error,
        )
        .outerjoin(AuditRow.model_version)
        .outerjoin(ModelVersionRow.model)
    )


def _summary(row: Any) -> AuditSummary:
    return AuditSummary(*row[:9])


def recent_audits(
    store: AuditStore, limit: int = 200, model: str | None = None
) -> list[AuditSummary]:
    """The newest audits first (of one model when given), at most `limit`."""
    query = _audits().order_by(AuditRow.started_at.desc(), AuditRow.id.desc()).limit(limit)
    if model is not None:
        query = query.where(RegisteredModelRow.name == model)
    with store.transaction(write=False) as session:
        return [_summary(row) for row in session.execute(query)]


def model_names(store: AuditStore) -> list[str]:
    with store.transaction(write=False) as session:
        return list(
            session.scalars(select(RegisteredModelRow.name).order_by(RegisteredModelRow.name))
        )


def finding_kinds(store: AuditStore) -> list[str]:
    with store.transaction(write=False) as session:
        return list(session.scalars(select(FindingRow.kind).distinct().order_by(FindingRow.kind)))


def model_cards(store: AuditStore, sparkline: int = 30) -> list[ModelCard]:
    """Per registered model: its newest audit, its newest succeeded audit with the findings
    not dismissed as false alarms (by severity) and the alerts it raised (sent or failed),
    and the main drift statistic over its newest `sparkline` audits. Four statements."""
    with store.transaction(write=False) as session:
        latest, audited = _latest_audits(session)
        ids = [a.id for a in audited.values()]
        counts = _open_findings(session, ids)
        alerts = dict(
            session.execute(
                select(AlertRow.audit_id, func.count())
                .where(AlertRow.audit_id.in_(ids), AlertRow.status != "suppressed")
                .group_by(AlertRow.audit_id)
            ).all()
        )
        drift = _drift_points(session, MAIN_DRIFT_STATISTIC, sparkline)
    cards = []
    for name, audit in sorted(latest.items()):
        done = audited.get(name)
        by_severity, to_review = counts.get(done.id, ({}, 0)) if done else ({}, 0)
        cards.append(
            ModelCard(
                name=name,
                latest=audit,
                audited=done,
                open_findings=by_severity,
                to_review=to_review,
                active_alerts=alerts.get(done.id, 0) if done else 0,
                drift=drift.get(name, []),
            )
        )
    return cards


def _latest_audits(session: Session) -> tuple[dict[str, AuditSummary], dict[str, AuditSummary]]:
    """Per model name: its newest audit, and its newest succeeded audit."""
    newest = func.row_number().over(
        partition_by=ModelVersionRow.model_id,
        order_by=(AuditRow.started_at.desc(), AuditRow.id.desc()),
    )
    newest_of_status = func.row_number().over(
        partition_by=(ModelVersionRow.model_id, AuditRow.status),
        order_by=(AuditRow.started_at.desc(), AuditRow.id.desc()),
    )
    ranked = (
        _audits()
        .add_columns(newest.label("newest"), newest_of_status.label("newest_of_status"))
        .where(AuditRow.model_version_id.is_not(None))
        .subquery()
    )
    query = select(ranked).where(
        or_(
            ranked.c.newest == 1,
            and_(ranked.c.status == "succeeded", ranked.c.newest_of_status == 1),
        )
    )
    latest: dict[str, AuditSummary] = {}
    audited: dict[str, AuditSummary] = {}
    for row in session.execute(query):
        audit = _summary(row)
        if row.newest == 1:
            latest[audit.model] = audit
        if audit.status == "succeeded" and row.newest_of_status == 1:
            audited[audit.model] = audit
    return latest, audited


def _open_findings(session: Session, audit_ids: list[int]) -> dict[int, tuple[dict[str, int], int]]:
    """Per audit: its findings not dismissed as false alarms, by severity, and how many of
    them carry no verdict yet."""
    verdict = newest_verdicts()
    query = (
        select(FindingRow.audit_id, FindingRow.severity, verdict.c.status, func.count())
        .outerjoin(verdict, verdict.c.fingerprint == FindingRow.fingerprint)
        .where(FindingRow.audit_id.in_(audit_ids))
        .group_by(FindingRow.audit_id, FindingRow.severity, verdict.c.status)
    )
    out: dict[int, tuple[dict[str, int], int]] = {}
    for audit_id, severity, status, n in session.execute(query):
        by_severity, to_review = out.get(audit_id, ({}, 0))
        if status != "false_alarm":
            by_severity = {**by_severity, severity: by_severity.get(severity, 0) + n}
        out[audit_id] = (by_severity, to_review + (n if status is None else 0))
    return out


def _drift_points(session: Session, statistic: str, limit: int) -> dict[str, list[DriftPoint]]:
    """Per model: one statistic over its newest `limit` audits, oldest first."""
    ranked = (
        select(
            RegisteredModelRow.name.label("model"),
            *_drift_columns(),
            func.row_number()
            .over(
                partition_by=ModelVersionRow.model_id,
                order_by=(AuditRow.started_at.desc(), AuditRow.id.desc()),
            )
            .label("n"),
        )
        .join(AuditRow, AuditRow.id == DriftStatRow.audit_id)
        .join(AuditRow.model_version)
        .join(ModelVersionRow.model)
        .where(DriftStatRow.name == statistic)
        .subquery()
    )
    query = (
        select(ranked).where(ranked.c.n <= limit).order_by(ranked.c.started_at, ranked.c.audit_id)
    )
    out: dict[str, list[DriftPoint]] = {}
    for row in session.execute(query):
        out.setdefault(row.model, []).append(DriftPoint(*row[1:10]))
    return out


def _drift_columns() -> list[Any]:
    return [
        DriftStatRow.audit_id,
        AuditRow.started_at,
        DriftStatRow.name,
        DriftStatRow.value,
        DriftStatRow.lower,
        DriftStatRow.upper,
        DriftStatRow.threshold,
        DriftStatRow.bound,
        DriftStatRow.drifted,
    ]


def drift_timeline(store: AuditStore, model: str, limit: int = 100) -> list[DriftPoint]:
    """Every drift statistic of the model's newest `limit` audits, oldest first."""
    audits = (
        select(AuditRow.id)
        .join(AuditRow.model_version)
        .join(ModelVersionRow.model)
        .where(RegisteredModelRow.name == model)
        .order_by(AuditRow.started_at.desc(), AuditRow.id.desc())
        .limit(limit)
    )
    query = (
        select(*_drift_columns())
        .join(AuditRow, AuditRow.id == DriftStatRow.audit_id)
        .where(DriftStatRow.audit_id.in_(audits.scalar_subquery()))
        .order_by(AuditRow.started_at, DriftStatRow.audit_id, DriftStatRow.name)
    )
    with store.transaction(write=False) as session:
        return [DriftPoint(*row) for row in session.execute(query)]


def model_alerts(store: AuditStore, model: str, limit: int = 200) -> list[AlertItem]:
    """The newest alerts raised for the model's audits, at most `limit`, oldest first."""
    query = (
        select(
            AlertRow.id,
            AlertRow.audit_id,
            AlertRow.event,
            AlertRow.sink,
            AlertRow.severity,
            AlertRow.title,
            AlertRow.status,
            AlertRow.created_at,
        )
        .join(AuditRow, AuditRow.id == AlertRow.audit_id)
        .join(AuditRow.model_version)
        .join(ModelVersionRow.model)
        .where(RegisteredModelRow.name == model)
        .order_by(AlertRow.created_at.desc(), AlertRow.id.desc())
        .limit(limit)
    )
    with store.transaction(write=False) as session:
        return [AlertItem(*row) for row in session.execute(query)][::-1]
