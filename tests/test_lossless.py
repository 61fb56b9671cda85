"""Any JSON the API sends is archived losslessly, on SQLite and PostgreSQL: lone
surrogates and NUL in strings and keys, numbers as written, nesting 1,000+ deep, 1 MB
strings. What the archive gives back (the typed column, or its ``*_raw`` twin where set)
is compared with what was sent by :func:`tests.conftest.canonical`, which tells 1 from
1.0 and -0.0 from 0.0 (Python's ``==`` does not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, text

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import RunResult, SyncPass, run_command
from archiver.jsonvalues import (
    MAX_DEPTH,
    canonical_bytes,
    column_texts,
    column_values,
    dumps_json,
    iter_json,
    json_column,
    loads_json,
    storage_json,
)
from archiver.models import TaskEvent, keyed_events
from archiver.store.database import Database
from archiver.store.events import insert_events
from archiver.store.schema import task_events, tasks
from tests.conftest import (
    TEST_API_KEY,
    archived,
    assert_matches_truth,
    canonical,
    run_archiver,
)
from tests.test_docs import ANALYSTS, OPERATIONS, fenced, run_raw
from tests.test_hostile import API_URL, KEY, FakeApi, Reply, empty, ev, task

# --- hostile JSON ------------------------------------------------------------------------

HOSTILE_TEXTS = [
    "\ud83d",
    "lone \ud83d surrogate",
    "\udfff\ud800",
    "\x00",
    "a\x00b",
    "\ud83d\x00",
    "\x1b[31mred",
    "é😀",
    "",
]
SPECIAL_NUMBERS = [-0.0, 0.0, 1e308, -1e308, 1.5e308, 5e-324, 10**40, -(10**40), 1.0, 1, 1e16]
MEGABYTE = "x" * 2**20
TEXTS = st.text(
    st.characters() | st.characters(categories=["Cs"]) | st.just("\x00"), max_size=6
) | st.sampled_from(HOSTILE_TEXTS)


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` levels of arrays and objects (built without recursion)."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k\x00\ud83d": value}
    return value


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(SPECIAL_NUMBERS),
    TEXTS,
)
VALUES = st.recursive(
    LEAVES,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXTS, kids, max_size=3),
    max_leaves=8,
)


class Sent:
    """A JSON value as sent, shown briefly (Hypothesis' printer recurses into values)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        text = storage_json(self.value)
        return f"Sent({text[:300]}{'...' if len(text) > 300 else ''} [{len(text)} chars])"


HOSTILE_JSON = st.one_of(
    VALUES,
    st.builds(nested, st.sampled_from([1_000, 3_000]), VALUES),
    st.builds(lambda v: [MEGABYTE + "\ud83d", v], VALUES),
).map(Sent)
#: Every value the issue lists, each sent explicitly as an output and as payloads.
LISTED = [
    "lone \ud83d surrogate",
    {"\ud83d": "\udfff"},
    "a\x00b",
    {"k\x00": "v\x00"},
    nested(1_000, "leaf"),
    -0.0,
    1e308,
    5e-324,
    10**40,
    1.0,
    MEGABYTE,
    [-0.0, 0.0, 1, 1.0, 1e16],
]

# --- one pass over a task that carries the value ---------------------------------------


def run(db: Database, api: FakeApi) -> RunResult:
    """One ``sync --task t`` pass against ``api`` (64 MiB response cap, as by default)."""
    config = ClientConfig(api_url=API_URL, api_key=ApiKey(KEY))
    options = SyncOptions(task_ids=("t",))
    return run_command(SyncPass(), db, config, options, transport=httpx.MockTransport(api))


def stored_event_payloads(db: Database) -> list[tuple[Any, str | None]]:
    with db.reading() as conn:
        rows = conn.execute(select(task_events.c.payload, task_events.c.payload_raw))
        return [(row.payload, row.payload_raw) for row in rows]


def assert_raw_only_where_needed(typed: Any, raw: str | None, sent: Any) -> None:
    """The raw column is set exactly when the typed column does not give ``sent`` back."""
    typed_exact = canonical(typed) == canonical(sent)
    assert (raw is None) == typed_exact, (raw is None, typed_exact)


def check_round_trip(db: Database, output: Any, payloads: list[Any]) -> None:
    events = [ev(f"e{i}", 1_764_000_000_000 + i, p, f"evt_{i}") for i, p in enumerate(payloads)]
    body = {"r": task("t", status="running", output=output, events=events + events)}
    # The body as an API writes it: lone surrogates as \ud83d escapes, valid UTF-8.
    api = FakeApi(tasks={"t": Reply(storage_json(body).encode(), 202)})
    first = run(db, api)
    assert first.exit_code == 0, first.errors
    with db.reading() as conn:
        row = conn.execute(select(tasks)).one()
    assert row.last_error is None
    assert canonical(archived(row.output, row.output_raw)) == canonical(output)
    assert_raw_only_where_needed(row.output, row.output_raw, output)
    payload = archived(row.payload, row.payload_raw)
    assert canonical(payload["output"]) == canonical(output)
    stored = stored_event_payloads(db)
    # Each event was sent twice: one row each, every payload exactly as sent.
    assert sorted(canonical(archived(*pair)) for pair in stored) == sorted(
        canonical(p) for p in payloads
    )
    for (typed, raw), sent in zip(
        sorted(stored, key=lambda pair: canonical(archived(*pair))),
        sorted(payloads, key=canonical),
        strict=True,
    ):
        assert_raw_only_where_needed(typed, raw, sent)
    # Read again: the keys are stable, nothing is stored twice.
    again = run(db, api)
    assert again.exit_code == 0 and again.stats.events_inserted == 0, again.errors


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def with_listed_examples(test: Any) -> Any:
    for value in LISTED:
        test = example(output=Sent(value), payloads=[Sent(value), Sent({"v": value})])(test)
    return test


@examples(20)
@with_listed_examples
@given(output=HOSTILE_JSON, payloads=st.lists(HOSTILE_JSON, min_size=1, max_size=3))
def test_any_json_round_trips_exactly(
    database: Database, output: Sent, payloads: list[Sent]
) -> None:
    """Outputs and event payloads come back exactly as sent, raw column only where needed."""
    empty(database)
    check_round_trip(database, output.value, [p.value for p in payloads])


def test_text_columns_the_database_cannot_hold_are_replaced_and_kept_raw(
    database: Database,
) -> None:
    """A device or status with a lone surrogate or NUL is archived; payload_raw has it exact."""
    body = {"r": task("t", status="done\x00", device="mobile \ud83d", events=[])}
    first = run(database, FakeApi(tasks={"t": Reply(storage_json(body).encode())}))
    assert first.exit_code == 0, first.errors
    with database.reading() as conn:
        row = conn.execute(select(tasks)).one()
    assert row.device == "mobile \ufffd" and row.last_error is None
    expected_status = "done\ufffd" if database.dialect == "postgresql" else "done\x00"
    assert row.status == expected_status
    payload = archived(row.payload, row.payload_raw)
    assert (payload["status"], payload["device"]) == ("done\x00", "mobile \ud83d")


# --- the canonical text and the parser ---------------------------------------------------


def old_dumps_json(value: Any) -> str:
    """dumps_json before lossless storage: event keys stored then must not change."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_orjson_writes_float_exponents_as_python_does() -> None:
    """Event keys and the jsonb exactness check rely on "1e+16" (orjson >= 3.11.7)."""
    for value in (1e16, 1.5e308, 1e22, 123456789.0):
        assert dumps_json(value) == json.dumps(value)
    assert "e+" in dumps_json({"x": 1e16})


@examples(200)
@example(value=[10**40, {"\ud83d": -0.0}, 1e308, "a\x00"])
@example(value=nested(300, 1.0))
@given(value=VALUES)
def test_canonical_text_is_unchanged_where_it_was_computable(value: Any) -> None:
    """Event keys of events stored by earlier versions stay the same (no duplicates)."""
    assert dumps_json(value) == old_dumps_json(value)
    assert canonical_bytes(value) == dumps_json(value).encode("utf-8", "surrogatepass")
    ev_ = TaskEvent(name="n", payload=value)
    assert ev_.identity == TaskEvent(name="n", payload=loads_json(storage_json(value))).identity


@examples(200)
@example(value=[10**40, {"\ud83d": -0.0}, 1e308, "a\x00"])
@example(value="\x00")
@example(value=-0.0)
@given(value=VALUES)
def test_column_texts_are_what_the_column_types_would_bind(value: Any) -> None:
    """The driver-level insert's JSON texts equal column_values + the column's serialiser."""
    for dialect in ("sqlite", "postgresql"):
        typed, raw = column_values(value, dialect)
        expected = None if typed is None else storage_json(typed)
        assert column_texts(value, json_column(dialect)) == (expected, raw)


@examples(100)
@example(sent=Sent(nested(MAX_DEPTH - 100, "\ud83d")))
@given(sent=HOSTILE_JSON)
def test_storage_text_parses_back_exactly(sent: Sent) -> None:
    """The text for storage is valid UTF-8 and parses back to the very same value."""
    stored = storage_json(sent.value).encode("utf-8")  # no lone surrogate survives unescaped
    assert canonical(loads_json(stored)) == canonical(sent.value)


#: Integers around the edges of orjson's exact range and of the 19-digit guard.
EDGE_INTEGERS = [
    2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**18 - 1, 10**18,
    10**19 - 1, 10**19, -(10**19), 10**40,
]  # fmt: skip
#: Texts the standard library reads and orjson refuses, or that neither reads.
ODD_TEXTS = [
    b'"\\ud83d"', b'["\\udc00", 1]', b'"\xed\xa0\x80"', b"1e400", b"[-1E400]", b"NaN",
    b"[Infinity]", b"\xef\xbb\xbf[1]", b"\xfe\xff\x00[\x001\x00]", b"[1,]", b"01",
    b'"a\x01b"', b"", b"[1] x", b"[" * 1_100 + b"]" * 1_100, b"[" * 30_000 + b"]" * 30_000,
    b"1234567890123456789.5", b'{"a": 1, "b": 2, "a": 3}', b'"\\u0000\x7f"', b"-0",
]  # fmt: skip


def reads(parse: Any, raw: bytes) -> str:
    """What ``parse`` makes of ``raw``, as :func:`canonical` text, or the kind of error."""
    try:
        return canonical(parse(raw))
    except RecursionError:
        return "RecursionError"
    except ValueError:
        return "ValueError"


@examples(300)
@example(value=EDGE_INTEGERS)
@example(value={"n": [10**19, -(2**63) - 1, 2**64]})
@given(value=VALUES | st.lists(st.sampled_from(EDGE_INTEGERS) | st.integers(), max_size=4))
def test_parser_reads_api_bodies_exactly_as_the_standard_library(value: Any) -> None:
    """Bytes parse to exactly what json.loads gives (orjson's fast path included): big
    integers stay integers, 1 stays 1 and 1.0 stays 1.0, key order is kept."""
    for raw in (
        storage_json(value).encode(),
        json.dumps(value, ensure_ascii=True).encode(),
        json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass"),
    ):
        assert reads(loads_json, raw) == reads(json.loads, raw), raw[:200]
        assert repr(loads_json(raw)) == repr(json.loads(raw))  # key order too


@pytest.mark.parametrize("raw", ODD_TEXTS, ids=lambda raw: repr(raw[:24]))
def test_parser_reads_odd_bodies_as_the_standard_library_does(raw: bytes) -> None:
    """What orjson refuses (lone surrogates, 1e400, a BOM, UTF-16, deep nesting) is read,
    or refused, exactly as json.loads would; MAX_DEPTH and NaN rules still apply."""
    if b"Infinity" in raw or raw == b"NaN":
        expected = "ValueError"  # not JSON (RFC 8259), though json.loads reads it
    elif raw.startswith(b"[" * 30_000):
        expected = "RecursionError"  # deeper than MAX_DEPTH: refused, never half-read
    elif raw.startswith(b"[" * 1_100):
        expected = canonical(nested_lists(1_100))  # deeper than json.loads reads alone
    else:
        expected = reads(json.loads, raw)
    assert reads(loads_json, raw) == expected


def not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # as loads_json: NaN and Infinity are refused


#: Arrays around a document: past what json.loads reaches by itself, so the iterative
#: parser reads it.
DEEP_WRAP = 1_100


@examples(200)
@example(text=b'{"a": 1, "a": [2, {"b": -0.0}], "c": "\\ud83d\\u0000"}'.decode())
@given(
    text=st.one_of(
        st.builds(
            lambda v, i: json.dumps(v, ensure_ascii=i is None, indent=i),
            VALUES,
            st.sampled_from([None, 1]),
        ),
        st.sampled_from([raw.decode("latin-1") for raw in ODD_TEXTS if len(raw) < 100]),
        st.text(st.sampled_from('[]{}",:0123456789.eE-+ tfnrulsa\\'), max_size=30),
    )
)
def test_deep_documents_read_as_the_standard_library_reads_them(text: str) -> None:
    """Any text, valid or not, wrapped in 1,100 arrays is read by the iterative parser
    exactly as json.loads reads the text alone: the same value (key order, duplicate keys,
    1 and 1.0, lone surrogates), or a ValueError where it raises one."""
    deep = "[" * DEEP_WRAP + text + "]" * DEEP_WRAP
    try:
        expected: Any = repr(json.loads(text, parse_constant=not_json))
    except ValueError:
        expected = ValueError
    try:
        got: Any = loads_json(deep)
        for _ in range(DEEP_WRAP):
            (got,) = got
        got = repr(got)
    except ValueError:
        got = ValueError
    assert got == expected


def test_parser_takes_deep_nesting_and_refuses_what_is_not_json() -> None:
    """Nesting to MAX_DEPTH parses; far deeper is a RecursionError; NaN is not JSON."""
    assert canonical(loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH)) == canonical(
        nested_lists(MAX_DEPTH)
    )
    with pytest.raises(RecursionError):
        loads_json("[" * 2 * MAX_DEPTH + "]" * 2 * MAX_DEPTH)
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match="not a JSON value"):
            loads_json(f"[{constant}]")


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "sqlite_raw", "postgresql_raw"),
    [
        ({"a": [1, 2.5, "x", None, True]}, False, False),
        (1.0, False, False),
        (5e-324, False, False),
        (10**40, False, False),
        (-0.0, False, True),
        (1e308, False, True),
        ({"k": [1e16]}, False, True),
        ("a\x00b", False, True),
        ({"k\x00": 1}, False, True),
        ("\ud83d", True, True),
        ({"\udfff": 1}, True, True),
    ],
)
def test_exactness_per_database(value: Any, sqlite_raw: bool, postgresql_raw: bool) -> None:
    """Which values need the raw column on which database (the predicate, spelled out)."""
    for dialect, expect_raw in (("sqlite", sqlite_raw), ("postgresql", postgresql_raw)):
        typed, raw = column_values(value, dialect)
        assert (raw is not None) == expect_raw, dialect
        if raw is not None:
            assert canonical(loads_json(raw)) == canonical(value)
            assert "\\x00" not in repr(typed) or dialect == "sqlite"
            assert "\\ud" not in repr(typed)  # no lone surrogate left in the typed column


# --- end to end: `archiver sync` against a simulator world -------------------------------

RAW_JSON_VALUES = (
    '"lone \\ud83d surrogate"',
    '{"k\\u0000": "v\\u0000", "\\udfff": ["\\ud800", "\\u001b[2J"]}',
    "1.0",
    "-0.0",
    "1e308",
    "5e-324",
    "10000000000000000000000000000000000000000",
    "[" * 1_000 + '"deep \\ud83d"' + "]" * 1_000,
    '"' + "y" * 2**20 + '"',
    '"\\u001b[2J screen cleared"',
)


def test_sync_archives_hostile_json_exactly_like_ground_truth(
    database_url: str, make_simulator: Any
) -> None:
    """`archiver sync` archives a world full of hostile JSON exactly; views and report work."""
    sim = make_simulator(tasks=36, events_per_task=6, seed=13, raw_json_values=RAW_JSON_VALUES)
    sim.finish_all()
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 0, done.stderr
    db = Database(database_url)
    try:
        assert_matches_truth(db, sim)  # tasks, outputs and events (as a multiset)
        truth = sim.truth()
        sent = {canonical(loads_json(text)) for text in RAW_JSON_VALUES}
        outputs = {canonical(entry["task"]["output"]) for entry in truth.values()}
        payloads = {canonical(e["payload"]) for entry in truth.values() for e in entry["events"]}
        assert sent <= outputs and sent <= payloads  # every hostile value was really sent
        with db.reading() as conn:
            before = conn.scalar(select(text("count(*)")).select_from(task_events))
            for view in ("credits_by_day", "task_summary", "event_counts"):
                assert conn.execute(text(f"SELECT * FROM {view}")).all(), view
            previews = {
                row.task_id: row.output_text
                for row in conn.execute(text("SELECT task_id, output_text FROM task_summary"))
            }
        # docs/analysts.md's queries for this database run and give back what was sent.
        as_sent, which = fenced(ANALYSTS, db.dialect)
        names, rows = run_raw(db, as_sent)
        with_output = [tid for tid, entry in truth.items() if entry["task"]["output"] is not None]
        assert names == ["id", "output_as_sent"] and len(rows) == len(with_output)
        for task_id, output in rows:
            assert canonical(loads_json(output)) == canonical(truth[task_id]["task"]["output"])
        assert run_raw(db, which)[1], "no row needed its raw column"
        lone = [tid for tid, e in truth.items() if e["task"]["output"] == "lone \ud83d surrogate"]
        assert lone and all(previews[tid] == "lone \ufffd surrogate" for tid in lone)
        again = run_archiver("sync", "-q", env=env)
        assert again.returncode == 0, again.stderr
        with db.reading() as conn:
            assert conn.scalar(select(text("count(*)")).select_from(task_events)) == before
        for args in (("report", "top", "--limit", "50"), ("report", "credits", "--by", "day")):
            report = run_archiver(*args, env={"ARCHIVER_DATABASE_URL": database_url})
            assert report.returncode == 0, report.stderr
            assert "\x1b" not in report.stdout and "\x00" not in report.stdout
        top = run_archiver(
            "report", "top", "--limit", "50", env={"ARCHIVER_DATABASE_URL": database_url}
        )
        # The output as sent, on one line: the lone surrogate shown as its escape.
        assert "lone \\ud83d surrogate" in top.stdout
    finally:
        db.dispose()


def test_sqlite_to_postgresql_recipe_keeps_hostile_json_exact(
    tmp_path: Path, postgres_url: str, make_simulator: Any
) -> None:
    """The copy recipe in docs/operations.md re-splits typed/raw JSON for jsonb, exactly."""
    sim = make_simulator(tasks=20, events_per_task=4, seed=14, raw_json_values=RAW_JSON_VALUES)
    sim.finish_all()
    source_url = f"sqlite:///{tmp_path}/src.db"
    env = {"CIRCLEMIND_API_KEY": TEST_API_KEY, "ARCHIVER_API_URL": sim.base_url}
    done = run_archiver("sync", "-q", env={**env, "ARCHIVER_DATABASE_URL": source_url})
    assert done.returncode == 0, done.stderr
    # One event with unknown fields jsonb cannot hold exactly (sim events have none).
    extra = {"nul": "\x00", "neg": -0.0, "big": 1e308}
    odd = TaskEvent("odd", timestamp=1, extra=extra)
    source = Database(source_url)
    with source.transaction() as conn:
        task_id = conn.scalar(select(tasks.c.id).limit(1))
        insert_events(conn, [(task_id, keyed_events([odd]))], datetime.now(UTC))
    source.dispose()
    (script,) = [b for b in fenced(OPERATIONS, "python") if "copy_to_postgres" in b]
    path = tmp_path / "copy_to_postgres.py"
    path.write_text(script)
    copy_env = {**os.environ, "SOURCE_URL": source_url, "TARGET_URL": postgres_url}
    copied = subprocess.run(
        [sys.executable, str(path)], env=copy_env, capture_output=True, text=True, timeout=120
    )
    assert copied.returncode == 0, copied.stderr
    target = Database(postgres_url)
    try:
        with target.transaction() as conn:
            raw_rows = conn.scalar(select(func.count()).where(tasks.c.output_raw.is_not(None)))
            odd_row = task_events.c.name == "odd"
            copied_odd = conn.execute(
                select(task_events.c.extra, task_events.c.extra_raw).where(odd_row)
            ).one()
            conn.execute(delete(task_events).where(odd_row))  # not in the simulator's truth
        assert raw_rows, "no copied output needed its raw column on PostgreSQL"
        assert copied_odd.extra_raw is not None
        assert canonical(archived(*copied_odd)) == canonical(extra)
        assert_matches_truth(target, sim)
    finally:
        target.dispose()


def test_deep_values_never_touch_the_recursion_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing, serialising and pretty-printing 10,000-deep values never changes the
    interpreter's recursion limit (it is one for every thread: changing it while another
    thread is deep inside a serialiser kills the process)."""
    from archiver.web.render import json_preview

    def refuse(limit: int) -> None:
        raise AssertionError(f"sys.setrecursionlimit({limit}) called")

    monkeypatch.setattr(sys, "setrecursionlimit", refuse)
    deep = nested_lists(MAX_DEPTH)
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    for raw in (text, text.encode(), ("[" * MAX_DEPTH + '"\ud83d"' + "]" * MAX_DEPTH)):
        assert canonical(loads_json(raw))
    assert dumps_json(deep) == storage_json(deep) == canonical_bytes(deep).decode() == text
    preview = json_preview(deep)
    assert preview.cut and preview.text.startswith("[\n  [\n    [\n")
    assert "".join(iter_json([[1, {"b": [2]}]], indent=2)) == json.dumps(
        [[1, {"b": [2]}]], indent=2
    )
