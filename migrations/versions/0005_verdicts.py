"""`findings.supports_id` and `findings.explanation`: findings about the same cue and class are
one verdict; a supporting finding points at the finding that heads its verdict, with the test
that explains it (`auditor.checks.consolidation`).

Nullable columns; findings stored before them each head their own verdict.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as findings:
        findings.add_column(sa.Column("supports_id", sa.Integer(), nullable=True))
        findings.add_column(sa.Column("explanation", sa.JSON(), nullable=True))
        findings.create_index("ix_findings_supports_id", ["supports_id"])
        findings.create_foreign_key(
            "fk_findings_supports_id_findings", "findings", ["supports_id"], ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("findings") as findings:
        findings.drop_constraint("fk_findings_supports_id_findings", type_="foreignkey")
        findings.drop_index("ix_findings_supports_id")
        findings.drop_column("explanation")
        findings.drop_column("supports_id")
