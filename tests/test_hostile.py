"""Hostile API payloads: whatever List Tasks and Get Task answer, a pass never crashes,
never stores an event twice, stores what it accepts faithfully and records an error for
what it refuses.

``run_command(..., transport=httpx.MockTransport(handler))`` feeds the bodies straight to
the real client, engine and database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import BackfillPass, SyncPass, run_command
from archiver.jsonvalues import MAX_DEPTH
from archiver.stats import RunResult
from archiver.store.database import Database
from archiver.store.schema import metadata, sync_runs, task_events, tasks
from archiver.store.state import get_state, put_state
from archiver.store.tasks import insert_task_stubs
from archiver.timestamps import to_utc, utcnow
from tests.conftest import archived, assert_matches_truth, canonical, client_config

API_URL = "http://api.test/api/v1"
KEY = "sk-hostile-5c1d9e2b7a"
#: A small response cap, so "huge" bodies stay cheap to build.
MAX_BODY = 64 * 1024
HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"

# --- serving fixed bodies --------------------------------------------------------------


@dataclass
class Reply:
    """One canned HTTP answer: a JSON-able value (encoded with \\u escapes) or raw bytes."""

    body: Any
    status: int = 200

    def response(self) -> httpx.Response:
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(self.status, content=content)


@dataclass
class FakeApi:
    """List Tasks answers ``listing``; Get Task answers ``tasks[id]`` (else 404)."""

    listing: Reply = field(default_factory=lambda: Reply({"r": []}))
    tasks: dict[str, Reply] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if path == "/api/v1/task":
            return self.listing.response()
        task_id = path[len("/api/v1/task/") :]
        if task_id not in self.tasks:
            return httpx.Response(404, json={"detail": "Task not found"})
        return self.tasks[task_id].response()


def run_pass(
    db: Database,
    api: FakeApi,
    *,
    command: str = "sync",
    ids: list[str] | None = None,
    **options: Any,
) -> RunResult:
    """One pass against ``api`` (sync, or backfill), with the default back-off (a task is
    held back only after three failed passes in a row)."""
    config = ClientConfig(api_url=API_URL, api_key=ApiKey(KEY), max_response_bytes=MAX_BODY)
    transport = httpx.MockTransport(api)
    work = BackfillPass(ids=ids) if command == "backfill" else SyncPass()
    return run_command(work, db, config, SyncOptions(**options), transport=transport)


def task(task_id: str, **fields: Any) -> dict[str, Any]:
    """A well-formed TaskResponse (terminal unless ``status`` says otherwise)."""
    return {"id": task_id, "status": "done", "created_at": 1_764_000_000, **fields}


def ev(name: str, timestamp: Any, payload: Any = None, event_id: Any = None) -> dict[str, Any]:
    return {"id": event_id, "name": name, "payload": payload, "timestamp": timestamp}


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def raw_task(task_id: str, output: bytes) -> bytes:
    """Get Task bytes with ``output`` spliced in verbatim (deep nesting, bad UTF-8)."""
    head = json.dumps({"id": task_id, "status": "done"})[:-1].encode()
    return b'{"r": ' + head + b', "events": [], "output": ' + output + b"}}"


# --- reading the archive back ----------------------------------------------------------


def task_rows(db: Database) -> dict[str, Any]:
    with db.transaction() as conn:
        return {row.id: row for row in conn.execute(select(tasks))}


def event_rows(db: Database) -> list[Any]:
    with db.transaction() as conn:
        return list(conn.execute(select(task_events)))


def stored_payload(row: Any) -> str:
    """An event row's payload as sent (the raw column where set), in canonical form."""
    return canonical(archived(row.payload, row.payload_raw))


