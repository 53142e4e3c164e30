"""The real `dropreel` command in a subprocess, against databases filled by a real daemon
run (simulator provider): every subcommand, filter, JSON shape and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.simulator import SimConfig, Simulator
from state.store import Store
from tests.acceptance.harness import DaemonProcess, all_final
from tests.acceptance.test_daemon import KEY, image
from tests.helpers import wait_for

JOB_KEYS = {"id", "source", "state", "attempt", "created_at", "updated_at", "output", "error"}


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def dropreel(db: Path | str, *args: str, env: dict[str, str] | None = None) -> Result:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DROPREEL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--db", str(db), *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database with 3 videos and one rejected input, left by a daemon that stopped."""
    base = tmp_path_factory.mktemp("cli")
    config = SimConfig(static_keys={KEY}, concurrency=20, task_time=(0.2, 0.5), seed=5)
    with Simulator(config).start() as sim, DaemonProcess(base, api_base=sim.base_url, key=KEY) as d:
        d.drop.mkdir()
        d.start()
        for name, seed in (("alpha.png", 1), ("beta.png", 2), ("gamma.png", 3)):
            (d.drop / name).write_bytes(image(900 + seed))
        (d.drop / "notes.png").write_text("this is not an image")
        d.wait_jobs(all_final(4), what="the history")
        assert d.stop() == 0
    yield d.db


def test_status_of_a_stopped_daemon(history: Path) -> None:
    r = dropreel(history, "status")
    assert r.code == 0, r.err
    assert "not running (last one stopped" in r.out
    assert "3 succeed, 1 failed" in r.out and "in flight:     0 of 5" in r.out
    data = dropreel(history, "status", "--json").json()
    assert data["daemon"] is None
    assert data["counts"]["succeed"] == 3 and data["counts"]["failed"] == 1
    assert set(data) >= {"counts", "in_flight", "max_in_flight", "oldest_queued_age_seconds"}


