"""The daemon: one asyncio process wiring store, provider, scheduler and drop folder.

Start-up: open the store (migrations) → take the SQLite lock → note crashed predecessors →
schedule every unfinished job from the database → READY → scan the drop folder → watch.
The database is the only truth: APScheduler holds one-shot wake-ups derived from
`jobs.next_action_at`, rebuilt on every start; a wake-up only queues the job id, and a
worker re-reads the row and decides. Queued jobs are not scheduled one by one: the
dispatcher takes the oldest due ones whenever a submission slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.exc import SQLAlchemyError

from daemon import files
from daemon.async_store import AsyncStore
from daemon.changes import WriteWatch
from daemon.config import Settings
from daemon.driver import AdmissionFull, Driver, short
from daemon.errors import DiskFull
from daemon.gate import Gate
from daemon.lock import DatabaseLock
from daemon.notify import Notifier
from daemon.pool import worker_pool
from daemon.provider import Provider
from daemon.watcher import Intake
from state.clock import Clock, JumpDetector, SystemClock
from state.db import sqlite_path
from state.lifecycle import JobEvent, JobState
from state.store import JobRecord, Store

log = logging.getLogger("dropreel.daemon")
REMOTE = [JobState.SUBMITTED.value, JobState.PROCESSING.value]
SCHEDULED = [*REMOTE, JobState.DOWNLOADING.value]
WORKERS = 16


def build_provider(
    settings: Settings, state_dir: Path, load_image: Callable[[str], bytes] | None = None
) -> Provider:
    if settings.resolved_provider == "kling":
        from daemon.kling_auth import JwtAuth, StaticKeyAuth
        from daemon.kling_client import KlingClient
        from daemon.kling_provider import KlingProvider

        auth = (
            StaticKeyAuth(settings.api_key)
            if settings.api_key
            else JwtAuth(settings.access_key or "", settings.secret_key or "")
        )
        client = KlingClient(
            settings.api_base,
            auth,
            timeout=settings.http_timeout_seconds,
            max_connections=settings.http_max_connections,
            duration_as_int=settings.duration_as_int,
        )
        return KlingProvider(client)
    from daemon.local_provider import LocalProvider

    return LocalProvider(
        state_dir / "renders", max_workers=settings.max_in_flight, load_image=load_image
    )


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        provider: Provider | None = None,
        once: bool = False,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._provider = provider
        self.once = once
        self.reload_settings = reload
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self.intake_stop = asyncio.Event()
        self.dispatch_event = asyncio.Event()
        self.rng = random.Random()
        self.gate = Gate(settings.max_in_flight, pause_retry=settings.pause_retry_seconds)
        self.creating: set[str] = set()
        self.due: asyncio.Queue[str] = asyncio.Queue()
        self.queued_ids: set[str] = set()
        self.active: set[str] = set()
        self.again: set[str] = set()
        self.clock_lock = asyncio.Lock()
        self.quiet = False  # nothing in flight, nothing due: ticks stretch, queries skip
        self.next_queued: datetime | None = None
        self.step_errors: Counter[str] = Counter()  # unexpected errors per job, this run
        self.reconciling: set[str] = set()  # remote jobs not yet asked about since start
        self.reconciled = asyncio.Event()
        self.started_at, self.live_at_start = time.monotonic(), 0
        self.jumps = JumpDetector(self.clock)
        self.tasks: list[asyncio.Task[Any]] = []
        self.step_tasks: set[asyncio.Task[Any]] = set()
        self.lock: DatabaseLock | None = None
        self.daemon_id: str | None = None
        self.last_error: str | None = None
        self._forced = False
        self.exit_code = 0

    # -- start-up --------------------------------------------------------------------------

    def open(self) -> None:
        """Synchronous part of start-up: folders, store, lock. Raises with a clear message."""
        s = self.settings
        for folder in (s.drop, s.output, s.resolved_state_dir):
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"{folder} is not writable by this user")
        path = sqlite_path(_sqlite_url(s.db))
        if path is not None:
            self.lock = DatabaseLock(path)
            self.lock.acquire()
        sync = Store.open(s.db, clock=self.clock, synchronous=s.synchronous)
        # PostgreSQL: the table may be shared with other daemons; jobs are held by lease.
        self.shared = sync.dialect == "postgresql"
        self.lease_valid_until = 0.0  # monotonic; our hold on our jobs is sure until then
        self.dispatch_writes, self.housekeeping_writes = WriteWatch(path), WriteWatch(path)
        self.store = AsyncStore(sync)
        self.provider = self._provider or build_provider(s, s.resolved_state_dir, sync.get_blob)
        self.driver = Driver(
            self.store,
            self.provider,
            s,
            self.clock,
            self.gate,
            self.rng,
            on_end=self.job_ended,
            may_act=self.holds_lease,
        )
        self.intake = Intake(
            s,
            self.store,
            self.clock,
            self.make_pool,
            self.provider.name,
            self.dispatch_event.set,
            self.job_ended,
            self._disk_full_now,
        )
        self.intake.shared = self.driver.shared = self.shared

    @staticmethod
    def make_pool() -> Executor:
        # Image decoding runs in worker processes: off the event loop, and a decoder crash
        # on a hostile file kills only the worker. (spawn: never fork a threaded process)
        return worker_pool(max(1, min(2, os.cpu_count() or 1)))

    def _disk_full_now(self) -> bool:
        return (
            self.gate.free_slots(self.clock.now(), 0) == 0
            and self.gate.disk_full_until is not None
            and self.clock.now() < self.gate.disk_full_until
        )

    async def start(self) -> None:
        started = time.monotonic()
        s = self.settings
        sync = self.store.sync
        lease = timedelta(seconds=s.lease_seconds)
        # Shared table: only daemons silent for a whole lease are taken for dead.
        crashed = await self.store.close_stale_daemons(
            self.clock.now() - lease if self.shared else None
        )
        self.daemon_id = await self.store.register_daemon(
            socket.gethostname(), os.getpid(), s.max_in_flight
        )
        if self.shared:
            sync.owner, sync.lease = self.daemon_id, lease
            sync.drop_folder = str(s.drop)
            self.lease_valid_until = time.monotonic() + s.lease_seconds
        for row in crashed:
            log.warning(
                "previous daemon (pid %s, started %s) did not stop cleanly",
                row["pid"],
                row["started_at"],
            )
        if self.shared:
            # Jobs nobody holds (their daemon stopped, or died a lease ago) become ours;
            # the rest stay with the live daemons that hold them.
            taken = await self.store.take_over()
            if taken:
                log.info("took over %d jobs no live daemon held", len(taken))
                await self._count_takeovers(taken)
            crashed = []
        live = await self.store.live_jobs()
        if crashed:
            last_run = max(row["started_at"] for row in crashed)
            live = [j for j in [await self._count_recovery(j, last_run) for j in live] if j]
        await self.store.pull_forward(SCHEDULED, self.clock.now())
        for detail in sync.recent_details(JobEvent.FINISHED_REMOTE.value):
            key = detail.get("estimate_key")
            seconds = detail.get("generation_seconds", detail.get("remote_seconds"))
            if isinstance(key, str) and isinstance(seconds, int | float):
                self.driver.expected.add(key, float(seconds))
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self.scheduler.start()
        for job in live:
            self.adopt(job)
        self.started_at, self.live_at_start = started, len(live)
        log.info(
            "all unfinished jobs scheduled (%d) in %.2fs", len(live), time.monotonic() - started
        )

    def adopt(self, job: JobRecord) -> None:
        """Take charge of an unfinished job found in the table (at start, or taken over
        from a daemon whose lease ran out): remote work is reconciled with the provider
        at once, exactly as after a crash."""
        self.intake.known.add(job.source_path)
        if job.state == JobState.QUEUED or job.is_final:
            return  # the dispatcher's (a create sent before is looked up first) / housekeeping
        if job.state == JobState.DOWNLOADING and job.output_path:
            self.driver.claimed_outputs.add(Path(job.output_path))
        if job.state in REMOTE:
            self.reconciling.add(job.id)
        self.schedule(job.id, self.clock.now())

    async def _count_takeovers(self, taken: list[JobRecord]) -> list[JobRecord]:
        """A job taken over in the middle of a step (a create sent, a download begun) had
        its daemon die under it: count that as a crash, so a job that kills every daemon
        that touches it fails after crash_limit instead of travelling round the cluster."""
        since_ever = datetime.min.replace(tzinfo=UTC)
        kept = []
        for job in taken:
            try:
                counted = await self._count_recovery(job, since_ever)
            except Exception as exc:  # moved on meanwhile (a CLI cancel): its word stands
                log.info("job %s not counted after takeover: %r", short(job.id), exc)
                counted = job
            if counted is not None and not counted.is_final:
                kept.append(counted)
        return kept

    def holds_lease(self) -> bool:
        """Whether this daemon can be sure it still holds its jobs: always alone on SQLite;
        on a shared table, while a third of the lease is left since the last renewal."""
        if not self.shared:
            return True
        return time.monotonic() < self.lease_valid_until - self.settings.lease_seconds / 3

    async def _leases_forever(self) -> None:
        """Renew our hold every third of a lease; take over jobs whose holder's lease ran
        out (it died, or was stopped for longer than a lease)."""
        every = self.settings.lease_seconds / 3
        while True:
            started = time.monotonic()
            try:
                held = await self.store.renew()
                self.lease_valid_until = started + self.settings.lease_seconds
                taken = await self.store.take_over()
            except Exception as exc:  # the database is down: try again, keep running
                log.error("lease renewal failed: %r", exc)
                await asyncio.sleep(min(every, 1.0))
                continue
            if taken:
                log.warning(
                    "took over %d jobs whose daemon's lease ran out (now holding %d)",
                    len(taken),
                    held + len(taken),
                )
                for job in await self._count_takeovers(taken):
                    self.adopt(job)
                self.dispatch_event.set()
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))

    async def announce_ready(self, budget: float = 60.0) -> None:
        """READY=1 once every job that was with the provider when we started has been
        asked about (reconciled), or after `budget` seconds if the provider is slow."""
        if self.reconciling:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reconciled.wait(), budget)
            if self.reconciling:
                log.warning(
                    "%d jobs not reconciled after %.0fs (provider slow?); ready anyway",
                    len(self.reconciling),
                    budget,
                )
        ready = time.monotonic() - self.started_at
        counts = await self.store.counts_by_state()
        s = self.settings
        log.info(
            "ready in %.2fs: provider %s, %d unfinished jobs, drop %s, output %s",
            ready,
            self.provider.name,
            self.live_at_start,
            s.drop,
            s.output,
        )
        self.notifier.ready(self.status_line(counts))
        assert self.daemon_id is not None
        await self.store.heartbeat(self.daemon_id, status=f"ready in {ready:.2f}s")

    async def _count_recovery(self, job: JobRecord, crashed_run: datetime) -> JobRecord | None:
        """Count a crash against a job whose step had started in the run that crashed (a
        create call sent, or a download begun); after crash_limit in a row, fail it rather
        than loop forever on a job that may be what kills the daemon."""
        if job.state == JobState.QUEUED:
            mid_step = job.create_sent_at is not None and job.create_sent_at >= crashed_run
        else:
            mid_step = job.state == JobState.DOWNLOADING and job.updated_at >= crashed_run
        if not mid_step:
            return job
        recoveries = job.recoveries + 1
        if recoveries >= self.settings.crash_limit:
            step = "create call" if job.state == JobState.QUEUED else "download"
            return await self.driver.fail(
                job,
                "crash_loop",
                f"interrupted by {recoveries} daemon crashes in a row; last step: {step}",
            )
        return await self.store.update(job.id, job.version, recoveries=recoveries)

    async def check_clock(self) -> None:
        """Keep schedules and deadlines true to real time across wall-clock jumps. Back:
        every time moves back with the clock (nothing waits the jump out). Forward: the
        deadlines move forward (the jump is not time spent), while due times stay, so
        jobs are asked about at once: after a suspend the remote work did go on."""
        async with self.clock_lock:
            skew = self.jumps.check()
            if not skew:
                return
            moved = await self.store.shift_live_times(skew, next_action=skew < 0)
            self.gate.shift(timedelta(seconds=skew))
            log.warning(
                "wall clock jumped %+.0f s; %d unfinished jobs rescheduled, deadlines kept",
                skew,
                moved,
            )
            for job in await self.store.live_jobs():
                if job.state != JobState.QUEUED and job.id not in self.active:
                    self.schedule(job.id, job.next_action_at)
            self.dispatch_event.set()

    def schedule(self, job_id: str, when: datetime | None) -> None:
        if when is None:
            return
        if when <= self.clock.now():
            self.wake(job_id)
            return
        self.scheduler.add_job(
            self._on_due,
            DateTrigger(run_date=when),
            id=job_id,
            args=[job_id],
            replace_existing=True,
        )

    async def _on_due(self, job_id: str) -> None:
        self.wake(job_id)

    def wake(self, job_id: str) -> None:
        if job_id in self.active:
            self.again.add(job_id)
        elif job_id not in self.queued_ids:
            self.queued_ids.add(job_id)
            self.due.put_nowait(job_id)

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            await self.start()
            self.spawn(self._workers(), "workers")
            self.spawn(self._dispatch_forever(), "dispatcher")
            self.spawn(self._housekeeping_forever(), "housekeeping")
            if self.shared:
                self.spawn(self._leases_forever(), "leases")
            if self.notifier.watchdog_interval:
                self.spawn(self._watchdog_forever(), "watchdog")
            await self.announce_ready()
            seen = self.intake.scan()
            log.info("start-up scan: %d files in %s", seen, self.settings.drop)
            self.spawn(self.intake.watch(self.intake_stop), "watcher")
            self.spawn(self.intake.rescan_forever(self.intake_stop), "rescan")
            self.spawn(self.intake.settle_forever(self.intake_stop), "settle")
            await self._monitor()
        finally:
            await self.shutdown()
        return self.exit_code

    def _reconciled(self, job_id: str) -> None:
        if job_id in self.reconciling:
            self.reconciling.discard(job_id)
            if not self.reconciling:
                self.reconciled.set()

    def spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self.tasks.append(task)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A background task that dies stops the daemon (systemd restarts it)."""
        if not task.cancelled() and task.exception() is not None and not self.stop_event.is_set():
            log.critical("background task %s died: %r; stopping", task.get_name(), task.exception())
            self.exit_code = 1
            self.stop_event.set()

    async def _monitor(self) -> None:
        """Wait for a stop request (without polling: an idle daemon should not wake)."""
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=0.5 if self.once else 60)
            if self.once and await self._idle():
                log.info("--once: nothing left to do")
                self.stop_event.set()

    async def _idle(self) -> bool:
        if self.intake.busy() or self.creating or self.active or self.queued_ids:
            return False
        counts = await self.store.counts_by_state()
        live = sum(counts[s.value] for s in JobState if not s.is_final)
        return live == 0 and not await self.store.ended_with_source_in_place()

    async def _workers(self) -> None:
        async def worker() -> None:
            while True:
                job_id = await self.due.get()
                self.queued_ids.discard(job_id)
                self.active.add(job_id)
                try:
                    await self._step(job_id)
                except DiskFull as exc:
                    self._note_disk_full(str(exc))
                    self.schedule(job_id, self.clock.now() + timedelta(seconds=30))
                except Exception as exc:  # a bug in one step must not stop the daemon
                    await self._unexpected(job_id, exc, "step")
                finally:
                    self._reconciled(job_id)  # asked about, whatever the answer
                    self.active.discard(job_id)
                    if job_id in self.again:
                        self.again.discard(job_id)
                        self.wake(job_id)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))

    async def _step(self, job_id: str) -> None:
        await self.check_clock()  # before any deadline is judged against the wall clock
        job = await self.store.get(job_id)
        if self.shared and job.owner != self.daemon_id:
            log.info("job %s is held by another daemon now; leaving it", short(job_id))
            self.intake.known.discard(job.source_path)
            return
        if job.is_final:
            if job.source_done_at is None:
                await self.job_ended(job)
            return
        now = self.clock.now()
        if job.next_action_at is not None and job.next_action_at > now + timedelta(seconds=0.05):
            self.schedule(job.id, job.next_action_at)  # woken early: keep the real time
            return
        if job.state in REMOTE:
            new = await self.driver.poll(job)
        elif job.state == JobState.DOWNLOADING:
            if self._disk_full_now():
                self.schedule(job.id, self.gate.disk_full_until)
                return
            new = await self.driver.download(job)
        else:
            return  # queued: the dispatcher's business
        if new is None:
            new = await self.store.get(job_id)
        if not new.is_final and new.state != JobState.QUEUED:
            self.schedule(new.id, new.next_action_at)
        self.dispatch_event.set()

    async def _dispatch_forever(self) -> None:
        # Not `while True`: on 3.11, wait_for() can swallow a cancellation that arrives as
        # the event is set (which it is, after every step), and shutdown would hang.
        tick = self.settings.tick_seconds
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dispatch_event.wait(), tick * (2 if self.quiet else 1))
            woken = self.dispatch_event.is_set()
            self.dispatch_event.clear()
            if self.intake_stop.is_set():
                continue  # shutting down: no new creates
            # Nothing in flight and nothing due: ask the database only if someone wrote
            # to it (a CLI retry or submit) or a queued job's backoff has run out.
            due_soon = self.next_queued is not None and self.next_queued <= self.clock.now()
            if self.quiet and not woken and not due_soon and not self.dispatch_writes.changed():
                continue
            try:
                await self._dispatch()
            except SQLAlchemyError as exc:  # connection lost, server restarting: next tick
                self._database_trouble("dispatcher", exc)

    async def _dispatch(self) -> None:
        await self.check_clock()
        now = self.clock.now()
        # One round trip per tick (an idle daemon's wake-ups are mostly these).
        remote, due, self.next_queued = await self.store.dispatch_view(
            REMOTE, now, self.gate.limit(now) + len(self.creating)
        )
        self.quiet = remote == 0 and not due and not self.creating and not self.active
        in_flight = remote + len(self.creating)
        free = self.gate.free_slots(now, in_flight)
        if free <= 0:
            return
        for job in due:
            if job.id in self.creating or free <= 0:
                continue
            free -= 1
            self.creating.add(job.id)
            task = asyncio.create_task(self._submit(job, in_flight), name=f"submit:{job.id}")
            self.step_tasks.add(task)
            task.add_done_callback(self.step_tasks.discard)

    async def _submit(self, job: JobRecord, in_flight: int) -> None:
        wake = True
        try:
            new = await self.driver.submit(job, in_flight)
            if new is not None and not new.is_final and new.state != JobState.QUEUED:
                self.schedule(new.id, new.next_action_at)
        except AdmissionFull:
            wake = False  # waking the dispatcher now would only be refused again
        except Exception as exc:
            await self._unexpected(job.id, exc, "submission")
        finally:
            self.creating.discard(job.id)
            if wake:
                self.dispatch_event.set()

    async def _unexpected(self, job_id: str, exc: Exception, what: str) -> None:
        """A bug, not a provider answer: retry a few times (error_retry_seconds apart),
        then fail the job with the error, rather than retry forever."""
        self.last_error = f"job {short(job_id)}: {exc!r}"
        self.step_errors[job_id] += 1
        count = self.step_errors[job_id]
        limit = self.settings.max_step_retries
        log.error(
            "job %s %s failed unexpectedly (%d of %d): %r",
            short(job_id),
            what,
            count,
            limit,
            exc,
            exc_info=count == 1,  # one traceback per job, not one per retry
        )
        with contextlib.suppress(Exception):
            job = await self.store.get(job_id)
            if job.is_final:
                return
            if count >= limit:
                self.step_errors.pop(job_id, None)
                message = f"internal error in {what} after {count} tries: {exc!r}"
                new = await self.driver.fail(job, "internal_error", message)
                if new is not None:
                    await self.job_ended(new)
                return
            later = self.clock.now() + timedelta(seconds=self.settings.error_retry_seconds)
            await self.store.update(job.id, job.version, next_action_at=later)
            if job.state != JobState.QUEUED:
                self.schedule(job.id, later)

    async def job_ended(self, job: JobRecord) -> None:
        """Move the source aside (done/ or failed/ with the reason) once a job ends."""
        self.intake.known.discard(job.source_path)
        cancel = getattr(self.provider, "cancel", None)
        if job.state == JobState.CANCELLED and cancel is not None:
            cancel(job)  # the offline renderer stops; a remote task is left alone
        if job.source_done_at is not None:
            return
        s = self.settings
        if job.drop_folder is not None and job.drop_folder != str(s.drop):
            # Taken over from a daemon watching another folder: its source is not ours
            # to move (a file of the same name here is another file). Leave the job to a
            # daemon that watches that folder.
            with contextlib.suppress(Exception):
                await self.store.let_go(job.id)
            return
        if not PurePosixPath(job.source_path).is_absolute():
            try:
                if job.state == JobState.SUCCEED:
                    if s.delete_sources:
                        await asyncio.to_thread(_delete_source, s.drop / job.source_path)
                    else:
                        await asyncio.to_thread(files.move_aside, s.drop, job.source_path, "done")
                else:
                    note = (
                        f"job {job.id} {job.state}: {job.error_message or 'no reason given'}"
                        f"\n(error code: {job.error_code})"
                    )
                    await asyncio.to_thread(
                        files.move_aside,
                        s.drop,
                        job.source_path,
                        "failed",
                        note=note,
                        note_suffix=".error.txt",
                    )
            except DiskFull as exc:
                self._note_disk_full(str(exc))
                return  # housekeeping tries again
        with contextlib.suppress(Exception):
            fresh = await self.store.get(job.id)
            await self.store.mark_source_done(job.id, fresh.version)

    def _database_trouble(self, where: str, exc: Exception) -> None:
        # The database being away (restart, network, a session the server ended) is not
        # a reason to stop: the loop tries again next tick; one line per kind of error.
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        if what != self.last_error:
            log.error("%s: database error, retrying next tick: %s", where, what)
        self.last_error = what

    def _note_disk_full(self, reason: str) -> None:
        if self.gate.disk_full(reason, self.clock.now()):
            log.error("disk full: %s; intake and downloads paused, retrying every 30s", reason)

    async def _housekeeping_forever(self) -> None:
        beat = 0
        while True:
            await asyncio.sleep(self.settings.tick_seconds * (2 if self.quiet else 1))
            # Jobs ended by the CLI (or before a crash) get their source moved aside.
            look = self.housekeeping_writes.changed() if self.quiet else beat % 2 == 0
            beat += 1
            try:
                if look:
                    for job in await self.store.ended_with_source_in_place():
                        await self.job_ended(job)
                await self.check_clock()
                if beat % 5 == 0:
                    await self._heartbeat()
                    await self._sweep_overdue()
            except SQLAlchemyError as exc:
                self._database_trouble("housekeeping", exc)

    async def _heartbeat(self) -> None:
        counts = await self.store.counts_by_state()
        line = self.status_line(counts)
        self.notifier.status(line)
        assert self.daemon_id is not None
        await self.store.heartbeat(
            self.daemon_id,
            paused_reason=self.gate.paused_reason,
            paused_since=self.gate.paused_since,
            in_flight=sum(counts[s] for s in REMOTE),
            max_in_flight=self.gate.limit(self.clock.now()),
            last_error=self.last_error,
            status=line,
        )

    async def _sweep_overdue(self) -> None:
        """The schedule is derived from the table; this re-derives any wake-up it lost
        (so a scheduler hiccup costs seconds, never a stuck job)."""
        late = self.clock.now() - timedelta(seconds=max(2.0, self.settings.tick_seconds * 5))
        lost = [
            job
            for job in await self.store.due_jobs(late)
            if job.state != JobState.QUEUED
            and job.id not in self.active
            and job.id not in self.queued_ids
        ]
        for job in lost:
            self.wake(job.id)
        if lost:
            log.warning("woke %d overdue jobs the scheduler had not run", len(lost))

    def status_line(self, counts: dict[str, int]) -> str:
        parts = [
            f"{n} {state}" for state, n in counts.items() if n and not JobState(state).is_final
        ]
        line = ", ".join(parts) or "idle"
        if self.gate.paused_reason:
            line += f"; submissions PAUSED: {self.gate.paused_reason}"
        return line

    async def _watchdog_forever(self) -> None:
        assert self.notifier.watchdog_interval is not None
        while True:
            self.notifier.watchdog()  # only sent while the event loop turns
            await asyncio.sleep(self.notifier.watchdog_interval)

    # -- signals, reload, shutdown ------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

    def request_stop(self, sig: int = signal.SIGTERM) -> None:
        if self.stop_event.is_set():
            if sig == signal.SIGINT:
                log.warning("second interrupt: stopping now")
                self._forced = True
                for task in self.step_tasks:
                    task.cancel()
            return
        log.info(
            "%s: stopping (in-flight calls get %.0fs)",
            signal.Signals(sig).name,
            self.settings.shutdown_grace_seconds,
        )
        self.stop_event.set()

    async def reload(self) -> None:
        if self.reload_settings is None:
            return
        self.notifier.reloading()
        try:
            new = self.reload_settings()
        except Exception as exc:
            log.error("reload refused, keeping the old settings: %s", exc)
            self.notifier.send("READY=1")
            return
        old = self.settings
        self.settings = new
        self.driver.settings = new
        self.intake.settings = new
        self.gate.max_in_flight = new.max_in_flight
        self.gate.pause_retry = new.pause_retry_seconds
        creds = (old.api_key, old.access_key, old.secret_key, old.api_base)
        if self._provider is None and creds != (
            new.api_key,
            new.access_key,
            new.secret_key,
            new.api_base,
        ):
            previous = self.provider
            self.provider = build_provider(new, new.resolved_state_dir, self.store.sync.get_blob)
            self.driver.provider = self.provider
            asyncio.get_running_loop().call_later(
                new.shutdown_grace_seconds + 30, lambda: asyncio.ensure_future(previous.aclose())
            )
        if self.gate.resume():
            log.info("reloaded: submissions resumed")
        if self.gate.paused_reason is None:
            self.dispatch_event.set()
        log.info(
            "configuration reloaded (max_in_flight %d, %d presets)",
            new.max_in_flight,
            len(new.presets),
        )
        self.notifier.send("READY=1")

    async def shutdown(self) -> None:
        self.stop_event.set()
        self.notifier.stopping()
        self.intake_stop.set()
        grace = self.settings.shutdown_grace_seconds
        pending = (
            [t for t in [*self.step_tasks, *self.intake.tasks] if not t.done()]
            if hasattr(self, "intake")
            else []
        )
        if pending and not self._forced:
            log.info("waiting up to %.0fs for %d in-flight calls", grace, len(pending))
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
        deadline = time.monotonic() + grace
        while self.active and time.monotonic() < deadline and not self._forced:
            await asyncio.sleep(0.05)
        for task in self.tasks:
            task.cancel()
        everything = [t for t in [*self.tasks, *self.step_tasks] if not t.done()]
        if everything:
            # Bounded: a task that ignores its cancellation must not keep the process
            # (systemd would SIGKILL it at TimeoutStopSec); name it so it can be fixed.
            _, stuck = await asyncio.wait(everything, timeout=grace)
            for task in stuck:
                where = "".join(
                    f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}; "
                    for f in task.get_stack()
                )
                log.warning("task %s did not stop when cancelled: %s", task.get_name(), where)
        if hasattr(self, "scheduler"):
            self.scheduler.shutdown(wait=False)
        if hasattr(self, "provider"):
            with contextlib.suppress(Exception):
                await self.provider.aclose()
        if hasattr(self, "store"):
            if self.daemon_id is not None:
                with contextlib.suppress(Exception):
                    if self.shared:  # other daemons may take our jobs at once
                        released = await self.store.release()
                        log.info("released %d jobs to other daemons", released)
                    await self.store.stop_daemon(self.daemon_id)
            self.store.close()
            log.info("store: %d write transactions in this run", self.store.sync.write_count)
            log.info("store calls: %s", dict(self.store.calls.most_common()))
            self.store.sync.close()
        if hasattr(self, "intake"):
            self.intake.close_pool()
        for watch in (
            getattr(self, "dispatch_writes", None),
            getattr(self, "housekeeping_writes", None),
        ):
            if watch is not None:
                watch.close()
        if self.lock is not None:
            self.lock.release()
        log.info("stopped")


def _sqlite_url(db: str) -> str:
    from state.db import normalize_url

    return normalize_url(db)


def _delete_source(path: Path) -> None:
    for p in (path, path.with_suffix(".json"), path.with_suffix(".txt")):
        p.unlink(missing_ok=True)
