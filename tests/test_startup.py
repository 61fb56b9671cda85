"""Start-up: a steady `sync` imports only what it uses, and the cheap schema check agrees
with Alembic's own machinery (timings are in benchmarks/startup.py, never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from archiver.store.database import Database
from archiver.store.migrations import alembic_config, current_revision, head_revision, upgrade
from tests.conftest import TEST_API_KEY, assert_matches_truth, run_archiver

#: Packages a plain `sync` (no --downloads, --metrics-file, --rate-limit, bar) leaves alone.
LAZY = {"alembic", "fsspec", "prometheus_client", "tqdm", "aiolimiter"}


def imported_modules(stderr: str) -> set[str]:
    """Modules named in ``python -X importtime`` output."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }


def imported_packages(stderr: str) -> set[str]:
    """Top-level packages named in ``python -X importtime`` output."""
    return {name.split(".")[0] for name in imported_modules(stderr)}


def test_schema_check_agrees_with_alembic(database: Database) -> None:
    """head_revision and current_revision give Alembic's answers at head, mid-chain and base."""
    script = ScriptDirectory.from_config(alembic_config(None))  # type: ignore[arg-type]
    assert head_revision() == script.get_current_head()
    for target in ("0004", "base", "head"):
        if target == "head":
            upgrade(database.engine)
        else:
            with database.engine.begin() as conn:
                command.downgrade(alembic_config(conn), target)
        with database.engine.connect() as conn:
            expected = MigrationContext.configure(conn).get_current_revision()
        assert current_revision(database.engine) == expected
        assert (expected is None) == (target == "base")


def test_sync_imports_only_what_it_uses(database_url: str, make_simulator, tmp_path: Path) -> None:
    """A sync over an archive at head imports neither Alembic, fsspec, Prometheus, tqdm nor
    the artifacts package; --metrics-file does import prometheus_client and --downloads
    the artifacts package (the check sees imports)."""
    sim = make_simulator(tasks=4, events_per_task=3, seed=41)
    sim.finish_all()
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    assert run_archiver("db", "upgrade", env=env).returncode == 0
    done = run_archiver("sync", "-q", env=env)
    assert done.returncode == 0, done.stderr
    assert imported_packages(done.stderr) & LAZY == set()
    assert "archiver.artifacts" not in imported_modules(done.stderr)
    assert_matches_truth(Database(database_url), sim)
    downloads = run_archiver(
        "sync", "-q", "--downloads", env={**env, "ARCHIVER_HOME": str(tmp_path)}
    )
    assert downloads.returncode == 0, downloads.stderr
    assert "archiver.artifacts" in imported_modules(downloads.stderr)
    metrics = run_archiver("sync", "-q", "--metrics-file", str(tmp_path / "a.prom"), env=env)
    assert metrics.returncode == 0, metrics.stderr
    assert "prometheus_client" in imported_packages(metrics.stderr)


def test_status_and_report_import_no_http_stack(database_url: str) -> None:
    """The read-only commands never import aiohttp (nor Alembic): they send no request."""
    env = {"ARCHIVER_DATABASE_URL": database_url, "PYTHONPROFILEIMPORTTIME": "1"}
    assert run_archiver("db", "upgrade", env=env).returncode == 0
    for args in (["status", "--json"], ["report", "credits"]):
        done = run_archiver(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert imported_packages(done.stderr) & {"aiohttp", "httpx_aiohttp", "alembic"} == set()


def test_head_revision_falls_back_to_alembic_on_a_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two heads (a branch the regex cannot settle) are left to Alembic, which names both."""
    import shutil

    from archiver.store import migrations

    versions = tmp_path / "migrations" / "versions"
    shutil.copytree(migrations.migrations_location(), tmp_path / "migrations")
    (versions / "0007_x.py").write_text('revision = "x"\ndown_revision = "0005"\n')
    monkeypatch.setattr(migrations, "migrations_location", lambda: str(tmp_path / "migrations"))
    migrations.head_revision.cache_clear()
    try:
        with pytest.raises(Exception, match="head"):
            migrations.head_revision()
    finally:
        migrations.head_revision.cache_clear()
