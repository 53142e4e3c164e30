"""Several daemons sharing one PostgreSQL job table and one drop folder: work is claimed
by lease, taken over when a daemon dies or stops answering, fenced when it comes back,
and the provider's in-flight limit holds across all of them. Real daemon processes, a
real PostgreSQL server, the Kling simulator."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from daemon.simulator import SimConfig, Simulator
from state.store import Store
from tests import pg
from tests.acceptance.harness import DaemonProcess
from tests.helpers import png_bytes, wait_for

pytestmark = pytest.mark.postgres
KEY = "sk-FAKE-cluster"
SHARED = {"max_in_flight": "5", "lease_seconds": "3"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg.fresh_database() as url:
        Store.open(url).close()  # migrate once, before the daemons race to
        yield url


def cluster(
    stack: ExitStack, tmp_path: Path, sim: Simulator, url: str, n: int
) -> list[DaemonProcess]:
    drop, output = tmp_path / "drop", tmp_path / "output"
    drop.mkdir()
    daemons = []
    for i in range(n):
        base = tmp_path / f"d{i}"
        base.mkdir()
        d = DaemonProcess(
            base,
            api_base=sim.base_url,
            key=KEY,
            settings=SHARED,
            db_url=url,
            drop=drop,
            output=output,
        )
        daemons.append(stack.enter_context(d))
    for d in daemons:
        d.start()
    return daemons


def image(i: int) -> bytes:
    return png_bytes(320, 320, color=(i % 256, i // 256, 77))  # distinct for i < 65536


def drop_images(staging: Path, drop: Path, count: int) -> dict[str, bytes]:
    images = {f"img{i:03d}.png": image(i) for i in range(count)}
    staging.mkdir()
    for name, data in images.items():
        (staging / name).write_bytes(data)
    for name in images:  # cp: one file after another
        shutil.copyfile(staging / name, drop / name)
    return images


def cli(url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--db", url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def open_store(url: str) -> Store:
    return Store.open(url, create=False, migrate=False)


def daemon_ids(url: str) -> dict[int, str]:
    s = open_store(url)
    try:
        return {row["pid"]: row["id"] for row in s.daemons(live_only=False)}
    finally:
        s.close()


def assert_one_create_and_one_video_per_image(
    sim: Simulator, images: dict[str, bytes], output: Path, drop: Path
) -> None:
    stats = sim.stats()
    by_image = stats["creates_by_image"]
    for name, data in images.items():
        assert by_image.get(hashlib.sha256(data).hexdigest()) == 1, f"{name}: creates"
    assert stats["duplicate_creates"] == {}
    assert sorted(p.name for p in output.glob("*.mp4")) == sorted(
        Path(n).with_suffix(".mp4").name for n in images
    )
    assert sorted(p.name for p in (drop / "done").glob("*.png")) == sorted(images)


def test_three_daemons_one_shared_folder_and_one_killed(pg_url: str, tmp_path: Path) -> None:
    config = SimConfig(static_keys={KEY}, concurrency=10**6, task_time=(0.1, 1.0), seed=3)
    with Simulator(config).start() as sim, ExitStack() as stack:
        daemons = cluster(stack, tmp_path, sim, pg_url, 3)
        images = drop_images(tmp_path / "staging", tmp_path / "drop", 300)
        store = open_store(pg_url)
        stack.callback(store.close)

        def finished() -> int:
            return store.counts_by_state()["succeed"]

        wait_for(lambda: finished() >= 60, 120, "a fifth of the jobs done")
        # `dropreel status` lists the live daemons and what each holds.
        report = json.loads(cli(pg_url, "status", "--json"))
        pids = {d.proc.pid for d in daemons if d.proc is not None}
        assert {row["pid"] for row in report["daemons"]} == pids
        assert all(row["heartbeat_age_seconds"] < 30 for row in report["daemons"])
        assert sum(row["jobs_held"] for row in report["daemons"]) > 0
        text = cli(pg_url, "status")
        assert "daemons:       3 sharing this database" in text
        assert all(f"pid {pid}:" in text for pid in pids)
        # Kill the daemon holding the most unfinished jobs (which one won most of the
        # shared folder's files depends on the machine's load).
        ids = daemon_ids(pg_url)
        holding = Counter(j.owner for j in store.live_jobs())
        victim = max(daemons, key=lambda d: holding[ids[d.proc.pid]] if d.proc else 0)
        assert victim.proc is not None
        victim_id = ids[victim.proc.pid]
        victim.kill()
        held = {j.id for j in store.live_jobs() if j.owner == victim_id}
        assert held, "the killed daemon held no jobs: nothing to take over"
        survivors = [d for d in daemons if d is not victim]

        def all_done() -> bool:
            for d in survivors:
                assert d.proc is not None and d.proc.poll() is None, d.log()[-4000:]
            counts = store.counts_by_state()
            return counts["succeed"] == len(images) and not store.ended_with_source_in_place()

        wait_for(all_done, 240, "every image to become a video")
        for d in survivors:
            assert d.stop() == 0
        assert_one_create_and_one_video_per_image(
            sim, images, tmp_path / "output", tmp_path / "drop"
        )
        stats = sim.stats()
        assert stats["peak_running"] <= 5, stats["peak_running"]
        # The only refusals: "no such task" when a survivor reconciled a job the killed
        # daemon had marked as sending but died before its create went out.
        assert set(stats["rejected"]) <= {"1203"}, stats["rejected"]
        assert set(stats["unknown_lookups"]) <= held, stats["unknown_lookups"]
        assert sum(stats["unknown_lookups"].values()) == stats["rejected"].get("1203", 0)
        jobs = store.list_jobs(limit=1000)
        assert len(jobs) == len(images)
        # Spread: whichever daemon records a file (the fastest may record them all), the
        # submissions are claimed by whichever daemon has room: every daemon sent some.
        created: Counter[str | None] = Counter()
        accepted: Counter[str | None] = Counter()
        for job in jobs:
            for t in store.history(job.id):
                if t.event == "created":
                    created[t.daemon_id] += 1
                if t.event == "accepted":
                    accepted[t.daemon_id] += 1
        assert sum(created.values()) == len(images), created
        # (the killed one may have had no turn before it was killed)
        assert len(accepted) >= 2 and sum(accepted.values()) == len(images), accepted
        assert all(accepted[ids[d.proc.pid]] for d in survivors if d.proc), accepted
        # The killed daemon's unfinished jobs were finished by the others.
        for job_id in held:
            history = store.history(job_id)
            assert history[-1].to_state == "succeed"
            assert history[-1].daemon_id not in (None, victim_id)


def test_a_daemon_stopped_past_its_lease_is_fenced_when_it_resumes(
    pg_url: str, tmp_path: Path
) -> None:
    config = SimConfig(static_keys={KEY}, concurrency=10**6, task_time=(1.0, 2.5), seed=5)
    with Simulator(config).start() as sim, ExitStack() as stack:
        a, b = cluster(stack, tmp_path, sim, pg_url, 2)
        images = drop_images(tmp_path / "staging", tmp_path / "drop", 40)
        store = open_store(pg_url)
        stack.callback(store.close)
        assert a.proc is not None and b.proc is not None
        ids = daemon_ids(pg_url)
        a_id, b_id = ids[a.proc.pid], ids[b.proc.pid]

        def a_has_remote_work() -> set[str]:
            held = [j for j in store.live_jobs() if j.owner == a_id]
            return {j.id for j in held} if any(j.state == "processing" for j in held) else set()

        wait_for(a_has_remote_work, 60, "daemon A to hold jobs the provider is running")
        a.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        held_jobs = [j for j in store.live_jobs() if j.owner == a_id]
        # The jobs A had work under way for (a create sent): fenced after the takeover.
        # (A queued job no create was sent for is anyone's to claim, A's again included:
        # B may claim, submit and finish those at once.)
        under_way = {j.id for j in held_jobs if j.state != "queued" or j.create_sent_at}
        assert under_way

        def taken_over() -> bool:
            return all(store.get(job_id).owner != a_id for job_id in under_way)

        wait_for(taken_over, 60, "B to take over A's jobs")
        # Not before the lease ran out: 3 s from A's last renewal, at most 1 s before.
        assert time.monotonic() - stopped >= 2.0
        with store.engine.connect() as conn:  # history so far: everything A wrote stays
            mark = conn.exec_driver_sql("SELECT max(id) FROM job_transitions").scalar()
        a.signal(signal.SIGCONT)

        def all_done() -> bool:
            for d in (a, b):
                assert d.proc is not None and d.proc.poll() is None, d.log()[-4000:]
            counts = store.counts_by_state()
            return counts["succeed"] == len(images) and not store.ended_with_source_in_place()

        wait_for(all_done, 180, "every image to become a video")
        assert a.stop() == 0 and b.stop() == 0
        assert_one_create_and_one_video_per_image(
            sim, images, tmp_path / "output", tmp_path / "drop"
        )
        # After the takeover A wrote nothing to the jobs it had under way; B finished them.
        for job_id in under_way:
            history = store.history(job_id)
            late = [t for t in history if t.id > mark]
            assert all(t.daemon_id == b_id for t in late), late
            assert (history[-1].to_state, history[-1].daemon_id) == ("succeed", b_id)
        assert sim.stats()["peak_running"] <= 5


def test_a_job_whose_daemons_keep_dying_fails_instead_of_travelling(
    pg_url: str, tmp_path: Path
) -> None:
    """The holder is SIGKILLed mid-download; the daemon that takes the job over counts
    that as a crash, and with crash_limit 1 fails it rather than go round the cluster."""
    config = SimConfig(static_keys={KEY}, concurrency=10**6, task_time=(0.0, 0.0))
    with Simulator(config).start() as sim, ExitStack() as stack:
        sim.add_fault("download", "slow", count=None, delay=30.0)  # every download hangs
        [a] = cluster(stack, tmp_path, sim, pg_url, 1)
        drop_images(tmp_path / "staging", tmp_path / "drop", 1)
        store = open_store(pg_url)
        stack.callback(store.close)
        wait_for(
            lambda: [j for j in store.live_jobs() if j.state == "downloading"],
            60,
            "the download to begin",
        )
        a.kill()
        (tmp_path / "d9").mkdir()
        b = stack.enter_context(
            DaemonProcess(
                tmp_path / "d9",
                api_base=sim.base_url,
                key=KEY,
                settings={**SHARED, "crash_limit": "1"},
                db_url=pg_url,
                drop=tmp_path / "drop",
                output=tmp_path / "output",
            )
        )
        b.start()
        [job] = wait_for(
            lambda: [j for j in store.list_jobs() if j.is_final and j.source_done_at],
            60,
            "the job to fail after the takeover",
        )
        assert (job.state, job.error_code) == ("failed", "crash_loop"), job
        assert "last step: download" in (job.error_message or "")
        assert (tmp_path / "drop" / "failed" / "img000.png").is_file()
        assert b.stop() == 0


def test_a_download_cut_short_by_a_kill_is_resumed_by_a_running_daemon(
    pg_url: str, tmp_path: Path
) -> None:
    """The job's holder is SIGKILLed while its download hangs; the other daemon, already
    running, takes the job over when the lease runs out and downloads it at once — not
    when the dead daemon's guard for the begun download (5 minutes) would have run out."""
    config = SimConfig(static_keys={KEY}, concurrency=10**6, task_time=(0.0, 0.0))
    with Simulator(config).start() as sim, ExitStack() as stack:
        sim.add_fault("download", "slow", delay=30.0)  # the first download hangs
        daemons = cluster(stack, tmp_path, sim, pg_url, 2)
        images = drop_images(tmp_path / "staging", tmp_path / "drop", 1)
        store = open_store(pg_url)
        stack.callback(store.close)
        [job] = wait_for(
            lambda: [j for j in store.live_jobs() if j.state == "downloading"],
            60,
            "the download to begin",
        )
        ids = daemon_ids(pg_url)
        [holder] = [d for d in daemons if d.proc and ids[d.proc.pid] == job.owner]
        [other] = [d for d in daemons if d is not holder]
        holder.kill()
        [done] = wait_for(
            lambda: [j for j in store.list_jobs() if j.state == "succeed" and j.source_done_at],
            120,  # lease 3 s: taken over within ~4 s; the dead daemon's guard was 300 s
            "the other daemon to finish the download",
        )
        assert other.proc is not None and done.owner is None
        history = store.history(job.id)
        assert (history[-1].to_state, history[-1].daemon_id) == ("succeed", ids[other.proc.pid])
        assert other.stop() == 0
        assert_one_create_and_one_video_per_image(
            sim, images, tmp_path / "output", tmp_path / "drop"
        )
