"""The offline renderer: a real H.264 MP4 from one image with a camera motion.

Honest about what it is: no generative model, motion presets. The subject is centred and
letterboxed on a blurred, darkened copy of itself when the aspect ratios differ; motion
follows a smooth loop (out and back along a cosine), so the last frame meets the first and
the clip loops as a live wallpaper. Sampling is sub-pixel (bicubic affine/perspective
transforms from float coordinates), so slow motion does not jitter. Deterministic: the
same image and parameters give the same bytes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZES = {"9:16": (720, 1280), "16:9": (1280, 720), "1:1": (1080, 1080)}
FPS = 24
MOTIONS = ("zoom", "pan", "sway", "turntable")


class RenderCancelled(Exception):
    pass


@dataclass(frozen=True)
class RenderSpec:
    width: int
    height: int
    seconds: int
    fps: int
    motion: str


def spec_for(params: dict[str, Any]) -> RenderSpec:
    width, height = SIZES.get(str(params.get("aspect_ratio", "9:16")), SIZES["9:16"])
    return RenderSpec(width, height, int(params.get("duration", 5)), FPS, choose_motion(params))


def choose_motion(params: dict[str, Any]) -> str:
    """Config/sidecar `motion` wins; else a keyword in the prompt; else the turntable
    (the product's prompt asks for a slow turn of the figure)."""
    motion = str(params.get("motion") or "auto")
    if motion in MOTIONS:
        return motion
    prompt = str(params.get("prompt") or "").lower()
    for words, chosen in (
        (("zoom", "push in", "ken burns"), "zoom"),
        (("pan",), "pan"),
        (("sway", "breeze", "gentle"), "sway"),
        (("turn", "rotate", "360", "spin", "turntable"), "turntable"),
    ):
        if any(w in prompt for w in words):
            return chosen
    return "turntable"


def _loop_phase(i: int, frames: int) -> float:
    """0 → 1 → 0 over the clip with zero speed at both ends (smooth, loop-friendly)."""
    return (1 - math.cos(2 * math.pi * i / frames)) / 2


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (8×8 for perspective coefficients)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col and m[r][col]:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def perspective_coeffs(
    dst: list[tuple[float, float]], src: list[tuple[float, float]]
) -> list[float]:
    """PIL PERSPECTIVE data mapping output points `dst` to input points `src`."""
    a: list[list[float]] = []
    b: list[float] = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    return _solve(a, b)


def compose_stage(img: Any, width: int, height: int, margin: float) -> tuple[Any, Any, tuple]:
    """(background, subject RGBA, subject box) — the image fitted into the frame with a
    margin, on a blurred, darkened cover-fit copy of itself."""
    from PIL import Image, ImageEnhance, ImageFilter

    img = img.convert("RGB")
    iw, ih = img.size
    cover = max(width / iw, height / ih)
    bg = img.resize(
        (max(1, round(iw * cover)), max(1, round(ih * cover))), Image.Resampling.BILINEAR
    )
    left, top = (bg.width - width) // 2, (bg.height - height) // 2
    bg = bg.crop((left, top, left + width, top + height))
    bg = bg.resize((max(1, width // 8), max(1, height // 8)), Image.Resampling.BILINEAR)
    bg = bg.filter(ImageFilter.GaussianBlur(3)).resize((width, height), Image.Resampling.BICUBIC)
    bg = ImageEnhance.Brightness(bg).enhance(0.45)
    fit = min(width * margin / iw, height * margin / ih)
    sw, sh = max(1, round(iw * fit)), max(1, round(ih * fit))
    subject = img.resize((sw, sh), Image.Resampling.LANCZOS).convert("RGBA")
    box = ((width - sw) / 2, (height - sh) / 2, sw, sh)
    return bg, subject, box


def frame_at(
    motion: str, phase: float, stage: Any, bg: Any, subject: Any, box: tuple, size: tuple[int, int]
) -> Any:
    """One frame at loop phase 0…1. `stage` is the background with the subject pasted
    (zoom and pan move it whole); sway and turntable move the subject over `bg`."""
    from PIL import Image

    width, height = size
    x0, y0, sw, sh = box
    if motion in ("zoom", "pan"):
        if motion == "zoom":
            scale, cx = 1 + 0.12 * phase, width / 2
        else:
            scale, cx = 1.12, width / 2 + (phase - 0.5) * width * 0.09
        half_w, half_h, cy = width / 2 / scale, height / 2 / scale, height / 2
        # A float crop box resampled to the frame: sub-pixel motion, no jitter.
        return stage.resize(
            size,
            Image.Resampling.BILINEAR,
            box=(cx - half_w, cy - half_h, cx + half_w, cy + half_h),
        )
    frame = bg.copy()
    if motion == "sway":
        # A gentle shear pivoting at the subject's feet (±2.5 % of its height at the top).
        k = (phase - 0.5) * 0.05
        pad = int(abs(0.025 * sh)) + 2
        out = (int(sw) + 2 * pad, int(sh))
        # output (x, y) samples subject (x - pad - k * (sh - y), y)
        data = (1, k, -pad - k * sh, 0, 1, 0)
        layer = subject.transform(out, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
        frame.paste(layer, (round(x0) - pad, round(y0)), layer)
        return frame
    # turntable: the subject swings about its vertical axis, with perspective.
    theta = math.radians((phase - 0.5) * 70)  # −35° … +35°
    half = sw / 2
    depth = 0.25 * sh * math.sin(theta)  # the near edge grows, the far edge shrinks
    left, top = round(x0 + half - half), round(y0 - abs(depth) / 2) - 1
    out = (int(sw) + 2, int(sh + abs(depth)) + 3)
    xl = half - half * math.cos(theta) + (x0 - left)
    xr = half + half * math.cos(theta) + (x0 - left)
    ty = y0 - top
    dst = [
        (xl, ty - depth / 2),
        (xr, ty + depth / 2),
        (xr, ty + sh - depth / 2),
        (xl, ty + sh + depth / 2),
    ]
    src = [(0.0, 0.0), (float(sw), 0.0), (float(sw), float(sh)), (0.0, float(sh))]
    layer = subject.transform(
        out, Image.Transform.PERSPECTIVE, perspective_coeffs(dst, src), Image.Resampling.BILINEAR
    )
    frame.paste(layer, (left, top), layer)
    return frame


def render(
    image_bytes: bytes, params: dict[str, Any], dest: str, cancel_flag: str | None = None
) -> dict[str, Any]:
    """Render to `dest` (through a temporary file and an atomic rename). Runs in a worker
    process. Raises RenderCancelled when `cancel_flag` appears."""
    import io

    import av
    from PIL import Image, ImageOps

    spec = spec_for(params)
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes)))
    size = (spec.width, spec.height)
    bg, subject, box = compose_stage(img, spec.width, spec.height, 0.8)
    stage = bg.copy()
    stage.paste(subject, (round(box[0]), round(box[1])), subject)
    frames = spec.seconds * spec.fps
    tmp = Path(dest).with_name(f".{Path(dest).name}.render")
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream(
                "libx264",
                rate=spec.fps,
                options={"preset": "superfast", "crf": "20", "threads": "1"},
            )
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
            for i in range(frames):
                if cancel_flag and i % 12 == 0 and os.path.exists(cancel_flag):
                    raise RenderCancelled(dest)
                frame = frame_at(spec.motion, _loop_phase(i, frames), stage, bg, subject, box, size)
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {
        "frames": frames,
        "fps": spec.fps,
        "width": spec.width,
        "height": spec.height,
        "motion": spec.motion,
    }
