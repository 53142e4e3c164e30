"""Configuration: one frozen Settings object, one loader, precedence coded once.

Strength, weakest first: built-in defaults < TOML file (`--config` / DROPREEL_CONFIG) <
environment (`DROPREEL_<KEY>`) < command-line flags. Each key declares its type, default
and check together; a bad value is refused naming the key, the value and why. Secrets
(API keys) may come from the environment, the file, a key file, or systemd credentials
($CREDENTIALS_DIRECTORY/api_key); they are never part of repr() or any message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from state.params import ParamError, validate

SECRET_KEYS = ("api_key", "access_key", "secret_key")


class ConfigError(ValueError):
    pass


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _at_least_one(v: int) -> str | None:
    return None if v >= 1 else "must be at least 1"


def _choice(*options: str) -> Callable[[str], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


@dataclass(frozen=True)
class Settings:
    drop: Path = Path("drop")
    output: Path = Path("output")
    db: str = "dropreel.db"
    state_dir: Path | None = None  # default: beside a SQLite database, else ./dropreel-state
    provider: str = "auto"  # kling | local | auto (kling when credentials exist)
    api_base: str = "https://api-singapore.klingai.com"
    api_key: str | None = field(default=None, repr=False)
    api_key_file: Path | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    max_in_flight: int = 5
    settle_seconds: float = 2.0
    rescan_seconds: float = 300.0
    watch_step_ms: int = 500  # watchfiles wakes this often when idle (the rescan backs it up)
    deadline_minutes: float = 60.0
    expected_seconds: float = 0.0  # 0: learn from recent completions (public default first)
    poll_min_seconds: float = 3.0
    poll_max_seconds: float = 60.0
    conform_ratio: str = "fail"  # fail | pad
    delete_sources: bool = False
    max_input_mb: float = 100.0
    crash_limit: int = 3
    shutdown_grace_seconds: float = 10.0
    http_max_connections: int = 8
    http_timeout_seconds: float = 30.0
    duration_as_int: bool = False
    synchronous: str = "FULL"
    log_level: str = "INFO"
    pause_retry_seconds: float = 300.0
    max_step_retries: int = 8
    error_retry_seconds: float = 30.0  # after an unexpected error (a bug) in a job's step
    tick_seconds: float = 1.0
    # PostgreSQL shared by several daemons: how long a daemon's hold on its jobs lasts
    # without renewal (renewed every third of it); a dead daemon's jobs wait this long.
    lease_seconds: float = 30.0
    defaults: Mapping[str, Any] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_file: Path | None = None

    @property
    def resolved_provider(self) -> str:
        if self.provider != "auto":
            return self.provider
        return "kling" if self.api_key or (self.access_key and self.secret_key) else "local"

    @property
    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        if "://" not in self.db or self.db.startswith("sqlite:///"):
            path = Path(self.db.removeprefix("sqlite:///"))
            return path.parent / "dropreel-state"
        return Path("dropreel-state")


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "provider": _choice("auto", "kling", "local"),
    "max_in_flight": _at_least_one,
    "settle_seconds": lambda v: None if v >= 0 else "must be 0 or more",
    "rescan_seconds": _positive,
    "watch_step_ms": lambda v: None if 10 <= v <= 10_000 else "must be 10 to 10000",
    "deadline_minutes": _positive,
    "error_retry_seconds": _positive,
    "expected_seconds": lambda v: None if v >= 0 else "must be 0 (learn) or more",
    "poll_min_seconds": _positive,
    "poll_max_seconds": _positive,
    "conform_ratio": _choice("fail", "pad"),
    "max_input_mb": _positive,
    "crash_limit": _at_least_one,
    "shutdown_grace_seconds": lambda v: None if v >= 0 else "must be 0 or more",
    "http_max_connections": _at_least_one,
    "http_timeout_seconds": _positive,
    "synchronous": _choice("FULL", "NORMAL", "EXTRA", "OFF"),
    "log_level": _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    "pause_retry_seconds": _positive,
    "max_step_retries": _at_least_one,
    "tick_seconds": _positive,
    "lease_seconds": lambda v: None if v >= 1 else "must be 1 or more",
    "api_base": lambda v: (
        None if v.startswith(("http://", "https://")) else "must be an http(s) URL"
    ),
}
_FIELDS = {f.name: f for f in fields(Settings)}
_NOT_SETTABLE = {"config_file"}


def _coerce(key: str, value: Any) -> Any:
    """Convert text (env, flags) or TOML values to the field's type."""
    kind = str(_FIELDS[key].type)
    try:
        if key in ("defaults", "presets"):
            if not isinstance(value, Mapping):
                raise ValueError("must be a table")
            return dict(value)
        if value is None:
            return None
        if "bool" in kind:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("must be true or false")
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("must be a whole number")
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError("must be a number")
            return float(value)
        if "Path" in kind:
            return Path(str(value)).expanduser()
        text = str(value)
        return text.upper() if key in ("synchronous", "log_level") else text
    except (TypeError, ValueError) as exc:
        shown = "<redacted>" if key in SECRET_KEYS else repr(value)
        reason = str(exc) if "must" in str(exc) else f"must be {kind.split(' ')[0]}"
        raise ConfigError(f"{key} = {shown}: {reason}") from None


