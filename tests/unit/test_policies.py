import random

from state.clock import JumpDetector, ManualClock
from state.policies import Backoff, ExpectedTimes, PollPolicy, default_expected, estimate_key


def simulate(
    policy: PollPolicy, finish: float, expected: float, seed: int = 0
) -> tuple[int, float]:
    """(status calls, delay between remote finish and the poll that sees it)."""
    rng, t, polls = random.Random(seed), 0.0, 0
    while True:
        t += policy.next_delay(t, expected, rng)
        polls += 1
        if t >= finish:
            return polls, t - finish


def test_few_polls_and_short_delay_when_the_estimate_is_right() -> None:
    polls, delay = simulate(PollPolicy(), finish=150, expected=150)
    assert polls <= 10 and delay <= 3.5  # the old fixed 5 s poll needs 30 calls here


def test_long_tail_costs_few_polls() -> None:
    polls, delay = simulate(PollPolicy(), finish=1800, expected=150)
    assert polls < 45 and delay <= 60 * 1.1  # 12x the estimate: ~1 poll a minute


def test_intervals_respect_bounds() -> None:
    policy, rng = PollPolicy(min_interval=2, max_interval=30), random.Random(1)
    for elapsed in range(0, 3000, 7):
        d = policy.next_delay(elapsed, 150, rng)
        assert 2 * 0.9 <= d <= 30 * 1.1


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    b, rng = Backoff(base=1, cap=10), random.Random(2)
    assert all(b.delay(1, rng) <= 1 for _ in range(50))
    assert all(b.delay(20, rng) <= 10 for _ in range(50))
    assert b.delay(1, rng, retry_after=42) == 42


def test_expected_times_learn_from_history() -> None:
    params = {"model_name": "kling-v2-6", "mode": "pro", "duration": 5}
    e = ExpectedTimes()
    assert e.expected(params) == default_expected(params) == 160
    for s in (100, 110, 400):
        e.add(estimate_key(params), s)
    assert e.expected(params) == 110  # median: one slow outlier does not drag it
    assert e.expected({**params, "mode": "std"}) == 100  # other keys unaffected


def test_jump_detector_sees_wall_steps_not_elapsed_time() -> None:
    clock = ManualClock()
    jumps = JumpDetector(clock, threshold=5)
    clock.advance(600)  # ten quiet minutes: both clocks moved
    assert jumps.check() == 0.0
    clock.jump(-3600)
    assert jumps.check() == -3600
    assert jumps.check() == 0.0  # reported once
    clock.advance(1)
    clock.jump(3)  # under the threshold: NTP slewing noise
    assert jumps.check() == 0.0
    clock.jump(86400)
    assert jumps.check() == 86400


def test_generation_time_is_learned_from_provider_timestamps() -> None:
    from datetime import UTC, datetime, timedelta

    from daemon.driver import _provider_seconds
    from daemon.kling_parse import RemoteStatus, RemoteTask

    start = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def task(created: datetime | None, updated: datetime | None) -> RemoteTask:
        return RemoteTask(
            "t1", RemoteStatus.DONE, "succeed", created_at=created, updated_at=updated
        )

    assert _provider_seconds(task(start, start + timedelta(seconds=148.5))) == 148.5
    assert _provider_seconds(task(start, None)) is None  # not given: fall back to ours
    assert _provider_seconds(task(start, start - timedelta(seconds=5))) is None  # absurd
    assert _provider_seconds(task(start, start + timedelta(days=3))) is None
