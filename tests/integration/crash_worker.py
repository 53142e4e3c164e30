"""Child process for the crash test: random legal transitions on a few jobs, forever."""

import contextlib
import random
import sys

from state.errors import StaleJob
from state.lifecycle import allowed_events
from state.store import Store

store = Store.open(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
jobs = [j.id for j in store.live_jobs()] or []
while len(jobs) < 5:
    jobs.append(
        store.create_job(
            source_path=f"{len(jobs)}.png",
            data=rng.randbytes(64),
            media_type="image/png",
            params={},
            provider="local",
        ).id
    )
print("ready", flush=True)
while True:
    if rng.random() < 0.05:  # keep adding jobs too: inserts are part of the crash surface
        jobs.append(
            store.create_job(
                source_path="n.png",
                data=rng.randbytes(2000),
                media_type="image/png",
                params={},
                provider="local",
            ).id
        )
    job = store.get(rng.choice(jobs))
    events = allowed_events(job.state)
    if not events:
        continue
    with contextlib.suppress(StaleJob):
        store.transition(
            job.id,
            rng.choice(events),
            expected_version=job.version,
            detail={"n": rng.random()},
            poll_count=job.poll_count + 1,
        )
