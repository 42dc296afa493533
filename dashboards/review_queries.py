"""The review queue's SQL: each fingerprint's newest verdict, and one filtered page of findings."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.sql.expression import Subquery

from auditor.store import (
    AuditRow,
    AuditStore,
    FindingRow,
    ModelVersionRow,
    RegisteredModelRow,
    ReviewRow,
)
from dashboards.query_results import UNREVIEWED, FindingItem, ReviewFilter, ReviewPage, Verdict


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
