"""The alert ledger in the store: cooldown claims that deduplicate across processes, and the
record of every alert.

A claim key is `sha256(sink name, fingerprint)`. `claim` is one atomic upsert
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE claimed_at is NULL or older than the cooldown
RETURNING key`, SQLite and PostgreSQL): of several auditors raising the same alert at once,
exactly one gets the row back and sends; the others store the alert as suppressed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import or_, update

from auditor.alerts.rules import Alert
from auditor.redaction import redact
from auditor.store import AuditStore
from auditor.store.rows import insert_for
from auditor.store.schema import AlertClaimRow, AlertRow, AlertStatus


def claim_key(sink: str, fingerprint: str) -> str:
    return hashlib.sha256(json.dumps([sink, fingerprint]).encode()).hexdigest()


def claim(store: AuditStore, key: str, cooldown_s: float, now: datetime) -> bool:
    """Take the claim `key` unless it was taken less than `cooldown_s` seconds before `now`."""
    expired = now - timedelta(seconds=cooldown_s)
    with store.transaction() as session:
        statement = (
            insert_for(session, AlertClaimRow)
            .values(key=key, claimed_at=now)
            .on_conflict_do_update(
                index_elements=["key"],
                set_={"claimed_at": now},
                where=or_(AlertClaimRow.claimed_at.is_(None), AlertClaimRow.claimed_at <= expired),
            )
            .returning(AlertClaimRow.key)
        )
        return session.execute(statement).first() is not None


def release(store: AuditStore, key: str) -> None:
    """Give a claim back after a failed delivery, so the next audit tries again."""
    with store.transaction() as session:
        session.execute(
            update(AlertClaimRow).where(AlertClaimRow.key == key).values(claimed_at=None)
        )


def record(
    store: AuditStore, alert: Alert, sink: str, status: AlertStatus, error: str | None = None
) -> AlertRow:
    """Store one alert as sent, failed (with the delivery error, redacted) or suppressed (with
    why)."""
    row = AlertRow(
        audit_id=alert.audit_id,
        finding_id=alert.finding_id,
        event=alert.event,
        sink=sink,
        fingerprint=alert.fingerprint,
        severity=alert.severity,
        title=alert.title,
        payload=alert.payload(),
        status=status,
        error=None if error is None else redact(error),
    )
    with store.transaction() as session:
        session.add(row)
    return row
