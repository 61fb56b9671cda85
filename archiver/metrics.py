"""Health of the archive, for ``archiver status`` and Prometheus.

:func:`read_health` answers the operator's questions from the database alone: when did
the last successful pass finish and how long ago, how far behind is polling (the *lag*:
age of the oldest non-finalized task's last poll), how many tasks wait on artifacts or
sit in error back-off.

A *successful* pass is a ``sync_runs`` row with outcome ``ok`` or ``partial``: the pass
ran to its end; ``partial`` only means some tasks failed, and those are counted (and
alerted on) separately as errors and tasks in error back-off. ``failed``,
``interrupted``, ``crashed`` and ``running`` rows are not successes.

:func:`write_metrics` writes Prometheus text-format metrics for node_exporter's textfile
collector at the end of each pass, with the official client library: a dedicated
:class:`CollectorRegistry` and ``write_to_textfile``, which writes a temporary file and
renames it over the target, so the collector never reads half a file. Every metric
carries a ``command`` label (``sync`` or ``backfill``) so both commands can write their
own file into the same collector directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from archiver.config import MAX_PAGE_SIZE, format_size, parse_max_age
from archiver.exceptions import ArchiverError, ConfigError, StorageError
from archiver.report import one_line
from archiver.stats import OUTCOMES, RunResult, counter_fields
from archiver.store.status import health_facts

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from archiver.store.database import Database

log = logging.getLogger(__name__)

COMMANDS = ("sync", "backfill")
#: How much of a run's message a line of ``archiver status`` shows.
RUN_MESSAGE_CHARS = 100
#: ``archiver status --max-age``: the last successful pass is older than that (or none).
EXIT_STALE = 3


def parse_duration(value: str, *, option: str = "--max-age") -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as a positive timedelta of at most
    MAX_AGE_DAYS; ConfigError otherwise."""
    return timedelta(seconds=parse_max_age(value, option=option))


def format_age(seconds: float) -> str:
    """A short human duration: ``42s``, ``5m 03s``, ``2h 10m``, ``3d 4h``."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@dataclass(frozen=True)
class Health:
    """The archive's health at ``now``."""

    now: datetime
    #: Newest successful pass (``ok`` or ``partial``) of the commands asked about.
    last_success_at: datetime | None
    last_success_command: str | None
    #: Newest successful pass per command (None: never).
    last_success_by_command: dict[str, datetime | None]
    #: Non-finalized tasks, and the one whose last poll (or discovery, if never polled)
    #: is oldest: the lag.
    active_tasks: int
    lag_s: float
    lagging_task_id: str | None
    tasks_in_error_backoff: int
    tasks_waiting_on_artifacts: int
    #: Governance (docs/governance.md): tombstones, pruned blobs, blob deletions not yet
    #: confirmed (retried by the next forget, prune or verify --repair).
    tasks_erased: int = 0
    artifacts_pruned: int = 0
    blob_deletions_pending: int = 0

    @property
    def last_success_age_s(self) -> float | None:
        if self.last_success_at is None:
            return None
        return max((self.now - self.last_success_at).total_seconds(), 0.0)

    def is_stale(self, max_age: timedelta) -> bool:
        """True when there was no successful pass within ``max_age`` (or never one)."""
        age = self.last_success_age_s
        return age is None or age > max_age.total_seconds()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_success_age_s"] = self.last_success_age_s
        return _isoformat(data)


