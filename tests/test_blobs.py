"""The blob store (archiver.blobs): safe layout, atomic writes, permissions, backends."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.blobs import (
    TEMP_DIR,
    BlobStore,
    blob_key,
    extension_for,
    task_folder,
)
from archiver.config import default_blob_url
from archiver.exceptions import ConfigError

DAY = datetime(2026, 11, 28, 23, 59, tzinfo=UTC)
HOSTILE_IDS = [
    "..",
    ".",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..\\..\\windows",
    "a\x00b",
    "x" * 5000,
    "TSK_UPPER",
    "",
    "~x00",
    "ünïcödé",
    "\ud800",
    " spaced ",
    "tsk_ok.mp4",
]


def _safe_segment(segment: str) -> bool:
    return (
        segment not in ("", ".", "..")
        and not set(segment) & {"/", "\\", "\x00"}
        and len(segment) <= 130
        and segment.isascii()
    )


def test_plain_task_ids_are_used_as_they_are() -> None:
    """A Smooth-style id (lower-case letters, digits, _ and -) is its own folder name."""
    assert task_folder("tsk_0a1b2c3d4e5f") == "tsk_0a1b2c3d4e5f"
    assert blob_key("tsk_0a1b", DAY, "recording", ".mp4") == (
        "tasks/2026/11/28/tsk_0a1b/recording.mp4"
    )


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
def test_hostile_task_ids_cannot_steer_a_path(task_id: str, tmp_path: Path) -> None:
    """`..`, separators, NUL and very long ids become one safe segment inside the root."""
    folder = task_folder(task_id)
    assert _safe_segment(folder), folder
    store = BlobStore(str(tmp_path / "root"))
    key = blob_key(task_id, DAY, "downloads", ".zip")
    assert key.split("/")[4] == folder
    resolved = os.path.realpath(store.path(key))
    assert resolved.startswith(str(tmp_path / "root" / "tasks" / "2026" / "11" / "28") + "/")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80), st.text(max_size=80))
def test_distinct_task_ids_get_distinct_safe_folders(a: str, b: str) -> None:
    """The id encoding is injective and always yields a safe single path segment."""
    assert _safe_segment(task_folder(a))
    if a != b:
        assert task_folder(a) != task_folder(b)


def test_undated_tasks_get_their_own_partition() -> None:
    """A task without created_at is filed under tasks/undated/."""
    assert blob_key("tsk_1", None, "recording", ".webm") == "tasks/undated/tsk_1/recording.webm"


@pytest.mark.parametrize(
    ("content_type", "url", "expected"),
    [
        ("video/mp4", None, ".mp4"),
        ("video/webm; codecs=vp9", None, ".webm"),
        ("application/zip", None, ".zip"),
        ("application/x-zip-compressed", None, ".zip"),
        ("application/octet-stream", "https://h/x/recording.mp4?sig=1", ".mp4"),
        ("binary/octet-stream", "https://h/x/file.exe", ".bin"),
        (None, None, ".bin"),
        ("image/png", None, ".bin"),
        ("text/x-evil/../../x", None, ".bin"),
        ("text/html", "https://h/x/page.html", ".bin"),
        ("image/svg+xml", None, ".bin"),
        ("application/octet-stream", "https://h/x/page.html?sig=1", ".bin"),
        ("video/quicktime", "https://h/x/recording.mp4", ".bin"),
    ],
)
def test_extension_follows_the_content_type(
    content_type: str | None, url: str | None, expected: str
) -> None:
    """The blob's extension is .mp4, .webm or .zip from Content-Type (or a generic type's
    link), else .bin: no stored type ever names a blob .html or .svg."""
    assert extension_for(content_type, url) == expected


def test_a_write_is_invisible_under_its_final_name_until_committed(tmp_path: Path) -> None:
    """Bytes go to .tmp/ first; the final name appears only at commit, with size and hash."""
    store = BlobStore(str(tmp_path / "blobs"))
    key = blob_key("tsk_a", DAY, "recording", ".mp4")
    writer = store.begin("tsk_a", "recording")
    writer.write(b"x" * 1000)
    assert not store.exists(key)
    (temp,) = (tmp_path / "blobs" / TEMP_DIR).iterdir()
    assert temp.name.startswith("tsk_a.recording.")
    writer.write(b"y" * 24)
    info = writer.commit(key)
    assert info.size == 1024 and info.rewritten
    assert info.sha256 == hashlib.sha256(b"x" * 1000 + b"y" * 24).hexdigest()
    assert store.sha256(key) == (1024, info.sha256)
    assert info.url == f"file://{tmp_path}/blobs/{key}"
    assert list((tmp_path / "blobs" / TEMP_DIR).iterdir()) == []


def test_abort_leaves_nothing_behind(tmp_path: Path) -> None:
    """An aborted write removes its temporary file and never creates the final one."""
    store = BlobStore(str(tmp_path / "blobs"))
    writer = store.begin("tsk_a", "downloads")
    writer.write(b"partial")
    writer.abort()
    assert list((tmp_path / "blobs" / TEMP_DIR).iterdir()) == []
    assert not (tmp_path / "blobs" / "tasks").exists()


def test_local_blobs_are_owner_only(tmp_path: Path) -> None:
    """Folders the store creates are 0700 and blob files 0600, whatever the umask."""
    old = os.umask(0)
    try:
        store = BlobStore(str(tmp_path / "blobs"))
        key = blob_key("tsk_p", DAY, "recording", ".mp4")
        writer = store.begin("tsk_p", "recording")
        writer.write(b"data")
        writer.commit(key)
    finally:
        os.umask(old)
    final = Path(store.path(key))
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    folder = final.parent
    while folder != tmp_path:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        folder = folder.parent


def test_identical_blob_is_not_written_again(tmp_path: Path) -> None:
    """Committing bytes whose SHA-256 is already stored under the name keeps the old file."""
    store = BlobStore(str(tmp_path / "blobs"))
    key = blob_key("tsk_d", DAY, "recording", ".mp4")
    for _ in range(2):
        writer = store.begin("tsk_d", "recording")
        writer.write(b"same bytes")
        info = writer.commit(key)
        if info.rewritten:
            first = os.stat(store.path(key))
    assert not info.rewritten
    again = os.stat(store.path(key))
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert list((tmp_path / "blobs" / TEMP_DIR).iterdir()) == []


def test_leftovers_of_an_interrupted_write_are_discarded(tmp_path: Path) -> None:
    """discard_temporaries removes that artifact's leftovers only."""
    store = BlobStore(str(tmp_path / "blobs"))
    store.begin("tsk_k", "recording").write(b"left behind")
    other = store.begin("tsk_k", "downloads")
    other.write(b"in flight")
    assert store.discard_temporaries("tsk_k", "recording") == 1
    left = [p.name for p in (tmp_path / "blobs" / TEMP_DIR).iterdir()]
    assert len(left) == 1 and left[0].startswith("tsk_k.downloads.")


