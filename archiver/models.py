"""Typed views of the Smooth API's payloads, validated with pydantic.

Validation is deliberately narrow: it checks what the archiver relies on (types of ids,
statuses, integers, URLs) and keeps everything else, including fields the API adds later,
so nothing is lost. A payload that fails validation raises :class:`MalformedPayload`
naming the field at fault.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from archiver.exceptions import MalformedPayload
from archiver.jsonvalues import dumps_json

#: An integer that fits a SQL BIGINT; larger values are malformed, not stored truncated.
Int64 = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]


TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
ACTIVE_STATUSES = frozenset({"waiting", "running"})
KNOWN_STATUSES = TERMINAL_STATUSES | ACTIVE_STATUSES


class TaskEvent(BaseModel):
    """One event of a task's stream. ``payload`` is kept as whatever JSON the API sent."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: StrictStr
    payload: Any = None
    id: StrictStr | None = None
    timestamp: Int64 | None = None

    @property
    def key(self) -> str:
        """The identity used to store an event once.

        A hash over id, name, timestamp and canonical payload: re-reading the same event
        yields the same key, while a tool response that reuses its request's ``id`` (the
        API reference says ids "match responses to requests") is still kept as its own row.
        """
        return key_of(self.canonical())

    def canonical(self) -> str:
        """The canonical JSON text of id, name, timestamp and payload, hashed for the key."""
        return dumps_json([self.id, self.name, self.timestamp, self.payload])


def key_of(canonical: str) -> str:
    """An event key from :meth:`TaskEvent.canonical` (lone surrogates hashed as is)."""
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class TaskInfo(BaseModel):
    """A TaskResponse from List Tasks or Get Task."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: StrictStr
    status: StrictStr
    output: Any = None
    credits_used: Int64 | None = None
    device: StrictStr | None = None
    live_url: StrictStr | None = None
    recording_url: StrictStr | None = None
    downloads_url: StrictStr | None = None
    created_at: Int64 | None = None
    events: list[TaskEvent] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def payload_without_events(self) -> dict[str, Any]:
        """The full payload as the API sent it, minus ``events``, with URLs unsigned.

        Built from the validated values, not with ``model_dump``: pydantic's serialiser
        refuses lone surrogates and nesting deeper than 255, both valid JSON.
        """
        data = {**self.__dict__, **(self.__pydantic_extra__ or {})}  # fields, then extras
        del data["events"]
        for name in ("live_url", "recording_url", "downloads_url"):
            data[name] = strip_query(data.get(name))
        return data


def parse_task(raw: Any, *, context: str) -> TaskInfo:
    """Validate one TaskResponse; MalformedPayload names the first field at fault."""
    if not isinstance(raw, dict):
        raise MalformedPayload(
            f"{context}: expected a JSON object for the task, got {type(raw).__name__}; "
            "the API answered something other than a TaskResponse."
        )
    try:
        task = TaskInfo.model_validate(raw)
    except ValidationError as exc:
        raise MalformedPayload(f"{context}: {_describe(exc)}") from None
    if not task.id.strip():
        raise MalformedPayload(f"{context}: task id is empty; expected a non-empty string.")
    return task


def parse_envelope(body: Any, *, context: str) -> Any:
    """The ``r`` member of a ``{"r": ...}`` envelope."""
    if not isinstance(body, dict) or "r" not in body:
        shown = type(body).__name__ if not isinstance(body, dict) else f"keys {sorted(body)[:5]}"
        raise MalformedPayload(
            f"{context}: expected a JSON object with an 'r' member, got {shown}."
        )
    return body["r"]


def _describe(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"field {where!r}: {first['msg']}{more}"


def strip_query(url: str | None) -> str | None:
    """A URL without query string or fragment: presigned signatures never get stored."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
