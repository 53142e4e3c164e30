"""The HTTP floor of the life cycle: only the provider calls one job needs (create, one
status query, download), through the daemon's own KlingClient and pool bound, with no
database, no files watched and no scheduling. Run as a separate process against the
simulator, like the daemon, so the ceiling it prints is the most any daemon design built
on this client could reach on this machine with the simulator beside it.

    python -m tests.bench.http_floor BASE_URL KEY JOBS CONCURRENCY OUT_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from daemon.kling_auth import StaticKeyAuth
from daemon.kling_client import KlingClient
from state.params import effective
from tests.bench.scenarios import small_png


async def _run(base: str, key: str, jobs: int, concurrency: int, out: Path) -> dict[str, float]:
    client = KlingClient(base, StaticKeyAuth(key))
    params = effective({}, None, {})
    image = small_png(7)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            task = await client.create(params, image=image, external_task_id=f"floor-{i}")
            task = await client.query(task.task_id)
            if task.video_url is None:
                raise RuntimeError(f"task {task.task_id} not finished: {task.status}")
            await client.download(task.video_url, out / f"floor-{i}.mp4")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    await client.aclose()
    return {"jobs": jobs, "seconds": round(seconds, 2), "jobs_per_second": round(jobs / seconds, 1)}


def main() -> None:
    base, key, jobs, concurrency, out = sys.argv[1:6]
    result = asyncio.run(_run(base, key, int(jobs), int(concurrency), Path(out)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
