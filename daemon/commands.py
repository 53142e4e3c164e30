"""The command line's read and control subcommands: status, jobs, show, retry, cancel,
submit. They work on the database alone, so they work whether or not a daemon runs; a
running daemon notices their changes on its next tick (the table is its source of truth).

Exit codes: 0 ok; 1 the thing asked about failed or was not found; 2 usage errors."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemon import humane
from daemon.config import Settings
from daemon.errors import Refused, UsageError
from daemon.lock import DatabaseLock
from state.db import normalize_url, sqlite_path
from state.errors import StaleJob
from state.lifecycle import IllegalTransition, JobEvent, JobState
from state.store import JobRecord, Store, TransitionRecord

REMOTE = (JobState.SUBMITTED.value, JobState.PROCESSING.value)
# Failures of the input itself: a retry would fail the same way.
INPUT_ERRORS = frozenset(
    {
        "empty",
        "not_an_image",
        "corrupt",
        "too_small",
        "aspect_ratio",
        "decoder_crashed",
        "too_large",
        "bad_parameters",
    }
)
WIDTH = 80


@contextmanager
def opened(settings: Settings, *, create: bool = False) -> Iterator[Store]:
    """The store for a command. Read commands never create a database: a mistyped --db
    must say so, not leave an empty file behind."""
    store = Store.open(settings.db, create=create, migrate=create)
    try:
        yield store
    finally:
        store.close()


def emit(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# -- the stable JSON shapes (documented in the README) ------------------------------------


def job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "id": job.id,
        "source": job.source_path,
        "state": job.state,
        "attempt": job.attempt,
        "provider": job.provider,
        "remote_task_id": job.remote_task_id,
        "created_at": humane.iso(job.created_at),
        "updated_at": humane.iso(job.updated_at),
        "output": job.output_path if job.state == JobState.SUCCEED else None,
        "error": job.error_message,
        "error_code": job.error_code,
    }


def transition_json(t: TransitionRecord) -> dict[str, Any]:
    return {
        "attempt": t.attempt,
        "from": t.from_state,
        "to": t.to_state,
        "event": t.event,
        "at": humane.iso(t.at),
        "detail": t.detail,
    }


# -- status ----------------------------------------------------------------------------


def daemon_state(settings: Settings, store: Store, now: datetime) -> dict[str, Any] | None:
    """The daemon on this database, if one runs: its newest unstopped row, confirmed by the
    SQLite lock (or, for a shared database, a recent heartbeat)."""
    rows = store.daemons(live_only=True)
    path = sqlite_path(normalize_url(settings.db))
    holder = DatabaseLock.holder(path) if path is not None else None
    stale_after = timedelta(seconds=max(30.0, settings.tick_seconds * 5 * 3))
    for row in rows:
        fresh = now - row["heartbeat_at"] < stale_after
        alive = holder == row["pid"] if path is not None else fresh
        if alive:
            return {
                "running": True,
                "pid": row["pid"],
                "host": row["host"],
                "started_at": humane.iso(row["started_at"]),
                "heartbeat_at": humane.iso(row["heartbeat_at"]),
                "responding": fresh,
                "paused_reason": row["paused_reason"],
                "paused_since": humane.iso(row["paused_since"]),
                "max_in_flight": row["max_in_flight"],
                "last_error": row["last_error"],
                "status": row["status"],
            }
    if holder is not None:  # locked, but no row yet: starting up
        return {"running": True, "pid": holder, "host": socket.gethostname(), "starting": True}
    return None


def cluster_state(settings: Settings, store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every live daemon on a shared (PostgreSQL) table, with the jobs it holds; empty for
    SQLite, where one daemon runs at a time."""
    if sqlite_path(normalize_url(settings.db)) is not None:
        return []
    stale_after = timedelta(seconds=max(30.0, settings.tick_seconds * 5 * 3))
    held = store.held_counts()
    return [
        {
            "id": row["id"],
            "host": row["host"],
            "pid": row["pid"],
            "started_at": humane.iso(row["started_at"]),
            "heartbeat_at": humane.iso(row["heartbeat_at"]),
            "heartbeat_age_seconds": round((now - row["heartbeat_at"]).total_seconds(), 1),
            "jobs_held": held.get(row["id"], 0),
            "paused_reason": row["paused_reason"],
        }
        for row in store.daemons(live_only=True)
        if now - row["heartbeat_at"] < stale_after
    ]


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    with opened(settings) as store:
        daemon = daemon_state(settings, store, now)
        cluster = cluster_state(settings, store, now)
        counts = store.counts_by_state()
        oldest = store.next_queued_at()
        last = store.daemons(live_only=False)[:1]
    in_flight = sum(counts[s] for s in REMOTE)
    limit = (daemon or {}).get("max_in_flight") or settings.max_in_flight
    queued_age = (now - oldest).total_seconds() if oldest else None
    last_error = (daemon or {}).get("last_error") or (last[0]["last_error"] if last else None)
    if args.json:
        emit(
            {
                "daemon": daemon,
                "daemons": cluster,
                "counts": counts,
                "in_flight": in_flight,
                "max_in_flight": limit,
                "oldest_queued_age_seconds": queued_age,
                "last_error": last_error,
            }
        )
        return 0
    if daemon is None:
        line = "not running"
        if last:
            stopped = last[0]["stopped_at"] or last[0]["heartbeat_at"]
            how = "crashed" if last[0]["crashed"] or last[0]["stopped_at"] is None else "stopped"
            line += f" (last one {how} {humane.local(stopped)})"
        print(f"daemon:        {line}")
    else:
        since = ""
        if daemon.get("started_at"):
            started = datetime.fromisoformat(daemon["started_at"])
            up = humane.duration((now - started).total_seconds())
            since = f", since {humane.local(started)} ({up})"
        print(f"daemon:        running, pid {daemon['pid']} on {daemon['host']}{since}")
        if daemon.get("responding") is False:
            print("               (no heartbeat for a while: busy, or stuck?)")
        if daemon.get("paused_reason"):
            paused = (
                datetime.fromisoformat(daemon["paused_since"]) if daemon["paused_since"] else None
            )
            print(f"submissions:   PAUSED since {humane.local(paused)}: {daemon['paused_reason']}")
    if cluster:
        print(f"daemons:       {len(cluster)} sharing this database")
    for row in cluster:
        age = humane.duration(row["heartbeat_age_seconds"])
        paused = "; submissions PAUSED" if row["paused_reason"] else ""
        print(
            f"  {row['host']} pid {row['pid']}: heartbeat {age} ago, "
            f"holding {row['jobs_held']} jobs{paused}"
        )
    live = [f"{n} {s}" for s, n in counts.items() if n and not JobState(s).is_final]
    ended = [f"{n} {s}" for s, n in counts.items() if n and JobState(s).is_final]
    print(f"unfinished:    {', '.join(live) or 'none'}")
    print(f"ended:         {', '.join(ended) or 'none'}")
    print(f"in flight:     {in_flight} of {limit}")
    if queued_age is not None:
        print(f"oldest queued: {humane.duration(queued_age)} ago")
    if last_error:
        print(f"last error:    {last_error}")
    return 0


