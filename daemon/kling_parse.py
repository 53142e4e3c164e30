"""Reading Kling (and gateway) responses liberally, and classifying errors.

Accepts: `code` as 0, "0" or "success"; HTTP 200 with a non-zero code (an error); numbers
sent as strings; millisecond timestamps; the gateway shapes of the protocol notes §11
(task id in data.task_id / task_id / id; status in data.task_status / data.status /
status / new-api's nested data.data.data; URL in data.task_result.videos[0].url /
data.url / data.result_url / metadata.url). Errors are classified by business code first,
HTTP status second, message text for gateways that drop the code.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from daemon.errors import (
    AccountError,
    AuthExpired,
    ConcurrencyLimited,
    ContentRejected,
    JobRejected,
    ModelUnsupported,
    ProviderError,
    RateLimited,
    TransientError,
)

log = logging.getLogger(__name__)


class RemoteStatus(StrEnum):
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


_STATUS_WORDS = {
    RemoteStatus.SUBMITTED: {"submitted", "pending", "queued", "not_start", "queueing"},
    RemoteStatus.PROCESSING: {"processing", "running", "in_progress"},
    RemoteStatus.DONE: {"succeed", "success", "succeeded", "completed", "complete"},
    RemoteStatus.FAILED: {"failed", "failure", "error", "fail"},
}
_WORD_TO_STATUS = {w: st for st, words in _STATUS_WORDS.items() for w in words}


def normalise_status(word: object) -> RemoteStatus:
    """Map a provider's status word; an unknown word is logged and means "still running"
    (never success)."""
    key = str(word or "").strip().lower()
    status = _WORD_TO_STATUS.get(key)
    if status is None:
        log.warning("unknown remote status %r: treating it as still processing", word)
        return RemoteStatus.PROCESSING
    return status


@dataclass(frozen=True)
class RemoteTask:
    task_id: str
    status: RemoteStatus
    raw_status: str
    message: str = ""
    video_url: str | None = None
    duration: float | None = None
    external_task_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Envelope:
    ok: bool
    code: int | str | None
    message: str
    request_id: str | None
    data: Any
    body: Any


def _int_or_text(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def parse_json(raw: bytes, http_status: int) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransientError(
            f"invalid JSON in the provider's answer: {raw[:80]!r}", http_status=http_status
        ) from exc


def read_envelope(body: Any) -> Envelope:
    if not isinstance(body, dict):
        return Envelope(False, None, "", None, body, body)
    code = _int_or_text(body.get("code"))
    message = body.get("message")
    if message is None and isinstance(body.get("error"), dict):  # OpenAI-style gateway error
        message = body["error"].get("message")
        code = _int_or_text(body["error"].get("code")) or code
    message = "" if message is None else str(message)
    ok = code in (0, "success", "succeed", "ok")
    if code is None and "error" not in body and any(k in body for k in ("task_id", "id")):
        ok = True  # new-api's create answer: a bare task object, no envelope
    data = body.get("data", body if ok and "data" not in body else None)
    request_id = body.get("request_id")
    return Envelope(ok, code, message, None if request_id is None else str(request_id), data, body)


def _dig(obj: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or len(obj) <= key:
                return None
            obj = obj[key]
        else:
            if not isinstance(obj, dict):
                return None
            obj = obj.get(key)
    return obj


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> datetime | None:
    number = _number(value)
    if number is None:
        return None
    if number > 1e11:  # milliseconds (Kling's unit); seconds otherwise
        number /= 1000
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_task(data: Any, outer: Any = None) -> RemoteTask:
    """A task object from `data` (or a gateway's variant of it)."""
    if not isinstance(data, dict):
        raise TransientError(f"the provider's answer has no task object: {str(data)[:120]}")
    nested = _dig(data, "data", "data")  # new-api keeps the raw Kling body here
    task_id = _first(
        data.get("task_id"),
        data.get("id"),
        _dig(outer, "task_id"),
        _dig(outer, "id"),
        _dig(nested, "task_id"),
    )
    if task_id is None:
        raise TransientError("the provider's answer has no task id")
    raw_status = _first(
        data.get("task_status"),
        data.get("status"),
        _dig(outer, "status"),
        _dig(nested, "task_status"),
    )
    url = _first(
        _dig(data, "task_result", "videos", 0, "url"),
        data.get("url"),
        data.get("result_url"),
        _dig(data, "metadata", "url"),
        _dig(nested, "task_result", "videos", 0, "url"),
    )
    message = _first(
        data.get("task_status_msg"),
        data.get("fail_reason"),
        _dig(data, "error", "message")
        if isinstance(data.get("error"), dict)
        else data.get("error"),
        _dig(nested, "task_status_msg"),
    )
    return RemoteTask(
        task_id=str(task_id),
        status=normalise_status(raw_status),
        raw_status=str(raw_status),
        message="" if message is None else str(message),
        video_url=None if url is None else str(url),
        duration=_number(
            _first(_dig(data, "task_result", "videos", 0, "duration"), data.get("duration"))
        ),
        external_task_id=_first(
            _dig(data, "task_info", "external_task_id"), data.get("external_task_id")
        ),
        created_at=_timestamp(data.get("created_at")),
        updated_at=_timestamp(data.get("updated_at")),
    )


# -- error classification ----------------------------------------------------------------

_ACCOUNT_TEXT = (
    "balance not enough",
    "arrears",
    "api key not found",
    "authorization",
    "无效的令牌",
    "未提供令牌",
    "令牌验证失败",
    "余额",
    "额度",
    "quota",
    "whitelist",
    "account exception",
    "resource pack depleted",
)
_CONCURRENCY_TEXT = ("parallel task over resource pack limit",)
_SATURATED_TEXT = ("当前分组上游负载已饱和",)  # new-api's rewrite of EVERY upstream 429
_POLICY_TEXT = ("risk control", "content security", "policy")
_MODEL_TEXT = ("model is not supported", "model not supported", "model_name")
_NOT_FOUND_TEXT = ("task_not_exist", "not exist", "not found", "does not exist")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(
    http_status: int, envelope: Envelope, *, retry_after: float | None = None
) -> ProviderError:
    """The typed error for a failed answer: business code first, HTTP status second,
    message text for gateways that lose the code."""
    code, message = envelope.code, envelope.message or f"HTTP {http_status}"
    kw: dict[str, Any] = {
        "code": code,
        "http_status": http_status,
        "request_id": envelope.request_id,
        "retry_after": retry_after,
    }
    text = message.lower()
    if isinstance(code, int):
        if code in (1003, 1004):
            return AuthExpired(message, **kw)
        if 1000 <= code <= 1004 or 1100 <= code <= 1103 or code == 1304:
            return AccountError(message, **kw)
        if code == 1303:
            return ConcurrencyLimited(message, **kw)
        if code == 1302:
            return RateLimited(message, **kw)
        if code in (1300, 1301):
            return ContentRejected(message, **kw)
        if code == 1203 or (code == 1201 and any(t in text for t in _MODEL_TEXT)):
            return ModelUnsupported(message, **kw)
        if 1200 <= code <= 1299:
            return JobRejected(message, **kw)
        if 5000 <= code <= 5999:
            return TransientError(message, **kw)
    # No usable code (gateways): read the text.
    if any(t in text for t in _CONCURRENCY_TEXT):
        return ConcurrencyLimited(message, **kw)
    if any(t in message for t in _SATURATED_TEXT):
        # Behind new-api "busy" and "out of balance" look the same: back off, bounded.
        return RateLimited(message, **kw)
    if any(t in text for t in _ACCOUNT_TEXT) or http_status in (401, 403):
        return AccountError(message, **kw)
    if any(t in text for t in _MODEL_TEXT):
        return ModelUnsupported(message, **kw)
    if any(t in text for t in _POLICY_TEXT) and http_status < 500:
        return ContentRejected(message, **kw)
    if http_status == 429:
        return RateLimited(message, **kw)
    if http_status >= 500 or http_status in (408, 425) or http_status == 200:
        return TransientError(message, **kw)
    if 400 <= http_status < 500:
        return JobRejected(message, **kw)
    return TransientError(message, **kw)


def is_not_found(http_status: int, envelope: Envelope) -> bool:
    """Whether an error answer means "no such task" (undocumented: 404/1203, 400/1201,
    new-api's task_not_exist)."""
    text = f"{envelope.code} {envelope.message}".lower()
    return (
        envelope.code == 1203
        or http_status == 404
        or any(t in text for t in _NOT_FOUND_TEXT)
        or (envelope.code == 1201 and "task" in text)
    )
