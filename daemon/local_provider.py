"""The offline provider: renders with daemon.render in a pool of worker processes and
goes through the same life cycle as a remote task (submitted → processing → downloading →
succeed), so the daemon, CLI, crash recovery and history behave identically.

Task ids are `local-<external id>`; the render lands in `<renders>/<task>.mp4` through an
atomic rename. After a crash the file either exists (done) or not (render again: renders
are deterministic, so a redo gives the same bytes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from daemon.errors import DiskFull, JobRejected, TransientError
from daemon.kling_client import Lookup, LookupOutcome
from daemon.kling_parse import RemoteStatus, RemoteTask
from daemon.pool import worker_pool
from daemon.provider import Notes
from daemon.render import RenderCancelled, render
from state.store import JobRecord


class LocalProvider:
    name = "local"

    def __init__(
        self, renders: Path, max_workers: int = 2, load_image: Callable[[str], bytes] | None = None
    ) -> None:
        self.renders = renders.absolute()
        self.load_image = load_image  # input bytes by sha256, to redo a render after a crash
        self.renders.mkdir(parents=True, exist_ok=True)
        workers = max(1, min(max_workers, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._workers = workers
        self._running: dict[str, Future[dict]] = {}

    @property
    def default_expected(self) -> float:
        return 6.0  # seconds for a 5 s clip on one core here, before history exists

    def _path(self, task_id: str) -> Path:
        return self.renders / f"{task_id}.mp4"

    def _cancel_flag(self, task_id: str) -> Path:
        return self.renders / f"{task_id}.cancel"

    def _start(self, task_id: str, image: bytes, params: dict) -> None:
        if self._pool is None:
            self._pool = worker_pool(self._workers)
        self._cancel_flag(task_id).unlink(missing_ok=True)
        self._running[task_id] = self._pool.submit(
            render, image, params, str(self._path(task_id)), str(self._cancel_flag(task_id))
        )

    def _task(self, task_id: str, status: RemoteStatus, message: str = "") -> RemoteTask:
        path = self._path(task_id)
        return RemoteTask(
            task_id=task_id,
            status=status,
            raw_status=status.value,
            message=message,
            video_url=path.as_uri() if status is RemoteStatus.DONE else None,
            created_at=datetime.now(UTC),
        )

    async def create(
        self, job: JobRecord, image: bytes, external_task_id: str, notes: Notes
    ) -> RemoteTask:
        task_id = f"local-{external_task_id}"
        if not self._path(task_id).exists() and task_id not in self._running:
            self._start(task_id, image, job.params)
        return self._task(task_id, RemoteStatus.SUBMITTED)

    async def query(self, job: JobRecord, notes: Notes) -> RemoteTask:
        task_id = job.remote_task_id or ""
        if self._path(task_id).exists():
            self._running.pop(task_id, None)
            return self._task(task_id, RemoteStatus.DONE)
        future = self._running.get(task_id)
        if future is None:  # the daemon restarted mid-render: render again
            if self.load_image is None:
                raise TransientError(f"render of {task_id} is not running")
            image = await asyncio.to_thread(self.load_image, job.input_sha256)
            self._start(task_id, image, job.params)
            return self._task(task_id, RemoteStatus.PROCESSING)
        if not future.done():
            return self._task(task_id, RemoteStatus.PROCESSING)
        self._running.pop(task_id, None)
        exc = future.exception()
        if exc is None:
            return self._task(task_id, RemoteStatus.DONE)
        if isinstance(exc, OSError) and exc.errno == 28:
            raise DiskFull(f"no space left to render {task_id}")
        if isinstance(exc, RenderCancelled):
            return self._task(task_id, RemoteStatus.FAILED, "render cancelled")
        return self._task(task_id, RemoteStatus.FAILED, f"render failed: {exc!r}")

    async def find(self, job: JobRecord, external_task_id: str) -> Lookup:
        task_id = f"local-{external_task_id}"
        if self._path(task_id).exists():
            return Lookup(LookupOutcome.FOUND, self._task(task_id, RemoteStatus.DONE))
        return Lookup(LookupOutcome.ABSENT)

    async def fetch(self, job: JobRecord, dest: Path) -> int:
        src = self._path(job.remote_task_id or "")
        if not src.exists():
            raise JobRejected(f"the render of job {job.id} is gone; retry the job")
        try:
            return await asyncio.to_thread(_place, src, dest)
        except OSError as exc:
            if exc.errno == 28:
                raise DiskFull(f"no space left for {dest}") from None
            raise

    def cancel(self, job: JobRecord) -> None:
        if job.remote_task_id and job.remote_task_id in self._running:
            self._cancel_flag(job.remote_task_id).touch()

    async def aclose(self) -> None:
        for task_id in list(self._running):
            self._cancel_flag(task_id).touch()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _place(src: Path, dest: Path) -> int:
    """Move the render into the output folder (copy + fsync + rename across filesystems)."""
    part = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(src, part)
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    size = dest.stat().st_size
    src.unlink(missing_ok=True)
    return size
