"""Validating API payloads: the fast path for events gives what pydantic's rules give."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from archiver.exceptions import MalformedPayload
from archiver.models import _events_by_rules, parse_events, parse_task


class StrSub(str):
    pass


EVENTS: list[Any] = [
    None,
    [],
    [{"name": "a"}],
    [{"name": "a", "payload": {"b": [1, 2.5, None]}, "id": "e1", "timestamp": 1_764_000_000_000}],
    [{"name": "a", "payload": None, "id": None, "timestamp": None}],
    [{"name": "a", "zeta": 1, "alpha": {"x": 2}}, {"name": "b", "timestamp": 5}],
    [{"name": "a", "_private": 1, "__dunder__": 2, "model_config": 3}],
    [{"name": "", "timestamp": 2**63 - 1}, {"name": "b", "timestamp": -(2**63)}],
    [{"name": "a", "timestamp": 2**63}],
    [{"name": "a", "timestamp": -(2**63) - 1}],
    [{"name": "a", "timestamp": True}],
    [{"name": "a", "timestamp": 1.0}],
    [{"name": "a", "timestamp": 1.5}],
    [{"name": "a", "timestamp": "1"}],
    [{"name": "a", "id": 7}],
    [{"name": "a", "id": True}],
    [{"name": None}],
    [{"name": 1}],
    [{"payload": 1}],
    [{}],
    [{"name": StrSub("sub"), "id": StrSub("i")}],
    [{"name": "a", 1: "non-string key"}],
    [{"name": "a", "x\ud800": 1}],
    [{"name": "a\ud800", "id": "\udfff", "payload": "\ud83d", "x": "\udc00"}],
    [{"name": "a"}, "not an object"],
    [{"name": "a"}, None],
    [["name", "a"]],
    ({"name": "a"},),
    {"name": "a"},
    "x",
    5,
]


def _outcome(parse: Any, value: Any) -> Any:
    try:
        return ("ok", parse(value))
    except ValidationError as exc:
        return ("refused", exc.errors(include_url=False))


@pytest.mark.parametrize("value", EVENTS, ids=[repr(v)[:40] for v in EVENTS])
def test_fast_event_parsing_accepts_and_refuses_exactly_as_the_pydantic_rules(value: Any) -> None:
    """Every input gives the same events, or the same errors, by either path."""
    fast, rules = _outcome(parse_events, value), _outcome(_events_by_rules, value)
    assert fast == rules
    if fast[0] == "ok" and fast[1]:  # the values themselves, their types included
        for got, want in zip(fast[1], rules[1], strict=True):
            assert [type(v) for v in got] == [type(v) for v in want]


def test_a_bad_event_is_named_by_its_position_and_field() -> None:
    """MalformedPayload names the event and the field at fault, as pydantic did."""
    raw = {"id": "t1", "status": "done", "events": [{"name": "a"}, {"name": "b", "timestamp": "x"}]}
    with pytest.raises(MalformedPayload, match=r"field 'events\.1\.timestamp': Input should be"):
        parse_task(raw, context="Get Task 't1'")


def test_extra_event_fields_are_kept_in_the_order_sent() -> None:
    """Fields beyond name, payload, id and timestamp are kept, nothing else is added."""
    task = parse_task(
        {"id": "t1", "status": "done", "events": [{"z": 1, "name": "a", "b": None}, {"name": "c"}]},
        context="test",
    )
    assert task.events is not None
    assert [ev.extra for ev in task.events] == [{"z": 1, "b": None}, None]


def test_a_task_built_in_code_keeps_its_parsed_events() -> None:
    """TaskInfo takes events already parsed, as its annotation says, and keeps them."""
    from archiver.models import TaskEvent, TaskInfo

    events = [TaskEvent("a", timestamp=1), TaskEvent("b", extra={"z": 1})]
    assert TaskInfo(id="t1", status="done", events=events).events == events


def test_a_message_names_an_event_as_operators_know_it() -> None:
    """pydantic's wording names the event type TaskEvent, not a private class."""
    with pytest.raises(MalformedPayload, match="instance of TaskEvent"):
        parse_task({"id": "t1", "status": "done", "events": [5]}, context="test")
