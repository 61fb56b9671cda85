"""Operator safety (issue 8): the demo never touches a real archive, read-only commands
never create or change one, broken or read-only files give one clear line, and option
errors are in the project's words. Each test drives the real `archiver` command."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archiver.store.engines import normalize_database_url
from archiver.store.schema import metadata
from tests.conftest import TEST_API_KEY, run_archiver


def file_checksums(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (and the roots' own listing of folders)."""
    sums: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                sums[str(path)] = "folder"
    return sums


def table_dump(database_url: str) -> dict[str, list[str]]:
    """Every row of every archive table (and the Alembic version), canonical and sorted."""
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as conn:
            dump = {
                name: sorted(repr(tuple(row)) for row in conn.execute(table.select()))
                for name, table in metadata.tables.items()
            }
            dump["alembic_version"] = sorted(
                str(v) for v in conn.scalars(text("SELECT version_num FROM alembic_version"))
            )
    finally:
        engine.dispose()
    return dump


@pytest.fixture
def real_archive(database_url: str, make_simulator, tmp_path: Path) -> Iterator[dict[str, str]]:
    """An operator's environment pointing at a real archive made by a real sync (with
    artifacts in a blob folder and a home folder)."""
    # Every task has finished, so the sync stores artifacts too.
    sim = make_simulator(tasks=6, events_per_task=4, seed=81, initial_time=1_764_100_000)
    home = tmp_path / "operator-home"
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_BLOB_URL": str(tmp_path / "operator-blobs"),
        "ARCHIVER_HOME": str(home),
    }
    done = run_archiver("sync", "--downloads", env=env)
    assert done.returncode == 0, done.stderr
    home.mkdir(exist_ok=True)
    (home / "notes.txt").write_text("an operator's file\n")
    yield env


def test_demo_leaves_a_real_archive_byte_for_byte_unchanged(
    real_archive: dict[str, str],
    database_url: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`archiver demo` with every variable pointing at a real archive changes none of it."""
    # tmp_path holds the SQLite archive, the blob folder and the home: nothing in it may
    # change, and no file may appear there.
    files_before = file_checksums(tmp_path)
    rows_before = table_dump(database_url)
    assert any(name.endswith(".db") for name in files_before) or "postgresql" in database_url
    assert any("operator-blobs" in name and sum_ != "folder" for name, sum_ in files_before.items())

    demo_tmp = tmp_path_factory.mktemp("demo-tmp")
    done = run_archiver("demo", "--tasks", "5", env={**real_archive, "TMPDIR": str(demo_tmp)})
    assert done.returncode == 0, done.stderr
    assert "5 tasks," in done.stdout

    assert file_checksums(tmp_path) == files_before
    assert table_dump(database_url) == rows_before
    # It says where its own archive is, and that is a new folder of its own.
    where = re.search(r"^Archive: (\S+)", done.stdout, re.MULTILINE)
    assert where is not None, done.stdout
    demo_db = Path(where.group(1))
    assert demo_db.is_file() and demo_db.parent.parent == demo_tmp
    assert TEST_API_KEY not in done.stdout + done.stderr


# --- item 4: read-only commands and broken files ----------------------------------------

READ_ONLY_COMMANDS = [
    ("status",),
    ("status", "--json"),
    ("report", "top"),
    ("report", "credits"),
    ("verify",),
    ("db", "current"),
]
EVERY_COMMAND = [
    *READ_ONLY_COMMANDS,
    ("sync",),
    ("backfill",),
    ("db", "upgrade"),
    ("verify", "--repair"),
]


def ids(command: tuple[str, ...]) -> str:
    return " ".join(command)


def one_error_line(done: object) -> str:
    """The single `archiver: error:` line of a failed command (no traceback)."""
    stderr = done.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(stderr) == 1 and stderr[0].startswith("archiver: error: "), stderr[-5:]
    assert "Traceback" not in done.stdout + done.stderr  # type: ignore[attr-defined]
    return stderr[0]


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=ids)
def test_read_only_commands_never_create_a_missing_archive(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """A mistyped SQLite path is one line naming it, exit 2; no file or folder appears."""
    missing = tmp_path / "typo" / "archive.db"
    done = run_archiver(*command, "--database-url", f"sqlite:///{missing}")
    assert done.returncode == 2
    line = one_error_line(done)
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=ids)
def test_read_only_commands_never_create_the_default_archive(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """Without --database-url, a home with no archive yet is not created by reading."""
    home = tmp_path / "fresh-home"
    done = run_archiver(*command, env={"ARCHIVER_HOME": str(home)})
    assert done.returncode == 2
    assert str(home / "archive.db") in one_error_line(done)
    assert not home.exists()


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=ids)
def test_a_file_that_is_not_a_database_is_one_line(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """Every command on a file that is not SQLite: one line naming the file, exit 2."""
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not an archive\n" * 20)
    before = junk.read_bytes()
    done = run_archiver(
        *command,
        "--database-url",
        f"sqlite:///{junk}",
        env={"CIRCLEMIND_API_KEY": TEST_API_KEY, "ARCHIVER_API_URL": "http://127.0.0.1:9/v1"},
    )
    assert done.returncode == 2
    line = one_error_line(done)
    assert str(junk) in line and "not a SQLite database" in line
    assert junk.read_bytes() == before
    assert {p.name for p in tmp_path.iterdir()} - {"home"} == {"notes.db"}


@pytest.fixture
def sqlite_archive(make_simulator, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A real SQLite archive in its own folder, made by a real sync; the env to reach it."""
    sim = make_simulator(tasks=5, events_per_task=3, seed=83)
    path = tmp_path / "archive" / "archive.db"
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": f"sqlite:///{path}",
    }
    done = run_archiver("sync", env=env)
    assert done.returncode == 0, done.stderr
    return path, env


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=ids)
def test_read_only_commands_leave_the_archive_folder_unchanged(
    command: tuple[str, ...], sqlite_archive: tuple[Path, dict[str, str]]
) -> None:
    """Reading an archive at rest writes nothing: same bytes, no -wal/-shm left behind."""
    path, env = sqlite_archive
    before = file_checksums(path.parent)
    assert list(before) == [str(path)]
    done = run_archiver(*command, env=env)
    assert done.returncode == 0, done.stderr
    assert file_checksums(path.parent) == before


