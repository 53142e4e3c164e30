"""SIGKILL a process in the middle of transitions, many times: the database survives
and every job's state equals the `to` of its last transition."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from state.store import Store

KILLS = 15


def check_consistent(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = con.execute(
            """SELECT j.id, j.state, (SELECT t.to_state FROM job_transitions t
                                      WHERE t.job_id = j.id ORDER BY t.id DESC LIMIT 1)
               FROM jobs j"""
        ).fetchall()
    finally:
        con.close()
    for job_id, state, last_to in rows:
        assert state == last_to, f"job {job_id}: state {state} but last transition to {last_to}"
    return len(rows)


def test_sigkill_during_transitions(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(1234)
    counts = []
    for i in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.crash_worker", str(db), str(i)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        assert child.stdout is not None
        # Kill during start-up (migration) sometimes, mid-loop mostly.
        if i % 5 != 0:
            assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        if db.exists():
            counts.append(check_consistent(db))
    assert counts and counts[-1] >= 5
    store = Store.open(str(db))  # and the store still opens and migrates cleanly
    total_transitions = sum(len(store.history(j.id)) for j in store.list_jobs())
    store.close()
    assert total_transitions > KILLS  # the loop really ran between kills
