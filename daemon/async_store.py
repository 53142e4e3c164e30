"""The store from the event loop: each call runs in a worker thread and is shielded, so a
cancelled caller never abandons a transaction half-way (it completes, or it raises)."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from state.store import Store

T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: Store, threads: int = 4) -> None:
        self.sync = store
        self.calls: Counter[str] = Counter()  # per method: what a benchmark reports
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        return await asyncio.shield(future)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.sync, name)

        async def bound(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await self.call(method, *args, **kwargs)

        return bound

    def close(self) -> None:
        self._pool.shutdown(wait=True)
