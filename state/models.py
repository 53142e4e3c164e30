"""SQLAlchemy 2.x models. Column names are public: people write SQL against them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from state.clock import parse_utc_text, utc_text


class UTCTime(TypeDecorator[datetime]):
    """Aware UTC datetimes. On SQLite stored as text `2026-12-04T14:26:41.123Z` (sortable,
    readable in the sqlite3 shell); elsewhere as TIMESTAMP WITH TIME ZONE."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(24))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if dialect.name == "sqlite":
            return utc_text(value)
        # Millisecond precision everywhere, so both engines store the same instant.
        return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_utc_text(value)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_path: Mapped[str] = mapped_column(Text)
    input_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("input_blobs.sha256"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # effective parameters
    # sha256 of input bytes + canonical params: "same image, same parameters" dedupe key.
    content_key: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32), default="local")
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    remote_task_id: Mapped[str | None] = mapped_column(String(128))
    external_task_id: Mapped[str | None] = mapped_column(String(128))
    # Set (in its own commit) right before a create call is sent: a job still `queued`
    # with this set may exist at the provider, so recovery asks before submitting again.
    create_sent_at: Mapped[datetime | None] = mapped_column(UTCTime())
    video_url: Mapped[str | None] = mapped_column(Text)
    output_path: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    next_action_at: Mapped[datetime | None] = mapped_column(UTCTime())
    deadline_at: Mapped[datetime | None] = mapped_column(UTCTime())
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    recoveries: Mapped[int] = mapped_column(Integer, default=0)  # crashes survived in a row
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # this step
    source_done_at: Mapped[datetime | None] = mapped_column(UTCTime())  # source moved aside
    created_at: Mapped[datetime] = mapped_column(UTCTime())
    updated_at: Mapped[datetime] = mapped_column(UTCTime())
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Several daemons on one PostgreSQL table: the daemon that holds the job and until
    # when; a lease that ran out lets another daemon take the job over.
    owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCTime())
    # "<path in the drop folder>|<size>|<mtime ns>": two daemons watching one shared
    # folder that see the same file create one job; the unique index decides, not timing.
    intake_key: Mapped[str | None] = mapped_column(Text)
    # The drop folder the source is in (as its daemon names it): only a daemon watching
    # that folder may move the source aside. NULL: not from a drop folder (CLI submit).
    drop_folder: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_jobs_state_next_action", "state", "next_action_at"),
        Index("ix_jobs_next_action", "next_action_at"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_source_path", "source_path"),
        Index("ix_jobs_content_key", "content_key"),
        Index("ix_jobs_owner", "owner"),
        Index(
            "ux_jobs_intake_key_in_place",
            "intake_key",
            unique=True,
            sqlite_where=text("source_done_at IS NULL"),
            postgresql_where=text("source_done_at IS NULL"),
        ),
    )


class JobTransition(Base):
    """Append-only history: one row per transition, never updated or deleted."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCTime())
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    daemon_id: Mapped[str | None] = mapped_column(String(32))  # who wrote it (None: CLI)

    __table_args__ = (
        Index("ix_job_transitions_job_id", "job_id", "id"),
        Index("ix_job_transitions_at", "at"),
    )


class InputBlob(Base):
    """Input image bytes, content-addressed, so a job survives its source file moving."""

    __tablename__ = "input_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(32))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCTime())


class Daemon(Base):
    """One row per daemon process that ever ran on this database (status, heartbeats)."""

    __tablename__ = "daemons"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCTime())
    stopped_at: Mapped[datetime | None] = mapped_column(UTCTime())
    crashed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_since: Mapped[datetime | None] = mapped_column(UTCTime())
    in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_in_flight: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_daemons_stopped_at", "stopped_at"),)