def load(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("DROPREEL_CONFIG")
    if path:
        path = Path(path).expanduser()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in _FIELDS or key in _NOT_SETTABLE:
                raise ConfigError(f"{key} (in {path}): unknown setting")
            values[key] = _coerce(key, value)
        values["config_file"] = path
    for key in _FIELDS:
        name = f"DROPREEL_{key.upper()}"
        if key not in ("defaults", "presets", "config_file") and name in env:
            values[key] = _coerce(key, env[name])
    for key, value in (flags or {}).items():
        if value is not None:
            if key not in _FIELDS or key in _NOT_SETTABLE:
                raise ConfigError(f"{key}: unknown setting")
            values[key] = _coerce(key, value)
    settings = Settings(**values)
    return _finish(settings, env)


def _finish(s: Settings, env: Mapping[str, str]) -> Settings:
    for key, check in CHECKS.items():
        value = getattr(s, key)
        problem = check(value)
        if problem:
            raise ConfigError(f"{key} = {value!r}: {problem}")
    if s.poll_max_seconds < s.poll_min_seconds:
        raise ConfigError(
            f"poll_max_seconds = {s.poll_max_seconds}: must not be below poll_min_seconds "
            f"({s.poll_min_seconds})"
        )
    try:
        validate(dict(s.defaults))
        for name, preset in s.presets.items():
            if not isinstance(preset, Mapping):
                raise ParamError(f"preset {name!r} must be a table")
            validate(dict(preset))
    except ParamError as exc:
        raise ConfigError(f"defaults/presets: {exc}") from None
    api_key = s.api_key
    if api_key is None and s.api_key_file is not None:
        try:
            api_key = s.api_key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"api_key_file = '{s.api_key_file}': {exc.strerror}") from None
    creds = env.get("CREDENTIALS_DIRECTORY")
    found: dict[str, str] = {}
    if creds:
        for name in SECRET_KEYS:
            p = Path(creds) / name
            if p.is_file():
                found[name] = p.read_text().strip()
    s = replace(
        s,
        api_key=api_key or found.get("api_key"),
        access_key=s.access_key or found.get("access_key"),
        secret_key=s.secret_key or found.get("secret_key"),
        # Absolute from here on: the watcher reports absolute paths, and a later chdir
        # must not move the folders.
        drop=s.drop.expanduser().absolute(),
        output=s.output.expanduser().absolute(),
        state_dir=None if s.state_dir is None else s.state_dir.expanduser().absolute(),
    )
    if (s.access_key is None) != (s.secret_key is None):
        raise ConfigError("access_key and secret_key must be given together")
    if s.provider == "kling" and not (s.api_key or s.access_key):
        raise ConfigError(
            "provider = 'kling' needs credentials: DROPREEL_API_KEY (bearer), or "
            "DROPREEL_ACCESS_KEY + DROPREEL_SECRET_KEY, or api_key_file, or the systemd "
            "credential api_key"
        )
    return s
