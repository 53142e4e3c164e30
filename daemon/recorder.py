"""Group commit for intake: files that finish their checks while a batch is being
written wait together and are recorded in the next transaction, so a burst of drops
costs one durable commit per batch instead of one per file. A quiet folder still gets
each file recorded at once (a batch of one)."""

from __future__ import annotations

import asyncio
import logging

from daemon.async_store import AsyncStore
from state.errors import DuplicateIntake
from state.store import Existing, JobRecord, NewJob

log = logging.getLogger("dropreel.intake")
Result = JobRecord | Existing | DuplicateIntake


class Recorder:
    def __init__(self, store: AsyncStore, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._waiting: list[tuple[NewJob, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    async def record(self, item: NewJob) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="intake-recorder")
        # Shielded: a cancelled ingest (shutdown) leaves its record to finish or fail whole.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            results: list[Result | BaseException]
            try:
                results = list(await self.store.record_jobs([item for item, _ in batch]))
            except Exception as exc:
                if len(batch) == 1:
                    results = [exc]
                else:  # one item's trouble must not fail the others: one at a time
                    log.warning(
                        "recording %d files at once failed (%r); one by one", len(batch), exc
                    )
                    results = []
                    for item, _ in batch:
                        try:
                            results.extend(await self.store.record_jobs([item]))
                        except Exception as one:
                            results.append(one)
            self.batches += 1
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException) and not isinstance(result, DuplicateIntake):
                    future.set_exception(result)
                else:
                    future.set_result(result)
