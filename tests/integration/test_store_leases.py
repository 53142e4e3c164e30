"""Several daemons on one table: leases, takeover, fencing, cluster-wide admission and
the shared-folder intake key — on SQLite and on PostgreSQL (where the daemon uses them).
Each "daemon" here is a Store of its own on the same database, as each process has."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from state.clock import ManualClock
from state.errors import DuplicateIntake, Fenced, StaleJob
from state.lifecycle import JobEvent, JobState
from state.store import JobRecord, Store
from tests.helpers import job_in_state, new_job


@pytest.fixture
def cluster(db_url: str, clock: ManualClock) -> Iterator[list[Store]]:
    stores = [Store.open(db_url, clock=clock) for _ in range(3)]
    for s in stores:
        s.owner = s.register_daemon("host", 1, 5)
        s.lease = timedelta(seconds=30)
    yield stores
    for s in stores:
        s.close()


def test_jobs_belong_to_their_creator_until_its_lease_runs_out(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, _ = cluster
    job = new_job(a, "a.png")
    assert job.owner == a.owner
    assert b.take_over() == []  # a's lease is live
    assert [j.id for j in a.live_jobs()] == [job.id] and b.live_jobs() == []
    clock.advance(20)
    assert a.renew() == 1  # a renews: 30 s from now
    clock.advance(20)
    assert b.take_over() == []
    clock.advance(11)  # a did not renew again: its lease ran out
    [taken] = b.take_over()
    assert taken.id == job.id and taken.owner == b.owner and taken.version == job.version + 1
    assert [j.id for j in b.live_jobs()] == [job.id] and a.live_jobs() == []
    assert b.held_counts() == {b.owner: 1}


def test_the_old_holder_is_fenced_after_a_takeover(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, _ = cluster
    job = job_in_state(a, JobState.PROCESSING, "a.png")
    clock.advance(31)
    [taken] = b.take_over()
    # a comes back: whether it writes with the version it knew or re-reads first, its
    # writes match no row, and the history keeps only what the holder wrote.
    with pytest.raises(StaleJob):
        a.transition(job.id, JobEvent.FINISHED_REMOTE, expected_version=job.version)
    with pytest.raises(Fenced):
        a.transition(job.id, JobEvent.FINISHED_REMOTE, expected_version=taken.version)
    with pytest.raises(Fenced):
        a.update(job.id, taken.version, poll_count=99)
    assert a.fenced == 3
    assert a.renew() == 0  # it holds nothing any more
    fresh = b.get(job.id)
    assert (fresh.state, fresh.version, fresh.poll_count) == ("processing", taken.version, 0)
    done = b.transition(job.id, JobEvent.FINISHED_REMOTE, expected_version=taken.version)
    assert done.state == JobState.DOWNLOADING
    writers = [(t.to_state, t.daemon_id) for t in b.history(job.id)]
    assert writers[-1] == ("downloading", b.owner)
    assert all(w == a.owner for _, w in writers[:-1])


def test_a_clean_stop_releases_jobs_at_once(cluster: list[Store]) -> None:
    a, b, _ = cluster
    ids = {new_job(a, f"{i}.png").id for i in range(3)}
    assert a.release() == 3
    assert {j.id for j in b.take_over()} == ids


def test_work_under_way_is_due_at_once_when_taken_over(
    cluster: list[Store], clock: ManualClock
) -> None:
    """A dead daemon's plans are not kept: a begun download (guarded 5 minutes ahead)
    and a poll planned far ahead are reconciled at once; a queued job's backoff stays."""
    a, b, _ = cluster
    later = clock.now() + timedelta(seconds=300)
    downloading = job_in_state(a, JobState.DOWNLOADING, "d.png")
    downloading = a.update(downloading.id, downloading.version, next_action_at=later)
    polling = job_in_state(a, JobState.PROCESSING, "p.png")
    polling = a.update(polling.id, polling.version, next_action_at=later)
    overdue = job_in_state(a, JobState.SUBMITTED, "o.png")
    overdue = a.update(overdue.id, overdue.version, next_action_at=clock.now())
    backing_off = new_job(a, "q.png")
    backing_off = a.update(backing_off.id, backing_off.version, next_action_at=later)
    clock.advance(31)
    taken = {j.id: j.next_action_at for j in b.take_over()}
    now = clock.now()
    assert taken == {
        downloading.id: now,
        polling.id: now,
        overdue.id: overdue.next_action_at,
        backing_off.id: later,
    }
    assert b.get(downloading.id).next_action_at == now


