"""Listing a stored downloads archive from its zip central directory, never extracting."""

from __future__ import annotations

import logging
import zipfile
from datetime import UTC, datetime
from typing import Any

from archiver.artifacts.states import (
    MAX_LISTED_FILES,
)
from archiver.blobs import BlobStore
from archiver.exceptions import (
    BlobStoreError,
)

log = logging.getLogger(__name__)


def _zip_time(date_time: tuple[int, ...]) -> datetime | None:
    """A member's modified time (zip stores no time zone; taken as UTC), None if invalid."""
    try:
        year, month, day, hour, minute, second = date_time[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def list_zip(store: BlobStore, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The members of a stored zip (read from its central directory, nothing extracted).

    Returns (members, error): a corrupt or non-zip blob gives no members and the reason.
    """
    try:
        with store.open(key) as handle, zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except BlobStoreError:
        raise
    except Exception as exc:  # any parse failure of untrusted bytes: recorded, not raised
        return [], (
            f"the downloads archive {store.url_for(key)} is stored as it came but is not a "
            f"readable zip ({type(exc).__name__}: {str(exc)[:200]}); no members listed."
        )
    members = [
        {
            "name": info.filename.replace("\x00", "\ufffd"),
            "size_bytes": info.file_size,
            "compressed_bytes": info.compress_size,
            "modified_at": _zip_time(info.date_time),
        }
        for info in infos[:MAX_LISTED_FILES]
    ]
    error = None
    if len(infos) > MAX_LISTED_FILES:
        error = (
            f"the downloads archive {store.url_for(key)} has {len(infos)} members; only the "
            f"first {MAX_LISTED_FILES} are listed in artifact_files."
        )
    return members, error
