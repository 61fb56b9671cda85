"""Masking at ingest (--mask-rules): the rules file, the exact replacements, hostile values,
the built-in ``secrets`` set, exactly-once on masked content, and ``mask --apply`` over
what is already archived, on SQLite and PostgreSQL.

Passes run in process with ``httpx.MockTransport`` (hostile bodies straight to the real
client, engine and database) or against the simulator over loopback; the real ``archiver``
command's exit codes and files are tested in tests/test_masking_cli.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from archiver import logs
from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.exceptions import ConfigError
from archiver.jsonvalues import MAX_DEPTH, dumps_json, loads_json
from archiver.masking import Masker, archive, load_masker
from archiver.models import TaskEvent, TaskInfo
from archiver.stats import RunResult
from archiver.store.database import Database
from archiver.store.locks import RunLock
from archiver.store.schema import artifacts, erasures, sync_runs, task_events, tasks
from tests.conftest import archived, canonical, client_config
from tests.test_hostile import FakeApi, Reply, expected_rows
from tests.test_logs import restore_logging  # noqa: F401 (a fixture)
from tests.test_secrets import dump_database

#: The rules file of issue 21, exactly as written there.
ISSUE_RULES = r"""
[[rule]]
name = "emails"
pattern = "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}"
# where = "all" (default) | "output" | "events"
# event = "browser_action"; path = "input.text"   -> mask the whole value at that path
# replace = "mask" (default) | "hash"
"""
#: The issue's rule plus one for this suite's unique markers.
RULES = ISSUE_RULES + '\n[[rule]]\nname = "marker"\npattern = "MRK[0-9a-f]{12}"\n'
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
MARK = re.compile(r"MRK[0-9a-f]{12}")
API_URL = "http://api.test/api/v1"
KEY = "sk-masking-4e8a2c6b1d"


def marker() -> str:
    """A value that occurs nowhere but where a test puts it."""
    return f"MRK{uuid.uuid4().hex[:12]}"


def email() -> str:
    return f"u{uuid.uuid4().hex[:10]}@example.org"


def rules_file(tmp_path: Path, text: str = RULES) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return str(path)


def oracle(value: Any) -> Any:
    """What the two rules make of a JSON value, computed independently of the masker:
    the patterns substituted in its canonical JSON text (the markers and addresses hold no
    character JSON escapes, and no test value has keys that collide once masked)."""
    text = MARK.sub("[masked:marker]", EMAIL.sub("[masked:emails]", dumps_json(value)))
    return loads_json(text)


def deep(depth: int, leaf: Any) -> Any:
    """``leaf`` nested ``depth`` lists deep, built without recursion."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


# --- the rules file and the replacements ----------------------------------------------


def test_the_rules_file_of_the_issue_works_as_written(tmp_path: Path) -> None:
    """The issue's TOML, comments and all, masks every address with exactly [masked:emails]."""
    masker = load_masker(rules_file(tmp_path, ISSUE_RULES))
    assert masker is not None and masker.names == ("emails",)
    assert masker.text("write to ann.lee+x@mail.example.com or bob@b.io!") == (
        "write to [masked:emails] or [masked:emails]!"
    )
    assert masker.text("nobody here") == "nobody here"


