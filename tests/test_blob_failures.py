"""Blob storage that fails, through the real `archiver` command: a full or unwritable
folder and a bucket that refuses writes leave artifacts pending with the reason, the pass
archives every task's status and events and ends partial with one loud line, `status`
and /health say since when blob storage fails, and the first pass after it works again
stores the artifacts exactly. Left-over temporaries of a killed transfer are removed,
never those of a transfer in flight.

The full disk is an 8 MB tmpfs, mounted for the test (needs root, as CI has); where
mounting is not permitted, a read-only folder stands in (it needs a user other than root,
which ignores folder modes); each test prints which one it used.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from archiver.artifacts.cleanup import STALE_TEMPORARY_S, remove_stale_temporaries
from archiver.blobs import TEMP_DIR, BlobStore
from archiver.store.database import Database
from archiver.store.schema import artifacts
from archiver.timestamps import utcnow
from tests.conftest import (
    ARCHIVER_BIN,
    assert_artifacts_match_truth,
    assert_matches_truth,
    run_archiver,
)
from tests.test_cli import env_for
from tests.test_web import start_serve, stop

MiB = 1024 * 1024


@dataclass
class FullFolder:
    """A blob folder that refuses writes until :meth:`free` is called."""

    path: Path
    how: str  # "tmpfs" (full, ENOSPC) or "read-only folder" (EACCES)
    reason: str  # what the archiver's error names

    def free(self) -> None:
        if self.how == "tmpfs":
            (self.path / "filler").unlink()
        else:
            self.path.chmod(0o700)


def _fill(folder: Path) -> None:
    """Write until the filesystem has no byte left."""
    fd = os.open(folder / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for size in (MiB, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[FullFolder]:
    folder = tmp_path / "blobs"
    folder.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    try:
        if mounted:
            _fill(folder)
            found = FullFolder(folder, "tmpfs", "No space left on device")
        elif os.geteuid() != 0:
            folder.chmod(0o500)
            found = FullFolder(folder, "read-only folder", "Permission denied")
        else:
            pytest.skip("cannot mount a tmpfs here, and root writes into read-only folders")
        print(f"full blob store: {found.how}")
        yield found
    finally:
        folder.chmod(0o700)
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def _pending(db: Database) -> dict[tuple[str, str], tuple[str, str | None]]:
    with db.reading() as conn:
        return {
            (row.task_id, row.kind): (row.state, row.last_error)
            for row in conn.execute(select(artifacts))
            if row.state != "absent"
        }


def _links(sim) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {
        (task_id, kind)
        for task_id, entry in sim.truth().items()
        for kind in ("recording", "downloads")
        if entry["task"][f"{kind}_url"]
    }


def _check_failing_pass(done, db: Database, sim, reason: str) -> None:  # type: ignore[no-untyped-def]
    """The pass with failing blob storage: partial, one loud line, every task's status and
    events archived, each artifact with a link pending with the reason."""
    assert done.returncode == 1, done.stderr
    loud = [line for line in done.stderr.splitlines() if "blob storage" in line]
    assert len(loud) == 1 and " ERROR " in loud[0] and "is failing" in loud[0], done.stderr
    assert "sync partial:" in done.stderr.splitlines()[-1]
    assert_matches_truth(db, sim)
    pending = _pending(db)
    assert set(pending) == _links(sim) and pending
    assert all(
        state == "pending" and reason in (error or "") for state, error in pending.values()
    ), pending


def test_a_full_blob_folder_leaves_artifacts_pending_and_archives_every_task(
    database_url: str, make_simulator, full_folder: FullFolder
) -> None:
    """With the blob folder full (or read-only) every task's status and events are still
    archived; status and /health say blob storage fails and since when; once there is room,
    one sync stores every artifact exactly."""
    sim = make_simulator(tasks=12, events_per_task=3, seed=71)
    sim.finish_all()
    env = env_for(sim, database_url, ARCHIVER_BLOB_URL=str(full_folder.path))
    db = Database(database_url)
    try:
        done = run_archiver("sync", "--downloads", "-q", env=env)
        _check_failing_pass(done, db, sim, full_folder.reason)
        status = json.loads(run_archiver("status", "--json", env=env).stdout)
        failing = status["blob_storage_failing"]
        assert failing["failing_since"] and full_folder.reason in failing["last_error"]
        server, base = start_serve(database_url, env={})
        try:
            import urllib.request

            with urllib.request.urlopen(base + "health", timeout=10) as response:
                page = response.read().decode()
        finally:
            stop(server)
        assert f"BLOB STORAGE FAILING since {failing['failing_since']}" in page
        full_folder.free()
        again = run_archiver("sync", "--downloads", "-q", env=env)
        assert again.returncode == 0, again.stderr
        assert_artifacts_match_truth(db, sim)
        status = json.loads(run_archiver("status", "--json", env=env).stdout)
        assert status["blob_storage_failing"] is None
    finally:
        db.dispose()


def test_a_bucket_that_refuses_writes_leaves_artifacts_pending(
    database_url: str, make_simulator, s3_blob_url: str
) -> None:
    """With the bucket gone every write fails: the pass still archives every task, the
    artifacts wait as pending; once the bucket exists, one sync stores them exactly."""
    import s3fs

    sim = make_simulator(tasks=8, events_per_task=3, seed=72)
    sim.finish_all()
    bucket = s3_blob_url.split("://", 1)[1].split("/", 1)[0]
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    fs.rmdir(bucket)
    env = env_for(sim, database_url, ARCHIVER_BLOB_URL=s3_blob_url)
    db = Database(database_url)
    try:
        done = run_archiver("sync", "--downloads", "-q", env=env)
        _check_failing_pass(done, db, sim, "bucket does not exist")
        status = run_archiver("status", env=env).stdout
        assert "BLOB STORAGE FAILING since" in status
        fs.mkdir(bucket)
        again = run_archiver("sync", "--downloads", "-q", env=env)
        assert again.returncode == 0, again.stderr
        assert_artifacts_match_truth(db, sim)
    finally:
        db.dispose()


def test_the_temporary_of_a_killed_transfer_is_removed_by_a_later_pass(
    database_url: str, make_simulator, tmp_path: Path
) -> None:
    """kill -9 mid-transfer leaves a .part; when the link fails on the next pass (403, so
    nothing is written for that artifact again), that pass still removes the .part once
    it is hours old."""
    slow = {"recording_bytes": 8 * MiB, "file_chunk_bytes": 64 * 1024, "file_chunk_delay_s": 0.05}
    sim = make_simulator(tasks=1, seed=73, recording_rate=1.0, **slow)
    sim.finish_all()
    root = tmp_path / "blobs"
    env = env_for(sim, database_url, ARCHIVER_BLOB_URL=str(root))
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "sync", "--downloads", "-q"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    parts: list[Path] = []
    while not any(p.stat().st_size >= MiB for p in parts) and time.monotonic() < deadline:
        time.sleep(0.05)
        parts = list((root / TEMP_DIR).glob("*.recording.*.part"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (part,) = parts
    hours_ago = time.time() - STALE_TEMPORARY_S - 60
    os.utime(part, (hours_ago, hours_ago))  # as if the kill was hours ago
    refusing = make_simulator(tasks=1, seed=73, recording_rate=1.0, file_errors=(403,) * 50)
    refusing.finish_all()
    done = run_archiver("sync", "--downloads", "-q", env=env_for(refusing, database_url,
                        ARCHIVER_BLOB_URL=str(root)))  # fmt: skip
    assert done.returncode == 1 and "403" in done.stderr, done.stderr
    assert not part.exists()
    assert list((root / TEMP_DIR).iterdir()) == []


def test_only_stale_temporaries_of_tasks_no_run_holds_are_removed(tmp_path: Path) -> None:
    """A temporary is removed once it is older than STALE_TEMPORARY_S, unless its task is
    leased (a transfer may be in flight, however long)."""
    store = BlobStore(str(tmp_path / "blobs"))
    writers = {task: store.begin(task, "recording") for task in ("tsk_old", "tsk_held", "tsk_new")}
    for task, writer in writers.items():
        writer.write(b"partial bytes")
        writer._handle.flush()
        if task != "tsk_new":
            when = time.time() - STALE_TEMPORARY_S - 1
            os.utime(store.path(writer.temp_key), (when, when))
    removed = remove_stale_temporaries(store, ["tsk_held"], utcnow())
    assert removed == 1
    left = sorted(p.name.split(".")[0] for p in (tmp_path / "blobs" / TEMP_DIR).iterdir())
    assert left == ["tsk_held", "tsk_new"]
    for writer in writers.values():
        writer.abort()


def test_unfinished_s3_uploads_are_aborted_unless_their_task_is_held(s3_blob_url: str) -> None:
    """Multipart uploads a killed transfer never completed are listed and aborted; one
    whose task is leased is kept. (moto reports one fixed `Initiated` of 2010 for every
    upload, so the age rule is the local test's.)"""
    store = BlobStore(s3_blob_url)
    writers = {task: store.begin(task, "recording") for task in ("tsk_gone", "tsk_held")}
    for writer in writers.values():
        writer.write(os.urandom(9 * MiB))  # past one part: the multipart upload has begun
    assert sorted(t.task_folder for t in store.temporaries()) == ["tsk_gone", "tsk_held"]
    later = utcnow() + timedelta(seconds=STALE_TEMPORARY_S + 1)
    assert remove_stale_temporaries(store, ["tsk_held"], later) == 1
    assert [t.task_folder for t in store.temporaries()] == ["tsk_held"]
    for writer in writers.values():
        writer.abort()
    assert store.temporaries() == []