# -- jobs / show -------------------------------------------------------------------------


def _took(job: JobRecord, now: datetime) -> float:
    end = job.updated_at if job.is_final else now
    return (end - job.created_at).total_seconds()


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    try:
        since = humane.parse_when(args.since, now) if args.since else None
        until = humane.parse_when(args.until, now) if args.until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    states = _states(args.state)
    with opened(settings) as store:
        jobs = store.list_jobs(
            states=states, since=since, until=until, source_glob=args.source, limit=args.limit
        )
    if args.json:
        emit([job_json(j) for j in jobs])
        return 0
    if not jobs:
        print("no jobs match", file=sys.stderr)
        return 0
    print(f"{'ID':8}  {'STATE':11} {'TRY':>3} {'AGE':>6} {'TOOK':>6}  SOURCE → RESULT")
    for job in jobs:
        age = humane.duration((now - job.created_at).total_seconds())
        took = humane.duration(_took(job, now))
        head = f"{job.id[:8]}  {job.state:11} {job.attempt:>3} {age:>6} {took:>6}  "
        result = (
            Path(job.output_path).name
            if job.state == JobState.SUCCEED and job.output_path
            else (job.error_code or "")
        )
        room = WIDTH - len(head)
        source = humane.clip(job.source_path, max(10, room - len(result) - 3) if result else room)
        print(
            head + source + (f" → {humane.clip(result, room - len(source) - 3)}" if result else "")
        )
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings) as store:
        job = store.resolve(args.id)
        history = store.history(job.id)
    if args.json:
        emit(
            {
                **job_json(job),
                "params": job.params,
                "transitions": [transition_json(t) for t in history],
            }
        )
        return 0
    rows = [
        ("job", job.id),
        ("source", job.source_path),
        ("state", f"{job.state} (attempt {job.attempt})"),
        ("provider", job.provider),
        ("remote task", job.remote_task_id or "-"),
        ("external id", job.external_task_id or "-"),
        ("output", job.output_path if job.state == JobState.SUCCEED else "-"),
        ("created", humane.local(job.created_at)),
        ("updated", humane.local(job.updated_at)),
    ]
    if job.error_message:
        rows.append(("error", f"[{job.error_code}] {job.error_message}"))
    for key, value in rows:
        lines = textwrap.wrap(str(value), WIDTH - 14) or [""]
        print(f"{key + ':':13} {lines[0]}")
        for more in lines[1:]:
            print(f"{'':13} {more}")
    print("parameters:")
    for key, value in sorted(job.params.items()):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        lines = textwrap.wrap(str(text), WIDTH - 19) or [""]
        print(f"  {key:16} {lines[0]}")
        for more in lines[1:]:
            print(f"  {'':16} {more}")
    print("history:")
    previous: datetime | None = None
    for t in history:
        gap = "" if previous is None else f"+{humane.duration((t.at - previous).total_seconds())}"
        previous = t.at
        arrow = f"{t.from_state or '-'} → {t.to_state}"
        print(f"  {humane.local(t.at)} {gap:>7}  {t.event:16} {arrow}")
        for line in textwrap.wrap(_detail_note(t.detail), WIDTH - 30):
            print(f"  {'':28}{line}")
    return 0


