"""Operations: audit ownership and heartbeat, clusters, relevance bootstraps, drift statistics,
artefacts, reviews, alerts and alert claims; the margin drop of dropout and probe results.

Mirrors `auditor.store.schema` (a test compares the two); datetimes are plain
`DateTime(timezone=True)` here, the ORM adds UTC handling on top.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_TABLES = (
    "reviews",
    "alerts",
    "artefacts",
    "relevance_bootstraps",
    "drift_stats",
    "clusters",
    "alert_claims",
)


def _fk(
    table: str, column: str, target: str, ondelete: str | None = "CASCADE"
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete=ondelete
    )


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    for table in ("dropout_results", "probe_results"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("margin_drop", sa.Double(), server_default="0", nullable=False)
            )
    with op.batch_alter_table("audits") as audits:
        audits.add_column(sa.Column("owner_host", sa.String(), nullable=True))
        audits.add_column(sa.Column("owner_pid", sa.Integer(), nullable=True))
        audits.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        audits.create_index("ix_audits_status", ["status"])
    op.create_table(
        "alert_claims",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_alert_claims"),
    )
    op.create_table(
        "clusters",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("share", sa.Double(), nullable=False),
        sa.Column("relevance_profile", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        _fk("clusters", "audit_id", "audits"),
        sa.PrimaryKeyConstraint("audit_id", "cluster", name="pk_clusters"),
    )
    op.create_table(
        "drift_stats",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("baseline_audit_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("lower", sa.Double(), nullable=False),
        sa.Column("upper", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("bound", sa.String(length=3), nullable=False),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.CheckConstraint("bound IN ('min', 'max')", name="ck_drift_stats_bound"),
        _fk("drift_stats", "audit_id", "audits"),
        _fk("drift_stats", "baseline_audit_id", "audits", ondelete=None),
        sa.PrimaryKeyConstraint("audit_id", "name", name="pk_drift_stats"),
    )
    op.create_table(
        "relevance_bootstraps",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("n_replicates", sa.Integer(), nullable=False),
        sa.Column("n_channels", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("means", sa.LargeBinary(), nullable=False),
        _fk("relevance_bootstraps", "audit_id", "audits"),
        sa.PrimaryKeyConstraint("audit_id", name="pk_relevance_bootstraps"),
    )
    op.create_table(
        "artefacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        _created_at(),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
        _fk("artefacts", "audit_id", "audits"),
        _fk("artefacts", "finding_id", "findings"),
        sa.PrimaryKeyConstraint("id", name="pk_artefacts"),
    )
    op.create_index("ix_artefacts_audit_id", "artefacts", ["audit_id"])
    op.create_index("ix_artefacts_finding_id", "artefacts", ["finding_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("sink", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _created_at(),
        sa.CheckConstraint("event IN ('drift', 'finding', 'audit_failed')", name="ck_alerts_event"),
        sa.CheckConstraint("status IN ('sent', 'failed', 'suppressed')", name="ck_alerts_status"),
        sa.CheckConstraint("severity IN ('low', 'medium', 'high')", name="ck_alerts_severity"),
        _fk("alerts", "audit_id", "audits"),
        _fk("alerts", "finding_id", "findings", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_audit_id", "alerts", ["audit_id"])
    op.create_index("ix_alerts_fingerprint", "alerts", ["fingerprint"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(), nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "status IN ('confirmed', 'false_alarm', 'needs_data')", name="ck_reviews_status"
        ),
        _fk("reviews", "finding_id", "findings"),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_finding_id", "reviews", ["finding_id"])


def downgrade() -> None:
    for table in NEW_TABLES:
        op.drop_table(table)
    for table in ("dropout_results", "probe_results"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("margin_drop")
    with op.batch_alter_table("audits") as audits:
        audits.drop_index("ix_audits_status")
        audits.drop_column("heartbeat_at")
        audits.drop_column("owner_pid")
        audits.drop_column("owner_host")
