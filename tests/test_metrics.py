"""Health (`archiver status`) and the Prometheus textfile (`--metrics-file`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from archiver.config import SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.exceptions import ConfigError
from archiver.metrics import (
    COMMANDS,
    EXIT_STALE,
    metrics_text,
    parse_duration,
    read_health,
    validate_metrics_path,
    write_metrics,
)
from archiver.stats import RunResult, counter_fields
from archiver.store.database import Database
from archiver.store.schema import artifacts, sync_runs, tasks
from tests.conftest import TEST_API_KEY, client_config, run_archiver

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a textfile, parsed by the Prometheus client's own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(parsed: dict[Any, float], name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted({"command": "sync", **labels}.items())))]


def add_run(db: Database, outcome: str, finished: datetime, command: str = "sync") -> None:
    with db.transaction() as conn:
        conn.execute(
            insert(sync_runs).values(
                run_id=f"{outcome}-{finished.timestamp()}-{command}",
                command=command,
                host="h",
                pid=1,
                started_at=finished - timedelta(seconds=30),
                finished_at=finished,
                outcome=outcome,
            )
        )


def test_metrics_file_parses_and_matches_the_pass(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """After a sync, the textfile parses and carries its counts, success time and lag."""
    sim = make_simulator(tasks=5, events_per_task=3, seed=51)
    sim.finish_all()
    result = run_command(SyncPass(), database, client_config(sim), SyncOptions())
    path = tmp_path / "textfile" / "archiver.prom"
    path.parent.mkdir()
    write_metrics(path, result, database)
    parsed = samples(path)
    assert result.finished_at is not None
    finished = result.finished_at.timestamp()
    assert value(parsed, "archiver_last_run_success") == 1
    assert value(parsed, "archiver_last_run_outcome", outcome="ok") == 1
    assert value(parsed, "archiver_last_run_outcome", outcome="failed") == 0
    assert value(parsed, "archiver_last_success_timestamp_seconds") == pytest.approx(finished)
    assert value(parsed, "archiver_last_run_timestamp_seconds") == pytest.approx(finished)
    for name in ("tasks_discovered", "tasks_polled", "tasks_finalized", "events_inserted"):
        assert value(parsed, f"archiver_last_run_{name}") == getattr(result.stats, name), name
    assert value(parsed, "archiver_last_run_tasks_polled") == 5
    assert value(parsed, "archiver_last_run_events_inserted") == 15
    assert value(parsed, "archiver_last_run_requests") == result.stats.requests > 0
    assert value(parsed, "archiver_last_run_errors") == 0
    assert value(parsed, "archiver_last_run_artifacts_stored") == 0
    assert value(parsed, "archiver_last_run_duration_seconds") >= 0
    assert value(parsed, "archiver_lag_seconds") == 0  # everything is finalized
    assert value(parsed, "archiver_tasks_active") == 0
    assert [p.name for p in path.parent.iterdir()] == ["archiver.prom"]  # no temp file left


def test_failed_pass_keeps_the_previous_success_time(database: Database, tmp_path: Path) -> None:
    """A failed pass reports success 0 but the last success recorded in sync_runs."""
    earlier = NOW - timedelta(hours=2)
    add_run(database, "ok", earlier)
    result = RunResult(run_id="r", command="sync", outcome="failed", started_at=NOW)
    result.finished_at = NOW + timedelta(seconds=3)
    result.stats.errors = 2
    path = tmp_path / "m.prom"
    write_metrics(path, result, database)
    parsed = samples(path)
    assert value(parsed, "archiver_last_run_success") == 0
    assert value(parsed, "archiver_last_run_outcome", outcome="failed") == 1
    assert value(parsed, "archiver_last_success_timestamp_seconds") == earlier.timestamp()
    assert value(parsed, "archiver_last_run_errors") == 2
    assert value(parsed, "archiver_last_run_duration_seconds") == 3


def test_served_metrics_join_the_commands_each_family_once(database: Database) -> None:
    """The text of `archiver serve`'s /metrics: each family once, with the samples of every
    command's pass; the detail counters sync_runs does not keep are left out."""
    runs = [
        RunResult(run_id=command, command=command, started_at=NOW - timedelta(seconds=30))
        for command in COMMANDS
    ]
    for run in runs:
        run.finished_at = NOW
    runs[1].stats.errors = 4
    with database.reading() as conn:
        health = read_health(conn, NOW)
    families = list(text_string_to_metric_families(metrics_text(runs, health).decode()))
    names = [family.name for family in families]
    assert len(names) == len(set(names))
    for family in families:
        assert {s.labels["command"] for s in family.samples} == set(COMMANDS), family.name
    dropped = {f"archiver_last_run_{name}" for name, _, kept in counter_fields() if not kept}
    assert dropped and not dropped & set(names)
    parsed = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    assert value(parsed, "archiver_last_run_errors", command=COMMANDS[1]) == 4
    assert value(parsed, "archiver_last_run_errors") == 0
    assert value(parsed, "archiver_last_run_success", command=COMMANDS[1]) == 1


def task_row(
    task_id: str,
    *,
    days: float,
    polled: datetime | None = None,
    finalized: datetime | None = None,
    next_poll: datetime | None = None,
) -> dict[str, Any]:
    """A tasks row first seen ``days`` before NOW."""
    return {
        "id": task_id,
        "first_seen_at": NOW - timedelta(days=days),
        "last_polled_at": polled,
        "finalized_at": finalized,
        "next_poll_at": next_poll,
    }


