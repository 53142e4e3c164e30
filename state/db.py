"""Engine creation (SQLite or PostgreSQL), connection settings, and migrations on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError

from state.errors import DatabaseRefused

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x64726F70  # "drop": advisory lock so concurrent daemons migrate once


def normalize_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as SQLite)."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{Path(url_or_path).expanduser().absolute()}"


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 30_000) -> Engine:
    url = normalize_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        # Our transactions last milliseconds. A daemon frozen inside one (SIGSTOP, a VM
        # paused) would hold its row locks, and the cluster's admission lock, for as long
        # as it stays frozen: the server ends such a session after 10 s instead.
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args={"options": "-c idle_in_transaction_session_timeout=10000"},
        )
    if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}")
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is lazy).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL: readers (the CLI) never block the daemon's writer, and vice versa.
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL by default: a transition that returned is on disk even after power loss.
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        # Wait for a competing writer instead of failing with "database is locked".
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Write transactions take the lock up front: a deferred transaction that later
        # upgrades to a writer can fail with SQLITE_BUSY regardless of busy_timeout.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def alembic_config(connection: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def check_and_migrate(engine: Engine, *, migrate: bool = True) -> None:
    """Refuse a database that is corrupt, too new or not ours; else upgrade it to head.

    Never modifies a refused database."""
    url = engine.url
    path = sqlite_path(str(url))
    known = set(ScriptDirectory.from_config(alembic_config()).walk_revisions())
    known_ids = {rev.revision for rev in known}
    try:
        with engine.connect() as conn:
            if path is not None:
                ok = conn.exec_driver_sql("PRAGMA quick_check").scalar()
                if ok != "ok":
                    raise DatabaseRefused(
                        "corrupt",
                        f"database {path} fails its integrity check ({ok}); "
                        "restore it from a backup or move it aside to start afresh",
                    )
            tables = set(inspect(conn).get_table_names())
            current = None
            if "alembic_version" in tables:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, OperationalError) and "locked" not in str(exc):
            raise
        raise DatabaseRefused(
            "corrupt",
            f"database {path or url.render_as_string(hide_password=True)} cannot be read "
            f"({getattr(exc, 'orig', exc)}); restore it from a backup or move it aside",
        ) from exc
    where = path or url.render_as_string(hide_password=True)
    if current is not None and current not in known_ids:
        raise DatabaseRefused(
            "too_new",
            f"database {where} has schema revision {current}, which this dropreel does not "
            "know: it was written by a newer version. Upgrade dropreel, or use another database",
        )
    if current is None and tables - {"alembic_version"}:
        raise DatabaseRefused(
            "not_ours",
            f"database {where} holds tables that dropreel did not create "
            f"({', '.join(sorted(tables)[:5])}); point --db at another database",
        )
    if not migrate:
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(conn), "head")
