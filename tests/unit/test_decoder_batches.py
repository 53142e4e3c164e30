"""Decoding in batches must keep what one call per file gave: a decoder that dies on one
hostile file fails that file only, and the next call gets a fresh pool. The dying worker
is simulated (a real C-library crash cannot be produced on demand): its pool answers a
batch holding the hostile file with BrokenProcessPool, as a dead worker's pool does."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from daemon.config import Settings
from daemon.intake import InvalidImage, Prepared
from daemon.watcher import Intake
from state.clock import ManualClock
from tests.helpers import png_bytes


class CrashOn(Executor):
    """Runs calls in-process, but 'dies' on any batch that holds a file named crash*."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        names = [name for _, name in args[0]]
        self.calls.append(names)
        if any(name.startswith("crash") for name in names):
            future.set_exception(BrokenProcessPool("a worker died"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_a_crashing_file_fails_alone_and_the_pool_is_replaced(tmp_path: Path) -> None:
    pools: list[CrashOn] = []

    def make_pool() -> Executor:
        pools.append(CrashOn())
        return pools[-1]

    intake = Intake(
        Settings(drop=tmp_path),
        store=None,  # type: ignore[arg-type]  # not reached: decoding only
        clock=ManualClock(),
        make_pool=make_pool,
        provider_name="local",
        on_job=lambda: None,
        on_end_fail=lambda job: asyncio.sleep(0),  # type: ignore[arg-type]
        is_disk_full=lambda: False,
    )
    names = ["a.png", "b.png", "crash.png", "c.png"]

    async def burst() -> list[Prepared | BaseException]:
        return await asyncio.gather(
            *(intake._prepare(png_bytes(400, 400, (i, 0, 0)), n) for i, n in enumerate(names)),
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    ok = [r for r in results if isinstance(r, Prepared)]
    [failed] = [r for r in results if not isinstance(r, Prepared)]
    assert len(ok) == 3 and all(r.width == 400 for r in ok)
    assert isinstance(failed, InvalidImage) and failed.code == "decoder_crashed"
    assert results[2] is failed and "crash.png" in str(failed)
    # One batch for all four (they arrived together); it died, so the files were retried
    # one by one on a fresh pool; the culprit killed that one too; the rest went on a third.
    assert [p.calls for p in pools] == [
        [names],
        [["a.png"], ["b.png"], ["crash.png"]],
        [["c.png"]],
    ]
