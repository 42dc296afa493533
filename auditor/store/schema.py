"""ORM models of the findings store (SQLAlchemy 2 typed declarative mapping).

Every class ends in `Row` so it never reads like the typed results of `auditor.results`
(`results.Finding` is a finding in flight, `FindingRow` is one stored). The Alembic
migrations in `migrations/versions/` create exactly these tables; a test compares them.

Child tables of an audit (channel stats, dropout, probe results, clusters, drift statistics)
have a composite primary key that starts with `audit_id`, so it doubles as the index on that
foreign key. Retention deletes artefact files only (`ArtefactRow.pruned_at`), never rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from auditor.evidence import FINDING_KINDS, FindingEvidence
from auditor.results import Severity

AuditStatus = Literal["running", "succeeded", "failed", "cancelled"]
DropoutCondition = Literal["baseline", "top_k", "random_k", "bottom_k"]
ProbeVariant = Literal["probed", "neutral"]
AlertEvent = Literal["drift", "finding", "audit_failed"]
AlertStatus = Literal["sent", "failed", "suppressed"]
ReviewStatus = Literal["confirmed", "false_alarm", "needs_data"]

# Fixed constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value} cannot be stored; give it a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; `Base.metadata` is the target of the Alembic migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[int]: JSON,
        list[float]: JSON,
        bytes: LargeBinary,
    }


class RegisteredModelRow(Base):
    """A model name as registered in MLflow (or the name of a local model file)."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[ModelVersionRow]] = relationship(back_populates="model")


class ModelVersionRow(Base):
    """One version of a registered model, with the URI and flavour it was loaded from."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id"))
    version: Mapped[str]
    uri: Mapped[str]
    flavor: Mapped[str]
    run_id: Mapped[str | None]

    model: Mapped[RegisteredModelRow] = relationship(back_populates="versions")


class AuditRow(Base):
    """One audit run: `running` while it works, then `succeeded` (with results), `failed`
    (with the error) or `cancelled` (stopped by Ctrl-C / SIGTERM; the reason in `error`).
    Failed and cancelled audits have no result rows."""

    __tablename__ = "audits"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed', 'cancelled')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id"), index=True
    )
    model_uri: Mapped[str]
    status: Mapped[AuditStatus] = mapped_column(String(16), index=True)
    config_yaml: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    timings: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    n_samples: Mapped[int | None]
    n_labelled: Mapped[int | None]
    layer: Mapped[str | None]
    report_path: Mapped[str | None]
    owner_host: Mapped[str | None] = mapped_column(doc="host name of the auditor process")
    owner_pid: Mapped[int | None] = mapped_column(doc="process id on owner_host")
    heartbeat_at: Mapped[datetime | None] = mapped_column(doc="refreshed while running")
    work_dirs: Mapped[list[str] | None] = mapped_column(
        JSON, doc="folders the running audit writes (artefacts, scratch): removed if it dies"
    )

    model_version: Mapped[ModelVersionRow | None] = relationship()
    channel_stats: Mapped[list[ChannelStatRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ChannelStatRow.channel"
    )
    dropout_results: Mapped[list[DropoutResultRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    probe_results: Mapped[list[ProbeResultRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    findings: Mapped[list[FindingRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="FindingRow.id"
    )
    clusters: Mapped[list[ClusterRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ClusterRow.cluster"
    )
    bootstrap: Mapped[RelevanceBootstrapRow | None] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    drift_stats: Mapped[list[DriftStatRow]] = relationship(
        cascade="all, delete-orphan",
        passive_deletes=True,
        foreign_keys="DriftStatRow.audit_id",
        order_by="DriftStatRow.name",
    )
    artefacts: Mapped[list[ArtefactRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ArtefactRow.id"
    )


class ChannelStatRow(Base):
    """Mean relevance of one channel at the audited layer; rank 1 is the most relevant."""

    __tablename__ = "channel_stats"

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    layer: Mapped[str] = mapped_column(primary_key=True)
    channel: Mapped[int] = mapped_column(primary_key=True)
    relevance: Mapped[float]
    rank: Mapped[int]
    in_top_k: Mapped[bool]
    in_bottom_k: Mapped[bool]


class DropoutResultRow(Base):
    """Metrics with one channel set dropped; `repeat` numbers the random-k draws (else 0)."""

    __tablename__ = "dropout_results"
    __table_args__ = (
        CheckConstraint(
            "condition IN ('baseline', 'top_k', 'random_k', 'bottom_k')", name="condition"
        ),
    )

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    condition: Mapped[DropoutCondition] = mapped_column(String(16), primary_key=True)
    repeat: Mapped[int] = mapped_column(primary_key=True)
    k: Mapped[int]
    accuracy: Mapped[float | None]
    average_precision: Mapped[float | None]
    flip_rate: Mapped[float]
    logit_drop: Mapped[float]
    margin_drop: Mapped[float] = mapped_column(server_default="0")
    n_samples: Mapped[int]
    n_labelled: Mapped[int]
    channels: Mapped[list[int]]


class ProbeResultRow(Base):
    """One probe on one variant: the probed samples, or a neutral perturbation of equal size."""

    __tablename__ = "probe_results"
    __table_args__ = (CheckConstraint("variant IN ('probed', 'neutral')", name="variant"),)

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    probe: Mapped[str] = mapped_column(primary_key=True)
    variant: Mapped[ProbeVariant] = mapped_column(String(16), primary_key=True)
    accuracy: Mapped[float | None]
    average_precision: Mapped[float | None]
    flip_rate: Mapped[float]
    logit_drop: Mapped[float]
    margin_drop: Mapped[float] = mapped_column(server_default="0")
    perturbation_norm: Mapped[float]
    top_k_activation_drop: Mapped[float]
    random_k_activation_drops: Mapped[list[float]]


class FindingRow(Base):
    """A stored finding. `evidence` is the JSON of its kind's evidence model (`typed_evidence`
    reads it back); `fingerprint` is equal for the same finding in consecutive audits.
    `supports_id`: the finding of the same audit whose verdict this one supports (None: it
    heads its own verdict), with `explanation`, the JSON of the `CueExplanation` that made it
    a support where a test did (`auditor.checks.consolidation`)."""

    __tablename__ = "findings"
    __table_args__ = (CheckConstraint("severity IN ('low', 'medium', 'high')", name="severity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str]
    severity: Mapped[Severity] = mapped_column(String(8))
    title: Mapped[str]
    probe: Mapped[str | None]
    evidence: Mapped[dict[str, Any]]
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    supports_id: Mapped[int | None] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), index=True
    )
    explanation: Mapped[dict[str, Any] | None]

    supports: Mapped[FindingRow | None] = relationship(remote_side="FindingRow.id")
    artefacts: Mapped[list[ArtefactRow]] = relationship(
        back_populates="finding", passive_deletes=True, order_by="ArtefactRow.id"
    )
    reviews: Mapped[list[ReviewRow]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ReviewRow.id"
    )

    @property
    def typed_evidence(self) -> FindingEvidence:
        """The stored evidence JSON validated through its kind's model (`auditor.evidence`)."""
        return FINDING_KINDS.get(self.kind).read(self.evidence)


