"""Daemon bookkeeping: per-step retry counter, source-moved marker, and the daemons table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("source_done_at", UTCTime(), nullable=True))
    op.create_table(
        "daemons",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCTime(), nullable=False),
        sa.Column("heartbeat_at", UTCTime(), nullable=False),
        sa.Column("stopped_at", UTCTime(), nullable=True),
        sa.Column("crashed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("paused_since", UTCTime(), nullable=True),
        sa.Column("in_flight", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("max_in_flight", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
    )
    op.create_index("ix_daemons_stopped_at", "daemons", ["stopped_at"])


def downgrade() -> None:
    op.drop_table("daemons")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("source_done_at")
        batch.drop_column("retries")
