"""The blob store: where archived artifacts (recordings, downloads archives) are kept.

A store is a root URL handled by fsspec: a local path or ``file://`` URL, or a cloud URL
such as ``s3://bucket/prefix`` (``pip install 'smooth-archiver[s3]'``) or ``gs://bucket``
(``[gcs]``). Credentials and endpoints come from the backend's usual configuration (for
S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an
S3-compatible server; or fsspec's ``FSSPEC_S3_*`` variables).

Layout inside the root (a public interface, documented in the README)::

    tasks/YYYY/MM/DD/<task>/recording.<ext>
    tasks/YYYY/MM/DD/<task>/downloads.<ext>
    .tmp/<task>.<kind>.<random>.part        # in-flight writes only

``YYYY/MM/DD`` is the task's creation date (UTC), ``undated`` when the API gave none.
``<task>`` is :func:`task_folder` of the task id: the id itself when it is made of
``a-z 0-9 _ -`` only (1-100 characters), otherwise an encoded form starting with ``~``
that can never contain a separator or dot segment, so no task id can steer a path.

Writes are atomic: bytes go to a temporary name under ``.tmp/`` and are moved to their
final name only after their size and SHA-256 are known, so a reader never sees a partial
blob under a final name. On local disk, folders are created 0700 and files 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from archiver.exceptions import ArchiverError, BlobStoreError, ConfigError
from archiver.store.artifacts import KINDS

#: Read and write in pieces of this size: nothing is ever held whole in memory.
CHUNK_BYTES = 1024 * 1024
#: Buffer size of cloud writers (one multipart-upload part; S3's minimum is 5 MiB).
UPLOAD_BLOCK_BYTES = 8 * 1024 * 1024
TEMP_DIR = ".tmp"
TASKS_DIR = "tasks"
UNDATED = "undated"
MAX_PLAIN_ID = 100
#: Ids up to this many UTF-8 bytes are hex-encoded (reversible); longer ones are hashed.
MAX_HEX_ID_BYTES = 60
_PLAIN_ID = re.compile(rf"[a-z0-9_-]{{1,{MAX_PLAIN_ID}}}")

#: The only extensions a blob's name takes: a stored type or a link can never make a
#: name a browser or a file manager would open as a document (``.html``, ``.svg``).
BLOB_EXTENSIONS = (".mp4", ".webm", ".zip")
#: The content types that give one of them; any other type gives ``.bin``, unless it is
#: generic and the link's own name ends in one of them.
CONTENT_TYPE_EXTENSIONS = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "application/zip": ".zip",
    "application/x-zip-compressed": ".zip",
    "application/x-zip": ".zip",
}
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
DEFAULT_EXTENSION = ".bin"


def task_folder(task_id: str) -> str:
    """The one path segment that holds a task's blobs; never ``.``, ``..`` or a separator.

    ``tsk_0a1b2c`` stays as it is. Anything else (upper case, dots, slashes, backslashes,
    NUL, other characters) becomes ``~x`` + the hex of its UTF-8 bytes, or ``~s`` + its
    SHA-256 when longer than 60 bytes: distinct ids always get distinct folders, and the
    ``~`` marks an encoded one (a plain id never contains ``~``).
    """
    if _PLAIN_ID.fullmatch(task_id):
        return task_id
    raw = task_id.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_HEX_ID_BYTES:
        return "~x" + raw.hex()
    return "~s" + hashlib.sha256(raw).hexdigest()


def extension_for(content_type: str | None, source_url: str | None = None) -> str:
    """The file extension for a blob, one of :data:`BLOB_EXTENSIONS` or ``.bin``: from
    its content type, else (a generic type) its link's own name, else ``.bin``."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype in CONTENT_TYPE_EXTENSIONS:
        return CONTENT_TYPE_EXTENSIONS[ctype]
    if ctype in _GENERIC_TYPES and source_url:
        suffix = PurePosixPath(source_url.split("?", 1)[0]).suffix.lower()
        if suffix in BLOB_EXTENSIONS:
            return suffix
    return DEFAULT_EXTENSION


def blob_key(task_id: str, created: datetime | None, kind: str, extension: str) -> str:
    """The key of a task's artifact, relative to the store's root."""
    if kind not in KINDS:
        raise ValueError(f"artifact kind {kind!r} is not 'recording' or 'downloads'")
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", extension):
        raise ValueError(f"extension {extension!r} is not a short lower-case extension")
    day = f"{created:%Y/%m/%d}" if created is not None else UNDATED
    return f"{TASKS_DIR}/{day}/{task_folder(task_id)}/{kind}{extension}"