def expected_rows(events: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """The rows one response must leave, as a multiset: an event with an id once (with the
    last payload sent), an event without an id as many times as the response repeats it."""
    by_identity: dict[tuple[Any, ...], Any] = {}
    repeats: Counter[tuple[Any, ...]] = Counter()
    for e in events:
        head = (e.get("id"), e["name"], e.get("timestamp"))
        if e.get("id") is not None:
            by_identity[head] = canonical(e.get("payload"))
        else:
            repeats[(*head, canonical(e.get("payload")))] += 1
    return Counter({(*head, payload): 1 for head, payload in by_identity.items()}) + repeats


def assert_stored_faithfully(db: Database, task_id: str, events: list[dict[str, Any]]) -> None:
    """The task's rows are exactly the events sent, by the archive's identity rules."""
    rows = [r for r in event_rows(db) if r.task_id == task_id]
    stored = Counter((r.event_id, r.name, r.timestamp, stored_payload(r)) for r in rows)
    assert stored == expected_rows(events), task_id


def assert_no_duplicates(db: Database) -> None:
    """No two rows share (task_id, event_key), nor an event id (task, id, name, timestamp)."""
    rows = event_rows(db)
    keys = [(r.task_id, r.event_key) for r in rows]
    assert len(keys) == len(set(keys))
    ids = [(r.task_id, r.event_id, r.name, r.timestamp) for r in rows if r.event_id is not None]
    assert len(ids) == len(set(ids))


def last_run(db: Database) -> Any:
    with db.transaction() as conn:
        return conn.execute(select(sync_runs).order_by(sync_runs.c.id.desc())).first()


# --- every listed bad input, one task each, in one pass --------------------------------

GOOD_EVENTS = [ev("browser_action", 1_764_000_001_000, {"name": "click"}, "evt_1")]
NEGATIVE = [ev("a", -7, event_id="n1"), ev("b", -1_764_000_000_000, event_id="n2")]
DUPLICATED = [ev("a", 5, {"k": [1, 2]}, "d1"), ev("a", 5, {"k": [1, 2]}, "d1"), ev("b", None)] * 2
BACKWARDS = [ev("late", 900, event_id="b3"), ev("mid", 500, event_id="b2"), ev("early", 100)]
ABSURD_OK = [ev("far", 2**63 - 1, event_id="f1"), ev("low", -(2**63), event_id="f2")]
NUL_EVENTS = [ev("nul\x00name", 3, {"k\x00": "v\x00"}, "x\x00")]
SURROGATE_EVENTS = [ev("s", 4, {"k\udfff": ["v\ud83d", -0.0, 1e308]}, "s1"), *GOOD_EVENTS]
#: One second before 0001-01-01: no datetime holds it (it once raised OverflowError).
BEFORE_YEAR_1 = -62_135_596_801
ANCIENT = [ev("a", BEFORE_YEAR_1), ev("b", BEFORE_YEAR_1 * 1000), ev("c", -62_135_596_800)]


def bad_inputs() -> dict[str, tuple[Reply, str | None]]:
    """task id -> (Get Task reply, the error expected in last_error or None when stored)."""
    return {
        "t_good": (Reply({"r": task("t_good", events=GOOD_EVENTS)}), None),
        "t_wrong_types": (
            Reply({"r": task("t_wrong_types", status=123, credits_used="lots", events="x")}),
            "field",
        ),
        "t_event_wrong_type": (
            Reply({"r": task("t_event_wrong_type", events=[ev("a", "soon")])}),
            "events.0.timestamp",
        ),
        "t_missing_id": (Reply({"r": {"status": "done", "events": []}}), "field 'id'"),
        "t_missing_status": (Reply({"r": {"id": "t_missing_status"}}), "field 'status'"),
        "t_null_id": (Reply({"r": task("t_null_id", id=None)}), "field 'id'"),
        "t_empty_id": (Reply({"r": task("t_empty_id", id=" ")}), "task id is empty"),
        "t_other_id": (Reply({"r": task("somebody_else")}), "expected 't_other_id'"),
        "t_no_envelope": (Reply({"detail": "ok"}), "'r' member"),
        "t_list_body": (Reply([1, 2, 3]), "'r' member"),
        "t_non_json": (Reply(b"\x00\xff{garbage"), "not a JSON document"),
        "t_html_200": (Reply(HTML), "not a JSON document"),
        "t_empty_body": (Reply(b""), "not a JSON document"),
        "t_invalid_utf8": (Reply(raw_task("t_invalid_utf8", b'"caf\xe9"')), "not a JSON document"),
        "t_huge": (
            Reply({"r": task("t_huge", output="x" * (MAX_BODY + 1), events=[])}),
            "larger than",
        ),
        "t_deep": (Reply(raw_task("t_deep", deep_json(20_000))), "nested too deeply"),
        "t_absurd_created_at": (
            Reply({"r": task("t_absurd_created_at", created_at=2**63)}),
            "field 'created_at'",
        ),
        "t_absurd_event_t": (
            Reply({"r": task("t_absurd_event_t", events=[ev("a", 2**64)])}),
            "events.0.timestamp",
        ),
        "t_float_timestamp": (
            Reply({"r": task("t_float_timestamp", events=[ev("a", 1.5)])}),
            "events.0.timestamp",
        ),
        "t_surrogate": (
            Reply({"r": task("t_surrogate", output="\ud800", events=SURROGATE_EVENTS)}),
            None,
        ),
        "t_unknown_status": (
            Reply({"r": task("t_unknown_status", status="paused", events=GOOD_EVENTS)}, 202),
            None,
        ),
        "t_negative": (Reply({"r": task("t_negative", created_at=-5, events=NEGATIVE)}), None),
        "t_extreme_int64": (Reply({"r": task("t_extreme_int64", events=ABSURD_OK)}), None),
        "t_before_year_1": (
            Reply({"r": task("t_before_year_1", created_at=BEFORE_YEAR_1, events=ANCIENT)}),
            None,
        ),
        "t_duplicated": (Reply({"r": task("t_duplicated", events=DUPLICATED)}), None),
        "t_backwards": (Reply({"r": task("t_backwards", events=BACKWARDS)}), None),
        "t_nul": (Reply({"r": task("t_nul", output="a\x00b", events=NUL_EVENTS)}), None),
    }


def test_each_bad_input_is_recorded_or_stored_faithfully(
    database: Database, production_retries: None
) -> None:
    """Each listed bad input fails only its task with a clear last_error, or is stored as sent."""
    cases = bad_inputs()
    if database.dialect == "postgresql":  # PostgreSQL refuses NUL in an event's name (text)
        cases["t_nul"] = (cases["t_nul"][0], "database error")
    api = FakeApi(tasks={task_id: reply for task_id, (reply, _) in cases.items()})
    result = run_pass(database, api, task_ids=tuple(cases))
    assert result.exit_code == 1 and result.outcome == "partial"
    rows = task_rows(database)
    failing = {task_id for task_id, (_, error) in cases.items() if error is not None}
    assert result.stats.errors == len(failing)
    for task_id, (reply, error) in cases.items():
        row = rows[task_id]
        if error is not None:
            assert row.last_error and error in row.last_error, (task_id, row.last_error)
            # Asked again next pass: one failure is no reason to hold a task back.
            assert row.error_count == 1 and row.finalized_at is None, task_id
            assert row.event_count == 0, task_id
        else:
            assert row.last_error is None, (task_id, row.last_error)
            assert_stored_faithfully(database, task_id, reply.body["r"]["events"])
    assert_no_duplicates(database)
    # Unknown status: stored as sent, and the task stays active (it is not terminal).
    assert rows["t_unknown_status"].status == "paused"
    assert rows["t_unknown_status"].finalized_at is None
    # Events going backwards: all stored, the mark is the largest timestamp.
    assert rows["t_backwards"].event_t == 900 and rows["t_backwards"].event_count == 3
    # Negative and absurd values: stored raw; *_utc follows the documented rule
    # (abs(v) >= 10**11 -> ms) and is NULL when beyond what a date can hold.
    assert rows["t_negative"].created_at == -5
    for row in event_rows(database):
        assert as_utc(row.timestamp_utc) == to_utc(row.timestamp), row
    extreme = {r.timestamp: r.timestamp_utc for r in event_rows(database)}
    assert extreme[2**63 - 1] is None and extreme[-(2**63)] is None
    assert extreme[BEFORE_YEAR_1] is None and extreme[BEFORE_YEAR_1 * 1000] is None
    assert rows["t_before_year_1"].created_at_utc is None
    assert rows["t_extreme_int64"].event_t == 2**63 - 1
    # An event with an id sent four times is one row; one without an id sent twice in a
    # response is two rows (both copies are real).
    assert rows["t_duplicated"].event_count == 3
    # A lone surrogate in the output is kept, exactly (the typed column cannot hold it).
    assert archived(rows["t_surrogate"].output, rows["t_surrogate"].output_raw) == "\ud800"
    assert rows["t_surrogate"].output == "\ufffd"
    run = last_run(database)
    assert run.outcome == "partial" and run.errors == len(failing)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive UTC datetimes, PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def test_bad_tasks_are_retried_and_then_archived_once_fixed(database: Database) -> None:
    """A task refused for a bad payload is archived once, when the API answers properly."""
    api = FakeApi(tasks={"t1": Reply(HTML), "t2": Reply({"r": task("t2", events=DUPLICATED)})})
    first = run_pass(database, api, task_ids=("t1", "t2"))
    assert first.exit_code == 1
    api.tasks["t1"] = Reply({"r": task("t1", events=BACKWARDS + BACKWARDS)})
    second = run_pass(database, api, task_ids=("t1", "t2"))
    assert second.exit_code == 0, second.errors
    rows = task_rows(database)
    assert rows["t1"].last_error is None and rows["t1"].finalized_at is not None
    assert_stored_faithfully(database, "t1", BACKWARDS + BACKWARDS)
    assert_stored_faithfully(database, "t2", DUPLICATED)
    assert run_pass(database, api, task_ids=("t1", "t2")).stats.events_inserted == 0
    assert_no_duplicates(database)


@pytest.mark.parametrize(
    "listing",
    [
        Reply(HTML),
        Reply(b"\xff\xfe not json"),
        Reply(b'{"r": ' + deep_json(20_000) + b"}"),
        Reply({"r": "x" * (MAX_BODY + 1)}),
        Reply({"r": {"id": "t1", "status": "done"}}),
        Reply({"detail": "Internal"}),
        Reply(None),
    ],
    ids=["html200", "non-json", "deep", "huge", "r-not-a-list", "no-envelope", "null"],
)
def test_a_hostile_listing_stops_discovery_but_not_the_pass(tmp_path: Path, listing: Reply) -> None:
    """A List Tasks body that is not a page fails the pass (new tasks may be missing), with
    one recorded error; known tasks are still polled."""
    db = Database(f"sqlite:///{tmp_path}/a.db")
    db.prepare()
    api = FakeApi(tasks={"known": Reply({"r": task("known", events=GOOD_EVENTS)})})
    run_pass(db, api, task_ids=("known",))  # the task is known from an earlier pass
    api.tasks["known"] = Reply({"r": task("known", status="running", events=GOOD_EVENTS)})
    with db.transaction() as conn:
        conn.execute(tasks.update().values(finalized_at=None))
    api.listing = listing
    result = run_pass(db, api)
    assert result.exit_code == 1 and result.outcome == "failed"
    assert result.stats.errors == 1 and "discovery stopped" in result.errors[0]
    assert result.stats.tasks_polled == 1
    assert_stored_faithfully(db, "known", GOOD_EVENTS)
    db.dispose()


def test_hostile_list_items_are_archived_losslessly(database: Database) -> None:
    """Listed outputs with surrogates, NUL or deep nesting are archived exactly; only a task
    whose very id the database cannot hold is a listing error."""
    deep: Any = "leaf"
    for _ in range(600):
        deep = [deep]
    items = [
        task("t_ok", status="running"),
        task("t_surrogate_output", output="\udfff"),
        task("t_deep_output", output=deep),
        task("t_\ud800_id"),
        task("t_nul_output", output="\x00"),
        task("t_nul_\x00_id"),
        task("t_ok2", status="running"),
        task("t_before_year_1", created_at=BEFORE_YEAR_1),
    ]
    bodies = {
        "t_ok": Reply({"r": task("t_ok", events=GOOD_EVENTS)}),
        "t_ok2": Reply({"r": task("t_ok2", events=BACKWARDS)}),
        "t_before_year_1": Reply({"r": task("t_before_year_1", created_at=BEFORE_YEAR_1)}),
        "t_surrogate_output": Reply({"r": task("t_surrogate_output", output="\udfff")}),
        "t_deep_output": Reply({"r": task("t_deep_output", output=deep, events=GOOD_EVENTS)}),
        "t_nul_output": Reply({"r": task("t_nul_output", output="\x00", events=GOOD_EVENTS)}),
        "t_nul_\x00_id": Reply({"r": task("t_nul_\x00_id", events=GOOD_EVENTS)}),
    }
    api = FakeApi(listing=Reply({"r": items}), tasks=bodies)
    result = run_pass(database, api)
    rows = task_rows(database)
    assert "t_\ud800_id" not in rows  # an id is a key, not JSON: it cannot be stored anywhere
    assert any("t_\\ud800_id" in error for error in result.errors), result.errors
    failed = 2 if database.dialect == "postgresql" else 1  # PostgreSQL text refuses NUL ids
    assert result.exit_code == 1 and result.stats.errors == failed, result.errors
    assert_stored_faithfully(database, "t_ok", GOOD_EVENTS)
    assert_stored_faithfully(database, "t_ok2", BACKWARDS)
    assert rows["t_before_year_1"].last_error is None
    assert rows["t_before_year_1"].created_at == BEFORE_YEAR_1
    assert rows["t_before_year_1"].created_at_utc is None
    for task_id, output in [("t_surrogate_output", "\udfff"), ("t_nul_output", "\x00")]:
        row = rows[task_id]
        assert row.last_error is None and row.finalized_at is not None, task_id
        assert canonical(archived(row.output, row.output_raw)) == canonical(output), task_id
    assert rows["t_deep_output"].last_error is None
    stored_deep = archived(rows["t_deep_output"].output, rows["t_deep_output"].output_raw)
    assert canonical(stored_deep) == canonical(deep)
    assert_stored_faithfully(database, "t_deep_output", GOOD_EVENTS)
    assert_stored_faithfully(database, "t_nul_output", GOOD_EVENTS)
    if database.dialect == "postgresql":
        assert "t_nul_\x00_id" not in rows
    else:
        assert_stored_faithfully(database, "t_nul_\x00_id", GOOD_EVENTS)
    assert_no_duplicates(database)


def test_an_events_unknown_fields_are_kept_and_follow_a_later_read(database: Database) -> None:
    """Fields an event has beyond name/payload/id/timestamp land in extra (exactly), and a
    re-read of an event with an id that changed them updates its row."""
    odd = {"big": 10**40, "nul": "a\x00b", "neg": -0.0}
    first = [
        {**ev("step", 100, {"k": 1}, "e1"), "duration_ms": 12},
        {**ev("shot", 100, None), **odd},
        ev("plain", 101, {"k": 2}),
    ]
    second = [{**first[0], "duration_ms": 15, "screenshot": {"w": 1}}, *first[1:]]
    api = FakeApi(
        listing=Reply({"r": [task("t", status="running")]}),
        tasks={"t": Reply({"r": task("t", status="running", events=first)}, 202)},
    )
    assert run_pass(database, api).exit_code == 0
    api.tasks["t"] = Reply({"r": task("t", events=second)})
    result = run_pass(database, api)
    assert result.exit_code == 0, result.errors
    rows = {row.name: row for row in event_rows(database)}
    assert sorted(rows) == ["plain", "shot", "step"]
    assert archived(rows["step"].extra, rows["step"].extra_raw) == {
        "duration_ms": 15,
        "screenshot": {"w": 1},
    }
    assert canonical(archived(rows["shot"].extra, rows["shot"].extra_raw)) == canonical(odd)
    assert (rows["plain"].extra, rows["plain"].extra_raw) == (None, None)
    assert_no_duplicates(database)


def test_garbage_and_html_200s_from_the_simulator_fail_only_their_task(
    database: Database, make_simulator
) -> None:
    """Over HTTP, garbage/HTML 200s fail only their task; a clean pass reaches the truth."""
    sim = make_simulator(
        tasks=12, events_per_task=5, seed=91, fault_rate=0.4, fault_kinds=("garbage", "html200")
    )
    sim.finish_all()
    with database.transaction() as conn:
        insert_task_stubs(conn, sorted(sim.truth()), utcnow())
    options = SyncOptions(discover=False)
    result = run_command(SyncPass(), database, client_config(sim), options)
    assert result.exit_code == 1 and result.outcome == "partial", result.message
    failed = [row for row in task_rows(database).values() if row.last_error]
    assert len(failed) == result.stats.errors == sim.stats["fault"] > 0
    assert all("the body is not a JSON document" in row.last_error for row in failed)
    assert_no_duplicates(database)
    sim.config = replace(sim.config, fault_rate=0.0)
    clean = run_command(SyncPass(), database, client_config(sim), options)
    assert clean.exit_code == 0, clean.errors
    assert_matches_truth(database, sim)


def test_sqlite_keeps_top_level_json_numbers_as_sent(tmp_path: Path) -> None:
    """A task output or event payload that is a bare JSON number is stored as sent."""
    db = Database(f"sqlite:///{tmp_path}/a.db")
    db.prepare()
    numbers = [10**20 + 1, 4.272077493720705e16, 1.0]
    events = [ev(f"n{i}", i, number) for i, number in enumerate(numbers)]
    api = FakeApi(tasks={"t": Reply({"r": task("t", output=10**20 + 1, events=events)})})
    assert run_pass(db, api, task_ids=("t",)).exit_code == 0
    stored = {row.name: row.payload for row in event_rows(db)}
    output = task_rows(db)["t"].output
    db.dispose()
    assert output == 10**20 + 1 and isinstance(output, int)
    for i, number in enumerate(numbers):
        assert canonical(stored[f"n{i}"]) == canonical(number)


@dataclass
class PagedApi(FakeApi):
    """List Tasks pages through ``listed`` like the real API (``t`` strictly before)."""

    listed: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/task":
            before = int(request.url.params.get("t", 2**63))
            page = sorted(
                (t for t in self.listed if t["created_at"] < before),
                key=lambda t: (-t["created_at"], t["id"]),
            )[: int(request.url.params["l"])]
            return httpx.Response(200, json={"r": page})
        return super().__call__(request)


@pytest.mark.parametrize("where", ["listed", "stored-by-an-older-version"])
def test_absurd_created_at_does_not_stall_discovery(tmp_path: Path, where: str) -> None:
    """A far-future created_at never becomes the watermark; discovery still finds all tasks."""
    db = Database(f"sqlite:///{tmp_path}/a.db")
    db.prepare()
    api = PagedApi()
    if where == "listed":
        api.listed.append(task("absurd", status="running", created_at=2**62))
    else:
        with db.transaction() as conn:
            put_state(conn, "discovery", {"newest_created_at": 2**62}, utcnow())
    for batch in range(3):
        api.listed += [
            task(f"t{batch}_{i:02d}", status="running", created_at=1_764_000_000 + batch * 100 + i)
            for i in range(45)  # more than a page (32) per pass
        ]
        api.tasks = {t["id"]: Reply({"r": t}, 202) for t in api.listed}
        result = run_pass(db, api)
        assert result.exit_code == 0, result.errors
        assert set(task_rows(db)) == {t["id"] for t in api.listed}, f"pass {batch}"
    with db.transaction() as conn:
        state = get_state(conn, "discovery")
    assert state == {"newest_created_at": 1_764_000_244}
    db.dispose()


# --- property: hostile payloads generated by Hypothesis ---------------------------------

SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
HOSTILE_STRINGS = ["\x00", "a\x00b", "\ud800", "x\udfff", "", " ", "\u202e", "ok"]
INT64 = st.integers(-(2**63), 2**63 - 1)
ABSURD_INTS = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, -(10**40)])
TIMESTAMPS = st.one_of(
    st.none(), INT64, st.sampled_from([0, -1, 1_764_000_000, 1_764_000_000_123, 10**11])
)
STATUSES = st.sampled_from(
    ["waiting", "running", "done", "failed", "cancelled", "paused", "DONE", ""]
)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),
        # -0.0 included: it reads back from the raw column where jsonb has no negative
        # zero. NaN and Infinity are not JSON.
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
        max_leaves=8,
    )


