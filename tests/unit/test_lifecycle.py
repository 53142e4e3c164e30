from pathlib import Path

import pytest

from state.lifecycle import (
    FINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobState,
    allowed_events,
    apply,
    mermaid,
)

ALLOWED = {(src, ev): dst for ev, sources, dst in TRANSITIONS for src in sources}
EVENTS = [e for e in JobEvent if e is not JobEvent.CREATED]


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("event", EVENTS)
def test_every_event_from_every_state(state: JobState, event: JobEvent) -> None:
    if (state, event) in ALLOWED:
        assert apply(state, event) == ALLOWED[(state, event)]
    else:
        with pytest.raises(IllegalTransition) as err:
            apply(state, event, job_id="abc")
        assert err.value.state == state and err.value.event == event
        assert f"'{event.value}' is not allowed in state '{state.value}'" in str(err.value)
        assert "job abc" in str(err.value)


def test_expected_shape_of_the_life_cycle() -> None:
    # The product's promises, stated independently of the table above.
    assert apply("queued", "accepted") == "submitted"
    assert apply("processing", "finished_remote") == "downloading"
    assert apply("downloading", "stored") == "succeed"
    for end in ("failed", "timeout", "cancelled"):
        assert apply(end, "retry") == "queued"
    assert allowed_events("succeed") == []  # success is final: not even retry
    with pytest.raises(IllegalTransition):
        apply("queued", "expire")  # the deadline runs from submission
    assert {s.value for s in FINAL_STATES} == {"succeed", "failed", "timeout", "cancelled"}


def test_created_is_not_an_event_one_can_send() -> None:
    for state in JobState:
        with pytest.raises(IllegalTransition):
            apply(state, JobEvent.CREATED)


def test_readme_diagram_is_current() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert mermaid() in readme, "README diagram is stale: paste `python -m state.lifecycle`"
