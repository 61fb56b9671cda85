"""``archiver demo``: the whole job against the built-in simulator, no API key needed.

The demo never reads the archiver's environment (database, API URL, key, blob root, home):
it always builds a fresh archive in a new folder, so running it beside a real archive
cannot touch that archive.

What it shows: a week of tasks (so the costs chart has a shape), archived by three `sync`
passes with ``--downloads`` (real, playable WebM recordings and zips of a few files, in a
blob folder beside the database), the confirming read that finalizes a task seen running,
and one task still running at the end, as in any live archive.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from archiver.config import ApiKey, ClientConfig, SyncOptions
from archiver.engine import SyncPass, run_command
from archiver.exceptions import ConfigError
from archiver.models import TERMINAL_STATUSES
from archiver.simulator import Simulator, SimulatorConfig
from archiver.store.database import Database
from archiver.store.status import task_overview

DEMO_KEY = "demo-key"
DEMO_SECONDS_BETWEEN_PASSES = 900.0
DEMO_DATABASE = "demo.db"
DEMO_BLOBS = "blobs"
#: The simulated account's tasks are spread over this long (the costs chart's days).
DEMO_SPAN_S = 6 * 86_400.0
#: Where the newest task is in its run at the last pass (a fraction): still running.
DEMO_NEWEST_PROGRESS = 0.5


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


def archiver_command() -> str:
    """How to run this very ``archiver`` from a shell: ``archiver`` when that name on PATH
    is this program, else its absolute path (a venv that is not activated), else
    ``python -m archiver``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "archiver" and argv0.is_file():
        on_path = shutil.which("archiver")
        if on_path is not None and Path(on_path).samefile(argv0):
            return "archiver"
        return shlex.quote(str(argv0.absolute()))
    return f"{shlex.quote(sys.executable)} -m archiver"


def demo_config(n_tasks: int) -> SimulatorConfig:
    """The simulated account: ``n_tasks`` tasks over :data:`DEMO_SPAN_S`, with playable
    recordings. The first pass finds the second-newest task just created; the newest one
    appears only before the last pass."""
    spacing = DEMO_SPAN_S / max(n_tasks - 1, 1)
    return SimulatorConfig(
        seed=7,
        tasks=n_tasks,
        events_per_task=8,
        spacing_s=spacing,
        initial_time=SimulatorConfig.start + max(n_tasks - 2, 0) * spacing,
        api_key=DEMO_KEY,
        recording_rate=0.9,
        playable_recordings=True,
    )


def run_demo(folder: Path | None, *, n_tasks: int, echo: Callable[[str], None]) -> str:
    """Three `sync --downloads` passes a quarter of an hour apart (simulated), the last
    one after the newest task started; returns the database URL."""
    where = demo_folder(folder)
    database_url = f"sqlite:///{where / DEMO_DATABASE}"
    database = Database(database_url)
    database.prepare()
    config = demo_config(n_tasks)
    # Every setting is explicit: a default here (e.g. the blob root) would come from the
    # environment, which may point at a real archive.
    options = SyncOptions(concurrency=4, downloads=True, blob_url=str(where / DEMO_BLOBS))
    with Simulator(config) as sim:
        client_config = ClientConfig(api_url=sim.base_url, api_key=ApiKey(DEMO_KEY))
        echo(f"Simulated Smooth API at {sim.base_url} with {n_tasks} tasks over 6 days.")
        for number in (1, 2, 3):
            if number == 3:
                newest = sim.scenario.tasks[-1]
                halfway = newest.run_start + (newest.end - newest.run_start) * DEMO_NEWEST_PROGRESS
                sim.set_time(max(sim.now(), halfway))
            result = run_command(SyncPass(), database, client_config, options)
            echo(f"pass {number}: {result.summary()}")
            sim.advance(DEMO_SECONDS_BETWEEN_PASSES)
    _print_archive(database, echo)
    database.dispose()
    command = archiver_command()
    echo(f"\nArchive: {where / DEMO_DATABASE} (a new folder; nothing else was changed)")
    echo(f"Blobs:   {where / DEMO_BLOBS} (recordings and downloads archives)")
    echo(f"Report:  {command} report credits --database-url {database_url}")
    if shutil.which("sqlite3"):
        echo(
            f"Query:   sqlite3 {where / DEMO_DATABASE} 'select status, count(*), "
            "sum(credits_used) from tasks group by status'"
        )
    echo(f"Browse:  {command} serve --database-url {database_url}")
    return database_url


def finalized_note(row: Any) -> str:
    """The table's last column: ``yes``, or why the task is not final yet."""
    if row.finalized:
        return "yes"
    if row.status not in TERMINAL_STATUSES:
        return "no: still running"
    if row.error_count:
        return "no: its last read failed"
    if "pending" in (row.recording, row.downloads):
        return "no: waiting on artifacts"
    return "no: confirming read due"


def _print_archive(database: Database, echo: Callable[[str], None]) -> None:
    with database.reading() as conn:
        rows, events = task_overview(conn)
    echo(
        f"\n{'task':<18} {'status':<10} {'device':<11} {'created (UTC)':<17} {'credits':>7} "
        f"{'events':>6}  {'recording':<9} {'downloads':<9} finalized"
    )
    for row in rows:
        created = row.created_at_utc.strftime("%Y-%m-%d %H:%M") if row.created_at_utc else "-"
        echo(
            f"{row.id:<18} {row.status or '-':<10} {row.device or '-':<11} {created:<17} "
            f"{row.credits_used if row.credits_used is not None else '-':>7} "
            f"{row.event_count:>6}  {row.recording or '-':<9} {row.downloads or '-':<9} "
            f"{finalized_note(row)}"
        )
    echo(f"{len(rows)} tasks, {events} events archived.")
    if any(not row.finalized for row in rows):
        echo(
            "Not final yet: the next `archiver sync` polls a running task again, and a task "
            "seen running is finalized only by a confirming read on a later pass (its "
            "credits and links may still settle)."
        )
