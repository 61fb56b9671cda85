"""The real `archiver` command in a subprocess: exit codes, messages, locks, stdin."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from archiver.store.database import Database
from archiver.store.migrations import head_revision
from tests.conftest import (
    ARCHIVER_BIN,
    TEST_API_KEY,
    assert_matches_truth,
    run_archiver,
    start_archiver,
    stored_state,
    wait_for_gets,
)


def env_for(sim, database_url: str, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
        **extra,
    }


def test_missing_api_key_exits_2_with_one_line(tmp_path: Path) -> None:
    """sync without CIRCLEMIND_API_KEY exits 2 and says which variable to set."""
    done = run_archiver("sync", env={"ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIRCLEMIND_API_KEY" in lines[0]


def test_bad_database_url_names_the_options(tmp_path: Path) -> None:
    """An unsupported database URL exits 2 and lists the schemes that work."""
    done = run_archiver("status", env={"ARCHIVER_DATABASE_URL": "mysql://root@127.0.0.1/x"})
    assert done.returncode == 2
    assert "mysql" in done.stderr and "sqlite:///" in done.stderr and "postgresql://" in done.stderr


def test_rejected_key_exits_2_without_showing_it(database_url: str, make_simulator) -> None:
    """A 401 stops the pass with exit 2; neither output nor the database holds the key."""
    sim = make_simulator(tasks=3, api_key="the-right-key")
    done = run_archiver("sync", env=env_for(sim, database_url))
    assert done.returncode == 2
    assert "rejected" in done.stderr
    assert TEST_API_KEY not in done.stdout + done.stderr


def test_sync_subprocess_archives_and_reports(database_url: str, make_simulator) -> None:
    """`archiver sync` stores everything, prints one summary line and `status --json` agrees."""
    sim = make_simulator(tasks=6, events_per_task=4, seed=31)
    sim.finish_all()
    done = run_archiver("sync", "-q", env=env_for(sim, database_url))
    assert done.returncode == 0, done.stderr
    assert re.search(r"sync ok: discovered 6, polled 6, finalized 6", done.stderr)
    db = Database(database_url)
    assert_matches_truth(db, sim)
    status = run_archiver("status", "--json", env={"ARCHIVER_DATABASE_URL": database_url})
    report = json.loads(status.stdout)
    assert report["tasks"] == 6 and report["active"] == 0
    assert report["events"] == sum(len(e["events"]) for e in sim.truth().values())
    assert report["last_runs"][0]["outcome"] == "ok"
    db.dispose()


def test_backfill_reads_ids_from_stdin(database_url: str, make_simulator) -> None:
    """--ids-file - reads ids from stdin, skipping blank lines and # comments."""
    sim = make_simulator(tasks=5, seed=32)
    sim.finish_all()
    ids = sorted(sim.truth())[:2]
    text = f"# wanted\n{ids[0]}\n\n{ids[1]}  # second\n"
    done = run_archiver("backfill", "--ids-file", "-", env=env_for(sim, database_url), stdin=text)
    assert done.returncode == 0, done.stderr
    db = Database(database_url)
    rows, _, _ = stored_state(db)
    assert set(rows) == set(ids)
    db.dispose()


