"""Artifacts (--downloads): recordings and downloads archives copied into blob storage.

Real HTTP to the simulator's artifact host on loopback, real SQLite and PostgreSQL, the
local filesystem and S3 (moto's server) as blob stores, and the real `archiver` command
where process behaviour matters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from archiver.artifacts.fetch import address_kind, redirect_refusal
from archiver.artifacts.states import MAX_LISTED_FILES
from archiver.blobs import TEMP_DIR, BlobStore, blob_key, extension_for
from archiver.config import SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.models import strip_query
from archiver.simulator import Simulator
from archiver.simulator.content import many_members_zip
from archiver.stats import RunResult
from archiver.store.database import Database
from archiver.store.schema import artifact_files, artifacts, tasks
from archiver.timestamps import to_utc, utcnow
from tests.conftest import ARCHIVER_BIN, TEST_API_KEY, TlsServer, client_config, run_archiver

MiB = 1024 * 1024


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Any:
    """A migrated SQLite archive, for behaviour that does not depend on the database."""
    db = Database(f"sqlite:///{tmp_path / 'archive.db'}")
    db.prepare()
    yield db
    db.dispose()


def downloads_sync(db: Database, sim: Simulator, root: Path | str, **options: Any) -> RunResult:
    opts = SyncOptions(downloads=True, blob_url=str(root), **options)
    return run_command(SyncPass(), db, client_config(sim), opts)


def artifact_rows(db: Database) -> dict[tuple[str, str], dict[str, Any]]:
    with db.transaction() as conn:
        return {(r.task_id, r.kind): r._asdict() for r in conn.execute(select(artifacts))}


def listed_files(db: Database, task_id: str) -> list[dict[str, Any]]:
    with db.transaction() as conn:
        rows = conn.execute(select(artifact_files).where(artifact_files.c.task_id == task_id)).all()
    return [r._asdict() for r in rows]


def finalized(db: Database, task_id: str) -> bool:
    with db.transaction() as conn:
        return conn.scalar(select(tasks.c.finalized_at).where(tasks.c.id == task_id)) is not None


def pick(sim: Simulator, *, recording: bool = True, downloads: bool = True) -> str:
    """A task whose links are as asked (non-empty when True)."""
    for task_id, entry in sim.truth().items():
        view = entry["task"]
        if bool(view["recording_url"]) == recording and bool(view["downloads_url"]) == downloads:
            return task_id
    raise AssertionError("no task in this scenario has that combination; change the seed")


def expected_path(root: Path, sim: Simulator, task_id: str, kind: str, ext: str) -> Path:
    created = sim.truth()[task_id]["task"]["created_at"]
    return root / blob_key(task_id, to_utc(created), kind, ext)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_downloads_store_every_artifact_with_its_listing(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """One pass stores each link's bytes at the documented path, "" as absent, and lists zips."""
    sim = make_simulator(tasks=6, events_per_task=3, seed=41)
    sim.finish_all()
    root = tmp_path / "blobs"
    result = downloads_sync(database, sim, root)
    assert result.exit_code == 0, result.errors
    rows = artifact_rows(database)
    truth = sim.truth()
    stored = 0
    for task_id, entry in truth.items():
        assert finalized(database, task_id)
        for kind, name, ext in (
            ("recording", "recording.mp4", ".mp4"),
            ("downloads", "downloads.zip", ".zip"),
        ):
            row, link = rows[(task_id, kind)], entry["task"][f"{kind}_url"]
            if link == "":
                assert row["state"] == "absent" and row["blob_url"] is None
                continue
            stored += 1
            path = expected_path(root, sim, task_id, kind, ext)
            size, sha = sim.file_sha256(task_id, name)
            assert row["state"] == "stored"
            assert row["blob_url"] == f"file://{path}"
            assert (row["size_bytes"], row["sha256"]) == (size, sha)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
            assert row["source_url"] == strip_query(link) and "?" not in row["source_url"]
            assert row["content_type"] == (
                "video/mp4" if kind == "recording" else "application/zip"
            )
            assert row["attempts"] == 1 and row["fetched_at"] is not None
            if kind == "downloads":
                with zipfile.ZipFile(io.BytesIO(sim.file_bytes(task_id, name))) as zf:
                    want = {(i.filename, i.file_size, i.compress_size) for i in zf.infolist()}
                got = listed_files(database, task_id)
                assert {(f["name"], f["size_bytes"], f["compressed_bytes"]) for f in got} == want
                assert all(f["modified_at"].year == 2025 for f in got)
    assert stored >= 4 and result.stats.artifacts_stored == stored
    assert files_under(root / TEMP_DIR) == []
    sim.reset_stats()
    again = downloads_sync(database, sim, root)
    assert again.exit_code == 0 and sim.stats["file"] == 0 and sim.stats["get"] == 0


