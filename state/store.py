"""The store: the one writer of job state, and the queries the daemon and CLI need.

Every state change is `transition()`: ONE transaction that compare-and-sets the job row
on its `version` and appends one `job_transitions` row. A lost race raises StaleJob and
writes nothing. Records come back as frozen dataclasses, detached from any session.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from state.clock import Clock, SystemClock
from state.cluster import ClusterOps
from state.db import check_and_migrate, make_engine, normalize_url, sqlite_path
from state.errors import (
    AmbiguousJobId,
    DatabaseRefused,
    DuplicateIntake,
    Fenced,
    JobNotFound,
    StaleJob,
)
from state.lifecycle import LIVE_STATES, JobEvent, JobState, apply
from state.records import (
    BLOB_EXISTS,
    CAS_HELD_JOB,
    CAS_JOB,
    FIND_BY_CONTENT,
    INSERT_BLOB,
    INSERT_JOB,
    INSERT_TRANSITION,
    JOB_COLUMNS,
    SELECT_JOB,
    SELECT_JOB_FOR_UPDATE,
    SETTABLE,
    Existing,
    JobRecord,
    NewJob,
    TransitionRecord,
    blobs_t,
    content_key,
    jobs_t,
    new_job_id,
    transitions_t,
)


def _claimable(row: Any) -> bool:
    """A queued job no create was ever sent for: any daemon may take it to submit it."""
    return row["state"] == JobState.QUEUED.value and row["create_sent_at"] is None


class Store(ClusterOps):
    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.write_count = 0
        self._write_lock = threading.Lock()
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self._writer = engine.execution_options(sqlite_immediate=True)
        # Set by a daemon sharing the table with others (PostgreSQL): it then reads and
        # writes only the jobs it holds, and its history rows carry its id.
        self.owner: str | None = None
        self.drop_folder: str | None = None
        self.lease = timedelta(seconds=30)
        self.fenced = 0  # writes refused because another daemon had taken the job over

    @classmethod
    def open(
        cls,
        url: str,
        *,
        clock: Clock | None = None,
        create: bool = True,
        migrate: bool = True,
        synchronous: str = "FULL",
    ) -> Store:
        """Open (and by default create and migrate) the database at `url` or file path.

        With create=False a missing SQLite file raises DatabaseRefused("missing") instead
        of creating an empty database (read-only commands use this)."""
        url = normalize_url(url)
        path = sqlite_path(url)
        if path is not None:
            if not path.exists() and not create:
                raise DatabaseRefused("missing", f"no database at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url, synchronous=synchronous)
        try:
            check_and_migrate(engine, migrate=migrate)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, clock)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # One writer at a time within this process: SQLite would serialise them anyway,
        # but through its busy handler, which sleeps (1, 2, 5, 10… ms) instead of queueing.
        with self._write_lock, self._writer.begin() as conn:
            yield conn
        self.write_count += 1  # committed write transactions (benchmarks report them)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    # -- input bytes -------------------------------------------------------------------

    def _put_blob(self, conn: Connection, data: bytes, media_type: str) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if conn.execute(BLOB_EXISTS, {"b_sha": sha}).first() is None:
            # Another daemon on a shared table may store the same bytes at the same moment.
            conn.execute(
                INSERT_BLOB[conn.dialect.name],
                {
                    "sha256": sha,
                    "size": len(data),
                    "media_type": media_type,
                    "data": data,
                    "created_at": self.clock.now(),
                },
            )
        return sha

    def get_blob(self, sha256: str) -> bytes:
        with self._read() as conn:
            data = conn.execute(select(blobs_t.c.data).where(blobs_t.c.sha256 == sha256)).scalar()
        if data is None:
            raise JobNotFound(f"no stored input with sha256 {sha256}")
        return bytes(data)

    # -- writes ------------------------------------------------------------------------

    def create_job(
        self,
        *,
        source_path: str,
        data: bytes,
        media_type: str,
        params: dict[str, Any],
        provider: str,
        job_id: str | None = None,
        detail: dict[str, Any] | None = None,
        next_action_at: datetime | None = None,
        fail: tuple[str, str] | None = None,
        intake_key: str | None = None,
        drop_folder: str | None = None,
    ) -> JobRecord:
        """Record the input bytes and a new `queued` job, with its first history row.

        With `fail=(code, message)` the job is recorded and failed in the same transaction
        (input that can never be submitted), so no crash can leave it queued."""
        job_id = job_id or new_job_id()
        now = self.clock.now()
        try:
            return self._create_job(
                job_id, now, source_path, data, media_type, params, provider, detail,
                next_action_at, fail, intake_key, drop_folder,
            )  # fmt: skip
        except IntegrityError as exc:
            if intake_key is not None and "intake_key" in str(exc):
                raise DuplicateIntake(intake_key) from None
            raise

    def _create_job(
        self,
        job_id: str,
        now: datetime,
        source_path: str,
        data: bytes,
        media_type: str,
        params: dict[str, Any],
        provider: str,
        detail: dict[str, Any] | None,
        next_action_at: datetime | None,
        fail: tuple[str, str] | None,
        intake_key: str | None,
        drop_folder: str | None,
    ) -> JobRecord:
        with self._write() as conn:
            sha = self._put_blob(conn, data, media_type)
            item = NewJob(source_path, data, media_type, params, provider, drop_folder=drop_folder)
            values = self._new_job_values(job_id, now, item, sha, content_key(sha, params))
            if next_action_at is not None:
                values["next_action_at"] = next_action_at
            # Statements built once and given parameters: building an insert with
            # .values() per call cost more than the insert (the burst-ingest profile).
            conn.execute(INSERT_JOB, {**values, "intake_key": intake_key})
            conn.execute(INSERT_TRANSITION, self._created_row(job_id, now, detail))
            if fail is not None:
                failed = {
                    "state": JobState.FAILED.value,
                    "error_code": fail[0],
                    "error_message": fail[1],
                    "next_action_at": None,
                    "version": 2,
                }
                self._cas(conn, job_id, 1, failed)
                values.update(failed)
                conn.execute(
                    INSERT_TRANSITION,
                    {
                        "job_id": job_id,
                        "attempt": 1,
                        "from_state": JobState.QUEUED.value,
                        "to_state": JobState.FAILED.value,
                        "event": JobEvent.FAIL.value,
                        "at": now,
                        "detail": {"error_code": fail[0], "error": fail[1]},
                        "daemon_id": self.owner,
                    },
                )
        return JobRecord(**values)

    def record_jobs(self, new: list[NewJob]) -> list[JobRecord | Existing | DuplicateIntake]:
        """Record many dropped files in ONE transaction (one durable commit instead of one
        per file: the burst-ingest benchmark). Per item, in order: DuplicateIntake if its
        file is already a job's source, Existing if the same content is already a job in
        its dedupe states (earlier items of the batch included), else the new job."""
        try:
            return self._record_jobs(new)
        except IntegrityError as exc:
            # Another daemon recorded the same file between our check and our insert.
            key = new[0].intake_key
            if len(new) == 1 and key is not None and "intake_key" in str(exc):
                return [DuplicateIntake(key)]
            raise

    def _record_jobs(self, new: list[NewJob]) -> list[JobRecord | Existing | DuplicateIntake]:
        now = self.clock.now()
        prepared = []
        for item in new:
            sha = hashlib.sha256(item.data).hexdigest()
            prepared.append((item, sha, content_key(sha, item.params)))
        results: list[JobRecord | Existing | DuplicateIntake] = []
        with self._write() as conn:
            keys = [p[2] for p in prepared]
            by_content: dict[str, list[JobRecord]] = {}
            for r in conn.execute(
                select(*JOB_COLUMNS)
                .where(jobs_t.c.content_key.in_(keys))
                .order_by(jobs_t.c.created_at)
            ):
                job = JobRecord(*r)
                by_content.setdefault(job.content_key, []).append(job)
            intake_keys = [i.intake_key for i in new if i.intake_key is not None]
            taken = set(
                conn.execute(
                    select(jobs_t.c.intake_key).where(
                        jobs_t.c.intake_key.in_(intake_keys), jobs_t.c.source_done_at.is_(None)
                    )
                ).scalars()
            )
            have_blobs = set(
                conn.execute(
                    select(blobs_t.c.sha256).where(blobs_t.c.sha256.in_({p[1] for p in prepared}))
                ).scalars()
            )
            blobs, jobs, history = [], [], []
            for item, sha, ckey in prepared:
                if item.intake_key is not None and item.intake_key in taken:
                    results.append(DuplicateIntake(item.intake_key))
                    continue
                same = [j for j in by_content.get(ckey, []) if j.state in item.dedupe_states]
                if same:
                    # This very file first (a daemon sharing the folder recorded it).
                    here = [j for j in same if j.source_path == item.source_path]
                    results.append(Existing((here or same)[0]))
                    continue
                if sha not in have_blobs:
                    have_blobs.add(sha)
                    blobs.append(
                        {
                            "sha256": sha,
                            "size": len(item.data),
                            "media_type": item.media_type,
                            "data": item.data,
                            "created_at": now,
                        }
                    )
                values = self._new_job_values(new_job_id(), now, item, sha, ckey)
                jobs.append({**values, "intake_key": item.intake_key})
                history.append(self._created_row(values["id"], now, item.detail))
                record = JobRecord(**values)
                by_content.setdefault(ckey, []).append(record)
                if item.intake_key is not None:
                    taken.add(item.intake_key)
                results.append(record)
            if blobs:
                conn.execute(INSERT_BLOB[conn.dialect.name], blobs)
            if jobs:
                conn.execute(INSERT_JOB, jobs)
                conn.execute(INSERT_TRANSITION, history)
        return results

    def _new_job_values(
        self, job_id: str, now: datetime, item: NewJob, sha: str, ckey: str
    ) -> dict[str, Any]:
        return {
            "id": job_id,
            "source_path": item.source_path,
            "input_sha256": sha,
            "params": item.params,
            "content_key": ckey,
            "provider": item.provider,
            "state": JobState.QUEUED.value,
            "attempt": 1,
            "remote_task_id": None,
            "external_task_id": None,
            "create_sent_at": None,
            "video_url": None,
            "output_path": None,
            "error_code": None,
            "error_message": None,
            "next_action_at": now,
            "deadline_at": None,
            "poll_count": 0,
            "recoveries": 0,
            "retries": 0,
            "source_done_at": None,
            "created_at": now,
            "updated_at": now,
            "version": 1,
            "owner": self.owner,
            "lease_until": now + self.lease if self.owner else None,
            "drop_folder": item.drop_folder,
        }

    def _created_row(
        self, job_id: str, now: datetime, detail: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "attempt": 1,
            "from_state": None,
            "to_state": JobState.QUEUED.value,
            "event": JobEvent.CREATED.value,
            "at": now,
            "detail": detail,
            "daemon_id": self.owner,
        }

    def transition(
        self,
        job_id: str,
        event: JobEvent | str,
        *,
        expected_version: int | None = None,
        detail: dict[str, Any] | None = None,
        **changes: Any,
    ) -> JobRecord:
        """Apply `event` to the job in one transaction and return the new record.

        `expected_version` is the version the caller based its decision on; if the row
        has moved on, StaleJob is raised and nothing is written. IllegalTransition if the
        life cycle forbids the event; JobNotFound if there is no such job."""
        event = JobEvent(event)
        self._check_settable(changes)
        with self._write() as conn:
            row = self._locked_row(conn, job_id)
            if expected_version is not None and row["version"] != expected_version:
                raise StaleJob(job_id, expected_version, row["version"])
            new_state = apply(row["state"], event, job_id)
            now = self.clock.now()
            # Progress resets the per-step retry and crash counters.
            values: dict[str, Any] = {"retries": 0, "recoveries": 0}
            attempt = row["attempt"]
            if event is JobEvent.RETRY:
                attempt += 1
                values.update(
                    error_code=None,
                    error_message=None,
                    create_sent_at=None,
                    next_action_at=now,
                    deadline_at=None,
                    output_path=None,
                    poll_count=0,
                    recoveries=0,
                )
            values.update(changes)
            values.update(
                state=new_state.value, attempt=attempt, updated_at=now, version=row["version"] + 1
            )
            self._cas(conn, job_id, row["version"], values)
            conn.execute(
                INSERT_TRANSITION,
                {
                    "job_id": job_id,
                    "attempt": attempt,
                    "from_state": row["state"],
                    "to_state": new_state.value,
                    "event": event.value,
                    "at": now,
                    "detail": detail,
                    "daemon_id": self.owner,
                },
            )
        return JobRecord(**{**row, **values})

    def update(self, job_id: str, expected_version: int, **changes: Any) -> JobRecord:
        """Compare-and-set bookkeeping columns (next action time, poll count…) without a
        state change and without a history row. StaleJob if the version moved on."""
        self._check_settable(changes)
        with self._write() as conn:
            row = self._locked_row(conn, job_id)
            if row["version"] != expected_version:
                raise StaleJob(job_id, expected_version, row["version"])
            values = {**changes, "updated_at": self.clock.now(), "version": expected_version + 1}
            self._cas(conn, job_id, expected_version, values)
        return JobRecord(**{**row, **values})

    def mark_source_done(self, job_id: str, expected_version: int) -> JobRecord:
        """The ended job's source file has been moved aside: nothing is left for any
        daemon to do, so the job leaves its holder (history says who did the work)."""
        with self._write() as conn:
            row = self._locked_row(conn, job_id)
            if row["version"] != expected_version:
                raise StaleJob(job_id, expected_version, row["version"])
            now = self.clock.now()
            values: dict[str, Any] = {
                "source_done_at": now,
                "updated_at": now,
                "version": expected_version + 1,
            }
            if JobState(row["state"]).is_final:
                values.update(owner=None, lease_until=None)
            self._cas(conn, job_id, expected_version, values)
        return JobRecord(**{**row, **values})

    def _locked_row(
        self, conn: Connection, job_id: str, *, claim_queued: bool = False
    ) -> dict[str, Any]:
        # FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers.
        query = SELECT_JOB_FOR_UPDATE if conn.dialect.name == "postgresql" else SELECT_JOB
        row = conn.execute(query, {"b_id": job_id}).mappings().first()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        if claim_queued and _claimable(row):
            return dict(row)
        if self.owner is not None and row["owner"] != self.owner:
            self.fenced += 1
            raise Fenced(job_id, self.owner)
        return dict(row)

    def _cas(self, conn: Connection, job_id: str, version: int, values: dict[str, Any]) -> None:
        params = {"b_id": job_id, "b_version": version, **values}
        if self.owner is None:
            result = conn.execute(CAS_JOB, params)
        else:
            result = conn.execute(CAS_HELD_JOB, {**params, "b_owner": self.owner})
        if result.rowcount != 1:
            if self.owner is not None:
                held = conn.execute(
                    select(jobs_t.c.owner).where(jobs_t.c.id == job_id)
                ).scalar_one_or_none()
                if held != self.owner:
                    self.fenced += 1
                    raise Fenced(job_id, self.owner)
            raise StaleJob(job_id, version, None)

    @staticmethod
    def _check_settable(changes: dict[str, Any]) -> None:
        bad = set(changes) - SETTABLE
        if bad:
            raise TypeError(f"not settable through the store: {', '.join(sorted(bad))}")

    # -- reads -------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        with self._read() as conn:
            row = conn.execute(SELECT_JOB, {"b_id": job_id}).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return JobRecord(*row)

    def resolve(self, id_or_prefix: str) -> JobRecord:
        """A job by full id or unique prefix (AmbiguousJobId / JobNotFound otherwise)."""
        prefix = id_or_prefix.strip().lower()
        if not prefix or not all(c in "0123456789abcdef" for c in prefix):
            raise JobNotFound(f"'{id_or_prefix}' is not a job id (ids are hexadecimal)")
        with self._read() as conn:
            rows = conn.execute(
                select(*JOB_COLUMNS)
                .where(jobs_t.c.id >= prefix, jobs_t.c.id < prefix + "g")
                .order_by(jobs_t.c.id)
                .limit(11)
            ).all()
        if not rows:
            raise JobNotFound(f"no job matches '{id_or_prefix}'")
        exact = [r for r in rows if r.id == prefix]
        if len(rows) > 1 and not exact:
            raise AmbiguousJobId(prefix, [r.id for r in rows])
        return JobRecord(*(exact or rows)[0])

    def history(self, job_id: str) -> list[TransitionRecord]:
        with self._read() as conn:
            rows = conn.execute(
                select(transitions_t)
                .where(transitions_t.c.job_id == job_id)
                .order_by(transitions_t.c.id)
            ).all()
        return [TransitionRecord(*r) for r in rows]

    def due_jobs(self, now: datetime, limit: int = 1000) -> list[JobRecord]:
        """Live jobs whose next action time has come, earliest first."""
        return self._select(
            jobs_t.c.state.in_([s.value for s in LIVE_STATES]),
            jobs_t.c.next_action_at <= now,
            *self._held(),
            order=jobs_t.c.next_action_at,
            limit=limit,
        )

    def dispatch_view(
        self, remote_states: Iterable[str], now: datetime, limit: int
    ) -> tuple[int, list[JobRecord], datetime | None]:
        """(jobs with the provider, due queued jobs oldest first, when the next queued
        job comes due) in one read: the dispatcher's whole question, in one round trip.
        Only as many queued jobs as `limit` leaves room for beside those in flight are
        read (decoding rows nobody will submit yet cost the life cycle ~5 % of its CPU)."""
        with self._read() as conn:
            next_queued = conn.execute(
                select(func.min(jobs_t.c.next_action_at)).where(
                    jobs_t.c.state == JobState.QUEUED.value, *self._queued_for_me()
                )
            ).scalar_one_or_none()
            in_flight = int(
                conn.execute(
                    select(func.count())
                    .select_from(jobs_t)
                    .where(jobs_t.c.state.in_(list(remote_states)))
                ).scalar_one()
            )
            room = limit - in_flight
            if room <= 0:
                return in_flight, [], next_queued
            rows = conn.execute(
                select(*JOB_COLUMNS)
                .where(
                    jobs_t.c.state == JobState.QUEUED.value,
                    jobs_t.c.next_action_at <= now,
                    *self._queued_for_me(),
                )
                .order_by(jobs_t.c.created_at, jobs_t.c.id)
                .limit(room)
            ).all()
        return in_flight, [JobRecord(*r) for r in rows], next_queued

    def next_queued_at(self) -> datetime | None:
        """The earliest next action time among queued jobs."""
        with self._read() as conn:
            return conn.execute(
                select(func.min(jobs_t.c.next_action_at)).where(
                    jobs_t.c.state == JobState.QUEUED.value
                )
            ).scalar()

    def jobs_in_states(
        self, states: Iterable[str], *, limit: int | None = None, oldest_first: bool = True
    ) -> list[JobRecord]:
        order = jobs_t.c.created_at if oldest_first else jobs_t.c.created_at.desc()
        return self._select(jobs_t.c.state.in_(list(states)), order=order, limit=limit)

    def live_jobs(self) -> list[JobRecord]:
        """Unfinished jobs (on a shared table: those this daemon holds)."""
        return self._select(
            jobs_t.c.state.in_([s.value for s in LIVE_STATES]),
            *self._held(),
            order=jobs_t.c.created_at,
        )

    def find_by_content_key(self, key: str, states: Iterable[str]) -> list[JobRecord]:
        with self._read() as conn:
            rows = conn.execute(FIND_BY_CONTENT, {"b_key": key, "b_states": list(states)})
            return [JobRecord(*r) for r in rows.all()]

    def intake_key_in_place(self, intake_key: str) -> bool:
        """Whether a job already comes from this very file (still in the drop folder)."""
        with self._read() as conn:
            found = conn.execute(
                select(jobs_t.c.id)
                .where(jobs_t.c.intake_key == intake_key, jobs_t.c.source_done_at.is_(None))
                .limit(1)
            ).first()
        return found is not None

    def list_jobs(
        self,
        *,
        states: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        source_glob: str | None = None,
        limit: int | None = None,
    ) -> list[JobRecord]:
        """History newest first, filtered by state, creation time range and source glob."""
        conds: list[Any] = []
        if states:
            conds.append(jobs_t.c.state.in_(list(states)))
        if since is not None:
            conds.append(jobs_t.c.created_at >= since)
        if until is not None:
            conds.append(jobs_t.c.created_at < until)
        order = (jobs_t.c.created_at.desc(), jobs_t.c.id.desc())
        if source_glob is None:
            return self._select(*conds, order=order, limit=limit)
        # Glob semantics are the same on both engines only if applied here.
        matched = [
            j
            for j in self._select(*conds, order=order)
            if fnmatch.fnmatchcase(j.source_path, source_glob)
        ]
        return matched[:limit] if limit is not None else matched

    def counts_by_state(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(select(jobs_t.c.state, func.count()).group_by(jobs_t.c.state)).all()
        counts = {s.value: 0 for s in JobState}
        counts.update({state: n for state, n in rows})
        return counts

    def pull_forward(self, states: Iterable[str], now: datetime) -> int:
        """Make every job in `states` due now (start-up: unfinished remote work is asked
        about at once, not at the time the dead daemon had planned)."""
        with self._write() as conn:
            result = conn.execute(
                update(jobs_t)
                .where(
                    jobs_t.c.state.in_(list(states)), jobs_t.c.next_action_at > now, *self._held()
                )
                .values(next_action_at=now, version=jobs_t.c.version + 1)
            )
        return int(result.rowcount)

    def shift_live_times(self, seconds: float, *, next_action: bool = True) -> int:
        """Move every unfinished job's deadline (and, unless told not to, its next action
        time) by `seconds`: the wall clock jumped, keep the real time left to each of them.
        Returns the number of jobs moved."""
        delta = timedelta(seconds=seconds)
        step = delta if next_action else timedelta(0)
        live = [s.value for s in JobState if not s.is_final]
        with self._write() as conn:
            rows = conn.execute(
                select(jobs_t.c.id, jobs_t.c.next_action_at, jobs_t.c.deadline_at).where(
                    jobs_t.c.state.in_(live), *self._held()
                )
            ).all()
            for job_id, next_at, deadline in rows:
                conn.execute(
                    update(jobs_t)
                    .where(jobs_t.c.id == job_id)
                    .values(
                        next_action_at=None if next_at is None else next_at + step,
                        deadline_at=None if deadline is None else deadline + delta,
                        version=jobs_t.c.version + 1,
                    )
                )
        return len(rows)

    def ended_with_source_in_place(self) -> list[JobRecord]:
        """Ended jobs whose source file has not been moved aside yet (a crash came between
        the final transition and the move)."""
        return self._select(
            jobs_t.c.state.in_([s.value for s in JobState if s.is_final]),
            jobs_t.c.source_done_at.is_(None),
            *self._held(),
            order=jobs_t.c.updated_at,
        )

    def recent_details(self, event: str, limit: int = 200) -> list[dict[str, Any]]:
        """`detail` of the newest transitions with this event (for learned estimates)."""
        with self._read() as conn:
            rows = conn.execute(
                select(transitions_t.c.detail)
                .where(transitions_t.c.event == event)
                .order_by(transitions_t.c.id.desc())
                .limit(limit)
            ).all()
        return [r.detail for r in rows if isinstance(r.detail, dict)]

    def _select(self, *conds: Any, order: Any = None, limit: int | None = None) -> list[JobRecord]:
        query = select(*JOB_COLUMNS).where(*conds)
        if order is not None:
            query = query.order_by(*(order if isinstance(order, tuple) else (order,)))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [JobRecord(*r) for r in conn.execute(query).all()]


__all__ = ["Existing", "JobRecord", "NewJob", "Store", "TransitionRecord", "content_key"]
