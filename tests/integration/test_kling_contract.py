"""The real client against the shipped simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import jwt
import pytest

from daemon import errors
from daemon.kling_auth import JwtAuth, StaticKeyAuth
from daemon.kling_client import KlingClient, LookupOutcome, RetryPolicy
from daemon.kling_parse import RemoteStatus
from daemon.simulator import SimConfig, Simulator
from state.params import DEFAULT_PARAMS
from tests.helpers import png_bytes

KEY = "sk-FAKE-contract-0123456789abcdef0123456789"
AK, SK = "ak-FAKE-access", "sk-FAKE-secret-for-hs256-0123456789abcdef"


_loop: asyncio.AbstractEventLoop | None = None
_clients: list[KlingClient] = []


@pytest.fixture(autouse=True)
def _event_loop() -> Iterator[None]:
    # One loop per test, so clients (and their pools) can be used across run() calls.
    global _loop
    _loop = asyncio.new_event_loop()
    yield
    for c in _clients:
        _loop.run_until_complete(c.aclose())
    _clients.clear()
    _loop.close()


def run(coro: Any) -> Any:
    assert _loop is not None
    return _loop.run_until_complete(coro)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(
        SimConfig(prefix="/kling", static_keys={KEY}, access_keys={AK: SK}, concurrency=50)
    ).start() as s:
        yield s


def client(sim: Simulator, **kw: Any) -> KlingClient:
    kw.setdefault("auth", StaticKeyAuth(KEY))
    kw.setdefault("retry", RetryPolicy(attempts=3, base=0.01))
    c = KlingClient(sim.base_url, **kw)
    _clients.append(c)
    return c


async def create_and_wait(
    c: KlingClient, ext: str, image: bytes | None = None, **params: Any
) -> Any:
    task = await c.create(
        {**DEFAULT_PARAMS, **params}, image=image or png_bytes(), external_task_id=ext
    )
    for _ in range(500):
        task = await c.query(task.task_id)
        if task.status in (RemoteStatus.DONE, RemoteStatus.FAILED):
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("task never finished")


def test_full_round_trip_through_a_prefix(sim: Simulator, tmp_path: Path) -> None:
    sim.config.task_time = (0.3, 0.3)
    image = png_bytes(720, 1280)

    c = client(sim)
    task = run(create_and_wait(c, "job-1", image))
    size = run(c.download(task.video_url, tmp_path / "out.mp4"))
    assert task.status is RemoteStatus.DONE and task.external_task_id == "job-1"
    body = sim.last_create_body
    assert body["model_name"] == "kling-v1" and body["mode"] == "pro"
    assert body["duration"] == "5" and body["cfg_scale"] == 0.5
    assert body["aspect_ratio"] == "9:16" and body["negative_prompt"].startswith("模糊")
    assert base64.b64decode(body["image"]) == image
    assert sim.creates_by_image == {hashlib.sha256(image).hexdigest(): 1}
    out = (tmp_path / "out.mp4").read_bytes()
    assert len(out) == size and out == sim.video_bytes(task.task_id)
    with av.open(io.BytesIO(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert not list(tmp_path.glob(".*.part"))


def test_duration_as_integer_option(sim: Simulator) -> None:
    c = client(sim, duration_as_int=True)
    run(create_and_wait(c, "int-1"))
    assert sim.last_create_body["duration"] == 5
    sim.config.strict_duration = True
    with pytest.raises(errors.JobRejected, match="duration"):
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="int-2"))


def test_jwt_auth_checked_by_the_simulator_and_by_pyjwt(sim: Simulator) -> None:
    now = [time.time()]
    auth = JwtAuth(AK, SK, now=lambda: now[0])
    token = auth.token()
    claims = jwt.decode(token, SK, algorithms=["HS256"])  # independent oracle
    assert claims["iss"] == AK
    assert claims["exp"] - int(now[0]) == 1800 and int(now[0]) - claims["nbf"] == 5
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert auth.token() == token  # cached
    c = client(sim, auth=auth)
    run(create_and_wait(c, "jwt-1"))
    assert auth.tokens_built == 1


def test_jwt_rebuilt_once_on_expiry(sim: Simulator) -> None:
    auth = JwtAuth(AK, SK)
    c = client(sim, auth=auth, retry=RetryPolicy(attempts=1))
    task_id = run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="e")).task_id
    # The server's clock runs 40 min ahead for one check: our cached token is "expired"
    # (1004), so the auth rebuilds it once and the same request goes through.
    ahead = [time.time() + 2400]
    sim.wall = lambda: ahead.pop() if ahead else time.time()
    before = sim.requests["query"]
    assert run(c.query(task_id)).task_id == task_id
    assert auth.tokens_built == 2 and sim.requests["query"] - before == 2
    # Always ahead: rebuilt once more, then the error surfaces (no loop).
    sim.wall = lambda: time.time() + 2400
    with pytest.raises(errors.AuthExpired):
        run(c.query(task_id))
    assert auth.tokens_built == 3 and sim.requests["query"] - before == 4


def test_wrong_secret_is_an_account_error(sim: Simulator) -> None:
    c = client(sim, auth=JwtAuth(AK, "sk-FAKE-wrong"))
    with pytest.raises(errors.AccountError):
        run(c.query("123"))


def test_key_never_in_logs_or_errors(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-FAKE-must-never-leak-4f1d2a7b"
    with caplog.at_level(logging.DEBUG):
        c = client(sim, auth=StaticKeyAuth(secret))
        with pytest.raises(errors.AccountError) as err:
            run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="leak"))
        good = client(sim)
        run(create_and_wait(good, "ok"))
        jwt_client = client(sim, auth=JwtAuth(AK, SK))
        run(jwt_client.query(next(iter(sim.tasks))))
    text = caplog.text + str(err.value) + repr(err.value) + json.dumps(err.value.describe())
    text += repr(c._http.auth) + repr(jwt_client._http.auth)
    for s in (secret, KEY, SK):
        assert s not in text
    assert "GET /kling/v1/videos/image2video/" in caplog.text  # calls are logged


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("1102", errors.AccountError),
        ("1303", errors.ConcurrencyLimited),
        ("1302", errors.RateLimited),
        ("429", errors.RateLimited),
    ],
)
def test_refusals_are_typed(sim: Simulator, fault: str, kind: type) -> None:
    sim.add_fault("create", fault, retry_after=3)
    with pytest.raises(errors.ProviderError) as err:
        run(client(sim).create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="r"))
    assert type(err.value) is kind and err.value.retry_after == 3
    assert sim.creates_by_external == {}


def test_real_concurrency_limit(sim: Simulator) -> None:
    sim.config.concurrency, sim.config.task_time = 1, (30, 30)
    c = client(sim)
    run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="a"))
    with pytest.raises(errors.ConcurrencyLimited):
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="b"))
    for _ in range(5):  # queries never count against the limit
        run(c.query(sim.by_external["a"]))


@pytest.mark.parametrize("fault", ["http500", "http502", "http503", "malformed", "drop"])
def test_transient_faults_are_retried_then_succeed(sim: Simulator, fault: str) -> None:
    sim.add_fault("any", fault, count=2)
    notes: list[dict[str, Any]] = []
    task = run(
        client(sim).create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="t", notes=notes)
    )
    assert task.task_id and len(notes) == 2 and notes[0]["kind"] == "transient"
    assert sim.creates_by_external == {"t": 1}


def test_transient_storm_gives_up_within_bound(sim: Simulator) -> None:
    sim.add_fault("any", "http500", count=None)
    with pytest.raises(errors.TransientError):
        run(client(sim).query("1"))
    assert sim.requests["query"] == 3


def test_lost_create_answer_is_adopted_not_duplicated(sim: Simulator) -> None:
    sim.add_fault("create", "lose_answer")
    task = run(client(sim).create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="lost"))
    assert task.task_id == sim.by_external["lost"]
    assert sim.creates_by_external == {"lost": 1}
    assert sim.requests["create"] == 2


def test_slow_answer_times_out_as_transient(sim: Simulator) -> None:
    sim.add_fault("query", "slow_answer", delay=1.0)
    c = client(sim, timeout=0.2, retry=RetryPolicy(attempts=1))
    with pytest.raises(errors.TransientError, match="timed out"):
        run(c.query("1"))


def test_policy_failure_keeps_the_reason(sim: Simulator) -> None:
    sim.add_fault("create", "policy")
    task = run(create_and_wait(client(sim), "p"))
    assert task.status is RemoteStatus.FAILED
    assert task.message == "Failure to pass the risk control system"


def test_retired_model_is_refused_naming_the_setting(sim: Simulator) -> None:
    sim.config.retired_models = {"kling-v1"}
    with pytest.raises(errors.ModelUnsupported, match="model_name = 'kling-v1'"):
        run(client(sim).create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="m"))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (b"GIF89a not allowed", "format"),
        (png_bytes(100, 100), "300px"),
        (png_bytes(300, 1000), "aspect ratio"),
    ],
)
def test_simulator_validates_images(sim: Simulator, image: bytes, message: str) -> None:
    with pytest.raises(errors.JobRejected, match=message):
        run(client(sim).create(DEFAULT_PARAMS, image=image, external_task_id="img"))


def test_data_uri_base64_is_refused(sim: Simulator) -> None:
    c = client(sim)
    body = c.create_body(DEFAULT_PARAMS, image=png_bytes(), external_task_id="d")
    assert not body["image"].startswith("data:")
    sim.config.static_keys.add(KEY)
    import httpx

    r = httpx.post(
        f"{sim.base_url}/v1/videos/image2video",
        json={**body, "image": "data:image/png;base64," + body["image"]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.json()["code"] == 1201 and "base64" in r.json()["message"]


def test_duplicate_external_id_is_refused_by_the_simulator(sim: Simulator) -> None:
    import httpx

    c = client(sim)
    body = c.create_body(DEFAULT_PARAMS, image=png_bytes(), external_task_id="dup")
    headers = {"Authorization": f"Bearer {KEY}"}
    assert (
        httpx.post(f"{sim.base_url}/v1/videos/image2video", json=body, headers=headers).json()[
            "code"
        ]
        == 0
    )
    again = httpx.post(f"{sim.base_url}/v1/videos/image2video", json=body, headers=headers)
    assert again.status_code == 400 and "external_task_id" in again.json()["message"]


def test_lookup_by_external_id(sim: Simulator) -> None:
    c = client(sim)
    run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="ext-1"))
    found = run(c.find_by_external_id("ext-1"))
    assert found.outcome is LookupOutcome.FOUND
    assert found.task.task_id == sim.by_external["ext-1"]
    sim.config.lookup_path = False  # only the query-string form works
    assert run(c.find_by_external_id("ext-1")).outcome is LookupOutcome.FOUND
    assert run(c.find_by_external_id("never")).outcome is LookupOutcome.ABSENT
    sim.config.lookup_query = False  # neither: the filter is ignored, tasks come back
    assert run(c.find_by_external_id("ext-1")).outcome is LookupOutcome.FOUND  # on the page
    assert run(c.find_by_external_id("never")).outcome is LookupOutcome.UNKNOWN


def test_list_tasks(sim: Simulator) -> None:
    c = client(sim)
    for i in range(3):
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id=f"l{i}"))
    tasks = run(c.list_tasks(page=1, size=2))
    assert [t.external_task_id for t in tasks] == ["l2", "l1"]


@pytest.mark.parametrize("shape", ["newapi", "plain"])
def test_gateway_shapes(sim: Simulator, shape: str, tmp_path: Path) -> None:
    sim.config.shape = shape
    c = client(sim)
    task = run(create_and_wait(c, f"g-{shape}"))
    assert task.status is RemoteStatus.DONE and task.video_url
    run(c.download(task.video_url, tmp_path / "g.mp4"))
    assert (tmp_path / "g.mp4").read_bytes() == sim.video_bytes(task.task_id)
    if shape == "newapi":
        assert task.task_id.startswith("task_")
        assert run(c.find_by_external_id(f"g-{shape}")).outcome is LookupOutcome.UNKNOWN


def test_newapi_hides_balance_behind_busy(sim: Simulator) -> None:
    sim.config.shape = "newapi"
    sim.add_fault("create", "1102")
    with pytest.raises(errors.RateLimited) as err:
        run(client(sim).create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="n"))
    assert type(err.value) is errors.RateLimited and "饱和" in err.value.message


def test_download_dies_mid_body_then_resumes(sim: Simulator, tmp_path: Path) -> None:
    c = client(sim)
    task = run(create_and_wait(c, "dl"))
    sim.add_fault("download", "truncate")
    dest = tmp_path / "v.mp4"
    with pytest.raises(errors.DownloadInterrupted):
        run(c.download(task.video_url, dest))
    part = tmp_path / ".v.mp4.part"
    assert part.exists() and 0 < part.stat().st_size < len(sim.video_bytes(task.task_id))
    assert not dest.exists()
    run(c.download(task.video_url, dest))
    assert dest.read_bytes() == sim.video_bytes(task.task_id) and not part.exists()


def test_download_forbidden_and_not_mp4(sim: Simulator, tmp_path: Path) -> None:
    c = client(sim)
    task = run(create_and_wait(c, "f"))
    sim.add_fault("download", "forbidden")
    with pytest.raises(errors.DownloadRejected):
        run(c.download(task.video_url, tmp_path / "f.mp4"))
    with pytest.raises(errors.TransientError, match="not an MP4"):
        run(c.download(f"{sim.origin}/_sim/stats", tmp_path / "s.mp4"))
    assert not (tmp_path / "s.mp4").exists()


def test_simulator_time_scale_and_peak(sim: Simulator) -> None:
    sim.config.task_time, sim.config.time_scale = (150, 150), 0.002  # "150 s" in 0.3 s
    c = client(sim)
    started = time.monotonic()
    task = run(create_and_wait(c, "scaled"))
    assert task.status is RemoteStatus.DONE
    assert time.monotonic() - started < 10
    assert sim.stats()["peak_running"] == 1


def test_simulator_concurrency_limit_follows_task_ends() -> None:
    now = [1000.0]
    config = SimConfig(static_keys={KEY}, concurrency=2, task_time=(10, 10))
    with Simulator(config, clock=lambda: now[0]).start() as s:
        c = client(s)
        first = run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="a"))
        now[0] += 5
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="b"))
        with pytest.raises(errors.ConcurrencyLimited):
            run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="c"))
        now[0] += 5  # "a" has just ended (10 s), "b" runs until 1015
        assert run(c.query(first.task_id)).status is RemoteStatus.DONE
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="c"))
        with pytest.raises(errors.ConcurrencyLimited):
            run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="d"))
        now[0] += 20
        assert s.stats()["running"] == 0 and s.stats()["peak_running"] == 2
        run(c.create(DEFAULT_PARAMS, image=png_bytes(), external_task_id="d"))
        assert s.stats()["running"] == 1


def test_simulator_cli_help() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "daemon.simulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--time-scale" in out and "--prefix" in out
