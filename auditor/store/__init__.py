"""The findings store: SQLAlchemy ORM schema, Alembic migrations and the audit repository."""

from auditor.store.migrate import current, head, upgrade
from auditor.store.repository import AuditStore
from auditor.store.rows import finding_fingerprint
from auditor.store.schema import (
    AlertClaimRow,
    AlertRow,
    ArtefactRow,
    AuditRow,
    ChannelStatRow,
    ClusterRow,
    DriftStatRow,
    DropoutResultRow,
    FindingRow,
    ModelVersionRow,
    ProbeResultRow,
    RegisteredModelRow,
    RelevanceBootstrapRow,
    ReviewRow,
)

__all__ = [
    "AlertClaimRow",
    "AlertRow",
    "ArtefactRow",
    "AuditRow",
    "AuditStore",
    "ChannelStatRow",
    "ClusterRow",
    "DriftStatRow",
    "DropoutResultRow",
    "FindingRow",
    "ModelVersionRow",
    "ProbeResultRow",
    "RegisteredModelRow",
    "RelevanceBootstrapRow",
    "ReviewRow",
    "current",
    "finding_fingerprint",
    "head",
    "upgrade",
]
