"""Several daemons on one table: job leases, the shared-folder intake key, and who wrote
each history row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

IN_PLACE = "source_done_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("owner", sa.String(32), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCTime(), nullable=True))
        batch.add_column(sa.Column("intake_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("drop_folder", sa.Text(), nullable=True))
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index(
        "ux_jobs_intake_key_in_place",
        "jobs",
        ["intake_key"],
        unique=True,
        sqlite_where=sa.text(IN_PLACE),
        postgresql_where=sa.text(IN_PLACE),
    )
    with op.batch_alter_table("job_transitions") as batch:
        batch.add_column(sa.Column("daemon_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_transitions") as batch:
        batch.drop_column("daemon_id")
    op.drop_index("ux_jobs_intake_key_in_place", "jobs")
    op.drop_index("ix_jobs_owner", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("drop_folder")
        batch.drop_column("intake_key")
        batch.drop_column("lease_until")
        batch.drop_column("owner")
