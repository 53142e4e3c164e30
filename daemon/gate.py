"""Daemon-wide admission: pause on account errors, adaptive in-flight limit after
concurrency refusals, and the disk-full hold. In memory, rebuilt on start (a pause is
re-discovered by the first refused call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class Gate:
    max_in_flight: int
    pause_retry: float = 300.0  # seconds between probes while paused
    recover_after: float = 60.0  # seconds of calm before the limit grows back by one
    rate_streak_limit: int = 5  # consecutive plain rate limits before pausing
    paused_reason: str | None = None
    paused_since: datetime | None = None
    probe_at: datetime | None = None
    cap: int | None = None  # lowered limit after 1303s
    cap_changed_at: datetime | None = None
    rate_streak: int = 0
    disk_full_until: datetime | None = None
    disk_full_reason: str | None = None

    def limit(self, now: datetime) -> int:
        calm = timedelta(seconds=self.recover_after)
        if self.cap is not None and self.cap_changed_at and now - self.cap_changed_at >= calm:
            self.cap += 1
            self.cap_changed_at = now
            if self.cap >= self.max_in_flight:
                self.cap = None
        return self.max_in_flight if self.cap is None else self.cap

    def free_slots(self, now: datetime, in_flight: int) -> int:
        """How many submissions may start now."""
        if self.disk_full_until is not None and now < self.disk_full_until:
            return 0
        free = self.limit(now) - in_flight
        if self.paused_reason is not None:
            if self.probe_at is None or now < self.probe_at:
                return 0
            return min(free, 1)  # one probe submission decides whether the pause is over
        return max(0, free)

    def pause(self, reason: str, now: datetime) -> bool:
        """Pause submissions; True if this is a new pause (log it once)."""
        new = self.paused_reason is None
        self.paused_reason = reason
        self.paused_since = self.paused_since if not new else now
        self.probe_at = now + timedelta(seconds=self.pause_retry)
        return new

    def resume(self) -> bool:
        was = self.paused_reason is not None
        self.paused_reason = self.paused_since = self.probe_at = None
        self.rate_streak = 0
        return was

    def concurrency_refused(self, in_flight: int, now: datetime) -> int:
        self.cap = max(1, min(self.limit(now), in_flight))
        self.cap_changed_at = now
        return self.cap

    def rate_limited(self, now: datetime, reason: str) -> bool:
        """Count a plain rate limit; True when the streak is long enough to pause."""
        self.rate_streak += 1
        if self.rate_streak >= self.rate_streak_limit:
            return self.pause(
                f"the provider refused {self.rate_streak} submissions in a row "
                f"with rate limits ({reason}); this can also mean an empty "
                "balance behind a gateway",
                now,
            )
        return False

    def submitted_ok(self) -> bool:
        self.rate_streak = 0
        return self.resume()

    def disk_full(self, reason: str, now: datetime, hold: float = 30.0) -> bool:
        new = self.disk_full_until is None or now >= self.disk_full_until
        self.disk_full_until = now + timedelta(seconds=hold)
        self.disk_full_reason = reason
        return new

    def disk_ok(self) -> None:
        self.disk_full_until = None
        self.disk_full_reason = None

    def shift(self, delta: timedelta) -> None:
        """The wall clock stepped back: move our pending times with it (a forward step
        only makes them come due sooner, which is harmless)."""
        if delta >= timedelta(0):
            return
        if self.probe_at is not None:
            self.probe_at += delta
        if self.disk_full_until is not None:
            self.disk_full_until += delta
        if self.cap_changed_at is not None:
            self.cap_changed_at += delta
