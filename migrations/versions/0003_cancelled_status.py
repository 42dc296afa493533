"""The audit status `cancelled`: an audit stopped by Ctrl-C / SIGTERM (or by the scheduler's
shutdown) is no longer recorded as `failed`.

Only the check constraint on `audits.status` changes. SQLite cannot alter a constraint, so
there the audits table is rebuilt (batch mode: copy, drop, rename; its rows, indexes and
foreign keys are kept; migrations run without SQLite's foreign key enforcement, so the
rebuild fires no cascade); PostgreSQL drops and adds the constraint in place. Downgrading
records cancelled audits as failed (their reason stays in `error`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_audits_status"
STATUSES = ("running", "succeeded", "failed", "cancelled")


def _replace_status_check(statuses: Sequence[str]) -> None:
    allowed = ", ".join(f"'{status}'" for status in statuses)
    with op.batch_alter_table("audits") as audits:
        audits.drop_constraint(CONSTRAINT, type_="check")
        audits.create_check_constraint(CONSTRAINT, sa.text(f"status IN ({allowed})"))


def upgrade() -> None:
    _replace_status_check(STATUSES)


def downgrade() -> None:
    op.execute("UPDATE audits SET status = 'failed' WHERE status = 'cancelled'")
    _replace_status_check(STATUSES[:-1])
