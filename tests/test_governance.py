"""Erasure and retention: `archiver forget` and `archiver prune` remove content for good
(no byte left in the SQLite file, its WAL or the blob store), keep tombstones that no run
fills in again, leave credit totals equal, and audit every removal in `erasures`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from archiver.config import SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.store.database import Database
from archiver.store.schema import artifact_files, artifacts, erasures, task_events, tasks
from tests.conftest import (
    ARCHIVER_BIN,
    TEST_API_KEY,
    client_config,
    run_archiver,
    start_archiver,
    wait_for_gets,
)


def env_for(sim: Any, database_url: str, blob_root: Path | str, **extra: str) -> dict[str, str]:
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_BLOB_URL": str(blob_root),
        **extra,
    }


def marked_simulator(make_simulator: Any, marker: str, **config: Any) -> Any:
    """A finished account whose even tasks' outputs and some events' payloads hold
    ``marker`` nested in an object (and the others an ordinary value)."""
    raw = (
        json.dumps({"customer": {"email": marker, "notes": [f"write to {marker} today"]}}),
        *(json.dumps({"customer": {"email": f"other-{n}@example.org"}}) for n in range(3)),
    )
    config.setdefault("tasks", 8)
    config.setdefault("events_per_task", 6)
    config.setdefault("seed", 21)
    sim = make_simulator(raw_json_values=raw, recording_rate=1.0, **config)
    sim.finish_all()
    return sim


def task_rows(db: Database) -> dict[str, Any]:
    with db.reading() as conn:
        return {row.id: row for row in conn.execute(select(tasks))}


def credit_total(db: Database) -> int:
    with db.reading() as conn:
        return int(conn.scalar(select(func.sum(tasks.c.credits_used))) or 0)


def audit_rows(db: Database) -> list[Any]:
    with db.reading() as conn:
        return list(conn.execute(select(erasures).order_by(erasures.c.id)))


def file_bytes(path: Path) -> bytes:
    """The database file and its -wal, as they are on disk."""
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def blob_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- forget ---------------------------------------------------------------------------------


def test_forget_matching_leaves_no_byte_of_the_text_in_the_file_the_wal_or_the_blobs(
    make_simulator: Any, tmp_path: Path
) -> None:
    """forget --matching (any case) erases every task holding the text: the SQLite file and
    its -wal no longer contain it, their blobs are gone, the others are untouched, credits
    are equal and each erasure is audited with the text's SHA-256 only."""
    marker = f"erase-{uuid.uuid4().hex}@example.com"
    sim = marked_simulator(make_simulator, marker)
    db_path, blobs = tmp_path / "archive.db", tmp_path / "blobs"
    url = f"sqlite:///{db_path}"
    env = env_for(sim, url, blobs)
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    db = Database(url)
    before, credits = task_rows(db), credit_total(db)
    holders = {
        task_id
        for task_id, row in before.items()
        if marker in json.dumps(row.output) or marker in json.dumps(row.payload)
    }
    with db.reading() as conn:
        holders |= {
            row.task_id
            for row in conn.execute(select(task_events.c.task_id, task_events.c.payload))
            if marker in json.dumps(row.payload)
        }
    assert holders and len(holders) < len(before)
    assert marker.encode() in file_bytes(db_path)  # the check below can fail
    blobs_before = blob_files(blobs)

    done = run_archiver(
        "forget", "--matching", marker.upper(), "--reason", "DSR-1", "--actor", "dpo",
        "--yes", env={"ARCHIVER_DATABASE_URL": url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    db.dispose()
    assert marker.encode() not in file_bytes(db_path)
    assert marker.encode() not in b"".join(blob_files(blobs).values())
    after = task_rows(db)
    for task_id in holders:
        row = after[task_id]
        assert row.erased_at is not None and row.output is None and row.payload is None
        assert (row.status, row.credits_used, row.device) == (
            before[task_id].status,
            before[task_id].credits_used,
            before[task_id].device,
        )
    for task_id in set(before) - holders:
        assert after[task_id].erased_at is None and after[task_id].payload is not None
    assert credit_total(db) == credits
    kept = {key for key in blobs_before if not any(t in key for t in holders)}
    assert set(blob_files(blobs)) == kept
    with db.reading() as conn:
        for table in (task_events, artifacts, artifact_files):
            left = select(func.count()).where(table.c.task_id.in_(sorted(holders)))
            assert conn.scalar(left) == 0, table.name
    rows = audit_rows(db)
    assert sorted(r.task_id for r in rows) == sorted(holders)
    digest = hashlib.sha256(marker.upper().encode()).hexdigest()
    assert all(r.matching_sha256 == [digest] and r.actor == "dpo" for r in rows)
    assert all(r.command == "forget" and r.scope == "task" and r.reason == "DSR-1" for r in rows)
    assert all(r.blobs_pending is None for r in rows)
    assert marker not in json.dumps([tuple(r) for r in rows], default=str)
    db.dispose()


def test_forget_without_yes_lists_the_tasks_and_changes_nothing(
    make_simulator: Any, tmp_path: Path
) -> None:
    """A dry run names each task with its credits and events and leaves the file as it was."""
    sim = marked_simulator(make_simulator, "nobody@example.com", tasks=4)
    db_path = tmp_path / "archive.db"
    url = f"sqlite:///{db_path}"
    assert run_archiver("sync", "-q", env=env_for(sim, url, tmp_path / "b")).returncode == 0
    victim = sorted(task_rows(Database(url)))[0]
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    done = run_archiver("forget", victim, "--reason", "check", env={"ARCHIVER_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert victim in done.stdout and "dry run" in done.stdout and "events" in done.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "name the tasks to erase"),
        (("--matching", "  "), "--matching"),
        (("tsk_x", "--reason", " "), "--reason"),
    ],
)
def test_forget_refuses_an_empty_request_with_one_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    """No selection, an empty --matching or an empty --reason: exit 2, one line, no change."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    reason = () if "--reason" in args else ("--reason", "r")
    done = run_archiver("forget", *args, *reason, env={"ARCHIVER_DATABASE_URL": url})
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "a.db").exists()


def test_tombstones_are_never_filled_in_again(database: Database, make_simulator: Any) -> None:
    """After forget, sync, sync --task, --recheck-gone and backfill leave the tombstone as it
    is although the API still serves the task, and say so for the task named."""
    sim = marked_simulator(make_simulator, "t@example.com", tasks=5)
    assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    victim = sorted(task_rows(database))[1]
    done = run_archiver(
        "forget", victim, "--reason", "r", "--yes",
        env={"ARCHIVER_DATABASE_URL": database.url},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tombstone = task_rows(database)[victim]
    passes = [
        (SyncPass(), SyncOptions()),
        (SyncPass(), SyncOptions(task_ids=(victim,))),
        (SyncPass(), SyncOptions(recheck_gone=True)),
        (BackfillPass(), SyncOptions()),
        (BackfillPass(ids=[victim]), SyncOptions()),
    ]
    for work, options in passes:
        result = run_command(work, database, client_config(sim), options)
        assert result.exit_code == 0, result.errors
        assert task_rows(database)[victim] == tombstone
    with database.reading() as conn:
        count = select(func.count()).where(task_events.c.task_id == victim)
        assert conn.scalar(count) == 0
    said = run_archiver("sync", "--task", victim, env=env_for(sim, database.url, "unused"))
    assert said.returncode == 0 and f"task {victim} was erased" in said.stderr


def test_forget_waits_for_a_running_sync_and_its_save_never_brings_the_task_back(
    database_url: str, make_simulator: Any, tmp_path: Path
) -> None:
    """forget beside a real sync: a task the sync has leased is erased once the sync saved
    and released it, and neither that save nor a later sync fills it in again."""
    sim = marked_simulator(make_simulator, "w@example.com", tasks=6, latency_ms=250.0)
    env = env_for(sim, database_url, tmp_path / "b")
    db = Database(database_url)
    db.prepare()
    syncing = start_archiver("sync", "-q", "--concurrency", "1", env=env)
    wait_for_gets(sim, 1)
    with db.reading() as conn:
        leased = list(conn.scalars(select(tasks.c.id).where(tasks.c.lease_owner.is_not(None))))
    assert len(leased) >= 3  # the sync holds the leases of the tasks it has yet to save
    victim = leased[-1]
    done = run_archiver(
        "forget", victim, "--reason", "r", "--yes", "--wait", "60",
        env={"ARCHIVER_DATABASE_URL": database_url},
    )  # fmt: skip
    assert syncing.wait(timeout=60) == 0
    assert done.returncode == 0, done.stdout + done.stderr
    row = task_rows(db)[victim]
    assert row.erased_at is not None and row.last_polled_at is not None
    assert row.last_polled_at < row.erased_at  # the sync saved it first, then it was erased
    assert run_archiver("sync", "-q", env=env).returncode == 0
    row = task_rows(db)[victim]
    assert row.payload is None and row.output is None and row.event_count == 0
    with db.reading() as conn:
        assert conn.scalar(select(func.count()).where(task_events.c.task_id == victim)) == 0
    db.dispose()


def test_forget_and_prune_delete_blobs_on_s3(
    make_simulator: Any, tmp_path: Path, s3_blob_url: str
) -> None:
    """On S3 the erased task's objects are deleted and pruned recordings too; others stay."""
    import s3fs

    sim = marked_simulator(make_simulator, "s3@example.com", tasks=4)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = env_for(sim, url, s3_blob_url)
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    fs = s3fs.S3FileSystem()
    root = s3_blob_url[len("s3://") :]

    def objects() -> set[str]:
        return {p for p in fs.find(root) if "/.tmp/" not in p}

    before = objects()
    victim = sorted(task_rows(Database(url)))[0]
    assert any(victim in key for key in before)
    done = run_archiver("forget", victim, "--reason", "r", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    fs.invalidate_cache()
    assert objects() == {key for key in before if victim not in key}
    done = run_archiver(
        "prune", "--older-than", "1d", "--only", "recordings", "--reason", "r", "--yes", env=env
    )
    assert done.returncode == 0, done.stderr
    fs.invalidate_cache()
    assert objects() == {key for key in before if victim not in key and "recording" not in key}


# --- prune ------------------------------------------------------------------------------------


def test_prune_removes_events_and_blobs_but_keeps_tasks_counts_and_credits(
    database_url: str, make_simulator: Any, tmp_path: Path
) -> None:
    """prune --only recordings,downloads,events: rows and blobs go, each task keeps its row,
    event_count and credits; pruned artifacts are final (sync never fetches them again,
    verify expects them) and every pruned task is audited."""
    sim = marked_simulator(make_simulator, "p@example.com", tasks=5)
    blobs = tmp_path / "blobs"
    env = env_for(sim, database_url, blobs)
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    db = Database(database_url)
    before, credits = task_rows(db), credit_total(db)
    dry = run_archiver("prune", "--older-than", "1d", "--reason", "retention", env=env)
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert task_rows(db) == before
    done = run_archiver("prune", "--older-than", "1d", "--reason", "retention", "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    after = task_rows(db)
    assert credit_total(db) == credits
    for task_id, row in after.items():
        assert row.event_count == before[task_id].event_count
        assert row.erased_at is None and row.payload == before[task_id].payload
        assert (row.events_pruned_at is not None) == (before[task_id].event_count > 0)
    with db.reading() as conn:
        assert conn.scalar(select(func.count()).select_from(task_events)) == 0
        assert conn.scalar(select(func.count()).select_from(artifact_files)) == 0
        states = dict(
            conn.execute(select(artifacts.c.state, func.count()).group_by(artifacts.c.state)).all()
        )
    assert "stored" not in states and states.get("pruned", 0) > 0
    assert blob_files(blobs) == {}
    pruned_tasks = {r.task_id for r in audit_rows(db)}
    assert pruned_tasks and all(r.command == "prune" for r in audit_rows(db))
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    assert run_archiver("backfill", "-q", "--downloads", env=env).returncode == 0
    assert task_rows(db)[sorted(pruned_tasks)[0]].events_pruned_at is not None
    with db.reading() as conn:
        assert conn.scalar(select(func.count()).select_from(task_events)) == 0
    assert blob_files(blobs) == {}
    assert run_archiver("verify", env=env).returncode == 0
    status = json.loads(run_archiver("status", "--json", env=env).stdout)
    assert status["health"]["artifacts_pruned"] == states["pruned"]
    db.dispose()


def test_prune_only_tasks_leaves_tombstones_and_refuses_unknown_parts(
    make_simulator: Any, tmp_path: Path
) -> None:
    """--only tasks erases whole old tasks as forget does; --only with a wrong name exits 2
    listing the valid ones; --status narrows the tasks."""
    sim = marked_simulator(make_simulator, "o@example.com", tasks=6)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = env_for(sim, url, tmp_path / "b")
    assert run_archiver("sync", "-q", env=env).returncode == 0
    bad = run_archiver("prune", "--older-than", "1d", "--only", "videos", "--reason", "r", env=env)
    assert bad.returncode == 2 and "recordings, downloads, events, tasks" in bad.stderr
    db = Database(url)
    statuses = {row.status for row in task_rows(db).values()}
    status = sorted(statuses)[0]
    done = run_archiver(
        "prune", "--older-than", "1d", "--only", "tasks", "--status", status,
        "--reason", "r", "--yes", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for row in task_rows(db).values():
        assert (row.erased_at is not None) == (row.status == status)
    erased = {r.task_id for r in audit_rows(db)}
    assert erased == {t for t, row in task_rows(db).items() if row.status == status}
    status_json = json.loads(run_archiver("status", "--json", env=env).stdout)
    assert status_json["health"]["tasks_erased"] == len(erased)
    db.dispose()


def test_a_blob_that_could_not_be_deleted_is_retried_by_the_next_run(
    make_simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing blob delete stays in erasures.blobs_pending (status counts it) and the next
    verify --repair deletes it; the rows are gone either way."""
    from archiver import governance
    from archiver.blobs import BlobStore
    from archiver.exceptions import BlobStoreError
    from archiver.store.erasure import Audit

    sim = marked_simulator(make_simulator, "b@example.com", tasks=3)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    blobs = tmp_path / "blobs"
    env = env_for(sim, url, blobs)
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    db = Database(url)
    victim = next(t for t, r in task_rows(db).items() if r.recording_url)

    def refuse(self: BlobStore, key: str) -> None:
        raise BlobStoreError(f"blob storage {self.url}: removing {key!r} failed (test)")

    with monkeypatch.context() as patch:
        patch.setattr(BlobStore, "shred", refuse)
        selection = governance.select_tasks(db, [victim], [])
        plan = governance.plan_forget(db, selection)
        outcome = governance.forget(
            db, plan, selection, Audit("t", "r", "forget"), wait_s=0, echo=lambda _: None
        )
    assert outcome.tasks == 1 and outcome.blobs_failed
    assert any(victim in key for key in blob_files(blobs))
    status = json.loads(run_archiver("status", "--json", env=env).stdout)
    assert status["health"]["blob_deletions_pending"] == len(outcome.blobs_failed)
    repaired = run_archiver("verify", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not any(victim in key for key in blob_files(blobs))
    assert all(r.blobs_pending is None for r in audit_rows(db))
    db.dispose()


def test_the_web_view_shows_a_tombstone_and_a_pruned_recording_without_links(
    make_simulator: Any, tmp_path: Path
) -> None:
    """The task page says "Erased on DATE by ACTOR: REASON" and "Pruned on DATE", and links
    to no removed blob."""
    import httpx

    from tests.webseed import serving

    sim = marked_simulator(make_simulator, "web@example.com", tasks=4)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = env_for(sim, url, tmp_path / "b")
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    rows = task_rows(Database(url))
    erased, pruned = sorted(t for t, r in rows.items() if r.recording_url)[:2]
    forget = run_archiver(
        "forget", erased, "--reason", "ticket <42>", "--actor", "dpo", "--yes", env=env
    )
    assert forget.returncode == 0, forget.stderr
    prune = run_archiver(
        "prune", "--older-than", "1d", "--only", "recordings", "--reason", "r", "--yes", env=env
    )
    assert prune.returncode == 0, prune.stderr
    with serving(url) as server:
        page = httpx.get(server.url + "task", params={"id": erased}).text
        assert "Erased on" in page and "by dpo: ticket &lt;42&gt;" in page
        assert "/blob/" not in page
        page = httpx.get(server.url + "task", params={"id": pruned}).text
        assert "Pruned on" in page and "/blob/recording" not in page
        blob = httpx.get(server.url + "blob/recording", params={"task": pruned})
        assert blob.status_code == 404


def test_forget_reports_a_task_another_run_keeps_and_exits_1(
    make_simulator: Any, tmp_path: Path
) -> None:
    """A task whose lease a live run keeps past --wait is left, named, and the exit code is 1."""
    from archiver.store.locks import RunLock

    sim = marked_simulator(make_simulator, "k@example.com", tasks=2)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert run_archiver("sync", "-q", env=env_for(sim, url, tmp_path / "b")).returncode == 0
    db = Database(url)
    victim = sorted(task_rows(db))[0]
    holder = RunLock(db, "backfill")
    holder.acquire()
    try:
        with db.transaction() as conn:
            assert holder.claim(conn, [victim]) == [victim]
        done = run_archiver(
            "forget", victim, "--reason", "r", "--yes", "--wait", "2s",
            env={"ARCHIVER_DATABASE_URL": url},
        )  # fmt: skip
    finally:
        holder.release()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{victim}  left as it was: a running sync or backfill" in done.stdout
    assert task_rows(db)[victim].erased_at is None
    db.dispose()


def test_the_cli_help_of_forget_and_prune_has_an_example() -> None:
    """Every governance command's --help shows an example."""
    for command in ("forget", "prune"):
        done = subprocess.run([ARCHIVER_BIN, command, "--help"], capture_output=True, text=True)
        assert done.returncode == 0 and "Example" in done.stdout


@pytest.mark.parametrize(
    "needle",
    ['élodie "THE" MÜLLER', "Élodie", "müller\\n", 'ÉLODIE "the"'],
)
def test_matching_ignores_case_beyond_ascii_and_finds_text_json_escapes(
    database: Database, make_simulator: Any, needle: str
) -> None:
    """--matching finds non-ASCII text in any case and text that JSON stores escaped
    (quotes, backslashes), on SQLite and PostgreSQL alike, and nothing else."""
    from archiver.store.erasure import tasks_matching

    raw = (
        json.dumps({"name": 'Élodie "the" Müller\\n'}),
        json.dumps({"name": "someone else"}),
        json.dumps({"name": "nobody"}),
        json.dumps({"name": "no one"}),
    )
    sim = make_simulator(tasks=8, events_per_task=2, seed=5, raw_json_values=raw)
    sim.finish_all()
    assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    truth = sim.truth()
    holders = {
        task_id
        for task_id, entry in truth.items()
        if "Müller" in json.dumps(entry, ensure_ascii=False)
    }
    assert holders and len(holders) < len(truth)
    with database.reading() as conn:
        assert tasks_matching(conn, needle) == holders
        assert tasks_matching(conn, needle + "-not-there") == set()


def test_verify_says_a_named_task_is_erased(make_simulator: Any, tmp_path: Path) -> None:
    """verify --task on a tombstone says it was erased and has nothing to verify."""
    sim = marked_simulator(make_simulator, "v@example.com", tasks=2)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    env = env_for(sim, url, tmp_path / "b")
    assert run_archiver("sync", "-q", "--downloads", env=env).returncode == 0
    victim = sorted(task_rows(Database(url)))[0]
    assert run_archiver("forget", victim, "--reason", "r", "--yes", env=env).returncode == 0
    done = run_archiver("verify", "--task", victim, env=env)
    assert done.returncode == 0, done.stderr
    assert f"{victim}: erased on" in done.stdout and "nothing to verify" in done.stdout
