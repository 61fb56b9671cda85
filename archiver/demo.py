"""``archiver demo``: the whole job against the built-in simulator, no API key needed.

The demo never reads the archiver's environment (database, API URL, key, blob root, home):
it always builds a fresh archive in a new folder, so running it beside a real archive
cannot touch that archive.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.exceptions import ConfigError
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.database import Database
from archiver.store.status import task_overview

DEMO_KEY = "demo-key"
DEMO_SECONDS_BETWEEN_PASSES = 900.0
DEMO_DATABASE = "demo.db"


def demo_folder(folder: Path | None) -> Path:
    """A new temporary folder, or ``folder`` if it is new or empty (created owner-only)."""
    if folder is None:
        return Path(tempfile.mkdtemp(prefix="archiver-demo-"))
    folder = folder.expanduser().absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(
            f"demo folder {str(folder)!r} is not a new or empty folder: the demo only builds "
            "a fresh archive; give a path that does not exist yet, or leave --dir out."
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def run_demo(folder: Path | None, *, n_tasks: int, echo: Callable[[str], None]) -> str:
    """Two `sync` passes a quarter of an hour apart (simulated); returns the database URL."""
    where = demo_folder(folder)
    database_url = f"sqlite:///{where / DEMO_DATABASE}"
    database = Database(database_url)
    database.prepare()
    config = SimulatorConfig(seed=7, tasks=n_tasks, events_per_task=6, api_key=DEMO_KEY)
    # Every setting is explicit: a default here (e.g. the blob root) would come from the
    # environment, which may point at a real archive.
    options = SyncOptions(concurrency=4, blob_url=str(where / "blobs"))
    with Simulator(config) as sim:
        client_config = ClientConfig(api_url=sim.base_url, api_key=ApiKey(DEMO_KEY))
        echo(f"Simulated Smooth API at {sim.base_url} with {n_tasks} tasks.")
        for number in (1, 2):
            result = run_command(SyncPass(), database, client_config, options)
            echo(f"pass {number}: {result.summary()}")
            sim.advance(DEMO_SECONDS_BETWEEN_PASSES)
    _print_archive(database, echo)
    echo(f"\nArchive: {where / DEMO_DATABASE} (a new folder; nothing else was changed)")
    echo(
        f"Try:     sqlite3 {where / DEMO_DATABASE} 'select status, count(*), "
        "sum(credits_used) from tasks group by status'"
    )
    echo(f"Browse:  archiver serve --database-url {database_url}")
    database.dispose()
    return database_url


def _print_archive(database: Database, echo: Callable[[str], None]) -> None:
    with database.reading() as conn:
        rows, events = task_overview(conn)
    echo(f"\n{'task':<18} {'status':<10} {'device':<11} {'credits':>7} {'events':>6}  finalized")
    for row in rows:
        echo(
            f"{row.id:<18} {row.status or '-':<10} {row.device or '-':<11} "
            f"{row.credits_used if row.credits_used is not None else '-':>7} "
            f"{row.event_count:>6}  {'yes' if row.finalized else 'no'}"
        )
    echo(f"{len(rows)} tasks, {events} events archived.")
