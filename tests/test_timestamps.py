"""Raw API timestamps to UTC: the README's seconds-or-milliseconds rule, exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archiver.timestamps import is_milliseconds, seconds_in_unit_of, to_utc


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
