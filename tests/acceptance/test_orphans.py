"""A SIGKILLed daemon leaves no worker processes behind (decoders, renderers)."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.test_local_provider import DefaultsDaemon, photo
from tests.bench.procstat import tree
from tests.helpers import wait_for


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def test_sigkill_leaves_no_workers(tmp_path: Path) -> None:
    with DefaultsDaemon(tmp_path) as d:
        d.start()
        for i in range(2):
            (tmp_path / "drop" / f"k{i}.jpg").write_bytes(photo(i))
        assert d.proc is not None
        # Wait until decoding and rendering pools both run (main + several workers).
        wait_for(lambda: len(tree(d.proc.pid)) >= 4, 60, "worker processes")
        workers = [p for p in tree(d.proc.pid) if p != d.proc.pid]
        d.kill()
        wait_for(lambda: not any(alive(p) for p in workers), 15, "the workers to exit")
        assert all(not alive(p) for p in workers), [p for p in workers if alive(p)]
