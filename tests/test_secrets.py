"""Secrets: the API key and presigned signatures never reach a log line, an error message,
``sync_runs``, any table, a blob name or ``--help``; local files are owner-only.

Real ``archiver`` subprocesses run against the simulator with a distinctive key, downloads
on (so presigned ``X-Amz-Signature`` links flow through), API faults, a rejected key and
a malformed task; then every output, every column of every table and every blob name is
searched for the key and for each signature and live-view token the simulator issued.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, create_engine, insert, select

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.simulator import Simulator
from archiver.store.database import Database
from archiver.store.engines import normalize_database_url
from archiver.store.schema import tasks
from archiver.timestamps import utcnow
from tests.conftest import TEST_API_KEY, run_archiver
from tests.webseed import serving

KEY = "sk-live-7Qx9ZpL2mN4vR8tYc3Wd"
#: Query values that grant access: presigned signatures and live-view tokens.
_SECRET_PARAM = re.compile(r"(?:X-Amz-Signature|X-Amz-Credential|token)=([0-9A-Za-z]+)")


def issued_secrets(sim: Simulator) -> set[str]:
    """Every signature and token in the links the simulator hands out right now."""
    return set(_SECRET_PARAM.findall(json.dumps(sim.truth())))


def dump_database(url: str) -> str:
    """Every row of every table and view, all columns, as one text."""
    engine = create_engine(normalize_database_url(url))
    meta = MetaData()
    meta.reflect(bind=engine, views=True)
    lines = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {row!r} {json.dumps(list(row), default=str)}")
    engine.dispose()
    return "\n".join(lines)


def blob_names(root: Path) -> str:
    return "\n".join(str(path.relative_to(root)) for path in root.rglob("*"))


def assert_owner_only(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def assert_clean(where: str, text: str, secrets: set[str]) -> None:
    """Neither the key nor any signature/token appears in ``text``."""
    assert KEY not in text, f"the API key appears in {where}"
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked, f"{len(leaked)} signature(s)/token(s) appear in {where}: {leaked[:3]}"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, so owner-only modes come from the archiver, not the test."""
    old = os.umask(0o022)
    yield
    os.umask(old)


