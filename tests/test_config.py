"""Settings helpers (archiver.config): artifact sizes and durations."""

from __future__ import annotations

import pytest

from archiver.config import (
    DEFAULT_ARTIFACT_GRACE_S,
    DEFAULT_MAX_ARTIFACT_BYTES,
    ApiSettings,
    ArtifactConfig,
    ArtifactSettings,
    ClientConfig,
    SettleSettings,
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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"artifact_grace_s": -1}, "--artifact-grace -1 is negative: use 0 or more seconds "
         "(default 6 h)."),
        ({"max_artifact_bytes": 0}, "--max-artifact-size 0 is not a positive size "
         "(default 5 GiB)."),
        ({"artifact_max_attempts": 0}, "artifact link refreshes 2 / max attempts 0: expected "
         "0 or more / 1 or more."),
        ({"concurrency": 0, "page_size": 0}, "--concurrency 0 is not a positive integer: use "
         "1 or more (default 8)."),
        ({"page_size": 129}, "page size 129 is outside 1..128, the range List Tasks accepts."),
        ({"max_runtime_s": 0}, "--max-runtime 0 is not a positive number of seconds."),
    ],
)  # fmt: skip
def test_sync_options_name_the_first_bad_value(fields: dict[str, float], message: str) -> None:
    """Each check of SyncOptions, in order, with its message exactly."""
    with pytest.raises(ConfigError) as info:
        SyncOptions(**fields)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_the_cli_option_groups_build_the_pass_options() -> None:
    """SyncOptions.from_cli takes the CLI's option groups and the command's own flags;
    ArtifactConfig joins a pass's artifact options with its client's HTTP limits."""
    api = ApiSettings.from_cli(
        api_url="https://api.test/v1", concurrency=3, rate_limit=None, wait_lock=5.0
    )
    settle = SettleSettings.from_cli(confirm_after=60.0, fresh_within=120.0)
    artifacts = ArtifactSettings.from_cli(
        downloads=True, blob_url="", artifact_grace=30.0, max_artifact_size=1000
    )
    assert artifacts.blob_url is None  # an empty --blob-url means the default
    options = SyncOptions.from_cli(api, settle, artifacts, task_ids=("t",), discover=False)
    assert options == SyncOptions(
        concurrency=3,
        discover=False,
        task_ids=("t",),
        confirm_after_s=60.0,
        fresh_within_s=120.0,
        downloads=True,
        artifact_grace_s=30.0,
        max_artifact_bytes=1000,
    )
    client = ClientConfig(timeout_s=7.0, connect_timeout_s=2.0, task_requests=3)
    config = ArtifactConfig.from_options(options, client)
    assert (config.grace_s, config.max_bytes, config.timeout_s) == (30.0, 1000, 7.0)
    assert (config.connect_timeout_s, config.max_connections) == (2.0, 3)
    assert config.link_refreshes == options.artifact_link_refreshes
