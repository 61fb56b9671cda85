"""Shared fixtures: a clean environment, real databases (SQLite and PostgreSQL), the
simulator over real HTTP, and a runner for the real `archiver` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stamina
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from archiver.config import ApiKey, ClientConfig
from archiver.jsonvalues import loads_json
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.database import Database
from archiver.store.schema import task_events, tasks

TEST_API_KEY = "sk-test-3f9c1e7a5b2d4c6e8f0a"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("ARCHIVER_TEST_POSTGRES_URL", DEFAULT_PG_URL)
REQUIRE_PG = os.environ.get("ARCHIVER_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"]
#: The installed console script, next to this interpreter.
ARCHIVER_BIN = str(Path(sys.executable).with_name("archiver"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts without archiver/Smooth settings and with retries switched off."""
    for name in list(os.environ):
        if name.startswith("ARCHIVER_") and name not in (
            "ARCHIVER_TEST_POSTGRES_URL",
            "ARCHIVER_REQUIRE_POSTGRES",
        ):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CIRCLEMIND_API_KEY", raising=False)
    monkeypatch.setenv("ARCHIVER_HOME", str(tmp_path / "home"))
    stamina.set_testing(True, attempts=1)
    yield
    stamina.set_testing(False)


@pytest.fixture
def production_retries() -> None:
    """Real retries with back-off, as users run them (the suite's default switches them off):
    for the fault suites that run in process."""
    stamina.set_testing(False)


def _postgres_available() -> str | None:
    try:
        engine = create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


_PG_PROBLEM: str | bool | None = False


def postgres_problem() -> str | None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _postgres_available()
    return _PG_PROBLEM  # type: ignore[return-value]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test only, dropped afterwards."""
    problem = postgres_problem()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (ARCHIVER_REQUIRE_POSTGRES=1) but: {problem}")
        pytest.skip(f"no PostgreSQL at {PG_URL}: {problem}")
    name = f"archiver_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty archive database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated archive database."""
    db = Database(database_url)
    db.prepare()
    yield db
    db.dispose()


@pytest.fixture
def make_simulator() -> Iterator[type[Simulator]]:
    """Start simulators with given configs; all are stopped at the end of the test."""
    started: list[Simulator] = []

    def factory(**kwargs: object) -> Simulator:
        kwargs.setdefault("api_key", TEST_API_KEY)
        sim = Simulator(SimulatorConfig(**kwargs))  # type: ignore[arg-type]
        sim.start()
        started.append(sim)
        return sim

    yield factory  # type: ignore[misc]
    for sim in started:
        sim.stop()


def client_config(sim: Simulator, **kwargs: object) -> ClientConfig:
    return ClientConfig(api_url=sim.base_url, api_key=ApiKey(TEST_API_KEY), **kwargs)  # type: ignore[arg-type]


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_archiver(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: str | None = None
) -> Completed:
    """Run the real `archiver` command in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if k != "CIRCLEMIND_API_KEY"}
    full_env.update(env or {})
    proc = subprocess.run(
        [ARCHIVER_BIN, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=stdin,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def start_archiver(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    """Start the real `archiver` command in the background (output discarded by default)."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen([ARCHIVER_BIN, *args], env={**os.environ, **env}, text=True, **popen)


def wait_for_gets(sim: Simulator, count: int, timeout: float = 30.0) -> None:
    """Block until the simulator has answered ``count`` Get Task requests (or timeout)."""
    deadline = time.monotonic() + timeout
    while sim.stats["get"] < count and time.monotonic() < deadline:
        time.sleep(0.02)


def canonical(value: object) -> str:
    """A JSON value as a string that tells apart what JSON tells apart: 1 from 1.0, -0.0
    from 0.0, every string (lone surrogates and NULs too); built without recursion, so
    nesting of any depth compares (Python's == says 1 == 1.0 == True and -0.0 == 0.0)."""
    out: list[str] = []
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Mark):
            out.append(item.text)
        elif item is None or isinstance(item, bool):
            out.append(repr(item))
        elif isinstance(item, int | float | str):
            out.append(f"{type(item).__name__}:{item!r}")
        elif isinstance(item, list):
            stack.append(_Mark("]"))
            stack.extend(reversed(item))
            out.append("[")
        elif isinstance(item, dict):
            stack.append(_Mark("}"))
            for key in sorted(item, reverse=True):
                stack.append(item[key])
                stack.append(_Mark(f"str:{key!r}="))
            out.append("{")
        else:
            raise TypeError(f"not a JSON value: {type(item).__name__}")
    return " ".join(out)


@dataclass(frozen=True)
class _Mark:
    text: str


