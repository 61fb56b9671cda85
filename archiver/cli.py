"""The ``archiver`` command line.

Each command receives its options as parameters, builds the config value objects of
:mod:`archiver.config` and calls one library function. A shared option group
(``api_options``, ``artifact_options``, ...) hands its command ONE value object
(``api: ApiSettings``, ``artifacts: ArtifactSettings``, ...) instead of one parameter per
flag. The work itself lives in :mod:`archiver.engine`, :mod:`archiver.store`,
:mod:`archiver.report` and friends. Every
:class:`~archiver.exceptions.ArchiverError` that escapes a command is turned into one
``archiver: error: ...`` line and its exit code by :class:`ArchiverGroup`, in one place.

Heavy libraries (the HTTP stack, SQLAlchemy, fsspec, Prometheus) are imported inside the
commands that use them, so ``--help`` and small commands start fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from archiver import config as cfg
from archiver import logs, stops
from archiver.exceptions import ArchiverError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from archiver.stats import RunResult
    from archiver.store.database import Database

F = TypeVar("F", bound=Callable[..., Any])
#: An option decorator, e.g. ``click.option(...)`` or an option group.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _fail(exc: ArchiverError) -> NoReturn:
    logs.fatal(str(exc))  # "archiver: error: ..." (a JSON line with --log-format json)
    sys.exit(exc.exit_code)


class ArchiverGroup(click.Group):
    """A click group that reports the archiver's own errors as one line and exit code,
    whether they come from parsing an option or from the work itself; a stop signal ends
    any command quietly with 130 or 143 (:mod:`archiver.stops`), never click's
    ``Aborted!`` and 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with stops.handling():
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArchiverError as exc:
            _fail(exc)
        except click.BadParameter as exc:
            # click's own checks (ranges, choices) in the same one-line form.
            _fail(ConfigError(_bad_parameter(exc)))


def _bad_parameter(exc: click.BadParameter) -> str:
    """``--by 'year' is not one of ...``: the option, the value and what is expected."""
    param, command = exc.param, exc.ctx.command_path if exc.ctx else "archiver"
    hint = exc.param_hint or (param.opts[0] if param is not None and param.opts else "value")
    if isinstance(hint, (list, tuple)):
        hint = " / ".join(hint)
    return f"{hint}: {exc.message.rstrip('.')}; see `{command} --help`."


# --- option types: values parsed by archiver.config, errors in the project's words -----


