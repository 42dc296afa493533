"""The findings store: SQLAlchemy ORM schema, Alembic migrations and the audit repository."""

from auditor.store.migrate import current, head, upgrade
from auditor.store.repository import AuditStore, finding_fingerprint
from auditor.store.schema import (
    AuditRow,
    ChannelStatRow,
    DropoutResultRow,
    FindingRow,
    ModelVersionRow,
    ProbeResultRow,
    RegisteredModelRow,
)

__all__ = [
    "AuditRow",
    "AuditStore",
    "ChannelStatRow",
    "DropoutResultRow",
    "FindingRow",
    "ModelVersionRow",
    "ProbeResultRow",
    "RegisteredModelRow",
    "current",
    "finding_fingerprint",
    "head",
    "upgrade",
]
