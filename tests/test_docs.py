"""The docs are true: analysts' queries run on both databases, every column, flag,
environment variable and exit code is documented, the SQLite-to-PostgreSQL recipe works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import func, select

from archiver import config
from archiver.cli import cli
from archiver.db import Database
from archiver.schema import metadata, sync_runs, task_events, tasks
from tests.seed import seed_archive

ROOT = Path(__file__).resolve().parents[1]
ANALYSTS = ROOT / "docs" / "analysts.md"
OPERATIONS = ROOT / "docs" / "operations.md"
README = ROOT / "README.md"
VIEWS = ("credits_by_day", "task_summary", "event_counts")
EXIT_CODES = ("0", "1", "2", "3", "75", "130", "143")


def fenced(path: Path, language: str) -> list[str]:
    """The contents of the ```language blocks of a Markdown file, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(), flags=re.M | re.S)


def run_raw(db: Database, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run SQL exactly as written through the driver (no SQLAlchemy parameter parsing)."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(sql)
        names = [d[0] for d in cursor.description]
        rows = [tuple(r) for r in cursor.fetchall()]
        cursor.close()
        raw.rollback()
        return names, rows
    finally:
        raw.close()


def test_analysts_ten_example_queries_run_on_both_databases(
    database: Database, make_simulator
) -> None:
    """Each of the ten ```sql queries in docs/analysts.md runs as written and finds rows."""
    queries = fenced(ANALYSTS, "sql")
    assert len(queries) == 10
    seed_archive(database, make_simulator)
    for number, sql in enumerate(queries, 1):
        names, rows = run_raw(database, sql)
        assert names and rows, f"query {number} returned nothing on {database.dialect}"


def test_analysts_doc_documents_every_column_of_views_and_tables(tmp_path: Path) -> None:
    """Every view column (as the database reports it) and every table column is named in
    docs/analysts.md, each view's columns inside its own section."""
    text = ANALYSTS.read_text()
    db = Database(f"sqlite:///{tmp_path}/a.db")
    db.prepare()
    for view in VIEWS:
        names, _ = run_raw(db, f"SELECT * FROM {view} LIMIT 0")
        section = text.split(f"### `{view}`", 1)[1].split("\n### ", 1)[0]
        missing = [n for n in names if f"`{n}`" not in section]
        assert not missing, f"{view}: undocumented columns {missing}"
    internal = {"sync_state", "locks"}
    for table in metadata.sorted_tables:
        if table.name in internal:
            assert f"`{table.name}`" in text
            continue
        section = text.split(f"### `{table.name}`", 1)[1].split("\n### ", 1)[0]
        missing = [c.name for c in table.columns if f"`{c.name}`" not in section]
        assert not missing, f"{table.name}: undocumented columns {missing}"
    db.dispose()


def _commands(group: click.Group, prefix: str = "archiver") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def test_operations_doc_covers_every_flag_env_var_and_exit_code() -> None:
    """docs/operations.md names every command, long flag and environment variable of the
    CLI; it and the README list every exit code, including status's 3."""
    text = OPERATIONS.read_text()
    for path, command in _commands(cli):
        assert f"`{path}" in text, f"{path} is not documented"
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in text, f"{path} {flag} is not documented"
            envvars = param.envvar if isinstance(param.envvar, list) else [param.envvar]
            for envvar in filter(None, envvars):
                assert f"`{envvar}`" in text, f"{envvar} is not documented"
    for name in dir(config):
        if name.startswith("ENV_"):
            assert f"`{getattr(config, name)}`" in text, f"{name} is not documented"
    for doc in (text, README.read_text()):
        table = doc.split("Exit codes", 1)[1]
        codes = set(re.findall(r"^\| (\d+(?: / \d+)?) \|", table, flags=re.M))
        flat = {c for entry in codes for c in entry.split(" / ")}
        assert set(EXIT_CODES) <= flat, f"exit codes missing: {set(EXIT_CODES) - flat}"


def test_sqlite_to_postgres_recipe_copies_everything(
    tmp_path: Path, postgres_url: str, make_simulator
) -> None:
    """The copy script in docs/operations.md moves a seeded SQLite archive to PostgreSQL
    with the same rows, and sync then keeps working there."""
    (script,) = [b for b in fenced(OPERATIONS, "python") if "copy_to_postgres" in b]
    source = Database(f"sqlite:///{tmp_path}/src.db")
    source.prepare()
    seed_archive(source, make_simulator, tasks_n=6)
    path = tmp_path / "copy_to_postgres.py"
    path.write_text(script)
    env = {
        **os.environ,
        "SOURCE_URL": source.url,
        "TARGET_URL": postgres_url,
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    target = Database(postgres_url)

    def counts(db: Database) -> list[int]:
        with db.transaction() as conn:
            return [
                conn.scalar(select(func.count()).select_from(t)) or 0
                for t in (tasks, task_events, sync_runs)
            ]

    assert counts(target) == counts(source)
    _, src_rows = run_raw(source, "SELECT day, credits_used FROM credits_by_day")
    _, dst_rows = run_raw(target, "SELECT CAST(day AS TEXT), credits_used FROM credits_by_day")
    assert sorted(src_rows, key=repr) == sorted(dst_rows, key=repr)
    # New rows get fresh ids: the sequences were moved past the copied ones.
    seed_more = make_simulator(tasks=3, seed=99, start=1_800_000_000)
    seed_more.finish_all()
    from archiver.config import SyncOptions
    from archiver.engine import run_command
    from tests.conftest import client_config

    result = run_command("sync", target, client_config(seed_more), SyncOptions())
    assert result.exit_code == 0, result.errors
    source.dispose()
    target.dispose()


@pytest.mark.parametrize("doc", [ANALYSTS, OPERATIONS])
def test_readme_links_the_docs(doc: Path) -> None:
    """The README points analysts and operators to their page."""
    assert f"docs/{doc.name}" in README.read_text()
