"""Logging setup, with redaction of secrets in every record.

The API key is never logged on purpose; the filter here is the second line of defence,
masking the key and presigned query strings wherever they might slip into a message.
"""

from __future__ import annotations

import logging
import re
import sys

#: Query strings of presigned links (the signature lives there).
_PRESIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")
REDACTED = "********"


class RedactingFilter(logging.Filter):
    """Masks the given secrets and any URL query string in log messages."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _PRESIGNED_QUERY.sub(r"\1?" + REDACTED, text)


def setup_logging(
    *, verbose: int = 0, quiet: bool = False, secrets: list[str] | None = None
) -> None:
    """Human-readable lines on stderr; -v adds detail, -q keeps warnings only."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    handler.addFilter(RedactingFilter(secrets or []))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request URL at INFO; only -v wants that.
    logging.getLogger("httpx").setLevel(logging.INFO if verbose > 1 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
