"""The query parameters of `archiver serve`'s pages, checked: a value a page cannot use
raises :class:`BadRequest`, which the application answers with 400 and the message.

Every value is read through :func:`text`, which caps its length and refuses NUL, so no
input reaches SQL, a parser or a pattern matcher at a size or with a character it was not
meant to take (other control characters are kept: archived ids and devices hold them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta

from starlette.requests import Request

from archiver import config as cfg
from archiver import metrics as health_metrics
from archiver.exceptions import ArchiverError, ConfigError
from archiver.web.site import site_of

#: The longest value a query parameter may have, unless :data:`MAX_CHARS_OF` says otherwise.
MAX_CHARS = 2_000
#: ``q`` is a substring pattern (LIKE); a page link (``after``) holds a task id and more.
MAX_CHARS_OF = {"q": 500, "after": 4_000, "events_after": 200}
#: PostgreSQL's text cannot hold NUL, so no archived value has one.
_NUL = "\x00"


class BadRequest(ArchiverError):
    """A query parameter the page cannot use; answered 400 with the message."""


def text(request: Request, name: str) -> str | None:
    """The query parameter ``name`` (None when absent or empty); BadRequest when it is
    longer than its cap or holds NUL."""
    value = request.query_params.get(name)
    if not value:
        return None
    limit = MAX_CHARS_OF.get(name, MAX_CHARS)
    if len(value) > limit:
        raise BadRequest(
            f"{name} is {len(value):,} characters long; at most {limit:,} are read: shorten it."
        )
    if _NUL in value:
        raise BadRequest(f"{name} holds NUL (\\x00), which this view does not take: remove it.")
    return value


@contextmanager
def config_errors_are_bad_requests() -> Iterator[None]:
    """A ConfigError raised inside (a value the user typed) becomes a BadRequest."""
    try:
        yield
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


def day(request: Request, name: str) -> date | None:
    with config_errors_are_bad_requests():
        value = cfg.parse_day(text(request, name), option=name)
    if value == date.max:  # a range reckons with the day after its last
        raise BadRequest(
            f"{name} {value} is the last day a date can name: leave {name} empty for no limit."
        )
    return value


def isoday(value: date | None) -> str:
    """A day as the form shows it: ``YYYY-MM-DD``, or empty."""
    return value.isoformat() if value else ""


def choice(request: Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = text(request, name)
    if not value:
        return default
    if value not in allowed:
        raise BadRequest(f"{name} {value!r} is not valid: use one of {', '.join(allowed)}.")
    return value


def max_age(request: Request) -> timedelta:
    """``?max_age=`` of the health pages, or ``serve --max-age``."""
    value = text(request, "max_age")
    if not value:
        return site_of(request).settings.max_age
    with config_errors_are_bad_requests():
        return health_metrics.parse_duration(value, option="max_age")
