"""Serving stored artifacts over HTTP with byte ranges, from any blob store.

A blob is found only through its ``artifacts`` row (task id and kind -> ``blob_url``);
nothing from the request becomes a path. Ranges are read with ``seek`` on the store's
reader, so a seek in a 2 GiB recording on S3 reads only the requested bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from archiver.blobs import BLOB_EXTENSIONS, BlobStore
from archiver.exceptions import ArchiverError, BlobStoreError
from archiver.web.params import BadRequest

READ_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
#: Byte positions a Range may name: 18 digits are past any blob (an exabyte).
MAX_RANGE_DIGITS = 18
#: What a blob's file name may end with in Content-Disposition (blobs.EXTENSIONS).
EXTENSIONS = frozenset(ext.lstrip(".") for ext in BLOB_EXTENSIONS)
#: Recordings of these types play in the page (a <video> element); any other recording
#: is only ever a download, as application/octet-stream.
INLINE_TYPES = frozenset(
    {
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/mpeg",
        "audio/ogg",
        "audio/webm",
        "audio/wav",
    }
)
GENERIC = "application/octet-stream"
ZIP = "application/zip"


class Unsatisfiable(ArchiverError):
    """The Range header asks only for bytes past the end (answered 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a single-range ``Range`` header, or None to send
    the whole blob (no header, a syntax this does not serve such as several ranges).
    Raises Unsatisfiable when the range starts past the end."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # malformed or multi-range: RFC 9110 allows ignoring Range
    first_s, last_s = match.groups()
    if max(len(first_s), len(last_s)) > MAX_RANGE_DIGITS:
        raise BadRequest(
            f"Range names a byte position of more than {MAX_RANGE_DIGITS} digits: ask for "
            "bytes of the blob, e.g. bytes=0-1023."
        )
    if not first_s:
        if not last_s:
            return None
        suffix = int(last_s)  # "bytes=-N": the last N bytes
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        raise Unsatisfiable
    return first, min(last, size - 1)


def served_type(kind: str, content_type: str | None) -> tuple[str, bool]:
    """(Content-Type, inline) of a blob: a recording of an allowed video or audio type
    plays inline as that type; any other recording is an octet-stream download; a
    downloads archive is always a zip download, whatever type its row records."""
    if kind == "downloads":
        return ZIP, False
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value in INLINE_TYPES:
        return value, True
    return GENERIC, False


@dataclass
class OpenBlob:
    handle: IO[bytes]
    size: int
    extension: str


def open_blob(blob_url: str, root: BlobStore | None) -> OpenBlob:
    """Open a recorded blob: where ``blob_url`` says, or under ``root`` when the blobs were
    moved there (same layout). BlobStoreError when it cannot be read."""
    store, key = BlobStore.for_blob_url(blob_url)
    if root is not None:
        store = root
    size = store.size(key)
    if size is None:
        raise BlobStoreError(
            f"the blob {store.url_for(key)} recorded in artifacts is missing from storage; "
            "run `archiver verify --repair`."
        )
    handle = store.open(key)
    suffix = key.rsplit("/", 1)[-1].rpartition(".")[2]
    extension = suffix if suffix in EXTENSIONS else "bin"
    return OpenBlob(handle, size, extension)


def read_span(handle: IO[bytes], first: int, length: int) -> Iterator[bytes]:
    """``length`` bytes from ``first``, in pieces; closes the reader at the end."""
    try:
        handle.seek(first)
        left = length
        while left > 0:
            chunk = handle.read(min(READ_BYTES, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()
