"""Secret scrubbing: the API key, presigned link signatures and database passwords never
reach a log line, an error message, a table or a page.

Presigned links keep their signature in the query string, so every URL query string is
masked; a database URL's password (``user:PASSWORD@``, ``?password=``,
``?sslpassword=``) is masked; the key (and any other secret given) is masked wherever it
appears, also when a body writes some of its characters as JSON escapes (``\\u0039``) or
URL-encoded (``%39``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

#: Query strings of presigned links (the signature lives there).
_PRESIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")
#: A URL's password: ``scheme://user:PASSWORD@`` (userinfo ends at the last ``@``).
_USERINFO_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s/@:'\"]*:)[^\s/'\"]*@", re.I)
#: libpq's password parameters, in a URL's query or a ``key=value`` connection string.
_PASSWORD_PARAMETER = re.compile(r"\b((?:ssl)?password=)[^\s&'\"]*", re.I)
REDACTED = "********"


def _hex(value: int, digits: int) -> str:
    """``value`` in hex as a pattern taking either case of each letter."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{digits}x}")


@functools.lru_cache(maxsize=16)
def secret_pattern(secret: str) -> re.Pattern[str]:
    """``secret`` in any mix of its forms, character by character: as it is, as a JSON
    escape (``\\u0039``, ``\\/``) and URL-encoded (``%39``, UTF-8 bytes of others)."""
    parts = []
    for char in secret:
        forms = [re.escape(char)]
        code = ord(char)
        if code <= 0xFFFF:
            forms.append(r"\\u" + _hex(code, 4))
        if char == "/":
            forms.append(r"\\/")
        forms.append("".join("%" + _hex(byte, 2) for byte in char.encode("utf-8", "replace")))
        parts.append("(?:" + "|".join(forms) + ")")
    return re.compile("".join(parts))


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each secret (in any of its forms), every URL query string and every
    database password masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
            if "\\" in text or "%" in text:  # a written-out form may be there
                text = secret_pattern(secret).sub(REDACTED, text)
    text = _PRESIGNED_QUERY.sub(r"\1?" + REDACTED, text)
    if "password=" in text.lower() or "@" in text:
        text = _USERINFO_PASSWORD.sub(r"\1" + REDACTED + "@", text)
        text = _PASSWORD_PARAMETER.sub(r"\1" + REDACTED, text)
    return text


def redact_value(value: Any, secrets: list[str]) -> Any:
    """:func:`redact` applied to every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, secrets) for v in value]
    return value