def without_root_powers(*args: str) -> list[str]:
    """``args`` run so that file permissions apply. The tests run as root, which ignores
    them: the command keeps uid 0 (it must reach this venv's interpreter under /root) but
    loses the capabilities that override file modes, so a 0444 file or 0555 folder owned
    by root is read-only to it, as it would be to any other user."""
    import os

    if os.geteuid() != 0:
        return list(args)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): permissions cannot apply")
    caps = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *args]


def run_restricted(*args: str, env: dict[str, str]) -> object:
    import os
    import subprocess

    from tests.conftest import ARCHIVER_BIN, Completed

    full_env = {k: v for k, v in os.environ.items() if k != "CIRCLEMIND_API_KEY"}
    proc = subprocess.run(
        without_root_powers(ARCHIVER_BIN, *args),
        capture_output=True,
        text=True,
        env={**full_env, **env},
        timeout=120,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("read_only", ["file", "folder", "both"])
def test_a_read_only_archive_is_readable_and_sync_says_read_only(
    read_only: str, sqlite_archive: tuple[Path, dict[str, str]]
) -> None:
    """A 0444 archive and/or 0555 folder: status/report read it; sync says it is read-only."""
    path, env = sqlite_archive
    if read_only in ("file", "both"):
        path.chmod(0o444)
    if read_only in ("folder", "both"):
        path.parent.chmod(0o555)
    try:
        probe = run_restricted("db", "current", env=env)
        assert probe.returncode == 0, probe.stderr  # type: ignore[attr-defined]
        before = file_checksums(path.parent)
        status = run_restricted("status", "--json", env=env)
        assert status.returncode == 0, status.stderr  # type: ignore[attr-defined]
        assert json.loads(status.stdout)["tasks"] == 5  # type: ignore[attr-defined]
        report = run_restricted("report", "top", env=env)
        assert report.returncode == 0, report.stderr  # type: ignore[attr-defined]
        assert file_checksums(path.parent) == before

        sync = run_restricted("sync", env=env)
        assert sync.returncode == 2
        line = one_error_line(sync)
        assert str(path) in line and "read-only" in line and "cannot create" not in line
        assert file_checksums(path.parent) == before
        # The check is real: write access is indeed refused to that process.
        touch = subprocess_run(without_root_powers("sh", "-c", f"echo x >> {path}"))
        assert touch != 0 or read_only == "folder"
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)


def subprocess_run(args: list[str]) -> int:
    import subprocess

    return subprocess.run(args, capture_output=True).returncode


def test_a_read_only_database_object_refuses_writes(database_url: str) -> None:
    """Database(read_only=True) reads the archive but the database refuses any write
    (SQLite query_only/mode=ro; PostgreSQL default_transaction_read_only)."""
    from sqlalchemy.exc import DBAPIError

    from archiver.store.database import Database

    writer = Database(database_url)
    writer.prepare()
    writer.dispose()
    reader = Database(database_url, read_only=True)
    reader.prepare()
    try:
        with reader.reading() as conn:
            assert conn.execute(text("SELECT count(*) FROM tasks")).scalar() == 0
        with (
            pytest.raises(DBAPIError, match=r"read-only|readonly"),
            reader.engine.connect() as conn,
        ):
            conn.execute(
                text("INSERT INTO tasks (id, first_seen_at) VALUES ('t', '2026-01-01 00:00:00')")
            )
            conn.commit()
    finally:
        reader.dispose()