def test_mask_and_hash_replacements_are_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mask writes [masked:NAME]; hash writes [hash:NAME:<first 16 hex of HMAC-SHA256>],
    equal for equal values and different for different ones."""
    key = "k" * 24
    monkeypatch.setenv("ARCHIVER_MASK_KEY", key)
    text = ISSUE_RULES + '\n[[rule]]\nname = "ids"\npattern = "ID-[0-9]+"\nreplace = "hash"\n'
    masker = load_masker(rules_file(tmp_path, text))
    assert masker is not None

    def digest(value: str) -> str:
        return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]

    out = masker.text("a@b.co ID-12 ID-12 ID-7")
    assert out == (
        f"[masked:emails] [hash:ids:{digest('ID-12')}] [hash:ids:{digest('ID-12')}] "
        f"[hash:ids:{digest('ID-7')}]"
    )
    assert digest("ID-12") != digest("ID-7")


def test_hostile_values_are_masked_nested_in_keys_in_arrays_and_beside_lone_surrogates(
    tmp_path: Path,
) -> None:
    """Matches in keys, arrays, 10,000 levels deep and next to lone surrogates are
    replaced; a value no rule touches comes back as the very same object."""
    masker = load_masker(rules_file(tmp_path))
    assert masker is not None
    mark, addr = marker(), email()
    value = {
        f"key {addr}": [1, f"x{mark}y", {"k": [f"\ud83d{addr}\udfff"]}],
        "deep": deep(MAX_DEPTH - 1, f"bottom {mark}"),  # the whole value 10,000 deep
        f"\udc00{mark}": -0.0,
    }
    event = TaskEvent("note", value, None, 5, {f"extra {addr}": f"{mark}"})
    masked = masker.event(event)
    assert masked.masked == ("emails", "marker")
    assert canonical(masked.payload) == canonical(oracle(value))
    assert masked.extra == {"extra [masked:emails]": "[masked:marker]"}
    assert mark not in dumps_json(masked.payload) and addr not in dumps_json(masked.payload)
    clean = TaskEvent("note", {"a": [deep(MAX_DEPTH, "nothing")]}, "e1", 6, None)
    assert masker.event(clean) is clean


def test_keys_that_collide_once_masked_are_all_kept_numbered(tmp_path: Path) -> None:
    """Two keys that mask to the same text both stay: the second gets #2, and a key that
    already had that text keeps it."""
    masker = load_masker(rules_file(tmp_path))
    assert masker is not None
    task = TaskInfo.model_validate(
        {
            "id": "t1",
            "status": "done",
            "output": {"a@x.io": 1, "b@x.io": 2, "c@x.io": 3, "[masked:emails]#2": 4},
        }
    )
    out = masker.task(task).output
    assert out == {
        "[masked:emails]": 1,
        "[masked:emails]#2": 4,
        "[masked:emails]#3": 2,
        "[masked:emails]#4": 3,
    }


def test_the_secrets_set_masks_keys_tokens_jwts_cards_and_password_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """use = ["secrets"] masks API keys (the archiver's own, whatever its shape), bearer
    tokens, JWTs, Luhn-valid card numbers and what a browser action typed into a
    password-looking field; Luhn-invalid numbers and ordinary typing stay."""
    own = "own-key-7Hq2Lx9Rt3"
    monkeypatch.setenv("CIRCLEMIND_API_KEY", own)
    masker = load_masker(rules_file(tmp_path, 'use = ["secrets"]\n'))
    assert masker is not None
    jwt = (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    )
    cases = {
        f"key {own}!": "key [masked:smooth_api_key]!",
        "sk-test-3f9c1e7a5b2d4c6e8f0a": "[masked:api_keys]",
        "AKIAIOSFODNN7EXAMPLE and ghp_" + "a" * 36: "[masked:api_keys] and [masked:api_keys]",
        "Authorization: Bearer abc.def-ghi_jkl~mno": "Authorization: [masked:bearer_tokens]",
        "authorization: basic dXNlcjpwYXNz, a basic understanding": (
            "[masked:bearer_tokens], a basic understanding"
        ),
        f"token={jwt}": "token=[masked:jwts]",
        "card 4111 1111 1111 1111, exp 12/29": "card [masked:card_numbers], exp 12/29",
        "amex 378282246310005.": "amex [masked:card_numbers].",
        # Luhn-invalid: an order number, a phone-like run.
        "order 4111 1111 1111 1112 / 1234567890123": "order 4111 1111 1111 1112 / 1234567890123",
    }
    for text, expected in cases.items():
        assert masker.text(text) == expected, text
    typed = {"name": "type", "input": {"selector": "input[name=pwd]", "text": "hunter2"}}
    ordinary = {"name": "type", "input": {"selector": "#search", "text": "hunter2"}}
    label = {"name": "fill", "input": {"label": "Your PIN", "value": 1234}}
    out = [
        masker.event(TaskEvent("browser_action", p, None, 1)).payload
        for p in (typed, ordinary, label)
    ]
    assert out[0]["input"] == {"selector": "input[name=pwd]", "text": "[masked:password_inputs]"}
    assert out[1] == ordinary
    assert out[2]["input"]["value"] == "[masked:password_inputs]"
    # The same payload in another event name is not a browser action.
    assert masker.event(TaskEvent("tool_call", typed, None, 1)).payload == typed


def test_masking_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Masking what is already masked changes nothing (mask --apply may run again), even
    for a rule whose pattern matches the replacement's own text."""
    monkeypatch.setenv("ARCHIVER_MASK_KEY", "x" * 20)
    text = RULES + '[[rule]]\nname = "word"\npattern = "masked|hash"\nreplace = "hash"\n'
    masker = load_masker(rules_file(tmp_path, text))
    assert masker is not None
    task = TaskInfo.model_validate(
        {"id": "t", "status": "done", "output": {"a@b.io": f"{marker()} masked"}}
    )
    once = masker.task(task)
    assert once is not task
    twice = masker.task(once)
    assert twice is once
    assert masker.text(masker.text("c@d.io hash")) == masker.text("c@d.io hash")


def test_bad_rules_are_refused_naming_the_file_the_rule_and_the_problem(tmp_path: Path) -> None:
    """Each kind of mistake is a ConfigError (exit 2) of one line naming file and rule."""
    cases = {
        '[[rule]]\nname = "a"\npattern = "[a-"\n': "not a valid regular expression",
        '[[rule]]\nname = "a"\npatern = "x"\n': "unknown key 'patern'; did you mean 'pattern'?",
        '[[rule]]\nname = "a"\npattern = "x"\n[[rule]]\nname = "a"\npattern = "y"\n': "duplicate",
        '[[rule]]\nname = "a"\npattern = 5\n': "pattern must be a string, got int",
        '[[rule]]\nname = "a"\npattern = "x"\nwhere = "everywhere"\n': "where 'everywhere'",
        '[[rule]]\nname = "a"\npattern = "one"\n': "matches the task status 'done'",
        '[[rule]]\nname = "a"\npattern = "x*"\n': "matches the empty string",
        'use = ["secrets"]\n[[rule]]\nname = "jwts"\npattern = "x"\n': "duplicate name",
    }
    for text, problem in cases.items():
        path = rules_file(tmp_path, text)
        with pytest.raises(ConfigError) as raised:
            load_masker(path)
        message = str(raised.value)
        assert problem in message and path in message and "\n" not in message, message
        assert "rule" in message


# --- ingest: what a pass stores --------------------------------------------------------


def run(db: Database, api: FakeApi, masker: Masker | None, **options: Any) -> RunResult:
    config = ClientConfig(api_url=API_URL, api_key=ApiKey(KEY))
    return run_command(
        SyncPass(),
        db,
        config,
        SyncOptions(**options),
        transport=httpx.MockTransport(api),
        masker=masker,
    )


def ev(name: str, timestamp: int | None, payload: Any, event_id: str | None = None) -> dict:
    return {"id": event_id, "name": name, "payload": payload, "timestamp": timestamp}


def hostile_account() -> tuple[FakeApi, dict[str, list[dict]], list[str]]:
    """A running task whose output, unknown fields and events hold markers and addresses
    (nested, in keys, in arrays, beside lone surrogates, in events without ids, two events
    differing only in masked text), and a task whose answer is an HTML page quoting one."""
    marks = [marker() for _ in range(8)]
    addrs = [email() for _ in range(4)]
    events = [
        ev("browser_action", 10, {"name": "type", "input": {"text": f"hi {addrs[0]}"}}, "e1"),
        ev("note", 20, f"reach me at {addrs[1]}"),
        ev("note", 20, f"reach me at {addrs[2]}"),  # same once masked: both kept, as repeats
        ev("note", 20, f"reach me at {addrs[1]}"),  # a true repeat of the first
        ev("tool_call", 30, {f"k{marks[0]}": [1, {"v": f"\ud83d{marks[1]}"}]}),
        ev("tool_call", None, deep(300, marks[2]), "e2"),
        {**ev("agent_note", 40, None), f"field{marks[3]}": marks[4]},
    ]
    task = {
        "id": "t_masked",
        "status": "running",
        "created_at": 1_764_000_000,
        "device": f"phone of {addrs[3]}",
        "output": {"summary": [f"found {marks[5]}", {"\udfff": marks[6]}]},
        f"x_{marks[7]}": "unknown field name",
    }
    html = f"<html><body>Proxy error for {marks[0]} / {addrs[0]}</body></html>".encode()
    api = FakeApi(
        listing=Reply({"r": [task, {"id": "t_html", "status": "running"}]}),
        tasks={
            "t_masked": Reply({"r": {**task, "events": events}}),
            "t_html": Reply(html),
        },
    )
    return api, {"t_masked": events}, [*marks, *addrs]


def stored_events(db: Database) -> Counter[tuple[Any, ...]]:
    with db.transaction() as conn:
        rows = conn.execute(select(task_events)).all()
    return Counter(
        (r.event_id, r.name, r.timestamp, canonical(archived(r.payload, r.payload_raw)))
        for r in rows
    )


def masked_truth(events: list[dict]) -> Counter[tuple[Any, ...]]:
    """The rows the events must leave once masked (by the oracle), as a multiset."""
    return expected_rows([{**e, "payload": oracle(e["payload"])} for e in events])


def test_a_pass_stores_only_masked_content_and_keeps_events_exactly_once(
    database: Database, tmp_path: Path
) -> None:
    """With --mask-rules, no marker reaches any table (columns, raw twins, unknown fields,
    last_error, sync_runs.message); events are stored once each as masked, re-reads add
    nothing, and two events that differ only in masked text are both kept."""
    masker = load_masker(rules_file(tmp_path))
    api, truth, secrets = hostile_account()
    for _ in range(2):  # the second pass re-reads every event
        result = run(database, api, masker)
        assert result.outcome == "partial"  # t_html failed (its error is stored, masked)
    assert stored_events(database) == masked_truth(truth["t_masked"])
    dump = dump_database(database.url)
    leaked = [s for s in secrets if s in dump]
    assert not leaked, leaked
    with database.transaction() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == "t_masked")).one()
        html = conn.execute(select(tasks).where(tasks.c.id == "t_html")).one()
        rules = Counter(
            tuple(r.masked_rules or ()) for r in conn.execute(select(task_events.c.masked_rules))
        )
    assert row.masked_rules == ["emails", "marker"] and row.event_count == 7
    assert row.device == "phone of [masked:emails]"
    assert canonical(archived(row.output, row.output_raw)) == canonical(
        oracle(api.tasks["t_masked"].body["r"]["output"])
    )
    assert "[masked:marker]" in html.last_error and "[masked:emails]" in html.last_error
    assert rules == Counter({("emails",): 4, ("marker",): 3}), (
        rules
    )  # e1 (emails), the three notes, tool_call x2 and agent_note (marker)