def test_default_root_is_blobs_inside_archiver_home(tmp_path: Path) -> None:
    """Without --blob-url the root is $ARCHIVER_HOME/blobs; ARCHIVER_BLOB_URL overrides it."""
    assert default_blob_url() == str(tmp_path / "home" / "blobs")
    assert default_blob_url({"ARCHIVER_BLOB_URL": "s3://b/p"}) == "s3://b/p"
    store = BlobStore(f"file://{tmp_path}/viaurl")
    assert store.local and store.url == f"file://{tmp_path}/viaurl"
    assert (tmp_path / "viaurl").is_dir()


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nosuchproto://bucket/x", "not usable"),
        ("gs://bucket/prefix", "smooth-archiver[gcs]"),
        ("", "empty"),
    ],
)
def test_unusable_blob_urls_are_config_errors(url: str, needle: str) -> None:
    """A bad or unsupported root fails with a ConfigError that says what to do."""
    pytest.importorskip("s3fs")
    if needle == "smooth-archiver[gcs]":
        try:
            import gcsfs  # noqa: F401

            pytest.skip("gcsfs is installed here")
        except ImportError:
            pass
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        BlobStore(url)


def test_s3_store_writes_atomically_and_reads_back(s3_blob_url: str) -> None:
    """On S3 (moto server) a write is under .tmp/ until commit, then readable and hashed."""
    store = BlobStore(s3_blob_url)
    key = blob_key("tsk_s3", DAY, "recording", ".mp4")
    payload = os.urandom(9 * 1024 * 1024 + 17)  # more than one multipart-upload part
    writer = store.begin("tsk_s3", "recording")
    for i in range(0, len(payload), 1 << 20):
        writer.write(payload[i : i + (1 << 20)])
    assert not store.exists(key)
    info = writer.commit(key)
    assert info.url == f"{s3_blob_url}/{key}"
    assert store.sha256(key) == (len(payload), hashlib.sha256(payload).hexdigest())
    try:
        leftovers = store.fs.ls(store.path(TEMP_DIR), refresh=True)
    except FileNotFoundError:
        leftovers = []
    assert leftovers == []
    again = store.begin("tsk_s3", "recording")
    again.write(payload)
    assert not again.commit(key).rewritten
    with store.open(key) as handle:
        handle.seek(-5, os.SEEK_END)
        assert handle.read() == payload[-5:]


def test_blob_url_under_another_root_can_still_be_read(tmp_path: Path) -> None:
    """for_blob_url opens a blob recorded under a root other than the current one."""
    old = BlobStore(str(tmp_path / "old"))
    key = blob_key("tsk_o", DAY, "recording", ".mp4")
    writer = old.begin("tsk_o", "recording")
    writer.write(b"old root")
    info = writer.commit(key)
    store, found = BlobStore.for_blob_url(info.url)
    assert found == key and store.sha256(found) == (8, hashlib.sha256(b"old root").hexdigest())


def test_s3_abort_cancels_the_upload(s3_blob_url: str) -> None:
    """An aborted S3 write (already past one multipart part) leaves no object behind."""
    store = BlobStore(s3_blob_url)
    writer = store.begin("tsk_ab", "recording")
    writer.write(os.urandom(9 * 1024 * 1024))
    writer.abort()
    bucket = s3_blob_url.split("://", 1)[1].split("/", 1)[0]
    store.fs.invalidate_cache()
    assert store.fs.find(bucket) == []
