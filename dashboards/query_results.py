"""What the dashboard's queries return: frozen (picklable, cacheable) records, filter values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
