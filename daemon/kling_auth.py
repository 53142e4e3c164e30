"""Kling authentication as httpx.Auth, so no call site builds headers.

- StaticKeyAuth: `Authorization: Bearer <key>` (proxies, Kling's 2026 static API keys).
- JwtAuth: Kling's access-key/secret-key scheme, an HS256 JWT (`iss` = access key,
  `exp` = now + 1800 s, `nbf` = now - 5 s), cached and rebuilt before it expires; an answer
  of 1003/1004 (not yet valid / expired) rebuilds it once and retries the request.

HS256 is twenty lines over hmac; the test suite checks it against PyJWT.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx

TOKEN_TTL = 1800  # seconds, as Kling's samples use
NBF_SKEW = 5
REFRESH_MARGIN = 300  # rebuild this long before `exp`, so no request carries a dying token


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_hs256(claims: dict[str, Any], secret: str) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def decode_hs256(token: str, secret_for: Callable[[str], str | None]) -> dict[str, Any]:
    """Verify and decode (the simulator's side). Raises ValueError with a reason."""
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(payload_b64))
    except ValueError as exc:
        raise ValueError("malformed token") from exc
    if header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise ValueError("unsupported token")
    secret = secret_for(str(claims.get("iss", "")))
    if secret is None:
        raise ValueError("unknown access key")
    expected = hmac.new(
        secret.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(expected, _b64url_decode(sig_b64)):
        raise ValueError("bad signature")
    return claims


class StaticKeyAuth(httpx.Auth):
    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:  # never show the key
        return "StaticKeyAuth(<redacted>)"


class JwtAuth(httpx.Auth):
    requires_response_body = True  # to read the business code of a 401

    def __init__(
        self, access_key: str, secret_key: str, now: Callable[[], float] = time.time
    ) -> None:
        self._access_key, self._secret_key, self._now = access_key, secret_key, now
        self._token: str | None = None
        self._exp = 0.0
        self.tokens_built = 0

    def token(self, *, force: bool = False) -> str:
        now = self._now()
        if force or self._token is None or now >= self._exp - REFRESH_MARGIN:
            exp = int(now) + TOKEN_TTL
            claims = {"iss": self._access_key, "exp": exp, "nbf": int(now) - NBF_SKEW}
            self._token, self._exp = encode_hs256(claims, self._secret_key), float(exp)
            self.tokens_built += 1
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401 and _business_code(response) in (1003, 1004):
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request

    def __repr__(self) -> str:
        return "JwtAuth(<redacted>)"


def _business_code(response: httpx.Response) -> int | None:
    try:
        code = response.json().get("code")
        return int(code)
    except (ValueError, TypeError, AttributeError):
        return None
