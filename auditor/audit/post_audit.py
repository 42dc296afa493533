"""What runs after an audit has been stored: alerts, then retention.

Drift is not here: it is computed before the audit is stored (`auditor.audit.drift`), so its
findings land in the audit's own transaction and in its report. Alerts run after the commit
(an alert never announces an audit that was rolled back, and no network call holds a
database transaction open). Nothing here raises for a delivery or database failure: the audit
is stored already, so such failures are logged (and failed deliveries stored as alerts).
"""

from __future__ import annotations

import logging

from auditor.alerts.dispatch import dispatch
from auditor.alerts.rules import failure_alerts, finding_alerts
from auditor.config import AuditConfig
from auditor.errors import AuditorError
from auditor.store import AlertRow, AuditStore
from auditor.store.retention import prune_artefacts

log = logging.getLogger(__name__)


def after_audit(store: AuditStore, audit_id: int, config: AuditConfig) -> list[AlertRow]:
    """After `finish_audit` committed: the alert rules on the audit's findings (drift
    included), then the retention policy. Returns the stored alerts."""
    alerts: list[AlertRow] = []
    try:
        alerts = dispatch(store, finding_alerts(store, audit_id, config.alerts), config.alerts)
    except AuditorError as err:
        log.warning("alerts for audit %s failed: %s", audit_id, err)
    pinned = [] if config.drift.baseline_audit_id is None else [config.drift.baseline_audit_id]
    try:
        prune_artefacts(store, config.retention, pinned=pinned)
    except (AuditorError, OSError) as err:
        log.warning("retention after audit %s failed: %s", audit_id, err)
    return alerts


def on_audit_failed(
    store: AuditStore, audit_id: int, error: str, config: AuditConfig
) -> list[AlertRow]:
    """After `fail_audit` committed: the `audit_failed` alert rules. Returns the stored
    alerts."""
    try:
        return dispatch(store, failure_alerts(store, audit_id, error, config.alerts), config.alerts)
    except AuditorError as err:
        log.warning("alerts for failed audit %s failed: %s", audit_id, err)
        return []
