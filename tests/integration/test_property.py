"""Random event sequences against the machine: stored state == replay of stored history."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from state.lifecycle import IllegalTransition, JobEvent, JobState, apply
from state.store import Store
from tests.helpers import new_job

EVENTS = [e for e in JobEvent if e is not JobEvent.CREATED]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    path: Path = tmp_path_factory.mktemp("prop") / "p.db"
    return Store.open(str(path), synchronous="OFF")  # durability is not what this tests


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=st.lists(st.sampled_from(EVENTS), max_size=30))
def test_stored_state_is_the_replay_of_history(shared_store: Store, events: list[JobEvent]) -> None:
    store = shared_store
    job = new_job(store)
    model_state, model_attempt = JobState.QUEUED, 1
    for ev in events:
        try:
            expected = apply(model_state, ev)
        except IllegalTransition:
            with pytest.raises(IllegalTransition):
                store.transition(job.id, ev)
            continue
        job = store.transition(job.id, ev)
        model_state = expected
        model_attempt += ev is JobEvent.RETRY
    stored = store.get(job.id)
    history = store.history(job.id)
    replayed = JobState.QUEUED
    for row in history[1:]:
        assert row.from_state == replayed
        replayed = apply(replayed, row.event)
        assert row.to_state == replayed
    assert stored.state == replayed == model_state
    assert stored.attempt == model_attempt == history[-1].attempt
    assert stored.version == len(history)
