"""Alert rules: which events of an audit become alerts, for which sinks.

Events: `drift` (an `explanation_drift` finding), `finding` (any other finding) and
`audit_failed`. A drift or finding rule fires for findings at or above its `min_severity`;
with `new_only`, only for findings whose fingerprint the model's previous succeeded audit did
not have (the same finding in consecutive audits alerts once). A failed audit is `high`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from auditor.config import AlertRule, AlertSettings
from auditor.redaction import redact
from auditor.results import Severity
from auditor.store import AuditStore
from auditor.store.schema import AlertEvent, AuditRow

SEVERITY_ORDER: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class Alert:
    """One alert before delivery: the event, its audit and model, and the fingerprint that
    deduplicates it (the finding's fingerprint; for a failed audit, model and error)."""

    event: AlertEvent
    severity: Severity
    title: str
    audit_id: int
    model: str
    fingerprint: str
    finding_id: int | None
    evidence: dict[str, Any]

    def text(self) -> str:
        """Two lines for people: severity and title, then model and audit."""
        return f"[{self.severity}] {self.title}\n{self.model}, audit {self.audit_id} ({self.event})"

    def payload(self) -> dict[str, Any]:
        """The JSON body of a webhook and the stored payload."""
        return {
            "source": "relevance-auditor",
            "event": self.event,
            "severity": self.severity,
            "title": self.title,
            "audit_id": self.audit_id,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "finding_id": self.finding_id,
            "evidence": self.evidence,
        }


def _model(audit: AuditRow) -> str:
    version = audit.model_version
    if version is None:
        return audit.model_uri
    return f"{version.model.name} version {version.version} ({audit.model_uri})"


def _fires(rule: AlertRule, event: AlertEvent, severity: Severity, new: bool) -> bool:
    if rule.event != event:
        return False
    if event == "audit_failed":
        return True
    return SEVERITY_ORDER[severity] >= SEVERITY_ORDER[rule.min_severity] and (
        new or not rule.new_only
    )


def finding_alerts(
    store: AuditStore, audit_id: int, settings: AlertSettings
) -> list[tuple[Alert, AlertRule]]:
    """Every (alert, rule) pair the findings of a succeeded audit fire."""
    if not settings.rules:
        return []
    audit = store.get_audit(audit_id)
    previous = store.previous_audit_id(audit_id)
    seen = {f.fingerprint for f in store.findings(previous)} if previous is not None else set()
    fired = []
    for finding in audit.findings:
        event: AlertEvent = "drift" if finding.kind == "explanation_drift" else "finding"
        alert = Alert(
            event=event,
            severity=finding.severity,
            title=finding.title,
            audit_id=audit_id,
            model=_model(audit),
            fingerprint=finding.fingerprint,
            finding_id=finding.id,
            evidence={"kind": finding.kind, "probe": finding.probe, **finding.evidence},
        )
        new = finding.fingerprint not in seen
        fired += [(alert, r) for r in settings.rules if _fires(r, event, finding.severity, new)]
    return fired


def failure_alerts(
    store: AuditStore, audit_id: int, error: str, settings: AlertSettings
) -> list[tuple[Alert, AlertRule]]:
    """The (alert, rule) pairs of a failed audit; its fingerprint is model URI + error."""
    rules = [r for r in settings.rules if _fires(r, "audit_failed", "high", True)]
    if not rules:
        return []
    audit = store.get_audit(audit_id)
    error = redact(error)  # it is stored, shown and sent
    key = json.dumps(["audit_failed", audit.model_uri, error])
    alert = Alert(
        event="audit_failed",
        severity="high",
        title=f"audit {audit_id} failed: {' '.join(error.split())}",
        audit_id=audit_id,
        model=_model(audit),
        fingerprint=hashlib.sha256(key.encode()).hexdigest(),
        finding_id=None,
        evidence={"error": error, "config_hash": audit.config_hash},
    )
    return [(alert, rule) for rule in rules]
