"""An httpx client for Kling's image2video API, official or behind a prefix proxy.

One base URL (`https://api-singapore.klingai.com`, `https://api.tu-zi.com/kling`, …); the
paths `/v1/videos/image2video[/{id}]` are appended. Authentication is an httpx.Auth
(daemon.kling_auth). Every answer goes through daemon.kling_parse, so callers see either a
RemoteTask or one of daemon.errors. Result videos are downloaded with a separate client
that carries NO credentials (result URLs are public CDN links; our key stays with Kling).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from daemon.errors import (
    DiskFull,
    DownloadInterrupted,
    DownloadRejected,
    JobRejected,
    ModelUnsupported,
    ProviderError,
    TransientError,
)
from daemon.kling_parse import (
    Envelope,
    RemoteTask,
    classify,
    is_not_found,
    parse_json,
    parse_task,
    read_envelope,
    retry_after_seconds,
)

log = logging.getLogger(__name__)
I2V = "/v1/videos/image2video"
RETIRED_FAMILY = (
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
)
MP4_MAGIC = b"ftyp"


class LookupOutcome(StrEnum):
    FOUND = "found"  # the provider has a task with that external id
    ABSENT = "absent"  # the provider positively says it has none
    UNKNOWN = "unknown"  # the provider cannot tell (no lookup support, or not found by path)


@dataclass(frozen=True)
class Lookup:
    outcome: LookupOutcome
    task: RemoteTask | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient errors."""

    attempts: int = 3  # total tries, first included
    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.cap, self.base * 2**retry))


