"""`audits.work_dirs`: the folders a running audit writes (its artefact folder and its scratch
folder), so that the recovery that marks a dead audit as failed also removes its files.

A nullable JSON column; audits stored before it have none (nothing to remove).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audits", sa.Column("work_dirs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audits") as audits:
        audits.drop_column("work_dirs")