COMMANDS = [
    (),
    ("sync",),
    ("backfill",),
    ("status",),
    ("verify",),
    ("demo",),
    ("db",),
    ("db", "upgrade"),
    ("db", "current"),
    ("report",),
    ("report", "credits"),
    ("report", "top"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "archiver")
def test_help_never_shows_the_key(command: tuple[str, ...]) -> None:
    """`--help` of every command, with the key in the environment, does not show it."""
    done = run_archiver(*command, "--help", env={"CIRCLEMIND_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_no_secret_in_logs_database_runs_or_blob_names(
    database_url: str, make_simulator, tmp_path: Path, umask_022: None
) -> None:
    """No output, table or blob name holds the key or a signature; local files are owner-only."""
    sim = make_simulator(
        tasks=10,
        events_per_task=4,
        seed=71,
        api_key=KEY,
        spacing_s=20.0,
        duration_s=(30.0, 200.0),
        fault_rate=0.3,
        fault_seed=7,
        # Faults whose messages quote the body, plus a retried one (no 5xx back-off waits).
        fault_kinds=("garbage", "html200", "truncate", "429"),
        file_errors=(403,),  # the first link of each file is refused: fresh ones are asked
    )
    secrets = issued_secrets(sim)  # live-view tokens of the running tasks
    blobs = tmp_path / "blobs"
    env = {
        "CIRCLEMIND_API_KEY": KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    downloads = ("--downloads", "--blob-url", str(blobs))
    outputs: list[tuple[str, str]] = []

    def archiver(*args: str, expect: tuple[int, ...] = (0, 1), **extra: str) -> str:
        done = run_archiver(*args, env={**env, **extra})
        text = done.stdout + done.stderr
        assert done.returncode in expect, (args, text[-2000:])
        outputs.append((" ".join(args), text))
        return text

    archiver("sync", "-vv", *downloads)
    sim.advance(150.0)
    secrets |= issued_secrets(sim)  # tokens of the tasks running now
    archiver("sync", "-vv", "--log-format", "json", *downloads)
    sim.finish_all()
    secrets |= issued_secrets(sim)  # recording and downloads signatures
    assert {"fault:garbage", "fault:html200"} <= set(sim.stats)
    sim.config = replace(sim.config, fault_rate=0.0)
    archiver("sync", "-vv", *downloads, expect=(0,))
    backfill_db = f"sqlite:///{tmp_path}/backfill.db"
    backfill_env = {"ARCHIVER_DATABASE_URL": backfill_db}
    archiver("backfill", "-vv", "--log-format", "json", *downloads, **backfill_env)
    for args in (
        ("status",),
        ("status", "--json"),
        ("verify", "--blob-url", str(blobs)),
        ("verify", "--repair", "--blob-url", str(blobs)),
        ("report", "credits", "--format", "json"),
        ("report", "top"),
    ):
        archiver(*args, expect=(0,))
    # A key the API rejects, and a task whose payload is malformed.
    refusing = make_simulator(tasks=2, api_key="sk-the-right-one")
    rejected = archiver("sync", "-vv", expect=(2,), ARCHIVER_API_URL=refusing.base_url)
    assert "rejected the key" in rejected
    probe = make_simulator(tasks=3, seed=72)
    bad = sorted(probe.truth())[0]
    malformed = make_simulator(tasks=3, seed=72, api_key=KEY, malformed_task_ids={bad})
    malformed.finish_all()
    secrets |= issued_secrets(malformed)
    archiver(
        "sync",
        "-vv",
        "--log-format",
        "json",
        *downloads,
        expect=(1,),
        ARCHIVER_API_URL=malformed.base_url,
    )

    assert len(secrets) > 10
    assert any("/files/" in text for _, text in outputs)  # presigned links were fetched
    for where, text in outputs:
        assert_clean(f"the output of `archiver {where}`", text, secrets)
    for url in (database_url, backfill_db):
        dump = dump_database(url)
        assert "sync_runs:" in dump and "artifacts:" in dump
        assert_clean(f"the database {url}", dump, secrets)
    names = blob_names(blobs)
    assert "recording" in names and "downloads" in names
    assert_clean("the blob names", names, secrets)

    for path in [blobs, *blobs.rglob("*")]:
        assert_owner_only(path)
    for url in (database_url, backfill_db):
        if url.startswith("sqlite:///"):
            assert_owner_only(Path(url[len("sqlite:///") :]))


def test_sqlite_wal_and_shm_files_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    """The SQLite file and the -wal/-shm files next to it are created owner-only."""
    path = tmp_path / "home" / "archive.db"
    db = Database(f"sqlite:///{path}")
    db.prepare()
    with db.transaction() as conn:  # a write: the -wal file has content
        conn.execute(insert(tasks).values(id="t1", first_seen_at=utcnow()))
    files = [path, path.with_name("archive.db-wal"), path.with_name("archive.db-shm")]
    try:
        for file in files:  # the pool keeps the connection open: they all exist now
            assert_owner_only(file)
    finally:
        db.dispose()


LINK = "https://files.example/tsk_1/recording.mp4?X-Amz-Signature=c0ffee1234abcd&X-Amz-Expires=9"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (422, json.dumps({"detail": [{"loc": ["header", "apikey"], "input": KEY}]}).encode()),
        (400, json.dumps({"detail": f"bad link {LINK}"}).encode()),
        (200, LINK.encode()),
        (200, f"<html>{KEY}</html>".encode()),
    ],
    ids=["422-echoes-key", "400-echoes-link", "text-with-link", "html-with-key"],
)
def test_api_bodies_echoing_secrets_are_masked_in_errors(
    database: Database, status: int, body: bytes
) -> None:
    """An API body echoing the key or a presigned link is masked in errors and the database."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    config = ClientConfig(api_url="http://api.test/api/v1", api_key=ApiKey(KEY))
    result = run_command(
        SyncPass(),
        database,
        config,
        SyncOptions(task_ids=("tsk_1",)),
        transport=httpx.MockTransport(handler),
    )
    assert result.exit_code == 1
    with database.transaction() as conn:
        (error,) = conn.scalars(select(tasks.c.last_error))
    assert error and ("unexpected HTTP" in error or "not a JSON document" in error)
    everything: list[Any] = [error, *result.errors, result.message]
    text = "\n".join(map(str, everything))
    assert_clean("the task error", text, {"c0ffee1234abcd"})
    assert_clean("the database", dump_database(database.url), {"c0ffee1234abcd"})


def _forms(key: str) -> dict[str, str]:
    """The key as a body may carry it: as it is, and JSON-escaped (upper and lower case
    hex)."""
    return {
        "raw": key,
        "escaped": "".join(
            f"\\u{ord(c):04x}" if i % 2 else f"\\u{ord(c):04X}" for i, c in enumerate(key)
        ),
    }


def _unescaped(text: str) -> str:
    """``text`` with JSON and URL escapes decoded (however many backslashes a repr added)."""
    text = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return re.sub(r"%([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def key_runs(text: str, key: str = KEY, run: int = 8) -> list[str]:
    """Every run of ``run`` characters of the key found in ``text``, as is or unescaped."""
    parts = {key[i : i + run] for i in range(len(key) - run + 1)}
    return sorted(p for p in parts if p in text or p in _unescaped(text))


class _EchoingApi(BaseHTTPRequestHandler):
    """Get Task answers 422 with the key at the offset and in the form the id names."""

    def do_GET(self) -> None:
        match = re.search(r"/task/tsk_(\d+)_(\w+)$", self.path.split("?", 1)[0])
        if match is None:
            self.send_error(404)
            return
        offset, form = int(match.group(1)), match.group(2)
        body = ("x" * offset + _forms(KEY)[form] + " y" * 200).encode()
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_key_never_leaks_through_an_error_body(database_url: str, tmp_path: Path) -> None:
    """A stub API echoing the key at every offset 0..250 of a 422 body, raw and
    JSON-escaped: no run of 8 of its characters reaches the log, any table, `status` or
    any page of `serve`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ids = [f"tsk_{offset}_{form}" for offset in range(251) for form in _forms(KEY)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    env = {
        "CIRCLEMIND_API_KEY": KEY,
        "ARCHIVER_API_URL": f"http://127.0.0.1:{server.server_address[1]}/api/v1",
        "ARCHIVER_DATABASE_URL": database_url,
    }
    try:
        runs = [run_archiver("backfill", "--ids-file", str(ids_file), "-vv", env=env)]
    finally:
        server.shutdown()
    status = run_archiver("status", env={"ARCHIVER_DATABASE_URL": database_url})
    outputs = [r.stdout + r.stderr for r in (*runs, status)]
    assert all(r.returncode == 1 for r in runs), outputs[0][-2000:]
    assert "unexpected HTTP 422" in outputs[0]
    dump = dump_database(database_url)
    assert dump.count("unexpected HTTP 422") >= len(ids)
    with serving(database_url) as web, httpx.Client(base_url=web.url) as client:
        pages = [client.get("tasks").text, client.get("health").text]
        # Every task whose excerpt the 200-character cut reaches into, and a sample before.
        shown = [i for i in ids if int(i.split("_")[1]) >= 150 or int(i.split("_")[1]) % 10 == 0]
        pages += [client.get("task", params={"id": task_id}).text for task_id in shown]
    assert all("unexpected HTTP 422" in page for page in pages[2:])
    texts = {"the log": "\n".join(outputs), "the database": dump, "the pages": "\n".join(pages)}
    for where, text in texts.items():
        assert not key_runs(text), f"{where} holds runs of the key: {key_runs(text)}"


DB_SECRETS = ("pwUserinfo1234", "pwQuery5678", "pwSsl9012")


def test_database_passwords_are_masked_wherever_a_url_is_shown(
    postgres_url: str, make_simulator, tmp_path: Path
) -> None:
    """A PostgreSQL URL's password (user:PASSWORD@, ?password=, ?sslpassword=) appears in
    no output of `db`, `sync`, `status`, no error and no page (libpq's parameters:
    PostgreSQL only)."""
    base = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_SECRETS[0]}@")
    url = f"{base}?password={DB_SECRETS[1]}&sslpassword={DB_SECRETS[2]}"
    missing = url.replace(base, base + "_missing")
    bad_port = url.replace(":5432/", ":port/")
    sim = make_simulator(tasks=3, seed=5)
    sim.finish_all()
    env = {"CIRCLEMIND_API_KEY": TEST_API_KEY, "ARCHIVER_API_URL": sim.base_url}
    done = [
        run_archiver("db", "upgrade", "--database-url", url),
        run_archiver("sync", "-vv", "--database-url", url, env=env),
        run_archiver("sync", "-q", "--log-format", "json", "--database-url", url, env=env),
        run_archiver("status", "--database-url", url),
        run_archiver("status", "--json", "--database-url", url),
        run_archiver("db", "current", "--database-url", url),
        run_archiver("status", "--database-url", missing),
        run_archiver("status", "--database-url", bad_port),
    ]
    assert [d.returncode for d in done] == [0, 0, 0, 0, 0, 0, 2, 2], done[-1].stderr
    assert "does not exist" in done[6].stderr and "is not a URL" in done[7].stderr
    with serving(url) as web:
        page = httpx.get(web.url + "health").text
    assert "postgres:********@" in page and "password=********" in page
    texts = [d.stdout + d.stderr for d in done] + [page]
    for text in texts:
        leaked = [secret for secret in DB_SECRETS if secret in text]
        assert not leaked, f"{leaked} in {text[-1500:]}"
