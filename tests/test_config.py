"""Settings helpers (archiver.config): artifact sizes and durations."""

from __future__ import annotations

import pytest

from archiver.config import (
    DEFAULT_ARTIFACT_GRACE_S,
    DEFAULT_MAX_ARTIFACT_BYTES,
    SyncOptions,
    format_duration,
    format_size,
    parse_byte_size,
    parse_seconds,
    validate_api_url,
)
from archiver.exceptions import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5GiB", 5 * 1024**3), ("500MB", 500 * 10**6), ("1048576", 1048576), ("1.5 KiB", 1536)],
)
def test_sizes_parse_with_decimal_and_binary_units(text: str, expected: int) -> None:
    """--max-artifact-size accepts bytes, KB/MB/GB and KiB/MiB/GiB."""
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("6h", 21600), ("90min", 5400), ("0", 0)])
def test_durations_parse_with_units(text: str, expected: float) -> None:
    """--artifact-grace accepts seconds or s/m/min/h/d units, and 0."""
    assert parse_seconds(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1", "5 parsecs", "nan"])
def test_bad_sizes_and_durations_are_config_errors(text: str) -> None:
    """Unparseable values raise ConfigError naming the option and examples."""
    with pytest.raises(ConfigError, match="--max-artifact-size"):
        parse_byte_size(text)
    with pytest.raises(ConfigError, match="--artifact-grace"):
        parse_seconds(text)


def test_defaults_round_trip_through_their_display() -> None:
    """The defaults shown in --help parse back to themselves."""
    assert parse_byte_size(format_size(DEFAULT_MAX_ARTIFACT_BYTES)) == DEFAULT_MAX_ARTIFACT_BYTES
    assert parse_seconds(format_duration(DEFAULT_ARTIFACT_GRACE_S)) == DEFAULT_ARTIFACT_GRACE_S
    assert parse_seconds(format_duration(5400)) == 5400


def test_artifact_options_are_validated() -> None:
    """A negative grace period or a zero size limit is refused up front."""
    with pytest.raises(ConfigError, match="--artifact-grace"):
        SyncOptions(artifact_grace_s=-1)
    with pytest.raises(ConfigError, match="--max-artifact-size"):
        SyncOptions(max_artifact_bytes=0)


def test_backoff_starts_after_the_given_failure_and_doubles_to_the_cap() -> None:
    """No hold before the ``after``-th failure in a row, then first_s doubling, capped."""
    from datetime import timedelta

    from archiver.config import backoff_after

    waits = [backoff_after(n, first_s=60, after=3, cap_s=3600) for n in range(1, 10)]
    assert waits[:2] == [None, None]
    assert waits[2:] == [timedelta(seconds=s) for s in (60, 120, 240, 480, 960, 1920, 3600)]
    assert backoff_after(1, first_s=7200, after=1, cap_s=3600) == timedelta(seconds=7200)


@pytest.mark.parametrize("url", ["https://api.test/api/v1?token=x", "https://api.test/api/v1#top"])
def test_an_api_url_with_a_query_or_fragment_is_refused_by_name(url: str) -> None:
    """Paths and parameters are added to the API URL, so it must be a bare base URL."""
    with pytest.raises(ConfigError, match="query string or fragment") as info:
        validate_api_url(url)
    assert url in str(info.value)
