"""How values look on the pages. Task outputs and event payloads are untrusted text: they
are only ever turned into strings here and escaped by the templates (autoescape on, no
``|safe`` on data anywhere)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from archiver.config import format_size
from archiver.jsonvalues import escape_surrogates, loads_json, storage_json
from archiver.logs import redact
from archiver.report import one_line


def pretty_json(value: Any) -> str:
    """Indented JSON, non-ASCII kept as is (orjson: a 5,000-event timeline is ~10x faster
    than with json; json only for what orjson refuses: integers beyond 64 bits, lone
    surrogates, which are shown as their escapes; compact text for nesting too deep to
    indent)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except (TypeError, orjson.JSONEncodeError):
        try:
            text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
        except (RecursionError, ValueError):
            text = storage_json(value)
        return escape_surrogates(text)


def _as_sent(typed: Any, raw: str | None) -> Any:
    """A JSON column's value as the API sent it: its ``*_raw`` twin where set (issue 13)."""
    return typed if raw is None else loads_json(raw)


def output_view(row: Any) -> tuple[str, str]:
    """(kind, text) of a task's output as sent: ``text`` for a JSON string (shown as the
    text it is; a lone surrogate as its escape), ``json`` pretty-printed for anything
    else, ``none`` when there is no output."""
    value = _as_sent(row.output, getattr(row, "output_raw", None))
    if value is None:
        return "none", ""
    if isinstance(value, str):
        return "text", escape_surrogates(value)
    return "json", pretty_json(value)


def payload_view(event: Any) -> str:
    """An event's payload as sent, pretty-printed JSON."""
    return pretty_json(_as_sent(event.payload, getattr(event, "payload_raw", None)))


def extra_view(event: Any) -> str:
    """An event's other fields as sent, pretty-printed JSON; empty when it had none."""
    value = _as_sent(event.extra, event.extra_raw)
    return "" if value is None else pretty_json(value)


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
    """A string as its text, anything else as one line of JSON."""
    return escape_surrogates(value) if isinstance(value, str) else storage_json(value)


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
