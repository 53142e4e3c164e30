"""Where results and sources go: unique output names, sidecars, moving sources aside.

Every write is a temporary file + fsync + atomic rename, so a crash leaves either the old
state or the new, never half a file; nothing is ever overwritten."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.errors import DiskFull


def unique_path(path: Path, taken: set[Path] | None = None) -> Path:
    """`path`, or `stem-1.ext`, `stem-2.ext` … — the first that does not exist and is not
    in `taken` (names other jobs have claimed but not written yet)."""
    taken = taken or set()
    candidate, n = path, 0
    while candidate.exists() or candidate in taken or _sidecar(candidate).exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _sidecar(video: Path) -> Path:
    return video.with_suffix(".json")


def output_for(output_dir: Path, source_rel: str) -> Path:
    """`<output>/<relative path of the source, stem>.mp4` (before collision handling)."""
    rel = PurePosixPath(source_rel)
    return output_dir.joinpath(*rel.parent.parts, rel.stem + ".mp4")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"no space left to write {path}") from None
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(
        path, (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_aside(
    drop: Path,
    source_rel: str,
    folder: str,
    *,
    note: str | None = None,
    note_suffix: str = ".note.txt",
    extra: list[Path] | None = None,
) -> Path | None:
    """Move `<drop>/<source_rel>` (and its sidecars) into `<drop>/<folder>/<source_rel>`
    without overwriting anything; write `note` beside it. Returns the new path, or None
    when the source is already gone (a person moved or deleted it: that is fine)."""
    src = drop / source_rel
    target_dir = drop / folder / PurePosixPath(source_rel).parent
    target_dir.mkdir(parents=True, exist_ok=True)
    moved: Path | None = None
    if src.is_file() or src.is_symlink():
        moved = unique_path(target_dir / src.name)
        _move(src, moved)
    for side in extra if extra is not None else _sidecars_of(src):
        if side.is_file():
            _move(side, unique_path(target_dir / side.name))
    if note is not None:
        base = moved or target_dir / src.name
        write_atomic(
            unique_path(base.with_name(base.name + note_suffix)), (note.rstrip() + "\n").encode()
        )
    fsync_dir(target_dir)
    return moved


def _sidecars_of(src: Path) -> list[Path]:
    return [src.with_suffix(".json"), src.with_suffix(".txt")]


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # another filesystem: copy, then remove
            shutil.copy2(src, dst)
            src.unlink()
        elif exc.errno == errno.ENOSPC:
            raise DiskFull(f"no space left to move {src}") from None
        elif exc.errno != errno.ENOENT:
            raise
