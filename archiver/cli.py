"""The ``archiver`` command line. Each command parses options, opens the database and
calls the library; the work itself lives in :mod:`archiver.engine` and :mod:`archiver.db`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from archiver import db as q
from archiver.config import (
    DEFAULT_API_URL,
    DEFAULT_CONCURRENCY,
    ENV_API_URL,
    ENV_DATABASE_URL,
    ClientConfig,
    SyncOptions,
    api_key_from_env,
    default_database_url,
    validate_api_url,
)
from archiver.engine import RunResult, run_command
from archiver.exceptions import ArchiverError, ConfigError
from archiver.logs import setup_logging
from archiver.progress import make_progress

log = logging.getLogger("archiver")
F = TypeVar("F", bound=Callable[..., Any])


def _fail(exc: ArchiverError) -> None:
    click.echo(f"archiver: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar=ENV_DATABASE_URL,
        default=None,
        help=f"SQLAlchemy URL of the archive [env {ENV_DATABASE_URL}; default: a SQLite "
        "file in ARCHIVER_HOME].",
    )(fn)


def logging_options(fn: F) -> F:
    fn = click.option("-v", "--verbose", count=True, help="More detail (-vv: every request).")(fn)
    return click.option("-q", "--quiet", is_flag=True, help="Only warnings and the summary.")(fn)


def api_options(fn: F) -> F:
    fn = click.option(
        "--api-url",
        envvar=ENV_API_URL,
        default=DEFAULT_API_URL,
        show_default=True,
        help=f"Smooth API base URL [env {ENV_API_URL}].",
    )(fn)
    fn = click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=DEFAULT_CONCURRENCY,
        show_default=True,
        help="Task requests in flight at once.",
    )(fn)
    return click.option(
        "--wait-lock",
        type=click.FloatRange(min=0),
        default=0.0,
        metavar="SECONDS",
        help="Wait this long for another run of the same command instead of exiting 75.",
    )(fn)


def open_database(database_url: str | None) -> q.Database:
    database = q.Database(database_url or default_database_url())
    database.prepare()
    return database


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smooth-archiver")
def cli() -> None:
    """Archive Smooth (smooth.sh) tasks, events and credits into SQL.

    \b
    Example:
        export CIRCLEMIND_API_KEY=...
        archiver sync            # from cron, every few minutes
    """


def _client_config(api_url: str, concurrency: int) -> ClientConfig:
    return ClientConfig(
        api_url=validate_api_url(api_url),
        api_key=api_key_from_env(),
        max_connections=concurrency,
    )


def _finish(result: RunResult) -> None:
    click.echo(result.summary(), err=True)
    if result.message and result.outcome == "failed":
        click.echo(f"archiver: error: {result.message}", err=True)
    sys.exit(result.exit_code)


@cli.command()
@api_options
@database_option
@click.option(
    "--task",
    "task_ids",
    multiple=True,
    metavar="ID",
    help="Only these tasks (repeatable); tracked from now on if new.",
)
@click.option("--no-discover", is_flag=True, help="Do not look for new tasks; poll known ones.")
@click.option(
    "--max-runtime",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Start no new work after this long; finish what is in flight and exit 0.",
)
@logging_options
def sync(
    api_url: str,
    concurrency: int,
    wait_lock: float,
    database_url: str | None,
    task_ids: tuple[str, ...],
    no_discover: bool,
    max_runtime: float | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Run one incremental pass: discover new tasks, store new events, then exit.

    \b
    Example (crontab, every 5 minutes):
        */5 * * * * CIRCLEMIND_API_KEY=... archiver sync -q
    """
    try:
        client_config = _client_config(api_url, concurrency)
        setup_logging(verbose=verbose, quiet=quiet, secrets=[client_config.api_key.reveal()])
        options = SyncOptions(
            concurrency=concurrency,
            discover=not no_discover,
            task_ids=task_ids,
            max_runtime_s=max_runtime,
        )
        database = open_database(database_url)
        result = run_command(
            "sync",
            database,
            client_config,
            options,
            wait_lock_s=wait_lock,
            progress=make_progress("sync", enabled=not quiet and len(task_ids) != 1),
        )
    except ArchiverError as exc:
        _fail(exc)
    _finish(result)


