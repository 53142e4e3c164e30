"""Response parsing and error classification, with the exact bodies of the protocol notes
(through the real client on httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from daemon import errors
from daemon.kling_auth import StaticKeyAuth
from daemon.kling_client import KlingClient, LookupOutcome, RetryPolicy
from daemon.kling_parse import RemoteStatus, classify, normalise_status, read_envelope

CREATE_2025 = (
    '{"code":0,"message":"SUCCEED","request_id":"CjI17WevH1IAAAAAAHmgsw","data":'
    '{"task_id":"CjI17WevH1IAAAAAAHmgsw","task_status":"submitted","created_at":1739744384259,'
    '"updated_at":1739744384259}}'
)
SUCCESS_2025 = (
    '{"code":0,"message":"SUCCEED","request_id":"CjnVU2evHRAAAAAAAKDHAg","data":'
    '{"task_id":"CjI17WevH1IAAAAAAHmgsw","task_status":"succeed","task_status_msg":"",'
    '"task_result":{"videos":[{"id":"28444a6c-b923-4d7c-be2c-e0898ea73dc0","url":'
    '"https://cdn.klingai.com/bs2/upload-kling-api/5739745938/image2video/'
    'CjI17WevH1IAAAAAAHmgsw-0_raw_video_1.mp4","duration":"5.1"}]},'
    '"created_at":1739744384259,"updated_at":1739744621359}}'
)
TUZI_SUCCESS = (
    '{"code":0,"message":"成功","request_id":"CjikY2gHPbcAAAAADfR_DQ","data":'
    '{"task_id":"CjikY2gHPbcAAAAADfR_DQ","task_status":"succeed","task_status_msg":"",'
    '"task_result":{"videos":[{"id":"v1","url":"https://cdn.example/v.mp4","duration":"5.1"}]},'
    '"created_at":1750000000000,"updated_at":1750000120000}}'
)
CREATE_EXTERNAL_2026 = (
    '{"code":0,"message":"SUCCEED","request_id":"c0656403-1e6e-4b7e-b8f8-2cdd2595f2b9","data":'
    '{"task_id":"867283741759111202","task_status":"submitted","task_info":'
    '{"external_task_id":"text2video_kling_v3_final-1774805076"},"created_at":1774805076166,'
    '"updated_at":1774805076166}}'
)
EMPTY_LIST = '{"code":0,"message":"SUCCEED","data":[]}'
NO_BALANCE = '{"code":1102,"message":"Account balance not enough","request_id":"r-1"}'
CONCURRENCY = '{"code":1303,"message":"parallel task over resource pack limit","request_id":"u"}'
NEWAPI_SATURATED = (
    '{"code":"fail_to_fetch_task","message":"当前分组上游负载已饱和，请稍后再试","data":null}'
)
NEWAPI_BAD_TOKEN = (
    '{"error":{"message":"无效的令牌 (request id: 2025)","type":"new_api_error","code":""}}'
)
NEWAPI_QUERY = json.dumps(
    {
        "code": "success",
        "message": "",
        "data": {
            "task_id": "task_abc",
            "status": "SUCCESS",
            "progress": "100%",
            "fail_reason": "",
            "result_url": "https://cdn.example/r.mp4",
            "data": {
                "code": 0,
                "message": "SUCCEED",
                "data": {"task_id": "k1", "task_status": "succeed"},
            },
        },
    }
)


def client_for(
    routes: dict[tuple[str, str], tuple[int, str | bytes, dict[str, str]]],
    seen: list[httpx.Request] | None = None,
) -> KlingClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        key = (
            request.method,
            request.url.path + (f"?{request.url.query.decode()}" if request.url.query else ""),
        )
        if key not in routes:
            key = (request.method, request.url.path)
        status, body, headers = routes[key]
        return httpx.Response(
            status, content=body if isinstance(body, bytes) else body.encode(), headers=headers
        )

    return KlingClient(
        "https://api.example/kling",
        StaticKeyAuth("sk-FAKE-unit"),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=1),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_official_create_and_success_bodies() -> None:
    seen: list[httpx.Request] = []
    c = client_for(
        {
            ("POST", "/kling/v1/videos/image2video"): (200, CREATE_2025, {}),
            ("GET", "/kling/v1/videos/image2video/CjI17WevH1IAAAAAAHmgsw"): (200, SUCCESS_2025, {}),
        },
        seen,
    )
    params = {
        "model_name": "kling-v1",
        "mode": "pro",
        "duration": 5,
        "cfg_scale": 0.5,
        "aspect_ratio": "9:16",
        "negative_prompt": "模糊",
        "prompt": "turn",
    }
    task = run(c.create(params, image=b"\x89PNG", external_task_id="job-1"))
    assert task.task_id == "CjI17WevH1IAAAAAAHmgsw" and task.status is RemoteStatus.SUBMITTED
    assert task.created_at is not None and task.created_at.year == 2025  # ms timestamps
    sent = json.loads(seen[0].content)
    assert sent["duration"] == "5" and sent["external_task_id"] == "job-1"
    assert sent["image"] == "iVBORw==" and not sent["image"].startswith("data:")
    assert seen[0].headers["authorization"] == "Bearer sk-FAKE-unit"
    done = run(c.query(task.task_id))
    assert done.status is RemoteStatus.DONE and done.duration == 5.1
    assert done.video_url.endswith("CjI17WevH1IAAAAAAHmgsw-0_raw_video_1.mp4")
    assert (done.updated_at - done.created_at).total_seconds() == pytest.approx(237.1)


def test_chinese_message_external_id_and_empty_list() -> None:
    c = client_for(
        {
            ("GET", "/kling/v1/videos/image2video/t"): (200, TUZI_SUCCESS, {}),
            ("GET", "/kling/v1/videos/image2video/x"): (200, CREATE_EXTERNAL_2026, {}),
            ("GET", "/kling/v1/videos/image2video/none"): (
                404,
                '{"code":1203,"message":"requested resource does not exist"}',
                {},
            ),
            ("GET", "/kling/v1/videos/image2video"): (200, EMPTY_LIST, {}),
        }
    )
    assert run(c.query("t")).status is RemoteStatus.DONE
    task = run(c.query("x"))
    assert task.external_task_id == "text2video_kling_v3_final-1774805076"
    assert run(c.find_by_external_id("none")).outcome is LookupOutcome.ABSENT


def test_newapi_query_shape() -> None:
    c = client_for({("GET", "/kling/v1/videos/image2video/task_abc"): (200, NEWAPI_QUERY, {})})
    task = run(c.query("task_abc"))
    assert task.status is RemoteStatus.DONE and task.video_url == "https://cdn.example/r.mp4"


@pytest.mark.parametrize(
    ("status", "body", "kind", "headers"),
    [
        (429, NO_BALANCE, errors.AccountError, {}),  # 429 but an account problem
        (400, NO_BALANCE, errors.AccountError, {}),  # the same body through a proxy
        (429, CONCURRENCY, errors.ConcurrencyLimited, {"Retry-After": "7"}),
        (429, NEWAPI_SATURATED, errors.RateLimited, {}),
        (401, NEWAPI_BAD_TOKEN, errors.AccountError, {}),
        (
            200,
            '{"code":1301,"message":"Content security policy triggered"}',
            errors.ContentRejected,
            {},
        ),
        (200, '{"code":5001,"message":"maintenance"}', errors.TransientError, {}),
        (400, '{"code":1201,"message":"model is not supported"}', errors.ModelUnsupported, {}),
        (
            404,
            '{"code":1203,"message":"requested resource does not exist"}',
            errors.ModelUnsupported,
            {},
        ),
        (
            400,
            '{"code":"task_failed","message":"parallel task over resource pack limit"}',
            errors.ConcurrencyLimited,
            {},
        ),
        (502, "<html>Bad Gateway</html>", errors.TransientError, {}),
        (200, '{"code":0,"data":{"task_id":', errors.TransientError, {}),
        (403, '{"code":1103,"message":"no permission"}', errors.AccountError, {}),
        (429, '{"code":1304,"message":"IP whitelist policy"}', errors.AccountError, {}),
    ],
)
def test_error_classification(status: int, body: str, kind: type, headers: dict[str, str]) -> None:
    c = client_for({("POST", "/kling/v1/videos/image2video"): (status, body, headers)})
    params = {
        "model_name": "kling-v2-6",
        "mode": "pro",
        "duration": 5,
        "cfg_scale": 0.5,
        "aspect_ratio": "9:16",
    }
    with pytest.raises(errors.ProviderError) as err:
        run(c.create(params, image=b"x", external_task_id="j"))
    assert type(err.value) is kind
    if headers:
        assert err.value.retry_after == 7


def test_model_refusal_names_the_setting() -> None:
    c = client_for(
        {
            ("POST", "/kling/v1/videos/image2video"): (
                400,
                '{"code":1201,"message":"model is not supported"}',
                {},
            )
        }
    )
    params = {
        "model_name": "kling-v1",
        "mode": "pro",
        "duration": 5,
        "cfg_scale": 0.5,
        "aspect_ratio": "9:16",
    }
    with pytest.raises(errors.ModelUnsupported) as err:
        run(c.create(params, image=b"x", external_task_id="j"))
    assert "model_name = 'kling-v1'" in str(err.value) and "retired" in str(err.value)


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("submitted", "submitted"),
        ("pending", "submitted"),
        ("queued", "submitted"),
        ("QUEUED", "submitted"),
        ("processing", "processing"),
        ("running", "processing"),
        ("IN_PROGRESS", "processing"),
        ("succeed", "done"),
        ("success", "done"),
        ("completed", "done"),
        ("SUCCESS", "done"),
        ("succeeded", "done"),
        ("failed", "failed"),
        ("error", "failed"),
        ("FAILURE", "failed"),
    ],
)
def test_status_words(word: str, status: str) -> None:
    assert normalise_status(word) == status


def test_unknown_status_word_is_running_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert normalise_status("teleporting") is RemoteStatus.PROCESSING
    assert "teleporting" in caplog.text


def test_envelope_codes() -> None:
    assert read_envelope({"code": 0}).ok
    assert read_envelope({"code": "0"}).ok
    assert read_envelope({"code": "success", "data": {}}).ok
    assert not read_envelope({"code": 1102, "message": "x"}).ok
    assert not read_envelope(["not", "a", "dict"]).ok
    env = read_envelope({"code": "1303", "message": "m"})
    assert env.code == 1303
    assert isinstance(classify(429, env), errors.ConcurrencyLimited)