def test_artifacts_are_fetched_from_the_links_as_sent_and_stored_masked(
    database: Database, make_simulator, tmp_path: Path
) -> None:
    """A rule matching the artifact links masks recording_url, downloads_url and
    artifacts.source_url, while the fetcher still downloads the real links (sizes and
    hashes match the simulator's files)."""
    sim = make_simulator(tasks=3, events_per_task=2, recording_rate=1.0)
    sim.finish_all()
    text = '[[rule]]\nname = "files"\npattern = "recording\\\\.mp4|downloads\\\\.zip"\n'
    masker = load_masker(rules_file(tmp_path, text))
    options = SyncOptions(downloads=True, blob_url=str(tmp_path / "blobs"))
    result = run_command(SyncPass(), database, client_config(sim), options, masker=masker)
    assert result.outcome == "ok", result.message
    truth = sim.truth()
    with database.transaction() as conn:
        rows = conn.execute(select(artifacts).where(artifacts.c.state == "stored")).all()
        task_rows = {r.id: r for r in conn.execute(select(tasks))}
    assert rows, "the simulator's tasks have artifacts"
    for row in rows:
        name = "recording.mp4" if row.kind == "recording" else "downloads.zip"
        assert (row.size_bytes, row.sha256) == sim.file_sha256(row.task_id, name)
        assert row.source_url.endswith("/[masked:files]"), row.source_url
    for task_id, entry in truth.items():
        stored = task_rows[task_id]
        if entry["task"]["recording_url"]:
            assert stored.recording_url.endswith("/[masked:files]")
        assert "recording.mp4" not in dumps_json(archived(stored.payload, stored.payload_raw))


