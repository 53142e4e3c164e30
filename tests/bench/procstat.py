"""What a process tree costs, from /proc: RSS (sampled, for peaks), CPU seconds and
context switches (wake-ups), summed over the process, its threads and its children."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        value = _status(p).get("VmRSS", "0 kB").split()[0]
        total += int(value)
    return total / 1024


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def wakeups(pid: int) -> int:
    """Context switches of every thread: how often the tree was scheduled at all."""
    total = 0
    for p in tree(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            st = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            total += int(st.get("voluntary_ctxt_switches", "0"))
            total += int(st.get("nonvoluntary_ctxt_switches", "0"))
    return total


class PeakRss:
    """Samples the tree's RSS every `every` seconds in a thread; `.peak` in MB."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
