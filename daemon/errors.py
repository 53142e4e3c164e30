"""What can go wrong with a provider, as the daemon acts on it. Every provider (Kling over
HTTP, the offline renderer) raises only these:

    ProviderError                 (.code, .http_status, .request_id, .retry_after)
    ├── AccountError              pause all submissions; an operator must act (key, balance)
    │   └── AuthExpired           token not yet valid / expired: rebuild once and retry
    ├── JobRejected               this job fails with the provider's message
    │   ├── ModelUnsupported      the configured model_name is refused
    │   └── ContentRejected       content policy (1300/1301, failed task "risk control")
    ├── RateLimited               back off, honour retry_after (429, 1302)
    │   └── ConcurrencyLimited    too many tasks at once (1303): lower the in-flight limit
    ├── TransientError            5xx, timeouts, resets, invalid JSON: retry with backoff
    │   └── DownloadInterrupted   the body ended early: resume with Range
    └── DownloadRejected          the result URL refuses us (403/404/410): ask for a new one
Messages never contain credentials: they are built from response bodies only.
"""

from __future__ import annotations


class ProviderError(Exception):
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        code: int | str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after

    def describe(self) -> dict[str, object]:
        """A JSON-able summary for job history details."""
        out: dict[str, object] = {"kind": self.kind, "message": self.message}
        for key in ("code", "http_status", "request_id", "retry_after"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def __str__(self) -> str:
        bits = [
            f"code {self.code}" if self.code not in (None, "") else None,
            f"HTTP {self.http_status}" if self.http_status else None,
        ]
        where = ", ".join(b for b in bits if b)
        return f"{self.message} ({where})" if where else self.message


class AccountError(ProviderError):
    kind = "account"


class AuthExpired(AccountError):
    kind = "auth_expired"


class JobRejected(ProviderError):
    kind = "rejected"


class ModelUnsupported(JobRejected):
    kind = "model_unsupported"


class ContentRejected(JobRejected):
    kind = "content_policy"


class RateLimited(ProviderError):
    kind = "rate_limited"


class ConcurrencyLimited(RateLimited):
    kind = "concurrency"


class TransientError(ProviderError):
    kind = "transient"


class DownloadInterrupted(TransientError):
    kind = "download_interrupted"


class DownloadRejected(ProviderError):
    kind = "download_rejected"


class DiskFull(Exception):
    """No space left where we write (output, state): pause and retry, never fail a job."""


# The command line's two outcomes besides success (here, not in commands.py, so that
# importing the CLI module — which every decoder worker process does — stays light).


class Refused(Exception):
    """The request was understood and cannot be done (exit 1, one line on stderr)."""


class UsageError(Exception):
    """Bad arguments (exit 2)."""
