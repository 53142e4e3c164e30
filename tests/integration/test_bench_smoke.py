"""Every benchmark scenario at a tiny size, so the benchmark suite cannot rot. The figures
are checked for sense, never for speed (speed targets live in the benchmark's report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_benchmarks_run_at_smoke_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    [ingest] = data["burst_ingest"]
    assert ingest["jobs"] == ingest["files"] == 20 and ingest["duplicates"] == 0
    [cycle] = data["life_cycle"]
    assert cycle["duplicate_creates"] == 0 and cycle["calls"]["create"] == 20
    assert cycle["http_calls_per_job"] >= 3 and cycle["db_transactions_per_job"] > 1
    floors = data["http_floor"]
    assert [f["client"] for f in floors] == ["kling", "httpx-async", "httpx-sync"]
    for floor in floors:
        assert floor["jobs"] == 20 and floor["http_calls_per_job"] == 3
        assert floor["jobs_per_second"] > 0 and floor["client_cpu_ms_per_job"] > 0
    [poll] = data["poll_economy"]
    assert poll["status_calls_per_job"] >= 1 and poll["ideal_calls_per_job"] >= 1
    [rec] = data["recovery"]
    assert rec["seconds_to_ready"] > 0 and rec["seconds_to_all_scheduled"] is not None
    [idle] = data["idle"]
    assert 0 <= idle["cpu_percent_of_one_core"] < 100 and idle["rss_mb"] > 10
    [cluster] = data["cluster_life_cycle"]
    if "skipped" not in cluster:
        assert cluster["duplicate_creates"] == 0 and sum(cluster["submitted_per_daemon"]) == 20
    [store] = data["store"]
    assert store["transitions_per_second"]["sqlite FULL"] > 0
    assert "| life_cycle |" in result.stdout
