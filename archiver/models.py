"""Typed views of the Smooth API's payloads, validated with pydantic.

Validation is deliberately narrow: it checks what the archiver relies on (types of ids,
statuses, integers, URLs) and keeps everything else, including fields the API adds later,
so nothing is lost. A payload that fails validation raises :class:`MalformedPayload`
naming the field at fault.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from archiver.exceptions import MalformedPayload
from archiver.jsonvalues import canonical_bytes

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
    def extra(self) -> dict[str, Any] | None:
        """The fields the API sent beyond the four above (kept: the API adds fields), or
        None when there were none."""
        return self.__pydantic_extra__ or None

    @property
    def identity(self) -> str:
        """What makes two reads the same event, before counting repeats (see keyed_events).

        An event with an id is (id, name, timestamp): the API may send it again later with
        its payload filled in, and it is still that one event. An event without an id is
        its whole content: (name, timestamp, payload).
        """
        if self.id is not None:
            return hashlib.sha256(canonical_bytes([self.id, self.name, self.timestamp])).hexdigest()
        content = [None, self.name, self.timestamp, self.payload]
        return hashlib.sha256(canonical_bytes(content)).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


#: (event_key, event): an event with the key it is stored under.
KeyedEvent = tuple[str, TaskEvent]


def keyed_events(events: Sequence[TaskEvent] | None) -> list[KeyedEvent]:
    """The events of one API response with their storage keys.

    Events without an id can repeat exactly, and each copy is real: the n-th copy within
    one response (n from 0) gets its own key. The numbering is stable across polls
    because every re-read covers the whole group of events sharing the high-water mark's
    timestamp (polls ask for events after ``event_t - 1``), and identical events share
    a timestamp. An event with an id is keyed by its identity alone, so a later read with
    a filled-in payload updates the same row. The first copy's key equals the key used
    before repeats were counted, so existing rows keep theirs.
    """
    seen: dict[str, int] = {}
    keyed: list[KeyedEvent] = []
    for event in events or ():
        identity = event.identity
        if event.id is not None:
            keyed.append((identity, event))
            continue
        n = seen.get(identity, 0)
        seen[identity] = n + 1
        key = identity if n == 0 else _sha256(f"{identity}#{n}")
        keyed.append((key, event))
    return keyed


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
