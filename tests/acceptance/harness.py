"""Run the real `dropreel run` as a subprocess, and watch it the way systemd would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from state.store import JobRecord, Store
from tests.helpers import wait_for

ROOT = Path(__file__).parents[2]
FAST = {  # keep tests quick: short settle, ticks and polls
    "tick_seconds": "0.2",
    "poll_min_seconds": "0.2",
    "poll_max_seconds": "2",
    "expected_seconds": "0.5",
    "pause_retry_seconds": "60",
    "shutdown_grace_seconds": "5",
}


class DaemonProcess:
    def __init__(
        self,
        base: Path,
        *,
        api_base: str | None = None,
        key: str | None = None,
        settle: float = 0.5,
        settings: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        db_url: str | None = None,
        drop: Path | None = None,
        output: Path | None = None,
    ) -> None:
        self.base = base
        self.drop, self.output = drop or base / "drop", output or base / "output"
        self.db = base / "jobs.db"
        self.db_url = db_url or str(self.db)  # a PostgreSQL URL: a table shared by daemons
        self.api_base, self.key = api_base, key
        self.settle = settle
        self.settings = {**FAST, **(settings or {})}
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = base / "daemon.log"
        self._sock: socket.socket | None = None
        self.notifications: list[str] = []

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "daemon.cli",
            "--db",
            self.db_url,
            "run",
            "--drop",
            str(self.drop),
            "--output",
            str(self.output),
            "--settle-seconds",
            str(self.settle),
            "--log-level",
            "DEBUG",
        ]
        if self.api_base:
            cmd += ["--provider", "kling", "--api-base", self.api_base]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd + self.extra_args

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self.runs += 1
        if self._sock is None:  # one notify socket for all runs, as systemd has
            sock_dir = Path(tempfile.mkdtemp(prefix="notify", dir="/tmp"))
            self._sock_path = str(sock_dir / "n")
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(self._sock_path)
            self._sock.settimeout(0.1)
        self.notifications.clear()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DROPREEL_")}
        env.update({"NOTIFY_SOCKET": self._sock_path, "PYTHONUNBUFFERED": "1"})
        if self.key:
            env["DROPREEL_API_KEY"] = self.key
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== run {self.runs} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait_ready:
            self.wait_notified("READY=1", timeout=60)
        return self

    def read_notifications(self) -> list[str]:
        assert self._sock is not None
        while True:
            try:
                self.notifications.append(self._sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.notifications

    def wait_notified(self, field: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            return any(field in n.split("\n") for n in self.read_notifications())

        wait_for(seen, timeout, f"daemon to notify {field}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self) -> Store:
        return Store.open(self.db_url, create=False, migrate=False)

    def jobs(self) -> list[JobRecord]:
        if self.db_url == str(self.db) and not self.db.exists():
            return []
        s = self.store()
        try:
            return s.list_jobs()
        finally:
            s.close()

    def wait_jobs(self, predicate: Any, timeout: float = 90, what: str = "jobs") -> list[JobRecord]:
        def check() -> list[JobRecord] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            jobs = self.jobs()
            return jobs if predicate(jobs) else None

        try:
            return wait_for(check, timeout, what)
        except AssertionError:
            states = [(j.source_path, j.state, j.error_message) for j in self.jobs()]
            raise AssertionError(
                f"timed out waiting for {what}: {states}\n{self.log()[-6000:]}"
            ) from None

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._sock is not None:
            self._sock.close()


def all_final(n: int) -> Any:
    """At least n jobs, all ended and their sources moved aside."""
    return lambda jobs: len(jobs) >= n and all(j.is_final and j.source_done_at for j in jobs)


def states(jobs: list[JobRecord]) -> dict[str, str]:
    return {j.source_path: j.state for j in jobs}
