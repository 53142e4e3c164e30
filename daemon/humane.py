"""Time in and out of the command line: `2h`, `3d` or ISO dates in; local, human times in
tables; ISO-8601 UTC in JSON."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from state.clock import utc_text

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, now: datetime) -> datetime:
    """`90m`, `2h`, `3d`, `1w` (that long ago), or an ISO date/time (local unless it
    says otherwise). ValueError with the accepted forms otherwise."""
    match = _AGO.match(text)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use an age such as 90m, 2h, 3d, 1w, or an ISO date "
            "such as 2026-12-04 or 2026-12-04T08:30"
        ) from None
    if at.tzinfo is None:
        at = at.astimezone()  # a local wall time, as people type them
    return at.astimezone(UTC)


def iso(at: datetime | None) -> str | None:
    return None if at is None else utc_text(at)


def local(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """3.2s, 4m05s, 2h10m, 3d04h: short enough for a table column."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clip(text: str, width: int) -> str:
    """Fit text into a column, keeping the end (file names differ at the end)."""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if width > 1 else text[:width]
