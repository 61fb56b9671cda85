"""What a pass did: its counters (:class:`RunStats`) and its result (:class:`RunResult`).

The counters are defined once, here. The summary log line, the ``sync_runs`` row, the
Prometheus metrics and ``archiver status`` all derive from :func:`counter_fields`, so they
can never disagree about which counters exist or what they mean.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from archiver.timestamps import utcnow

EXIT_OK = 0
EXIT_TASK_ERRORS = 1
EXIT_INTERRUPTED: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}

#: ``sync_runs.outcome`` values.
OUTCOMES = ("ok", "partial", "failed", "interrupted", "crashed")
#: Outcomes that count as a successful pass: it reached the API and ran to its end.
SUCCESS_OUTCOMES = ("ok", "partial")


def _counter(help_text: str, *, stored: bool = True) -> Any:
    """A counter field: its HELP text, and whether ``sync_runs`` has a column for it."""
    return field(default=0, metadata={"help": help_text, "stored": stored})


@dataclass
class RunStats:
    """The counters of one ``sync`` or ``backfill`` pass."""

    tasks_discovered: int = _counter("New tasks found by listing (or given by id)")
    tasks_polled: int = _counter("Tasks read and saved")
    tasks_finalized: int = _counter("Tasks finished and archived for good")
    events_inserted: int = _counter("New events stored")
    artifacts_stored: int = _counter("Recordings and downloads archives stored")
    tasks_gone: int = _counter("Tasks recorded as gone (404 on three passes that proved the URL)")
    errors: int = _counter("Task or listing failures")
    requests: int = _counter("HTTP requests to the Smooth API")
    skipped_leased: int = _counter("Tasks skipped because another live run held their lease")
    # Detail counters: in the summary line and the metrics, not in sync_runs.
    tasks_not_found: int = _counter("404s not yet trusted as gone", stored=False)
    artifact_link_refreshes: int = _counter(
        "Fresh artifact links asked of Get Task after a refusal", stored=False
    )
    artifact_bytes: int = _counter("Bytes of artifacts written to blob storage", stored=False)

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def stored(self) -> dict[str, int]:
        """The counters that ``sync_runs`` keeps, by column name."""
        return {name: getattr(self, name) for name in STORED_COUNTERS}


def counter_fields() -> tuple[tuple[str, str, bool], ...]:
    """(name, help text, stored in sync_runs) of every counter, in display order."""
    return tuple((f.name, f.metadata["help"], f.metadata["stored"]) for f in fields(RunStats))


#: Counter names that are columns of ``sync_runs``.
STORED_COUNTERS = tuple(name for name, _, stored in counter_fields() if stored)


@dataclass
class RunResult:
    """What a pass did; ``exit_code`` follows the documented exit codes."""

    run_id: str
    command: str
    stats: RunStats = field(default_factory=RunStats)
    outcome: str = "ok"
    exit_code: int = EXIT_OK
    message: str | None = None
    #: What failed the pass as a whole, in a few words (``API key rejected``), if it did.
    failure: str | None = None
    errors: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES

    @property
    def duration_s(self) -> float:
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.command} {self.outcome}: discovered {s.tasks_discovered}, "
            f"polled {s.tasks_polled}, finalized {s.tasks_finalized}, "
            f"events inserted {s.events_inserted}, artifacts stored {s.artifacts_stored}, "
            f"gone {s.tasks_gone}, errors {s.errors}"
            + (f" ({self.failure})" if self.failure else "")
            + ", "
            + (f"skipped (leased by another run) {s.skipped_leased}, " if s.skipped_leased else "")
            + f"requests {s.requests}, duration {self.duration_s:.1f}s"
        )
