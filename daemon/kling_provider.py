"""The Kling provider: the daemon's Provider interface over KlingClient."""

from __future__ import annotations

from pathlib import Path

from daemon.errors import TransientError
from daemon.kling_client import KlingClient, Lookup
from daemon.kling_parse import RemoteTask
from daemon.provider import Notes
from state.store import JobRecord


class KlingProvider:
    name = "kling"

    def __init__(self, client: KlingClient) -> None:
        self.client = client

    async def create(
        self, job: JobRecord, image: bytes, external_task_id: str, notes: Notes
    ) -> RemoteTask:
        url = job.params.get("image_url")
        return await self.client.create(
            job.params,
            image=None if url else image,
            image_url=url,
            external_task_id=external_task_id,
            notes=notes,
        )

    async def query(self, job: JobRecord, notes: Notes) -> RemoteTask:
        if not job.remote_task_id:
            raise TransientError(f"job {job.id} has no remote task id to query")
        return await self.client.query(job.remote_task_id, notes=notes)

    async def find(self, job: JobRecord, external_task_id: str) -> Lookup:
        return await self.client.find_by_external_id(external_task_id)

    async def fetch(self, job: JobRecord, dest: Path) -> int:
        if not job.video_url:
            raise TransientError(f"job {job.id} has no video URL yet")
        return await self.client.download(job.video_url, dest)

    async def aclose(self) -> None:
        await self.client.aclose()
