"""Raw API timestamps to UTC: the README's seconds-or-milliseconds rule, exactly."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from archiver.store.schema import task_events
from archiver.timestamps import is_milliseconds, seconds_in_unit_of, sqlite_utc_text, to_utc


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1764000000, datetime(2025, 11, 24, 16, 0, 0, tzinfo=UTC)),
        (1764000000123, datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)),
        (1764000000999, datetime(2025, 11, 24, 16, 0, 0, 999000, tzinfo=UTC)),
        (-1764000000123, datetime(1914, 2, 7, 7, 59, 59, 877000, tzinfo=UTC)),
        (-7, datetime(1969, 12, 31, 23, 59, 53, tzinfo=UTC)),
        (10**11 - 1, datetime(5138, 11, 16, 9, 46, 39, tzinfo=UTC)),
        (10**11, datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)),
    ],
)
def test_seconds_and_milliseconds_convert_exactly(raw: int, expected: datetime) -> None:
    """abs(v) >= 10**11 is milliseconds, else seconds; milliseconds are kept exactly."""
    assert to_utc(raw) == expected


@pytest.mark.parametrize("raw", [None, True, 10**18 * 1000, -(10**17)])
def test_absent_or_absurd_values_have_no_utc(raw: int | None) -> None:
    """None, booleans and values beyond years 1..9999 give no UTC datetime."""
    assert to_utc(raw) is None


def test_durations_follow_the_unit_of_a_reference_value() -> None:
    """An overlap in seconds is expressed in the unit the API uses for created_at."""
    assert is_milliseconds(1764000000000) and not is_milliseconds(1764000000)
    assert seconds_in_unit_of(1764000000000, 600) == 600_000
    assert seconds_in_unit_of(1764000000, 600) == 600


#: The edges of the unit rule and of the accepted range, in both units.
EDGES = [
    0, -1, 1, 999, -999, 1000, -1000, 10**11 - 1, 10**11, -(10**11) + 1, -(10**11),
    -62135510400, -62135510399, 253402214400, 253402214399,
    -62135510400000, -62135510399999, 253402214400000, 253402214399999,
    2**63 - 1, -(2**63), 1764000000123, -1764000000123, -1764000000999, -1764000000001,
]  # fmt: skip


def sqlalchemy_stores(raw: int | None) -> str | None:
    """What SQLAlchemy's column type binds on SQLite for ``to_utc(raw)`` (the reference)."""
    dialect = sqlite.dialect()
    process = task_events.c.timestamp_utc.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    value = to_utc(raw)
    return None if value is None else process(value)  # type: ignore[no-any-return]


@settings(max_examples=500, deadline=None)
@example(raw=None)
@given(raw=st.integers(-(2**63), 2**63 - 1) | st.sampled_from(EDGES))
def test_sqlite_computes_the_stored_utc_text_exactly_as_python(raw: int | None) -> None:
    """SQLite's own conversion (used by the event insert) stores exactly the text that
    to_utc and SQLAlchemy's DateTime would: unit rule, bounds, times before 1970."""
    with sqlite3.connect(":memory:") as conn:
        (stored,) = conn.execute(f"SELECT {sqlite_utc_text('?1')}", (raw,)).fetchone()
    assert stored == sqlalchemy_stores(raw)
