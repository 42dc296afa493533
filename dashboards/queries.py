"""The dashboard's SQL over the findings store, as plain functions of an `AuditStore`.

Every function runs a fixed number of statements, whatever the number of audits, and returns
at most a bounded number of rows (limits, pagination), so that pages stay quick with hundreds
of audits. Results are frozen dataclasses (picklable: `dashboards.data` caches them).

A finding's verdict is the newest review over every finding with its fingerprint, in any
audit (as `AuditStore.false_alarms` reads it): an expert's verdict carries over to the same
finding in later audits, and the review page says where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Subquery

from auditor.store import (
    AlertRow,
    AuditRow,
    AuditStore,
    DriftStatRow,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
    ReviewRow,
)

MAIN_DRIFT_STATISTIC = "spearman"
UNREVIEWED = "unreviewed"
SEVERITIES = ("high", "medium", "low")
VERDICTS = ("confirmed", "false_alarm", "needs_data")


@dataclass(frozen=True)
class AuditSummary:
    """One audit as listed: which model version, when, and how it ended."""

    id: int
    model: str | None
    version: str | None
    model_uri: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    layer: str | None
    error: str | None

    @property
    def alias(self) -> str | None:
        """The registry alias the audit asked for (`models:/name@alias`), if any."""
        if self.model_uri.startswith("models:/") and "@" in self.model_uri:
            return self.model_uri.rsplit("@", 1)[1]
        return None

    @property
    def label(self) -> str:
        model = self.model or self.model_uri
        version = f" v{self.version}" if self.version and self.version != self.model_uri else ""
        return f"#{self.id} {model}{version} · {self.started_at:%Y-%m-%d %H:%M} · {self.status}"


@dataclass(frozen=True)
class DriftPoint:
    """One drift statistic of one audit against its baseline, with its no-drift range."""

    audit_id: int
    started_at: datetime
    name: str
    value: float
    lower: float
    upper: float
    threshold: float
    bound: str
    drifted: bool


@dataclass(frozen=True)
class ModelCard:
    """What the overview shows of one registered model."""

    name: str
    latest: AuditSummary
    audited: AuditSummary | None
    open_findings: dict[str, int]
    to_review: int
    active_alerts: int
    drift: list[DriftPoint] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """The newest review of a fingerprint, and the finding (and audit) it was given on."""

    status: str
    reviewer: str
    comment: str | None
    created_at: datetime
    finding_id: int
    audit_id: int


@dataclass(frozen=True)
class FindingItem:
    """A finding in the review queue, with the verdict its fingerprint carries."""

    id: int
    audit_id: int
    model: str | None
    version: str | None
    kind: str
    severity: str
    title: str
    probe: str | None
    fingerprint: str
    evidence: dict[str, Any]
    audited_at: datetime
    verdict: Verdict | None

    @property
    def status(self) -> str:
        return self.verdict.status if self.verdict else UNREVIEWED

    @property
    def carried_over(self) -> bool:
        """The verdict was given on the same finding in another audit."""
        return self.verdict is not None and self.verdict.finding_id != self.id


@dataclass(frozen=True)
class ReviewFilter:
    """Review queue filters; an empty tuple means no restriction."""

    statuses: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    audit_id: int | None = None


@dataclass(frozen=True)
class ReviewPage:
    items: list[FindingItem]
    total: int


@dataclass(frozen=True)
class AlertItem:
    id: int
    audit_id: int
    event: str
    sink: str
    severity: str
    title: str
    status: str
    created_at: datetime


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


def newest_verdicts() -> Subquery:
    """Per fingerprint, its newest review: status, reviewer, comment, time, finding, audit."""
    ranked = (
        select(
            FindingRow.fingerprint,
            ReviewRow.status,
            ReviewRow.reviewer,
            ReviewRow.comment,
            ReviewRow.created_at,
            ReviewRow.finding_id,
            FindingRow.audit_id,
            func.row_number()
            .over(
                partition_by=FindingRow.fingerprint,
                order_by=(ReviewRow.created_at.desc(), ReviewRow.id.desc()),
            )
            .label("n"),
        )
        .join(ReviewRow, ReviewRow.finding_id == FindingRow.id)
        .subquery()
    )
    return select(ranked).where(ranked.c.n == 1).subquery("verdict")


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


def review_queue(
    store: AuditStore, flt: ReviewFilter, *, limit: int = 20, offset: int = 0
) -> ReviewPage:
    """One page of findings matching `flt`, newest audit first, and how many match in all.
    Two statements."""
    verdict = newest_verdicts()
    conditions = []
    if flt.statuses:
        wanted = [s for s in flt.statuses if s != UNREVIEWED]
        status = verdict.c.status.in_(wanted)
        conditions.append(
            or_(status, verdict.c.status.is_(None)) if UNREVIEWED in flt.statuses else status
        )
    if flt.severities:
        conditions.append(FindingRow.severity.in_(flt.severities))
    if flt.models:
        conditions.append(RegisteredModelRow.name.in_(flt.models))
    if flt.kinds:
        conditions.append(FindingRow.kind.in_(flt.kinds))
    if flt.audit_id is not None:
        conditions.append(FindingRow.audit_id == flt.audit_id)
    base = (
        select(FindingRow.id)
        .join(AuditRow, AuditRow.id == FindingRow.audit_id)
        .outerjoin(AuditRow.model_version)
        .outerjoin(ModelVersionRow.model)
        .outerjoin(verdict, verdict.c.fingerprint == FindingRow.fingerprint)
        .where(*conditions)
    )
    query = (
        base.with_only_columns(
            FindingRow.id,
            FindingRow.audit_id,
            RegisteredModelRow.name,
            ModelVersionRow.version,
            FindingRow.kind,
            FindingRow.severity,
            FindingRow.title,
            FindingRow.probe,
            FindingRow.fingerprint,
            FindingRow.evidence,
            AuditRow.started_at,
            verdict.c.status,
            verdict.c.reviewer,
            verdict.c.comment,
            verdict.c.created_at,
            verdict.c.finding_id,
            verdict.c.audit_id,
        )
        .order_by(AuditRow.started_at.desc(), FindingRow.audit_id.desc(), FindingRow.id)
        .limit(limit)
        .offset(offset)
    )
    with store.transaction(write=False) as session:
        total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
        items = [
            FindingItem(*row[:11], verdict=Verdict(*row[11:]) if row[11] is not None else None)
            for row in session.execute(query)
        ]
    return ReviewPage(items, total)