@dataclass(frozen=True)
class Temporary:
    """A temporary blob an unfinished write left behind, or an S3 multipart upload."""

    key: str  # .tmp/<task folder>.<kind>.<random>.part
    modified: datetime | None
    upload_id: str | None = None

    @property
    def task_folder(self) -> str:
        """The :func:`task_folder` of the task it was written for (it has no dot)."""
        return self.key.rsplit("/", 1)[-1].split(".", 1)[0]


def _modified(info: dict[str, Any]) -> datetime | None:
    """When a listing entry was last written, as an aware datetime, if it says."""
    for name in ("mtime", "LastModified", "Initiated", "updated"):  # local, S3, GCS
        value = info.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class BlobInfo:
    """What a committed write left under its final name."""

    key: str
    url: str
    size: int
    sha256: str
    rewritten: bool  # False when an identical blob was already there and was kept


class BlobStore:
    """One blob storage root, through fsspec."""

    def __init__(
        self, url: str, *, storage_options: dict[str, Any] | None = None, create: bool = True
    ) -> None:
        if not url or not url.strip():
            raise ConfigError(
                "the blob storage URL is empty: set --blob-url or ARCHIVER_BLOB_URL to a "
                "local folder, file:///path, s3://bucket/prefix or gs://bucket/prefix."
            )
        import fsspec  # only where blobs are stored: it is slow to import (start-up)

        self.local = "://" not in url or url.startswith("file://")
        if self.local:
            path = url[len("file://") :] if url.startswith("file://") else url
            root = Path(path).expanduser().absolute()
            self.fs: Any = fsspec.filesystem("file")
            self.root = root.as_posix()
            self.url = "file://" + self.root
            if create:
                self._make_local_dirs(root)
            return
        try:
            fs, root_path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except ImportError as exc:
            protocol = url.split("://", 1)[0]
            extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
            hint = (
                f"pip install 'smooth-archiver[{extra}]'"
                if extra
                else "install the fsspec backend for it"
            )
            raise ConfigError(
                f"blob storage URL {url!r} needs a backend that is not installed ({exc}): {hint}."
            ) from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"blob storage URL {url!r} is not usable ({exc}): expected a local folder, "
                "file:///path, s3://bucket/prefix or gs://bucket/prefix."
            ) from None
        self.fs = fs
        self.root = str(root_path).rstrip("/")
        if not self.root:
            raise ConfigError(
                f"blob storage URL {url!r} names no bucket: use e.g. s3://bucket/prefix."
            )
        self.url = str(fs.unstrip_protocol(self.root))

    @classmethod
    def for_blob_url(cls, url: str) -> tuple[BlobStore, str]:
        """The store and key of a blob recorded under another root (``.../tasks/...``)."""
        marker = f"/{TASKS_DIR}/"
        if marker not in url:
            raise BlobStoreError(
                f"blob URL {url!r} is not in the archiver's layout (no '{marker}' in it); "
                "check artifacts.blob_url or pass the --blob-url it was stored under."
            )
        root, key = url.rsplit(marker, 1)
        return cls(root, create=False), f"{TASKS_DIR}/{key}"

    def __repr__(self) -> str:
        return f"BlobStore({self.url!r})"

    # -- paths -------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """The backend path of a key (relative to the root)."""
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
            raise BlobStoreError(
                f"blob key {key!r} is not a clean relative path; this is a bug, please report it."
            )
        return f"{self.root}/{key}"

    def url_for(self, key: str) -> str:
        """The URL recorded in ``artifacts.blob_url``."""
        return f"{self.url}/{key}"

    def key_from_url(self, url: str) -> str | None:
        """The key of a blob URL inside this root, or None when it is elsewhere."""
        prefix = self.url + "/"
        return url[len(prefix) :] if url.startswith(prefix) else None

    # -- writing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Third-party storage errors become BlobStoreError, naming what and where."""
        try:
            yield
        except ArchiverError:
            raise
        except Exception as exc:
            raise BlobStoreError(
                f"blob storage {self.url}: {action} {key!r} failed "
                f"({type(exc).__name__}: {str(exc)[:300]}); check that the location exists, "
                "is writable and has space, and the credentials for it."
            ) from exc

    def _make_local_dirs(self, path: Path) -> None:
        missing: list[Path] = []
        probe = path
        while not probe.exists():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        try:
            for folder in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, 0o700)
        except OSError as exc:
            raise BlobStoreError(
                f"cannot create blob folder {str(path)!r}: {exc.strerror}; check permissions "
                "or set --blob-url / ARCHIVER_BLOB_URL elsewhere."
            ) from None

    def _ensure_parent(self, key: str) -> None:
        parent = self.path(key).rsplit("/", 1)[0]
        if self.local:
            self._make_local_dirs(Path(parent))
        # Object stores have no folders to create.

    def begin(self, task_id: str, kind: str) -> BlobWriter:
        """Start writing a blob under a temporary name (see :meth:`BlobWriter.commit`)."""
        temp_key = f"{TEMP_DIR}/{task_folder(task_id)}.{kind}.{uuid.uuid4().hex}.part"
        with self._errors("creating", temp_key):
            self._ensure_parent(temp_key)
            path = self.path(temp_key)
            if self.local:
                # Created owner-only before fsspec opens it (opening keeps the mode).
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                handle = self.fs.open(path, "wb")
            else:
                handle = self.fs.open(path, "wb", block_size=UPLOAD_BLOCK_BYTES)
        return BlobWriter(self, temp_key, handle)

    def discard_temporaries(self, task_id: str, kind: str) -> int:
        """Remove what an interrupted earlier write of this artifact left under ``.tmp``."""
        prefix = f"{task_folder(task_id)}.{kind}."
        removed = 0
        with self._errors("cleaning up", TEMP_DIR):
            folder = self.path(TEMP_DIR)
            try:
                names = self.fs.ls(folder, detail=False, refresh=True)
            except FileNotFoundError:
                return 0
            for name in names:
                if str(name).rsplit("/", 1)[-1].startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(name)
                    removed += 1
        return removed

    def temporaries(self) -> list[Temporary]:
        """What writes left under ``.tmp``: ``*.part`` blobs, and on S3 the multipart
        uploads never completed (invisible as objects, yet stored and billed)."""
        found: list[Temporary] = []
        with self._errors("listing", TEMP_DIR):
            try:
                entries = self.fs.ls(self.path(TEMP_DIR), detail=True, refresh=True)
            except FileNotFoundError:
                entries = []
            for entry in entries:
                name = str(entry["name"]).rsplit("/", 1)[-1]
                if name.endswith(".part"):
                    found.append(Temporary(f"{TEMP_DIR}/{name}", _modified(entry)))
            found += self._unfinished_uploads()
        return found

    def _unfinished_uploads(self) -> list[Temporary]:
        call = getattr(self.fs, "call_s3", None)  # S3 only (GCS expires them by itself)
        if call is None:
            return []
        bucket, _, prefix = self.root.partition("/")
        under = f"{prefix}/{TEMP_DIR}/" if prefix else f"{TEMP_DIR}/"
        found: list[Temporary] = []
        markers: dict[str, str] = {}
        while True:
            page = call("list_multipart_uploads", Bucket=bucket, Prefix=under, **markers)
            for upload in page.get("Uploads", []):
                key = TEMP_DIR + "/" + str(upload["Key"])[len(under) :]
                found.append(Temporary(key, _modified(upload), upload["UploadId"]))
            if not page.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    def remove_temporary(self, temporary: Temporary) -> None:
        with self._errors("removing", temporary.key), contextlib.suppress(FileNotFoundError):
            path = self.path(temporary.key)
            if temporary.upload_id is None:
                self.fs.rm_file(path)
            else:
                bucket, _, key = path.partition("/")
                self.fs.abort_mpu(bucket, key, temporary.upload_id)

    # -- reading -----------------------------------------------------------------------

    def _invalidate(self, path: str) -> None:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(path)

    def exists(self, key: str) -> bool:
        with self._errors("checking", key):
            path = self.path(key)
            self._invalidate(path)
            return bool(self.fs.exists(path))

    def size(self, key: str) -> int | None:
        """The blob's size, or None when it does not exist."""
        with self._errors("reading the size of", key):
            path = self.path(key)
            self._invalidate(path)
            try:
                return int(self.fs.size(path))
            except FileNotFoundError:
                return None

    def open(self, key: str) -> IO[bytes]:
        """A seekable binary reader (read in :data:`CHUNK_BYTES` blocks on cloud stores)."""
        with self._errors("opening", key):
            path = self.path(key)
            self._invalidate(path)
            if self.local:
                return self.fs.open(path, "rb")  # type: ignore[no-any-return]
            return self.fs.open(path, "rb", block_size=CHUNK_BYTES)  # type: ignore[no-any-return]

    def sha256(self, key: str) -> tuple[int, str] | None:
        """(size, SHA-256 hex) of a blob, read in chunks; None when it does not exist."""
        digest = hashlib.sha256()
        size = 0
        with self._errors("reading", key):
            try:
                handle = self.open(key)
            except BlobStoreError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    return None
                raise
            with handle:
                while chunk := handle.read(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
        return size, digest.hexdigest()

    def remove(self, key: str) -> None:
        with self._errors("removing", key), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def shred(self, key: str) -> None:
        """Remove a blob for good (``forget``, ``prune``): on local disk its bytes are
        overwritten with zeros and synced before the file is unlinked, so the content does
        not linger in the freed blocks (docs/governance.md names what this cannot reach:
        copy-on-write file systems, snapshots, SSD wear levelling, backups); an object
        store deletes the object (a versioned bucket keeps a noncurrent version until its
        lifecycle rule expires it). A blob already gone is fine."""
        if not self.local:
            self.remove(key)
            return
        path = self.path(key)
        with self._errors("removing", key), contextlib.suppress(FileNotFoundError):
            with open(path, "r+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                zeros = bytes(min(CHUNK_BYTES, size))
                written = 0
                while written < size:
                    written += handle.write(zeros[: size - written])
                handle.flush()
                os.fsync(handle.fileno())
            os.unlink(path)

    def shred_temporaries(self, task_id: str) -> int:
        """Shred every write of a task (both kinds) that an interrupted pass left under
        ``.tmp`` (``forget``: a partial copy holds content too)."""
        prefixes = tuple(f"{task_folder(task_id)}.{kind}." for kind in KINDS)
        with self._errors("cleaning up", TEMP_DIR):
            try:
                names = self.fs.ls(self.path(TEMP_DIR), detail=False, refresh=True)
            except FileNotFoundError:
                return 0
        found = [str(n).rsplit("/", 1)[-1] for n in names]
        doomed = [name for name in found if name.startswith(prefixes)]
        for name in doomed:
            self.shred(f"{TEMP_DIR}/{name}")
        return len(doomed)


class BlobWriter:
    """An in-flight write under a temporary name; hashes and counts what it writes."""

    def __init__(self, store: BlobStore, temp_key: str, handle: Any) -> None:
        self.store = store
        self.temp_key = temp_key
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, chunk: bytes) -> None:
        with self.store._errors("writing", self.temp_key):
            self._handle.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        handle = self._handle
        if self.store.local:
            handle.flush()
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.fsync(handle.fileno())
        handle.close()

    def commit(self, key: str) -> BlobInfo:
        """Move the finished bytes to ``key``; keep an identical blob already there."""
        store = self.store
        with store._errors("storing", key):
            self._close()
            size, sha = self.size, self.sha256
            existing = store.size(key)
            if existing == size and store.sha256(key) == (size, sha):
                self.abort()
                return BlobInfo(key, store.url_for(key), size, sha, rewritten=False)
            store._ensure_parent(key)
            source, target = store.path(self.temp_key), store.path(key)
            if store.local:
                os.replace(source, target)  # atomic on one filesystem
            else:
                store.fs.mv(source, target)
            store._invalidate(target)
        return BlobInfo(key, store.url_for(key), size, sha, rewritten=True)

    def abort(self) -> None:
        """Drop the temporary bytes (best effort: a leftover is cleaned up next time)."""
        if not self.closed and not self.store.local and hasattr(self._handle, "discard"):
            # Cloud writers: cancel the multipart upload instead of completing it.
            self.closed = True
            with contextlib.suppress(Exception):
                self._handle.discard()  # fails when the upload is already gone (cleaned up)
            with contextlib.suppress(Exception):
                self._handle.closed = True  # nothing left for fsspec's __del__ to flush
        with contextlib.suppress(Exception):
            self._close()
        with contextlib.suppress(Exception):
            self.store.fs.rm_file(self.store.path(self.temp_key))
