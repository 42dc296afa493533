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

from auditor.store.audit_reads import AuditReads
from auditor.store.audit_writes import AuditWrites
from auditor.store.reviews import FindingReviews


class AuditStore(AuditWrites, AuditReads, FindingReviews):
    """Audits and their results in SQLite or PostgreSQL (schema: `auditor.store.schema`):
    the life cycle writes, the reads and the reviews over one connection."""
