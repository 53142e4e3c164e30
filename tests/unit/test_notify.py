"""sd_notify: messages reach the socket, and a reader that stops reading never blocks us."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from daemon.notify import Notifier


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1)
    return sock


def test_ready_and_status_reach_the_socket(tmp_path: Path) -> None:
    with _listener(tmp_path / "n") as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n")})
        notifier.ready("0 queued")
        notifier.status("0 queued")  # unchanged: not sent again
        notifier.status("1 queued")
        first = sock.recv(4096).decode().split("\n")
        second = sock.recv(4096).decode()
        assert first[:2] == ["READY=1", "STATUS=0 queued"] and first[2].startswith("MAINPID=")
        assert second == "STATUS=1 queued"


def test_a_reader_that_stopped_reading_does_not_block(tmp_path: Path) -> None:
    with _listener(tmp_path / "n"):
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n")})
        results: list[bool] = []
        sender = threading.Thread(
            target=lambda: results.extend(notifier.send("WATCHDOG=1") for _ in range(2000)),
            daemon=True,
        )
        sender.start()
        sender.join(10)
        assert not sender.is_alive(), "sd_notify blocked on a full socket queue"
        assert results[0] is True and results[-1] is False  # the overflow is dropped


def test_without_socket_it_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.send("READY=1") is False
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
