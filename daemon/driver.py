"""The job steps: submit, poll, download. Each re-reads nothing it was not given, does its
I/O through the provider, and reports the outcome to the store as ONE transition or one
bookkeeping update. The daemon (daemon.service) decides when a step runs."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from daemon import files
from daemon.async_store import AsyncStore
from daemon.config import Settings
from daemon.errors import (
    AccountError,
    ConcurrencyLimited,
    DiskFull,
    DownloadRejected,
    JobRejected,
    ProviderError,
    RateLimited,
    TransientError,
)
from daemon.gate import Gate
from daemon.kling_client import LookupOutcome
from daemon.kling_parse import RemoteStatus, RemoteTask
from daemon.provider import Provider
from state.clock import Clock
from state.errors import StaleJob
from state.lifecycle import IllegalTransition, JobEvent, JobState
from state.policies import Backoff, ExpectedTimes, PollPolicy, estimate_key
from state.store import JobRecord

log = logging.getLogger("dropreel.jobs")


def short(job_id: str) -> str:
    return job_id[:8]


def external_id_for(job: JobRecord) -> str:
    # Kling requires external ids unique per account: later attempts get their own.
    return job.id if job.attempt == 1 else f"{job.id}-{job.attempt}"


@dataclass
class Driver:
    store: AsyncStore
    provider: Provider
    settings: Settings
    clock: Clock
    gate: Gate
    rng: random.Random = field(default_factory=random.Random)
    expected: ExpectedTimes = field(default_factory=ExpectedTimes)
    on_end: Callable[[JobRecord], Any] | None = None  # called with every job that ended
    claimed_outputs: set[Path] = field(default_factory=set)
    # False while this daemon cannot be sure it still holds its jobs (shared table, lease
    # not renewed in time): no create call is sent then.
    may_act: Callable[[], bool] = lambda: True
    shared = False  # other daemons share the table: admission counts the whole table

    def __post_init__(self) -> None:
        s = self.settings
        self.poll_policy = PollPolicy(s.poll_min_seconds, s.poll_max_seconds)
        self.backoff = Backoff(base=min(2.0, s.poll_min_seconds), cap=300.0)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def later(self, seconds: float) -> datetime:
        return self.now + timedelta(seconds=seconds)

    # -- outcomes --------------------------------------------------------------------------

    async def _transition(self, job: JobRecord, event: JobEvent, **kw: Any) -> JobRecord | None:
        try:
            new = await self.store.transition(job.id, event, expected_version=job.version, **kw)
        except (StaleJob, IllegalTransition) as exc:
            # Someone else (the CLI's cancel/retry) moved the job first: their word stands.
            log.info("job %s %s skipped: %s", short(job.id), event, exc)
            return None
        log.info(
            "job %s %s -> %s%s",
            short(job.id),
            event.value,
            new.state,
            f" ({new.error_message})" if new.error_message and new.is_final else "",
        )
        if new.is_final and self.on_end is not None:
            await self.on_end(new)
        return new

    async def _bookkeep(self, job: JobRecord, **changes: Any) -> JobRecord | None:
        try:
            return await self.store.update(job.id, job.version, **changes)
        except StaleJob:
            return None

    async def fail(
        self, job: JobRecord, code: str, message: str, **detail: Any
    ) -> JobRecord | None:
        return await self._transition(
            job,
            JobEvent.FAIL,
            error_code=code,
            error_message=message,
            next_action_at=None,
            detail={"error_code": code, "error": message, **detail},
        )

    async def _retry_later(
        self,
        job: JobRecord,
        exc: ProviderError | str,
        *,
        count: bool = True,
        delay: float | None = None,
        **changes: Any,
    ) -> JobRecord | None:
        """Back off this step; after max_step_retries counted failures, fail the job."""
        retries = job.retries + (1 if count else 0)
        reason = str(exc)
        if retries >= self.settings.max_step_retries:
            return await self.fail(
                job,
                "gave_up",
                f"gave up after {retries} attempts: {reason}",
                last_error=_describe(exc),
            )
        retry_after = getattr(exc, "retry_after", None)
        wait = delay if delay is not None else self.backoff.delay(retries, self.rng, retry_after)
        log.info("job %s %s; retrying in %.1fs", short(job.id), reason, wait)
        return await self._bookkeep(
            job, retries=retries, next_action_at=self.later(wait), **changes
        )

    # -- submit (queued) -------------------------------------------------------------------

    async def submit(self, job: JobRecord, in_flight: int) -> JobRecord | None:
        notes: list[dict[str, Any]] = []
        if job.remote_task_id and job.create_sent_at is None and job.attempt > 1:
            adopted = await self._adopt_previous(job, notes)
            if adopted is not False:
                return adopted
        ext = job.external_task_id if job.create_sent_at else external_id_for(job)
        assert ext is not None
        if job.create_sent_at is not None:
            # A create may have reached the provider before we crashed: ask before sending.
            try:
                found = await self.provider.find(job, ext)
            except ProviderError as exc:
                return await self._handle_submit_error(job, exc, in_flight, keep_sent=True)
            if found.outcome is LookupOutcome.FOUND and found.task is not None:
                return await self._accepted(job, found.task, notes, reconciled=True)
            if found.outcome is LookupOutcome.UNKNOWN:
                return await self._retry_later(
                    job,
                    "a create may have been sent before a crash and the provider cannot "
                    "say whether it exists; not sending another",
                    count=True,
                )
        # Recorded before the call, and only within the in-flight limit counted over the
        # whole table (several daemons share the provider account's limit).
        try:
            admitted = await self.store.admit(
                job.id,
                job.version,
                self.gate.limit(self.now) if self.shared else None,
                create_sent_at=self.now,
                external_task_id=ext,
            )
        except StaleJob as exc:
            log.info("job %s not submitted: %s", short(job.id), exc)
            return None
        if admitted is None:
            raise AdmissionFull(job.id)
        job = admitted
        if not self.may_act():
            log.warning("job %s: lease not renewed in time; create not sent", short(job.id))
            return None
        image = await self.store.get_blob(job.input_sha256)
        try:
            task = await self.provider.create(job, image, ext, notes)
        except ProviderError as exc:
            return await self._handle_submit_error(job, exc, in_flight, notes=notes)
        return await self._accepted(job, task, notes)

    async def _adopt_previous(
        self, job: JobRecord, notes: list[dict[str, Any]]
    ) -> JobRecord | bool | None:
        """A retried job whose earlier remote task may have finished late: adopt it rather
        than paying for a second generation. False when there is nothing to adopt."""
        try:
            task = await self.provider.query(job, notes)
        except ProviderError as exc:
            if isinstance(exc, JobRejected):
                return False  # the provider does not know it any more
            return await self._retry_later(job, exc)
        if task.status is RemoteStatus.FAILED:
            return False
        return await self._accepted(job, task, notes, adopted=True)

    async def _accepted(
        self, job: JobRecord, task: RemoteTask, notes: list[dict[str, Any]], **flags: Any
    ) -> JobRecord | None:
        self.gate.submitted_ok()
        deadline = self.later(self.settings.deadline_minutes * 60)
        expected = self._expected(job)
        first = self.poll_policy.next_delay(0, expected, self.rng)
        new = await self._transition(
            job,
            JobEvent.ACCEPTED,
            remote_task_id=task.task_id,
            deadline_at=deadline,
            next_action_at=self.later(first),
            poll_count=0,
            detail={
                "task_id": task.task_id,
                "external_task_id": job.external_task_id,
                "expected_seconds": round(expected, 1),
                **flags,
                **({"retries": notes} if notes else {}),
            },
        )
        if new is not None and task.status in (
            RemoteStatus.DONE,
            RemoteStatus.FAILED,
            RemoteStatus.PROCESSING,
        ):
            return await self._on_task(new, task, [])
        return new

    async def _handle_submit_error(
        self,
        job: JobRecord,
        exc: ProviderError,
        in_flight: int,
        *,
        notes: list[dict[str, Any]] | None = None,
        keep_sent: bool = False,
    ) -> JobRecord | None:
        now = self.now
        if isinstance(exc, JobRejected):
            return await self.fail(
                job,
                exc.kind if exc.code is None else str(exc.code),
                str(exc),
                provider=exc.describe(),
                retries=notes or [],
            )
        if isinstance(exc, AccountError):
            if self.gate.pause(str(exc), now):
                log.error(
                    "submissions paused: %s (jobs stay queued; running jobs are still "
                    "polled; retrying in %.0fs or on SIGHUP)",
                    exc,
                    self.gate.pause_retry,
                )
            # A refused create created nothing: no reconciliation needed for it. The job
            # keeps its place in the queue; the gate holds submissions until the pause ends.
            if keep_sent:
                return await self._bookkeep(job, next_action_at=self.gate.probe_at)
            return await self._bookkeep(job, create_sent_at=None)
        if isinstance(exc, ConcurrencyLimited):
            cap = self.gate.concurrency_refused(in_flight, now)
            log.warning(
                "provider refused a task for concurrency (%s): in-flight limit now %d", exc, cap
            )
            return await self._retry_later(
                job, exc, count=False, create_sent_at=None if not keep_sent else job.create_sent_at
            )
        if isinstance(exc, RateLimited):
            if self.gate.rate_limited(now, str(exc)):
                log.error("submissions paused: %s", self.gate.paused_reason)
            return await self._retry_later(
                job, exc, count=False, create_sent_at=None if not keep_sent else job.create_sent_at
            )
        # Transient (timeouts, 5xx, resets): the create may or may not have arrived; the
        # next try asks the provider first (create_sent_at stays set).
        return await self._retry_later(job, exc)

    # -- poll (submitted / processing) -------------------------------------------------

    async def poll(self, job: JobRecord) -> JobRecord | None:
        notes: list[dict[str, Any]] = []
        try:
            task = await self.provider.query(job, notes)
        except AccountError as exc:
            self.gate.pause(str(exc), self.now)
            return await self._poll_failed(job, exc, count=False)
        except JobRejected as exc:  # the provider no longer knows the task
            return await self._poll_failed(job, exc, count=True)
        except (TransientError, RateLimited) as exc:
            return await self._poll_failed(job, exc, count=False)
        return await self._on_task(job, task, notes)

    async def _poll_failed(
        self, job: JobRecord, exc: ProviderError, *, count: bool
    ) -> JobRecord | None:
        if job.deadline_at is not None and self.now >= job.deadline_at:
            return await self._expire(job, f"last poll failed: {exc}")
        if count:
            return await self._retry_later(job, exc)
        wait = self.backoff.delay(job.retries + 1, self.rng, exc.retry_after)
        log.info("job %s poll failed: %s; next poll in %.1fs", short(job.id), exc, wait)
        return await self._bookkeep(
            job, retries=job.retries + 1, next_action_at=self.later(min(wait, 300))
        )

    async def _on_task(
        self, job: JobRecord, task: RemoteTask, notes: list[dict[str, Any]]
    ) -> JobRecord | None:
        polls = job.poll_count + 1
        extra = {"retries": notes} if notes else {}
        if task.status is RemoteStatus.DONE:
            if not task.video_url:
                return await self._retry_later(
                    job, "the provider reports success without a video URL"
                )
            return await self._finished(job, task, polls, extra)
        if task.status is RemoteStatus.FAILED:
            text = task.message or "the provider reports the task failed (no reason given)"
            code = "content_policy" if "risk control" in text.lower() else "remote_failed"
            return await self.fail(job, code, text, task_id=task.task_id, polls=polls, **extra)
        if job.deadline_at is not None and self.now >= job.deadline_at:
            return await self._expire(job, f"remote status still {task.raw_status}")
        delay = self.poll_policy.next_delay(self._elapsed(job), self._expected(job), self.rng)
        if task.status is RemoteStatus.PROCESSING and job.state == JobState.SUBMITTED:
            return await self._transition(
                job,
                JobEvent.PROGRESSED,
                poll_count=polls,
                next_action_at=self.later(delay),
                detail={"remote_status": task.raw_status, **extra},
            )
        return await self._bookkeep(
            job, poll_count=polls, retries=0, next_action_at=self.later(delay)
        )

    def _expected(self, job: JobRecord) -> float:
        hint = getattr(self.provider, "default_expected", None)
        return self.settings.expected_seconds or self.expected.expected(job.params, hint)

    def _elapsed(self, job: JobRecord) -> float:
        start = (
            job.deadline_at - timedelta(minutes=self.settings.deadline_minutes)
            if job.deadline_at
            else job.updated_at
        )
        return max(0.0, (self.now - start).total_seconds())

    async def _finished(
        self, job: JobRecord, task: RemoteTask, polls: int, extra: dict[str, Any]
    ) -> JobRecord | None:
        seconds = self._elapsed(job)
        # Learn from the provider's own timestamps where it gives them: our elapsed time
        # includes the wait until our poll, and learning from it would make every later
        # first poll later still (a feedback loop the poll benchmark showed: 3 polls per
        # job, but videos on disk 100 s after they were done).
        generation = _provider_seconds(task)
        key = estimate_key(job.params)
        self.expected.add(key, generation if generation is not None else seconds)
        dest = self._choose_output(job)
        self.claimed_outputs.add(dest)
        return await self._transition(
            job,
            JobEvent.FINISHED_REMOTE,
            video_url=task.video_url,
            output_path=str(dest),
            poll_count=polls,
            next_action_at=self.now,
            detail={
                "remote_seconds": round(seconds, 3),
                **({"generation_seconds": round(generation, 3)} if generation is not None else {}),
                "estimate_key": key,
                "polls": polls,
                "task_id": task.task_id,
                **extra,
            },
        )

    def _choose_output(self, job: JobRecord) -> Path:
        rel = job.source_path
        if PurePosixPath(rel).is_absolute():
            rel = PurePosixPath(rel).name
        return files.unique_path(files.output_for(self.settings.output, rel), self.claimed_outputs)

    async def _expire(self, job: JobRecord, why: str) -> JobRecord | None:
        minutes = self.settings.deadline_minutes
        return await self._transition(
            job,
            JobEvent.EXPIRE,
            error_code="timeout",
            error_message=(
                f"no result within {minutes:g} min ({why}); `dropreel retry` asks "
                "the provider about this task before submitting anew"
            ),
            next_action_at=None,
            detail={"why": why, "task_id": job.remote_task_id},
        )

    # -- download (downloading) ----------------------------------------------------------

    async def download(self, job: JobRecord) -> JobRecord | None:
        assert job.output_path is not None
        dest = Path(job.output_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Mark the step as begun (updated_at): crash recovery counts only begun steps.
        started = await self._bookkeep(job, next_action_at=self.later(300))
        if started is None:
            return None
        job = started
        try:
            size = await self.provider.fetch(job, dest)
            await _in_thread(files.write_json, dest.with_suffix(".json"), self._sidecar(job))
        except DiskFull as exc:
            if self.gate.disk_full(str(exc), self.now):
                log.error("disk full: %s; intake and downloads paused, retrying", exc)
            return await self._bookkeep(job, next_action_at=self.later(30))
        except DownloadRejected as exc:
            return await self._refresh_url(job, exc)
        except JobRejected as exc:
            return await self.fail(job, "download_rejected", str(exc))
        except (TransientError, RateLimited) as exc:
            return await self._retry_later(job, exc)
        self.gate.disk_ok()
        self.claimed_outputs.discard(dest)
        return await self._transition(
            job, JobEvent.STORED, next_action_at=None, detail={"output": str(dest), "bytes": size}
        )

    async def _refresh_url(self, job: JobRecord, exc: ProviderError) -> JobRecord | None:
        """A result URL that refuses us may have expired: ask the provider for a new one."""
        if job.retries + 1 >= 3:
            return await self.fail(
                job, "download_rejected", f"the result URL keeps refusing us: {exc}"
            )
        try:
            task = await self.provider.query(job, [])
            url = task.video_url or job.video_url
        except ProviderError:
            url = job.video_url
        return await self._retry_later(job, exc, video_url=url)

    def _sidecar(self, job: JobRecord) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "source": job.source_path,
            "attempt": job.attempt,
            "provider": job.provider,
            "task_id": job.remote_task_id,
            "external_task_id": job.external_task_id,
            "prompt": job.params.get("prompt"),
            "parameters": job.params,
            "input_sha256": job.input_sha256,
            "created_at": job.created_at.isoformat(),
            "downloaded_at": self.now.isoformat(),
        }


def _describe(exc: ProviderError | str) -> Any:
    return exc.describe() if isinstance(exc, ProviderError) else str(exc)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


class AdmissionFull(Exception):
    """The in-flight limit, counted over the whole shared table, is reached: the job stays
    queued as it was, and the dispatcher's next tick tries again."""


def _provider_seconds(task: RemoteTask) -> float | None:
    """Generation time by the provider's clock (created → updated), when plausible."""
    if task.created_at is None or task.updated_at is None:
        return None
    seconds = (task.updated_at - task.created_at).total_seconds()
    return seconds if 0 < seconds < 86400 else None