@pytest.mark.parametrize("command", [*READ_ONLY_COMMANDS, ("sync",)], ids=ids)
def test_a_missing_postgres_database_is_exit_2(command: tuple[str, ...], postgres_url: str) -> None:
    """A PostgreSQL URL naming a database that does not exist: one line naming it, exit 2."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url).set(database="archiver_no_such_db").render_as_string(False)
    done = run_archiver(
        *command,
        "--database-url",
        url,
        env={"CIRCLEMIND_API_KEY": TEST_API_KEY, "ARCHIVER_API_URL": "http://127.0.0.1:9/v1"},
    )
    assert done.returncode == 2
    line = one_error_line(done)
    assert "archiver_no_such_db" in line and "does not exist" in line


# --- item 5: the README's commands are what CI runs -------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The shell lines of the README's "Two commands" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [line for block in blocks for line in block.strip().splitlines()]


def test_ci_runs_the_readme_test_command_verbatim_with_nothing_before_it() -> None:
    """.ci/run runs the README's test command as written, with no pip step before it."""
    demo, test_command = readme_commands()
    assert demo.startswith("python3 -m venv .venv && .venv/bin/pip install . ")
    assert test_command.startswith("python3 -m venv .venv && ")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
    before = ci_lines[: ci_lines.index(test_command)]
    pip_steps = [line for line in before if re.search(r"\bpip\b", line.split("#")[0])]
    assert not pip_steps


def test_readme_installs_from_a_checkout() -> None:
    """The README never tells people to `pip install smooth-archiver` from PyPI (it is not
    published): installs are `pip install .` from a checkout."""
    readme = (ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```(?:sh|cron)?\n(.*?)```", readme, re.DOTALL))
    assert "pip install smooth-archiver" not in code
    assert "pip install 'smooth-archiver[" not in code
    assert "pip install ." in code


# --- smaller things: time zones, --max-runtime units, option errors ---------------------


def timestamps_in(value: object) -> list[str]:
    """Every string in a JSON document that reads as a date and time."""
    from datetime import datetime

    if isinstance(value, dict):
        return [t for v in value.values() for t in timestamps_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in timestamps_in(v)]
    if isinstance(value, str) and re.match(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d", value):
        datetime.fromisoformat(value)
        return [value]
    return []


def test_status_json_times_all_carry_a_time_zone(database_url: str, make_simulator) -> None:
    """Every timestamp in `status --json` (health and last_runs) says it is UTC."""
    from datetime import datetime

    sim = make_simulator(tasks=3, events_per_task=2, seed=85)
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }
    assert run_archiver("sync", "--max-runtime", "5m", env=env).returncode == 0
    done = run_archiver("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    found = timestamps_in(report)
    run = report["last_runs"][0]
    assert {run["started_at"], run["finished_at"], report["health"]["now"]} <= set(found)
    naive = [t for t in found if datetime.fromisoformat(t).utcoffset() is None]
    assert not naive, naive


def test_max_runtime_takes_units(make_simulator, tmp_path: Path) -> None:
    """`sync --max-runtime 5m` runs a full pass (5 minutes, not 5 seconds, not an error)."""
    sim = make_simulator(tasks=4, events_per_task=2, seed=86)
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
    }
    for value in ("5m", "300", "1h", "90s"):
        done = run_archiver("sync", "--max-runtime", value, "-q", env=env)
        assert done.returncode == 0, (value, done.stderr)
    status = json.loads(run_archiver("status", "--json", env=env).stdout)
    assert status["tasks"] == 4 and [r["outcome"] for r in status["last_runs"]] == ["ok"] * 4


BAD_OPTIONS = [
    (("sync", "--concurrency", "0"), "--concurrency", "0"),
    (("sync", "--concurrency", "many"), "--concurrency", "many"),
    (("sync", "--max-runtime", "soon"), "--max-runtime", "soon"),
    (("sync", "--max-runtime", "0"), "--max-runtime", "0"),
    (("sync", "--rate-limit", "-1"), "--rate-limit", "-1"),
    (("backfill", "--rate-limit", "fast"), "--rate-limit", "fast"),
    (("sync", "--wait-lock", "-3"), "--wait-lock", "-3"),
    (("status", "--max-age", "soon"), "--max-age", "soon"),
    (("status", "--command", "nightly"), "--command", "nightly"),
    (("report", "credits", "--by", "year"), "--by", "year"),
    (("report", "top", "--limit", "0"), "--limit", "0"),
    (("demo", "--tasks", "0"), "--tasks", "0"),
]


@pytest.mark.parametrize(
    ("args", "option", "value"), BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS]
)
def test_bad_option_values_are_one_line_in_the_projects_words(
    args: tuple[str, ...], option: str, value: str, tmp_path: Path
) -> None:
    """A bad option value: one `archiver: error:` line naming option and value, exit 2."""
    done = run_archiver(
        *args,
        env={
            "CIRCLEMIND_API_KEY": TEST_API_KEY,
            "ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        },
    )
    assert done.returncode == 2
    line = one_error_line(done)
    assert option in line and value in line
    for click_wording in ("Invalid value", "is not a valid", "Usage:", "float range"):
        assert click_wording not in done.stdout + done.stderr
    assert not (tmp_path / "a.db").exists()
