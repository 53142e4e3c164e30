"""Several daemons on one PostgreSQL table: job leases (claim, renew, release, take
over), cluster-wide admission under the provider's in-flight limit, and the daemons
registry. The second half of Store (state/store.py), kept apart to keep each file about
one thing; its methods use Store's transaction helpers."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, func, insert, literal, or_, select, text, update
from sqlalchemy.exc import OperationalError

from state.clock import Clock
from state.errors import StaleJob
from state.lifecycle import LIVE_STATES, JobState
from state.records import (
    CAS_JOB,
    JOB_COLUMNS,
    NEEDS_A_DAEMON,
    REMOTE_STATES,
    JobRecord,
    daemons_t,
    jobs_t,
    new_job_id,
)


class ClusterOps:
    # Provided by Store.
    clock: Clock
    owner: str | None
    lease: timedelta
    drop_folder: str | None  # this daemon's drop folder: whose sources it may move
    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[Connection]: ...
        def _read(self) -> AbstractContextManager[Connection]: ...
        def _locked_row(self, conn: Connection, job_id: str) -> dict[str, Any]: ...
        def _cas(
            self, conn: Connection, job_id: str, version: int, values: dict[str, Any]
        ) -> None: ...
        @staticmethod
        def _check_settable(changes: dict[str, Any]) -> None: ...

    def _held(self) -> list[Any]:
        return [] if self.owner is None else [jobs_t.c.owner == self.owner]

    def _queued_for_me(self) -> list[Any]:
        """Queued jobs this daemon may submit: its own, and any nobody sent a create for."""
        if self.owner is None:
            return []
        return [or_(jobs_t.c.owner == self.owner, jobs_t.c.create_sent_at.is_(None))]

    def admit(
        self, job_id: str, expected_version: int, limit: int | None, **changes: Any
    ) -> JobRecord | None:
        """Record that a create call is about to be sent (`changes`: create_sent_at,
        external_task_id), but only while fewer than `limit` jobs in the whole table are
        with the provider or being created: the provider's limit is per account, so it
        is counted across every daemon. None when the limit is reached. limit=None: no
        count (one daemon alone knows its in-flight number without asking)."""
        self._check_settable(changes)
        try:
            return self._admit(job_id, expected_version, limit, changes)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_timeout
                return None  # another daemon hangs holding the admission lock: later
            raise

    def _admit(
        self, job_id: str, expected_version: int, limit: int | None, changes: dict[str, Any]
    ) -> JobRecord | None:
        with self._write() as conn:
            if limit is not None and conn.dialect.name == "postgresql":
                # Admission is serialised cluster-wide (SQLite's BEGIN IMMEDIATE already is);
                # a holder that hangs costs the others a refused admission, not a hang.
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                conn.execute(text("SELECT pg_advisory_xact_lock(7150394)"))
            # Work is claimed, not assigned: a queued job nobody has sent a create for
            # goes to whichever daemon has room to submit it first (the version decides).
            row = self._locked_row(conn, job_id, claim_queued=self.owner is not None)
            if row["version"] != expected_version:
                raise StaleJob(job_id, expected_version, row["version"])
            busy = (
                0
                if limit is None
                else conn.execute(
                    select(func.count())
                    .select_from(jobs_t)
                    .where(
                        jobs_t.c.id != job_id,
                        or_(
                            jobs_t.c.state.in_(REMOTE_STATES),
                            (jobs_t.c.state == JobState.QUEUED.value)
                            & jobs_t.c.create_sent_at.is_not(None),
                        ),
                    )
                ).scalar_one()
            )
            if limit is not None and busy >= limit:
                return None
            now = self.clock.now()
            values = {**changes, "updated_at": now, "version": expected_version + 1}
            if self.owner is not None and row["owner"] != self.owner:
                values.update(owner=self.owner, lease_until=now + self.lease)
                params = {"b_id": job_id, "b_version": expected_version, **values}
                if conn.execute(CAS_JOB, params).rowcount != 1:  # version only: a claim
                    raise StaleJob(job_id, expected_version, None)
            else:
                self._cas(conn, job_id, expected_version, values)
        return JobRecord(**{**row, **values})

    def take_over(self, limit: int = 10_000) -> list[JobRecord]:
        """Claim for this daemon every job that needs a daemon and has none: no holder, or
        a holder whose lease ran out (it died, or stopped answering). Other daemons'
        claims are skipped, not waited for (SKIP LOCKED). The claim moves `version` on,
        so the old holder's writes match no row. Work under way (with the provider, or a
        download begun) is made due now: it is reconciled at once, as after a crash, not
        at the time the dead daemon had planned (a begun download's guard is 5 minutes).
        Returns the jobs taken."""
        assert self.owner is not None
        now = self.clock.now()
        under_way = [*REMOTE_STATES, JobState.DOWNLOADING.value]
        due_now = case(
            (
                jobs_t.c.state.in_(under_way) & (jobs_t.c.next_action_at > now),
                literal(now, jobs_t.c.next_action_at.type),  # typed: stored as the column is
            ),
            else_=jobs_t.c.next_action_at,
        )
        claimable = (
            select(jobs_t.c.id)
            .where(
                or_(jobs_t.c.owner.is_(None), jobs_t.c.lease_until < now),
                or_(
                    jobs_t.c.state.in_([s.value for s in LIVE_STATES]),
                    # An ended job's source is moved aside by a daemon that watches its
                    # folder, not by whoever comes first.
                    jobs_t.c.source_done_at.is_(None)
                    & or_(
                        jobs_t.c.drop_folder.is_(None),
                        jobs_t.c.drop_folder == self.drop_folder,
                    ),
                ),
            )
            .order_by(jobs_t.c.next_action_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write() as conn:
            ids = [r[0] for r in conn.execute(claimable).all()]
            if not ids:
                return []
            conn.execute(
                update(jobs_t)
                .where(jobs_t.c.id.in_(ids))
                .values(
                    owner=self.owner,
                    lease_until=now + self.lease,
                    version=jobs_t.c.version + 1,
                    next_action_at=due_now,
                )
            )
            rows = conn.execute(select(*JOB_COLUMNS).where(jobs_t.c.id.in_(ids))).all()
        return [JobRecord(*r) for r in rows]

    def let_go(self, job_id: str) -> None:
        """Stop holding one job (its source is in a drop folder this daemon does not
        watch): a daemon that watches that folder takes it."""
        with self._write() as conn:
            conn.execute(
                update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.owner == self.owner)
                .values(owner=None, lease_until=None, version=jobs_t.c.version + 1)
            )

    def renew(self) -> int:
        """Extend this daemon's lease on every job it holds; returns how many it holds."""
        assert self.owner is not None
        now = self.clock.now()
        with self._write() as conn:
            result = conn.execute(
                update(jobs_t)
                .where(jobs_t.c.owner == self.owner, NEEDS_A_DAEMON)
                .values(lease_until=now + self.lease)
            )
        return int(result.rowcount)

    def release(self) -> int:
        """A clean stop: let other daemons take this daemon's jobs at once."""
        assert self.owner is not None
        with self._write() as conn:
            result = conn.execute(
                update(jobs_t)
                .where(jobs_t.c.owner == self.owner, NEEDS_A_DAEMON)
                .values(owner=None, lease_until=None, version=jobs_t.c.version + 1)
            )
        return int(result.rowcount)

    def held_counts(self) -> dict[str, int]:
        """Unfinished jobs per holding daemon (live leases only)."""
        now = self.clock.now()
        with self._read() as conn:
            rows = conn.execute(
                select(jobs_t.c.owner, func.count())
                .where(
                    jobs_t.c.owner.is_not(None),
                    jobs_t.c.lease_until >= now,
                    jobs_t.c.state.in_([s.value for s in LIVE_STATES]),
                )
                .group_by(jobs_t.c.owner)
            ).all()
        return {owner: n for owner, n in rows}

    # -- daemons -----------------------------------------------------------------------

    def register_daemon(self, host: str, pid: int, max_in_flight: int) -> str:
        daemon_id = new_job_id()
        now = self.clock.now()
        with self._write() as conn:
            conn.execute(
                insert(daemons_t).values(
                    id=daemon_id,
                    host=host,
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                    max_in_flight=max_in_flight,
                    crashed=False,
                    in_flight=0,
                )
            )
        return daemon_id

    def close_stale_daemons(self, older_than: datetime | None = None) -> list[dict[str, Any]]:
        """Mark daemons that never stopped cleanly as crashed and return them. With
        `older_than`, only those whose heartbeat is older (a shared database)."""
        conds = [daemons_t.c.stopped_at.is_(None)]
        if older_than is not None:
            conds.append(daemons_t.c.heartbeat_at < older_than)
        with self._write() as conn:
            rows = [dict(r) for r in conn.execute(select(daemons_t).where(*conds)).mappings()]
            for row in rows:
                conn.execute(
                    update(daemons_t)
                    .where(daemons_t.c.id == row["id"])
                    .values(stopped_at=row["heartbeat_at"], crashed=True)
                )
        return rows

    def heartbeat(self, daemon_id: str, **fields: Any) -> None:
        # A daemon taken for dead (stopped past a lease on a shared table) that beats
        # again is alive after all.
        fields.setdefault("stopped_at", None)
        if fields["stopped_at"] is None:
            fields.setdefault("crashed", False)
        with self._write() as conn:
            conn.execute(
                update(daemons_t)
                .where(daemons_t.c.id == daemon_id)
                .values(heartbeat_at=self.clock.now(), **fields)
            )

    def stop_daemon(self, daemon_id: str) -> None:
        self.heartbeat(daemon_id, stopped_at=self.clock.now(), in_flight=0)

    def daemons(self, *, live_only: bool = True) -> list[dict[str, Any]]:
        query = select(daemons_t).order_by(daemons_t.c.started_at.desc())
        if live_only:
            query = query.where(daemons_t.c.stopped_at.is_(None))
        with self._read() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
