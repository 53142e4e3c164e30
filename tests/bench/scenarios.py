"""Benchmark scenarios: the real daemon (a subprocess) against the simulator (in this
process). Each returns a dict of figures; `python -m tests.bench` runs them all."""

from __future__ import annotations

import ast
import io
import json
import math
import random
import re
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.simulator import SimConfig, Simulator
from state.lifecycle import JobEvent
from state.params import effective
from state.policies import PollPolicy
from state.store import Store
from tests.acceptance.harness import DaemonProcess
from tests.bench.procstat import PeakRss, cpu_seconds, rss_mb, wakeups
from tests.helpers import wait_for

KEY = "sk-FAKE-bench"


def small_png(i: int) -> bytes:
    """A distinct, valid 320×320 PNG (the provider's minimum is 300 px)."""
    from PIL import Image

    img = Image.new("RGB", (320, 320), (i % 251, (i // 251) % 251, (i * 7) % 253))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


@contextmanager
def daemon_with_sim(
    sim_config: SimConfig, settings: dict[str, str] | None = None
) -> Iterator[tuple[DaemonProcess, Simulator, Path]]:
    base = Path(tempfile.mkdtemp(prefix="drbench"))
    try:
        with Simulator(sim_config).start() as sim:
            quiet = {"poll_max_seconds": "60", "expected_seconds": "0", "tick_seconds": "1"}
            d = DaemonProcess(
                base,
                api_base=sim.base_url,
                key=KEY,
                settings={**quiet, **(settings or {})},
                extra_args=["--log-level", "INFO"],
            )
            with d:
                d.drop.mkdir()
                yield d, sim, base
    except BaseException:
        print(f"(kept {base} for a look)")
        raise
    else:
        log = base / "daemon.log"
        if log.exists():  # the last run's log, for a look after the fact
            shutil.copyfile(log, Path(tempfile.gettempdir()) / "dropreel-bench-last.log")
        shutil.rmtree(base, ignore_errors=True)


def count_jobs(db: Path) -> int:
    store = Store.open(str(db), create=False, migrate=False)
    try:
        return sum(store.counts_by_state().values())
    finally:
        store.close()


def in_remote(db: Path) -> int:
    store = Store.open(str(db), create=False, migrate=False)
    try:
        counts = store.counts_by_state()
        return counts["submitted"] + counts["processing"]
    finally:
        store.close()


def store_calls(log: str) -> dict[str, int]:
    found = re.findall(r"store calls: (\{.*\})", log)
    return ast.literal_eval(found[-1]) if found else {}


def store_writes(log: str) -> int:
    found = re.findall(r"store: (\d+) write transactions", log)
    return int(found[-1]) if found else 0


# -- 1. burst ingest ---------------------------------------------------------------------


def burst_ingest(n: int) -> dict[str, Any]:
    staging = Path(tempfile.mkdtemp(prefix="drstage"))
    for i in range(n):
        (staging / f"img{i:05d}.png").write_bytes(small_png(i))
    sim = SimConfig(static_keys={KEY}, task_time=(3600.0, 3600.0), concurrency=10**6)
    try:
        with daemon_with_sim(sim, {"settle_seconds": "0.5", "max_in_flight": "5"}) as (d, _, _):
            d.start()
            assert d.proc is not None
            with PeakRss(d.proc.pid) as peak:
                cpu_before = cpu_seconds(d.proc.pid)
                started = time.monotonic()
                for f in staging.iterdir():  # cp: one file after another, all at once
                    shutil.copyfile(f, d.drop / f.name)
                copied = time.monotonic() - started
                wait_for(lambda: count_jobs(d.db) >= n, 600, f"{n} jobs recorded")
                seconds = time.monotonic() - started
                cpu = cpu_seconds(d.proc.pid) - cpu_before
            jobs = count_jobs(d.db)
            d.stop(60)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "files": n,
        "copy_seconds": round(copied, 2),
        "seconds_to_all_recorded": round(seconds, 2),
        "files_per_second": round(n / seconds, 1),
        "jobs": jobs,
        "duplicates": jobs - n,
        "daemon_cpu_ms_per_file": round(cpu * 1000 / n, 2),
        "peak_rss_mb": round(peak.peak, 1),
    }


# -- 2. full life cycle ------------------------------------------------------------------


def life_cycle(n: int, in_flight: int = 200) -> dict[str, Any]:
    staging = Path(tempfile.mkdtemp(prefix="drstage"))
    for i in range(n):
        (staging / f"job{i:05d}.png").write_bytes(small_png(10**6 + i))
    sim = SimConfig(static_keys={KEY}, task_time=(0.0, 0.0), concurrency=10**6)
    settings = {
        "settle_seconds": "0.3",
        "max_in_flight": str(in_flight),
        "poll_min_seconds": "0.05",
        "expected_seconds": "0.05",
        "tick_seconds": "0.2",
    }
    try:
        with daemon_with_sim(sim, settings) as (d, simulator, _):
            d.start()
            assert d.proc is not None
            with PeakRss(d.proc.pid) as peak:
                started = time.monotonic()
                for f in staging.iterdir():
                    shutil.copyfile(f, d.drop / f.name)
                cpu_before = cpu_seconds(d.proc.pid)
                wait_for(
                    lambda: len(list(d.output.glob("*.mp4"))) >= n, 1800, f"{n} videos on disk"
                )
                seconds = time.monotonic() - started
                cpu = cpu_seconds(d.proc.pid) - cpu_before
            d.stop(60)
            stats = simulator.stats()
            writes = store_writes(d.log())
            calls_by_method = store_calls(d.log())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    calls = sum(stats["requests"].values())
    return {
        "jobs": n,
        "max_in_flight": in_flight,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(n / seconds, 1),
        "http_calls_per_job": round(calls / n, 2),
        "calls": stats["requests"],
        "db_transactions_per_job": round(writes / n, 2),
        "daemon_cpu_ms_per_job": round(cpu * 1000 / n, 1),
        "daemon_cpu_percent": round(100 * cpu / seconds, 1),
        "store_calls_per_job": {k: round(v / n, 2) for k, v in calls_by_method.items()},
        "duplicate_creates": len(stats["duplicate_creates"]),
        "peak_rss_mb": round(peak.peak, 1),
    }


# -- 3. poll economy ---------------------------------------------------------------------


def naive_polls(duration: float, every: float = 5.0, tries: int = 60) -> tuple[int, float | None]:
    """The product's old strategy: poll every 5 s, give up after 60 tries."""
    polls = min(tries, math.ceil(duration / every) if duration > 0 else 1)
    if polls * every < duration:
        return tries, None  # gave up before the task finished
    return polls, polls * every - duration


def ideal_polls(duration: float, expected: float, lo: float, hi: float) -> int:
    """Status calls the schedule itself implies for this duration (no overhead, no jitter)."""
    policy = PollPolicy(min_interval=lo, max_interval=hi, jitter=0.0)
    rng, t, polls = random.Random(0), 0.0, 0
    while True:
        t += policy.next_delay(t, expected, rng)
        polls += 1
        if t >= duration:
            return polls


def poll_economy(n: int, scale: float = 0.02) -> dict[str, Any]:
    """Generation times 30–300 s, run at `scale` (0.02: 300 s take 6 s); the daemon's
    poll bounds are scaled alike, and the figures are scaled back to real seconds."""
    lo, hi, expected = 3.0, 60.0, 150.0
    sim = SimConfig(
        static_keys={KEY}, task_time=(30.0, 300.0), time_scale=scale, concurrency=10**6, seed=42
    )
    settings = {
        "settle_seconds": "0.3",
        "max_in_flight": str(n),
        "poll_min_seconds": str(lo * scale),
        "poll_max_seconds": str(hi * scale),
        "expected_seconds": str(expected * scale),
        "tick_seconds": "0.2",
    }
    with daemon_with_sim(sim, settings) as (d, simulator, _):
        d.start()
        for i in range(n):
            (d.drop / f"p{i:04d}.png").write_bytes(small_png(2 * 10**6 + i))
        wait_for(lambda: len(list(d.output.glob("*.mp4"))) >= n, 600, "all videos")
        d.stop(60)
        store = d.store()
        try:
            rows = []
            for job in store.list_jobs():
                task = simulator.tasks[job.remote_task_id or ""]
                finished = task.created_ms / 1000 + task.run_for
                stored = next(t.at for t in store.history(job.id) if t.event == JobEvent.STORED)
                rows.append(
                    (task.run_for / scale, job.poll_count, (stored.timestamp() - finished) / scale)
                )
        finally:
            store.close()
    polls = [r[1] for r in rows]
    delays = sorted(r[2] for r in rows)
    ideal = [ideal_polls(r[0], expected, lo, hi) for r in rows]
    naive = [naive_polls(r[0]) for r in rows]
    naive_delays = sorted(x[1] for x in naive if x[1] is not None)

    def pct(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {
        "jobs": n,
        "time_scale": scale,
        "status_calls_per_job": round(statistics.mean(polls), 2),
        "ideal_calls_per_job": round(statistics.mean(ideal), 2),
        "ratio_to_ideal": round(sum(polls) / sum(ideal), 2),
        "finished_to_disk_p50_s": pct(delays, 0.5),
        "finished_to_disk_p95_s": pct(delays, 0.95),
        "naive_calls_per_job": round(statistics.mean(x[0] for x in naive), 2),
        "naive_finished_to_disk_p50_s": pct(naive_delays, 0.5),
        "naive_finished_to_disk_p95_s": pct(naive_delays, 0.95),
        "naive_gave_up": sum(x[1] is None for x in naive),
    }


# -- 4. recovery -------------------------------------------------------------------------


def recovery(n: int, in_flight: int = 200) -> dict[str, Any]:
    """n unfinished jobs (in_flight of them with the provider), SIGKILL, restart."""
    sim = SimConfig(static_keys={KEY}, task_time=(3600.0, 3600.0), concurrency=10**6)
    with daemon_with_sim(sim, {"max_in_flight": str(in_flight), "settle_seconds": "0.3"}) as (
        d,
        _,
        _,
    ):
        store = Store.open(str(d.db))
        blob = small_png(7)
        for i in range(n):
            store.create_job(
                source_path=f"r{i:05d}.png",
                data=blob,
                media_type="image/png",
                params=effective({"prompt": f"job {i}"}),
                provider="kling",
            )
        store.close()
        d.start(wait_ready=False)
        wait_for(lambda: in_remote(d.db) >= in_flight, 300, "in flight")
        d.kill()
        d.read_notifications()  # the first run's READY=1 must not count for the second
        t0 = time.monotonic()
        d.start(wait_ready=False)
        assert d.proc is not None
        with PeakRss(d.proc.pid) as peak:
            d.wait_notified("READY=1", timeout=120)
            ready = time.monotonic() - t0
            scheduled = _wait_log(d, "all unfinished jobs scheduled", 120)
            all_scheduled = time.monotonic() - t0 if scheduled else None
            time.sleep(1)
        rss = rss_mb(d.proc.pid)
        d.stop(60)
    return {
        "unfinished_jobs": n,
        "in_flight": in_flight,
        "seconds_to_ready": round(ready, 2),
        "seconds_to_all_scheduled": None if all_scheduled is None else round(all_scheduled, 2),
        "peak_rss_mb": round(max(peak.peak, rss), 1),
    }


def _wait_log(d: DaemonProcess, text: str, timeout: float) -> bool:
    try:
        wait_for(lambda: text in d.log().split("===== run")[-1], timeout, text)
        return True
    except AssertionError:
        return False


# -- 5. idle -----------------------------------------------------------------------------


def idle(seconds: float = 60.0) -> dict[str, Any]:
    sim = SimConfig(static_keys={KEY})
    with daemon_with_sim(sim) as (d, _, _):
        d.start()
        assert d.proc is not None
        time.sleep(3)  # let start-up settle
        cpu0, wake0 = cpu_seconds(d.proc.pid), wakeups(d.proc.pid)
        time.sleep(seconds)
        cpu = cpu_seconds(d.proc.pid) - cpu0
        wake = wakeups(d.proc.pid) - wake0
        rss = rss_mb(d.proc.pid)
        d.stop(30)
    return {
        "seconds": seconds,
        "cpu_seconds": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / seconds, 3),
        "wakeups_per_second": round(wake / seconds, 1),
        "rss_mb": round(rss, 1),
    }


# -- 2b. the HTTP floor under the life cycle ---------------------------------------------


def http_floor(n: int, concurrency: int = 200, client: str = "kling") -> dict[str, Any]:
    """create + query + download per job in a separate process, with nothing else: the
    most a daemon on that client and this machine could do (see tests/bench/http_floor)."""
    import subprocess
    import sys

    out = Path(tempfile.mkdtemp(prefix="drbench"))
    sim = SimConfig(static_keys={KEY}, task_time=(0.0, 0.0), concurrency=10**6)
    try:
        with Simulator(sim).start() as simulator:
            args = [simulator.base_url, KEY, str(n), str(concurrency), str(out), client]
            sim_cpu = time.process_time()  # this process does little else than simulate
            done = subprocess.run(
                [sys.executable, "-m", "tests.bench.http_floor", *args],
                capture_output=True,
                text=True,
                timeout=900,
                check=True,
            )
            sim_cpu = time.process_time() - sim_cpu
            calls = sum(simulator.stats()["requests"].values())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures.update(
        concurrency=concurrency,
        http_calls_per_job=round(calls / n, 2),
        simulator_cpu_ms_per_job=round(sim_cpu * 1000 / n, 2),
    )
    return figures


# -- 7. several daemons on one PostgreSQL table -------------------------------------------


def cluster_life_cycle(n: int, daemons: int, in_flight: int = 200) -> dict[str, Any]:
    """The life cycle with 1, 2 or 3 daemons sharing a PostgreSQL table and one drop
    folder (all on this machine, beside the simulator)."""
    from tests import pg

    reason = pg.unavailable_reason()
    if reason:
        return {"jobs": n, "daemons": daemons, "skipped": reason}
    staging = Path(tempfile.mkdtemp(prefix="drstage"))
    base = Path(tempfile.mkdtemp(prefix="drbench"))
    for i in range(n):
        (staging / f"job{i:05d}.png").write_bytes(small_png(2 * 10**6 + i))
    sim = SimConfig(static_keys={KEY}, task_time=(0.0, 0.0), concurrency=10**6)
    settings = {
        "max_in_flight": str(in_flight),
        "poll_min_seconds": "0.05",
        "poll_max_seconds": "60",
        "expected_seconds": "0.05",
        "tick_seconds": "0.2",
        "settle_seconds": "0.3",
    }
    drop, output = base / "drop", base / "output"
    drop.mkdir()
    try:
        with pg.fresh_database() as url, Simulator(sim).start() as simulator:
            Store.open(url).close()  # migrated once, before the daemons start
            procs = []
            for i in range(daemons):
                (base / f"d{i}").mkdir()
                d = DaemonProcess(
                    base / f"d{i}",
                    api_base=simulator.base_url,
                    key=KEY,
                    settings=settings,
                    extra_args=["--log-level", "INFO"],
                    db_url=url,
                    drop=drop,
                    output=output,
                )
                procs.append(d.__enter__())
            try:
                for d in procs:
                    d.start()
                started = time.monotonic()
                for f in staging.iterdir():
                    shutil.copyfile(f, drop / f.name)
                wait_for(lambda: len(list(output.glob("*.mp4"))) >= n, 1800, f"{n} videos on disk")
                seconds = time.monotonic() - started
                for d in procs:
                    d.stop(60)
                stats = simulator.stats()
                store = Store.open(url, create=False, migrate=False)
                try:
                    per_daemon = sorted(
                        Counter(
                            t.daemon_id
                            for job in store.list_jobs(limit=n + 10)
                            for t in store.history(job.id)
                            if t.event == "accepted"
                        ).values()
                    )
                finally:
                    store.close()
            finally:
                for d in procs:
                    d.__exit__(None, None, None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    return {
        "jobs": n,
        "daemons": daemons,
        "seconds": round(seconds, 2),
        "jobs_per_second": round(n / seconds, 1),
        "submitted_per_daemon": per_daemon,
        "duplicate_creates": len(stats["duplicate_creates"]),
        "peak_running": stats["peak_running"],
    }