# --- mask --apply: the rules applied to what is already archived -----------------------


def test_mask_apply_rewrites_the_archive_rekeys_events_and_audits(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive synced without rules: the dry run changes nothing; --apply removes every
    marker, keeps both events that differ only in masked text (as repeats), writes one
    erasures row per task changed, leaves a task another run holds; a later masked pass
    finds every event already stored."""
    monkeypatch.setattr(archive, "LEASE_WAIT_S", 0.01)
    masker = load_masker(rules_file(tmp_path))
    assert masker is not None
    api, truth, secrets = hostile_account()
    run(database, api, None)
    dump = dump_database(database.url)
    assert all(s in dump for s in secrets[:3]), "the unmasked pass stored the markers"
    lines: list[str] = []
    outcome = archive.dry_run(database, masker, lines.append)
    assert dump_database(database.url) == dump  # the dry run changed nothing
    assert outcome.tasks == 2 and outcome.events == 7 and len(lines) == 2
    holder = RunLock(database, "backfill")  # another live run works on t_html
    holder.acquire()
    try:
        with database.transaction() as conn:
            assert holder.claim(conn, ["t_html"]) == ["t_html"]
        outcome = archive.apply(database, masker, actor="dpo", reason="DSR-7", echo=lines.append)
    finally:
        holder.release()
    assert outcome.left == ["t_html"] and outcome.tasks == 1 and outcome.events == 7
    assert outcome.checkpointed
    dump = dump_database(database.url)
    assert [s for s in secrets if s in dump] == [secrets[0], secrets[8]]  # t_html's error
    assert stored_events(database) == masked_truth(truth["t_masked"])
    with database.transaction() as conn:
        messages = " ".join(conn.scalars(select(sync_runs.c.message)).all())
        audits = conn.execute(select(erasures)).all()
        count = conn.scalar(select(tasks.c.event_count).where(tasks.c.id == "t_masked"))
    assert outcome.runs == 1 and "[masked:marker]" in messages
    assert [
        (a.task_id, a.command, a.scope, a.actor, a.reason, a.events_removed) for a in audits
    ] == [("t_masked", "mask", "mask", "dpo", "DSR-7", 7)]
    assert audits[0].rules == ["emails", "marker"]
    run(database, api, masker)  # re-reads: nothing new, nothing twice
    assert stored_events(database) == masked_truth(truth["t_masked"])
    with database.transaction() as conn:
        assert conn.scalar(select(tasks.c.event_count).where(tasks.c.id == "t_masked")) == count


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_and_error_lines_are_masked_at_every_level_from_every_logger(
    log_format: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With rules installed, a marker in a message, its arguments, an extra field, a
    traceback or a fatal error line is written masked, whatever the logger and level; the
    hash key is redacted like the API key."""
    monkeypatch.setenv("ARCHIVER_MASK_KEY", "mask-key-" + uuid.uuid4().hex)
    masker = load_masker(rules_file(tmp_path))
    assert masker is not None
    logs.setup_logging(verbose=2, log_format=log_format)
    logs.install_masking(masker.text)
    marks = [marker() for _ in range(5)]
    logging.getLogger("stamina").debug("body %s", marks[0])
    logging.getLogger("archiver.engine").error("failed", extra={"task_id": marks[1]})
    try:
        raise ValueError(f"boom {marks[2]}")
    except ValueError:
        logging.getLogger("psycopg").exception("at %s", email())
    logging.getLogger("archiver").info("key %s", os.environ["ARCHIVER_MASK_KEY"])
    logs.fatal(f"stopped at {marks[3]}")
    err = capsys.readouterr().err
    assert not [m for m in marks if m in err] and "@example.org" not in err
    assert os.environ["ARCHIVER_MASK_KEY"] not in err
    # Text lines do not show task_id; JSON lines do.
    assert err.count("[masked:marker]") == (4 if log_format == "json" else 3)
    assert "[masked:emails]" in err


def masking_docs() -> list[Path]:
    """Where the masking rules are documented: docs/governance.md and docs/operations.md."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    assert "## Masking" in (docs / "governance.md").read_text()
    return [docs / "governance.md", docs / "operations.md"]


def test_every_documented_rules_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ```toml example of the masking docs is a valid rules file."""
    monkeypatch.setenv("ARCHIVER_MASK_KEY", "doc-example-key-0123456789")
    blocks = [
        block
        for doc in masking_docs()
        for block in re.findall(r"^```toml\n(.*?)^```$", doc.read_text(), flags=re.M | re.S)
    ]
    assert len(blocks) >= 3
    for block in blocks:
        assert load_masker(rules_file(tmp_path, block)) is not None, block


def test_mask_apply_keeps_a_row_whose_masked_key_is_taken_as_a_repeat(
    database: Database, tmp_path: Path
) -> None:
    """An unmasked event whose masked content equals a row already stored under the rules
    is kept as the next repeat (never dropped, never a unique-key failure)."""
    from archiver.models import event_key

    masker = load_masker(rules_file(tmp_path))
    assert masker is not None
    first, second = email(), email()
    task = {"id": "t1", "status": "running", "created_at": 1_764_000_000}
    api = FakeApi(listing=Reply({"r": [task]}))
    api.tasks["t1"] = Reply({"r": {**task, "events": [ev("note", 7, f"to {first}")]}})
    run(database, api, None)  # stored as sent
    api.tasks["t1"] = Reply({"r": {**task, "events": [ev("note", 7, f"to {second}")]}})
    run(database, api, masker)  # stored masked: the key the first one's masked form has
    outcome = archive.apply(database, masker, actor="a", reason="r", echo=lambda _: None)
    assert outcome.tasks == 1 and outcome.events == 1
    identity = TaskEvent("note", "to [masked:emails]", None, 7).identity
    with database.transaction() as conn:
        rows = conn.execute(select(task_events.c.event_key, task_events.c.payload)).all()
    assert sorted(rows) == sorted(
        [(identity, "to [masked:emails]"), (event_key(identity, 1), "to [masked:emails]")]
    )
