"""Turning the API's unit-less integer timestamps into UTC datetimes.

The Smooth API sends integers without saying whether they are seconds or milliseconds
(its docs use both). The rule, from ../shared/smooth-api/README.md: ``abs(v) >= 10**11``
means milliseconds, otherwise seconds. 10**11 seconds is the year 5138, and 10**11
milliseconds is March 1973, so no real value is ambiguous.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import overload

MILLISECONDS_THRESHOLD = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# datetime covers years 1..9999 (not symmetric around 1970); beyond that, with a day's
# margin for time zones, a value is absurd and gets no UTC column.
_MIN_SECONDS = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds()
_MAX_SECONDS = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH).total_seconds()
_MIN_MILLISECONDS = _MIN_SECONDS * 1000
_MAX_MILLISECONDS = _MAX_SECONDS * 1000


def is_milliseconds(value: int) -> bool:
    """Whether a raw API timestamp is in milliseconds (by the README's rule)."""
    return abs(value) >= MILLISECONDS_THRESHOLD


def to_seconds(value: int) -> float:
    """A raw API timestamp as (fractional) epoch seconds."""
    return value / 1000 if is_milliseconds(value) else float(value)


def since_epoch(value: int | None) -> timedelta | None:
    """A raw API timestamp as the time since the Unix epoch; None for None or an absurd
    value (the one place in Python that applies the unit rule to a whole value;
    :func:`sqlite_utc_text` is the same rule in SQLite's SQL, tested against it)."""
    if value is None or isinstance(value, bool):
        return None
    # Called for every event: the unit rule is inlined, and integer arguments keep
    # milliseconds exact in timedelta's C constructor (no float rounding).
    if abs(value) >= MILLISECONDS_THRESHOLD:
        if not _MIN_MILLISECONDS < value < _MAX_MILLISECONDS:
            return None
        return timedelta(milliseconds=value)
    if not _MIN_SECONDS < value < _MAX_SECONDS:
        return None
    return timedelta(seconds=value)


def to_utc(value: int | None) -> datetime | None:
    """A raw API timestamp as an aware UTC datetime; None for None or an absurd value."""
    delta = since_epoch(value)
    return None if delta is None else _EPOCH + delta


def sqlite_utc_text(param: str) -> str:
    """SQLite SQL giving what SQLAlchemy's SQLite DateTime stores for ``to_utc(param)``
    ("YYYY-MM-DD HH:MM:SS.ffffff", NULL for None or an absurd value), ``param`` being a
    raw API timestamp: the same unit rule and bounds, in integer arithmetic (floor
    division and modulo for times before 1970; no abs(), which overflows on -2**63).
    tests/test_timestamps.py checks it agrees with to_utc over the whole BIGINT range."""
    p = param
    floor_ms = f"((({p} % 1000) + 1000) % 1000)"
    return (
        f"CASE WHEN {p} IS NULL THEN NULL "
        f"WHEN {p} >= {MILLISECONDS_THRESHOLD} OR {p} <= -{MILLISECONDS_THRESHOLD} THEN CASE "
        f"WHEN {p} > {int(_MIN_MILLISECONDS)} AND {p} < {int(_MAX_MILLISECONDS)} THEN "
        f"strftime('%Y-%m-%d %H:%M:%S', ({p} - {floor_ms}) / 1000, 'unixepoch') "
        f"|| printf('.%03d000', {floor_ms}) END "
        f"WHEN {p} > {int(_MIN_SECONDS)} AND {p} < {int(_MAX_SECONDS)} THEN "
        f"strftime('%Y-%m-%d %H:%M:%S', {p}, 'unixepoch') || '.000000' END"
    )


def seconds_in_unit_of(reference: int, seconds: float) -> int:
    """``seconds`` expressed in the unit that ``reference`` uses (s or ms)."""
    return int(seconds * 1000) if is_milliseconds(reference) else int(seconds)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite hands back naive ones, and every
    stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