class ClusterRow(Base):
    """One cluster of an audit's samples: size, share of the samples, and the mean channel
    relevance of its members (matches clusters across audits for the cluster-mix drift)."""

    __tablename__ = "clusters"

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    cluster: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int]
    share: Mapped[float]
    relevance_profile: Mapped[list[float]]
    evidence: Mapped[dict[str, Any]]


class RelevanceBootstrapRow(Base):
    """Bootstrap replicates of the audit's mean channel relevance (`results.RelevanceBootstrap`):
    `means` holds `n_replicates x n_channels` little-endian float32 values, row-major."""

    __tablename__ = "relevance_bootstraps"

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    n_samples: Mapped[int]
    n_replicates: Mapped[int]
    n_channels: Mapped[int]
    seed: Mapped[int] = mapped_column(BigInteger)
    means: Mapped[bytes]


class DriftStatRow(Base):
    """One explanation statistic of an audit against its baseline audit, with its bootstrap
    interval; `drifted` when the whole interval lies past the threshold on the `bound` side."""

    __tablename__ = "drift_stats"
    __table_args__ = (CheckConstraint("bound IN ('min', 'max')", name="bound"),)

    audit_id: Mapped[int] = mapped_column(
        ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(primary_key=True)
    baseline_audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id"))
    value: Mapped[float]
    lower: Mapped[float]
    upper: Mapped[float]
    threshold: Mapped[float]
    bound: Mapped[str] = mapped_column(String(3))
    drifted: Mapped[bool]


class ArtefactRow(Base):
    """A file written for an audit (report, gallery, arrays), optionally illustrating one of
    its findings. Retention deletes the file and sets `pruned_at`; the row stays."""

    __tablename__ = "artefacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    finding_id: Mapped[int | None] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str]
    uri: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pruned_at: Mapped[datetime | None]

    finding: Mapped[FindingRow | None] = relationship(back_populates="artefacts")


class ReviewRow(Base):
    """A domain expert's verdict on a finding; the newest review of a finding counts."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("status IN ('confirmed', 'false_alarm', 'needs_data')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    finding_id: Mapped[int] = mapped_column(
        ForeignKey("findings.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[ReviewStatus] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertRow(Base):
    """Every alert a rule raised, per sink: `sent`, `failed` (with the error) or `suppressed`
    (same fingerprint within the cooldown, or reviewed as a false alarm; reason in `error`)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("event IN ('drift', 'finding', 'audit_failed')", name="event"),
        CheckConstraint("status IN ('sent', 'failed', 'suppressed')", name="status"),
        CheckConstraint("severity IN ('low', 'medium', 'high')", name="severity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_id: Mapped[int] = mapped_column(ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    finding_id: Mapped[int | None] = mapped_column(ForeignKey("findings.id", ondelete="SET NULL"))
    event: Mapped[AlertEvent] = mapped_column(String(16))
    sink: Mapped[str]
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[Severity] = mapped_column(String(8))
    title: Mapped[str]
    payload: Mapped[dict[str, Any]]
    status: Mapped[AlertStatus] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertClaimRow(Base):
    """Deduplication of alerts across processes: the sink + fingerprint `key` is claimed by an
    atomic upsert that succeeds only when `claimed_at` is older than the cooldown (or NULL,
    released after a failed send)."""

    __tablename__ = "alert_claims"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    claimed_at: Mapped[datetime | None]
