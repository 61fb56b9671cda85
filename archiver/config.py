"""Settings for a run, read from flags and environment variables (a flag wins).

Small frozen value objects with ``DEFAULT_*`` constants, in the manner of httpx's config.
The API key is wrapped in :class:`ApiKey` so that printing a settings object, a traceback
or a log record can never show it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from archiver.exceptions import ConfigError

DEFAULT_API_URL = "https://api.smooth.sh/api/v1"
DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_PAGE_SIZE = 32
MAX_PAGE_SIZE = 128
DEFAULT_BACKFILL_PAGE_SIZE = MAX_PAGE_SIZE
#: How far below the newest known ``created_at`` discovery re-reads, so that tasks the API
#: lists a little late are still found.
DEFAULT_DISCOVERY_OVERLAP_S = 600.0
#: Largest API response body accepted; a bigger one fails that request only.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_RETRY_ATTEMPTS = 5

ENV_API_KEY = "CIRCLEMIND_API_KEY"
ENV_API_URL = "ARCHIVER_API_URL"
ENV_DATABASE_URL = "ARCHIVER_DATABASE_URL"
ENV_HOME = "ARCHIVER_HOME"

APP_NAME = "smooth-archiver"
DATABASE_FILENAME = "archive.db"


class ApiKey:
    """The Smooth API key. Its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that needs it: the ``apikey`` header."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``ARCHIVER_HOME``, or the per-user data directory of this platform."""
    env = os.environ if environ is None else environ
    if env.get(ENV_HOME):
        return Path(env[ENV_HOME]).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """``ARCHIVER_DATABASE_URL``, or a SQLite file inside the archiver's home."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DATABASE_URL):
        return env[ENV_DATABASE_URL]
    return f"sqlite:///{default_home(env) / DATABASE_FILENAME}"


def api_key_from_env(environ: Mapping[str, str] | None = None) -> ApiKey:
    """The API key from ``CIRCLEMIND_API_KEY``; a ConfigError if it is missing or blank."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_API_KEY, "").strip()
    if not value:
        raise ConfigError(
            f"{ENV_API_KEY} is not set: export your Smooth API key in {ENV_API_KEY} "
            "(keys are never accepted on the command line)."
        )
    return ApiKey(value)


def validate_api_url(url: str) -> str:
    """The API base URL without a trailing slash; a ConfigError unless it is http(s)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"API URL {url!r} is not an http:// or https:// URL: "
            f"set --api-url or {ENV_API_URL}, e.g. {DEFAULT_API_URL}."
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    """How the API client talks to Smooth."""

    api_url: str = DEFAULT_API_URL
    api_key: ApiKey = field(default_factory=lambda: ApiKey(""))
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_connections: int = DEFAULT_CONCURRENCY
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS


@dataclass(frozen=True)
class SyncOptions:
    """What one ``sync`` or ``backfill`` pass does."""

    concurrency: int = DEFAULT_CONCURRENCY
    discover: bool = True
    task_ids: tuple[str, ...] = ()
    max_runtime_s: float | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    discovery_overlap_s: float = DEFAULT_DISCOVERY_OVERLAP_S

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(
                f"--concurrency {self.concurrency} is not a positive integer: use 1 or more "
                f"(default {DEFAULT_CONCURRENCY})."
            )
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError(
                f"page size {self.page_size} is outside 1..{MAX_PAGE_SIZE}, "
                "the range List Tasks accepts."
            )
        if self.max_runtime_s is not None and self.max_runtime_s <= 0:
            raise ConfigError(
                f"--max-runtime {self.max_runtime_s} is not a positive number of seconds."
            )
