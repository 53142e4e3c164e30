"""A Kling-compatible image2video server for tests, benchmarks and demos (127.0.0.1).

It implements create, query (by task id and by external_task_id, path and query forms),
list, and serves each task's MP4; validates requests as Kling documents (auth — static
bearer keys and AK/SK JWTs —, fields, image format/size/resolution/ratio, external_task_id
uniqueness); enforces a per-account concurrency limit (429/1303; queries never count);
answers in Kling's shape or a gateway's (§11 of the protocol notes); injects faults on
demand; and counts what it saw so tests can assert "exactly once".

    python -m daemon.simulator --port 8765 --task-time 20 --time-scale 0.1
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import heapq
import io
import json
import logging
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from daemon.kling_auth import decode_hs256

log = logging.getLogger(__name__)

MODELS = {
    "kling-v1",
    "kling-v1-5",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
}
FAULT_KINDS = {
    "http500",
    "http502",
    "http503",
    "429",
    "1302",
    "1303",
    "1102",
    "slow",
    "slow_answer",
    "drop",
    "lose_answer",
    "malformed",
    "policy",
    "forbidden",
    "truncate",
}
ROUTES = {"create", "query", "list", "download", "any"}
POLICY_MESSAGE = "Failure to pass the risk control system"
RATIO_MESSAGE = (
    "The resolution or aspect ratio of the input image is invalid. "
    "Please ensure it meets the required specifications."
)


@dataclass
class SimConfig:
    prefix: str = ""  # e.g. "/kling" to look like a proxy
    static_keys: set[str] = field(default_factory=lambda: {"sk-test-key"})
    access_keys: dict[str, str] = field(default_factory=dict)  # access key -> secret key
    task_time: tuple[float, float] = (0.0, 0.0)  # seconds, drawn uniformly per task
    time_scale: float = 1.0  # multiplies task times: 0.01 makes "150 s" pass in 1.5 s
    concurrency: int = 5  # running tasks per account before 429/1303
    shape: str = "kling"  # kling | newapi | plain
    unknown_task: str = "404"  # 404 (1203) | 400 (1201)
    lookup_path: bool = True  # GET …/image2video/{external_task_id}
    lookup_query: bool = True  # GET …/image2video?external_task_id=
    strict_duration: bool = False  # reject an integer `duration` (the official type is str)
    retired_models: set[str] = field(default_factory=set)  # answered with 1201
    image_errors: str = "sync"  # sync: 1201 at create; task: the task fails later
    video_padding: int = 0  # extra bytes appended to each MP4 (large-download tests)
    seed: int = 0


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a killed daemon, a timeout) is routine here, not a bug.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Fault:
    route: str
    kind: str
    remaining: int | None = 1  # None: every matching request
    probability: float = 1.0
    retry_after: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.route not in ROUTES or self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.route}/{self.kind}")


@dataclass
class SimTask:
    task_id: str
    external_task_id: str | None
    model_name: str
    duration_s: str
    created_mono: float
    created_ms: int
    run_for: float  # seconds until it ends
    fail_message: str | None = None


def _mp4_base() -> bytes:
    """A small real H.264 MP4 (PyAV), made once per process."""
    import av
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 64, 112, "yuv420p"
            for i in range(24):
                frame = av.VideoFrame.from_image(Image.new("RGB", (64, 112), (i * 9, 80, 160)))
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return path.read_bytes()


_MP4_CACHE: list[bytes] = []


class Simulator:
    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or SimConfig()
        self.clock, self.wall = clock, wall
        self.lock = threading.RLock()
        self.rng = random.Random(self.config.seed)
        self.tasks: dict[str, SimTask] = {}
        # Tasks not yet ended, by end time: counting running tasks must not scan every task
        # ever created (it is done twice per create).
        self._unended: list[tuple[float, str]] = []
        self.by_external: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.creates_by_external: Counter[str] = Counter()
        self.creates_by_image: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.unknown_lookups: Counter[str] = Counter()  # ids asked for that name no task
        self.faults_fired: Counter[str] = Counter()
        self.peak_running = 0
        self.answers_held = 0  # creates done but whose answer is being delayed right now
        self.last_create_body: dict[str, Any] | None = None
        self.images_seen: list[bytes] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if not _MP4_CACHE:
            _MP4_CACHE.append(_mp4_base())

    # -- life ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Simulator:
        sim = self

        class Handler(_Handler):
            simulator = sim

        self._server = _QuietServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="kling-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Simulator:
        return self if self._server else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "simulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.config.prefix

    # -- control ------------------------------------------------------------------------

    def add_fault(self, route: str, kind: str, count: int | None = 1, **kw: Any) -> Fault:
        fault = Fault(route, kind, count, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, route: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.route not in (route, "any") or fault.remaining == 0:
                    continue
                if fault.probability < 1 and self.rng.random() >= fault.probability:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                self.faults_fired[f"{route}:{fault.kind}"] += 1
                return fault
        return None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "tasks": len(self.tasks),
                "running": self.running(),
                "peak_running": self.peak_running,
                "creates": sum(self.creates_by_external.values()),
                "creates_by_external": dict(self.creates_by_external),
                "duplicate_creates": {k: v for k, v in self.creates_by_external.items() if v > 1},
                "creates_by_image": dict(self.creates_by_image),
                "requests": dict(self.requests),
                "rejected": dict(self.rejected),
                "unknown_lookups": dict(self.unknown_lookups),
                "faults_fired": dict(self.faults_fired),
            }

    # -- task model ---------------------------------------------------------------------

    def status_of(self, task: SimTask) -> str:
        elapsed = self.clock() - task.created_mono
        if elapsed >= task.run_for:
            return "failed" if task.fail_message else "succeed"
        return "submitted" if elapsed < min(0.5, task.run_for * 0.1) else "processing"

    def running(self) -> int:
        with self.lock:
            while self._unended:
                task = self.tasks[self._unended[0][1]]
                # status_of's own test, so both always agree on whether a task has ended
                if self.clock() - task.created_mono < task.run_for:
                    break
                heapq.heappop(self._unended)
            return len(self._unended)

    def video_bytes(self, task_id: str) -> bytes:
        # The same real MP4 for every task, made unique by a trailing `free` box that
        # names the task (players skip `free` boxes).
        tail = f"task={task_id};".encode() + b"\0" * self.config.video_padding
        return _MP4_CACHE[0] + (8 + len(tail)).to_bytes(4, "big") + b"free" + tail

    def task_json(self, task: SimTask) -> dict[str, Any]:
        status = self.status_of(task)
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "task_status_msg": task.fail_message if status == "failed" else "",
            "task_info": (
                {"external_task_id": task.external_task_id} if task.external_task_id else {}
            ),
            "created_at": task.created_ms,
            "updated_at": task.created_ms
            + int(min(self.clock() - task.created_mono, task.run_for) * 1000),
        }
        if status == "succeed":
            data["task_result"] = {
                "videos": [
                    {
                        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, task.task_id)),
                        "url": f"{self.origin}/videos/{task.task_id}.mp4",
                        "duration": f"{float(task.duration_s) + 0.1:.1f}",
                    }
                ]
            }
        return data


class _Handler(BaseHTTPRequestHandler):
    simulator: Simulator
    protocol_version = "HTTP/1.1"
    # The status line and headers go out in one write and the body in another; with
    # Nagle on, the body waits for the client's delayed ACK (40 ms per keep-alive request).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sim: " + format, *args)

    # -- plumbing -----------------------------------------------------------------------

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _error(
        self, status: int, code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        sim = self.simulator
        sim.rejected[str(code)] += 1
        if sim.config.shape == "newapi":
            if status == 401:
                body: Any = {
                    "error": {
                        "message": f"无效的令牌 (request id: {uuid.uuid4().hex})",
                        "type": "new_api_error",
                        "code": "",
                    }
                }
            elif status == 429:
                body = {
                    "code": "fail_to_fetch_task",
                    "message": "当前分组上游负载已饱和，请稍后再试",
                    "data": None,
                }
            elif status == 200:
                status, body = 400, {"code": "task_failed", "message": message, "data": None}
            else:
                body = {
                    "code": "fail_to_fetch_task",
                    "message": json.dumps({"code": code, "message": message}, ensure_ascii=False),
                    "data": None,
                }
        else:
            body = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
        self._send(status, body, headers)

    def _ok(self, data: Any) -> None:
        self._send(
            200, {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}
        )

    def _authorised(self) -> bool:
        sim = self.simulator
        header = self.headers.get("Authorization", "")
        if not header:
            self._error(401, 1001, "Authorization is empty")
            return False
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token or token != token.strip():
            self._error(401, 1002, "Authorization is invalid")
            return False
        if token in sim.config.static_keys:
            return True
        if token.count(".") == 2 and sim.config.access_keys:
            try:
                claims = decode_hs256(token, sim.config.access_keys.get)
            except ValueError:
                self._error(401, 1002, "Authorization is invalid")
                return False
            now = sim.wall()
            if float(claims.get("nbf", 0)) > now:
                self._error(401, 1003, "Authorization is not yet valid")
                return False
            if float(claims.get("exp", 0)) <= now:
                self._error(401, 1004, "Authorization has expired")
                return False
            return True
        self._error(401, 1002, "api key not found")
        return False

    def _apply_fault(self, route: str) -> Fault | None:
        """Handle a fault that replaces the answer; return one that alters it, or None."""
        fault = self.simulator.take_fault(route)
        if fault is None:
            return None
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else None
        kind = fault.kind
        if kind == "slow":
            time.sleep(fault.delay)
            return None
        if kind in ("http500", "http502", "http503"):
            status = int(kind[4:])
            if status == 500:
                self._error(500, 5000, "Server internal error", headers)
            else:  # a proxy's HTML page, not Kling's envelope
                self._send(
                    status, f"<html><body>{status} Bad Gateway</body></html>".encode(), headers
                )
        elif kind == "429":
            self._send(429, b'{"error":"Too Many Requests"}', headers)
        elif kind == "1302":
            self._error(429, 1302, "request rate limit exceeded", headers)
        elif kind == "1303":
            self._error(429, 1303, "parallel task over resource pack limit", headers)
        elif kind == "1102":
            self._error(429, 1102, "Account balance not enough", headers)
        elif kind == "drop":
            self._drop()
        elif kind == "malformed":
            self._send(200, b'{"code":0,"message":"SUCCEED","data":{"task_id":')
        else:
            return fault  # policy, lose_answer, slow_answer, forbidden, truncate
        return _HANDLED

    def _answered_by_fault(self, route: str) -> bool:
        fault = self._apply_fault(route)
        if fault is not None and fault.kind == "slow_answer":
            time.sleep(fault.delay)
        return fault is _HANDLED

    # -- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:
        sim = self.simulator
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path == "/_sim/stats":
            return self._send(200, sim.stats())
        if path.startswith("/videos/"):
            sim.requests["download"] += 1
            return self._download(path.removeprefix("/videos/").removesuffix(".mp4"))
        base = sim.config.prefix + "/v1/videos/image2video"
        if path == base:
            sim.requests["list"] += 1
            if not self._authorised() or self._answered_by_fault("list"):
                return None
            return self._list(query)
        if path.startswith(base + "/"):
            sim.requests["query"] += 1
            if not self._authorised() or self._answered_by_fault("query"):
                return None
            return self._query(path[len(base) + 1 :])
        return self._error(404, 1202, "Invalid request method")

    def do_POST(self) -> None:
        sim = self.simulator
        path = unquote(urlsplit(self.path).path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path == "/_sim/faults":
            for item in json.loads(raw or b"[]"):
                sim.add_fault(item.pop("route"), item.pop("kind"), item.pop("count", 1), **item)
            return self._send(200, {"faults": len(sim.faults)})
        if path != sim.config.prefix + "/v1/videos/image2video":
            return self._error(404, 1202, "Invalid request method")
        sim.requests["create"] += 1
        if not self._authorised():
            return None
        fault = self._apply_fault("create")
        if fault is _HANDLED:
            return None
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return self._error(400, 1200, "Invalid request parameters")
        self._create(body, fault)

    def _create(self, body: dict[str, Any], fault: Fault | None) -> None:
        sim, cfg = self.simulator, self.simulator.config
        model = body.get("model_name") or "kling-v1"
        if model not in MODELS or model in cfg.retired_models:
            return self._error(400, 1201, "model is not supported")
        if body.get("mode", "std") not in ("std", "pro", "4k"):
            return self._error(400, 1201, "mode is invalid")
        duration = body.get("duration", "5")
        if isinstance(duration, int) and not isinstance(duration, bool):
            if cfg.strict_duration:
                return self._error(400, 1201, "duration must be a string")
            duration = str(duration)
        if duration not in {str(n) for n in range(3, 16)}:
            return self._error(400, 1201, "duration is invalid")
        cfg_scale = body.get("cfg_scale", 0.5)
        if not isinstance(cfg_scale, int | float) or not 0 <= cfg_scale <= 1:
            return self._error(400, 1201, "cfg_scale is invalid")
        for key in ("prompt", "negative_prompt"):
            if len(str(body.get(key) or "")) > 2500:
                return self._error(400, 1201, f"{key} is too long")
        image = body.get("image")
        if not image:
            return self._error(400, 1201, "image can not be null")
        fail_message = None
        if not str(image).startswith(("http://", "https://")):
            problem, data = _check_image(str(image))
            if problem == "base64":
                return self._error(400, 1201, "File is not in a valid base64 format")
            if problem and cfg.image_errors == "sync":
                return self._error(400, 1201, problem)
            if problem:
                fail_message = RATIO_MESSAGE
            with sim.lock:
                sim.creates_by_image[hashlib.sha256(data).hexdigest()] += 1
                sim.images_seen.append(data)
        external = body.get("external_task_id") or None
        with sim.lock:
            if external and external in sim.by_external:
                return self._error(400, 1201, "external_task_id already exists")
            if sim.running() >= cfg.concurrency:
                return self._error(429, 1303, "parallel task over resource pack limit")
            low, high = cfg.task_time
            run_for = sim.rng.uniform(low, high) * cfg.time_scale
            task_id = str(sim.rng.randrange(10**17, 10**18))
            if cfg.shape == "newapi":
                task_id = f"task_{uuid.UUID(int=sim.rng.getrandbits(128)).hex}"
            if fault is not None and fault.kind == "policy":
                fail_message = POLICY_MESSAGE
            task = SimTask(
                task_id,
                external,
                model,
                duration,
                sim.clock(),
                int(sim.wall() * 1000),
                run_for,
                fail_message,
            )
            sim.tasks[task_id] = task
            heapq.heappush(sim._unended, (task.created_mono + run_for, task_id))
            if external:
                sim.by_external[external] = task_id
                sim.creates_by_external[external] += 1
            sim.last_create_body = body
            sim.peak_running = max(sim.peak_running, sim.running())
        if fault is not None and fault.kind == "lose_answer":
            return self._drop()  # created, but the caller never hears of it
        if fault is not None and fault.kind == "slow_answer":
            with sim.lock:
                sim.answers_held += 1
            try:
                time.sleep(fault.delay)
            finally:
                with sim.lock:
                    sim.answers_held -= 1
        data = sim.task_json(task)
        data["task_status"] = "submitted"  # as Kling answers a create, however fast the task
        for key in ("task_status_msg", "task_result"):
            data.pop(key, None)
        if cfg.shape == "newapi":
            return self._send(
                200,
                {
                    "id": task_id,
                    "task_id": task_id,
                    "object": "video",
                    "model": model,
                    "status": "queued",
                    "progress": 0,
                    "created_at": task.created_ms // 1000,
                },
            )
        self._ok(data)

    def _find(self, ident: str) -> SimTask | None:
        sim = self.simulator
        with sim.lock:
            task = sim.tasks.get(ident)
            by_path = sim.config.lookup_path and sim.config.shape != "newapi"
            if task is None and by_path and ident in sim.by_external:
                task = sim.tasks[sim.by_external[ident]]
            return task

    def _query(self, ident: str) -> None:
        sim = self.simulator
        task = self._find(ident)
        if task is None:
            with sim.lock:
                sim.unknown_lookups[ident] += 1
            if sim.config.shape == "newapi":
                return self._send(
                    400, {"code": "task_not_exist", "message": "task_not_exist", "data": None}
                )
            if sim.config.unknown_task == "400":
                return self._error(400, 1201, "task_id is invalid")
            return self._error(404, 1203, "requested resource does not exist")
        self._answer_task(task)

    def _answer_task(self, task: SimTask) -> None:
        sim = self.simulator
        data = sim.task_json(task)
        shape = sim.config.shape
        if shape == "kling":
            return self._ok(data)
        url = (data.get("task_result") or {}).get("videos", [{}])[0].get("url")
        status = data["task_status"]
        if shape == "newapi":
            words = {
                "submitted": "SUBMITTED",
                "processing": "IN_PROGRESS",
                "succeed": "SUCCESS",
                "failed": "FAILURE",
            }
            return self._send(
                200,
                {
                    "code": "success",
                    "message": "",
                    "data": {
                        "task_id": task.task_id,
                        "status": words[status],
                        "progress": "100%" if status in ("succeed", "failed") else "50%",
                        "fail_reason": data["task_status_msg"],
                        "result_url": url,
                        "data": {"code": 0, "message": "SUCCEED", "data": data},
                    },
                },
            )
        words = {
            "submitted": "queued",
            "processing": "processing",
            "succeed": "succeeded",
            "failed": "failed",
        }
        return self._send(
            200,
            {
                "code": "success",
                "message": "",
                "data": {
                    "task_id": task.task_id,
                    "status": words[status],
                    "url": url,
                    "format": "mp4",
                    "error": data["task_status_msg"] or None,
                    "metadata": {"duration": task.duration_s},
                },
            },
        )

    def _list(self, query: dict[str, str]) -> None:
        sim = self.simulator
        if sim.config.shape == "newapi":  # new-api knows only its own task ids
            return self._send(
                404, {"code": "invalid_request", "message": "not found", "data": None}
            )
        try:
            page = int(query.get("pageNum", 1))
            size = int(query.get("pageSize", 30))
            if not (1 <= page <= 1000 and 1 <= size <= 500):
                raise ValueError
        except ValueError:
            return self._error(400, 1201, "pageNum or pageSize is invalid")
        with sim.lock:
            tasks = sorted(sim.tasks.values(), key=lambda t: t.created_mono, reverse=True)
            external = query.get("external_task_id")
            if external and sim.config.lookup_query:
                tasks = [t for t in tasks if t.external_task_id == external]
            chosen = tasks[(page - 1) * size : page * size]
            items = [sim.task_json(t) for t in chosen]
        self._ok(items)

    def _download(self, task_id: str) -> None:
        sim = self.simulator
        if task_id not in sim.tasks or sim.status_of(sim.tasks[task_id]) != "succeed":
            return self._send(404, b"not found")
        fault = self._apply_fault("download")
        if fault is _HANDLED:
            return None
        if fault is not None and fault.kind == "forbidden":
            return self._send(403, b"<Error><Code>AccessDenied</Code></Error>")
        body = sim.video_bytes(task_id)
        start, status = 0, 200
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit():
            start = int(rng[6:-1])
            if start >= len(body):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if fault is not None and fault.kind == "truncate":
            self.wfile.write(chunk[: max(1, len(chunk) // 2)])
            self.wfile.flush()
            return self._drop()
        self.wfile.write(chunk)


_HANDLED = Fault("any", "drop", 0)  # sentinel: the fault already answered


def _check_image(text: str) -> tuple[str | None, bytes]:
    """(problem or None, decoded bytes), checked as Kling documents (§5)."""
    if text.startswith("data:"):
        return "base64", b""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "base64", b""
    if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n")):
        return "image format is invalid: only JPG/JPEG/PNG are supported", data
    if len(data) > 10 * 1024 * 1024:
        return "image size exceeds 10MB", data
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:
        return "image can not be decoded", data
    if width < 300 or height < 300:
        return f"image resolution {width}x{height} is below 300px", data
    if not 1 / 2.5 <= width / height <= 2.5:
        return RATIO_MESSAGE, data
    return None, data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m daemon.simulator",
        description="Run a Kling-compatible image2video simulator on 127.0.0.1.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--prefix", default="", help="path prefix, e.g. /kling")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        help="static bearer key to accept (repeatable; default sk-test-key)",
    )
    parser.add_argument("--access-key", help="accept JWTs signed for this access key…")
    parser.add_argument("--secret-key", help="…with this secret key")
    parser.add_argument(
        "--task-time",
        type=float,
        nargs="+",
        default=[5.0],
        metavar="SECONDS",
        help="fixed time, or MIN MAX for a random time",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply task times (0.01 makes a 150 s task take 1.5 s)",
    )
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--shape", choices=["kling", "newapi", "plain"], default="kling")
    parser.add_argument("--unknown-task", choices=["404", "400"], default="404")
    parser.add_argument(
        "--retire",
        action="append",
        default=[],
        metavar="MODEL",
        help="answer 1201 'model is not supported' for this model",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--video-padding",
        type=int,
        default=0,
        metavar="BYTES",
        help="make each MP4 this much larger",
    )
    args = parser.parse_args(argv)
    low, high = (args.task_time * 2)[:2] if len(args.task_time) == 1 else args.task_time[:2]
    config = SimConfig(
        prefix=args.prefix.rstrip("/"),
        static_keys=set(args.key or ["sk-test-key"]),
        access_keys={args.access_key: args.secret_key} if args.access_key else {},
        task_time=(low, high),
        time_scale=args.time_scale,
        concurrency=args.concurrency,
        shape=args.shape,
        unknown_task=args.unknown_task,
        retired_models=set(args.retire),
        seed=args.seed,
        video_padding=args.video_padding,
    )
    sim = Simulator(config).start(args.host, args.port)
    print(f"Kling simulator at {sim.base_url} (stats: {sim.origin}/_sim/stats)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
