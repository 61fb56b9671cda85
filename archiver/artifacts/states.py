"""The limits every artifact module shares (the kinds and states are the store's:
:mod:`archiver.store.artifacts`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from archiver.store.artifacts import (
    ABSENT,
    FAILED,
    FINAL_STATES,
    KINDS,
    MAX_ERROR_CHARS,
    PENDING,
    STATES,
    STORED,
)

log = logging.getLogger(__name__)

#: What an artifact host answers for an expired or invalid presigned link.
REFUSED_STATUSES = frozenset({403, 404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: Members listed per downloads archive; a larger archive is listed this far and says so.
MAX_LISTED_FILES = 100_000
#: Failed attempts (over passes, each already retried within its pass) before an artifact
#: is held back from the next passes.
ARTIFACT_BACKOFF_AFTER_ATTEMPTS = 3

RunDb = Callable[..., Awaitable[Any]]

__all__ = [
    "ABSENT",
    "FAILED",
    "FINAL_STATES",
    "KINDS",
    "MAX_ERROR_CHARS",
    "PENDING",
    "STATES",
    "STORED",
    "RunDb",
]
