"""Did anyone write to the database since I last looked? For SQLite, `PRAGMA data_version`
on a connection of our own answers in microseconds without a thread hop, so an idle daemon
can skip its periodic queries and still see a CLI's retry or cancel within a tick."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class WriteWatch:
    def __init__(self, sqlite_file: Path | None) -> None:
        self._conn: sqlite3.Connection | None = None
        self._last: int | None = None
        if sqlite_file is not None:
            try:
                self._conn = sqlite3.connect(
                    f"file:{sqlite_file}?mode=ro", uri=True, check_same_thread=False
                )
            except sqlite3.Error:
                self._conn = None

    def changed(self) -> bool:
        """True if some connection committed since the last call (always True when we
        cannot tell, e.g. on PostgreSQL)."""
        if self._conn is None:
            return True
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return True
        changed = version != self._last
        self._last = version
        return changed

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
