"""What the store hands out and takes in (frozen records, detached from any session), the
tables, and the statements the store runs most, built once: building a statement per call
costs more than executing it (the burst-ingest profile)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from state.lifecycle import LIVE_STATES, JobState
from state.models import Daemon, InputBlob, Job, JobTransition

jobs_t = Job.__table__
transitions_t = JobTransition.__table__
blobs_t = InputBlob.__table__
daemons_t = Daemon.__table__


@dataclass(frozen=True)
class JobRecord:
    id: str
    source_path: str
    input_sha256: str
    params: dict[str, Any]
    content_key: str
    provider: str
    state: str
    attempt: int
    remote_task_id: str | None
    external_task_id: str | None
    create_sent_at: datetime | None
    video_url: str | None
    output_path: str | None
    error_code: str | None
    error_message: str | None
    next_action_at: datetime | None
    deadline_at: datetime | None
    poll_count: int
    recoveries: int
    retries: int
    source_done_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    owner: str | None = None
    lease_until: datetime | None = None
    drop_folder: str | None = None

    @property
    def is_final(self) -> bool:
        return JobState(self.state).is_final


@dataclass(frozen=True)
class TransitionRecord:
    id: int
    job_id: str
    attempt: int
    from_state: str | None
    to_state: str
    event: str
    at: datetime
    detail: dict[str, Any] | None
    daemon_id: str | None = None  # the daemon that wrote it (None: the CLI)


JOB_FIELDS = [f.name for f in fields(JobRecord)]
# Columns a caller may set alongside a transition or in update(); the rest are the store's.
SETTABLE = frozenset(JOB_FIELDS) - {
    "id",
    "state",
    "attempt",
    "version",
    "created_at",
    "updated_at",
    "input_sha256",
    "content_key",
    "owner",
    "lease_until",
    "drop_folder",
}
JOB_COLUMNS = [jobs_t.c[name] for name in JOB_FIELDS]
# Statements built once: building them per call costs more than executing them.
SELECT_JOB = select(*JOB_COLUMNS).where(jobs_t.c.id == bindparam("b_id"))
SELECT_JOB_FOR_UPDATE = SELECT_JOB.with_for_update()
CAS_JOB = update(jobs_t).where(
    jobs_t.c.id == bindparam("b_id"), jobs_t.c.version == bindparam("b_version")
)
# A daemon on a shared table writes only jobs it holds: a takeover fences the old holder.
CAS_HELD_JOB = CAS_JOB.where(jobs_t.c.owner == bindparam("b_owner"))
INSERT_TRANSITION = insert(transitions_t)
INSERT_JOB = insert(jobs_t)
BLOB_EXISTS = select(blobs_t.c.sha256).where(blobs_t.c.sha256 == bindparam("b_sha"))
INSERT_BLOB = {
    "postgresql": pg_insert(blobs_t).on_conflict_do_nothing(index_elements=["sha256"]),
    "sqlite": sqlite_insert(blobs_t).on_conflict_do_nothing(index_elements=["sha256"]),
}
FIND_BY_CONTENT = (
    select(*JOB_COLUMNS)
    .where(
        jobs_t.c.content_key == bindparam("b_key"),
        jobs_t.c.state.in_(bindparam("b_states", expanding=True)),
    )
    .order_by(jobs_t.c.created_at)
)
REMOTE_STATES = [JobState.SUBMITTED.value, JobState.PROCESSING.value]
# Unfinished, or ended with its source file still to move aside: work for some daemon.
NEEDS_A_DAEMON = or_(
    jobs_t.c.state.in_([s.value for s in LIVE_STATES]), jobs_t.c.source_done_at.is_(None)
)


def new_job_id() -> str:
    return secrets.token_hex(16)  # 32 hex chars, random (a UUID object costs more to build)


@dataclass(frozen=True)
class NewJob:
    """A job to record from a dropped file (see Store.record_jobs)."""

    source_path: str
    data: bytes
    media_type: str
    params: dict[str, Any]
    provider: str
    detail: dict[str, Any] | None = None
    intake_key: str | None = None
    drop_folder: str | None = None
    # Not recorded if a job with the same content key is in one of these states.
    dedupe_states: tuple[str, ...] = ()


@dataclass(frozen=True)
class Existing:
    """record_jobs' answer for a NewJob that is the same work as an existing job."""

    job: JobRecord


def content_key(sha256: str, params: dict[str, Any]) -> str:
    """Identity of "this image with these parameters": equal keys are the same work."""
    canonical = json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{sha256}\n{canonical}".encode()).hexdigest()
