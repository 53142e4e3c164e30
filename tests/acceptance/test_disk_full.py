"""A full output disk holds downloads (nothing is failed for it) until space returns."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.simulator import SimConfig, Simulator
from tests.acceptance.harness import DaemonProcess, all_final, states
from tests.acceptance.test_daemon import KEY, image
from tests.helpers import wait_for


@pytest.fixture
def small_output(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "output"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_pauses_downloads_then_resumes(tmp_path: Path, small_output: Path) -> None:
    config = SimConfig(static_keys={KEY}, concurrency=50, video_padding=300_000)
    with (
        Simulator(config).start() as sim,
        DaemonProcess(tmp_path, api_base=sim.base_url, key=KEY) as d,
    ):
        d.drop.mkdir()
        d.start()
        for i in range(6):
            (d.drop / f"d{i}.png").write_bytes(image(500 + i))
        wait_for(lambda: "disk full" in d.log(), 60, "the disk-full line")
        jobs = d.jobs()
        assert not any(j.state == "failed" for j in jobs), states(jobs)
        assert any(j.state == "downloading" for j in jobs), states(jobs)
        assert d.proc is not None and d.proc.poll() is None
        subprocess.run(["mount", "-o", "remount,size=20m", str(small_output)], check=True)
        jobs = d.wait_jobs(all_final(6), timeout=120, what="jobs after space returned")
        assert all(j.state == "succeed" for j in jobs), states(jobs)
        assert len(list(small_output.glob("*.mp4"))) == 6
        assert not list(small_output.glob(".*.part"))
        assert d.log().count("disk full:") <= 3  # one clear line per episode, not a flood
