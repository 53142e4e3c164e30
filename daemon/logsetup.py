"""Logging, configured once by the CLI. Under systemd (stderr is the journal, as
$JOURNAL_STREAM says) lines carry a syslog priority prefix and no timestamp."""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return bool(stream) and f"{st.st_dev}" == dev and f"{st.st_ino}" == ino


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The scheduler logs every run at INFO; our own job lines say what matters.
    for noisy in (
        "apscheduler",
        "httpx",
        "httpcore",
        "watchfiles",
        "alembic",
        "tzlocal",
        "asyncio",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
