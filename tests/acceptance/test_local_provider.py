"""The README's run command on a machine with no key: the embedded defaults (SQLite file,
offline renderer, folders under the current directory) turn a dropped image into an MP4."""

from __future__ import annotations

import io
import signal
import sys
from pathlib import Path

import av
from PIL import Image, ImageDraw

from tests.acceptance.harness import FAST, DaemonProcess, all_final, states
from tests.helpers import wait_for


class DefaultsDaemon(DaemonProcess):
    """`dropreel run` with no paths and no provider: everything from the defaults."""

    def __init__(self, base: Path) -> None:
        super().__init__(base, db_url=str(base / "dropreel.db"))
        self.db = base / "dropreel.db"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "daemon.cli", "run", "--log-level", "DEBUG"]
        for key, value in {**FAST, "settle_seconds": "0.5"}.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd


def photo(seed: int) -> bytes:
    img = Image.new("RGB", (640, 960), (30 + seed * 20, 60, 120))
    draw = ImageDraw.Draw(img)
    draw.ellipse([160, 240, 480, 720], fill=(230, 190, 60))
    draw.rectangle([300, 100, 340, 860], fill=(10, 10, 10))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_no_key_dropped_image_becomes_a_video(tmp_path: Path) -> None:
    with DefaultsDaemon(tmp_path) as d:
        d.start()  # creates ./drop and ./output itself
        assert "provider local" in d.log()
        (tmp_path / "drop" / "toy.jpg").write_bytes(photo(1))
        (job,) = d.wait_jobs(all_final(1), timeout=120, what="the toy video")
        assert job.state == "succeed", (job.error_code, job.error_message)
        video = tmp_path / "output" / "toy.mp4"
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.codec_context.width, stream.codec_context.height) == (720, 1280)
            assert abs(sum(1 for _ in container.decode(stream)) - 5 * 24) <= 1
        assert (tmp_path / "drop" / "done" / "toy.jpg").exists()
        history = [(t.from_state, t.to_state) for t in d.store().history(job.id)]
        assert [to for _, to in history] == [
            "queued",
            "submitted",
            "processing",
            "downloading",
            "succeed",
        ], history


def test_kill_during_render_redoes_it_once(tmp_path: Path) -> None:
    with DefaultsDaemon(tmp_path) as d:
        d.start()
        for i in range(3):
            (tmp_path / "drop" / f"p{i}.jpg").write_bytes(photo(i))
        # Kill while renders are running (the render directory has a partial file).
        renders = tmp_path / "dropreel-state" / "renders"
        wait_for(lambda: renders.exists() and any(renders.iterdir()), 60, "a render started")
        d.signal(signal.SIGKILL)
        d.proc.wait(10)
        d.start()
        jobs = d.wait_jobs(all_final(3), timeout=180, what="renders after the kill")
        assert all(j.state == "succeed" for j in jobs), states(jobs)
        assert sorted(p.name for p in (tmp_path / "output").glob("*.mp4")) == [
            "p0.mp4",
            "p1.mp4",
            "p2.mp4",
        ]
        assert not list((tmp_path / "output").glob(".*"))
