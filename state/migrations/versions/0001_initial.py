"""Initial schema: jobs, job_transitions, input_blobs.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "input_blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCTime(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column(
            "input_sha256", sa.String(64), sa.ForeignKey("input_blobs.sha256"), nullable=False
        ),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("content_key", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("remote_task_id", sa.String(128), nullable=True),
        sa.Column("external_task_id", sa.String(128), nullable=True),
        sa.Column("create_sent_at", UTCTime(), nullable=True),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("next_action_at", UTCTime(), nullable=True),
        sa.Column("deadline_at", UTCTime(), nullable=True),
        sa.Column("poll_count", sa.Integer(), nullable=False),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCTime(), nullable=False),
        sa.Column("updated_at", UTCTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_jobs_state_next_action", "jobs", ["state", "next_action_at"])
    op.create_index("ix_jobs_next_action", "jobs", ["next_action_at"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_index("ix_jobs_source_path", "jobs", ["source_path"])
    op.create_index("ix_jobs_content_key", "jobs", ["content_key"])
    op.create_table(
        "job_transitions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column(
            "job_id",
            sa.String(32),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("at", UTCTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_job_transitions_job_id", "job_transitions", ["job_id", "id"])
    op.create_index("ix_job_transitions_at", "job_transitions", ["at"])


def downgrade() -> None:
    op.drop_table("job_transitions")
    op.drop_table("jobs")
    op.drop_table("input_blobs")
