"""Archived text with ANSI escapes, CR, LF and bidi overrides is shown with those made
visible (``\\x1b``) on the terminal (`status`, `report`) and on every page; the archive
keeps it as sent. Both databases."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from archiver.escapes import visible
from archiver.store.database import Database
from archiver.store.schema import task_events, tasks
from archiver.timestamps import to_utc
from tests.conftest import run_archiver
from tests.webseed import add_fresh_run, serving

#: Forges a line of `status` and /health when printed raw (it lags: it is polled last).
LINE_ID = "tsk_line\nlast success: 2999-01-01 00:00:00 (sync, 0s ago)"
ANSI_ID = "tsk_\x1b[31mred\x1b[0m"
BIDI_ID = "tsk_\u202egnp.exe"
DEVICE = "desk\x1b]0;pwned\x07top"
EVENT = "click\x1b[2J\r"
ERROR = "boom\r\x1b[1mOK\u2066"
OUTPUT = "line one\nline two\x1b[0m\u202e"
#: What must never reach a terminal or a page raw.
RAW = ("\x1b", "\r", "\x07", "\u202e", "\u2066")


@pytest.mark.parametrize(
    ("text", "shown", "in_lines"),
    [
        ("plain é 東京", "plain é 東京", "plain é 東京"),
        ("a\x1b[31mb", "a\\x1b[31mb", "a\\x1b[31mb"),
        ("a\nb\tc\rd", "a\\x0ab\\x09c\\x0dd", "a\nb\tc\\x0dd"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b", "\\x00\\x7f\\x85\\x9b"),
        (
            "\u202eab\u202c\u2066\u2069",
            "\\u202eab\\u202c\\u2066\\u2069",
            "\\u202eab\\u202c\\u2066\\u2069",
        ),
        ("\u200f\u061c", "\\u200f\\u061c", "\\u200f\\u061c"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c", "a\\u2028b\\u2029c"),
    ],
)
def test_controls_and_bidi_overrides_are_written_as_escapes(
    text: str, shown: str, in_lines: str
) -> None:
    """C0, DEL, C1, bidi controls and line separators become their escapes; multi-line
    text keeps its newlines and tabs."""
    assert visible(text) == shown
    assert visible(text, keep_lines=True) == in_lines


@pytest.fixture
def hostile(database: Database) -> Database:
    now = datetime.now(UTC)
    created = int((now - timedelta(days=1)).timestamp())
    with database.transaction() as conn:
        add_fresh_run(conn)
        for offset, task_id in enumerate((LINE_ID, ANSI_ID, BIDI_ID)):
            conn.execute(
                insert(tasks).values(
                    id=task_id,
                    status="done\rFAKE" if task_id == ANSI_ID else "running",
                    device=DEVICE,
                    credits_used=10 + offset,
                    output=OUTPUT,
                    created_at=created + offset,
                    created_at_utc=to_utc(created + offset),
                    first_seen_at=now - timedelta(hours=3 - offset),
                    last_error=ERROR,
                )
            )
            conn.execute(
                insert(task_events).values(
                    task_id=task_id,
                    event_key="k",
                    name=EVENT,
                    payload={"k": EVENT},
                    timestamp=(created + offset) * 1000,
                    archived_at=now,
                )
            )
    return database


def assert_nothing_raw(where: str, text: str) -> None:
    found = [char for char in RAW if char in text]
    assert not found, f"{where} shows {found!r} raw"


def test_status_and_report_show_hostile_text_escaped(hostile: Database) -> None:
    """`status` and `report` (table and CSV) print hostile ids, statuses and devices with
    their controls escaped; a newline in a task id forges no line."""
    url = hostile.url
    status = run_archiver("status", "--database-url", url)
    assert status.returncode == 0, status.stderr
    assert not re.search(r"^last success: 2999", status.stdout, re.M)
    assert "tsk_line\\x0alast success: 2999" in status.stdout
    assert "done\\x0dFAKE" in status.stdout
    for args in (
        ("report", "top"),
        ("report", "top", "--format", "csv"),
        ("report", "credits", "--group-by", "device"),
        ("report", "credits", "--group-by", "device", "--format", "csv"),
        ("status",),
    ):
        done = run_archiver(*args, "--database-url", url)
        assert done.returncode == 0, done.stderr
        assert_nothing_raw(" ".join(args), done.stdout + done.stderr)
        assert "desk\\x1b]0;pwned\\x07top" in done.stdout or args[0] == "status", args
    top = run_archiver("report", "top", "--database-url", url).stdout
    assert "tsk_\\x1b[31mred\\x1b[0m" in top and "tsk_\\u202egnp.exe" in top


def test_pages_show_hostile_text_escaped(hostile: Database) -> None:
    """The list, task, health and error pages show hostile ids, devices, event names,
    errors and outputs with their controls escaped; an output keeps its newlines."""
    with serving(hostile.url) as server, httpx.Client(base_url=server.url) as client:
        pages = {
            "list": client.get("tasks").text,
            "health": client.get("health").text,
            "missing": client.get("task", params={"id": ANSI_ID + "x"}).text,
        }
        for task_id in (LINE_ID, ANSI_ID, BIDI_ID):
            pages[task_id] = client.get("task", params={"id": task_id}).text
    for where, html in pages.items():
        assert_nothing_raw(where, html)
    assert "tsk_line\\x0alast success" in pages["health"]
    assert not re.search(r"^last success: 2999", pages["health"], re.M)
    task = pages[ANSI_ID]
    assert "tsk_\\x1b[31mred\\x1b[0m" in task and "click\\x1b[2J\\x0d" in task
    assert "boom\\x0d\\x1b[1mOK\\u2066" in task
    assert "line one\nline two\\x1b[0m\\u202e" in task
    assert "desk\\x1b]0;pwned\\x07top" in pages["list"]
    with hostile.reading() as conn:  # the archive keeps the text as sent
        assert conn.scalar(select(tasks.c.device).where(tasks.c.id == ANSI_ID)) == DEVICE
