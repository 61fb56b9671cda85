"""Operator safety (issue 8): the demo never touches a real archive, read-only commands
never create or change one, broken or read-only files give one clear line, and option
errors are in the project's words. Each test drives the real `archiver` command."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from archiver.db import normalize_database_url
from archiver.schema import metadata
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
