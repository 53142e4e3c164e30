"""The wall clock of a running daemon steps back an hour, then forward a day (libfaketime,
driven through its timestamp file): no job waits the jump out, none times out for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.simulator import SimConfig, Simulator
from tests.acceptance.harness import DaemonProcess, all_final, states
from tests.acceptance.test_daemon import KEY, image
from tests.helpers import wait_for


def _libfaketime() -> Path:
    try:
        import libfaketime
    except ImportError:
        pytest.skip("the libfaketime package is not installed (pip install -e '.[test]')")
    lib = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    if not lib.exists():
        pytest.skip(f"libfaketime has no preloadable library on this platform ({lib})")
    return lib


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Tasks take real seconds, so the jumps land while every job is in flight.
    config = SimConfig(static_keys={KEY}, concurrency=50, task_time=(8.0, 9.0), seed=3)
    with Simulator(config).start() as s:
        yield s


def set_offset(path: Path, offset: str) -> None:
    """Replace the file atomically: libfaketime rereads it on every clock call, and a
    half-written file would show the daemon a bogus time."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(offset + "\n")
    tmp.replace(path)


def remote(jobs: list) -> bool:
    return len(jobs) >= 3 and all(j.state in ("submitted", "processing") for j in jobs[-3:])


def test_clock_jumps_back_and_forward(tmp_path: Path, sim: Simulator) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(_libfaketime()),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # a real clock step leaves CLOCK_MONOTONIC be
    }
    settings = {"deadline_minutes": "10", "expected_seconds": "8", "poll_max_seconds": "1"}
    with DaemonProcess(tmp_path, api_base=sim.base_url, key=KEY, env=env, settings=settings) as d:
        d.drop.mkdir()
        d.start()
        for i in range(3):
            (d.drop / f"back{i}.png").write_bytes(image(700 + i))
        d.wait_jobs(remote, timeout=30, what="3 jobs in flight")
        set_offset(offset, "-3600")  # an NTP step back by an hour
        wait_for(lambda: "wall clock jumped -3600" in d.log(), 30, "the backward jump noticed")
        jobs = d.wait_jobs(all_final(3), timeout=60, what="jobs after the backward jump")
        assert all(j.state == "succeed" for j in jobs), states(jobs)

        for i in range(3):
            (d.drop / f"fwd{i}.png").write_bytes(image(710 + i))
        d.wait_jobs(remote, timeout=30, what="3 more jobs in flight")
        set_offset(offset, "+86400")  # a day ahead: far past every 10-minute deadline
        wait_for(lambda: "wall clock jumped +90000" in d.log(), 30, "the forward jump noticed")
        jobs = d.wait_jobs(all_final(6), timeout=60, what="jobs after the forward jump")
        assert all(j.state == "succeed" for j in jobs), [
            (j.source_path, j.state, j.error_message) for j in jobs
        ]
        stats = sim.stats()
        assert stats["creates"] == 6 and not stats["duplicate_creates"], stats
        assert len(list(d.output.glob("*.mp4"))) == 6
        assert d.proc is not None and d.proc.poll() is None
