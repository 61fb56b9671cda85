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


# --- issue 24: the demo, a failed pass, help and small words -------------------------


def test_demo_archives_recordings_and_zips_over_several_days(tmp_path: Path) -> None:
    """`archiver demo` archives with downloads on (playable WebM recordings, zips with
    members), its tasks span several days, and each task not final says why."""
    from sqlalchemy import func, select

    from archiver.store.schema import artifact_files, artifacts, tasks

    done = run_archiver("demo", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    db = Database(f"sqlite:///{tmp_path}/demo/demo.db", read_only=True)
    with db.reading() as conn:
        recordings = conn.execute(
            select(artifacts.c.content_type, artifacts.c.blob_url).where(
                artifacts.c.kind == "recording", artifacts.c.state == "stored"
            )
        ).all()
        zips = conn.scalar(
            select(func.count()).where(
                artifacts.c.kind == "downloads", artifacts.c.state == "stored"
            )
        )
        members = conn.scalar(select(func.count()).select_from(artifact_files))
        days = {str(day)[:10] for day in conn.scalars(select(tasks.c.created_at_utc))}
        open_ids = set(conn.scalars(select(tasks.c.id).where(tasks.c.finalized_at.is_(None))))
    db.dispose()
    assert len(recordings) >= 6 and {ctype for ctype, _ in recordings} == {"video/webm"}
    first = Path(recordings[0][1].removeprefix("file://"))
    assert first.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header
    assert zips and members and members >= zips
    assert len(days) >= 5
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("tsk_")}
    assert len(rows) == 12
    for task_id, line in rows.items():
        if task_id in open_ids:
            assert re.search(r"no: [a-z]", line), line
        else:
            assert line.endswith(" yes"), line
    assert open_ids and "Not final yet:" in done.stdout


def test_demo_next_steps_run_as_printed_without_the_venv_on_path(tmp_path: Path) -> None:
    """From a venv that is not activated (the README's first command), the demo's printed
    commands name this `archiver` by its path, and they run as printed."""
    import shlex

    bare = {"PATH": "/usr/bin:/bin"}
    done = run_archiver("demo", "--tasks", "3", "--dir", str(tmp_path / "demo"), env=bare)
    assert done.returncode == 0, done.stderr
    steps = dict(
        line.split(None, 1) for line in done.stdout.splitlines() if line.startswith(("Br", "Re"))
    )
    browse, report = shlex.split(steps["Browse:"]), shlex.split(steps["Report:"])
    assert browse[0] == ARCHIVER_BIN and report[0] == ARCHIVER_BIN
    ran = subprocess.run(report, capture_output=True, text=True, env=bare, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "Credits by day" in ran.stdout
    helped = subprocess.run([*browse, "--help"], capture_output=True, text=True, env=bare)
    assert helped.returncode == 0 and "Browse the archive" in helped.stdout


def test_demo_serve_prints_its_url_and_ctrl_c_ends_it_quietly(tmp_path: Path) -> None:
    """`archiver demo --serve` serves the new archive at the URL it prints; Ctrl-C
    (SIGINT) stops it quietly with exit 130, as `archiver serve` (docs/operations.md)."""
    import httpx

    proc = start_archiver(
        "demo",
        "--tasks",
        "3",
        "--dir",
        str(tmp_path / "demo"),
        "--serve",
        "--port",
        "0",
        env={},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"\(read-only\) at (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
            assert line or proc.poll() is None
        assert url is not None
        page = httpx.get(url + "tasks", timeout=10)
        assert page.status_code == 200 and 'data-count="3"' in page.text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err + out


@pytest.mark.parametrize(
    ("how", "name", "code"),
    [("key", "API key rejected", 2), ("url", "API unreachable", 1)],
)
def test_a_pass_that_fails_counts_and_names_its_failure(
    make_simulator, tmp_path: Path, how: str, name: str, code: int
) -> None:
    """A pass failed by a rejected key or an unreachable API reports `errors 1 (name)` in
    its summary, keeps errors=1 in sync_runs and `status`, and the key's message carries
    no request detail."""
    from sqlalchemy import select

    from archiver.store.schema import sync_runs

    sim = make_simulator(tasks=2, api_key="sk-the-right-one-1234")
    url = f"sqlite:///{tmp_path}/a.db"
    env = env_for(sim, url)
    if how == "url":
        env["ARCHIVER_API_URL"] = "http://127.0.0.1:1/api/v1"
    done = run_archiver("sync", env=env)
    assert done.returncode == code, done.stderr
    assert f"errors 1 ({name})" in done.stderr
    assert "List Tasks (" not in done.stderr and "t=None" not in done.stderr
    if how == "key":
        assert "rejected the key (HTTP 401)" in done.stderr
    db = Database(url, read_only=True)
    with db.reading() as conn:
        (row,) = conn.execute(select(sync_runs.c.errors, sync_runs.c.outcome)).all()
    db.dispose()
    assert tuple(row) == (1, "failed")
    status = run_archiver("status", env={"ARCHIVER_DATABASE_URL": url})
    (line,) = [x for x in status.stdout.splitlines() if " failed " in x]
    assert "errors 1: " in line


def test_sync_help_groups_options_by_purpose() -> None:
    """`sync --help` lists its options in sections by purpose, each flag in its place."""
    done = run_archiver("sync", "--help")
    assert done.returncode == 0
    titles = re.findall(r"^([A-Z][A-Za-z ]+):$", done.stdout, flags=re.M)
    assert titles == [
        "Which tasks",
        "Archive and API",
        "Pace",
        "When a finished task is final",
        "Recordings and downloads",
        "Output",
        "Help",
    ]
    sections = re.split(r"^[A-Z][A-Za-z ]+:$", done.stdout, flags=re.M)[1:]
    placed = {title: section for title, section in zip(titles, sections, strict=True)}
    assert "--task ID" in placed["Which tasks"] and "--wait-lock" in placed["Pace"]
    assert "--downloads" in placed["Recordings and downloads"] and "-q, --quiet" in placed["Output"]


def test_db_upgrade_says_when_the_archive_is_already_current(tmp_path: Path) -> None:
    """`db upgrade` names the step it took, and on a current archive says it already is."""
    url = f"sqlite:///{tmp_path}/a.db"
    first = run_archiver("db", "upgrade", "--database-url", url)
    again = run_archiver("db", "upgrade", "--database-url", url)
    assert first.returncode == again.returncode == 0
    assert f"(empty) -> {head_revision()}" in first.stdout
    assert f"already at the newest revision {head_revision()}" in again.stdout
    assert "->" not in again.stdout


@pytest.mark.parametrize("args", [["db", "upgrade"], ["sync"], ["backfill"], ["status"]])
def test_a_command_closes_the_archive_before_it_exits(
    args: list[str], make_simulator, tmp_path: Path
) -> None:
    """The command skips the interpreter's last garbage collection, so it closes every
    connection itself: SQLite folds its WAL back, and no -wal or -shm file is left."""
    sim = make_simulator(tasks=3, events_per_task=2, seed=4)
    sim.finish_all()
    db = tmp_path / "archive.db"
    env = env_for(sim, f"sqlite:///{db}")
    if args != ["db", "upgrade"]:
        assert run_archiver("db", "upgrade", env=env).returncode == 0
        assert run_archiver("sync", env=env).returncode == 0  # something to read
    done = run_archiver(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert db.exists()
    assert not db.with_name("archive.db-wal").exists()
    assert not db.with_name("archive.db-shm").exists()
