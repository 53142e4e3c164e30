"""The store contract, run on SQLite and (where reachable) PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from state.clock import ManualClock
from state.errors import AmbiguousJobId, DatabaseRefused, JobNotFound, StaleJob
from state.lifecycle import TRANSITIONS, IllegalTransition, JobEvent, JobState
from state.models import Base
from state.store import Store
from tests.helpers import PATH_TO, job_in_state, new_job

ALLOWED = {(src, ev): dst for ev, sources, dst in TRANSITIONS for src in sources}
EVENTS = [e for e in JobEvent if e is not JobEvent.CREATED]


def test_create_records_job_blob_and_first_history_row(store: Store) -> None:
    job = new_job(store, "toy.png", b"\x89PNG fake bytes")
    assert job.state == "queued" and job.attempt == 1 and job.version == 1
    assert store.get_blob(job.input_sha256) == b"\x89PNG fake bytes"
    [first] = store.history(job.id)
    assert (first.from_state, first.to_state, first.event) == (None, "queued", "created")
    assert store.get(job.id) == job


@pytest.mark.parametrize("state", list(JobState))
def test_every_event_from_every_state_through_the_store(store: Store, state: JobState) -> None:
    for event in EVENTS:
        job = job_in_state(store, state, name=f"{state}-{event}.png")
        before = store.history(job.id)
        if (state, event) in ALLOWED:
            after = store.transition(
                job.id, event, expected_version=job.version, detail={"why": "test"}
            )
            assert after.state == ALLOWED[(state, event)]
            assert after.version == job.version + 1
            assert store.get(job.id) == after
            history = store.history(job.id)
            assert len(history) == len(before) + 1
            last = history[-1]
            assert (last.from_state, last.to_state, last.event) == (state, after.state, event)
            assert last.detail == {"why": "test"}
        else:
            with pytest.raises(IllegalTransition):
                store.transition(job.id, event, expected_version=job.version)
            assert store.get(job.id) == job  # nothing changed
            assert store.history(job.id) == before


def test_retry_starts_a_new_attempt_and_keeps_history(store: Store, clock: ManualClock) -> None:
    job = job_in_state(store, JobState.PROCESSING)
    job = store.transition(job.id, "fail", error_code="1301", error_message="policy")
    clock.advance(60)
    job = store.transition(job.id, "retry", detail={"by": "cli"})
    assert (job.state, job.attempt, job.error_code, job.error_message) == ("queued", 2, None, None)
    job = store.transition(job.id, "accepted", remote_task_id="t2")
    job = store.transition(job.id, "expire")
    job = store.transition(job.id, "retry")
    assert job.attempt == 3
    history = store.history(job.id)
    assert [h.event for h in history] == [
        "created",
        "accepted",
        "progressed",
        "fail",
        "retry",
        "accepted",
        "expire",
        "retry",
    ]
    assert [h.attempt for h in history] == [1, 1, 1, 1, 2, 2, 2, 3]
    assert history[4].at - history[3].at == timedelta(seconds=60)
    assert store.get(job.id) == job


def test_stale_version_raises_and_writes_nothing(store: Store) -> None:
    job = new_job(store)
    store.update(job.id, job.version, poll_count=3)
    with pytest.raises(StaleJob):
        store.transition(job.id, "accepted", expected_version=job.version)
    with pytest.raises(StaleJob):
        store.update(job.id, job.version, poll_count=9)
    assert store.get(job.id).state == "queued" and store.get(job.id).poll_count == 3
    assert len(store.history(job.id)) == 1


def test_store_refuses_to_write_its_own_columns(store: Store) -> None:
    job = new_job(store)
    with pytest.raises(TypeError, match="state"):
        store.update(job.id, job.version, state="succeed")
    with pytest.raises(TypeError, match="version"):
        store.transition(job.id, "accepted", version=7)


def test_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        store.transition("0" * 32, "cancel")
    with pytest.raises(JobNotFound):
        store.get("nope")


@pytest.mark.parametrize("rounds", [20])
def test_concurrent_transitions_exactly_one_wins(store: Store, rounds: int) -> None:
    for i in range(rounds):
        job = new_job(store, f"race{i}.png")
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def contender(event: str, job=job, barrier=barrier, outcomes=outcomes) -> None:
            barrier.wait()
            try:
                store.transition(job.id, event, expected_version=job.version)
                outcomes.append("won")
            except StaleJob:
                outcomes.append("stale")

        threads = [threading.Thread(target=contender, args=(ev,)) for ev in ("accepted", "cancel")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes) == ["stale", "won"]
        history = store.history(job.id)
        assert len(history) == 2  # created + exactly one winner
        assert store.get(job.id).state == history[-1].to_state


def test_queries(store: Store, clock: ManualClock) -> None:
    a = job_in_state(store, JobState.FAILED, "in/a.png")
    clock.advance(10)
    b = job_in_state(store, JobState.PROCESSING, "in/b.jpg")
    clock.advance(10)
    c = new_job(store, "other/c.png")
    store.update(c.id, c.version, next_action_at=clock.now() + timedelta(seconds=30))
    t0 = a.created_at

    assert [j.id for j in store.list_jobs()] == [c.id, b.id, a.id]  # newest first
    assert [j.id for j in store.list_jobs(states=["failed"])] == [a.id]
    assert [j.id for j in store.list_jobs(since=t0 + timedelta(seconds=5))] == [c.id, b.id]
    assert [j.id for j in store.list_jobs(until=t0 + timedelta(seconds=5))] == [a.id]
    assert [j.id for j in store.list_jobs(source_glob="in/*")] == [b.id, a.id]
    assert [j.id for j in store.list_jobs(limit=1)] == [c.id]
    counts = store.counts_by_state()
    assert counts["failed"] == 1 and counts["processing"] == 1 and counts["queued"] == 1
    assert [j.id for j in store.live_jobs()] == [b.id, c.id]
    assert [j.id for j in store.due_jobs(clock.now())] == [b.id]
    clock.advance(31)
    assert {j.id for j in store.due_jobs(clock.now())} == {b.id, c.id}
    assert [j.id for j in store.find_by_content_key(c.content_key, ["queued"])] == [c.id]
    remote, due, next_queued = store.dispatch_view(["processing"], clock.now(), 5)
    assert (remote, [j.id for j in due]) == (1, [c.id]) and next_queued is not None
    assert store.dispatch_view(["processing"], clock.now(), 0)[1] == []
    assert store.dispatch_view(["processing"], clock.now(), 1)[1] == []  # 1 in flight: full


def test_resolve_prefix(store: Store) -> None:
    ids = ["abc1" + "0" * 28, "abc2" + "0" * 28]
    for i in ids:
        store.create_job(
            source_path=i,
            data=i.encode(),
            media_type="image/png",
            params={},
            provider="local",
            job_id=i,
        )
    assert store.resolve("abc1").id == ids[0]
    assert store.resolve(ids[1].upper()).id == ids[1]
    with pytest.raises(AmbiguousJobId, match="ambiguous"):
        store.resolve("abc")
    with pytest.raises(JobNotFound):
        store.resolve("ffff")
    with pytest.raises(JobNotFound, match="hexadecimal"):
        store.resolve("zz'; drop table jobs")


def test_same_bytes_share_one_blob(store: Store) -> None:
    a = new_job(store, "a.png", b"same")
    b = new_job(store, "b.png", b"same")
    assert a.input_sha256 == b.input_sha256
    assert a.content_key == b.content_key  # same bytes + same params


def test_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_reopen_is_idempotent(db_url: str, clock: ManualClock) -> None:
    s1 = Store.open(db_url, clock=clock)
    job = new_job(s1)
    s1.close()
    s2 = Store.open(db_url, clock=clock)
    assert s2.get(job.id) == job
    s2.close()


# -- SQLite specifics -------------------------------------------------------------------


def test_sqlite_settings(tmp_path: Path) -> None:
    s = Store.open(str(tmp_path / "x.db"))
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    s.close()


def test_timestamps_are_sortable_text_in_sqlite(tmp_path: Path, clock: ManualClock) -> None:
    s = Store.open(str(tmp_path / "x.db"), clock=clock)
    job = new_job(s)
    s.close()
    con = sqlite3.connect(tmp_path / "x.db")
    (at,) = con.execute("SELECT at FROM job_transitions WHERE job_id=?", (job.id,)).fetchone()
    con.close()
    assert at == "2026-01-01T00:00:00.000Z"


def test_read_only_open_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(DatabaseRefused) as err:
        Store.open(str(tmp_path / "missing.db"), create=False)
    assert err.value.reason == "missing"
    assert not (tmp_path / "missing.db").exists()


def test_refuses_corrupt_database_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(DatabaseRefused) as err:
        Store.open(str(path))
    assert err.value.reason == "corrupt" and "backup" in str(err.value)
    assert path.read_bytes() == before


def test_refuses_foreign_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(DatabaseRefused) as err:
        Store.open(str(path))
    assert err.value.reason == "not_ours" and "invoices" in str(err.value)


def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store.open(str(path)).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num='9999'")
    con.commit()
    con.close()
    with pytest.raises(DatabaseRefused) as err:
        Store.open(str(path))
    assert err.value.reason == "too_new" and "9999" in str(err.value)
    con = sqlite3.connect(path)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999",)
    con.close()


def test_path_to_covers_every_state() -> None:
    assert set(PATH_TO) == set(JobState)


def test_shift_live_times_moves_only_unfinished_jobs(store: Store, clock: ManualClock) -> None:
    done = job_in_state(store, JobState.SUCCEED, "in/done.png")
    live = job_in_state(store, JobState.PROCESSING, "in/live.png")
    at, deadline = clock.now() + timedelta(seconds=30), clock.now() + timedelta(minutes=60)
    live = store.update(live.id, live.version, next_action_at=at, deadline_at=deadline)
    done_before = store.get(done.id)

    assert store.shift_live_times(-3600) == 1
    moved = store.get(live.id)
    assert moved.next_action_at == at - timedelta(hours=1)
    assert moved.deadline_at == deadline - timedelta(hours=1)
    assert moved.version == live.version + 1  # a writer holding the old row loses its CAS
    assert store.get(done.id) == done_before

    store.shift_live_times(7200, next_action=False)
    moved = store.get(live.id)
    assert moved.next_action_at == at - timedelta(hours=1)
    assert moved.deadline_at == deadline + timedelta(hours=1)


def test_record_jobs_in_one_transaction(store: Store) -> None:
    from state.errors import DuplicateIntake
    from state.store import Existing, NewJob

    def item(name: str, data: bytes, key: str | None = None) -> NewJob:
        return NewJob(
            source_path=name,
            data=data,
            media_type="image/png",
            params={"prompt": "spin"},
            provider="kling",
            detail={"size": len(data)},
            intake_key=key or f"{name}|{len(data)}|1",
            dedupe_states=("queued", "succeed"),
        )

    earlier = new_job(store, "old.png", b"old bytes")
    before = store.write_count
    results = store.record_jobs(
        [
            item("a.png", b"aaa"),
            item("b.png", b"bbb"),
            item("a-copy.png", b"aaa"),  # same content as an earlier item of the batch
            item("again.png", b"old bytes"),  # same content as an existing job
            item("a.png", b"zzz", key="a.png|3|1"),  # the same file twice
        ]
    )
    assert store.write_count == before + 1
    a, b, copy, again, twice = results
    assert a.source_path == "a.png" and b.source_path == "b.png"  # type: ignore[union-attr]
    assert isinstance(copy, Existing) and copy.job.id == a.id  # type: ignore[union-attr]
    assert isinstance(again, Existing) and again.job.id == earlier.id
    assert isinstance(twice, DuplicateIntake)
    assert {j.source_path for j in store.list_jobs()} == {"old.png", "a.png", "b.png"}
    stored = store.get(a.id)  # type: ignore[union-attr]
    assert stored.state == "queued" and store.get_blob(stored.input_sha256) == b"aaa"
    [created] = store.history(stored.id)
    assert created.event == "created" and created.detail == {"size": 3}
