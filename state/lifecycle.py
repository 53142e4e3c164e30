"""The job life cycle: one table, read in one screen, enforced by `transitions`.

    queued ──accepted──▶ submitted ──progressed──▶ processing
                            │                          │
                            └──────finished_remote─────┴──▶ downloading ──stored──▶ succeed
    any live state ──fail──▶ failed      submitted/processing/downloading ──expire──▶ timeout
    any live state ──cancel──▶ cancelled failed/timeout/cancelled ──retry──▶ queued (attempt+1)

`apply(state, event)` is the only entry point. The `transitions.Machine` below is built
once, with no model, no callbacks and no auto-transitions: it is used as the validated
definition and looked up read-only, so it is safe from any thread.
"""

from __future__ import annotations

from enum import StrEnum

from transitions import Machine


class JobState(StrEnum):
    QUEUED = "queued"  # validated input recorded, waiting for a submit slot
    SUBMITTED = "submitted"  # the provider accepted it: remote task id known
    PROCESSING = "processing"  # the provider reports work in progress
    DOWNLOADING = "downloading"  # remote says done; the video is being fetched
    SUCCEED = "succeed"  # the video is on disk (spelled as Kling spells it)
    FAILED = "failed"  # ended with an error (job.error_code / error_message say why)
    TIMEOUT = "timeout"  # the deadline passed before the provider finished
    CANCELLED = "cancelled"  # a person cancelled it

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


class JobEvent(StrEnum):
    CREATED = "created"  # pseudo-event of the first history row (from_state NULL)
    ACCEPTED = "accepted"
    PROGRESSED = "progressed"
    FINISHED_REMOTE = "finished_remote"
    STORED = "stored"
    FAIL = "fail"
    EXPIRE = "expire"
    CANCEL = "cancel"
    RETRY = "retry"


S, E = JobState, JobEvent
LIVE_STATES = (S.QUEUED, S.SUBMITTED, S.PROCESSING, S.DOWNLOADING)
FINAL_STATES = frozenset({S.SUCCEED, S.FAILED, S.TIMEOUT, S.CANCELLED})
INITIAL_STATE = S.QUEUED

# (event, sources, destination) — the whole life cycle.
TRANSITIONS: list[tuple[JobEvent, tuple[JobState, ...], JobState]] = [
    (E.ACCEPTED, (S.QUEUED,), S.SUBMITTED),
    (E.PROGRESSED, (S.SUBMITTED,), S.PROCESSING),
    (E.FINISHED_REMOTE, (S.SUBMITTED, S.PROCESSING), S.DOWNLOADING),
    (E.STORED, (S.DOWNLOADING,), S.SUCCEED),
    (E.FAIL, LIVE_STATES, S.FAILED),
    (E.EXPIRE, (S.SUBMITTED, S.PROCESSING, S.DOWNLOADING), S.TIMEOUT),
    (E.CANCEL, LIVE_STATES, S.CANCELLED),
    (E.RETRY, (S.FAILED, S.TIMEOUT, S.CANCELLED), S.QUEUED),
]


class IllegalTransition(Exception):
    """An event that the life cycle does not allow from the job's current state."""

    def __init__(self, state: str, event: str, job_id: str | None = None) -> None:
        self.state, self.event, self.job_id = state, event, job_id
        allowed = ", ".join(allowed_events(state)) if state in S.__members__.values() else "-"
        who = f"job {job_id}: " if job_id else ""
        super().__init__(
            f"{who}event '{event}' is not allowed in state '{state}' (allowed: {allowed or 'none'})"
        )


_MACHINE = Machine(
    model=None,
    states=[s.value for s in JobState],
    transitions=[
        {"trigger": ev.value, "source": [s.value for s in src], "dest": dst.value}
        for ev, src, dst in TRANSITIONS
    ],
    initial=INITIAL_STATE.value,
    auto_transitions=False,
)


def apply(state: str, event: str, job_id: str | None = None) -> JobState:
    """Return the state that `event` leads to from `state`, or raise IllegalTransition."""
    found = _MACHINE.get_transitions(trigger=str(event), source=str(state))
    if not found:
        raise IllegalTransition(str(state), str(event), job_id)
    return JobState(found[0].dest)


def allowed_events(state: str) -> list[str]:
    return [ev.value for ev, src, _ in TRANSITIONS if state in src]


def mermaid() -> str:
    """The life cycle as a mermaid state diagram (the README embeds this output)."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE.value}"]
    for ev, src, dst in TRANSITIONS:
        lines.extend(f"    {s.value} --> {dst.value}: {ev.value}" for s in src)
    lines.extend(f"    {s.value} --> [*]" for s in JobState if s in FINAL_STATES)
    return "\n".join(lines)


if __name__ == "__main__":
    print(mermaid())
