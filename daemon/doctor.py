"""`dropreel doctor`: check what the daemon needs, and say what to fix. Never prints a
secret; `--online` makes one cheap authenticated call to the provider."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from daemon.config import Settings
from state.db import make_engine, normalize_url, sqlite_path
from state.errors import StoreError
from state.store import Store


@dataclass
class Finding:
    level: str  # ok | warn | FAIL
    what: str
    fix: str = ""


def _folder(name: str, path: Path) -> list[Finding]:
    if path.is_dir():
        if os.access(path, os.W_OK | os.X_OK):
            return [Finding("ok", f"{name} folder {path} exists and is writable")]
        return [
            Finding(
                "FAIL",
                f"{name} folder {path} is not writable by this user",
                f"chown it to the daemon's user, or choose another {name}",
            )
        ]
    parent = next((p for p in path.parents if p.exists()), Path("/"))
    if os.access(parent, os.W_OK | os.X_OK):
        return [
            Finding(
                "warn", f"{name} folder {path} does not exist yet", "the daemon creates it on start"
            )
        ]
    return [
        Finding(
            "FAIL",
            f"{name} folder {path} does not exist and {parent} is not writable",
            f"create {path} for the daemon's user",
        )
    ]


def _same_filesystem(a: Path, b: Path) -> bool | None:
    def device(p: Path) -> int | None:
        for q in (p, *p.parents):
            if q.exists():
                return q.stat().st_dev
        return None

    da, db = device(a), device(b)
    return None if da is None or db is None else da == db


def check_folders(s: Settings) -> list[Finding]:
    found = _folder("drop", s.drop) + _folder("output", s.output)
    for sub in ("done", "failed"):
        same = _same_filesystem(s.drop, s.drop / sub)
        if same is False:
            found.append(
                Finding(
                    "FAIL",
                    f"{s.drop / sub} is on another filesystem than {s.drop}",
                    "sources are moved aside with rename(); keep them together",
                )
            )
    if _same_filesystem(s.output, s.resolved_state_dir) is False:
        found.append(
            Finding(
                "warn",
                f"renders in {s.resolved_state_dir} are on another filesystem than {s.output}",
                "they are copied, not renamed",
            )
        )
    if s.output.exists():
        free = shutil.disk_usage(s.output).free
        level = "ok" if free > 1 << 30 else "warn"
        found.append(
            Finding(
                level,
                f"{free / 1e9:.1f} GB free for videos in {s.output}",
                "" if level == "ok" else "downloads hold while the disk is full",
            )
        )
    if s.drop.resolve() == s.output.resolve():
        found.append(
            Finding(
                "FAIL",
                "drop and output are the same folder",
                "videos would be picked up as input; separate them",
            )
        )
    return found


def check_database(s: Settings) -> list[Finding]:
    url = normalize_url(s.db)
    shown = make_engine(url).url.render_as_string(hide_password=True)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return [Finding("warn", f"no database at {path} yet", "the daemon creates it on start")]
    try:
        store = Store.open(s.db, create=False, migrate=False)
    except StoreError as exc:
        return [
            Finding(
                "FAIL",
                f"database {shown}: {exc}",
                "restore it from a backup, or point --db elsewhere",
            )
        ]
    try:
        found = [Finding("ok", f"database {shown} opens and is migrated")]
        if store.dialect == "sqlite":
            with store.engine.connect() as conn:
                result = conn.execute(text("PRAGMA quick_check")).scalar()
            if result == "ok":
                found.append(Finding("ok", "database integrity check passed"))
            else:
                found.append(
                    Finding(
                        "FAIL",
                        f"database integrity: {result}",
                        "stop the daemon and restore a backup",
                    )
                )
        jobs = sum(store.counts_by_state().values())
        found.append(Finding("ok", f"{jobs} jobs recorded"))
        return found
    finally:
        store.close()


def check_credentials(s: Settings, online: bool) -> list[Finding]:
    provider = s.resolved_provider
    if provider == "local":
        note = "no Kling credentials: the offline renderer makes the videos"
        return [Finding("ok", f"provider local ({note})")]
    kind = "bearer key" if s.api_key else "access key + secret key (JWT)"
    if not (s.api_key or s.access_key):
        return [
            Finding(
                "FAIL",
                "provider kling but no credentials",
                "set DROPREEL_API_KEY, api_key_file, or the systemd credential api_key",
            )
        ]
    found = [Finding("ok", f"provider kling at {s.api_base}, {kind} configured")]
    if online:
        found.append(asyncio.run(_online(s)))
    return found


async def _online(s: Settings) -> Finding:
    from daemon.errors import AccountError, ProviderError
    from daemon.service import build_provider

    provider = build_provider(s, s.resolved_state_dir)
    client = getattr(provider, "client", None)
    try:
        if client is None:
            return Finding("warn", "this provider has no online check")
        await client.list_tasks(page=1, size=1)
        return Finding("ok", "the provider accepted an authenticated call")
    except AccountError as exc:
        return Finding(
            "FAIL",
            f"the provider refused the credentials: {exc}",
            "check the key (and the balance) in the provider's console",
        )
    except ProviderError as exc:
        return Finding("warn", f"the provider answered with an error: {exc}")
    finally:
        await provider.aclose()


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    findings = [
        Finding(
            "ok",
            "configuration is valid"
            + (f" ({settings.config_file})" if settings.config_file else ""),
        )
    ]
    findings += check_folders(settings)
    findings += check_database(settings)
    findings += check_credentials(settings, args.online)
    for f in findings:
        print(f"{f.level:4}  {f.what}")
        if f.fix and f.level != "ok":
            print(f"      → {f.fix}")
    failed = sum(f.level == "FAIL" for f in findings)
    print(f"\n{failed} problem(s) to fix" if failed else "\nall good")
    return 1 if failed else 0
