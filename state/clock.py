"""Injected time: the daemon and store never call datetime.now() directly."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock a test drives: `advance()` moves both readings; `jump()` moves only the wall."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def jump(self, seconds: float) -> None:
        """Wall clock jump (NTP step, manual change): monotonic time is unaffected."""
        with self._lock:
            self._now += timedelta(seconds=seconds)


def utc_text(at: datetime) -> str:
    """UTC, millisecond precision, sortable as text: 2026-12-04T14:26:41.123Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_utc_text(text: str) -> datetime:
    return datetime.fromisoformat(text)  # 3.11+ reads the trailing Z as UTC


class JumpDetector:
    """Notices wall-clock steps (NTP corrections, a manual `date -s`, a VM resumed with a
    stale clock) by comparing how far the wall clock and the monotonic clock moved since
    the last look. Suspend also shows as a forward jump: the monotonic clock stops while
    the machine sleeps, and the real time that passed is what the deadlines must count."""

    def __init__(self, clock: Clock, threshold: float = 5.0) -> None:
        self.clock = clock
        self.threshold = threshold
        self._wall = clock.now()
        self._mono = clock.monotonic()

    def check(self) -> float:
        """Seconds the wall clock jumped since the last check (0.0 when none)."""
        wall, mono = self.clock.now(), self.clock.monotonic()
        skew = (wall - self._wall).total_seconds() - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return skew if abs(skew) >= self.threshold else 0.0