def test_concurrent_takeovers_split_the_jobs_without_overlap(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, c = cluster
    ids = {new_job(a, f"{i}.png").id for i in range(60)}
    clock.advance(31)
    taken: dict[str, set[str]] = {}
    barrier = threading.Barrier(2)

    def claim(store: Store) -> None:
        barrier.wait()
        got: set[str] = set()
        for _ in range(6):
            got |= {j.id for j in store.take_over(limit=10)}
        assert store.owner is not None
        taken[store.owner] = got

    threads = [threading.Thread(target=claim, args=(s,)) for s in (b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got_b, got_c = taken[b.owner or ""], taken[c.owner or ""]
    assert not got_b & got_c and got_b | got_c == ids


def test_admission_counts_in_flight_jobs_of_every_daemon(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, _ = cluster
    job_in_state(a, JobState.SUBMITTED, "remote.png")  # 1 with the provider
    sent = new_job(b, "sending.png")
    assert b.admit(sent.id, sent.version, 2, create_sent_at=clock.now()) is not None  # 2
    waiting = new_job(a, "waiting.png")
    assert a.admit(waiting.id, waiting.version, 2, create_sent_at=clock.now()) is None
    assert a.get(waiting.id).create_sent_at is None  # refused: nothing written
    again = b.get(sent.id)  # re-admitting a job already counted does not count it twice
    assert b.admit(again.id, again.version, 2, create_sent_at=clock.now()) is not None
    assert a.admit(waiting.id, waiting.version, 3, create_sent_at=clock.now()) is not None


def test_admission_holds_the_limit_under_concurrent_daemons(cluster: list[Store]) -> None:
    jobs = [[new_job(s, f"{i}-{n}.png") for n in range(10)] for i, s in enumerate(cluster)]
    admitted: list[str] = []
    barrier = threading.Barrier(len(cluster))

    def submit(store: Store, mine: list) -> None:
        barrier.wait()
        for job in mine:
            if store.admit(job.id, job.version, 5, create_sent_at=store.clock.now()):
                admitted.append(job.id)

    threads = [
        threading.Thread(target=submit, args=pair) for pair in zip(cluster, jobs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 5


def test_one_job_per_file_in_a_shared_folder(cluster: list[Store]) -> None:
    a, b, _ = cluster
    key = "toy.png|1234|1700000000000000000"

    def record(store: Store) -> JobRecord:
        return store.create_job(
            source_path="toy.png",
            data=b"x",
            media_type="image/png",
            params={},
            provider="kling",
            intake_key=key,
        )

    first = record(a)
    with pytest.raises(DuplicateIntake):
        record(b)
    assert len(a.list_jobs()) == 1
    assert b.intake_key_in_place(key) and not b.intake_key_in_place(key + "0")
    # Once its source has been moved aside, the same name, size and time is a new file.
    done = a.update(first.id, first.version, source_done_at=a.clock.now())
    assert done.source_done_at is not None and not b.intake_key_in_place(key)
    assert record(b).id != first.id


def test_finished_work_leaves_its_holder(cluster: list[Store], clock: ManualClock) -> None:
    a, b, _ = cluster
    done = job_in_state(a, JobState.SUCCEED, "done.png")
    ended = job_in_state(a, JobState.FAILED, "failed.png")  # source not moved aside yet
    live = new_job(a, "live.png")
    released = a.mark_source_done(done.id, done.version)
    assert released.owner is None and released.source_done_at is not None
    assert a.renew() == 2  # the live job, and the one whose source is still to move
    clock.advance(31)
    assert {j.id for j in b.take_over()} == {ended.id, live.id}
    assert [t.daemon_id for t in b.history(done.id)] == [a.owner] * len(b.history(done.id))


def test_a_queued_job_goes_to_whichever_daemon_submits_it_first(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, _ = cluster
    job = new_job(a, "a.png")
    # b has room: it claims a's queued job as it records the create it is about to send.
    claimed = b.admit(job.id, job.version, 5, create_sent_at=clock.now(), external_task_id="x")
    assert claimed is not None and claimed.owner == b.owner
    assert b.get(job.id).owner == b.owner
    with pytest.raises(StaleJob):  # a, which saw it first, lost the race
        a.admit(job.id, job.version, 5, create_sent_at=clock.now())
    # Once a create may have been sent, the job is its holder's alone.
    with pytest.raises(Fenced):
        a.admit(claimed.id, claimed.version, 5, create_sent_at=clock.now())


def test_an_ended_job_waits_for_a_daemon_that_watches_its_folder(
    cluster: list[Store], clock: ManualClock
) -> None:
    a, b, c = cluster
    a.drop_folder, b.drop_folder, c.drop_folder = "/srv/a", "/srv/b", "/srv/a"
    job = a.create_job(
        source_path="toy.png",
        data=b"x",
        media_type="image/png",
        params={},
        provider="kling",
        fail=("corrupt", "broken"),
        drop_folder="/srv/a",
    )
    a.let_go(job.id)  # as a daemon of another folder does when the job ends in its hands
    assert b.take_over() == []  # b watches another folder: not its source to move
    assert [j.id for j in c.take_over()] == [job.id]
