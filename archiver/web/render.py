"""How values look on the pages. Task outputs and event payloads are untrusted text: they
are only ever turned into strings here and escaped by the templates (autoescape on, no
``|safe`` on data anywhere)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from archiver.config import format_size
from archiver.jsonvalues import escape_surrogates, iter_json, loads_json
from archiver.logs import redact
from archiver.report import one_line

#: How much of an output, payload or other fields a page shows; the rest is a link away.
PREVIEW_CHARS = 64 * 1024
#: Pieces of a JSON download and of a streamed page (each one thread hop and one send).
CHUNK_CHARS = 256 * 1024


class TextBlock(str):
    """Multi-line text (an output, pretty-printed JSON): shown keeping its newlines and
    tabs, every other control character escaped (see ``site``'s ``finalize``)."""


@dataclass(frozen=True)
class Preview:
    """The beginning of a value as a page shows it, and whether there is more."""

    text: TextBlock
    cut: bool


def _preview(text: str, limit: int, *, surrogates: bool = True) -> Preview:
    """The first ``limit`` characters (lone surrogates as escapes, where there may be any)."""
    shown = text[:limit]
    return Preview(TextBlock(escape_surrogates(shown) if surrogates else shown), len(text) > limit)


def json_preview(value: Any, limit: int = PREVIEW_CHARS) -> Preview:
    """Indented JSON, non-ASCII kept as is, up to ``limit`` characters (orjson: a
    5,000-event timeline is ~10x faster than with json; the iterative writer for what
    orjson refuses: integers beyond 64 bits, lone surrogates (shown as their escapes),
    nesting past 254, which it writes only as far as the preview reaches)."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
        return _preview(text, limit, surrogates=False)  # orjson refuses lone surrogates
    except (TypeError, orjson.JSONEncodeError):
        pass
    pieces: list[str] = []
    size = 0
    for piece in iter_json(value, indent=2):
        pieces.append(piece)
        size += len(piece)
        if size > limit:
            break
    return _preview("".join(pieces), limit)


def _as_sent(typed: Any, raw: str | None) -> Any:
    """A JSON column's value as the API sent it: its ``*_raw`` twin where set (issue 13)."""
    return typed if raw is None else loads_json(raw)


def output_view(row: Any) -> tuple[str, Preview]:
    """(kind, preview) of a task's output as sent: ``text`` for a JSON string (shown as
    the text it is; a lone surrogate as its escape), ``json`` pretty-printed for anything
    else, ``none`` when there is no output."""
    value = _as_sent(row.output, getattr(row, "output_raw", None))
    if value is None:
        return "none", Preview(TextBlock(""), False)
    if isinstance(value, str):
        return "text", _preview(value, PREVIEW_CHARS)
    return "json", json_preview(value)


def payload_view(event: Any) -> Preview:
    """An event's payload as sent, pretty-printed JSON (its beginning)."""
    return json_preview(_as_sent(event.payload, getattr(event, "payload_raw", None)))


def extra_view(event: Any) -> Preview | None:
    """An event's other fields as sent, pretty-printed JSON; None when it had none."""
    value = _as_sent(event.extra, event.extra_raw)
    return None if value is None else json_preview(value)


def json_download(typed: Any, raw: str | None) -> Iterator[bytes]:
    """A value's whole JSON text in pieces, UTF-8: its exact text when the typed column
    could not hold it, else the typed value written out (lone surrogates as escapes)."""
    if raw is not None:
        for start in range(0, len(raw), CHUNK_CHARS):
            yield raw[start : start + CHUNK_CHARS].encode("utf-8", "surrogatepass")
        return
    try:
        whole = orjson.dumps(typed)
    except (TypeError, orjson.JSONEncodeError):
        yield from chunked(escape_surrogates(piece) for piece in iter_json(typed))
        return
    for start in range(0, len(whole), CHUNK_CHARS):
        yield whole[start : start + CHUNK_CHARS]


def chunked(pieces: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[bytes]:
    """Small pieces of text joined into UTF-8 chunks of about ``size`` characters: a
    streamed response sends (and hops threads) once per chunk, not once per piece."""
    buffer: list[str] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield "".join(buffer).encode("utf-8", "surrogatepass")
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8", "surrogatepass")


#: Characters of an event's one-line preview on the collapsed timeline.
PREVIEW_CHARS = 90


def event_preview(event: Any) -> str:
    """What happened, in one line, for the collapsed timeline: an action's ``name`` and
    its input, a response's ``code`` and its output, else the payload itself."""
    value = _as_sent(event.payload, getattr(event, "payload_raw", None))
    if not isinstance(value, dict):
        return "" if value is None else one_line(_compact(value), PREVIEW_CHARS)
    parts = []
    if isinstance(value.get("name"), str):
        parts.append(value["name"])
    if isinstance(value.get("code"), int | str) and not isinstance(value.get("code"), bool):
        parts.append(f"code {value['code']}")
    if not parts:
        return one_line(_compact(value), PREVIEW_CHARS)
    rest = {k: v for k, v in value.items() if k not in ("name", "code")}
    detail = rest.get("input", rest.get("output", rest)) if len(rest) == 1 else rest
    if detail not in ({}, None, ""):
        parts.append(_compact(detail))
    return one_line(" · ".join(parts), PREVIEW_CHARS)


def _compact(value: Any) -> str:
    """A string as its text, anything else as one line of JSON: only as much as a preview
    shows (the JSON is written lazily, so a large payload costs its first characters)."""
    if isinstance(value, str):
        return escape_surrogates(value[: PREVIEW_CHARS + 1])
    pieces: list[str] = []
    size = 0
    for piece in iter_json(value, sort_keys=True):
        pieces.append(piece)
        size += len(piece)
        if size > PREVIEW_CHARS:
            break
    return "".join(pieces)


def offset_label(offset_s: float | None) -> str:
    """An event's time since the task started: ``+12.3 s``, or ``no time``."""
    if offset_s is None:
        return "no time"
    return ("+" if offset_s >= 0 else "") + seconds(offset_s)


def safe_message(text: str | None) -> str:
    """An error message as stored, with any URL query string (presigned link) masked."""
    return redact(text or "", [])


def utc(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def integer(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def seconds(value: float | None) -> str:
    """``+12.345 s``/``3 min 05 s``-style offsets and durations."""
    if value is None:
        return ""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 60:
        return f"{sign}{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours} h {minutes:02d} min"


def size(value: int | None) -> str:
    return "" if value is None else format_size(value)


FILTERS = {
    "utc": utc,
    "money": money,
    "integer": integer,
    "seconds": seconds,
    "size": size,
    "safe_message": safe_message,
}