GOOD_JSON = json_values(SAFE_TEXT)


@st.composite
def good_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events, with duplicates inside the response and in any time order."""
    base = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": SAFE_TEXT},
                optional={
                    "id": st.none() | SAFE_TEXT,
                    "payload": GOOD_JSON,
                    "timestamp": TIMESTAMPS,
                },
            ),
            max_size=5,
        )
    )
    if base:
        base += draw(st.lists(st.sampled_from(base), max_size=3))  # duplicated events
    return list(draw(st.permutations(base)))  # backwards in time, too


@st.composite
def good_task(draw: st.DrawFn, task_id: str) -> dict[str, Any]:
    body = {"id": task_id, "status": draw(STATUSES)}
    optional = {
        "output": GOOD_JSON,
        "credits_used": st.none() | INT64,
        "device": st.none() | SAFE_TEXT,
        "created_at": st.none() | INT64,
        "live_url": st.none() | st.just("https://live.example/x?token=abc"),
        "agent_version": SAFE_TEXT,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    body["events"] = draw(st.none() | good_events())
    return body


WRONG_TYPES = st.sampled_from([None, 1, 1.5, True, "x", [], {}, [1], {"a": 1}])


@st.composite
def mutated(draw: st.DrawFn, body: dict[str, Any]) -> tuple[Any, str]:
    """``body`` made hostile; returns (reply body, "bad" | "either")."""
    body = json.loads(json.dumps(body))
    kind = draw(
        st.sampled_from(
            [
                "wrong_type",
                "missing",
                "absurd_int",
                "event_wrong_type",
                "event_absurd",
                "other_id",
                "hostile_string",
                "deep",
            ]
        )
    )
    events = body.get("events") or []
    if kind == "wrong_type":
        name = draw(st.sampled_from(["id", "status", "credits_used", "created_at", "events"]))
        value = draw(WRONG_TYPES.filter(lambda v: not _accepted(name, v)))
        body[name] = value
        return body, "bad"
    if kind == "missing":
        del body[draw(st.sampled_from(["id", "status"]))]
        return body, "bad"
    if kind == "absurd_int":
        body[draw(st.sampled_from(["credits_used", "created_at"]))] = draw(ABSURD_INTS)
        return body, "bad"
    if kind in ("event_wrong_type", "event_absurd") and events:
        target = draw(st.sampled_from(events))
        if kind == "event_absurd":
            target["timestamp"] = draw(ABSURD_INTS)
        else:
            name = draw(st.sampled_from(["name", "id", "timestamp"]))
            value = draw(WRONG_TYPES.filter(lambda v: not _accepted("event_" + name, v)))
            target[name] = value
        body["events"] = events
        return body, "bad"
    if kind == "other_id":
        body["id"] = body["id"] + "_other"
        return body, "bad"
    if kind == "hostile_string":
        return _hostile_string(draw, body, events)
    depth = draw(st.sampled_from([100, 300, 900, 5_000, 20_000]))
    raw = json.dumps({"r": body}).encode()
    # Nesting up to MAX_DEPTH (10,000) is archived; deeper bodies are refused as malformed.
    expect = "good" if depth <= MAX_DEPTH else "bad"
    return raw[:-2] + b', "deep": ' + deep_json(depth) + b"}}", expect


def _hostile_string(draw: st.DrawFn, body: dict[str, Any], events: list[Any]) -> tuple[Any, str]:
    """A hostile string in the output, the device, a key or an event."""
    spot = draw(st.sampled_from(["output", "device", "event_name", "event_payload", "key"]))
    text = draw(st.sampled_from(HOSTILE_STRINGS))
    if spot == "output":
        body["output"] = text
    elif spot == "device":
        body["device"] = text
    elif spot == "key":
        body["output"] = {text: [text]}
    elif events:
        target = draw(st.sampled_from(events))
        if spot == "event_name":
            target["name"] = text
        else:
            target["payload"] = {"v": text}
    # A task is always archived (a device the database cannot hold is replaced, and
    # kept exactly in payload_raw); an event's name is a text column that refuses lone
    # surrogates (and NUL on PostgreSQL), with no raw twin.
    return body, "either" if spot == "event_name" else "good"


def _accepted(name: str, value: Any) -> bool:
    """Whether the model accepts ``value`` for the field (so it is no wrong type)."""
    if name in ("status", "event_name"):
        return isinstance(value, str)
    if name in ("id", "event_id"):
        return isinstance(value, str) or (name == "event_id" and value is None)
    if name in ("credits_used", "created_at", "event_timestamp"):
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if name == "events":
        return value is None or value == []
    return False


RAW_BODIES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            HTML,
            b"",
            b"null",
            b"[]",
            b'{"r": null}',
            b'{"r": "\xff"}',
            b'{"detail": "x"}',
            b'{"r": ' + deep_json(20_000) + b"}",
            b'{"r": "' + b"x" * (MAX_BODY + 10) + b'"}',
        ]
    ),
)


@dataclass
class Case:
    """One generated task: its Get Task reply and what the archive must do with it."""

    task_id: str
    reply: Reply
    expect: str  # "good": stored faithfully; "bad": last_error; "either": one of the two
    status: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[FakeApi, list[Case], str]:
    n = draw(st.integers(1, 4))
    suffixes = st.sampled_from(["", "a", "/x", " y", "..", "%2F", "é"])
    ids = [f"tsk_{i}" + draw(suffixes) for i in range(n)]
    cases: list[Case] = []
    for task_id in ids:
        body = draw(good_task(task_id))
        how = draw(st.sampled_from(["good", "good", "mutated", "raw"]))
        status = draw(st.sampled_from([200, 202]))
        if how == "good":
            reply = Reply({"r": body}, status)
            cases.append(Case(task_id, reply, "good", body["status"], body["events"] or []))
        elif how == "mutated":
            hostile, expect = draw(mutated(body))
            if isinstance(hostile, bytes):  # the body with a deep member spliced in
                reply, sent = Reply(hostile, status), body
            else:
                reply, sent = Reply({"r": hostile}, status), hostile
            events = sent.get("events")
            cases.append(
                Case(
                    task_id,
                    reply,
                    expect,
                    sent.get("status"),
                    events if isinstance(events, list) else [],
                )
            )
        else:
            cases.append(Case(task_id, Reply(draw(RAW_BODIES), status), "bad"))
    mode = draw(st.sampled_from(["sync", "sync --task", "backfill", "backfill --ids-file"]))
    listing: Reply = Reply({"r": []})
    if mode in ("sync", "backfill"):
        if draw(st.booleans()):
            items = [draw(list_items(c)) for c in cases]
            items += draw(st.lists(st.sampled_from(items), max_size=2))  # listed twice
            listing = Reply({"r": items})
        else:
            listing = Reply(draw(RAW_BODIES | st.builds(lambda v: {"r": v}, GOOD_JSON)))
    api = FakeApi(listing=listing, tasks={c.task_id: c.reply for c in cases})
    return api, cases, mode


def list_items(case: Case) -> st.SearchStrategy[dict[str, Any]]:
    """The task as List Tasks shows it, or a minimal item, or one with a hostile output."""
    minimal = {"id": case.task_id, "status": "running"}
    outputs = st.sampled_from(HOSTILE_STRINGS) | st.sampled_from([300, 600]).map(nested)
    return st.one_of(
        st.just(_list_item(case)),
        st.just(minimal),
        outputs.map(lambda output: {**minimal, "output": output}),
    )


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _list_item(case: Case) -> dict[str, Any]:
    body = case.reply.body
    if isinstance(body, dict) and isinstance(body.get("r"), dict):
        return {**body["r"], "id": case.task_id, "events": None}
    return {"id": case.task_id, "status": "running"}


def check_pass(db: Database, api: FakeApi, cases: list[Case], mode: str) -> None:
    """Run one pass over a generated scenario and check every property."""
    command, _, by_id = mode.partition(" ")
    discover = not by_id
    ids = [c.task_id for c in cases]
    if command == "sync":
        result = run_pass(db, api, task_ids=tuple(ids) if by_id else ())  # never raises
    else:
        result = run_pass(db, api, command="backfill", ids=ids if by_id else None)
    assert result.exit_code in (0, 1), result.message
    if result.outcome == "failed":  # the listing is not a page, or nothing answered well
        message = result.message or ""
        listing_failed = discover and ("List Tasks" in message or "listing failed" in message)
        assert listing_failed or message.startswith("no request to the Smooth API"), message
    else:
        assert result.outcome in ("ok", "partial"), result.message
    assert last_run(db).outcome == result.outcome
    assert_no_duplicates(db)
    rows = task_rows(db)
    for case in cases:
        row = rows.get(case.task_id)
        if row is None:
            assert discover, case.task_id  # only a listing decides which tasks are known
            continue
        assert row.last_polled_at is not None, case.task_id  # every known task was polled
        event(f"{case.expect} payload: {'error recorded' if row.last_error else 'stored'}")
        if case.expect == "bad":
            assert row.last_error, case.task_id
        elif case.expect == "good":
            assert row.last_error is None, (case.task_id, row.last_error)
        if row.last_error is None:
            assert row.status == case.status, case.task_id
            assert_stored_faithfully(db, case.task_id, case.events)
        else:
            assert result.exit_code == 1
            with db.transaction() as conn:
                stored = conn.scalar(
                    select(func.count()).where(task_events.c.task_id == case.task_id)
                )
            assert stored == 0 and row.event_count == 0  # a refused poll stores nothing


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
def sqlite_template(tmp_path: Path) -> Path:
    """A migrated SQLite archive, copied afresh for each generated example."""
    path = tmp_path / "template.db"
    db = Database(f"sqlite:///{path}")
    db.prepare()
    db.dispose()  # the last connection checkpoints the WAL into the file
    return path


@examples(200)
@given(scenario=scenarios())
def test_hostile_payloads_never_crash_or_duplicate_on_sqlite(
    sqlite_template: Path, scenario: tuple[FakeApi, list[Case], str]
) -> None:
    """Hostile bodies never crash a pass or duplicate; good ones are stored, bad ones recorded."""
    path = sqlite_template.with_name(f"example-{next(_examples)}.db")
    shutil.copyfile(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    try:
        check_pass(db, *scenario)
    finally:
        db.dispose()
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()


_examples = count()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    db = Database(postgres_url)
    db.prepare()
    yield db
    db.dispose()


def empty(db: Database) -> None:
    """Delete every row (children first), for the next example."""
    with db.transaction() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))


@examples(100)
@given(scenario=scenarios())
def test_hostile_payloads_never_crash_or_duplicate_on_postgresql(
    postgres_db: Database, scenario: tuple[FakeApi, list[Case], str]
) -> None:
    """Same on PostgreSQL, where NUL in text or jsonb must become a recorded task error."""
    empty(postgres_db)
    check_pass(postgres_db, *scenario)
