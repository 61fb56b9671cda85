"""Secret scrubbing: the API key and presigned link signatures never reach a log line,
an error message, a table or a page.

Presigned links keep their signature in the query string, so every URL query string is
masked; the key (and any other secret given) is masked wherever it appears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Query strings of presigned links (the signature lives there).
_PRESIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")
REDACTED = "********"


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each secret and every URL query string masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _PRESIGNED_QUERY.sub(r"\1?" + REDACTED, text)


def redact_value(value: Any, secrets: list[str]) -> Any:
    """:func:`redact` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, secrets) for v in value]
    return value
