"""Listing a stored downloads archive from its zip central directory, never extracting.

The central directory is read entry by entry and reading stops after
:data:`MAX_LISTED_FILES` members: a hostile zip of a million empty members costs the
members listed, not the million (``zipfile.ZipFile`` reads the whole directory and keeps
a ``ZipInfo`` per member: 516 MB for 1M). Each entry is decoded by ``zipfile``'s own
structures (its end-of-directory search, ``ZipInfo`` and its zip64 extra fields), so the
rules are the standard library's; only the loop is ours.
"""

from __future__ import annotations

import functools
import logging
import struct
import zipfile
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

from archiver.artifacts.states import (
    MAX_LISTED_FILES,
)
from archiver.blobs import BlobStore
from archiver.exceptions import (
    BlobStoreError,
)

log = logging.getLogger(__name__)

# zipfile's layout of the end record and of a central directory entry (module-private
# names of the standard library, stable since Python 2).
_END_RECORD: Any = zipfile._EndRecData  # type: ignore[attr-defined]
_ENTRY = zipfile.structCentralDir  # type: ignore[attr-defined]
_ENTRY_SIZE = zipfile.sizeCentralDir  # type: ignore[attr-defined]
_ENTRY_MAGIC = zipfile.stringCentralDir  # type: ignore[attr-defined]
_ZIP64_END = zipfile.stringEndArchive64  # type: ignore[attr-defined]
_ZIP64_TRAILER = zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
_UTF8_NAME = 0x800
T = TypeVar("T")


@functools.lru_cache(maxsize=4096)
def _zip_time(date_time: tuple[int, ...]) -> datetime | None:
    """A member's modified time (zip stores no time zone; taken as UTC), None if invalid.
    Cached: the members of one archive mostly share a few times."""
    try:
        year, month, day, hour, minute, second = date_time[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _entry(handle: IO[bytes]) -> tuple[zipfile.ZipInfo, int]:
    """The central directory entry at the reader's position, and its length in bytes."""
    fixed = handle.read(_ENTRY_SIZE)
    if len(fixed) != _ENTRY_SIZE:
        raise zipfile.BadZipFile("Truncated central directory")
    fields = struct.unpack(_ENTRY, fixed)
    if fields[0] != _ENTRY_MAGIC:
        raise zipfile.BadZipFile("Bad magic number for central directory")
    name_len, extra_len, comment_len = fields[12:15]
    raw_name = handle.read(name_len)
    name = raw_name.decode("utf-8" if fields[5] & _UTF8_NAME else "cp437")
    info = zipfile.ZipInfo(name)
    info.extra = handle.read(extra_len)
    handle.seek(comment_len, 1)
    time, day = fields[7], fields[8]
    info.compress_size, info.file_size = fields[10], fields[11]
    info.header_offset = fields[18]
    info.date_time = (
        (day >> 9) + 1980,
        (day >> 5) & 0xF,
        day & 0x1F,
        time >> 11,
        (time >> 5) & 0x3F,
        (time & 0x1F) * 2,
    )
    try:  # the zip64 sizes and offset
        info._decodeExtra()  # type: ignore[attr-defined]
    except TypeError:  # Python 3.12 on: it also checks the Unicode path field's CRC
        info._decodeExtra(zlib.crc32(raw_name))  # type: ignore[attr-defined]
    return info, _ENTRY_SIZE + name_len + extra_len + comment_len


def read_members(
    handle: IO[bytes], limit: int, keep: Callable[[zipfile.ZipInfo], T]
) -> tuple[list[T], int]:
    """``keep`` of each of the first ``limit`` members of a zip (each entry is dropped once
    kept: only what ``keep`` returns stays in memory), and how many members it has (its end
    record's count, or more when its directory holds more); zipfile.BadZipFile when it is
    no zip."""
    end = _END_RECORD(handle)
    if not end:
        raise zipfile.BadZipFile("File is not a zip file")
    signature, total, size, offset, location = end[0], end[4], end[5], end[6], end[9]
    start = location - size
    if signature == _ZIP64_END:
        start -= _ZIP64_TRAILER
    if start < 0 or offset < 0:
        raise zipfile.BadZipFile("Bad offset for central directory")
    handle.seek(start)
    kept: list[T] = []
    read = 0
    while read < size and len(kept) < limit:
        info, length = _entry(handle)
        kept.append(keep(info))
        read += length
    if read < size:  # stopped at the limit: there are more
        total = max(total, len(kept) + 1)
    return kept, max(total, len(kept))


def _member(info: zipfile.ZipInfo) -> dict[str, Any]:
    """An artifact_files row of a member."""
    return {
        "name": info.filename.replace("\x00", "\ufffd"),
        "size_bytes": info.file_size,
        "compressed_bytes": info.compress_size,
        "modified_at": _zip_time(info.date_time),
    }


def list_zip(store: BlobStore, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The members of a stored zip (read from its central directory, nothing extracted,
    at most MAX_LISTED_FILES of them).

    Returns (members, error): a corrupt or non-zip blob gives no members and the reason.
    """
    try:
        with store.open(key) as handle:
            members, total = read_members(handle, MAX_LISTED_FILES, _member)
    except BlobStoreError:
        raise
    except Exception as exc:  # any parse failure of untrusted bytes: recorded, not raised
        return [], (
            f"the downloads archive {store.url_for(key)} is stored as it came but is not a "
            f"readable zip ({type(exc).__name__}: {str(exc)[:200]}); no members listed."
        )
    error = None
    if total > MAX_LISTED_FILES:
        error = (
            f"the downloads archive {store.url_for(key)} has {total} members; only the "
            f"first {MAX_LISTED_FILES} are listed in artifact_files."
        )
    return members, error
