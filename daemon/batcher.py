"""Batching for a burst: items submitted while earlier batches are in flight wait together
and go in the next call, so a thousand files cost a few dozen calls (process-pool round
trips, database transactions) instead of a thousand. A lone item goes at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R | BaseException]]],
        *,
        max_batch: int,
        concurrency: int = 1,
        name: str = "batcher",
    ) -> None:
        """`run` answers a batch with one result per item, in order (an exception for an
        item that failed); `concurrency` batches may be in flight at once."""
        self.run, self.max_batch, self.concurrency, self.name = run, max_batch, concurrency, name
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._drains: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def submit(self, item: T) -> R:
        """The item's result; raises its exception. Shielded: a cancelled caller leaves
        its item to complete with its batch (never half-done)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._drains) < self.concurrency:
            task = asyncio.create_task(self._drain(), name=self.name)
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                results = await self.run([item for item, _ in batch])
            except Exception as exc:  # the whole call failed: every item says so
                results = [exc] * len(batch)
            self.batches += 1
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