def read_ids(lines: Iterable[str]) -> list[str]:
    """Task ids from a file: one per line, blank lines and ``#`` comments ignored."""
    ids = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            ids.append(text)
    return ids


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r} is not a date: use YYYY-MM-DD or an ISO 8601 timestamp "
            "such as 2026-01-31T12:00:00Z."
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@api_options
@database_option
@click.option("--since", metavar="DATE", help="Only tasks created on or after DATE (UTC).")
@click.option(
    "--ids-file",
    type=click.File("r"),
    metavar="PATH",
    help="Read task ids from PATH instead of listing ('-' for stdin).",
)
@logging_options
def backfill(
    api_url: str,
    concurrency: int,
    wait_lock: float,
    database_url: str | None,
    since: str | None,
    ids_file: Any,
    verbose: int,
    quiet: bool,
) -> None:
    """Import history: every task (or those in --ids-file) with all its events.

    Interrupted, it continues where it stopped when run again. It may run beside
    cron's `sync`: the two never work on the same task at the same time.

    \b
    Example:
        archiver backfill --since 2026-01-01 --concurrency 32
        grep -v '^#' ids.txt | archiver backfill --ids-file -
    """
    try:
        client_config = _client_config(api_url, concurrency)
        setup_logging(verbose=verbose, quiet=quiet, secrets=[client_config.api_key.reveal()])
        since_dt = parse_since(since)
        ids = read_ids(ids_file) if ids_file is not None else None
        database = open_database(database_url)
        result = run_command(
            "backfill",
            database,
            client_config,
            SyncOptions(concurrency=concurrency),
            wait_lock_s=wait_lock,
            since=since_dt,
            ids=ids,
            progress=make_progress("backfill", enabled=not quiet),
        )
    except ArchiverError as exc:
        _fail(exc)
    _finish(result)


@cli.group("db")
def db_group() -> None:
    """Schema migrations (Alembic).

    \b
    Example:
        archiver db upgrade && archiver db current
    """


@db_group.command("upgrade")
@database_option
def db_upgrade(database_url: str | None) -> None:
    """Upgrade the archive's schema to the newest revision.

    \b
    Example:
        ARCHIVER_DATABASE_URL=postgresql://postgres@127.0.0.1/archive archiver db upgrade
    """
    try:
        database = q.Database(database_url or default_database_url())
        before = q.current_revision(database.engine)
        q.upgrade(database.engine)
        after = q.current_revision(database.engine)
    except ArchiverError as exc:
        _fail(exc)
    click.echo(f"{database.display_url()}: {before or '(empty)'} -> {after}")


@db_group.command("current")
@database_option
def db_current(database_url: str | None) -> None:
    """Print the schema revision of the archive and the newest one this version knows.

    \b
    Example:
        archiver db current
    """
    try:
        database = q.Database(database_url or default_database_url())
        current = q.current_revision(database.engine)
    except ArchiverError as exc:
        _fail(exc)
    head = q.head_revision()
    state = "up to date" if current == head else "behind: run `archiver db upgrade`"
    click.echo(f"{database.display_url()}: {current or '(empty)'} (head {head}, {state})")


@cli.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(database_url: str | None, as_json: bool) -> None:
    """Show what the archive holds and how the last runs went.

    \b
    Example:
        archiver status --json | jq .tasks_by_status
    """
    try:
        database = open_database(database_url)
        with database.transaction() as conn:
            report = q.status_report(conn)
    except ArchiverError as exc:
        _fail(exc)
    report = {"database": database.display_url(), **report}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"database:  {report['database']}")
    click.echo(
        f"tasks:     {report['tasks']} ({report['active']} active, "
        f"{report['finalized']} finalized, {report['gone']} gone, "
        f"{report['in_error_backoff']} in error back-off)"
    )
    for name, count in report["tasks_by_status"].items():
        click.echo(f"  {name:<12} {count}")
    click.echo(f"events:    {report['events']}")
    click.echo("last runs:")
    for run in report["last_runs"]:
        click.echo(
            f"  {run['started_at']}  {run['command']:<8} {run['outcome']:<11} "
            f"polled {run['tasks_polled']}, events +{run['events_inserted']}, "
            f"errors {run['errors']}"
        )


@cli.command()
@database_option
@click.option(
    "--tasks",
    "n_tasks",
    type=click.IntRange(1, 500),
    default=12,
    show_default=True,
    help="Tasks in the simulated account.",
)
def demo(database_url: str | None, n_tasks: int) -> None:
    """Archive a simulated Smooth account into a fresh local database (no API key needed).

    \b
    Example:
        archiver demo --tasks 20
    """
    from archiver.demo import run_demo

    try:
        run_demo(database_url, n_tasks=n_tasks, echo=click.echo)
    except ArchiverError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry point alias
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
