"""Typed views of the Smooth API's payloads, validated with pydantic (events, the many
small objects of every response, by a few checks first: see :func:`parse_events`).

Validation is deliberately narrow: it checks what the archiver relies on (types of ids,
statuses, integers, URLs) and keeps everything else, including fields the API adds later,
so nothing is lost. A payload that fails validation raises :class:`MalformedPayload`
naming the field at fault.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from archiver.exceptions import MalformedPayload
from archiver.jsonvalues import canonical_bytes, has_lone_surrogate

_INT64_MIN, _INT64_END = -(2**63), 2**63
#: An integer that fits a SQL BIGINT; larger values are malformed, not stored truncated.
Int64 = Annotated[StrictInt, Field(ge=_INT64_MIN, lt=_INT64_END)]


TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
ACTIVE_STATUSES = frozenset({"waiting", "running"})
KNOWN_STATUSES = TERMINAL_STATUSES | ACTIVE_STATUSES


class TaskEvent(NamedTuple):
    """One event of a task's stream. ``payload`` is kept as whatever JSON the API sent;
    ``extra`` holds the fields the API sent beyond the four others (kept: the API adds
    fields), or None when there were none.

    A plain named tuple, built by :func:`parse_events`: an API response holds many events,
    and a pydantic model per event cost several times the checks themselves.
    """

    name: str
    payload: Any = None
    id: str | None = None
    timestamp: int | None = None
    extra: dict[str, Any] | None = None
    #: The names of the masking rules that fired on this event (archiver.masking), if any.
    masked: tuple[str, ...] | None = None

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


class _Rules:
    """pydantic's statement of the rules an event must follow: what decides (and names the
    field at fault) whenever :func:`parse_events` meets anything but the plain case. Nested
    so that pydantic's messages name the class as operators know it, ``TaskEvent``."""

    class TaskEvent(BaseModel):
        model_config = ConfigDict(extra="allow", frozen=True)

        name: StrictStr
        payload: Any = None
        id: StrictStr | None = None
        timestamp: Int64 | None = None


_EVENTS_RULES: TypeAdapter[list[_Rules.TaskEvent] | None] = TypeAdapter(
    list[_Rules.TaskEvent] | None
)
_EVENT_FIELDS = frozenset(("name", "payload", "id", "timestamp"))
_new_tuple = tuple.__new__


def parse_events(value: Any) -> list[TaskEvent] | None:
    """The ``events`` of a TaskResponse, validated; raises pydantic's ValidationError.

    The plain case (a list of JSON objects whose fields have exactly the expected types)
    is checked here in a few comparisons per event; anything else goes to
    :class:`_Rules.TaskEvent`, which accepts or refuses exactly as before and names the field
    at fault, so both paths give the same events (tests/test_models.py compares them).
    """
    if type(value) is list:
        events: list[TaskEvent] = []
        for item in value:
            if type(item) is not dict:
                if type(item) is TaskEvent:  # already parsed (a TaskInfo built in code)
                    events.append(item)
                    continue
                break
            name = item.get("name")
            id_ = item.get("id")
            timestamp = item.get("timestamp")
            if (
                type(name) is not str
                or (id_ is not None and type(id_) is not str)
                or (
                    timestamp is not None
                    and (type(timestamp) is not int or not _INT64_MIN <= timestamp < _INT64_END)
                )
            ):
                break
            extra = None
            if not item.keys() <= _EVENT_FIELDS:
                extra = {k: v for k, v in item.items() if k not in _EVENT_FIELDS}
                # pydantic refuses a field name it cannot read as Unicode (lone surrogates).
                if any(type(k) is not str or has_lone_surrogate(k) for k in extra):
                    break
            # tuple.__new__ skips the named tuple's Python-level __new__ (one call per event).
            events.append(
                _new_tuple(TaskEvent, (name, item.get("payload"), id_, timestamp, extra, None))
            )
        else:
            return events
    elif value is None:
        return None
    return _events_by_rules(value)


def _events_by_rules(value: Any) -> list[TaskEvent] | None:
    """:func:`parse_events` by :class:`_Rules.TaskEvent` alone (the reference it agrees
    with)."""
    checked = _EVENTS_RULES.validate_python(value)
    if checked is None:
        return None
    return [
        TaskEvent(ev.name, ev.payload, ev.id, ev.timestamp, ev.__pydantic_extra__ or None)
        for ev in checked
    ]


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
        keyed.append((event_key(identity, n), event))
    return keyed


def event_key(identity: str, n: int) -> str:
    """The storage key of the ``n``-th copy (from 0) of an event without an id whose
    identity is ``identity`` (see :func:`keyed_events`)."""
    return identity if n == 0 else _sha256(f"{identity}#{n}")


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
    #: The names of the masking rules that fired on this payload (archiver.masking).
    _masked_rules: tuple[str, ...] = PrivateAttr(default=())

    #: The artifact links as the API sent them, where masking rewrote the link fields: the
    #: artifact fetcher needs the presigned URLs, the columns get the masked ones.
    _links: dict[str, str | None] | None = PrivateAttr(default=None)

    @property
    def masked_rules(self) -> tuple[str, ...]:
        return self._masked_rules

    def artifact_link(self, kind: str) -> str | None:
        """The link to fetch ``kind`` (recording or downloads) from, as the API sent it."""
        if self._links is not None:
            return self._links[kind]
        return self.recording_url if kind == "recording" else self.downloads_url

    @field_validator("events", mode="wrap")
    @classmethod
    def _events(cls, value: Any, _handler: Any) -> list[TaskEvent] | None:
        return parse_events(value)  # its ValidationError names e.g. 'events.3.timestamp'

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
