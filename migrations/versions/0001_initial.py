"""Initial schema: models, audits and their channel stats, dropout, probes and findings.

Mirrors `auditor.store.schema` (a test compares the two); datetimes are plain
`DateTime(timezone=True)` here, the ORM adds UTC handling on top.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _metrics() -> list[sa.Column]:
    """Columns of `ConditionMetrics` shared by dropout and probe results."""
    return [
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("average_precision", sa.Double(), nullable=True),
        sa.Column("flip_rate", sa.Double(), nullable=False),
        sa.Column("logit_drop", sa.Double(), nullable=False),
    ]


def _audit_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["audit_id"], ["audits.id"], name=f"fk_{table}_audit_id_audits", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registered_models"),
        sa.UniqueConstraint("name", name="uq_registered_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("uri", sa.String(), nullable=False),
        sa.Column("flavor", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["registered_models.id"],
            name="fk_model_versions_model_id_registered_models",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("model_uri", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config_yaml", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("code_version", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("n_samples", sa.Integer(), nullable=True),
        sa.Column("n_labelled", sa.Integer(), nullable=True),
        sa.Column("layer", sa.String(), nullable=True),
        sa.Column("report_path", sa.String(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="ck_audits_status"),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name="fk_audits_model_version_id_model_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audits"),
    )
    op.create_index("ix_audits_model_version_id", "audits", ["model_version_id"])
    op.create_table(
        "channel_stats",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.String(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("relevance", sa.Double(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("in_top_k", sa.Boolean(), nullable=False),
        sa.Column("in_bottom_k", sa.Boolean(), nullable=False),
        _audit_fk("channel_stats"),
        sa.PrimaryKeyConstraint("audit_id", "layer", "channel", name="pk_channel_stats"),
    )
    op.create_table(
        "dropout_results",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("condition", sa.String(length=16), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        *_metrics(),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("n_labelled", sa.Integer(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "condition IN ('baseline', 'top_k', 'random_k', 'bottom_k')",
            name="ck_dropout_results_condition",
        ),
        _audit_fk("dropout_results"),
        sa.PrimaryKeyConstraint("audit_id", "condition", "repeat", name="pk_dropout_results"),
    )
    op.create_table(
        "probe_results",
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.String(), nullable=False),
        sa.Column("variant", sa.String(length=16), nullable=False),
        *_metrics(),
        sa.Column("perturbation_norm", sa.Double(), nullable=False),
        sa.Column("top_k_activation_drop", sa.Double(), nullable=False),
        sa.Column("random_k_activation_drops", sa.JSON(), nullable=False),
        sa.CheckConstraint("variant IN ('probed', 'neutral')", name="ck_probe_results_variant"),
        _audit_fk("probe_results"),
        sa.PrimaryKeyConstraint("audit_id", "probe", "variant", name="pk_probe_results"),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("probe", sa.String(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("severity IN ('low', 'medium', 'high')", name="ck_findings_severity"),
        _audit_fk("findings"),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_audit_id", "findings", ["audit_id"])
    op.create_index("ix_findings_fingerprint", "findings", ["fingerprint"])


def downgrade() -> None:
    for table in (
        "findings",
        "probe_results",
        "dropout_results",
        "channel_stats",
        "audits",
        "model_versions",
        "registered_models",
    ):
        op.drop_table(table)
