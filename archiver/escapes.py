"""Archived text shown safely: control characters and bidi overrides made visible.

Task ids, devices, event names, outputs and error texts come from the API and from
websites, so they may hold ANSI escapes (which recolour or rewrite a terminal), CR and LF
(which forge a line of ``status`` or a log) or bidi overrides (which show text in another
order than it is). Wherever such text reaches a terminal or a page it goes through
:func:`visible`, which writes each of them as its escape (``\\x1b``, ``\\u202e``), so the
reader sees that it is there and what it is. The archive itself keeps the text as sent.
"""

from __future__ import annotations

import re

#: C0 controls, DEL, C1 controls, the bidi embeddings, overrides, isolates and marks, and
#: the Unicode line and paragraph separators.
_OTHERS = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ANY = re.compile(f"[\\x00-\\x1f{_OTHERS}]")
#: The same less newline and tab, for multi-line text shown as lines (outputs, JSON).
_IN_LINES = re.compile(f"[\\x00-\\x08\\x0b-\\x1f{_OTHERS}]")


#: The ASCII characters a multi-line text shows as escapes: deleted by ``str.translate``,
#: they are found by a length check, 5x faster than a regex scan of long ASCII text.
_ASCII_IN_LINES = dict.fromkeys([*range(0x09), *range(0x0B, 0x20), 0x7F])


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str, *, keep_lines: bool = False) -> str:
    """``text`` with every control character and bidi override written as its escape;
    ``keep_lines`` keeps newlines and tabs (text shown as lines, e.g. in a ``<pre>``)."""
    if text.isprintable():  # the common case, in C: nothing to escape
        return text
    if not keep_lines:
        return _ANY.sub(_escape, text)
    if text.isascii() and len(text.translate(_ASCII_IN_LINES)) == len(text):
        return text  # only newlines and tabs (indented JSON): nothing to escape
    return _IN_LINES.sub(_escape, text)