def _detail_note(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    keep = {k: v for k, v in detail.items() if k not in ("estimate_key",)}
    return ", ".join(f"{k}={v}" for k, v in keep.items())


# -- retry / cancel ----------------------------------------------------------------------


def _states(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    known = {s.value for s in JobState}
    for value in values:
        if value not in known:
            raise UsageError(f"--state {value!r}: one of {', '.join(sorted(known))}")
    return values


def _targets(args: argparse.Namespace, store: Store, default_states: list[str]) -> list[JobRecord]:
    if args.ids and (args.state or args.since):
        raise UsageError("give job ids, or --state/--since filters, not both")
    if args.ids:
        return [store.resolve(i) for i in args.ids]
    if not (args.state or args.since):
        raise UsageError("which jobs? give job ids, or --state and/or --since")
    since = humane.parse_when(args.since, datetime.now(UTC)) if args.since else None
    return store.list_jobs(states=_states(args.state) or default_states, since=since)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _control(
    args: argparse.Namespace, settings: Settings, event: JobEvent, default_states: list[str]
) -> int:
    failures = 0
    done: list[dict[str, Any]] = []
    with opened(settings) as store:
        try:
            jobs = _targets(args, store, default_states)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not jobs and not args.json:
            print("no jobs match", file=sys.stderr)
        for job in jobs:
            detail = {"by": _who(), "via": "cli"}
            changes: dict[str, Any] = {}
            if event is JobEvent.RETRY and job.error_code in INPUT_ERRORS:
                failures += 1
                print(
                    f"dropreel: job {job.id[:8]} failed on its input ({job.error_code}); a "
                    "retry would fail the same way: fix the file and drop it in again",
                    file=sys.stderr,
                )
                continue
            if event is JobEvent.CANCEL:
                changes = {"next_action_at": None, "error_code": "cancelled"}
                note = f"cancelled by {detail['by']}"
                if job.remote_task_id and job.state in REMOTE:
                    note += (
                        f"; remote task {job.remote_task_id} left to finish on the provider "
                        "(the API has no cancel call)"
                    )
                    detail["remote_task_left"] = job.remote_task_id
                changes["error_message"] = note
            try:
                new = store.transition(
                    job.id, event, expected_version=job.version, detail=detail, **changes
                )
            except IllegalTransition:
                failures += 1
                allowed = (
                    "failed, timeout or cancelled" if event is JobEvent.RETRY else "unfinished"
                )
                print(
                    f"dropreel: job {job.id[:8]} is {job.state}; only {allowed} jobs can be "
                    f"{'retried' if event is JobEvent.RETRY else 'cancelled'}",
                    file=sys.stderr,
                )
                continue
            except StaleJob:
                failures += 1
                print(
                    f"dropreel: job {job.id[:8]} changed while we looked; run the command again",
                    file=sys.stderr,
                )
                continue
            done.append(job_json(new))
            if not args.json:
                verb = (
                    f"queued again (attempt {new.attempt})"
                    if event is JobEvent.RETRY
                    else "cancelled"
                )
                print(f"{new.id[:8]}  {job.state} → {new.state}: {verb}  ({new.source_path})")
    if args.json:
        emit(done)
    return 1 if failures else 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    return _control(args, settings, JobEvent.RETRY, ["failed", "timeout"])


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    live = [s.value for s in JobState if not s.is_final]
    return _control(args, settings, JobEvent.CANCEL, live)


# -- submit ------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    import hashlib

    from daemon.intake import InvalidImage, prepare_image
    from state.params import ParamError, effective
    from state.store import content_key

    path = Path(args.image).expanduser().absolute()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Refused(f"{path}: no such file") from None
    except IsADirectoryError:
        raise Refused(f"{path} is a folder; give an image file") from None
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror}") from None
    overrides: dict[str, Any] = {}
    for key in ("prompt", "negative_prompt", "mode", "duration", "aspect_ratio", "motion"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    try:
        params = effective(
            settings.defaults, settings.presets.get(args.preset) if args.preset else None, overrides
        )
    except ParamError as exc:
        raise UsageError(str(exc)) from None
    if args.preset and args.preset not in settings.presets:
        raise UsageError(f"--preset {args.preset!r}: no such preset in the config")
    try:
        prepared = prepare_image(data, path.name, settings.conform_ratio)
    except InvalidImage as exc:
        raise Refused(str(exc)) from None
    with opened(settings, create=True) as store:
        ckey = content_key(hashlib.sha256(prepared.data).hexdigest(), params)
        existing = store.find_by_content_key(
            ckey, ["queued", "submitted", "processing", "downloading", "succeed"]
        )
        if existing and not args.force:
            other = existing[0]
            raise Refused(
                f"the same image with the same parameters is already job {other.id[:8]} "
                f"({other.state}); --force submits it again"
            )
        job = store.create_job(
            source_path=str(path),
            data=prepared.data,
            media_type=prepared.media_type,
            params=params,
            provider=settings.resolved_provider,
            detail={"via": "cli", "by": _who()}
            | ({"conformed": prepared.conformed} if prepared.conformed else {}),
        )
        running = daemon_state(settings, store, datetime.now(UTC))
    if args.json and not args.wait:
        emit(job_json(job))
    else:
        print(f"job {job.id[:8]} queued ({path.name})")
    if running is None:
        print(
            "dropreel: no daemon is running on this database; the job waits for `dropreel run`",
            file=sys.stderr,
        )
        if args.wait:
            return 1
    if not args.wait:
        return 0
    return _follow(settings, job.id, args.json)


def _follow(settings: Settings, job_id: str, as_json: bool) -> int:
    """A live progress line until the job ends; exit 0 only for `succeed`."""
    started = time.monotonic()
    tty = sys.stdout.isatty()
    last: tuple[str, int] | None = None
    with opened(settings) as store:
        while True:
            job = store.get(job_id)
            elapsed = humane.duration(time.monotonic() - started)
            line = f"{job.id[:8]}  {job.state:11} {elapsed:>6}  polls {job.poll_count}"
            # A terminal gets one line redrawn in place; a pipe gets a line per change.
            if not as_json and (tty or (job.state, job.poll_count) != last):
                print(("\r" + line.ljust(60)) if tty else line, end="" if tty else "\n", flush=True)
                last = (job.state, job.poll_count)
            if job.is_final:
                break
            time.sleep(0.5)
    if as_json:
        emit(job_json(job))
    else:
        if tty:
            print()
        if job.state == JobState.SUCCEED:
            print(f"video: {job.output_path}")
        else:
            print(f"dropreel: job {job.id[:8]} {job.state}: {job.error_message}", file=sys.stderr)
    return 0 if job.state == JobState.SUCCEED else 1