class _Parsed(click.ParamType):
    """An option value parsed by one of :mod:`archiver.config`'s parsers, which raise a
    ConfigError naming the option, the value and what is expected."""

    def __init__(self, name: str, parse: Callable[[str, str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        option = param.opts[0] if param is not None and param.opts else self.name
        return self._parse(value, option)


DURATION = _Parsed("duration", lambda v, o: cfg.parse_seconds(v, option=o, positive=True))
WAIT = _Parsed("duration", lambda v, o: cfg.parse_seconds(v, option=o))
SIZE = _Parsed("size", lambda v, o: cfg.parse_byte_size(v, option=o))
COUNT = _Parsed("count", lambda v, o: cfg.parse_count(v, option=o))
RATE = _Parsed("rate", lambda v, o: cfg.parse_rate(v, option=o))
DAY = _Parsed("date", lambda v, o: cfg.parse_day(v, option=o))
SINCE = _Parsed("date", lambda v, o: cfg.parse_since(v, option=o))
CREATED_AT = _Parsed("created_at", lambda v, o: cfg.parse_created_at(v, option=o))


# --- shared option groups: each hands its command ONE value object ---------------------


def _option_group(name: str, build: Callable[..., Any], *options: Decorator) -> Decorator:
    """Declare ``options`` (in --help order) on a command and hand the command one value
    object in their stead: ``name=build(**their values)``, the values keyed by the
    options' parameter names. ``build`` (a ``from_cli`` of :mod:`archiver.config`) must not
    fail: values are checked where the command uses them."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{key: kwargs.pop(key) for key in keys})
            return fn(*args, **kwargs)

        # click collects a command's options in __click_params__ (bottom-up): the ones
        # below this group stay as they are (in a list of the wrapper's own), this
        # group's follow them.
        below = list(getattr(fn, "__click_params__", []))
        command.__dict__["__click_params__"] = list(below)
        declared: Callable[..., Any] = command
        for option in reversed(options):
            declared = option(declared)
        keys = [param.name for param in declared.__dict__["__click_params__"][len(below) :]]
        return declared

    return decorate


def api_url_option(help_text: str = f"Smooth API base URL [env {cfg.ENV_API_URL}].") -> Decorator:
    return click.option(
        "--api-url",
        envvar=cfg.ENV_API_URL,
        default=cfg.DEFAULT_API_URL,
        show_default=True,
        help=help_text,
    )


def blob_url_option(help_text: str) -> Decorator:
    return click.option(
        "--blob-url", envvar=cfg.ENV_BLOB_URL, default=None, metavar="URL", help=help_text
    )


def max_artifact_size_option(help_text: str) -> Decorator:
    return click.option(
        "--max-artifact-size",
        envvar=cfg.ENV_MAX_ARTIFACT_SIZE,
        type=SIZE,
        default=cfg.format_size(cfg.DEFAULT_MAX_ARTIFACT_BYTES).replace(" ", ""),
        show_default=True,
        metavar="SIZE",
        help=help_text,
    )


#: ``db: DatabaseSettings``.
database_option = _option_group(
    "db",
    cfg.DatabaseSettings.from_cli,
    click.option(
        "--database-url",
        envvar=cfg.ENV_DATABASE_URL,
        default=None,
        help="SQLAlchemy URL of the archive, e.g. sqlite:////var/lib/archiver/archive.db "
        "(four slashes: an absolute path) or postgresql://archiver@db.example/archive "
        f"[env {cfg.ENV_DATABASE_URL}; default: a SQLite file in ARCHIVER_HOME].",
    ),
)

#: ``logging: LogSettings``.
logging_options = _option_group(
    "logging",
    cfg.LogSettings.from_cli,
    click.option("-q", "--quiet", is_flag=True, help="Only warnings and the summary."),
    click.option("-v", "--verbose", count=True, help="Per-request lines; -vv: debug."),
    click.option(
        "--log-format",
        type=click.Choice(logs.LOG_FORMATS),
        envvar=cfg.ENV_LOG_FORMAT,
        default=logs.DEFAULT_LOG_FORMAT,
        show_default=True,
        help="text lines, or one JSON object per line for log shippers "
        f"[env {cfg.ENV_LOG_FORMAT}].",
    ),
)

#: ``metrics: MetricsSettings``.
metrics_option = _option_group(
    "metrics",
    cfg.MetricsSettings.from_cli,
    click.option(
        "--metrics-file",
        envvar=cfg.ENV_METRICS_FILE,
        metavar="PATH",
        help="Write Prometheus metrics here (atomically) at the end of the pass, for "
        f"node_exporter's textfile collector [env {cfg.ENV_METRICS_FILE}].",
    ),
)

#: ``api: ApiSettings``: --wait-lock, --rate-limit, --concurrency, --api-url.
api_options = _option_group(
    "api",
    cfg.ApiSettings.from_cli,
    click.option(
        "--wait-lock",
        type=WAIT,
        default=cfg.DEFAULT_WAIT_LOCK_S,
        metavar="DURATION",
        help="Wait this long (seconds, or 30s, 5m) for another run of the same command "
        "instead of exiting 75.",
    ),
    click.option(
        "--rate-limit",
        envvar=cfg.ENV_RATE_LIMIT,
        type=RATE,
        default=None,
        metavar="PER_SECOND",
        help="At most this many API requests per second, shared by all concurrent "
        f"requests [env {cfg.ENV_RATE_LIMIT}; default: no limit].",
    ),
    click.option(
        "--concurrency",
        type=COUNT,
        default=cfg.DEFAULT_CONCURRENCY,
        show_default=True,
        help="Task requests in flight at once.",
    ),
    api_url_option(),
)

#: ``settle: SettleSettings``: --confirm-after, --fresh-within: when a terminal task is final.
settle_options = _option_group(
    "settle",
    cfg.SettleSettings.from_cli,
    click.option(
        "--confirm-after",
        envvar=cfg.ENV_CONFIRM_AFTER,
        type=WAIT,
        default="0",
        show_default=True,
        metavar="DURATION",
        help="How long after its first terminal read a fresh task's confirming read may "
        f"finalize it (0: the next pass; e.g. 10m) [env {cfg.ENV_CONFIRM_AFTER}].",
    ),
    click.option(
        "--fresh-within",
        envvar=cfg.ENV_FRESH_WITHIN,
        type=WAIT,
        default=cfg.format_duration(cfg.DEFAULT_FRESH_WITHIN_S).replace(" ", ""),
        show_default=True,
        metavar="DURATION",
        help="A terminal task created within this long, or seen running by the archiver, "
        "is finalized only after a confirming read on a later pass (credits and links may "
        f"still settle); older history is final at its first read [env {cfg.ENV_FRESH_WITHIN}].",
    ),
)

#: ``artifacts: ArtifactSettings``: --downloads, --blob-url, --artifact-grace,
#: --max-artifact-size.
artifact_options = _option_group(
    "artifacts",
    cfg.ArtifactSettings.from_cli,
    click.option(
        "--downloads/--no-downloads",
        envvar=cfg.ENV_DOWNLOADS,
        default=cfg.DEFAULT_DOWNLOADS,
        show_default=True,
        help="Copy each finished task's recording and downloads archive into blob storage "
        "(the task is finalized once both are stored or settled) "
        f"[env {cfg.ENV_DOWNLOADS}].",
    ),
    blob_url_option(
        "Where artifacts go: a folder, file:///path, s3://bucket/prefix or gs://bucket/"
        f"prefix [env {cfg.ENV_BLOB_URL}; default: the blobs folder in ARCHIVER_HOME]."
    ),
    click.option(
        "--artifact-grace",
        envvar=cfg.ENV_ARTIFACT_GRACE,
        type=WAIT,
        default=cfg.format_duration(cfg.DEFAULT_ARTIFACT_GRACE_S).replace(" ", ""),
        show_default=True,
        metavar="DURATION",
        help="How long a finished task's recording_url/downloads_url may stay null before "
        "the artifact is recorded as failed (seconds, or 90m, 6h, 2d) "
        f"[env {cfg.ENV_ARTIFACT_GRACE}].",
    ),
    max_artifact_size_option(
        "Largest artifact stored (e.g. 500MB, 5GiB), enforced while streaming; a "
        f"larger one is recorded as failed [env {cfg.ENV_MAX_ARTIFACT_SIZE}]."
    ),
)


def _check_blob_store(artifacts: cfg.ArtifactSettings) -> None:
    """With --downloads, the blob store is opened once here so a bad --blob-url fails
    before any work (exit 2)."""
    if artifacts.downloads:
        from archiver.blobs import BlobStore

        BlobStore(artifacts.blob_url or cfg.default_blob_url())


def open_database(db: cfg.DatabaseSettings, *, read_only: bool = False) -> Database:
    """The archive, migrated to head (``read_only``: as it is; never created or changed);
    a new one is announced, even with -q (a mistyped URL must not go unnoticed)."""
    from archiver.store.database import Database

    database = Database(db.url, read_only=read_only)
    database.prepare(on_new=lambda where: logs.notice(f"creating a new archive at {where}"))
    return database


def _finish(
    result: RunResult, database: Database | None = None, metrics_path: Path | None = None
) -> NoReturn:
    logs.log_summary(result)
    if result.message and result.outcome == "failed":
        logs.fatal(result.message)
    code = result.exit_code
    if metrics_path is not None:
        from archiver import metrics

        try:
            metrics.write_metrics(metrics_path, result, database)
        except ArchiverError as exc:
            logs.fatal(str(exc))
            code = code or 1
    sys.exit(code)


def _pass_setup(
    logging: cfg.LogSettings, metrics: cfg.MetricsSettings, api: cfg.ApiSettings
) -> tuple[Path | None, cfg.ClientConfig]:
    """Logging for a pass, then what is checked before any work, in this order: the
    metrics path and the API client's config (URL, key)."""
    logs.setup_logging(verbose=logging.verbose, quiet=logging.quiet, log_format=logging.log_format)
    metrics_path = None
    if metrics.file:
        from archiver.metrics import validate_metrics_path

        metrics_path = validate_metrics_path(metrics.file)
    return metrics_path, api.client_config()


@click.group(cls=ArchiverGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smooth-archiver")
def cli() -> None:
    """Archive Smooth (smooth.sh) tasks, events and credits into SQL.

    \b
    Example:
        export CIRCLEMIND_API_KEY=...
        archiver sync            # from cron, every few minutes
    """


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
    "--recheck-gone",
    is_flag=True,
    help="Ask the API again about every task recorded as gone (e.g. after fixing a wrong "
    "--api-url); those it still knows are polled as before.",
)
@click.option(
    "--max-runtime",
    type=DURATION,
    metavar="DURATION",
    help="Start no new work after this long (seconds, or 90s, 4m, 1h); finish what is in "
    "flight and exit 0.",
)
@settle_options
@artifact_options
@metrics_option
@logging_options
def sync(
    api: cfg.ApiSettings,
    db: cfg.DatabaseSettings,
    task_ids: tuple[str, ...],
    no_discover: bool,
    recheck_gone: bool,
    max_runtime: float | None,
    settle: cfg.SettleSettings,
    artifacts: cfg.ArtifactSettings,
    metrics: cfg.MetricsSettings,
    logging: cfg.LogSettings,
) -> None:
    """Run one incremental pass: discover new tasks, store new events, then exit.

    \b
    Example (crontab, every 5 minutes):
        */5 * * * * CIRCLEMIND_API_KEY=... archiver sync -q --max-runtime 4m
    """
    from archiver.engine import SyncPass, run_command
    from archiver.progress import SYNC_PROGRESS_MIN_TASKS, make_progress

    metrics_path, client = _pass_setup(logging, metrics, api)
    _check_blob_store(artifacts)
    options = cfg.SyncOptions.from_cli(
        api,
        settle,
        artifacts,
        task_ids=task_ids,
        discover=not no_discover,
        recheck_gone=recheck_gone,
        max_runtime_s=max_runtime,
    )
    database = open_database(db)
    progress = make_progress(
        "sync", enabled=not logging.quiet and len(task_ids) != 1, min_total=SYNC_PROGRESS_MIN_TASKS
    )
    # From here a stop belongs to the pass: recorded in its run, and one that comes after
    # the pass ended changes nothing (the exit code stays the run's).
    with stops.in_pass():
        result = run_command(
            SyncPass(), database, client, options, wait_lock_s=api.wait_lock_s, progress=progress
        )
        _finish(result, database, metrics_path)


def read_ids(lines: Iterable[str]) -> list[str]:
    """Task ids from a file: one per line, blank lines and ``#`` comments ignored."""
    ids = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text:
            ids.append(text)
    return ids


@cli.command()
@api_options
@database_option
@click.option(
    "--since", type=SINCE, metavar="DATE", help="Only tasks created on or after DATE (UTC)."
)
@click.option(
    "--ids-file",
    type=click.File("r"),
    metavar="PATH",
    help="Read task ids from PATH instead of listing ('-' for stdin).",
)
@settle_options
@artifact_options
@metrics_option
@logging_options
def backfill(
    api: cfg.ApiSettings,
    db: cfg.DatabaseSettings,
    since: datetime | None,
    ids_file: Any,
    settle: cfg.SettleSettings,
    artifacts: cfg.ArtifactSettings,
    metrics: cfg.MetricsSettings,
    logging: cfg.LogSettings,
) -> None:
    """Import history: every task (or those in --ids-file) with all its events.

    Interrupted, it continues where it stopped when run again. It may run beside
    cron's `sync`: the two never work on the same task at the same time.

    \b
    Example:
        archiver backfill --since 2026-01-01 --concurrency 32
        grep -v '^#' ids.txt | archiver backfill --ids-file -
    """
    from archiver.engine import BackfillPass, run_command
    from archiver.progress import make_progress

    metrics_path, client = _pass_setup(logging, metrics, api)
    ids = read_ids(ids_file) if ids_file is not None else None
    _check_blob_store(artifacts)
    options = cfg.SyncOptions.from_cli(api, settle, artifacts)
    database = open_database(db)
    with stops.in_pass():  # as in sync
        result = run_command(
            BackfillPass(since=since, ids=ids),
            database,
            client,
            options,
            wait_lock_s=api.wait_lock_s,
            progress=make_progress("backfill", enabled=not logging.quiet),
        )
        _finish(result, database, metrics_path)


@cli.group("db", cls=ArchiverGroup)
def db_group() -> None:
    """Schema migrations (Alembic).

    \b
    Example:
        archiver db upgrade && archiver db current
    """


@db_group.command("upgrade")
@database_option
def db_upgrade(db: cfg.DatabaseSettings) -> None:
    """Upgrade the archive's schema to the newest revision.

    \b
    Example:
        ARCHIVER_DATABASE_URL=postgresql://postgres@127.0.0.1/archive archiver db upgrade
    """
    from archiver.store import migrations
    from archiver.store.database import Database

    database = Database(db.url)
    before = database.revision()
    migrations.upgrade(database.engine)
    after = migrations.current_revision(database.engine)
    click.echo(f"{database.display_url()}: {before or '(empty)'} -> {after}")


@db_group.command("current")
@database_option
def db_current(db: cfg.DatabaseSettings) -> None:
    """Print the schema revision of the archive and the newest one this version knows.

    \b
    Example:
        archiver db current
    """
    from archiver.store.database import Database
    from archiver.store.migrations import head_revision

    database = Database(db.url, read_only=True)
    current = database.revision()
    head = head_revision()
    state = "up to date" if current == head else "behind: run `archiver db upgrade`"
    click.echo(f"{database.display_url()}: {current or '(empty)'} (head {head}, {state})")


def _acknowledge_unlisted(
    db: cfg.DatabaseSettings, created_ats: tuple[int, ...], *, quiet: bool
) -> None:
    """``status --ack-unlisted``: the one write ``status`` makes, in its own transaction."""
    from archiver.store.state import acknowledge_unlisted
    from archiver.timestamps import utcnow

    # Checked read-only first, so an acknowledgement never creates or migrates an archive.
    open_database(db, read_only=True).dispose()
    database = open_database(db)
    try:
        with database.transaction() as conn:
            groups = [acknowledge_unlisted(conn, stamp, utcnow()) for stamp in created_ats]
    finally:
        database.dispose()
    for group in groups:
        if not quiet:
            click.echo(
                f"acknowledged created_at={group['created_at']}: {group['listed']} listed, "
                f"{group['archived']} archived now"
            )


@cli.command()
@database_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--max-age",
    type=DURATION,
    metavar="DURATION",
    help="Exit 3 if the last successful pass ended longer ago than this (seconds, or 15m, "
    "2h, 1d), or never happened: for monitoring.",
)
@click.option(
    "--command",
    "command_choice",
    type=click.Choice(["any", "sync", "backfill"]),
    default="any",
    show_default=True,
    help="Which passes count as the last success.",
)
@click.option(
    "--ack-unlisted",
    "ack_unlisted",
    type=CREATED_AT,
    multiple=True,
    metavar="CREATED_AT",
    help="Acknowledge a group of tasks sharing this created_at that List Tasks cannot page "
    "through (after importing them with `backfill --ids-file`): status stops showing it and "
    "passes that meet it only warn. Repeatable.",
)
def status(
    db: cfg.DatabaseSettings,
    as_json: bool,
    max_age: float | None,
    command_choice: str,
    ack_unlisted: tuple[int, ...],
) -> None:
    """Show the archive's health, what it holds and how the last runs went.

    \b
    Example (monitoring: exit 3 unless a pass succeeded in the last 20 minutes):
        archiver status --max-age 20m
        archiver status --json | jq .tasks_by_status
    """
    from archiver import metrics

    if ack_unlisted:
        _acknowledge_unlisted(db, ack_unlisted, quiet=as_json)
    database = open_database(db, read_only=True)
    max_age_td = timedelta(seconds=max_age) if max_age is not None else None
    found = metrics.read_status(
        database, max_age=max_age_td, commands=metrics.commands_for(command_choice)
    )
    if as_json:
        click.echo(json.dumps(found.report, indent=2))
    else:
        click.echo("\n".join(found.lines))
    if found.stale:
        if not as_json:
            click.echo(
                f"archiver: stale: no successful pass within --max-age "
                f"{cfg.format_duration(max_age or 0)} (last success: "
                f"{found.report['health']['last_success_at'] or 'never'})",
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
@blob_url_option(
    f"The blob storage root [env {cfg.ENV_BLOB_URL}; default: the blobs folder in "
    "ARCHIVER_HOME]. Blobs recorded under another root are read where they are."
)
@max_artifact_size_option(
    f"With --repair: largest artifact fetched [env {cfg.ENV_MAX_ARTIFACT_SIZE}]."
)
@api_url_option(f"With --repair: Smooth API base URL [env {cfg.ENV_API_URL}].")
def verify(
    db: cfg.DatabaseSettings,
    task_ids: tuple[str, ...],
    repair: bool,
    retry_failed: bool,
    blob_url: str | None,
    max_artifact_size: int,
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
    from archiver.artifacts import repair_and_report, verify_and_report
    from archiver.blobs import BlobStore

    if retry_failed and not repair:
        raise ConfigError("--retry-failed only works together with --repair.")
    client = cfg.ApiSettings(api_url=api_url).client_config() if repair else None
    options = cfg.SyncOptions(
        downloads=True, blob_url=blob_url, max_artifact_bytes=max_artifact_size
    )
    store = BlobStore(blob_url or cfg.default_blob_url(), create=repair)
    database = open_database(db, read_only=not repair)
    todo, bad = verify_and_report(database, store, list(task_ids) or None, echo=click.echo)
    if not repair:
        sys.exit(1 if bad else 0)
    assert client is not None  # with nothing to repair, the repair still cleans up .tmp
    config = cfg.ArtifactConfig.from_options(options, client)
    unrepaired = repair_and_report(
        database, store, client, config, todo(retry_failed), echo=click.echo
    )
    sys.exit(1 if unrepaired else 0)


@cli.group("report", cls=ArchiverGroup)
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
        type=click.Choice(("table", "csv", "json")),
        default="table",
        show_default=True,
        help="table (with totals and bars), csv or json.",
    )(fn)
    fn = click.option(
        "--until", type=DAY, metavar="DATE", help="Tasks created on or before DATE (UTC)."
    )(fn)
    return click.option(
        "--since", type=DAY, metavar="DATE", help="Tasks created on or after DATE (UTC)."
    )(fn)


@report_group.command("credits")
@database_option
@report_options
@click.option(
    "--by",
    type=click.Choice(("day", "week", "month")),
    default="day",
    show_default=True,
    help="One row per day, week (from Monday) or month.",
)
@click.option(
    "--group-by",
    type=click.Choice(("status", "device")),
    multiple=True,
    help="Break each period down by status and/or device (repeatable).",
)
def report_credits(
    db: cfg.DatabaseSettings,
    since: date | None,
    until: date | None,
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
    from archiver import report as reports

    reports.check_range(since, until)
    database = open_database(db, read_only=True)
    with database.reading() as conn:
        result = reports.credits_report(conn, since=since, until=until, by=by, group_by=group_by)
    click.echo(reports.render_credits(result, fmt), nl=False)


@report_group.command("top")
@database_option
@report_options
@click.option(
    "--limit", type=COUNT, default=10, show_default=True, metavar="N", help="How many tasks."
)
@click.option("--status", metavar="STATUS", help="Only tasks with this status (e.g. failed).")
def report_top(
    db: cfg.DatabaseSettings,
    since: date | None,
    until: date | None,
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
    from archiver import report as reports

    reports.check_range(since, until)
    database = open_database(db, read_only=True)
    with database.reading() as conn:
        tasks = reports.top_tasks(conn, limit=limit, since=since, until=until, status=status)
    click.echo(reports.render_top(tasks, fmt), nl=False)


@cli.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="PATH",
    help="Build the demo archive in this new (or empty) folder instead of a new temporary "
    "one. No environment variable is read: the demo never touches a real archive.",
)
@click.option(
    "--tasks",
    "n_tasks",
    type=click.IntRange(1, 500),
    default=12,
    show_default=True,
    help="Tasks in the simulated account.",
)
def demo(folder: Path | None, n_tasks: int) -> None:
    """Archive a simulated Smooth account into a fresh local archive (no API key needed).

    The demo reads none of the ARCHIVER_* variables nor CIRCLEMIND_API_KEY: it always
    builds its own archive, prints where it is, and changes nothing else.

    \b
    Example:
        archiver demo --tasks 20
    """
    from archiver.demo import run_demo

    run_demo(folder, n_tasks=n_tasks, echo=click.echo)


@cli.command()
@database_option
@blob_url_option(
    "Read blobs under this root instead of the one recorded in artifacts.blob_url "
    f"(for blobs copied elsewhere) [env {cfg.ENV_BLOB_URL}; default: where recorded]."
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
    db: cfg.DatabaseSettings, blob_url: str | None, host: str, port: int, max_age: str
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

    run_server(
        database_url=db.url,
        blob_url=blob_url,
        host=host,
        port=port,
        max_age=max_age,
        echo=click.echo,
    )


def main() -> None:  # pragma: no cover - console entry point alias
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
