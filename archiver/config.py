"""Settings for a run, read from flags and environment variables (a flag wins).

Small frozen value objects with ``DEFAULT_*`` constants, in the manner of httpx's config.
The API key is wrapped in :class:`ApiKey` so that printing a settings object, a traceback
or a log record can never show it.

Three kinds of value object:

* ``*Settings`` (:class:`ApiSettings`, :class:`SettleSettings`, :class:`ArtifactSettings`,
  :class:`LogSettings`, :class:`MetricsSettings`, :class:`DatabaseSettings`,
  :class:`MaskSettings`): what one
  shared option group of the CLI says, built by its ``from_cli`` from the raw option
  values. Building one never fails: values are checked where they are used, in the order
  the commands always checked them.
* :class:`SyncOptions`: what one ``sync`` or ``backfill`` pass does (validated), built
  once by the CLI with :meth:`SyncOptions.from_cli`.
* ``*Config`` (:class:`ClientConfig`, :class:`ArtifactConfig`): what one component (the API
  client, the artifact settler and fetcher) is built with.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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
DEFAULT_TOTAL_TIMEOUT_S = 120.0
DEFAULT_CIRCUIT_BREAKER_FAILURES = 10
#: First back-off after a failed poll of a task; doubles with each failure in a row.
DEFAULT_ERROR_BACKOFF_S = 60.0
#: A terminal task read on one pass is finalized by a confirming read on a later pass at
#: least this long after (0: the next pass), when it is fresh (see fresh_within).
DEFAULT_CONFIRM_AFTER_S = 0.0
#: A task created within this long (or seen active by the archiver) is fresh: its fields
#: may still settle, so its terminal read is confirmed before it is finalized.
DEFAULT_FRESH_WITHIN_S = 3600.0
ENV_CONFIRM_AFTER = "ARCHIVER_CONFIRM_AFTER"
ENV_FRESH_WITHIN = "ARCHIVER_FRESH_WITHIN"

# Artifacts (--downloads): recordings and downloads archives copied into blob storage.
DEFAULT_DOWNLOADS = False
#: Blob storage root inside ARCHIVER_HOME when --blob-url is not given.
DEFAULT_BLOB_DIRNAME = "blobs"
#: How long a finished task's artifact link may stay null before it is recorded as failed.
DEFAULT_ARTIFACT_GRACE_S = 6 * 3600.0
#: Largest artifact stored; enforced while streaming.
DEFAULT_MAX_ARTIFACT_BYTES = 5 * 1024**3
#: Fresh links asked of Get Task per artifact and pass when the host refuses one (403/404/410).
DEFAULT_ARTIFACT_LINK_REFRESHES = 2
#: Fetch attempts (over all passes) before a failing artifact is recorded as failed.
DEFAULT_ARTIFACT_MAX_ATTEMPTS = 12
#: Wait before retrying a failed artifact fetch; doubles per attempt, up to the cap.
DEFAULT_ARTIFACT_RETRY_BACKOFF_S = 60.0
ARTIFACT_RETRY_BACKOFF_CAP_S = 3600.0
ENV_DOWNLOADS = "ARCHIVER_DOWNLOADS"
ENV_BLOB_URL = "ARCHIVER_BLOB_URL"
ENV_ARTIFACT_GRACE = "ARCHIVER_ARTIFACT_GRACE"
ENV_MAX_ARTIFACT_SIZE = "ARCHIVER_MAX_ARTIFACT_SIZE"

ENV_API_KEY = "CIRCLEMIND_API_KEY"
ENV_API_URL = "ARCHIVER_API_URL"
ENV_DATABASE_URL = "ARCHIVER_DATABASE_URL"
ENV_HOME = "ARCHIVER_HOME"
ENV_RATE_LIMIT = "ARCHIVER_RATE_LIMIT"
ENV_LOG_FORMAT = "ARCHIVER_LOG_FORMAT"
ENV_METRICS_FILE = "ARCHIVER_METRICS_FILE"
#: ``--mask-rules``: the masking rules file (archiver.masking); unset, nothing is masked.
ENV_MASK_RULES = "ARCHIVER_MASK_RULES"
#: The key of ``replace = "hash"`` rules (HMAC-SHA256); never on a command line.
ENV_MASK_KEY = "ARCHIVER_MASK_KEY"
#: ``--wait-lock``: by default a run exits 75 at once when another run holds the lock.
DEFAULT_WAIT_LOCK_S = 0.0

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
    """The API base URL without a trailing slash; a ConfigError unless it is http(s) with
    no query string or fragment (request paths and parameters are added to it)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"API URL {url!r} is not an http:// or https:// URL: "
            f"set --api-url or {ENV_API_URL}, e.g. {DEFAULT_API_URL}."
        )
    if "?" in url or "#" in url:
        raise ConfigError(
            f"API URL {url!r} has a query string or fragment, which the archiver cannot "
            f"keep (it adds paths and parameters): set --api-url or {ENV_API_URL} to the "
            f"base URL alone, e.g. {DEFAULT_API_URL}."
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class ClientConfig:
    """How the API client talks to Smooth."""

    api_url: str = DEFAULT_API_URL
    api_key: ApiKey = field(default_factory=lambda: ApiKey(""))
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: Get Task requests in flight at once (``--concurrency``); List Tasks has a
    #: connection of its own on top.
    task_requests: int = DEFAULT_CONCURRENCY
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    #: Whole-request deadline (connect + wait + body), on top of connect/read timeouts.
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S
    #: Requests per second across all concurrent requests; None = unlimited.
    rate_limit: float | None = None
    #: After this many failed requests in a row the pass stops (circuit breaker).
    circuit_breaker_failures: int = DEFAULT_CIRCUIT_BREAKER_FAILURES

    def __post_init__(self) -> None:
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError(
                f"--rate-limit {self.rate_limit} is not a positive number of requests per "
                f"second: use e.g. 10, or leave it unset for no limit (env {ENV_RATE_LIMIT})."
            )
        if self.circuit_breaker_failures < 1:
            raise ConfigError(
                f"circuit breaker threshold {self.circuit_breaker_failures} must be 1 or more "
                f"(default {DEFAULT_CIRCUIT_BREAKER_FAILURES})."
            )


# --- the CLI's shared option groups, one value object each ------------------------------


@dataclass(frozen=True)
class ApiSettings:
    """``--api-url``, ``--concurrency``, ``--rate-limit``, ``--wait-lock``."""

    api_url: str = DEFAULT_API_URL
    concurrency: int = DEFAULT_CONCURRENCY
    #: Requests per second across all concurrent requests; None = unlimited.
    rate_limit: float | None = None
    wait_lock_s: float = DEFAULT_WAIT_LOCK_S

    @classmethod
    def from_cli(
        cls, *, api_url: str, concurrency: int, rate_limit: float | None, wait_lock: float
    ) -> ApiSettings:
        return cls(
            api_url=api_url, concurrency=concurrency, rate_limit=rate_limit, wait_lock_s=wait_lock
        )

    def client_config(self) -> ClientConfig:
        """The API client's config: the URL checked, the key read from the environment
        (ConfigError if either is wrong)."""
        return ClientConfig(
            api_url=validate_api_url(self.api_url),
            api_key=api_key_from_env(),
            task_requests=self.concurrency,
            rate_limit=self.rate_limit,
        )


@dataclass(frozen=True)
class SettleSettings:
    """``--confirm-after``, ``--fresh-within``: when a terminal task is final."""

    confirm_after_s: float = DEFAULT_CONFIRM_AFTER_S
    fresh_within_s: float = DEFAULT_FRESH_WITHIN_S

    @classmethod
    def from_cli(cls, *, confirm_after: float, fresh_within: float) -> SettleSettings:
        return cls(confirm_after_s=confirm_after, fresh_within_s=fresh_within)


@dataclass(frozen=True)
class ArtifactSettings:
    """``--downloads``, ``--blob-url``, ``--artifact-grace``, ``--max-artifact-size``."""

    downloads: bool = DEFAULT_DOWNLOADS
    #: None: :func:`default_blob_url`.
    blob_url: str | None = None
    grace_s: float = DEFAULT_ARTIFACT_GRACE_S
    max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES

    @classmethod
    def from_cli(
        cls, *, downloads: bool, blob_url: str | None, artifact_grace: float, max_artifact_size: int
    ) -> ArtifactSettings:
        return cls(
            downloads=downloads,
            blob_url=blob_url or None,
            grace_s=artifact_grace,
            max_bytes=max_artifact_size,
        )


@dataclass(frozen=True)
class LogSettings:
    """``-q``, ``-v``, ``--log-format`` (see :func:`archiver.logs.setup_logging`)."""

    verbose: int
    quiet: bool
    log_format: str

    @classmethod
    def from_cli(cls, *, verbose: int, quiet: bool, log_format: str) -> LogSettings:
        return cls(verbose=verbose, quiet=quiet, log_format=log_format)


@dataclass(frozen=True)
class MetricsSettings:
    """``--metrics-file``: where a pass writes its Prometheus metrics, if anywhere."""

    file: str | None = None

    @classmethod
    def from_cli(cls, *, metrics_file: str | None) -> MetricsSettings:
        return cls(file=metrics_file or None)


@dataclass(frozen=True)
class MaskSettings:
    """``--mask-rules``: the rules file whose rules mask what the API sends before it is
    stored (read and checked by :func:`archiver.masking.load_masker`), or None."""

    rules_path: str | None = None

    @classmethod
    def from_cli(cls, *, mask_rules: str | None) -> MaskSettings:
        return cls(rules_path=mask_rules or None)


@dataclass(frozen=True)
class DatabaseSettings:
    """``--database-url``, or :func:`default_database_url` without it."""

    url: str

    @classmethod
    def from_cli(cls, *, database_url: str | None) -> DatabaseSettings:
        return cls(url=database_url or default_database_url())


# --- what a pass does --------------------------------------------------------------------


@dataclass(frozen=True)
class SyncOptions:
    """What one ``sync`` or ``backfill`` pass does."""

    concurrency: int = DEFAULT_CONCURRENCY
    discover: bool = True
    task_ids: tuple[str, ...] = ()
    #: ``sync --recheck-gone``: ask the API again about every task recorded as gone.
    recheck_gone: bool = False
    max_runtime_s: float | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    discovery_overlap_s: float = DEFAULT_DISCOVERY_OVERLAP_S
    #: Back-off before a failed task is polled again (doubles per failure, capped at 1 h).
    error_backoff_s: float = DEFAULT_ERROR_BACKOFF_S
    confirm_after_s: float = DEFAULT_CONFIRM_AFTER_S
    fresh_within_s: float = DEFAULT_FRESH_WITHIN_S
    # Artifacts (see archiver.artifacts); blob_url None means default_blob_url().
    downloads: bool = DEFAULT_DOWNLOADS
    blob_url: str | None = None
    artifact_grace_s: float = DEFAULT_ARTIFACT_GRACE_S
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    artifact_link_refreshes: int = DEFAULT_ARTIFACT_LINK_REFRESHES
    artifact_max_attempts: int = DEFAULT_ARTIFACT_MAX_ATTEMPTS
    artifact_retry_backoff_s: float = DEFAULT_ARTIFACT_RETRY_BACKOFF_S

    def __post_init__(self) -> None:
        problem = _artifact_option_problem(self) or _pass_option_problem(self)
        if problem is not None:
            raise ConfigError(problem)

    @classmethod
    def from_cli(
        cls,
        api: ApiSettings,
        settle: SettleSettings,
        artifacts: ArtifactSettings,
        *,
        task_ids: tuple[str, ...] = (),
        discover: bool = True,
        recheck_gone: bool = False,
        max_runtime_s: float | None = None,
    ) -> SyncOptions:
        """A pass's options from the CLI's option groups and the command's own flags."""
        return cls(
            concurrency=api.concurrency,
            discover=discover,
            task_ids=task_ids,
            recheck_gone=recheck_gone,
            max_runtime_s=max_runtime_s,
            confirm_after_s=settle.confirm_after_s,
            fresh_within_s=settle.fresh_within_s,
            downloads=artifacts.downloads,
            blob_url=artifacts.blob_url,
            artifact_grace_s=artifacts.grace_s,
            max_artifact_bytes=artifacts.max_bytes,
        )


def _artifact_option_problem(options: SyncOptions) -> str | None:
    """What is wrong with the artifact fields of ``options``, if anything."""
    if options.artifact_grace_s < 0:
        return (
            f"--artifact-grace {options.artifact_grace_s} is negative: use 0 or more seconds "
            f"(default {format_duration(DEFAULT_ARTIFACT_GRACE_S)})."
        )
    if options.max_artifact_bytes < 1:
        return (
            f"--max-artifact-size {options.max_artifact_bytes} is not a positive size "
            f"(default {format_size(DEFAULT_MAX_ARTIFACT_BYTES)})."
        )
    if options.artifact_link_refreshes < 0 or options.artifact_max_attempts < 1:
        return (
            f"artifact link refreshes {options.artifact_link_refreshes} / max attempts "
            f"{options.artifact_max_attempts}: expected 0 or more / 1 or more."
        )
    return None


def _pass_option_problem(options: SyncOptions) -> str | None:
    """What is wrong with the other fields of ``options``, if anything."""
    if options.concurrency < 1:
        return (
            f"--concurrency {options.concurrency} is not a positive integer: use 1 or more "
            f"(default {DEFAULT_CONCURRENCY})."
        )
    if not 1 <= options.page_size <= MAX_PAGE_SIZE:
        return (
            f"page size {options.page_size} is outside 1..{MAX_PAGE_SIZE}, "
            "the range List Tasks accepts."
        )
    if options.max_runtime_s is not None and options.max_runtime_s <= 0:
        return f"--max-runtime {options.max_runtime_s} is not a positive number of seconds."
    return None


@dataclass(frozen=True)
class ArtifactConfig:
    """What the artifact settler and fetcher (:mod:`archiver.artifacts`) work with: the
    pass's artifact options and the HTTP limits of its API client, in one value."""

    #: None: :func:`default_blob_url`.
    blob_url: str | None = None
    grace_s: float = DEFAULT_ARTIFACT_GRACE_S
    max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    link_refreshes: int = DEFAULT_ARTIFACT_LINK_REFRESHES
    max_attempts: int = DEFAULT_ARTIFACT_MAX_ATTEMPTS
    retry_backoff_s: float = DEFAULT_ARTIFACT_RETRY_BACKOFF_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_connections: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_options(cls, options: SyncOptions, client: ClientConfig) -> ArtifactConfig:
        """The artifact config of a pass with ``options`` whose API client has ``client``
        (artifact transfers use the same timeouts and connection limit)."""
        return cls(
            blob_url=options.blob_url,
            grace_s=options.artifact_grace_s,
            max_bytes=options.max_artifact_bytes,
            link_refreshes=options.artifact_link_refreshes,
            max_attempts=options.artifact_max_attempts,
            retry_backoff_s=options.artifact_retry_backoff_s,
            timeout_s=client.timeout_s,
            connect_timeout_s=client.connect_timeout_s,
            max_connections=client.task_requests,
        )


# --- artifacts: blob root, sizes and durations ------------------------------------------

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_DURATION_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip


def backoff_after(failures: int, *, first_s: float, after: int, cap_s: float) -> timedelta | None:
    """How long something that failed ``failures`` times in a row is held back: not at all
    before its ``after``-th failure (a transient fault must not cost a pass), then
    ``first_s``, doubling with each further failure, up to ``cap_s``."""
    held = failures - after
    if held < 0:
        return None
    return timedelta(seconds=min(first_s * 2 ** min(held, 32), max(first_s, cap_s)))


def default_blob_url(environ: Mapping[str, str] | None = None) -> str:
    """``ARCHIVER_BLOB_URL``, or the ``blobs`` folder inside the archiver's home."""
    env = os.environ if environ is None else environ
    if env.get(ENV_BLOB_URL):
        return env[ENV_BLOB_URL]
    return str(default_home(env) / DEFAULT_BLOB_DIRNAME)


def _amount_and_unit(value: str) -> tuple[float, str]:
    """``"6 h"`` -> ``(6.0, "h")``; an unreadable number comes back as -1 (invalid)."""
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        return float(number), text[len(number) :]
    except ValueError:
        return -1.0, text[len(number) :]


def parse_byte_size(value: str, *, option: str = "--max-artifact-size") -> int:
    """``5GiB``, ``500MB``, ``1048576`` as a number of bytes; ConfigError otherwise."""
    amount, unit = _amount_and_unit(value)
    if unit not in _SIZE_UNITS or not amount > 0 or amount != amount:
        raise ConfigError(
            f"{option} {value!r} is not a size: use a positive number of bytes or a number "
            "with a unit (KB, MB, GB, TB or KiB, MiB, GiB, TiB), e.g. 5GiB or 500MB."
        )
    return int(amount * _SIZE_UNITS[unit])


def parse_seconds(value: str, *, option: str = "--artifact-grace", positive: bool = False) -> float:
    """``21600``, ``90s``, ``15m``, ``6h``, ``2d`` as seconds; ConfigError otherwise.

    0 is allowed unless ``positive``."""
    amount, unit = _amount_and_unit(value)
    if unit not in _DURATION_UNITS or not amount >= 0 or amount == float("inf"):
        raise ConfigError(
            f"{option} {value!r} is not a duration: use a number of seconds or a number with "
            "a unit s, m, h or d, e.g. 3600, 90m, 6h, 2d."
        )
    if positive and amount == 0:
        raise ConfigError(
            f"{option} {value!r} is not a positive duration: use a number of seconds or a "
            "number with a unit s, m, h or d, e.g. 900, 15m, 2h, 1d."
        )
    return amount * _DURATION_UNITS[unit]


#: The longest max age (``status --max-age``, ``serve --max-age``, ``?max_age=``): far
#: beyond any use, and within what dates can be reckoned with.
MAX_AGE_DAYS = 36_500


def parse_max_age(value: str, *, option: str) -> float:
    """A positive duration (:func:`parse_seconds`) of at most MAX_AGE_DAYS, in seconds."""
    seconds = parse_seconds(value, option=option, positive=True)
    if seconds > MAX_AGE_DAYS * 86_400:
        raise ConfigError(
            f"{option} {value!r} is longer than {MAX_AGE_DAYS:,} days: use a shorter "
            "duration, e.g. 1h or 2d."
        )
    return seconds


def parse_count(value: str, *, option: str) -> int:
    """A positive whole number (``--concurrency 8``); ConfigError otherwise."""
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{option} {value!r} is not a positive whole number: use 1 or more.")
    return int(text)


def parse_rate(value: str, *, option: str = "--rate-limit") -> float:
    """A positive number of requests per second; ConfigError otherwise."""
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 < rate < float("inf"):
        raise ConfigError(
            f"{option} {value!r} is not a positive number of requests per second: use e.g. "
            f"10 or 0.5, or leave it unset for no limit (env {ENV_RATE_LIMIT})."
        )
    return rate


def parse_day(value: str | None, *, option: str) -> date | None:
    """A UTC calendar date given as YYYY-MM-DD; ConfigError naming the option otherwise."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not a date: use YYYY-MM-DD (a UTC day, inclusive), "
            "e.g. 2026-01-31."
        ) from None


def parse_since(value: str | None, *, option: str = "--since") -> datetime | None:
    """A date or ISO 8601 timestamp, UTC unless it says otherwise; ConfigError otherwise."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not a date: use YYYY-MM-DD or an ISO 8601 timestamp "
            "such as 2026-01-31T12:00:00Z."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_created_at(value: str, *, option: str) -> int:
    """A raw ``created_at`` as the API sends it and ``status`` shows it (an integer)."""
    text = value.strip()
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not a created_at: give the integer that `archiver status` "
            "shows for the group, e.g. 1764000000."
        ) from None


def format_size(size: int) -> str:
    """``5 GiB``, ``12.3 MiB``, ``512 B``: binary units, for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            exact = unit == "B" or value == int(value)
            return f"{value:.0f} {unit}" if exact else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB" if value != int(value) else f"{value:.0f} TiB"


def format_duration(seconds: float) -> str:
    """``45 s``, ``90 min``, ``6 h``, ``2.5 d``: for messages."""
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 3 * 3600:
        return f"{round(seconds / 60, 1):g} min"
    if seconds < 3 * 86400:
        return f"{round(seconds / 3600, 1):g} h"
    return f"{round(seconds / 86400, 1):g} d"
