"""The provider interface the daemon drives; it never knows which implementation it has.

Implementations: daemon.kling_provider.KlingProvider (HTTP) and
daemon.local_provider.LocalProvider (the offline renderer). Both raise only
daemon.errors exceptions and return daemon.kling_parse.RemoteTask values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from daemon.kling_client import Lookup
from daemon.kling_parse import RemoteTask
from state.store import JobRecord

Notes = list[dict[str, Any]]


class Provider(Protocol):
    name: str

    async def create(
        self, job: JobRecord, image: bytes, external_task_id: str, notes: Notes
    ) -> RemoteTask:
        """Start the remote task; idempotent on `external_task_id`."""
        ...

    async def query(self, job: JobRecord, notes: Notes) -> RemoteTask:
        """The current state of the job's remote task (job.remote_task_id)."""
        ...

    async def find(self, job: JobRecord, external_task_id: str) -> Lookup:
        """Whether a task with this external id exists (crash reconciliation)."""
        ...

    async def fetch(self, job: JobRecord, dest: Path) -> int:
        """Put the finished video at `dest` (download or move); returns its size."""
        ...

    async def aclose(self) -> None: ...
