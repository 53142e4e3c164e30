"""Group commit for intake: files that finish their checks while a batch is being
written are recorded together in the next transaction, so a burst of drops costs one
durable commit per batch instead of one per file."""

from __future__ import annotations

import logging

from daemon.async_store import AsyncStore
from daemon.batcher import Batcher
from state.store import Existing, JobRecord, NewJob

log = logging.getLogger("dropreel.intake")


class Recorder:
    def __init__(self, store: AsyncStore, max_batch: int = 256) -> None:
        self.store = store
        self.batcher: Batcher[NewJob, JobRecord | Existing] = Batcher(
            self._record_batch, max_batch=max_batch, name="intake-recorder"
        )

    async def record(self, item: NewJob) -> JobRecord | Existing:
        """The new job, or the existing job that is the same work; raises
        DuplicateIntake if a daemon sharing the folder recorded this very file."""
        return await self.batcher.submit(item)

    async def _record_batch(
        self, items: list[NewJob]
    ) -> list[JobRecord | Existing | BaseException]:
        try:
            return list(await self.store.record_jobs(items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            # One item's trouble must not fail the others: one at a time.
            log.warning("recording %d files at once failed (%r); one by one", len(items), exc)
            results: list[JobRecord | Existing | BaseException] = []
            for item in items:
                results.extend(await self._record_batch([item]))
            return results
