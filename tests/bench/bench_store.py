"""Store benchmark: guarded transitions per second (one CAS update + one history insert,
one transaction each) on SQLite with synchronous FULL and NORMAL, and on PostgreSQL where
reachable. Not a test: run `python -m tests.bench.bench_store [--transitions N]`."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from state.lifecycle import JobEvent
from state.store import Store
from tests import pg

# One lap through the life cycle, ending where it started (retry re-queues).
LAP = [
    JobEvent.ACCEPTED,
    JobEvent.PROGRESSED,
    JobEvent.FINISHED_REMOTE,
    JobEvent.FAIL,
    JobEvent.RETRY,
]


def measure(url: str, transitions: int, synchronous: str = "FULL") -> float:
    store = Store.open(url, synchronous=synchronous)
    jobs = [
        store.create_job(
            source_path=f"{i}.png",
            data=str(i).encode(),
            media_type="image/png",
            params={"prompt": "x"},
            provider="local",
        )
        for i in range(20)
    ]
    versions = {j.id: j.version for j in jobs}
    start = time.perf_counter()
    for n in range(transitions):
        job_id = jobs[n % len(jobs)].id
        event = LAP[(n // len(jobs)) % len(LAP)]
        rec = store.transition(job_id, event, expected_version=versions[job_id], detail={"n": n})
        versions[job_id] = rec.version
    elapsed = time.perf_counter() - start
    store.close()
    return transitions / elapsed


def run_all(transitions: int) -> dict[str, Any]:
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            db = Path(tmp) / f"bench-{sync}.db"
            results[f"sqlite {sync}"] = round(measure(str(db), transitions, sync))
    reason = pg.unavailable_reason()
    if reason:
        results["postgresql"] = f"skipped: {reason}"
    else:
        with pg.fresh_database() as url:
            results["postgresql"] = round(measure(url, transitions))
    return {"transitions": transitions, "transitions_per_second": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transitions", type=int, default=3000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = run_all(args.transitions)["transitions_per_second"]
    print(f"{'engine':32} {'transitions/s':>14}")
    for name, value in results.items():
        shown = f"{value:14,.0f}" if isinstance(value, int | float) else f"  {value}"
        print(f"{name:32} {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