def test_second_sync_exits_75_while_the_first_runs(database_url: str, make_simulator) -> None:
    """Two overlapping syncs: one archives, the other exits 75 naming the holder's pid."""
    sim = make_simulator(tasks=20, events_per_task=3, seed=33, latency_ms=150.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    first = start_archiver("sync", "--concurrency", "1", "-q", env=env, stderr=subprocess.PIPE)
    try:
        wait_for_gets(sim, 1)
        second = run_archiver("sync", env=env)
        assert second.returncode == 75
        assert f"pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    db = Database(database_url)
    assert_matches_truth(db, sim)
    db.dispose()


def test_lock_of_a_killed_sync_is_taken_over(database_url: str, make_simulator) -> None:
    """After kill -9 of a sync, the next sync takes the lock at once and completes the work."""
    sim = make_simulator(tasks=30, events_per_task=5, seed=34, latency_ms=100.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    proc = start_archiver("sync", "--concurrency", "2", "-q", env=env)
    wait_for_gets(sim, 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 0, done.stderr
    db = Database(database_url)
    assert_matches_truth(db, sim)
    status = json.loads(
        run_archiver("status", "--json", env={"ARCHIVER_DATABASE_URL": database_url}).stdout
    )
    assert [r["outcome"] for r in status["last_runs"][:2]] == ["ok", "crashed"]
    db.dispose()


def test_sigterm_stops_gracefully_with_143(database_url: str, make_simulator) -> None:
    """SIGTERM finishes in-flight writes, records the run as interrupted and exits 143."""
    sim = make_simulator(tasks=40, events_per_task=3, seed=35, latency_ms=100.0)
    sim.finish_all()
    env = env_for(sim, database_url)
    proc = start_archiver("sync", "--concurrency", "2", "-q", env=env, stderr=subprocess.PIPE)
    wait_for_gets(sim, 4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    status = json.loads(
        run_archiver("status", "--json", env={"ARCHIVER_DATABASE_URL": database_url}).stdout
    )
    assert status["last_runs"][0]["outcome"] == "interrupted"
    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 0
    db = Database(database_url)
    assert_matches_truth(db, sim)
    db.dispose()


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    """`db upgrade` migrates an empty file to head and `db current` then says up to date."""
    url = f"sqlite:///{tmp_path}/fresh.db"
    up = run_archiver("db", "upgrade", "--database-url", url)
    assert up.returncode == 0, up.stderr
    assert f"(empty) -> {head_revision()}" in up.stdout
    current = run_archiver("db", "current", "--database-url", url)
    assert "up to date" in current.stdout


def test_alembic_upgrade_head_from_repo_root(tmp_path: Path) -> None:
    """`alembic upgrade head` from the repository root migrates ARCHIVER_DATABASE_URL."""
    root = Path(__file__).resolve().parents[1]
    url = f"sqlite:///{tmp_path}/alembic.db"
    alembic = str(Path(ARCHIVER_BIN).with_name("alembic"))
    done = subprocess.run(
        [alembic, "upgrade", "head"],
        cwd=root,
        env={**os.environ, "ARCHIVER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    current = run_archiver("db", "current", "--database-url", url)
    assert "up to date" in current.stdout


def test_demo_runs_without_an_api_key(tmp_path: Path) -> None:
    """`archiver demo` archives the simulated account into SQLite and prints the tasks."""
    done = run_archiver("demo", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    assert "12 tasks," in done.stdout and "events archived" in done.stdout
    db = Database(f"sqlite:///{tmp_path}/demo/demo.db")
    rows, _, n_events = stored_state(db)
    assert len(rows) == 12 and n_events > 0
    db.dispose()


@pytest.mark.parametrize(
    "command",
    [
        "sync",
        "backfill",
        "status",
        "demo",
        "db upgrade",
        "db current",
        "report",
        "report credits",
        "report top",
    ],
)
def test_every_command_has_an_example_in_help(command: str) -> None:
    """`--help` of each command shows an example and never an API key."""
    done = run_archiver(*command.split(), "--help", env={"CIRCLEMIND_API_KEY": TEST_API_KEY})
    assert done.returncode == 0
    assert "Example" in done.stdout
    assert TEST_API_KEY not in done.stdout


def test_status_and_report_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """While another process holds SQLite's write lock, status and report still answer."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/busy.db"
    assert run_archiver("db", "upgrade", "--database-url", url).returncode == 0
    writer = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO tasks (id, first_seen_at) VALUES ('t', '2026-01-01 00:00:00')")
    try:
        env = {"ARCHIVER_DATABASE_URL": url}
        status = run_archiver("status", "--json", env=env, timeout=20)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tasks"] == 0  # the uncommitted row is not seen
        report = run_archiver("report", "top", env=env, timeout=20)
        assert report.returncode == 0, report.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_later_sigterm_stops_at_once_and_still_records_the_run(
    tmp_path: Path, make_simulator
) -> None:
    """SIGTERM waits for in-flight work, a repeat within a second is the same stop, and one
    a second later ends the pass at once: the request in flight is abandoned, yet the run
    is recorded interrupted, its lock freed, and the exit code is 143."""
    sim = make_simulator(tasks=4, seed=36, latency_ms=20_000.0)
    url = f"sqlite:///{tmp_path}/sig.db"
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "sync", "--no-discover", "--task", "t1", "-q"],
        env={**os.environ, **env_for(sim, url)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    import sqlite3

    deadline = time.monotonic() + 30
    running = 0
    while not running and time.monotonic() < deadline:  # the run has started its pass
        time.sleep(0.1)
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(tmp_path / "sig.db") as conn:
            running = conn.execute(
                "select count(*) from sync_runs where outcome = 'running'"
            ).fetchone()[0]
    time.sleep(1.0)  # its one Get Task is now in flight for 20 s
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # the same stop (GNU timeout sends it twice)
    time.sleep(1.0)
    assert proc.poll() is None  # still finishing the request in flight
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 10  # not the 20 s the request would take
    assert proc.returncode == 143, err
    assert "send it again" in err and "stopping now" in err
    with sqlite3.connect(tmp_path / "sig.db") as conn:
        assert conn.execute("select outcome from sync_runs").fetchall() == [("interrupted",)]
        assert conn.execute("select count(*) from locks").fetchone() == (0,)
        assert conn.execute(
            "select count(*) from tasks where lease_owner is not null"
        ).fetchone() == (0,)


def test_a_shared_option_group_hands_its_command_one_value_object() -> None:
    """api_options and artifact_options declare their flags and pass the command one
    ApiSettings and one ArtifactSettings; the command's own options stay parameters."""
    import click
    from click.testing import CliRunner

    from archiver import config
    from archiver.cli import api_options, artifact_options

    seen: dict[str, object] = {}

    @click.command()
    @api_options
    @click.option("--own", default="x")
    @artifact_options
    def probe(**kwargs: object) -> None:
        seen.update(kwargs)

    names = [param.name for param in probe.params]
    assert names == [
        "wait_lock", "rate_limit", "concurrency", "api_url", "own",
        "downloads", "blob_url", "artifact_grace", "max_artifact_size",
    ]  # fmt: skip
    env = {getattr(config, name): None for name in dir(config) if name.startswith("ENV_")}
    done = CliRunner().invoke(
        probe, ["--concurrency", "3", "--own", "y", "--max-artifact-size", "1KB"], env=env
    )
    assert done.exit_code == 0, done.output
    assert set(seen) == {"api", "own", "artifacts"}
    assert seen["api"] == config.ApiSettings(api_url=config.DEFAULT_API_URL, concurrency=3)
    assert seen["own"] == "y"
    assert seen["artifacts"] == config.ArtifactSettings(max_bytes=1000)


def test_verify_declares_the_shared_options_with_its_own_help() -> None:
    """verify's --blob-url, --max-artifact-size and --api-url are sync's options (same
    environment variables, defaults, types), with help texts of their own."""
    from archiver.cli import cli

    def options(command: str) -> dict[str, dict[str, object]]:
        return {
            param.name or "": param.to_info_dict()
            for param in cli.commands[command].params  # type: ignore[attr-defined]
        }

    sync, verify = options("sync"), options("verify")
    for name in ("blob_url", "max_artifact_size", "api_url"):
        same = {key: value for key, value in verify[name].items() if key != "help"}
        assert same == {key: value for key, value in sync[name].items() if key != "help"}
    assert str(verify["max_artifact_size"]["help"]).startswith("With --repair:")
    assert str(verify["api_url"]["help"]).startswith("With --repair:")
