"""The HTTP floor of the life cycle: only the provider calls one job needs (create, one
status query, download), with no database, no files watched and no scheduling. Run as a
separate process against the simulator, like the daemon, so the ceiling it prints is the
most a daemon built on that client could reach on this machine with the simulator beside
it. CLIENT is `kling` (the daemon's own KlingClient and pool bound), or bare httpx to show
what the library itself costs: `httpx-async` (AsyncClient, CONCURRENCY connections) or
`httpx-sync` (httpx.Client in CONCURRENCY threads).

    python -m tests.bench.http_floor BASE_URL KEY JOBS CONCURRENCY OUT_DIR [CLIENT]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from daemon.kling_auth import StaticKeyAuth
from daemon.kling_client import KlingClient
from state.params import effective
from tests.bench.scenarios import small_png

CREATE = "/v1/videos/image2video"


async def _kling(base: str, key: str, jobs: int, concurrency: int, out: Path) -> None:
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

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.aclose()


def _create_body() -> dict[str, Any]:
    """The daemon's own create request (so the bare clients send the same bytes)."""
    client = KlingClient("http://unused", StaticKeyAuth("unused"))
    body = client.create_body(effective({}, None, {}), image=small_png(7), external_task_id="")
    asyncio.run(client.aclose())
    return body


def _video_url(answer: httpx.Response) -> str:
    return str(answer.json()["data"]["task_result"]["videos"][0]["url"])


async def _bare_async(
    base: str, key: str, jobs: int, concurrency: int, out: Path, template: dict[str, Any]
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=auth, limits=limits) as c:

        async def job(i: int) -> None:
            answer = await c.post(CREATE, json={**template, "external_task_id": f"floor-{i}"})
            task_id = answer.json()["data"]["task_id"]
            video = await c.get(_video_url(await c.get(f"{CREATE}/{task_id}")))
            (out / f"floor-{i}.mp4").write_bytes(video.content)

        queue = list(range(jobs))

        async def worker() -> None:
            while queue:
                await job(queue.pop())

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _bare_sync(
    base: str, key: str, jobs: int, concurrency: int, out: Path, template: dict[str, Any]
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=base, headers=auth, limits=limits) as c:

        def job(i: int) -> None:
            answer = c.post(CREATE, json={**template, "external_task_id": f"floor-{i}"})
            task_id = answer.json()["data"]["task_id"]
            video = c.get(_video_url(c.get(f"{CREATE}/{task_id}")))
            (out / f"floor-{i}.mp4").write_bytes(video.content)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(job, range(jobs)))


def run(base: str, key: str, jobs: int, concurrency: int, out: Path, client: str) -> dict[str, Any]:
    template = _create_body()
    started, cpu = time.perf_counter(), time.process_time()
    if client == "kling":
        asyncio.run(_kling(base, key, jobs, concurrency, out))
    elif client == "httpx-async":
        asyncio.run(_bare_async(base, key, jobs, concurrency, out, template))
    elif client == "httpx-sync":
        _bare_sync(base, key, jobs, concurrency, out, template)
    else:
        raise SystemExit(f"unknown client {client!r}")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "jobs": jobs,
        "client": client,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(jobs / seconds, 1),
        "client_cpu_ms_per_job": round(cpu * 1000 / jobs, 2),
    }


def main() -> None:
    base, key, jobs, concurrency, out = sys.argv[1:6]
    client = sys.argv[6] if len(sys.argv) > 6 else "kling"
    print(json.dumps(run(base, key, int(jobs), int(concurrency), Path(out), client)))


if __name__ == "__main__":
    main()
