"""The `dropreel` command line."""

from __future__ import annotations

import argparse
import os
import sys

from state.errors import StoreError
from state.store import Store

DEFAULT_DB = "dropreel.db"


def _db_arg(args: argparse.Namespace) -> str:
    return args.db or os.environ.get("DROPREEL_DB") or DEFAULT_DB


def cmd_run(args: argparse.Namespace) -> int:
    store = Store.open(_db_arg(args))
    counts = {k: v for k, v in store.counts_by_state().items() if v}
    print(f"dropreel: store ready at {_db_arg(args)}; jobs: {counts or 'none'}")
    store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dropreel", description=__doc__)
    parser.add_argument("--db", help="database URL or SQLite path (default: ./dropreel.db)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StoreError as exc:
        print(f"dropreel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
