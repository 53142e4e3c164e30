"""From a file in the drop folder to a prepared input: pure filters, the settle tracker,
sidecar parameters, and image preparation (Pillow; run in a worker process)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", "~")
SIDECAR_SUFFIXES = (".txt", ".json")
OWN_FOLDERS = ("done", "failed")
MAX_BYTES = 10 * 1024 * 1024  # Kling's documented limit (protocol notes §5)
MIN_SIDE = 300
MAX_RATIO = 2.5


def is_candidate(rel: PurePosixPath) -> bool:
    """Whether a path (relative to the drop folder) may become a job: not a temporary
    name (rsync's `.name.XXXXXX`, browsers' `.crdownload` …), not a sidecar, not in our
    own done/ and failed/ folders, not inside a hidden folder."""
    if not rel.parts or rel.parts[0] in OWN_FOLDERS:
        return False
    if any(part.startswith(".") for part in rel.parts):
        return False
    name = rel.name.lower()
    return not name.endswith(TEMP_SUFFIXES) and not name.endswith(SIDECAR_SUFFIXES)


def is_own_folder(rel: PurePosixPath) -> bool:
    return bool(rel.parts) and rel.parts[0] in OWN_FOLDERS


@dataclass
class SettleTracker:
    """A file is ready once its size and mtime have not changed for `settle` seconds."""

    settle: float
    _seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    def observe(self, key: str, size: int, mtime_ns: int, now: float) -> bool:
        """Record a stat of `key`; True when it has been stable for the settle period."""
        prev = self._seen.get(key)
        if prev is None or prev[:2] != (size, mtime_ns):
            self._seen[key] = (size, mtime_ns, now)
            return self.settle <= 0 and size > 0 and prev is not None
        return now - prev[2] >= self.settle

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)

    def pending(self) -> list[str]:
        return list(self._seen)


def preset_of(rel: PurePosixPath) -> str | None:
    return rel.parts[0] if len(rel.parts) > 1 else None


def read_sidecar(image: Path) -> tuple[dict[str, Any], list[Path]]:
    """Parameters from `<name>.json` (any job parameter) and/or `<name>.txt` (the
    prompt) beside the image. Raises ValueError naming the file when it is unreadable."""
    params: dict[str, Any] = {}
    used: list[Path] = []
    js = image.with_suffix(".json")
    if js.is_file() and not js.is_symlink():
        try:
            data = json.loads(js.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"sidecar {js.name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"sidecar {js.name} must hold a JSON object")
        params.update(data)
        used.append(js)
    txt = image.with_suffix(".txt")
    if txt.is_file() and not txt.is_symlink():
        try:
            prompt = txt.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise ValueError(f"sidecar {txt.name} is not UTF-8 text") from None
        if prompt:
            params["prompt"] = prompt
        used.append(txt)
    return params, used


@dataclass(frozen=True)
class Prepared:
    data: bytes
    media_type: str
    width: int
    height: int
    conformed: list[str]  # what was changed, empty when the original is sent as is


class InvalidImage(ValueError):
    """The input cannot be used without inventing pixels; the message says exactly why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)  # both in args: it crosses a process boundary
        self.code, self.message = code, message

    def __str__(self) -> str:
        return self.message


def prepare_image(data: bytes, name: str, conform_ratio: str = "fail") -> Prepared:
    """Check an input against the provider's limits with a full decode, and conform it
    when only its container or weight is wrong (JPEG re-encode, EXIF orientation applied).
    Runs in a worker process: a full decode of a large image costs tens of ms."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidImage("empty", f"{name} is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        img.load()  # verify() passes a truncated JPEG; only a full decode catches it
    except UnidentifiedImageError:
        head = data[:16]
        what = "text" if head.isascii() else "unknown binary data"
        raise InvalidImage(
            "not_an_image", f"{name} is not an image (its content is {what}, not JPEG or PNG)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InvalidImage("too_many_pixels", f"{name}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(
            "corrupt", f"{name} is truncated or corrupt ({fmt or 'image'}: {exc})"
        ) from None
    notes: list[str] = []
    width, height = img.size
    if _has_rotation(img):
        img = ImageOps.exif_transpose(img)
        width, height = img.size
        notes.append("EXIF orientation applied")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImage(
            "too_small",
            f"{name} is {width}×{height} px; the provider needs at least {MIN_SIDE} px on "
            "each side (enlarging would invent pixels)",
        )
    ratio = width / height
    if not 1 / MAX_RATIO <= ratio <= MAX_RATIO:
        if conform_ratio != "pad":
            raise InvalidImage(
                "aspect_ratio",
                f"{name} has aspect ratio {_ratio_text(width, height)}; the provider accepts "
                f'1:2.5 to 2.5:1 (set conform_ratio = "pad" to pad it instead)',
            )
        img = _pad(img, width, height)
        width, height = img.size
        notes.append(f"padded to {_ratio_text(width, height)} (conform_ratio = pad)")
    if fmt not in ("JPEG", "PNG"):
        notes.append(f"{fmt or 'unknown format'} re-encoded as JPEG")
    elif len(data) > MAX_BYTES:
        notes.append(f"{len(data) / 1e6:.1f} MB {fmt} re-encoded as JPEG under 10 MB")
    if not notes:
        return Prepared(data, "image/jpeg" if fmt == "JPEG" else "image/png", width, height, [])
    return Prepared(_jpeg_under_limit(img), "image/jpeg", img.size[0], img.size[1], notes)


def prepare_many(
    items: list[tuple[bytes, str]], conform_ratio: str = "fail"
) -> list[Prepared | Exception]:
    """prepare_image for a batch, in one worker call (a burst of small files cost more in
    process-pool round trips than in decoding); each file's failure is its own."""
    results: list[Prepared | Exception] = []
    for data, name in items:
        try:
            results.append(prepare_image(data, name, conform_ratio))
        except Exception as exc:
            results.append(exc)
    return results


def _has_rotation(img: Any) -> bool:
    try:
        return int(img.getexif().get(0x0112, 1)) not in (0, 1)
    except Exception:
        return False


def _ratio_text(w: int, h: int) -> str:
    return f"{w / h:.2f}:1" if w >= h else f"1:{h / w:.2f}"


def _pad(img: Any, width: int, height: int) -> Any:
    from PIL import Image

    if width / height > MAX_RATIO:
        size = (width, int(width / MAX_RATIO + 0.999))
    else:
        size = (int(height / MAX_RATIO + 0.999), height)
    canvas = Image.new("RGB", size, (0, 0, 0))
    canvas.paste(img.convert("RGB"), ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def _jpeg_under_limit(img: Any) -> bytes:
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        img = background
    else:
        img = img.convert("RGB")
    quality = 95
    while True:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, optimize=True)
        if buf.tell() <= MAX_BYTES:
            return buf.getvalue()
        if quality > 75:
            quality -= 10
        else:  # still too heavy: shrink (a 20000 px image), keeping the aspect ratio
            img = img.resize(
                (max(MIN_SIDE, img.size[0] * 3 // 4), max(MIN_SIDE, img.size[1] * 3 // 4)),
                Image.Resampling.LANCZOS,
            )