def test_without_downloads_nothing_is_fetched(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """Downloads are off by default: no artifact rows, no file requests, no blob folder."""
    sim = make_simulator(tasks=4, seed=41)
    sim.finish_all()
    result = run_command(SyncPass(), sqlite_db, client_config(sim), SyncOptions())
    assert result.exit_code == 0
    assert artifact_rows(sqlite_db) == {} and sim.stats["file"] == 0
    assert not (tmp_path / "home" / "blobs").exists()


def test_null_link_is_retried_on_later_passes_and_stored_artifacts_are_not_fetched_again(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """null means "not yet": the task stays open; what is stored already is not fetched again."""
    sim = make_simulator(tasks=4, seed=43, recording_rate=1.0)
    sim.finish_all()
    task_id = pick(sim)
    sim.set_time(sim._by_id[task_id].end + 5)  # finished; the recording is not there yet
    root = tmp_path / "blobs"
    first = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert first.exit_code == 0, first.errors
    rows = artifact_rows(database)
    assert rows[(task_id, "recording")]["state"] == "pending"
    assert rows[(task_id, "recording")]["pending_since"] is not None
    assert rows[(task_id, "downloads")]["state"] == "stored"
    assert not finalized(database, task_id)
    sim.advance(10)
    second = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert second.exit_code == 0, second.errors
    assert artifact_rows(database)[(task_id, "recording")]["state"] == "stored"
    assert finalized(database, task_id)
    assert sim.stats[f"file:{task_id}/downloads.zip"] == 1
    assert sim.stats[f"file:{task_id}/recording.mp4"] == 1


def test_null_link_past_the_grace_period_is_recorded_as_failed(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """A link still null after the grace period is failed with the reason; the task closes."""
    sim = make_simulator(tasks=4, seed=43, recording_rate=1.0)
    sim.finish_all()
    task_id = pick(sim)
    sim.set_time(sim._by_id[task_id].end + 5)
    root = tmp_path / "blobs"
    downloads_sync(database, sim, root, task_ids=(task_id,), artifact_grace_s=3600)
    assert artifact_rows(database)[(task_id, "recording")]["state"] == "pending"
    with database.transaction() as conn:
        conn.execute(
            update(artifacts)
            .where(artifacts.c.task_id == task_id, artifacts.c.kind == "recording")
            .values(pending_since=datetime.now(UTC) - timedelta(hours=2))
        )
    result = downloads_sync(database, sim, root, task_ids=(task_id,), artifact_grace_s=3600)
    row = artifact_rows(database)[(task_id, "recording")]
    assert row["state"] == "failed"
    assert "recording_url" in row["last_error"] and "null" in row["last_error"]
    assert "--artifact-grace" in row["last_error"]
    assert finalized(database, task_id)
    assert result.exit_code == 1 and result.stats.errors == 1


@pytest.mark.parametrize("status", [403, 404, 410])
def test_refused_link_is_refreshed_from_get_task(
    sqlite_db: Database, make_simulator, tmp_path: Path, status: int
) -> None:
    """403/404/410 from the artifact host: Get Task is asked for fresh links and it works."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, file_errors=(status,))
    sim.finish_all()
    task_id = pick(sim)
    result = downloads_sync(sqlite_db, sim, tmp_path / "blobs", task_ids=(task_id,))
    assert result.exit_code == 0, result.errors
    rows = artifact_rows(sqlite_db)
    assert {rows[(task_id, k)]["state"] for k in ("recording", "downloads")} == {"stored"}
    assert rows[(task_id, "recording")]["attempts"] == 2
    assert result.stats.artifact_link_refreshes == 2
    assert sim.stats[f"get:{task_id}"] == 1 + 2  # the poll, then one refresh per artifact


def test_link_refreshes_are_bounded_and_attempts_end_in_failure(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """A link refused every time: N refreshes per pass, pending with the error, then failed."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, file_errors=(410,) * 50)
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    first = downloads_sync(
        sqlite_db,
        sim,
        root,
        task_ids=(task_id,),
        artifact_link_refreshes=2,
        artifact_max_attempts=6,
    )
    assert first.exit_code == 1
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert row["state"] == "pending" and row["attempts"] == 3
    assert "HTTP 410" in row["last_error"] and "2 fresh link(s)" in row["last_error"]
    assert "X-Amz-Signature" not in row["last_error"]
    assert row["next_attempt_at"] is not None
    assert sim.stats[f"file:{task_id}/recording.mp4"] == 3
    assert not finalized(sqlite_db, task_id)
    # The default back-off runs out (as the clock would make it) before the next pass.
    with sqlite_db.transaction() as conn:
        conn.execute(
            update(artifacts)
            .where(artifacts.c.task_id == task_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    downloads_sync(
        sqlite_db,
        sim,
        root,
        task_ids=(task_id,),
        artifact_link_refreshes=2,
        artifact_max_attempts=6,
    )
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert row["state"] == "failed" and row["attempts"] == 6
    assert row["last_error"].startswith("gave up after 6 attempts")
    assert finalized(sqlite_db, task_id)
    assert files_under(root / TEMP_DIR) == []


def test_failed_fetch_waits_for_its_back_off(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """A failed fetch is retried on the next passes; after three failed attempts the
    artifact is not fetched again before next_attempt_at."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, file_errors=(500, 500, 500))
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    for attempt in (1, 2, 3):
        sim.reset_stats()
        downloads_sync(sqlite_db, sim, root, task_ids=(task_id,), artifact_retry_backoff_s=3600)
        row = artifact_rows(sqlite_db)[(task_id, "recording")]
        assert row["state"] == "pending" and row["attempts"] == attempt
        assert sim.stats[f"file:{task_id}/recording.mp4"] == 1  # not held back yet
        assert (row["next_attempt_at"] is not None) == (attempt == 3)
    sim.reset_stats()
    result = downloads_sync(
        sqlite_db, sim, root, task_ids=(task_id,), artifact_retry_backoff_s=3600
    )
    assert result.exit_code == 0 and sim.stats[f"file:{task_id}/recording.mp4"] == 0
    assert not finalized(sqlite_db, task_id)


def test_link_that_expires_after_a_time_is_refreshed(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """A link that expired while the other artifact was transferring is refreshed, not lost."""
    sim = make_simulator(
        tasks=3, seed=45, recording_rate=1.0, link_ttl_s=20.0, file_transfer_s=30.0
    )
    sim.finish_all()
    task_id = pick(sim)
    result = downloads_sync(sqlite_db, sim, tmp_path / "blobs", task_ids=(task_id,))
    assert result.exit_code == 0, result.errors
    rows = artifact_rows(sqlite_db)
    assert {rows[(task_id, k)]["state"] for k in ("recording", "downloads")} == {"stored"}
    assert result.stats.artifact_link_refreshes == 1
    assert rows[(task_id, "downloads")]["attempts"] == 2


def test_truncated_transfer_on_a_single_use_link_completes_on_the_next_pass(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """A transfer cut halfway leaves no blob; the next pass gets a fresh link and stores it."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_bytes=3 * MiB + 5,
        single_use_links=True,
        truncate_file_requests=1,
    )
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    final = expected_path(root, sim, task_id, "recording", ".mp4")
    first = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert first.exit_code == 1
    row = artifact_rows(database)[(task_id, "recording")]
    assert row["state"] == "pending" and "retried on a later pass" in row["last_error"]
    assert not final.exists() and files_under(root / TEMP_DIR) == []
    second = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert second.exit_code == 0, second.errors
    row = artifact_rows(database)[(task_id, "recording")]
    assert row["state"] == "stored" and row["attempts"] == 2
    assert (row["size_bytes"], row["sha256"]) == sim.file_sha256(task_id, "recording.mp4")
    assert hashlib.sha256(final.read_bytes()).hexdigest() == row["sha256"]


@pytest.mark.parametrize("chunked", [False, True])
def test_slow_and_chunked_transfers_are_stored_intact(
    sqlite_db: Database, make_simulator, tmp_path: Path, chunked: bool
) -> None:
    """A slow transfer (pauses between chunks), with or without Content-Length, arrives whole."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_bytes=600 * 1024,
        file_chunk_bytes=16 * 1024,
        file_chunk_delay_s=0.005,
        file_chunked=chunked,
    )
    sim.finish_all()
    task_id = pick(sim)
    result = downloads_sync(sqlite_db, sim, tmp_path / "blobs", task_ids=(task_id,))
    assert result.exit_code == 0, result.errors
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert (row["size_bytes"], row["sha256"]) == sim.file_sha256(task_id, "recording.mp4")


@pytest.mark.parametrize("chunked", [False, True])
def test_size_limit_is_enforced_while_streaming(
    sqlite_db: Database, make_simulator, tmp_path: Path, chunked: bool
) -> None:
    """Over --max-artifact-size: the transfer stops early, nothing is stored, the row says why."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_bytes=64 * MiB,
        file_chunk_bytes=256 * 1024,
        file_chunked=chunked,
    )
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    result = downloads_sync(sqlite_db, sim, root, task_ids=(task_id,), max_artifact_bytes=1 * MiB)
    assert result.exit_code == 1
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert row["state"] == "failed" and "1 MiB limit" in row["last_error"]
    assert "--max-artifact-size" in row["last_error"]
    assert row["blob_url"] is None
    assert not expected_path(root, sim, task_id, "recording", ".mp4").exists()
    assert files_under(root / TEMP_DIR) == []
    assert sim.stats["file_bytes"] < 32 * MiB  # the 64 MiB body was not read to its end
    assert finalized(sqlite_db, task_id)  # failed is final


@pytest.mark.parametrize(
    "link", ["file:///etc/passwd", "ftp://127.0.0.1/recording.mp4", "javascript:alert(1)"]
)
def test_only_http_links_are_followed(
    sqlite_db: Database, make_simulator, tmp_path: Path, link: str
) -> None:
    """A recording_url that is not http(s) is never fetched and is recorded as failed."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, recording_url_override=link)
    sim.finish_all()
    task_id = pick(sim)
    result = downloads_sync(sqlite_db, sim, tmp_path / "blobs", task_ids=(task_id,))
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert row["state"] == "failed" and "not an http:// or https:// link" in row["last_error"]
    assert sim.stats[f"file:{task_id}/recording.mp4"] == 0
    assert artifact_rows(sqlite_db)[(task_id, "downloads")]["state"] == "stored"
    assert result.exit_code == 1


@pytest.mark.parametrize(
    ("redirect", "state"),
    [("http", "stored"), ("file:///etc/passwd", "failed"), ("ftp://127.0.0.1/x", "failed")],
)
def test_redirects_are_followed_only_to_http(
    sqlite_db: Database, make_simulator, tmp_path: Path, redirect: str, state: str
) -> None:
    """A redirect to http(s) is followed; one to another scheme is refused and recorded."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, file_redirect=redirect)
    sim.finish_all()
    task_id = pick(sim)
    downloads_sync(sqlite_db, sim, tmp_path / "blobs", task_ids=(task_id,))
    row = artifact_rows(sqlite_db)[(task_id, "recording")]
    assert row["state"] == state
    if state == "stored":
        assert row["sha256"] == sim.file_sha256(task_id, "recording.mp4")[1]
    else:
        assert "redirects to" in row["last_error"] and "not an http(s) link" in row["last_error"]


def test_hostile_member_names_are_listed_never_extracted(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """Names like ../../etc/passwd and /etc/shadow are recorded verbatim; no file is written."""
    probe = make_simulator(tasks=3, seed=45, recording_rate=1.0)
    probe.finish_all()
    task_id = pick(probe)
    sim = make_simulator(
        tasks=3, seed=45, recording_rate=1.0, hostile_zip_task_ids=frozenset({task_id})
    )
    sim.finish_all()
    root = tmp_path / "blobs"
    result = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert result.exit_code == 0, result.errors
    names = {f["name"]: f for f in listed_files(database, task_id)}
    assert {"../../etc/passwd", "/etc/shadow", "a/../../../escape.txt", "ünïcödé/名前.txt"} <= set(
        names
    )
    assert names["../../etc/passwd"]["modified_at"].replace(tzinfo=UTC) == datetime(
        2026, 1, 2, 3, 4, 6, tzinfo=UTC
    )
    written = [p.relative_to(tmp_path) for p in files_under(tmp_path)]
    assert all(
        p.parts[0] in ("blobs", "archive.db", "archive.db-wal", "archive.db-shm") for p in written
    )
    assert {p.name for p in written if p.parts[0] == "blobs"} == {"recording.mp4", "downloads.zip"}


def test_corrupt_zip_is_stored_with_its_listing_error(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """A downloads archive that is not a readable zip is kept as it came; the error is recorded."""
    probe = make_simulator(tasks=3, seed=45, recording_rate=1.0)
    probe.finish_all()
    task_id = pick(probe)
    sim = make_simulator(
        tasks=3, seed=45, recording_rate=1.0, corrupt_zip_task_ids=frozenset({task_id})
    )
    sim.finish_all()
    root = tmp_path / "blobs"
    result = downloads_sync(database, sim, root, task_ids=(task_id,))
    assert result.exit_code == 0, result.errors
    row = artifact_rows(database)[(task_id, "downloads")]
    assert row["state"] == "stored" and "not a readable zip" in row["last_error"]
    path = expected_path(root, sim, task_id, "downloads", ".zip")
    assert path.read_bytes() == sim.file_bytes(task_id, "downloads.zip")
    assert listed_files(database, task_id) == []
    assert finalized(database, task_id)


def test_blob_already_stored_with_the_same_sha256_is_not_written_again(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """A pass that lost its database write re-finds the identical blob and leaves it as it is."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0)
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    downloads_sync(sqlite_db, sim, root, task_ids=(task_id,))
    path = expected_path(root, sim, task_id, "recording", ".mp4")
    before = os.stat(path)
    with sqlite_db.transaction() as conn:  # as if killed after the move, before the commit
        conn.execute(artifacts.delete())
        conn.execute(update(tasks).values(finalized_at=None))
    result = downloads_sync(sqlite_db, sim, root, task_ids=(task_id,))
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert result.stats.artifacts_stored == 2 and result.stats.artifact_bytes == 0
    assert artifact_rows(sqlite_db)[(task_id, "recording")]["state"] == "stored"


def test_the_extension_follows_the_content_type(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """video/webm is stored as .webm; octet-stream falls back to the link's .zip."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_content_type="video/webm",
        downloads_content_type="application/octet-stream",
    )
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    downloads_sync(sqlite_db, sim, root, task_ids=(task_id,))
    assert expected_path(root, sim, task_id, "recording", ".webm").exists()
    assert expected_path(root, sim, task_id, "downloads", ".zip").exists()
    assert extension_for("application/octet-stream", "http://h/x/downloads.zip?sig") == ".zip"


def test_s3_blob_store_end_to_end(database: Database, make_simulator, s3_blob_url: str) -> None:
    """Through fsspec on S3 (moto server): blobs land under the prefix, zips are listed."""
    import s3fs

    probe = make_simulator(tasks=4, seed=47, recording_rate=1.0)
    probe.finish_all()
    hostile = pick(probe)
    sim = make_simulator(
        tasks=4, seed=47, recording_rate=1.0, hostile_zip_task_ids=frozenset({hostile})
    )
    sim.finish_all()
    result = downloads_sync(database, sim, s3_blob_url)
    assert result.exit_code == 0, result.errors
    fs = s3fs.S3FileSystem(
        endpoint_url=os.environ["AWS_ENDPOINT_URL"], key="testing", secret="testing"
    )
    rows = artifact_rows(database)
    stored = [row for row in rows.values() if row["state"] == "stored"]
    assert stored
    for row in stored:
        assert row["blob_url"].startswith(s3_blob_url + "/tasks/")
        data = fs.cat_file(row["blob_url"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert "../../etc/passwd" in {f["name"] for f in listed_files(database, hostile)}
    assert not fs.exists(s3_blob_url + "/" + TEMP_DIR)


def env_for(sim: Simulator, database_url: str, blob_url: str, **extra: str) -> dict[str, str]:
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_BLOB_URL": blob_url,
        **extra,
    }


def test_verify_reports_missing_and_corrupt_blobs_and_repair_fetches_them(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """`verify` exits 1 naming damaged blobs; `--repair` fetches them again; status counts."""
    sim = make_simulator(tasks=4, seed=49, recording_rate=1.0, file_errors=(403,))
    sim.finish_all()
    root = tmp_path / "blobs"
    env = env_for(sim, database_url, str(root))
    done = run_archiver("sync", "--downloads", "-v", env=env)
    assert done.returncode == 0, done.stderr
    assert "X-Amz-Signature=" not in done.stderr  # presigned queries are never logged
    ok = run_archiver("verify", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 missing, 0 corrupt" in ok.stdout
    blobs = files_under(root / "tasks")
    blobs[0].unlink()
    with blobs[1].open("ab") as handle:
        handle.write(b"!")
    bad = run_archiver("verify", env=env)
    assert bad.returncode == 1
    assert "1 missing, 1 corrupt" in bad.stdout
    assert "missing  " in bad.stdout and "corrupt  " in bad.stdout
    # Its last line says what fixes them; a clean run has nothing to fix.
    assert "`archiver verify --repair`" in bad.stdout.strip().splitlines()[-1]
    assert "--repair" not in ok.stdout
    fixed = run_archiver("verify", "--repair", env=env)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired 2 of 2" in fixed.stdout
    assert run_archiver("verify", env=env).returncode == 0
    status = run_archiver("status", "--json", env=env)
    report = json.loads(status.stdout)
    db = Database(database_url)
    rows = artifact_rows(db)
    db.dispose()
    assert report["artifacts_by_state"]["stored"] == sum(
        1 for r in rows.values() if r["state"] == "stored"
    )
    assert report["artifact_bytes_stored"] == sum(
        r["size_bytes"] for r in rows.values() if r["state"] == "stored"
    )
    text = run_archiver("status", env=env)
    assert "artifacts:" in text.stdout and "stored" in text.stdout
    for row in rows.values():
        for column in ("source_url", "last_error", "blob_url"):
            assert "X-Amz-Signature" not in (row[column] or "")


def test_a_repair_that_fails_keeps_each_row_as_it_was_and_notes_why(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """`verify --repair` (RepairSettler): an artifact it cannot fetch again keeps its state
    ("stored" stays stored, never "failed") with the failure in last_error; the others
    are repaired."""
    from archiver.artifacts import artifacts_to_verify, repair_and_report
    from archiver.config import ArtifactConfig

    sim = make_simulator(tasks=3, seed=49, recording_rate=1.0)
    sim.finish_all()
    root = tmp_path / "blobs"
    assert downloads_sync(sqlite_db, sim, root).exit_code == 0
    before = artifact_rows(sqlite_db)
    with sqlite_db.reading() as conn:
        todo = artifacts_to_verify(conn, None)
    recordings = {item.task_id for item in todo if item.kind == "recording"}
    assert recordings and len(todo) > len(recordings)
    # The same account, whose recording links are now not http(s): refused at once.
    moved = make_simulator(
        tasks=3, seed=49, recording_rate=1.0, recording_url_override="ftp://elsewhere/r.mp4"
    )
    moved.finish_all()
    lines: list[str] = []
    unrepaired = repair_and_report(
        sqlite_db,
        BlobStore(str(root)),
        client_config(moved),
        ArtifactConfig(blob_url=str(root)),
        todo,
        echo=lines.append,
    )
    assert unrepaired == len(recordings)
    assert lines[-1] == f"repaired {len(todo) - len(recordings)} of {len(todo)}"
    after = artifact_rows(sqlite_db)
    for task_id in recordings:
        row, was = after[(task_id, "recording")], before[(task_id, "recording")]
        assert row["state"] == "stored" and row["blob_url"] == was["blob_url"]
        assert row["attempts"] == was["attempts"] + 1
        assert "ftp://elsewhere/r.mp4" in row["last_error"]
        assert row["next_attempt_at"] is None
        assert f"not repaired {task_id} recording: " in "\n".join(lines)


def test_verify_over_s3(
    sqlite_db: Database, make_simulator, s3_blob_url: str, tmp_path: Path
) -> None:
    """`archiver verify` re-reads blobs stored on S3 and finds them intact."""
    sim = make_simulator(tasks=3, seed=51, recording_rate=1.0)
    sim.finish_all()
    result = downloads_sync(sqlite_db, sim, s3_blob_url)
    assert result.exit_code == 0, result.errors
    done = run_archiver(
        "verify", env=env_for(sim, f"sqlite:///{tmp_path / 'archive.db'}", s3_blob_url)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 missing, 0 corrupt" in done.stdout


def all_blobs(store: BlobStore) -> list[str]:
    """Every object under the store's root, as keys (local folders and S3 alike)."""
    store.fs.invalidate_cache()
    try:
        found = store.fs.find(store.root)
    except FileNotFoundError:
        return []
    return sorted(str(path)[len(store.root) + 1 :] for path in found)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_during_a_download_leaves_no_partial_blob_and_the_next_pass_completes(
    database_url: str, make_simulator, tmp_path: Path, backend: str, request
) -> None:
    """kill -9 mid-transfer: no partial blob is visible; the next `sync` stores it whole."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_bytes=4 * MiB,
        file_chunk_bytes=32 * 1024,
        file_chunk_delay_s=0.005,
    )
    sim.finish_all()
    task_id = pick(sim)
    blob_url = (
        str(tmp_path / "blobs") if backend == "local" else request.getfixturevalue("s3_blob_url")
    )
    store = BlobStore(blob_url)
    env = env_for(sim, database_url, blob_url)
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "sync", "--downloads", "--task", task_id, "-q"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while sim.stats["file_bytes"] < 1 * MiB + 512 * 1024:  # a chunk or two is written
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("the download never got going")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    key = blob_key(task_id, to_utc(sim.truth()[task_id]["task"]["created_at"]), "recording", ".mp4")
    assert not store.exists(key)
    assert not [k for k in all_blobs(store) if k.startswith("tasks/") and "recording" in k]
    done = run_archiver("sync", "--downloads", "--task", task_id, "-q", env=env)
    assert done.returncode == 0, done.stderr
    assert store.sha256(key) == sim.file_sha256(task_id, "recording.mp4")
    assert not [k for k in all_blobs(store) if k.startswith(TEMP_DIR)]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--blob-url", "nosuchproto://bucket/x"], "not usable"),
        (["--max-artifact-size", "lots"], "--max-artifact-size 'lots' is not a size"),
        (["--artifact-grace", "soon"], "--artifact-grace 'soon' is not a duration"),
    ],
)
def test_bad_artifact_options_exit_2_and_say_what_to_do(
    make_simulator, tmp_path: Path, args: list[str], needle: str
) -> None:
    """Unusable --blob-url / size / grace values stop `sync --downloads` with exit 2."""
    sim = make_simulator(tasks=1)
    env = env_for(sim, f"sqlite:///{tmp_path / 'a.db'}", str(tmp_path / "blobs"))
    done = run_archiver("sync", "--downloads", *args, env=env)
    assert done.returncode == 2
    assert needle in done.stderr


def test_verify_help_has_an_example() -> None:
    """`archiver verify --help` documents --repair with an example."""
    done = run_archiver("verify", "--help")
    assert done.returncode == 0 and "Example" in done.stdout and "--repair" in done.stdout


def test_backfill_with_downloads_stores_artifacts(
    sqlite_db: Database, make_simulator, tmp_path: Path
) -> None:
    """`backfill --downloads` reads history with downloads=true and stores the artifacts."""
    sim = make_simulator(tasks=5, seed=53, recording_rate=1.0)
    sim.finish_all()
    options = SyncOptions(downloads=True, blob_url=str(tmp_path / "blobs"))
    result = run_command(BackfillPass(), sqlite_db, client_config(sim), options)
    assert result.exit_code == 0, result.errors
    rows = artifact_rows(sqlite_db)
    assert len(rows) == 10 and {r["state"] for r in rows.values()} <= {"stored", "absent"}
    assert sum(r["state"] == "stored" for r in rows.values()) >= 5


def test_sigterm_during_a_download_drops_the_partial_blob_and_exits_143(
    make_simulator, tmp_path: Path
) -> None:
    """SIGTERM stops a long transfer at once: temp file removed, task left for the next pass."""
    sim = make_simulator(
        tasks=3,
        seed=45,
        recording_rate=1.0,
        recording_bytes=8 * MiB,
        file_chunk_bytes=32 * 1024,
        file_chunk_delay_s=0.01,
    )
    sim.finish_all()
    task_id = pick(sim)
    root = tmp_path / "blobs"
    database_url = f"sqlite:///{tmp_path / 'term.db'}"
    env = env_for(sim, database_url, str(root))
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "sync", "--downloads", "--task", task_id, "-q"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        ".recording." in p.name for p in files_under(root / TEMP_DIR)
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert files_under(root / TEMP_DIR) == []
    assert all(p.name != "recording.mp4" for p in files_under(root / "tasks"))
    db = Database(database_url)
    assert not finalized(db, task_id)
    db.dispose()


def test_backfill_with_downloads_covers_tasks_archived_while_downloads_were_off(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """Turning downloads on later: backfill --downloads fetches artifacts of finalized tasks."""
    sim = make_simulator(tasks=8, events_per_task=3, seed=41)
    sim.finish_all()
    assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    assert artifact_rows(database) == {}
    options = SyncOptions(downloads=True, blob_url=str(tmp_path / "blobs"))
    result = run_command(BackfillPass(), database, client_config(sim), options)
    assert result.exit_code == 0, result.errors
    rows = artifact_rows(database)
    assert {task_id for task_id, _ in rows} == set(sim.truth())
    assert all(row["state"] in ("stored", "absent") for row in rows.values())
    assert all(finalized(database, task_id) for task_id in sim.truth())
    sim.reset_stats()
    again = run_command(BackfillPass(), database, client_config(sim), options)
    assert again.exit_code == 0 and sim.stats["get"] == 0


def test_an_artifact_host_with_an_untrusted_certificate_is_refused_and_nothing_stored(
    tls_server: TlsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS is verified: an https artifact host whose certificate no trusted CA signed gets
    no request and nothing is stored; once its CA is trusted, the same link is fetched."""
    import asyncio

    from archiver.artifacts.fetch import ArtifactFetcher
    from archiver.config import ArtifactConfig
    from archiver.exceptions import ArtifactTransferError

    store = BlobStore(str(tmp_path / "blobs"))
    url = f"{tls_server.url}/rec.mp4?X-Amz-Signature=secret"

    async def fetch() -> bytes:
        config = ArtifactConfig(
            max_bytes=1 << 20, timeout_s=5, connect_timeout_s=5, max_connections=2
        )
        fetcher = ArtifactFetcher(store, config)
        try:
            fetched = await fetcher.download("t1", None, "recording", url)
        finally:
            await fetcher.aclose()
        with store.fs.open(f"{store.root}/{fetched.blob.key}", "rb") as f:
            return bytes(f.read())

    with pytest.raises(ArtifactTransferError, match="TLS certificate not trusted") as refused:
        asyncio.run(fetch())
    assert "secret" not in str(refused.value)  # the presigned signature is never shown
    assert tls_server.requests == []
    assert all_blobs(store) == []

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))  # httpx's context trusts it
    assert asyncio.run(fetch()) == b"video bytes"
    assert tls_server.requests == ["/rec.mp4?X-Amz-Signature=secret"]


@pytest.mark.parametrize(
    ("redirect", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://10.255.255.1/recording.mp4", "private"),
        ("http://192.168.0.1/recording.mp4", "private"),
    ],
)
def test_redirects_into_restricted_ranges_are_refused(
    database: Database, make_simulator, tmp_path: Path, redirect: str, kind: str
) -> None:
    """A link on this machine redirecting to the metadata service or a private network is
    refused without a request there, and recorded as failed, naming the range."""
    sim = make_simulator(tasks=3, seed=45, recording_rate=1.0, file_redirect=redirect)
    sim.finish_all()
    task_id = pick(sim)
    started = time.monotonic()
    downloads_sync(database, sim, tmp_path / "blobs", task_ids=(task_id,))
    row = artifact_rows(database)[(task_id, "recording")]
    assert row["state"] == "failed", row
    assert f"a {kind} address" in row["last_error"] and "nothing was fetched" in row["last_error"]
    assert time.monotonic() - started < 20  # refused, not a connection that timed out


@pytest.mark.parametrize(
    ("link", "target", "refused"),
    [
        ({None}, {None}, None),  # public to public
        ({None}, {"loopback"}, "loopback"),
        ({None}, {"link-local"}, "link-local"),
        ({None}, {None, "private"}, "private"),  # a name resolving to both
        ({"loopback"}, {"loopback"}, None),  # the simulator: 127.0.0.1 to 127.0.0.1
        ({"loopback"}, {"private"}, "private"),
        ({"private"}, {"private"}, None),  # an artifact host on the private network
        ({"private"}, {"link-local"}, "link-local"),
        ({"loopback"}, {None}, None),
    ],
)
def test_redirect_rule(link: set[str | None], target: set[str | None], refused: str | None) -> None:
    """A redirect into a restricted range is followed only when the link was in it too."""
    assert redirect_refusal(link, target) == refused


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_ranges(address: str, kind: str | None) -> None:
    """Each address is classed in the range it belongs to (None: public)."""
    assert address_kind(address) == kind


def test_zip_listing_stops_at_the_listed_maximum_in_bounded_memory(tmp_path: Path) -> None:
    """A zip of 300,000 empty members lists the first 100,000, says how many it has, and
    costs under 50 MB more RSS than listing nothing (zipfile read all 300,000 entries)."""
    root = tmp_path / "blobs"
    folder = root / "tasks" / "undated" / "tsk_z"
    folder.mkdir(parents=True)
    (folder / "downloads.zip").write_bytes(many_members_zip(300_000))
    # Peak RSS of the process (VmHWM: ru_maxrss would carry pytest's over the exec).
    code = (
        "import re, sys\n"
        "from archiver.artifacts import list_zip\n"
        "from archiver.blobs import BlobStore\n"
        "def peak(): return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status')"
        ".read()).group(1)) // 1024\n"
        "store = BlobStore(sys.argv[1], create=False)\n"
        "before = peak()\n"
        "members, error = list_zip(store, 'tasks/undated/tsk_z/downloads.zip')\n"
        "print(len(members), members[-1]['name'], peak() - before, error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    listed, last, added_mb, error = done.stdout.split(" ", 3)
    assert (int(listed), last) == (MAX_LISTED_FILES, f"f{MAX_LISTED_FILES - 1:07d}")
    assert "has 300000 members; only the first 100000 are listed" in error
    assert int(added_mb) < 50, f"listing added {added_mb} MB"
