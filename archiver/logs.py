"""Logging: human-readable lines or JSON lines on stderr, with secrets redacted.

Two formats (``--log-format``):

* ``text`` (default): ``2026-01-31T12:00:00 INFO archiver.engine: message``.
* ``json``: one JSON object per line for log shippers, always with the keys ``time``
  (UTC, ISO 8601 with milliseconds and ``Z``), ``level``, ``event`` (the message),
  ``logger``, ``run_id`` and ``task_id`` (null when not about one run or task); the
  summary line of a pass adds ``summary: true``, ``command``, ``outcome``, ``duration_s``
  and ``counts``; progress lines add ``progress``; a logged exception adds ``exception``
  (an uncaught one, i.e. a bug, becomes a ``critical`` line rather than a bare traceback).

Verbosity: the default shows info lines (progress, the summary) and above; ``-q`` shows
only warnings, errors and the summary of the pass; ``-v`` adds one line per HTTP request
(method, URL without its query string, status) and the migrations applied; ``-vv`` adds
debug lines of every library.

The API key is never logged on purpose; :class:`RedactingFilter` is the second line of
defence, masking the key (and any other given secret) and the query string of every URL
(where presigned links keep their signature) in messages, tracebacks and extra fields,
whichever format is used.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from archiver.config import ENV_API_KEY, ENV_MASK_KEY
from archiver.escapes import visible
from archiver.redact import redact, redact_value
from archiver.stats import RunResult

LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_DATEFMT = "%Y-%m-%dT%H:%M:%S"

#: Level of the summary line by the pass's outcome (anything else: ERROR).
SUMMARY_LEVELS = {
    "ok": logging.INFO,
    "partial": logging.WARNING,
    "interrupted": logging.WARNING,
}
#: Record attributes a JSON line carries when a log call sets them (``extra=``).
_JSON_EXTRAS = ("summary", "command", "outcome", "duration_s", "counts", "progress")

log = logging.getLogger("archiver")

_run_id: str | None = None
_format: str | None = None  # the active format once setup_logging ran
#: ``--mask-rules``: what every log line and error line goes through (install_masking).
_mask: Callable[[str], str] | None = None


def set_run_id(run_id: str | None) -> None:
    """Tag every following log record with this run id (None: no run)."""
    global _run_id
    _run_id = run_id


def active_format() -> str | None:
    """The format set up by :func:`setup_logging`, or None before it ran."""
    return _format


class RedactingFilter(logging.Filter):
    """Masks the given secrets and any URL query string in messages, tracebacks and
    string-valued extra fields, before any formatter sees the record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # One record, one line: archived text in a message (a task id, an error body)
        # cannot forge a line or steer the terminal.
        cleaned = visible(redact(message, self.secrets))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for name in ("task_id", "run_id", *_JSON_EXTRAS):
            value = getattr(record, name, None)
            if value is not None:
                setattr(record, name, redact_value(value, self.secrets))
        return True


class MaskingFilter(logging.Filter):
    """``--mask-rules``: applies the masking rules to messages, tracebacks and string-valued
    extra fields of every record, whatever logger made it: a log line never holds what a
    rule masks, at any level."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if masked is not message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        for name in ("task_id", *_JSON_EXTRAS):
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.mask(value))
        return True


def install_masking(mask: Callable[[str], str]) -> None:
    """Mask every record the handlers of :func:`setup_logging` write, and every error
    line of :func:`fatal`, with ``mask`` (the rules of ``--mask-rules``)."""
    global _mask
    _mask = mask
    for handler in logging.getLogger().handlers:
        handler.filters.insert(0, MaskingFilter(mask))


class ContextFilter(logging.Filter):
    """Gives every record ``run_id`` (the current run's) and ``task_id`` attributes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            record.run_id = _run_id
        if not hasattr(record, "task_id"):
            record.task_id = None
        return True


class QuietFilter(logging.Filter):
    """``-q``: warnings, errors, the summary of the pass and notices (:func:`notice`) only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return bool(getattr(record, "summary", False) or getattr(record, "notice", False))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
            "run_id": getattr(record, "run_id", None),
            "task_id": getattr(record, "task_id", None),
        }
        for name in _JSON_EXTRAS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes around a progress bar on the same stream instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            # tqdm is imported only when a bar is shown (start-up time); without it
            # there is no bar to write around.
            tqdm = sys.modules.get("tqdm")
            if tqdm is None:
                self.stream.write(message + self.terminator)
                self.flush()
                return
            with tqdm.tqdm.external_write_mode(file=self.stream):
                self.stream.write(message + self.terminator)
                self.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``text`` or ``json`` lines."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT, TEXT_DATEFMT)
    from archiver.exceptions import ConfigError

    raise ConfigError(
        f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}: "
        "set --log-format or ARCHIVER_LOG_FORMAT to text (default) or json."
    )


def setup_logging(
    *,
    verbose: int = 0,
    quiet: bool = False,
    secrets: list[str] | None = None,
    log_format: str = DEFAULT_LOG_FORMAT,
) -> None:
    """Log to stderr in ``log_format``; -v adds per-request lines, -q keeps warnings and
    the summary only. The API key in the environment is always among the secrets."""
    global _format, _mask
    _mask = None  # until install_masking
    handler = _Handler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    own = [os.environ.get(ENV_API_KEY, ""), os.environ.get(ENV_MASK_KEY, "")]
    handler.addFilter(RedactingFilter([*(secrets or []), *own]))
    if quiet:
        handler.addFilter(QuietFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    # httpx logs every request (method, URL, status) at INFO: that is -v's detail.
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # psycopg warns once per aborted pipeline ("error ignored terminating ...") after a
    # failed executemany: noise beside the error that is raised and reported (-vv shows it).
    logging.getLogger("psycopg").setLevel(logging.DEBUG if verbose > 1 else logging.ERROR)
    # -v also says which migrations ran (an upgrade is otherwise silent).
    migration = logging.INFO if verbose else logging.WARNING
    logging.getLogger("alembic.runtime.migration").setLevel(migration)
    # A crash (a bug) would otherwise print a bare traceback between the JSON lines.
    if log_format == "json":
        sys.excepthook = _log_uncaught
    _format = log_format


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    log.critical("crashed: %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def log_summary(result: RunResult) -> None:
    """The one line that ends every pass: what it did, at a level matching its outcome."""
    counts = result.stats.as_dict()
    log.log(
        SUMMARY_LEVELS.get(result.outcome, logging.ERROR),
        "%s",
        result.summary(),
        extra={
            "summary": True,
            "run_id": result.run_id,
            "command": result.command,
            "outcome": result.outcome,
            "duration_s": round(result.duration_s, 3),
            "counts": counts,
        },
    )


def notice(message: str) -> None:
    """An info line shown even with ``-q``: something the operator must not miss that is
    not a problem (a new archive being created)."""
    log.info("%s", message, extra={"notice": True})


def fatal(message: str) -> None:
    """An error that ends the command: a JSON line in json format, else
    ``archiver: error: ...`` on stderr (also before logging is set up)."""
    if _mask is not None:
        message = _mask(message)
    if _format == "json":
        log.error("%s", message)
        return
    secrets = [os.environ.get(ENV_API_KEY, "")]
    sys.stderr.write(f"archiver: error: {visible(redact(message, secrets))}\n")
    sys.stderr.flush()
