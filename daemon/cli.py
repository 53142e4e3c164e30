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
from daemon.errors import Refused, UsageError
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

    def command(name: str, help_text: str, func: Any, json_flag: bool = True) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=_with_settings(func))
        return p

    from daemon import commands, doctor

    command(
        "status", "is a daemon running; jobs per state; in flight; last error", commands.cmd_status
    )
    jobs = command("jobs", "job history, newest first", commands.cmd_jobs)
    jobs.add_argument("--state", action="append", help="only this state (repeatable)")
    jobs.add_argument("--since", help="created since: 2h, 3d, 1w or an ISO date")
    jobs.add_argument("--until", help="created before: 2h, 3d or an ISO date")
    jobs.add_argument("--source", metavar="GLOB", help="source path glob, e.g. 'toys/*'")
    jobs.add_argument("--limit", type=int, default=50, help="at most N jobs (default 50)")
    show = command("show", "one job: parameters, remote task, every transition", commands.cmd_show)
    show.add_argument("id", help="job id or a unique prefix of it")
    for name, func, text in (
        ("retry", commands.cmd_retry, "start a new attempt of failed/timed-out/cancelled jobs"),
        ("cancel", commands.cmd_cancel, "cancel unfinished jobs (a remote task is left alone)"),
    ):
        p = command(name, text, func)
        p.add_argument("ids", nargs="*", metavar="ID", help="job ids or unique prefixes")
        p.add_argument("--state", action="append", help="every job in this state (repeatable)")
        p.add_argument("--since", help="…created since: 2h, 3d or an ISO date")
    submit = command("submit", "one image as a job, without the drop folder", commands.cmd_submit)
    submit.add_argument("image", help="image file")
    submit.add_argument("--prompt")
    submit.add_argument("--negative-prompt", dest="negative_prompt")
    submit.add_argument("--mode", choices=["std", "pro"])
    submit.add_argument("--duration", choices=["5", "10"])
    submit.add_argument("--aspect-ratio", dest="aspect_ratio", choices=["9:16", "16:9", "1:1"])
    submit.add_argument(
        "--motion", choices=["zoom", "pan", "sway", "turntable"], help="offline renderer motion"
    )
    submit.add_argument("--preset", help="a [presets.NAME] table of the config")
    submit.add_argument("--wait", action="store_true", help="follow it to the end")
    submit.add_argument("--force", action="store_true", help="even if already done")
    doc = command(
        "doctor",
        "check config, folders, database and credentials",
        doctor.cmd_doctor,
        json_flag=False,
    )
    doc.add_argument("--online", action="store_true", help="also try the credentials")
    from daemon import install

    ins = sub.add_parser(
        "install-service",
        help="install the systemd unit, sysusers/tmpfiles entries and an example config",
    )
    ins.add_argument("--root", help="install under this directory instead of / (packaging)")
    ins.add_argument("--exec-path", help="the dropreel executable (default: this one)")
    ins.set_defaults(func=install.cmd_install_service)
    return parser


def _with_settings(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(func(args, settings_from(args)))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, StoreError, AlreadyRunning, PermissionError, Refused, UsageError) as exc:
        if args.debug:
            raise
        print(f"dropreel: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError | UsageError) else 1
    except BrokenPipeError:  # `dropreel jobs | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
