"""The offline renderer: every produced file is decoded with PyAV and checked."""

from __future__ import annotations

import hashlib
import io
import itertools
import struct
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from daemon.render import FPS, render


def subject(size: tuple[int, int] = (600, 800)) -> bytes:
    """A figure-like subject with detail, so motion shows in every part of the frame."""
    img = Image.new("RGB", size, (40, 90, 160))
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 40):
        draw.line([(x, 0), (x, size[1])], fill=(230, 230, 240), width=3)
    draw.ellipse([size[0] * 0.3, size[1] * 0.2, size[0] * 0.7, size[1] * 0.8], fill=(220, 80, 40))
    draw.rectangle(
        [size[0] * 0.45, size[1] * 0.1, size[0] * 0.55, size[1] * 0.9], fill=(20, 20, 20)
    )
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def decode(path: Path) -> tuple[Any, list[Image.Image]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_image().convert("L") for f in container.decode(stream)]
        return stream.codec_context, frames


def diff(a: Image.Image, b: Image.Image) -> float:
    return float(ImageStat.Stat(ImageChops.difference(a, b)).mean[0])


def top_level_boxes(path: Path) -> list[str]:
    data, boxes, at = path.read_bytes(), [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        boxes.append(kind.decode("latin-1"))
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        if size < 8:
            break
        at += size
    return boxes


def check_video(path: Path, width: int, height: int, seconds: int) -> list[Image.Image]:
    codec, frames = decode(path)
    assert codec.name == "h264"
    assert (codec.width, codec.height) == (width, height)
    assert str(codec.pix_fmt) == "yuv420p"
    assert abs(len(frames) - seconds * FPS) <= 1, len(frames)
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart: plays while loading
    return frames


@pytest.mark.parametrize("motion", ["zoom", "pan", "sway", "turntable"])
def test_each_motion_moves_smoothly_and_loops(tmp_path: Path, motion: str) -> None:
    dest = tmp_path / f"{motion}.mp4"
    info = render(subject(), {"aspect_ratio": "9:16", "duration": 5, "motion": motion}, str(dest))
    assert info["motion"] == motion
    frames = check_video(dest, 720, 1280, 5)
    steps = [diff(a, b) for a, b in itertools.pairwise(frames)]
    mean_step = sum(steps) / len(steps)
    middle = diff(frames[0], frames[len(frames) // 2])
    assert mean_step > 0.1, f"{motion}: frames barely change ({mean_step:.3f})"
    assert middle > 3.0, f"{motion}: the clip does not go anywhere ({middle:.2f})"
    # Smooth: no single step is a jump (a jitter or a cut would be many times the mean).
    assert max(steps) < 3 * mean_step + 1.0, (max(steps), mean_step)
    # Loop-friendly: the last frame is about as close to the first as neighbours are.
    assert diff(frames[-1], frames[0]) < max(mean_step, 1.0), (
        diff(frames[-1], frames[0]),
        mean_step,
    )


@pytest.mark.parametrize(("aspect", "size"), [("16:9", (1280, 720)), ("1:1", (1080, 1080))])
def test_sizes_follow_the_aspect_ratio(tmp_path: Path, aspect: str, size: tuple[int, int]) -> None:
    dest = tmp_path / "out.mp4"
    render(subject(), {"aspect_ratio": aspect, "duration": 1, "motion": "zoom"}, str(dest))
    check_video(dest, *size, 1)


def test_letterbox_is_a_darkened_blur_of_the_image(tmp_path: Path) -> None:
    # A wide bright image in a tall frame: the bands above and below are filled from the
    # image itself (blurred, darkened), not black and not a sharp copy.
    img = Image.new("RGB", (1200, 600), (250, 250, 250))
    ImageDraw.Draw(img).rectangle([500, 0, 700, 600], fill=(200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    dest = tmp_path / "band.mp4"
    render(buf.getvalue(), {"aspect_ratio": "9:16", "duration": 1, "motion": "zoom"}, str(dest))
    with av.open(str(dest)) as container:
        first = next(container.decode(video=0)).to_image().convert("L")
    band = ImageStat.Stat(first.crop((0, 0, 720, 150))).mean[0]
    centre = ImageStat.Stat(first.crop((0, 560, 200, 720))).mean[0]
    assert 20 < band < centre - 40, (band, centre)


def test_same_input_same_bytes(tmp_path: Path) -> None:
    params = {"aspect_ratio": "1:1", "duration": 1, "motion": "sway"}
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    render(subject(), params, str(a))
    render(subject(), params, str(b))
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_cancel_flag_stops_the_render_and_leaves_nothing(tmp_path: Path) -> None:
    flag = tmp_path / "cancel"
    flag.touch()
    dest = tmp_path / "c.mp4"
    from daemon.render import RenderCancelled

    with pytest.raises(RenderCancelled):
        render(subject(), {"duration": 5, "motion": "pan"}, str(dest), cancel_flag=str(flag))
    assert not dest.exists() and not list(tmp_path.glob(".*.render"))
