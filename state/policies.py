"""Pure decisions about time: when to poll, how long to back off, what to expect.

All take `now`/elapsed values and a random source as arguments; none sleeps or reads a
clock.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PollPolicy:
    """Few polls early, denser towards the expected finish, then a slowly widening gap.

    Before the expected finish the next poll comes after half the remaining time (so the
    gaps halve: 75 s, 37 s, 19 s … for a 150 s expectation), never below `min_interval`.
    After it, the gap is a third of the time overdue, between `min_interval` and
    `max_interval`: a long tail costs a few polls, not hundreds."""

    min_interval: float = 3.0
    max_interval: float = 60.0
    jitter: float = 0.1  # ±10 %

    def next_delay(self, elapsed: float, expected: float, rng: random.Random) -> float:
        remaining = expected - elapsed
        if remaining > 2 * self.min_interval:
            delay = remaining / 2
        elif remaining > 0:
            delay = max(self.min_interval, remaining)
        else:
            delay = -remaining / 3
        delay = min(self.max_interval, max(self.min_interval, delay))
        return delay * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; `retry_after` from the provider wins
    when it is longer."""

    base: float = 2.0
    cap: float = 300.0

    def delay(self, failures: int, rng: random.Random, retry_after: float | None = None) -> float:
        delay = rng.uniform(self.base / 2, min(self.cap, self.base * 2 ** max(0, failures - 1)))
        return max(delay, retry_after or 0.0)


# Public data points (protocol notes §10): pro 5 s clips take ~100–250 s; ComfyUI estimates
# 164 s for image2video. Used until this installation has its own history.
DEFAULT_EXPECTED = {"pro": 160.0, "std": 100.0, "4k": 240.0}


def default_expected(params: dict[str, Any]) -> float:
    base = DEFAULT_EXPECTED.get(str(params.get("mode", "pro")), 160.0)
    return base * max(1.0, float(params.get("duration", 5)) / 5) ** 0.8


def estimate_key(params: dict[str, Any]) -> str:
    return f"{params.get('model_name')}/{params.get('mode')}/{params.get('duration')}"


@dataclass
class ExpectedTimes:
    """Expected generation time per model/mode/duration: the median of the recent
    completions (`window` per key), else the public default."""

    window: int = 20
    samples: dict[str, deque[float]] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        if seconds >= 0:
            self.samples.setdefault(key, deque(maxlen=self.window)).append(seconds)

    def expected(self, params: dict[str, Any], default: float | None = None) -> float:
        recent = self.samples.get(estimate_key(params))
        if recent and len(recent) >= 3:
            return statistics.median(recent)
        if default is not None:
            return default * max(1.0, float(params.get("duration", 5)) / 5)
        return default_expected(params)
