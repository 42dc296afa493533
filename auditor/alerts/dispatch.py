"""Deliver fired alerts: once per sink and fingerprint, deduplicated by a cooldown claim,
suppressed for findings reviewed as false alarms, and every outcome stored."""

from __future__ import annotations

import logging
from datetime import datetime

from auditor.alerts import ledger
from auditor.alerts.rules import Alert
from auditor.alerts.sinks import AlertDeliveryError, SinkSettings, deliver
from auditor.config import AlertRule, AlertSettings
from auditor.store import AuditStore
from auditor.store.schema import AlertRow, utcnow

log = logging.getLogger("auditor.alerts")


def dispatch(
    store: AuditStore,
    fired: list[tuple[Alert, AlertRule]],
    settings: AlertSettings,
    *,
    now: datetime | None = None,
) -> list[AlertRow]:
    """Deliver each fired alert to the sinks of its rule and store the outcomes, in order.

    An alert goes to a sink at most once per call (the first rule naming the sink sets the
    cooldown: the rule's `cooldown_s`, else `alerts.cooldown_s`). A delivery failure is
    logged and stored as `failed`, and gives the cooldown claim back; it never raises."""
    now = now or utcnow()
    sinks = {sink.name: sink for sink in settings.sinks}
    false_alarms = store.false_alarms(alert.fingerprint for alert, _ in fired)
    stored: list[AlertRow] = []
    done: set[tuple[str, str]] = set()
    for alert, rule in fired:
        cooldown_s = settings.cooldown_s if rule.cooldown_s is None else rule.cooldown_s
        for name in rule.sinks:
            if (name, alert.fingerprint) in done:
                continue
            done.add((name, alert.fingerprint))
            if alert.fingerprint in false_alarms:
                reason = "the finding was reviewed as a false alarm"
                stored.append(ledger.record(store, alert, name, "suppressed", reason))
            else:
                stored.append(deliver_once(store, alert, sinks[name], cooldown_s, now))
    return stored


def deliver_once(
    store: AuditStore, alert: Alert, sink: SinkSettings, cooldown_s: float, now: datetime
) -> AlertRow:
    """Claim (sink, fingerprint) for the cooldown, deliver, and record the outcome."""
    key = ledger.claim_key(sink.name, alert.fingerprint)
    if not ledger.claim(store, key, cooldown_s, now):
        reason = f"already sent to {sink.name!r} within the cooldown of {cooldown_s:g} s"
        return ledger.record(store, alert, sink.name, "suppressed", reason)
    try:
        deliver(sink, alert)
    except AlertDeliveryError as err:
        ledger.release(store, key)
        log.warning("alert for audit %s not delivered: %s", alert.audit_id, err)
        return ledger.record(store, alert, sink.name, "failed", str(err))
    return ledger.record(store, alert, sink.name, "sent")
