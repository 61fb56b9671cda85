"""An archive for the `archiver serve` tests: the analysts' seed (tests/seed.py) plus a real
WebM recording and a downloads zip in blob storage, and tasks whose output and event
payloads are hostile HTML/JS.

tests/data/recording.webm (4 s, 160x90, VP8, 17 KB) was recorded by Chromium itself
(MediaRecorder on a canvas) and remuxed with ``ffmpeg -c copy -cues_to_front 1`` so it
carries its duration and seek index.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from archiver.artifacts import list_zip, save_artifact
from archiver.blobs import BlobStore, blob_key
from archiver.store.database import Database
from archiver.store.schema import artifacts, sync_runs, task_events, tasks
from archiver.timestamps import to_utc
from archiver.web import Running, build_app, open_archive, start
from tests.seed import seed_archive

DATA = Path(__file__).parent / "data"
RECORDING = DATA / "recording.webm"
RECORDING_TASK = "tsk_manual_text"
DOWNLOADS_TASK = "tsk_manual_object"
#: Fields of an event beyond name/payload/id/timestamp, shown on the task page.
HOSTILE_EXTRA = {"note": "<b>bold</b>", "duration_ms": 12}
HOSTILE = {
    "tsk_hostile_img": "<img src=x onerror=alert(1)>",
    "tsk_hostile_script": "</script><script>alert(1)</script>",
}
HOSTILE_PAYLOAD = {"html": "<svg onload=alert(2)>", "js": "</script><script>alert(3)</script>"}
ZIP_MEMBERS = {"report.csv": b"a,b\n1,2\n", "<b>bold</b>.txt": b"hostile name"}


def store_blob(store: BlobStore, task_id: str, kind: str, data: bytes, ext: str) -> Any:
    writer = store.begin(task_id, kind)
    writer.write(data)
    return writer.commit(blob_key(task_id, None, kind, ext))


def add_task(conn: Any, task_id: str, created: int, now: datetime, **values: Any) -> None:
    """A finished task row (done, desktop, 3 credits unless ``values`` say otherwise)."""
    row = {"status": "done", "device": "desktop", "credits_used": 3, **values}
    conn.execute(
        insert(tasks).values(
            id=task_id,
            created_at=created,
            created_at_utc=to_utc(created),
            first_seen_at=now,
            finalized_at=now,
            **row,
        )
    )


def add_fresh_run(conn: Any) -> None:
    """A sync pass that just ended well: the archive is fresh."""
    now = datetime.now(UTC)
    conn.execute(
        insert(sync_runs).values(
            run_id="r1", command="sync", host="h", pid=1, started_at=now, finished_at=now,
            outcome="ok",
        )
    )  # fmt: skip


def seed_web_archive(db: Database, make_simulator: Any, blob_url: str) -> None:
    """seed_archive, then the recording, the zip and the hostile tasks."""
    seed_archive(db, make_simulator)
    store = BlobStore(blob_url)
    rec = store_blob(store, RECORDING_TASK, "recording", RECORDING.read_bytes(), ".webm")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in ZIP_MEMBERS.items():
            archive.writestr(zipfile.ZipInfo(name, (2025, 12, 6, 10, 0, 0)), data)
    dl = store_blob(store, DOWNLOADS_TASK, "downloads", buf.getvalue(), ".zip")
    members, error = list_zip(store, dl.key)
    assert error is None
    now = datetime(2025, 12, 10, tzinfo=UTC)
    created = 1_764_900_000  # 2025-12-05T02:00:00Z
    with db.transaction() as conn:
        conn.execute(
            update(artifacts)
            .where(artifacts.c.task_id == RECORDING_TASK, artifacts.c.kind == "recording")
            .values(
                blob_url=rec.url,
                size_bytes=rec.size,
                sha256=rec.sha256,
                content_type="video/webm",
                fetched_at=now,
                attempts=1,
            )
        )
        save_artifact(
            conn,
            DOWNLOADS_TASK,
            "downloads",
            {
                "state": "stored",
                "blob_url": dl.url,
                "size_bytes": dl.size,
                "sha256": dl.sha256,
                "content_type": "application/zip",
                "fetched_at": now,
                "attempts": 1,
            },
            owner=None,
            files=members,
        )
        for offset, (task_id, output) in enumerate(HOSTILE.items()):
            add_task(conn, task_id, created + offset, now, output=output, event_count=1)
            conn.execute(
                insert(task_events).values(
                    task_id=task_id,
                    event_key=f"hostile-{offset}",
                    event_id=f"ev-{offset}",
                    name="<i>browser_action</i>",
                    payload=HOSTILE_PAYLOAD,
                    extra=HOSTILE_EXTRA,
                    timestamp=created + offset + 5,
                    timestamp_utc=to_utc(created + offset + 5),
                    archived_at=now,
                )
            )


def newest_first(db: Database, key: str = "created") -> list[str]:
    """Every task id in the list's order, computed in Python from the rows."""
    column = {"created": "created_at_utc", "credits": "credits_used"}[key]
    with db.reading() as conn:
        rows = conn.execute(select(tasks.c.id, tasks.c[column])).all()
    valued = sorted((r for r in rows if r[1] is not None), key=lambda r: (r[1], r[0]), reverse=True)
    rest = sorted((r for r in rows if r[1] is None), key=lambda r: r[0], reverse=True)
    return [r[0] for r in valued + rest]


@contextmanager
def serving(database_url: str, **options: Any) -> Iterator[Running]:
    """The app over a read-only connection to ``database_url``, on 127.0.0.1 (any port)."""
    database = open_archive(database_url)
    running = start(build_app(database, **options))
    try:
        yield running
    finally:
        running.stop()
        database.dispose()