def _isoformat(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return {k: _isoformat(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 3)
    return value


def read_health(
    conn: Connection, now: datetime | None = None, *, commands: Sequence[str] = COMMANDS
) -> Health:
    """Health facts from the database at ``now`` (default: the current time);
    ``commands`` selects which passes count for the last success."""
    now = now or datetime.now(UTC)
    facts = health_facts(conn)
    by_command: dict[str, datetime | None] = dict.fromkeys(COMMANDS)
    by_command.update(facts.last_success_by_command)
    candidates = [(at, c) for c, at in by_command.items() if c in commands and at is not None]
    last_at, last_command = max(candidates) if candidates else (None, None)
    oldest = facts.oldest_polled_at
    lag = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    return Health(
        now=now,
        last_success_at=last_at,
        last_success_command=last_command,
        last_success_by_command=by_command,
        active_tasks=facts.active_tasks,
        lag_s=lag,
        lagging_task_id=facts.lagging_task_id,
        tasks_in_error_backoff=facts.tasks_in_error_backoff,
        tasks_waiting_on_artifacts=facts.tasks_waiting_on_artifacts,
        tasks_erased=facts.tasks_erased,
        artifacts_pruned=facts.artifacts_pruned,
        blob_deletions_pending=facts.blob_deletions_pending,
    )


def commands_for(choice: str) -> tuple[str, ...]:
    """``--command``: ``sync``, ``backfill`` or ``any`` (both)."""
    return COMMANDS if choice == "any" else (choice,)


def health_lines(health: Health, max_age: timedelta | None = None) -> list[str]:
    """The health section of ``archiver status``, one fact per line."""
    if health.last_success_at is None:
        success = "never (no sync or backfill has run to its end yet)"
    else:
        age = format_age(health.last_success_age_s or 0.0)
        success = (
            f"{health.last_success_at.isoformat(sep=' ', timespec='seconds')} "
            f"({health.last_success_command}, {age} ago)"
        )
    lines = [f"last success: {success}"]
    if max_age is not None:
        verdict = "STALE" if health.is_stale(max_age) else "ok"
        lines.append(f"max age:      {format_age(max_age.total_seconds())} -> {verdict}")
    if health.lagging_task_id is None:
        lag = "0s (no task waiting to be polled)"
    else:
        lag = (
            f"{format_age(health.lag_s)} since the oldest last poll of the "
            f"{health.active_tasks} active tasks ({health.lagging_task_id})"
        )
    lines += [
        f"lag:          {lag}",
        f"waiting on artifacts: {health.tasks_waiting_on_artifacts} tasks",
        f"in error back-off:    {health.tasks_in_error_backoff} tasks",
    ]
    if health.tasks_erased or health.artifacts_pruned or health.blob_deletions_pending:
        lines.append(
            f"removed:      {health.tasks_erased} tasks erased (tombstones), "
            f"{health.artifacts_pruned} artifacts pruned"
            + (
                f"; {health.blob_deletions_pending} blob deletions pending (the next forget, "
                "prune or verify --repair retries them)"
                if health.blob_deletions_pending
                else ""
            )
        )
    return lines


@dataclass(frozen=True)
class Status:
    """What ``archiver status`` shows: ``report`` for ``--json``, ``lines`` for people."""

    report: dict[str, Any]
    lines: list[str]

    @property
    def stale(self) -> bool:
        return bool(self.report["health"]["stale"])


def read_status(
    database: Database, *, max_age: timedelta | None = None, commands: Sequence[str] = COMMANDS
) -> Status:
    """Health, contents and last runs of the archive, in one read-only snapshot."""
    from archiver.artifacts import artifact_status
    from archiver.store.status import status_report

    with database.reading() as conn:
        report = status_report(conn)
        report.update(artifact_status(conn))
        health = read_health(conn, commands=commands)
    health_json = {
        **health.as_dict(),
        "max_age_s": max_age.total_seconds() if max_age else None,
        "stale": max_age is not None and health.is_stale(max_age),
    }
    report = {"database": database.display_url(), "health": health_json, **report}
    lines = health_lines(health, max_age)
    lines.append(f"database:  {report['database']}")
    lines.append(
        f"tasks:     {report['tasks']} ({report['active']} active, "
        f"{report['finalized']} finalized, {report['gone']} gone, "
        f"{report['in_error_backoff']} in error back-off)"
    )
    lines += [f"  {name:<12} {count}" for name, count in report["tasks_by_status"].items()]
    lines.append(f"events:    {report['events']}")
    lines += unlisted_lines(report["unlisted"])
    lines += blob_storage_lines(report["blob_storage_failing"], health.now)
    states = report["artifacts_by_state"]
    lines.append(
        f"artifacts: {sum(states.values())} ("
        + ", ".join(f"{count} {state}" for state, count in states.items())
        + f"); {format_size(report['artifact_bytes_stored'])} stored"
        + (
            f"; {report['tasks_with_artifacts_to_do']} finalized tasks still to do "
            "(sync --downloads works on them)"
            if report["tasks_with_artifacts_to_do"]
            else ""
        )
    )
    lines.append("last runs:")
    lines += [
        f"  {run['started_at']}  {run['command']:<8} {run['outcome']:<11} "
        f"polled {run['tasks_polled']}, events +{run['events_inserted']}, "
        f"errors {run['errors']}"
        + (f", skipped (leased) {run['skipped_leased']}" if run["skipped_leased"] else "")
        # What went wrong, named on the line (the whole message is in sync_runs).
        + (f": {one_line(run['message'], RUN_MESSAGE_CHARS)}" if run["message"] else "")
        for run in report["last_runs"]
    ]
    return Status(report, lines)


def blob_storage_lines(failing: dict[str, Any] | None, now: datetime) -> list[str]:
    """Blob storage is failing: since when, and the last reason (artifacts wait as pending
    meanwhile; events and statuses are archived as usual)."""
    if not failing:
        return []
    since = datetime.fromisoformat(failing["failing_since"])
    age = format_age((now - since).total_seconds())
    return [
        f"BLOB STORAGE FAILING since {failing['failing_since']} ({age}): artifacts stay "
        "pending until it takes writes again; events and statuses are archived as usual",
        f"  {failing['url']}, last failure {failing['last_failure_at']}: {failing['last_error']}",
    ]


def unlisted_lines(groups: Sequence[dict[str, Any]]) -> list[str]:
    """Groups of tasks sharing one created_at that List Tasks cannot page through, until an
    operator acknowledges them."""
    if not groups:
        return []
    lines = [
        f"UNLISTED:  {len(groups)} created_at value(s) shared by a full List Tasks page "
        f"({MAX_PAGE_SIZE} tasks); no client can list any more tasks of that created_at:"
    ]
    for group in groups:
        lines.append(
            f"  created_at={group['created_at']} ({group['created_at_utc'] or 'not a date'}): "
            f"{group['listed']} listed, {group['archived']} archived, an unknown number "
            f"not listed (seen by {group['command']}, last {group['last_seen_at']})"
        )
    lines.append(
        "  import them by id: archiver backfill --ids-file PATH; then: archiver status "
        "--ack-unlisted CREATED_AT"
    )
    return lines


def validate_metrics_path(path: str) -> Path:
    """Check before a pass that the metrics file can be written; ConfigError if not."""
    target = Path(path).expanduser()
    folder = target.parent
    if target.is_dir():
        raise ConfigError(
            f"--metrics-file {path!r} is a directory: give a file path inside the textfile "
            "collector's directory, e.g. /var/lib/node_exporter/textfile/archiver-sync.prom."
        )
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--metrics-file {path!r}: the directory {str(folder)!r} does not exist or is "
            "not writable by this user; create it or point --metrics-file elsewhere."
        )
    if target.suffix != ".prom":
        log.warning(
            "--metrics-file %s does not end in .prom; node_exporter's textfile collector "
            "only reads *.prom files",
            path,
        )
    return target


def build_registry(result: RunResult, health: Health | None) -> CollectorRegistry:
    """The metrics of one finished pass (and of the archive, when ``health`` is known)."""
    # Imported here: `status` reads health through this module without writing metrics.
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry(auto_describe=True)
    label = {"command": result.command}

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        names = ["command", *labels]
        metric = Gauge(name, doc, names, registry=registry)
        metric.labels(**label, **labels).set(value)

    finished = result.finished_at or datetime.now(UTC)
    succeeded = result.succeeded
    gauge(
        "archiver_last_run_timestamp_seconds",
        "Unix time at which the last pass ended, whatever its outcome.",
        finished.timestamp(),
    )
    gauge(
        "archiver_last_run_duration_seconds",
        "Duration of the last pass in seconds.",
        (finished - result.started_at).total_seconds(),
    )
    gauge(
        "archiver_last_run_success",
        "1 if the last pass ran to its end (outcome ok or partial), else 0.",
        1.0 if succeeded else 0.0,
    )
    outcome = Gauge(
        "archiver_last_run_outcome",
        "1 for the outcome of the last pass, 0 for the other outcomes.",
        ["command", "outcome"],
        registry=registry,
    )
    for name in OUTCOMES:
        outcome.labels(command=result.command, outcome=name).set(
            1.0 if result.outcome == name else 0.0
        )
    counts = result.stats.as_dict()
    for name, help_text, _ in counter_fields():
        gauge(f"archiver_last_run_{name}", f"{help_text} in the last pass.", float(counts[name]))
    last_success: datetime | None = finished if succeeded else None
    if health is not None:
        recorded = health.last_success_by_command.get(result.command)
        if recorded is not None and (last_success is None or recorded > last_success):
            last_success = recorded
    gauge(
        "archiver_last_success_timestamp_seconds",
        "Unix time at which the last successful pass (ok or partial) ended; 0 if never.",
        last_success.timestamp() if last_success else 0.0,
    )
    if health is not None:
        _archive_gauges(gauge, health)
    return registry


def _archive_gauges(gauge: Callable[[str, str, float], None], health: Health) -> None:
    """The archive-wide gauges (not of one pass): lag, active tasks, removals."""
    gauge(
        "archiver_lag_seconds",
        "Age of the oldest non-finalized task's last poll (0 when none is active).",
        health.lag_s,
    )
    gauge("archiver_tasks_active", "Tasks not finalized yet.", float(health.active_tasks))
    gauge(
        "archiver_tasks_in_error_backoff",
        "Non-finalized tasks whose last poll failed, waiting for their back-off.",
        float(health.tasks_in_error_backoff),
    )
    gauge(
        "archiver_tasks_waiting_on_artifacts",
        "Tasks with a recording or downloads archive still pending.",
        float(health.tasks_waiting_on_artifacts),
    )
    gauge("archiver_tasks_erased", "Tasks erased (tombstones).", float(health.tasks_erased))
    gauge(
        "archiver_artifacts_pruned",
        "Recordings and downloads archives removed by prune.",
        float(health.artifacts_pruned),
    )
    gauge(
        "archiver_blob_deletions_pending",
        "Blobs removed from the archive whose deletion is not confirmed yet.",
        float(health.blob_deletions_pending),
    )


def write_metrics(path: str | Path, result: RunResult, database: Database | None) -> None:
    """Write the pass's metrics to ``path`` atomically; StorageError if that fails.

    Archive-wide gauges (lag, active tasks...) come from ``database``; if it cannot be
    read, the pass's own metrics are still written and a warning says why.
    """
    health = None
    if database is not None:
        try:
            with database.reading() as conn:
                health = read_health(conn, result.finished_at or datetime.now(UTC))
        except ArchiverError as exc:
            log.warning("metrics: archive-wide gauges left out: %s", exc)
    from prometheus_client import write_to_textfile

    registry = build_registry(result, health)
    try:
        write_to_textfile(str(Path(path).expanduser()), registry)
    except OSError as exc:
        raise StorageError(
            f"cannot write the metrics file {str(path)!r}: {exc.strerror or exc}; check the "
            "directory exists, is writable and the disk is not full."
        ) from None


# --- the Prometheus text of `archiver serve`'s /metrics -------------------------------

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterator

    from prometheus_client.core import Metric


class _Merged:
    """Several registries' metrics as one exposition (a prometheus_client ``Collector``):
    each family once, samples joined."""

    def __init__(self, registries: list[CollectorRegistry], drop: frozenset[str]) -> None:
        self.registries = registries
        self.drop = drop

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import Metric

        families: dict[str, Metric] = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name in self.drop:
                    continue
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples.extend(family.samples)
        return iter(families.values())


def metrics_text(runs: Sequence[RunResult], health: Health) -> bytes:
    """The Prometheus metrics ``--metrics-file`` writes, one set per pass in ``runs`` (the
    newest finished pass of each command, as ``sync_runs`` keeps it), with the archive's
    ``health``. The detail counters ``sync_runs`` does not keep are left out rather than
    reported as 0."""
    from prometheus_client import CollectorRegistry, generate_latest

    registries = [build_registry(result, health) for result in runs]
    drop = frozenset(f"archiver_last_run_{name}" for name, _, kept in counter_fields() if not kept)
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Merged(registries, drop))
    return generate_latest(combined)
