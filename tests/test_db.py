"""The archive database under pressure: analysts reading SQLite while a real `archiver
sync` writes, and a disk that fills up mid-pass."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archiver.store.database import Database
from tests.conftest import (
    ARCHIVER_BIN,
    PG_URL,
    TEST_API_KEY,
    archived,
    assert_matches_truth,
    canonical,
    postgres_problem,
    run_archiver,
)

#: Tasks whose event_count disagrees with their stored events (0 in a consistent view).
TORN = """
SELECT count(*) FROM tasks t
WHERE t.event_count != (SELECT count(*) FROM task_events e WHERE e.task_id = t.id)
"""
COUNTS = "SELECT (SELECT count(*) FROM task_events), (SELECT sum(event_count) FROM tasks)"


def env_for(sim, database_url: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }


def analyst(path: Path) -> sqlite3.Connection:
    """What an analyst opens: the stdlib sqlite3 module, transactions by hand."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def test_sqlite_readers_never_block_the_sync_nor_see_a_torn_view(
    tmp_path: Path, make_simulator
) -> None:
    """An open sqlite3 read transaction neither blocks `archiver sync` nor sees a torn view."""
    sim = make_simulator(
        tasks=40, events_per_task=15, seed=81, spacing_s=10.0, latency_ms=5.0, duration_s=(60, 300)
    )
    path = tmp_path / "archive.db"
    url = f"sqlite:///{path}"
    env = env_for(sim, url)
    first = run_archiver("sync", "-q", env=env)  # some history already archived
    assert first.returncode == 0, first.stderr

    holder = analyst(path)
    holder.execute("BEGIN")
    before = holder.execute(COUNTS).fetchone()
    assert before[0] == before[1] and before[0] > 0
    assert holder.execute(TORN).fetchone() == (0,)

    snapshots: list[tuple[int, int, int]] = []
    done = threading.Event()

    def keep_reading() -> None:
        reader = analyst(path)
        while not done.is_set():
            reader.execute("BEGIN")
            total, summed = reader.execute(COUNTS).fetchone()
            (torn,) = reader.execute(TORN).fetchone()
            reader.execute("COMMIT")
            snapshots.append((total, summed, torn))
        reader.close()

    thread = threading.Thread(target=keep_reading)
    thread.start()
    try:
        sim.finish_all()
        sync = subprocess.run(
            [ARCHIVER_BIN, "sync", "--concurrency", "4", "-q"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        done.set()
        thread.join()
    assert sync.returncode == 0, sync.stderr  # not "database is locked"
    # The held transaction still sees the database as it was when it began.
    assert holder.execute(COUNTS).fetchone() == before
    assert holder.execute(TORN).fetchone() == (0,)
    holder.execute("COMMIT")
    after = holder.execute(COUNTS).fetchone()
    holder.close()

    assert snapshots, "the reader thread took no snapshot"
    torn = [snap for snap in snapshots if snap[0] != snap[1] or snap[2] != 0]
    assert not torn, f"{len(torn)} torn snapshots, e.g. {torn[:3]}"
    totals = [total for total, _, _ in snapshots]
    assert totals == sorted(totals)  # each snapshot is a committed state, in commit order
    expected = sum(len(entry["events"]) for entry in sim.truth().values())
    assert after == (expected, expected) and after[0] > before[0]
    db = Database(url)
    assert_matches_truth(db, sim)
    db.dispose()


# --- disk full ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``; skips when mounting is not permitted."""
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {str(detail).strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def grow(mountpoint: Path, size: str) -> None:
    """Free space: the same tmpfs, remounted bigger."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mountpoint)], check=True)


def assert_one_clear_disk_full_line(stderr: str) -> None:
    """With -q the pass prints one `archiver: error:` line saying the disk is full and what
    to do, beside at most its summary line (and the notice of a new archive): no
    traceback, no driver noise."""
    errors = [line for line in stderr.splitlines() if line.startswith("archiver: error:")]
    assert len(errors) == 1, stderr
    others = [line for line in stderr.splitlines() if line not in errors]
    allowed = (" ERROR archiver: sync failed: ", " INFO archiver: creating a new archive at ")
    assert all(any(text in line for text in allowed) for line in others), stderr
    line = errors[0]
    # PostgreSQL may fail the connection itself ("could not write init file").
    full = ("disk is full", "No space left on device", "could not write init file")
    assert any(text in line for text in full), line
    assert "free space on the disk holding the database, then run again" in line, line


def test_sqlite_disk_full_fails_clearly_and_the_rerun_reaches_ground_truth(
    tmp_path: Path, make_simulator
) -> None:
    """A full disk under SQLite fails the pass with one clear line; the rerun reaches truth."""
    sim = make_simulator(tasks=80, events_per_task=40, seed=82)
    sim.finish_all()
    with small_tmpfs(tmp_path / "small", "480k") as mount:
        path = mount / "archive.db"
        url = f"sqlite:///{path}"
        full = run_archiver("sync", "-q", env=env_for(sim, url))
        assert full.returncode == 1, full.stderr
        assert_one_clear_disk_full_line(full.stderr)
        check = analyst(path)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        total, summed = check.execute(COUNTS).fetchone()
        assert total == (summed or 0) and check.execute(TORN).fetchone() == (0,)
        check.close()

        grow(mount, "64m")
        again = run_archiver("sync", "-q", env=env_for(sim, url))
        assert again.returncode == 0, again.stderr
        db = Database(url)
        assert_matches_truth(db, sim)
        with db.transaction() as conn:
            outcomes = list(conn.scalars(text("SELECT outcome FROM sync_runs ORDER BY id")))
        db.dispose()
        assert outcomes[-1] == "ok" and set(outcomes[:-1]) <= {"failed", "crashed"}


def test_postgresql_disk_full_fails_clearly_and_the_rerun_reaches_ground_truth(
    tmp_path: Path, make_simulator
) -> None:
    """A full disk under PostgreSQL fails the pass with one clear line; the rerun reaches truth."""
    problem = postgres_problem()
    if problem:
        pytest.skip(f"no PostgreSQL at {PG_URL}: {problem}")
    sim = make_simulator(tasks=150, events_per_task=60, seed=83)
    sim.finish_all()
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    name = f"archiver_full_{uuid.uuid4().hex[:8]}"
    # Outside tmp_path, whose parents the server's user may not enter.
    outside = Path(tempfile.mkdtemp(prefix="archiver-pg-full-"))
    outside.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, outside, ignore_errors=True)
        mount = cleanup.enter_context(small_tmpfs(outside / "small", "4m"))
        space = mount / "pg"
        space.mkdir()
        try:
            os.chown(space, *_postgres_ids())
            with admin.connect() as conn:
                conn.execute(text(f"CREATE TABLESPACE {name} LOCATION '{space}'"))
        except Exception as exc:  # the server runs elsewhere, or as another user
            pytest.skip(f"cannot put a PostgreSQL tablespace on a local tmpfs: {exc}")
        url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TABLESPACE {name}'))
            full = run_archiver("sync", "-q", env=env_for(sim, url))
            assert full.returncode == 1, full.stderr
            assert_one_clear_disk_full_line(full.stderr)
            grow(mount, "256m")
            again = run_archiver("sync", "-q", env=env_for(sim, url))
            assert again.returncode == 0, again.stderr
            db = Database(url)
            assert_matches_truth(db, sim)
            db.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f"DROP TABLESPACE IF EXISTS {name}"))
            admin.dispose()


def _postgres_ids() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def test_default_home_and_database_are_created_owner_only(tmp_path: Path) -> None:
    """A new ARCHIVER_HOME is 0700 and the SQLite archive in it 0600."""
    home = tmp_path / "fresh-home"
    done = run_archiver("db", "upgrade", env={"ARCHIVER_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "archive.db").stat().st_mode & 0o777 == 0o600


def test_driver_level_event_insert_stores_values_as_the_column_types_would(
    database: Database,
) -> None:
    """insert_events bypasses SQLAlchemy's types, yet stores the very values they bind."""
    from sqlalchemy import select

    from archiver.models import TaskInfo, keyed_events
    from archiver.store.events import insert_events
    from archiver.store.schema import UtcDateTime, task_events
    from archiver.store.tasks import insert_new_tasks
    from archiver.timestamps import to_utc

    now = datetime(2026, 11, 29, 19, 29, 29, 687323, tzinfo=UTC)
    stamps = [1, 1_764_000_001_123, -62_135_596_800, 253_402_000_000, 2**63 - 1, None]
    payloads = [{"b": [1, 2.5], "a": "é"}, None, "text", 10**40, -0.0, {"k": "\ud83d"}]
    events = [
        {"name": f"e{i}", "timestamp": t, "payload": p, "id": None if i % 2 else f"id{i}"}
        for i, (t, p) in enumerate(zip(stamps, payloads, strict=True))
    ]
    task = TaskInfo.model_validate({"id": "t1", "status": "done", "events": events})
    with database.transaction() as conn:
        insert_new_tasks(conn, [task], now)
        insert_events(conn, [("t1", keyed_events(task.events))], now)
    with database.reading() as conn:
        rows = {r.name: r for r in conn.execute(select(task_events))}
        raw = dict(conn.exec_driver_sql("SELECT name, timestamp_utc FROM task_events").all())
        archived_at = conn.exec_driver_sql("SELECT DISTINCT archived_at FROM task_events").all()
    assert len(rows) == len(events)
    dialect = database.engine.dialect
    bind = UtcDateTime.dialect_impl(dialect).bind_processor(dialect)
    for event in events:
        row = rows[event["name"]]
        expected_utc = to_utc(event["timestamp"])
        got = row.timestamp_utc.replace(tzinfo=UTC) if row.timestamp_utc else None
        assert (row.timestamp, got) == (event["timestamp"], expected_utc)
        assert canonical(archived(row.payload, row.payload_raw)) == canonical(event["payload"])
        if database.dialect == "sqlite":  # the stored text itself, as SQLAlchemy writes it
            expected_text = bind(expected_utc) if bind and expected_utc else expected_utc
            assert raw[event["name"]] == expected_text
    if database.dialect == "sqlite":
        assert archived_at == [(bind(now) if bind else now,)]


@pytest.mark.parametrize("count", [1, 900])
def test_one_insert_of_many_events_stores_each_once(database: Database, count: int) -> None:
    """A batch of many events, some with ids, stores every event exactly once; reading them
    all again adds nothing, and a changed payload updates its one row."""
    from collections import Counter

    from sqlalchemy import select

    from archiver.models import TaskInfo, keyed_events
    from archiver.store.events import insert_events
    from archiver.store.schema import task_events
    from archiver.store.tasks import insert_new_tasks

    now = datetime(2026, 11, 30, tzinfo=UTC)
    tasks = [
        TaskInfo.model_validate(
            {
                "id": f"t{n}",
                "status": "done",
                "events": [
                    {"name": f"e{i}", "timestamp": 1_764_000_000_000 + i, "payload": {"i": i},
                     "id": f"id{i}" if i % 3 == 0 else None}
                    for i in range(n, count, 3)
                ],
            }
        )
        for n in range(3)
    ]  # fmt: skip
    batches = [(task.id, keyed_events(task.events)) for task in tasks]
    truth = Counter(
        (task.id, ev.name, repr(ev.payload)) for task in tasks for ev in task.events or ()
    )
    for _ in range(2):  # the second read is a no-op
        with database.transaction() as conn:
            insert_new_tasks(conn, tasks, now)
            insert_events(conn, batches, now)
    with database.reading() as conn:
        columns = (task_events.c.task_id, task_events.c.name, task_events.c.payload)
        rows = conn.execute(select(*columns))
        stored = Counter((task_id, name, repr(payload)) for task_id, name, payload in rows)
    assert stored == truth and sum(stored.values()) == count

    assert tasks[0].events is not None
    filled = tasks[0].events[0]._replace(payload="filled")  # an event with an id (i = 0)
    with database.transaction() as conn:
        insert_events(conn, [("t0", keyed_events([filled]))], now)
    with database.reading() as conn:
        payloads = (
            conn.execute(select(task_events.c.payload).where(task_events.c.name == "e0"))
            .scalars()
            .all()
        )
    assert payloads == ["filled"]


def test_postgresql_role_without_temp_privilege_still_stores_every_event(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create temporary tables (no COPY path) gets the row-by-row
    insert: the same rows, re-reads still a no-op, one warning naming the GRANT."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from archiver.models import TaskInfo, keyed_events
    from archiver.store.events import insert_events
    from archiver.store.schema import task_events
    from archiver.store.tasks import insert_new_tasks

    owner = Database(postgres_url)
    owner.prepare()
    role = f"archiver_notemp_{uuid.uuid4().hex[:8]}"
    database_name = make_url(postgres_url).database
    with owner.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(f'REVOKE TEMPORARY ON DATABASE "{database_name}" FROM PUBLIC'))
        conn.execute(text(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"'))
    limited = Database(make_url(postgres_url).set(username=role).render_as_string(False))
    try:
        now = datetime(2026, 11, 29, tzinfo=UTC)
        events = [{"name": f"e{i}", "timestamp": 1_764_000_000_000 + i} for i in range(3)]
        task = TaskInfo.model_validate({"id": "t1", "status": "done", "events": events})
        caplog.set_level("WARNING", logger="archiver.store.events")
        for _ in range(2):  # the second read of the same events stores nothing more
            with limited.transaction() as conn:
                insert_new_tasks(conn, [task], now)
                insert_events(conn, [("t1", keyed_events(task.events))], now)
        with owner.reading() as conn:
            names = sorted(conn.execute(select(task_events.c.name)).scalars())
        assert names == ["e0", "e1", "e2"]
        warnings = [r.getMessage() for r in caplog.records if r.name == "archiver.store.events"]
        assert len(warnings) == 1 and "GRANT TEMP" in warnings[0]
    finally:
        limited.dispose()
        with owner.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        owner.dispose()