def test_jobs_table_and_json(history: Path) -> None:
    r = dropreel(history, "jobs")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "TRY"] and len(lines) == 5
    assert all(len(line) <= 80 for line in lines), lines
    assert any("notes.png → not_an_image" in line for line in lines)
    assert any("alpha.png → alpha.mp4" in line for line in lines)
    jobs = dropreel(history, "jobs", "--json").json()
    assert len(jobs) == 4 and all(set(j) >= JOB_KEYS for j in jobs)
    created = [j["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)  # newest first
    assert all(c.endswith("Z") for c in created)  # ISO-8601 UTC
    done = [j for j in jobs if j["state"] == "succeed"]
    assert all(Path(j["output"]).is_file() and j["error"] is None for j in done)
    [bad] = [j for j in jobs if j["state"] == "failed"]
    assert bad["output"] is None and "not an image" in bad["error"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--state", "failed"], {"notes.png"}),
        (
            ["--state", "failed", "--state", "succeed"],
            {"alpha.png", "beta.png", "gamma.png", "notes.png"},
        ),
        (["--source", "[ab]*"], {"alpha.png", "beta.png"}),
        (["--since", "1h"], {"alpha.png", "beta.png", "gamma.png", "notes.png"}),
        (["--until", "1h"], set()),
        (["--since", "2999-01-01"], set()),
        (["--until", "2999-01-01T00:00", "--state", "succeed", "--source", "g*"], {"gamma.png"}),
    ],
)
def test_jobs_filters(history: Path, args: list[str], expected: set[str]) -> None:
    r = dropreel(history, "jobs", "--json", *args)
    assert r.code == 0, r.err
    assert {j["source"] for j in r.json()} == expected


def test_jobs_limit_and_bad_filters(history: Path) -> None:
    assert len(dropreel(history, "jobs", "--json", "--limit", "2").json()) == 2
    for args in (["--since", "yesterday"], ["--state", "done"], ["--limit", "x"]):
        r = dropreel(history, "jobs", *args)
        assert r.code == 2, (args, r)
        assert r.err.strip() and "Traceback" not in r.err


def test_show_by_unique_prefix(history: Path) -> None:
    jobs = dropreel(history, "jobs", "--json").json()
    alpha = next(j for j in jobs if j["source"] == "alpha.png")
    prefix = alpha["id"][:6]
    r = dropreel(history, "show", prefix)
    assert r.code == 0, r.err
    assert alpha["id"] in r.out and "alpha.mp4" in r.out
    for event in ("created", "accepted", "finished_remote", "stored"):
        assert event in r.out
    assert all(len(line) <= 80 for line in r.out.splitlines()), r.out
    data = dropreel(history, "show", "--json", prefix).json()
    assert set(data) >= JOB_KEYS and data["params"]["duration"]
    events = [t["event"] for t in data["transitions"]]
    assert events[0] == "created" and events[-1] == "stored"
    assert [t["at"] for t in data["transitions"]] == sorted(t["at"] for t in data["transitions"])
    assert (
        data["transitions"][1]["from"] == "queued" and data["transitions"][1]["to"] == "submitted"
    )


def test_unknown_and_ambiguous_ids(tmp_path: Path) -> None:
    db = tmp_path / "ids.db"
    store = Store.open(str(db))
    for job_id in ("ab1" + "0" * 29, "ab2" + "0" * 29):
        store.create_job(
            source_path=f"{job_id}.png",
            data=b"x",
            media_type="image/png",
            params={},
            provider="local",
            job_id=job_id,
        )
    store.close()
    r = dropreel(db, "show", "ab")
    assert r.code == 1 and "ambiguous" in r.err and "ab1" in r.err and "ab2" in r.err
    assert dropreel(db, "show", "ab2").code == 0
    r = dropreel(db, "show", "ffff")
    assert r.code == 1 and "no job matches 'ffff'" in r.err
    r = dropreel(db, "retry", "ab")
    assert r.code == 1 and "ambiguous" in r.err


def test_missing_database_is_an_error_and_stays_missing(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    for args in (["status"], ["jobs"], ["show", "abc"], ["retry", "abc"], ["cancel", "abc"]):
        r = dropreel(db, *args)
        assert r.code == 1, (args, r)
        assert r.err.strip() == f"dropreel: no database at {db}", r.err
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_refusals_with_the_daemon_stopped(history: Path, tmp_path: Path) -> None:
    jobs = {j["source"]: j["id"] for j in dropreel(history, "jobs", "--json").json()}
    r = dropreel(history, "retry", jobs["alpha.png"][:8])
    assert r.code == 1 and "is succeed; only failed, timeout or cancelled" in r.err
    r = dropreel(history, "retry", jobs["notes.png"][:8])
    assert r.code == 1 and "failed on its input (not_an_image)" in r.err
    r = dropreel(history, "cancel", jobs["beta.png"][:8])
    assert r.code == 1 and "only unfinished jobs can be cancelled" in r.err
    assert dropreel(history, "retry").code == 2  # which jobs?
    assert dropreel(history, "retry", "abc", "--state", "failed").code == 2
    assert dropreel(history, "status", "--json").json()["counts"]["succeed"] == 3


def test_doctor(history: Path, tmp_path: Path) -> None:
    folders = [
        "--set",
        f"drop={history.parent / 'drop'}",
        "--set",
        f"output={history.parent / 'output'}",
    ]
    r = dropreel(history, "doctor", *folders)
    assert r.code == 0, r.out + r.err
    assert "database" in r.out and "integrity check passed" in r.out and "all good" in r.out
    assert "provider local" in r.out
    same = dropreel(history, "doctor", "--set", f"drop={tmp_path}", "--set", f"output={tmp_path}")
    assert same.code == 1 and "drop and output are the same folder" in same.out
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    r = dropreel(corrupt, "doctor", "--set", f"drop={tmp_path / 'd'}")
    assert r.code == 1 and "FAIL  database" in r.out
    assert corrupt.read_bytes() == b"this is not a database" * 100  # untouched


def test_doctor_online_checks_the_credentials(tmp_path: Path) -> None:
    with Simulator(SimConfig(static_keys={KEY})).start() as sim:
        base = [
            "--set",
            f"drop={tmp_path / 'drop'}",
            "--set",
            "provider=kling",
            "--set",
            f"api_base={sim.base_url}",
        ]
        good = dropreel(
            tmp_path / "x.db", "doctor", "--online", *base, env={"DROPREEL_API_KEY": KEY}
        )
        assert good.code == 0, good.out
        assert "accepted an authenticated call" in good.out and KEY not in good.out
        bad = dropreel(
            tmp_path / "x.db",
            "doctor",
            "--online",
            *base,
            env={"DROPREEL_API_KEY": "sk-FAKE-wrong"},
        )
        assert bad.code == 1 and "refused the credentials" in bad.out
        assert "sk-FAKE-wrong" not in bad.out + bad.err
        nokey = dropreel(tmp_path / "x.db", "doctor", *base)
        assert nokey.code == 2 and "needs credentials" in nokey.err


@pytest.fixture
def slow_sim() -> Iterator[Simulator]:
    config = SimConfig(static_keys={KEY}, concurrency=20, task_time=(5.0, 5.0), seed=9)
    with Simulator(config).start() as s:
        yield s


def test_cancel_and_retry_act_on_a_running_daemon(tmp_path: Path, slow_sim: Simulator) -> None:
    with DaemonProcess(tmp_path, api_base=slow_sim.base_url, key=KEY) as d:
        d.drop.mkdir()
        d.start()
        (d.drop / "slow.png").write_bytes(image(950))
        [job] = d.wait_jobs(
            lambda js: js and js[0].state in ("submitted", "processing"), what="in flight"
        )
        r = dropreel(d.db, "cancel", job.id[:8])
        assert r.code == 0 and "cancelled" in r.out, r
        # The daemon acts on it (it sees the write on its next tick, 0.2 s here; the bound is for a
        # loaded machine): the source moves aside and polling stops.
        wait_for(lambda: (d.drop / "failed" / "slow.png").exists(), 20, "the source moved aside")
        queries = slow_sim.stats()["requests"].get("query", 0)
        time.sleep(1.5)  # several poll intervals (poll_max 2 s): none may come
        assert slow_sim.stats()["requests"].get("query", 0) <= queries + 1
        shown = dropreel(d.db, "show", "--json", job.id).json()
        assert shown["state"] == "cancelled" and "left to finish" in shown["error"]

        # Retry: the running daemon adopts the remote task it left, no second create.
        r = dropreel(d.db, "retry", job.id[:8])
        assert r.code == 0 and "attempt 2" in r.out, r
        wait_for(lambda: d.jobs()[0].state != "queued", 20, "the daemon to take the retry")
        [job] = d.wait_jobs(lambda js: js[0].state == "succeed", what="the retried job")
        assert slow_sim.stats()["creates"] == 1
        assert (d.output / "slow.mp4").is_file()
        status = dropreel(d.db, "status", "--json").json()
        assert status["daemon"]["running"] is True and status["daemon"]["pid"] == d.proc.pid
        assert "running, pid" in dropreel(d.db, "status").out


def test_submit_wait_force_and_refusals(tmp_path: Path, slow_sim: Simulator) -> None:
    slow_sim.config.task_time = (0.5, 0.5)
    picture = tmp_path / "picture.png"
    picture.write_bytes(image(960))
    with DaemonProcess(tmp_path, api_base=slow_sim.base_url, key=KEY) as d:
        d.drop.mkdir()
        # No daemon yet: the job is queued, and --wait says it would wait forever.
        r = dropreel(d.db, "submit", str(picture), "--wait")
        assert r.code == 1 and "no daemon is running" in r.err
        d.start()
        [first] = d.wait_jobs(lambda js: js and js[0].state == "succeed", what="the queued job")
        r = dropreel(d.db, "submit", str(picture), "--prompt", "a slow turn")
        assert r.code == 0, r  # other parameters: other work
        r = dropreel(d.db, "submit", str(picture))
        assert r.code == 1 and f"already job {first.id[:8]}" in r.err
        r = dropreel(
            d.db,
            "submit",
            str(picture),
            "--force",
            "--wait",
            "--prompt",
            "forced",
            env={"DROPREEL_API_KEY": KEY},
        )
        assert r.code == 0, r
        assert "succeed" in r.out and "video:" in r.out
        video = Path(r.out.strip().splitlines()[-1].removeprefix("video: "))
        assert video.is_file() and video.parent == d.output
        text = tmp_path / "text.png"
        text.write_text("hello")
        r = dropreel(d.db, "submit", str(text))
        assert r.code == 1 and "not an image" in r.err
        r = dropreel(d.db, "submit", str(tmp_path / "missing.png"))
        assert r.code == 1 and "no such file" in r.err
        assert picture.exists()  # submit never moves a file it was handed
