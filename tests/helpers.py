"""Small helpers shared by tests."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TypeVar

from state.lifecycle import JobEvent, JobState
from state.store import JobRecord, Store

T = TypeVar("T")

# Shortest event path from `queued` to each state.
PATH_TO: dict[JobState, list[JobEvent]] = {
    JobState.QUEUED: [],
    JobState.SUBMITTED: [JobEvent.ACCEPTED],
    JobState.PROCESSING: [JobEvent.ACCEPTED, JobEvent.PROGRESSED],
    JobState.DOWNLOADING: [JobEvent.ACCEPTED, JobEvent.FINISHED_REMOTE],
    JobState.SUCCEED: [JobEvent.ACCEPTED, JobEvent.FINISHED_REMOTE, JobEvent.STORED],
    JobState.FAILED: [JobEvent.FAIL],
    JobState.TIMEOUT: [JobEvent.ACCEPTED, JobEvent.EXPIRE],
    JobState.CANCELLED: [JobEvent.CANCEL],
}


def new_job(store: Store, name: str = "toy.png", data: bytes | None = None) -> JobRecord:
    return store.create_job(
        source_path=name,
        data=data or name.encode(),
        media_type="image/png",
        params={"prompt": "spin"},
        provider="local",
    )


def job_in_state(store: Store, state: JobState, name: str = "toy.png") -> JobRecord:
    job = new_job(store, name)
    for ev in PATH_TO[state]:
        job = store.transition(job.id, ev, expected_version=job.version)
    assert job.state == state
    return job


def png_bytes(
    width: int = 400, height: int = 400, color: tuple[int, int, int] = (200, 40, 40)
) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
