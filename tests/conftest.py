from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from state.clock import ManualClock
from state.store import Store
from tests import pg


@pytest.fixture(autouse=True)
def _clean_dropreel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never pick up the developer's own DROPREEL_* settings.
    for key in list(os.environ):
        if key.startswith("DROPREEL_") and key != "DROPREEL_TEST_PG":
            monkeypatch.delenv(key)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file, and PostgreSQL where one is reachable."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg.fresh_database() as url:
        yield url


@pytest.fixture
def store(db_url: str, clock: ManualClock) -> Iterator[Store]:
    s = Store.open(db_url, clock=clock)
    yield s
    s.close()