class KlingClient:
    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        download_transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_connections: int = 8,
        duration_as_int: bool = False,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        # Bounded pool: httpx's AsyncClient slows down sharply past ~8 connections here.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        timeouts = httpx.Timeout(timeout, connect=min(10.0, timeout))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=auth,
            transport=transport,
            timeout=timeouts,
            limits=limits,
        )
        self._dl = httpx.AsyncClient(
            transport=download_transport, timeout=timeouts, limits=limits, follow_redirects=True
        )
        # Requests queue here rather than in httpcore's pool (whose waiting requests are
        # rescanned on every assignment); the life-cycle benchmark showed no measurable
        # change either way at 200 in flight, so this is a bound, not a speed-up.
        self._api_slots = asyncio.Semaphore(max_connections)
        self._dl_slots = asyncio.Semaphore(max_connections)
        self.duration_as_int = duration_as_int
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._dl.aclose()

    # -- requests ------------------------------------------------------------------------

    def create_body(
        self,
        params: dict[str, Any],
        *,
        image: bytes | None = None,
        image_url: str | None = None,
        external_task_id: str,
    ) -> dict[str, Any]:
        """The create request for a job's effective parameters."""
        if (image is None) == (image_url is None):
            raise ValueError("give exactly one of image bytes or image_url")
        duration = int(params["duration"])
        body: dict[str, Any] = {
            "model_name": params["model_name"],
            "mode": params["mode"],
            "duration": duration if self.duration_as_int else str(duration),
            "cfg_scale": params["cfg_scale"],
            # Ignored by the official image2video API (it follows the image); sent because
            # the product's proxy asks for it.
            "aspect_ratio": params["aspect_ratio"],
            "image": image_url or base64.b64encode(image or b"").decode("ascii"),
            "external_task_id": external_task_id,
        }
        for key in ("prompt", "negative_prompt"):
            if params.get(key):
                body[key] = params[key]
        return body

    async def create(
        self,
        params: dict[str, Any],
        *,
        image: bytes | None = None,
        image_url: str | None = None,
        external_task_id: str,
        notes: list[dict[str, Any]] | None = None,
    ) -> RemoteTask:
        """Create a task. Idempotent: if the provider already has `external_task_id` (a
        retried create whose first answer was lost), that task is returned."""
        body = self.create_body(
            params, image=image, image_url=image_url, external_task_id=external_task_id
        )
        try:
            envelope = await self._call("POST", I2V, json=body, notes=notes)
        except ModelUnsupported as exc:
            model = params["model_name"]
            hint = (
                " (the kling-v1 family is reported as retired since 2026-09-15)"
                if model in RETIRED_FAMILY
                else ""
            )
            exc.message = (
                f"the provider refuses model_name = {model!r}{hint}: {exc.message}. "
                "Set `model_name` in the config, a preset or a sidecar"
            )
            exc.args = (exc.message,)
            raise
        except JobRejected as exc:
            if "external_task_id" in exc.message.lower() and "exist" in exc.message.lower():
                found = await self.find_by_external_id(external_task_id)
                if found.task is not None:
                    return found.task
            raise
        return parse_task(envelope.data, envelope.body)

    async def query(self, task_id: str, *, notes: list[dict[str, Any]] | None = None) -> RemoteTask:
        envelope = await self._call("GET", f"{I2V}/{_quote(task_id)}", notes=notes)
        return parse_task(envelope.data, envelope.body)

    async def list_tasks(self, page: int = 1, size: int = 30) -> list[RemoteTask]:
        envelope = await self._call("GET", I2V, params={"pageNum": page, "pageSize": size})
        items = envelope.data if isinstance(envelope.data, list) else []
        return [parse_task(item) for item in items if isinstance(item, dict)]

    async def find_by_external_id(self, external_task_id: str) -> Lookup:
        """Ask whether a task with this external id exists: the path form first, then the
        `?external_task_id=` form (the docs are ambiguous; public clients use both)."""
        status, envelope = await self._call_raw("GET", f"{I2V}/{_quote(external_task_id)}")
        if envelope.ok:
            task = parse_task(envelope.data, envelope.body)
            if task.external_task_id in (None, external_task_id):
                return Lookup(LookupOutcome.FOUND, task)
        elif not is_not_found(status, envelope):
            raise classify(status, envelope)
        status, envelope = await self._call_raw(
            "GET", I2V, params={"external_task_id": external_task_id, "pageNum": 1, "pageSize": 500}
        )
        if not envelope.ok:
            if is_not_found(status, envelope) or status in (400, 404, 405):
                return Lookup(LookupOutcome.UNKNOWN)
            raise classify(status, envelope)
        data = envelope.data
        if isinstance(data, dict):
            data = [data]
        if isinstance(data, list):
            if not data:
                return Lookup(LookupOutcome.ABSENT)
            for item in data:
                if isinstance(item, dict):
                    task = parse_task(item)
                    if task.external_task_id == external_task_id:
                        return Lookup(LookupOutcome.FOUND, task)
        # Tasks came back but none carries our id: the filter may have been ignored.
        return Lookup(LookupOutcome.UNKNOWN)

    # -- plumbing ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        notes: list[dict[str, Any]] | None = None,
    ) -> Envelope:
        """One logical call with bounded retries of transient failures; raises ProviderError."""
        for attempt in range(self.retry.attempts):
            try:
                status, envelope, retry_after = await self._send(method, path, json, params)
                if not envelope.ok:
                    raise classify(status, envelope, retry_after=retry_after)
                return envelope
            except TransientError as exc:
                if attempt + 1 >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt, self._rng)
                if notes is not None:
                    notes.append({**exc.describe(), "retry_in": round(delay, 3)})
                log.info("%s %s: %s; retry %d in %.2fs", method, path, exc, attempt + 1, delay)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _call_raw(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Envelope]:
        status, envelope, _ = await self._send(method, path, json, params)
        return status, envelope

    async def _send(
        self, method: str, path: str, json: Any, params: dict[str, Any] | None
    ) -> tuple[int, Envelope, float | None]:
        """Send once; return (HTTP status, envelope, Retry-After seconds) or raise
        TransientError for transport trouble and unreadable bodies."""
        started = time.perf_counter()
        try:
            async with self._api_slots:
                response = await self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{method} {path}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(
                f"{method} {path}: connection failed ({type(exc).__name__})"
            ) from None
        body = parse_json(response.content, response.status_code)
        envelope = read_envelope(body)
        log.debug(
            "%s %s -> %d in %.0f ms request_id=%s",
            method,
            path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            envelope.request_id,
        )
        if not envelope.ok and body is not None and not isinstance(body, dict):
            raise TransientError(
                f"{method} {path}: unexpected answer {str(body)[:80]}",
                http_status=response.status_code,
            )
        if envelope.ok and response.status_code >= 400:
            envelope = Envelope(
                False, envelope.code, envelope.message, envelope.request_id, None, body
            )
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return response.status_code, envelope, retry_after

    async def download(self, url: str, dest: Path, *, max_bytes: int = 1 << 30) -> int:
        """Stream `url` into `dest` through `.<name>.part` and an atomic rename; resume a
        partial file with HTTP Range where the server allows. Returns the size in bytes."""
        part = dest.with_name(f".{dest.name}.part")
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        started = time.perf_counter()
        try:
            async with self._dl_slots, self._dl.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status == 416 and offset:  # our partial file is stale: start over
                    part.unlink(missing_ok=True)
                    raise DownloadInterrupted(
                        "partial download no longer matches; restarting", http_status=status
                    )
                if status in (401, 403, 404, 410):
                    raise DownloadRejected(
                        f"the result URL answered HTTP {status}", http_status=status
                    )
                if status == 429 or status >= 500:
                    raise TransientError(
                        f"the result URL answered HTTP {status}", http_status=status
                    )
                if status not in (200, 206):
                    raise TransientError(
                        f"unexpected HTTP {status} for the result URL", http_status=status
                    )
                if status == 200:
                    offset = 0
                elif not response.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                    part.unlink(missing_ok=True)
                    raise DownloadInterrupted(
                        "server resumed at the wrong offset", http_status=status
                    )
                length = response.headers.get("content-length")
                expected = offset + int(length) if length and length.isdigit() else None
                if expected is not None and expected > max_bytes:
                    raise JobRejected(f"result video is {expected} bytes; limit {max_bytes}")
                size = offset
                with open(part, "ab" if offset else "wb") as out:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise JobRejected(f"result video exceeds {max_bytes} bytes")
                        out.write(chunk)
            if expected is not None and size != expected:
                raise DownloadInterrupted(f"download ended at {size} of {expected} bytes")
        except httpx.TransportError as exc:
            raise DownloadInterrupted(
                f"download interrupted ({type(exc).__name__}); {_size(part)} bytes kept"
            ) from None
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise DiskFull(f"no space left for {dest}") from None
            raise
        await asyncio.to_thread(_finish_file, part, dest)
        log.debug(
            "GET <result> -> %d bytes in %.0f ms", size, (time.perf_counter() - started) * 1000
        )
        return size


def _finish_file(part: Path, dest: Path) -> None:
    with open(part, "rb") as f:
        head = f.read(12)
        if len(head) < 8 or head[4:8] != MP4_MAGIC:
            part.unlink(missing_ok=True)
            raise TransientError("the downloaded file is not an MP4 (no ftyp box)")
        os.fsync(f.fileno())
    try:
        os.replace(part, dest)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if exc.errno == 28:
            raise DiskFull(f"no space left for {dest}") from None
        raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _quote(task_id: str) -> str:
    return quote(task_id, safe="")


__all__ = ["KlingClient", "Lookup", "LookupOutcome", "ProviderError", "RetryPolicy"]