def archived(typed: Any, raw: str | None) -> Any:
    """A JSON column's value as sent: its ``*_raw`` twin where set, else the typed column."""
    return typed if raw is None else loads_json(raw)


def stored_state(db: Database) -> tuple[dict[str, dict], Counter[tuple], int]:
    """(tasks by id, multiset of stored events, number of event rows) read back from the
    archive."""
    with db.transaction() as conn:
        task_rows = {row.id: row._asdict() for row in conn.execute(select(tasks))}
        event_rows = conn.execute(
            select(
                task_events.c.task_id,
                task_events.c.event_id,
                task_events.c.name,
                task_events.c.timestamp,
                task_events.c.payload,
                task_events.c.payload_raw,
            )
        ).all()
    events = Counter(
        (r.task_id, r.event_id, r.name, r.timestamp, canonical(archived(r.payload, r.payload_raw)))
        for r in event_rows
    )
    return task_rows, events, len(event_rows)


def truth_events(sim: Simulator) -> Counter[tuple]:
    """The simulator's events as a multiset: repeated identical events count twice."""
    return Counter(
        (task_id, ev["id"], ev["name"], ev["timestamp"], canonical(ev["payload"]))
        for task_id, entry in sim.truth().items()
        for ev in entry["events"]
    )


def assert_matches_truth(db: Database, sim: Simulator) -> None:
    """The archive holds exactly the simulator's tasks and events: none lost, none twice."""
    truth = sim.truth()
    task_rows, events, n_rows = stored_state(db)
    assert set(task_rows) == set(truth), "archived task ids differ from the API's"
    expected = truth_events(sim)
    missing, unexpected = expected - events, events - expected
    assert not missing and not unexpected, (
        f"missing {sum(missing.values())} events, unexpected {sum(unexpected.values())}"
    )
    assert n_rows == sum(expected.values())
    per_task = Counter(key[0] for key in events.elements())
    for task_id, entry in truth.items():
        row, api = task_rows[task_id], entry["task"]
        assert row["status"] == api["status"], task_id
        assert row["credits_used"] == api["credits_used"], task_id
        output = archived(row["output"], row["output_raw"])
        assert canonical(output) == canonical(api["output"]), task_id
        assert row["event_count"] == per_task[task_id], task_id
        stamps = [e["timestamp"] for e in entry["events"] if e["timestamp"] is not None]
        assert row["event_t"] == (max(stamps) if stamps else 0), task_id


# --- S3 blob storage: moto's S3-compatible server on loopback --------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session (no network beyond loopback)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_blob_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty bucket on the moto server, as ``s3://bucket/prefix``; AWS_* env set for it
    (in this process and in `archiver` subprocesses)."""
    env = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import s3fs

    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing").mkdir(bucket)
    return f"s3://{bucket}/smooth"


def assert_artifacts_match_truth(db: Database, sim: Simulator) -> None:
    """Every task has both artifacts in their true final state: a link the API gives is
    stored with exactly the bytes the artifact host serves, an empty link is absent."""
    from archiver.store.schema import artifacts

    with db.transaction() as conn:
        rows = {(r.task_id, r.kind): r for r in conn.execute(select(artifacts))}
    expected: dict[tuple[str, str], tuple[str, int | None, str | None]] = {}
    for task_id, entry in sim.truth().items():
        for kind, name in (("recording", "recording.mp4"), ("downloads", "downloads.zip")):
            if entry["task"][f"{kind}_url"]:
                size, sha = sim.file_sha256(task_id, name)
                expected[(task_id, kind)] = ("stored", size, sha)
            else:
                expected[(task_id, kind)] = ("absent", None, None)
    found = {key: (r.state, r.size_bytes, r.sha256) for key, r in rows.items()}
    wrong = {k: (found.get(k), want) for k, want in expected.items() if found.get(k) != want}
    assert not wrong, f"{len(wrong)} artifacts differ from the truth: {list(wrong.items())[:3]}"
    assert set(found) == set(expected), "artifact rows for tasks the API does not have"


@dataclass
class TlsServer:
    """An https server on loopback whose certificate comes from a CA nobody trusts."""

    url: str
    ca_file: Path
    requests: list[str]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """Serves ``b"video bytes"`` (and a small TaskResponse under /api/v1/task/) over TLS
    with a certificate for 127.0.0.1 signed by a fresh trustme CA."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = b"video bytes"
            if self.path.startswith("/api/v1/task/"):
                body = b'{"r": {"id": "t1", "status": "done", "events": []}}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TlsServer(f"https://127.0.0.1:{server.server_address[1]}", ca_file, seen)
    finally:
        server.shutdown()
        server.server_close()
