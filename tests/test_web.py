"""`archiver serve` over real HTTP on loopback: the pages' numbers against the database
and `archiver report`, keyset pagination, blobs with Range from local disk and S3, the
token, escaping and headers, and that the archive is only ever read. Both databases."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import date
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from archiver.config import SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.exceptions import ConfigError
from archiver.report import CreditsReport, CreditsRow
from archiver.store.database import Database
from archiver.store.schema import sync_runs, tasks
from archiver.web import is_loopback, open_archive, serve_token
from archiver.web.chart import MAX_BAR_WIDTH, costs_chart
from tests.conftest import ARCHIVER_BIN, TEST_API_KEY, client_config, run_archiver
from tests.webseed import (
    DOWNLOADS_TASK,
    HOSTILE,
    RECORDING,
    RECORDING_TASK,
    ZIP_MEMBERS,
    newest_first,
    seed_web_archive,
    serving,
)

TOKEN = "test-serve-token-4f0c2a9e7b1d"


@pytest.fixture
def archive(database: Database, make_simulator: Any, tmp_path: Path) -> Database:
    """The web seed in ``database`` with blobs on local disk."""
    seed_web_archive(database, make_simulator, str(tmp_path / "blobs"))
    return database


class Table(HTMLParser):
    """The cells of the first <table> with the given id, row by row."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None
        self.section = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag in ("thead", "tbody", "tfoot"):
            self.section = tag
        elif self.inside and tag == "tr":
            self.rows.append((self.section, []))
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1][1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data


def table(html: str, table_id: str, section: str = "tbody") -> list[list[str]]:
    parser = Table(table_id)
    parser.feed(html)
    return [cells for sec, cells in parser.rows if sec == section]


def list_ids(html: str) -> list[str]:
    return [
        httpx.QueryParams(m.group(1).replace("&amp;", "&"))["id"]
        for m in re.finditer(r'<td class="id"><a href="/task\?([^"]+)"', html)
    ]


def walk(base: str, params: dict[str, str]) -> tuple[list[str], int]:
    """Follow "Next page" from the first page; every id shown, and the count shown."""
    ids: list[str] = []
    url: str | None = f"{base}tasks?{httpx.QueryParams(params)}"
    count = -1
    while url:
        html = httpx.get(url).raise_for_status().text
        count = int(re.search(r'data-count="(\d+)"', html).group(1))  # type: ignore[union-attr]
        ids += list_ids(html)
        nxt = re.search(r'id="next-page" rel="next" href="([^"]+)"', html)
        url = base + nxt.group(1).lstrip("/").replace("&amp;", "&") if nxt else None
    return ids, count


@pytest.mark.parametrize("sort", ["created", "credits"])
def test_keyset_pages_cover_every_task_once_in_order(archive: Database, sort: str) -> None:
    """Walking the pages (5 rows each) shows every task exactly once, in sort order."""
    with serving(archive.url, page_size=5) as server:
        ids, count = walk(server.url, {"sort": sort})
    assert ids == newest_first(archive, sort)
    assert count == len(ids)


def test_filters_are_applied_in_sql_and_counted(archive: Database) -> None:
    """Status, device, date range and output text each select exactly the matching rows."""
    with archive.reading() as conn:
        rows = conn.execute(
            select(tasks.c.id, tasks.c.status, tasks.c.device, tasks.c.created_at_utc)
        ).all()
    failed = {r.id for r in rows if r.status == "failed"}
    mobile = {r.id for r in rows if r.device == "mobile"}
    day = {r.id for r in rows if r.created_at_utc and str(r.created_at_utc)[:10] == "2025-12-06"}
    assert failed and mobile and day
    with serving(archive.url, page_size=4) as server:
        for params, expected in (
            ({"status": "failed"}, failed),
            ({"device": "mobile"}, mobile),
            ({"since": "2025-12-06", "until": "2025-12-06"}, day),
            ({"q": "CAPTCHA"}, {"tsk_manual_object"}),
            ({"q": "onerror=alert"}, {"tsk_hostile_img"}),
            ({"q": "100%_"}, set()),
            ({"status": "failed", "device": "mobile"}, failed & mobile),
        ):
            ids, count = walk(server.url, params)
            assert sorted(ids) == sorted(expected), params
            assert count == len(expected), params


def test_list_totals_equal_report_credits(archive: Database) -> None:
    """The unfiltered list's task count and credits equal `archiver report credits`."""
    report = run_archiver("report", "credits", "--format", "json", "--database-url", archive.url)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    with serving(archive.url) as server:
        html = httpx.get(server.url + "tasks").text
    assert f'data-count="{totals["tasks"]}"' in html
    assert f"{totals['credits_used']:,} credits · US${totals['usd']:,.2f}" in html


@pytest.mark.parametrize(
    "args",
    [
        ("--by", "day"),
        ("--by", "week", "--group-by", "status"),
        ("--by", "month", "--group-by", "device"),
        ("--by", "day", "--since", "2025-12-01", "--until", "2025-12-10"),
    ],
)
def test_costs_table_equals_report_credits(archive: Database, args: tuple[str, ...]) -> None:
    """Every row and the totals of the Costs table are `archiver report credits`'s numbers."""
    report = run_archiver(
        "report", "credits", "--format", "json", "--database-url", archive.url, *args
    )
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    opts = dict(zip(args[::2], args[1::2], strict=True))
    params = {
        "by": opts["--by"],
        "group": opts.get("--group-by", ""),
        "since": opts.get("--since", ""),
        "until": opts.get("--until", ""),
    }
    with serving(archive.url) as server:
        html = httpx.get(server.url + "costs", params=params).raise_for_status().text
    groups = data["group_by"]
    expected = [
        [
            row["period"] or "(no date)",
            *((row[g] if row[g] is not None else "-") for g in groups),
            f"{row['tasks']:,}",
            f"{row['credits_used']:,}",
            f"{row['usd']:,.2f}",
        ]
        for row in data["rows"]
    ]
    assert expected, "the seed should give this report some rows"
    assert table(html, "costs-table") == expected
    totals = data["totals"]
    assert table(html, "costs-table", "tfoot")[0][-3:] == [
        f"{totals['tasks']:,}",
        f"{totals['credits_used']:,}",
        f"{totals['usd']:,.2f}",
    ]
    assert html.count("<rect ") >= len(expected)  # one bar (segment) per row, at least


def test_task_page_shows_output_events_and_artifacts(archive: Database) -> None:
    """A task page: credits and US$, output, the timeline, the recording and zip members."""
    with serving(archive.url) as server:
        html = httpx.get(server.url + "task", params={"id": DOWNLOADS_TASK}).text
        rec = httpx.get(server.url + "task", params={"id": RECORDING_TASK}).text
        stub = httpx.get(server.url + "task", params={"id": "tsk_manual_stub"}).text
        missing = httpx.get(server.url + "task", params={"id": "../../etc/passwd"})
    assert '"error": "captcha",\n  "steps": [' in unescape(html)  # pretty-printed JSON
    assert 'data-state="pending"' in html  # its recording is pending
    for name in ZIP_MEMBERS:
        assert f"<td>{name.replace('<', '&lt;').replace('>', '&gt;')}</td>" in html
    assert 'src="/blob/recording?task=tsk_manual_text"' in rec
    assert "Zürich → 東京" in rec and "1,234 · US$12.34" in rec
    assert rec.count("<details>") == 3 and "+1 min 00 s" in rec
    assert 'data-state="absent"' in rec  # no downloads
    assert 'data-state="none"' in stub  # downloads were off
    assert missing.status_code == 404 and "No task with id" in missing.text


def test_list_rows_follow_the_task_summary_view(archive: Database) -> None:
    """Duration, events and artifact states on the list equal task_summary's, task by task."""
    from archiver.store.reports import task_summary
    from archiver.web.queries import _as_datetime, aware, summaries

    view = task_summary
    with archive.reading() as conn:
        expected = {
            row.task_id: (
                row.status,
                row.device,
                row.credits_used,
                aware(_as_datetime(row.created_at_utc)),
                None if row.duration_s is None else round(float(row.duration_s), 3),
                int(row.events),
                row.recording_state,
                row.downloads_state,
            )
            for row in conn.execute(select(view))
        }
        rows = summaries(conn, list(expected))
    got = {
        r.id: (r.status, r.device, r.credits_used, r.created_at_utc, r.duration_s, r.events,
               r.recording_state, r.downloads_state)
        for r in rows
    }  # fmt: skip
    assert len(rows) == len(expected) > 25
    assert got == expected
    assert any(v[4] for v in got.values()) and any(v[6] for v in got.values())


def test_hostile_output_and_payloads_are_escaped(archive: Database) -> None:
    """Hostile outputs, event names and payloads come back as escaped text, under a strict CSP."""
    with serving(archive.url) as server:
        for task_id, output in HOSTILE.items():
            response = httpx.get(server.url + "task", params={"id": task_id})
            body = response.text
            assert output not in body
            assert output.replace("<", "&lt;").replace(">", "&gt;") in body
            assert "<svg onload" not in body and "&lt;svg onload=alert(2)&gt;" in body
            assert "<i>browser_action</i>" not in body
            # The event's other fields are shown, escaped like its payload.
            assert "Other fields of the event" in body and "duration_ms" in body
            assert "<b>bold</b>" not in body and "&lt;b&gt;bold&lt;/b&gt;" in body
            csp = response.headers["content-security-policy"]
            for rule in ("default-src 'self'", "object-src 'none'", "frame-ancestors 'none'"):
                assert rule in csp
            assert "unsafe-inline" not in csp
            assert response.headers["x-content-type-options"] == "nosniff"
        listing = httpx.get(server.url + "tasks", params={"q": "<script>"}).text
    assert "&lt;script&gt;" in listing and "<script>alert" not in listing


def _store_recording_at(db: Database, blob_url: str) -> None:
    from sqlalchemy import update

    from archiver.blobs import BlobStore
    from archiver.store.schema import artifacts
    from tests.webseed import store_blob

    info = store_blob(
        BlobStore(blob_url), RECORDING_TASK, "recording", RECORDING.read_bytes(), ".webm"
    )
    with db.transaction() as conn:
        conn.execute(
            update(artifacts)
            .where(artifacts.c.task_id == RECORDING_TASK, artifacts.c.kind == "recording")
            .values(blob_url=info.url)
        )


@pytest.mark.parametrize("store", ["local", "s3"])
def test_blob_ranges(archive: Database, store: str, request: pytest.FixtureRequest) -> None:
    """Range requests give 206 with exactly those bytes, 416 past the end, 200 whole, on
    local disk and on S3; headers name the type, disposition and nosniff."""
    if store == "s3":
        _store_recording_at(archive, request.getfixturevalue("s3_blob_url"))
    data = RECORDING.read_bytes()
    size = len(data)
    with serving(archive.url) as server:
        url = server.url + "blob/recording"
        params = {"task": RECORDING_TASK}
        whole = httpx.get(url, params=params)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "video/webm"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-disposition"] == 'inline; filename="recording.webm"'
        assert whole.headers["x-content-type-options"] == "nosniff"
        for header, first, last in (
            ("bytes=100-199", 100, 199),
            ("bytes=1000-", 1000, size - 1),
            ("bytes=-500", size - 500, size - 1),
            (f"bytes=10-{size + 50}", 10, size - 1),
        ):
            part = httpx.get(url, params=params, headers={"Range": header})
            assert part.status_code == 206, header
            assert part.content == data[first : last + 1], header
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert part.headers["content-length"] == str(last - first + 1)
        past = httpx.get(url, params=params, headers={"Range": f"bytes={size}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
        zipped = httpx.get(server.url + "blob/downloads", params={"task": DOWNLOADS_TASK})
        assert zipped.status_code == 200 and zipped.content[:2] == b"PK"
        assert zipped.headers["content-disposition"] == 'attachment; filename="downloads.zip"'


def test_blobs_are_only_what_artifacts_rows_point_to(archive: Database, tmp_path: Path) -> None:
    """No path from the request reaches storage: unknown kinds, ids, paths and non-stored
    artifacts are 404; a recording stored with an HTML type is only ever an attachment."""
    from sqlalchemy import update

    from archiver.store.schema import artifacts

    secret = tmp_path / "blobs" / "secret.txt"
    secret.write_text("not an artifact")
    with serving(archive.url) as server:
        for path, params in (
            ("blob/recording", {"task": "../secret.txt"}),
            ("blob/recording", {"task": "tsk_manual_object"}),  # pending
            ("blob/downloads", {"task": RECORDING_TASK}),  # absent
            ("blob/secret.txt", {"task": RECORDING_TASK}),
            ("blob/..%2Fsecret.txt", {"task": RECORDING_TASK}),
            ("blob/recording", {}),
        ):
            response = httpx.get(server.url + path, params=params)
            assert response.status_code == 404, (path, params)
            assert b"not an artifact" not in response.content
    with archive.transaction() as conn:
        conn.execute(
            update(artifacts)
            .where(artifacts.c.task_id == RECORDING_TASK, artifacts.c.kind == "recording")
            .values(content_type="text/html")
        )
    with serving(archive.url) as server:
        html_typed = httpx.get(server.url + "blob/recording", params={"task": RECORDING_TASK})
    assert html_typed.headers["content-type"] == "application/octet-stream"
    assert html_typed.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in html_typed.headers["content-security-policy"]


def test_healthz_and_health_page_follow_max_age(archive: Database) -> None:
    """/healthz is 200 within --max-age of the last successful pass and 503 beyond it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from archiver.store.schema import sync_runs

    with archive.transaction() as conn:  # the seed's pass ended two hours ago
        conn.execute(update(sync_runs).values(finished_at=datetime.now(UTC) - timedelta(hours=2)))
    with serving(archive.url, max_age="3h") as server:
        fresh = httpx.get(server.url + "healthz")
        stale = httpx.get(server.url + "healthz", params={"max_age": "1h"})
        page = httpx.get(server.url + "health").text
        stale_page = httpx.get(server.url + "health", params={"max_age": "90m"}).text
        bad = httpx.get(server.url + "healthz", params={"max_age": "soon"})
    assert fresh.status_code == 200 and fresh.json()["status"] == "ok"
    assert stale.status_code == 503 and stale.json()["status"] == "stale"
    assert bad.status_code == 400 and "soon" in bad.json()["error"]
    with archive.reading() as conn:
        total = conn.scalar(select(func.count()).select_from(tasks))
    assert f"tasks:     {total} (" in page and 'id="verdict">ok<' in page
    assert 'id="verdict">STALE<' in stale_page and "(sync, 2h 00m ago)" in stale_page


def test_metrics_are_those_of_the_metrics_file(
    database: Database, make_simulator: Any, tmp_path: Path
) -> None:
    """/metrics has the families and labels that `sync --metrics-file` writes (less the
    detail counters sync_runs does not keep), with the pass's stored counts."""
    sim = make_simulator(tasks=5, events_per_task=3, seed=3)
    sim.finish_all()
    prom = tmp_path / "sync.prom"
    env = {"CIRCLEMIND_API_KEY": TEST_API_KEY, "ARCHIVER_API_URL": sim.base_url}
    done = run_archiver(
        "sync", "--database-url", database.url, "--metrics-file", str(prom), "-q", env=env
    )
    assert done.returncode == 0, done.stderr

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    written = samples(prom.read_text())
    with serving(database.url) as server:
        served = samples(httpx.get(server.url + "metrics").raise_for_status().text)
    from archiver.stats import counter_fields

    left_out = {f"archiver_last_run_{name}" for name, _, kept in counter_fields() if not kept}
    assert set(served) == {key for key in written if key[0] not in left_out}
    for key in ("tasks_polled", "events_inserted", "requests", "errors"):
        name = (f"archiver_last_run_{key}", (("command", "sync"),))
        assert served[name] == written[name], key
    assert served[("archiver_last_run_success", (("command", "sync"),))] == 1.0


def test_serve_never_writes(archive: Database, tmp_path: Path) -> None:
    """The serving connection refuses writes, and browsing leaves a SQLite file unchanged."""
    database = open_archive(archive.url)
    try:
        with pytest.raises(Exception, match=r"read-only|readonly"), database.reading() as conn:
            conn.execute(text("UPDATE tasks SET credits_used = 1"))
    finally:
        database.dispose()
    if archive.dialect == "sqlite":
        import sqlite3

        archive.dispose()
        path = Path(archive.engine.url.database or "")
        raw = sqlite3.connect(path)
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
        raw.close()

        def contents() -> str:
            wal = path.with_name(path.name + "-wal")
            return hashlib.sha256(
                path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
            ).hexdigest()

        before = contents()
        with serving(archive.url) as server:
            for page in ("tasks", "costs", "health", "metrics", "healthz", "task?id=tsk_x"):
                assert httpx.get(server.url + page).status_code in (200, 404)
        assert contents() == before


def test_missing_or_old_archive_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    """A missing SQLite archive exits 2 naming the path and creates nothing; a database
    without the current schema exits 2 saying to upgrade."""
    missing = tmp_path / "nowhere" / "archive.db"
    done = run_archiver("serve", "--database-url", f"sqlite:///{missing}")
    assert done.returncode == 2
    assert str(missing) in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not missing.exists() and not missing.parent.exists()
    old = tmp_path / "old.db"
    db = Database(f"sqlite:///{old}")
    from archiver.store.migrations import upgrade

    upgrade(db.engine, "0008")
    db.dispose()
    done = run_archiver("serve", "--database-url", f"sqlite:///{old}")
    assert done.returncode == 2 and "archiver db upgrade" in done.stderr


def test_demo_ends_with_the_serve_command_that_opens_it(tmp_path: Path) -> None:
    """`archiver demo` prints, last, an `archiver serve` line whose archive serve opens."""
    url = f"sqlite:///{tmp_path / 'demo' / 'demo.db'}"
    done = run_archiver("demo", "--tasks", "3", "--dir", str(tmp_path / "demo"))
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    # The command as this shell finds it: "archiver" on PATH, else its full path.
    command = "archiver" if shutil.which("archiver") == ARCHIVER_BIN else ARCHIVER_BIN
    assert last == f"Browse:  {command} serve --database-url {url}"
    open_archive(last.split("--database-url ", 1)[1]).dispose()


def test_other_commands_do_not_import_the_web_stack() -> None:
    """Only `archiver serve` imports Starlette, uvicorn and Jinja2 (start-up time of sync)."""
    import subprocess
    import sys

    code = (
        "import sys, archiver.cli, archiver.web; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_token_rules() -> None:
    """Loopback needs no token; any other address needs ARCHIVER_SERVE_TOKEN of 16+ chars."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    assert serve_token("127.0.0.1", {}) is None
    assert serve_token("0.0.0.0", {"ARCHIVER_SERVE_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(ConfigError, match="ARCHIVER_SERVE_TOKEN"):
        serve_token("0.0.0.0", {})
    with pytest.raises(ConfigError, match="at least 16"):
        serve_token("0.0.0.0", {"ARCHIVER_SERVE_TOKEN": "short"})


def start_serve(
    database_url: str, *args: str, env: dict[str, str], stderr: Any = subprocess.PIPE
) -> tuple[subprocess.Popen[str], str]:
    """The real `archiver serve` on port 0; returns the process and its http://127.0.0.1:PORT/."""
    proc = subprocess.Popen(
        [ARCHIVER_BIN, "serve", "--database-url", database_url, "--port", "0", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r" at http://\S+:(\d+)/$", line.strip())
    if match is None:
        proc.kill()
        raise AssertionError(
            f"no address in {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, f"http://127.0.0.1:{match.group(1)}/"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_token_is_enforced_on_every_route_beyond_loopback(archive: Database) -> None:
    """Bound to 0.0.0.0, the real command needs the token (HTTP Basic or Bearer) for pages,
    blobs, /healthz and /metrics; without ARCHIVER_SERVE_TOKEN it refuses to start."""
    refused = run_archiver(
        "serve", "--host", "0.0.0.0", "--port", "0", "--database-url", archive.url
    )
    assert refused.returncode == 2 and "ARCHIVER_SERVE_TOKEN" in refused.stderr
    proc, base = start_serve(archive.url, "--host", "0.0.0.0", env={"ARCHIVER_SERVE_TOKEN": TOKEN})
    try:
        routes = ["tasks", f"task?id={RECORDING_TASK}", f"blob/recording?task={RECORDING_TASK}",
                  f"json/output?task={RECORDING_TASK}", "costs", "health", "healthz", "metrics",
                  "static/style.css"]  # fmt: skip
        for route in routes:
            assert httpx.get(base + route).status_code == 401, route
            wrong = httpx.get(base + route, auth=("me", TOKEN + "x"))
            assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers, route
            assert httpx.get(base + route, auth=("anyone", TOKEN)).status_code == 200, route
        bearer = httpx.get(base + "metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        ranged = httpx.get(
            base + f"blob/recording?task={RECORDING_TASK}",
            auth=("x", TOKEN),
            headers={"Range": "bytes=0-99"},
        )
        assert ranged.status_code == 206 and len(ranged.content) == 100
    finally:
        stop(proc)
        output = (proc.stdout.read() if proc.stdout else "") + (
            proc.stderr.read() if proc.stderr else ""
        )
        print(output)
    assert TOKEN not in output


def test_loopback_server_rejects_foreign_host_names(archive: Database) -> None:
    """Without a token, requests naming another host (DNS rebinding) are refused (421)."""
    with serving(archive.url) as server:
        ok = httpx.get(server.url + "tasks")
        rebound = httpx.get(server.url + "tasks", headers={"Host": "evil.example:8377"})
    assert ok.status_code == 200
    assert rebound.status_code == 421


# --- issue 24: filters that are wrong, the health table, the timeline, the chart -------


def selected(html: str, name: str) -> str:
    """The option selected in the form's <select name=...>, '' for none."""
    menu = re.search(rf'<select name="{name}">(.*?)</select>', html, re.S)
    assert menu is not None
    chosen = re.search(r'<option value="([^"]*)" selected>', menu.group(1))
    return chosen.group(1) if chosen else ""


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "2025-13-01", "status": "failed"}, "'from' is not a filter"),
        ({"since": "2025-13-01", "status": "failed"}, "'2025-13-01'"),
        ({"sort": "cheapest", "status": "failed"}, "'cheapest'"),
    ],
)
def test_a_wrong_filter_is_shown_with_400_and_the_others_still_apply(
    archive: Database, params: dict[str, str], named: str
) -> None:
    """An unknown or invalid filter answers 400 with the list page itself: the error on it,
    the other filters kept in the form and applied to the rows."""
    with archive.reading() as conn:
        failed = set(conn.scalars(select(tasks.c.id).where(tasks.c.status == "failed")))
    with serving(archive.url) as server:
        answer = httpx.get(server.url + "tasks", params=params)
        costs = httpx.get(server.url + "costs", params={"group": "status", "from": "x"})
    assert answer.status_code == 400
    errors = re.search(r'id="filter-errors"(.*?)</div>', answer.text, re.S)
    assert errors is not None and named in unescape(errors.group(1))
    assert selected(answer.text, "status") == "failed"
    assert set(list_ids(answer.text)) == failed
    assert costs.status_code == 400 and 'id="filter-errors"' in costs.text
    assert selected(costs.text, "group") == "status"


def test_health_lists_the_last_runs_once_as_a_table_in_utc(archive: Database) -> None:
    """The Health page shows the runs in one table (times as '... UTC', the run's length),
    not again as status text lines."""
    with archive.reading() as conn:
        runs = conn.execute(select(sync_runs.c.started_at)).all()
    with serving(archive.url) as server:
        html = httpx.get(server.url + "health").text
    lines = re.search(r'id="health-lines">(.*?)</pre>', html, re.S)
    assert lines is not None and "last runs" not in lines.group(1) and "tasks:" in lines.group(1)
    rows = table(html, "runs")
    assert len(rows) == len(runs)
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[0]), row
        assert re.fullmatch(r"\d+\.\d s", row[1]), row


def test_timeline_rows_say_what_happened(database: Database, make_simulator: Any) -> None:
    """A collapsed timeline row previews the event: an action's name and input, a
    response's code, else the payload, on one line."""
    sim = make_simulator(tasks=3, events_per_task=12, seed=5)
    sim.finish_all()
    assert run_command(SyncPass(), database, client_config(sim), SyncOptions()).exit_code == 0
    seen = 0
    with serving(database.url) as server:
        for task_id, entry in sim.truth().items():
            html = httpx.get(server.url + "task", params={"id": task_id}).text
            previews = [unescape(p) for p in re.findall(r'class="preview">(.*?)</span>', html)]
            assert len(previews) == len(entry["events"])
            for event in entry["events"]:
                payload = event["payload"]
                if "name" in payload:
                    wanted = payload["name"]
                elif "code" in payload:
                    wanted = f"code {payload['code']}"
                else:
                    wanted = next(iter(payload))
                assert any(p.startswith(wanted) or wanted in p for p in previews), wanted
                seen += 1
    assert seen == 36 and all("\n" not in p for p in previews)


def test_costs_chart_ticks_are_round_and_labelled(archive: Database) -> None:
    """The y axis of the costs chart is labelled with its unit and ticks at round numbers
    (1, 2 or 5 x 10^k) from 0 past the tallest bar."""
    with serving(archive.url) as server:
        html = httpx.get(server.url + "costs", params={"group": "status"}).text
    assert re.search(r'id="chart-unit">credits<', html)
    ticks = [int(t.replace(",", "")) for t in re.findall(r'class="tick">([\d,]+)<', html)]
    steps = {b - a for a, b in itertools.pairwise(ticks)}
    assert ticks[0] == 0 and len(steps) == 1
    (step,) = steps
    assert int(str(step)[0]) in (1, 2, 5) and set(str(step)[1:]) <= {"0"}
    per_period: dict[str, int] = {}
    for period, _status, _tasks, credits, _usd in table(html, "costs-table"):
        per_period[period] = per_period.get(period, 0) + int(credits.replace(",", ""))
    assert ticks[-1] - step < max(per_period.values()) <= ticks[-1]


def test_a_one_day_costs_chart_draws_a_bar_with_round_ticks() -> None:
    """An archive of one day draws one centred bar of a bar's width (not a block across
    the chart), under an axis of round ticks reaching past it."""
    day = CreditsReport("day", (), None, None, [CreditsRow(date(2026, 1, 5), (), 3, 737)])
    chart = costs_chart(day)
    (bar,) = chart.bars
    assert bar.width <= MAX_BAR_WIDTH
    middle = chart.left + (chart.width - chart.left - 10) / 2
    assert abs(bar.x + bar.width / 2 - middle) < 1
    assert [label for _, label in chart.ticks] == ["0", "200", "400", "600", "800"]
    assert chart.unit == "credits"
