"""The sync engine: discover tasks, poll the active ones, store what is new.

* :mod:`~archiver.engine.decisions`: the rules, as pure functions (what a poll reads and
  saves, when a task is final, back-off, 404 credibility, the listing's next page and
  watermark, a pass's outcome) and the engine's types (``TaskCursor``, ``PollSave``);
* :mod:`~archiver.engine.listing`: discovery and backfill's walk of List Tasks;
* :mod:`~archiver.engine.workers`: the worker pool (requests in flight, saves in the
  background, what ends a pass);
* :mod:`~archiver.engine.passes`: ``SyncEngine``, the thin pass that composes them;
* :mod:`~archiver.engine.run`: a whole command under its lock, recorded in ``sync_runs``;
* :mod:`~archiver.engine.context`: what the parts of one pass share.

Exactly-once events, whatever the API does: polls ask for events strictly after
``event_t - 1``, so an event sharing the high-water mark's timestamp is re-read, never
skipped (re-reads are no-ops through the events' unique key); a terminal task is swept
from ``event_t=0`` before it is finalized (docs/architecture.md lists every invariant).
"""

from archiver.engine.decisions import PollSave, TaskCursor
from archiver.engine.passes import SyncEngine
from archiver.engine.run import GC_YOUNG_THRESHOLD, BackfillPass, PassWork, SyncPass, run_command
from archiver.stats import RunResult

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "BackfillPass",
    "PassWork",
    "PollSave",
    "RunResult",
    "SyncEngine",
    "SyncPass",
    "TaskCursor",
    "run_command",
]
