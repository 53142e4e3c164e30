"""Run every benchmark: `python -m tests.bench [--smoke] [--out bench-results.json]`.

Full sizes take about 10 minutes on a 2-core machine; --smoke runs each scenario at a
tiny size (seconds), which is what the test suite does so that none of them can rot."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from tests.bench import bench_store, scenarios

FULL: dict[str, list[dict[str, Any]]] = {
    "burst_ingest": [{"n": 1000}, {"n": 10000}],
    "life_cycle": [{"n": 500}, {"n": 2000}],
    "http_floor": [
        {"n": 2000, "concurrency": 8},
        {"n": 2000, "concurrency": 200},
        {"n": 2000, "concurrency": 1, "client": "httpx-async"},
        {"n": 2000, "concurrency": 1, "client": "httpx-sync"},
    ],
    "poll_economy": [{"n": 50, "scale": 0.1}, {"n": 200, "scale": 0.1}],
    "recovery": [{"n": 1000}, {"n": 10000}],
    "idle": [{"seconds": 60.0}],
    "store": [{"transitions": 3000}],
    "cluster_life_cycle": [{"n": 1000, "daemons": k} for k in (1, 2, 3)],
}
SMOKE: dict[str, list[dict[str, Any]]] = {
    "burst_ingest": [{"n": 20}],
    "life_cycle": [{"n": 20, "in_flight": 10}],
    "http_floor": [
        {"n": 20, "concurrency": 4},
        {"n": 20, "concurrency": 2, "client": "httpx-async"},
        {"n": 20, "concurrency": 2, "client": "httpx-sync"},
    ],
    "poll_economy": [{"n": 5, "scale": 0.005}],
    "recovery": [{"n": 50, "in_flight": 10}],
    "idle": [{"seconds": 3.0}],
    "store": [{"transitions": 100}],
    "cluster_life_cycle": [{"n": 20, "daemons": 2, "in_flight": 10}],
}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run(sizes: dict[str, list[dict[str, Any]]], only: set[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine()}
    for name, runs in sizes.items():
        if only and name not in only:
            continue
        results[name] = []
        for kwargs in runs:
            started = time.monotonic()
            if name == "store":
                figures = bench_store.run_all(kwargs["transitions"])
            else:
                figures = getattr(scenarios, name)(**kwargs)
            figures["bench_seconds"] = round(time.monotonic() - started, 1)
            results[name].append(figures)
            print(f"{name} {kwargs}: {json.dumps(figures)}", flush=True)
    return results


TABLE = [
    ("burst_ingest", "files", "files_per_second", "files/s", ">= 1000"),
    ("burst_ingest", "files", "peak_rss_mb", "peak RSS MB", ""),
    ("life_cycle", "jobs", "jobs_per_second", "jobs/s", ">= 300"),
    ("life_cycle", "jobs", "http_calls_per_job", "HTTP calls/job", ""),
    ("life_cycle", "jobs", "db_transactions_per_job", "DB transactions/job", ""),
    ("http_floor", "client", "jobs_per_second", "jobs/s, HTTP only (floor)", ""),
    ("http_floor", "client", "client_cpu_ms_per_job", "client CPU ms/job", ""),
    ("http_floor", "client", "simulator_cpu_ms_per_job", "simulator CPU ms/job", ""),
    ("cluster_life_cycle", "daemons", "jobs_per_second", "jobs/s on PostgreSQL", ""),
    ("poll_economy", "jobs", "ratio_to_ideal", "status calls / ideal", "<= 1.5"),
    ("poll_economy", "jobs", "status_calls_per_job", "status calls/job", ""),
    ("poll_economy", "jobs", "naive_calls_per_job", "naive calls/job", ""),
    ("poll_economy", "jobs", "finished_to_disk_p95_s", "finished→disk p95 s", ""),
    ("poll_economy", "jobs", "naive_finished_to_disk_p95_s", "naive p95 s", ""),
    ("recovery", "unfinished_jobs", "seconds_to_ready", "s to READY", "<= 3"),
    ("recovery", "unfinished_jobs", "peak_rss_mb", "peak RSS MB", "<= 150"),
    ("idle", "seconds", "cpu_percent_of_one_core", "CPU % of a core", "<= 0.2"),
    ("idle", "seconds", "wakeups_per_second", "wake-ups/s", ""),
    ("idle", "seconds", "rss_mb", "RSS MB", ""),
]


def table(results: dict[str, Any]) -> str:
    lines = ["| scenario | size | figure | value | target |", "|---|---|---|---|---|"]
    for name, size_key, key, label, target in TABLE:
        for figures in results.get(name, []):
            lines.append(
                f"| {name} | {figures.get(size_key)} | {label} | {figures.get(key)} | {target} |"
            )
    for figures in results.get("store", []):
        for engine, rate in figures.get("transitions_per_second", {}).items():
            lines.append(
                f"| store | {figures['transitions']} | {engine} transitions/s | {rate} | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    args = parser.parse_args()
    results = run(SMOKE if args.smoke else FULL, set(args.only or []) or None)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
