"""Where the tests find PostgreSQL: $DROPREEL_TEST_PG, else the machine's local server.

Each caller gets a fresh, empty database that is dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

ADMIN_URL = os.environ.get(
    "DROPREEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_reason: str | None = None
_checked = False


def unavailable_reason() -> str | None:
    """None if PostgreSQL is reachable, else why not (used as the skip reason)."""
    global _checked, _reason
    if not _checked:
        _checked = True
        try:
            import psycopg

            with psycopg.connect(_libpq(ADMIN_URL), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means: skip, and say why
            _reason = f"no PostgreSQL reachable at {ADMIN_URL} ({type(exc).__name__}: {exc})"
    return _reason


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"dropreel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(_libpq(ADMIN_URL), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
