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
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from archiver import config as cfg
from archiver import logs, stops
from archiver.escapes import visible
from archiver.exceptions import ArchiverError, ConfigError
from archiver.web import DEFAULT_HOST, DEFAULT_MAX_AGE, DEFAULT_PORT

if TYPE_CHECKING:  # pragma: no cover
    from archiver.masking import Masker
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
MAX_AGE = _Parsed("duration", lambda v, o: cfg.parse_max_age(v, option=o))
WAIT = _Parsed("duration", lambda v, o: cfg.parse_seconds(v, option=o))
SIZE = _Parsed("size", lambda v, o: cfg.parse_byte_size(v, option=o))
COUNT = _Parsed("count", lambda v, o: cfg.parse_count(v, option=o))
RATE = _Parsed("rate", lambda v, o: cfg.parse_rate(v, option=o))
DAY = _Parsed("date", lambda v, o: cfg.parse_day(v, option=o))
SINCE = _Parsed("date", lambda v, o: cfg.parse_since(v, option=o))
CREATED_AT = _Parsed("created_at", lambda v, o: cfg.parse_created_at(v, option=o))


def duration_text(seconds: float) -> str:
    """A default duration as a flag takes it and the docs write it: ``0``, ``90s``,
    ``10m``, ``1h``, ``2d`` (the largest unit that divides it)."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}" if not seconds else f"{seconds:g}s"


# --- --help in sections: options grouped by purpose, in this order ----------------------

#: (title, parameter names) of the sections of ``sync --help`` and ``backfill --help``;
#: anything else (``--help``) comes last.
OPTION_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Which tasks", ("task_ids", "no_discover", "recheck_gone", "since", "ids_file")),
    ("Archive and API", ("database_url", "api_url")),
    ("Pace", ("concurrency", "rate_limit", "max_runtime", "wait_lock")),
    ("When a finished task is final", ("confirm_after", "fresh_within")),
    ("Recordings and downloads", ("downloads", "blob_url", "artifact_grace", "max_artifact_size")),
    ("Output", ("quiet", "verbose", "log_format", "metrics_file")),
)


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options in the sections of
    :data:`OPTION_SECTIONS` (click has no option groups of its own)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records: dict[str, list[tuple[str, str]]] = {}
        where = {name: title for title, names in OPTION_SECTIONS for name in names}
        order = {name: i for i, name in enumerate(where)}
        params = sorted(self.get_params(ctx), key=lambda p: order.get(p.name or "", len(order)))
        for param in params:
            record = param.get_help_record(ctx)
            if record is not None:
                records.setdefault(where.get(param.name or "", "Help"), []).append(record)
        for title in [*(title for title, _ in OPTION_SECTIONS), "Help"]:
            if title in records:
                with formatter.section(title):
                    formatter.write_dl(records[title])


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
        default=duration_text(cfg.DEFAULT_WAIT_LOCK_S),
        show_default=True,
        metavar="DURATION",
        help="Wait this long (seconds, or 30s, 5m) for another run of the same command "
        "instead of exiting 75.",
    ),
    click.option(
        "--rate-limit",
        envvar=cfg.ENV_RATE_LIMIT,
        type=RATE,
        default=None,
        show_default="no limit",
        metavar="PER_SECOND",
        help="At most this many API requests per second, shared by all concurrent "
        f"requests [env {cfg.ENV_RATE_LIMIT}].",
    ),
    click.option(
        "--concurrency",
        type=COUNT,
        default=cfg.DEFAULT_CONCURRENCY,
        show_default=True,
        help="Get Task requests in flight at once (List Tasks has a connection of its own).",
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
        default=duration_text(cfg.DEFAULT_FRESH_WITHIN_S),
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
        show_default="on" if cfg.DEFAULT_DOWNLOADS else "off",
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
        default=duration_text(cfg.DEFAULT_ARTIFACT_GRACE_S),
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


#: ``masking: MaskSettings``: --mask-rules (archiver.masking, docs/governance.md).
mask_options = _option_group(
    "masking",
    cfg.MaskSettings.from_cli,
    click.option(
        "--mask-rules",
        envvar=cfg.ENV_MASK_RULES,
        default=None,
        metavar="PATH",
        help="Replace what these rules match (a TOML file) before anything is stored, "
        f"logged or counted [env {cfg.ENV_MASK_RULES}; default: nothing is masked].",
    ),
)


def _load_masker(masking: cfg.MaskSettings) -> Masker | None:
    """``--mask-rules``: the rules read and checked (a bad file exits 2 before any
    request); from here on every log and error line is masked too."""
    if masking.rules_path is None:
        return None
    from archiver.masking import load_masker

    masker = load_masker(masking.rules_path)
    if masker is not None:
        logs.install_masking(masker.text)
    else:
        logs.log.warning("mask rules %s hold no rules: nothing is masked", masking.rules_path)
    return masker


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


@cli.command(cls=SectionedCommand)
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
@mask_options
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
    masking: cfg.MaskSettings,
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
    masker = _load_masker(masking)
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
            SyncPass(),
            database,
            client,
            options,
            wait_lock_s=api.wait_lock_s,
            progress=progress,
            masker=masker,
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


@cli.command(cls=SectionedCommand)
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
@mask_options
@metrics_option
@logging_options
def backfill(
    api: cfg.ApiSettings,
    db: cfg.DatabaseSettings,
    since: datetime | None,
    ids_file: Any,
    settle: cfg.SettleSettings,
    artifacts: cfg.ArtifactSettings,
    masking: cfg.MaskSettings,
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
    masker = _load_masker(masking)
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
            masker=masker,
        )
        _finish(result, database, metrics_path)


@cli.command("mask")
@mask_options
@database_option
@click.option(
    "--apply",
    "apply_rules",
    is_flag=True,
    help="Apply the rules to what is already archived: a dry run that lists each task "
    "that would change, unless --yes is given too.",
)
@click.option(
    "--yes",
    is_flag=True,
    help="With --apply: rewrite the archive (secure delete on SQLite), one erasures row "
    "per task changed.",
)
@click.option("--reason", metavar="TEXT", help="Why (required with --apply; audited).")
@click.option("--actor", metavar="NAME", help="Who, for the audit trail [default: the OS user].")
@logging_options
def mask(
    masking: cfg.MaskSettings,
    db: cfg.DatabaseSettings,
    apply_rules: bool,
    yes: bool,
    reason: str | None,
    actor: str | None,
    logging: cfg.LogSettings,
) -> None:
    """Check a masking rules file, or apply its rules to what is already archived.

    Without --apply it reads and checks the rules file and lists its rules (the archive is
    not opened). With --apply it lists each task the rules would change, changing nothing;
    with --apply --yes it rewrites them, audited in the erasures table.

    \b
    Example:
        archiver mask --mask-rules rules.toml
        archiver mask --mask-rules rules.toml --apply --reason "DPO-1234"
        archiver mask --mask-rules rules.toml --apply --yes --reason "DPO-1234"
    """
    from archiver.masking import archive

    if yes and not apply_rules:
        raise ConfigError("--yes only works together with --apply.")
    if apply_rules and not (reason or "").strip():
        raise ConfigError(
            "--apply needs --reason TEXT: why the archive is rewritten (e.g. a ticket "
            "number), recorded in the erasures audit table."
        )
    if masking.rules_path is None:
        raise ConfigError(
            f"no rules given: pass --mask-rules PATH or set {cfg.ENV_MASK_RULES} to a TOML "
            "rules file (docs/governance.md)."
        )
    logs.setup_logging(verbose=logging.verbose, quiet=logging.quiet, log_format=logging.log_format)
    masker = _load_masker(masking)
    if masker is None:
        if apply_rules:
            raise ConfigError(
                f"mask rules {masking.rules_path}: no rules, so nothing to apply; add "
                '[[rule]] tables or use = ["secrets"].'
            )
        return  # the warning said so
    if not apply_rules:
        for line in archive.describe_rules(masker):
            click.echo(line)
        return
    assert reason is not None
    if not yes:
        outcome = archive.dry_run(open_database(db, read_only=True), masker, click.echo)
        click.echo(archive.summary(outcome, dry_run=True))
        return
    outcome = archive.apply(
        open_database(db),
        masker,
        actor=actor or archive.default_actor(),
        reason=reason.strip(),
        echo=click.echo,
    )
    click.echo(archive.summary(outcome, dry_run=False))
    for problem in archive.problems(outcome):
        click.echo(f"archiver: {problem}", err=True)
    sys.exit(1 if archive.problems(outcome) else 0)


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
    if before == after:
        click.echo(f"{database.display_url()}: already at the newest revision {after}")
    else:
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
    type=MAX_AGE,
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
        # Task ids and commands are archived text: one line each, controls made visible.
        click.echo("\n".join(visible(line) for line in found.lines))
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
    _say_erased(database, task_ids)
    if repair:
        from archiver.governance import finish_blob_deletions

        if deleted := finish_blob_deletions(database):
            click.echo(f"deleted {deleted} blob(s) an earlier forget or prune left to delete")
    todo, bad = verify_and_report(
        database, store, list(task_ids) or None, echo=_echo_line, repairing=repair
    )
    if not repair:
        sys.exit(1 if bad else 0)
    assert client is not None  # with nothing to repair, the repair still cleans up .tmp
    config = cfg.ArtifactConfig.from_options(options, client)
    unrepaired = repair_and_report(
        database, store, client, config, todo(retry_failed), echo=_echo_line
    )
    sys.exit(1 if unrepaired else 0)


def _echo_line(line: str) -> None:
    """One line about archived things (task ids, errors): controls made visible."""
    click.echo(visible(line))


def _say_erased(database: Database, task_ids: Sequence[str]) -> None:
    """Named tasks that are tombstones have nothing to verify or repair: say so."""
    if not task_ids:
        return
    from archiver.store.erasure import erased_ids

    with database.reading() as conn:
        erased = erased_ids(conn, list(task_ids))
    for task_id, when in erased.items():
        _echo_line(f"{task_id}: erased on {when:%Y-%m-%d %H:%M} UTC, nothing to verify")


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
    click.echo(reports.render_top(tasks, fmt, since=since, until=until), nl=False)


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
@click.option(
    "--serve",
    "then_serve",
    is_flag=True,
    help="Then open the web view on the demo archive (as `archiver serve`) and print its "
    "URL; Ctrl-C ends it.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="With --serve: the port on 127.0.0.1 to listen on (0 picks a free one).",
)
def demo(folder: Path | None, n_tasks: int, then_serve: bool, port: int) -> None:
    """Archive a simulated Smooth account into a fresh local archive (no API key needed).

    The demo reads none of the ARCHIVER_* variables nor CIRCLEMIND_API_KEY: it always
    builds its own archive, prints where it is, and changes nothing else.

    \b
    Example:
        archiver demo --tasks 20
        archiver demo --serve          # then open the URL it prints
    """
    from archiver.demo import run_demo

    database_url = run_demo(folder, n_tasks=n_tasks, echo=click.echo)
    if then_serve:
        from archiver.web import serve as run_server

        click.echo("")
        run_server(
            database_url=database_url,
            blob_url=None,
            host=DEFAULT_HOST,
            port=port,
            max_age=DEFAULT_MAX_AGE,
            echo=click.echo,
        )


@cli.command()
@database_option
@blob_url_option(
    "Read blobs under this root instead of the one recorded in artifacts.blob_url "
    f"(for blobs copied elsewhere) [env {cfg.ENV_BLOB_URL}; default: where recorded]."
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0 picks a free one, printed on start).",
)
@click.option(
    "--max-age",
    default=DEFAULT_MAX_AGE,
    show_default=True,
    metavar="DURATION",
    help="/healthz answers 503 when the last successful pass ended longer ago than this.",
)
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer requests addressed to this host name (repeatable); other names get 421.",
)
def serve(
    db: cfg.DatabaseSettings,
    blob_url: str | None,
    host: str,
    port: int,
    max_age: str,
    allowed_hosts: tuple[str, ...],
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
        allowed_hosts=allowed_hosts,
    )


# --- governance: forget and prune (docs/governance.md) ----------------------------------


def _audit_options(fn: F) -> F:
    """--reason (required), --actor, --yes: who removes what, and why."""
    fn = click.option(
        "--yes",
        is_flag=True,
        help="Remove for good. Without it the command is a dry run: it lists what would go "
        "and changes nothing.",
    )(fn)
    fn = click.option(
        "--actor",
        metavar="NAME",
        default=None,
        help="Who asks, for the audit trail (table erasures) [default: the operating-system user].",
    )(fn)
    return click.option(
        "--reason",
        required=True,
        metavar="TEXT",
        help="Why, for the audit trail (e.g. a ticket number or 'GDPR art. 17 request').",
    )(fn)


@cli.command()
@click.argument("task_ids", nargs=-1, metavar="[TASK_ID]...")
@click.option(
    "--ids-file",
    type=click.File("r"),
    metavar="PATH",
    help="Also the task ids in PATH, one per line ('-' for stdin; # comments).",
)
@click.option(
    "--matching",
    multiple=True,
    metavar="TEXT",
    help="Also every task whose output, payload, events, unknown fields, file names or "
    "error texts contain TEXT (plain text, any case; repeatable). Only its SHA-256 is kept.",
)
@_audit_options
@click.option(
    "--wait",
    "wait_s",
    type=WAIT,
    default="2m",
    show_default=True,
    metavar="DURATION",
    help="How long to wait for tasks a running sync or backfill is working on; those still "
    "busy then are left (exit 1).",
)
@database_option
@logging_options
def forget(
    task_ids: tuple[str, ...],
    ids_file: Any,
    matching: tuple[str, ...],
    reason: str,
    actor: str | None,
    yes: bool,
    wait_s: float,
    db: cfg.DatabaseSettings,
    logging: cfg.LogSettings,
) -> None:
    """Erase tasks: their output, payload, events and blobs, leaving a tombstone.

    The tombstone keeps id, status, created_at, device and credits_used, so credit
    reports stay equal; sync and backfill never fill it in again. Every erased task gets
    a row in the erasures table (who, when, why, what was removed). Without --yes this
    is a dry run.

    \b
    Example (a data-subject request):
        archiver forget --matching alice@example.com --reason "DSR-2041"
        archiver forget --matching alice@example.com --reason "DSR-2041" --yes
    """
    from archiver import governance

    logs.setup_logging(verbose=logging.verbose, quiet=logging.quiet, log_format=logging.log_format)
    ids = list(task_ids) + (read_ids(ids_file) if ids_file is not None else [])
    governance.check_request(ids, matching, reason)
    database = open_database(db, read_only=not yes)
    selection = governance.select_tasks(database, ids, matching)
    plan = governance.plan_forget(database, selection)
    for line in governance.describe_plan(plan, matched=selection.matched):
        click.echo(line)
    if not yes:
        click.echo("dry run: nothing was changed; add --yes to erase these tasks.")
        return
    audit = governance.Audit(actor or governance.default_actor(), reason, "forget")
    outcome = governance.forget(database, plan, selection, audit, wait_s=wait_s, echo=click.echo)
    for line in governance.describe_outcome(outcome, "erased"):
        click.echo(line)
    sys.exit(1 if outcome.left or outcome.blobs_failed or not outcome.checkpointed else 0)


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    type=DURATION,
    required=True,
    metavar="DURATION",
    help="Tasks created longer ago than this (e.g. 90d, 12h), by created_at.",
)
@click.option(
    "--only",
    default="recordings,downloads,events",
    show_default=True,
    metavar="PARTS",
    help="What to remove, comma-separated: recordings, downloads, events, tasks (tasks "
    "erases whole tasks as `forget` does, tombstones included).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help="Only tasks with this status (repeatable), e.g. --status done.",
)
@_audit_options
@database_option
@logging_options
def prune(
    older_than: float,
    only: str,
    statuses: tuple[str, ...],
    reason: str,
    actor: str | None,
    yes: bool,
    db: cfg.DatabaseSettings,
    logging: cfg.LogSettings,
) -> None:
    """Remove what a retention policy no longer allows: recordings, downloads archives,
    events or whole tasks of finalized tasks created longer ago than --older-than.

    Works in small batches (a sync may run in between), audited in the erasures table.
    Without --yes this is a dry run.

    \b
    Example (crontab: keep recordings 30 days, events 180 days):
        0 3 * * * archiver prune -q --older-than 30d --only recordings --reason retention --yes
        30 3 * * * archiver prune -q --older-than 180d --only events --reason retention --yes
    """
    from archiver import governance

    logs.setup_logging(verbose=logging.verbose, quiet=logging.quiet, log_format=logging.log_format)
    request = governance.prune_request(older_than, only, statuses, reason)
    database = open_database(db, read_only=not yes)
    for line in governance.describe_prune(database, request, older_than):
        click.echo(line)
    if not yes:
        click.echo("dry run: nothing was changed; add --yes to prune.")
        return
    audit = governance.Audit(actor or governance.default_actor(), reason, "prune")
    outcome = governance.prune(database, request, audit, echo=click.echo)
    for line in governance.describe_outcome(outcome, "pruned"):
        click.echo(line)
    sys.exit(1 if outcome.left or outcome.blobs_failed or not outcome.checkpointed else 0)


def main() -> None:  # pragma: no cover - console entry point alias
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
