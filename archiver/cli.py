"""The ``archiver`` command line. Each command parses options, opens the database and
calls the library; the work itself lives in :mod:`archiver.engine` and :mod:`archiver.db`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from archiver import db as q
from archiver import logs, metrics
from archiver import report as reports
from archiver.artifacts import artifact_status
from archiver.blobs import BlobStore
from archiver.config import (
    DEFAULT_API_URL,
    DEFAULT_ARTIFACT_GRACE_S,
    DEFAULT_CONCURRENCY,
    DEFAULT_DOWNLOADS,
    DEFAULT_MAX_ARTIFACT_BYTES,
    ENV_API_URL,
    ENV_ARTIFACT_GRACE,
    ENV_BLOB_URL,
    ENV_DATABASE_URL,
    ENV_DOWNLOADS,
    ENV_LOG_FORMAT,
    ENV_MAX_ARTIFACT_SIZE,
    ENV_METRICS_FILE,
    ENV_RATE_LIMIT,
    ClientConfig,
    SyncOptions,
    api_key_from_env,
    default_blob_url,
    default_database_url,
    format_duration,
    format_size,
    parse_byte_size,
    parse_seconds,
    validate_api_url,
)
from archiver.engine import RunResult, run_command
from archiver.exceptions import ArchiverError, ConfigError
from archiver.logs import setup_logging
from archiver.progress import SYNC_PROGRESS_MIN_TASKS, make_progress

log = logging.getLogger("archiver")
F = TypeVar("F", bound=Callable[..., Any])


def _fail(exc: ArchiverError) -> None:
    logs.fatal(str(exc))  # "archiver: error: ..." (a JSON line with --log-format json)
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
    fn = click.option(
        "--log-format",
        type=click.Choice(logs.LOG_FORMATS),
        envvar=ENV_LOG_FORMAT,
        default=logs.DEFAULT_LOG_FORMAT,
        show_default=True,
        help=f"text lines, or one JSON object per line for log shippers [env {ENV_LOG_FORMAT}].",
    )(fn)
    fn = click.option("-v", "--verbose", count=True, help="Per-request lines; -vv: debug.")(fn)
    return click.option("-q", "--quiet", is_flag=True, help="Only warnings and the summary.")(fn)


def metrics_option(fn: F) -> F:
    return click.option(
        "--metrics-file",
        envvar=ENV_METRICS_FILE,
        metavar="PATH",
        help="Write Prometheus metrics here (atomically) at the end of the pass, for "
        f"node_exporter's textfile collector [env {ENV_METRICS_FILE}].",
    )(fn)


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
    fn = click.option(
        "--rate-limit",
        envvar=ENV_RATE_LIMIT,
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="PER_SECOND",
        expose_value=False,
        callback=_remember_client_option,
        help=f"At most this many API requests per second, shared by all concurrent "
        f"requests [env {ENV_RATE_LIMIT}; default: no limit].",
    )(fn)
    return click.option(
        "--wait-lock",
        type=click.FloatRange(min=0),
        default=0.0,
        metavar="SECONDS",
        help="Wait this long for another run of the same command instead of exiting 75.",
    )(fn)


_CLIENT_META = "archiver.client_options"


def _remember_client_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_CLIENT_META, {})[param.name] = value
    return value


_ARTIFACT_META = "archiver.artifact_options"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta.setdefault(_ARTIFACT_META, {})[param.name] = value
    return value


def artifact_options(fn: F) -> F:
    """--downloads, --blob-url, --artifact-grace, --max-artifact-size (read back with
    :func:`artifact_settings`, so the commands' signatures stay as they are)."""
    fn = click.option(
        "--max-artifact-size",
        envvar=ENV_MAX_ARTIFACT_SIZE,
        default=format_size(DEFAULT_MAX_ARTIFACT_BYTES).replace(" ", ""),
        show_default=True,
        metavar="SIZE",
        expose_value=False,
        callback=_remember,
        help="Largest artifact stored (e.g. 500MB, 5GiB), enforced while streaming; a "
        f"larger one is recorded as failed [env {ENV_MAX_ARTIFACT_SIZE}].",
    )(fn)
    fn = click.option(
        "--artifact-grace",
        envvar=ENV_ARTIFACT_GRACE,
        default=format_duration(DEFAULT_ARTIFACT_GRACE_S).replace(" ", ""),
        show_default=True,
        metavar="DURATION",
        expose_value=False,
        callback=_remember,
        help="How long a finished task's recording_url/downloads_url may stay null before "
        f"the artifact is recorded as failed (seconds, or 90m, 6h, 2d) [env {ENV_ARTIFACT_GRACE}].",
    )(fn)
    fn = click.option(
        "--blob-url",
        envvar=ENV_BLOB_URL,
        default=None,
        metavar="URL",
        expose_value=False,
        callback=_remember,
        help="Where artifacts go: a folder, file:///path, s3://bucket/prefix or gs://bucket/"
        f"prefix [env {ENV_BLOB_URL}; default: the blobs folder in ARCHIVER_HOME].",
    )(fn)
    return click.option(
        "--downloads/--no-downloads",
        envvar=ENV_DOWNLOADS,
        default=DEFAULT_DOWNLOADS,
        show_default=True,
        expose_value=False,
        callback=_remember,
        help="Copy each finished task's recording and downloads archive into blob storage "
        f"(the task is finalized once both are stored or settled) [env {ENV_DOWNLOADS}].",
    )(fn)


def artifact_settings(*, check_store: bool = True) -> dict[str, Any]:
    """The SyncOptions fields given by :func:`artifact_options`; with downloads on, the blob
    store is opened once here so a bad --blob-url fails before any work (exit 2)."""
    given = click.get_current_context().meta.get(_ARTIFACT_META, {})
    settings: dict[str, Any] = {
        "downloads": bool(given.get("downloads", DEFAULT_DOWNLOADS)),
        "blob_url": given.get("blob_url") or None,
    }
    if given.get("artifact_grace") is not None:
        settings["artifact_grace_s"] = parse_seconds(str(given["artifact_grace"]))
    if given.get("max_artifact_size") is not None:
        settings["max_artifact_bytes"] = parse_byte_size(str(given["max_artifact_size"]))
    if settings["downloads"] and check_store:
        BlobStore(settings["blob_url"] or default_blob_url())
    return settings


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
    ctx = click.get_current_context(silent=True)
    extra = ctx.meta.get(_CLIENT_META, {}) if ctx is not None else {}
    return ClientConfig(
        api_url=validate_api_url(api_url),
        api_key=api_key_from_env(),
        max_connections=concurrency,
        rate_limit=extra.get("rate_limit"),
    )


def _finish(
    result: RunResult, database: q.Database | None = None, metrics_path: Path | None = None
) -> None:
    logs.log_summary(result)
    if result.message and result.outcome == "failed":
        logs.fatal(result.message)
    code = result.exit_code
    if metrics_path is not None:
        try:
            metrics.write_metrics(metrics_path, result, database)
        except ArchiverError as exc:
            logs.fatal(str(exc))
            code = code or 1
    sys.exit(code)


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
@artifact_options
@metrics_option
@logging_options
def sync(
    api_url: str,
    concurrency: int,
    wait_lock: float,
    database_url: str | None,
    task_ids: tuple[str, ...],
    no_discover: bool,
    max_runtime: float | None,
    metrics_file: str | None,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Run one incremental pass: discover new tasks, store new events, then exit.

    \b
    Example (crontab, every 5 minutes):
        */5 * * * * CIRCLEMIND_API_KEY=... archiver sync -q
    """
    metrics_path: Path | None = None
    database: q.Database | None = None
    try:
        setup_logging(verbose=verbose, quiet=quiet, log_format=log_format)
        client_config = _client_config(api_url, concurrency)
        if metrics_file:
            metrics_path = metrics.validate_metrics_path(metrics_file)
        options = SyncOptions(
            concurrency=concurrency,
            discover=not no_discover,
            task_ids=task_ids,
            max_runtime_s=max_runtime,
            **artifact_settings(),
        )
        database = open_database(database_url)
        result = run_command(
            "sync",
            database,
            client_config,
            options,
            wait_lock_s=wait_lock,
            progress=make_progress(
                "sync",
                enabled=not quiet and len(task_ids) != 1,
                min_total=SYNC_PROGRESS_MIN_TASKS,
            ),
        )
    except ArchiverError as exc:
        _fail(exc)
    _finish(result, database, metrics_path)


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
@artifact_options
@metrics_option
@logging_options
def backfill(
    api_url: str,
    concurrency: int,
    wait_lock: float,
    database_url: str | None,
    since: str | None,
    ids_file: Any,
    metrics_file: str | None,
    verbose: int,
    quiet: bool,
    log_format: str,
) -> None:
    """Import history: every task (or those in --ids-file) with all its events.

    Interrupted, it continues where it stopped when run again. It may run beside
    cron's `sync`: the two never work on the same task at the same time.

    \b
    Example:
        archiver backfill --since 2026-01-01 --concurrency 32
        grep -v '^#' ids.txt | archiver backfill --ids-file -
    """
    metrics_path: Path | None = None
    database: q.Database | None = None
    try:
        setup_logging(verbose=verbose, quiet=quiet, log_format=log_format)
        client_config = _client_config(api_url, concurrency)
        if metrics_file:
            metrics_path = metrics.validate_metrics_path(metrics_file)
        since_dt = parse_since(since)
        ids = read_ids(ids_file) if ids_file is not None else None
        database = open_database(database_url)
        result = run_command(
            "backfill",
            database,
            client_config,
            SyncOptions(concurrency=concurrency, **artifact_settings()),
            wait_lock_s=wait_lock,
            since=since_dt,
            ids=ids,
            progress=make_progress("backfill", enabled=not quiet),
        )
    except ArchiverError as exc:
        _fail(exc)
    _finish(result, database, metrics_path)


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
@click.option(
    "--max-age",
    metavar="DURATION",
    help=f"Exit {metrics.EXIT_STALE} if the last successful pass ended longer ago than "
    "this (seconds, or 15m, 2h, 1d), or never happened: for monitoring.",
)
@click.option(
    "--command",
    "command_choice",
    type=click.Choice(["any", *metrics.COMMANDS]),
    default="any",
    show_default=True,
    help="Which passes count as the last success.",
)
def status(
    database_url: str | None, as_json: bool, max_age: str | None, command_choice: str
) -> None:
    """Show the archive's health, what it holds and how the last runs went.

    \b
    Example (monitoring: exit 3 unless a pass succeeded in the last 20 minutes):
        archiver status --max-age 20m
        archiver status --json | jq .tasks_by_status
    """
    try:
        max_age_td = metrics.parse_duration(max_age) if max_age else None
        database = open_database(database_url)
        with database.reading() as conn:
            report = q.status_report(conn)
            report.update(artifact_status(conn))
            health = metrics.read_health(conn, commands=metrics.commands_for(command_choice))
    except ArchiverError as exc:
        _fail(exc)
    stale = max_age_td is not None and health.is_stale(max_age_td)
    health_json = {
        **health.as_dict(),
        "max_age_s": max_age_td.total_seconds() if max_age_td else None,
        "stale": stale,
    }
    report = {"database": database.display_url(), "health": health_json, **report}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        if stale:
            sys.exit(metrics.EXIT_STALE)
        return
    for line in metrics.health_lines(health, max_age_td):
        click.echo(line)
    click.echo(f"database:  {report['database']}")
    click.echo(
        f"tasks:     {report['tasks']} ({report['active']} active, "
        f"{report['finalized']} finalized, {report['gone']} gone, "
        f"{report['in_error_backoff']} in error back-off)"
    )
    for name, count in report["tasks_by_status"].items():
        click.echo(f"  {name:<12} {count}")
    click.echo(f"events:    {report['events']}")
    states = report["artifacts_by_state"]
    click.echo(
        f"artifacts: {sum(states.values())} ("
        + ", ".join(f"{count} {state}" for state, count in states.items())
        + f"); {format_size(report['artifact_bytes_stored'])} stored"
    )
    click.echo("last runs:")
    for run in report["last_runs"]:
        click.echo(
            f"  {run['started_at']}  {run['command']:<8} {run['outcome']:<11} "
            f"polled {run['tasks_polled']}, events +{run['events_inserted']}, "
            f"errors {run['errors']}"
        )
    if stale:
        click.echo(
            f"archiver: stale: no successful pass within --max-age {max_age} "
            f"(last success: {health_json['last_success_at'] or 'never'})",
            err=True,
        )
        sys.exit(metrics.EXIT_STALE)


@cli.command()
@database_option
@click.option(
    "--task", "task_ids", multiple=True, metavar="ID", help="Only these tasks (repeatable)."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Fetch missing or corrupt blobs again, with fresh links from Get Task "
    "(needs CIRCLEMIND_API_KEY).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --repair: also retry artifacts recorded as failed (e.g. after raising "
    "--max-artifact-size).",
)
@click.option(
    "--blob-url",
    envvar=ENV_BLOB_URL,
    default=None,
    metavar="URL",
    help=f"The blob storage root [env {ENV_BLOB_URL}; default: the blobs folder in "
    "ARCHIVER_HOME]. Blobs recorded under another root are read where they are.",
)
@click.option(
    "--max-artifact-size",
    envvar=ENV_MAX_ARTIFACT_SIZE,
    default=format_size(DEFAULT_MAX_ARTIFACT_BYTES).replace(" ", ""),
    show_default=True,
    metavar="SIZE",
    help=f"With --repair: largest artifact fetched [env {ENV_MAX_ARTIFACT_SIZE}].",
)
@click.option(
    "--api-url",
    envvar=ENV_API_URL,
    default=DEFAULT_API_URL,
    show_default=True,
    help=f"With --repair: Smooth API base URL [env {ENV_API_URL}].",
)
def verify(
    database_url: str | None,
    task_ids: tuple[str, ...],
    repair: bool,
    retry_failed: bool,
    blob_url: str | None,
    max_artifact_size: str,
    api_url: str,
) -> None:
    """Re-read stored artifact blobs and check size and SHA-256 against the table.

    Missing and corrupt blobs are listed; the exit code is 1 if there are any. With
    --repair they are fetched again where the API still serves them, and the exit code
    is 1 only if some could not be repaired.

    \b
    Example:
        archiver verify
        archiver verify --task tsk_0a1b2c3d4e5f --repair
    """
    import asyncio

    from archiver.artifacts import repair_artifacts, verify_blobs
    from archiver.locks import RunLock

    try:
        if retry_failed and not repair:
            raise ConfigError("--retry-failed only works together with --repair.")
        client_config = _client_config(api_url, DEFAULT_CONCURRENCY) if repair else None
        options = SyncOptions(
            downloads=True,
            blob_url=blob_url,
            max_artifact_bytes=parse_byte_size(max_artifact_size),
        )
        store = BlobStore(blob_url or default_blob_url(), create=repair)
        database = open_database(database_url)
        checks, failed = verify_blobs(database, store, list(task_ids) or None)
    except ArchiverError as exc:
        _fail(exc)
    bad = [check for check in checks if check.problem]
    for check in bad:
        item = check.item
        click.echo(
            f"{check.problem:<8} {item.task_id} {item.kind:<9} {item.blob_url or '-'}: "
            f"{check.detail}"
        )
    missing = sum(1 for check in bad if check.problem == "missing")
    click.echo(
        f"verified {len(checks)} stored blob(s): {len(checks) - len(bad)} ok, {missing} "
        f"missing, {len(bad) - missing} corrupt"
        + (
            f"; {len(failed)} artifact(s) recorded as failed are not checked "
            "(see artifacts.last_error; --repair --retry-failed retries them)"
            if failed
            else ""
        )
    )
    todo = [check.item for check in bad] + (list(failed) if retry_failed else [])
    if not repair or not todo:
        sys.exit(1 if bad else 0)
    assert client_config is not None
    lock = RunLock(database, "verify")
    try:
        lock.acquire()
        with database.transaction() as conn:
            claimed = set(lock.claim(conn, sorted({item.task_id for item in todo})))
        outcome = asyncio.run(
            repair_artifacts(
                database,
                store,
                client_config,
                options,
                [item for item in todo if item.task_id in claimed],
                owner=lock.owner,
            )
        )
    except ArchiverError as exc:
        _fail(exc)
    finally:
        lock.release()
    unrepaired = 0
    for item in todo:
        error = outcome.get(
            (item.task_id, item.kind), "another run is working on this task; try again later"
        )
        if error is None:
            click.echo(f"repaired {item.task_id} {item.kind}")
        else:
            unrepaired += 1
            click.echo(f"not repaired {item.task_id} {item.kind}: {error}")
    click.echo(f"repaired {len(todo) - unrepaired} of {len(todo)}")
    sys.exit(1 if unrepaired else 0)


def _report_dates(since: str | None, until: str | None) -> tuple[Any, Any]:
    return (
        reports.parse_day(since, option="--since"),
        reports.parse_day(until, option="--until"),
    )


@cli.group("report")
def report_group() -> None:
    """What tasks cost: credits over time and the most expensive tasks.

    \b
    Example:
        archiver report credits --by week --group-by status
        archiver report top --limit 20
    """


def report_options(fn: F) -> F:
    fn = click.option(
        "--format",
        "fmt",
        type=click.Choice(reports.FORMATS),
        default="table",
        show_default=True,
        help="table (with totals and bars), csv or json.",
    )(fn)
    fn = click.option("--until", metavar="DATE", help="Tasks created on or before DATE (UTC).")(fn)
    return click.option("--since", metavar="DATE", help="Tasks created on or after DATE (UTC).")(fn)


@report_group.command("credits")
@database_option
@report_options
@click.option(
    "--by",
    type=click.Choice(reports.BY_CHOICES),
    default="day",
    show_default=True,
    help="One row per day, week (from Monday) or month.",
)
@click.option(
    "--group-by",
    type=click.Choice(reports.GROUP_CHOICES),
    multiple=True,
    help="Break each period down by status and/or device (repeatable).",
)
def report_credits(
    database_url: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    by: str,
    group_by: tuple[str, ...],
) -> None:
    """Tasks, credits and US$ per day, week or month (the credits_by_day view).

    \b
    Example:
        archiver report credits --since 2026-01-01 --by week --group-by device
        archiver report credits --by month --format csv > credits.csv
    """
    try:
        since_d, until_d = _report_dates(since, until)
        database = open_database(database_url)
        with database.reading() as conn:
            result = reports.credits_report(
                conn, since=since_d, until=until_d, by=by, group_by=group_by
            )
    except ArchiverError as exc:
        _fail(exc)
    click.echo(reports.render_credits(result, fmt), nl=False)


@report_group.command("top")
@database_option
@report_options
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=reports.DEFAULT_TOP_LIMIT,
    show_default=True,
    help="How many tasks.",
)
@click.option("--status", metavar="STATUS", help="Only tasks with this status (e.g. failed).")
def report_top(
    database_url: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    limit: int,
    status: str | None,
) -> None:
    """The most expensive tasks by credits_used (the task_summary view).

    \b
    Example:
        archiver report top --limit 20 --since 2026-01-01
        archiver report top --status failed --format json
    """
    try:
        since_d, until_d = _report_dates(since, until)
        database = open_database(database_url)
        with database.reading() as conn:
            tasks = reports.top_tasks(
                conn, limit=limit, since=since_d, until=until_d, status=status
            )
    except ArchiverError as exc:
        _fail(exc)
    click.echo(reports.render_top(tasks, fmt), nl=False)


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


@cli.command()
@database_option
@click.option(
    "--blob-url",
    envvar=ENV_BLOB_URL,
    default=None,
    metavar="URL",
    help="Read blobs under this root instead of the one recorded in artifacts.blob_url "
    f"(for blobs copied elsewhere) [env {ENV_BLOB_URL}; default: where recorded].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8377, show_default=True)
@click.option(
    "--max-age",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="/healthz answers 503 when the last successful pass ended longer ago than this.",
)
def serve(
    database_url: str | None, blob_url: str | None, host: str, port: int, max_age: str
) -> None:
    """Browse the archive in a web browser: tasks, events, recordings, costs, health.

    Read-only. Any --host other than loopback requires a token in ARCHIVER_SERVE_TOKEN
    (give it as the HTTP Basic password, any user name).

    \b
    Example:
        archiver serve                     # then open http://127.0.0.1:8377/
        ARCHIVER_SERVE_TOKEN=$(openssl rand -hex 24) archiver serve --host 0.0.0.0
    """
    from archiver.web import serve as run_server

    try:
        run_server(
            database_url=database_url or default_database_url(),
            blob_url=blob_url,
            host=host,
            port=port,
            max_age=max_age,
            echo=click.echo,
        )
    except ArchiverError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover - console entry point alias
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
