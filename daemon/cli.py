"""The `dropreel` command line."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from daemon import config
from daemon.config import ConfigError, Settings
from daemon.lock import AlreadyRunning
from state.errors import StoreError

log = logging.getLogger("dropreel")

# Flags of `run` that map one-to-one onto settings.
RUN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--drop", "drop", str, "folder to watch for images (default ./drop)"),
    ("--output", "output", str, "folder for the videos (default ./output)"),
    ("--provider", "provider", str, "kling | local | auto (default: kling if a key is set)"),
    ("--api-base", "api_base", str, "Kling base URL, e.g. https://api.tu-zi.com/kling"),
    ("--max-in-flight", "max_in_flight", int, "remote tasks at once (default 5)"),
    ("--settle-seconds", "settle_seconds", float, "a file must be unchanged this long"),
    ("--state-dir", "state_dir", str, "where renders and other state live"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
]


def settings_from(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    flags: dict[str, Any] = dict(extra or {})
    if getattr(args, "db", None):
        flags["db"] = args.db
    for pair in getattr(args, "set", None) or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        flags[key.strip()] = value
    return config.load(flags=flags, config_file=getattr(args, "config", None))


def cmd_run(args: argparse.Namespace) -> int:
    from daemon import logsetup
    from daemon.service import Daemon

    extra = {dest: getattr(args, dest) for _, dest, _, _ in RUN_FLAGS}
    settings = settings_from(args, extra)
    logsetup.configure(settings.log_level)
    # `kill -USR1 <pid>` prints every thread's stack to the journal: how one diagnoses a
    # daemon that looks stuck without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def reload() -> Settings:
        return settings_from(args, extra)

    daemon = Daemon(settings, once=args.once, reload=reload)
    daemon.open()
    return asyncio.run(daemon.run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropreel", description="Turn images dropped into a folder into short videos."
    )
    parser.add_argument(
        "--db", help="database URL or SQLite path (default ./dropreel.db; env DROPREEL_DB)"
    )
    parser.add_argument("--config", type=Path, help="TOML config file (env DROPREEL_CONFIG)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any setting (repeatable)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    # The same options are accepted after the subcommand too (`dropreel run --db x`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--set", action="append", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon", parents=[common])
    for flag, dest, kind, text in RUN_FLAGS:
        run.add_argument(flag, dest=dest, type=kind, help=text)
    run.add_argument(
        "--once", action="store_true", help="process what is there until idle, then exit"
    )
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, StoreError, AlreadyRunning, PermissionError) as exc:
        if args.debug:
            raise
        print(f"dropreel: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
