"""The query parameters of `archiver serve`'s pages, checked: a value a page cannot use
raises :class:`BadRequest`, which the application answers with 400 and the message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

from starlette.requests import Request

from archiver import config as cfg
from archiver import metrics as health_metrics
from archiver.exceptions import ArchiverError, ConfigError
from archiver.web.site import site_of


class BadRequest(ArchiverError):
    """A query parameter the page cannot use; answered 400 with the message."""


@contextmanager
def config_errors_are_bad_requests() -> Iterator[None]:
    """A ConfigError raised inside (a value the user typed) becomes a BadRequest."""
    try:
        yield
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


def day(value: str | None, name: str) -> date | None:
    with config_errors_are_bad_requests():
        return cfg.parse_day(value or None, option=name)


def isoday(value: date | None) -> str:
    """A day as the form shows it: ``YYYY-MM-DD``, or empty."""
    return value.isoformat() if value else ""


def choice(value: str | None, allowed: tuple[str, ...], name: str, default: str) -> str:
    if not value:
        return default
    if value not in allowed:
        raise BadRequest(f"{name} {value!r} is not valid: use one of {', '.join(allowed)}.")
    return value


def max_age(request: Request) -> timedelta:
    """``?max_age=`` of the health pages, or ``serve --max-age``."""
    value = request.query_params.get("max_age")
    if not value:
        return site_of(request).settings.max_age
    with config_errors_are_bad_requests():
        return health_metrics.parse_duration(value, option="max_age")
