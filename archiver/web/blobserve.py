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

from archiver.blobs import BlobStore
from archiver.exceptions import ArchiverError, BlobStoreError

READ_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
#: What a blob's file name may end with in Content-Disposition (blobs.blob_key's rule).
_EXTENSION = re.compile(r"[a-z0-9]{1,8}")
#: Shown in the page (a <video> element); anything else is only ever a download.
INLINE_PREFIXES = ("video/", "audio/")
GENERIC = "application/octet-stream"


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


def media_type(content_type: str | None) -> str:
    """The row's content type if it is a plain ``type/subtype``, else octet-stream."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else GENERIC


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
    extension = suffix if _EXTENSION.fullmatch(suffix) else "bin"
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
