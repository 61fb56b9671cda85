"""The artifact states and the limits every artifact module shares."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from archiver.redact import redact

log = logging.getLogger(__name__)

KINDS = ("recording", "downloads")
PENDING, STORED, ABSENT, FAILED = "pending", "stored", "absent", "failed"
STATES = (PENDING, STORED, ABSENT, FAILED)
FINAL_STATES = frozenset({STORED, ABSENT, FAILED})
#: What an artifact host answers for an expired or invalid presigned link.
REFUSED_STATUSES = frozenset({403, 404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: Members listed per downloads archive; a larger archive is listed this far and says so.
MAX_LISTED_FILES = 100_000
MAX_ERROR_CHARS = 2000
#: Failed attempts (over passes, each already retried within its pass) before an artifact
#: is held back from the next passes.
ARTIFACT_BACKOFF_AFTER_ATTEMPTS = 3

RunDb = Callable[..., Awaitable[Any]]


def _clean(text: str) -> str:
    """A message safe to store and show: presigned query strings masked, length capped."""
    return redact(text, [])[:MAX_ERROR_CHARS]