def test_health_lag_backoff_artifacts_and_what_counts_as_success(database: Database) -> None:
    """Lag is the oldest active task's last poll; partial passes count, failed ones not."""
    with database.transaction() as conn:
        conn.execute(
            insert(tasks),
            [
                task_row("old_done", days=9, finalized=NOW),
                task_row("polled_10m_ago", days=1, polled=NOW - timedelta(minutes=10)),
                task_row("never_polled_1h", days=1 / 24),
                task_row(
                    "in_backoff",
                    days=1,
                    polled=NOW - timedelta(minutes=5),
                    next_poll=NOW + timedelta(minutes=5),
                ),
            ],
        )
        conn.execute(
            insert(artifacts),
            [
                {"task_id": "old_done", "kind": "recording", "state": "pending"},
                {"task_id": "old_done", "kind": "downloads", "state": "pending"},
                {"task_id": "in_backoff", "kind": "recording", "state": "stored"},
            ],
        )
    add_run(database, "partial", NOW - timedelta(minutes=30))
    add_run(database, "failed", NOW - timedelta(minutes=5))
    add_run(database, "ok", NOW - timedelta(hours=3), command="backfill")
    with database.transaction() as conn:
        health = read_health(conn, NOW)
        only_backfill = read_health(conn, NOW, commands=("backfill",))
    assert health.lag_s == 3600 and health.lagging_task_id == "never_polled_1h"
    assert health.active_tasks == 3
    assert health.tasks_in_error_backoff == 1
    assert health.tasks_waiting_on_artifacts == 1
    assert health.last_success_command == "sync"
    assert health.last_success_age_s == 30 * 60
    assert not health.is_stale(timedelta(minutes=31))
    assert health.is_stale(timedelta(minutes=29))
    assert only_backfill.last_success_age_s == 3 * 3600


def test_durations_and_metrics_paths_are_validated(tmp_path: Path) -> None:
    """--max-age takes seconds or s/m/h/d; --metrics-file needs a writable directory."""
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d") == timedelta(days=1)
    with pytest.raises(ConfigError, match=r"--max-age '5 minutes'.*unit s, m, h or d"):
        parse_duration("5 minutes")
    with pytest.raises(ConfigError, match="does not exist or is not writable"):
        validate_metrics_path(str(tmp_path / "missing" / "a.prom"))
    with pytest.raises(ConfigError, match="is a directory"):
        validate_metrics_path(str(tmp_path))
    assert validate_metrics_path(str(tmp_path / "a.prom")) == tmp_path / "a.prom"


def test_sync_writes_metrics_file_and_status_max_age_exit_codes(
    tmp_path: Path, make_simulator
) -> None:
    """`sync --metrics-file` writes a parseable file; `status --max-age` exits 0, then 3."""
    url = f"sqlite:///{tmp_path}/a.db"
    sim = make_simulator(tasks=4, seed=52)
    sim.finish_all()
    metrics_path = tmp_path / "textfile" / "archiver-sync.prom"
    metrics_path.parent.mkdir()
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": url,
    }
    assert run_archiver("db", "upgrade", "--database-url", url).returncode == 0
    never = run_archiver("status", "--max-age", "1h", env={"ARCHIVER_DATABASE_URL": url})
    assert never.returncode == EXIT_STALE == 3
    assert "never" in never.stdout and "stale" in never.stderr
    done = run_archiver("sync", "-q", "--metrics-file", str(metrics_path), env=env)
    assert done.returncode == 0, done.stderr
    parsed = samples(metrics_path)
    assert value(parsed, "archiver_last_run_tasks_polled") == 4
    assert value(parsed, "archiver_last_run_success") == 1
    assert sorted(p.name for p in metrics_path.parent.iterdir()) == ["archiver-sync.prom"]
    fresh = run_archiver("status", "--max-age", "1h", env={"ARCHIVER_DATABASE_URL": url})
    assert fresh.returncode == 0, fresh.stderr
    assert "last success:" in fresh.stdout and "(sync," in fresh.stdout
    # The same archive judged against a tiny window is stale: exit 3, also with --json.
    stale = run_archiver(
        "status", "--max-age", "0.001", "--json", env={"ARCHIVER_DATABASE_URL": url}
    )
    assert stale.returncode == EXIT_STALE
    health = json.loads(stale.stdout)["health"]
    assert health["stale"] is True and health["last_success_command"] == "sync"
    bad = run_archiver("sync", "--metrics-file", str(tmp_path / "no" / "m.prom"), env=env)
    assert bad.returncode == 2 and "--metrics-file" in bad.stderr


@pytest.mark.parametrize("command", ["status", "serve"])
def test_an_absurd_max_age_is_one_error_line(command: str, tmp_path: Path) -> None:
    """--max-age beyond 36,500 days is refused with exit 2 and one line, never a traceback."""
    done = run_archiver(
        command, "--max-age", "99999999999999d", "--database-url", f"sqlite:///{tmp_path}/a.db"
    )
    assert done.returncode == 2
    assert "--max-age '99999999999999d' is longer than 36,500 days" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
